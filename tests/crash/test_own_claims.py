"""A live worker never takes its own running task for a left-over claim.

A task that records a retry's wait is claimable again at once; the worker's event loop could
claim it anew before the run that recorded the wait had quite ended, whose end then let the
new claim go with it. The worker's next look at its claims took the new one for one left over
from a stopped run and expired it under its running step: an at-most-once step failed as
interrupted, and a step's body ran twice, in one live process with no peer.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import pytest

from onward import Engine, ErrorBudget, Observer, RetryBudget, RetryPolicies, RetryPolicy
from onward.events import TaskLeaseExpired, open_log
from onward.runtime.session import Session

TASKS = 200


def test_the_end_of_an_older_run_does_not_let_a_newer_claim_go(tmp_path: Path) -> None:
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s") as engine:
        session: Session = engine._session
        session.hold("t1", "claim-1", 100.0)
        session.hold("t1", "claim-2", 100.0)  # claimed anew as the first run recorded its wait
        session.let_go("t1", "claim-1")  # then the first run ends
        assert session.running == {"t1": "claim-2"}
        session.let_go("t1", "claim-2")
        assert session.running == {}


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_a_serving_loop_never_expires_its_own_claims(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'log.db'}"
        if where == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    bodies: Counter[tuple[str, str]] = Counter()
    failed_once: set[str] = set()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    class Stopper(Observer):
        """Stops the worker once every task has ended (its end is recorded)."""

        def __init__(self) -> None:
            self.ended = 0
            self.lock = threading.Lock()

        def task_ended(self, token: object, outcome: str) -> None:
            with self.lock:
                self.ended += outcome in ("succeeded", "failed")
                if self.ended == TASKS:
                    loop.call_soon_threadsafe(stop.set)

    engine = Engine.open(
        url,
        session="s",
        observer=Stopper(),
        retries=RetryPolicies(default=RetryPolicy(max_attempts=10, base=0.001, cap=0.002)),
        retry_budget=RetryBudget(limit=1000, window=1.0),
        budget=ErrorBudget(limit=1000, window=1.0, slow_down=0.0),
    )
    with engine:

        @engine.step()
        def flaky(n: int) -> int:
            key = engine.idempotency_key()
            bodies[(key, "flaky")] += 1
            if key not in failed_once:  # each call fails once: its task waits for a retry
                failed_once.add(key)
                raise ConnectionError(f"flaky {n}")
            return n + 1

        @engine.step(at_most_once=True)
        def once(n: int) -> int:
            bodies[(engine.idempotency_key(), "once")] += 1
            return n + 1

        @engine.task()
        async def hop(n: int) -> int:
            for _ in range(2):
                n = await flaky(n)
                n = await once(n)
            return n

        ids = [engine.submit(hop, i) for i in range(TASKS)]

        async def serve() -> None:
            await engine.serve_async(concurrency=16, stop=stop, handle_signals=False)

        try:
            loop.run_until_complete(asyncio.wait_for(serve(), 120))
        finally:
            loop.close()
        assert [engine.task_view(t).state for t in ids] == ["succeeded"] * TASKS
    with open_log(url) as log:
        expired = [
            r
            for t in ids
            for r in log.read_stream(f"task-{t}")
            if isinstance(r.event, TaskLeaseExpired)
        ]
    assert expired == []
    # Every body ran once, but for each flaky call's one failure.
    assert {k: v for k, v in bodies.items() if v != (2 if k[1] == "flaky" else 1)} == {}
