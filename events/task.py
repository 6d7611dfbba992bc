"""Events of a task's lifecycle, stored in the task's own stream ``task-<id>``."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from onward.events.base import Event
from onward.events.kinds import Priority

__all__ = [
    "SubtasksRead",
    "TaskCancelled",
    "TaskClaimed",
    "TaskDeadlineMissed",
    "TaskFailed",
    "TaskLeaseExpired",
    "TaskProgressed",
    "TaskQuarantined",
    "TaskReleased",
    "TaskReprioritised",
    "TaskRetried",
    "TaskSubmitted",
    "TaskSucceeded",
    "TaskUnregistered",
    "TaskWaiting",
]


class TaskSubmitted(Event, frozen=True, kw_only=True):
    """A task joined the queue: a registered function, called by name with these arguments.

    Attributes:
        name: the name the function was registered under.
        args: its positional arguments, as plain JSON values.
        kwargs: its keyword arguments, as plain JSON values.
        priority: how urgent it is.
        deadline: when it must be done, in seconds since the epoch (None: no deadline).
        key: its idempotency key: a second submission with the same key is the same task
            (None: no key).
        parent: the id of the task it was split from (None: a top-level task).
        forked_from: the task it is a fork of (None: not a fork).
        inherit_steps: for a fork, how many of the first steps of ``forked_from`` it takes the
            recorded outcomes of (they are not run again).
        schedule: the schedule whose tick submitted it (None: not scheduled).
        origin_version: for a fork, the version ``forked_from``'s stream was at when the fork
            was made: the outcomes it takes are those recorded up to it, whatever the origin
            does later (None: a fork made by an onward that did not say, which reads the
            origin as it is).
    """

    family: ClassVar[str] = "task"

    name: str
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    deadline: float | None = None
    key: str | None = None
    parent: str | None = None
    forked_from: str | None = None
    inherit_steps: int = 0
    schedule: str | None = None
    origin_version: int | None = None


class TaskRetried(Event, frozen=True, kw_only=True):
    """A failed, cancelled or missed task was put back in the queue as a new attempt: its
    completed steps replay, and the step it failed at runs again.

    Attributes:
        by: who asked.
        reason: why.
        previous: the state it was in.
        deadline: its deadline from now on (None: none).
    """

    family: ClassVar[str] = "task"

    by: str = ""
    reason: str = ""
    previous: str = ""
    deadline: float | None = None


class TaskUnregistered(Event, frozen=True, kw_only=True):
    """A worker found no function registered under the task's name: the task waits until one
    registers it again (or a person abandons it), instead of failing.

    Attributes:
        name: the name it was submitted under.
        worker: the worker that found none.
    """

    family: ClassVar[str] = "task"

    name: str
    worker: str = ""


class TaskReprioritised(Event, frozen=True, kw_only=True):
    """A queued or waiting task's priority changed.

    Attributes:
        priority: the new priority.
        previous: the priority it had before.
    """

    family: ClassVar[str] = "task"

    priority: Priority
    previous: Priority


class TaskClaimed(Event, frozen=True, kw_only=True):
    """A worker took the task to run it, holding a lease that it must renew or lose.

    The claim is an append at the stream's expected version, so two workers cannot both win.

    Attributes:
        worker: the worker that claimed it.
        lease_until: when the lease runs out, in seconds since the epoch.
        attempt: which run of the task this is, from 1 (a run after a crash or a lost lease
            counts as a new attempt).
    """

    family: ClassVar[str] = "task"

    worker: str
    lease_until: float
    attempt: int = 1


class TaskLeaseExpired(Event, frozen=True, kw_only=True):
    """A worker's lease on the task ran out before it finished; the task is free to claim.

    Attributes:
        worker: the worker whose lease ran out.
        lease_until: when the lease ran out, in seconds since the epoch.
    """

    family: ClassVar[str] = "task"

    worker: str
    lease_until: float


class TaskReleased(Event, frozen=True, kw_only=True):
    """A worker handed a running task back before it finished (it is stopping): the task is
    free to claim at once, and resumes at its first step with no recorded outcome.

    Attributes:
        worker: the worker that held it.
        reason: why ("SIGTERM", "stopped by the application", ...).
    """

    family: ClassVar[str] = "task"

    worker: str
    reason: str = ""


class TaskProgressed(Event, frozen=True, kw_only=True):
    """The task reported how far it has come (a progress checkpoint).

    Attributes:
        fraction: the share of the work done, from 0.0 to 1.0.
        note: what it is doing now, for people ("" when none).
    """

    family: ClassVar[str] = "task"

    fraction: float
    note: str = ""


class TaskWaiting(Event, frozen=True, kw_only=True):
    """The task waits durably, holding no worker, until something happens or a time comes.

    Attributes:
        reason: what it waits for: "subtasks", "approval", "retry", "breaker", ...
        until: when the wait ends on its own, in seconds since the epoch (a retry's due time, a
            breaker's half-open moment; None: only an event ends it).
        on: the ids of what it waits on (subtask ids, a decision id, a breaker's name).
        topic: the topic of the message it waits for ("" for none).
        inbox_after: the last version of its inbox stream it had read when it began to wait (a
            message that came after wakes it).
        limit: the queue limit whose permit it waits for ("" for none): a permit given back
            wakes it.
        limit_after: the version of the limit's stream it had read when it began to wait (a
            permit given back after that wakes it).
        breaker: the breaker (its dependency) it waits on ("" for none): the breaker closing
            (a trial call that succeeded) wakes it before ``until``.
    """

    family: ClassVar[str] = "task"

    reason: str
    until: float | None = None
    on: list[str] = msgspec.field(default_factory=list)
    topic: str = ""
    inbox_after: int = 0
    limit: str = ""
    limit_after: int = 0
    breaker: str = ""


class SubtasksRead(Event, frozen=True, kw_only=True):
    """A wait for subtasks (``engine.wait``) read them ended, one of them or more without
    success, and its task's code went on from what it read (its error). Every later run of
    the task reads each at that version of its stream, so that a subtask retried since does
    not change the way the code went (its steps recorded since hold it).

    Attributes:
        on: the subtasks waited for, in the wait's order.
        versions: the version of each one's stream whose end the wait read.
    """

    family: ClassVar[str] = "task"

    on: list[str]
    versions: list[int]


class TaskDeadlineMissed(Event, frozen=True, kw_only=True):
    """The task's deadline passed before it finished.

    Attributes:
        deadline: the deadline it missed, in seconds since the epoch.
    """

    family: ClassVar[str] = "task"

    deadline: float


class TaskSucceeded(Event, frozen=True, kw_only=True):
    """The task finished and returned a result.

    Attributes:
        result: what the function returned, as plain JSON values.
    """

    family: ClassVar[str] = "task"

    result: Any = None


class TaskFailed(Event, frozen=True, kw_only=True):
    """The task gave up: its error outlasted every retry, fix and workaround.

    Attributes:
        error_type: the exception's type name, qualified outside builtins
            (``ValueError``, ``sqlite3.OperationalError``).
        message: the exception's message (secrets redacted).
        signature: the error signature ("" when not computed).
    """

    family: ClassVar[str] = "task"

    error_type: str
    message: str = ""
    signature: str = ""


class TaskCancelled(Event, frozen=True, kw_only=True):
    """The task was withdrawn before it finished; it will not run again.

    Attributes:
        reason: why (a user's request, a cancelled parent, a missed deadline, ...).
    """

    family: ClassVar[str] = "task"

    reason: str = ""


class TaskQuarantined(Event, frozen=True, kw_only=True):
    """A person set the task aside: it never runs again, and the rest of its session goes on.

    For a task whose history cannot be trusted (a record fails its checksum, or its lifecycle
    does not allow it), one that holds events of a newer onward, or one that is stuck. It ends
    the task (state ``quarantined``), from queued, running or waiting, and also in a stream
    whose history is damaged, where it is the one event the projections still fold.

    Attributes:
        reason: why, for the audit.
        by: who set it aside.
        damage: what was wrong with its history ("" when it was not damaged).
    """

    family: ClassVar[str] = "task"

    reason: str = ""
    by: str = ""
    damage: str = ""
