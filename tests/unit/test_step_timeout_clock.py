"""A step's timeout under a virtual clock (the testing kit's ``FakeClock``): time the step's
body spends on the clock counts against its timeout, as real time does, so a test makes a step
overrun by moving the clock instead of waiting for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onward import Engine, RetryPolicies, RetryPolicy
from onward.events import StepFailed
from onward.testing import FakeClock


def open_engine(db: Path, clock: FakeClock) -> Engine:
    return Engine.open(
        f"sqlite:///{db}",
        session="timeouts",
        clock=clock,
        retries=RetryPolicies(RetryPolicy(max_attempts=3, base=0.5, cap=0.5)),
    )


def failures(engine: Engine) -> list[tuple[str, str]]:
    return [
        (r.event.error_type, r.event.message)
        for r in engine.log.read()
        if isinstance(r.event, StepFailed)
    ]


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_step_that_moves_the_fake_clock_past_its_timeout_times_out(
    tmp_path: Path, kind: str
) -> None:
    """Its first try spends a minute of the clock (a slow model call, simulated): past its
    timeout of 30 s it fails with ``TimeoutError`` and is retried; the retry, quick, returns."""
    clock = FakeClock()
    tries: list[float] = []

    def answer(n: int) -> int:
        tries.append(clock.now)
        if len(tries) == 1:
            clock.advance(60)
        return n * 2

    async def answer_async(n: int) -> int:
        return answer(n)

    with open_engine(tmp_path / "log.db", clock) as engine:
        step = engine.step(name="answer", timeout=30)(answer if kind == "plain" else answer_async)

        if kind == "plain":

            @engine.task()
            def job() -> int:
                return step(21)  # type: ignore[no-any-return]

            task_id = engine.submit(job)
            engine.run()
        else:

            @engine.task()
            async def job_async() -> int:
                return await step(21)  # type: ignore[no-any-return]

            task_id = engine.submit(job_async)
            asyncio.run(engine.run_async())
        assert engine.result(task_id) == 42
        assert len(tries) == 2
        assert failures(engine) == [
            ("TimeoutError", "step 'answer' did not return within its timeout of 30 s")
        ]


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_step_that_moves_the_fake_clock_within_its_timeout_returns(
    tmp_path: Path, kind: str
) -> None:
    clock = FakeClock()

    def answer(n: int) -> int:
        clock.advance(29)
        return n * 2

    async def answer_async(n: int) -> int:
        return answer(n)

    with open_engine(tmp_path / "log.db", clock) as engine:
        step = engine.step(name="answer", timeout=30)(answer if kind == "plain" else answer_async)

        @engine.task()
        async def job() -> int:
            return await step(21)  # type: ignore[no-any-return]

        task_id = engine.submit(job)
        asyncio.run(engine.run_async())
        assert engine.result(task_id) == 42
        assert failures(engine) == []


def test_a_siblings_moves_of_the_fake_clock_do_not_time_a_step_out(tmp_path: Path) -> None:
    """Only the time a step's own body spends on the clock counts against its timeout: while
    one task's step (timeout 30 s) awaits, another task's step simulates a slow call by moving
    the shared clock two minutes; the first step then returns in time, as it would have on a
    real clock, where the other's two minutes pass beside it, not within it."""
    clock = FakeClock()
    slow_call_done = asyncio.Event()

    async def wait_for_sibling() -> str:
        await slow_call_done.wait()
        return "done"

    async def slow_call() -> str:
        clock.advance(120)
        slow_call_done.set()
        return "ok"

    with open_engine(tmp_path / "log.db", clock) as engine:
        patient = engine.step(name="patient", timeout=30)(wait_for_sibling)
        slow = engine.step(name="slow")(slow_call)

        @engine.task()
        async def waits() -> str:
            return await patient()  # type: ignore[no-any-return]

        @engine.task()
        async def calls() -> str:
            return await slow()  # type: ignore[no-any-return]

        first = engine.submit(waits)
        second = engine.submit(calls)
        asyncio.run(engine.run_async(concurrency=2))
        assert engine.result(first) == "done"
        assert engine.result(second) == "ok"
        assert failures(engine) == []
