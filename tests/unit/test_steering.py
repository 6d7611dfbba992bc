"""Steering work that is already running: retry and fork, renames and patches, unregistered
tasks, messages and published values, on the real engine and a real SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, InvalidTransition, StepMismatch, TaskFailedError, UsageError
from onward.cli import main
from onward.events import DecisionMade, TaskRetried, TaskUnregistered
from onward.runtime.observer import Observer, StepStart
from onward.testing import replay_check
from tests.conftest import FakeClock
from tests.unit.test_async_appends import run_in_a_thread


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def open_engine(db: str, clock: FakeClock, **options: object) -> Engine:
    return Engine.open(
        db, session="steer", clock=clock, sleep=clock.advance, healing=False, **options
    )


def test_a_failed_task_is_retried_from_the_step_it_failed_at(db: str, clock: FakeClock) -> None:
    ran: Counter[str] = Counter()
    broken = {"yes": True}
    with open_engine(db, clock) as engine:

        @engine.step()
        def fetch() -> int:
            ran["fetch"] += 1
            return 20

        @engine.step()
        def parse(n: int) -> int:
            ran["parse"] += 1
            if broken["yes"]:
                raise ValueError("the parser was broken")
            return n + 1

        @engine.task()
        def job() -> int:
            return parse(fetch())

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(TaskFailedError, match="parser was broken"):
            engine.result(task_id)
        broken["yes"] = False  # someone fixed the parser
        view = engine.retry(task_id, by="ana", reason="the parser is fixed")
        assert view.state == "queued"
        engine.run()
        assert engine.result(task_id) == 21
        assert ran == {"fetch": 1, "parse": 2}  # the completed step replayed
        history = engine.log.read_stream(f"task-{task_id}")
        (retried,) = [r.event for r in history if isinstance(r.event, TaskRetried)]
        assert (retried.by, retried.previous) == ("ana", "failed")
        decisions = [
            r.event
            for r in engine.log.read_stream("session-steer")
            if isinstance(r.event, DecisionMade) and r.event.kind == "task_retried"
        ]
        assert [d.inputs["by"] for d in decisions] == ["ana"]
        with pytest.raises(InvalidTransition):
            engine.retry(task_id)  # it succeeded: nothing to retry


def test_a_task_retried_with_a_new_deadline_runs_before_it(db: str, clock: FakeClock) -> None:
    runs: list[float] = []
    with open_engine(db, clock) as engine:

        @engine.task()
        def job(n: int) -> int:
            runs.append(clock.now)
            if len(runs) == 1:
                raise RuntimeError("the first attempt fails")
            return n

        task_id = engine.submit(job, 1, deadline=clock.now + 100)
        engine.run()
        assert engine.task_view(task_id).state == "failed"
        clock.advance(200)  # the old deadline has passed
        engine.retry(task_id, deadline=clock.now + 3_600)
        engine.run()
        assert engine.result(task_id) == 1
        assert len(runs) == 2
        # Asked without a name: who asked is this engine's worker, as for a quarantine.
        (retried,) = [
            r.event
            for r in engine.log.read_stream(f"task-{task_id}")
            if isinstance(r.event, TaskRetried)
        ]
        assert retried.by == engine.worker


def test_a_fork_takes_the_first_steps_as_recorded_and_runs_the_rest(
    db: str, clock: FakeClock
) -> None:
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def plan(goal: str) -> str:
            ran.append(f"plan {goal}")
            return f"plan for {goal}"

        @engine.step()
        def act(plan: str, style: str) -> str:
            ran.append(f"act {style}")
            return f"{plan}, done {style}"

        @engine.task()
        def job(goal: str, style: str) -> str:
            return act(plan(goal), style)

        origin = engine.submit(job, "ship", "carefully")
        engine.run()
        fork = engine.fork(origin, from_step=1, args=["ship", "boldly"])
        engine.run()
        assert engine.result(fork) == "plan for ship, done boldly"
        assert ran == ["plan ship", "act carefully", "act boldly"]  # the plan ran once
        assert engine.task_view(fork).forked_from == origin
        with pytest.raises(UsageError, match="no recorded outcome for step 2"):
            engine.fork(origin, from_step=3)
        # Far past its steps: refused as fast (it used to build a list of that many indices).
        with pytest.raises(UsageError, match="no recorded outcome for step 2"):
            engine.fork(origin, from_step=10**30)
        with pytest.raises(UsageError, match="from_step must be an int"):
            engine.fork(origin, from_step=True)


def test_a_task_of_a_renamed_function_waits_then_runs_under_its_alias(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock) as first:

        @first.task(name="report.v1")
        def report(n: int) -> int:
            raise AssertionError("never run: the function is renamed before it runs")

        queued = first.submit("report.v1", 4)
    with open_engine(db, clock) as second:  # the new code: renamed, no alias yet

        @second.task(name="report.v2")
        def report_v2(n: int) -> int:
            return n * 10

        second.run()
        assert second.task_view(queued).state == "unregistered"
        assert [t.task_id for t in second.tasks("unregistered")] == [queued]
        events = [r.event for r in second.log.read_stream(f"task-{queued}")]
        assert any(isinstance(e, TaskUnregistered) for e in events)
    with open_engine(db, clock) as third:  # the alias declares the former name

        @third.task(name="report.v2", aliases=["report.v1"])
        def report_v3(n: int) -> int:
            return n * 10

        third.run()
        assert third.result(queued) == 40


def test_an_unregistered_task_fails_only_when_abandoned(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.task(name="gone")
        def gone() -> None: ...

        task_id = engine.submit("gone")
        engine.registry.tasks.clear()  # the next deploy dropped it
        engine.run()
        assert engine.task_view(task_id).state == "unregistered"
        engine.abandon(task_id, by="ana", reason="the feature was removed")
        with pytest.raises(TaskFailedError, match="Abandoned"):
            engine.result(task_id)


def test_a_renamed_step_replays_under_its_alias_and_says_how_when_it_cannot(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock) as engine:

        @engine.step(name="load")
        def load() -> int:
            return 1

        @engine.task(name="job")
        def job() -> int:
            value = load()
            engine.sleep(10)  # the task waits here: the code changes meanwhile
            return value

        task_id = engine.submit("job")
        engine.run(max_runs=1)
    with open_engine(db, clock) as engine:

        @engine.step(name="fetch")
        def fetch() -> int:
            return 2

        @engine.task(name="job")
        def job_renamed() -> int:
            value = fetch()
            engine.sleep(10)
            return value

        engine.run()
        with pytest.raises(TaskFailedError, match="aliases=\\['load'\\]"):
            engine.result(task_id)
        assert StepMismatch.__name__ in engine.task_view(task_id).error
    with open_engine(db, clock) as engine:

        @engine.step(name="fetch", aliases=["load"])
        def fetch_again() -> int:
            return 2

        @engine.task(name="job")
        def job_aliased() -> int:
            value = fetch_again()
            engine.sleep(10)
            return value

        engine.retry(task_id)
        engine.run()
        assert engine.result(task_id) == 1  # the recorded outcome, taken as its own


@dataclasses.dataclass
class Point:
    x: int
    y: int


def locate(ran: list[int], scale: int, n: int) -> Point:
    ran.append(n)
    return Point(scale * n, n)


class Locator:
    def __init__(self, ran: list[int], scale: int) -> None:
        self.ran, self.scale = ran, scale

    def __call__(self, n: int) -> Point:
        return locate(self.ran, self.scale, n)


#: Callables named only by a repr that holds a memory address.
UNNAMED_CALLABLES: dict[str, Callable[[list[int]], Callable[..., Any]]] = {
    "partial": lambda ran: functools.partial(locate, ran, 2),
    "object": lambda ran: Locator(ran, 2),
}


@pytest.mark.parametrize("make", UNNAMED_CALLABLES.values(), ids=UNNAMED_CALLABLES.keys())
def test_a_callable_without_a_qualified_name_is_registered_by_name_and_replays(
    db: str, clock: FakeClock, make: Callable[[list[int]], Callable[..., Any]]
) -> None:
    ran: list[int] = []

    def register(engine: Engine) -> None:
        for decorator in (engine.task(), engine.step(), engine.action()):
            with pytest.raises(UsageError, match=r"in another process.*register it with name="):
                decorator(make(ran))
        where = engine.step(name="locate")(make(ran))

        @engine.task(name="job")
        def job() -> str:
            point = where(3)
            engine.sleep(10)  # the task waits here: the next process resumes it
            return f"{type(point).__name__} {point.x}"

    with open_engine(db, clock) as engine:
        register(engine)
        task_id = engine.submit("job")
        engine.run(max_runs=1)
    clock.advance(11)
    with open_engine(db, clock) as engine:  # another process: another object, at another address
        register(engine)
        engine.run()
        assert engine.result(task_id) == "Point 6"  # recorded, read back as its annotated type
    assert ran == [3]


def test_patched_keeps_old_histories_on_the_old_path(db: str, clock: FakeClock) -> None:
    paths: list[str] = []

    def register(engine: Engine, patched: bool) -> None:
        @engine.step()
        def old_way() -> str:
            paths.append("old")
            return "old"

        @engine.step()
        def new_way() -> str:
            paths.append("new")
            return "new"

        @engine.task(name="job")
        def job() -> list[str]:
            first = old_way()
            engine.sleep(5)
            second = new_way() if patched and engine.patched("use-new-way") else old_way()
            engine.sleep(5)
            return [first, second]

    with open_engine(db, clock) as engine:
        register(engine, patched=False)
        before = engine.submit("job")
        engine.run(max_runs=2)  # the old code got past the change, then waits
        assert engine.task_view(before).state == "waiting"
    with open_engine(db, clock) as engine:
        register(engine, patched=True)
        after = engine.submit("job")
        engine.run()
        assert engine.result(after) == ["old", "new"]  # a new run takes the new path
        assert engine.result(before) == ["old", "old"]  # the old history keeps the old one
    assert paths == ["old", "old", "old", "new"]


def test_messages_reach_a_waiting_task_once_and_values_are_published(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock) as engine:

        @engine.task(name="chat")
        def chat() -> list[object]:
            engine.set_state("stage", "waiting for the first answer")
            first = engine.recv("answer")
            engine.set_state("stage", "waiting for the second")
            second = engine.recv("answer", timeout=30.0)
            return [first, second]

        task_id = engine.submit("chat")
        engine.run()
        assert engine.task_view(task_id).state == "waiting"
        assert engine.get_state(task_id, "stage") == "waiting for the first answer"
        with Engine.open(db, session="other", clock=clock) as elsewhere:
            elsewhere.send(task_id, "answer", {"yes": True}, sender="ana")
            elsewhere.send(task_id, "noise", 1)
        engine.run(max_runs=1)  # takes the answer, then waits for the second
        assert engine.get_state(task_id, "stage") == "waiting for the second"
        clock.advance(31.0)
        engine.run()
        assert engine.result(task_id) == [{"yes": True}, None]  # the second timed out
        with pytest.raises(KeyError):
            engine.get_state(task_id, "nothing")


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_a_receive_reads_only_what_came_to_the_inbox_since_the_last_read(
    db: str, clock: FakeClock, runner: str
) -> None:
    """Messages of two topics, interleaved, taken one topic after the other and each in the
    order it came, on both paths; each receive reads only what came since the run last read
    the inbox (it read the whole inbox each time: quadratic in a long conversation)."""
    n = 40
    with open_engine(db, clock) as engine:
        read: list[int] = []
        read_stream = engine.log.read_stream

        def counted(stream: str, **options: Any) -> list[Any]:
            records = read_stream(stream, **options)
            if stream.startswith("inbox-"):
                read.append(len(records))
            return records

        engine.log.read_stream = counted  # type: ignore[method-assign]

        if runner == "sync":

            @engine.task(name="talk")
            def talk() -> list[object]:
                return [engine.recv("a") for _ in range(n)] + [engine.recv("b") for _ in range(n)]

        else:

            @engine.task(name="talk")
            async def talk() -> list[object]:
                return [await engine.recv("a") for _ in range(n)] + [
                    await engine.recv("b") for _ in range(n)
                ]

        task_id = engine.submit("talk")
        for i in range(n):
            engine.send(task_id, "a", f"a{i}")
            engine.send(task_id, "b", f"b{i}")
        if runner == "sync":
            engine.run()
        else:
            asyncio.run(engine.run_async(concurrency=2))
        assert engine.result(task_id) == [f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)]
        assert len(read) == 2 * n
        assert sum(read) == 2 * n  # read once; the whole inbox each time was 80 * 80


def test_gathered_receives_of_one_topic_take_each_message_once(db: str, clock: FakeClock) -> None:
    """Receives awaited together, two of one topic: each takes a message of its own (both
    took the first one, read before either recorded it, and the third was never taken), and
    a replay gives each the same one."""
    with open_engine(db, clock) as engine:

        @engine.task(name="listener")
        async def listener() -> list[object]:
            first = await asyncio.gather(engine.recv("a"), engine.recv("a"), engine.recv("b"))
            return [*first, await engine.recv("a")]

        task_id = engine.submit("listener")
        for message in ("a1", "a2", "a3"):
            engine.send(task_id, "a", message)
        engine.send(task_id, "b", "b1")
        asyncio.run(engine.run_async(concurrency=2))
        taken = engine.result(task_id)
        assert sorted(taken[:2]) == ["a1", "a2"]
        assert taken[2:] == ["b1", "a3"]
    with open_engine(db, clock) as engine:  # the replay of its history agrees

        @engine.task(name="listener")
        async def again() -> list[object]:
            first = await asyncio.gather(engine.recv("a"), engine.recv("a"), engine.recv("b"))
            return [*first, await engine.recv("a")]

        assert replay_check(engine.log, engine).ok


def test_recv_on_the_async_path(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.task(name="listener")
        async def listener() -> object:
            return await engine.recv("go")

        task_id = engine.submit("listener")
        engine.send(task_id, "go", [1, 2, 3])
        asyncio.run(engine.run_async(concurrency=4))
        assert engine.result(task_id) == [1, 2, 3]


STEERING_CALLS: dict[str, Callable[[Engine, str], object]] = {
    "cancel": lambda engine, task_id: engine.cancel(task_id, "the boss says"),
    "fork": lambda engine, task_id: engine.fork(task_id, from_step=0),
    "reprioritise": lambda engine, task_id: engine.reprioritise(task_id, "high"),
    "quarantine": lambda engine, task_id: engine.quarantine(task_id, reason="stuck"),
    "retry": lambda engine, task_id: engine.retry(task_id),
    "abandon": lambda engine, task_id: engine.abandon(task_id),
}


@pytest.mark.parametrize("call", sorted(STEERING_CALLS))
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_task_that_steers_another_from_its_own_code_is_refused(
    db: str, clock: FakeClock, call: str, kind: str
) -> None:
    """A task's code runs again from its start after a wait or a crash, so a change it made
    between its steps would be made again (a second fork; a cancel of a task it cancelled,
    which failed the task): refused, naming where to call it from."""
    steer = STEERING_CALLS[call]
    with open_engine(db, clock) as engine:

        @engine.task()
        def victim() -> None:
            engine.recv("never")

        if kind == "sync":

            @engine.task()
            def boss(task_id: str) -> None:
                steer(engine, task_id)

        else:

            @engine.task(name="boss")
            async def async_boss(task_id: str) -> None:
                steer(engine, task_id)

        target = engine.submit(victim)
        engine.run()
        boss_id = engine.submit("boss", target)
        engine.run()
        view = engine.task_view(boss_id)
        assert view.state == "failed"
        assert f"UsageError: {call}() is called from the code of task {boss_id}" in (
            view.error or ""
        )
        assert engine.task_view(target).state == "waiting"  # nothing changed
        assert len(engine.tasks()) == 2  # no fork either


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_step_that_steers_another_task_does_it_once_however_often_its_task_runs(
    db: str, clock: FakeClock, kind: str
) -> None:
    """From a step (its outcome recorded once), a cancel and a fork happen once, though the
    task waits and runs again from its start."""
    with open_engine(db, clock) as engine:

        @engine.task()
        def victim() -> None:
            engine.recv("never")

        if kind == "sync":

            @engine.step()
            def stop(task_id: str) -> str:
                engine.cancel(task_id, "the boss says")
                return engine.fork(task_id, from_step=0)

            @engine.task(name="boss")
            def boss(task_id: str) -> str:
                fork_id = stop(task_id)
                engine.sleep(60)  # the task runs again from its start after this
                return fork_id

        else:

            @engine.step()
            async def async_stop(task_id: str) -> str:
                engine.cancel(task_id, "the boss says")
                return engine.fork(task_id, from_step=0)

            @engine.task(name="boss")
            async def async_boss(task_id: str) -> str:
                fork_id: str = await async_stop(task_id)
                await engine.sleep(60)
                return fork_id

        target = engine.submit(victim)
        engine.run()
        boss_id = engine.submit("boss", target)
        engine.run()
        fork_id = engine.result(boss_id)
        assert engine.task_view(target).state == "cancelled"
        assert engine.task_view(fork_id).forked_from == target
        assert len(engine.tasks()) == 3  # the victim, the boss and one fork


@pytest.mark.parametrize(
    "call",
    [
        "sleep",
        "set_state",
        "progress",
        "recv",
        "plain_step",
        "async_step",
        "wait",
        "degrade",
        "notify",
        "patched",
    ],
)
def test_an_async_task_that_forgets_to_await_a_durable_call_fails_saying_so(
    db: str, clock: FakeClock, call: str
) -> None:
    """``engine.sleep(5)`` without ``await`` in an ``async def`` task did nothing, and the task
    succeeded as if it had slept (Python's own warning aside): the task fails, naming the call
    to await. So does a step called without ``await``: it did not run, nothing was recorded,
    and the task succeeded without its side effect; and so do ``engine.wait(ids)``,
    ``degrade`` and ``notify`` written as statements (a wait that did not wait, a rung never
    taken, a notice never given)."""
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def plain_step(what: str) -> str:
            ran.append(what)
            return what

        @engine.step()
        async def async_step(what: str) -> str:
            ran.append(what)
            return what

        @engine.task()
        async def forgetful() -> str:
            if call == "plain_step":
                plain_step("charge")
            elif call == "async_step":
                async_step("charge")
            elif call == "sleep":
                engine.sleep(5)
            elif call == "set_state":
                engine.set_state("k", 1)
            elif call == "recv":
                engine.recv("verdict")
            elif call == "wait":
                engine.wait([])
            elif call == "degrade":
                engine.degrade("network")
            elif call == "notify":
                engine.notify("half-way")
            elif call == "patched":
                engine.patched("v2")
            else:
                engine.progress(0.5)
            return "done"

        @engine.task()
        async def mindful() -> str:
            later = asyncio.create_task(engine.sleep(5))  # started by the loop, then awaited
            await engine.set_state("k", 1)
            await engine.progress(0.5)
            await later
            return "done"

        forgot, minded = engine.submit(forgetful), engine.submit(mindful)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no "never awaited" on top
            engine.run()
            gc.collect()
        view = engine.task_view(forgot)
        assert view.state == "failed"
        named = f"{call}(...)" if call.endswith("step") else f"engine.{call}("
        assert f"UsageError: task {forgot}: {named}" in (view.error or "")
        assert ran == []
        assert view.steps == 0
        assert "was never awaited, so it did nothing" in (view.error or "")
        assert engine.result(minded) == "done"
        assert engine.get_state(minded, "k") == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            check = replay_check(engine.log, engine)  # the replay fails the same way
            gc.collect()
        assert check.ok, check.explain()
        assert check.checked == 2


def test_a_message_for_a_task_that_will_never_read_it_is_refused(
    db: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sent to a task that succeeded, a message was accepted (its inbox place returned) and
    never read: refused. A failed task may be retried: it takes it then."""
    with open_engine(db, clock) as engine:
        broken = {"yes": True}

        @engine.task()
        def done() -> int:
            return 1

        @engine.task()
        def listener() -> str:
            if broken["yes"]:
                raise ValueError("not yet")
            return str(engine.recv("note"))

        finished, failed = engine.submit(done), engine.submit(listener)
        engine.run()
        with pytest.raises(InvalidTransition, match="will never read a message"):
            engine.send(finished, "note", "hello")
        engine.send(failed, "note", "hello")
        broken["yes"] = False
        engine.retry(failed)
        engine.run()
        assert engine.result(failed) == "hello"
    assert main(["send", finished, "note", '"hi"', "--db", db]) == 2
    assert "will never read a message" in capsys.readouterr().err


def test_a_message_for_a_task_another_engine_finished_is_refused(db: str, clock: FakeClock) -> None:
    """A controller that had seen the task queued sent to it after another worker had run it
    to its end: the message was accepted from the state last seen, and never read."""
    with open_engine(db, clock) as controller, open_engine(db, clock) as worker:
        for engine in (controller, worker):

            @engine.task(name="done")
            def done() -> int:
                return 1

        task_id = controller.submit("done")
        assert controller.task_view(task_id).state == "queued"
        assert worker.run().succeeded == 1
        with pytest.raises(InvalidTransition, match="will never read a message"):
            controller.send(task_id, "note", "late")
        assert controller.task_view(task_id).state == "succeeded"


def test_a_fork_of_a_subtask_is_not_one_of_its_parents_children(db: str, clock: FakeClock) -> None:
    """A person forks a subtask: the fork is theirs, not a child its origin's parent submitted
    (it was listed among the parent's children, after the parent had ended)."""
    with open_engine(db, clock) as engine:

        @engine.task()
        def child(n: int) -> int:
            return n

        @engine.task()
        def parent() -> list[Any]:
            return engine.wait([engine.submit(child, 1)])

        parent_id = engine.submit(parent)
        engine.run()
        (child_id,) = engine.task_view(parent_id).children
        fork = engine.fork(child_id, from_step=0)
        engine.run()
        assert engine.result(fork) == 1
        assert engine.task_view(parent_id).children == (child_id,)
        assert engine.task_view(fork).parent is None


def test_an_observer_may_steer_from_its_step_hooks(db: str, clock: FakeClock) -> None:
    """An observer's hooks run for work done now, never on a replay: steering from them is
    not the task's own code (its step hooks were refused as if it were)."""
    moved: list[str] = []

    class Escalate(Observer):
        def step_started(self, task: Any, start: StepStart) -> Any:
            engine.reprioritise(waiting, "high")
            moved.append(start.step)
            return None

    with Engine.open(
        db, session="steer", clock=clock, sleep=clock.advance, healing=False, observer=Escalate()
    ) as engine:

        @engine.task()
        def victim() -> None:
            engine.recv("never")

        @engine.step()
        def work() -> int:
            return 1

        @engine.task()
        def job() -> int:
            return work()

        waiting = engine.submit(victim)
        engine.run()
        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 1
        assert moved == ["work"]
        assert engine.task_view(waiting).priority == "high"


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_many_appends_gathered_at_once_do_not_hold_every_thread(
    db: str, clock: FakeClock, runner: str
) -> None:
    """``gather`` of 200 ``engine.progress(...)``: each waited for the run's append turn in a
    worker thread of its own, the default executor's few threads were all held, and the one
    whose turn it was had none left to append with: the run hung."""
    with open_engine(db, clock) as engine:

        @engine.task()
        async def job(n: int) -> str:
            await asyncio.gather(*[engine.progress(i / n) for i in range(n)])
            return "done"

        task_id = engine.submit(job, 200)
        if runner == "run":
            run_in_a_thread(engine.run)
        else:
            run_in_a_thread(lambda: asyncio.run(engine.run_async(concurrency=2)))
        assert engine.result(task_id) == "done"


@pytest.mark.usefixtures("both_paths")
@pytest.mark.parametrize("then", ["a durable wait", "a failure and a retry"])
def test_a_wait_answers_as_the_run_that_went_on_from_it_read_though_a_subtask_was_retried(
    db: str, clock: FakeClock, then: str
) -> None:
    """A parent caught a failed subtask's error and went on (a step, then a durable wait, or
    a step that failed for good); a person then retried the subtask, which succeeded. When the
    parent ran again from its start (the message came, or the parent was retried too), its
    wait read the subtask as it was now and took the other branch: StepMismatch (the log says
    'fallback', the code now calls 'use')."""
    ready = {"child": False}
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:

        @engine.step()
        def work() -> int:
            if not ready["child"]:
                raise ValueError("child not ready")
            return 42

        @engine.step()
        def fallback(error: str) -> str:
            ran["fallback"] += 1
            return f"fallback after {error}"

        @engine.step()
        def use(results: list[int]) -> str:
            ran["use"] += 1
            return f"used {results}"

        @engine.step()
        def publish(outcome: str) -> str:
            ran["publish"] += 1
            if ran["publish"] == 1 and then != "a durable wait":
                raise RuntimeError("publishing is down")
            return outcome

        @engine.task()
        def child() -> int:
            return work()

        @engine.task()
        def parent() -> str:
            children = [engine.submit(child)]
            try:
                outcome = use(engine.wait(children))
            except TaskFailedError as exc:
                outcome = fallback(exc.error_type)
            if then == "a durable wait":
                engine.recv("go")  # the task runs again from its start once it comes
            return publish(outcome)

        task_id = engine.submit(parent)
        engine.run()
        (child_id,) = engine.task_view(task_id).children
        assert engine.task_view(child_id).state == "failed"
        ready["child"] = True
        engine.retry(child_id)
        engine.run()
        assert engine.result(child_id) == 42
        if then == "a durable wait":
            engine.send(task_id, "go", 1)
        else:
            assert engine.task_view(task_id).state == "failed"
            engine.retry(task_id)  # its completed steps, and with them its branch, are kept
        engine.run()
        assert engine.result(task_id) == "fallback after ValueError"
        assert ran["fallback"] == 1
        assert ran["use"] == 0
        assert replay_check(engine.log, engine).ok


def test_a_wait_keeps_what_it_read_though_the_subtask_is_retried_while_the_next_step_runs(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The read was answered as of the first record past the wait: a subtask retried and run
    to success by another worker while the parent's next step ran (before that step's record)
    flipped the parent's branch when it ran again (StepMismatch). A read that meets a subtask
    without success is now recorded (SubtasksRead) before the task's code goes on."""
    from onward.events import SubtasksRead

    db = f"sqlite:///{tmp_path / 'log.db'}"
    ready = {"child": False}

    def register(engine: Engine) -> None:
        @engine.step()
        def work() -> int:
            if not ready["child"]:
                raise ValueError("child not ready")
            return 42

        @engine.step()
        def fallback(child_id: str) -> str:
            # Meanwhile, on another worker, a person retries the subtask and it succeeds.
            ready["child"] = True
            with open_engine(db, clock) as other:
                register(other)
                other.retry(child_id)
                other.run()
                assert other.result(child_id) == 42
            return "fallback"

        @engine.step()
        def use(results: list[int]) -> str:
            return f"used {results}"

        @engine.task(name="child")
        def child() -> int:
            return work()

        @engine.task(name="parent")
        def parent() -> str:
            children = [engine.submit("child")]
            try:
                outcome = use(engine.wait(children))
            except TaskFailedError:
                outcome = fallback(children[0])
            engine.sleep(60)  # the task runs again from its start
            return outcome

    with open_engine(db, clock) as engine:
        register(engine)
        task_id = engine.submit("parent")
        engine.run()
        assert engine.result(task_id) == "fallback"
        reads = [r.event for r in engine.log.read() if isinstance(r.event, SubtasksRead)]
        assert len(reads) == 1
        assert replay_check(engine.log, engine).ok


@pytest.mark.usefixtures("both_paths")
def test_a_wait_that_went_on_to_a_wait_keeps_what_it_read(db: str, clock: FakeClock) -> None:
    """What the parent recorded past its wait was a wait for another subtask (no step): the
    read was answered as the log had it then, and the retried subtask's success sent the
    parent down the other branch though it had compensated for the failure."""
    ready = {"first": False}
    with open_engine(db, clock) as engine:

        @engine.task(name="first")
        def first() -> str:
            if not ready["first"]:
                raise ValueError("first failed")
            return "first ok"

        @engine.task(name="compensate")
        def compensate() -> str:
            return "compensated"

        @engine.task(name="second")
        def second() -> str:
            return "second ok"

        @engine.task(name="parent")
        def parent() -> str:
            try:
                said = engine.wait([engine.submit("first")])[0]
            except TaskFailedError:
                said = engine.wait([engine.submit("compensate")])[0]
            return f"{said}, {engine.wait([engine.submit('second')])[0]}"

        task_id = engine.submit("parent")
        engine.run(max_runs=3)  # the parent, first (fails), the parent again: it waits
        first_id = engine.task_view(task_id).children[0]
        ready["first"] = True
        engine.retry(first_id)
        engine.run()
        assert engine.result(first_id) == "first ok"
        assert engine.result(task_id) == "compensated, second ok"
        assert replay_check(engine.log, engine).ok


def test_a_read_of_an_attempt_that_failed_at_the_wait_does_not_bind_the_next_attempt(
    db: str, clock: FakeClock
) -> None:
    """The parent's first attempt failed right at the wait (it read its subtask failed, and
    recorded that read); a person retried the subtask, which succeeded, then the parent. Its
    second attempt read the success and went on (a step); when it ran again after a durable
    sleep, the first attempt's read was taken, and the code went the other way (StepMismatch)."""
    state = {"child_ok": False, "give_up": True}
    with open_engine(db, clock) as engine:

        @engine.step()
        def work() -> int:
            if not state["child_ok"]:
                raise ValueError("child not ready")
            return 42

        @engine.step()
        def use(results: list[int]) -> str:
            return f"used {results}"

        @engine.step()
        def fallback() -> str:
            return "fallback"

        @engine.task(name="child")
        def child() -> int:
            return work()

        @engine.task(name="parent")
        def parent() -> str:
            try:
                outcome = use(engine.wait([engine.submit("child")]))
            except TaskFailedError:
                if state["give_up"]:
                    raise
                outcome = fallback()
            engine.sleep(60)
            return outcome

        task_id = engine.submit("parent")
        engine.run()
        assert engine.task_view(task_id).state == "failed"
        (child_id,) = engine.task_view(task_id).children
        state["child_ok"], state["give_up"] = True, False
        engine.retry(child_id)
        engine.run()
        engine.retry(task_id)
        engine.run()
        assert engine.result(task_id) == "used [42]"
        assert replay_check(engine.log, engine).ok


@pytest.mark.usefixtures("both_paths")
@pytest.mark.parametrize("then", ["waits again", "fails a step, and is retried"])
def test_replay_check_agrees_with_the_engine_on_reads_of_the_same_subtask(
    db: str, clock: FakeClock, then: str
) -> None:
    """The parent read its subtask failed (recorded), went on, and after a person retried the
    subtask either waited for it again (a success, read live) or failed a step and was
    retried. replay_check answered every wait on that subtask from the one read recorded, and
    reported a divergence the engine never had; a failed step after the read made the read
    bind the next attempt in the engine too."""
    state = {"child_ok": False}
    with open_engine(db, clock) as engine:

        @engine.task(name="child")
        def child() -> str:
            if not state["child_ok"]:
                raise ValueError("not yet")
            return "ok"

        @engine.step()
        def fallback() -> str:
            if then != "waits again" and not state["child_ok"]:
                raise LookupError("fallback broke")
            return "fb"

        @engine.step()
        def primary() -> str:
            return "pr"

        def read(ids: list[str]) -> str:
            try:
                engine.wait(ids)
            except TaskFailedError:
                return fallback()
            return primary()

        @engine.task(name="parent")
        def parent() -> list[str]:
            ids = [engine.submit("child")]
            said = [read(ids)]
            if then == "waits again":
                engine.recv("go")
                said.append(read(ids))
            engine.sleep(60)  # the parent runs again from its start
            return said

        task_id = engine.submit("parent")
        engine.run()
        (child_id,) = engine.task_view(task_id).children
        state["child_ok"] = True
        engine.retry(child_id)
        engine.run()
        if then == "waits again":
            engine.send(task_id, "go", 1)
        else:
            assert engine.task_view(task_id).state == "failed"
            engine.retry(task_id)
        engine.run()
        expected = ["fb", "pr"] if then == "waits again" else ["pr"]
        assert engine.result(task_id) == expected
        check = replay_check(engine.log, engine)
        assert check.ok, check.explain()


def test_a_message_that_lands_after_its_task_ended_is_refused_to_its_sender(
    db: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller looked (the task was queued), then another worker ran the task to its
    end, then the message was appended: it lies after the end in the log and will never be
    read. The sender is told (it stays in the inbox, unread: the log keeps what it wrote)."""
    with open_engine(db, clock) as controller, open_engine(db, clock) as worker:
        for engine in (controller, worker):

            @engine.task(name="done")
            def done() -> int:
                return 1

        task_id = controller.submit("done")
        append = controller.log.append

        def the_task_ends_first(stream: str, *args: Any, **kwargs: Any) -> Any:
            if stream == f"inbox-{task_id}":
                assert worker.run().succeeded == 1  # between the sender's look and its append
            return append(stream, *args, **kwargs)

        monkeypatch.setattr(controller.log, "append", the_task_ends_first)
        with pytest.raises(
            InvalidTransition, match=r"ended \(at position \d+\) as the message was sent"
        ):
            controller.send(task_id, "note", "late")
        inbox = controller.log.read_stream(f"inbox-{task_id}")
        assert [r.version for r in inbox] == [1]
        # A message that came before the end is the task's to ignore: accepted as before.
        other = controller.submit("done")
        assert controller.send(other, "note", "early") == 1
        assert worker.run().succeeded == 1


def test_a_task_cancelled_or_retried_while_it_waits_no_longer_shows_its_wait(
    db: str, clock: FakeClock
) -> None:
    """Tasks waiting on a durable sleep, a message, an approval and a subtask are cancelled,
    one is retried: none shows the wait it left, live, replayed or loaded from a checkpoint."""
    from onward.projections import CatchUp

    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def deploy() -> str:
            return "deployed"

        @engine.task()
        def napper() -> int:
            engine.sleep(3600)
            return 1

        @engine.task()
        def listener() -> Any:
            return engine.recv("go", timeout=600)

        @engine.task()
        def release() -> str:
            return deploy()

        @engine.task()
        def parent() -> Any:
            return engine.wait([engine.submit(napper)])

        ids = [engine.submit(t) for t in (napper, listener, release, parent)]
        engine.run(max_runs=5)  # each runs once, the parent's subtask too: all wait
        waits = [engine.task_view(t) for t in ids]
        assert [v.state for v in waits] == ["waiting"] * 4
        assert all(v.waiting_reason for v in waits)
        assert waits[0].waiting_until == waits[1].waiting_until - 600 + 3600
        assert waits[3].waiting_on
        for task_id in ids:
            engine.cancel(task_id, "enough")
        engine.retry(ids[0])
        for task_id in ids:
            view = engine.task_view(task_id)
            assert view.state == ("queued" if task_id == ids[0] else "cancelled")
            shown = (view.waiting_reason, view.waiting_until, view.waiting_on)
            assert shown == ("", None, ())
            assert (view.waiting_topic, view.waiting_limit, view.waiting_breaker) == ("", "", "")
        live = engine.refresh().snapshot()
        saver = CatchUp(engine.log, checkpoint_every=0)
        saver.open(use_checkpoint=False)
        saver.checkpoint()
        loaded = CatchUp(engine.log, checkpoint_every=0)
        assert loaded.open().snapshot() == live
        assert loaded.loaded_checkpoint == engine.log.head()
        assert CatchUp(engine.log, checkpoint_every=0).open(use_checkpoint=False).snapshot() == live
        engine.run()
        assert engine.result(ids[0]) == 1
