"""Steps that fail at once are judged together: the breaker and the retry budget count them all.

Each failure used to be decided on the log as it was before any of the others was recorded:
N calls failing together under ``BreakerPolicy(failures=N)`` left the breaker closed (each
counted one failure), and N failures under ``RetryBudget(limit=3)`` scheduled up to N retries.
The bodies here meet at a barrier, so that they fail together, on both paths (threads of
``run(workers=N)`` and tasks of ``run_async(concurrency=N)``), against a real SQLite file.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from onward import BreakerPolicy, Engine, RetryBudget, RetryPolicies, RetryPolicy
from onward.events import BreakerOpened, DecisionMade, RetryScheduled, StepFailed, open_log

TOGETHER = 5


@pytest.fixture(params=["threads", "asyncio"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def failing_engine(db: Path, path: str, **options: object) -> tuple[Engine, list[int]]:
    """An engine whose task ``job`` calls a step guarded by breaker ``dep`` that fails
    ``TOGETHER`` times at once (the bodies meet first), and then once more for each later
    call; returns it and the list of calls its dependency took."""
    engine = Engine.open(f"sqlite:///{db}", session="s", **options)  # type: ignore[arg-type]
    calls: list[int] = []
    meet = threading.Barrier(TOGETHER, timeout=30)
    gathering = asyncio.Barrier(TOGETHER) if path == "asyncio" else None

    if gathering is None:

        @engine.step(breaker="dep")
        def call(n: int) -> int:
            calls.append(n)
            if len(calls) <= TOGETHER:
                meet.wait()
            raise ConnectionError("dependency down")

        @engine.task()
        def job(n: int) -> int:
            return call(n)

    else:

        @engine.step(breaker="dep", name="call")
        async def call_async(n: int) -> int:
            calls.append(n)
            if len(calls) <= TOGETHER:
                await asyncio.wait_for(gathering.wait(), 30)
            raise ConnectionError("dependency down")

        @engine.task(name="job")
        async def job_async(n: int) -> int:
            return await call_async(n)

    return engine, calls


def run(engine: Engine, path: str, workers: int) -> None:
    """Run ``workers`` tasks at once, and no more (a task that then waits, for a retry or a
    breaker's cool-down, is not waited for)."""
    if path == "asyncio":
        asyncio.run(engine.run_async(concurrency=workers, max_runs=workers))
    else:
        engine.run(workers=workers, max_runs=workers)


def count(db: Path, kind: type) -> int:
    with open_log(f"sqlite:///{db}") as log:
        return sum(1 for r in log.read() if isinstance(r.event, kind))


def test_a_breaker_opens_when_its_threshold_of_failures_came_at_once(
    tmp_path: Path, path: str
) -> None:
    engine, calls = failing_engine(
        tmp_path / "log.db",
        path,
        breakers=BreakerPolicy(failures=TOGETHER, cooldown=3600.0),
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
    )
    try:
        for n in range(TOGETHER):
            engine.submit("job", n)
        run(engine, path, TOGETHER)
        assert count(tmp_path / "log.db", StepFailed) == TOGETHER
        breaker = engine.refresh().breakers.get("dep")
        assert breaker.state == "open"
        assert count(tmp_path / "log.db", BreakerOpened) == 1
        # The next call does not reach the dependency: its task waits for the cool-down.
        later = engine.submit("job", 99)
        run(engine, path, 1)
        assert len(calls) == TOGETHER
        assert engine.task_view(later).state == "waiting"
    finally:
        engine.close()


def test_failures_at_once_spend_the_retry_budget_once(tmp_path: Path, path: str) -> None:
    engine, _ = failing_engine(
        tmp_path / "log.db",
        path,
        retries=RetryPolicies(RetryPolicy(max_attempts=2, base=3600.0, cap=3600.0)),
        retry_budget=RetryBudget(limit=3, window=3600.0),
        breakers=BreakerPolicy(failures=100, cooldown=1.0),
    )
    try:
        for n in range(TOGETHER):
            engine.submit("job", n)
        run(engine, path, TOGETHER)
        assert count(tmp_path / "log.db", StepFailed) == TOGETHER
        assert count(tmp_path / "log.db", RetryScheduled) == 3
    finally:
        engine.close()


def test_a_closed_breaker_past_its_threshold_opens_at_the_next_call(tmp_path: Path) -> None:
    """Failures recorded by workers that each saw fewer than the threshold (other
    processes: no lock of this one orders them) open the breaker at the next call."""
    db = tmp_path / "log.db"
    once = RetryPolicies(RetryPolicy(max_attempts=1))
    lenient = Engine.open(
        f"sqlite:///{db}", session="s", breakers=BreakerPolicy(failures=50), retries=once
    )
    calls: list[int] = []

    @lenient.step(breaker="dep")
    def call(n: int) -> int:
        calls.append(n)
        raise ConnectionError("dependency down")

    @lenient.task()
    def job(n: int) -> int:
        return call(n)

    try:
        for n in range(3):
            lenient.submit(job, n)
        lenient.run()
        assert lenient.refresh().breakers.get("dep").consecutive_failures >= 3
    finally:
        lenient.close()
    strict = Engine.open(
        f"sqlite:///{db}",
        session="s",
        breakers=BreakerPolicy(failures=3, cooldown=3600.0),
        retries=once,
    )
    strict.step(breaker="dep")(call)
    strict.task()(job)
    try:
        before = len(calls)
        later = strict.submit(job, 99)
        strict.run(max_runs=1)
        assert len(calls) == before
        assert strict.task_view(later).state == "waiting"
        assert strict.refresh().breakers.get("dep").state == "open"
        with open_log(f"sqlite:///{db}") as log:
            decisions = [
                r
                for r in log.read_stream(f"task-{later}")
                if isinstance(r.event, DecisionMade) and r.event.kind == "breaker"
            ]
            failures = [r for r in log.read() if isinstance(r.event, StepFailed)]
        assert [d.event.choice for d in decisions] == ["open", "wait"]  # type: ignore[union-attr]
        # The opening answers the last failure (another task's): `onward why` follows it.
        assert decisions[0].meta.causation_id == failures[-1].meta.event_id
    finally:
        strict.close()
