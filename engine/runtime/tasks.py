"""A session's tasks: submitting them, steering them from outside, and reading their outcomes.

Every change is an append at the task stream's expected version: a submission creates the
stream (its first event's id is derived from the task id, so that a repeated submission is a
no-op); a cancellation or a new priority is validated by the task lifecycle first. A
quarantine (:func:`quarantine`) sets a damaged or stuck task aside, so that the rest of its
session goes on: it is appended after the stream's last record, damaged or not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from onward.core.definitions import TaskDef, parse_priority
from onward.core.errors import (
    DeadlineMissed,
    InvalidTransition,
    NotFinished,
    StreamDamaged,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFound,
    TaskQuarantinedError,
)
from onward.core.machines import transition, validate
from onward.events import (
    Append,
    Context,
    DecisionMade,
    Event,
    EventLog,
    MessageSent,
    Priority,
    Recorded,
    StateSet,
    TaskCancelled,
    TaskDeadlineMissed,
    TaskFailed,
    TaskQuarantined,
    TaskReprioritised,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    UnencodableValue,
    UnknownEvent,
    UsageError,
    VersionConflict,
    decode_value,
    encode_value,
)
from onward.projections import (
    CatchUp,
    TaskView,
    inbox_stream,
    session_stream,
    standing,
    task_stream,
)
from onward.projections.task import DAMAGED_STATE
from onward.runtime.forks import outcome_records, recorded_outcomes
from onward.runtime.registry import Registry
from onward.runtime.run import (
    CURRENT_STEP,
    Blocking,
    SubtaskEnds,
    TaskRun,
    derived_id,
    running_task,
    submission_id,
)
from onward.runtime.session import Session, unknown_events_error

__all__ = [
    "Tasks",
    "append_message",
    "append_submission",
    "end_of",
    "ends_at",
    "message_version",
    "quarantine",
    "result_of_end",
]

#: How many times a change from outside looks again after another worker's.
_STEER_TRIES = 10
#: The states of a task that will never run again (a failed, cancelled or missed one may be
#: retried, and then reads its inbox).
_NEVER_READS = frozenset({"succeeded", "quarantined"})

#: How many times a running task's message looks at the inbox again after others came in.
_SEND_TRIES = 100


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
        # Arguments are refused before anything happens (a subtask's number included).
        options = {"priority": priority, "deadline": deadline, "key": key}
        taken = [n for n, v in options.items() if v is not None]
        stored_args, stored_kwargs = self.stored_arguments(definition, args, kwargs, taken)
        level = definition.priority if priority is None else parse_priority(priority)
        if deadline is not None and not isinstance(deadline, int | float):
            raise UsageError(f"deadline must be seconds since the epoch, got {deadline!r}")
        parent = running_task("submit()")
        if parent is not None:
            task_id = self._subtask_id(parent, key)
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
            if parent is None:
                append_submission(session.log, task_id, event, context)
            else:  # through its parent's run, which a replay check stops (onward.testing)
                parent.effect(Blocking(append_submission, session.log, task_id, event, context))
        except VersionConflict:
            if parent is None and key is None:
                raise
            # The same key (or the same subtask of a re-run parent) was submitted before.
        except UnencodableValue as exc:
            raise UsageError(f"task {definition.name}: arguments cannot be stored: {exc}") from exc
        return task_id

    def submitted_before(self, name: object, key: object) -> str | None:
        """The subtask that this ``submit`` of a task's code made on an earlier run, under
        ``name``: None outside a task, or when it made none (or another)."""
        parent = running_task("submit()")
        if parent is None or not isinstance(name, str):
            return None
        task_id = self._subtask_id(parent, key if isinstance(key, str) else None)
        try:
            view = self.view(task_id)
        except TaskNotFound:
            return None
        return task_id if view.name == name else None

    def _subtask_id(self, parent: TaskRun, key: str | None) -> str:
        """The id of the subtask a task's ``submit`` makes: its next number (taken with a key
        too, so that the numbering of the task's other subtasks is the same whichever of them
        are keyed), or the session's task for that key, wherever it is submitted.

        In the task's own code, the n-th subtask after the last durable call of the chain of
        code that submits it (:meth:`TaskRun.chained_id`: gathered coroutines keep their own
        subtasks whatever order a re-run meets them in); a subtask an earlier run made under
        the n-th subtask of the task's code (as an onward before that numbering did) is that
        submit's still."""
        if CURRENT_STEP.get() is not None:
            task_id = parent.made_id("child")
        else:
            numbered = parent.made_id("child")
            task_id = parent.chained_id("child")
            if not self._made_by(parent, task_id) and self._made_by(parent, numbered):
                task_id = numbered
        return task_id if key is None else derived_id(self.session.name, "key", key)

    def _made_by(self, parent: TaskRun, task_id: str) -> bool:
        """Whether an earlier run of ``parent`` submitted the subtask ``task_id`` (folded
        before the run's claim)."""
        if parent.replaying:  # (a replay check's engine need not know the task: the log)
            return bool(self.session.log.read_stream(task_stream(task_id)))
        view = self.session.projections.tasks.view(task_id)
        return view is not None and view.parent == parent.task_id

    def stored_arguments(
        self,
        definition: TaskDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        taken: Sequence[str] = (),
    ) -> tuple[list[Any], dict[str, Any]]:
        """A task's arguments as the log will hold them (see
        :func:`onward.events.encode_value`), once checked against its signature.

        Args:
            definition: the task.
            args: its positional arguments.
            kwargs: its keyword arguments.
            taken: the options of ``submit`` given along (``key``...): a parameter of the same
                name left without a value is explained by them.

        Raises:
            UsageError: they do not fit its signature, or one cannot be stored so as to come
                back as it is.
        """
        redactor = self.session.log.redactor
        parameters = definition.signature.parameters
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            # The caller's keyword names are in the message ("unexpected keyword argument
            # 'token_...'"): one may hold a secret.
            message = redactor.redact(f"task {definition.name}: {exc}")
            given = _positional_names(definition)[: len(args)]
            mistaken = [n for n in taken if n in parameters and n not in given]
            if mistaken:
                said = ", ".join(f"{n}=" for n in mistaken)
                message += (
                    f" ({said} went to submit() as its own option: give the task's "
                    f"{', '.join(repr(n) for n in mistaken)} positionally)"
                )
            raise UsageError(message) from None
        named = {
            name: encode_value(
                value,
                what=f"task {definition.name}: argument "
                + (repr(name) if name in parameters else redactor.redact(repr(name))),
                redactor=redactor,
            )
            for name, value in kwargs.items()
        }
        return self._positional(definition, args), named

    def _positional(self, definition: TaskDef, args: tuple[Any, ...]) -> list[Any]:
        params = _positional_names(definition)
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
        self,
        task_id: str,
        decide: Callable[[TaskView], TaskCancelled | TaskReprioritised | TaskFailed],
    ) -> None:
        """Append a change decided on the task's current view, deciding again when another
        worker changed the task first."""
        session = self.session
        with session.lock:
            # Decided on the log as it is, not as this process last saw it: another process
            # may have ended, retried or cancelled the task since.
            session.host.catch_up()
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
                        # A subtask abandoned (failed) from outside: its parent may wait for
                        # it, and no worker hears of its end otherwise.
                        wakes=view.parent is not None,
                    )
                except VersionConflict:
                    session.host.catch_up()
                    continue
                session.host.catch_up()
                return
            raise UsageError(f"task {task_id}: too many concurrent changes, try again")

    def quarantine(self, task_id: str, reason: str, by: str) -> TaskView:
        """Set a task aside for good (see :func:`quarantine`); returns its view after."""
        session = self.session
        session.check_open()
        with session.lock:
            self.view(task_id)  # TaskNotFound, caught up when not known yet
            return quarantine(
                session.log, session.host, task_id, reason=reason, by=by, context=session.context
            )

    def retry(self, task_id: str, *, by: str, reason: str, deadline: float | None) -> TaskView:
        """Put a failed, cancelled or missed task back in the queue as a new attempt (see
        :meth:`onward.Engine.retry`); the decision is recorded on the session's stream with who
        asked, in the same commit."""
        session = self.session
        session.check_open()
        if deadline is not None and not isinstance(deadline, int | float):
            raise UsageError(f"deadline must be seconds since the epoch, got {deadline!r}")
        with session.lock:
            session.host.catch_up()  # as the log has it: another process may have ended it
            for _ in range(_STEER_TRIES):
                view = self.view(task_id)
                if view.unknown_events:  # queued again, it would be refused at its next run
                    raise unknown_events_error(view, "retry")
                if view.state not in ("failed", "cancelled", "missed"):
                    raise InvalidTransition(
                        "task",
                        task_id,
                        view.state,
                        "TaskRetried",
                        "only a failed, cancelled or missed task can be retried",
                    )
                validate("task", task_id, view.state, "TaskRetried")
                retried = TaskRetried(by=by, reason=reason, previous=view.state, deadline=deadline)
                decision = DecisionMade(
                    kind="task_retried",
                    subject=task_id,
                    choice="retry",
                    inputs={"by": by, "reason": reason, "previous": view.state},
                    alternatives=["leave it " + view.state],
                )
                own = session.view()
                try:
                    session.log.commit(
                        [
                            Append(
                                stream=task_stream(task_id),
                                events=[retried],
                                expected_version=view.version,
                                context=session.context,
                            ),
                            Append(
                                stream=session_stream(session.name),
                                events=[decision],
                                expected_version=own.version if own is not None else 0,
                                context=session.context,
                            ),
                        ]
                    )
                except VersionConflict:
                    session.host.catch_up()
                    continue
                after = session.catch_up().tasks.view(task_id)  # not every finished task decoded
                assert after is not None
                return after
            raise UsageError(f"task {task_id}: too many concurrent changes, try again")

    def fork(
        self,
        task_id: str,
        *,
        from_step: int,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> str:
        """Start a new task whose first ``from_step`` steps return the recorded outcomes of
        ``task_id``'s (see :meth:`onward.Engine.fork`); returns its id."""
        session = self.session
        session.check_open()
        if not isinstance(from_step, int) or isinstance(from_step, bool) or from_step < 0:
            raise UsageError(f"from_step must be a step index >= 0, got {from_step!r}")
        history = session.log.read_stream(task_stream(task_id))
        if not history:
            raise TaskNotFound(f"no task {task_id!r} in {session.log.url}")
        origin = history[0].event
        assert isinstance(origin, TaskSubmitted)
        done = recorded_outcomes(outcome_records(session.log, history, from_step), from_step)
        # The first step with no outcome is at most len(done) (a huge from_step costs nothing).
        missing = next(i for i in range(len(done) + 1) if i not in done)
        if missing < from_step:
            raise UsageError(
                f"task {task_id} has no recorded outcome for step {missing}: a fork can take "
                f"only steps that ended (a result, a failure caught, a message taken; "
                f"{len(done)} of its first {from_step} did)"
            )
        fork_id = os.urandom(8).hex()
        redactor = session.log.redactor
        what = f"fork of {task_id}: argument"
        registry = self.registry
        definition = registry.tasks.get(registry.task_aliases.get(origin.name, origin.name))
        if definition is not None and (args is not None or kwargs is not None):
            # Refused here, as submit refuses them, rather than failing the fork's first run
            # (where the function is not registered, its worker says so).
            try:
                definition.signature.bind(
                    *(origin.args if args is None else args),
                    **(origin.kwargs if kwargs is None else kwargs),
                )
            except TypeError as exc:
                raise UsageError(redactor.redact(f"fork of {task_id}: {exc}")) from None
        event = TaskSubmitted(
            name=origin.name,
            args=list(origin.args)
            if args is None
            else [
                encode_value(a, what=f"{what} {i}", redactor=redactor) for i, a in enumerate(args)
            ],
            kwargs=dict(origin.kwargs)
            if kwargs is None
            else {
                k: encode_value(v, what=f"{what} {k!r}", redactor=redactor)
                for k, v in kwargs.items()
            },
            priority=origin.priority,
            deadline=None,
            key=None,
            parent=None,  # submitted from outside: not one of the origin's parent's children
            forked_from=task_id,
            inherit_steps=from_step,
            origin_version=history[-1].version,
        )
        context = Context(
            session=session.name,
            actor=session.worker,
            causation_id=history[0].meta.event_id,
            correlation_id=fork_id,
        )
        try:
            session.log.append(
                task_stream(fork_id),
                [event],
                expected_version=0,
                event_ids=[submission_id(fork_id)],
                context=context,
            )
        except UnencodableValue as exc:
            raise UsageError(f"fork of {task_id}: arguments cannot be stored: {exc}") from exc
        return fork_id

    def abandon(self, task_id: str, *, by: str, reason: str) -> None:
        """Fail a task that waits, unregistered, for a function nobody has any more.

        Decided on the caught-up state: a task another worker has claimed since (it has the
        function now) is not failed under it.

        Raises:
            InvalidTransition: the task is not (or no longer) unregistered.
        """
        why = f"abandoned by {by}: {reason}" if by else f"abandoned: {reason}"

        def decide(view: TaskView) -> TaskFailed:
            if view.state != "unregistered":
                raise InvalidTransition(
                    "task",
                    task_id,
                    view.state,
                    "abandon",
                    "only a task waiting, unregistered, for its function can be abandoned",
                )
            return TaskFailed(error_type="Abandoned", message=why.rstrip(": "))

        self.session.check_open()
        with self.session.lock:
            self.view(task_id)  # TaskNotFound
            self._steer(task_id, decide)  # on the state as the log has it, not as last seen

    def send(self, task_id: str, topic: str, value: Any, *, sender: str) -> int:
        """Send a task a message (see :meth:`onward.Engine.send`); returns its inbox version."""
        session = self.session
        session.check_open()
        if not isinstance(topic, str) or not topic:
            raise UsageError(f"a message's topic must be a non-empty string, got {topic!r}")
        session.log.redactor.check_name(topic, "a message's topic")  # recv() matches it as given
        run = running_task("send()")
        if run is None:
            # as the log has it now, not as last seen (another process may have ended it)
            session.catch_up()
        # TaskNotFound; not in a replay check, whose engine need not know the task (the
        # message's place comes from the log the history is read from).
        view = None if run is not None and run.replaying else self.view(task_id)
        if run is None and view is not None and view.state in _NEVER_READS:  # (replays as it went)
            raise InvalidTransition(
                "task",
                task_id,
                view.state,
                "send",
                "it has ended for good and will never read a message",
            )
        if run is None and view is not None and view.state == DAMAGED_STATE:
            # Never run until set aside, which ends it: the message would wait unread.
            raise InvalidTransition(
                "task",
                task_id,
                view.state,
                "send",
                "its history cannot be trusted: it is not run and would never read a "
                f"message; `onward quarantine {task_id}` sets it aside",
            )
        stored = encode_value(
            value, what=f"message {topic!r} for {task_id}", redactor=session.log.redactor
        )
        event = MessageSent(topic=topic, value=stored, sender=sender)
        try:
            if run is None:
                appended = session.log.append(
                    inbox_stream(task_id), [event], expected_version=None, context=session.context
                )
                version = appended.versions[inbox_stream(task_id)]
                self._came_after_its_end(task_id, appended.positions, version)
            else:
                # From a running task: once, whatever re-runs it (through its run, which a
                # replay check stops: onward.testing).
                message_id, numbered = self._message_ids(run)
                version = run.effect(
                    Blocking(
                        append_message,
                        *(session.log, task_id, event, session.context, message_id, numbered),
                    )
                )
        except UnencodableValue as exc:
            raise UsageError(f"message for {task_id}: the value cannot be stored: {exc}") from exc
        session.catch_up()
        return int(version)

    @staticmethod
    def _message_ids(run: TaskRun) -> tuple[str, str]:
        """The id of the message a running task's ``send`` makes, and the id an onward that
        numbered a task's messages in the order they came gave it.

        In the task's own code, the n-th message after the last durable call of the chain of
        code that sends it (:meth:`TaskRun.chained_id`): gathered coroutines keep their own
        messages whatever order a re-run meets them in."""
        if CURRENT_STEP.get() is not None:
            message_id = run.made_id("message", size=16)
            return message_id, message_id
        numbered = run.made_id("message", size=16)
        return run.chained_id("message", size=16), numbered

    def _came_after_its_end(self, task_id: str, positions: Sequence[int], version: int) -> None:
        """Raise when a message sent from outside landed after its task ended for good: the
        task ended between the look :meth:`send` took and the message's append, and will never
        read it (the message stays in its inbox, unread: the log keeps what it recorded).

        Raises:
            InvalidTransition: the task's end comes before the message in the log.
        """
        session = self.session
        session.catch_up()
        view = self.view(task_id)
        if view is None or view.state not in _NEVER_READS:
            return
        inbox = inbox_stream(task_id)
        position = (
            positions[0]
            if positions
            else next(r.position for r in session.log.read_stream(inbox, after=version - 1))
        )
        ends = [
            r.position
            for r in session.log.read_stream(task_stream(task_id))
            if isinstance(r.event, TaskSucceeded | TaskQuarantined)
        ]
        if ends and ends[-1] < position:
            raise InvalidTransition(
                "task",
                task_id,
                view.state,
                "send",
                f"it ended (at position {ends[-1]}) as the message was sent, which came after "
                f"(at position {position}, version {version} of its inbox) and will never be "
                "read",
            )

    def state_of(self, task_id: str, key: str) -> Any:
        """The last value a task published under ``key`` (``engine.set_state``).

        Raises:
            TaskNotFound: no such task.
            KeyError: it published nothing under that key.
        """
        session = self.session
        history = session.log.read_stream(task_stream(task_id))
        if not history:
            raise TaskNotFound(f"no task {task_id!r} in {session.log.url}")
        for r in reversed(history):
            if isinstance(r.event, StateSet) and r.event.key == key:
                return decode_value(r.event.value)
        raise KeyError(f"task {task_id} published nothing under {key!r}")

    def view(self, task_id: str) -> TaskView:
        """What the log says about a task (catching up when it is not known yet).

        Raises:
            TaskNotFound: no such task.
        """
        session = self.session
        view = session.projections.tasks.view(task_id)
        if view is None:
            view = session.catch_up().tasks.view(task_id)
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
        view = session.projections.tasks.view(task_id)
        if view is not None and view.damage:
            damage = session.projections.damaged.get(task_stream(task_id))
            if view.state == "quarantined":
                reason = view.error.removeprefix("quarantined").removeprefix(": ")
                raise TaskQuarantinedError(task_id, reason)
            if damage is not None:
                raise StreamDamaged("task", task_id, damage, _QUARANTINE.format(task_id=task_id))
        if view is not None and view.unknown_events and not view.terminal:
            raise unknown_events_error(view)
        history = session.log.read_stream(task_stream(task_id))
        if not history:
            raise TaskNotFound(f"no task {task_id!r} in {session.log.url}")
        # Events of a newer onward after the task's end do not unmake it, nor does the success
        # of a step under way when it was cancelled.
        last = standing(history)
        assert last is not None
        return result_of_end(task_id, history[0].event, last.event, self.registry)


#: The events that end a task (until a retry).
_ENDS = (TaskSucceeded, TaskFailed, TaskCancelled, TaskDeadlineMissed, TaskQuarantined)


def end_of(records: Sequence[Recorded]) -> tuple[Recorded, Recorded] | None:
    """A task's submission and its end among ``records`` (its stream, or the start of it):
    None when it had not ended there, or they do not start with its submission."""
    end = standing(records)
    if end is None or not isinstance(records[0].event, TaskSubmitted):
        return None
    return (records[0], end) if isinstance(end.event, _ENDS) else None


def ends_at(
    log: EventLog, task_ids: list[str], versions: list[int], registry: Registry
) -> SubtaskEnds:
    """What a wait read of subtasks at these versions of their streams: each one's end there
    (a subtask retried since keeps the end read then)."""
    results: list[Any] = []
    succeeded = True
    error: BaseException | None = None
    for task_id, version in zip(task_ids, versions, strict=True):
        found = end_of([r for r in log.read_stream(task_stream(task_id)) if r.version <= version])
        if found is None:
            raise NotFinished(f"task {task_id} had not ended at version {version} of its stream")
        submitted, end = found
        succeeded = succeeded and isinstance(end.event, TaskSucceeded)
        if error is None:
            try:
                results.append(result_of_end(task_id, submitted.event, end.event, registry))
            except TaskError as exc:
                error = exc
    return SubtaskEnds(versions, succeeded, results if error is None else [], error)


def result_of_end(
    task_id: str, submitted: Event | UnknownEvent, last: Event | UnknownEvent, registry: Registry
) -> Any:
    """A task's result, read from its submission and the last event of its stream: decoded
    as its registered return type (as given, for a task not registered here).

    Raises:
        TaskFailedError, TaskCancelledError, DeadlineMissed, TaskQuarantinedError: it did not
            succeed.
        NotFinished: it has not ended.
    """
    if isinstance(last, TaskQuarantined):
        raise TaskQuarantinedError(task_id, last.reason)
    if isinstance(last, TaskSucceeded):
        definition = (
            registry.tasks.get(submitted.name) if isinstance(submitted, TaskSubmitted) else None
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


_QUARANTINE = "it is not run; `onward quarantine {task_id}` sets it aside"


def append_submission(log: EventLog, task_id: str, event: TaskSubmitted, context: Context) -> None:
    """Append a task's submission, creating its stream (its event id derived from the task id,
    so that a repeated submission is a no-op).

    Raises:
        VersionConflict: the task was submitted before.
        UnencodableValue: its arguments cannot be stored.
    """
    log.append(
        task_stream(task_id),
        [event],
        expected_version=0,
        event_ids=[submission_id(task_id)],
        context=context,
    )


def append_message(
    log: EventLog,
    task_id: str,
    event: MessageSent,
    context: Context,
    message_id: str,
    numbered: str | None = None,
) -> int:
    """Append a message a running task sends, once: its event id is derived from the sender's
    run (:meth:`TaskRun.chained_id`), and a message of that id already in the inbox (sent
    before a crash, or by an earlier run of the sender) is not sent again; nor is one an
    earlier run of an onward that numbered messages in the order they came sent under
    ``numbered``.

    Returns:
        The message's place in the inbox.

    Raises:
        UnencodableValue: its value cannot be stored.
        VersionConflict: other messages kept coming in between its look and its append.
    """
    stream = inbox_stream(task_id)
    tries = _SEND_TRIES
    while True:
        inbox = log.read_stream(stream)
        sent = message_version(inbox, message_id)
        if sent is None and numbered is not None and numbered != message_id:
            sent = message_version(inbox, numbered)
        if sent is not None:
            return sent
        try:
            result = log.append(
                stream,
                [event],
                expected_version=inbox[-1].version if inbox else 0,
                event_ids=[message_id],
                context=context,
            )
        except VersionConflict:
            tries -= 1
            if not tries:
                raise
            continue  # another message came in meanwhile: look again
        return result.versions[stream]


def message_version(inbox: Sequence[Recorded], message_id: str) -> int | None:
    """The place in an inbox of the message of this event id (None: it is not there)."""
    return next((r.version for r in inbox if r.meta.event_id == message_id), None)


def _positional_names(definition: TaskDef) -> list[str]:
    """The names of a task's parameters that take positional arguments, in order."""
    return [
        p.name
        for p in definition.signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def quarantine(
    log: EventLog,
    host: CatchUp,
    task_id: str,
    *,
    reason: str,
    by: str,
    context: Context,
) -> TaskView:
    """Set a task aside for good: append ``TaskQuarantined`` after its stream's last record.

    For a task whose history is damaged (any state), that holds events of a newer onward, or
    that has not ended (a stuck one): it never runs again, a parent waiting for it sees it
    end, and the rest of its session goes on. A running worker loses the task at its next
    append. The log's damage stays for ``onward verify`` to report.

    Args:
        log: the log.
        host: the projections' catch-up host (caught up here).
        task_id: the task's id.
        reason: why, for the audit.
        by: who sets it aside.
        context: the envelope fields of the append.

    Returns:
        The task's view after the quarantine.

    Raises:
        TaskNotFound: no such task.
        InvalidTransition: the task has ended already.
    """
    stream = task_stream(task_id)
    for _ in range(_STEER_TRIES):
        host.catch_up(save=False)
        projections = host.projections
        view = projections.tasks.view(task_id)
        if view is None:
            raise TaskNotFound(f"no task {task_id!r} in {log.url}")
        damaged = stream in projections.damaged
        if not damaged and view.terminal:
            raise InvalidTransition("task", task_id, view.state, "TaskQuarantined")
        # A damaged stream's view stopped at its damage: append after its real last record.
        version = log.stream_version(stream) if damaged else view.version
        event = TaskQuarantined(reason=reason, by=by, damage=view.damage)
        try:
            log.append(stream, [event], expected_version=version, context=context)
        except VersionConflict:
            continue  # another worker appended first: look again
        host.catch_up(save=False)
        view = host.projections.tasks.view(task_id)  # not every finished task decoded
        assert view is not None
        return view
    raise UsageError(f"task {task_id}: too many concurrent changes, try again")
