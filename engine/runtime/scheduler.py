"""The run loops: claim runnable tasks, run them (in threads when asked), wait for timers and,
while serving, for new work.

They decide nothing by mutating state: each claim, lease expiry, hand-back and missed deadline
is an append at the task stream's expected version, and they read the queue back from the
projections after each.

A task's history is read (every record checked) before the task is claimed: a task whose
history turns out damaged is marked so in the projections and never claimed, and the run goes
on with the others. Nor is a task claimed that holds events of a newer onward.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import math
import random
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, NamedTuple, TypeVar

import msgspec

from onward.core.definitions import TaskDef
from onward.core.machines import transition, validate
from onward.core.run import LeaseLost, StorageLost, Suspended, error_message
from onward.events import (
    Append,
    AppendResult,
    BackendError,
    Context,
    CorruptRecord,
    DecisionMade,
    Event,
    PayloadTooLarge,
    ProblemKind,
    Recorded,
    TaskClaimed,
    TaskDeadlineMissed,
    TaskFailed,
    TaskLeaseExpired,
    TaskReleased,
    TaskSubmitted,
    TaskSucceeded,
    TaskUnregistered,
    UnencodableValue,
    UsageError,
    VersionConflict,
    Watch,
    WorkerClaimExpired,
    encode_value,
    redacted_logger,
)
from onward.events.integrity import StreamDamage
from onward.healing.healer import Healer
from onward.judgement.actions import Judge
from onward.judgement.rulebook import Rulebook
from onward.projections import TaskView, inbox_stream, task_stream
from onward.projections.workers import worker_stream
from onward.runtime.boundary import Boundary
from onward.runtime.committer import Committer
from onward.runtime.degradations import Degradations
from onward.runtime.forks import inherited_records
from onward.runtime.heartbeat import Heartbeat
from onward.runtime.limits import Limits
from onward.runtime.observer import TaskStart, notify, observing
from onward.runtime.registry import Registry
from onward.runtime.run import (
    Blocking,
    Commit,
    Effect,
    Released,
    TaskRun,
    _weighty,
    drive,
    drive_async,
    enter_task_code,
    leave_task_code,
    on_event_loop,
    submission_id,
)
from onward.runtime.schedules import Schedules
from onward.runtime.session import SILENCE_GRACE, Session, Tenure
from onward.runtime.worker import worker_gone

__all__ = ["RunSummary", "Scheduler"]

logger = redacted_logger("onward.engine")
#: How a serving worker stops, which ``onward worker`` shows its operator.
stops = redacted_logger("onward.engine.service")

#: Seconds between two looks for a human's answer while ``await_approvals`` lasts.
APPROVAL_POLL = 0.5
#: The longest ``run()`` sleeps at once until a task's timer is due, before it looks again (a
#: timer may lie further away than the platform's sleep can wait).
TIMER_NAP = 3600.0
#: How many waiting parents' looks at their subtasks a scheduler keeps (then it starts again).
_SUBTASK_LOOKS_KEPT = 10_000
#: The longest a serving worker's watch waits before it looks whether it must stop.
WATCH_SLICE = 0.25
#: The longest a watch whose storage is down waits before it looks again.
WATCH_BACK_OFF = 2.0
#: The longest an idle worker waits before it looks again whether a peer of its host that
#: runs a task of the session died (a killed process appends nothing that would wake it).
DEAD_PEER_LOOK = 1.0


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What one call of :meth:`Engine.run` (or :meth:`Engine.serve`) did.

    Attributes:
        runs: task runs started (a resumed task counts once per run).
        succeeded: tasks that succeeded.
        failed: tasks that failed.
        waiting: runs that ended waiting (for subtasks or a timer).
        cancelled: runs stopped because the task was cancelled or quarantined meanwhile, or
            its lease taken.
        missed: tasks that missed their deadline.
        recovered: tasks taken back from a dead worker.
        steps_run: steps executed.
        steps_replayed: steps whose recorded outcome was returned without running them.
        elapsed: seconds spent (by the engine's clock).
        paused: the session is paused (its error budget paused it, or it was paused before):
            no task was started after that; :meth:`Engine.resume` resumes it.
        released: running tasks handed back because the worker was stopping.
        scheduled: tasks this worker submitted for a schedule's tick.
    """

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    waiting: int = 0
    cancelled: int = 0
    missed: int = 0
    recovered: int = 0
    steps_run: int = 0
    steps_replayed: int = 0
    elapsed: float = 0.0
    paused: bool = False
    released: int = 0
    scheduled: int = 0


_COUNTS = (
    "runs",
    "succeeded",
    "failed",
    "waiting",
    "cancelled",
    "missed",
    "recovered",
    "steps_run",
    "steps_replayed",
    "released",
    "scheduled",
)

#: An outcome of one task run: how it ended, and the run (for its step counts).
Outcome = tuple[str, TaskRun | None]


class Claimed(NamedTuple):
    """A task this worker just claimed: its view, the claim, the claim's id, and the history
    read (intact) before it."""

    view: TaskView
    claim: TaskClaimed
    claim_id: str
    history: list[Recorded]


class _Begun(NamedTuple):
    """A claimed task ready to run: its run, its function, and its arguments as recorded
    (converted to the parameters' annotations)."""

    run: TaskRun
    definition: TaskDef
    args: list[Any]
    kwargs: dict[str, Any]


class _Started(NamedTuple):
    """A task claimed and begun in the worker thread of the loop's round: its claim, then its
    run ready to go, how it ended at once (handed back), or what beginning it raised (raised
    by its run on the loop)."""

    claimed: Claimed
    begun: _Begun | Outcome | BaseException


class Scheduler:
    """One :meth:`onward.Engine.run` or :meth:`onward.Engine.serve`: the loop and the task runs
    it starts.

    Both loops share their parts: a task boundary, claiming the most urgent runnable task,
    running it, expiring the leases of workers that are gone and marking missed deadlines.

    Args:
        session: the session whose tasks to run.
        registry: the registered tasks and steps.
        boundary: the policies applied between task runs.
        degradations: the components (restored before the first task).
        rulebook: the rules (what follows a completed task).
        healer: heals failing steps (None: failures are final at once).
        judge: judges actions (None: actions run as plain steps).
        schedules: the session's schedules, whose due ticks it fires (None: none).
        limits: the queue limits whose permits limited steps take (None: none).
        last_to_stop: notes that a scheduler's run stops, and says whether it is the last of
            the engine's runs under way to (they run as the same worker, whose stop a
            serving loop records only as the last).
    """

    def __init__(
        self,
        session: Session,
        *,
        registry: Registry,
        boundary: Boundary,
        degradations: Degradations,
        rulebook: Rulebook,
        healer: Healer | None,
        judge: Judge | None,
        schedules: Schedules | None = None,
        limits: Limits | None = None,
        last_to_stop: Callable[[Scheduler], bool] | None = None,
    ) -> None:
        self.session = session
        self._last_to_stop = last_to_stop
        self.schedules = schedules
        self.limits = limits
        self.registry = registry
        self.boundary = boundary
        self.degradations = degradations
        self.rulebook = rulebook
        self.healer = healer
        self.judge = judge
        #: Set when the worker stops: each run hands its task back at its next step.
        self.stopping = threading.Event()
        # What wakes this scheduler's loop up when it is asked to stop (:meth:`request_stop`).
        self._wakers: list[Callable[[], object]] = []
        #: The worker stops at once (a second signal): nothing waits for the storage.
        self.at_once = False
        self._tally = dict.fromkeys(_COUNTS, 0)
        #: When this run began: a schedule's tick due since then is never missed.
        self._began = session.clock()
        self._running = 0
        self._running_lock = threading.Lock()
        self._watch: Watch | None = None  # how a run waiting in real time hears of the log
        self._watch_failures = 0  # looks in a row that the storage failed
        self._rng = random.Random(session.worker)
        # Per waiting parent: the subtasks it waits for, and where the last look stopped.
        self._subtask_looks: dict[str, tuple[tuple[str, ...], int]] = {}
        # When a silent peer's claim, run out, may be taken over: a grace after this worker's
        # own append (see _recover_leases); None when no claim waits for that.
        self._graced: float | None = None
        # The error budget's slow-down was just waited out: the next turn claims without
        # crossing the task boundary again (see _boundary).
        self._paced = False
        #: Shares transactions among the appends of tasks that run at once (None: one each).
        self.committer: Committer | None = None
        #: The threads of plain steps of tasks run on an event loop (``run_async``,
        #: ``serve_async``): as many as tasks run at once, apart from the loop's default
        #: executor, which storage calls use (a few threads: slow steps held them back).
        self.step_threads: ThreadPoolExecutor | None = None

    # -- the two loops ---------------------------------------------------------------------

    def run(
        self, *, workers: int = 1, max_runs: int | None = None, await_approvals: float = 0.0
    ) -> RunSummary:
        """Run this session's tasks until none is runnable.

        Tasks waiting on a timer are waited for (with the engine's ``sleep``); tasks waiting
        for other sessions' work end the run, and so do tasks waiting for a human unless
        ``await_approvals`` says how long to look for answers.

        Args:
            workers: how many tasks may run at once (threads of this process).
            max_runs: stop after starting this many task runs.
            await_approvals: seconds to keep looking for answers while only approvals are left.

        Returns:
            What the run did.
        """
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        if not await_approvals >= 0:
            raise UsageError(f"await_approvals must be seconds >= 0, got {await_approvals}")
        patience_until: float | None = None
        paused = False
        ran_one = False
        one: Claimed | None = None  # claimed by the single worker: run below
        self.session.check_open()
        started = self.session.clock()
        tally = self._tally
        pool = ThreadPoolExecutor(workers, thread_name_prefix="onward") if workers > 1 else None
        in_flight: dict[Future[Outcome], str] = {}
        heartbeat = Heartbeat(self.session, self.running)
        heartbeat.start()
        if pool is not None:
            self.committer = Committer(self.session.log)  # tasks at once share transactions
        try:
            if not self._prepare():
                return RunSummary(paused=True)
            while not (self.stopping.is_set() and not in_flight):
                free = 0 if self.stopping.is_set() else workers - len(in_flight)
                if max_runs is not None:
                    free = min(free, max_runs - tally["runs"])
                pausing, pace = self._boundary(room=free > 0)
                if pausing:
                    paused = True
                    break
                if pace:  # the error budget's slow-down, waited without the lock
                    self._slow_down(pace)
                    continue  # back to the top: the claim after the wait
                with self.session.lock:
                    if self._graced is not None and self.session.clock() >= self._graced:
                        tally["recovered"] += self._recover_leases()
                    if pool is None and free > 0:
                        one = self._claim_next()
                        if one is not None:
                            tally["runs"] += 1
                            ran_one = True  # back to the top: a task boundary
                    elif pool is not None and free > 0:
                        for claimed in self._claim_up_to(free):
                            tally["runs"] += 1
                            # In the caller's context, as one worker runs them (a tracer's
                            # current span: the task runs' parent).
                            context = contextvars.copy_context()
                            execute = functools.partial(self._execute, *claimed)
                            future = pool.submit(context.run, execute)
                            in_flight[future] = claimed[0].task_id
                if one is not None:
                    # Run without the session's lock, as the pool's threads do: the task's
                    # calls take it as they need it, and so can other threads meanwhile (a
                    # cancel, a send, a step's own threads, which the task may wait for).
                    claimed, one = one, None
                    self._count(self._execute(*claimed))
                    with self.session.lock:
                        self.session.host.catch_up()
                if ran_one:
                    ran_one = False
                    continue
                if in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        del in_flight[future]
                    self._count_ended(done)
                    continue
                if max_runs is not None and tally["runs"] >= max_runs:
                    break
                with self.session.lock:
                    # Read at one point of the log, the open requests first: an answer folded
                    # meanwhile (another thread's catch-up) leaves none open and its task
                    # ready, never neither.
                    asking = bool(await_approvals) and self._awaiting_approval()
                    due, claimable = self._next_timer(), self._claimable()
                if self._graced is not None:  # a silent peer's task, taken over a grace later
                    due = self._graced if due is None else min(due, self._graced)
                if due is None:
                    if claimable:
                        continue
                    now = self.session.clock()
                    if asking:
                        # Only humans can move the session on: look for their answers (an
                        # approval from another process lands in the log) until patience ends.
                        if patience_until is None:
                            patience_until = now + await_approvals
                        if now < patience_until:
                            self._nap(min(APPROVAL_POLL, patience_until - now))
                            continue
                    break
                patience_until = None
                self._nap(min(self._nap_limit(), max(0.0, due - self.session.clock())))
            if in_flight:  # paused: the tasks under way end as they would
                self._count_ended(in_flight)
                self._views_caught_up()  # what they recorded shows in the views
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            self._close_committer()
            self._close_watch()
            heartbeat.stop()
        return self._summary(started, paused)

    def serve(
        self, *, workers: int = 1, stop: threading.Event, reason: Callable[[], str]
    ) -> RunSummary:
        """Run this session's tasks until ``stop`` is set, waiting for new work when none is
        runnable.

        While it waits it wakes up for a change of the log (a submission, an answer, a peer
        that hands a task back: the log's :meth:`~onward.events.EventLog.watch`), for a timer,
        and for the moment a peer's claim runs out (a dead peer's task is taken over within
        about one lease). While the session is paused it claims nothing and waits for it to
        be resumed. Once ``stop`` is set it claims nothing more; each running task is handed
        back at its next step (:class:`onward.events.TaskReleased`), so a peer takes it at
        once; then it says the worker stopped (:class:`onward.events.WorkerStopped`).

        Args:
            workers: how many tasks may run at once (threads of this process).
            stop: set to stop.
            reason: why it stopped, asked once it stops (recorded).

        Returns:
            What it did.

        Raises:
            StorageUnavailable: the storage stayed unavailable past the log's tolerance; the
                tasks this worker ran are runnable again (at once for this engine's next run,
                once their lease runs out for the others').
            KeyboardInterrupt: a second signal stopped it at once.
        """
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        session = self.session
        session.check_open()
        started = session.clock()
        wake = threading.Event()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="onward")
        in_flight: dict[Future[Outcome], str] = {}
        heartbeat = Heartbeat(session, self.running)
        watcher = _Watcher(session, wake.set, stop)
        self.committer = Committer(session.log) if workers > 1 else None
        paused = False
        error: BaseException | None = None
        heartbeat.start()
        watcher.start()
        self._wakers.append(wake.set)
        try:
            self._prepare()
            while not (stop.is_set() or self.stopping.is_set()):
                # The runs that ended first: their slots are free for this turn's claims.
                for future in [f for f in in_flight if f.done()]:
                    del in_flight[future]
                    self._count(future.result())
                with session.lock:
                    session.host.catch_up()
                    self._tally["recovered"] += self._recover_leases()
                free = 0 if stop.is_set() else workers - len(in_flight)
                pausing, pace = self._boundary(room=free > 0, caught_up=True)
                if pace:  # the error budget's slow-down, waited without the lock
                    self._slow_down(pace, stop)
                    continue  # back to the top: the claim after the wait
                with session.lock:
                    paused = pausing or self._paused()
                    if not paused and free > 0:
                        for claimed in self._claim_up_to(free):
                            self._tally["runs"] += 1
                            future = pool.submit(self._execute, *claimed)
                            future.add_done_callback(lambda _done: wake.set())
                            in_flight[future] = claimed[0].task_id
                # A run that ended since the top of this turn has set ``wake``: no wait then.
                if not in_flight and not paused and self._fake_time_passed():
                    continue  # a test's clock: its next timer is due now
                wake.wait(self._idle_for(idle=len(in_flight) < workers and not paused))
                wake.clear()
        except BaseException as exc:
            error = exc
        self.stopping.set()  # runs still going hand their tasks back at their next step
        if in_flight and error is None:
            stops.info(
                "%d task run(s) hand their tasks back at their next step; a second signal "
                "stops at once",
                len(in_flight),
            )
        if not isinstance(error, KeyboardInterrupt):
            try:
                for future in in_flight:
                    try:
                        self._count(future.result())
                    except KeyboardInterrupt:
                        raise
                    except BaseException as exc:  # its storage failed too
                        error = error or exc
                pool.shutdown(wait=True)
            except KeyboardInterrupt as again:  # a second signal while the steps end
                error = again
        # Stopping at once, nothing waits for a storage call under way (one that rides out an
        # outage would hold the stop until the storage is back): the leases run out.
        at_once = isinstance(error, KeyboardInterrupt) or self.at_once
        if at_once:
            self.stop_at_once()
            pool.shutdown(wait=False, cancel_futures=True)
        else:  # what the hand-backs, and the runs that ended as it stopped, recorded shows
            self._views_caught_up()  # in the views
        watcher.close(wait=not at_once)
        self._close_committer(wait=not at_once)
        try:
            heartbeat.stop(
                reason=reason() or "stopped",
                released=self._tally["released"],
                said=self._last_run() and error is None and not session.closed,
                wait=not at_once,
            )
        except BackendError as exc:
            error = error or exc
        if error is not None:
            raise error
        return self._summary(started, paused)

    def _last_run(self) -> bool:
        """Whether this run, stopping, is the last of the engine's runs under way to stop:
        they share this worker's id, and its stop (:class:`onward.events.WorkerStopped`)
        would let peers take over their tasks at once."""
        return self._last_to_stop is None or self._last_to_stop(self)

    def _paused(self) -> bool:
        view = self.session.view()
        return view is not None and view.state == "paused"

    def running(self) -> int:
        """How many task runs are under way."""
        return self._running

    # -- the two loops on an event loop ----------------------------------------------------

    async def run_async(
        self, *, concurrency: int = 1, max_runs: int | None = None, await_approvals: float = 0.0
    ) -> RunSummary:
        """:meth:`run` on the event loop: up to ``concurrency`` tasks at once, their step
        outcomes group-committed; the loop never waits for the disk.

        Returns:
            What the run did.
        """
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {concurrency}")
        if not await_approvals >= 0:
            raise UsageError(f"await_approvals must be seconds >= 0, got {await_approvals}")
        session = self.session
        session.check_open()
        started = session.clock()
        heartbeat = Heartbeat(session, self.running)
        heartbeat.start()
        self.committer = Committer(session.log)
        self.step_threads = _step_threads(concurrency)
        tasks: set[asyncio.Task[Outcome]] = set()
        paused = False
        patience_until: float | None = None
        ended = True  # False: the run was cancelled or failed
        try:
            if not await asyncio.to_thread(self._prepare):
                return RunSummary(paused=True)
            while not (self.stopping.is_set() and not tasks):
                left = None if max_runs is None else max_runs - self._tally["runs"]
                free = 0 if self.stopping.is_set() else concurrency - len(tasks)
                state, claimed, pace = await self._round_async(free, left)
                if state == "pause":
                    paused = True
                    break
                if pace:
                    await self._slow_down_async(pace)
                    continue  # back to the top: the claim after the wait
                tasks.update(asyncio.create_task(self._execute_async(c)) for c in claimed)
                if tasks:
                    done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    self._count_ended(done)
                    continue
                if max_runs is not None and self._tally["runs"] >= max_runs:
                    break
                due, claimable, awaiting = await asyncio.to_thread(self._look_ahead)
                now = session.clock()
                if due is None:
                    if claimable:
                        continue
                    if await_approvals and awaiting:
                        if patience_until is None:
                            patience_until = now + await_approvals
                        if now < patience_until:
                            await self._sleep(min(APPROVAL_POLL, patience_until - now))
                            continue
                    break
                patience_until = None
                await self._sleep(min(self._nap_limit(), max(0.0, due - now)))
            if tasks:  # paused: the tasks under way end as they would
                while tasks:
                    done, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    self._count_ended(done)
                # what they recorded shows in the views
                await asyncio.to_thread(self._views_caught_up)
        except BaseException:
            ended = False  # cancelled or failed: its tasks (or its round's claims) handed back
            raise
        finally:
            if tasks:  # the run itself was cancelled or failed: stop its tasks, hand them back
                # (one whose code goes on past its cancellation starts no step: it is handed
                # back at the next, as on a stopping worker)
                self.stopping.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if not ended:  # what the hand-backs recorded shows in the views (task_view, ...)
                await asyncio.to_thread(self._views_caught_up)
            await asyncio.to_thread(self._close_committer)
            self._close_step_threads()
            self._close_watch()
            heartbeat.stop()
        return self._summary(started, paused)

    async def serve_async(
        self, *, concurrency: int = 1, stop: asyncio.Event, reason: Callable[[], str]
    ) -> RunSummary:
        """:meth:`serve` on the event loop: up to ``concurrency`` tasks at once, until ``stop``
        is set.

        Returns:
            What it did.
        """
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, got {concurrency}")
        session = self.session
        session.check_open()
        started = session.clock()
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        heartbeat = Heartbeat(session, self.running)
        watcher = _Watcher(session, functools.partial(_wake_loop, loop, wake))
        self.committer = Committer(session.log)
        self.step_threads = _step_threads(concurrency)
        tasks: set[asyncio.Task[Outcome]] = set()
        paused = False
        error: BaseException | None = None
        heartbeat.start()
        watcher.start()
        self._wakers.append(functools.partial(_wake_loop, loop, wake))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.to_thread(self._prepare)
            while not (stop.is_set() or self.stopping.is_set()):
                state, claimed, pace = await self._round_async(concurrency - len(tasks), None, True)
                paused = state == "pause"
                if pace:
                    await self._slow_down_async(pace, stop)
                    continue  # back to the top: the claim after the wait
                tasks.update(asyncio.create_task(self._execute_async(c)) for c in claimed)
                if not tasks and not paused and self._fake_time_passed():
                    continue  # a test's clock: its next timer is due now
                idle = await asyncio.to_thread(
                    self._idle_for, idle=len(tasks) < concurrency and not paused
                )
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait(
                    {*tasks, waiter, stopping}, timeout=idle, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                wake.clear()
                for task in [t for t in tasks if t.done()]:
                    tasks.discard(task)
                    self._count(task.result())
        except BaseException as exc:
            error = exc
        self.stopping.set()  # runs still going hand their tasks back at their next step
        stopping.cancel()
        if isinstance(error, asyncio.CancelledError):
            for task in tasks:
                task.cancel()
        serving = asyncio.current_task()
        cancels = serving.cancelling() if serving is not None else 0
        for task in tasks:
            try:
                self._count(await task)
            except asyncio.CancelledError as exc:
                error = error or exc
                if serving is not None and serving.cancelling() > cancels:
                    # Cancelled again while its runs end their steps (a second signal): all of
                    # them are cancelled, not only the one awaited then, nor awaited to their
                    # next step. (A run that ended by the first cancellation is not that.)
                    cancels = serving.cancelling()
                    for other in tasks:
                        other.cancel()
            except BaseException as exc:
                error = error or exc
        if not self.at_once:  # what the hand-backs, and the runs that ended as it stopped,
            await asyncio.to_thread(self._views_caught_up)  # recorded shows in the views
        at_once = self.at_once
        watcher.close(wait=not at_once)
        await asyncio.to_thread(self._close_committer, not at_once)
        self._close_step_threads()
        try:
            await asyncio.to_thread(
                heartbeat.stop,
                reason=reason() or "stopped",
                released=self._tally["released"],
                said=self._last_run() and error is None and not session.closed,
                wait=not at_once,
            )
        except BackendError as exc:
            error = error or exc
        if error is not None:
            raise error
        return self._summary(started, paused)

    async def _execute_async(self, started: _Started) -> Outcome:
        """:meth:`_execute` on the event loop, for a task its round claimed and began."""
        view, claim_id = started.claimed.view, started.claimed.claim_id
        with self._running_lock:
            self._running += 1
        outcome: Outcome | None = None
        try:
            outcome = await self._run_task_async(view, started.begun)
            return outcome
        except StorageLost as lost:
            raise lost.error from None  # not the task's failure: the run stops
        finally:
            with self._running_lock:
                self._running -= 1
                self.session.let_go(view.task_id, claim_id)
            if outcome is None or outcome[0] != "waiting":  # kept only for its next run
                self.session.histories.forget(task_stream(view.task_id))

    def _round(
        self, capacity: int, left: int | None, serving: bool = False
    ) -> tuple[str, list[_Started], float]:
        """One turn of an event loop's scheduling (in a worker thread): a task boundary, then
        claims for the free slots, each claimed task begun here (the loop then runs it without
        another turn of a worker thread).

        Returns:
            "pause" when the session is paused (nothing claimed), what was claimed and begun,
            and the seconds to wait (the error budget's slow-down, nothing claimed) before the
            next turn claims.
        """
        session = self.session
        claimed: list[Claimed] = []
        if serving:
            with session.lock:
                session.host.catch_up()
                self._tally["recovered"] += self._recover_leases()
        want = capacity if left is None else min(capacity, left)
        pausing, pace = self._boundary(room=want > 0, caught_up=serving)
        with session.lock:
            if pausing or (serving and self._paused()):
                return "pause", [], 0.0
            if want > 0 and not pace:
                claimed = self._claim_up_to(want)
                self._tally["runs"] += len(claimed)
        return "", [self._start(found) for found in claimed], pace

    def _start(self, claimed: Claimed) -> _Started:
        """Begin a claimed task (:meth:`_begin`); what that raises is its run's to raise."""
        try:
            return _Started(claimed, self._begin(claimed.view, claimed.claim_id, claimed.history))
        except BaseException as exc:
            return _Started(claimed, exc)

    async def _round_async(
        self, capacity: int, left: int | None, serving: bool = False
    ) -> tuple[str, list[_Started], float]:
        """:meth:`_round` in a worker thread. Cancelled meanwhile, the round runs on (its
        claims are being committed): what it claimed is handed back before the cancellation
        goes on, or the tasks would stay claimed by this worker, none of its runs under way.

        Raises:
            asyncio.CancelledError: the run was cancelled.
        """
        try:
            return await _seen_through(self._round, capacity, left, serving)
        except _CancelledAfter as cancelled:
            claimed: list[_Started] = cancelled.outcome[1]
            if claimed and not self.at_once:
                with contextlib.suppress(_CancelledAfter):  # cancelled again: seen through
                    await _seen_through(self._hand_back_claimed, claimed)
            raise cancelled.cancellation from None

    def _hand_back_claimed(self, claimed: list[_Started]) -> None:
        """Hand back tasks claimed and begun as the run was cancelled, none of them run."""
        for (view, _claim, claim_id, _history), begun in claimed:
            try:
                if isinstance(begun, BaseException):
                    raise begun
                self._count(self._release(begun.run) if isinstance(begun, _Begun) else begun)
            except Exception:
                logger.warning(
                    "task %s, claimed as the run was cancelled, could not be handed back: a "
                    "worker takes it over once its claim's lease runs out",
                    view.task_id,
                    exc_info=True,
                )
            finally:
                self.session.let_go(view.task_id, claim_id)

    def _claimed_until(self, task_id: str) -> float:
        """The lease of this worker's claim of a task, as recorded (a claim held nowhere else,
        a replay check's: from now)."""
        session = self.session
        found = session.claimed_until.get(task_id)
        return session.clock() + session.lease if found is None else found

    def _look_ahead(self) -> tuple[float | None, bool, bool]:
        """When the next timer is due, whether a task is claimable, whether approvals wait."""
        with self.session.lock:
            return self._next_timer(), self._claimable(), self._awaiting_approval()

    def _nap(self, seconds: float) -> None:
        """Wait for a timer or an answer: ``seconds``, or in real time less, until the log
        changes (another process freed a permit, answered, submitted: the run looks again).
        An injected sleep (a test's fake clock) is called instead."""
        session = self.session
        if session.sleep is not time.sleep:
            session.sleep(seconds)
            return
        # In slices, so that a stop asked for meanwhile (the engine is closed) is seen, and a
        # clock set forward (a machine resumed from suspend) ends the wait when the engine's
        # clock reaches the timer, not the seconds after.
        deadline = time.monotonic() + seconds
        wake = session.clock() + seconds
        while not self.stopping.is_set() and (left := deadline - time.monotonic()) > 0:
            if self._look(min(left, WATCH_SLICE)) or session.clock() >= wake:
                return

    async def _sleep(self, seconds: float) -> None:
        """:meth:`_nap` on the event loop: the watch is waited on in a worker thread, a slice
        at a time, so that a cancelled run stops waiting at once."""
        session = self.session
        if session.sleep is not time.sleep:
            session.sleep(seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        wake = session.clock() + seconds  # as in _nap: a clock set forward ends the wait
        while not self.stopping.is_set() and (left := deadline - loop.time()) > 0:
            if await asyncio.to_thread(self._look, min(left, WATCH_SLICE)):
                return
            if session.clock() >= wake:
                return

    def _look(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the log to change (True when it may have). The storage
        failing (a dropped connection, a server restarting) is waited out as any read is:
        the slice passes, and the next look watches again (reconnecting).

        A watch opened here has nothing to compare with: the log may have changed since the
        run last looked for work (another process gave a permit back, answered) and before
        the watch began, so the first look says it may have and the run looks again at once
        (else it slept through that change until its timer)."""
        try:
            if self._watch is None:
                self._watch = self.session.log.watch()
                changed = True
            else:
                changed = self._watch.wait(seconds)
        except BackendError as exc:
            if not self._watch_failures:
                logger.warning("watching %s failed: %s", self.session.log.url, exc)
            self._watch_failures += 1
            self.stopping.wait(seconds)
            return False
        if self._watch_failures:
            logger.warning(
                "watching %s again, after %d failed looks",
                self.session.log.url,
                self._watch_failures,
            )
            self._watch_failures = 0
        return changed

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def request_stop(self) -> None:
        """Stop as a worker does on SIGTERM (the engine is being closed): claim nothing more;
        each running task is handed back at its next step; the loop returns once they have."""
        self.stopping.set()
        for wake in list(self._wakers):
            wake()

    def stop_at_once(self) -> None:
        """The worker stops at once (a second signal): the runs still going are abandoned,
        their storage calls under way give up instead of riding out an outage, and their
        tasks are taken over when their leases run out (nothing committed is lost)."""
        self.at_once = True
        self.stopping.set()
        self.session.log.outage.give_up()

    def _close_step_threads(self) -> None:
        """Let the plain steps' threads go (a body a cancelled run gave up on ends in its own
        time; nothing waits for it here)."""
        if self.step_threads is not None:
            self.step_threads.shutdown(wait=False)
            self.step_threads = None

    def _close_committer(self, wait: bool = True) -> None:
        if self.committer is not None:
            self.committer.close(wait=wait)
            self.committer = None

    # -- the parts -------------------------------------------------------------------------

    def _prepare(self) -> bool:
        """Catch up and take back the tasks of workers that are gone.

        Returns:
            False when the session is paused (nothing may start).
        """
        with self.session.lock:
            self.session.host.catch_up()
            view = self.session.view()
            if view is not None and view.state == "paused":
                return False
            self._tally["recovered"] += self._recover_leases()
        return True

    def _boundary(self, *, room: bool, caught_up: bool = False) -> tuple[bool, float]:
        """Catch up, mark missed deadlines, fire due schedules and cross a task boundary once a
        task has run. The caller holds no lock: the policies' callbacks (health checks,
        ``on_interruption``) run without the session's lock, so that the worker's other
        threads go on meanwhile (see :meth:`Boundary.cross`).

        Args:
            room: whether the caller would claim a task now (a free slot).
            caught_up: the caller caught up just now, under the session's lock (and folded
                what its lease recovery appended): no second read of the log.

        Returns:
            Whether the session is paused (by the error budget, here or in another process:
            nothing starts, no schedule fires; the boundary is crossed all the same: the flow
            moves on, deferred interruptions are delivered); and the seconds the error budget
            says to wait before the next task starts (0.0: none). The caller waits them
            without the session's lock (:meth:`_slow_down`), then comes back: that turn claims
            without crossing the boundary again.
        """
        session = self.session
        with session.lock:
            if not caught_up:
                session.host.catch_up()
            self._tally["missed"] += self._mark_missed()
            paused = self._paused()
            if self.schedules is not None and not paused:
                self._tally["scheduled"] += self.schedules.fire(self._began)
        if not self._tally["runs"]:
            self.degradations.restore_all()
            # Read again after the health checks (a peer may have paused the session).
            with session.lock:
                paused = paused or self._paused()
            return paused, 0.0
        if self._paced:  # crossed just before the slow-down waited out since
            self._paced = False
            return paused, 0.0
        # A task boundary: components, flow, deferred interruptions, budget.
        verdict = self.boundary.cross()
        if paused or verdict.choice == "pause":
            return True, 0.0
        if verdict.choice == "slow_down" and verdict.delay > 0 and room:
            with session.lock:
                claimable = self._claimable()
            if claimable:
                self._paced = True
                return False, verdict.delay
        return False, 0.0

    def _slow_down(self, seconds: float, stop: threading.Event | None = None) -> None:
        """Wait the error budget's slow-down before the next task starts, without the
        session's lock (the worker's other threads go on: its task runs, a submission, a
        cancel); a stop (``stop``, or the worker stopping) ends the wait. An injected sleep (a
        test's fake clock) is called instead."""
        session = self.session
        if session.sleep is not time.sleep:
            session.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while not (self.stopping.is_set() or (stop is not None and stop.is_set())):
            if (left := deadline - time.monotonic()) <= 0:
                return
            self.stopping.wait(min(left, WATCH_SLICE))

    async def _slow_down_async(self, seconds: float, stop: asyncio.Event | None = None) -> None:
        """:meth:`_slow_down` on the event loop, which goes on meanwhile; a cancelled run
        stops waiting at once. An injected sleep is called in a worker thread."""
        session = self.session
        if session.sleep is not time.sleep:
            await asyncio.to_thread(session.sleep, seconds)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not (self.stopping.is_set() or (stop is not None and stop.is_set())):
            if (left := deadline - loop.time()) <= 0:
                return
            await asyncio.sleep(min(left, WATCH_SLICE))

    def _fake_time_passed(self) -> bool:
        """On a virtual clock (a test's fake clock: its ``virtual`` is True), with nothing
        running: move the clock to the session's next timer or schedule tick through the
        engine's sleep, as :meth:`run` does, and say so (True: look again now). A serving
        worker otherwise waits in real time, and a fake clock's timers would never come due.
        False: a real clock (whatever sleep it was given), or no timer."""
        session = self.session
        if session.sleep is time.sleep or getattr(session.clock, "virtual", False) is not True:
            return False
        ticks = self.schedules.next_due() if self.schedules is not None else None
        moments = [m for m in (self._next_timer(), ticks) if m is not None]
        if not moments:
            return False
        session.sleep(max(0.0, min(moments) - session.clock()))
        return True

    def _nap_limit(self) -> float:
        """The longest a run waits for a timer before it looks again: an hour in real time; on
        a virtual clock (a test's fake clock, ``virtual`` True), which jumps at once, until the
        next moment something else is due (a schedule's tick, a deadline passing: by the hour,
        a wait of years took seconds of CPU)."""
        session = self.session
        if getattr(session.clock, "virtual", False) is not True:
            return TIMER_NAP
        now = session.clock()
        moments = [
            # A deadline is missed once the clock is past it.
            math.nextafter(v.deadline, math.inf)
            for v in session.unfinished_tasks()
            if v.deadline is not None and v.deadline >= now and v.state in ("queued", "waiting")
        ]
        if self.schedules is not None and (tick := self.schedules.next_due()) is not None:
            moments.append(tick)
        return max(0.0, min(moments) - now) if moments else math.inf

    def _idle_for(self, *, idle: bool) -> float:
        """How long a serving loop may wait for a wake-up: until the next timer, or until a
        peer's claim runs out, at most a third of a lease (it looks at the peers then)."""
        session = self.session
        now = session.clock()
        limit = session.lease / 3
        if not idle:
            return limit
        if self._peer_of_this_host_runs():
            limit = min(limit, DEAD_PEER_LOOK)
        ticks = self.schedules.next_due() if self.schedules is not None else None
        moments = [m for m in (self._next_timer(), self._next_expiry(), ticks) if m is not None]
        if not moments:
            return limit
        return max(0.0, min(limit, min(moments) - now))

    def _peer_of_this_host_runs(self) -> bool:
        """Whether another worker of this host runs a task of the session (its death is seen
        at once, by its pid: an idle worker looks often enough to take its tasks over)."""
        own = self.session.worker
        host = own.split("/", 1)[0] + "/"
        return any(
            v.state == "running" and v.worker != own and v.worker.startswith(host)
            for v in self.session.running_tasks()
        )

    def _count(self, outcome: Outcome) -> None:
        kind, run = outcome
        tally = self._tally
        tally["cancelled" if kind == "lost" else kind] += 1
        if run is not None:
            run.end_tries(kind)
            notify(run.observer, "task_ended", run.observed, kind)
            tally["steps_run"] += run.steps_run
            tally["steps_replayed"] += run.steps_replayed

    def _count_ended(self, ended: Iterable[Future[Outcome] | asyncio.Future[Outcome]]) -> None:
        """Count the runs that ended together, then raise the first one's error (its storage
        failed, it was interrupted): the others are counted and told to the observer all the
        same, as a serving loop's are."""
        error: BaseException | None = None
        for run in ended:
            try:
                self._count(run.result())
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

    def _caught_up(self) -> None:
        with self.session.lock:
            self.session.host.catch_up()

    def _views_caught_up(self) -> None:
        """Catch the views up as a run or a service ends (what its last tasks recorded shows
        in them). It fails only when the storage does, and then the run still ends as it
        would: the views catch up at the next read; the failure is logged, not raised."""
        try:
            self._caught_up()
        except Exception as exc:
            logger.warning(
                "session %s: catching the views up as the worker stops failed (they catch up "
                "at the next read): %s",
                self.session.name,
                exc,
            )

    def _summary(self, started: float, paused: bool) -> RunSummary:
        return RunSummary(elapsed=self.session.clock() - started, paused=paused, **self._tally)

    def _awaiting_approval(self) -> bool:
        return bool(self.session.host.projections.decisions.waiting(self.session.name))

    def _claimable(self) -> bool:
        tasks = self.session.host.projections.tasks
        return (
            tasks.next_queued(self.session.name) is not None
            or self._ready_waiting() is not None
            or self._registered_again() is not None
        )

    def _first_ready(self) -> TaskView | None:
        """The most urgent task ready after a wait, or registered again (None: none is)."""
        ready, again = self._ready_waiting(), self._registered_again()
        if ready is None or (again is not None and again.queue_key() < ready.queue_key()):
            return again
        return ready

    def _registered_again(self) -> TaskView | None:
        """The oldest of this session's unregistered tasks whose function this worker has."""
        tasks = self.session.host.projections.tasks
        return tasks.registered_again(self.session.name, self.registry.knows)

    def _unregistered(self, view: TaskView) -> None:
        """Record that no function here answers to a task's name: it waits, unregistered, for a
        worker that has one (a queued task a peer without the function would also skip)."""
        session = self.session
        logger.warning(
            "task %s: no function registered as %r here; it waits, unregistered, for a worker "
            "that has one (or `onward abandon %s`)",
            view.task_id,
            view.name,
            view.task_id,
        )
        with contextlib.suppress(VersionConflict):  # it moved meanwhile: look again
            transition(
                session.log,
                "task",
                view.task_id,
                task_stream(view.task_id),
                view.state,
                view.version,
                TaskUnregistered(name=view.name, worker=session.worker),
                session.context,
            )
        session.host.catch_up()

    def _ready_waiting(self) -> TaskView | None:
        """The most urgent of this session's waiting tasks that may run now (one waiting for
        a human or another process without a timer is not)."""
        tasks = self.session.host.projections.tasks
        return tasks.ready_waiting(self.session.name, self.session.clock(), self._subtasks_ended)

    def _subtasks_ended(self, view: TaskView) -> bool:
        """Whether every subtask a waiting parent waits for has ended. The look starts where
        the last one stopped, at a subtask still under way, and goes round from there: each
        ended one is passed once (looking at them all before each claim made a parent of N
        subtasks cost the square of N). A subtask retried since it was passed is seen on the
        last round, which looks at them all before it says yes."""
        tasks = self.session.host.projections.tasks
        on = view.waiting_on
        kept = self._subtask_looks.get(view.task_id)
        start = kept[1] if kept is not None and kept[0] is on else 0
        count = len(on)
        for step in range(count):
            at = (start + step) % count
            child = tasks.view(on[at])
            if child is None or not child.terminal:
                if len(self._subtask_looks) > _SUBTASK_LOOKS_KEPT:
                    self._subtask_looks.clear()
                self._subtask_looks[view.task_id] = (on, at)
                return False
        self._subtask_looks.pop(view.task_id, None)
        return True

    def _next_timer(self) -> float | None:
        """When the first wait of this session's tasks ends (None: none is on a timer); a
        task holding events of a newer onward is never resumed here, and its timer is not
        waited for."""
        return self.session.host.projections.tasks.next_timer(self.session.name)

    def _claim_next(self) -> Claimed | None:
        """Claim a most urgent runnable task whose history reads back intact: an append at its
        stream's expected version. Returns the view, the claim, its id and the history before
        it.

        The most urgent of the tasks ready after a wait (or registered again) and the queue's
        head, by priority, then deadline, then submission order (a ready task comes first on
        a tie); once another worker won a race for a task, a queued one is picked at random
        among those of the head's priority near it, so that many workers rarely race for the
        same task again (a lone worker keeps the queue's order exactly).
        """
        tasks = self.session.host.projections.tasks
        contended = False
        for _ in range(100):
            view, head = self._first_ready(), tasks.next_queued(self.session.name)
            if head is not None and (view is None or head.queue_key() < view.queue_key()):
                near = tasks.near_head(self.session.name) if contended else []
                view = self._rng.choice(near) if near else head
            if view is None:
                return None
            if not self.registry.knows(view.name):
                self._unregistered(view)  # it waits for a worker that has its function
                continue
            try:
                history = self._history(view)
            except CorruptRecord as damage:
                self._damaged(view, damage)
                continue
            if not history or history[-1].version != view.version:
                self.session.host.catch_up()  # the projections are behind its stream
                continue
            now = self.session.clock()
            claim = TaskClaimed(
                worker=self.session.worker,
                lease_until=now + self.session.lease,
                attempt=view.attempt + 1,
            )
            try:
                result = transition(
                    self.session.log,
                    "task",
                    view.task_id,
                    task_stream(view.task_id),
                    view.state,
                    view.version,
                    claim,
                    Context(
                        session=self.session.name,
                        actor=self.session.worker,
                        # The claim answers the task's submission: a decision's chain of
                        # causes ends at the TaskSubmitted that started it.
                        causation_id=submission_id(view.task_id),
                        correlation_id=view.task_id,
                    ),
                )
            except VersionConflict:
                self.session.host.catch_up()  # another worker got there first: look again
                contended = True
                continue
            # Ours from now until the run ends: never taken back as a claim left over.
            self.session.hold(view.task_id, result.event_ids[0], claim.lease_until)
            self.session.host.catch_up()
            return Claimed(view, claim, result.event_ids[0], history)
        return None

    def _claim_up_to(self, count: int) -> list[Claimed]:
        """Claim up to ``count`` of the most urgent runnable tasks (the caller holds the
        session's lock), in the order :meth:`_claim_next` takes them: tasks ready after a wait
        one by one; the queue's first tasks that come before them with their claims committed
        together, in one transaction (one fsync for many claims; each at its own stream's
        expected version, so a claim another worker beat is refused alone)."""
        tasks = self.session.host.projections.tasks
        claimed: list[Claimed] = []
        while len(claimed) < count:
            ready, head = self._first_ready(), tasks.next_queued(self.session.name)
            if head is None and ready is None:
                break
            left = count - len(claimed)
            if (
                left > 1
                and head is not None
                and (ready is None or head.queue_key() < ready.queue_key())
            ):
                before = None if ready is None else ready.queue_key()
                together = self._claim_queued_together(left, before)
                if together:
                    claimed += together
                    continue
            found = self._claim_next()  # one at a time: a ready task, the last one, a lost race
            if found is None:
                break
            claimed.append(found)
        return claimed

    def _claim_queued_together(
        self, count: int, before: tuple[int, float, int] | None = None
    ) -> list[Claimed]:
        """Claim the queue's first ``count`` tasks (those that come ``before`` a key, if
        given) in one commit (see :meth:`_claim_up_to`); those it cannot claim so (another
        worker's, no function here, a stream that reads back other than folded) go back to
        the queue for :meth:`_claim_next`."""
        session = self.session
        tasks = session.host.projections.tasks
        heads = tasks.take_heads(session.name, count, before)
        claimed: list[Claimed] = []
        try:
            claimed = self._claim_heads(heads)
        finally:  # what was not claimed, even on a storage fault, goes back to the queue
            ours = {found.view.task_id for found in claimed}
            tasks.put_back(view for view in heads if view.task_id not in ours)
        session.host.catch_up()
        return claimed

    def _claim_heads(self, heads: list[TaskView]) -> list[Claimed]:
        """Claim ``heads``, taken off the queue, in one commit: those this worker can run
        and whose streams read back as folded."""
        session = self.session
        chosen: list[tuple[TaskView, TaskClaimed, list[Recorded]]] = []
        now = session.clock()
        known = [view for view in heads if self.registry.knows(view.name)]
        # Their histories in one read (a query for many streams, not one each).
        read = session.histories.read_many([task_stream(view.task_id) for view in known])
        for view in known:
            try:
                history = self._history(view, read[task_stream(view.task_id)])
            except CorruptRecord:
                continue  # _claim_next marks it damaged
            if not history or history[-1].version != view.version:
                continue
            validate("task", view.task_id, view.state, "TaskClaimed")
            claim = TaskClaimed(
                worker=session.worker, lease_until=now + session.lease, attempt=view.attempt + 1
            )
            chosen.append((view, claim, history))
        results = session.log.commit_groups(
            []
            if not chosen
            else [
                [
                    Append(
                        stream=task_stream(view.task_id),
                        events=[claim],
                        expected_version=view.version,
                        context=Context(
                            session=session.name,
                            actor=session.worker,
                            causation_id=submission_id(view.task_id),
                            correlation_id=view.task_id,
                        ),
                    )
                ]
                for view, claim, _history in chosen
            ]
        )
        claimed: list[Claimed] = []
        for (view, claim, history), result in zip(chosen, results, strict=True):
            if isinstance(result, AppendResult):
                session.hold(
                    view.task_id, result.event_ids[0], claim.lease_until
                )  # ours till it ends
                claimed.append(Claimed(view, claim, result.event_ids[0], history))
            elif not isinstance(result, VersionConflict):  # a lost race is looked at again
                logger.warning(
                    "claim of task %s not committed with the others (%s): claimed alone",
                    view.task_id,
                    result,
                )
        return claimed

    def _history(
        self, view: TaskView, read: list[Recorded] | CorruptRecord | None = None
    ) -> list[Recorded]:
        """A task's history, read before its claim (or ``read`` already, with others); for a
        fork, its origins' records it takes its first steps from are read too: they are its
        history as much as its own stream.

        Raises:
            CorruptRecord: a record of its stream, or of an origin's it takes steps from,
                does not read back intact.
        """
        if isinstance(read, CorruptRecord):
            raise read
        history = self.session.histories.read(task_stream(view.task_id)) if read is None else read
        submitted = history[0].event if history else None
        if isinstance(submitted, TaskSubmitted) and submitted.forked_from is not None:
            inherited_records(self.session.log, submitted)  # read again as its run begins
        return history

    def _damaged(self, view: TaskView, damage: CorruptRecord) -> None:
        """A task whose history did not read back intact (its own stream, its inbox, or the
        stream of an origin it takes steps from, as a fork): mark it so, never claim it."""
        logger.warning(
            "task %s is not run: its history cannot be trusted: %s (`onward quarantine %s` "
            "sets it aside)",
            view.task_id,
            damage,
            view.task_id,
        )
        mark = StreamDamage(
            stream=damage.stream,
            version=damage.version,
            position=damage.position,
            kind=ProblemKind(damage.kind),
            reason=damage.reason,
        )
        # Under the session's lock: a run's end marks it from its own thread, where a round
        # may be folding a page into the same projections (saved in part, at the position
        # before it, the page's first events would be folded twice from that checkpoint).
        own = task_stream(view.task_id)
        with self.session.lock:
            self.session.host.projections.mark_damaged(mark)
            if damage.stream not in (own, inbox_stream(view.task_id)):
                # An origin's damage is the fork's: marked at the origin's record, which a
                # replay finds failing again (the fork's claim reads it and marks it again).
                self.session.host.projections.mark_damaged(
                    msgspec.structs.replace(
                        mark,
                        stream=own,
                        reason=f"in its origin's stream {damage.stream!r}: {damage.reason}",
                    )
                )
            # A fold from an older checkpoint would not see it: save the mark for the next
            # reader.
            self.session.host.checkpoint()

    def _execute(
        self, view: TaskView, claim: TaskClaimed, claim_id: str, history: list[Recorded]
    ) -> Outcome:
        """Run one claimed task to its end, a wait, a lost lease, or its hand-back.

        Raises:
            BackendError: the engine's storage failed (StorageUnavailable: an outage outlasted
                the log's tolerance); nothing was recorded as the task's outcome.
        """
        with self._running_lock:
            self._running += 1
        outcome: Outcome | None = None
        try:
            outcome = self._run_task(view, claim_id, history)
            return outcome
        except StorageLost as lost:
            raise lost.error from None  # not the task's failure: the run stops
        finally:
            with self._running_lock:
                self._running -= 1
                self.session.let_go(view.task_id, claim_id)
            if outcome is None or outcome[0] != "waiting":  # kept only for its next run
                self.session.histories.forget(task_stream(view.task_id))

    def _run_task(self, view: TaskView, claim_id: str, history: list[Recorded]) -> Outcome:
        """Run a claimed task in this thread (an ``async def`` one on an event loop of its
        own); where an event loop runs in this thread, a plain task in a thread of its own.

        Raises:
            UsageError: an ``async def`` task, while an event loop runs in this thread
                (``run()`` called from a coroutine, a notebook): the task is handed back.
        """
        begun = self._begin(view, claim_id, history)
        if not isinstance(begun, _Begun):
            return begun
        if not on_event_loop():
            return self._run_begun(view, begun)
        run, definition, _args, _kwargs = begun
        if definition.is_async:
            self._release(run, "run() was called where an event loop runs")
            raise UsageError(
                f"task {view.task_id} ({view.name}) is async def, and run() was called where "
                "an event loop already runs (a coroutine, a notebook): await "
                "engine.run_async() there instead; the task was handed back"
            )
        # A plain task, where an event loop runs (a notebook): its code runs in a thread of
        # its own, where its steps are called in place as on any synchronous path (here they
        # would be taken for an async task's, to await). Interrupted meanwhile (Ctrl-C), this
        # thread does not wait for it: the run stops at once, as it does from a pool's.
        own = ThreadPoolExecutor(1, thread_name_prefix="onward-task")
        try:
            return own.submit(contextvars.copy_context().run, self._run_begun, view, begun).result()
        finally:
            own.shutdown(wait=False)

    async def _run_task_async(
        self, view: TaskView, begun: _Begun | Outcome | BaseException
    ) -> Outcome:
        """Run a claimed and begun task on the event loop: an ``async def`` one is awaited; a
        plain one runs in a worker thread; every storage call runs in a worker thread."""
        if isinstance(begun, BaseException):
            raise begun
        if not isinstance(begun, _Begun):
            return begun
        run, definition, args, kwargs = begun
        if not definition.is_async:
            return await self._run_plain_async(view, begun)
        run.thread = threading.get_ident()  # where its steps are called from
        token = enter_task_code(run)
        try:
            with observing(run.observer, run.observed):
                result = await definition.fn(*args, **kwargs)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                # The task's own: something it awaited was cancelled, and it let that out. It
                # fails; the run goes on.
                run.in_flight.task_left(exc)
                return await self._conclude_async(view, run, None, exc)
            # The loop stops (the run was cancelled): hand the task back, as a stopping worker
            # does (not when it stops at once: its lease runs out), then let the cancellation
            # go on. A cancelled await is no step failure.
            await self._hand_back_async(run)
            raise
        except BaseException as exc:
            # Steps it started and did not await (a gather it left on a sibling's error) end
            # first: their outcomes are recorded before the task's end or wait.
            run.in_flight.task_left(exc)
            return await self._conclude_async(view, run, None, exc)
        finally:
            leave_task_code(token)
        run.in_flight.task_left()
        return await self._conclude_async(view, run, result)

    async def _run_plain_async(self, view: TaskView, begun: _Begun) -> Outcome:
        """Run a plain task's code in a worker thread, which a cancellation of the run cannot
        stop: the task then hands itself back at its next step, once what the step under way
        returns is recorded (as a stopping worker's does), and the cancellation goes on when
        it has (not when the worker stops at once, nor once cancelled again: its lease runs
        out)."""
        work = asyncio.ensure_future(asyncio.to_thread(self._run_begun, view, begun))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError as exc:
            if work.cancelled() or self.at_once:
                raise
            cancelled = exc
        self.stopping.set()  # the run ends: its plain tasks hand their tasks back
        try:
            outcome = await asyncio.shield(work)
        except asyncio.CancelledError:
            # Cancelled again: it waits no longer (as a second signal stops a worker at once);
            # the thread runs on, and its task is taken over when its lease runs out.
            raise
        except BaseException as exc:
            raise cancelled from exc
        self._count(outcome)
        raise cancelled

    async def _conclude_async(
        self, view: TaskView, run: TaskRun, result: Any, error: BaseException | None = None
    ) -> Outcome:
        """Record how an ``async def`` task's code ended, once the steps it started have their
        outcomes. The run cancelled meanwhile: while steps still run, the task is handed back
        (as when its code is cancelled); once its end is being recorded, that is seen through
        (the task would stay ``running`` until its lease ran out), then the cancellation goes
        on."""
        try:
            await run.in_flight.calls_ended()
        except asyncio.CancelledError:
            await self._hand_back_async(run)
            raise
        # On the loop: its commit joins the group committer's next transaction, with no
        # worker thread's turn (but for the rare ends that append otherwise).
        ending = drive_async(self._ending(view, run, result, error), run.effect_async)
        try:
            return await _seeing_through(asyncio.ensure_future(ending))
        except _CancelledAfter as cancelled:
            self._count(cancelled.outcome)  # recorded: its run's end, told to the observer
            raise cancelled.cancellation from None

    async def _hand_back_async(self, run: TaskRun) -> None:
        """Hand a task back as its run is cancelled (not when the worker stops at once: its
        lease runs out), once the plain steps' bodies under way have returned (cancelled again
        meanwhile, it waits no longer and hands nothing back: its lease runs out), its append
        seen through any further cancellation; whatever the hand-back meets, the cancellation
        goes on."""
        if self.at_once:
            return
        await run.in_flight.abandoned_ended()
        try:
            outcome = await _seen_through(self._release, run)
        except _CancelledAfter as again:
            outcome = again.outcome
        except BaseException:
            return
        self._count(outcome)  # its run's end, told to the observer

    def _run_begun(self, view: TaskView, begun: _Begun) -> Outcome:
        """Run a begun task's code in this thread (an ``async def`` one on an event loop of
        its own) and record how it ended."""
        run, definition, args, kwargs = begun
        run.thread = threading.get_ident()  # where its steps are called from
        token = enter_task_code(run)
        try:
            with observing(run.observer, run.observed):
                if definition.is_async:
                    result = asyncio.run(_with_its_steps(run, definition.fn(*args, **kwargs)))
                else:
                    result = definition.fn(*args, **kwargs)
        except BaseException as exc:
            return self._conclude(view, run, error=exc)
        finally:
            leave_task_code(token)
        return self._conclude(view, run, result=result)

    def _begin(self, view: TaskView, claim_id: str, history: list[Recorded]) -> _Begun | Outcome:
        """Set up a claimed task's run from its history (read before the claim); or end it at
        once (the worker stops, or no function is registered under its name)."""
        task_id = view.task_id
        stream = task_stream(task_id)
        submitted = history[0].event
        assert isinstance(submitted, TaskSubmitted)
        context = Context(
            session=self.session.name,
            actor=self.session.worker,
            causation_id=claim_id,
            correlation_id=history[0].meta.correlation_id or task_id,
        )
        run = TaskRun(
            self.session.log,
            task_id,
            stream,
            history,
            context,
            self.session.clock,
            healer=self.healer,
            sleep=self.session.sleep,
            judge=self.judge,
            stopping=self.stopping,
            committer=self.committer,
            step_threads=self.step_threads,
            # A fork takes the recorded outcomes of its origin's first steps as its own.
            inherited=inherited_records(self.session.log, submitted),
            limits=self.limits,
            tenure=Tenure(self.session, self._claimed_until(task_id)),
        )
        # The history was read before the claim: the run appends after the claim, and only
        # there (if another worker took the task since, its first append is refused).
        run.version = history[-1].version + 1
        observer = run.observer = self.session.observer
        if observer is not None:
            start = TaskStart.of(view, history, self.session.clock())
            run.observed = notify(observer, "task_started", start)
        if self.stopping.is_set():
            return self._release(run)
        if self._paused():
            # Paused by another process as this one claimed: the pause came first in the log
            # (the claim's commit was followed by a catch-up), so the task does not start.
            return self._release(run, "the session was paused")
        try:
            definition: TaskDef = self.registry.task(submitted.name)
        except UsageError:  # its function went away since the claim: let a worker that has it
            return self._release(run, "no function registered under its name here")
        args, kwargs = definition.arguments(submitted.args, submitted.kwargs)
        return _Begun(run, definition, args, kwargs)

    def _conclude(
        self,
        view: TaskView,
        run: TaskRun,
        result: Any = None,
        error: BaseException | None = None,
    ) -> Outcome:
        """Record how a task run ended, in this thread (:meth:`_ending`).

        Raises:
            StorageLost: the engine's storage failed under the task: not its failure.
            BaseException: an interruption of the worker itself (KeyboardInterrupt...).
        """
        return drive(self._ending(view, run, result, error), run.effect)

    def _ending(
        self, view: TaskView, run: TaskRun, result: Any, error: BaseException | None
    ) -> Generator[Effect, Any, Outcome]:
        """How a task run ended, once for both paths: it succeeded or failed, waits, was
        handed back or lost its claim. It yields what must be done (its end's commit, which
        an ``async def`` task's loop hands to the group committer itself; the rarer appends
        in a worker thread there), as the step protocol does.

        Raises:
            StorageLost: the engine's storage failed under the task: not its failure.
            BaseException: an interruption of the worker itself (KeyboardInterrupt...).
        """
        if isinstance(error, BaseExceptionGroup) and not isinstance(error, Exception):
            # ``asyncio.TaskGroup`` gathers its tasks' errors: the engine's own signal among
            # them (a step of the task waits, the worker stops, the task was taken) is the run's.
            error = _signal_in(error) or error
        if run.in_flight.held is not None:
            # A wait held for the failures of steps that raised at once, whose last decision
            # did not record it (it raised): the task waits, as decided.
            try:
                yield Blocking(run.record_held)
            except LeaseLost as lost:
                logger.info("%s", lost)
                return _lost(lost), run
        if run.waiting and error is None:
            # It caught the signal to wait (``except:`` or ``except BaseException:`` around a
            # step, or ``gather(..., return_exceptions=True)``, which returns it as a value)
            # and returned: it waits, as recorded, and runs again when due.
            if _returns_signal(result):  # gathered as a value: as meant, nothing to warn of
                logger.info("task %s (%s) waits as recorded", view.task_id, view.name)
            else:
                logger.warning(
                    "task %s (%s) caught onward's signal to wait (an `except:` or `except "
                    "BaseException:` around a step, `gather(..., return_exceptions=True)`, "
                    "which returns it as a value, or a timeout around a step or durable wait, "
                    "`asyncio.timeout` or `wait_for`, that ended as the wait was recorded?) "
                    "and went on; it waits as recorded and runs again when due: catch "
                    "Exception, not BaseException, around steps",
                    view.task_id,
                    view.name,
                )
            return "waiting", run
        if run.released and (error is None or isinstance(error, Exception)):
            # The worker stopped it at a step, and its code went on with the signal as a
            # value (``gather(..., return_exceptions=True)``) or caught it: handed back.
            released: Outcome = yield Blocking(self._release, run)
            return released
        if error is None:
            try:
                run.check_awaited()  # an `engine.sleep(...)` left unawaited did nothing
                if _weighty(result):  # its redaction may take long: off the event loop
                    stored = yield Blocking(self._stored_result, view, result)
                else:
                    stored = self._stored_result(view, result)
            except UsageError as exc:
                logger.info("task %s failed: %s", view.task_id, exc)
                return (
                    yield from self._finishing(
                        view, run, TaskFailed(error_type="UsageError", message=error_message(exc))
                    )
                )
            try:
                return (
                    yield from self._finishing(
                        view, run, TaskSucceeded(result=stored), self._next(view)
                    )
                )
            except (UnencodableValue, PayloadTooLarge) as exc:
                # A result over the log's payload limit too: else each run of the task would
                # end so again, the task never finished.
                logger.info("task %s failed: %s", view.task_id, exc)
                failed = TaskFailed(
                    error_type=type(exc).__name__, message=error_message(exc, run.redact)
                )
                return (yield from self._finishing(view, run, failed))
        if isinstance(error, Suspended):
            return "waiting", run
        if isinstance(error, Released):
            stopped: Outcome = yield Blocking(self._release, run)
            return stopped
        if isinstance(error, LeaseLost):
            logger.info("%s", error)
            return _lost(error), run
        if isinstance(error, asyncio.CancelledError):
            # The task's own, let out of it (a cancellation of the run is handled before
            # here): its failure, not the worker's.
            message = error_message(error, run.redact) or "a CancelledError escaped the task"
            logger.info("task %s failed: CancelledError: %s", view.task_id, message)
            return (
                yield from self._finishing(
                    view, run, TaskFailed(error_type="CancelledError", message=message)
                )
            )
        if isinstance(error, CorruptRecord) and error.stream == inbox_stream(view.task_id):
            # A message it cannot read: the log is damaged, not the task. It is marked so
            # (never claimed again until set aside) and handed back.
            yield Blocking(self._damaged, view, error)
            damaged: Outcome = yield Blocking(self._release, run, "its inbox is damaged")
            return damaged
        if not isinstance(error, Exception) or _storage_failed(error):
            raise error  # the worker's own interruption, or its storage: not the task's failure
        # Redacted (and cut) once, for the log line as for the record.
        message = error_message(error, run.redact)
        logger.info("task %s failed: %s: %s", view.task_id, type(error).__name__, message)
        return (
            yield from self._finishing(
                view, run, TaskFailed(error_type=type(error).__name__, message=message)
            )
        )

    def _stored_result(self, view: TaskView, result: Any) -> Any:
        """A task's result as the log will hold it (see :func:`onward.events.encode_value`).

        Raises:
            UsageError: it cannot be stored (UnencodableValue).
        """
        return encode_value(
            result,
            what=f"task {view.task_id} ({view.name}): its result",
            redactor=self.session.log.redactor,
        )

    def _release(self, run: TaskRun, reason: str = "the worker stopped") -> Outcome:
        """Hand a running task back (the worker stops): a peer may claim it at once. The
        results of plain steps' bodies that its cancelled run gave up on, and that returned
        meanwhile, are recorded with it (:meth:`TaskRun.abandoned_results`)."""
        batch = run.abandoned_results()
        released = TaskReleased(worker=self.session.worker, reason=reason)
        batch.add(released)
        try:
            try:
                run.commit(batch)
            except PayloadTooLarge as exc:
                # A result over the log's limit: handed back without the results (those steps
                # run again, and their refusal is then recorded as their outcome).
                logger.info("task %s: handed back without its steps' results: %s", run.task_id, exc)
                only = run.new_batch()
                only.add(released)
                run.commit(only)
        except LeaseLost as lost:
            logger.info("%s", lost)
            return _lost(lost), run
        return "released", run

    def _next(self, view: TaskView) -> list[Event]:
        """The rulebook's decision on what follows a task that completes (scenario
        ``task_completed``), recorded with the task's success."""
        tasks = self.session.projections.tasks
        session = self.session.name
        # Without the session's lock (a round may hold it for a claim's commit): a look that
        # drops no stale queue entry, where the round's claims take entries off the same queue.
        queued = tasks.has_queued(session) or tasks.waits_in(session)
        facts = {"task": view.name, "parent": view.parent or "", "queued": int(queued)}
        verdict = self.rulebook.decide("task_completed", facts)
        if verdict is None:
            return []
        return [
            DecisionMade(
                kind="task_completed",
                subject=view.task_id,
                choice=verdict.choice,
                rule=verdict.rule,
                inputs={**facts, "why": verdict.description},
            )
        ]

    def _finishing(
        self,
        view: TaskView,
        run: TaskRun,
        event: TaskSucceeded | TaskFailed,
        before: Sequence[Event] = (),
    ) -> Generator[Effect, Any, Outcome]:
        """Record the task's success or failure (with the decisions ``before`` it). The end of
        a subtask whose parent may wait for it wakes the idle workers (its commit says so):
        the parent is runnable now, and this worker, which would run it, may die first."""
        wakes = self._parent_may_wait(view)
        try:
            if run.waiting and isinstance(event, TaskFailed):
                # Its code raised its own error while a step it had left (a gather it left on
                # a sibling's error, a TaskGroup that cancelled it) recorded that the task
                # waits: the task ends as its code did.
                yield Blocking(run.end_after_wait, event, wakes)
            else:
                batch = run.new_batch()
                for each in (*before, event):
                    batch.add(each)
                batch.wakes = wakes
                yield Commit(batch)
        except LeaseLost as lost:
            logger.info("%s", lost)
            return _lost(lost), run
        except Suspended:  # a call the task gave up on recorded that it waits, meanwhile
            return "waiting", run
        return ("succeeded" if isinstance(event, TaskSucceeded) else "failed"), run

    def _parent_may_wait(self, view: TaskView) -> bool:
        """Whether a task has a parent that may wait for it (one not known to have ended:
        its wait may not be folded here yet)."""
        # (A parent ended before a checkpoint stays encoded: it waits for nothing.)
        return view.parent is not None and not self.session.host.projections.tasks.ended(
            view.parent
        )

    def _recover_leases(self) -> int:
        """Expire the claims of running tasks whose worker is gone.

        A worker on this host whose process is dead (or an earlier engine of this process)
        is known to be gone at once; others are gone when their claim's lease and their last
        heartbeat's have both run out.
        """
        session = self.session
        now = session.clock()
        recovered = 0
        # Within a lease of an outage of the storage, a peer's silence proves nothing: it could
        # not record either. Only a peer known dead (on this host) is taken over then.
        silence_counts = session.log.outage.since_last() >= session.lease
        noted: dict[str, int] = {}  # each silent worker's stream version, as this pass wrote it
        unproven = False
        self._graced = None
        for view in session.running_tasks():
            if view.state != "running" or view.unknown_events:
                continue  # a newer onward's task is left to it
            if view.worker == session.worker and view.task_id in session.running:
                # Its own live claim: this worker was paused past its lease (SIGSTOP, a long
                # GC), and no peer took the task meanwhile. It goes on with it.
                continue
            # A worker known to be gone (dead on this host), or this engine's own claim on a
            # task it does not run now (an earlier run of it stopped without recording: its
            # storage failed) is taken back at once; a silent peer once its claim runs out.
            known_gone = worker_gone(view.worker, session.worker) or (
                view.worker == session.worker and view.task_id not in session.running
            )
            if not known_gone and not (silence_counts and now > self._holds_until(view)):
                continue
            if not known_gone and not session.silence_proven(self._holds_until(view), now):
                unproven = unproven or session.appended_at < self._holds_until(view)
                self._graced = session.appended_at + SILENCE_GRACE  # set anew if unproven
                continue
            expiry = Append(
                stream=task_stream(view.task_id),
                events=[TaskLeaseExpired(worker=view.worker, lease_until=view.lease_until)],
                expected_version=view.version,
                context=session.context,
            )
            try:
                if known_gone:
                    session.log.commit([expiry])
                else:
                    note = self._silence_noted(view, noted.get(view.worker))
                    session.log.commit([expiry, note])
                    noted[view.worker] = (note.expected_version or 0) + 1
                recovered += 1
            except VersionConflict:
                continue  # the task moved on, or its worker spoke since this worker read
        if unproven:  # no append of its own since the claim ran out: one now, then a grace
            session.append_own()
            self._graced = session.appended_at + SILENCE_GRACE
        if recovered:
            session.host.catch_up()
        return recovered

    def _silence_noted(self, view: TaskView, version: int | None = None) -> Append:
        """The note, on a silent peer's stream, that this worker expires its claim on a task:
        at the stream's version read here (or ``version``, where this pass noted another of
        its claims), so that a heartbeat not read yet fences the expiry (it commits with the
        note or not at all)."""
        worker = self.session.projections.workers.workers.get(view.worker)
        if version is None:
            version = worker.version if worker is not None else 0
        return Append(
            stream=worker_stream(view.worker),
            events=[
                WorkerClaimExpired(
                    task_id=view.task_id,
                    by=self.session.worker,
                    lease_until=worker.lease_until if worker is not None else 0.0,
                )
            ],
            expected_version=version,
            context=self.session.context,
        )

    def _holds_until(self, view: TaskView) -> float:
        """Until when a running task's claim holds: its lease, the last news of the task, and
        its worker's last heartbeat, whichever is latest."""
        workers = self.session.projections.workers
        return max(
            view.lease_until,
            view.updated_at + self.session.lease,
            workers.holds_until(view.worker),
        )

    def _next_expiry(self) -> float | None:
        """When :meth:`_recover_leases` may next take a peer's claim on this session's running
        tasks over: when the first runs out, but not within a lease of an outage of the
        storage (a peer's silence proves nothing then), and never a newer onward's task."""
        session = self.session
        own = session.worker
        moments = [
            self._holds_until(v)
            for v in session.running_tasks()
            if v.state == "running" and v.worker != own and not v.unknown_events
        ]
        if not moments:
            return None
        # The moment silence counts again (the past, where no outage was seen lately).
        silence_counts = session.clock() + session.lease - session.log.outage.since_last()
        first = min(moments)
        if session.appended_at >= first:  # an own append went through since: a grace after it
            first = session.appended_at + SILENCE_GRACE
        return max(first, silence_counts)

    def _mark_missed(self) -> int:
        missed = 0
        for view in self.session.host.projections.tasks.overdue(self.session.clock()):
            if view.session != self.session.name or view.deadline is None or view.unknown_events:
                continue
            try:
                self.session.log.append(
                    task_stream(view.task_id),
                    [TaskDeadlineMissed(deadline=view.deadline)],
                    expected_version=view.version,
                    context=self.session.context,
                )
                missed += 1
            except VersionConflict:
                continue
        if missed:
            self.session.host.catch_up()
        return missed


#: What a call seen through a cancellation returns.
T = TypeVar("T")


def _step_threads(concurrency: int) -> ThreadPoolExecutor:
    """Threads for the plain steps of up to ``concurrency`` tasks at once (made as needed; at
    least 8, for a task that runs several at once; at most 1,024)."""
    return ThreadPoolExecutor(
        max_workers=min(max(concurrency, 8), 1024), thread_name_prefix="onward-step"
    )


class _CancelledAfter(Exception):
    """A call seen through a cancellation: what it returned, and the cancellation to raise."""

    def __init__(self, outcome: Any, cancellation: asyncio.CancelledError) -> None:
        super().__init__(outcome, cancellation)
        self.outcome = outcome
        self.cancellation = cancellation


async def _seen_through(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, awaited through any cancellation: a call that
    records (a claim, a task's end) is not left half seen.

    Raises:
        _CancelledAfter: the caller was cancelled meanwhile: the call's outcome with it.
        asyncio.CancelledError: the loop is closing: no outcome will come.
    """
    # What asyncio.to_thread does, without the coroutine and the task that would wrap it.
    in_context = functools.partial(contextvars.copy_context().run, fn, *args)
    return await _seeing_through(asyncio.get_running_loop().run_in_executor(None, in_context))


async def _seeing_through(call: asyncio.Future[T]) -> T:
    """:func:`_seen_through` of a call under way (in a worker thread, or a task of the loop).

    Raises:
        _CancelledAfter: the caller was cancelled meanwhile: the call's outcome with it.
        asyncio.CancelledError: the loop is closing: no outcome will come.
    """
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            outcome = await asyncio.shield(call)
            break
        except asyncio.CancelledError as exc:
            if call.cancelled():
                raise
            cancelled = exc
        except Exception as exc:
            if cancelled is not None:  # the cancellation goes on; the call's error is its cause
                raise cancelled from exc
            raise
    if cancelled is not None:
        raise _CancelledAfter(outcome, cancelled)
    return outcome


def _lost(lost: LeaseLost) -> str:
    """A run's outcome when its task was taken from it: ``cancelled`` (by a cancellation) or
    ``lost`` (its lease ran out and a peer took it, it was quarantined or ended elsewhere)."""
    return "cancelled" if lost.cancelled else "lost"


def _returns_signal(result: Any) -> bool:
    """Whether a task's result holds the engine's signal to wait as one of its items (what
    ``asyncio.gather(..., return_exceptions=True)`` gave the code)."""
    items = result if isinstance(result, list | tuple) else ()
    return any(isinstance(item, Suspended) for item in items)


def _signal_in(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The engine's signal among the errors of a group, the strongest first: the task was
    taken (``LeaseLost``), the worker stops (``Released``), the task waits (``Suspended``)."""
    kinds: tuple[type[BaseException], ...] = (LeaseLost, Released, Suspended)
    for kind in kinds:
        found: BaseException | None = group.subgroup(kind)
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is not None:
            return found
    return None


async def _with_its_steps(run: TaskRun, body: Coroutine[Any, Any, Any]) -> Any:
    """An ``async def`` task's coroutine, then the step calls it left under way (a gather it
    left on a sibling's error): their outcomes are recorded before the task's end or wait,
    instead of their bodies being cancelled as the loop closes."""
    try:
        result = await body
    except BaseException as exc:
        run.in_flight.task_left(exc)
        await run.in_flight.calls_ended()
        raise
    run.in_flight.task_left()
    await run.in_flight.calls_ended()
    return result


def _storage_failed(exc: BaseException) -> bool:
    """Whether an error that reached a task is the engine's storage failing (directly or as
    the cause of the task's own error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BackendError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _wake_loop(loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
    """Wake a worker's loop from another thread: nothing when that loop has closed (stopped at
    once, the worker waited for no thread's look under way)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(wake.set)


class _Watcher:
    """Calls ``wake`` whenever the log may have changed (another process's append), and once
    ``stop`` is set (within ``WATCH_SLICE``), from a thread of its own, while a worker serves."""

    def __init__(
        self,
        session: Session,
        wake: Callable[[], object],
        stop: threading.Event | None = None,
    ) -> None:
        self.session = session
        self.wake = wake
        self.stop = stop
        self._closed = threading.Event()
        self._watch: Watch | None = None
        with contextlib.suppress(BackendError):  # the storage is down: the loop watches later
            self._watch = session.log.watch()
        self._thread = threading.Thread(target=self._loop, name="onward-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        failures = 0  # in a row: the storage is down (told once, looked at less often)
        while not self._closed.is_set():
            try:
                if self._watch is None:  # reopened: what changed meanwhile went unseen
                    self._watch = self.session.log.watch()
                    changed = True
                else:
                    changed = self._watch.wait(WATCH_SLICE)
            except Exception as exc:  # the storage is down: look again shortly
                if not failures:
                    logger.warning("watching %s failed: %s", self.session.log.url, exc)
                failures += 1
                changed = False
                self._closed.wait(min(WATCH_SLICE * failures, WATCH_BACK_OFF))
            else:
                if failures:
                    logger.warning(
                        "watching %s again, after %d failed looks", self.session.log.url, failures
                    )
                failures = 0
            if self._closed.is_set():
                break  # closed during the look (at once: nobody waits for this thread)
            if changed or (self.stop is not None and self.stop.is_set()):
                self.wake()

    def close(self, *, wait: bool = True) -> None:
        """Stop watching (``wait=False``: without waiting for a look under way, when the
        worker stops at once)."""
        self._closed.set()
        if wait:
            self._thread.join()
            if self._watch is not None:
                self._watch.close()
