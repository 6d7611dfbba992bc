"""The steering part of :class:`onward.Engine`: submitting tasks and steering them from outside
(cancel, retry, fork, messages...), reading their outcomes, schedules and queue limits.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from onward.core.definitions import TaskDef
from onward.core.errors import NotRegistered
from onward.core.run import Suspended
from onward.events import (
    Priority,
    TaskWaiting,
    UsageError,
)
from onward.projections import TASK, LimitView, ScheduleView, TaskView
from onward.projections.task import DAMAGED_STATE, UNKNOWN_STATE
from onward.runtime.facade import arguments
from onward.runtime.facade.inside import Pending, current_run
from onward.runtime.limits import Limits
from onward.runtime.observer import IN_OBSERVER
from onward.runtime.registry import Registry
from onward.runtime.run import CURRENT_STEP, SubtaskEnds, TaskRun, on_event_loop, running_task
from onward.runtime.schedules import Schedules
from onward.runtime.session import Session
from onward.runtime.tasks import Tasks, ends_at

__all__ = ["SUBMIT_OPTIONS", "Steering"]


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
        again when the parent re-runs after a crash returns the same subtask. A keyed one is
        the session's task for that key, inside a task as outside: its parent is whichever
        task submitted it first (none when that was done from outside a task).

        Args:
            task: a registered task function or its registered name.
            *args: its positional arguments (msgspec-encodable values).
            priority: critical, high, normal or low (the task's registered default if None).
            deadline: when it must be done, in seconds since the epoch; if it is still
                queued or waiting then, it is marked as having missed its deadline.
            key: an idempotency key: submitting again with the same key in this session
                returns the first task's id and queues nothing.
            **kwargs: its keyword arguments; not ``priority``, ``deadline`` or ``key``, which
                are submit's own: a task parameter of such a name is given positionally (see
                :meth:`task`).

        Returns:
            The task's id.

        Raises:
            NotRegistered: the task is not registered.
            UsageError: the arguments do not fit its signature, or are not encodable, or
                an option of the wrong type; nothing was appended.
        """
        try:
            definition = self._definition(task, "submit()")
        except NotRegistered:
            # A task re-running on a worker without that task's code (an older version of
            # the fleet): the subtask it submitted before is recorded, and is its answer.
            recorded = self._tasks.submitted_before(task, key)
            if recorded is None:
                raise
            return recorded
        return self._tasks.submit(
            definition,
            args,
            kwargs,
            priority=priority,
            deadline=arguments.moment(deadline, "submit(): deadline"),
            key=arguments.optional_name(key, "submit(): key"),
        )

    def _definition(self, task: object, what: str) -> TaskDef:
        """The registered task a caller names, by its function or its name.

        Raises:
            UsageError: neither a function nor a name.
            NotRegistered: none is registered so.
        """
        if not callable(task) and not isinstance(task, str):
            raise UsageError(
                f"{what} takes a registered task function or its name, got a value of type "
                f"{type(task).__name__}"
            )
        return self.registry.task(task)

    def cancel(self, task_id: str, reason: str = "") -> None:
        """Cancel a task that has not ended (a running one stops at its next step).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task has already ended.
            UsageError: a task id or reason that is not a str; or called from a task's
                own code between its steps (it would be called again when the task re-runs).
        """
        self._tasks.cancel(
            _steered(task_id, "cancel()", ends_own=True), arguments.text(reason, "cancel(): reason")
        )

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
            UsageError: a task id, reason or ``by`` that is not a str; or called from a
                task's own code between its steps (it would be called again when the task
                re-runs).
        """
        return self._tasks.quarantine(
            _steered(task_id, "quarantine()", ends_own=True),
            arguments.text(reason, "quarantine(): reason"),
            arguments.text(by, "quarantine(): by") or self.worker,
        )

    def reprioritise(self, task_id: str, priority: Priority | str) -> None:
        """Change the priority of a queued or waiting task.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task is running or has ended.
            UsageError: an unknown priority, or a task id that is not a str; or called from a
                task's own code between its steps (it would be called again when the task
                re-runs).
        """
        self._tasks.reprioritise(_steered(task_id, "reprioritise()"), priority)

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
            by: who asks (this engine's worker id by default).
            reason: why, for the audit.
            deadline: its deadline from now on, in seconds since the epoch (None: none).

        Returns:
            The task's view, queued again.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it has not failed, been cancelled or missed its deadline.
            UnknownEventType: its history holds events of types this version does not know
                (written by a newer onward): it could not run again here.
            UsageError: an argument of the wrong type, or a deadline that is not finite; or
                called from a task's own code between its steps (it would be called again when
                the task re-runs).
        """
        return self._tasks.retry(
            _steered(task_id, "retry()"),
            by=arguments.text(by, "retry(): by") or self.worker,
            reason=arguments.text(reason, "retry(): reason"),
            deadline=arguments.moment(deadline, "retry(): deadline"),
        )

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
            UsageError: a step before ``from_step`` has no recorded outcome, arguments that
                cannot be stored or (the task being registered here) do not fit its
                signature, or an argument of the wrong type (``args`` a list or a tuple,
                ``kwargs`` a dict with str keys); or called from a task's
                own code between its steps (it would be called again when the task re-runs).
        """
        return self._tasks.fork(
            _steered(task_id, "fork()"),
            from_step=arguments.step_index(from_step, "fork(): from_step"),
            args=None if args is None else list(arguments.positional(args, "fork(): args")),
            kwargs=None if kwargs is None else arguments.keywords(kwargs, "fork(): kwargs"),
        )

    def abandon(self, task_id: str, *, by: str = "", reason: str = "") -> None:
        """Fail a task that waits, unregistered, for a function nobody registers any more.

        Decided on the log's current state: a task that a worker with its function has
        claimed meanwhile is not failed under it.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it is not (or no longer) unregistered.
            UsageError: a task id, ``by`` or reason that is not a str; or called from a
                task's own code between its steps (it would be called again when the task
                re-runs).
        """
        self._tasks.abandon(
            _steered(task_id, "abandon()"),
            by=arguments.text(by, "abandon(): by"),
            reason=arguments.text(reason, "abandon(): reason"),
        )

    def send(self, task_id: str, topic: str, value: Any = None, *, sender: str = "") -> int:
        """Send a task a message, from anywhere (another task, another process, the CLI:
        ``onward send TASK TOPIC JSON``); the task takes it with :meth:`recv`.

        From a running task (its body or a step's body), a message is sent once, whatever
        re-runs the task: its id is derived from the sender's run, and a re-run (or a replay
        check) finds it in the inbox instead of sending it again.

        Returns:
            The message's place in the task's inbox.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: sent from outside a task to one that has succeeded or been
                quarantined, or whose history is damaged (it is not run until it is set
                aside): it will never read it (a failed, cancelled or missed task may be
                retried, and reads its inbox then).
            UsageError: an empty topic, a value that cannot be stored, or a task id or sender
                that is not a str.
        """
        return self._tasks.send(
            _task_id(task_id, "send()"),
            topic,
            value,
            sender=arguments.text(sender, "send(): sender") or self.worker,
        )

    def get_state(self, task_id: str, key: str) -> Any:
        """The last value a task published under ``key`` (:meth:`set_state`).

        Raises:
            TaskNotFound: no such task.
            KeyError: it published nothing under that key.
            UsageError: a task id or key that is not a str.
        """
        return self._tasks.state_of(
            _task_id(task_id, "get_state()"), arguments.text(key, "get_state(): key")
        )

    def task_view(self, task_id: str) -> TaskView:
        """What the log says about a task (as of the last catch-up).

        Raises:
            TaskNotFound: no such task.
            UsageError: a task id that is not a str.
        """
        return self._tasks.view(_task_id(task_id, "task_view()"))

    def tasks(self, state: str | None = None) -> list[TaskView]:
        """This session's tasks in submission order, optionally only those in one state.

        Raises:
            UsageError: a state that is not a str, or not a task's state.
        """
        state = arguments.optional_name(state, "tasks(): state")
        states = (*TASK.states, DAMAGED_STATE, UNKNOWN_STATE)
        if state is not None and state not in states:
            raise UsageError(f"tasks(): no task state {state!r} (the states: {', '.join(states)})")
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
            UsageError: a task id that is not a str.
        """
        return self._tasks.result(_task_id(task_id, "result()"))

    def wait(self, task_ids: Iterable[str]) -> Any:
        """Wait durably for subtasks (inside a task) and return their results, in order.

        If any has not ended, the task is parked (``TaskWaiting``) and re-runs once they all
        have; its completed steps replay from the log, so the wait costs no work twice. In an
        ``async def`` task, await it: ``results = await engine.wait(ids)``.

        Returns:
            The subtasks' results, or in an ``async def`` task a
            :class:`~onward.runtime.facade.inside.Pending` of them (which raises UsageError
            if used without being awaited).

        Raises:
            UsageError: outside a task, or ``task_ids`` not an iterable of task ids (a single
                id is refused: pass ``[task_id]``).
            TaskFailedError, TaskCancelledError, DeadlineMissed: a subtask did not succeed.
        """
        run = current_run("wait()")
        ids = arguments.names(task_ids, "wait(): task_ids")
        if on_event_loop():
            return Pending(run, self._waited_async(run, ids), "wait(...)")
        results = run.subtasks_ended(ids, self._ended)
        if results is None:
            run.record([TaskWaiting(reason="subtasks", on=ids)])
            raise Suspended()
        return results

    async def _waited_async(self, run: TaskRun, ids: list[str]) -> list[Any]:
        """:meth:`wait` in an ``async def`` task: the catch-up reads the disk off the loop,
        and the wait is recorded once the task's other steps under way have recorded their
        outcomes (as a step's wait is)."""
        results = await asyncio.to_thread(run.subtasks_ended, ids, self._ended)
        if results is None:
            await run.wait_async([TaskWaiting(reason="subtasks", on=ids)])
            raise Suspended()
        return results

    def _ended(self, ids: list[str], at: list[int] | None = None) -> SubtaskEnds | None:
        """What a wait for subtasks reads: with ``at``, each one's end at that version of its
        stream (an earlier run read it there); else their ends as the log has them now, once
        all have ended (None before).
        """
        if at is not None:
            return ends_at(self._session.log, ids, at, self.registry)
        with self._session.lock:
            self._session.host.catch_up()
            views = [self.task_view(t) for t in ids]
            if not all(v.terminal for v in views):
                return None
            versions = [v.version for v in views]
            if all(v.state == "succeeded" for v in views):  # a success is for good
                return SubtaskEnds(versions, True, [self.result(t) for t in ids])
        # One did not succeed: read at the versions seen, which the wait records (a person may
        # retry one meanwhile: what the code gets is what every later run reads).
        return ends_at(self._session.log, ids, versions, self.registry)

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
        """Submit a task at the ticks of a cron expression, at most once per tick however
        many workers serve this session.

        Ticks fire while a worker serves the session (:meth:`serve`, ``onward worker``: it
        wakes up for the next tick) and at each task boundary of :meth:`run`. Ticks found due
        together (a worker busy with a long task looks at the schedules at its next task
        boundary) run the task once, for the latest, late; the others are recorded as missed
        (``ScheduleTicked.missed``), as a scheduler that coalesces does. Declaring the
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
            UsageError: a bad cron expression, policy or name, or arguments that do not fit
                (``args`` a list or a tuple, ``kwargs`` a dict with str keys).
        """
        definition = self._definition(task, "schedule()")
        return self._schedules.set(
            definition,
            cron=cron,
            args=arguments.positional(args, "schedule(): args"),
            kwargs={} if kwargs is None else arguments.keywords(kwargs, "schedule(): kwargs"),
            name=name,
            missed=missed,
            priority=priority,
        )

    def unschedule(self, name: str, *, reason: str = "") -> bool:
        """Remove a schedule: no more ticks (tasks it submitted run on).

        Returns:
            Whether it was set.

        Raises:
            UsageError: a name or reason that is not a str.
        """
        return self._schedules.remove(
            arguments.name(name, "unschedule(): name"),
            arguments.text(reason, "unschedule(): reason"),
        )

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


#: The keywords :meth:`Steering.submit` takes for itself (``priority``, ``deadline``, ``key``):
#: a task's parameter of one of these names cannot be given by keyword through it.
SUBMIT_OPTIONS = tuple(
    name
    for name, parameter in inspect.signature(Steering.submit).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
)


def _task_id(task_id: object, what: str) -> str:
    """A task id a caller passes (:func:`arguments.name`, with the call's name)."""
    return arguments.name(task_id, f"{what}: task_id")


def _steered(task_id: object, what: str, *, ends_own: bool = False) -> str:
    """The id of a task to change, from outside a task's own code.

    Args:
        ends_own: the change ends the task it names, so a task may make it to itself: its
            code does not run again after it (a cancel, a quarantine).

    Raises:
        UsageError: not a task id, or called from a task's code between its steps: that code
            runs again from its start after a wait or a crash, so the change would be made
            again (a second fork, a cancel of a task already cancelled).
    """
    run = running_task(what)
    if run is None or CURRENT_STEP.get() is not None or IN_OBSERVER.get():
        return _task_id(task_id, what)  # from outside, a step's body or an observer's hook
    if not (ends_own and run.task_id == task_id):
        raise UsageError(
            f"{what} is called from the code of task {run.task_id}, which runs again from its "
            "start after a wait or a crash and would call it again: call it from a step (its "
            "outcome is recorded once), or from outside the task"
        )
    return _task_id(task_id, what)
