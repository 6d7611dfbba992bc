"""Events of a step: a durable call inside a task, stored in the task's stream.

A step's outcome is recorded once; when the task re-runs, a completed step returns its recorded
result without running again.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from onward.events.base import Event

__all__ = ["PatchMarked", "StepCompleted", "StepFailed", "StepStarted", "StepWithdrawn"]


class StepStarted(Event, frozen=True, kw_only=True):
    """A step began to run (a step in flight at a crash is the only one that may run again).

    Attributes:
        index: the step's position in its task, from 0.
        name: the step's name.
        attempt: which try of the step this is, from 1.
        idempotency_key: the key the step passes on to external effects (task id + step index),
            so that a re-run after a crash is not done twice.
        wake_at: for a durable sleep (``engine.sleep``), when it ends, in seconds since the
            epoch (None for other steps).
    """

    family: ClassVar[str] = "step"

    index: int
    name: str
    attempt: int = 1
    idempotency_key: str = ""
    wake_at: float | None = None


class StepWithdrawn(Event, frozen=True, kw_only=True):
    """An at-most-once step's recorded start whose body never began: the step was cancelled
    while its start was being recorded (a ``TaskGroup`` sibling's error, a timeout around it, a
    stopping worker). Or a step's failure, recorded as its outcome, that its caller gave up on
    before it was told of it (cancelled as the failure was being recorded): the task's code
    never saw it. The start (or the failure) no longer counts: where the task's code started
    nothing after it, the next run runs the step (a start alone makes it refuse to: the body
    may have had its effect); where it did (it caught the cancellation and went on), the next
    run raises the cancellation there again, as the code met it.

    Attributes:
        index: the step's position in its task, from 0.
        name: the step's name.
        next_index: the index the task's next step would have taken then: a step recorded at
            this index or past it began after the cancellation.
    """

    family: ClassVar[str] = "step"

    index: int
    name: str
    next_index: int = 0


class PatchMarked(Event, frozen=True, kw_only=True):
    """A task run took the new code path of a change (``engine.patched(change_id)``): a re-run
    takes it again; a history recorded before the change, which holds no such marker, keeps
    the old path when it replays.

    Attributes:
        change_id: the change's name.
        index: the step index the task had reached.
    """

    family: ClassVar[str] = "step"

    change_id: str
    index: int


class StepCompleted(Event, frozen=True, kw_only=True):
    """A step finished; its result is what every later run of the task gets back.

    Attributes:
        index: the step's position in its task, from 0.
        name: the step's name.
        result: what the step returned, as plain JSON values.
        duration: how long the successful try took, in seconds.
        attempt: which try succeeded, from 1.
        dependency: the dependency the step's circuit breaker guards ("" when none).
    """

    family: ClassVar[str] = "step"

    index: int
    name: str
    result: Any = None
    duration: float = 0.0
    attempt: int = 1
    dependency: str = ""


class StepFailed(Event, frozen=True, kw_only=True):
    """A try of a step raised.

    Attributes:
        index: the step's position in its task, from 0.
        name: the step's name.
        attempt: which try failed, from 1.
        error_type: the exception's type name, qualified outside builtins
            (``TimeoutError``, ``sqlite3.OperationalError``).
        message: the exception's message (secrets redacted).
        signature: the error signature ("" when not computed).
        transient: whether the error was judged to pass on its own (worth a retry).
        final: True when this is the step's outcome; False when a fix or a retry follows,
            so a re-run of the task runs the step again.
        dependency: the dependency the step's circuit breaker guards ("" when none).
        error_class: the exception's class as ``module:qualname`` when it is not a builtin
            ("" for a builtin, and in records written before it was kept): a replay raises
            the same class again when its module is imported.
        literal: True when the exception's one argument was no string but the Python literal
            its message spells (``ValueError(404)``, ``StopIteration(5)``): a replay passes
            that value again, not its text (False: the message, in records written before).
        spread: True when that literal is a tuple of the exception's several arguments
            (``Throttled("slow down", 30)``), each passed again on its own; False for one
            argument, and in records written before (an earlier onward replays it as one).
        attributes: the exception's plain attributes (``None``, bool, int, float and str
            values of its ``__dict__``, and those of an object it holds, such as an HTTP
            error's response, one level down; texts redacted and cut), in the log's value
            encoding: a replay gives them back (``e.code``, ``e.response.status_code``).
            Empty when it had none, and in records written before they were kept.
    """

    family: ClassVar[str] = "step"

    index: int
    name: str
    attempt: int = 1
    error_type: str
    message: str = ""
    signature: str = ""
    transient: bool = False
    final: bool = True
    dependency: str = ""
    error_class: str = ""
    literal: bool = False
    spread: bool = False
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
