"""Events of the session's flow: its working rhythm, and the interruptions it holds back."""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event
from onward.events.kinds import FlowState

__all__ = ["FlowStateChanged", "InterruptionDeferred", "InterruptionDelivered"]


class FlowStateChanged(Event, frozen=True, kw_only=True):
    """The session's working rhythm moved to another state.

    Attributes:
        state: the new state.
        previous: the state it left.
        actions_per_minute: the rate of actions when it changed.
        error_rate: the share of recent actions that failed, from 0.0 to 1.0.
    """

    family: ClassVar[str] = "flow"

    state: FlowState
    previous: FlowState
    actions_per_minute: float = 0.0
    error_rate: float = 0.0


class InterruptionDeferred(Event, frozen=True, kw_only=True):
    """An interruption was held back so as not to break the flow.

    Attributes:
        interruption_id: the interruption's id.
        kind: what sort of interruption it is ("approval", "notification", ...).
        summary: what it is about, for people ("" when none).
    """

    family: ClassVar[str] = "flow"

    interruption_id: str
    kind: str
    summary: str = ""


class InterruptionDelivered(Event, frozen=True, kw_only=True):
    """A deferred interruption was delivered.

    Attributes:
        interruption_id: the interruption's id.
        deferred_for: how long it was held back, in seconds.
    """

    family: ClassVar[str] = "flow"

    interruption_id: str
    deferred_for: float = 0.0
