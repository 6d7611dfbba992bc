"""The steering part of :class:`onward.Engine`: submitting tasks and steering them from outside
(cancel, retry, fork, messages...), reading their outcomes, schedules and queue limits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from onward.core.run import Suspended
from onward.events import (
    Priority,
    TaskWaiting,
)
from onward.projections import LimitView, ScheduleView, TaskView
from onward.runtime.facade.inside import current_run
from onward.runtime.limits import Limits
from onward.runtime.registry import Registry
from onward.runtime.schedules import Schedules
from onward.runtime.session import Session
from onward.runtime.tasks import Tasks

__all__ = ["Steering"]


class Steering:
    """Submitting, steering and reading tasks from outside them; schedules and queue limits.

    A part of :class:`onward.Engine` (which sets the attributes below).
    """

    worker: str
    registry: Registry
    _session: Session
    _tasks: Tasks
    _schedules: Schedules
    _limits: Limits

    def submit(
        self,
        task: Callable[..., Any] | str,
        /,
        *args: Any,
        priority: Priority | str | None = None,
        deadline: float | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Queue a task durably.

        Inside a running task, the new task is its subtask (see :meth:`wait`), and submitting
        again when the parent re-runs after a crash returns the same subtask.

        Args:
            task: a registered task function or its registered name.
            *args: its positional arguments (msgspec-encodable values).
            priority: critical, high, normal or low (the task's registered default if None).
            deadline: when it must be done, in seconds since the epoch; if it is still
                queued or waiting then, it is marked as having missed its deadline.
            key: an idempotency key: submitting again with the same key in this session
                returns the first task's id and queues nothing.
            **kwargs: its keyword arguments.

        Returns:
            The task's id.

        Raises:
            NotRegistered: the task is not registered.
            UsageError: the arguments do not fit its signature, or are not encodable;
                nothing was appended.
        """
        definition = self.registry.task(task)
        return self._tasks.submit(
            definition, args, kwargs, priority=priority, deadline=deadline, key=key
        )

    def cancel(self, task_id: str, reason: str = "") -> None:
        """Cancel a task that has not ended (a running one stops at its next step).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task has already ended.
        """
        self._tasks.cancel(task_id, reason)

    def quarantine(self, task_id: str, *, reason: str = "", by: str = "") -> TaskView:
        """Set a task aside for good, so that the rest of the session proceeds.

        For a task whose history cannot be trusted (``state == "damaged"``: a record fails its
        checksum, was removed, or breaks its lifecycle), one that holds events of a newer
        onward, or one that is stuck. Appends one ``TaskQuarantined``: the task never runs
        again, :meth:`result` raises :class:`~onward.core.errors.TaskQuarantinedError`, and a
        parent waiting for it sees it end. ``onward quarantine TASK`` does the same from a
        shell.

        Args:
            task_id: the task.
            reason: why, for the audit.
            by: who sets it aside (this engine's worker id by default).

        Returns:
            The task's view afterwards (state ``quarantined``).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task has already ended.
        """
        return self._tasks.quarantine(task_id, reason, by or self.worker)

    def reprioritise(self, task_id: str, priority: Priority | str) -> None:
        """Change the priority of a queued or waiting task.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task is running or has ended.
        """
        self._tasks.reprioritise(task_id, priority)

    def retry(
        self,
        task_id: str,
        *,
        by: str = "",
        reason: str = "",
        deadline: float | None = None,
    ) -> TaskView:
        """Put a failed, cancelled or missed task back in the queue as a new attempt of the
        same task: its completed steps replay from the log, and execution starts again at the
        step that failed. The decision is recorded with who asked (``onward why TASK``).

        Args:
            task_id: the task.
            by: who asks.
            reason: why, for the audit.
            deadline: its deadline from now on, in seconds since the epoch (None: none).

        Returns:
            The task's view, queued again.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it has not failed, been cancelled or missed its deadline.
        """
        return self._tasks.retry(task_id, by=by, reason=reason, deadline=deadline)

    def fork(
        self,
        task_id: str,
        *,
        from_step: int,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Start a new task whose first ``from_step`` steps return the recorded outcomes of
        ``task_id``'s, and whose later steps run afresh (to try another way from a point).

        The new task names its origin (``forked_from``). The first steps' side effects are not
        done again: their outcomes are taken as they were recorded, even with other arguments.

        Args:
            task_id: the task to fork.
            from_step: how many of its first steps to take as they were (each must have a
                recorded outcome).
            args: the new task's positional arguments (the origin's when None).
            kwargs: its keyword arguments (the origin's when None).

        Returns:
            The new task's id.

        Raises:
            TaskNotFound: no such task.
            UsageError: a step before ``from_step`` has no recorded outcome, or arguments that
                cannot be stored.
        """
        return self._tasks.fork(
            task_id,
            from_step=from_step,
            args=None if args is None else list(args),
            kwargs=kwargs,
        )

    def abandon(self, task_id: str, *, by: str = "", reason: str = "") -> None:
        """Fail a task that waits, unregistered, for a function nobody registers any more.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it is not unregistered.
        """
        self._tasks.abandon(task_id, by=by, reason=reason)

    def send(self, task_id: str, topic: str, value: Any = None, *, sender: str = "") -> int:
        """Send a task a message, from anywhere (another task, another process, the CLI:
        ``onward send TASK TOPIC JSON``); the task takes it with :meth:`recv`.

        Returns:
            The message's place in the task's inbox.

        Raises:
            TaskNotFound: no such task.
            UsageError: an empty topic, or a value that cannot be stored.
        """
        return self._tasks.send(task_id, topic, value, sender=sender or self.worker)

    def get_state(self, task_id: str, key: str) -> Any:
        """The last value a task published under ``key`` (:meth:`set_state`).

        Raises:
            TaskNotFound: no such task.
            KeyError: it published nothing under that key.
        """
        return self._tasks.state_of(task_id, key)

    def task_view(self, task_id: str) -> TaskView:
        """What the log says about a task (as of the last catch-up).

        Raises:
            TaskNotFound: no such task.
        """
        return self._tasks.view(task_id)

    def tasks(self, state: str | None = None) -> list[TaskView]:
        """This session's tasks in submission order, optionally only those in one state."""
        return self._tasks.listed(state)

    def result(self, task_id: str) -> Any:
        """The recorded return value of a task that succeeded.

        Raises:
            TaskNotFound: no such task.
            NotFinished: it has not ended.
            TaskFailedError: it failed (with the recorded error type and message).
            TaskCancelledError: it was cancelled.
            DeadlineMissed: it missed its deadline.
            TaskQuarantinedError: a person set it aside.
            StreamDamaged: its history cannot be trusted (``task_view(id).damage`` says why).
            CorruptRecord: a record of its stream fails its checksum (found on this read).
            UnknownEventType: it has not ended and holds events of a newer onward.
        """
        return self._tasks.result(task_id)

    def wait(self, task_ids: Iterable[str]) -> list[Any]:
        """Wait durably for subtasks (inside a task) and return their results, in order.

        If any has not ended, the task is parked (``TaskWaiting``) and re-runs once they all
        have; its completed steps replay from the log, so the wait costs no work twice.

        Raises:
            UsageError: outside a task.
            TaskFailedError, TaskCancelledError, DeadlineMissed: a subtask did not succeed.
        """
        run = current_run("wait()")
        ids = list(task_ids)
        with self._session.lock:
            self._session.host.catch_up()
            views = [self.task_view(t) for t in ids]
        if all(v.terminal for v in views):
            return [self.result(t) for t in ids]
        run.record([TaskWaiting(reason="subtasks", on=ids)])
        raise Suspended()

    def schedule(
        self,
        task: Callable[..., Any] | str,
        *,
        cron: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        missed: str = "once",
        priority: Priority | str | None = None,
    ) -> str:
        """Submit a task at each tick of a cron expression, exactly once per tick however many
        workers serve this session.

        Ticks fire while a worker serves the session (:meth:`serve`, ``onward worker``: it
        wakes up for the next tick) and at each task boundary of :meth:`run`. Declaring the
        same schedule again (every worker does, at start) records nothing; declaring it with
        other values changes it. The submitted task names its schedule (``onward show``).

        Args:
            task: a registered task function or its registered name.
            cron: a cron expression, five fields (or six, with seconds), in UTC; read by
                cronsim.
            args: the task's positional arguments at each tick.
            kwargs: its keyword arguments.
            name: the schedule's name (the task's name by default): one session may schedule a
                task several times under several names.
            missed: the ticks missed while no worker ran (an outage): "once" runs the task once
                for all of them at the first look after; "skip" runs none (a tick at most a
                minute late is not missed).
            priority: the tasks' priority (the task's default if None).

        Returns:
            The schedule's name.

        Raises:
            NotRegistered: the task is not registered.
            UsageError: a bad cron expression, policy or name, or arguments that do not fit.
        """
        definition = self.registry.task(task)
        return self._schedules.set(
            definition,
            cron=cron,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            name=name,
            missed=missed,
            priority=priority,
        )

    def unschedule(self, name: str, *, reason: str = "") -> bool:
        """Remove a schedule: no more ticks (tasks it submitted run on).

        Returns:
            Whether it was set.
        """
        return self._schedules.remove(name, reason)

    def schedules(self) -> list[ScheduleView]:
        """This session's schedules (removed ones included, ``removed`` set), by name."""
        return self._schedules.listed()

    def limit(self, name: str, *, concurrency: int | None = None, rate: str = "") -> None:
        """Declare a queue limit, respected by every worker of the log (every session, every
        process, every machine): ``engine.limit("model-api", concurrency=4,
        rate="60/minute")``.

        A step declared ``@engine.step(limit="model-api")`` takes a permit before it runs and
        gives it back after its outcome; while none is free, its task waits (recorded, and
        listed by ``onward limits``) and the worker runs other tasks. A permit of a worker that
        died comes back at the latest a lease after its last sign of life. Every worker holds to the
        log's latest declaration.

        Args:
            name: the limit's name (usually the dependency it guards).
            concurrency: how many limited steps may run at once (None: no bound).
            rate: how many may start per window: ``"60/minute"``, ``"5/second"``,
                ``"1000/hour"``, ``"10/30s"`` ("" for no bound).

        Raises:
            UsageError: a bad name, concurrency or rate, or neither bound.
        """
        self._limits.define(name, concurrency=concurrency, rate=rate)

    def limits(self) -> list[LimitView]:
        """Every queue limit of the log: its bounds, permits held and taken."""
        limits = self._session.catch_up().limits
        return [limits.view(name) for name in sorted(limits.limits)]
