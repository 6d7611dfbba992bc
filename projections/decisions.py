"""The decisions projection: approvals waiting for a human, each action's record, the thresholds.

It folds the events of confidence-based execution, wherever they are recorded:

- :class:`onward.events.DecisionMade` of kind ``"confidence"`` with the strategy ``ask``, then its
  :class:`onward.events.ApprovalRequested`: an approval waits for a human until
  :class:`onward.events.ApprovalGranted` or :class:`onward.events.ApprovalDenied` answers it
  (whether the flow monitor holds a request back is the flow projection's: its pending
  interruptions);
- :class:`onward.events.ActionChecked`: each judged action's runs, passes and failures, across
  sessions (an action's history spans sessions, like the error-learning DB); the answers to its
  approval requests count for it too;
- :class:`onward.events.ThresholdsAdjusted`: the thresholds in force (the last adjustment in log
  order, from any session), and the passes in a row since the last adjustment or failure.
"""

from __future__ import annotations

from typing import Any

import msgspec

from onward.events import (
    ActionChecked,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    DecisionMade,
    Recorded,
    ThresholdsAdjusted,
)

__all__ = [
    "DECISION_TYPES",
    "ActionRecord",
    "Answer",
    "DecisionProjection",
    "DecisionsState",
    "PendingApproval",
]

#: The event types this projection folds (the host sends it only these).
DECISION_TYPES: frozenset[type[Any]] = frozenset(
    {
        ActionChecked,
        ApprovalDenied,
        ApprovalGranted,
        ApprovalRequested,
        DecisionMade,
        ThresholdsAdjusted,
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


class DecisionProjection:
    """Approvals, each action's record and the thresholds in force, folded from the log."""

    def __init__(self) -> None:
        self.pending: dict[str, PendingApproval] = {}
        self.answers: dict[str, Answer] = {}
        self.actions: dict[str, ActionRecord] = {}
        #: The thresholds in force (empty: the defaults; see :mod:`onward.judgement.confidence`).
        self.thresholds: dict[str, float] = {}
        #: Checked runs passed in a row since the last adjustment or failure.
        self.streak = 0
        # The "ask" decisions whose request is not folded yet: id -> (action, confidence).
        self._asks: dict[str, tuple[str, float | None]] = {}

    def apply(self, r: Recorded) -> None:
        """Fold one event (the host sends only :data:`DECISION_TYPES`)."""
        event = r.event
        kind = type(event)
        if kind is ActionChecked:
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
        elif kind is ApprovalGranted or kind is ApprovalDenied:
            assert isinstance(event, ApprovalGranted | ApprovalDenied)
            pending = self.pending.pop(event.decision_id, None)
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

    def _action(self, name: str) -> ActionRecord:
        record = self.actions.get(name)
        if record is None:
            record = self.actions[name] = ActionRecord()
        return record

    def action(self, name: str) -> ActionRecord:
        """An action's record (an empty one for an action never checked)."""
        return self.actions.get(name) or ActionRecord()

    def waiting(self, session: str | None = None) -> list[PendingApproval]:
        """The approval requests still unanswered, oldest first (only one session's if given)."""
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
        )

    def load(self, state: DecisionsState) -> None:
        """Restore the state :meth:`dump` saved."""
        self.pending = dict(state.pending)
        self.answers = dict(state.answers)
        self.actions = dict(state.actions)
        self.thresholds = dict(state.thresholds)
        self.streak = state.streak
        self._asks = dict(state.asks)
