"""The exceptions the engine adds to :mod:`onward.events.exceptions`.

::

    OnwardError
    ├── UsageError (ValueError)
    │   ├── InvalidTransition ........... a decision its lifecycle does not allow; nothing appended
    │   ├── NotRegistered (LookupError) . a task or step name no function was registered under
    │   ├── UnknownFix (LookupError) .... a fix name the registry does not hold (engine.fixes)
    │   ├── TaskNotFound (LookupError) .. a task id the log does not know
    │   ├── SignatureNotFound (LookupError) an error signature the log does not know
    │   ├── DecisionNotFound (LookupError) .. a decision the log does not hold
    │   ├── ApprovalNotFound (LookupError) .. no approval request (or an answered one) by that id
    │   └── NotFinished ................. asked for the result of a task still under way
    ├── TaskError ....................... ``Engine.result`` of a task that did not succeed
    │   ├── TaskFailedError ............. the task failed (its recorded error type and message)
    │   ├── TaskCancelledError .......... the task was cancelled
    │   ├── DeadlineMissed .............. the task missed its deadline
    │   └── TaskQuarantinedError ........ a person set the task aside (``onward quarantine``)
    └── LogDamaged (onward.events)
        └── StreamDamaged ............... a task's or session's history cannot be trusted
    StepMismatch (OnwardError) .......... a re-run called other steps than the log records
    StepInterrupted (OnwardError) ....... an at-most-once step was in flight when the worker died
    ActionDenied (OnwardError) .......... a human refused an action: the step fails with it
    CheckFailed (OnwardError) ........... an action ran but its declared check did not hold
    ComponentUnavailable (OnwardError) .. a component with no workaround left, and a human said stop
    StepFailedError (OnwardError) ....... a replayed failure whose exception type is not a builtin
"""

from __future__ import annotations

from onward.events import LogDamaged, OnwardError, UsageError
from onward.events.integrity import StreamDamage

__all__ = [
    "ActionDenied",
    "ApprovalNotFound",
    "CheckFailed",
    "ComponentUnavailable",
    "DeadlineMissed",
    "DecisionNotFound",
    "InvalidTransition",
    "NotFinished",
    "NotRegistered",
    "SignatureNotFound",
    "StepFailedError",
    "StepInterrupted",
    "StepMismatch",
    "StreamDamaged",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFound",
    "TaskQuarantinedError",
]


class InvalidTransition(UsageError):
    """A trigger that the lifecycle does not allow in the current state; nothing was appended.

    Attributes:
        lifecycle: "task", "session", ...
        subject: the task id or session name.
        state: its current state.
        trigger: the refused trigger.
    """

    def __init__(
        self, lifecycle: str, subject: str, state: str, trigger: str, hint: str = ""
    ) -> None:
        said = f"{lifecycle} {subject!r} is {state}: {trigger} is not allowed"
        super().__init__(f"{said} ({hint})" if hint else said)
        self.lifecycle = lifecycle
        self.subject = subject
        self.state = state
        self.trigger = trigger


class NotRegistered(UsageError, LookupError):
    """No task or step function is registered under this name."""


class DecisionNotFound(UsageError, LookupError):
    """No decision in the log matches what ``onward why`` was asked for (or several do)."""


class ApprovalNotFound(UsageError, LookupError):
    """No approval request awaits an answer under this id (or a prefix matches several)."""


class SignatureNotFound(UsageError, LookupError):
    """No error signature (or several) in the log matches what was asked for."""


class TaskNotFound(UsageError, LookupError):
    """No task with this id is in the log."""


class NotFinished(UsageError):
    """The task has not finished yet, so it has no result."""


class TaskError(OnwardError):
    """The task ended without a result.

    Attributes:
        task_id: the task.
    """

    def __init__(self, message: str, *, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskFailedError(TaskError):
    """The task failed; ``error_type`` and ``message`` are what the log recorded."""

    def __init__(self, task_id: str, error_type: str, message: str) -> None:
        super().__init__(f"task {task_id} failed: {error_type}: {message}", task_id=task_id)
        self.error_type = error_type
        self.message = message


class TaskCancelledError(TaskError):
    """The task was cancelled."""


class DeadlineMissed(TaskError):
    """The task missed its deadline before it could finish."""


class TaskQuarantinedError(TaskError):
    """A person set the task aside (``onward quarantine``): it will not run again.

    Attributes:
        reason: why it was set aside ("" when not said).
    """

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(
            f"task {task_id} was quarantined" + (f": {reason}" if reason else ""), task_id=task_id
        )
        self.reason = reason


class StreamDamaged(LogDamaged):
    """A task's or a session's history cannot be trusted from one of its records on (a record
    fails its checksum, was removed, or breaks its lifecycle): it is not resumed or opened.

    The rest of the log is unaffected. ``onward verify`` says what is wrong; a damaged task is
    set aside with ``onward quarantine TASK`` (or :meth:`onward.Engine.quarantine`).

    Attributes:
        subject: "task" or "session".
        name: the task id or the session's name.
        damage: the stream's first bad record and what is wrong with it.
    """

    def __init__(self, subject: str, name: str, damage: StreamDamage, advice: str = "") -> None:
        super().__init__(
            f"{subject} {name}: its history cannot be trusted: {damage}"
            + (f"; {advice}" if advice else "")
        )
        self.subject = subject
        self.name = name
        self.damage = damage


class StepMismatch(OnwardError):
    """A re-run of a task called a different step than the log records at that index.

    The task's code changed, or it branches on something that is not a step's result.

    Attributes:
        task_id: the task.
        index: the step index.
        recorded: the step name in the log.
        current: the step name called now.
    """

    def __init__(self, task_id: str, index: int, recorded: str, current: str) -> None:
        super().__init__(
            f"task {task_id}: step {index} is {recorded!r} in the log but the code now calls "
            f"{current!r}. If {recorded!r} is no step any more but {current!r}'s former name, "
            f"declare it: @engine.step(name={current!r}, aliases=[{recorded!r}]); if the code "
            "changed its path (steps added, removed or called in another order), guard the new "
            'path with `if engine.patched("change-id"):` so that older histories replay the old '
            "way; a task that branches on something that is not a "
            "step's result replays differently (make that a step); in an async def task, "
            "steps run side by side in chains (a gather of chains of steps, a step started "
            "with asyncio.create_task beside awaited ones) start in another order in a replay "
            "(make each chain a subtask)"
        )
        self.task_id = task_id
        self.index = index
        self.recorded = recorded
        self.current = current


class StepInterrupted(OnwardError):
    """An at-most-once step was in flight when its worker died, so it is not run again.

    A person who checked the step's effect retries the task (:meth:`onward.Engine.retry`,
    ``onward retry``): the new attempt runs the step.

    Attributes:
        task_id: the task.
        index: the step index.
        name: the step name.
    """

    def __init__(self, task_id: str, index: int, name: str) -> None:
        super().__init__(
            f"task {task_id}: at-most-once step {index} ({name!r}) was in flight when its "
            "worker stopped; it is not run again (check its effect, then retry the task to run "
            "it: `onward retry TASK`, engine.retry)"
        )
        self.task_id = task_id
        self.index = index
        self.name = name


class ActionDenied(OnwardError):
    """A human refused the approval an action waited for; the step fails with this error.

    The task may catch it and go on another way.

    Attributes:
        action: the action's name.
        note: what the human said ("" when nothing).
    """

    def __init__(self, action: str, note: str = "") -> None:
        super().__init__(f"action {action!r} was denied" + (f": {note}" if note else ""))
        self.action = action
        self.note = note

    @classmethod
    def as_recorded(cls, action: str, message: str) -> ActionDenied:
        """The error again from its recorded message (a replay's): the same message, and the
        note in it."""
        said = f"action {action!r} was denied"
        if message == said:
            return cls(action)
        if message.startswith(said + ": "):
            return cls(action, message[len(said) + 2 :])
        denied = cls(action)  # a message of another shape: kept as it was recorded
        denied.args = (message,)
        return denied


class CheckFailed(OnwardError):
    """An action ran but its declared check did not hold; it is handled as the step's failure.

    Attributes:
        action: the action's name.
        reason: why the check failed.
    """

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"the check of action {action!r} failed: {reason}")
        self.action = action
        self.reason = reason


class ComponentUnavailable(OnwardError):
    """A component failed with no workaround left, and a human refused to go on without it.

    Attributes:
        component: the component's name.
        note: what the human said ("" when nothing).
    """

    def __init__(self, component: str, note: str = "") -> None:
        super().__init__(
            f"component {component!r} is unavailable and has no workaround left"
            + (f": {note}" if note else "")
        )
        self.component = component
        self.note = note


class StepFailedError(OnwardError):
    """A step failure re-raised from the log when its original exception type is not a builtin.

    Attributes:
        error_type: the recorded exception type's name.
        message: the recorded message.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
