"""Benchmark of onward's asyncio path: many tasks in flight, their step outcomes group-committed.

What it measures, in one run (fresh SQLite files in one directory, ``synchronous=FULL``):

* ``async_steps_per_s_c1`` / ``_c64`` / ``_c512``: ``async def`` tasks of trivial ``async def``
  steps run by ``Engine.run_async(concurrency=C)`` with 1, 64 and 512 tasks in flight: steps
  run / wall time of the run (claims, boundaries and outcomes included).
* ``raw_commits_per_s``: the floor: raw sqlite3 on the same file system, WAL, FULL, one
  200-byte row per INSERT + COMMIT. Past it only by committing many steps per transaction.
* ``io_bound_speedup``: 500 tasks of 3 steps, each awaiting ``asyncio.sleep(0.05)`` (a model
  call): the wall time at concurrency 1 over the wall time at concurrency 256.
* ``loop_block_p99_ms``: while 256 of those tasks run, a probe on the same loop sleeps 1 ms
  again and again; the p99 of how late it wakes is the longest the loop was kept busy.
* ``dbos_async_steps_per_s`` / ``langgraph_async_steps_per_s``: the peers on the workload of
  ``_c64`` (64 async workflows of trivial async steps on one loop; DBOS 3.4 with its SQLite
  system database in WAL; LangGraph's ``AsyncSqliteSaver`` with ``durability="sync"``, one
  graph thread per workflow), each in a process of its own (scripts/_bench_children).

Targets: async_steps_per_s_c64 >= 5 x raw_commits_per_s (past the fsync floor by group commit);
io_bound_speedup >= 100; loop_block_p99_ms <= 5; ahead of both peers.

    .venv/bin/python scripts/bench_async.py --json     # needs the bench extra for the peers
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target

from onward import Engine

FULL: dict[str, int] = {
    "tasks_c1": 100,
    "tasks_c64": 640,
    "tasks_c512": 2_048,
    "steps": 10,
    "raw_commits": 2_000,
    "io_tasks": 500,
    "io_steps": 3,
    "peer_workflows": 64,
}
QUICK: dict[str, int] = {
    "tasks_c1": 30,
    "tasks_c64": 256,
    "tasks_c512": 1_024,
    "steps": 10,
    "raw_commits": 500,
    "io_tasks": 60,
    "io_steps": 3,
    "peer_workflows": 64,
}
#: A model call, for the I/O-bound workload.
IO_SECONDS = 0.05
RAW = "raw sqlite3 commit/row"

FIGURES = [
    Figure("async steps/s, 1 in flight", "async_steps_per_s_c1", "eps", "raw_commits_per_s", RAW),
    Figure("async steps/s, 64 in flight", "async_steps_per_s_c64", "eps", "raw_commits_per_s", RAW),
    Figure(
        "async steps/s, 512 in flight", "async_steps_per_s_c512", "eps", "raw_commits_per_s", RAW
    ),
    Figure("I/O-bound speed-up, c256 vs c1", "io_bound_speedup", "times", why="a ratio itself"),
    Figure("loop blocked, p99", "loop_block_p99_ms", "ms", why="a latency of the loop"),
    Figure(
        "DBOS async steps/s, 64 in flight",
        "dbos_async_steps_per_s",
        "eps",
        "async_steps_per_s_c64",
        "onward, 64 in flight",
    ),
    Figure(
        "LangGraph async steps/s, 64 threads",
        "langgraph_async_steps_per_s",
        "eps",
        "async_steps_per_s_c64",
        "onward, 64 in flight",
    ),
]
TARGETS = [
    Target("group_commit", "async_steps_per_s_c64", ">=", 5, "raw_commits_per_s"),
    Target("io_bound", "io_bound_speedup", ">=", 100, why="a ratio of two wall times already"),
    Target("loop_block", "loop_block_p99_ms", "<=", 5, why="how long the loop waits, not a rate"),
    Target("vs_dbos", "async_steps_per_s_c64", ">", 1, "dbos_async_steps_per_s"),
    Target("vs_langgraph", "async_steps_per_s_c64", ">", 1, "langgraph_async_steps_per_s"),
]


def raw_commits_per_s(path: Path, commits: int) -> float:
    """Raw sqlite3, WAL, FULL: one 200-byte row per INSERT + COMMIT."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE events (stream TEXT, version INTEGER, state BLOB)")
        blob = b"x" * 200
        started = time.perf_counter()
        for v in range(commits):
            db.execute("BEGIN")
            db.execute("INSERT INTO events VALUES (?, ?, ?)", ("task-bench", v, blob))
            db.execute("COMMIT")
        return commits / (time.perf_counter() - started)
    finally:
        db.close()


def steps_per_s(path: Path, concurrency: int, tasks: int, steps: int) -> float:
    """Trivial async tasks through ``run_async``: steps run per second."""
    with Engine.open(f"sqlite:///{path}", session="bench") as engine:

        @engine.step(name="bench.part")
        async def part(i: int) -> int:
            return i

        @engine.task(name="bench.whole")
        async def whole(n: int) -> int:
            total = 0
            for i in range(n):
                total += await part(i)
            return total

        for _ in range(tasks):
            engine.submit(whole, steps)
        started = time.perf_counter()
        summary = asyncio.run(engine.run_async(concurrency=concurrency))
        elapsed = time.perf_counter() - started
        assert summary.succeeded == tasks, summary
        return summary.steps_run / elapsed


def io_bound(path: Path, concurrency: int, tasks: int, steps: int) -> tuple[float, list[float]]:
    """Tasks of steps awaiting a 50 ms call: the wall time, and (at high concurrency) how late
    a 1 ms probe on the same loop woke each time."""
    with Engine.open(f"sqlite:///{path}", session="io") as engine:

        @engine.step(name="io.call")
        async def call(i: int) -> int:
            await asyncio.sleep(IO_SECONDS)
            return i

        @engine.task(name="io.agent")
        async def agent(n: int) -> int:
            return sum([await call(i) for i in range(n)])

        for _ in range(tasks):
            engine.submit(agent, steps)
        lateness: list[float] = []

        async def probe(done: asyncio.Event) -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                before = loop.time()
                await asyncio.sleep(0.001)
                lateness.append((loop.time() - before - 0.001) * 1000)

        async def main() -> float:
            done = asyncio.Event()
            watcher = asyncio.create_task(probe(done))
            started = time.perf_counter()
            summary = await engine.run_async(concurrency=concurrency)
            elapsed = time.perf_counter() - started
            done.set()
            await watcher
            assert summary.succeeded == tasks, summary
            return elapsed

        return asyncio.run(main()), lateness


def peer(child: str, path: Path, workflows: int, steps: int) -> float | None:
    """A peer's async steps per second, from its child process (None when it is missing)."""
    script = _bench.ROOT / "scripts" / "_bench_children" / child
    done = subprocess.run(
        [sys.executable, str(script), str(path), str(workflows), str(steps)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        _bench.progress(f"{child}: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["steps_per_s"])


def measure(directory: Path, counts: dict[str, int], args: Any) -> dict[str, Any]:
    """Every figure, in one run."""
    del args
    files = Files(directory)
    steps = counts["steps"]
    _bench.progress("raw sqlite3 commits")
    raw = raw_commits_per_s(files.new("raw"), counts["raw_commits"])
    found: dict[int, float] = {}
    for concurrency, key in ((1, "tasks_c1"), (64, "tasks_c64"), (512, "tasks_c512")):
        _bench.progress(f"async steps, {concurrency} in flight")
        found[concurrency] = steps_per_s(
            files.new(f"c{concurrency}"), concurrency, counts[key], steps
        )
    _bench.progress("I/O-bound tasks at concurrency 256, then 1")
    wide, lateness = io_bound(files.new("io-256"), 256, counts["io_tasks"], counts["io_steps"])
    narrow, _ = io_bound(files.new("io-1"), 1, counts["io_tasks"], counts["io_steps"])
    _bench.progress("DBOS async")
    dbos = peer("dbos_async_child.py", files.new("dbos"), counts["peer_workflows"], steps)
    _bench.progress("LangGraph async")
    graph = peer("langgraph_async_child.py", files.new("lg"), counts["peer_workflows"], steps)
    late = sorted(lateness)
    return {
        "async_steps_per_s_c1": round(found[1]),
        "async_steps_per_s_c64": round(found[64]),
        "async_steps_per_s_c512": round(found[512]),
        "raw_commits_per_s": round(raw),
        "io_bound_speedup": round(narrow / wide, 1),
        "loop_block_p99_ms": round(_bench.percentile(late, 0.99), 2) if late else None,
        "dbos_async_steps_per_s": None if dbos is None else round(dbos),
        "langgraph_async_steps_per_s": None if graph is None else round(graph),
        "details": {
            "io_wall_c1_s": round(narrow, 2),
            "io_wall_c256_s": round(wide, 3),
            "loop_block_max_ms": round(late[-1], 2) if late else None,
            "loop_probes": len(late),
        },
        "counts": counts,
    }


def details(result: dict[str, Any]) -> list[str]:
    """The wall times behind the speed-up, and the probe's worst."""
    d = result.get("details", {})
    return [
        f"I/O-bound walls: {d.get('io_wall_c1_s')} s at c1, {d.get('io_wall_c256_s')} s at "
        f"c256; loop blocked at most {d.get('loop_block_max_ms')} ms over "
        f"{d.get('loop_probes')} probes"
    ]


BENCHMARK = _bench.Benchmark(
    __doc__,
    FULL,
    QUICK,
    measure,
    FIGURES,
    TARGETS,
    details,
    packages=("dbos", "langgraph", "langgraph_checkpoint_sqlite"),
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
