"""A claim holds from its append: the worker's own lease recovery leaves it alone before its run
starts, and a run whose task moved on since the claim (taken over, cancelled) records nothing
(its step's outcome is refused at the task stream's expected version).
A serving worker whose run ends claims the next task at once, whether or not the log's watch
reports its own appends (PostgreSQL's notifies only appends that may wake others)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, Observer
from onward.events import (
    BackendError,
    StepCompleted,
    TaskCancelled,
    TaskSucceeded,
    WorkerClaimExpired,
    WorkerStopped,
    open_log,
)
from onward.events.outage import Outage
from onward.events.sqlite import SQLiteLog
from onward.events.watch import Watch
from onward.projections.task import task_stream
from onward.projections.workers import worker_stream
from onward.runtime.heartbeat import Heartbeat
from onward.runtime.run import TaskRun, running_task
from onward.runtime.scheduler import DEAD_PEER_LOOK, Scheduler
from onward.runtime.session import SILENCE_GRACE
from tests.conftest import FakeClock, OutageClock


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def test_a_claimed_task_is_not_taken_back_by_its_own_worker_before_its_run_starts(
    db: str, clock: FakeClock
) -> None:
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="job")
        def job() -> int:
            return 1

        task_id = engine.submit(job)
        scheduler = engine._scheduler()
        assert scheduler._prepare()
        claimed = scheduler._claim_next()
        assert claimed is not None
        # The serving loop looks for dead peers' tasks while the run is handed to a thread.
        assert scheduler._recover_leases() == 0
        kind, _run = scheduler._execute(*claimed)
        assert kind == "succeeded"
        assert engine.result(task_id) == 1


def test_a_run_whose_task_was_cancelled_since_its_claim_records_only_its_step(
    db: str, clock: FakeClock
) -> None:
    ran: list[int] = []
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.step(name="work")
        def work(i: int) -> int:
            ran.append(i)
            return i

        @engine.task(name="job")
        def job() -> int:
            return work(1)

        task_id = engine.submit(job)
        scheduler = engine._scheduler()
        assert scheduler._prepare()
        claimed = scheduler._claim_next()
        assert claimed is not None
        with Engine.open(db, session="s", clock=clock) as other:
            other.cancel(task_id, reason="not needed")  # after the claim, before the run
        kind, _run = scheduler._execute(*claimed)
    assert kind == "cancelled"
    assert ran == [1]  # the body ran: its success is kept for a retry, the task stopped
    with open_log(db) as log:
        events = [type(r.event) for r in log.read_stream(task_stream(task_id))]
        assert events[-2:] == [TaskCancelled, StepCompleted]
        assert TaskSucceeded not in events
        assert log.verify().ok


class Silent(Watch):
    """A watch that never reports a change (as if no append woke this worker)."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        self._closed.wait(timeout)
        return False

    def close(self) -> None:
        self._closed.set()


class SilentLog(SQLiteLog):
    def _watch(self) -> Watch:
        return Silent()


def test_a_serving_worker_claims_the_next_task_when_a_run_ends(tmp_path: Path) -> None:
    stop = threading.Event()
    done: list[int] = []
    with Engine(SilentLog(str(tmp_path / "work.db")), session="s", lease=300) as engine:

        @engine.task(name="job")
        def job(i: int) -> int:
            done.append(i)
            if len(done) == 3:
                stop.set()
            return i

        for i in range(3):
            engine.submit(job, i)
        serving = threading.Thread(
            target=lambda: engine.serve(workers=1, stop=stop, handle_signals=False)
        )
        serving.start()
        serving.join(timeout=60)  # without the fix: a wait of a third of the lease per task
        stop.set()
        serving.join()
    assert sorted(done) == [0, 1, 2]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("path", ["sync", "async"])
def test_the_views_show_the_tasks_a_stopped_service_handed_back(
    tmp_path: Path, workers: int, path: str
) -> None:
    """An application reading a task's view right after the service returns sees it handed
    back (queued again), as the log has it, not running (as last folded before the stop)."""
    started: list[int] = []
    stopping: dict[int, threading.Event] = {}
    with Engine.open(f"sqlite:///{tmp_path / 'work.db'}", session="s", lease=300) as engine:
        loop: asyncio.AbstractEventLoop | None = None
        sync_stop, async_stop = threading.Event(), asyncio.Event()

        def stop() -> None:
            if loop is None:
                sync_stop.set()
            else:
                loop.call_soon_threadsafe(async_stop.set)

        @engine.step(name="first")
        def first(i: int) -> int:
            started.append(i)
            if len(started) == workers:  # every task runs: stop
                stop()
            # Until the worker stops: each task is handed back at its next step.
            assert stopping[i].wait(60)
            return i

        @engine.step(name="second")
        def second(i: int) -> int:
            return i

        @engine.task(name="job")
        def job(i: int) -> int:
            run = running_task("the test")
            assert run is not None
            assert run.stopping is not None
            stopping[i] = run.stopping
            return first(i) + second(i)

        ids = [engine.submit(job, i) for i in range(workers)]
        if path == "sync":
            engine.serve(workers=workers, stop=sync_stop, handle_signals=False)
        else:

            async def serve() -> None:
                nonlocal loop
                loop = asyncio.get_running_loop()
                await engine.serve_async(concurrency=workers, stop=async_stop, handle_signals=False)

            asyncio.run(serve())
        # As the views have it, without a catch-up; the log says the same (tasks() reads it).
        assert [engine.task_view(task_id).state for task_id in ids] == ["queued"] * workers
        assert [v.state for v in engine.tasks()] == ["queued"] * workers


@pytest.mark.parametrize("path", ["sync", "async"])
def test_the_views_show_the_task_whose_end_stopped_the_service(tmp_path: Path, path: str) -> None:
    """An application that stops the service as a task ends (its observer) sees that task
    ended in the views once the service returns, not running."""
    sync_stop, async_stop = threading.Event(), asyncio.Event()

    class StopsAtTheEnd(Observer):
        def task_ended(self, token: Any, outcome: str) -> None:
            sync_stop.set()
            async_stop.set()  # (called on the loop: serve_async counts its runs there)

    with Engine.open(
        f"sqlite:///{tmp_path / 'work.db'}", session="s", lease=300, observer=StopsAtTheEnd()
    ) as engine:

        @engine.task(name="job")
        def job() -> int:
            return 1

        task_id = engine.submit(job)
        if path == "sync":
            engine.serve(stop=sync_stop, handle_signals=False)
        else:
            asyncio.run(engine.serve_async(stop=async_stop, handle_signals=False))
        assert engine.task_view(task_id).state == "succeeded"


def test_a_peer_silent_through_an_outage_is_not_taken_over_until_a_lease_after_it(
    db: str, clock: FakeClock
) -> None:
    """During an outage of the storage nobody can record a heartbeat: a worker that rode one
    out takes a peer's task over only once the peer has had a lease to speak again."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    since_outage = OutageClock(peer.log)
    taken: list[int] = []
    try:

        @holder.step(name="slow")
        def slow() -> None:
            clock.advance(60.0)  # long past the lease: no heartbeat recorded meanwhile
            since_outage.ride_out()  # the peer rides out an outage
            taken.append(peer.run(max_runs=0).recovered)
            since_outage.advance(10.0)  # a lease later, the silence counts
            taken.append(peer.run(max_runs=0).recovered)  # once its own append went through
            clock.advance(SILENCE_GRACE)
            taken.append(peer.run(max_runs=0).recovered)

        @holder.task(name="job")
        def job() -> None:
            slow()

        holder.submit(job)
        holder.run(max_runs=1)
        assert taken == [0, 0, 1]
    finally:
        peer.close()
        holder.close()


@pytest.mark.parametrize("late_beat", [False, True])
@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_worker_paused_past_its_lease_runs_no_step_body_its_peer_ran(
    db: str, clock: FakeClock, kind: str, late_beat: bool
) -> None:
    """A worker is paused (SIGSTOP) in a task's code between two steps, past its lease (or
    its heartbeats failed meanwhile, and one lands late); a peer takes the task over and
    runs it to its end. Woken, the worker would run the next step's body again (its outcome
    then refused), its lease over by its own clock: it looks first, and its run ends there,
    lost. A heartbeat that came late holds nothing the peer took meanwhile."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    bodies: list[tuple[str, str]] = []

    def paused() -> None:
        clock.advance(60.0)  # long past the lease: no heartbeat meanwhile
        taking_over = threading.Thread(target=peer.run)
        taking_over.start()
        taking_over.join()
        if late_beat:
            assert Heartbeat(holder._session, lambda: 1).beat()

    def register(engine: Engine, who: str) -> None:
        @engine.step(name="first")
        def first() -> int:
            bodies.append(("first", who))
            return 1

        @engine.step(name="second")
        def second() -> int:
            bodies.append(("second", who))
            return 2

        if kind == "plain":

            @engine.task(name="job")
            def job() -> int:
                value = first()
                if who == "holder":
                    paused()
                return value + second()

        else:

            @engine.task(name="job")
            async def job_async() -> int:
                value: int = await first()  # type: ignore[misc]
                if who == "holder":
                    await asyncio.to_thread(paused)
                return value + await second()  # type: ignore[misc]

    try:
        register(holder, "holder")
        register(peer, "peer")
        task_id = holder.submit("job")
        if kind == "plain":
            summary = holder.run(max_runs=1)
        else:
            summary = asyncio.run(holder.run_async(max_runs=1))
        assert bodies == [("first", "holder"), ("second", "peer")]
        assert summary.cancelled == 1  # its run ended: lost
        assert summary.steps_run == 1  # the second step's body did not run there
        assert holder.result(task_id) == 3
        assert holder.log.verify().ok
    finally:
        peer.close()
        holder.close()


def test_a_worker_paused_between_its_claim_and_the_run_runs_no_body_its_peer_ran(
    db: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause comes after the claim is committed and before the run begins: the run's
    tenure is its claim's lease as recorded, not one counted from when the run began (which
    the pause would have moved past the peer's takeover)."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    bodies: list[str] = []
    begin = Scheduler._begin

    def paused_then_begun(self: Scheduler, *args: Any) -> Any:
        if self.session is holder._session and not bodies:
            clock.advance(60.0)  # long past the claim's lease
            taking_over = threading.Thread(target=peer.run)
            taking_over.start()
            taking_over.join()
        return begin(self, *args)

    monkeypatch.setattr(Scheduler, "_begin", paused_then_begun)
    try:
        for engine, who in ((holder, "holder"), (peer, "peer")):

            @engine.step(name="only")
            def only(who: str = who) -> str:
                bodies.append(who)
                return who

            @engine.task(name="job")
            def job() -> str:
                return only()

        task_id = holder.submit("job")
        summary = holder.run(max_runs=1)
        assert bodies == ["peer"]
        assert summary.cancelled == 1
        assert holder.result(task_id) == "peer"
    finally:
        peer.close()
        holder.close()


def test_a_beat_landing_late_between_the_claim_and_the_run_is_a_lapse_of_the_claim(
    db: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused after its claim was committed, the worker's heartbeat lands first once it is
    woken (its lease runs again from then) and the run begins after: the lapse it noted came
    after the claim was taken, and the run looks before its step's body, as when no beat came."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    bodies: list[str] = []
    begin = Scheduler._begin

    def paused_then_begun(self: Scheduler, *args: Any) -> Any:
        if self.session is holder._session and not bodies:
            clock.advance(60.0)  # long past the claim's lease
            taking_over = threading.Thread(target=peer.run)
            taking_over.start()
            taking_over.join()
            assert Heartbeat(holder._session, lambda: 1).beat()  # woken: a late beat
            clock.advance(1.0)
        return begin(self, *args)

    monkeypatch.setattr(Scheduler, "_begin", paused_then_begun)

    def register(engine: Engine, who: str) -> None:
        @engine.step(name="only")
        def only() -> str:
            bodies.append(who)
            return who

        @engine.task(name="job")
        def job() -> str:
            return only()

    try:
        register(holder, "holder")
        register(peer, "peer")
        task_id = holder.submit("job")
        summary = holder.run(max_runs=1)
        assert bodies == ["peer"]
        assert summary.cancelled == 1
        assert holder.result(task_id) == "peer"
    finally:
        peer.close()
        holder.close()


def test_a_beat_that_rode_out_an_outage_past_the_lease_holds_nothing_a_peer_took(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A heartbeat is begun in time, but its append waits out a locked log past the last
    beat's lease; a peer takes the task over meanwhile and runs it to its end. The beat's
    lease, counted from when it began, still runs when it lands: the lapse is judged by when
    it was recorded, and the worker looks before the next step's body runs."""
    path = tmp_path / "work.db"
    db = f"sqlite:///{path}?busy_timeout=0.001"
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    lock = sqlite3.connect(path, isolation_level=None)
    bodies: list[tuple[str, str]] = []
    claimed_at = clock.now

    def wait_out(seconds: float) -> None:
        clock.advance(seconds)
        if clock.now >= claimed_at + 12.0 and lock.in_transaction:
            lock.rollback()  # the log is back, the holder's claim two seconds past its lease
            taking_over = threading.Thread(target=peer.run)
            taking_over.start()
            taking_over.join()

    holder.log.outage = Outage(holder.log.url, clock=clock, sleep=wait_out)

    def register(engine: Engine, who: str) -> None:
        @engine.step(name="first")
        def first() -> int:
            bodies.append(("first", who))
            return 1

        @engine.step(name="second")
        def second() -> int:
            bodies.append(("second", who))
            return 2

        @engine.task(name="job")
        def job() -> int:
            value = first()
            if who == "holder":
                clock.advance(5.0)  # the beat is due, well within the claim's lease
                lock.execute("BEGIN IMMEDIATE")  # another process writes: the beat waits
                assert Heartbeat(holder._session, lambda: 1).beat()
            return value + second()

    try:
        register(holder, "holder")
        register(peer, "peer")
        task_id = holder.submit("job")
        summary = holder.run(max_runs=1)
        assert bodies == [("first", "holder"), ("second", "peer")]
        assert summary.cancelled == 1
        assert holder.result(task_id) == 3
    finally:
        lock.close()
        peer.close()
        holder.close()


def test_a_peer_does_not_take_over_a_claim_on_a_heartbeat_it_had_not_read(
    db: str, clock: FakeClock
) -> None:
    """A peer decides that a worker is silent on what it has read; the worker's heartbeat
    appended after that read (on the worker's own stream, not the task's) fences the expiry:
    the peer expires nothing, and takes the claim over once the worker is silent for real."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    recovered: list[int] = []
    try:

        @holder.step(name="slow")
        def slow() -> None:
            clock.advance(60.0)  # long past the lease
            scheduler = peer._scheduler()
            peer._session.host.catch_up()
            recovered.append(scheduler._recover_leases())  # its own append first
            clock.advance(SILENCE_GRACE)
            peer._session.host.catch_up()  # the peer reads: the holder is silent
            Heartbeat(holder._session, lambda: 1).beat()  # the holder speaks, just after
            recovered.append(scheduler._recover_leases())  # on what the peer had read
            peer._session.host.catch_up()
            recovered.append(scheduler._recover_leases())  # it has read the heartbeat
            clock.advance(60.0)  # and now the holder is silent
            peer._session.host.catch_up()
            recovered.append(scheduler._recover_leases())  # its own append first
            clock.advance(SILENCE_GRACE)
            peer._session.host.catch_up()
            recovered.append(scheduler._recover_leases())

        @holder.task(name="job")
        def job() -> None:
            slow()

        task_id = holder.submit(job)
        holder.run(max_runs=1)
        assert recovered == [0, 0, 0, 0, 1]
        events = [r.event for r in holder.log.read()]
        noted = [e for e in events if isinstance(e, WorkerClaimExpired)]
        assert [(e.task_id, e.by) for e in noted] == [(task_id, peer._session.worker)]
        assert holder.log.verify().ok
    finally:
        peer.close()
        holder.close()


def test_a_peer_takes_every_claim_of_a_silent_worker_over_in_one_pass(
    db: str, clock: FakeClock
) -> None:
    """Each expiry notes the silence on the worker's stream: the next one of the same pass
    writes after that note (it was refused at the version read before it, one claim a pass)."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    try:

        @holder.task(name="job")
        def job(i: int) -> None:
            pass

        for i in range(5):
            holder.submit(job, i)
        scheduler = holder._scheduler()
        assert scheduler._prepare()
        assert len(scheduler._claim_up_to(5)) == 5
        Heartbeat(holder._session, lambda: 5).beat()
        clock.advance(60.0)  # the holder is silent past its lease
        peer._session.host.catch_up()
        assert peer._scheduler()._recover_leases() == 0  # its own append first
        clock.advance(SILENCE_GRACE)
        peer._session.host.catch_up()
        assert peer._scheduler()._recover_leases() == 5
        noted = [r.event for r in holder.log.read() if isinstance(r.event, WorkerClaimExpired)]
        assert len(noted) == 5
        assert holder.log.verify().ok
    finally:
        peer.close()
        holder.close()


def test_a_pool_claims_the_queue_heads_together_in_queue_order(db: str, clock: FakeClock) -> None:
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="job")
        def job(i: int) -> int:
            return i

        levels = ["low", "low", "normal", "high", "critical", "normal"]
        ids = [engine.submit(job, i, priority=level) for i, level in enumerate(levels)]
        order = [ids[4], ids[3], ids[2], ids[5], ids[0], ids[1]]
        scheduler = engine._scheduler()
        assert scheduler._prepare()
        claimed = scheduler._claim_up_to(4)
        # The four most urgent, in queue order, each claimed once; the rest still queued.
        assert [found.view.task_id for found in claimed] == order[:4]
        assert [engine.task_view(i).state for i in order] == ["running"] * 4 + ["queued"] * 2
        for found in claimed:
            assert scheduler._execute(*found)[0] == "succeeded"
        assert engine.run().runs == 2
        assert [engine.result(i) for i in ids] == list(range(6))


def test_tasks_ready_after_a_wait_are_claimed_in_queue_order_with_the_queued_ones(
    db: str, clock: FakeClock
) -> None:
    """A critical task submitted while tasks woken from their waits are ready comes before
    them; they come before a queued task of their own priority submitted after them, and
    before a lower one."""
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="parked")
        def parked(i: int) -> object:
            return engine.recv("go")

        @engine.task(name="job")
        def job(i: int) -> int:
            return i

        woken = [engine.submit(parked, i) for i in range(3)]
        assert engine.run().waiting == 3
        for task_id in woken:
            engine.send(task_id, "go", 1)
        low = engine.submit(job, 0, priority="low")
        normal = engine.submit(job, 1)
        critical = engine.submit(job, 2, priority="critical")
        high = engine.submit(job, 3, priority="high")
        scheduler = engine._scheduler()
        assert scheduler._prepare()
        claimed = [found.view.task_id for found in scheduler._claim_up_to(5)]
        assert claimed == [critical, high, *woken]
        for found in scheduler._claim_up_to(2):
            claimed.append(found.view.task_id)
        assert claimed[5:] == [normal, low]


@pytest.mark.parametrize("runner", ["run", "run_async"])
def test_a_critical_task_runs_before_low_tasks_woken_by_their_messages(
    db: str, clock: FakeClock, runner: str
) -> None:
    ran: list[str] = []
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="parked")
        def parked(i: int) -> object:
            value = engine.recv("go")
            ran.append("low")
            return value

        @engine.task(name="urgent")
        def urgent() -> None:
            ran.append("critical")

        woken = [engine.submit(parked, i, priority="low") for i in range(20)]
        assert engine.run().waiting == 20
        for task_id in woken:
            engine.send(task_id, "go", 1)
        engine.submit(urgent, priority="critical")
        if runner == "run":
            engine.run()
        else:
            asyncio.run(engine.run_async(concurrency=1))
    assert ran == ["critical"] + ["low"] * 20


def test_queue_heads_taken_for_a_claim_that_fails_go_back_to_the_queue(
    db: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="job")
        def job(i: int) -> int:
            return i

        ids = [engine.submit(job, i) for i in range(3)]
        scheduler = engine._scheduler()
        assert scheduler._prepare()
        log = engine.log

        def broken(groups: object) -> object:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(log, "commit_groups", broken)
        with pytest.raises(sqlite3.OperationalError):
            scheduler._claim_up_to(3)
        monkeypatch.undo()
        # Nothing was claimed, and nothing left the queue: a later run takes all three.
        assert [engine.task_view(i).state for i in ids] == ["queued"] * 3
        assert engine.run(workers=3).runs == 3
        assert [engine.result(i) for i in ids] == [0, 1, 2]


class Failing(Watch):
    """A watch whose storage is down for its first looks."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.looks = 0
        self.back = threading.Event()

    def wait(self, timeout: float) -> bool:
        self.looks += 1
        if self.looks <= self.failures:
            raise BackendError("connection refused")
        self.back.set()
        return False

    def close(self) -> None:
        pass


def test_a_watch_whose_storage_is_down_says_so_once_and_once_more_when_it_is_back(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each failed look was a warning: about 440 lines in 90 s of a PostgreSQL restart."""
    from onward.runtime.scheduler import _Watcher

    failing = Failing(failures=4)

    class DownLog(SQLiteLog):
        def _watch(self) -> Watch:
            return failing

    with Engine(DownLog(db.removeprefix("sqlite:///")), session="s") as engine:
        watcher = _Watcher(engine._session, wake=lambda: None)
        with caplog.at_level("WARNING", logger="onward"):
            watcher.start()
            assert failing.back.wait(30)
            watcher.close()
    said = [r.getMessage() for r in caplog.records if "watching" in r.getMessage()]
    assert len(said) == 2, said
    assert "failed: connection refused" in said[0]
    assert "again, after 4 failed looks" in said[1]


NEWER_TASK = """
import sys, time
from onward import Engine
from onward.events import Event, TaskClaimed
from onward.projections import task_stream

class NewerEvent(Event, frozen=True, kw_only=True, tag="NewerEvent.v9"):
    note: str = ""

with Engine.open(sys.argv[1], session="s", lease=30.0) as engine:
    engine.log.codec.register(NewerEvent)

    @engine.task(name="job")
    def job(i: int) -> None:
        pass

    task_id = engine.submit(job, 0)
    claim = TaskClaimed(worker="elsewhere/4242/1/abcdef", lease_until=time.time() + 30, attempt=1)
    engine.log.append(task_stream(task_id), [claim], expected_version=1)
    engine.log.append(task_stream(task_id), [NewerEvent()], expected_version=2)
"""


def test_a_serving_worker_waits_for_a_passed_claim_it_may_not_take_yet(
    db: str, clock: FakeClock
) -> None:
    """A peer's claim that has run out, which the worker may not take over yet (within a lease
    of an outage; a newer onward's task never): the worker waits until it may, where it looked
    again at once, a busy loop of thousands of rounds a second."""
    # A newer onward's worker, on another host, claimed a task and wrote an event this onward
    # does not know (in a process of its own: this one never learns the event's type).
    subprocess.run([sys.executable, "-c", NEWER_TASK, db], check=True, timeout=120)
    clock.now = time.time() + 3600.0  # long past its lease
    holder = Engine.open(db, session="s", clock=clock, lease=30.0, healing=False)
    peer = Engine.open(db, session="s", clock=clock, lease=30.0, healing=False)
    try:

        @holder.task(name="job")
        def job(i: int) -> None:
            pass

        serving = peer._scheduler()
        peer._session.host.catch_up()
        assert [v.unknown_events for v in peer._session.unfinished_tasks()] == [1]
        assert serving._recover_leases() == 0
        assert serving._idle_for(idle=True) == 10.0  # a third of a lease
        claims = holder._scheduler()
        assert claims._prepare()
        holder.submit(job, 1)
        holder.submit(job, 2)
        holder._session.host.catch_up()
        assert len(claims._claim_up_to(2)) == 2
        clock.advance(60.0)  # the holder is silent past its lease
        since_outage = OutageClock(peer.log)
        since_outage.ride_out()
        since_outage.advance(12.0)
        peer._session.host.catch_up()
        assert serving._recover_leases() == 0
        # A peer of this host (this process): it looks every DEAD_PEER_LOOK seconds, not more.
        assert serving._idle_for(idle=True) == DEAD_PEER_LOOK
        since_outage.advance(18.0 - DEAD_PEER_LOOK / 2)
        assert serving._idle_for(idle=True) == pytest.approx(DEAD_PEER_LOOK / 2)
        since_outage.advance(DEAD_PEER_LOOK / 2)
        assert serving._idle_for(idle=True) == 0.0  # a lease after the outage
        assert serving._recover_leases() == 0  # its own append first, then a grace
        assert serving._idle_for(idle=True) == DEAD_PEER_LOOK
        clock.advance(SILENCE_GRACE)
        assert serving._idle_for(idle=True) == 0.0
        assert serving._recover_leases() == 2
    finally:
        peer.close()
        holder.close()


def test_a_serving_loop_that_stops_beside_another_run_of_its_engine_says_nothing(
    db: str,
) -> None:
    """Runs of one engine are one worker: one that stops while another runs a task does not
    record that the worker stopped (peers would take that task over at once, its body still
    running); the last one to stop does."""
    release = threading.Event()
    started = threading.Event()
    with Engine.open(db, session="s", lease=30.0, healing=False) as engine:

        @engine.step(name="long")
        def long() -> str:
            started.set()
            release.wait(60)
            return "done"

        @engine.task(name="job")
        def job() -> str:
            return long()

        task_id = engine.submit(job)
        stream = worker_stream(engine._session.worker)

        def stops() -> list[WorkerStopped]:
            return [
                r.event
                for r in engine.log.read_stream(stream)
                if isinstance(r.event, WorkerStopped)
            ]

        first_stop = threading.Event()
        first = threading.Thread(
            target=engine.serve, kwargs={"stop": first_stop, "handle_signals": False}
        )
        first.start()
        try:
            assert started.wait(60)
            second_stop = threading.Event()
            second_stop.set()
            engine.serve(stop=second_stop, handle_signals=False)
            assert stops() == []
        finally:
            release.set()
            first_stop.set()
            first.join(60)
        assert len(stops()) == 1
        assert engine.result(task_id) == "done"


def test_of_runs_of_one_engine_that_stop_together_one_says_the_worker_stopped(
    tmp_path: Path,
) -> None:
    """Each looked for the others before they had gone: both saw one another, and neither said
    it (half the time)."""
    for attempt in range(6):
        with Engine.open(
            f"sqlite:///{tmp_path / f'log{attempt}.db'}", session="s", healing=False
        ) as engine:
            stop = threading.Event()
            serving = [
                threading.Thread(
                    target=engine.serve, kwargs={"stop": stop, "handle_signals": False}
                )
                for _ in range(2)
            ]
            for thread in serving:
                thread.start()
            deadline = time.monotonic() + 60
            while len(engine._runs._runs) < 2:
                assert time.monotonic() < deadline, "the runs did not start"
                threading.Event().wait(0.01)
            stop.set()
            for thread in serving:
                thread.join(60)
            stream = worker_stream(engine._session.worker)
            said = [r for r in engine.log.read_stream(stream) if isinstance(r.event, WorkerStopped)]
            assert len(said) == 1, attempt


def test_a_peer_takes_the_claims_of_a_silent_worker_whose_stream_holds_an_unknown_event(
    db: str, clock: FakeClock
) -> None:
    """A newer onward wrote an event of its own on a worker's stream (its chain intact): a
    peer that does not know it still notes the worker's silence after it, and takes its
    claims over (the note was refused at the version before that event, pass after pass)."""
    from onward.events import Codec, Event, all_event_types

    class FromTheFuture(Event, frozen=True, kw_only=True, tag="FromTheFuture"):
        """An event type a newer onward might write."""

    known = [t for t in all_event_types() if t.__struct_config__.tag != "FromTheFuture"]
    options: dict[str, Any] = {"clock": clock, "lease": 10.0, "healing": False}
    holder = Engine.open(db, session="s", codec=Codec(types=known), **options)
    peer = Engine.open(db, session="s", codec=Codec(types=known), **options)
    writer = open_log(db)
    try:

        @holder.task(name="job")
        def job(i: int) -> None:
            pass

        for i in range(2):
            holder.submit(job, i)
        scheduler = holder._scheduler()
        assert scheduler._prepare()
        assert len(scheduler._claim_up_to(2)) == 2
        Heartbeat(holder._session, lambda: 2).beat()
        stream = worker_stream(holder._session.worker)
        writer.codec.register(FromTheFuture)
        writer.append(stream, [FromTheFuture()], expected_version=len(writer.read_stream(stream)))
        clock.advance(60.0)  # the holder is silent past its lease
        peer._session.host.catch_up()
        assert peer._scheduler()._recover_leases() == 0  # its own append first
        clock.advance(SILENCE_GRACE)
        peer._session.host.catch_up()
        assert peer._scheduler()._recover_leases() == 2
    finally:
        writer.close()
        peer.close()
        holder.close()


def test_a_worker_paused_as_it_takes_a_permit_runs_no_body_its_peer_ran(
    db: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause comes after the step looked at its tenure, while it takes its queue limit's
    permit (an append, which may wait on others): the step looks again before its body."""
    holder = Engine.open(db, session="s", clock=clock, lease=10.0, healing=False)
    # It waits out its grace, and for the permit, before it takes the task over: on the clock.
    peer = Engine.open(db, session="s", clock=clock, sleep=clock.advance, lease=10.0, healing=False)
    bodies: list[str] = []
    paused: list[bool] = []
    take = TaskRun._take_permit

    def paused_taking(self: TaskRun, *args: Any) -> Any:
        taken = take(self, *args)
        if not paused:  # the holder's take, the first
            paused.append(True)
            clock.advance(60.0)  # long past the claim's lease
            taking_over = threading.Thread(target=peer.run)
            taking_over.start()
            taking_over.join()
        return taken

    monkeypatch.setattr(TaskRun, "_take_permit", paused_taking)

    def register(engine: Engine, who: str) -> None:
        engine.limit("api", concurrency=1)

        @engine.step(name="only", limit="api")
        def only() -> str:
            bodies.append(who)
            return who

        @engine.task(name="job")
        def job() -> str:
            return only()

    try:
        register(holder, "holder")
        register(peer, "peer")
        task_id = holder.submit("job")
        summary = holder.run(max_runs=1)
        assert bodies == ["peer"]
        assert summary.cancelled == 1
        assert holder.result(task_id) == "peer"
    finally:
        peer.close()
        holder.close()


def test_a_serving_worker_reads_the_log_about_twice_a_task(tmp_path: Path) -> None:
    """Each turn of a serving worker catches up once (before its lease recovery, its task
    boundary and its claims) and once after its claims; a run that ended frees its slot for
    the same turn's claim, not for a turn of its own. With many workers on one server, each
    of these reads is a query that every worker makes for every task."""
    stop = threading.Event()
    tasks = 20
    done: list[int] = []
    with Engine(SilentLog(str(tmp_path / "work.db")), session="s", lease=300) as engine:

        @engine.task(name="job")
        def job(i: int) -> int:
            done.append(i)
            if len(done) == tasks:
                stop.set()
            return i

        for i in range(tasks):
            engine.submit(job, i)
        reads = 0
        read_rows = engine.log.read_rows

        def counted(**kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            return read_rows(**kwargs)

        engine.log.read_rows = counted  # type: ignore[method-assign]
        engine.serve(workers=1, stop=stop, handle_signals=False)
    assert sorted(done) == list(range(tasks))
    assert reads <= 2 * tasks + 5, reads
