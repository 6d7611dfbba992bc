"""Judgement in ``async def`` tasks: an action's check and undo are plain functions (an ``async
def`` one is refused, one that hands back an awaitable fails), and ``engine.degrade`` and
``engine.notify`` are awaited, never blocking the loop on a step of the task that appends."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, Interruption, UsageError, Workaround
from onward.events import (
    ActionChecked,
    ActionUndone,
    ComponentFailed,
    FlowState,
    InterruptionDeferred,
    StepFailed,
    TaskFailed,
    WorkaroundApplied,
)
from onward.judgement.degradation import Component
from tests.conftest import FakeClock
from tests.unit.test_async_appends import run_in_a_thread, run_with

LADDER = [Workaround(name="cache", quality_loss=0.2), Workaround(name="skip", quality_loss=0.5)]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(
        db, session="judge", clock=clock, sleep=clock.advance, healing=False, **options
    )


def events(engine: Engine, task_id: str) -> list[object]:
    return [r.event for r in engine.log.read_stream(f"task-{task_id}")]


# -- an action's check and undo ----------------------------------------------------------------


async def verify(path: str) -> bool:
    return path.endswith(".tar")


async def unpublish(path: str) -> None:
    return None


def verify_later(path: str) -> Any:
    """A plain function that hands back a coroutine: the registration cannot tell."""
    return verify(path)


def unpublish_later(path: str) -> Any:
    return unpublish(path)


class AsyncCheck:
    async def __call__(self, path: str) -> bool:
        return True


@pytest.mark.parametrize(
    ("option", "given"),
    [
        ("check", verify),
        ("undo", unpublish),
        ("check", functools.partial(verify)),
        ("check", AsyncCheck()),
    ],
)
def test_an_async_def_check_or_undo_is_refused_when_the_action_is_registered(
    db: str, clock: FakeClock, option: str, given: Any
) -> None:
    """Called and never awaited, its coroutine would count as true: a failing check would
    pass and raise the action's confidence, an undo would never run."""
    with open_engine(db, clock) as engine:
        with pytest.raises(UsageError, match=rf"action\(\): {option} is an async def function"):

            @engine.action(impact="high", **{option: given})
            async def publish(name: str) -> str:
                return f"/srv/{name}.tar"

        assert "publish" not in engine.registry.steps


def test_an_async_def_health_check_is_refused(db: str, clock: FakeClock) -> None:
    with (
        open_engine(db, clock) as engine,
        pytest.raises(UsageError, match=r"component\('search'\): check is an async def"),
    ):
        engine.component("search", check=verify, workarounds=LADDER)
    with pytest.raises(UsageError, match="plain def"):
        Component(name="search", check=AsyncCheck())


def approve_and_run(engine: Engine) -> None:
    """Run the task to its approval request, approve it, and run it again."""
    run_with(engine, "run_async")
    (request,) = engine.approvals()
    engine.approve(request.decision_id, note="go")
    run_with(engine, "run_async")


def test_a_check_that_hands_back_an_awaitable_fails_and_the_action_is_undone(
    db: str, clock: FakeClock
) -> None:
    """A plain function that returns a coroutine gets past the registration: its awaitable
    is not taken for a pass."""
    undone: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.action(impact="high", check=verify_later, undo=undone.append)
        async def publish(name: str) -> str:
            return f"/srv/{name}.tar"

        @engine.task()
        async def release(name: str) -> str:
            return await publish(name)

        task_id = engine.submit(release, "v1")
        approve_and_run(engine)
        assert undone == ["/srv/v1.tar"]
        history = events(engine, task_id)
        (checked,) = [e for e in history if isinstance(e, ActionChecked)]
        assert not checked.passed
        assert "returned an awaitable" in checked.message
        (failed,) = [e for e in history if isinstance(e, TaskFailed)]
        assert failed.error_type == "CheckFailed"


def test_an_undo_that_hands_back_an_awaitable_is_recorded_as_not_done(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="high", check=lambda path: False, undo=unpublish_later)
        async def publish(name: str) -> str:
            return f"/srv/{name}.tar"

        @engine.task()
        async def release(name: str) -> str:
            return await publish(name)

        task_id = engine.submit(release, "v1")
        approve_and_run(engine)
        (undo,) = [e for e in events(engine, task_id) if isinstance(e, ActionUndone)]
        assert not undo.ok
        assert "returned an awaitable" in undo.message


# -- degrade() in an async def task ------------------------------------------------------------


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_degrade_is_awaited_in_an_async_task_beside_a_committing_step(
    db: str, clock: FakeClock, runner: str
) -> None:
    """The failure is recorded off the loop while another step of the task appends: the loop
    does not wait for that step's append (which needs the loop to finish)."""
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)

        @engine.step()
        async def fetch(n: int) -> int:
            return n

        async def report() -> str:
            await asyncio.sleep(0)  # fetch() now awaits the commit of its outcome
            used = await engine.degrade("search", message="503")
            return used.name if used else "none"

        @engine.task()
        async def job() -> list[object]:
            return list(await asyncio.gather(fetch(1), report(), fetch(2)))

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == [1, "cache", 2]
        assert engine.workaround("search") == "cache"
        applied = [e for e in events(engine, task_id) if isinstance(e, WorkaroundApplied)]
        assert [a.workaround for a in applied] == ["cache"]


def test_async_tasks_reporting_at_once_walk_the_ladder_one_after_the_other(
    db: str, clock: FakeClock
) -> None:
    """As the tasks of a process's threads do: each report takes the next rung, and those
    that find the ladder run out ask a person."""
    running: list[int] = []
    got: dict[int, str] = {}
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)

        @engine.task()
        async def lookup(n: int) -> str:
            running.append(n)
            while len(running) < 4:  # all four are running: they report at the same moment
                await asyncio.sleep(0)
            found = await engine.degrade("search", message=f"503 for {n}")
            got[n] = found.name if found else "none"
            return got[n]

        for n in range(4):
            engine.submit(lookup, n)
        run_in_a_thread(lambda: asyncio.run(engine.run_async(concurrency=4)))
        assert sorted(got.values()) == ["cache", "skip"]  # the other two wait for a person
        (component,) = engine.degradation().components
        assert (component.state, component.rung, component.failures) == ("exhausted", 2, 4)
        assert len(engine.approvals()) == 2


def test_a_rerun_of_an_async_task_reads_its_degradations_back(db: str, clock: FakeClock) -> None:
    """The first report takes the only rung; the second finds none left and the task waits
    for a person; approved, the re-run gets the rung recorded and None, recording nothing
    again."""
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER[:1])

        @engine.task()
        async def job() -> list[object]:
            first = await engine.degrade("search")
            second = await engine.degrade("search")
            return [first.name if first else None, second]

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        assert engine.task_view(task_id).state == "waiting"
        (request,) = engine.approvals()
        engine.approve(request.decision_id, note="go on without it")
        run_with(engine, "run_async")
        assert engine.result(task_id) == ["cache", None]
        history = events(engine, task_id)
        assert sum(isinstance(e, ComponentFailed) for e in history) == 2


@pytest.mark.parametrize(
    ("misuse", "said"),
    [("attribute", "await engine.degrade('search')"), ("if", "await engine.degrade('search')")],
)
def test_degrade_used_without_await_in_an_async_task_fails_clearly(
    db: str, clock: FakeClock, misuse: str, said: str
) -> None:
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)

        @engine.task()
        async def job() -> str:
            used = engine.degrade("search")
            if misuse == "attribute":
                return str(used.name)
            return "degraded" if used else "full"

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        history = events(engine, task_id)
        (failed,) = [e for e in history if isinstance(e, TaskFailed)]
        assert failed.error_type == "UsageError"
        assert said in failed.message
        assert not any(isinstance(e, ComponentFailed | StepFailed) for e in history)
        assert engine.workaround("search") is None


def test_degrade_of_an_unregistered_component_is_refused_at_the_call(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock) as engine:

        @engine.task()
        async def job() -> str:
            try:
                engine.degrade("nowhere")
            except UsageError as exc:
                return str(exc)
            return "accepted"

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        assert "nowhere" in engine.result(task_id)


# -- notify() in an async def task -------------------------------------------------------------


def test_notify_is_awaited_in_a_flowing_async_task_beside_a_committing_step(
    db: str, clock: FakeClock
) -> None:
    """While the session flows a notice is deferred, recorded on the task's stream: off the
    loop, after a step of the task that appends meanwhile; then delivered at the boundary."""
    heard: list[Interruption] = []
    ids: list[str] = []
    with open_engine(db, clock, on_interruption=heard.append) as engine:

        @engine.step()
        async def work(i: int) -> int:
            clock.advance(1.0)
            return i

        async def notice() -> None:
            await asyncio.sleep(0)  # work() now awaits the commit of its outcome
            ids.append(await engine.notify("halfway through the batches"))

        @engine.task()
        async def batch(n: int) -> int:
            if n == 4:
                await asyncio.gather(work(0), notice())
            return sum([await work(i) for i in range(n)])

        for n in (12, 3, 4):  # idle -> warming after the first, flowing after the second
            engine.submit(batch, n)
        run_in_a_thread(lambda: asyncio.run(engine.run_async(concurrency=1)))
        states = [
            r.event.state  # type: ignore[union-attr]
            for r in engine.log.read_stream("session-judge")
            if type(r.event).__name__ == "FlowStateChanged"
        ]
        assert states[:2] == [FlowState.WARMING, FlowState.FLOWING]
        deferred = [r.event for r in engine.log.read() if isinstance(r.event, InterruptionDeferred)]
        assert [d.interruption_id for d in deferred] == ids
        assert [n.interruption_id for n in heard] == ids


def test_notify_used_without_await_in_an_async_task_fails_clearly(
    db: str, clock: FakeClock
) -> None:
    heard: list[Interruption] = []
    with open_engine(db, clock, on_interruption=heard.append) as engine:

        @engine.task()
        async def job() -> str:
            return engine.notify("done").upper()

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        (failed,) = [e for e in events(engine, task_id) if isinstance(e, TaskFailed)]
        assert "await engine.notify(...)" in failed.message
        assert heard == []
