"""A session's tasks: submitting them, steering them from outside, and reading their outcomes.

Every change is an append at the task stream's expected version: a submission creates the
stream (its first event's id is derived from the task id, so that a repeated submission is a
no-op); a cancellation or a new priority is validated by the task lifecycle first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from onward.core.definitions import TaskDef, parse_priority
from onward.core.errors import (
    DeadlineMissed,
    NotFinished,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFound,
)
from onward.core.machines import transition
from onward.events import (
    Context,
    Priority,
    TaskCancelled,
    TaskDeadlineMissed,
    TaskFailed,
    TaskReprioritised,
    TaskSubmitted,
    TaskSucceeded,
    UnencodableValue,
    UsageError,
    VersionConflict,
    decode_value,
    encode_value,
)
from onward.projections import TaskView, task_stream
from onward.runtime.registry import Registry
from onward.runtime.run import CURRENT_RUN, derived_id, submission_id
from onward.runtime.session import Session

__all__ = ["Tasks"]

#: How many times a change from outside looks again after another worker's.
_STEER_TRIES = 10


class Tasks:
    """Submits, steers and reads one session's tasks.

    Args:
        session: the session.
        registry: the registered tasks (whose return types results are decoded to).
    """

    def __init__(self, session: Session, registry: Registry) -> None:
        self.session = session
        self.registry = registry

    def submit(
        self,
        definition: TaskDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        priority: Priority | str | None,
        deadline: float | None,
        key: str | None,
    ) -> str:
        """Queue a task durably (see :meth:`onward.Engine.submit`); returns its id.

        Raises:
            UsageError: the arguments do not fit its signature, or are not encodable;
                nothing was appended.
        """
        session = self.session
        session.check_open()
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"task {definition.name}: {exc}") from None
        # Arguments are refused before anything happens (a subtask's number included).
        stored_args = self._stored_arguments(definition, args)
        stored_kwargs = {
            name: encode_value(
                value,
                what=f"task {definition.name}: argument {name!r}",
                redactor=session.log.redactor,
            )
            for name, value in kwargs.items()
        }
        level = definition.priority if priority is None else parse_priority(priority)
        if deadline is not None and not isinstance(deadline, int | float):
            raise UsageError(f"deadline must be seconds since the epoch, got {deadline!r}")
        parent = CURRENT_RUN.get()
        if parent is not None:
            parent.children += 1
            task_id = derived_id(parent.task_id, "child", str(parent.children))
            context = Context(
                session=session.name,
                actor=session.worker,
                causation_id=parent.context.causation_id,
                correlation_id=parent.context.correlation_id,
            )
        else:
            task_id = os.urandom(8).hex() if key is None else derived_id(session.name, "key", key)
            context = Context(session=session.name, actor=session.worker, correlation_id=task_id)
        event = TaskSubmitted(
            name=definition.name,
            args=stored_args,
            kwargs=stored_kwargs,
            priority=level,
            deadline=None if deadline is None else float(deadline),
            key=key,
            parent=parent.task_id if parent is not None else None,
        )
        try:
            session.log.append(
                task_stream(task_id),
                [event],
                expected_version=0,
                event_ids=[submission_id(task_id)],
                context=context,
            )
        except VersionConflict:
            if parent is None and key is None:
                raise
            # The same key (or the same subtask of a re-run parent) was submitted before.
        except UnencodableValue as exc:
            raise UsageError(f"task {definition.name}: arguments cannot be stored: {exc}") from exc
        return task_id

    def _stored_arguments(self, definition: TaskDef, args: tuple[Any, ...]) -> list[Any]:
        """The positional arguments as the log will hold them (see
        :func:`onward.events.encode_value`).

        Raises:
            UsageError: an argument cannot be stored so as to come back as it is.
        """
        params = [
            p.name
            for p in definition.signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        return [
            encode_value(
                value,
                what=f"task {definition.name}: argument {i}"
                + (f" ({params[i]})" if i < len(params) else ""),
                redactor=self.session.log.redactor,
            )
            for i, value in enumerate(args)
        ]

    def cancel(self, task_id: str, reason: str) -> None:
        """Cancel a task that has not ended."""
        self._steer(task_id, lambda _view: TaskCancelled(reason=reason))

    def reprioritise(self, task_id: str, priority: Priority | str) -> None:
        """Change the priority of a queued or waiting task."""
        level = parse_priority(priority)
        self._steer(
            task_id,
            lambda view: TaskReprioritised(priority=level, previous=Priority(view.priority)),
        )

    def _steer(
        self, task_id: str, decide: Callable[[TaskView], TaskCancelled | TaskReprioritised]
    ) -> None:
        """Append a change decided on the task's current view, deciding again when another
        worker changed the task first."""
        session = self.session
        with session.lock:
            for _ in range(_STEER_TRIES):
                view = self.view(task_id)
                try:
                    transition(
                        session.log,
                        "task",
                        task_id,
                        task_stream(task_id),
                        view.state,
                        view.version,
                        decide(view),
                        session.context,
                    )
                except VersionConflict:
                    session.host.catch_up()
                    continue
                session.host.catch_up()
                return
            raise UsageError(f"task {task_id}: too many concurrent changes, try again")

    def view(self, task_id: str) -> TaskView:
        """What the log says about a task (catching up when it is not known yet).

        Raises:
            TaskNotFound: no such task.
        """
        session = self.session
        view = session.projections.tasks.tasks.get(task_id)
        if view is None:
            view = session.catch_up().tasks.tasks.get(task_id)
        if view is None:
            raise TaskNotFound(f"no task {task_id!r} in {session.log.url}")
        return view

    def listed(self, state: str | None) -> list[TaskView]:
        """This session's tasks in submission order, optionally only those in one state."""
        self.session.catch_up()
        found = [t for t in self.session.tasks() if state is None or t.state == state]
        return sorted(found, key=lambda t: t.order)

    def result(self, task_id: str) -> Any:
        """The recorded return value of a task that succeeded (see
        :meth:`onward.Engine.result` for what it raises otherwise)."""
        session = self.session
        session.check_open()
        history = session.log.read_stream(task_stream(task_id))
        if not history:
            raise TaskNotFound(f"no task {task_id!r} in {session.log.url}")
        last = history[-1].event
        if isinstance(last, TaskSucceeded):
            submitted = history[0].event
            definition = (
                self.registry.tasks.get(submitted.name)
                if isinstance(submitted, TaskSubmitted)
                else None
            )
            return decode_value(last.result, definition.returns if definition else Any)
        if isinstance(last, TaskFailed):
            raise TaskFailedError(task_id, last.error_type, last.message)
        if isinstance(last, TaskCancelled):
            raise TaskCancelledError(
                f"task {task_id} was cancelled: {last.reason}".rstrip(": "), task_id=task_id
            )
        if isinstance(last, TaskDeadlineMissed):
            raise DeadlineMissed(f"task {task_id} missed its deadline", task_id=task_id)
        raise NotFinished(f"task {task_id} has not finished yet")
