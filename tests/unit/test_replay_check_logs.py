"""replay_check against a log of its own (the engine in memory, as in tests), inside an event
loop, over renamed tasks and changes the history did not take; what it counts as the same
result; the testing kit's bad options."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import threading
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, UsageError
from onward.testing import FakeClock, open_engine, replay_check


def _jobs(engine: Engine, *, child_arg: int = 1, renamed: bool = False) -> None:
    """The code the log was recorded with (or a changed one), registered on ``engine``."""

    @engine.step()
    def double(n: int) -> int:
        return 2 * n

    @engine.task(name="job2" if renamed else "job", aliases=["job"] if renamed else ())
    def job(n: int) -> int:
        return double(n) + double(n + 1)

    @engine.task(name="listener")
    def listener() -> Any:
        return engine.recv("go")

    @engine.task(name="sender")
    def sender(to: str) -> str:
        engine.send(to, "go", 1)
        return "sent"

    @engine.task(name="child")
    def child(n: int) -> int:
        return n

    @engine.task(name="parent")
    def parent() -> str:
        engine.submit("child", child_arg)  # not waited for
        return "submitted"


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    """A log of each kind of task: steps, a fork, a message sent, a subtask submitted."""
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with open_engine(url) as engine:
        _jobs(engine)
        job = engine.submit("job", 3)
        listener = engine.submit("listener")
        engine.submit("sender", listener)
        engine.submit("parent")
        engine.run()
        engine.fork(job, from_step=1)
        engine.run()
        assert all(view.state == "succeeded" for view in engine.tasks())
    return url


def test_a_memory_engine_checks_a_recorded_log_from_that_log(recorded: str) -> None:
    """The engine's own log (memory://) was read for a fork's origin (the fork was skipped as
    cut short), for a message's place (TaskNotFound) and for a subtask's submission (a
    changed one was missed)."""
    with open_engine("memory://") as engine:
        _jobs(engine)
        check = replay_check(recorded, engine)
    assert check.ok, check.explain()
    assert check.skipped == ()
    assert check.checked == 6  # job, its fork, the listener, the sender, the parent, the child
    with open_engine("memory://") as engine:
        _jobs(engine, child_arg=2)
        check = replay_check(recorded, engine)
    assert [d.kind for d in check.divergences] == ["submit"]


def test_a_plain_task_replays_inside_a_running_event_loop(recorded: str) -> None:
    """In an async test (or a notebook), a plain task's steps returned awaitables: false
    divergences ("the code raises TypeError(... 'coroutine' ...)")."""

    async def check_in_a_loop() -> Any:
        with open_engine("memory://") as engine:
            _jobs(engine)
            return replay_check(recorded, engine)

    check = asyncio.run(check_in_a_loop())
    assert check.ok, check.explain()
    assert check.steps >= 4


def test_a_check_that_registers_none_of_the_tasks_proves_nothing(recorded: str) -> None:
    # Every task renamed without an alias (or the wrong engine given): nothing is replayed,
    # so the check is not ok, and says why.
    with open_engine("memory://") as engine:

        @engine.task(name="job2")
        def job(n: int) -> int:
            return n

        check = replay_check(recorded, engine)
    assert (check.checked, check.divergences) == (0, ())
    assert check.unregistered == len(check.skipped) > 0
    assert not check.ok
    assert "nothing replayed" in check.explain()
    # Where the code knows one task at least, the others' names are the log's own business
    # (a log shared by two applications): the check stands on what it replayed.
    with open_engine("memory://") as engine:

        @engine.step()
        def double(n: int) -> int:
            return 2 * n

        @engine.task(name="child")
        def child(n: int) -> int:
            return n

        check = replay_check(recorded, engine)
    assert check.checked >= 1
    assert check.unregistered > 0
    assert check.ok, check.explain()


def test_a_task_renamed_with_an_alias_is_checked_not_skipped(recorded: str) -> None:
    with open_engine("memory://") as engine:
        _jobs(engine, renamed=True)
        check = replay_check(recorded, engine)
    assert check.ok, check.explain()
    assert check.skipped == ()


def test_a_change_after_the_last_step_of_an_ended_history_replays_the_old_way(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with open_engine(url) as engine:

        @engine.step()
        def fetch() -> int:
            return 2

        @engine.task(name="job")
        def job() -> int:
            return fetch()

        engine.submit("job")
        engine.run()
    with open_engine("memory://") as engine:

        @engine.step()
        def fetch() -> int:
            return 2

        @engine.step()
        def enrich(n: int) -> int:
            return 100 * n

        @engine.task(name="job")
        def job() -> int:
            n = fetch()
            if engine.patched("add-enrich"):
                return enrich(n)
            return n

        check = replay_check(url, engine)
    assert check.ok, check.explain()


@pytest.mark.parametrize(
    ("recorded", "now"),
    [
        (-0.0, 0.0),
        (decimal.Decimal("1.10"), decimal.Decimal("1.1")),
        (
            datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.UTC),
            datetime.datetime(
                2024, 1, 1, 17, tzinfo=datetime.timezone(datetime.timedelta(hours=5))
            ),
        ),
    ],
    ids=["negative-zero", "decimal-digits", "offset"],
)
def test_results_the_log_records_differently_are_not_the_same(
    tmp_path: Path, recorded: Any, now: Any
) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with open_engine(url) as engine:
        engine.task(name="value")(lambda: recorded)
        engine.submit("value")
        engine.run()
    with open_engine("memory://") as engine:
        engine.task(name="value")(lambda: now)
        check = replay_check(url, engine)
    assert [d.kind for d in check.divergences] == ["result"]
    with open_engine("memory://") as engine:
        engine.task(name="value")(lambda: recorded)
        assert replay_check(url, engine).ok


def test_the_testing_kit_refuses_what_it_cannot_use() -> None:
    with pytest.raises(UsageError, match="backoff must be True or False"):
        open_engine("memory://", backoff="false")  # type: ignore[arg-type]
    clock = FakeClock()
    for bad in ("5", True, 10**400, -1.0):
        with pytest.raises(UsageError, match="fake clock"):
            clock.advance(bad)  # type: ignore[arg-type]
    assert clock.now == FakeClock().now


def test_a_regression_test_holds_the_submission_of_a_subtask_not_waited_for(
    recorded: str,
) -> None:
    """``onward to-test`` embedded only the subtasks that had ended when their parent went on
    from a wait: the test of a parent that submits one without waiting missed a change of its
    arguments."""
    from onward.events import open_log
    from onward.projections import task_stream
    from onward.testing import encode_history, replay_recorded
    from onward.testing.regression import regression_test

    with open_log(recorded, create=False) as log, open_engine(recorded) as engine:
        parent = next(v for v in engine.tasks() if v.name == "parent")
        (child,) = parent.children
        source = regression_test(log, parent.task_id, "app:engine")
        history = encode_history(log.read_stream(task_stream(parent.task_id)))
        submission = encode_history(log.read_stream(task_stream(child))[:1])
    assert repr(child) in source
    for child_arg, kinds in ((1, []), (2, ["submit"])):
        with open_engine("memory://") as engine:
            _jobs(engine, child_arg=child_arg)
            check = replay_recorded(
                engine, history, task_id=parent.task_id, subtasks={child: submission}
            )
        assert [d.kind for d in check.divergences] == kinds


@pytest.mark.parametrize("serving", ["serve", "serve_async"])
def test_a_serving_worker_moves_a_fake_clock_to_its_next_timer(serving: str) -> None:
    """serve() waited for new work in real time: on a fake clock a durable sleep and a cron
    tick never came due, and a test that served hung."""

    clock = FakeClock()
    stop = threading.Event()
    ticks: list[float] = []
    with open_engine("memory://", clock=clock) as engine:

        @engine.task()
        def nap() -> str:
            engine.sleep(60)
            return "woke"

        @engine.task(schedule="*/15 * * * *")
        def tick() -> None:
            ticks.append(clock.now)
            if len(ticks) >= 3:
                stop.set()

        task_id = engine.submit(nap)
        if serving == "serve":
            worker = threading.Thread(
                target=engine.serve, kwargs={"stop": stop, "handle_signals": False}
            )
            worker.start()
            worker.join(60)  # a bound, not a pause: it ends as soon as the ticks are done
            stop.set()
            worker.join()
        else:

            async def serve() -> None:
                stopped = asyncio.Event()

                async def relay() -> None:
                    while not stop.is_set():
                        await asyncio.sleep(0.001)
                    stopped.set()

                relaying = asyncio.create_task(relay())
                await engine.serve_async(stop=stopped, handle_signals=False)
                await relaying

            with contextlib.suppress(TimeoutError):  # a bound: the assertions say why
                asyncio.run(asyncio.wait_for(serve(), 60))
        assert engine.result(task_id) == "woke"
        assert len(ticks) >= 3
        assert ticks == sorted(ticks)
        assert ticks[1] - ticks[0] == 15 * 60  # each tick at its own moment of the fake clock


def test_a_real_clock_with_a_sleep_of_its_own_keeps_serving_in_real_time() -> None:
    """Any ``sleep=`` other than time.sleep was taken for a fake clock: serve() slept through
    a task's whole durable sleep (30 s) in one call, deaf to new work and to its stop."""
    import time

    def sleep(seconds: float) -> None:  # a sleep of one's own, on the real clock
        time.sleep(seconds)

    ran, napping, stop = threading.Event(), threading.Event(), threading.Event()
    with Engine.open("memory://", session="s", sleep=sleep) as engine:

        @engine.task()
        def nap() -> str:
            napping.set()
            engine.sleep(30)
            return "woke"

        @engine.task()
        def quick() -> str:
            ran.set()
            return "quick"

        nap_id = engine.submit(nap)
        worker = threading.Thread(
            target=engine.serve, kwargs={"stop": stop, "handle_signals": False}
        )
        worker.start()
        try:
            assert napping.wait(20)
            while engine.task_view(nap_id).state != "waiting" and worker.is_alive():
                stop.wait(0.005)  # until the worker has nothing to run but a 30 s timer
            engine.submit(quick)
            assert ran.wait(20), "a task submitted while the other sleeps was not run"
        finally:
            stop.set()
            worker.join(20)
        assert not worker.is_alive()
