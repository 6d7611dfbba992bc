"""The task projection: every task's state machine and the priority queue, folded from the log.

A task's state follows :data:`onward.projections.lifecycle.TASK`. The queue orders queued tasks by
priority (critical > high > normal > low), then deadline (earliest first, none last), then
submission order (the position of ``TaskSubmitted``).

Two pseudo-states lie outside the lifecycle: "unknown" (its submission is of a type this onward
does not know) and "damaged" (a record of its stream fails its checksum or its lifecycle: see
:meth:`TaskProjection.damage`). Neither is ever queued or claimed, and neither has ended: a
person ends a damaged task with ``TaskQuarantined``. A task that has not ended and holds events
of a newer onward keeps its last known state but leaves the queue: this onward does not resume
it.
"""

from __future__ import annotations

import bisect
import heapq
import math
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from onward.events import (
    ApprovalDenied,
    ApprovalGranted,
    CorruptRecord,
    Recorded,
    StepCompleted,
    TaskClaimed,
    TaskDeadlineMissed,
    TaskFailed,
    TaskLeaseExpired,
    TaskProgressed,
    TaskQuarantined,
    TaskReleased,
    TaskReprioritised,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    TaskWaiting,
    UnknownEvent,
)
from onward.events.integrity import StreamDamage
from onward.events.kinds import Priority
from onward.projections.lifecycle import TASK
from onward.projections.reading import FOLDED_STEP_OUTCOMES

__all__ = [
    "DAMAGED_STATE",
    "INBOX_PREFIX",
    "STEP_OUTCOME_TYPES",
    "TASK_PREFIX",
    "UNKNOWN_STATE",
    "FinishedViews",
    "TaskProjection",
    "TaskView",
    "inbox_stream",
    "standing",
    "task_stream",
]

#: Every task's stream is ``task-<id>``.
TASK_PREFIX = "task-"


def standing(history: Sequence[Recorded]) -> Recorded | None:
    """The last record of a task's history that says where the task stands (its end, when it
    ended): a step's success recorded after the task was cancelled (the step was under way)
    and an event of a newer onward are passed over. None for an empty history."""
    for r in reversed(history):
        if type(r.event) is not StepCompleted and not isinstance(r.event, UnknownEvent):
            return r
    return history[-1] if history else None


#: The state of a task whose history holds events of a newer onward that change its state.
UNKNOWN_STATE = "unknown"

#: The state of a task whose history cannot be trusted from one of its records on.
DAMAGED_STATE = "damaged"

_RANK = {p.value: p.rank for p in Priority}
_PRIORITY_VALUES = {p: p.value for p in Priority}


def task_stream(task_id: str) -> str:
    """The stream of a task."""
    return TASK_PREFIX + task_id


#: A task's inbox, where others send it messages: ``inbox-<id>``.
INBOX_PREFIX = "inbox-"


def inbox_stream(task_id: str) -> str:
    """The inbox stream of a task."""
    return INBOX_PREFIX + task_id


class TaskView(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """What the log says about one task, as of the last event folded.

    Attributes:
        task_id: its id (its stream is ``task-<id>``).
        session: the session that submitted it.
        name: the registered function it calls.
        state: its lifecycle state (queued, running, waiting, succeeded, failed, cancelled,
            missed, quarantined), "unknown" when its submission is of a type this onward does
            not know, or "damaged" when its history cannot be trusted (see ``damage``).
        priority: critical, high, normal or low.
        deadline: when it must be done (None: no deadline).
        key: its idempotency key, if any.
        parent: the task that submitted it, if any.
        children: the tasks it submitted, in order.
        submitted_at: when it was submitted.
        updated_at: the time of its last event (a running task's heartbeat).
        order: the position of its submission (the queue's tie-breaker).
        version: its stream's version.
        attempt: how many times it has been claimed.
        worker: the worker holding it (while running).
        lease_until: when that worker's lease runs out.
        progress: its last progress checkpoint, in [0, 1].
        note: the note of that checkpoint.
        steps: how many step outcomes it has recorded (failed tries that a fix or a retry
            followed are not outcomes).
        waiting_reason: why it waits (while waiting; "" once it no longer waits).
        waiting_until: when its wait ends (None: not on a timer, or not waiting).
        waiting_on: the tasks it waits for (while waiting).
        waiting_breaker: the breaker it waits on ("" for none): its closing makes it ready.
        error: the error type and message it failed with (or why it was quarantined).
        unknown_events: events of types this onward does not know.
        damage: why its history cannot be trusted: which record, and what is wrong with it
            ("" when it can).
    """

    task_id: str
    session: str
    name: str
    state: str
    priority: str
    deadline: float | None
    key: str | None
    parent: str | None
    # Tuples of strings, and gc=False: a view holds no container the cycle collector must
    # track, which keeps folding and loading 100k tasks fast.
    children: tuple[str, ...] = ()
    submitted_at: float = 0.0
    updated_at: float = 0.0
    order: int = 0
    version: int = 0
    attempt: int = 0
    worker: str = ""
    lease_until: float = 0.0
    progress: float = 0.0
    note: str = ""
    steps: int = 0
    waiting_reason: str = ""
    waiting_until: float | None = None
    waiting_on: tuple[str, ...] = ()
    error: str = ""
    unknown_events: int = 0
    waiting_topic: str = ""
    waiting_limit: str = ""
    inbox_version: int = 0
    forked_from: str | None = None
    damage: str = ""
    waiting_breaker: str = ""

    @property
    def terminal(self) -> bool:
        """Whether the task has ended (succeeded, failed, cancelled, missed its deadline or
        was quarantined)."""
        return self.state in TASK.terminal

    @property
    def resumable(self) -> bool:
        """Whether this onward may run it: it has not ended, its history is intact, and it
        holds no event of a newer onward."""
        return not self.unknown_events and self.state in _RESUMABLE

    def queue_key(self) -> tuple[int, float, int]:
        """Its place in the queue: priority rank, deadline, submission order."""
        deadline = math.inf if self.deadline is None else self.deadline
        return (_RANK[self.priority], deadline, self.order)


#: What a queue or deadline entry left by a task whose view was let go of (it ended, and is
#: kept encoded) reads as: an ended task, skipped as any stale entry is.
_LET_GO = TaskView(
    task_id="",
    session="",
    name="",
    state="succeeded",
    priority="normal",
    deadline=None,
    key=None,
    parent=None,
)


class FinishedViews(msgspec.Struct, array_like=True, frozen=True):
    """The views of finished tasks as a checkpoint keeps them: encoded and compressed, so
    that opening a log reads and decodes only the tasks that have not ended, and the others
    when one of them is first asked for.

    Attributes:
        ids: the tasks' ids, sorted.
        views: their views, a msgpack map of task id to :class:`TaskView`, zlib-compressed.
        crc: the CRC-32 of ``views``, checked when the checkpoint is loaded.
    """

    ids: list[str]
    views: bytes
    crc: int

    @classmethod
    def of(cls, views: dict[str, TaskView]) -> FinishedViews:
        """The encoded form of ``views``."""
        # Level 1: the views of finished tasks differ little, and so compress well already.
        data = zlib.compress(_ENCODER.encode(views), 1)
        return cls(ids=sorted(views), views=data, crc=zlib.crc32(data))

    def check(self) -> None:
        """Check the encoded views against their CRC.

        Raises:
            msgspec.DecodeError: they do not match: the checkpoint is damaged.
        """
        if zlib.crc32(self.views) != self.crc:
            raise msgspec.DecodeError("the finished tasks of the checkpoint fail their CRC")

    def holds(self, task_id: str) -> bool:
        """Whether ``task_id`` is one of these tasks."""
        ids = self.ids
        i = bisect.bisect_left(ids, task_id)
        return i < len(ids) and ids[i] == task_id

    def decode(self) -> dict[str, TaskView]:
        """The views, decoded."""
        views: dict[str, TaskView] = _VIEWS_DECODER.decode(zlib.decompress(self.views))
        return views


#: Encoded parts of finished tasks past which a checkpoint merges the two smallest.
FINISHED_PARTS_KEPT = 8


class TaskProjection:
    """Folds task streams into :class:`TaskView` objects and keeps the queue in order.

    After a checkpoint is loaded, the views of the tasks that had ended stay encoded until
    one of them is asked for (:meth:`view`, :attr:`tasks`): opening a log with many finished
    tasks decodes only the others.
    """

    name = "tasks"

    def __init__(self) -> None:
        #: The views decoded so far: every task but the finished ones of a loaded
        #: checkpoint, until one of those is asked for.
        self.views: dict[str, TaskView] = {}
        #: The views of the tasks that have not ended (a serving worker's passes look at these
        #: alone, not at every task it has seen end).
        self._active: dict[str, TaskView] = {}
        self._finished: list[FinishedViews] = []
        # Whether a checkpoint left finished tasks encoded (they may be decoded since).
        self._loaded_finished = False
        self._decoding = threading.Lock()
        # The queues per session, built from the views on first use (None until then), so
        # that a replay or a checkpoint load builds no heap it does not need.
        self._heap_index: dict[str, list[tuple[int, float, int, str]]] | None = None
        self._deadlines: list[tuple[float, str]] = []
        self.waiting: set[str] = set()
        # The waiting tasks, indexed so that a claim looks only at those that may be ready
        # now, never at every task parked on a message or a human's answer. Each index may
        # hold stale entries, skipped (and dropped) where the view no longer matches.
        self._waiting_in: dict[str, set[str]] = {}  # per session
        self._timers: dict[str, list[tuple[float, str]]] = {}  # per session: (until, id) heaps
        # Per session: the tasks whose timers passed, not yet claimed, each with the queue key
        # of its live entry in ``_ranked`` (None: it has none, it is not a candidate: it waits
        # for subtasks or holds events of a newer onward); ``_ranked`` puts them in queue
        # order, so that a claim takes the first one without ranking them all.
        self._due: dict[str, dict[str, tuple[int, float, int] | None]] = {}
        self._ranked: dict[str, list[tuple[int, float, int, str]]] = {}
        self._kept_due: dict[str, int] = {}  # per session: due tasks left at the last look
        # Per session: tasks waiting for subtasks that may all have ended (one began to wait,
        # or one of its subtasks ended since it was last looked at); and who waits for whom.
        self._to_check: dict[str, set[str]] = {}
        self._waiters_of: dict[str, set[str]] = {}
        self._for_limit: dict[str, set[str]] = {}  # waiting for a permit of a limit
        self._for_breaker: dict[str, set[str]] = {}  # waiting for a breaker to close
        # Timers and due tasks are also read by an idle worker's look at its next timer,
        # outside the session's lock: their changes take this one.
        self._timing = threading.RLock()
        # Tasks no worker had a function for, waiting for one that has: per session and task
        # name, each a heap in queue order (stale entries dropped when met): a claim asks
        # about each name once, not about each such task.
        self._unregistered_in: dict[str, dict[str, list[tuple[int, float, int, str]]]] = {}
        # Per session: the running tasks (a worker's look for its peers' claims reads them,
        # never every task that has not ended).
        self._running_in: dict[str, set[str]] = {}
        self._strings: dict[str, str] = {}

    @property
    def tasks(self) -> dict[str, TaskView]:
        """Every task's view, by id (decodes the finished ones a checkpoint still holds): a
        copy, taken as a checkpoint lets go of none (one saved meanwhile in another thread
        lets go of the finished views in :attr:`views`). One task: :meth:`view`."""
        with self._decoding:
            for part in self._finished:
                self.views.update(part.decode())
            self._finished = []
            return dict(self.views)

    def view(self, task_id: str) -> TaskView | None:
        """One task's view (None for a task the log does not have), decoding the finished
        tasks of a checkpoint's part only when it is one of them."""
        view = self.views.get(task_id)
        if view is None:
            finished = self._finished
            if finished and any(p.holds(task_id) for p in finished):
                self._decode_part_of(task_id)
            # Looked up again in any case: another thread may have just decoded them (it
            # lets go of the parts only after their views are in).
            view = self.views.get(task_id)
        return view

    def ended(self, task_id: str) -> bool:
        """Whether a task is known to have ended, without decoding a checkpoint's finished
        tasks (False for a task the log does not have)."""
        view = self.views.get(task_id)
        if view is None and any(p.holds(task_id) for p in self._finished):
            return True
        # Looked up again: another thread may have just decoded its part.
        view = view or self.views.get(task_id)
        return view is not None and view.terminal

    def _decode_part_of(self, task_id: str) -> None:
        """Decode the encoded part that holds ``task_id`` into :attr:`views` (the others stay
        encoded)."""
        with self._decoding:
            kept: list[FinishedViews] = []
            for part in self._finished:
                if part.holds(task_id):
                    self.views.update(part.decode())
                else:
                    kept.append(part)
            self._finished = kept

    def registered_again(self, session: str, knows: Callable[[str], bool]) -> TaskView | None:
        """The first in queue order of a session's unregistered tasks whose name ``knows`` (a
        worker's registry) answers to (none holding events of a newer onward); each name is
        asked about once."""
        names = self._unregistered_in.get(session)
        if not names:
            return None
        best: TaskView | None = None
        for name, heap in list(names.items()):
            while heap:
                view = self.views.get(heap[0][3])
                if (
                    view is not None
                    and view.state == "unregistered"
                    and not view.unknown_events
                    and view.queue_key() == heap[0][:3]
                ):
                    break
                heapq.heappop(heap)  # stale: claimed, abandoned, ended or reprioritised since
            if not heap:
                del names[name]
            elif (best is None or heap[0][:3] < best.queue_key()) and knows(name):
                best = self.views[heap[0][3]]
        return best

    def _unregistered_under(self, view: TaskView) -> None:
        names = self._unregistered_in.setdefault(view.session, {})
        heapq.heappush(names.setdefault(view.name, []), (*view.queue_key(), view.task_id))

    def running_in(self, session: str) -> list[TaskView]:
        """The views of a session's running tasks (a snapshot: another thread may fold
        meanwhile)."""
        views = self.views
        found: list[TaskView] = []
        for task_id in list(self._running_in.get(session, ())):
            view = views.get(task_id)
            if view is not None and view.state == "running":
                found.append(view)
        found.sort(key=lambda v: v.order)  # in submission order, whatever the set's
        return found

    def unfinished(self) -> list[TaskView]:
        """The views of the tasks that have not ended, without decoding the finished tasks a
        checkpoint still holds, nor looking at the finished ones decoded (a snapshot: another
        thread may fold meanwhile)."""
        return list(self._active.values())

    # -- folding ---------------------------------------------------------------------------

    def apply(self, r: Recorded) -> None:
        """Fold one event of a task stream.

        Raises:
            IllegalTransition: the event is not allowed in the task's current state.
        """
        task_id = r.stream[len(TASK_PREFIX) :]
        event = r.event
        view = self.views.get(task_id)
        if view is None and self._loaded_finished:
            view = self.view(task_id)
        kind = type(event)
        if view is None:
            if r.version != 1 and not isinstance(event, UnknownEvent):
                raise out_of_sequence(r, 0)
        elif r.version != view.version + 1 and view.state not in _UNTRUSTED:
            raise out_of_sequence(r, view.version)
        if kind in STEP_OUTCOME_TYPES and view is not None and view.state == "running":
            # The hot path of replay: a step outcome changes no state, only the counters.
            view.version = r.version
            view.updated_at = r.meta.time
            view.steps += getattr(event, "final", True)
            return
        if isinstance(event, UnknownEvent):
            if view is None:  # its submission is of a newer kind: keep a placeholder
                view = TaskView(
                    task_id=task_id,
                    session=self._intern(r.meta.session),
                    name="",
                    state=UNKNOWN_STATE,
                    priority="normal",
                    deadline=None,
                    key=None,
                    parent=None,
                    submitted_at=r.meta.time,
                    order=r.position,
                )
                self.views[task_id] = view
                self._active[task_id] = view
            view.unknown_events += 1
            view.version = r.version
            view.updated_at = r.meta.time
            return
        known = _KINDS.get(kind)
        tag, follow_up = _kind_of(kind) if known is None else known
        if view is None:
            if not isinstance(event, TaskSubmitted):
                TASK.evolve(TASK.initial, tag, stream=r.stream, version=r.version)
                return
            meta = r.meta
            strings = self._strings
            state = _SUBMITTED.get(tag)
            view = TaskView(
                task_id=task_id,
                session=strings.setdefault(meta.session, meta.session),
                name=strings.setdefault(event.name, event.name),
                state=(
                    TASK.evolve(TASK.initial, tag, stream=r.stream, version=r.version)
                    if state is None
                    else state
                ),
                priority=_PRIORITY_VALUES[event.priority],
                deadline=event.deadline,
                key=event.key,
                parent=event.parent,
                submitted_at=meta.time,
                updated_at=meta.time,
                order=r.position,
                version=r.version,
                forked_from=event.forked_from,
            )
            self.views[task_id] = view
            if view.state not in TASK.terminal:
                self._active[task_id] = view
            parent = None if event.parent is None else self.view(event.parent)
            if parent is not None:
                parent.children = (*parent.children, task_id)
            if self._heap_index is not None:
                self._push(view)
            if view.deadline is not None:
                heapq.heappush(self._deadlines, (view.deadline, task_id))
            return
        before = view.state
        after = TASK.table.get((before, tag))
        if (
            after is None
            and isinstance(event, TaskQuarantined)
            and (before in _UNTRUSTED or view.unknown_events)
            and before not in TASK.terminal
        ):
            # The one event folded after its history's damage; and one that ends a task
            # whose state a newer onward's events may have moved on.
            after = "quarantined"
        if after is None:
            if view.unknown_events:
                # After an event of a newer kind the state may be stale: read on, do not judge.
                view.version = r.version
                view.updated_at = r.meta.time
                return
            TASK.evolve(before, tag, stream=r.stream, version=r.version)  # raises
            return
        view.state = after
        view.version = r.version
        view.updated_at = r.meta.time
        if after == "running":
            if before != "running":
                self._running_in.setdefault(view.session, set()).add(task_id)
        elif before == "running":
            self._not_running(view)
        if before == "waiting" and after != "waiting" and task_id in self.waiting:
            self._stops_waiting(view)  # before the follow-up clears what it waited for
        if follow_up is not None:
            follow_up(self, view, event, r)
        state = view.state
        if state != before or isinstance(event, TaskReprioritised):
            if state == "queued":
                self._push(view)
            if state == "waiting":
                self.waiting.add(task_id)
            else:
                if self.waiting and task_id in self.waiting:
                    self._stops_waiting(view)
                # Its wait is over (claimed, cancelled, failed, missed...): nothing of it
                # shows. Its timer's entries are dropped when next looked at.
                view.waiting_reason, view.waiting_until, view.waiting_on = "", None, ()
                view.waiting_topic = view.waiting_limit = view.waiting_breaker = ""
            if state == "unregistered":
                self._unregistered_under(view)
            if state in TASK.terminal:
                view.worker = ""
                self._active.pop(task_id, None)
                if task_id in self._waiters_of:
                    self._subtask_ended(task_id)
            else:
                self._active[task_id] = view

    def _not_running(self, view: TaskView) -> None:
        """Take a task that no longer runs out of its session's running tasks."""
        ids = self._running_in.get(view.session)
        if ids is not None:
            ids.discard(view.task_id)
            if not ids:
                del self._running_in[view.session]

    def _subtask_ended(self, task_id: str) -> None:
        """A task that others wait for ended: look at each of them again at the next claim
        (the index names only a waiter's current wait: a look at its ``waiting_on``, which may
        hold thousands of subtasks, would cost each subtask's end their number)."""
        for waiter in list(self._waiters_of.get(task_id, ())):
            view = self.views.get(waiter)
            if view is not None and view.state == "waiting" and view.waiting_on:
                self._to_check.setdefault(view.session, set()).add(waiter)

    def wake(self, limit: str, time: float) -> None:
        """A permit of ``limit`` came free: make ready the most urgent task that waits for one
        and is not ready yet (one per permit, so that a freed permit does not wake a crowd)."""
        asleep = [
            view
            for view in self._still_waiting(
                self._for_limit.get(limit, set()), "waiting_limit", limit
            )
            if view.waiting_until is None or view.waiting_until > time
        ]
        if asleep:
            self.ready_at(min(asleep, key=lambda v: v.queue_key()), time)

    def wake_breaker(self, dependency: str, time: float) -> None:
        """A breaker closed (its trial call succeeded): every task that waits on it is ready
        now, before the end of the cool-down it was given."""
        waiting = self._for_breaker.get(dependency, set())
        for view in self._still_waiting(waiting, "waiting_breaker", dependency):
            if view.waiting_until is None or view.waiting_until > time:
                self.ready_at(view, time)

    def ready_at(self, view: TaskView, time: float) -> None:
        """End a waiting task's wait at ``time`` (a message, an answer, a permit or a closed
        breaker came for it): it is ready once the clock is there."""
        if view.state == "waiting":  # (one that no longer waits has no wait to end)
            view.waiting_until = time
            self._timer(view)

    def ready_waiting(
        self, session: str, now: float, ended: Callable[[TaskView], bool]
    ) -> TaskView | None:
        """The most urgent waiting task of a session that may run at ``now``: its timer has
        passed (a retry's back-off, a durable sleep, a message, an answer, a permit or a
        closed breaker ended its wait), or it waits for subtasks and ``ended`` says they have
        all ended (asked only of a task that would come first). A task holding events of a
        newer onward never. Looks only at the tasks whose timers passed and at those waiting
        for subtasks: a task parked on a message or an answer costs nothing."""
        best = self._first_due(session, now)
        parents = self._to_check.get(session) or set()
        for task_id in list(parents):
            parent = self.views.get(task_id)
            if parent is None or parent.state != "waiting" or not parent.waiting_on:
                parents.discard(task_id)
                continue
            until = parent.waiting_until
            if parent.unknown_events or (until is not None and until > now):
                continue
            if best is None or parent.queue_key() < best.queue_key():
                if ended(parent):
                    best = parent
                else:  # looked at again once another of its subtasks ends
                    parents.discard(task_id)
        return best

    def next_timer(self, session: str) -> float | None:
        """When the first wait of a session's tasks on a timer ends (None: none is on a timer;
        it may have passed); a task holding events of a newer onward is never resumed here,
        and its timer is not counted."""
        with self._timing:
            return self._next_timer(session)

    def _drop_ended(self, session: str, due: dict[str, tuple[int, float, int] | None]) -> None:
        """Drop the due tasks whose wait ended (their entries in ``_ranked`` are superseded):
        a task that is no candidate (it waits for subtasks, or holds a newer onward's
        events) has none there to be dropped with. Looked at again once their number has
        doubled."""
        for task_id in list(due):
            view = self.views.get(task_id)
            if view is None or view.waiting_until is None or view.state != "waiting":
                del due[task_id]
        self._kept_due[session] = len(due)

    def _next_timer(self, session: str) -> float | None:
        first: float | None = None
        due = self._due.get(session, {})
        self._drop_ended(session, due)
        for task_id in due:
            view = self.views.get(task_id)
            until = None if view is None else view.waiting_until
            if (
                view is not None
                and until is not None
                and not view.unknown_events
                and (first is None or until < first)
            ):
                first = until
        heap = self._timers.get(session)
        while heap:
            key, task_id = heap[0]
            view = self.views.get(task_id)
            # Read once: a fold in another thread (a claim) may set it to None meanwhile.
            until = None if view is None else view.waiting_until
            if (
                view is not None
                and until is not None
                and view.state == "waiting"
                and not view.unknown_events
                and _timer_key(until) == key
            ):
                return until if first is None or until < first else first
            heapq.heappop(heap)  # stale: the wait ended, or another replaced it
        return first

    def waits_in(self, session: str) -> bool:
        """Whether any task of ``session`` is waiting."""
        return bool(self._waiting_in.get(session))

    def _first_due(self, session: str, now: float) -> TaskView | None:
        """The most urgent waiting task of a session whose timer has passed at ``now`` and
        that waits for no subtask (none holding events of a newer onward). Tasks move from
        the timers to the due ones as they come due, ranked once: a claim among many due
        tasks costs the logarithm of their number, not their number."""
        with self._timing:
            due = self._due.setdefault(session, {})
            ranked = self._ranked.setdefault(session, [])
            heap = self._timers.get(session)
            while heap and heap[0][0] <= now:
                self._rank(due, ranked, heapq.heappop(heap)[1])
            if len(due) > 64 + 2 * self._kept_due.get(session, 0):
                self._drop_ended(session, due)  # entries without a ranked one: looked at here
            if len(ranked) > 64 + 4 * len(due):  # mostly superseded entries: rebuilt
                ranked[:] = [(*key, i) for i, key in due.items() if key is not None]
                heapq.heapify(ranked)
            while ranked:
                entry = ranked[0]
                task_id = entry[3]
                if due.get(task_id) != entry[:3]:  # superseded by a later entry
                    heapq.heappop(ranked)
                    continue
                view = self.views.get(task_id)
                until = None if view is None else view.waiting_until  # read once: next_timer
                if view is None or until is None or view.state != "waiting":
                    heapq.heappop(ranked)
                    del due[task_id]
                elif until > now:  # a later wait, or a clock set back: on its timer again
                    heapq.heappop(ranked)
                    del due[task_id]
                    heapq.heappush(
                        self._timers.setdefault(session, []), (_timer_key(until), task_id)
                    )
                elif view.waiting_on or view.unknown_events:
                    heapq.heappop(ranked)  # due still (its timer counts), yet no candidate
                    due[task_id] = None
                elif view.queue_key() != entry[:3]:  # its priority or deadline changed
                    self._rank(due, ranked, task_id)
                else:
                    return view
            return None

    def _reranked(self, view: TaskView) -> None:
        """A task's queue key changed: if it is due, rank it again at its new key (its entry
        at the old one is superseded)."""
        with self._timing:
            due = self._due.get(view.session)
            if due is not None and due.get(view.task_id) is not None:
                self._rank(due, self._ranked.setdefault(view.session, []), view.task_id)

    def _rank(
        self,
        due: dict[str, tuple[int, float, int] | None],
        ranked: list[tuple[int, float, int, str]],
        task_id: str,
    ) -> None:
        """Put a task among a session's due ones at its queue key (an entry at another key
        is superseded)."""
        view = self.views.get(task_id)
        if view is None:
            return
        key = view.queue_key()
        if due.get(task_id) != key:
            due[task_id] = key
            heapq.heappush(ranked, (*key, task_id))

    def _still_waiting(self, ids: set[str], attribute: str, value: str) -> list[TaskView]:
        """The views of ``ids`` that still wait with ``attribute`` at ``value``; the others
        leave ``ids``."""
        found: list[TaskView] = []
        for task_id in list(ids):
            view = self.views.get(task_id)
            if view is None or view.state != "waiting" or getattr(view, attribute) != value:
                ids.discard(task_id)
            else:
                found.append(view)
        return found

    def _waits(self, view: TaskView) -> None:
        """Index a task that began to wait, by what ends its wait."""
        task_id, session = view.task_id, view.session
        self.waiting.add(task_id)
        self._waiting_in.setdefault(session, set()).add(task_id)
        if view.waiting_on:
            self._to_check.setdefault(session, set()).add(task_id)
            for child in view.waiting_on:
                self._waiters_of.setdefault(child, set()).add(task_id)
        if view.waiting_limit:
            self._for_limit.setdefault(view.waiting_limit, set()).add(task_id)
        if view.waiting_breaker:
            self._for_breaker.setdefault(view.waiting_breaker, set()).add(task_id)
        if view.waiting_until is not None:
            self._timer(view)

    def _stops_waiting(self, view: TaskView) -> None:
        """Take a task that no longer waits out of the indexes that name it (its timer and
        due entries are dropped when next looked at)."""
        task_id = view.task_id
        self.waiting.discard(task_id)
        for child in view.waiting_on:
            waiters = self._waiters_of.get(child)
            if waiters is not None:
                waiters.discard(task_id)
                if not waiters:
                    del self._waiters_of[child]
        for index, key in (
            (self._waiting_in, view.session),
            (self._to_check, view.session),
            (self._for_limit, view.waiting_limit),
            (self._for_breaker, view.waiting_breaker),
        ):
            ids = index.get(key)
            if ids is not None:
                ids.discard(task_id)
                if not ids:
                    del index[key]
        if view.session not in self._waiting_in:  # none of its tasks waits: nor do its timers
            with self._timing:
                self._timers.pop(view.session, None)
                self._due.pop(view.session, None)
                self._ranked.pop(view.session, None)
                self._kept_due.pop(view.session, None)

    def _timer(self, view: TaskView) -> None:
        """Put a waiting task's timer (not None) on its session's timers; past a few stale
        entries for each live one, they are built again from the views."""
        assert view.waiting_until is not None
        session = view.session
        with self._timing:
            heap = self._timers.get(session)
            if heap is None:
                heap = self._timers[session] = []
            heapq.heappush(heap, (_timer_key(view.waiting_until), view.task_id))
            if len(heap) > 64 + 4 * len(self._waiting_in.get(session, ())):
                self._timers[session] = self._timers_of(self._waiting_in.get(session, ()))

    def _timers_of(self, ids: Iterable[str]) -> list[tuple[float, str]]:
        """A heap of the timers of the waiting tasks among ``ids``."""
        heap = [
            (_timer_key(view.waiting_until), task_id)
            for task_id in ids
            if (view := self.views.get(task_id)) is not None
            and view.state == "waiting"
            and view.waiting_until is not None
        ]
        heapq.heapify(heap)
        return heap

    def apply_inbox(self, r: Recorded) -> None:
        """Fold a message sent to a task (its inbox stream ``inbox-<id>``): a task waiting for
        a message of that topic is ready at once."""
        view = self.view(r.stream[len(INBOX_PREFIX) :])
        if view is None:
            return
        view.inbox_version = r.version
        topic = getattr(r.event, "topic", "")
        if view.state == "waiting" and view.waiting_topic and view.waiting_topic == topic:
            self.ready_at(view, r.meta.time)

    def damage(self, task_id: str, damage: StreamDamage, session: str = "") -> None:
        """Mark a task whose history cannot be trusted from one of its records on: it leaves
        the queue and is never claimed (the folds skip its stream's later events, but a
        ``TaskQuarantined``).

        Args:
            task_id: the task.
            damage: its stream's first bad record and what is wrong with it.
            session: its session, for a task the log never showed intact.
        """
        view = self.view(task_id)
        if view is None:
            view = TaskView(
                task_id=task_id,
                session=self._intern(session),
                name="",
                state=DAMAGED_STATE,
                priority="normal",
                deadline=None,
                key=None,
                parent=None,
                order=damage.position,
            )
            self.views[task_id] = view
        if task_id in self.waiting:
            self._stops_waiting(view)
        if view.state == "running":
            self._not_running(view)
        view.state = DAMAGED_STATE
        view.waiting_reason, view.waiting_until, view.waiting_on = "", None, ()
        view.waiting_topic = view.waiting_limit = view.waiting_breaker = ""
        self._active[task_id] = view
        view.damage = str(damage)

    def _intern(self, text: str) -> str:
        """One copy of each session and task name, however many tasks share it."""
        return self._strings.setdefault(text, text)

    @property
    def _heaps(self) -> dict[str, list[tuple[int, float, int, str]]]:
        """The queues per session (heaps with possibly stale entries), built when first asked."""
        if self._heap_index is None:
            index: dict[str, list[tuple[int, float, int, str]]] = {}
            # From the unfinished tasks (a finished one is never queued): a reader's decoding
            # of finished tasks into the views may run meanwhile.
            for view in list(self._active.values()):
                if view.state == "queued":
                    index.setdefault(view.session, []).append((*view.queue_key(), view.task_id))
            for heap in index.values():
                heapq.heapify(heap)
            self._heap_index = index
        return self._heap_index

    def _push(self, view: TaskView) -> None:
        if self._heap_index is None:
            return  # the queues are not built yet: they will be, from the views
        heap = self._heap_index.setdefault(view.session, [])
        heapq.heappush(heap, (*view.queue_key(), view.task_id))

    # -- reading ---------------------------------------------------------------------------

    def queued(self, session: str | None = None) -> Iterator[TaskView]:
        """Queued tasks in queue order, of one session or of all (lazily: stop early to read
        only the first few); a task holding events of a newer onward is not in the queue."""
        if session is None:
            heap = [entry for h in self._heaps.values() for entry in h]
        else:
            heap = list(self._heaps.get(session, ()))
        heapq.heapify(heap)
        seen: set[str] = set()
        while heap:
            rank, deadline, order, task_id = heapq.heappop(heap)
            view = self.views.get(task_id, _LET_GO)
            if (
                task_id in seen
                or view.state != "queued"
                or view.unknown_events
                or view.queue_key()
                != (
                    rank,
                    deadline,
                    order,
                )
            ):
                continue
            seen.add(task_id)
            yield view

    def next_queued(self, session: str) -> TaskView | None:
        """The first queued task of a session, dropping stale queue entries on the way."""
        heap = self._heaps.get(session)
        while heap:
            rank, deadline, order, task_id = heap[0]
            view = self.views.get(task_id, _LET_GO)
            if (
                view.state == "queued"
                and not view.unknown_events
                and view.queue_key() == (rank, deadline, order)
            ):
                return view
            heapq.heappop(heap)
        return None

    def has_queued(self, session: str) -> bool:
        """Whether a task of ``session`` is queued, found without changing anything (no stale
        entry dropped, no queue built): a look that may run outside the lock its changes are
        made under, beside them (a task's end, on its event loop or its worker thread, while
        a round claims)."""
        index = self._heap_index
        if index is None:
            return any(
                view.state == "queued" and view.session == session and not view.unknown_events
                for view in list(self._active.values())
            )
        heap = index.get(session, [])
        for i in range(len(heap)):
            try:
                rank, deadline, order, task_id = heap[i]
            except IndexError:  # a claim took entries off meanwhile
                break
            view = self.views.get(task_id, _LET_GO)
            if (
                view.state == "queued"
                and not view.unknown_events
                and view.queue_key() == (rank, deadline, order)
            ):
                return True
        return False

    def take_heads(
        self, session: str, count: int, before: tuple[int, float, int] | None = None
    ) -> list[TaskView]:
        """Up to ``count`` first queued tasks of a session, in queue order, taken off its
        queue: a worker claims them at once, and :meth:`put_back` the ones it could not (a
        claimed task would leave the queue at the claim's fold anyway). With ``before``, only
        those whose queue key comes before it (a waiting task ready at that key comes next)."""
        heap = self._heaps.get(session)
        found: list[TaskView] = []
        seen: set[str] = set()
        while heap and len(found) < count:
            if before is not None and heap[0][:3] >= before:
                break  # every entry left comes after it too
            rank, deadline, order, task_id = heapq.heappop(heap)
            view = self.views.get(task_id, _LET_GO)  # an entry left by a task since ended
            if (
                task_id not in seen
                and view.state == "queued"
                and not view.unknown_events
                and view.queue_key() == (rank, deadline, order)
            ):
                seen.add(task_id)
                found.append(view)
        return found

    def put_back(self, views: Iterable[TaskView]) -> None:
        """Return to the queue the tasks :meth:`take_heads` gave that were not claimed."""
        for view in views:
            if view.state == "queued":
                self._push(view)

    def near_head(self, session: str, spread: int = 7) -> list[TaskView]:
        """The first queued task of a session and, of the same priority and with no deadline,
        those queued near it (in the first ``spread`` entries of the queue's heap): workers
        that claim at random among them rarely contend for the same task."""
        head = self.next_queued(session)
        if head is None:
            return []
        found = [head]
        if head.deadline is not None:
            return found
        for rank, deadline, order, task_id in self._heaps[session][1:spread]:
            view = self.views.get(task_id, _LET_GO)
            if (
                view.state == "queued"
                and view.queue_key() == (rank, deadline, order)
                and view.priority == head.priority
                and view.deadline is None
            ):
                found.append(view)
        return found

    def overdue(self, now: float) -> list[TaskView]:
        """Queued or waiting tasks whose deadline has passed (running ones are left to finish).

        A query: the same tasks are found again until they end.
        """
        found: list[TaskView] = []
        keep: dict[str, tuple[float, str]] = {}
        heap = self._deadlines
        while heap and heap[0][0] < now:
            entry = heapq.heappop(heap)
            deadline, task_id = entry
            view = self.views.get(task_id, _LET_GO)
            # An entry left by a deadline a retry replaced is dropped: only the view's counts.
            if view.terminal or view.deadline != deadline or task_id in keep:
                continue
            keep[task_id] = entry  # asked again until the task ends (a failed mark retries)
            if view.state in ("queued", "waiting"):
                found.append(view)
        for entry in keep.values():
            heapq.heappush(heap, entry)
        return found

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every task and the queue order."""
        return {
            "tasks": {k: msgspec.structs.asdict(v) for k, v in sorted(self.tasks.items())},
            "queue": [v.task_id for v in self.queued()],
            "waiting": sorted(self.waiting),
        }

    def dump(self) -> tuple[dict[str, TaskView], list[FinishedViews]]:
        """For a checkpoint: the views of the tasks that have not ended, by id, and those of
        the finished ones, encoded (the parts still encoded, and one more for the tasks that
        ended since the last checkpoint; past :data:`FINISHED_PARTS_KEPT` parts, the two
        smallest as one).

        The views of the tasks that ended since are let go of too, kept encoded in that new
        part until one of them is asked for: a worker that serves for days holds the tasks
        that have not ended, not every task it saw end."""
        with self._decoding:
            terminal = TASK.terminal
            views = self.views
            ended = {k: v for k, v in list(views.items()) if v.state in terminal}
            finished = list(self._finished)
            if ended:
                finished.append(FinishedViews.of(ended))
            while len(finished) > FINISHED_PARTS_KEPT:
                finished.sort(key=lambda part: len(part.ids))
                merged = finished[0].decode() | finished[1].decode()
                finished = [FinishedViews.of(merged), *finished[2:]]
            # The parts first, then the views let go of: a reader between the two finds a task
            # in both, never in neither.
            self._finished = finished
            if ended:
                self._loaded_finished = True
                for task_id in ended:
                    views.pop(task_id, None)
            active = {k: v for k, v in views.items() if v.state not in terminal}
        return active, list(finished)

    def load(self, views: dict[str, TaskView], finished: Iterable[FinishedViews] = ()) -> None:
        """Restore from a checkpoint's task views: those of the tasks that have not ended,
        and the finished ones, left encoded until asked for."""
        self.views = views
        terminal = TASK.terminal
        self._active = {k: v for k, v in views.items() if v.state not in terminal}
        self._finished = list(finished)
        self._loaded_finished = bool(self._finished)
        self.waiting = set()
        self._waiting_in, self._to_check, self._waiters_of, self._due = {}, {}, {}, {}
        self._ranked, self._kept_due = {}, {}
        self._for_limit, self._for_breaker = {}, {}
        for view in views.values():
            if view.state == "waiting":
                self._waits(view)
        self._timers = {s: self._timers_of(ids) for s, ids in self._waiting_in.items()}
        self._unregistered_in = {}
        for view in views.values():
            if view.state == "unregistered":
                self._unregistered_under(view)
        self._running_in = {}
        for view in self._active.values():
            if view.state == "running":
                self._running_in.setdefault(view.session, set()).add(view.task_id)
        self._heap_index = None  # built on first use: loading stays proportional to decoding
        self._deadlines = [
            (v.deadline, v.task_id)
            for v in views.values()
            if v.deadline is not None and not v.terminal
        ]
        heapq.heapify(self._deadlines)


_ENCODER = msgspec.msgpack.Encoder()
_VIEWS_DECODER = msgspec.msgpack.Decoder(dict[str, TaskView])
_STEP_OUTCOMES = frozenset({"StepCompleted", "StepFailed"})

# -- what an allowed event changes in its task's view, besides its state ---------------------

#: A change to a task's view made by one type of event, after its state moved.
_FollowUp = Callable[[TaskProjection, TaskView, Any, Recorded], None]


def _step(tasks: TaskProjection, view: TaskView, event: Any, r: Recorded) -> None:
    view.steps += getattr(event, "final", True)


def _claimed(tasks: TaskProjection, view: TaskView, event: TaskClaimed, r: Recorded) -> None:
    view.attempt += 1
    view.worker = event.worker
    view.lease_until = event.lease_until
    view.waiting_reason, view.waiting_until, view.waiting_on = "", None, ()


def _let_go(tasks: TaskProjection, view: TaskView, event: Any, r: Recorded) -> None:
    view.worker = ""


def _progressed(tasks: TaskProjection, view: TaskView, event: TaskProgressed, r: Recorded) -> None:
    view.progress, view.note = event.fraction, event.note


def _waiting(tasks: TaskProjection, view: TaskView, event: TaskWaiting, r: Recorded) -> None:
    view.worker = ""
    view.waiting_reason = event.reason
    view.waiting_until = event.until
    view.waiting_on = tuple(event.on)
    view.waiting_topic = event.topic
    view.waiting_limit = event.limit
    view.waiting_breaker = event.breaker
    if event.topic and view.inbox_version > event.inbox_after:
        view.waiting_until = r.meta.time  # a message came while it began to wait
    tasks._waits(view)


def _retried(tasks: TaskProjection, view: TaskView, event: TaskRetried, r: Recorded) -> None:
    view.error = ""
    view.worker = ""
    view.deadline = event.deadline
    if event.deadline is not None:
        # The old deadline's entry may stay in the heap: overdue() drops what no view matches.
        heapq.heappush(tasks._deadlines, (event.deadline, view.task_id))


def _reprioritised(
    tasks: TaskProjection, view: TaskView, event: TaskReprioritised, r: Recorded
) -> None:
    view.priority = event.priority.value
    tasks._reranked(view)


def _answered(tasks: TaskProjection, view: TaskView, event: Any, r: Recorded) -> None:
    if view.state == "waiting" and not view.waiting_on:
        # The human answered: the wait ends now, and the task runs again to act on it.
        tasks.ready_at(view, r.meta.time)


def _failed(tasks: TaskProjection, view: TaskView, event: TaskFailed, r: Recorded) -> None:
    view.error = f"{event.error_type}: {event.message}" if event.message else event.error_type


def _succeeded(tasks: TaskProjection, view: TaskView, event: Any, r: Recorded) -> None:
    view.progress = 1.0


def _missed(tasks: TaskProjection, view: TaskView, event: Any, r: Recorded) -> None:
    view.error = "deadline missed"


def _quarantined(
    tasks: TaskProjection, view: TaskView, event: TaskQuarantined, r: Recorded
) -> None:
    view.error = f"quarantined: {event.reason}" if event.reason else "quarantined"


#: The follow-up of each kind of event, the first that matches (a subclass matches too).
_FOLLOW_UPS: tuple[tuple[type[Any] | tuple[type[Any], ...], _FollowUp], ...] = (
    (TaskClaimed, _claimed),
    ((TaskLeaseExpired, TaskReleased), _let_go),
    (TaskProgressed, _progressed),
    (TaskWaiting, _waiting),
    (TaskRetried, _retried),
    (TaskReprioritised, _reprioritised),
    ((ApprovalGranted, ApprovalDenied), _answered),
    (TaskFailed, _failed),
    (TaskSucceeded, _succeeded),
    (TaskDeadlineMissed, _missed),
    (TaskQuarantined, _quarantined),
)

#: The state a task enters with the first event of its stream, by the event's tag.
_SUBMITTED = {tag: state for (source, tag), state in TASK.table.items() if source == TASK.initial}

#: Each event type's tag and follow-up, found on first sight (:func:`_kind_of`).
_KINDS: dict[type[Any], tuple[str, _FollowUp | None]] = {}


def _kind_of(kind: type[Any]) -> tuple[str, _FollowUp | None]:
    """An event type's tag and the follow-up of its events (None: none)."""
    tag = kind.__struct_config__.tag
    assert isinstance(tag, str)
    follow_up: _FollowUp | None = None
    if tag in _STEP_OUTCOMES:
        follow_up = _step
    else:
        follow_up = next((f for types, f in _FOLLOW_UPS if issubclass(kind, types)), None)
    _KINDS[kind] = (tag, follow_up)
    return tag, follow_up


def _timer_key(until: float) -> float:
    """Where a timer goes among the others: at its moment, a NaN (read from a damaged log)
    first, as the moment it would be compared with always finds it passed."""
    return -math.inf if math.isnan(until) else until


_RESUMABLE = frozenset({"queued", "running", "waiting"})
_UNTRUSTED = frozenset({DAMAGED_STATE, UNKNOWN_STATE})


def out_of_sequence(r: Recorded, version: int) -> CorruptRecord:
    """The error for a record of a task stream folded up to ``version`` that does not come
    next: versions are missing before it (a removed record), or it does not come after them."""
    if r.version > version + 1:
        missing = (
            f"version {version + 1} of its stream is missing"
            if r.version == version + 2
            else f"versions {version + 1} to {r.version - 1} of its stream are missing"
        )
        return CorruptRecord(
            missing, stream=r.stream, version=r.version, position=r.position, kind="gap"
        )
    return CorruptRecord(
        f"it comes after version {version} of its stream",
        stream=r.stream,
        version=r.version,
        position=r.position,
        kind="order",
    )


#: The event types that record a step's outcome (the bulk of any log), as read or as folded.
STEP_OUTCOME_TYPES = FOLDED_STEP_OUTCOMES
