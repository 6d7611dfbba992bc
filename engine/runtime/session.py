"""One session of work on one log: the log, the projections folded from it, the session's stream.

A :class:`Session` is what the engine's parts share: the facade, the scheduler, the task
boundaries, degradation and interruptions all read the projections through it and append to
the session's stream through :meth:`Session.record`. It holds no state of its own that the log
does not: opening it again resumes the session.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from onward.core.errors import StreamDamaged
from onward.core.machines import validate
from onward.events import (
    Append,
    Context,
    Event,
    EventLog,
    FlowStateChanged,
    SessionResumed,
    SessionStarted,
    UnknownEventType,
    UsageError,
    VersionConflict,
    WorkerHeartbeat,
    new_event_id,
    redacted_logger,
)
from onward.events.outage import LAST_PAUSE
from onward.projections import (
    SESSION,
    CatchUp,
    Projections,
    SessionView,
    TaskView,
    session_stream,
)
from onward.projections.flow import flow_trigger
from onward.projections.workers import worker_stream
from onward.runtime.histories import Histories
from onward.runtime.observer import Observer

__all__ = ["SILENCE_GRACE", "Session", "unknown_events_error"]

logger = redacted_logger("onward.engine")

#: How long after an append of its own went through a worker waits before a peer's silence
#: counts: a peer whose heartbeats failed in an outage this worker did not see retries within
#: the outage's longest back-off pause, and its beat lands meanwhile.
SILENCE_GRACE = LAST_PAUSE + 1.0

#: How many times an append to the session's stream looks again after another worker's.
_SESSION_APPEND_TRIES = 20


class Session:
    """A session's log, its projections and its stream, shared by the engine's parts.

    Args:
        log: the open log.
        name: the session's name.
        clock: the source of time.
        sleep: how to wait for a timer.
        lease: seconds a worker's claim on a task lasts without news from it.
        worker: this worker's id.
        checkpoint_every: save a projection checkpoint after this many events.
        config: the settings recorded when the session starts or is reopened (plain JSON
            values; see :attr:`onward.events.SessionStarted.config`).

    Attributes:
        log: the log.
        name: the session's name.
        clock: the source of time.
        sleep: how to wait for a timer (a test may replace it).
        lease: the lease of a claim, in seconds.
        worker: this worker's id.
        host: the projections' catch-up host.
        histories: the histories of the tasks this engine claimed and that wait, kept for
            their next claim.
        lock: held while the projections are folded or a decision is taken on them.
        context: the envelope fields of the session's own appends.
    """

    def __init__(
        self,
        log: EventLog,
        name: str,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        lease: float,
        worker: str,
        checkpoint_every: int,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.log = log
        self.config = dict(config or {})
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.lease = lease
        self.worker = worker
        self.host = CatchUp(log, checkpoint_every=checkpoint_every)
        self.histories = Histories(log)
        self.lock = threading.RLock()
        self.context = Context(session=name, actor=worker)
        self.closed = False
        #: The tasks this engine runs now, each with the claim its run holds (its other
        #: claims are left over from a stopped run).
        self.running: dict[str, str] = {}
        #: The lease of each of those claims, as recorded.
        self.claimed_until: dict[str, float] = {}
        #: Until when this worker's heartbeats hold its claims, by its own clock (the last
        #: beat's lease), and when a beat last came after that had passed (its claims had
        #: lapsed meanwhile: see :class:`Tenure`).
        self.beat_until = 0.0
        self.lapsed_at = 0.0
        #: When an append of this worker last went through before it counted a peer's silence
        #: (its reads may go on where appends cannot: see :meth:`silence_proven`).
        self.appended_at = 0.0
        self._running_lock = threading.Lock()
        #: Told of the task runs, steps and boundaries (see :mod:`onward.runtime.observer`).
        self.observer: Observer | None = None

    def hold(self, task_id: str, claim_id: str, lease_until: float) -> None:
        """A run of this engine holds the task under this claim (whose lease runs until
        ``lease_until``), until :meth:`let_go`."""
        with self._running_lock:
            self.running[task_id] = claim_id
            self.claimed_until[task_id] = lease_until

    def let_go(self, task_id: str, claim_id: str) -> None:
        """The run under this claim ended. A newer claim of the same task (taken as the run
        recorded a retry's wait, before it had quite ended) is not let go with it: it would
        read as left over, and be expired under its running step."""
        with self._running_lock:
            if self.running.get(task_id) == claim_id:
                del self.running[task_id]
                self.claimed_until.pop(task_id, None)

    def silence_proven(self, holds_until: float, now: float) -> bool:
        """Whether a peer silent since its claim (or permit) held until ``holds_until`` is
        silent for want of life, not of storage: an append of this worker went through since
        then, and a grace ago. Reads alone prove nothing: on SQLite (WAL) they go on while a
        lock past the busy timeout fails every append, the peer's heartbeats included, and a
        worker that appended nothing saw no outage; the peer's beat, retried after a back-off
        pause, lands within the grace."""
        return self.appended_at >= holds_until and now >= self.appended_at + SILENCE_GRACE

    def append_own(self) -> None:
        """Append a heartbeat of this worker (whatever it runs) and note when it went
        through: a peer's silence may count a grace later (see :meth:`silence_proven`)."""
        at = self.clock()
        self.log.append(
            worker_stream(self.worker),
            [WorkerHeartbeat(lease_until=at + self.lease, running=len(self.running))],
            expected_version=None,
            context=self.context,
        )
        self.appended_at = self.clock()

    def renewed(self, at: float, lease_until: float) -> None:
        """A heartbeat was recorded by ``at``, holding this worker's claims until
        ``lease_until``; one that came after the last beat's lease had run out notes the lapse."""
        with self._running_lock:
            if at > self.beat_until:  # the first beat too: a claim may have run out before it
                self.lapsed_at = max(self.lapsed_at, at)
            self.beat_until = max(self.beat_until, lease_until)

    # -- reading ---------------------------------------------------------------------------

    @property
    def projections(self) -> Projections:
        """The read models as of the last catch-up."""
        return self.host.projections

    def catch_up(self) -> Projections:
        """Fold every event appended since the last look (by this or any other process)."""
        with self.lock:
            self.host.catch_up()
        return self.host.projections

    def current(self, fresh: bool) -> Projections:
        """The projections, caught up first when ``fresh`` (what the policies are given)."""
        return self.catch_up() if fresh else self.host.projections

    def view(self) -> SessionView | None:
        """The session's own view (None before it started)."""
        return self.host.projections.sessions.sessions.get(self.name)

    def tasks(self) -> Iterable[TaskView]:
        """This session's tasks, as of the last catch-up (a snapshot: a fold in another thread
        may add tasks meanwhile)."""
        views = list(self.host.projections.tasks.tasks.values())
        return [t for t in views if t.session == self.name]

    def unfinished_tasks(self) -> Iterable[TaskView]:
        """This session's tasks that have not ended, as of the last catch-up (the finished
        tasks of a checkpoint stay encoded)."""
        return (t for t in self.host.projections.tasks.unfinished() if t.session == self.name)

    def running_tasks(self) -> list[TaskView]:
        """This session's running tasks, as of the last catch-up (looked up in an index: a
        look at its peers' claims costs the number of tasks running, not of all queued)."""
        return self.host.projections.tasks.running_in(self.name)

    def check_open(self) -> None:
        """Raise :class:`UsageError` once the engine is closed."""
        if self.closed:
            raise UsageError(f"the engine for session {self.name!r} is closed")

    # -- the session's stream --------------------------------------------------------------

    def open(self) -> None:
        """Fold the log, then start the session, or resume it with its unfinished tasks.

        Any number of processes may open the same session at once: each decides on the
        caught-up log, and one that finds the session started by another resumes it instead.

        An unfinished task that holds events of a newer onward, or whose history is damaged,
        is not resumed (a warning names it); the session's other tasks are. A log whose newest
        records were removed (its head record ends past its last record) is reported as an
        error in the log: a task whose last events were among them would run again.

        Raises:
            StreamDamaged: the session's own history cannot be trusted.
        """
        self.host.open()
        self._check_head()
        stream = session_stream(self.name)

        def start_or_resume(projections: Projections) -> list[Event]:
            view = projections.sessions.sessions.get(self.name)
            damage = projections.damaged.get(stream)
            if damage is not None:
                raise StreamDamaged(
                    "session",
                    self.name,
                    damage,
                    "it cannot be opened (its tasks stay in the log: `onward verify` says "
                    "what is wrong)",
                )
            if view is None:
                return [
                    SessionStarted(
                        name=self.name,
                        host=socket.gethostname(),
                        pid=os.getpid(),
                        version=_version(),
                        config=self.config,
                    )
                ]
            if view.state == "paused":
                # A pause (the error budget's) holds until a person lifts it: a worker that
                # starts, or a process that only submits, must not undo it.
                logger.warning(
                    "session %r is paused: nothing runs until it is resumed (`onward resume "
                    "%s`, or engine.resume())",
                    self.name,
                    self.name,
                )
                return []
            unfinished = list(self.unfinished_tasks())
            for task in unfinished:
                if task.unknown_events:
                    logger.warning("%s", unknown_events_error(task))
                elif task.damage:
                    logger.warning(
                        "task %s is not resumed: its history cannot be trusted: %s "
                        "(`onward quarantine %s` sets it aside)",
                        task.task_id,
                        task.damage,
                        task.task_id,
                    )
            return [
                SessionResumed(
                    reason="reopened", recovered_tasks=len(unfinished), config=self.config
                )
            ]

        self.decide(start_or_resume, chain=False)

    def _check_head(self) -> None:
        """Say when the newest records are gone: two reads, the full check is ``verify``'s."""
        head = self.log.head_record()
        if head is None or head.base < 0:
            return  # not tracked here; a removed head record is verify's to report
        last = self.log.head()
        if last < head.position:
            logger.error(
                "the log %s ends at position %d but its head record says %d: its newest "
                "records were removed behind onward's back, and the tasks they belonged to may "
                "run again; `onward verify` says more",
                self.log.url,
                last,
                head.position,
            )

    def resume(self, reason: str) -> bool:
        """Resume the session after a pause.

        Returns:
            Whether it was paused.
        """
        resumed = self.decide(
            lambda projections: (
                [SessionResumed(reason=reason, config=self.config)]
                if (view := projections.sessions.sessions.get(self.name)) is not None
                and view.state == "paused"
                else []
            ),
            chain=False,
        )
        return bool(resumed)

    def decide(
        self,
        decide: Callable[[Projections], Sequence[Event]],
        *,
        chain: bool = True,
        first_cause: str | Callable[[Projections], str] = "",
    ) -> list[str]:
        """Decide on the caught-up projections, then append to the session's stream.

        The session's stream is shared by every worker of the session: an append is decided on
        the state it changes, and when another worker appended first, the log is caught up and
        the decision taken again (which may now be to append nothing). A decided event is never
        appended at another version than the one it was decided on. Each event is checked
        against the session's lifecycle (and a flow move against the flow's) first.

        Args:
            decide: given the projections, the events to append (none: nothing to do).
            chain: each event is caused by the one before it (else all by the first cause).
            first_cause: the cause of the first event (or of all, without ``chain``), or how
                to find it in the projections; the session's context's cause by default.

        Returns:
            The ids of the events appended (empty when nothing was decided).

        Raises:
            InvalidTransition: a decided event that the lifecycle does not allow; nothing was
                appended.
        """
        stream = session_stream(self.name)
        with self.lock:
            for _ in range(_SESSION_APPEND_TRIES):
                projections = self.host.projections
                events = list(decide(projections))
                if not events:
                    return []
                view = projections.sessions.sessions.get(self.name)
                version = view.version if view is not None else 0
                self._validate(events, view.state if view is not None else "new", projections)
                cause = first_cause(projections) if callable(first_cause) else first_cause
                first = cause or self.context.causation_id
                ids = [new_event_id() for _ in events]
                try:
                    self.log.commit(
                        [
                            Append(
                                stream=stream,
                                events=events,
                                expected_version=version,
                                event_ids=ids,
                                context=self.context,
                                causes=[first, *ids[:-1]] if chain else [first] * len(ids),
                            )
                        ]
                    )
                except VersionConflict:
                    self.host.catch_up()  # another worker decided first: look and decide again
                    continue
                self.host.catch_up()
                return ids
        raise UsageError(f"session {self.name}: too many concurrent appends, try again")

    def decide_on(
        self,
        stream: str,
        decide: Callable[[Projections], tuple[Sequence[Event], int]],
        what: str,
    ) -> bool:
        """Decide on the caught-up projections what to append to a stream other workers append
        to as well (a schedule's, a limit's), at the version the decision was taken on; when
        another worker appended first, catch up and decide again.

        Args:
            stream: the stream.
            decide: given the projections, the events to append (none: nothing to do) and the
                stream's version they were decided on.
            what: what is decided, for the error.

        Returns:
            Whether anything was appended.

        Raises:
            UsageError: other workers kept appending first.
        """
        with self.lock:
            for _ in range(_SESSION_APPEND_TRIES):
                events, version = decide(self.catch_up())
                if not events:
                    return False
                try:
                    self.log.append(
                        stream, list(events), expected_version=version, context=self.context
                    )
                except VersionConflict:
                    continue
                self.catch_up()
                return True
        raise UsageError(f"{what}: too many concurrent changes, try again")

    def _validate(self, events: Sequence[Event], state: str, projections: Projections) -> None:
        """Check each event against the session's lifecycle, and each flow move against the
        flow's, in order (the states they lead to included)."""
        flow = projections.flow.state(self.name)
        for event in events:
            tag = type(event).__struct_config__.tag
            assert isinstance(tag, str)
            validate("session", self.name, state, tag)
            state = SESSION.evolve(state, tag)
            if isinstance(event, FlowStateChanged):
                validate("flow", self.name, flow.value, flow_trigger(event.state))
                flow = event.state

    def record(
        self, events: Sequence[Event], *, chain: bool = True, first_cause: str = ""
    ) -> list[str]:
        """Append events that do not depend on the session's state (a notice for a person),
        at the stream's current version, after a check against the lifecycle.

        Returns:
            The events' ids.
        """
        fixed = list(events)
        return self.decide(lambda _projections: fixed, chain=chain, first_cause=first_cause)


def unknown_events_error(task: TaskView, doing: str = "resume") -> UnknownEventType:
    """The refusal to resume (or otherwise ``doing``) a task that holds events of a newer
    onward."""
    return UnknownEventType(
        f"task {task.task_id} has {task.unknown_events} events of types this version of onward "
        f"does not know (written by a newer one?); refusing to {doing} it. `onward show` can "
        "still read it."
    )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("onward")
    except Exception:
        return "unknown"


class Tenure:
    """How long one run's claim holds by its worker's clock: its claim's lease, prolonged by
    the worker's heartbeats while they come in time (as its peers judge it). Past it (the
    process was paused, its beats failed), a peer may have taken the task over: the run looks
    at the task's stream before a step's body runs. A beat that comes late holds the claim
    again only from then on: what a peer did meanwhile is looked for all the same.

    Args:
        session: the worker's session.
        claimed_until: the claim's lease.
    """

    def __init__(self, session: Session, claimed_until: float) -> None:
        self.session = session
        self.claimed_until = claimed_until
        # The stream was last looked at when the claim was taken, not when the run began: a
        # late beat between the two (the process paused meanwhile) is a lapse of this claim.
        self.checked_at = claimed_until - session.lease

    def lapsed(self) -> bool:
        """Whether the claim may have run out since it was taken or last looked at."""
        session = self.session
        if session.clock() > max(self.claimed_until, session.beat_until):
            return True
        lapse = session.lapsed_at
        return lapse > self.checked_at and lapse > self.claimed_until

    def checked(self) -> None:
        """The task's stream was looked at: the claim still held."""
        self.checked_at = self.session.clock()
