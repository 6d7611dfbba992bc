"""An ``async def`` task's steps under way at once: a task waits and ends only after the
outcomes of the step bodies it started are recorded; a caller that gives up on a step (a
timeout) while the engine takes its permit gets the permit given back; the worker's signal to
hand a task back holds whatever the task's code does with it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from onward import BreakerPolicy, Engine, RetryPolicies, RetryPolicy, UsageError
from onward.events import (
    BackendError,
    StepCompleted,
    StorageUnavailable,
    TaskReleased,
    TaskSucceeded,
    TaskWaiting,
    open_log,
)
from onward.runtime.committer import Committer
from onward.runtime.observer import Observer, StepStart
from onward.runtime.run import CURRENT_RUN, BodyGate
from onward.runtime.scheduler import Outcome, _CancelledAfter, _seen_through
from onward.testing import replay_check
from tests.conftest import FakeClock
from tests.unit.test_async import open_engine
from tests.unit.test_async_appends import WatchedLock, run_in_a_thread, run_with


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


def kinds(engine: Engine, task_id: str) -> list[str]:
    return [type(r.event).__name__ for r in engine.log.read_stream(f"task-{task_id}")]


def breaker_engine(db: Path, clock: FakeClock) -> Engine:
    """An engine whose breakers open at the first failure (no retries) for 30 s."""
    return Engine.open(
        f"sqlite:///{db}",
        session="agents",
        clock=clock,
        sleep=clock.advance,
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
        breakers=BreakerPolicy(failures=1, cooldown=30),
    )


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_sibling_that_completes_while_a_step_fails_is_not_run_again_on_the_retry(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The failing step's retry waits until the gathered sibling's outcome is recorded: the
    task then waits, and its next run replays the sibling instead of charging the card twice."""
    bodies: Counter[str] = Counter()
    gates: dict[str, asyncio.Event] = {}

    with open_engine(db, clock) as engine:

        @engine.step()
        async def flaky(n: int) -> int:
            bodies["flaky"] += 1
            if bodies["flaky"] == 1:
                gates["charge"].set()  # the sibling finishes only once this step has failed
                raise ConnectionError("dropped")  # transient: retried after a delay
            return n

        @engine.step()
        async def charge_card(n: int) -> str:
            await gates["charge"].wait()  # set by the other step, as it fails
            bodies["charge_card"] += 1
            return f"charged {n}"

        @engine.task()
        async def checkout(n: int) -> list[object]:
            gates["charge"] = asyncio.Event()
            # The card is being charged (its body under way) when the other step fails.
            return list(await asyncio.gather(charge_card(n), flaky(n)))

        task_id = engine.submit(checkout, 1)
        run_with(engine, runner)
        recorded = kinds(engine, task_id)
        assert recorded.index("StepCompleted") < recorded.index("TaskWaiting")
        clock.advance(5)
        run_with(engine, runner)
        assert engine.result(task_id) == ["charged 1", 1]
        assert bodies == {"flaky": 2, "charge_card": 1}
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_task_that_leaves_a_gather_on_an_error_ends_after_its_other_steps(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The task returns while a step it started still runs: the step's outcome is recorded
    before the task's end (the engine never writes past a task's end), and nothing is lost."""
    gates: dict[str, asyncio.Event] = {}

    with open_engine(db, clock) as engine:

        @engine.step()
        async def fail_fast() -> int:
            raise ValueError("boom")  # a permanent error: no retry

        @engine.step()
        async def slow() -> int:
            await gates["slow"].wait()
            return 7

        @engine.task()
        async def agent() -> str:
            gates["slow"] = asyncio.Event()
            try:
                await asyncio.gather(fail_fast(), slow())
            except ValueError:
                gates["slow"].set()  # slow() goes on after the task has returned
                return "caught"
            return "no error"

        task_id = engine.submit(agent)
        run_with(engine, runner)
        assert engine.result(task_id) == "caught"
        history = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        assert isinstance(history[-1], TaskSucceeded)
        assert [e.result for e in history if isinstance(e, StepCompleted)] == [7]
        assert engine.log.verify().ok


def test_a_hand_back_returned_by_a_gather_still_hands_the_task_back(
    db: Path, clock: FakeClock
) -> None:
    """The worker stops while the task runs: its next steps raise the signal to hand the task
    back, which ``gather(..., return_exceptions=True)`` returns as a value. The task is handed
    back, not recorded as succeeded with steps that never ran; a later run completes it."""
    ran: list[int] = []

    with open_engine(db, clock) as engine:
        stop = asyncio.Event()

        @engine.step()
        async def first() -> int:
            stop.set()
            run = CURRENT_RUN.get()
            assert run is not None
            assert run.stopping is not None
            while not run.stopping.is_set():  # the worker sees the stop
                await asyncio.sleep(0)
            return 1

        @engine.step()
        async def tool(i: int) -> int:
            ran.append(i)
            return i

        @engine.task()
        async def agent() -> list[object]:
            await first()
            found = await asyncio.gather(tool(1), tool(2), return_exceptions=True)
            return [x if isinstance(x, int) else repr(x) for x in found]

        task_id = engine.submit(agent)
        asyncio.run(engine.serve_async(stop=stop, handle_signals=False))
        history = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        assert isinstance(history[-1], TaskReleased)
        assert ran == []
        asyncio.run(engine.run_async())
        assert engine.result(task_id) == [1, 2]
        assert ran == [1, 2]


def test_a_timeout_around_a_limited_step_gives_its_permit_back(db: Path, clock: FakeClock) -> None:
    """The timeout lands at every moment of taking the permit (from at once to after the
    step): whatever was done is unwound, every task ends, no permit stays held, and the log is
    one the engine wrote (it verifies)."""
    with open_engine(db, clock) as engine:
        engine.limit("api", concurrency=1)

        @engine.step(limit="api")
        async def call_api(n: int) -> int:
            return n

        @engine.task()
        async def caller(delay_us: int) -> str:
            try:
                async with asyncio.timeout(delay_us / 1e6):
                    await call_api(delay_us)
                return "in time"
            except TimeoutError:
                return "timed out"

        ids = [engine.submit(caller, d) for d in range(0, 3000, 50)]
        for _ in range(3):  # a task left waiting for a permit runs again
            asyncio.run(engine.run_async(concurrency=1))
        engine.refresh()
        assert {engine.task_view(i).state for i in ids} == {"succeeded"}
        assert [dict(view.held) for view in engine.limits()] == [{}]
        assert engine.log.verify().ok
        waits = [r.event for r in engine.log.read() if isinstance(r.event, TaskWaiting)]
        assert all(w.reason for w in waits)


def test_a_closed_committer_refuses_appends_instead_of_hanging(db: Path) -> None:
    with open_log(f"sqlite:///{db}") as log:
        committer = Committer(log)
        committer.close()
        committer.close()  # again: nothing to do

        async def soon() -> None:
            committer.commit_soon([])

        def refused(append: Callable[[], object]) -> str:
            try:
                append()
            except BackendError as exc:
                return str(exc)
            return "accepted"

        # In a thread of its own: an append its writer never answers would hang the test.
        assert "closed" in run_in_a_thread(lambda: refused(lambda: committer.commit([])))
        assert "closed" in run_in_a_thread(lambda: refused(lambda: asyncio.run(soon())))


@pytest.mark.parametrize("kind", ["async", "plain"])
def test_a_step_body_that_records_a_wait_does_not_wait_for_itself(
    db: Path, clock: FakeClock, kind: str
) -> None:
    """Two gathered steps report a component failed; the second finds no workaround left and
    the task waits for a person: recorded from inside a step's body, that wait does not wait
    for the body recording it."""
    from onward import Workaround

    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=[Workaround(name="cache", quality_loss=0.1)])

        fetch: Callable[[int], Any]
        if kind == "async":

            @engine.step(name="fetch")
            async def fetch_async(n: int) -> str:
                used = await engine.degrade("search")
                return used.name if used else "none"

            fetch = fetch_async
        else:

            @engine.step(name="fetch")
            def fetch_plain(n: int) -> str:
                used = engine.degrade("search")
                return used.name if used else "none"

            fetch = fetch_plain

        @engine.task()
        async def job() -> list[object]:
            return list(await asyncio.gather(fetch(1), fetch(2)))

        task_id = engine.submit(job)
        run_with(engine, "run_async")
        assert engine.task_view(task_id).state == "waiting"
        assert [a.task_id for a in engine.approvals()] == [task_id]
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_started_and_not_awaited_ends_before_its_task(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """``asyncio.create_task(step())`` and return at once: the step has not begun when the
    task returns; it still runs to its end, recorded before the task's end."""
    ran: list[int] = []
    kept: list[asyncio.Task[int]] = []

    with open_engine(db, clock) as engine:

        @engine.step()
        async def note(n: int) -> int:
            ran.append(n)
            return n

        @engine.task()
        async def fire_and_forget() -> str:
            kept.append(asyncio.create_task(note(1)))
            return "done"

        task_id = engine.submit(fire_and_forget)
        run_with(engine, runner)
        assert engine.result(task_id) == "done"
        assert ran == [1]
        recorded = kinds(engine, task_id)
        assert recorded[-1] == "TaskSucceeded"
        assert recorded.count("StepCompleted") == 1
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_gathered_steps_under_a_limit_of_one_each_run_once(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """More gathered plain steps than worker threads, under a limit of one permit: the steps
    without a permit let the holder's body end before they record the wait (holding no worker
    thread meanwhile); every body runs once, and no permit stays held."""
    bodies: Counter[int] = Counter()

    with open_engine(db, clock) as engine:
        engine.limit("api", concurrency=1)

        @engine.step(limit="api")
        def call_api(n: int) -> int:
            bodies[n] += 1
            return n

        @engine.task()
        async def agent(count: int) -> list[int]:
            return list(await asyncio.gather(*(call_api(i) for i in range(count))))

        task_id = engine.submit(agent, 12)
        for _ in range(30):
            run_with(engine, runner)
            if engine.task_view(task_id).state == "succeeded":
                break
            clock.advance(engine.lease)  # a wait for a permit looks again after a while
        assert engine.result(task_id) == list(range(12))
        assert set(bodies.values()) == {1}
        assert [dict(view.held) for view in engine.limits()] == [{}]
        assert engine.log.verify().ok


def test_a_step_past_a_breaker_check_waits_for_its_siblings_decision(
    db: Path, clock: FakeClock
) -> None:
    """A step guarded by a breaker is in its breaker check (a storage call) when its sibling
    fails and the task waits for a retry: its body does not start until that is decided, and
    runs once, on the task's next run."""
    bodies: Counter[str] = Counter()

    with open_engine(db, clock) as engine:

        @engine.step()
        async def flaky() -> int:
            bodies["flaky"] += 1
            if bodies["flaky"] == 1:
                raise ConnectionError("dropped")
            return 1

        @engine.step(breaker="payments")
        async def charge() -> str:
            bodies["charge"] += 1
            return "charged"

        @engine.task()
        async def checkout() -> list[object]:
            return list(await asyncio.gather(flaky(), charge()))

        task_id = engine.submit(checkout)
        run_with(engine, "run_async")
        clock.advance(5)
        run_with(engine, "run_async")
        assert engine.result(task_id) == [1, "charged"]
        assert bodies == {"flaky": 2, "charge": 1}
        assert engine.log.verify().ok


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_replay_check_delivers_no_notice(db: Path, clock: FakeClock, kind: str) -> None:
    """A task that tells people something at once: its run delivers the notice, its replay
    check delivers nothing and appends nothing."""
    from onward.testing import replay_check

    told: list[str] = []
    with Engine.open(
        f"sqlite:///{db}",
        session="agents",
        clock=clock,
        sleep=clock.advance,
        on_interruption=lambda notice: told.append(notice.summary),
    ) as engine:
        if kind == "plain":

            @engine.task(name="job")
            def plain_job() -> int:
                engine.notify("the nightly index is rebuilt", urgent=True)
                return 1

        else:

            @engine.task(name="job")
            async def async_job() -> int:
                await engine.notify("the nightly index is rebuilt", urgent=True)
                return 1

        engine.submit("job")
        run_with(engine, "run")
        assert told == ["the nightly index is rebuilt"]
        records = len(list(engine.log.read()))
        check = replay_check(engine.log, engine)
        assert (check.checked, check.divergences) == (1, ())
        assert told == ["the nightly index is rebuilt"]
        assert len(list(engine.log.read())) == records


def test_a_coroutine_left_running_records_nothing_after_its_tasks_end(
    db: Path, clock: FakeClock
) -> None:
    """The task returns, leaving a coroutine that publishes a state once another task has
    gone on: refused (``UsageError``), and nothing follows the task's end in its stream."""
    late: list[str] = []
    gate: dict[str, asyncio.Event] = {}

    with open_engine(db, clock) as engine:

        @engine.step()
        async def quick() -> int:
            return 1

        async def publish_later() -> None:
            await gate["other"].wait()
            try:
                await engine.set_state("progress", "late")
                late.append("recorded")
            except UsageError as exc:
                late.append(str(exc))

        @engine.task()
        async def agent() -> int:
            gate["other"] = asyncio.Event()
            gate["kept"] = asyncio.create_task(publish_later())  # type: ignore[assignment]
            return await quick()

        def ended(task_id: str) -> bool:
            return kinds(engine, task_id)[-1] == "TaskSucceeded"

        @engine.task()
        async def other(task_id: str) -> int:
            while "other" not in gate or not await asyncio.to_thread(ended, task_id):
                await asyncio.sleep(0)  # until the agent's end is recorded
            gate["other"].set()
            await asyncio.sleep(0)
            return 2

        task_id = engine.submit(agent)
        engine.submit(other, task_id)
        run_with(engine, "run_async")
        assert engine.result(task_id) == 1
        assert len(late) == 1
        assert "after its task ended" in late[0]
        assert kinds(engine, task_id)[-1] == "TaskSucceeded"
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_retry_inside_a_task_group_makes_the_task_wait(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """``asyncio.TaskGroup`` wraps the engine's signal to wait in an exception group: the task
    waits for its retry, and the runner goes on."""
    tries: list[int] = []

    with open_engine(db, clock) as engine:

        @engine.step()
        async def flaky() -> int:
            tries.append(1)
            if len(tries) == 1:
                raise ConnectionError("dropped")
            return 1

        @engine.task()
        async def agent() -> int:
            async with asyncio.TaskGroup() as group:
                found = group.create_task(flaky())
            return found.result()

        task_id = engine.submit(agent)
        first = run_with(engine, runner)
        assert first.waiting == 1
        clock.advance(5)
        run_with(engine, runner)
        assert engine.result(task_id) == 1


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_an_at_most_once_step_stopped_before_its_body_runs_later(
    db: Path, clock: FakeClock, kind: str
) -> None:
    """An at-most-once step behind an open breaker waits with its task before its body runs:
    its start is recorded only when its body starts, so it runs once when the breaker lets it
    (instead of being refused as interrupted)."""
    ran: list[str] = []
    with breaker_engine(db, clock) as engine:
        down = [True]

        @engine.step(breaker="pay")
        def probe() -> int:
            if down[0]:
                raise ConnectionError("the payment service is down")
            return 1

        @engine.step(breaker="pay", at_most_once=True)
        def charge() -> str:
            ran.append("charge")
            return "charged"

        @engine.task()
        def opener() -> int:
            return probe()

        if kind == "plain":

            @engine.task(name="agent")
            def plain_agent() -> str:
                return charge()

        else:

            @engine.task(name="agent")
            async def async_agent() -> str:
                return await charge()

        engine.submit(opener)
        engine.run()  # the breaker opens
        down[0] = False
        task_id = engine.submit("agent")
        engine.run()  # it waits out the breaker's cool-down (an injected clock), then runs
        assert engine.result(task_id) == "charged"
        assert ran == ["charge"]
        recorded = kinds(engine, task_id)
        assert recorded.index("TaskWaiting") < recorded.index("StepStarted")


@pytest.mark.parametrize("how", ["healed", "retried by a person"])
def test_an_at_most_once_step_whose_try_failed_runs_again(
    db: Path, clock: FakeClock, how: str
) -> None:
    """A try of an at-most-once step that raised has ended: its next try (a retry the healer
    decides, or the task retried by a person) runs, with a start of its own, instead of being
    refused as interrupted."""

    ran: list[str] = []
    with Engine.open(
        f"sqlite:///{db}",
        session="agents",
        clock=clock,
        sleep=clock.advance,
        retries=RetryPolicies(RetryPolicy(max_attempts=3, base=0.01, cap=0.01)),
        healing=how == "healed",
    ) as engine:

        @engine.step(at_most_once=True)
        def charge() -> str:
            ran.append("charge")
            if len(ran) == 1:
                raise ConnectionError("the payment service is down")
            return "charged"

        @engine.task()
        def agent() -> str:
            return charge()

        task_id = engine.submit(agent)
        engine.run()
        if how != "healed":
            assert engine.task_view(task_id).state == "failed"
            engine.retry(task_id, by="ops", reason="the service is back")
            engine.run()
        assert engine.result(task_id) == "charged"
        assert ran == ["charge", "charge"]
        assert kinds(engine, task_id).count("StepStarted") == 2


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_an_open_breaker_met_mid_gather_lets_the_sibling_finish_first(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A step finds its breaker open while a gathered sibling's body runs: the task's wait is
    recorded once the sibling's outcome is, so the sibling's body runs once."""
    ran: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    with breaker_engine(db, clock) as engine:
        down = [True]

        @engine.step(breaker="api")
        def api() -> int:
            if down[0]:
                raise ConnectionError("503 from the api")
            return 1

        @engine.step()
        async def slow() -> int:
            await gates["slow"].wait()
            for _ in range(200):  # under way while the breaker is checked off the loop
                await asyncio.sleep(0)
            ran.append("slow")
            return 7

        async def open_then_release() -> int:
            gates["slow"].set()
            return await api()  # the breaker is open: the task waits

        @engine.task()
        def opener() -> int:
            return api()

        @engine.task()
        async def agent() -> list[int]:
            gates["slow"] = asyncio.Event()
            return list(await asyncio.gather(slow(), open_then_release()))

        engine.submit(opener)
        run_with(engine, "run")  # the breaker opens
        down[0] = False
        task_id = engine.submit(agent)
        run_with(engine, runner)  # waits out the cool-down (an injected clock), then ends
        assert engine.result(task_id) == [7, 1]
        assert ran == ["slow"]
        recorded = kinds(engine, task_id)
        assert recorded.index("StepCompleted") < recorded.index("TaskWaiting")
        assert engine.log.verify().ok


def slow_sibling(engine: Engine, gates: dict[str, asyncio.Event], ran: list[str]) -> Any:
    """A step whose body is under way while a gathered sibling makes the task wait: it goes
    on until the wait is in the log (where the sibling does not wait for it), or for a few
    thousand turns of the loop."""

    @engine.step()
    async def slow() -> int:
        await gates["slow"].wait()
        run = CURRENT_RUN.get()
        assert run is not None
        for turn in range(2000):  # the sibling decides off the loop meanwhile
            if turn % 10 == 0 and any(
                isinstance(r.event, TaskWaiting) for r in engine.log.read_stream(run.stream)
            ):
                break
            await asyncio.sleep(0)
        ran.append("slow")
        return 7

    return slow


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_an_approval_asked_mid_gather_lets_the_sibling_finish_first(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A judged action asks a person while a gathered sibling's body runs: the task's wait is
    recorded once the sibling's outcome is, so the sibling's body runs once."""
    ran: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    with open_engine(db, clock) as engine:
        slow = slow_sibling(engine, gates, ran)

        @engine.action(impact="high")
        def deploy() -> str:
            ran.append("deploy")
            return "deployed"

        async def ask() -> str:
            gates["slow"].set()
            return await deploy()  # unsure and high impact: a person is asked

        @engine.task()
        async def release() -> list[object]:
            gates["slow"] = asyncio.Event()
            return list(await asyncio.gather(slow(), ask()))

        task_id = engine.submit(release)
        run_with(engine, runner)
        recorded = kinds(engine, task_id)
        assert recorded.index("StepCompleted") < recorded.index("TaskWaiting")
        (request,) = engine.approvals()
        engine.approve(request.decision_id)
        run_with(engine, runner)
        assert engine.result(task_id) == [7, "deployed"]
        assert ran == ["slow", "deploy"]
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_wait_for_subtasks_mid_gather_lets_the_sibling_finish_first(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """``await engine.wait(ids)`` on a subtask not yet ended, while a gathered sibling's body
    runs: the sibling's outcome is recorded before the wait, and its body runs once."""
    ran: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    with open_engine(db, clock) as engine:
        slow = slow_sibling(engine, gates, ran)

        @engine.task()
        def child() -> int:
            return 5

        async def wait_for_child() -> int:
            gates["slow"].set()
            sub = engine.submit(child)
            (value,) = await engine.wait([sub])
            return int(value)

        @engine.task()
        async def parent() -> list[int]:
            gates["slow"] = asyncio.Event()
            return list(await asyncio.gather(slow(), wait_for_child()))

        task_id = engine.submit(parent, priority="high")
        run_with(engine, runner)
        assert engine.result(task_id) == [7, 5]
        assert ran == ["slow"]
        recorded = kinds(engine, task_id)
        assert recorded.index("StepCompleted") < recorded.index("TaskWaiting")
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_degradation_with_no_workaround_mid_gather_lets_the_sibling_finish_first(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The task reports a component down with no workaround left (it waits for a person)
    while a gathered sibling's body runs: the sibling's outcome is recorded first."""
    ran: list[str] = []
    gates: dict[str, asyncio.Event] = {}
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=[])
        slow = slow_sibling(engine, gates, ran)

        async def report() -> str:
            gates["slow"].set()
            used = await engine.degrade("search", message="search is down")
            return used.name if used else "none"

        @engine.task()
        async def research() -> list[object]:
            gates["slow"] = asyncio.Event()
            return list(await asyncio.gather(slow(), report()))

        task_id = engine.submit(research)
        run_with(engine, runner)
        assert engine.task_view(task_id).state == "waiting"
        recorded = kinds(engine, task_id)
        assert recorded.index("StepCompleted") < recorded.index("TaskWaiting")
        assert ran == ["slow"]
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_gathered_at_most_once_steps_that_fail_at_once_both_retry(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """Two gathered at-most-once steps raise a transient error at once: both failures are
    recorded before the task's wait (nothing is recorded after a wait), so each is retried,
    neither is refused as interrupted, and the error history holds both."""
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        def failing_once(name: str) -> Any:
            @engine.step(name=name, at_most_once=True)
            async def call() -> str:
                await asyncio.sleep(0)  # both bodies under way before either raises
                ran.append(name)
                if ran.count(name) == 1:
                    raise ConnectionError(f"{name}: connection reset")
                return name

            return call

        pay, ship = failing_once("pay"), failing_once("ship")

        @engine.task()
        async def order() -> list[str]:
            return list(await asyncio.gather(pay(), ship()))

        task_id = engine.submit(order)
        run_with(engine, runner)  # the retries' waits pass on the injected clock
        assert engine.result(task_id) == ["pay", "ship"]
        assert sorted(ran) == ["pay", "pay", "ship", "ship"]
        recorded = kinds(engine, task_id)
        first_wait = recorded.index("TaskWaiting")
        assert recorded[:first_wait].count("StepFailed") == 2
        assert recorded.count("ErrorObserved") == 2
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_failure_beside_a_retried_one_is_recorded_and_replayed(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """One gathered step raises a transient error, its sibling a permanent one at the same
    moment: both failures are recorded before the task waits for the retry or ends, and the
    task fails with the permanent error (met again from the log if it ran again), without
    running that body twice."""
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        async def flaky() -> int:
            await asyncio.sleep(0)
            ran.append("flaky")
            if ran.count("flaky") == 1:
                raise ConnectionError("connection reset")
            return 1

        @engine.step()
        async def broken() -> int:
            await asyncio.sleep(0)
            ran.append("broken")
            raise ValueError("no such order")

        @engine.task()
        async def order() -> list[int]:
            return list(await asyncio.gather(flaky(), broken()))

        task_id = engine.submit(order)
        run_with(engine, runner)
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert "no such order" in (view.error or "")
        assert ran.count("broken") == 1
        recorded = kinds(engine, task_id)
        # Either the retry's wait (then the task runs again and meets the recorded failure),
        # or, when the permanent failure reached the task first, its end: after both failures.
        stop = "TaskWaiting" if "TaskWaiting" in recorded else "TaskFailed"
        assert recorded[: recorded.index(stop)].count("StepFailed") == 2
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_left_under_way_by_a_failed_task_is_not_retried(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The task leaves a gather on a step's final error while a sibling still runs; the
    sibling then fails with an error its policy retries. Its failure is recorded, but the task
    has ended: it fails with its own error, is not parked for the retry, and the sibling's
    body does not run again."""
    ran: Counter[str] = Counter()
    gates: dict[str, asyncio.Event] = {}
    with open_engine(db, clock) as engine:

        @engine.step()
        async def always_slow() -> int:
            ran["always_slow"] += 1
            raise TimeoutError("always slow")  # retried, then given up

        @engine.step()
        async def slow_once() -> int:
            await gates["left"].wait()  # fails once the task has left the gather
            ran["slow_once"] += 1
            raise TimeoutError("slow once")

        @engine.task()
        async def job() -> list[int]:
            gates["left"] = asyncio.Event()
            try:
                return list(await asyncio.gather(always_slow(), slow_once()))
            finally:
                gates["left"].set()

        task_id = engine.submit(job)
        run_with(engine, runner)
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert "always slow" in (view.error or "")
        assert ran == {"always_slow": 3, "slow_once": 1}
        recorded = kinds(engine, task_id)
        last_wait = len(recorded) - 1 - recorded[::-1].index("TaskWaiting")
        assert recorded[last_wait + 1 :].count("StepFailed") == 2  # both, after the last wait
        assert recorded[-1] == "TaskFailed"
        assert engine.log.verify().ok


def failing_once(engine: Engine, ran: Counter[str], name: str, *, at_most_once: bool) -> Any:
    """An ``async def`` step that raises a transient error the first time, a few turns of the
    loop into its body (its siblings under way meanwhile)."""

    @engine.step(name=name, at_most_once=at_most_once)
    async def call() -> str:
        ran[name] += 1
        for _ in range(20):
            await asyncio.sleep(0)
        if ran[name] == 1:
            raise ConnectionError(f"{name}: connection reset")
        return name

    return call


def failing_together(
    engine: Engine, ran: Counter[str], name: str, at_most_once: bool, together: int
) -> Any:
    """An ``async def`` step that raises a transient error the first time, once the bodies of
    ``together`` such steps are all under way (or after many turns of the loop)."""

    @engine.step(name=name, at_most_once=at_most_once)
    async def call() -> str:
        ran[name] += 1
        first = ran[name] == 1
        for _ in range(100_000):
            if not first or sum(1 for n, count in ran.items() if count) >= together:
                break
            await asyncio.sleep(0)
        if first:
            raise ConnectionError(f"{name}: connection reset")
        return name

    return call


@pytest.mark.parametrize("waiter", ["wait", "degrade"])
@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_failure_under_way_is_recorded_before_a_siblings_wait(
    db: Path, clock: FakeClock, runner: str, waiter: str
) -> None:
    """An at-most-once step raises while the task, beside it, waits for a subtask or for a
    person (a component with no workaround): its failure is recorded before the wait, so it is
    retried when the task runs again, not refused as interrupted."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=[])
        pay = failing_once(engine, ran, "pay", at_most_once=True)

        @engine.task()
        def child() -> int:
            return 5

        async def wait_for_something() -> object:
            if waiter == "wait":
                return (await engine.wait([engine.submit(child)]))[0]
            return await engine.degrade("search", message="search is down")

        @engine.task()
        async def job() -> list[object]:
            return list(await asyncio.gather(pay(), wait_for_something()))

        task_id = engine.submit(job)
        run_with(engine, runner)
        recorded = kinds(engine, task_id)
        assert "StepFailed" in recorded[: recorded.index("TaskWaiting")]
        for request in engine.approvals():
            engine.approve(request.decision_id)
        run_with(engine, runner)
        assert engine.result(task_id) == ["pay", 5 if waiter == "wait" else None]
        assert ran == {"pay": 2}
        assert engine.log.verify().ok


@pytest.mark.parametrize("at_most_once", [True, False])
@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_three_steps_of_a_task_group_that_fail_at_once_each_retry(
    db: Path, clock: FakeClock, runner: str, at_most_once: bool
) -> None:
    """Three steps of an ``asyncio.TaskGroup`` raise at once (each body waits for the other
    two to be under way, so that they do, however slow the machine): the group cancels the
    others at the first error, yet each failure is recorded, then the task's wait, in the
    same claim; each step retries and the task succeeds."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        steps = [failing_together(engine, ran, f"s{i}", at_most_once, 3) for i in range(3)]

        @engine.task()
        async def job() -> list[str]:
            async with asyncio.TaskGroup() as group:
                started = [group.create_task(step()) for step in steps]
            return [t.result() for t in started]

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == ["s0", "s1", "s2"]
        assert ran == {"s0": 2, "s1": 2, "s2": 2}
        recorded = kinds(engine, task_id)
        assert recorded[: recorded.index("TaskWaiting")].count("StepFailed") == 3
        assert "TaskLeaseExpired" not in recorded
        assert engine.log.verify().ok


@pytest.mark.parametrize("together", [2, 3])
@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_failures_a_task_group_gave_up_on_replay_as_the_code_saw_them(
    db: Path, clock: FakeClock, runner: str, together: int
) -> None:
    """Steps of an ``asyncio.TaskGroup`` raise at once, for good: the first failure told to the
    code cancels the others, whose failures are being recorded (one deciding, the next waiting
    for its turn). The code saw one error; after a durable sleep its next run replays one
    error too, and takes the same branch (it saw all of them, and failed on a step mismatch)."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:

        @engine.step()
        async def boom(name: str) -> int:
            ran[name] += 1
            raise ValueError(f"no such order {name}")

        @engine.step()
        async def branch(seen: int) -> int:
            ran[f"branch {seen}"] += 1
            return seen

        @engine.task()
        async def job() -> int:
            seen = 0
            try:
                async with asyncio.TaskGroup() as group:
                    for n in range(together):
                        group.create_task(boom(f"s{n}"))
            except* ValueError as errors:
                seen = len(errors.exceptions)
            taken = await branch(seen)
            await engine.sleep(5)  # its next run replays what came before
            return taken

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == 1
        assert ran == {**{f"s{n}": 1 for n in range(together)}, "branch 1": 1}
        assert kinds(engine, task_id).count("StepWithdrawn") == together - 1
        check = replay_check(engine.log, engine)
        assert check.ok, check
        assert not check.skipped
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_task_group_failing_on_a_permanent_error_fails_in_its_claim(
    db: Path, clock: FakeClock, runner: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A TaskGroup's step fails for good while its sibling fails with an error that is
    retried: the task fails with the group's error in the same claim (no second claim to run
    the sibling again, no warning that it caught onward's signal)."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        transient = failing_once(engine, ran, "transient", at_most_once=False)

        @engine.step()
        async def permanent() -> int:
            ran["permanent"] += 1
            for _ in range(20):
                await asyncio.sleep(0)
            raise ValueError("no such order")

        @engine.task()
        async def job() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(permanent())
                group.create_task(transient())

        task_id = engine.submit(job)
        run_with(engine, runner)
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert "ExceptionGroup" in (view.error or "")
        assert kinds(engine, task_id).count("TaskClaimed") == 1
        assert ran == {"permanent": 1, "transient": 1}
        assert "caught onward's signal" not in caplog.text
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_fixed_call_cut_short_by_a_siblings_wait_runs_when_the_task_wakes(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A step's error is fixed (a declared default for the missing key) and its remedied call
    is about to run when a gathered sibling makes the task wait: when the task wakes, the
    remedied call runs, not the known-bad one again."""
    calls: list[dict[str, str]] = []
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        flaky = failing_once(engine, ran, "flaky", at_most_once=False)

        @engine.step(hints={"defaults": {"region": "eu-west-1"}})
        async def connect(config: dict[str, str]) -> str:
            calls.append(dict(config))
            for _ in range(40):  # it fails once its sibling has, and is fixed after it
                await asyncio.sleep(0)
            return config["region"]

        @engine.task()
        async def job() -> list[str]:
            return list(await asyncio.gather(connect({}), flaky()))

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == ["eu-west-1", "flaky"]
        assert calls == [{}, {"region": "eu-west-1"}]
        assert kinds(engine, task_id).count("FixAttempted") == 1
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_error_reaches_the_task_while_a_sibling_waits_for_its_reaction(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A gathered step fails for good a turn of the loop in, while its sibling's body waits
    for the task to react to that error (as plain asyncio allows): the error reaches the task
    at once (it used to wait for the sibling's body first: the run never returned)."""
    gates: dict[str, asyncio.Event] = {}
    with open_engine(db, clock) as engine:

        @engine.step()
        async def fail_soon() -> int:
            await asyncio.sleep(0)  # the sibling's body has started
            raise ValueError("no such order")

        @engine.step()
        async def slow() -> int:
            await gates["seen"].wait()  # goes on once the task has seen the error
            return 7

        @engine.task()
        async def job() -> str:
            gates["seen"] = asyncio.Event()
            try:
                await asyncio.gather(fail_soon(), slow())
            except ValueError:
                gates["seen"].set()
                return "caught"
            return "no error"

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == "caught"
        recorded = kinds(engine, task_id)
        assert recorded.count("StepCompleted") == 1  # slow's outcome, before the task's end
        assert recorded[-1] == "TaskSucceeded"
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_task_that_raises_after_a_cleanup_ends_in_its_claim(
    db: Path, clock: FakeClock, runner: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The task meets a step's permanent error, awaits a cleanup, and raises it again, while
    a sibling it left fails with an error that is retried: the task fails in its claim (the
    retry's wait is superseded by its end), without a warning that it caught a signal."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        flaky = failing_once(engine, ran, "flaky", at_most_once=False)

        @engine.step()
        async def broken() -> int:
            await asyncio.sleep(0)
            raise ValueError("no such order")

        @engine.task()
        async def order() -> list[object]:
            try:
                return list(await asyncio.gather(broken(), flaky()))
            except ValueError:
                for _ in range(100):  # an async cleanup: the sibling fails meanwhile
                    await asyncio.sleep(0)
                raise

        task_id = engine.submit(order)
        run_with(engine, runner)
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert "no such order" in (view.error or "")
        assert kinds(engine, task_id).count("TaskClaimed") == 1
        assert ran == {"flaky": 1}
        assert "caught onward's signal" not in caplog.text
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_retry_woken_early_by_a_siblings_waits_until_it_is_due(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """Two gathered steps fail at once, one retried in 100 s, the other in 1 s: the task
    wakes at the first due time, and the step retried in 100 s waits again for its own (a
    retry runs no earlier than its recorded due time)."""
    from onward import RetryRule
    from onward.events import Jitter

    start = clock.now
    runs: dict[str, list[float]] = {"slow_api": [], "flaky": []}
    with Engine.open(
        f"sqlite:///{db}",
        session="agents",
        clock=clock,
        sleep=clock.advance,
        retries=RetryPolicies(
            RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE),
            rules=[
                RetryRule(
                    "TimeoutError",
                    RetryPolicy(name="slow", max_attempts=3, base=100.0, jitter=Jitter.NONE),
                )
            ],
        ),
    ) as engine:

        @engine.step()
        async def slow_api() -> str:
            runs["slow_api"].append(clock.now - start)
            await asyncio.sleep(0)
            if len(runs["slow_api"]) == 1:
                raise TimeoutError("the server was slow")
            return "slow_api"

        @engine.step()
        async def flaky() -> str:
            runs["flaky"].append(clock.now - start)
            for _ in range(3):
                await asyncio.sleep(0)
            if len(runs["flaky"]) == 1:
                raise ConnectionError("connection reset")
            return "flaky"

        @engine.task()
        async def job() -> list[str]:
            return list(await asyncio.gather(slow_api(), flaky()))

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == ["slow_api", "flaky"]
        assert runs["slow_api"][1] >= 100
        assert runs["flaky"][1] >= 1
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_task_that_lets_its_own_cancellation_out_fails_without_retrying_what_it_left(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """The task cancels a step it started and lets the ``CancelledError`` out, while another
    step it left fails with an error that is retried: the task fails in its claim, and the
    step it left is not retried (nothing awaits it any more)."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        flaky = failing_once(engine, ran, "flaky", at_most_once=False)

        @engine.step()
        async def slow() -> str:
            await asyncio.Event().wait()  # never set: it is cancelled
            return "slow"

        @engine.task()
        async def job() -> str:
            left = asyncio.ensure_future(flaky())
            cancelled = asyncio.ensure_future(slow())
            await asyncio.sleep(0)
            cancelled.cancel()
            try:
                await cancelled  # its own CancelledError leaves the task
            finally:
                left.add_done_callback(lambda done: done.exception())
            return "unreachable"

        task_id = engine.submit(job)
        run_with(engine, runner)
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert "CancelledError" in (view.error or "")
        recorded = kinds(engine, task_id)
        assert recorded.count("TaskClaimed") == 1
        assert "TaskWaiting" not in recorded
        assert ran == {"flaky": 1}
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_gathering_with_return_exceptions_waits_for_a_retry_without_a_warning(
    db: Path, clock: FakeClock, runner: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``gather(..., return_exceptions=True)`` gives the code onward's signal to wait as a
    value, and a task that returns what it gathered waits for the retry as recorded: with no
    warning that it caught the signal (it did not: gather did); a task that hides the signal
    in what it returns is still told of it."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        flaky = failing_once(engine, ran, "flaky", at_most_once=False)
        shaky = failing_once(engine, ran, "shaky", at_most_once=False)

        @engine.step()
        async def steady() -> str:
            ran["steady"] += 1
            return "steady"

        @engine.task()
        async def gathered() -> list[object]:
            return await asyncio.gather(steady(), flaky(), return_exceptions=True)

        @engine.task()
        async def hidden() -> list[str]:
            got = await asyncio.gather(steady(), shaky(), return_exceptions=True)
            return [repr(value) for value in got]

        task_id = engine.submit(gathered)
        run_with(engine, runner)
        assert engine.result(task_id) == ["steady", "flaky"]
        assert ran == {"steady": 1, "flaky": 2}
        assert "caught onward's signal" not in caplog.text
        task_id = engine.submit(hidden)
        run_with(engine, runner)
        assert engine.result(task_id) == ["'steady'", "'shaky'"]
        assert "`gather(..., return_exceptions=True)`, which returns it" in caplog.text
        assert engine.log.verify().ok


class CancelAtFirstStart(Observer):
    """Cancels the asyncio task that calls a step, the first time that step is about to be
    tried: the moment its at-most-once start is recorded (a sibling's error, a timeout or a
    stopping run landing there), every time."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.cancelled = 0

    def step_started(self, task: Any, start: StepStart) -> Any:
        if start.step == self.step and not self.cancelled:
            self.cancelled += 1
            current = asyncio.current_task()
            assert current is not None
            current.cancel()
        return None


def test_an_at_most_once_step_cancelled_as_its_start_is_recorded_runs_on_the_next_run(
    db: Path, clock: FakeClock
) -> None:
    """``run_async`` is cancelled while an at-most-once step's start is being recorded: its body
    never began, so the start is withdrawn with the task handed back, and the next run runs
    the step once (it was refused as interrupted, and the task failed for good)."""
    ran: Counter[str] = Counter()
    observer = CancelAtFirstStart("pay")
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock, observer=observer) as engine:

        @engine.step(at_most_once=True)
        async def pay(amount: int) -> str:
            ran["pay"] += 1
            return f"paid {amount}"

        @engine.task()
        async def order(amount: int) -> str:
            return await pay(amount)

        task_id = engine.submit(order, 5)
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(engine.run_async(concurrency=2))
        assert observer.cancelled == 1
        assert ran["pay"] == 0
        assert kinds(engine, task_id)[-3:] == ["StepStarted", "StepWithdrawn", "TaskReleased"]
        run_with(engine, "run_async")
        assert engine.result(task_id) == "paid 5"
        assert ran["pay"] == 1
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_an_at_most_once_step_a_task_went_on_without_stays_given_up_on(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A task gives up on an at-most-once step (its asyncio task, cancelled while the start is
    recorded), goes on without it and waits: the next run meets the cancellation there again,
    as the code did, rather than run the step's body behind the path the task took (nor
    refuse it as interrupted)."""
    ran: Counter[str] = Counter()
    observer = CancelAtFirstStart("pay")
    with Engine.open(
        f"sqlite:///{db}", session="agents", clock=clock, sleep=clock.advance, observer=observer
    ) as engine:

        @engine.step(at_most_once=True)
        async def pay(amount: int) -> str:
            ran["pay"] += 1
            return f"paid {amount}"

        @engine.step()
        async def note(what: str) -> str:
            ran["note"] += 1
            return f"noted {what}"

        @engine.task()
        async def order(amount: int) -> str:
            attempt = asyncio.create_task(pay(amount))
            with contextlib.suppress(asyncio.CancelledError):
                return await attempt
            said = await note("gave up")
            await engine.sleep(30)  # the task waits, and its code runs again from its start
            return said

        task_id = engine.submit(order, 5)
        run_with(engine, runner)
        assert engine.result(task_id) == "noted gave up"
        assert ran == {"note": 1}  # no payment behind the path the task took
        assert observer.cancelled == 1
        assert "StepWithdrawn" in kinds(engine, task_id)
        assert replay_check(engine.log, engine).ok
        assert engine.log.verify().ok


def test_a_body_gate_lets_exactly_one_side_through() -> None:
    """A plain step's body in its thread and its caller's cancellation race for the gate: one
    of them wins, whatever the interleaving (a body that began is never withdrawn)."""

    def side(barrier: threading.Barrier, results: dict[str, bool], name: str,
             attempt: Callable[[], bool]) -> None:  # fmt: skip
        barrier.wait()
        results[name] = attempt()

    for _ in range(200):
        gate = BodyGate()
        results: dict[str, bool] = {}
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=side, args=(barrier, results, "enter", gate.enter)),
            threading.Thread(target=side, args=(barrier, results, "close", gate.close)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(results.values()) == [False, True]
        assert gate.enter() is False
        assert gate.close() is False


class CancelAtLastStepEnd(Observer):
    """Cancels the asyncio task of a task run as its last step ends: the task's code then
    returns, and its end is being recorded when the cancellation lands."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.cancelled = 0

    def step_started(self, task: Any, start: StepStart) -> Any:
        return start.step

    def step_ended(self, token: Any, **_: Any) -> None:
        if token == self.step and not self.cancelled:
            self.cancelled += 1
            current = asyncio.current_task()
            assert current is not None
            current.cancel()


def test_a_task_whose_code_returned_as_the_run_is_cancelled_is_never_left_running(
    db: Path, clock: FakeClock
) -> None:
    """``run_async`` is cancelled as the task's last step ends: its code returns, and the task
    is either handed back or ended as it returned, never left ``running`` (neither, until its
    lease ran out); a run afterwards gives its result."""
    observer = CancelAtLastStepEnd("last")
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock, observer=observer) as engine:

        @engine.step()
        async def last(n: int) -> int:
            return n + 1

        @engine.task()
        async def job(n: int) -> int:
            return await last(n)

        task_id = engine.submit(job, 1)
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(engine.run_async(concurrency=2))
        assert observer.cancelled == 1
        assert engine.refresh().tasks.tasks[task_id].state in ("queued", "succeeded")
        run_with(engine, "run_async")
        assert engine.result(task_id) == 2
        assert engine.log.verify().ok


class CancelAtBoundary(Observer):
    """Cancels a run from its second round, at the task boundary it crosses before it claims
    (in the round's worker thread, which goes on to claim as the cancellation lands)."""

    def __init__(self) -> None:
        self.run: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fired = 0

    def boundary(self, *_: Any) -> None:
        if self.run is not None and self.loop is not None and not self.fired:
            self.fired += 1
            self.loop.call_soon_threadsafe(self.run.cancel)

    def cancel_in_the_second_round(self, engine: Engine) -> None:
        """Run ``engine.run_async(concurrency=1)`` on a loop of its own until this observer
        cancels it, and check that the run ends cancelled."""

        async def cancelled_in_its_second_round() -> None:
            self.loop = asyncio.get_running_loop()
            self.run = asyncio.create_task(engine.run_async(concurrency=1))
            with pytest.raises(asyncio.CancelledError):
                await self.run

        asyncio.run(cancelled_in_its_second_round())


def test_tasks_claimed_as_the_run_is_cancelled_are_handed_back(db: Path, clock: FakeClock) -> None:
    """The run is cancelled while a round claims: the round goes on in its thread and commits
    its claims, which the run had dropped (the tasks stayed claimed by this worker with no
    run under way, for its next runs too, until another host waited out the lease). They
    are handed back, and the next run runs them. (``serve_async`` claims by the same round;
    its rounds also come while no slot is free, which leaves the moment to chance here.)"""
    observer = CancelAtBoundary()
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock, observer=observer) as engine:

        @engine.step()
        async def double(n: int) -> int:
            return 2 * n

        @engine.task()
        async def job(n: int) -> int:
            return await double(n)

        first, second, third = (engine.submit(job, n) for n in (1, 2, 3))

        observer.cancel_in_the_second_round(engine)
        assert observer.fired == 1
        tasks = engine.refresh().tasks.tasks
        assert tasks[first].state == "succeeded"
        assert {tasks[second].state, tasks[third].state} == {"queued"}
        released = [r.stream for r in engine.log.read() if isinstance(r.event, TaskReleased)]
        assert released == [f"task-{second}"]
        run_with(engine, "run_async")
        assert [engine.result(t) for t in (first, second, third)] == [2, 4, 6]
        assert engine.log.verify().ok


def test_the_views_show_tasks_handed_back_as_a_claim_round_was_cancelled(
    db: Path, clock: FakeClock
) -> None:
    """The run is cancelled while a round claims and hands the claimed task back: the
    engine's views show it queued at once (they showed it ``running``, though the log held
    its ``TaskReleased``, until something else caught them up)."""
    observer = CancelAtBoundary()
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock, observer=observer) as engine:

        @engine.task()
        async def job(n: int) -> int:
            return n

        first, second = (engine.submit(job, n) for n in (1, 2))

        observer.cancel_in_the_second_round(engine)
        assert observer.fired == 1
        assert engine.task_view(first).state == "succeeded"
        assert engine.task_view(second).state == "queued"
        assert [t.state for t in engine.tasks() if t.task_id == second] == ["queued"]


def test_the_views_show_tasks_serve_async_handed_back(db: Path, clock: FakeClock) -> None:
    """``serve_async`` cancelled while a task runs hands it back: the engine's views show it
    queued once it returns (they showed it ``running``)."""
    with open_engine(db, clock) as engine:

        @engine.step()
        async def double(n: int) -> int:
            return 2 * n

        started = asyncio.Event()
        go_on = asyncio.Event()

        @engine.task()
        async def job(n: int) -> int:
            started.set()
            await go_on.wait()
            return await double(n)

        task_id = engine.submit(job, 1)

        async def serve_until_it_runs() -> None:
            stop = asyncio.Event()
            serving = asyncio.create_task(
                engine.serve_async(concurrency=1, stop=stop, handle_signals=False)
            )
            await started.wait()
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving

        asyncio.run(serve_until_it_runs())
        released = [r.stream for r in engine.log.read() if isinstance(r.event, TaskReleased)]
        assert released == [f"task-{task_id}"]
        assert engine.task_view(task_id).state == "queued"
        assert [t.state for t in engine.tasks() if t.task_id == task_id] == ["queued"]


def test_a_call_that_records_is_seen_through_a_cancellation() -> None:
    """A task's claim or end, recorded in a worker thread that no thread has taken up yet when
    the run is cancelled: the call still runs (it was dropped, and the task stayed claimed
    with no end), then the cancellation goes on, with what the call returned."""
    ran: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        gate = threading.Event()
        busy = loop.run_in_executor(None, gate.wait)  # the one thread, held
        seeing = asyncio.create_task(_seen_through(lambda: ran.append(1) or "ended"))
        await asyncio.sleep(0)  # it hands its call to the pool: queued behind the held thread
        seeing.cancel()
        await asyncio.sleep(0)  # the cancellation reaches it while its call waits
        assert ran == []
        gate.set()
        await busy
        with pytest.raises(_CancelledAfter) as after:
            await seeing
        assert after.value.outcome == "ended"

    asyncio.run(main())
    assert ran == [1]


@pytest.mark.parametrize("kind", ["async", "plain"])
@pytest.mark.parametrize("runner", ["run_async", "run"])
def test_a_step_that_raises_cancelled_error_itself_has_that_for_its_outcome(
    db: Path, clock: FakeClock, runner: str, kind: str
) -> None:
    """A step's body raises ``asyncio.CancelledError`` while nothing cancels it (a library
    that gave up on its own): that is its outcome, recorded as a failure, and the task's code
    gets it as it came; after the task's durable wait its body does not run again (no outcome
    was recorded, so it did), and the replay raises it again."""
    ran: Counter[str] = Counter()
    with open_engine(db, clock) as engine:
        stream: Any
        if kind == "async":

            @engine.step(name="stream")
            async def async_stream() -> str:
                ran["stream"] += 1
                raise asyncio.CancelledError("the client library gave up")

            stream = async_stream
        else:

            @engine.step(name="stream")
            def plain_stream() -> str:
                ran["stream"] += 1
                raise asyncio.CancelledError("the client library gave up")

            stream = plain_stream

        @engine.task()
        async def job() -> str:
            try:
                got: str = await stream()
            except asyncio.CancelledError as exc:
                got = f"gave up: {exc}"
            await engine.sleep(30)
            return got

        task_id = engine.submit(job)
        run_with(engine, runner)
        assert engine.result(task_id) == "gave up: the client library gave up"
        assert ran == {"stream": 1}
        failed = [r.event for r in engine.log.read_stream(f"task-{task_id}")]
        assert [type(e).__name__ for e in failed].count("StepFailed") == 1
        check = replay_check(engine.log, engine)
        assert check.ok, check.explain()
        assert check.checked == 1


def test_a_task_is_handed_back_only_once_its_plain_steps_body_returned(
    db: Path, clock: FakeClock
) -> None:
    """``run_async`` is cancelled while a plain step's body runs in its thread, which nothing
    can stop: the task is handed back once the body returned (it was at once, and another
    worker took it and ran the same body beside the first)."""
    url = f"sqlite:///{db}"
    started, pause = threading.Event(), threading.Event()
    seen: list[str] = []
    with Engine.open(url, session="agents", clock=clock) as engine:

        @engine.step()
        def build() -> str:
            started.set()
            # Until the task is handed back, or a second passes: what a peer would see.
            deadline = time.monotonic() + 1.0
            with open_log(url) as log:
                while time.monotonic() < deadline:
                    recorded = [type(r.event).__name__ for r in log.read_stream(f"task-{task_id}")]
                    if "TaskReleased" in recorded:
                        seen.append("handed back while the body ran")
                        break
                    pause.wait(0.01)  # never set: a pause between looks
            seen.append("body returned")
            return "built"

        @engine.task()
        async def job() -> str:
            return str(await build())

        task_id = engine.submit(job)

        async def main() -> None:
            running = asyncio.create_task(engine.run_async(concurrency=2))
            await asyncio.to_thread(started.wait)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

        asyncio.run(main())
        assert seen == ["body returned"]
        assert kinds(engine, task_id)[-1] == "TaskReleased"
        run_with(engine, "run_async")
        assert engine.result(task_id) == "built"


def test_plain_steps_of_as_many_tasks_as_run_at_once_run_at_once(
    db: Path, clock: FakeClock
) -> None:
    """``run_async(concurrency=12)``: twelve tasks' plain steps run at once, each waiting for
    all twelve (they shared the loop's default executor with every storage call: a few
    threads, so the others waited, and a slow step held storage calls back)."""
    together = threading.Barrier(12, timeout=30)
    with open_engine(db, clock) as engine:

        @engine.step()
        def build(n: int) -> int:
            together.wait()  # passes only once all twelve bodies run
            return n

        @engine.task()
        async def job(n: int) -> int:
            return int(await build(n))

        ids = [engine.submit(job, n) for n in range(12)]
        summary = run_in_a_thread(lambda: asyncio.run(engine.run_async(concurrency=12)))
        assert summary.succeeded == 12
        assert [engine.result(t) for t in ids] == list(range(12))


def test_a_plain_step_that_returns_as_its_run_is_cancelled_is_recorded_and_not_run_again(
    db: Path, clock: FakeClock
) -> None:
    """``run_async`` is cancelled while a plain step's body runs in its thread: the task is
    handed back once the body has returned, with its result, so the next run does not call
    the body again."""
    calls: Counter[str] = Counter()
    started, go = threading.Event(), threading.Event()
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.step()
        def charge(amount: int) -> str:
            calls["charge"] += 1
            started.set()
            go.wait()
            return f"charged {amount}"

        @engine.task()
        async def order(amount: int) -> str:
            try:
                return await charge(amount)
            except asyncio.CancelledError:
                go.set()  # the run's cancellation reached the step's caller: the body returns
                raise

        task_id = engine.submit(order, 5)

        async def cancel_mid_step() -> None:
            runner = asyncio.create_task(engine.run_async())
            try:
                await asyncio.to_thread(started.wait)
                runner.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await runner
            finally:
                go.set()

        asyncio.run(cancel_mid_step())
        assert kinds(engine, task_id)[-2:] == ["StepCompleted", "TaskReleased"]
        run_with(engine, "run_async")
        assert engine.result(task_id) == "charged 5"
        assert calls == {"charge": 1}
        assert engine.log.verify().ok


@pytest.mark.parametrize("runner", ["run_async", "serve_async"])
def test_a_plain_task_whose_run_is_cancelled_mid_step_hands_its_task_back_after_it(
    db: Path, clock: FakeClock, runner: str
) -> None:
    """A plain task runs in a thread, which a cancellation of ``run_async`` cannot stop: the
    run waits for its step under way, records what it returned and hands the task back at
    the next step. The step's result was lost (nothing recorded, the task left running) and
    its body ran again when the task was taken over; its span never ended."""
    calls: Counter[str] = Counter()
    started, go = threading.Event(), threading.Event()
    ended: list[str] = []

    class Ends(Observer):
        def step_started(self, task: Any, start: StepStart) -> Any:
            return start.step

        def step_ended(self, token: Any, **how: Any) -> None:
            ended.append(f"{token}: {how['decision'] or 'ok'}")

        def task_ended(self, token: Any, outcome: str) -> None:
            ended.append(f"task: {outcome}")

    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock, observer=Ends()) as engine:

        @engine.step()
        def charge(amount: int) -> str:
            calls["charge"] += 1
            started.set()
            assert go.wait(60)
            return f"charged {amount}"

        @engine.step()
        def ship(charged: str) -> str:
            calls["ship"] += 1
            return f"{charged}, shipped"

        @engine.task()
        def order(amount: int) -> str:
            return ship(charge(amount))

        task_id = engine.submit(order, 5)

        async def cancel_mid_step() -> None:
            if runner == "run_async":
                running = asyncio.create_task(engine.run_async())
            else:
                running = asyncio.create_task(engine.serve_async(handle_signals=False))
            try:
                await asyncio.to_thread(started.wait)
                (scheduler,) = engine._runs._runs
                running.cancel()
                # The run tells its plain tasks to hand their tasks back, then the body returns.
                assert await asyncio.to_thread(scheduler.stopping.wait, 60)
                go.set()
                with pytest.raises(asyncio.CancelledError):
                    await running
            finally:
                go.set()

        asyncio.run(cancel_mid_step())
        assert kinds(engine, task_id)[-2:] == ["StepCompleted", "TaskReleased"]
        assert ended == ["charge: ok", "task: released"]
        run_with(engine, "run_async")
        assert engine.result(task_id) == "charged 5, shipped"
        assert calls == {"charge": 1, "ship": 1}
        assert engine.log.verify().ok


def test_cancelling_run_async_again_stops_waiting_for_a_plain_tasks_thread(
    db: Path, clock: FakeClock
) -> None:
    """The first cancellation waits for the plain task's thread to reach its next step; a
    second waits no longer (as a second signal stops a worker at once): ``wait_for`` and task
    groups can bound it."""
    started, go = threading.Event(), threading.Event()
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.task()
        def stuck() -> str:
            started.set()
            assert go.wait(60)  # between steps: no step will come soon
            return "late"

        task_id = engine.submit(stuck)

        async def cancel_twice() -> None:
            running = asyncio.create_task(engine.run_async())
            try:
                await asyncio.to_thread(started.wait)
                (scheduler,) = engine._runs._runs
                running.cancel()
                assert await asyncio.to_thread(scheduler.stopping.wait, 60)
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
                assert not go.is_set()  # it did not wait for the thread
            finally:
                go.set()

        asyncio.run(cancel_twice())
        # The thread, let go after, ends the task as it can (or its lease runs out).
        assert engine.refresh().tasks.views[task_id].state in ("running", "succeeded")


def test_cancelling_run_async_again_stops_waiting_for_an_async_tasks_plain_step(
    db: Path, clock: FakeClock
) -> None:
    """As for a plain task's thread: the first cancellation waits for the plain step's body
    under way to return (to record it with the hand-back); a second waits no longer. It waited
    on through every later cancellation, ``wait_for`` and task groups included, for as long
    as the body ran."""
    started, go = threading.Event(), threading.Event()
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.step()
        def fetch() -> str:
            started.set()
            assert go.wait(60)  # a slow call, still under way
            return "late"

        @engine.task()
        async def job() -> str:
            return await fetch()

        task_id = engine.submit(job)

        async def cancel_twice() -> None:
            running = asyncio.create_task(engine.run_async())
            try:
                await asyncio.to_thread(started.wait)
                (scheduler,) = engine._runs._runs
                running.cancel()
                assert await asyncio.to_thread(scheduler.stopping.wait, 60)
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
                assert not go.is_set()  # it did not wait for the body
            finally:
                go.set()

        asyncio.run(cancel_twice())
        # Nothing handed back: its lease runs out, and a peer runs the step again.
        assert engine.refresh().tasks.views[task_id].state == "running"


def test_a_hand_back_whose_steps_result_is_over_the_payload_limit_still_hands_back(
    db: Path, clock: FakeClock
) -> None:
    """``run_async`` is cancelled while an async task's plain step runs; the step returns what
    is over the log's limit. The hand-back carried that result: its append was refused,
    nothing was recorded or said, and the task stayed running until its lease ran out."""
    started, go = threading.Event(), threading.Event()
    with Engine.open(
        f"sqlite:///{db}", session="agents", clock=clock, payload_limit=100_000
    ) as engine:

        @engine.step()
        def fetch() -> str:
            started.set()
            assert go.wait(60)
            return "y" * 200_000

        @engine.task()
        async def job() -> int:
            try:
                return len(await fetch())
            except asyncio.CancelledError:
                go.set()  # the run's cancellation reached the step's caller: the body returns
                raise

        task_id = engine.submit(job)

        async def cancel_mid_step() -> None:
            running = asyncio.create_task(engine.run_async())
            try:
                await asyncio.to_thread(started.wait)
                running.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await running
            finally:
                go.set()

        asyncio.run(cancel_mid_step())
        assert kinds(engine, task_id)[-1] == "TaskReleased"
        assert engine.refresh().tasks.views[task_id].state == "queued"


def test_a_step_that_returned_as_its_run_was_cancelled_waiting_to_append_is_recorded(
    db: Path, clock: FakeClock
) -> None:
    """A plain step of a TaskGroup returned, and its outcome waits for its turn to append
    (another step of the task appends) when ``run_async`` is cancelled: the task is handed
    back with what it returned, so the next run does not call its body again (nothing was
    recorded: it ran again)."""
    calls: Counter[str] = Counter()
    runners: list[asyncio.Task[Any]] = []
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.step()
        def charge(amount: int) -> str:
            calls["charge"] += 1
            return f"charged {amount}"

        @engine.task()
        async def order(amount: int) -> str:
            calls["order"] += 1
            if calls["order"] > 1:
                return await charge(amount)
            run = CURRENT_RUN.get()
            assert run is not None
            turn = WatchedLock()
            run._appending = turn  # type: ignore[assignment]
            turn.lock.acquire()  # another step of the task appends

            async def cancel_the_run() -> None:
                try:
                    await asyncio.to_thread(turn.waited.wait)  # charge's outcome waits for it
                    runners[0].cancel()
                    await asyncio.Event().wait()
                finally:
                    turn.lock.release()

            async with asyncio.TaskGroup() as group:
                charged = group.create_task(charge(amount))
                group.create_task(cancel_the_run())
            return charged.result()

        task_id = engine.submit(order, 5)

        async def run_until_cancelled() -> None:
            runners.append(asyncio.create_task(engine.run_async()))
            with pytest.raises(asyncio.CancelledError):
                await runners[0]

        asyncio.run(run_until_cancelled())
        assert kinds(engine, task_id)[-2:] == ["StepCompleted", "TaskReleased"]
        run_with(engine, "run_async")
        assert engine.result(task_id) == "charged 5"
        assert calls == {"order": 2, "charge": 1}
        assert engine.log.verify().ok


class HeldCommitter:
    """A run's group committer whose appends wait, once handed to it, until let go."""

    def __init__(self, committer: Committer) -> None:
        self.committer = committer
        self.handed = asyncio.Event()
        self.let_go = asyncio.Event()

    def commit(self, appends: Any) -> Any:
        return self.committer.commit(appends)

    def turns(self) -> Any:
        return self.committer.turns()

    def commit_soon(self, appends: Any) -> asyncio.Future[Any]:
        self.handed.set()
        return asyncio.ensure_future(self._after_let_go(appends))

    async def _after_let_go(self, appends: Any) -> Any:
        await self.let_go.wait()
        return await self.committer.commit_soon(appends)


def test_a_plain_step_abandoned_as_its_run_is_cancelled_is_recorded_after_a_siblings_outcome(
    db: Path, clock: FakeClock
) -> None:
    """``run_async`` is cancelled while a plain step of a TaskGroup runs in its thread and its
    sibling's outcome is being appended: that outcome is recorded after the plain step was
    given up on, yet the task's code went no further, so what the plain step returns is
    recorded with the hand-back (it was not, and its body ran again)."""
    calls: Counter[str] = Counter()
    started, go = threading.Event(), threading.Event()
    runners: list[asyncio.Task[Any]] = []
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.step()
        def charge(amount: int) -> str:
            calls["charge"] += 1
            started.set()
            assert go.wait(60)
            return f"charged {amount}"

        @engine.step()
        async def reserve(amount: int) -> str:
            calls["reserve"] += 1
            return f"reserved {amount}"

        @engine.task()
        async def order(amount: int) -> str:
            calls["order"] += 1
            if calls["order"] > 1:
                return " and ".join(await asyncio.gather(charge(amount), reserve(amount)))
            run = CURRENT_RUN.get()
            assert run is not None
            assert run.committer is not None
            held = HeldCommitter(run.committer)
            run.committer = held  # type: ignore[assignment]

            async def cancel_the_run() -> None:
                try:
                    await asyncio.to_thread(started.wait)
                    await held.handed.wait()  # reserve's outcome is being appended
                    runners[0].cancel()
                    await asyncio.Event().wait()
                finally:
                    held.let_go.set()
                    go.set()

            async with asyncio.TaskGroup() as group:
                charged = group.create_task(charge(amount))
                reserved = group.create_task(reserve(amount))
                group.create_task(cancel_the_run())
            return f"{charged.result()} and {reserved.result()}"

        task_id = engine.submit(order, 5)

        async def run_until_cancelled() -> None:
            runners.append(asyncio.create_task(engine.run_async()))
            try:
                with pytest.raises(asyncio.CancelledError):
                    await runners[0]
            finally:
                go.set()

        asyncio.run(run_until_cancelled())
        assert kinds(engine, task_id)[-3:] == ["StepCompleted", "StepCompleted", "TaskReleased"]
        run_with(engine, "run_async")
        assert engine.result(task_id) == "charged 5 and reserved 5"
        assert calls == {"order": 2, "charge": 1, "reserve": 1}
        assert engine.log.verify().ok


def test_a_plain_step_given_up_on_before_the_task_recorded_more_is_not_recorded_late(
    db: Path, clock: FakeClock
) -> None:
    """A task gives up on a plain step under way, records something else, and its run is then
    cancelled: the step's result, returned meanwhile, is not recorded with the hand-back (the
    task went another way past it); the call runs again when the task does."""
    started, go = threading.Event(), threading.Event()
    runners: list[asyncio.Task[Any]] = []
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.step()
        def charge(amount: int) -> str:
            started.set()
            go.wait()
            return f"charged {amount}"

        @engine.task()
        async def order(amount: int) -> str:
            attempt = asyncio.ensure_future(charge(amount))
            await asyncio.to_thread(started.wait)
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
            go.set()
            await engine.progress(0.5, "went on without the charge")
            runners[0].cancel()
            await asyncio.Event().wait()
            return "never"

        task_id = engine.submit(order, 5)

        async def run_until_cancelled() -> None:
            runners.append(asyncio.create_task(engine.run_async()))
            try:
                with pytest.raises(asyncio.CancelledError):
                    await runners[0]
            finally:
                go.set()

        asyncio.run(run_until_cancelled())
        events = kinds(engine, task_id)
        assert events[-2:] == ["TaskProgressed", "TaskReleased"]
        assert "StepCompleted" not in events
        assert engine.log.verify().ok


@pytest.mark.parametrize("kind", ["async", "plain"])
def test_a_step_under_way_when_its_task_is_cancelled_is_recorded_and_replayed_on_retry(
    db: Path, kind: str
) -> None:
    """Cancelled from another process while a step runs, an ``async def`` task stops at its
    next step: the step under way is seen to its end and recorded after the cancellation, so
    a retry replays it instead of running its body again."""
    url = f"sqlite:///{db}"
    calls: Counter[int] = Counter()
    started = threading.Event()

    def body(i: int) -> int:
        calls[i] += 1
        if i == 1 and calls[i] == 1:
            started.set()
            with Engine.open(url, session="agents") as other:  # as another process would
                other.cancel(task_id, reason="enough")
        return i * 10

    with Engine.open(url, session="agents") as engine:
        if kind == "async":

            @engine.step(name="work")
            async def work(i: int) -> int:
                return body(i)

        else:

            @engine.step(name="work")
            def work(i: int) -> int:  # type: ignore[misc]
                return body(i)

        @engine.task()
        async def job(n: int) -> int:
            return sum([await work(i) for i in range(n)])

        task_id = engine.submit(job, 4)
        summary = asyncio.run(engine.run_async(concurrency=4))
        assert started.is_set()
        assert summary.cancelled == 1
        assert kinds(engine, task_id)[-2:] == ["TaskCancelled", "StepCompleted"]
        assert dict(calls) == {0: 1, 1: 1}
        engine.retry(task_id, by="test")
        asyncio.run(engine.run_async(concurrency=4))
        assert engine.result(task_id) == 60
        assert dict(calls) == {0: 1, 1: 1, 2: 1, 3: 1}
        assert replay_check(url, engine).ok
    with open_log(url) as log:
        assert log.verify().ok


def test_a_large_step_result_is_stored_off_the_event_loop(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing a result redacts every text in it (a few MB a second for text made of token
    characters): a large one is stored in a worker thread, a small one in place."""
    from onward.runtime.run import TaskRun

    threads: dict[int, bool] = {}
    store = TaskRun.stored_result

    def noted(self: TaskRun, step: Any, index: int, result: Any) -> Any:
        threads[index] = threading.current_thread() is threading.main_thread()
        return store(self, step, index, result)

    monkeypatch.setattr(TaskRun, "stored_result", noted)
    with Engine.open(f"sqlite:///{db}", session="agents") as engine:

        @engine.step(name="read")
        async def read(size: int) -> str:
            return "aB3x" * (size // 4)

        @engine.task()
        async def job() -> list[int]:
            return [len(await read(16)), len(await read(400_000))]

        task_id = engine.submit(job)
        asyncio.run(engine.run_async())
        assert engine.result(task_id) == [16, 400_000]
    assert threads == {0: True, 1: False}


@pytest.mark.parametrize(
    ("value", "weighty"),
    [
        (1, False),
        ("x" * 100, False),
        ({"a": [1, 2.5, None, "b"]}, False),
        ("x" * 70_000, True),
        ([b"y" * 40_000, "z" * 40_000], True),
        (list(range(300)), True),
        ({"k": Path("/tmp")}, True),
    ],
)
def test_what_counts_as_weighty_to_store(value: Any, weighty: bool) -> None:
    from onward.runtime.run import _weighty

    assert _weighty(value) is weighty


def test_every_step_under_way_when_its_task_is_cancelled_is_recorded(db: Path) -> None:
    """Two steps gathered, the task cancelled while both run: each is recorded after the
    cancellation as it ends (the second was dropped: its body ran again on the retry)."""
    url = f"sqlite:///{db}"
    calls: Counter[str] = Counter()
    cancelled = asyncio.Event()

    def cancel() -> None:
        with Engine.open(url, session="agents") as other:  # as another process would
            other.cancel(task_id, reason="enough")

    with Engine.open(url, session="agents") as engine:

        @engine.step(name="a")
        async def a() -> str:
            calls["a"] += 1
            await cancelled.wait()
            return "A"

        @engine.step(name="b")
        async def b() -> str:
            calls["b"] += 1
            if calls["b"] == 1:
                await asyncio.to_thread(cancel)
                cancelled.set()
                await asyncio.sleep(0)  # a ends first: its success goes to the log first
            return "B"

        @engine.task(name="job")
        async def job() -> list[str]:
            return list(await asyncio.gather(a(), b()))

        task_id = engine.submit(job)
        asyncio.run(engine.run_async())
        assert kinds(engine, task_id)[-3:] == ["TaskCancelled", "StepCompleted", "StepCompleted"]
        engine.retry(task_id, by="test")
        cancelled = asyncio.Event()
        asyncio.run(engine.run_async())
        assert engine.result(task_id) == ["A", "B"]
        assert dict(calls) == {"a": 1, "b": 1}


def _awaited_run(serving: asyncio.Task[Any]) -> asyncio.Task[Any]:
    """The run a stopping ``serve_async`` is waiting for (its loop over the runs left)."""
    coro: Any = serving.get_coro()
    while coro.cr_frame.f_code.co_qualname != "Scheduler.serve_async":
        coro = coro.cr_await
    run: asyncio.Task[Any] = coro.cr_frame.f_locals["task"]
    return run


def test_cancelling_serve_async_once_hands_back_every_task_after_its_plain_step(
    db: Path, clock: FakeClock
) -> None:
    """One cancellation of ``serve_async`` waits for each async def task's plain step under
    way, then hands its task back. The first run to end so was taken for a second
    cancellation: the runs still waiting for their bodies were cancelled again, and their
    tasks were left running, to their leases."""
    started = {name: threading.Event() for name in ("a", "b")}
    go = {name: threading.Event() for name in ("a", "b")}
    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock) as engine:

        @engine.step()
        def fetch(name: str) -> str:
            started[name].set()
            assert go[name].wait(60)  # a slow call, still under way
            return name

        @engine.task()
        async def job(name: str) -> str:
            return await fetch(name)

        ids = {name: engine.submit(job, name) for name in ("a", "b")}

        async def cancel_once() -> None:
            running = asyncio.create_task(engine.serve_async(concurrency=2, handle_signals=False))
            try:
                for name in ("a", "b"):
                    await asyncio.to_thread(started[name].wait)
                (scheduler,) = engine._runs._runs
                running.cancel()
                assert await asyncio.to_thread(scheduler.stopping.wait, 60)
                first = _awaited_run(running)
                name = first.get_coro().cr_frame.f_locals["view"].task_id
                (first_name,) = (n for n, task_id in ids.items() if task_id == name)
                go[first_name].set()
                await asyncio.wait([first])
                for event in go.values():
                    event.set()
                with pytest.raises(asyncio.CancelledError):
                    await running
            finally:
                for event in go.values():
                    event.set()

        asyncio.run(cancel_once())
        for task_id in ids.values():
            assert kinds(engine, task_id)[-2:] == ["StepCompleted", "TaskReleased"]
        run_with(engine, "run_async")
        assert {engine.result(task_id) for task_id in ids.values()} == {"a", "b"}


def test_a_large_task_result_is_stored_off_the_event_loop(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``async def`` task's end is recorded from its event loop: a large result is stored
    (redacted, a few MB a second) in a worker thread there, as a step's is; a small one in
    place."""
    from onward.runtime import scheduler

    threads: dict[int, bool] = {}
    store = scheduler.encode_value

    def noted(value: Any, **kwargs: Any) -> Any:
        threads[len(value)] = threading.current_thread() is threading.main_thread()
        return store(value, **kwargs)

    monkeypatch.setattr(scheduler, "encode_value", noted)
    with Engine.open(f"sqlite:///{db}", session="agents") as engine:

        @engine.task()
        async def job(size: int) -> str:
            return "aB3x" * (size // 4)

        small, large = engine.submit(job, 16), engine.submit(job, 400_000)
        asyncio.run(engine.run_async())
        assert len(engine.result(small)) == 16
        assert len(engine.result(large)) == 400_000
    assert threads == {16: True, 400_000: False}


@pytest.mark.parametrize("futures", ["threads", "event loop"])
def test_runs_that_end_together_are_all_counted_when_one_of_them_raises(
    db: Path, clock: FakeClock, futures: str
) -> None:
    """``run(workers=N)`` and ``run_async`` count the runs that ended in one wake, then raise.
    They raised at the first run whose storage failed (or that was interrupted): the runs that
    ended beside it were neither tallied nor told to the observer (``task_ended``)."""
    ended: list[str] = []

    class Ends(Observer):
        def task_ended(self, token: Any, outcome: str) -> None:
            ended.append(outcome)

    with Engine.open(f"sqlite:///{db}", session="agents", clock=clock, observer=Ends()) as engine:

        @engine.task()
        def job(n: int) -> int:
            return n

        for n in range(2):
            engine.submit(job, n)
        scheduler = engine._scheduler()
        assert scheduler._prepare()
        outcomes = []
        for _ in range(2):
            claimed = scheduler._claim_next()
            assert claimed is not None
            outcomes.append(scheduler._execute(*claimed))
        assert [kind for kind, _run in outcomes] == ["succeeded", "succeeded"]

        if futures == "threads":
            failed: Future[Outcome] = Future()
            failed.set_exception(StorageUnavailable("the log is down"))
            done = [failed]
            for outcome in outcomes:
                good: Future[Outcome] = Future()
                good.set_result(outcome)
                done.append(good)
            with pytest.raises(StorageUnavailable, match="the log is down"):
                scheduler._count_ended(done)
        else:

            async def end_together() -> None:
                loop = asyncio.get_running_loop()
                interrupted: asyncio.Future[Outcome] = loop.create_future()
                interrupted.cancel()
                done = [interrupted]
                for outcome in outcomes:
                    good = loop.create_future()
                    good.set_result(outcome)
                    done.append(good)
                with pytest.raises(asyncio.CancelledError):
                    scheduler._count_ended(done)

            asyncio.run(end_together())
        assert ended == ["succeeded", "succeeded"]
        assert scheduler._tally["succeeded"] == 2
