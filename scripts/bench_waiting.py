"""Benchmark of claims beside parked tasks: tasks waiting on a message cost a claim nothing.

What it measures, in one run (fresh SQLite files in one directory, ``synchronous=NORMAL``:
the figures are the engine's CPU, not the disk's):

* ``task_ms_beside_finished``: N one-step tasks run by ``Engine.run()`` on a log where P other
  one-step tasks have run to their end: wall time / N (the floor: a log of the same size).
* ``task_ms_beside_parked``: the same N tasks on a log where P other tasks are parked on
  ``engine.recv()`` (waiting for a message no one sends): wall time / N. A claim looks only at
  the waiting tasks that may be ready (their timers passed, their subtasks ended), never at
  the parked ones.
* ``park_ms``: per task, parking those P tasks (each claimed, run to its ``recv()``, recorded
  as waiting), beside ``finish_ms``: per task, running the P one-step tasks of the floor's log
  (the log grows alike): a park must not cost more as more tasks are parked.

Targets: task_ms_beside_parked <= 1.5 x task_ms_beside_finished; park_ms <= 1.5 x finish_ms.

    .venv/bin/python scripts/bench_waiting.py --json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target

from onward import Engine

FULL: dict[str, int] = {"tasks": 1000, "parked": 20000}
QUICK: dict[str, int] = {"tasks": 200, "parked": 5000}

FIGURES = [
    Figure(
        "a task beside parked tasks",
        "task_ms_beside_parked",
        "ms",
        "task_ms_beside_finished",
        "beside finished tasks",
    ),
    Figure("parking a task", "park_ms", "ms", "finish_ms", "a one-step task"),
]
TARGETS = [
    Target("beside_parked", "task_ms_beside_parked", "<=", 1.5, "task_ms_beside_finished"),
    Target("parking", "park_ms", "<=", 1.5, "finish_ms"),
]


def register(engine: Engine) -> None:
    """The tasks: ``parked`` waits for a message; ``quick`` runs one step."""

    @engine.task(name="parked")
    def parked(i: int) -> Any:
        return engine.recv("go")

    @engine.step(name="one")
    def one(i: int) -> int:
        return i

    @engine.task(name="quick")
    def quick(i: int) -> int:
        return one(i)


def timed_run(engine: Engine, name: str, first: int, count: int, expect: str) -> float:
    """Submit ``count`` tasks ``name`` and run them: seconds per task."""
    for i in range(first, first + count):
        engine.submit(name, i)
    t0 = time.perf_counter()
    summary = engine.run()
    elapsed = time.perf_counter() - t0
    done = summary.waiting if expect == "waiting" else summary.succeeded
    if done != count:
        raise SystemExit(f"{count} {name} tasks: {summary}")
    return elapsed / count


def measure(directory: Path, counts: dict[str, int], args: Any) -> dict[str, Any]:
    """Every figure, in one run."""
    del args
    files = Files(directory)
    tasks, parked = counts["tasks"], counts["parked"]
    _bench.progress(f"{parked} one-step tasks, then {tasks} more")
    with Engine.open(f"sqlite:///{files.new('finished')}?synchronous=normal", session="b") as e:
        register(e)
        finish = timed_run(e, "quick", 0, parked, "succeeded")
        finished = timed_run(e, "quick", parked, tasks, "succeeded")
    _bench.progress(f"{parked} tasks parked, then {tasks} one-step tasks")
    with Engine.open(f"sqlite:///{files.new('parked')}?synchronous=normal", session="b") as e:
        register(e)
        park = timed_run(e, "parked", 0, parked, "waiting")
        beside = timed_run(e, "quick", parked, tasks, "succeeded")
    return {
        "task_ms_beside_finished": round(finished * 1000, 3),
        "task_ms_beside_parked": round(beside * 1000, 3),
        "finish_ms": round(finish * 1000, 3),
        "park_ms": round(park * 1000, 3),
        "counts": counts,
    }


def details(result: dict[str, Any]) -> list[str]:
    """The counts."""
    counts = result.get("counts", {})
    return [f"{counts.get('tasks')} one-step tasks; {counts.get('parked')} tasks parked"]


BENCHMARK = _bench.Benchmark(__doc__, FULL, QUICK, measure, FIGURES, TARGETS, details)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
