"""Events about decisions: choices the engine made on the user's behalf, and human approvals.

A decision records everything needed to explain it from the log alone; replay re-reads it and
never decides again.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from onward.events.base import Event
from onward.events.kinds import Strategy

__all__ = [
    "ActionChecked",
    "ActionUndone",
    "ApprovalDenied",
    "ApprovalGranted",
    "ApprovalRequested",
    "DecisionMade",
    "ThresholdsAdjusted",
]


class DecisionMade(Event, frozen=True, kw_only=True):
    """The engine chose something on the user's behalf.

    The decision's id is this event's id; its ``causation_id`` points to the event that led to
    it.

    Attributes:
        kind: what sort of choice it is: "retry", "fix", "breaker", "confidence", "budget", ...
        subject: the id of what it decides about (a task id, a breaker's name, ...).
        choice: what was chosen.
        rule: the id of the rule that chose it ("" when no rule did).
        strategy: how the choice is carried out (None when it does not apply).
        confidence: the confidence in the choice, from 0.0 to 1.0 (None when not scored).
        factors: the confidence factors, by name, each from 0.0 to 1.0.
        inputs: what the decision looked at, as plain JSON values.
        alternatives: the choices it passed over.
        thresholds: the thresholds it compared against, by name.
    """

    family: ClassVar[str] = "decision"

    kind: str
    subject: str
    choice: str
    rule: str = ""
    strategy: Strategy | None = None
    confidence: float | None = None
    factors: dict[str, float] = msgspec.field(default_factory=dict)
    inputs: dict[str, Any] = msgspec.field(default_factory=dict)
    alternatives: list[str] = msgspec.field(default_factory=list)
    thresholds: dict[str, float] = msgspec.field(default_factory=dict)


class ApprovalRequested(Event, frozen=True, kw_only=True):
    """A decision's confidence was too low to act alone: a human is asked.

    The subject waits durably for the answer.

    Attributes:
        decision_id: the event id of the :class:`DecisionMade` awaiting approval.
        subject: the id of what the decision is about (a task id, ...).
        question: what the human is asked.
        options: the answers offered.
        impact: what is at stake, for the human ("" when not stated).
    """

    family: ClassVar[str] = "decision"

    decision_id: str
    subject: str
    question: str
    options: list[str] = msgspec.field(default_factory=list)
    impact: str = ""


class ApprovalGranted(Event, frozen=True, kw_only=True):
    """A human approved a decision; the waiting work goes ahead.

    Attributes:
        decision_id: the event id of the approved :class:`DecisionMade`.
        by: who approved it ("" when not known).
        note: what they said ("" when nothing).
    """

    family: ClassVar[str] = "decision"

    decision_id: str
    by: str = ""
    note: str = ""


class ApprovalDenied(Event, frozen=True, kw_only=True):
    """A human refused a decision; the waiting work does not go ahead with it.

    Attributes:
        decision_id: the event id of the refused :class:`DecisionMade`.
        by: who refused it ("" when not known).
        note: what they said ("" when nothing).
    """

    family: ClassVar[str] = "decision"

    decision_id: str
    by: str = ""
    note: str = ""


class ThresholdsAdjusted(Event, frozen=True, kw_only=True):
    """The thresholds that decide between acting alone and asking a human changed.

    Attributes:
        thresholds: the new thresholds, by name.
        previous: the thresholds they replace, by name.
        reason: why they changed (a user's setting, the approvals' history, ...).
    """

    family: ClassVar[str] = "decision"

    thresholds: dict[str, float]
    previous: dict[str, float] = msgspec.field(default_factory=dict)
    reason: str = ""


class ActionChecked(Event, frozen=True, kw_only=True):
    """A judged action ran, and its outcome was checked (its declared check, or its success).

    These outcomes are the action's history: the confidence of its next run reads them, and
    the thresholds adapt to them.

    Attributes:
        action: the action's name (the step's registered name).
        step_index: the step's index in its task.
        passed: whether it succeeded and its check held.
        strategy: the strategy it ran under.
        decision_id: the id of the :class:`DecisionMade` that chose the strategy.
        message: why the check failed ("" when it passed).
    """

    family: ClassVar[str] = "decision"

    action: str
    step_index: int
    passed: bool
    strategy: Strategy
    decision_id: str = ""
    message: str = ""


class ActionUndone(Event, frozen=True, kw_only=True):
    """A reversible action's compensation ran after its check failed.

    Attributes:
        action: the action's name.
        step_index: the step's index in its task.
        ok: whether the compensation itself succeeded.
        message: what the compensation reported, or how it failed ("" when nothing).
    """

    family: ClassVar[str] = "decision"

    action: str
    step_index: int
    ok: bool = True
    message: str = ""
