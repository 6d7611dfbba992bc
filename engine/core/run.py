"""A task's run as the policies see it: what they may read of it and how they append.

The runner (:class:`onward.runtime.run.TaskRun`) implements :class:`RunningTask`; the healing
and judgement policies are written against this protocol only, so that they never import the
runner. :class:`Suspended` and :class:`LeaseLost` unwind a task run: they are signals, not
errors.
"""

from __future__ import annotations

from typing import Protocol

from onward.core.batch import Batch
from onward.events import BackendError, Context, Event

__all__ = ["LeaseLost", "RunningTask", "StorageLost", "Suspended", "error_message"]

#: The longest message a failure records (the log refuses oversized payloads).
MESSAGE_LIMIT = 4000


class Suspended(BaseException):
    """Unwinds a task that now waits durably (for subtasks, a retry, a breaker); not an error."""


class LeaseLost(BaseException):
    """The task was cancelled or its lease taken while it ran: unwind it without recording.

    A BaseException, so that a task's own ``except Exception`` does not swallow it.
    """

    def __init__(self, task_id: str, why: str) -> None:
        super().__init__(f"task {task_id}: {why}")
        self.why = why


class StorageLost(BaseException):
    """The log could not record a task run's events (an outage outlasted the log's tolerance,
    or the database failed): unwind the run without recording anything, and never as the
    task's failure.

    A BaseException, so that a task's own ``except Exception`` does not swallow it.

    Attributes:
        error: the storage error.
    """

    def __init__(self, error: BackendError) -> None:
        super().__init__(str(error))
        self.error = error


def error_message(exc: BaseException) -> str:
    """An exception's message, bounded (the log refuses oversized payloads)."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        text = type(exc).__name__
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "... [truncated]"


class RunningTask(Protocol):
    """What a policy may read of a task run, and how it appends to the task's stream.

    Attributes:
        task_id: the task.
        context: the envelope fields of the run's appends (session, actor, causation).
        fixes_tried: per step index, the fixes already tried on it.
        fix_applications: per step index, how often the fix in flight was applied.
        last_delay: per step index, the delay before its last retry.
    """

    task_id: str
    context: Context
    fixes_tried: dict[int, set[str]]
    fix_applications: dict[int, int]
    last_delay: dict[int, float]

    def new_batch(self) -> Batch:
        """An empty batch whose events are caused by the run's claim unless they say."""
        ...

    def commit(self, batch: Batch) -> None:
        """Append a batch atomically (its events, and its appends to other streams)."""
        ...

    def record(self, events: list[Event]) -> None:
        """Append events to the task's stream at the version the run expects."""
        ...
