"""DBOS on PostgreSQL for ``scripts/bench_workers.py`` (not a public entry point).

``dbos_pg_child.py URL N``: ``DBOS(config={"name": ..., "system_database_url": URL})`` (DBOS
creates the database when missing), ``DBOS.launch()``, a 50-step warm-up workflow, then one
workflow of ``N`` trivial ``@DBOS.step()`` calls; prints ``{"step_us": wall time / N}``.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    url, n = argv[0], int(argv[1])
    from dbos import DBOS

    DBOS(config={"name": "onward-bench-workers", "system_database_url": url})

    @DBOS.step()
    def work(i: int) -> int:
        return i + 1

    @DBOS.workflow()
    def job(count: int) -> int:
        total = 0
        for i in range(count):
            total = work(i)
        return total

    DBOS.launch()
    try:
        job(50)
        started = time.perf_counter()
        result = job(n)
        elapsed = time.perf_counter() - started
        assert result == n, result
        print(json.dumps({"step_us": elapsed / n * 1e6, "steps": n}))
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
