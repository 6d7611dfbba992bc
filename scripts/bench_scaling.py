"""Benchmark of scale: what a task, a claim or a permit costs stays the same as counts grow.

Each workload runs twice in one run, at N and at 4N items, on fresh SQLite files at
``synchronous=NORMAL`` (the figures are the engine's CPU, not the disk's); each figure is the
cost of one item at 4N, beside its floor, the cost of one item at N. A cost that grows with
the count (a look at every task, every message taken, every permit of the hour at each new
one) shows as a ratio of about 4; a flat one as about 1.

* ``subtask_ms``: a parent submits N subtasks and waits for them all (``engine.wait``); the
  run of the parent and its subtasks, per subtask.
* ``recv_us``: one task takes N messages with ``engine.recv`` (all sent before it runs), per
  message.
* ``rate_limited_step_us``: one task calls a step under a limit with a rate (100,000 an
  hour) N times, per step: each permit counts the takes of the hour before it.
* ``unregistered_ms``: N queued tasks whose function no worker has any more are marked
  unregistered, per task (each claim looks for the unregistered tasks a worker has a
  function for).
* ``woken_ms``: N tasks parked on ``engine.recv`` are each sent their message, then run to
  their end, per task: all are ready at once (a claim takes the first without ranking them
  all).
* ``served_ms``: a worker service (``Engine.serve``, one worker) runs N one-step tasks queued
  at once, per task: between two tasks it looks for its peers' expired claims among the
  running tasks, not the queued ones.

Targets: each figure <= 1.5 x its floor.

    .venv/bin/python scripts/bench_scaling.py --json
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target

from onward import Engine

FULL: dict[str, int] = {
    "subtasks": 5000,
    "messages": 8000,
    "permits": 10000,
    "unregistered": 2000,
    "woken": 5000,
    "served": 5000,
}
QUICK: dict[str, int] = {
    "subtasks": 1000,
    "messages": 2000,
    "permits": 2500,
    "unregistered": 500,
    "woken": 1000,
    "served": 1000,
}

WORKLOADS = {
    "subtask_ms": ("subtasks", "a subtask waited for", "ms"),
    "recv_us": ("messages", "a message taken", "us"),
    "rate_limited_step_us": ("permits", "a rate-limited step", "us"),
    "unregistered_ms": ("unregistered", "a task marked unregistered", "ms"),
    "woken_ms": ("woken", "a task woken with the others", "ms"),
    "served_ms": ("served", "a task served", "ms"),
}
FIGURES = [
    Figure(f"{label}, 4N", key, unit, f"details.{key}_at_n", f"{label}, N")
    for key, (_, label, unit) in WORKLOADS.items()
]
TARGETS = [
    Target(key.removesuffix("_ms").removesuffix("_us"), key, "<=", 1.5, f"details.{key}_at_n")
    for key in WORKLOADS
]


def run_to_sum(engine: Engine, task_id: str, count: int, what: str) -> float:
    """Run the engine's tasks; ``task_id`` must return 0 + 1 + ... + (count - 1): seconds per
    item."""
    t0 = time.perf_counter()
    engine.run()
    elapsed = time.perf_counter() - t0
    if engine.result(task_id) != count * (count - 1) // 2:
        raise SystemExit(f"{what}: {engine.task_view(task_id)}")
    return elapsed / count


def subtasks(url: str, count: int) -> float:
    """Seconds per subtask: a parent waits for ``count`` subtasks."""
    with Engine.open(url, session="b") as engine:

        @engine.task(name="child")
        def child(i: int) -> int:
            return i

        @engine.task(name="parent")
        def parent(n: int) -> int:
            return sum(engine.wait([engine.submit("child", i) for i in range(n)]))

        task_id = engine.submit("parent", count)
        return run_to_sum(engine, task_id, count, f"the parent of {count} subtasks")


def messages(url: str, count: int) -> float:
    """Seconds per message: one task takes ``count`` messages."""
    with Engine.open(url, session="b") as engine:

        @engine.task(name="consumer")
        def consumer(n: int) -> int:
            return sum(engine.recv("item") for _ in range(n))

        task_id = engine.submit("consumer", count)
        for i in range(count):
            engine.send(task_id, "item", i)
        return run_to_sum(engine, task_id, count, f"a task taking {count} messages")


def permits(url: str, count: int) -> float:
    """Seconds per step: one task calls a rate-limited step ``count`` times."""
    with Engine.open(url, session="b") as engine:
        engine.limit("api", concurrency=4, rate="100000/hour")

        @engine.step(name="call", limit="api")
        def call(i: int) -> int:
            return i

        @engine.task(name="caller")
        def caller(n: int) -> int:
            return sum(call(i) for i in range(n))

        task_id = engine.submit("caller", count)
        return run_to_sum(engine, task_id, count, f"a task of {count} limited steps")


def unregistered(url: str, count: int) -> float:
    """Seconds per task: ``count`` queued tasks whose function is gone marked unregistered."""
    with Engine.open(url, session="b") as engine:

        @engine.task(name="renamed")
        def renamed(i: int) -> None: ...

        for i in range(count):
            engine.submit("renamed", i)
    with Engine.open(url, session="b") as engine:

        @engine.task(name="other")
        def other() -> None: ...

        logging.getLogger("onward").setLevel(logging.ERROR)  # a warning for each task
        t0 = time.perf_counter()
        engine.run()
        elapsed = time.perf_counter() - t0
        logging.getLogger("onward").setLevel(logging.NOTSET)
        if len(engine.tasks("unregistered")) != count:
            raise SystemExit(f"{count} tasks to mark unregistered: {engine.tasks()[:3]}")
    return elapsed / count


def woken(url: str, count: int) -> float:
    """Seconds per task: ``count`` tasks parked on a message, all sent theirs, then run."""
    with Engine.open(url, session="b") as engine:

        @engine.task(name="parked")
        def parked(i: int) -> Any:
            return engine.recv("go")

        ids = [engine.submit("parked", i) for i in range(count)]
        if engine.run().waiting != count:
            raise SystemExit(f"{count} tasks to park: {engine.tasks()[:3]}")
        for task_id in ids:
            engine.send(task_id, "go", 1)
        t0 = time.perf_counter()
        summary = engine.run()
        elapsed = time.perf_counter() - t0
        if summary.succeeded != count:
            raise SystemExit(f"{count} tasks woken: {summary}")
    return elapsed / count


def served(url: str, count: int) -> float:
    """Seconds per task: a worker service runs ``count`` one-step tasks queued at once."""
    stop = threading.Event()
    ended = itertools.count(1)
    with Engine.open(url, session="b") as engine:

        @engine.step(name="one")
        def one(i: int) -> int:
            return i

        @engine.task(name="served")
        def task(i: int) -> int:
            result = one(i)
            if next(ended) == count:
                stop.set()
            return result

        for i in range(count):
            engine.submit("served", i)
        t0 = time.perf_counter()
        summary = engine.serve(workers=1, stop=stop, handle_signals=False)
        elapsed = time.perf_counter() - t0
        if summary.succeeded != count:
            raise SystemExit(f"{count} tasks served: {summary}")
    return elapsed / count


RUNS: dict[str, Callable[[str, int], float]] = {
    "subtask_ms": subtasks,
    "recv_us": messages,
    "rate_limited_step_us": permits,
    "unregistered_ms": unregistered,
    "woken_ms": woken,
    "served_ms": served,
}


def measure(directory: Path, counts: dict[str, int], args: Any) -> dict[str, Any]:
    """Every figure, in one run."""
    del args
    files = Files(directory)
    result: dict[str, Any] = {"details": {}, "counts": counts}
    for key, run in RUNS.items():
        what, label, unit = WORKLOADS[key]
        scale = 1000.0 if unit == "ms" else 1e6
        for factor, where in ((1, f"{key}_at_n"), (4, key)):
            count = counts[what] * factor
            _bench.progress(f"{label}: {count}")
            seconds = run(f"sqlite:///{files.new(key)}?synchronous=normal", count)
            figure = round(seconds * scale, 3)
            if factor == 1:
                result["details"][where] = figure
            else:
                result[where] = figure
    return result


def details(result: dict[str, Any]) -> list[str]:
    """The counts."""
    counts = result.get("counts", {})
    return ["N: " + ", ".join(f"{counts.get(w)} {w}" for w, _, _ in WORKLOADS.values())]


BENCHMARK = _bench.Benchmark(__doc__, FULL, QUICK, measure, FIGURES, TARGETS, details)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
