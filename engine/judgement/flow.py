"""The flow monitor: a session's working rhythm as an explicit state machine.

The rhythm is measured over the last minute by
:meth:`onward.projections.flow.FlowProjection.rhythm`: actions (step tries) per minute and the share
of them that failed. :class:`FlowMonitor` picks the session's next flow state by the first row that
holds (defaults in brackets):

====================================================  ==========================
the rhythm, in the current state                      next state
====================================================  ==========================
no actions in the window                              ``idle``
idle, fewer than ``warm_actions`` [3] actions         ``idle``
errors at or above ``disrupted_error_rate`` [25%]     ``disrupted``
flowing, errors at or above ``max_error_rate`` [10%]  ``disrupted``
at least ``flowing_rate`` [5] actions a minute and
errors under ``max_error_rate`` [10%]                 ``flowing``
otherwise                                             ``warming``
====================================================  ==========================

Only the moves that :data:`onward.projections.lifecycle.FLOW` allows are taken: a move it does not
allow (idle straight to flowing or to disrupted) goes through ``warming`` first. Each move is
one :class:`onward.events.FlowStateChanged` (from :meth:`FlowMonitor.observe`), appended by the
engine.

While the session is ``flowing``, interruptions that can wait (not urgent, of low impact:
notices, low-impact approvals) are deferred (:meth:`FlowMonitor.defers`) and delivered at the
next task boundary.
"""

from __future__ import annotations

import msgspec

from onward.core.fields import finite, shown
from onward.events import FlowState, FlowStateChanged, UsageError
from onward.projections.flow import Rhythm, flow_trigger
from onward.projections.lifecycle import FLOW

__all__ = ["FlowMonitor", "FlowPolicy"]


class FlowPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a session's rhythm counts as flowing or disrupted, and what may wait for it.

    Attributes:
        flowing_rate: the actions per minute a session needs to be flowing.
        max_error_rate: flowing needs an error rate under this; a flowing session at or above
            it is disrupted.
        disrupted_error_rate: at or above this error rate, a session is disrupted.
        warm_actions: the actions in the window before an idle session starts warming.
        low_impacts: the impacts (compared without case or surrounding spaces) that mark an
            interruption as able to wait; "" is an impact not stated (a notice).

    Raises:
        UsageError: ``flowing_rate`` not a positive finite number, an error rate not a number
            in ``(0, 1]``, ``max_error_rate`` above ``disrupted_error_rate``, ``warm_actions``
            not an int at least 1, or ``low_impacts`` not a tuple (or list) of str (a bool is
            no number). The message names the field and the value.
    """

    flowing_rate: float = 5.0
    max_error_rate: float = 0.10
    disrupted_error_rate: float = 0.25
    warm_actions: int = 3
    low_impacts: tuple[str, ...] = ("", "low", "none")

    def __post_init__(self) -> None:
        if not (finite(self.flowing_rate) and self.flowing_rate > 0):
            raise UsageError(
                f"flow policy: flowing_rate must be a positive finite number of actions per "
                f"minute, not {shown(self.flowing_rate)}"
            )
        for field in ("max_error_rate", "disrupted_error_rate"):
            rate = getattr(self, field)
            if not (finite(rate) and 0 < rate <= 1):
                raise UsageError(f"flow policy: {field} must be in (0, 1], not {shown(rate)}")
        if self.max_error_rate > self.disrupted_error_rate:
            raise UsageError(
                f"flow policy: max_error_rate ({self.max_error_rate}) must not be above "
                f"disrupted_error_rate ({self.disrupted_error_rate})"
            )
        warm = self.warm_actions
        if not (isinstance(warm, int) and not isinstance(warm, bool) and warm >= 1):
            raise UsageError(f"flow policy: warm_actions must be an int >= 1, not {shown(warm)}")
        impacts = self.low_impacts
        if isinstance(impacts, list):
            impacts = tuple(impacts)
            msgspec.structs.force_setattr(self, "low_impacts", impacts)
        if not (isinstance(impacts, tuple) and all(isinstance(i, str) for i in impacts)):
            raise UsageError(
                f"flow policy: low_impacts must be a tuple of str (impacts such as "
                f'"low"), not {shown(impacts)}'
            )


class FlowMonitor:
    """Decides a session's flow moves from its rhythm (the table in the module doc).

    Args:
        policy: the thresholds (the defaults when None).
    """

    def __init__(self, policy: FlowPolicy | None = None) -> None:
        self.policy = policy if policy is not None else FlowPolicy()
        self._low_impacts = frozenset(impact.strip().lower() for impact in self.policy.low_impacts)

    def next_state(self, current: FlowState, rhythm: Rhythm) -> FlowState:
        """The state a session in ``current`` moves to with this rhythm.

        Args:
            current: the session's flow state.
            rhythm: its rhythm now.

        Returns:
            The next state (``current`` when it stays); a move that
            :data:`onward.projections.lifecycle.FLOW` allows.
        """
        policy = self.policy
        errors = rhythm.error_rate
        if not rhythm.actions or (
            current == FlowState.IDLE and rhythm.actions < policy.warm_actions
        ):
            target = FlowState.IDLE
        elif errors >= policy.disrupted_error_rate or (
            current == FlowState.FLOWING and errors >= policy.max_error_rate
        ):
            target = FlowState.DISRUPTED
        elif rhythm.actions_per_minute >= policy.flowing_rate and errors < policy.max_error_rate:
            target = FlowState.FLOWING
        else:
            target = FlowState.WARMING
        if target != current and not FLOW.allows(current, flow_trigger(target)):
            # Every state may move to warming, so this detour is always a legal move.
            target = FlowState.WARMING
        return target

    def observe(self, current: FlowState, rhythm: Rhythm) -> FlowStateChanged | None:
        """The event that records a session's next flow move, if it moves.

        Args:
            current: the session's flow state.
            rhythm: its rhythm now.

        Returns:
            A :class:`onward.events.FlowStateChanged` to append, or None when the state stays.
        """
        target = self.next_state(current, rhythm)
        if target == current:
            return None
        return FlowStateChanged(
            state=target,
            previous=current,
            actions_per_minute=rhythm.actions_per_minute,
            error_rate=rhythm.error_rate,
        )

    def defers(self, state: FlowState, *, urgent: bool, impact: str) -> bool:
        """Whether an interruption should wait for the flow to end.

        Args:
            state: the session's flow state.
            urgent: whether the interruption cannot wait (a deadline, a safety question).
            impact: what is at stake ("" when not stated, as for a notice).

        Returns:
            True when the session is flowing and the interruption is neither urgent nor of
            more than low impact (one of the policy's ``low_impacts``).
        """
        return (
            state == FlowState.FLOWING
            and not urgent
            and impact.strip().lower() in self._low_impacts
        )
