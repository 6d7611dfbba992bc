"""A paused session (by the error budget, here or in another process) starts nothing more: no
task, however its run learns of the pause, and no schedule's tick; the tasks under way end
as they would, and their runs are counted and told to the observer. On the real engine and a
real SQLite file."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, Observer
from onward.events import SessionPaused
from onward.projections.session import session_stream
from tests.conftest import FakeClock

#: A whole hour.
HOUR = 1_700_000_000.0 - 1_700_000_000.0 % 3600


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def pause(db: str, clock: FakeClock | None = None) -> None:
    """Pause the session from another engine, as a peer's error budget does."""
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    with Engine.open(db, session="s", healing=False, **options) as peer:
        view = peer.refresh().sessions.sessions["s"]
        peer.log.append(
            session_stream("s"),
            [SessionPaused(reason="error budget: a peer's")],
            expected_version=view.version,
        )


def test_a_run_waiting_for_a_timer_starts_nothing_once_the_session_is_paused(db: str) -> None:
    clock = FakeClock(HOUR)
    ran: list[int] = []
    paused: list[bool] = []

    def sleep(seconds: float) -> None:
        if not paused:  # while the run waits for the task's timer, a peer pauses the session
            pause(db, clock)
            paused.append(True)
        clock.advance(seconds)

    with Engine.open(db, session="s", clock=clock, sleep=sleep, healing=False) as engine:

        @engine.step(name="act")
        def act(x: int) -> int:
            ran.append(x)
            return x

        @engine.task(name="job")
        def job(x: int) -> int:
            engine.sleep(60.0)
            return act(x)

        task_id = engine.submit(job, 1)
        assert engine.run(max_runs=1).runs == 1  # it waits for its timer now
        summary = engine.run()
        assert paused
        assert summary.paused
        assert (summary.runs, summary.succeeded, ran) == (0, 0, [])
        view = engine.refresh().tasks.view(task_id)
        assert view is not None
        assert view.state == "waiting"
        engine.resume("the test")
        assert engine.run().succeeded == 1
        assert ran == [1]


class Ends(Observer):
    """Counts the task runs the observer is told of."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[tuple[str, str]] = []
        self.first_ended = threading.Event()

    def task_started(self, start: Any) -> str:
        self.started.append(start.task_id)
        return str(start.task_id)

    def task_ended(self, token: Any, outcome: str) -> None:
        self.ended.append((token, outcome))
        self.first_ended.set()


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_pause_lets_the_tasks_under_way_end_and_counts_them(db: str, path: str) -> None:
    """The pause comes from one task's step while another's runs: that one ends as it would
    (an ``async def`` step is not cancelled half-way), and is counted and told."""
    ends = Ends()
    bodies: list[str] = []
    with Engine.open(db, session="s", healing=False, observer=ends) as engine:

        @engine.step(name="pausing")
        def pausing() -> int:
            pause(db)
            return 1

        @engine.task(name="a")
        def a() -> int:
            return pausing()

        if path == "sync":

            @engine.step(name="long")
            def long() -> int:
                bodies.append("began")
                ends.first_ended.wait(60)
                bodies.append("ended")
                return 2

            @engine.task(name="b")
            def b() -> int:
                return long()

        else:

            @engine.step(name="long")
            async def long_async() -> int:
                bodies.append("began")
                await asyncio.to_thread(ends.first_ended.wait, 60)
                bodies.append("ended")
                return 2

            @engine.task(name="b")
            async def b_async() -> int:
                return await long_async()

        engine.submit("b")
        engine.submit(a)
        if path == "sync":
            summary = engine.run(workers=2)
        else:
            summary = asyncio.run(engine.run_async(concurrency=2))
        assert summary.paused
        assert (summary.runs, summary.succeeded) == (2, 2)
        assert bodies == ["began", "ended"]
        assert sorted(outcome for _, outcome in ends.ended) == ["succeeded", "succeeded"]
        assert sorted(ends.started) == sorted(token for token, _ in ends.ended)


def test_no_schedule_fires_while_the_session_is_paused(db: str) -> None:
    """Ticks due during a pause run once when it is lifted, as ticks found due together do
    (each look of a paused worker queued a run of the task)."""
    clock = FakeClock(HOUR)
    ran: list[float] = []
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance, healing=False) as engine:

        @engine.task(name="tick")
        def tick() -> None:
            ran.append(clock())

        engine.schedule("tick", cron="* * * * *")
        pause(db, clock)
        serving = engine._scheduler()  # a serving worker's looks, each a minute apart
        for _ in range(5):
            clock.advance(60.0)
            assert serving._boundary(room=True) == (True, 0.0)  # paused, no slow-down
        assert not [v for v in engine.refresh().tasks.views.values() if v.name == "tick"]
        engine.resume("the test")
        summary = engine.run()
        assert (summary.scheduled, summary.succeeded, ran) == (1, 1, [HOUR + 300.0])


def test_a_paused_serving_worker_still_crosses_its_boundaries(db: str) -> None:
    """While paused it starts nothing, but the flow moves on and deferred interruptions are
    delivered (they may be how a person learns of what needs them)."""
    from onward.events import FlowStateChanged

    clock = FakeClock(HOUR)
    got: list[Any] = []
    with Engine.open(
        db, session="s", clock=clock, sleep=clock.advance, healing=False, on_interruption=got.append
    ) as engine:

        @engine.task(name="job")
        def job() -> int:
            return 1

        engine.submit(job)
        assert engine.run().succeeded == 1
        pause(db, clock)
        with Engine.open(db, session="s", clock=clock, healing=False) as peer:
            view = peer.refresh().sessions.sessions["s"]
            state = peer.projections.flow.state("s")
            moves = [FlowStateChanged(state="flowing", previous=state)]
            if state != "warming":
                moves.insert(0, FlowStateChanged(state="warming", previous=state))
                moves[1] = FlowStateChanged(state="flowing", previous="warming")
            peer.log.append(
                session_stream("s"),
                moves,
                expected_version=view.version,
                context=peer._session.context,  # the flow is its session's, by the envelope
            )
        assert engine.refresh().flow.state("s") == "flowing"
        engine.notify("disk 91% full on the build host")  # deferred while flowing
        assert got == []
        clock.advance(3600.0)  # the rhythm is long gone: the flow goes idle
        serving = engine._scheduler()
        serving._tally["runs"] = 1  # a serving worker that has run a task since it started
        assert serving._boundary(room=True) == (True, 0.0)  # paused, no slow-down
        assert [i.summary for i in got] == ["disk 91% full on the build host"]
        assert engine.refresh().flow.state("s") != "flowing"


def test_a_pause_committed_between_a_workers_look_and_its_claim_starts_nothing(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer paused the session after this worker's look at it and before its claim: the
    pause comes first in the log, so the task is handed back without its body running."""
    from onward.runtime.scheduler import Scheduler

    ran: list[int] = []
    paused: list[bool] = []
    claim_next = Scheduler._claim_next

    def paused_meanwhile(self: Scheduler) -> Any:
        if not paused:
            pause(db)
            paused.append(True)
        return claim_next(self)

    monkeypatch.setattr(Scheduler, "_claim_next", paused_meanwhile)
    with Engine.open(db, session="s", healing=False) as engine:

        @engine.task(name="job")
        def job(x: int) -> int:
            ran.append(x)
            return x

        task_id = engine.submit(job, 1)
        summary = engine.run()
        assert ran == []
        assert summary.succeeded == 0
        kinds = [type(r.event).__name__ for r in engine.log.read_stream(f"task-{task_id}")]
        assert kinds == ["TaskSubmitted", "TaskClaimed", "TaskReleased"]
        engine.resume("the test")
        assert engine.run().succeeded == 1
        assert ran == [1]
