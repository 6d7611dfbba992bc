"""A task's run as the policies see it: what they may read of it and how they append.

The runner (:class:`onward.runtime.run.TaskRun`) implements :class:`RunningTask`; the healing
and judgement policies are written against this protocol only, so that they never import the
runner. :class:`Suspended` and :class:`LeaseLost` unwind a task run: they are signals, not
errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from onward.core.batch import Batch
from onward.events import BackendError, Context, Event, Redactor

__all__ = [
    "SECRET_REACH",
    "LeaseLost",
    "MustWait",
    "RunningTask",
    "StorageLost",
    "Suspended",
    "bounded",
    "error_message",
    "redaction_window",
]

#: The longest message a failure records (the log refuses oversized payloads).
MESSAGE_LIMIT = 4000

# Redacts where no log's own redactor is at hand (its patterns apply again when it appends).
_DEFAULT_REDACTOR = Redactor()


class Suspended(BaseException):
    """Unwinds a task that now waits durably (for subtasks, a retry, a breaker); not an error."""


class MustWait(BaseException):
    """A policy's decision, inside the step protocol, that the task waits (for a person's
    answer, a fix's delay): the protocol records it once the task's other step bodies under
    way have their outcomes recorded (an ``async def`` task's gathered steps), then the task
    unwinds with :class:`Suspended`.

    Attributes:
        wait: the events to record (a batch of them with their causes, or a plain list).
        then: what to do once they are recorded (tell a person they are asked), or None.
    """

    def __init__(self, wait: Batch | list[Event], then: Callable[[], None] | None = None) -> None:
        super().__init__("the task waits")
        self.wait = wait
        self.then = then


class LeaseLost(BaseException):
    """The task was cancelled or its lease taken while it ran: unwind it without recording.

    A BaseException, so that a task's own ``except Exception`` does not swallow it.
    """

    def __init__(self, task_id: str, why: str, *, cancelled: bool = False) -> None:
        super().__init__(f"task {task_id}: {why}")
        self.why = why
        #: Taken by a cancellation (else its lease ran out, it was quarantined or ended).
        self.cancelled = cancelled


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


def bounded(
    text: str, redact: Callable[[str], str] | None = None, limit: int = MESSAGE_LIMIT
) -> str:
    """A text to record or log: its secrets redacted first, then cut to ``limit`` characters.

    Redacting first matters: a token cut in two by the limit no longer has the shape that
    gives it away, and half a token is still half a secret.

    Args:
        text: the text.
        redact: the redactor's ``redact`` (the log's, with the user's patterns); the default
            patterns when None.
        limit: the longest text kept.

    Returns:
        The redacted text, cut with ``... [truncated]`` when it was longer than ``limit``.
    """
    # A huge text (a response body) is read only so far: what lies past four limits would be
    # cut anyway (unless redaction shrinks what comes before, so the cut drops the part of a
    # token it went through).
    cut = len(text) > 4 * limit
    text = (redact or _DEFAULT_REDACTOR.redact)(encodable(redaction_window(text, 4 * limit)))
    if len(text) <= limit and not cut:
        return text
    return text[:limit] + "... [truncated]"


#: The longest part of a secret a cut may leave before it: the window read for redaction gives
#: up at most this much of the run of non-space characters the cut goes through.
SECRET_REACH = 4096
_LAST_RUN = re.compile(r"\S+\Z")


def redaction_window(text: str, size: int) -> str:
    """The first ``size`` characters of ``text`` to redact, without the end of the run of
    non-space characters the cut goes through (up to :data:`SECRET_REACH` of it): a token cut
    in two no longer has the shape that gives it away, and redaction that shrinks what comes
    before it (a long token replaced by its tag) would bring its first part into what is kept.
    A longer run (minified JSON, base64) keeps its start."""
    if len(text) <= size:
        return text
    window = text[:size]
    if text[size].isspace():
        return window
    run = _LAST_RUN.search(window)
    if run is None:
        return window
    return window[: max(run.start(), size - SECRET_REACH)]


def encodable(text: str) -> str:
    """A text that encodes to UTF-8: each lone surrogate (a file name decoded with
    ``surrogateescape``, say) written as its escape, ``\\udce9``; any other text as it is."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def error_message(exc: BaseException, redact: Callable[[str], str] | None = None) -> str:
    """An exception's message, secrets redacted, then bounded (the log refuses oversized
    payloads); see :func:`bounded`."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not hide the failure it describes
        text = type(exc).__name__
    return bounded(text, redact)


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

    def awaited(self, index: int) -> bool:
        """Whether the task's code may still take step ``index``'s outcome: not once it has
        returned or raised while the step was under way (a gather it left on a sibling's
        error), nor once the step's caller gave the call up: its failure is recorded, but
        retrying it is pointless."""
        ...

    def redact(self, text: str) -> str:
        """A text with its secrets replaced, by the log's redactor."""
        ...

    def new_batch(self) -> Batch:
        """An empty batch whose events are caused by the run's claim unless they say."""
        ...

    def commit(self, batch: Batch) -> None:
        """Append a batch atomically (its events, and its appends to other streams)."""
        ...

    def record(self, events: list[Event]) -> None:
        """Append events to the task's stream at the version the run expects."""
        ...
