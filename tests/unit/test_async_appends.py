"""An ``async def`` task's appends under cancellation and contention: an outcome handed to the
log is seen through, a cancelled wait for the task's turn to append gives the turn back, the
turns go in the order the steps asked for them, the task's own records never block the loop;
step timeouts and cancelled steps on the loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.events import (
    RetryScheduled,
    StateSet,
    StepCompleted,
    StepFailed,
    TaskProgressed,
    TaskReleased,
)
from onward.runtime.run import CURRENT_RUN
from tests.conftest import FakeClock
from tests.unit.test_async import open_engine


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


def run_in_a_thread(run: Callable[[], Any]) -> Any:
    """Run ``run`` in a thread of its own, so that a deadlock fails the test instead of
    hanging it."""
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(run()), daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert done, "the run did not return: deadlocked"
    return done[0]


def run_with(engine: Engine, runner: str) -> Any:
    """``run_async`` (its steps' outcomes group-committed) or ``run()`` (one worker: the task
    on a loop of its own, appending without a committer)."""
    if runner == "run":
        return run_in_a_thread(engine.run)
    return run_in_a_thread(lambda: asyncio.run(engine.run_async(concurrency=2)))


class WatchedLock:
    """A task's append lock that tells when a worker thread starts waiting for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waited = threading.Event()

    def acquire(self, blocking: bool = True) -> bool:
        if blocking:
            self.waited.set()
        return self.lock.acquire(blocking)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_cancelled_while_its_outcome_commits_is_seen_through(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The outcome is durable and the run counts it: the cancellation goes on, and the task's
    next step appends after it (no version conflict, the task ends as it saw things)."""
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fast(n: int) -> int:
            return n  # ends at once: its outcome goes to the log

        @engine.task()
        async def job() -> str:
            step = asyncio.ensure_future(fast(1))
            await asyncio.sleep(0)  # fast() now awaits the commit of its outcome
            step.cancel()
            try:
                await step
                seen = "completed"
            except asyncio.CancelledError:
                seen = "cancelled"
            return f"{seen} then {await fast(2)}"

        task_id = engine.submit(job)
        summary = run_with(engine, runner)
        assert summary.succeeded == 1
        assert engine.result(task_id) == "cancelled then 2"
        history = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        done = [(e.index, e.result) for e in history if isinstance(e, StepCompleted)]
        assert done == [(0, 1), (1, 2)]


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_cancelled_while_waiting_for_its_turn_to_append_gives_the_turn_back(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A TaskGroup or ``wait_for`` that gives up on a step waiting for its task's append lock:
    the lock its worker thread takes late is given back, and the task goes on."""
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fast(n: int) -> int:
            return n

        @engine.task()
        async def job() -> int:
            run = CURRENT_RUN.get()
            assert run is not None
            turn = WatchedLock()
            run._appending = turn  # type: ignore[assignment]
            turn.lock.acquire()  # another step of the task appends
            step = asyncio.ensure_future(fast(1))
            await asyncio.to_thread(turn.waited.wait)  # its worker thread waits for the turn
            step.cancel()
            with pytest.raises(asyncio.CancelledError):
                await step
            turn.lock.release()  # that thread takes it now: it must be given back
            return await fast(2)

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == 2


class SlowToWake(WatchedLock):
    """A task's append lock whose waiting worker thread takes it only once let go: a thread
    the system is slow to wake once the lock is free."""

    def __init__(self) -> None:
        super().__init__()
        self.let_go = threading.Event()

    def acquire(self, blocking: bool = True) -> bool:
        if blocking:
            self.waited.set()
            self.let_go.wait()
        return self.lock.acquire(blocking)


class CountedTurns(asyncio.Lock):
    """The loop's queue for a task's turn to append, counting the steps that queued."""

    queued = 0

    async def acquire(self) -> bool:
        if self.locked():
            self.queued += 1
        return await super().acquire()


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_that_ends_while_another_waits_for_its_turn_to_append_appends_after_it(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The append lock is free, but the worker thread waiting for it on behalf of an earlier
    step has yet to take it: a step that ends now queues behind that step instead of taking
    the lock first (the task's appends go in the order its steps asked for their turn)."""
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fast(n: int) -> int:
            return n

        @engine.task()
        async def job() -> list[int]:
            run = CURRENT_RUN.get()
            assert run is not None
            turn = SlowToWake()
            turns = CountedTurns()
            run._appending = turn  # type: ignore[assignment]
            run._loop_turns = turns
            turn.lock.acquire()  # another step of the task appends
            first = asyncio.ensure_future(fast(1))
            await asyncio.to_thread(turn.waited.wait)  # its worker thread waits for the turn
            turn.lock.release()  # that append ends; the waiting thread is yet to wake
            second = asyncio.ensure_future(fast(2))
            for _ in range(1000):  # until the second step has asked for its turn
                if turns.queued or turn.lock.locked():
                    break
                await asyncio.sleep(0)
            turn.let_go.set()
            return list(await asyncio.gather(first, second))

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == [1, 2]
        history = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        done = [(e.index, e.result) for e in history if isinstance(e, StepCompleted)]
        assert done == [(0, 1), (1, 2)]


@pytest.mark.parametrize("call", ["progress", "set_state"])
def test_progress_and_state_from_an_async_task_are_awaited_beside_a_committing_step(
    db: Path, clock: FakeClock, call: str
) -> None:
    """In an ``async def`` task they are awaited, like ``engine.sleep``: the loop never waits
    for a step of the same task that appends meanwhile (nor for the disk)."""
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fetch(n: int) -> int:
            return n

        async def report() -> None:
            await asyncio.sleep(0)  # fetch() now awaits the commit of its outcome
            if call == "progress":
                await engine.progress(0.5, "fetched")
            else:
                await engine.set_state("stage", "fetched")

        @engine.task()
        async def job() -> int:
            value, _ = await asyncio.gather(fetch(1), report())
            return value

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        assert engine.result(task_id) == 1
        history = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        if call == "progress":
            assert [e.note for e in history if isinstance(e, TaskProgressed)] == ["fetched"]
        else:
            assert engine.get_state(task_id, "stage") == "fetched"
            assert sum(isinstance(e, StateSet) for e in history) == 1


@pytest.mark.parametrize("kind", ["async", "plain", "async blocking the loop"])
def test_a_step_past_its_timeout_fails_with_the_same_message_on_both_paths(
    db: Path, clock: FakeClock, kind: str
) -> None:
    """An ``async def`` step that returns after its timeout (it blocked the loop, so the
    timeout could not fire) timed out all the same; its late result is not recorded."""
    never = asyncio.Event()
    let_go = threading.Event()
    tries: list[int] = []
    with open_engine(db, clock) as engine:

        async def slow_async() -> str:
            tries.append(1)
            if len(tries) == 1:
                await never.wait()  # cancelled by the timeout
            return "in time"

        def slow_plain() -> str:
            tries.append(1)
            if len(tries) == 1:
                let_go.wait()  # abandoned in its thread
            return "in time"

        async def slow_blocking() -> str:
            tries.append(1)
            if len(tries) == 1:
                until = time.monotonic() + 0.05
                while time.monotonic() < until:  # a blocking client: the loop waits
                    pass
                return "late"
            return "in time"

        bodies = {
            "async": slow_async,
            "plain": slow_plain,
            "async blocking the loop": slow_blocking,
        }
        step = engine.step(name="slow", timeout=0.01)(bodies[kind])

        @engine.task()
        async def job() -> str:
            return await step()  # type: ignore[no-any-return]

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        let_go.set()
        assert engine.result(task_id) == "in time"
        failures = [r.event for r in engine.log.read() if isinstance(r.event, StepFailed)]
        assert [(f.error_type, f.message) for f in failures] == [
            ("TimeoutError", "step 'slow' did not return within its timeout of 0.01 s")
        ]


def test_an_error_a_step_raises_as_run_async_is_cancelled_hands_the_task_back(
    db: Path, clock: FakeClock
) -> None:
    """A step whose cleanup fails as the cancellation unwinds it: that is the cancellation's
    doing, not a failure to heal; the task is handed back with its try unspent."""
    started = asyncio.Event()
    never = asyncio.Event()
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fetch() -> str:
            started.set()
            try:
                await never.wait()
            finally:
                raise ConnectionError("connection reset while closing")

        @engine.task()
        async def job() -> str:
            return await fetch()

        task_id = engine.submit(job)

        async def cancel_while_fetching() -> None:
            run = asyncio.create_task(engine.run_async())
            await started.wait()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

        asyncio.run(cancel_while_fetching())
        history = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        assert isinstance(history[-1], TaskReleased)
        assert not any(isinstance(e, StepFailed | RetryScheduled) for e in history)
        assert engine.refresh().tasks.tasks[task_id].state == "queued"


def test_the_waiters_of_a_large_transaction_are_told_over_several_turns_of_their_loop() -> None:
    """256 steps whose outcomes commit together do not all wake in one turn of the loop:
    a share is told each turn, the loop's other callbacks run in between, and every waiter
    gets its own outcome, in the order they came."""
    from onward.events import AppendResult
    from onward.runtime.committer import Seen, _Request, _tell

    async def main() -> tuple[list[int], list[int]]:
        loop = asyncio.get_running_loop()
        requests = [_Request([], loop, Seen(loop=loop)) for _ in range(256)]
        told = [
            (r, AppendResult(event_ids=[str(i)], positions=[i], versions={}))
            for i, r in enumerate(requests)
        ]
        done_per_turn: list[int] = []

        def look() -> None:  # another of the loop's callbacks, each turn
            done_per_turn.append(sum(r.waiter is not None and r.waiter.done() for r in requests))
            if done_per_turn[-1] < len(requests):
                loop.call_soon(look)

        loop.call_soon(_tell, told)
        loop.call_soon(look)
        while done_per_turn[-1:] != [len(requests)]:
            await asyncio.sleep(0)
        outcomes = []
        for r in requests:
            assert r.waiter is not None
            outcomes.append(r.waiter.result().positions[0])
        return done_per_turn, outcomes

    done_per_turn, outcomes = asyncio.run(main())
    assert outcomes == list(range(256))
    assert done_per_turn[0] < 256  # the loop ran its other callback before all were told
    assert len(done_per_turn) >= 4
    assert done_per_turn == sorted(done_per_turn)


def test_the_appends_of_many_steps_ending_in_one_turn_are_handed_over_a_share_a_turn() -> None:
    """A loop's coroutines that hand appends to the writer in the same turn take places, a
    share a turn: the rest wait for the turns after, in the order they came, and one that is
    cancelled while it waits gives its place to the next."""
    from onward.runtime.committer import HANDED_PER_TURN, Turns

    async def main() -> tuple[list[int], list[int], int]:
        turns = Turns()
        handed: list[int] = []
        turn = [0]
        per_turn: list[int] = []

        async def hand(i: int) -> None:
            place = turns.take()
            if place is not None:
                await place
            handed.append(i)

        def count() -> None:  # one of the loop's callbacks, each turn
            per_turn.append(len(handed))
            turn[0] += 1
            if len(handed) < 99:
                asyncio.get_running_loop().call_soon(count)

        async def start_all() -> list[asyncio.Task[None]]:
            return [asyncio.ensure_future(hand(i)) for i in range(100)]

        tasks = await start_all()
        asyncio.get_running_loop().call_soon(count)
        await asyncio.sleep(0)
        tasks[50].cancel()  # waits for a later turn: gives its place up
        await asyncio.gather(*tasks, return_exceptions=True)
        return handed, per_turn, turns.taken

    handed, per_turn, _ = asyncio.run(main())
    assert handed == [i for i in range(100) if i != 50]  # in the order they came
    steps = [b - a for a, b in zip([0, *per_turn], per_turn, strict=False)]
    assert max(steps) <= HANDED_PER_TURN  # the loop ran its other callback between shares
    assert len([s for s in steps if s]) >= 3
