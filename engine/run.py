"""One run of a task: the durable-step core shared by every way of calling a step.

A :class:`TaskRun` holds what the log recorded for the task (its step outcomes), the stream
version its next append expects, and the step index counter. :meth:`TaskRun.begin_step` and
:meth:`TaskRun.end_step` / :meth:`TaskRun.fail_step` are the whole protocol: a sync call wraps
the function between them; an async call will await it between the same two calls.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import msgspec

from engine.errors import StepInterrupted, StepMismatch
from engine.fixes import StepCall
from engine.healing import Batch, Healer, Outcome, bind_call, call_with
from engine.registry import StepDef
from events import (
    Append,
    Context,
    Event,
    EventLog,
    FixAttempted,
    FixFailed,
    FixSucceeded,
    Recorded,
    RetryScheduled,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskCancelled,
    TaskLeaseExpired,
    VersionConflict,
)

__all__ = [
    "CURRENT_RUN",
    "LeaseLost",
    "Replayed",
    "StepFailedError",
    "Suspended",
    "TaskRun",
    "derived_id",
]

#: The task run of the current thread or coroutine (None outside a task).
CURRENT_RUN: ContextVar[TaskRun | None] = ContextVar("onward_current_run", default=None)


class Suspended(BaseException):
    """Unwinds a task that now waits durably (for subtasks, a retry, a breaker); not an error."""


class LeaseLost(BaseException):
    """The task was cancelled or its lease taken while it ran: unwind it without recording.

    A BaseException, so that a task's own ``except Exception`` does not swallow it.
    """

    def __init__(self, task_id: str, why: str) -> None:
        super().__init__(f"task {task_id}: {why}")
        self.why = why


class StepFailedError(Exception):
    """A step failure re-raised from the log when its original exception type is not a builtin.

    Attributes:
        error_type: the recorded exception type's name.
        message: the recorded message.
    """

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class Replayed(msgspec.Struct, frozen=True):
    """A step outcome found in the log."""

    name: str
    completed: bool
    result: Any = None
    error_type: str = ""
    message: str = ""


def derived_id(*parts: str, size: int = 8) -> str:
    """A stable id of ``2 * size`` hex digits from parts (subtask and keyed task ids)."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=size).hexdigest()


def submission_id(task_id: str) -> str:
    """The event id of a task's ``TaskSubmitted`` (stable, so a re-submission is a no-op)."""
    return derived_id(task_id, "submitted", size=16)


def error_message(exc: BaseException) -> str:
    """An exception's message, bounded (the log refuses oversized payloads)."""
    text = str(exc)
    return text if len(text) <= 4000 else text[:4000] + "... [truncated]"


class TaskRun:
    """The state of one run of one task.

    Args:
        log: the log to record outcomes in.
        task_id: the task.
        stream: its stream.
        history: its stream's events, read when the run started.
        context: the envelope fields for its appends.
        clock: the engine's clock.
    """

    def __init__(
        self,
        log: EventLog,
        task_id: str,
        stream: str,
        history: list[Recorded],
        context: Context,
        clock: Any,
        *,
        healer: Healer | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.log = log
        self.healer = healer
        self.sleep = sleep
        self.task_id = task_id
        self.stream = stream
        self.context = context
        self.clock = clock
        self.version = history[-1].version if history else 0
        self.outcomes: dict[int, Replayed] = {}
        self.started: dict[int, str] = {}
        # Failed tries per step index (a fix or a retry followed the non-final ones).
        self.failures: dict[int, int] = {}
        # Per step index: the fixes already tried, the fix whose outcome is still to be
        # recorded (fix, signature), and the delay before its last retry.
        self.fixes_tried: dict[int, set[str]] = {}
        self.fix_in_flight: dict[int, tuple[str, str]] = {}
        self.fix_applications: dict[int, int] = {}
        self.last_delay: dict[int, float] = {}
        for r in history:
            event = r.event
            if isinstance(event, StepCompleted):
                self.outcomes[event.index] = Replayed(event.name, True, event.result)
            elif isinstance(event, StepFailed):
                self.failures[event.index] = self.failures.get(event.index, 0) + 1
                if event.final:
                    self.outcomes[event.index] = Replayed(
                        event.name, False, None, event.error_type, event.message
                    )
            elif isinstance(event, StepStarted):
                self.started[event.index] = event.name
            elif isinstance(event, FixAttempted) and event.step_index is not None:
                self.fixes_tried.setdefault(event.step_index, set()).add(event.fix)
                self.fix_in_flight[event.step_index] = (event.fix, event.signature)
                applied = self.fix_applications.get(event.step_index, 0)
                self.fix_applications[event.step_index] = applied + 1 if event.again else 1
            elif isinstance(event, FixSucceeded | FixFailed) and event.step_index is not None:
                self.fix_in_flight.pop(event.step_index, None)
            elif isinstance(event, RetryScheduled):
                self.last_delay[event.step_index] = event.delay
        self.index = 0
        self.children = 0
        self.current_step: int | None = None
        self.steps_run = 0
        self.steps_replayed = 0

    # -- appending -------------------------------------------------------------------------

    def record(self, events: list[Event]) -> None:
        """Append events to the task's stream at the version this run expects.

        Raises:
            LeaseLost: another process cancelled the task or took its lease meanwhile.
        """
        try:
            self.log.append(
                self.stream, events, expected_version=self.version, context=self.context
            )
        except VersionConflict:
            self._explain_conflict()
            raise
        self.version += len(events)

    def new_batch(self) -> Batch:
        """An empty batch whose events are caused by this run's claim unless they say."""
        return Batch(self.context.causation_id)

    def commit(self, batch: Batch) -> None:
        """Append a batch atomically: its events to the task's stream, and its other appends
        (breaker transitions). If another worker moved a breaker meanwhile, the batch is
        appended without that transition.

        Raises:
            LeaseLost: another process cancelled the task or took its lease meanwhile.
        """
        own = Append(
            stream=self.stream,
            events=batch.events,
            expected_version=self.version,
            event_ids=batch.ids,
            context=self.context,
            causes=batch.causes,
        )
        try:
            self.log.commit([own, *batch.also])
        except VersionConflict as clash:
            if clash.stream == self.stream or not batch.also:
                self._explain_conflict()
                raise
            self.log.commit([own])
        self.version += len(batch.events)

    def _explain_conflict(self) -> None:
        for r in self.log.read_stream(self.stream, after=self.version):
            if isinstance(r.event, TaskCancelled):
                raise LeaseLost(self.task_id, "cancelled while running") from None
            if isinstance(r.event, TaskLeaseExpired):
                raise LeaseLost(self.task_id, "its lease expired and was taken") from None

    # -- the step protocol -----------------------------------------------------------------

    def idempotency_key(self, index: int) -> str:
        """The idempotency key of a step: task id and step index."""
        return f"{self.task_id}:{index}"

    def begin_step(self, step: StepDef) -> tuple[int, Replayed | None]:
        """Start the next step: its index, and its recorded outcome if it has one.

        Raises:
            StepMismatch: the log records another step at this index.
            StepInterrupted: an at-most-once step that was in flight when its worker died.
        """
        index = self.index
        self.index += 1
        recorded = self.outcomes.get(index)
        if recorded is not None:
            if recorded.name != step.name:
                raise StepMismatch(self.task_id, index, recorded.name, step.name)
            self.steps_replayed += 1
            return index, recorded
        started = self.started.get(index)
        if started is not None and started != step.name:
            raise StepMismatch(self.task_id, index, started, step.name)
        if step.at_most_once:
            if started is not None:
                raise StepInterrupted(self.task_id, index, step.name)
            self.record(
                [
                    StepStarted(
                        index=index,
                        name=step.name,
                        idempotency_key=self.idempotency_key(index),
                    )
                ]
            )
        self.steps_run += 1
        return index, None

    def end_step(self, step: StepDef, index: int, result: Any, duration: float) -> None:
        """Record a step's result."""
        self.record([StepCompleted(index=index, name=step.name, result=result, duration=duration)])

    def fail_step(self, step: StepDef, index: int, exc: BaseException) -> None:
        """Record a step's failure."""
        self.record(
            [
                StepFailed(
                    index=index,
                    name=step.name,
                    error_type=type(exc).__name__,
                    message=error_message(exc),
                )
            ]
        )

    @staticmethod
    def replay(step: StepDef, recorded: Replayed) -> Any:
        """The recorded outcome again: the result (as the step's return type), or its error."""
        if recorded.completed:
            if step.returns is Any or recorded.result is None:
                return recorded.result
            try:
                return msgspec.convert(recorded.result, type=step.returns, strict=False)
            except (msgspec.ValidationError, TypeError):
                return recorded.result
        builtin = getattr(builtins, recorded.error_type, None)
        if isinstance(builtin, type) and issubclass(builtin, Exception):
            try:
                raise builtin(recorded.message)
            except TypeError:
                pass
        raise StepFailedError(recorded.error_type, recorded.message)

    def call(self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a step durably (the synchronous path).

        Without a healer a failure is the step's outcome. With one, a failure may be fixed (the
        step runs again at once with remedied arguments), retried (the task waits durably and
        the step runs again when the task re-runs) or given up.

        Raises:
            Suspended: the task now waits (a retry's due time, an open breaker).
        """
        index, recorded = self.begin_step(step)
        if recorded is not None:
            return self.replay(step, recorded)
        healer = self.healer
        attempt = self.failures.get(index, 0) + 1
        remedied: StepCall | None = None
        outcome: Outcome | None = None
        if index in self.fix_in_flight:  # a fix that waited before this run: settle it now
            fix, signature = self.fix_in_flight[index]
            outcome = Outcome(action="wait", fix=fix, signature=signature, index=index)
        while True:
            if healer is not None and step.breaker and healer.before_call(self, step, index):
                raise Suspended()
            self.current_step = index
            started = self.clock()
            try:
                result = step.fn(*args, **kwargs) if remedied is None else call_with(step, remedied)
            except Exception as exc:
                self.current_step = None
                if healer is None:
                    self.fail_step(step, index, exc)
                    raise
                call = remedied or bind_call(step, args, kwargs, attempt)
                fix = outcome.fix if outcome is not None else ""
                fix_signature = outcome.signature if outcome is not None else ""
                outcome = healer.on_failure(
                    self, step, index, attempt, call, exc, fix, fix_signature
                )
                attempt += 1
                if outcome.action == "fix":
                    assert outcome.call is not None
                    remedied = outcome.call
                    wait = outcome.until - self.clock()
                    if wait > 0 and self.sleep is not None:
                        self.sleep(wait)
                    continue
                if outcome.action == "wait":
                    raise Suspended() from None
                raise
            self.current_step = None
            completed = StepCompleted(
                index=index,
                name=step.name,
                result=result,
                duration=self.clock() - started,
                attempt=attempt,
                dependency=step.breaker,
            )
            if healer is None:
                self.record([completed])
            else:
                batch = Batch(self.context.causation_id)
                completed_id = batch.add(completed)
                healer.on_success(self, step, batch, completed_id, outcome)
                self.commit(batch)
            return result
