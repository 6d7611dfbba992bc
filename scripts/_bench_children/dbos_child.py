"""Child processes of ``scripts/bench_tasks.py`` for DBOS (not a public entry point).

DBOS is run as onward's DESIGN.md describes: ``DBOS(config={"name": ...,
"system_database_url": "sqlite:///FILE"})``, the file set to ``PRAGMA journal_mode=WAL`` before
DBOS creates its tables, then ``DBOS.launch()``; a workflow of trivial ``@DBOS.step()`` calls.

Modes (one JSON object on stdout when the mode ends normally):

* ``step PATH N``: a 50-step warm-up workflow, then one workflow of N steps; wall time / N.
* ``crash PATH STEPS KILL_AT``: a workflow of STEPS steps whose step KILL_AT sends SIGKILL to
  its own process.
* ``resume PATH STAMP``: ``DBOS.launch()`` again (which recovers the pending workflow); the
  first step that really executes writes ``time.time()`` to STAMP; waits for the result.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time

WORKFLOW_ID = "bench-resume"


def main(argv: list[str]) -> int:
    mode, path = argv[0], argv[1]
    if mode in ("step", "crash"):
        with sqlite3.connect(path) as db:  # WAL before DBOS creates its tables
            db.execute("PRAGMA journal_mode=WAL")
    kill_at = int(argv[3]) if mode == "crash" else -1
    stamp = argv[2] if mode == "resume" else ""
    stamped = False

    from dbos import DBOS, SetWorkflowID

    DBOS(config={"name": "onward-bench", "system_database_url": f"sqlite:///{path}"})

    @DBOS.step()
    def work(i: int) -> int:
        nonlocal stamped
        if mode == "resume" and not stamped:
            stamped = True
            with open(stamp, "w") as out:
                out.write(repr(time.time()))
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return i + 1

    @DBOS.workflow()
    def job(n: int) -> int:
        total = 0
        for i in range(n):
            total = work(i)
        return total

    DBOS.launch()
    try:
        if mode == "step":
            n = int(argv[2])
            job(50)
            t0 = time.perf_counter()
            result = job(n)
            elapsed = time.perf_counter() - t0
            assert result == n, result
            print(json.dumps({"step_us": elapsed / n * 1e6, "steps": n}))
        elif mode == "crash":
            with SetWorkflowID(WORKFLOW_ID):
                job(int(argv[2]))
            print(json.dumps({"error": f"step {kill_at} did not kill the process"}))
            return 1
        elif mode == "resume":
            result = DBOS.retrieve_workflow(WORKFLOW_ID).get_result()
            print(json.dumps({"result": result, "stamped": stamped}))
        else:
            print(json.dumps({"error": f"unknown mode {mode!r}"}))
            return 2
    finally:
        DBOS.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
