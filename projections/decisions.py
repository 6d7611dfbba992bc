"""The decisions projection: approvals waiting for a human, each action's record, the thresholds.

It folds the events of confidence-based execution, wherever they are recorded:

- :class:`onward.events.DecisionMade` of kind ``"confidence"`` with the strategy ``ask``, then its
  :class:`onward.events.ApprovalRequested`: an approval waits for a human until
  :class:`onward.events.ApprovalGranted` or :class:`onward.events.ApprovalDenied` answers it
  (whether the flow monitor holds a request back is the flow projection's: its pending
  interruptions);
- the events that end a task (:class:`onward.events.TaskSucceeded`, ``TaskFailed``,
  ``TaskCancelled``, ``TaskDeadlineMissed``, ``TaskQuarantined``): its unanswered requests lapse,
  since nobody can answer them any more; :class:`onward.events.TaskRetried` asks them again (the
  new attempt waits for the same decision);
- :class:`onward.events.ActionChecked`: each judged action's runs, passes and failures, across
  sessions (an action's history spans sessions, like the error-learning DB); the answers to its
  approval requests count for it too;
- :class:`onward.events.ThresholdsAdjusted`: the thresholds in force (the last adjustment in log
  order, from any session), and the passes in a row since the last adjustment or failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from onward.events import (
    ActionChecked,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    DecisionMade,
    Recorded,
    TaskCancelled,
    TaskDeadlineMissed,
    TaskFailed,
    TaskQuarantined,
    TaskRetried,
    TaskSucceeded,
    ThresholdsAdjusted,
)
from onward.projections.task import TASK_PREFIX

__all__ = [
    "DECISION_TYPES",
    "TASK_ENDINGS",
    "ActionRecord",
    "Answer",
    "DecisionProjection",
    "DecisionsState",
    "LapsedApproval",
    "PendingApproval",
]

#: The events that end a task, and the state each ends it in.
_ENDINGS: dict[type[Any], str] = {
    TaskCancelled: "cancelled",
    TaskDeadlineMissed: "missed",
    TaskFailed: "failed",
    TaskQuarantined: "quarantined",
    TaskSucceeded: "succeeded",
}

#: The event types that end a task.
TASK_ENDINGS: frozenset[type[Any]] = frozenset(_ENDINGS)

#: The event types this projection folds (the host sends it only these).
DECISION_TYPES: frozenset[type[Any]] = frozenset(
    {
        ActionChecked,
        ApprovalDenied,
        ApprovalGranted,
        ApprovalRequested,
        DecisionMade,
        TaskRetried,
        ThresholdsAdjusted,
        *_ENDINGS,
    }
)


class PendingApproval(msgspec.Struct, kw_only=True, gc=False):
    """An approval request no human has answered yet.

    Attributes:
        decision_id: the id of the decision awaiting approval (what ``onward approve`` takes).
        task_id: the task that waits for the answer.
        session: the task's session.
        action: the action the decision is about ("" when not an action).
        question: what the human is asked.
        options: the answers offered.
        impact: what is at stake.
        confidence: the decision's confidence score (None when not scored).
        requested_at: when it was asked.
        position: the request's position in the log.
    """

    decision_id: str
    task_id: str
    session: str
    action: str = ""
    question: str = ""
    options: list[str] = msgspec.field(default_factory=list)
    impact: str = ""
    confidence: float | None = None
    requested_at: float = 0.0
    position: int = 0


class LapsedApproval(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An approval request whose task ended before anyone answered it: it waits no more (a
    retry of the task asks it again).

    Attributes:
        request: the request, as it waited.
        ended: the state its task ended in ("cancelled", "failed", "missed", "quarantined",
            "succeeded").
        time: when its task ended.
    """

    request: PendingApproval
    ended: str
    time: float = 0.0


class Answer(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A human's answer to an approval request.

    Attributes:
        granted: True for an approval, False for a refusal.
        by: who answered ("" when not known).
        note: what they said.
        time: when.
        action: the action it was about ("" when not an action).
    """

    granted: bool
    by: str = ""
    note: str = ""
    time: float = 0.0
    action: str = ""


class ActionRecord(msgspec.Struct, kw_only=True, gc=False):
    """One action's history, across sessions.

    Attributes:
        runs: checked runs.
        passed: runs that succeeded with their check holding.
        granted: approval requests granted.
        denied: approval requests denied.
    """

    runs: int = 0
    passed: int = 0
    granted: int = 0
    denied: int = 0

    @property
    def failed(self) -> int:
        """Checked runs that did not pass."""
        return self.runs - self.passed


class DecisionsState(msgspec.Struct, kw_only=True):
    """What a checkpoint keeps of the projection."""

    pending: dict[str, PendingApproval]
    answers: dict[str, Answer]
    actions: dict[str, ActionRecord]
    thresholds: dict[str, float]
    streak: int
    asks: dict[str, tuple[str, float | None]]
    lapsed: dict[str, LapsedApproval]


class DecisionProjection:
    """Approvals, each action's record and the thresholds in force, folded from the log."""

    def __init__(self) -> None:
        self.pending: dict[str, PendingApproval] = {}
        #: The requests whose task ended unanswered, by decision id.
        self.lapsed: dict[str, LapsedApproval] = {}
        self.answers: dict[str, Answer] = {}
        self.actions: dict[str, ActionRecord] = {}
        #: The thresholds in force (empty: the defaults; see :mod:`onward.judgement.confidence`).
        self.thresholds: dict[str, float] = {}
        #: Checked runs passed in a row since the last adjustment or failure.
        self.streak = 0
        # The "ask" decisions whose request is not folded yet: id -> (action, confidence).
        self._asks: dict[str, tuple[str, float | None]] = {}
        # The unanswered requests (waiting or lapsed) by task id: a task's end is one look-up.
        self._unanswered: dict[str, list[str]] = {}

    @property
    def unanswered(self) -> Mapping[str, object]:
        """The tasks with a request unanswered (waiting or lapsed): while none has, the end
        of a task changes nothing here (a fold's inner loop may skip it)."""
        return self._unanswered

    def apply(self, r: Recorded) -> None:
        """Fold one event (the host sends only :data:`DECISION_TYPES`)."""
        event = r.event
        kind = type(event)
        ended = _ENDINGS.get(kind)
        if ended is not None:
            if self._unanswered:  # most sessions ask nobody: no request can lapse
                self._lapse(r.stream[len(TASK_PREFIX) :], ended, r.meta.time)
        elif kind is ActionChecked:
            assert isinstance(event, ActionChecked)
            record = self._action(event.action)
            record.runs += 1
            if event.passed:
                record.passed += 1
                self.streak += 1
            else:
                self.streak = 0
        elif kind is DecisionMade:
            assert isinstance(event, DecisionMade)
            if event.strategy == "ask":
                # What the request is about: an action, or a component with no workaround left.
                about = event.inputs.get("action") or event.inputs.get("component") or ""
                self._asks[r.meta.event_id] = (str(about), event.confidence)
        elif kind is ApprovalRequested:
            assert isinstance(event, ApprovalRequested)
            action, confidence = self._asks.pop(event.decision_id, ("", None))
            self.pending[event.decision_id] = PendingApproval(
                decision_id=event.decision_id,
                task_id=event.subject,
                session=r.meta.session,
                action=action,
                question=event.question,
                options=list(event.options),
                impact=event.impact,
                confidence=confidence,
                requested_at=r.meta.time,
                position=r.position,
            )
            self._unanswered.setdefault(event.subject, []).append(event.decision_id)
        elif kind is ApprovalGranted or kind is ApprovalDenied:
            assert isinstance(event, ApprovalGranted | ApprovalDenied)
            pending = self.pending.pop(event.decision_id, None)
            if pending is None and event.decision_id in self.lapsed:
                # The task lifecycle refuses an answer once the task ended: only a log
                # written by another onward holds one; it still answers the request.
                pending = self.lapsed.pop(event.decision_id).request
            if pending is not None:
                self._answered(pending)
            action = pending.action if pending is not None else ""
            granted = kind is ApprovalGranted
            self.answers[event.decision_id] = Answer(
                granted=granted, by=event.by, note=event.note, time=r.meta.time, action=action
            )
            if action:
                record = self._action(action)
                if granted:
                    record.granted += 1
                else:
                    record.denied += 1
        elif kind is ThresholdsAdjusted:
            assert isinstance(event, ThresholdsAdjusted)
            self.thresholds = dict(event.thresholds)
            self.streak = 0
        elif kind is TaskRetried:
            self._ask_again(r.stream[len(TASK_PREFIX) :])

    def _lapse(self, task_id: str, ended: str, time: float) -> None:
        """A task ended: its requests still waiting lapse."""
        for decision_id in self._unanswered.get(task_id, ()):
            request = self.pending.pop(decision_id, None)
            if request is not None:
                self.lapsed[decision_id] = LapsedApproval(request=request, ended=ended, time=time)

    def _ask_again(self, task_id: str) -> None:
        """A task was retried: its lapsed requests wait again (its new attempt waits for the
        same decisions)."""
        for decision_id in self._unanswered.get(task_id, ()):
            lapsed = self.lapsed.pop(decision_id, None)
            if lapsed is not None:
                self.pending[decision_id] = lapsed.request

    def _answered(self, request: PendingApproval) -> None:
        """A request was answered: its task's end no longer concerns it."""
        ids = self._unanswered.get(request.task_id)
        if ids is not None and request.decision_id in ids:
            ids.remove(request.decision_id)
            if not ids:
                del self._unanswered[request.task_id]

    def _action(self, name: str) -> ActionRecord:
        record = self.actions.get(name)
        if record is None:
            record = self.actions[name] = ActionRecord()
        return record

    def action(self, name: str) -> ActionRecord:
        """An action's record (an empty one for an action never checked)."""
        return self.actions.get(name) or ActionRecord()

    def waiting(self, session: str | None = None) -> list[PendingApproval]:
        """The approval requests waiting for an answer, oldest first (only one session's if
        given); a request whose task ended is not among them (see :attr:`lapsed`)."""
        found = [p for p in self.pending.values() if session is None or p.session == session]
        return sorted(found, key=lambda p: p.position)

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of the projection."""
        return msgspec.to_builtins(self.dump())  # type: ignore[no-any-return]

    def dump(self) -> DecisionsState:
        """The projection's state, for a checkpoint."""
        return DecisionsState(
            pending=self.pending,
            answers=self.answers,
            actions=self.actions,
            thresholds=self.thresholds,
            streak=self.streak,
            asks=self._asks,
            lapsed=self.lapsed,
        )

    def load(self, state: DecisionsState) -> None:
        """Restore the state :meth:`dump` saved."""
        self.pending = dict(state.pending)
        self.answers = dict(state.answers)
        self.actions = dict(state.actions)
        self.thresholds = dict(state.thresholds)
        self.streak = state.streak
        self._asks = dict(state.asks)
        self.lapsed = dict(state.lapsed)
        self._unanswered = {}
        for request in [*self.pending.values(), *(a.request for a in self.lapsed.values())]:
            self._unanswered.setdefault(request.task_id, []).append(request.decision_id)
