"""Child process of ``scripts/bench_async.py`` for DBOS's async workflows (not a public entry).

``python dbos_async_child.py PATH WORKFLOWS STEPS``: DBOS on SQLite (the file set to WAL before
DBOS creates its tables), WORKFLOWS async workflows of STEPS trivial async steps each, started at
once on one event loop; prints ``{"steps_per_s": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time


def main(argv: list[str]) -> int:
    path, workflows, steps = argv[0], int(argv[1]), int(argv[2])
    with sqlite3.connect(path) as db:  # WAL before DBOS creates its tables
        db.execute("PRAGMA journal_mode=WAL")

    from dbos import DBOS

    DBOS(config={"name": "onward-bench-async", "system_database_url": f"sqlite:///{path}"})

    @DBOS.step()
    async def work(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    async def job(n: int) -> int:
        total = 0
        for i in range(n):
            total += await work(i)
        return total

    async def run() -> float:
        warm = await DBOS.start_workflow_async(job, 5)
        await warm.get_result()
        started = time.perf_counter()
        handles = [await DBOS.start_workflow_async(job, steps) for _ in range(workflows)]
        for handle in handles:
            await handle.get_result()
        return time.perf_counter() - started

    DBOS.launch()
    try:
        elapsed = asyncio.run(run())
    finally:
        DBOS.destroy()
    print(json.dumps({"steps_per_s": workflows * steps / elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
