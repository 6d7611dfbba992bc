"""The error budget and the flow monitor at the engine's task boundaries, on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, ErrorBudget, Interruption, Observer
from onward.events import FlowState, Jitter, Recorded, SessionPaused
from onward.healing.retry import RetryPolicies, RetryPolicy
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(db, session="rhythm", clock=clock, sleep=clock.advance, seed=5, **options)


def session_events(engine: Engine, kind: str) -> list[Recorded]:
    return [r for r in engine.log.read_stream("session-rhythm") if type(r.event).__name__ == kind]


def budget_decisions(engine: Engine) -> list[Any]:
    return [
        r.event
        for r in session_events(engine, "DecisionMade")
        if r.event.kind == "budget"  # type: ignore[union-attr]
    ]


RETRIES = RetryPolicies(RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE))


def register(engine: Engine) -> Any:
    """A task whose step fails the same way every time (retries never help); the task."""

    @engine.step()
    def call_service() -> None:
        raise TimeoutError("the service did not answer")

    @engine.task()
    def job(n: int) -> None:
        call_service()

    return job


def test_a_systemic_error_spends_the_budget_and_pauses_the_session(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock, budget=ErrorBudget(limit=3), retries=RETRIES) as engine:

        @engine.step()
        def call_service() -> None:
            raise TimeoutError("the service did not answer")  # every time: retries never help

        @engine.task()
        def job(n: int) -> None:
            call_service()

        for n in range(5):
            engine.submit(job, n)
        summary = engine.run()
        assert summary.paused
        decision = budget_decisions(engine)[-1]
        assert decision.choice == "pause"
        assert decision.rule == "budget.systemic"
        assert decision.inputs["systemic"]
        paused = session_events(engine, "SessionPaused")
        assert len(paused) == 1
        assert engine.run().paused  # a paused session starts nothing
        ended_before = sum(t.terminal for t in engine.tasks())
        assert ended_before < 5

        assert engine.resume() is True
        assert engine.resume() is False  # not paused any more
        engine.run()
        assert sum(t.terminal for t in engine.tasks()) > ended_before  # a fresh window


def test_a_budget_pause_holds_when_the_session_is_reopened_until_a_person_resumes_it(
    db: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pause is lifted by a person only: a worker that starts (or a process that opens the
    session to submit) does not undo it; ``onward resume SESSION`` does."""
    from onward.cli.main import main

    with open_engine(db, clock, budget=ErrorBudget(limit=3), retries=RETRIES) as engine:
        job = register(engine)
        for n in range(5):
            engine.submit(job, n)
        assert engine.run().paused
        paused_at = len(engine.log.read_stream("session-rhythm"))
    with open_engine(db, clock, budget=ErrorBudget(limit=3), retries=RETRIES) as reopened:
        register(reopened)
        assert len(reopened.log.read_stream("session-rhythm")) == paused_at  # nothing said
        assert reopened.refresh().sessions.sessions["rhythm"].state == "paused"
        assert reopened.run().paused  # it starts nothing

        assert main(["resume", "rhythm", "--db", db, "--reason", "the service is back"]) == 0
        assert "resumed: session rhythm" in capsys.readouterr().out
        (resumed,) = session_events(reopened, "SessionResumed")[-1:]
        assert resumed.event.reason == "the service is back"  # type: ignore[union-attr]
        assert main(["resume", "rhythm", "--db", db]) == 0
        assert "is not paused (active)" in capsys.readouterr().out
        assert main(["resume", "nightly", "--db", db]) == 2
        assert "no session 'nightly'" in capsys.readouterr().err
        assert reopened.run().runs > 0  # it works again (and, the service still down, pauses)


def test_peers_judging_the_budget_apart_never_record_under_a_pause(
    db: str, clock: FakeClock
) -> None:
    """Two workers, one whose window the errors have left (a shorter window, a clock ahead):
    under the pause it recorded "continue"; the other then judged "pause" anew and appended a
    second SessionPaused, refused: the worker died. And a resume after that "continue" kept
    the errors from before it."""

    short = open_engine(db, clock, budget=ErrorBudget(limit=3, window=20.0), retries=RETRIES)
    long = open_engine(db, clock, budget=ErrorBudget(limit=3, window=600.0), retries=RETRIES)
    with short, long:
        job = register(short)
        register(long)
        for n in range(5):
            short.submit(job, n)
        assert short.run().paused
        decided = len(budget_decisions(short))
        clock.advance(60.0)  # the errors leave the short window, not the long one
        for engine in (short, long, short):
            with engine._session.lock:
                engine.refresh()
                assert engine.boundary.judge_budget().choice == "pause"
        assert len(budget_decisions(short)) == decided  # nothing judged under the pause
        assert len(session_events(short, "SessionPaused")) == 1
        assert short.resume() is True
        assert short.refresh().budget.window("rhythm", clock(), 600.0).errors == 0  # fresh


def test_transient_noise_never_pauses_the_session(db: str, clock: FakeClock) -> None:
    hiccups: set[int] = set()
    with open_engine(db, clock, budget=ErrorBudget(limit=2), retries=RETRIES) as engine:

        @engine.step()
        def flaky(n: int) -> int:
            if n not in hiccups:  # each task's first call hiccups; its retry goes through
                hiccups.add(n)
                raise TimeoutError("a hiccup")
            return n

        @engine.task()
        def job(n: int) -> int:
            return flaky(n)

        ids = [engine.submit(job, n) for n in range(8)]
        summary = engine.run()
        assert not summary.paused
        assert summary.succeeded == 8
        assert [engine.result(t) for t in ids] == list(range(8))
        decisions = budget_decisions(engine)
        assert decisions  # the budget was spent: what it chose is recorded
        assert {d.choice for d in decisions} <= {"continue", "slow_down"}
        assert decisions[-1].rule == "budget.transient-noise"


def test_a_flowing_session_defers_low_impact_interruptions_to_the_next_boundary(
    db: str, clock: FakeClock
) -> None:
    heard: list[Interruption] = []
    with open_engine(db, clock, on_interruption=heard.append) as engine:

        @engine.step()
        def work(i: int) -> int:
            clock.advance(1.0)
            return i

        @engine.task()
        def batch(n: int) -> int:
            if n == 4:
                engine.notify("halfway through the batches")
            return sum(work(i) for i in range(n))

        for n in (12, 3, 4):  # idle -> warming after the first, flowing after the second
            engine.submit(batch, n)
        engine.run()
        states = [r.event.state for r in session_events(engine, "FlowStateChanged")]  # type: ignore[union-attr]
        assert states[:2] == [FlowState.WARMING, FlowState.FLOWING]
        deferred = engine.log.read()
        kinds = [type(r.event).__name__ for r in deferred]
        assert kinds.index("InterruptionDeferred") < kinds.index("InterruptionDelivered")
        (notice,) = heard
        assert notice.summary == "halfway through the batches"
        assert notice.deferred_for == pytest.approx(4.0)  # held while the task's 4 steps ran


@pytest.mark.parametrize("flowing", [False, True], ids=["at-once", "deferred"])
@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_notice_from_a_tasks_code_is_given_once_whatever_runs_the_task_again(
    db: str, clock: FakeClock, kind: str, flowing: bool
) -> None:
    """The task notifies in its body and in a step's, then a later step fails: retried after
    a delay (the task runs again), then for good, and the task is retried by hand (it runs
    again). Each notice is recorded once and given once, with the same id on every run."""
    heard: list[Interruption] = []
    ids: list[str] = []
    calls: list[int] = []
    with open_engine(db, clock, on_interruption=heard.append, retries=RETRIES) as engine:

        @engine.step()
        def work(i: int) -> int:
            clock.advance(1.0)
            return i

        @engine.step(name="announce")
        def announce() -> int:
            engine.notify("the step began")
            return 1

        @engine.step()
        def flaky() -> int:
            calls.append(1)
            if len(calls) <= 3:  # three tries fail: the task fails; its retry succeeds
                raise TimeoutError("a hiccup")
            return 1

        @engine.task()
        def batch(n: int) -> int:
            return sum(work(i) for i in range(n))

        if kind == "plain":

            @engine.task(name="told")
            def told_plain() -> int:
                ids.append(engine.notify("the task began"))
                return announce() + flaky()

        else:

            @engine.task(name="told")
            async def told_async() -> int:
                ids.append(await engine.notify("the task began"))
                return await announce() + await flaky()

        if flowing:  # idle -> warming after the first, flowing after the second
            for n in (12, 3):
                engine.submit(batch, n)
            engine.run()
        task_id = engine.submit("told")
        engine.run()
        assert engine.task_view(task_id).state == "failed"
        engine.retry(task_id)
        engine.run()
        assert engine.result(task_id) == 2
        assert len(calls) == 4
        assert sorted(i.summary for i in heard) == ["the step began", "the task began"]
        assert len(ids) > 2  # the task's code ran three times (at least)
        assert len(set(ids)) == 1  # the same notice on each run
        given = [
            r.event.interruption_id  # type: ignore[union-attr]
            for r in engine.log.read()
            if type(r.event).__name__
            == ("InterruptionDeferred" if flowing else "InterruptionDelivered")
        ]
        assert len(given) == 2
        assert ids[0] in given


def test_notices_of_gathered_coroutines_keep_their_ids_whatever_order_a_rerun_meets_them(
    db: str, clock: FakeClock
) -> None:
    """Two gathered coroutines each notify once their step ends; a third one's step fails and
    its retry makes the task wait. Live, the second coroutine's step ends first, and the wait
    is recorded before the first one notifies; the re-run replays both steps at once, and the
    first coroutine comes first: each still gives its own notice, once."""
    heard: list[str] = []
    b_told = threading.Event()
    tries: list[int] = []

    def told(notice: Interruption) -> None:
        heard.append(notice.summary)
        if notice.summary == "b done":
            b_told.set()

    with open_engine(db, clock, on_interruption=told, retries=RETRIES) as engine:

        @engine.step()
        def slow() -> int:
            assert b_told.wait(timeout=30)  # ends once "b done" was given
            return 1

        @engine.step()
        def fast() -> int:
            return 2

        @engine.step()
        def flaky() -> int:
            tries.append(1)
            if len(tries) == 1:
                raise TimeoutError("no answer")  # its retry is due later: the task waits
            return 3

        @engine.task(name="job")
        async def job() -> int:
            async def a() -> int:
                found = await slow()
                await engine.notify("a done", urgent=True)
                return found

            async def b() -> int:
                found = await fast()
                await engine.notify("b done", urgent=True)
                return found

            return sum(await asyncio.gather(a(), b(), flaky()))

        task_id = engine.submit("job")
        engine.run()
        assert engine.result(task_id) == 6
        assert len(tries) == 2  # the task ran again
        assert sorted(heard) == ["a done", "b done"]
        given = [
            r.event.interruption_id  # type: ignore[union-attr]
            for r in engine.log.read_stream(f"task-{task_id}")
            if type(r.event).__name__ == "InterruptionDelivered"
        ]
        assert len(set(given)) == 2


def test_a_notice_from_a_steps_body_is_given_once_across_its_tries(
    db: str, clock: FakeClock
) -> None:
    """A step's body notifies, then fails; its retry notifies again and succeeds: the notice
    is the step's, given once (as the step's messages and subtasks are made once)."""
    heard: list[str] = []
    tries: list[int] = []
    with open_engine(
        db, clock, on_interruption=lambda n: heard.append(n.summary), retries=RETRIES
    ) as engine:

        @engine.step()
        def announce() -> int:
            tries.append(1)
            engine.notify("the rebuild began", urgent=True)
            if len(tries) == 1:
                raise TimeoutError("no answer")
            return 1

        @engine.task(name="job")
        def job() -> int:
            return announce()

        task_id = engine.submit("job")
        engine.run()
        assert engine.result(task_id) == 1
        assert len(tries) == 2
        assert heard == ["the rebuild began"]


def test_an_urgent_notice_is_delivered_at_once(db: str, clock: FakeClock) -> None:
    heard: list[Interruption] = []
    with open_engine(db, clock, on_interruption=heard.append) as engine:
        engine.notify("disk almost full", urgent=True)
        assert [n.summary for n in heard] == ["disk almost full"]
        assert heard[0].deferred_for == 0.0


def test_live_folding_equals_replay_for_the_budget_and_the_flow(db: str, clock: FakeClock) -> None:
    from onward.projections import CatchUp

    calls: list[int] = []
    with open_engine(db, clock, budget=ErrorBudget(limit=2), retries=RETRIES) as engine:

        @engine.step()
        def flaky(i: int) -> int:
            calls.append(i)
            clock.advance(0.5)
            if len(calls) % 3 == 0:
                raise TimeoutError("a hiccup")
            return i

        @engine.task()
        def job(n: int) -> int:
            return sum(flaky(i) for i in range(n))

        for n in range(1, 9):
            engine.submit(job, n)
        engine.run()
        live = engine.refresh().snapshot()
        replay = CatchUp(engine.log, checkpoint_every=0)
        replayed = replay.open(use_checkpoint=False).snapshot()
        assert live["budget"] == replayed["budget"]
        assert live["flow"] == replayed["flow"]
        assert live["budget"]["rhythm"]["cured"]  # retries cured the hiccups: noise
        assert live == replayed


def test_a_low_impact_approval_is_held_while_flowing_then_delivered(
    db: str, clock: FakeClock
) -> None:
    from onward.judgement.approvals import pending
    from onward.projections import CatchUp

    heard: list[Interruption] = []
    with open_engine(db, clock, on_interruption=heard.append) as engine:

        @engine.step()
        def work(i: int) -> int:
            clock.advance(1.0)
            return i

        @engine.action(impact="low")
        def tidy() -> str:
            return "tidied"

        @engine.task()
        def batch(n: int) -> int:
            return sum(work(i) for i in range(n))

        @engine.task()
        def cleanup() -> str:
            return tidy()

        for n in (12, 3):  # idle -> warming -> flowing
            engine.submit(batch, n)
        engine.submit(cleanup)
        engine.run()
        (request,) = engine.approvals()
        assert not request.deferred  # delivered at the boundary after its task waited
        assert [(i.kind, i.interruption_id) for i in heard] == [("approval", request.decision_id)]
        held = next(
            r.position
            for r in engine.log.read()
            if type(r.event).__name__ == "InterruptionDeferred"
        )
        then = CatchUp(engine.log, checkpoint_every=0, upto=held)
        then.open(use_checkpoint=False)
        (asked,) = pending(then)
        assert asked.decision_id == request.decision_id
        assert asked.deferred  # held back while the session flowed


ONE_TRY = RetryPolicies(RetryPolicy(max_attempts=1))


class HeldClock(FakeClock):
    """A fake clock whose sleep of ``hold`` seconds (the budget's slow-down) holds until the
    test lets it go; the engine's other sleeps move it at once."""

    def __init__(self, hold: float) -> None:
        super().__init__()
        self.hold = hold
        self.held = threading.Event()
        self.let_go = threading.Event()
        self.slept_for: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept_for.append(seconds)
        if seconds == self.hold:
            self.held.set()
            self.let_go.wait(timeout=60)
        self.advance(seconds)


def test_a_slow_down_between_tasks_holds_no_other_thread_of_the_worker_back(db: str) -> None:
    clock = HeldClock(hold=7.0)
    budget = ErrorBudget(limit=2, slow_down=7.0)
    with Engine.open(
        db, session="rhythm", clock=clock, sleep=clock.sleep, budget=budget, retries=ONE_TRY
    ) as engine:

        @engine.step()
        def call_service() -> None:
            clock.advance(1.0)  # the errors come faster and faster: the burn rate rises
            raise ValueError("the service refused")

        @engine.task()
        def job(n: int) -> None:
            call_service()

        for n in range(4):
            engine.submit(job, n)
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)
        runner.start()
        try:
            assert clock.held.wait(timeout=60)  # three failures: the run slows down
            submitted: list[str] = []
            done = threading.Event()

            def submit() -> None:
                submitted.append(engine.submit(job, 99))
                engine.cancel(submitted[0], reason="not needed after all")
                done.set()

            threading.Thread(target=submit, daemon=True).start()
            # Another thread of the worker goes on while the run waits.
            assert done.wait(timeout=10), "a submission waited out the run's slow-down"
            assert not clock.let_go.is_set()
        finally:
            clock.let_go.set()
            runner.join(timeout=60)
        (summary,) = summaries
        assert summary.failed == 4
        assert engine.task_view(submitted[0]).state == "cancelled"
        assert "slow_down" in [d.choice for d in budget_decisions(engine)]
        assert clock.slept_for == [7.0]  # the slow-down still paced the tasks


@contextlib.contextmanager
def _handing_over_at_a_boundary(
    db: str, clock: FakeClock
) -> Iterator[tuple[Engine, Any, Callable[[], Any]]]:
    """An engine whose run (in a thread) hands a deferred notice to ``on_interruption`` at a
    task boundary, and is held there until let go.

    Yields:
        The engine; its ``batch`` task (``batch(n)``: n one-second steps); and what lets the
        run go on and returns its summary once it ended.
    """
    handed = threading.Event()
    let_go = threading.Event()

    def on_interruption(notice: Interruption) -> None:
        handed.set()
        let_go.wait(timeout=60)

    with open_engine(db, clock, on_interruption=on_interruption) as engine:

        @engine.step()
        def work(i: int) -> int:
            clock.advance(1.0)
            return i

        @engine.task()
        def batch(n: int) -> int:
            if n == 4:
                engine.notify("halfway through the batches")
            return sum(work(i) for i in range(n))

        for n in (12, 3, 4):  # flowing by the third: its notice waits for the boundary
            engine.submit(batch, n)
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)

        def finish() -> Any:
            let_go.set()
            runner.join(timeout=60)
            (summary,) = summaries
            return summary

        runner.start()
        try:
            assert handed.wait(timeout=60)
            yield engine, batch, finish
        finally:
            let_go.set()
            runner.join(timeout=60)


def test_an_interruption_handed_over_at_a_boundary_holds_no_other_thread_back(
    db: str, clock: FakeClock
) -> None:
    """``on_interruption`` (a message sent to people: I/O) was called at the task boundary
    with the session's lock held: the worker's other threads waited for it."""
    with _handing_over_at_a_boundary(db, clock) as (engine, batch, finish):
        done = threading.Event()
        spare = engine.submit(batch, 1)
        threading.Thread(
            target=lambda: (engine.cancel(spare, reason="not needed"), done.set()), daemon=True
        ).start()
        assert done.wait(timeout=10), "a cancel waited for on_interruption"
        assert finish().succeeded == 3
        assert engine.task_view(spare).state == "cancelled"
        kinds = [type(r.event).__name__ for r in engine.log.read()]
        assert kinds.count("InterruptionDelivered") == 1


def test_a_task_submitted_while_an_interruption_is_handed_over_is_run(
    db: str, clock: FakeClock
) -> None:
    """A task submitted (from another thread) while ``on_interruption`` was called at the
    last task's boundary was not seen: the run looked for work on the log as it was before
    the hand-over, found none, and ended with the task queued."""
    with _handing_over_at_a_boundary(db, clock) as (engine, batch, finish):
        late = engine.submit(batch, 1)
        assert finish().succeeded == 4, "the run ended with the task submitted queued"
        assert engine.result(late) == 0


def test_a_run_that_stops_at_a_pause_shows_the_tasks_that_ended_after_it(
    db: str, clock: FakeClock
) -> None:
    """A run of several tasks at once that meets a pause lets the tasks under way end; read
    right after it returns, their views show how they ended, not ``running``."""
    gate = threading.Event()

    class SeesThePause(Observer):
        def boundary(self, session: str, projections: Any, budget: Any, now: float) -> None:
            view = projections.sessions.sessions.get(session)
            if view is not None and view.state == "paused":
                gate.set()  # the run stops claiming: the task under way may end now

    with open_engine(db, clock, observer=SeesThePause()) as engine:

        @engine.step(name="slow_step")
        def slow_step() -> int:
            assert gate.wait(60)
            return 1

        @engine.task(name="slow")
        def slow() -> int:
            return slow_step()

        @engine.step(name="pause_it")
        def pause_it() -> None:  # as a peer's error budget would
            engine.log.append(
                "session-rhythm", [SessionPaused(reason="a peer's budget")], expected_version=None
            )

        @engine.task(name="quick")
        def quick() -> None:
            pause_it()

        slow_id = engine.submit(slow)
        engine.submit(quick)
        assert engine.run(workers=2).paused
        # As the views have it, without a catch-up; the log says the same (tasks() reads it).
        assert engine.task_view(slow_id).state == "succeeded"
        assert [t.state for t in engine.tasks()] == ["succeeded", "succeeded"]
