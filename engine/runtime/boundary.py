"""What the engine does between two task runs: the session-level policies.

At each task boundary of :meth:`onward.Engine.run` (before it claims the next task):

1. **components** — every degraded component whose health check passes again is restored
   (:func:`onward.judgement.degradation.plan_restorations`);
2. **flow** — the session's rhythm over the last minute moves its flow state
   (:class:`onward.judgement.flow.FlowMonitor`), one :class:`onward.events.FlowStateChanged` per
   move;
3. **interruptions** — every interruption deferred while the session was flowing is delivered
   (:class:`onward.events.InterruptionDelivered`, then the engine's ``on_interruption`` callback);
4. **budget** — the error budget's verdict (:func:`onward.judgement.budget.assess`) is recorded as a
   :class:`onward.events.DecisionMade` of kind ``"budget"`` when its rule changes (a spent budget
   that goes on for transient noise is recorded too), caused by the session's last failed try:
   ``continue``, ``slow_down`` (the run waits ``delay`` seconds before each next task) or
   ``pause`` (a :class:`onward.events.SessionPaused`, and the run ends; reopening the
   session or :meth:`onward.Engine.resume` resumes it with a fresh window).

Every event goes to the session's stream, each at its expected version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from onward.events import DecisionMade, Event, InterruptionDelivered, SessionPaused
from onward.judgement.budget import BudgetVerdict, ErrorBudget, assess, verdict_inputs
from onward.judgement.flow import FlowMonitor

if TYPE_CHECKING:
    from onward.runtime.engine import Engine

__all__ = ["Boundary", "Interruption"]

logger = logging.getLogger("onward.engine")


class Interruption(msgspec.Struct, frozen=True, kw_only=True):
    """Something for a person's attention: a notice, or an approval request.

    Attributes:
        interruption_id: its id (an approval's is the decision's id).
        kind: "approval", "notice", ...
        summary: what it is about.
        session: the session it comes from.
        deferred_for: how long the flow monitor held it back, in seconds (0.0: not held).
    """

    interruption_id: str
    kind: str
    summary: str
    session: str
    deferred_for: float = 0.0


def log_interruption(interruption: Interruption) -> None:
    """The default ``on_interruption``: log it (a NullHandler unless the application listens)."""
    held = f" (held {interruption.deferred_for:.0f} s)" if interruption.deferred_for else ""
    logger.info("%s%s: %s", interruption.kind, held, interruption.summary)


class Boundary:
    """The session-level policies the run loop applies between task runs.

    Args:
        engine: the engine whose session they watch.
        budget: the error budget.
        flow: the flow monitor.
        on_interruption: called with each interruption delivered.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        budget: ErrorBudget,
        flow: FlowMonitor,
        on_interruption: Callable[[Interruption], None],
    ) -> None:
        self.engine = engine
        self.budget = budget
        self.flow = flow
        self.on_interruption = on_interruption

    def cross(self) -> BudgetVerdict:
        """Apply the policies at a task boundary (the caller holds the engine's lock).

        Returns:
            The error budget's verdict (``pause``: the run should end).
        """
        engine = self.engine
        engine.restore_components()
        self.follow_flow()
        self.deliver()
        return self.judge_budget()

    def follow_flow(self) -> None:
        """Record the session's move to another flow state, if its rhythm says so."""
        engine = self.engine
        projections = engine._host.projections
        session = engine.session
        current = projections.flow.state(session)
        moved = self.flow.observe(current, projections.flow.rhythm(session, engine.clock()))
        if moved is not None:
            engine._record_session([moved])
            engine._host.catch_up()

    def deliver(self) -> int:
        """Deliver the interruptions deferred while the session flowed.

        Returns:
            How many were delivered.
        """
        engine = self.engine
        held = engine._host.projections.flow.pending(engine.session)
        if not held:
            return 0
        now = engine.clock()
        delivered = [
            InterruptionDelivered(
                interruption_id=d.interruption_id, deferred_for=max(0.0, now - d.deferred_at)
            )
            for d in held
        ]
        engine._record_session(delivered, chain=False)
        engine._host.catch_up()
        for d, event in zip(held, delivered, strict=True):
            self.notify(
                Interruption(
                    interruption_id=d.interruption_id,
                    kind=d.kind,
                    summary=d.summary,
                    session=engine.session,
                    deferred_for=event.deferred_for,
                )
            )
        return len(held)

    def notify(self, interruption: Interruption) -> None:
        """Hand an interruption to the application (its callback's failure is logged only)."""
        try:
            self.on_interruption(interruption)
        except Exception:
            logger.exception("on_interruption failed for %s", interruption.interruption_id)

    def judge_budget(self) -> BudgetVerdict:
        """Assess the error budget; record the verdict when its rule changed; pause on it."""
        engine = self.engine
        projections = engine._host.projections
        session = engine.session
        window = projections.budget.window(session, engine.clock(), self.budget.window)
        verdict = assess(self.budget, window)
        if verdict.rule == (window.last_rule or "budget.within"):
            return verdict
        decision = DecisionMade(
            kind="budget",
            subject=session,
            choice=verdict.choice,
            rule=verdict.rule,
            inputs={"reason": verdict.reason, **verdict_inputs(verdict)},
            alternatives=[c for c in ("continue", "slow_down", "pause") if c != verdict.choice],
            thresholds={"limit": float(self.budget.limit), "window": self.budget.window},
        )
        events: list[Event] = [decision]
        if verdict.choice == "pause":
            events.append(SessionPaused(reason=f"error budget: {verdict.reason}"))
        engine._record_session(events, first_cause=projections.budget.last_error(session))
        engine._host.catch_up()
        return verdict
