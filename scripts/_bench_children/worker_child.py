"""A worker process of ``scripts/bench_workers.py`` (not a public entry point).

``worker_child.py URL SESSION LEASE RECORDER HOST GO``: opens the engine on an existing log
(``RECORDER`` ``own`` for ``Engine.open``, ``earlier`` for the PostgreSQL log as onward wrote
it before: ``earlier_postgres.py``), registers the benchmark's task (``bench.job(n, hold)``:
``n`` trivial durable steps; the first sleeps ``hold`` seconds when ``BENCH_HOLD`` is set in
this process) with an empty ``HOST`` meaning this machine, prints ``ready``, waits for the file
``GO``, then serves (``Engine.serve(workers=1)``) until SIGTERM.

It then prints one JSON object: how long each successful claim took (``claims_ms``: the
scheduler's ``_claim_next`` from its call to its return with a task, lost races included) and
how many appends lost a race (``lost_claims``: TaskClaimed appends that met a VersionConflict;
``lost_other``: any other).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str]) -> int:
    url, session, lease, recorder, host, go = argv
    from onward import Engine
    from onward.events import Append, AppendResult, TaskClaimed, VersionConflict
    from onward.runtime.scheduler import Scheduler

    options: dict[str, Any] = {"lease": float(lease)}
    if host:
        options["host"] = host
    if recorder == "earlier":
        from earlier_postgres import EarlierPostgresLog

        engine = Engine(EarlierPostgresLog(url, create=False), session=session, **options)
    else:
        engine = Engine.open(url, session=session, create=False, **options)

    claims: list[float] = []
    lost = {"claims": 0, "other": 0}
    claim_next = Scheduler._claim_next

    def timed_claim(self: Scheduler) -> Any:
        started = time.perf_counter()
        found = claim_next(self)
        if found is not None:
            claims.append((time.perf_counter() - started) * 1000)
        return found

    Scheduler._claim_next = timed_claim  # type: ignore[method-assign]
    log = engine.log
    commit = log.commit

    def counted_commit(appends: Sequence[Append]) -> AppendResult:
        try:
            return commit(appends)
        except VersionConflict:
            claim = any(isinstance(e, TaskClaimed) for a in appends for e in a.events)
            lost["claims" if claim else "other"] += 1
            raise

    log.commit = counted_commit  # type: ignore[method-assign]
    hold = float(os.environ.get("BENCH_HOLD", "0"))

    @engine.step(name="bench.work")
    def work(i: int, slow: bool) -> int:
        if slow and hold and i == 0:
            time.sleep(hold)
        return i + 1

    @engine.task(name="bench.job")
    def job(n: int, slow: bool = False) -> int:
        total = 0
        for i in range(n):
            total = work(i, slow)
        return total

    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        engine.serve(workers=1)
    finally:
        engine.close()
    print(
        json.dumps(
            {"claims_ms": claims, "lost_claims": lost["claims"], "lost_other": lost["other"]}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
