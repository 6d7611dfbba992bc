"""``async def`` tasks and steps: awaited on the event loop, many in flight, their outcomes
group-committed, replayed as the synchronous ones are, timed out, cancelled, healed."""

from __future__ import annotations

import asyncio
import functools
import itertools
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward import Engine, RetryPolicies, RetryPolicy, UsageError
from onward.events import (
    StepCompleted,
    StepFailed,
    TaskFailed,
    TaskReleased,
    open_log,
)
from onward.projections import CatchUp
from tests.conftest import FakeClock


def open_engine(db: Path, clock: FakeClock) -> Engine:
    return Engine.open(
        f"sqlite:///{db}",
        session="agents",
        clock=clock,
        sleep=clock.advance,
        retries=RetryPolicies(RetryPolicy(max_attempts=3, base=0.5, cap=0.5)),
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


def test_an_async_task_awaits_async_and_plain_steps_and_replays_them(
    db: Path, clock: FakeClock
) -> None:
    ran: Counter[str] = Counter()

    def register(engine: Engine) -> None:
        @engine.step()
        async def ask(prompt: str) -> str:
            ran["ask"] += 1
            await asyncio.sleep(0)
            return prompt.upper()

        @engine.step()
        def count(text: str) -> int:
            ran["count"] += 1
            return len(text)

        @engine.task(name="agent")
        async def agent(topic: str) -> list[object]:
            answer = await ask(topic)
            size = await count(answer)
            await engine.sleep(60.0)  # a durable timer: the task waits, the worker is free
            return [answer, size, await ask(f"{answer}!")]

    with open_engine(db, clock) as engine:
        register(engine)
        task_id = engine.submit("agent", "tides")
        first = asyncio.run(engine.run_async(concurrency=4, max_runs=1))
        assert (first.succeeded, first.waiting) == (0, 1)  # asleep: the process may stop
        assert ran == {"ask": 1, "count": 1}
    clock.advance(61.0)
    with open_engine(db, clock) as engine:  # a new process would do the same
        register(engine)
        second = asyncio.run(engine.run_async(concurrency=4))
        assert second.succeeded == 1
        assert engine.result(task_id) == ["TIDES", 5, "TIDES!"]
    assert ran == {"ask": 2, "count": 1}  # the completed steps returned their records


class Tool:
    """A tool as agents often write one: an object whose ``__call__`` is ``async def``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    async def __call__(self, text: str) -> str:
        await asyncio.sleep(0)
        return f"{self.prefix} {text}"

    async def ask(self, text: str) -> str:
        return await self(text)


async def prefixed(prefix: str, text: str) -> str:
    await asyncio.sleep(0)
    return f"{prefix} {text}"


#: Callables that are not ``async def`` functions themselves, yet return a coroutine.
AWAITABLE_CALLABLES: dict[str, Callable[[], Callable[..., Any]]] = {
    "object": lambda: Tool("found"),
    "partial": lambda: functools.partial(prefixed, "found"),
    "method": lambda: Tool("found").ask,
    "partial-of-method": lambda: functools.partial(Tool("found").ask),
    "partial-of-object": lambda: functools.partial(Tool("found")),
}


@pytest.mark.parametrize("make", AWAITABLE_CALLABLES.values(), ids=AWAITABLE_CALLABLES.keys())
def test_a_callable_that_returns_a_coroutine_is_awaited_as_a_step_and_as_a_task(
    db: Path, clock: FakeClock, make: Callable[[], Callable[..., Any]]
) -> None:
    with open_engine(db, clock) as engine:
        search = engine.step(name="search")(make())
        engine.task(name="solo")(make())

        @engine.task(name="agent")
        async def agent(query: str) -> str:
            return str(await search(query))

        via_step = engine.submit("agent", "tides")
        alone = engine.submit("solo", "moons")
        summary = asyncio.run(engine.run_async(concurrency=2))
        assert summary.succeeded == 2
        assert engine.result(via_step) == "found tides"
        assert engine.result(alone) == "found moons"


def test_a_plain_task_calling_an_async_step_fails_clearly(db: Path, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fetch(url: str) -> str:
            return url

        @engine.task()
        def job() -> str:
            return fetch("https://example.org")  # type: ignore[return-value]

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(Exception, match="async def") as failed:
            engine.result(task_id)
        assert "UsageError" in str(failed.value)


def test_a_timed_out_async_step_is_cancelled_then_retried(db: Path, clock: FakeClock) -> None:
    tries: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.step(timeout=0.05)
        async def slow(n: int) -> int:
            tries.append("start")
            if len(tries) == 1:
                await asyncio.sleep(30)  # cancelled by the timeout
                tries.append("never")
            return n * 2

        @engine.task()
        async def job() -> int:
            return await slow(21)

        task_id = engine.submit(job)
        asyncio.run(engine.run_async())
        assert engine.result(task_id) == 42
        failures = [r.event for r in engine.log.read() if isinstance(r.event, StepFailed)]
    assert tries == ["start", "start"]
    assert [f.error_type for f in failures] == ["TimeoutError"]


def test_a_timed_out_plain_step_fails_like_any_error(db: Path, clock: FakeClock) -> None:
    release = asyncio.Event()
    del release
    with open_engine(db, clock) as engine:
        calls: list[int] = []

        @engine.step(timeout=0.05)
        def blocking(n: int) -> int:
            calls.append(n)
            if len(calls) == 1:
                import threading

                threading.Event().wait(1.0)  # outlives its timeout; its result is ignored
            return n + 1

        @engine.task()
        def job() -> int:
            return blocking(1)

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 2
        assert calls == [1, 1]


def test_cancelling_run_async_hands_its_tasks_back(db: Path, clock: FakeClock) -> None:
    started = asyncio.Event()
    bodies: list[str] = []

    def register(engine: Engine) -> None:
        @engine.step()
        async def think(n: int) -> int:
            bodies.append(f"think {n}")
            started.set()
            await asyncio.sleep(3600)  # an hour-long model call: cancelled below
            return n

        @engine.step()
        async def answer(n: int) -> int:
            return n + 1

        @engine.task(name="job")
        async def job(n: int) -> int:
            await answer(n)
            return await think(n)

    async def cancel_while_thinking(engine: Engine) -> None:
        run = asyncio.create_task(engine.run_async(concurrency=8))
        await started.wait()
        await asyncio.sleep(0.05)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    with open_engine(db, clock) as engine:
        register(engine)
        ids = [engine.submit("job", n) for n in range(5)]
        asyncio.run(cancel_while_thinking(engine))
        tasks = engine.refresh().tasks.tasks
        assert {tasks[t].state for t in ids} == {"queued"}
        events = [r.event for r in engine.log.read()]
        assert sum(isinstance(e, TaskReleased) for e in events) == 5
        assert not any(isinstance(e, StepFailed | TaskFailed) for e in events)


def test_healing_and_breakers_on_the_async_path(db: Path, clock: FakeClock) -> None:
    outages = itertools.count()
    with open_engine(db, clock) as engine:

        @engine.step(breaker="model-api")
        async def call_model(n: int) -> int:
            if next(outages) < 2:
                raise ConnectionResetError("model api: connection reset by peer")
            return n

        @engine.task()
        async def job() -> int:
            return await call_model(7)

        task_id = engine.submit(job)
        summary = asyncio.run(engine.run_async())
        assert summary.succeeded == 1
        assert engine.result(task_id) == 7
        failed = [r.event for r in engine.log.read() if isinstance(r.event, StepFailed)]
    assert [f.error_type for f in failed] == ["ConnectionResetError"] * 2
    assert all(f.dependency == "model-api" for f in failed)


def test_an_approval_answered_elsewhere_while_the_loop_runs_others(
    db: Path, clock: FakeClock
) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        async def publish(name: str) -> str:
            return f"published {name}"

        @engine.step()
        async def chore(n: int) -> int:
            await asyncio.sleep(0)
            return n

        @engine.task(name="release")
        async def release() -> str:
            return await publish("v1")

        @engine.task(name="chores")
        async def chores(n: int) -> int:
            return await chore(n)

        asking = engine.submit("release")
        others = [engine.submit("chores", n) for n in range(20)]

        async def answer_from_another_engine() -> None:
            while not engine.approvals():
                await asyncio.sleep(0.01)
            with Engine.open(f"sqlite:///{db}", session="operator", clock=clock) as operator:
                operator.approve(operator.approvals()[0].decision_id, by="ana")

        async def main() -> None:
            answering = asyncio.create_task(answer_from_another_engine())
            await engine.run_async(concurrency=8, await_approvals=30.0)
            await answering

        asyncio.run(main())
        assert engine.result(asking) == "published v1"
        assert [engine.result(t) for t in others] == list(range(20))


def test_sleep_outside_a_task_or_negative_is_refused(db: Path, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        with pytest.raises(UsageError, match="inside a running task"):
            engine.sleep(1.0)

        @engine.task()
        def job() -> None:
            engine.sleep(-1.0)

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(Exception, match="sleep"):
            engine.result(task_id)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    shapes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=40),
    concurrency=st.sampled_from([1, 4, 64]),
)
def test_group_commit_keeps_each_streams_order_and_replay_equals_live(
    tmp_path_factory: pytest.TempPathFactory, shapes: list[int], concurrency: int
) -> None:
    db = tmp_path_factory.mktemp("group") / "log.db"
    with Engine.open(f"sqlite:///{db}", session="g") as engine:

        @engine.step()
        async def part(task: int, index: int) -> int:
            await asyncio.sleep(0)
            return task * 100 + index

        @engine.task(name="whole")
        async def whole(task: int, steps: int) -> list[int]:
            return [await part(task, i) for i in range(steps)]

        ids = [engine.submit("whole", t, n) for t, n in enumerate(shapes)]
        asyncio.run(engine.run_async(concurrency=concurrency))
        live = engine.refresh().snapshot()
        for t, n in enumerate(shapes):
            assert engine.result(ids[t]) == [t * 100 + i for i in range(n)]
    with open_log(f"sqlite:///{db}") as log:
        replayed = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False).snapshot()
        for task_id in ids:
            indices = [
                r.event.index
                for r in log.read_stream(f"task-{task_id}")
                if isinstance(r.event, StepCompleted)
            ]
            assert indices == sorted(indices) == list(range(len(indices)))
    assert replayed == live


@pytest.mark.parametrize("runner", ["run", "run_async"])
def test_a_task_that_lets_its_own_cancelled_error_out_fails_alone(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A ``CancelledError`` the task's code lets out (something it awaited was cancelled, not
    the run) fails that task; the run and the other tasks go on, now and in later runs."""
    with open_engine(db, clock) as engine:

        @engine.task(name="poison")
        async def poison() -> int:
            helper = asyncio.ensure_future(asyncio.sleep(3600))
            helper.cancel()
            return await helper  # type: ignore[no-any-return]

        @engine.task(name="innocent")
        async def innocent(n: int) -> int:
            return n

        bad = engine.submit(poison)
        good = [engine.submit(innocent, n) for n in range(3)]
        summary = engine.run() if runner == "run" else asyncio.run(engine.run_async(concurrency=4))
        assert (summary.succeeded, summary.failed) == (3, 1)
        assert [engine.result(t) for t in good] == [0, 1, 2]
        with pytest.raises(Exception, match="CancelledError"):
            engine.result(bad)


def test_run_gives_an_async_task_whose_steps_heal_its_own_loop_without_deadlock(
    db: Path, clock: FakeClock
) -> None:
    """``run()`` (one worker) runs an ``async def`` task on a loop of its own, whose storage
    calls (a failure's healing among them) run in worker threads that take the session's
    lock: it must not be held meanwhile."""
    calls: list[int] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        async def flaky() -> int:
            calls.append(1)
            if len(calls) == 1:
                raise ConnectionError("connection reset by peer")
            return 7

        @engine.task()
        async def job() -> int:
            return await flaky()

        task_id = engine.submit(job)
        done: list[Any] = []
        runner = threading.Thread(target=lambda: done.append(engine.run()), daemon=True)
        runner.start()
        runner.join(timeout=60)
        assert done, "run() did not return: deadlocked"
        assert engine.result(task_id) == 7


def test_run_inside_a_running_loop_runs_a_plain_tasks_steps_in_place(
    db: Path, clock: FakeClock
) -> None:
    """``run()`` where an event loop already runs (a notebook) runs a plain task's steps as any
    synchronous run does: each body once, its outcome recorded (they were handed back as
    coroutines never awaited: the task succeeded without its steps)."""
    calls: list[int] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def charge(amount: int) -> int:
            calls.append(amount)
            return amount * 2

        @engine.task()
        def order(amount: int) -> int:
            return charge(amount) + 1

        task_id = engine.submit(order, 5)

        async def nested() -> None:
            assert engine.run().succeeded == 1

        asyncio.run(nested())
        assert engine.result(task_id) == 11
        assert calls == [5]
        kinds = [type(r.event).__name__ for r in engine.log.read_stream(f"task-{task_id}")]
        assert "StepCompleted" in kinds


def waits_for_the_task(thread: threading.Thread) -> bool:
    """Whether a thread waits for a future's result (``run()`` for a task's thread)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "result" and "concurrent" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def test_run_inside_a_running_loop_stops_at_once_on_an_interrupt(
    db: Path, clock: FakeClock
) -> None:
    """Ctrl-C while ``run()`` runs a plain task from a loop's thread stops the run at once, as
    from a pool's thread (it waited for the task's whole run, hours in a notebook)."""
    release, done = threading.Event(), threading.Event()
    with open_engine(db, clock) as engine:

        @engine.step()
        def slow() -> int:
            while not waits_for_the_task(threading.main_thread()):
                release.wait(0.001)  # until the loop's thread waits for the task's thread
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)  # Ctrl-C
            release.wait(timeout=30)
            done.set()
            return 1

        @engine.task()
        def order() -> int:
            return slow()

        task_id = engine.submit(order)

        async def nested() -> None:
            engine.run()

        loop = asyncio.new_event_loop()  # no SIGINT handler of asyncio.run's: Python's own
        try:
            with pytest.raises(KeyboardInterrupt):
                loop.run_until_complete(nested())
            stopped_before_the_step_ended = not done.is_set()
        finally:
            release.set()
            loop.close()
        assert stopped_before_the_step_ended
        assert engine.task_view(task_id).state == "running"  # its lease runs out


def test_run_inside_a_running_loop_hands_an_async_task_back(db: Path, clock: FakeClock) -> None:
    """``run()`` where an event loop already runs cannot give an ``async def`` task a loop:
    it says so and hands the task back, which ``run_async`` then runs."""
    with open_engine(db, clock) as engine:

        @engine.task()
        async def agent() -> int:
            return 1

        task_id = engine.submit(agent)

        async def nested() -> None:
            with pytest.raises(UsageError, match=r"await engine\.run_async"):
                engine.run()

        asyncio.run(nested())
        history = engine.log.read_stream(f"task-{task_id}")
        assert isinstance(history[-1].event, TaskReleased)
        asyncio.run(engine.run_async())
        assert engine.result(task_id) == 1


def test_a_generator_function_is_refused_as_a_task(db: Path, clock: FakeClock) -> None:
    """A task returns one value: a generator (plain or async) is refused as it is registered,
    not when its first run finds it cannot store what it returned."""
    with open_engine(db, clock) as engine:

        def numbers() -> Any:
            yield 1

        async def agen() -> Any:
            yield 1

        for fn in (numbers, agen):
            with pytest.raises(UsageError, match="is a generator: a task returns one value"):
                engine.task()(fn)


def test_a_step_that_swallows_the_runs_cancellation_starts_no_step_after_it(db: Path) -> None:
    """Cancelling run_async cancels its tasks; a step body that catches the CancelledError
    and returns lets the task's code go on, but no step starts after it: the task meets the
    cancellation again at its next step and is handed back."""
    with Engine.open(f"sqlite:///{db}", session="s") as engine:
        after: list[int] = []
        started = asyncio.Event()

        @engine.step()
        async def stubborn(n: int) -> int:
            started.set()
            try:
                await asyncio.Event().wait()  # until cancelled
            except asyncio.CancelledError:
                return -n  # swallowed
            return n

        @engine.step()
        async def later(i: int) -> int:
            after.append(i)
            return i

        @engine.task()
        async def job(n: int) -> int:
            first = await stubborn(n)
            for i in range(3):
                await later(i)
            return first

        task_id = engine.submit(job, 1)

        async def cancel_the_run() -> None:
            run = asyncio.create_task(engine.run_async(concurrency=2))
            await started.wait()
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

        asyncio.run(cancel_the_run())
        assert after == []
        # As the engine's views show it after the run, without asking for a refresh.
        assert engine.task_view(task_id).state == "queued"
        kinds = [type(r.event).__name__ for r in engine.log.read_stream(f"task-{task_id}")]
        assert kinds[-1] == "TaskReleased"


def test_a_plain_step_raising_stop_iteration_in_an_async_task_ends_as_a_failure(
    db: Path, clock: FakeClock
) -> None:
    """``next()`` on an empty iterator in a plain step awaited by an ``async def`` task: the
    step's thread hands its ``StopIteration`` back (an asyncio future refuses one, which left
    the run waiting for ever), the log records it as such, and the task meets it as a
    coroutine meets any ``StopIteration`` that leaves what it awaits: as the ``RuntimeError``
    Python makes of it, caused by the step's own."""
    caught: list[str] = []
    engine = open_engine(db, clock)

    @engine.step()
    def first_line(lines: list[str]) -> str:
        return next(iter(lines))

    @engine.task()
    async def job() -> str:
        try:
            line = await first_line([])
        except RuntimeError as exc:
            line = f"<{type(exc.__cause__).__name__}>"
        caught.append(line)
        return line

    task_id = engine.submit(job)
    done: list[Any] = []
    runner = threading.Thread(
        target=lambda: done.append(asyncio.run(engine.run_async())), daemon=True
    )
    runner.start()
    runner.join(timeout=60)
    assert done, "run_async() did not return: the step's StopIteration was lost"  # left open
    with engine:
        assert engine.result(task_id) == "<StopIteration>"
    assert caught == ["<StopIteration>"]
    with open_log(f"sqlite:///{db}") as log:
        failures = [r.event for r in log.read() if isinstance(r.event, StepFailed)]
    assert [f.error_type for f in failures] == ["StopIteration"]


def serve_then_stop_at_once(engine: Engine, count: int) -> tuple[Any, list[str], bool]:
    """Serve ``count`` tasks whose one step waits; SIGTERM once all of them run (stop once the
    steps in flight end), then again while ``serve_async`` waits for them (at once).

    Returns:
        The task function, the tasks' ids, and whether the steps had been let go (waited for:
        a limit of 60 s lets them go, so that a hang fails the test instead of holding the suite).
    """
    release = asyncio.Event()
    started: list[int] = []

    @engine.step()
    async def call(n: int) -> int:
        started.append(n)
        await release.wait()
        return n

    @engine.task()
    async def job(n: int) -> int:
        return await call(n)

    task_ids = [engine.submit(job, n) for n in range(count)]

    async def main() -> bool:
        asyncio.get_running_loop().call_later(60.0, release.set)
        stop = asyncio.Event()
        serving = asyncio.create_task(engine.serve_async(concurrency=count, stop=stop))
        while len(started) < count:
            await asyncio.sleep(0)
        signal.raise_signal(signal.SIGTERM)  # stop once the steps in flight end
        await stop.wait()
        signal.raise_signal(signal.SIGTERM)  # again: at once
        with pytest.raises(asyncio.CancelledError):
            await serving
        return release.is_set()

    return job, task_ids, asyncio.run(main())


def test_a_second_signal_stops_serve_async_at_once_while_its_tasks_end_their_steps(
    db: Path, clock: FakeClock
) -> None:
    """SIGTERM, then SIGTERM again while ``serve_async`` waits for its tasks' steps in flight
    to end: it stops at once, as ``onward worker`` does. It cancelled only the task it was
    waiting for at that moment and went on waiting for the others' steps (an hour's call held
    the stop for the hour)."""
    with open_engine(db, clock) as engine:
        _, task_ids, waited_for_the_steps = serve_then_stop_at_once(engine, 3)
        assert not waited_for_the_steps
        engine.refresh()
        assert [engine.task_view(t).state for t in task_ids] == ["running"] * 3  # leases run out


def test_a_worker_stopped_at_once_leaves_its_watch_thread_quiet_after_its_loop_closed(
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped at once (a second signal), ``serve_async`` does not wait for its watch thread's
    look under way: that look, ending after the loop had closed, woke the closed loop and died
    with ``RuntimeError: Event loop is closed`` printed on the worker's stderr."""
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    with open_engine(db, clock) as engine:
        job, _, _ = serve_then_stop_at_once(engine, 1)
        watching = [t for t in threading.enumerate() if t.name == "onward-watch"]
        engine.submit(job, 2)  # a change for a look under way to see
        for thread in watching:
            thread.join(60.0)
            assert not thread.is_alive()
    assert failures == []


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting the calls handed to its worker threads."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


def test_an_async_task_takes_one_worker_threads_turn_the_round_that_claims_it(
    db: Path, clock: FakeClock
) -> None:
    # The round that claims it begins it, and its end is committed from the loop: one task
    # after the other, each takes a worker thread's turn for its claim's round alone.
    def turns(tasks: int) -> int:
        with open_engine(db.with_name(f"{tasks}.db"), clock) as engine:

            @engine.step(name="part")
            async def part(i: int) -> int:
                return i

            @engine.task(name="whole")
            async def whole(n: int) -> int:
                return await part(n)

            for i in range(tasks):
                engine.submit(whole, i)

            async def main() -> int:
                executor = CountingExecutor()
                asyncio.get_running_loop().set_default_executor(executor)
                summary = await engine.run_async(concurrency=1)
                assert summary.succeeded == tasks
                return executor.calls

            return asyncio.run(main())

    assert turns(7) - turns(3) == 4


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_tasks_end_reads_the_queue_without_taking_from_it(
    db: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    # A task's end decides what follows knowing whether tasks are queued, from its event loop
    # or its worker thread, without the session's lock (a round may hold it for a claim's
    # commit): dropping stale queue entries there would race the round's claims, which take
    # entries off the same heap at the same time (a live entry popped unseen: a queued task
    # left out of the queue for good).
    from onward.projections.task import TaskProjection

    unlocked: list[str] = []
    taken = TaskProjection.next_queued

    def watched(self: TaskProjection, session: str) -> Any:
        if not engine._session.lock._is_owned():  # type: ignore[attr-defined]
            unlocked.append(threading.current_thread().name)
        return taken(self, session)

    monkeypatch.setattr(TaskProjection, "next_queued", watched)
    with open_engine(db, clock) as engine:

        @engine.task(name="plain")
        def plain(n: int) -> int:
            return n

        @engine.task(name="coroutine")
        async def coroutine(n: int) -> int:
            return n

        ids = [engine.submit(plain, 1), engine.submit(coroutine, 2)]
        if path == "sync":
            engine.run()
        else:
            asyncio.run(engine.run_async(concurrency=2))
        assert [engine.result(i) for i in ids] == [1, 2]
    assert unlocked == []
