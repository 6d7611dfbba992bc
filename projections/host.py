"""The catch-up host: folds the log into the projections, with checkpoints.

:class:`Projections` is the set of read models the engine and the CLI use. :class:`CatchUp`
keeps it current: on open it loads the latest checkpoint (when its schema is the current one)
and reads only the tail of the log; every ``checkpoint_every`` events it saves a new one.
Replay from the start, live folding and checkpoint + tail all run the same ``apply``.

Damage is contained: a record that fails its checksum or does not decode (the reader hands
over its :class:`~onward.events.integrity.StreamDamage` instead), or an event its lifecycle
does not allow (:class:`~onward.projections.lifecycle.IllegalTransition`), marks its stream
damaged (:meth:`Projections.mark_damaged`): its task, session or breaker shows the damage in
its view, the folds skip the stream's later events (but a ``TaskQuarantined``), and every other
stream folds on.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from onward.events import (
    BreakerClosed,
    Checkpoint,
    Codec,
    CorruptRecord,
    EventLog,
    LogDamaged,
    Meta,
    PermitReturned,
    ProblemKind,
    Recorded,
    TaskQuarantined,
    TaskWaiting,
    UnknownEvent,
    redacted_logger,
)
from onward.events.integrity import StreamDamage, check_rows
from onward.projections.breakers import BREAKER_PREFIX, BreakerProjection, BreakerView
from onward.projections.budget import BudgetLedger, BudgetProjection
from onward.projections.decisions import (
    DECISION_TYPES,
    TASK_ENDINGS,
    DecisionProjection,
    DecisionsState,
)
from onward.projections.degradation import DegradationProjection, SessionDegradation
from onward.projections.errors import ErrorProjection, ErrorsState
from onward.projections.flow import FlowLedger, FlowProjection
from onward.projections.limits import LIMIT_PREFIX, LimitProjection, LimitView
from onward.projections.reading import FOLDED_STEP_OUTCOMES, FoldReader
from onward.projections.schedules import SCHEDULE_PREFIX, ScheduleProjection, ScheduleView
from onward.projections.session import SESSION_PREFIX, SessionProjection, SessionView
from onward.projections.task import (
    INBOX_PREFIX,
    STEP_OUTCOME_TYPES,
    TASK_PREFIX,
    FinishedViews,
    TaskProjection,
    TaskView,
    out_of_sequence,
    task_stream,
)
from onward.projections.workers import WORKER_PREFIX, WorkerProjection, WorkerView

__all__ = ["CatchUp", "Projections"]

_FAILURE_TYPES: frozenset[type[Any]] = frozenset(
    kind for kind in FOLDED_STEP_OUTCOMES if kind.__struct_config__.tag == "StepFailed"
)

#: Each step outcome type, and whether it records a failure: one look-up on the hot path.
_OUTCOME_FAILED: dict[type[Any], bool] = {
    kind: kind in _FAILURE_TYPES for kind in FOLDED_STEP_OUTCOMES
}

logger = redacted_logger("onward.projections")


class _Saved(msgspec.Struct, array_like=True):
    time: float
    tasks: dict[str, TaskView]
    sessions: list[SessionView]
    errors: ErrorsState
    breakers: list[BreakerView]
    decisions: DecisionsState
    degradation: list[SessionDegradation]
    budget: list[BudgetLedger]
    flow: list[FlowLedger]
    workers: list[WorkerView]
    schedules: list[ScheduleView]
    limits: list[LimitView]
    damaged: list[StreamDamage] = []
    # The tags of onward's own events folded, and of the events folded as unknown: an onward
    # that reads one of them otherwise folds the log again (see CatchUp.open).
    folded: list[str] = []
    unknown: list[str] = []
    # The finished tasks, left encoded until asked for (``tasks`` holds the others).
    finished: list[FinishedViews] = []


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Saved)


class Projections:
    """Every read model, folded from the log in position order.

    Attributes:
        tasks: task states and the queue.
        sessions: session states.
        errors: the error-learning DB: signatures, fixes and retries with their success rates.
        breakers: the circuit breakers per dependency.
        decisions: approvals awaiting a human, each action's record, the thresholds in force.
        degradation: each session's failed components, their workarounds, its level.
        budget: each session's recent errors and the remedies tried against them.
        flow: each session's rhythm (recent actions), flow state and deferred interruptions.
        workers: the workers and their heartbeats.
        schedules: each session's schedules and their last tick.
        limits: each queue limit's permits in use and recent takes.
        damaged: every stream whose history cannot be trusted, by stream, with its first bad
            record (see :meth:`mark_damaged`).
        unknown_types: the tags of the events folded as
            :class:`~onward.events.UnknownEvent` (of a newer onward), since the log's start.
        position: the last position folded.
        time: the time of the last event folded (0.0 before any).
    """

    #: Bump when a projection's shape or meaning changes: older checkpoints are then ignored.
    SCHEMA = 24
    NAME = "core"

    def __init__(self) -> None:
        self.tasks = TaskProjection()
        self.sessions = SessionProjection()
        self.errors = ErrorProjection()
        self.breakers = BreakerProjection()
        self.decisions = DecisionProjection()
        self.degradation = DegradationProjection()
        self.budget = BudgetProjection()
        self.flow = FlowProjection()
        self.workers = WorkerProjection()
        self.schedules = ScheduleProjection()
        self.limits = LimitProjection()
        self.damaged: dict[str, StreamDamage] = {}
        self.unknown_types: set[str] = set()
        self.position = 0
        self.time = 0.0
        self._by_type: dict[type[Any], tuple[Callable[[Recorded], None], ...]] = {}
        # The types of the events folded but step outcomes (counted as folded always: the hot
        # path does not note them), those of a damaged stream's events passed over among them,
        # and the tags of onward's own types a checkpoint loaded had folded (with the old tags
        # read as one of them through upcasters).
        self._kinds: set[type[Any]] = set()
        self._folded_before: frozenset[str] = frozenset()

    def apply(self, r: Recorded) -> None:
        """Fold one event (in position order)."""
        self.apply_page([r])

    def mark_damaged(self, damage: StreamDamage, session: str = "") -> None:
        """Mark a stream whose history cannot be trusted from one of its records on.

        Its task, session or breaker shows the damage in its view (a task or session in state
        "damaged", never claimed or opened), and the folds skip the stream's later events
        (but a ``TaskQuarantined``). The first damage of a stream is the one kept. A reader
        that finds damage the fold did not see (a record removed from a stream, found when
        the stream is read whole) marks it here too: a replay of the same log would not fold
        that stream as intact either.

        Args:
            damage: the stream's first bad record and what is wrong with it.
            session: the session of the record, for a task the log never showed intact.
        """
        stream = damage.stream
        if stream in self.damaged:
            return
        self.damaged[stream] = damage
        if stream.startswith(TASK_PREFIX):
            self.tasks.damage(stream[len(TASK_PREFIX) :], damage, session)
        elif stream.startswith(SESSION_PREFIX):
            self.sessions.damage(stream[len(SESSION_PREFIX) :], damage)
        elif stream.startswith(BREAKER_PREFIX):
            self.breakers.damage(stream[len(BREAKER_PREFIX) :], damage)
        elif stream.startswith(INBOX_PREFIX):
            # A task's inbox is read by its task: a message it cannot read would leave it
            # waiting for good, or let its wait time out as if the message had not come.
            task_id = stream[len(INBOX_PREFIX) :]
            of_task = msgspec.structs.replace(damage, reason=f"in {stream!r}: {damage.reason}")
            self.damaged.setdefault(task_stream(task_id), of_task)
            self.tasks.damage(task_id, of_task, session)
        logger.warning("stream %r is damaged: %s", stream, damage)

    def _after_damage(self, r: Recorded) -> None:
        """Fold an event of a damaged stream: only a task's quarantine (which ends it, its
        approval requests and its pending retries with it)."""
        if isinstance(r.event, TaskQuarantined) and r.stream.startswith(TASK_PREFIX):
            self.tasks.apply(r)
            self.errors.apply(r)
            self.decisions.apply(r)

    def _typed_folds(self, kind: type[Any]) -> tuple[Callable[[Recorded], None], ...]:
        """The folds that read events of type ``kind`` whatever their stream, in the order
        :meth:`apply_page` calls them (found once per type, then looked up)."""
        folds = self._by_type.get(kind)
        if folds is None:
            folds = self._by_type[kind] = tuple(
                fold
                for types, fold in (
                    (self.errors.event_types, self.errors.apply),
                    (DECISION_TYPES, self.decisions.apply),
                    (self.degradation.event_types, self.degradation.apply),
                    (self.budget.event_types, self.budget.apply),
                    (self.flow.event_types, self.flow.apply),
                )
                if kind in types
            )
        return folds

    def apply_page(self, records: list[Recorded]) -> None:
        """Fold a page of events (in position order): the same as :meth:`apply` on each.

        Each event goes only to the folds that read its type: a step outcome (most of any
        log) to its task's counters and, when they concern it, to the breakers, the error DB
        and the budget; the page's step outcomes go to the flow at once, after the page. An
        event that its lifecycle does not allow marks its stream damaged
        (:meth:`mark_damaged`) instead of stopping the fold.
        """
        damaged = self.damaged
        any_damage = bool(damaged)
        tasks, sessions = self.tasks.apply, self.sessions.apply
        errors, breakers = self.errors.apply, self.breakers.apply
        budget = self.budget.apply
        outcome_failed = _OUTCOME_FAILED
        endings = TASK_ENDINGS
        decisions = self.decisions.apply
        unanswered = self.decisions.unanswered
        workers = self.workers.apply
        inboxes = self.tasks.apply_inbox
        schedules, limits = self.schedules.apply, self.limits.apply
        awaiting = self.errors.awaiting
        kinds, unknown_types = self._kinds, self.unknown_types
        by_type = self._by_type
        typed_folds = self._typed_folds
        views = self.tasks.views
        skip = len(TASK_PREFIX)
        # The page's step outcomes, for the flow's window: folded at once after the page, as
        # their envelopes and the indexes of the failed ones among them.
        outcomes: list[Meta] = []
        failures: list[int] = []
        trial_streams = self.budget.trial_streams
        # The view of the last running task a step outcome was folded into, and its counters
        # as of the outcomes of the task folded since: a task's outcomes mostly follow each
        # other, and a run of them is written to its view once, when the run ends (by the end
        # of the page; no fold of the page reads a running task's counters meanwhile).
        last_stream: str | None = None
        last_view: TaskView | None = None
        run_version, run_time, run_steps = 0, 0.0, 0
        for r in records:
            stream = r.stream
            if any_damage and stream in damaged:
                # Its type counts all the same: an onward that reads it otherwise folds the
                # stream otherwise (a quarantine it does not know leaves the task damaged).
                if type(r.event) is UnknownEvent:
                    unknown_types.add(r.event.type)
                else:
                    kinds.add(type(r.event))
                self._after_damage(r)
                continue
            event = r.event
            kind = type(event)
            # No cost until a lifecycle refuses an event: then only its stream is marked.
            try:
                failed = outcome_failed.get(kind)
                if failed is not None and stream == last_stream:
                    # The hot path: the next outcome of the running task of the run.
                    if r.version != run_version + 1:
                        raise out_of_sequence(r, run_version)
                    run_version = r.version
                    run_time = r.meta.time
                    run_steps += event.final if failed else 1  # type: ignore[union-attr]
                else:
                    if last_view is not None:
                        _write_run(last_view, run_version, run_time, run_steps)
                        last_stream = last_view = None
                    if failed is not None:
                        view = views.get(stream[skip:])
                        if view is not None and view.state == "running":
                            if r.version != view.version + 1:
                                raise out_of_sequence(r, view.version)
                            last_stream, last_view = stream, view
                            run_version, run_time = r.version, r.meta.time
                            run_steps = view.steps + (event.final if failed else 1)  # type: ignore[union-attr]
                        else:
                            tasks(r)
                if failed is not None:
                    # Only the folds that this outcome concerns.
                    if event.dependency:  # type: ignore[union-attr]  # a step outcome has one
                        breakers(r)
                    if awaiting and stream in awaiting:
                        errors(r)
                    if failed:
                        failures.append(len(outcomes))
                        budget(r)
                    elif trial_streams and stream in trial_streams:
                        budget(r)
                    outcomes.append(r.meta)
                    continue
                if kind is UnknownEvent:
                    unknown_types.add(event.type)  # type: ignore[union-attr]
                else:
                    kinds.add(kind)
                if stream.startswith(TASK_PREFIX):
                    tasks(r)
                    if isinstance(event, TaskWaiting) and event.limit:
                        self._permit_freed_meanwhile(stream[skip:], event, r.meta.time)
                    if isinstance(event, TaskWaiting) and event.breaker:
                        breaker = self.breakers.breakers.get(event.breaker)
                        if breaker is not None and breaker.state == "closed":  # closed meanwhile
                            self.tasks.wake_breaker(event.breaker, r.meta.time)
                elif stream.startswith(SESSION_PREFIX):
                    sessions(r)
                elif stream.startswith(BREAKER_PREFIX):
                    breakers(r)
                    if isinstance(event, BreakerClosed):  # its waiting tasks may go now
                        self.tasks.wake_breaker(stream[len(BREAKER_PREFIX) :], r.meta.time)
                elif stream.startswith(WORKER_PREFIX):
                    workers(r)
                elif stream.startswith(INBOX_PREFIX):
                    inboxes(r)
                elif stream.startswith(SCHEDULE_PREFIX):
                    schedules(r)
                elif stream.startswith(LIMIT_PREFIX):
                    limits(r)
                    if isinstance(event, PermitReturned):  # a task waiting for a permit may go
                        self.tasks.wake(stream[len(LIMIT_PREFIX) :], r.meta.time)
                if kind in endings:
                    # A task's end: besides its task, only the error DB reads it (when a retry
                    # in its stream awaits its outcome), and the decisions (when a request is
                    # unanswered): the same as their folds, without a call for nothing.
                    if stream in awaiting:
                        errors(r)
                    if unanswered:
                        decisions(r)
                    continue
                folds = by_type.get(kind)
                for fold in typed_folds(kind) if folds is None else folds:
                    fold(r)
            except LogDamaged as exc:
                if last_view is not None:
                    _write_run(last_view, run_version, run_time, run_steps)
                    last_stream = last_view = None
                if isinstance(exc, CorruptRecord):  # a task stream's versions out of sequence
                    problem, reason = ProblemKind(exc.kind), exc.reason
                else:
                    problem, reason = ProblemKind.ILLEGAL, str(exc)
                self.mark_damaged(
                    StreamDamage(
                        stream=stream,
                        version=r.version,
                        position=r.position,
                        kind=problem,
                        reason=reason,
                    ),
                    r.meta.session,
                )
                any_damage = True
        if last_view is not None:
            _write_run(last_view, run_version, run_time, run_steps)
        if outcomes:
            self.flow.fold_outcomes(outcomes, failures)
        if records:
            last = records[-1]
            self.position = last.position
            self.time = last.meta.time

    def _permit_freed_meanwhile(self, task_id: str, waiting: TaskWaiting, time: float) -> None:
        """A task began to wait for a permit: if one was given back after the limit's state it
        decided on, it is ready at once (the wake-up would otherwise be lost)."""
        limit = self.limits.limits.get(waiting.limit)
        view = self.tasks.view(task_id)
        if limit is not None and view is not None and limit.returned_at > waiting.limit_after:
            self.tasks.ready_at(view, time)

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every projection (for tests and the CLI)."""
        return {
            "position": self.position,
            "tasks": self.tasks.snapshot(),
            "sessions": self.sessions.snapshot(),
            "errors": self.errors.snapshot(),
            "breakers": self.breakers.snapshot(),
            "decisions": self.decisions.snapshot(),
            "degradation": self.degradation.snapshot(),
            "budget": self.budget.snapshot(),
            "flow": self.flow.snapshot(),
            "workers": self.workers.snapshot(),
            "schedules": self.schedules.snapshot(),
            "limits": self.limits.snapshot(),
            "damaged": {k: msgspec.to_builtins(v) for k, v in sorted(self.damaged.items())},
        }

    def folded_types(self) -> frozenset[str]:
        """The tags of onward's own event types folded since the log's start (the step
        outcomes' always), and the old tags read as one of them through upcasters (see
        :meth:`note_read`): an onward that does not know one of them reads the log otherwise."""
        return self._folded_before | {
            tag
            for kind in self._kinds | STEP_OUTCOME_TYPES
            if kind.__module__.startswith("onward.")
            and isinstance(tag := kind.__struct_config__.tag, str)
        }

    def note_read(self, tags: frozenset[str]) -> None:
        """Note old tags that records were read under through upcasters (a codec's
        :attr:`~onward.events.Codec.upcast_tags`): they count among :meth:`folded_types`, so
        that an onward without those upcasters, which reads the records otherwise, does not
        take a checkpoint of these projections. A tag whose records the fold read as unknown
        (an upcaster registered after the log was opened) is not noted: these projections
        hold that reading, which an onward without the upcaster shares."""
        if not tags <= self._folded_before:
            self._folded_before |= tags - self.unknown_types

    def read_otherwise(self, codec: Codec) -> list[str]:
        """The event tags that ``codec`` reads otherwise than the onward that folded these
        projections (from a checkpoint saved by another version of onward): a type it folded
        that ``codec`` does not know, or one it folded as unknown that ``codec`` knows.

        Returns:
            The tags, sorted (empty: ``codec`` folds the log as these projections were).
        """
        return sorted(
            {tag for tag in self.folded_types() if not codec.knows(tag)}
            | {tag for tag in self.unknown_types if codec.knows(tag)}
        )

    def encode(self) -> bytes:
        """The projections' state, for a checkpoint."""
        active, finished = self.tasks.dump()
        return _ENCODER.encode(
            _Saved(
                time=self.time,
                tasks=active,
                sessions=self.sessions.dump(),
                errors=self.errors.dump(),
                breakers=self.breakers.dump(),
                decisions=self.decisions.dump(),
                degradation=self.degradation.dump(),
                budget=self.budget.dump(),
                flow=self.flow.dump(),
                workers=self.workers.dump(),
                schedules=self.schedules.dump(),
                limits=self.limits.dump(),
                damaged=list(self.damaged.values()),
                folded=sorted(self.folded_types()),
                unknown=sorted(self.unknown_types),
                finished=finished,
            )
        )

    @classmethod
    def decode(cls, data: bytes, position: int) -> Projections:
        """Projections restored from :meth:`encode`'s bytes, as of ``position``.

        Raises:
            msgspec.DecodeError: the bytes do not decode, or the finished tasks' part fails
                its CRC.
            msgspec.ValidationError: they decode to the wrong shape.
        """
        saved = _DECODER.decode(data)
        for part in saved.finished:
            part.check()
        projections = cls()
        projections.tasks.load(saved.tasks, saved.finished)
        projections.sessions.load(saved.sessions)
        projections.errors.load(saved.errors)
        projections.breakers.load(saved.breakers)
        projections.decisions.load(saved.decisions)
        projections.degradation.load(saved.degradation)
        projections.budget.load(saved.budget)
        projections.flow.load(saved.flow)
        projections.workers.load(saved.workers)
        projections.schedules.load(saved.schedules)
        projections.limits.load(saved.limits)
        projections.damaged = {d.stream: d for d in saved.damaged}
        projections.unknown_types = set(saved.unknown)
        projections._folded_before = frozenset(saved.folded)
        projections.position = position
        projections.time = saved.time
        return projections


def _write_run(view: TaskView, version: int, time: float, steps: int) -> None:
    """Write a run of a running task's step outcomes to its view: its version, time and
    steps after the last of them."""
    view.version = version
    view.updated_at = time
    view.steps = steps


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cycle collector while folding or loading.

    Folding allocates many long-lived objects and no cycles: the collector would only rescan
    them again and again.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class CatchUp:
    """Keeps a :class:`Projections` current with the log.

    Args:
        log: the log to fold.
        checkpoint_every: save a checkpoint after this many new events (0: never).
        upto: stop at this position (replay to a point in time); no checkpoint is saved then.
    """

    def __init__(
        self, log: EventLog, *, checkpoint_every: int = 50_000, upto: int | None = None
    ) -> None:
        self.log = log
        self.checkpoint_every = checkpoint_every
        self.upto = upto
        self.projections = Projections()
        self._reader = FoldReader(log)
        self._since_checkpoint = 0
        self._torn = False
        self.loaded_checkpoint: int | None = None

    def open(self, *, use_checkpoint: bool = True) -> Projections:
        """Load the latest usable checkpoint, then fold the tail of the log.

        Returns:
            The projections, current up to the log's head (or ``upto``).
        """
        if use_checkpoint:
            saved = self.log.load_checkpoint(Projections.NAME)
            usable = (
                saved is not None
                and saved.schema == Projections.SCHEMA
                and (self.upto is None or saved.position <= self.upto)
            )
            if saved is not None and not usable:
                logger.info(
                    "ignoring checkpoint at position %d (schema %d, current %d)",
                    saved.position,
                    saved.schema,
                    Projections.SCHEMA,
                )
            elif saved is not None and saved.position > (head := self.log.head()):
                # Records it folded are gone (a removed tail, a restored copy of the file):
                # what it holds is not what the log says.
                logger.warning(
                    "ignoring checkpoint at position %d: the log ends at %d; replaying",
                    saved.position,
                    head,
                )
            elif saved is not None:
                try:
                    with _no_cycle_collection():
                        loaded = Projections.decode(saved.data, saved.position)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    logger.warning("checkpoint at %d does not decode; replaying", saved.position)
                else:
                    # Saved by another version of onward sharing the log, which read some of
                    # its events otherwise (one as unknown that this one knows, or the other
                    # way round): what it folded is not what this onward reads.
                    otherwise = loaded.read_otherwise(self.log.codec)
                    reads = None if otherwise else self._reads_now(loaded)
                    if otherwise:
                        logger.info(
                            "ignoring checkpoint at position %d: it was folded by an onward "
                            "that reads events of types %s otherwise; replaying",
                            saved.position,
                            ", ".join(otherwise),
                        )
                    elif reads is not None:
                        logger.info(
                            "ignoring checkpoint at position %d: it holds stream %r as damaged "
                            "from its record at position %d, which this onward reads; "
                            "replaying",
                            saved.position,
                            reads.stream,
                            reads.position,
                        )
                    else:
                        self.projections = loaded
                        self.loaded_checkpoint = saved.position
        # No checkpoint while opening: opening stays quick and light; the next catch-up saves.
        self.catch_up(save=False)
        return self.projections

    def _reads_now(self, projections: Projections) -> StreamDamage | None:
        """The first damage of ``projections`` whose record this onward reads: intact, and
        decoded by this log's codec. It was folded by a codec that did not decode it (an
        upcaster that failed on it, since fixed; a type that did not take its fields): a
        replay here folds its stream, where the checkpoint holds it as damaged. None when
        every damaged record still fails (the same code's checkpoint)."""
        for damage in projections.damaged.values():
            if damage.kind != ProblemKind.CORRUPT:
                continue  # a missing, moved or illegal record: no codec reads it otherwise
            for rows in self.log.read_rows(after=damage.position - 1, upto=damage.position):
                for p, s, v, t, st in rows:
                    if p != damage.position or check_rows([(p, s, v, t, st)]):
                        continue
                    try:
                        self.log.decode_record(s, v, p, t, st)
                    except CorruptRecord:
                        continue
                    return damage
        return None

    def catch_up(self, *, save: bool = True) -> int:
        """Fold every event appended since the last call, a page at a time, each page all or
        nothing: after a page that failed part-way, the next call folds again from the last
        checkpoint.

        Args:
            save: save a checkpoint when ``checkpoint_every`` events have been folded since
                the last one.

        Returns:
            How many events were folded.
        """
        if self._torn:
            # A page failed part-way: the projections hold part of it. Fold again from the
            # last checkpoint rather than apply its first events twice.
            logger.warning("rebuilding the projections after a fold that failed part-way")
            self.projections = Projections()
            self._torn = False
            self.open()
        projections = self.projections
        apply_page = projections.apply_page
        count = 0
        with _no_cycle_collection():
            for page in self._reader.pages(after=projections.position, upto=self.upto):
                if isinstance(page, StreamDamage):  # its stream is marked, the record not folded
                    projections.mark_damaged(page)
                    projections.position = max(projections.position, page.position)
                    count += 1
                    continue
                try:
                    apply_page(page)
                except BaseException:
                    self._torn = True
                    raise
                count += len(page)
        self._since_checkpoint += count
        projections.note_read(self.log.codec.upcast_tags)
        if save and self.upto is None and 0 < self.checkpoint_every <= self._since_checkpoint:
            self.checkpoint()
        return count

    def checkpoint(self) -> None:
        """Save the projections as a checkpoint now."""
        projections = self.projections
        self.log.save_checkpoint(
            Checkpoint(
                name=Projections.NAME,
                schema=Projections.SCHEMA,
                position=projections.position,
                data=projections.encode(),
            )
        )
        self._since_checkpoint = 0
