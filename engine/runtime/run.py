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

from onward.core.batch import Batch
from onward.core.definitions import Judgement, StepDef
from onward.core.errors import (
    ActionDenied,
    CheckFailed,
    StepFailedError,
    StepInterrupted,
    StepMismatch,
)
from onward.core.run import LeaseLost, Suspended, error_message
from onward.events import (
    Append,
    ApprovalDenied,
    ApprovalGranted,
    ComponentFailed,
    Context,
    DecisionMade,
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
    Strategy,
    TaskCancelled,
    TaskLeaseExpired,
    TaskWaiting,
    VersionConflict,
    WorkaroundApplied,
    decode_value,
    encode_value,
)
from onward.healing.fixes import StepCall
from onward.healing.healer import Healer, Outcome, bind_call, call_with
from onward.judgement.actions import Judge, Ruling

__all__ = [
    "CURRENT_RUN",
    "Replayed",
    "TaskRun",
    "derived_id",
]

#: The task run of the current thread or coroutine (None outside a task).
CURRENT_RUN: ContextVar[TaskRun | None] = ContextVar("onward_current_run", default=None)


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
        judge: Judge | None = None,
    ) -> None:
        self.log = log
        self.healer = healer
        self.judge = judge
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
        # Judged actions: the recorded confidence decision per step index, and the answers to
        # approval requests by decision id (granted, note).
        self.rulings: dict[int, Ruling] = {}
        self.answers: dict[str, tuple[bool, str]] = {}
        # Components this task reported failed, in order: (component, the workaround applied,
        # or the id of the decision to ask when none was left); a re-run reads them back.
        self.degradations: list[tuple[str, str, str]] = []
        self.degrade_calls = 0
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
            elif isinstance(event, ComponentFailed):
                self.degradations.append((event.component, "", ""))
            elif isinstance(event, WorkaroundApplied) and self.degradations:
                self.degradations[-1] = (event.component, event.workaround, "")
            elif isinstance(event, DecisionMade) and event.kind == "degradation":
                if self.degradations:
                    self.degradations[-1] = (event.subject, "", r.meta.event_id)
            elif isinstance(event, DecisionMade):
                step_index = event.inputs.get("step_index")
                if event.kind == "confidence" and event.strategy and isinstance(step_index, int):
                    self.rulings[step_index] = Ruling(
                        decision_id=r.meta.event_id, strategy=event.strategy
                    )
            elif isinstance(event, ApprovalGranted | ApprovalDenied):
                self.answers[event.decision_id] = (isinstance(event, ApprovalGranted), event.note)
        self.index = 0
        self.children = 0
        self.current_step: int | None = None
        self.steps_run = 0
        self.steps_replayed = 0

    # -- appending -------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """A text with its secrets replaced, by the log's redactor."""
        return self.log.redactor.redact(text)

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

    def end_step(self, step: StepDef, index: int, result: Any, duration: float) -> Any:
        """Record a step's result.

        Returns:
            The result as the log holds it, decoded as a replay decodes it: what the step's
            caller gets, on this run as on every later one.

        Raises:
            UsageError: the result cannot be stored so as to come back as it is (nothing was
                recorded).
        """
        stored = self.stored_result(step, index, result)
        self.record([StepCompleted(index=index, name=step.name, result=stored, duration=duration)])
        return decode_value(stored, step.returns)

    def stored_result(self, step: StepDef, index: int, result: Any) -> Any:
        """A step's result as the log will hold it (see :func:`onward.events.encode_value`).

        Raises:
            UsageError: the result cannot be stored so as to come back as it is.
        """
        return encode_value(
            result,
            what=f"task {self.task_id}: the result of step {step.name!r} (index {index})",
            redactor=self.log.redactor,
        )

    def fail_step(self, step: StepDef, index: int, exc: BaseException) -> None:
        """Record a step's failure."""
        self.record(
            [
                StepFailed(
                    index=index,
                    name=step.name,
                    error_type=type(exc).__name__,
                    message=error_message(exc, self.redact),
                )
            ]
        )

    @staticmethod
    def replay(step: StepDef, recorded: Replayed) -> Any:
        """The recorded outcome again: the result (as the step's return type), or its error."""
        if recorded.completed:
            return decode_value(recorded.result, step.returns)
        if recorded.error_type == "ActionDenied":
            raise ActionDenied(recorded.name, recorded.message)
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
        judgement = step.judgement if self.judge is not None else None
        ruling = None if judgement is None else self._ruling(step, index, judgement)
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
                if ruling is not None:
                    assert judgement is not None
                    self._check(step, index, judgement, ruling, result)
            except Exception as exc:
                self.current_step = None
                if ruling is not None and not isinstance(exc, CheckFailed):
                    self._action_failed(step, index, ruling, error_message(exc, self.redact))
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
            # The caller gets what a replay will get: the result as recorded, decoded again.
            stored = self.stored_result(step, index, result)
            result = decode_value(stored, step.returns)
            completed = StepCompleted(
                index=index,
                name=step.name,
                result=stored,
                duration=self.clock() - started,
                attempt=attempt,
                dependency=step.breaker,
            )
            if healer is None and ruling is None:
                self.record([completed])
            else:
                batch = Batch(self.context.causation_id)
                completed_id = batch.add(completed)
                if healer is not None:
                    healer.on_success(self, step, batch, completed_id, outcome)
                if ruling is not None and self.judge is not None:
                    self.judge.outcome(
                        self, step, index, ruling, batch, passed=True, cause=completed_id
                    )
                self.commit(batch)
            return result

    # -- judged actions --------------------------------------------------------------------

    def _ruling(self, step: StepDef, index: int, judgement: Judgement) -> Ruling:
        """The action's confidence decision: recorded before, or taken now.

        Raises:
            Suspended: it waits for a human's answer.
            ActionDenied: a human refused it (the step's final failure is recorded).
        """
        assert self.judge is not None
        ruling = self.rulings.get(index)
        if ruling is None:
            ruling = self.judge.decide(self, step, index, judgement)
            self.rulings[index] = ruling
        if ruling.strategy != Strategy.ASK:
            return ruling
        answer = self.answers.get(ruling.decision_id)
        if answer is None:  # run again before anyone answered: wait again
            self.record([TaskWaiting(reason=f"approval of {step.name}")])
            raise Suspended()
        granted, note = answer
        if granted:
            return ruling
        denied = ActionDenied(step.name, note)
        batch = self.new_batch()
        batch.add(
            StepFailed(
                index=index,
                name=step.name,
                error_type="ActionDenied",
                message=error_message(denied, self.redact),
            ),
            ruling.decision_id,
        )
        self.judge.denied(self, step, ruling, batch)
        self.commit(batch)
        self.outcomes[index] = Replayed(step.name, False, None, "ActionDenied", str(denied))
        raise denied

    def _check(
        self, step: StepDef, index: int, judgement: Judgement, ruling: Ruling, result: Any
    ) -> None:
        """Run the action's check when its strategy asks for one; undo and raise on failure.

        Raises:
            CheckFailed: the check did not hold (its outcome is recorded).
        """
        if judgement.check is None or ruling.strategy == Strategy.IMMEDIATE:
            return
        try:
            held = bool(judgement.check(result))
            reason = "" if held else "the check returned False"
        except Exception as exc:
            held, reason = False, f"the check raised {type(exc).__name__}: {exc}"
        if held:
            return
        assert self.judge is not None
        batch = self.new_batch()
        cause = None
        if ruling.strategy != Strategy.MONITORED and judgement.can_undo:
            cause = batch.add(self.judge.undo(judgement, result, step, index), ruling.decision_id)
        self.judge.outcome(
            self, step, index, ruling, batch, passed=False, message=reason, cause=cause
        )
        self.commit(batch)
        raise CheckFailed(step.name, reason)

    def _action_failed(self, step: StepDef, index: int, ruling: Ruling, message: str) -> None:
        """Record that a judged action raised (its history counts the failure)."""
        assert self.judge is not None
        batch = self.new_batch()
        self.judge.outcome(
            self, step, index, ruling, batch, passed=False, message=message, adapt=False
        )
        self.commit(batch)
