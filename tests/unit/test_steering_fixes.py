"""Steering a task from inside and outside it: ``patched`` and ``wait`` awaited in an ``async
def`` task, keyed subtasks, abandon against a running task, receives that no longer match the
code, forks."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from onward import Engine, InvalidTransition, UsageError
from onward.events import (
    Context,
    Jitter,
    MessageSent,
    PatchMarked,
    StepCompleted,
    TaskFailed,
    TaskSubmitted,
    TaskWaiting,
)
from onward.healing.retry import RetryPolicies, RetryPolicy
from onward.projections import task_stream
from onward.runtime.run import derived_id, submission_id
from tests.conftest import FakeClock
from tests.unit.test_async_appends import run_with


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def open_engine(db: str, clock: FakeClock) -> Engine:
    return Engine.open(db, session="steer", clock=clock, sleep=clock.advance, healing=False)


def events(engine: Engine, task_id: str) -> list[object]:
    return [r.event for r in engine.log.read_stream(f"task-{task_id}")]


# -- patched() and wait() in an async def task ------------------------------------------------


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_patched_is_awaited_in_an_async_task_beside_a_committing_step(
    db: str, clock: FakeClock, runner: str
) -> None:
    """The mark is recorded off the loop while another step of the task appends: the worker
    does not hang, and a re-run takes the path recorded."""
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fetch(n: int) -> int:
            return n

        async def new_path() -> bool:
            await asyncio.sleep(0)  # fetch() now awaits the commit of its outcome
            return bool(await engine.patched("use-v2"))

        @engine.task()
        async def job() -> list[object]:
            return list(await asyncio.gather(fetch(1), new_path(), fetch(2)))

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == [1, True, 2]
        marks = [e for e in events(engine, task_id) if isinstance(e, PatchMarked)]
        assert [m.change_id for m in marks] == ["use-v2"]


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_wait_is_awaited_in_an_async_task_beside_a_committing_step(
    db: str, clock: FakeClock, runner: str
) -> None:
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fetch(n: int) -> int:
            return n

        @engine.task()
        def child(n: int) -> int:
            return n * 2

        async def fan_out() -> list[object]:
            await asyncio.sleep(0)  # fetch() now awaits the commit of its outcome
            return list(await engine.wait([engine.submit(child, 21)]))

        @engine.task()
        async def job() -> list[object]:
            return list(await asyncio.gather(fetch(1), fan_out()))

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == [1, [42]]
        waits = [e for e in events(engine, task_id) if isinstance(e, TaskWaiting)]
        assert [w.reason for w in waits] == ["subtasks"]


@pytest.mark.parametrize(
    ("misuse", "said"),
    [
        ("if", "await engine.patched('use-v2')"),
        ("unpack", "await engine.wait(...)"),
    ],
)
def test_patched_or_wait_used_without_await_in_an_async_task_fails_clearly(
    db: str, clock: FakeClock, misuse: str, said: str
) -> None:
    with open_engine(db, clock) as engine:

        @engine.task()
        def child() -> int:
            return 2

        @engine.task()
        async def job() -> str:
            if misuse == "if":
                return "new" if engine.patched("use-v2") else "old"
            (doubled,) = engine.wait([engine.submit(child)])
            return str(doubled)

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        (failed,) = [e for e in events(engine, task_id) if isinstance(e, TaskFailed)]
        assert failed.error_type == "UsageError"
        assert said in failed.message
        assert not any(isinstance(e, PatchMarked | TaskWaiting) for e in events(engine, task_id))


def test_patched_and_wait_stay_plain_calls_in_a_plain_task(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.task()
        def child() -> int:
            return 2

        @engine.task()
        def job() -> list[object]:
            taken = engine.patched("use-v2")
            assert taken is True
            return [taken, *engine.wait([engine.submit(child)])]

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == [True, 2]
        with pytest.raises(UsageError, match="inside a running task"):
            engine.patched("use-v2")


# -- a keyed submit inside a task ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_keyed_submit_inside_a_task_is_the_sessions_task_for_that_key(
    db: str, clock: FakeClock, both_paths: str, kind: str
) -> None:
    """The same key gives the same task, inside a task as outside, and it runs once."""
    charged: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.task()
        def charge(order: str) -> str:
            charged.append(order)
            return f"charged {order}"

        def submit_twice() -> list[str]:
            return [engine.submit(charge, "order-1", key="charge-order-1") for _ in range(2)]

        if kind == "plain":

            @engine.task(name="parent")
            def plain_parent() -> list[str]:
                return submit_twice()

        else:

            @engine.task(name="parent")
            async def async_parent() -> list[str]:
                return submit_twice()

        outside = engine.submit(charge, "order-1", key="charge-order-1")
        parent = engine.submit("parent")
        engine.run()
        assert engine.result(parent) == [outside, outside]
        assert charged == ["order-1"]
        assert engine.task_view(outside).parent is None  # submitted first from outside


def test_a_keyed_subtask_is_its_first_submitters_and_keeps_the_others_numbers(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    """A keyed subtask submitted first by a task is that task's subtask; a re-run submits it
    again as a no-op, and the task's unkeyed subtasks keep their ids."""
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.task()
        def child(name: str) -> str:
            ran.append(name)
            return name

        @engine.task()
        def parent() -> list[object]:
            keyed = engine.submit(child, "keyed", key="the-one")
            plain = engine.submit(child, "plain")
            return [keyed, plain, *engine.wait([keyed, plain])]

        parent_id = engine.submit(parent)
        engine.run()
        keyed, plain, *results = engine.result(parent_id)
        assert results == ["keyed", "plain"]
        assert sorted(ran) == ["keyed", "plain"]  # once each, across the parent's two runs
        assert engine.task_view(keyed).parent == parent_id
        assert engine.task_view(plain).parent == parent_id
        assert engine.submit(child, "keyed", key="the-one") == keyed
        # The unkeyed subtask is the parent's first after its second (the keyed one), as
        # before keys were honoured inside.
        second = derived_id(parent_id, "child", "start", "1")
        assert plain == derived_id(parent_id, "child", f"child {second}", "1")
        assert keyed == derived_id("steer", "key", "the-one")


def test_subtasks_of_gathered_coroutines_are_theirs_whatever_order_a_rerun_meets_them(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    """Two gathered coroutines each submit a subtask once their step ends; a third one's step
    fails and its retry makes the task wait. Live, the second coroutine's step ends first;
    the re-run replays both steps at once and meets the first coroutine first: each still
    gets its own subtask, not the other's."""
    b_submitted = threading.Event()
    tries: list[int] = []
    retries = RetryPolicies(RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE))
    with Engine.open(
        db, session="steer", clock=clock, sleep=clock.advance, retries=retries
    ) as engine:

        @engine.task(name="child")
        def child(who: str) -> str:
            return who

        @engine.step()
        def slow() -> None:
            assert b_submitted.wait(timeout=30)  # ends once b submitted its subtask

        @engine.step()
        def fast() -> None:
            pass

        @engine.step()
        def flaky() -> None:
            tries.append(1)
            if len(tries) == 1:
                raise TimeoutError("no answer")  # its retry is due later: the task waits

        @engine.task(name="job")
        async def job() -> list[str]:
            async def a() -> str:
                await slow()
                return engine.submit("child", "a")

            async def b() -> str:
                await fast()
                submitted = engine.submit("child", "b")
                b_submitted.set()
                return submitted

            async def c() -> str:
                await flaky()
                return ""

            return list(await asyncio.gather(a(), b(), c()))

        task_id = engine.submit("job")
        engine.run()
        assert len(tries) == 2  # the task ran again
        of_a, of_b, _ = engine.result(task_id)
        engine.run()
        assert [engine.result(of_a), engine.result(of_b)] == ["a", "b"]
        assert [t.name for t in engine.tasks()].count("child") == 2


def test_messages_of_gathered_coroutines_are_theirs_whatever_order_a_rerun_meets_them(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    """Two gathered coroutines each send a message once their step ends; a third one's step
    fails and its retry makes the task wait. Live, the second coroutine sends first; the
    re-run replays both steps at once and meets the first coroutine first: each send still
    finds its own message (its place in the inbox), and sends nothing again."""
    b_sent = threading.Event()
    tries: list[int] = []
    retries = RetryPolicies(RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE))
    with Engine.open(
        db, session="steer", clock=clock, sleep=clock.advance, retries=retries
    ) as engine:

        @engine.task(name="reader")
        def reader() -> None:
            pass

        @engine.step()
        def slow() -> None:
            assert b_sent.wait(timeout=30)  # ends once b sent its message

        @engine.step()
        def fast() -> None:
            pass

        @engine.step()
        def flaky() -> None:
            tries.append(1)
            if len(tries) == 1:
                raise TimeoutError("no answer")  # its retry is due later: the task waits

        @engine.task(name="job")
        async def job(to: str) -> list[int]:
            async def a() -> int:
                await slow()
                return engine.send(to, "news", "a")

            async def b() -> int:
                await fast()
                place = engine.send(to, "news", "b")
                b_sent.set()
                return place

            async def c() -> int:
                await flaky()
                return 0

            return list(await asyncio.gather(a(), b(), c()))

        to = engine.submit("reader", key="reader")
        task_id = engine.submit("job", to)
        engine.run()
        assert len(tries) == 2  # the task ran again
        of_a, of_b, _ = engine.result(task_id)
        inbox = {r.version: r.event.value for r in engine.log.read_stream(f"inbox-{to}")}  # type: ignore[union-attr]
        assert len(inbox) == 2
        assert [inbox[of_a], inbox[of_b]] == ["a", "b"]


def test_a_message_an_earlier_run_numbered_in_the_order_it_came_is_not_sent_again(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    """A run by an onward that numbered a task's messages in the order they came sent its
    first message, then its worker died: the task's re-run finds it in the inbox, and sends
    only its second."""
    with open_engine(db, clock) as engine:

        @engine.task(name="reader")
        def reader() -> None:
            pass

        @engine.task(name="job")
        def job(to: str) -> list[int]:
            return [engine.send(to, "news", "one"), engine.send(to, "news", "two")]

        to = engine.submit("reader", key="reader")
        task_id = engine.submit("job", to)
        engine.log.append(
            f"inbox-{to}",
            [MessageSent(topic="news", value="one")],
            expected_version=0,
            event_ids=[derived_id(task_id, "message", "1", size=16)],
            context=Context(session="steer", correlation_id=task_id),
        )
        engine.run()
        assert engine.result(task_id) == [1, 2]
        inbox = [r.event.value for r in engine.log.read_stream(f"inbox-{to}")]  # type: ignore[union-attr]
        assert inbox == ["one", "two"]


def test_a_subtask_an_earlier_run_numbered_in_the_order_it_came_is_still_its_submits(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    """A run by an onward that numbered a task's subtasks in the order they came submitted
    its first subtask, then its worker died: the task's re-run gets that subtask back from
    its submit, and submits no other."""
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.task()
        def child(name: str) -> str:
            ran.append(name)
            return name

        @engine.task()
        def parent() -> list[object]:
            first = engine.submit(child, "one")
            second = engine.submit(child, "two")
            return [first, second, *engine.wait([first, second])]

        parent_id = engine.submit(parent)
        older = derived_id(parent_id, "child", "1")
        engine.log.append(
            task_stream(older),
            [TaskSubmitted(name="child", args=["one"], parent=parent_id)],
            expected_version=0,
            event_ids=[submission_id(older)],
            context=Context(session="steer", correlation_id=parent_id),
        )
        engine.run()
        first, _, *results = engine.result(parent_id)
        assert first == older
        assert results == ["one", "two"]
        assert sorted(ran) == ["one", "two"]
        assert [t.name for t in engine.tasks()].count("child") == 2


# -- abandon, and a task ended from outside while it runs -------------------------------------


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_abandon_refuses_a_task_another_worker_claimed_since(
    db: str, clock: FakeClock, both_paths: str, kind: str
) -> None:
    """The worker that saw the task unregistered decides on the log as it is now: the task
    runs under a worker that has its function, and is not failed under it."""
    refused: list[str] = []
    with open_engine(db, clock) as submitter:
        submitter.task(name="job")(lambda: "x")
        task_id = submitter.submit("job")
    with open_engine(db, clock) as without, open_engine(db, clock) as holder:
        without.run()  # no function for it here: it waits, unregistered
        assert without.task_view(task_id).state == "unregistered"

        @holder.step()
        def work() -> str:
            try:
                without.abandon(task_id, by="alice", reason="nobody has it")
            except InvalidTransition as exc:
                refused.append(str(exc))
            return "done"

        if kind == "plain":

            @holder.task(name="job")
            def plain_job() -> str:
                return work()

        else:

            @holder.task(name="job")
            async def async_job() -> str:
                return str(await work())

        holder.run()
        assert holder.result(task_id) == "done"
        (said,) = refused
        assert "is running" in said
        assert not any(isinstance(e, TaskFailed) for e in events(holder, task_id))


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_run_whose_task_was_ended_from_outside_stops_as_having_lost_it(
    db: str, clock: FakeClock, both_paths: str, kind: str
) -> None:
    """An end the run did not record (an older onward's abandon, decided on a stale view) is
    the task taken from it, as a cancellation is: the run stops, without a VersionConflict."""
    with open_engine(db, clock) as engine:

        @engine.step()
        def work() -> str:
            (task,) = engine.tasks("running")
            stream = f"task-{task.task_id}"
            version = engine.log.read_stream(stream)[-1].version
            failed = TaskFailed(error_type="Abandoned", message="abandoned by bob")
            engine.log.append(stream, [failed], expected_version=version)
            return "done"

        if kind == "plain":

            @engine.task(name="job")
            def plain_job() -> str:
                return work()

        else:

            @engine.task(name="job")
            async def async_job() -> str:
                return str(await work())

        task_id = engine.submit("job")
        summary = engine.run()
        assert summary.succeeded == 0
        view = engine.task_view(task_id)
        assert (view.state, view.error) == ("failed", "Abandoned: abandoned by bob")
        assert not any(isinstance(e, StepCompleted) for e in events(engine, task_id))


# -- a recorded receive replays only for a receive of its topic --------------------------------


@pytest.mark.parametrize("now", ["another topic", "a step", "a sleep"])
@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_re_run_that_calls_something_else_where_a_message_was_taken_fails_with_step_mismatch(
    db: str, clock: FakeClock, both_paths: str, kind: str, now: str
) -> None:
    code = {"version": 1}
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def other() -> str:
            ran.append("other")
            return "other"

        @engine.task(name="job")
        def plain_job() -> str:
            if code["version"] == 1:
                engine.recv("approval")
                raise RuntimeError("not yet")
            if now == "another topic":
                return str(engine.recv("payment"))
            if now == "a sleep":
                engine.sleep(1)
                return "slept"
            return other()

        @engine.task(name="async_job")
        async def async_job() -> str:
            if code["version"] == 1:
                await engine.recv("approval")
                raise RuntimeError("not yet")
            if now == "another topic":
                return str(await engine.recv("payment"))
            if now == "a sleep":
                await engine.sleep(1)
                return "slept"
            return str(await other())

        task_id = engine.submit("job" if kind == "plain" else "async_job")
        engine.send(task_id, "approval", "approved")
        engine.send(task_id, "payment", "paid")
        engine.run()
        assert engine.task_view(task_id).error == "RuntimeError: not yet"
        code["version"] = 2
        engine.retry(task_id)
        engine.run()
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert view.error.startswith("StepMismatch: ")
        assert "step 0 is \"onward.recv('approval')\" in the log" in view.error
        assert ran == []


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_re_run_that_receives_where_a_step_completed_fails_with_step_mismatch(
    db: str, clock: FakeClock, both_paths: str, kind: str
) -> None:
    code = {"version": 1}
    with open_engine(db, clock) as engine:

        @engine.step()
        def other() -> str:
            return "other"

        @engine.task(name="job")
        def plain_job() -> str:
            if code["version"] == 1:
                other()
                raise RuntimeError("not yet")
            return str(engine.recv("approval"))

        @engine.task(name="async_job")
        async def async_job() -> str:
            if code["version"] == 1:
                await other()
                raise RuntimeError("not yet")
            return str(await engine.recv("approval"))

        task_id = engine.submit("job" if kind == "plain" else "async_job")
        engine.send(task_id, "approval", "approved")
        engine.run()
        code["version"] = 2
        engine.retry(task_id)
        engine.run()
        error = engine.task_view(task_id).error
        said = "step 0 is 'other' in the log but the code now calls \"onward.recv('approval')\""
        assert said in error


# -- forks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_fork_takes_the_patched_path_its_origin_took_before_the_steps_it_inherits(
    db: str, clock: FakeClock, both_paths: str, kind: str
) -> None:
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def first(x: int) -> int:
            ran.append("first")
            return x

        @engine.step()
        def old(x: int) -> str:
            ran.append("old")
            return "old"

        @engine.step()
        def new(x: int) -> str:
            ran.append("new")
            return "new"

        @engine.step()
        def last(x: int) -> int:
            ran.append("last")
            return x

        @engine.task(name="job")
        def plain_job(x: int) -> list[object]:
            done: list[object] = [first(x)]
            done.append(new(x) if engine.patched("use-new") else old(x))
            return [*done, last(x)]

        @engine.task(name="async_job")
        async def async_job(x: int) -> list[object]:
            done: list[object] = [await first(x)]
            done.append(await (new(x) if await engine.patched("use-new") else old(x)))
            return [*done, await last(x)]

        task_id = engine.submit("job" if kind == "plain" else "async_job", 1)
        engine.run()
        assert engine.result(task_id) == [1, "new", 1]
        ran.clear()
        fork = engine.fork(task_id, from_step=2, args=[2])
        engine.run()
        assert engine.result(fork) == [1, "new", 2]
        assert ran == ["last"]


@pytest.mark.parametrize(
    ("args", "kwargs", "said"),
    [
        ([1, 2], None, "too many positional arguments"),
        ([], None, "missing a required argument: 'x'"),
        (None, {"y": 1}, "unexpected keyword argument 'y'"),
    ],
)
def test_a_fork_refuses_arguments_that_do_not_fit_the_tasks_signature(
    db: str,
    clock: FakeClock,
    args: list[object] | None,
    kwargs: dict[str, object] | None,
    said: str,
) -> None:
    with open_engine(db, clock) as engine:

        @engine.step()
        def double(x: int) -> int:
            return 2 * x

        @engine.task()
        def job(x: int) -> int:
            return double(x)

        task_id = engine.submit(job, 1)
        engine.run()
        before = len(engine.tasks())
        with pytest.raises(UsageError, match=said):
            engine.fork(task_id, from_step=1, args=args, kwargs=kwargs)
        assert len(engine.tasks()) == before  # nothing queued
        fork = engine.fork(task_id, from_step=0, kwargs={"x": 4}, args=[])
        engine.run()
        assert engine.result(fork) == 8


def test_a_fork_of_a_fork_takes_the_steps_its_origin_inherited(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    """The middle fork's stream holds only the steps it ran; a fork of it looks through to the
    first task for the rest, patches included, and runs nothing it inherits."""
    ran: list[int] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def square(i: int) -> int:
            ran.append(i)
            return i * i

        @engine.task()
        def job(n: int) -> list[object]:
            done: list[object] = [square(0), engine.patched("v2")]
            return [*done, *(square(i) for i in range(1, n))]

        first = engine.submit(job, 4)
        engine.run()
        middle = engine.fork(first, from_step=3)  # steps 0, 1 and the patch's index
        engine.run()
        ran.clear()
        for upto, runs in [(2, [2, 3]), (3, [3]), (4, [])]:
            last = engine.fork(middle, from_step=upto)
            engine.run()
            assert engine.result(last) == [0, True, 1, 4, 9]
            assert ran == runs
            ran.clear()
        deeper = engine.fork(last, from_step=4)
        engine.run()
        assert engine.result(deeper) == [0, True, 1, 4, 9]
        assert ran == []
        with pytest.raises(UsageError, match="no recorded outcome for step 4"):
            engine.fork(middle, from_step=6)


def test_a_fork_takes_a_caught_failure_and_a_taken_message_as_recorded(
    db: str, clock: FakeClock, both_paths: str
) -> None:
    ran: list[int] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def check(i: int) -> int:
            ran.append(i)
            if i == 1:
                raise ValueError(f"item {i} is bad")
            return i

        @engine.task()
        def job() -> list[object]:
            done: list[object] = []
            for i in range(3):
                try:
                    done.append(check(i))
                except ValueError as exc:
                    done.append(str(exc))
            done.append(engine.recv("go"))
            done.append(engine.recv("go"))
            return [*done, check(3)]

        task_id = engine.submit(job)
        engine.send(task_id, "go", "a")
        engine.send(task_id, "go", "b")
        engine.run()
        assert engine.result(task_id) == [0, "item 1 is bad", 2, "a", "b", 3]
        ran.clear()
        # The first message is the origin's; the fork's own inbox gives the second receive.
        fork = engine.fork(task_id, from_step=4)
        engine.send(fork, "go", "mine")
        engine.run()
        assert engine.result(fork) == [0, "item 1 is bad", 2, "a", "mine", 3]
        assert ran == [3]


def test_a_fork_does_not_take_a_failure_its_origin_retried(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        fail = [True]

        @engine.step()
        def flaky() -> int:
            if fail[0]:
                raise ValueError("down")
            return 1

        @engine.task()
        def job() -> int:
            return flaky()

        task_id = engine.submit(job)
        engine.run()
        engine.retry(task_id, by="ops", reason="try again")
        clock.advance(1)
        with pytest.raises(UsageError, match="no recorded outcome for step 0"):
            engine.fork(task_id, from_step=1)  # retried: its step 0 has no outcome now
        fail[0] = False
        engine.run()
        fork = engine.fork(task_id, from_step=1)
        engine.run()
        assert engine.result(fork) == 1


def test_replay_check_passes_a_fork_of_a_fork_and_finds_its_changed_code(
    db: str, clock: FakeClock
) -> None:
    """The steps a fork inherits are recorded in its origin's stream (or further up): a replay
    check takes them from there, as a worker does, instead of calling them unrecorded."""
    from onward.testing import replay_check

    with open_engine(db, clock) as engine:

        @engine.step()
        def square(i: int) -> int:
            return i * i

        @engine.task()
        def job(n: int) -> list[int]:
            return [square(i) for i in range(n)]

        first = engine.submit(job, 4)
        engine.run()
        middle = engine.fork(first, from_step=2)
        engine.run()
        engine.fork(middle, from_step=3)
        engine.run()
        check = replay_check(engine.log, engine)
        assert (check.checked, check.divergences) == (3, ())

    with open_engine(db, clock) as engine:

        @engine.step()
        def cube(i: int) -> int:
            return i**3

        @engine.task(name="job")
        def changed(n: int) -> list[int]:
            return [cube(i) for i in range(n)]

        check = replay_check(engine.log, engine)
        assert {(d.kind, d.index) for d in check.divergences} == {("step", 0)}
        assert len(check.divergences) == 3  # each task, the forks through their origins


def test_a_fork_takes_its_origin_as_it_was_when_forked(db: str, clock: FakeClock) -> None:
    """The origin is retried (and its failed step now succeeds) after the fork is made: the
    fork still takes the outcome recorded when it was made, and runs none of its steps."""
    sent: list[int] = []
    with open_engine(db, clock) as engine:
        down = [True]

        @engine.step()
        def send_email(n: int) -> str:
            sent.append(n)
            if down[0]:
                raise ValueError("the mail server is down")
            return "sent"

        @engine.step()
        def finish(n: int) -> int:
            return n

        @engine.task()
        def job(n: int, catch: bool) -> list[object]:
            try:
                outcome: object = send_email(n)
            except ValueError as exc:
                if not catch:
                    raise
                outcome = str(exc)
            return [outcome, finish(n)]

        origin = engine.submit(job, 1, False)
        engine.run()  # fails at its first step
        fork = engine.fork(origin, from_step=1, args=[1, True])
        engine.cancel(fork)  # held back while the origin is retried
        down[0] = False
        engine.retry(origin, by="ops", reason="the mail server is back")
        engine.run()
        assert engine.result(origin) == ["sent", 1]
        assert sent == [1, 1]
        engine.retry(fork, by="ops", reason="now")
        engine.run()
        assert engine.result(fork) == ["the mail server is down", 1]
        assert sent == [1, 1]  # the fork ran none of the steps it took
