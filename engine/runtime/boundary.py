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
   ``pause`` (a :class:`onward.events.SessionPaused`, and the run ends;
   :meth:`onward.Engine.resume` or ``onward resume`` resumes it with a fresh window;
   reopening it does not).

Every event goes to the session's stream, each at its expected version.
"""

from __future__ import annotations

import msgspec

from onward.events import DecisionMade, Event, SessionPaused
from onward.judgement.budget import BudgetVerdict, ErrorBudget, assess, verdict_inputs
from onward.judgement.flow import FlowMonitor
from onward.projections import Projections
from onward.runtime.degradations import Degradations
from onward.runtime.interruptions import Interruptions
from onward.runtime.observer import notify
from onward.runtime.session import Session

__all__ = ["Boundary"]


class Boundary:
    """The session-level policies the run loop applies between task runs.

    Args:
        session: the session they watch.
        budget: the error budget.
        flow: the flow monitor.
        degradations: the components, restored by their health checks.
        interruptions: the interruptions deferred while the session flowed.
    """

    def __init__(
        self,
        session: Session,
        *,
        budget: ErrorBudget,
        flow: FlowMonitor,
        degradations: Degradations,
        interruptions: Interruptions,
    ) -> None:
        self.session = session
        self.budget = budget
        self.flow = flow
        self.degradations = degradations
        self.interruptions = interruptions

    def cross(self) -> BudgetVerdict:
        """Apply the policies at a task boundary. The caller holds no lock: the application's
        callbacks (health checks, ``on_interruption``) run without the session's lock, and each
        decision takes it (on the caught-up state). The observer's hook is called under it (it
        reads the projections, which no other thread folds meanwhile).

        Returns:
            The error budget's verdict (``pause``: the run should end).
        """
        self.degradations.restore_all()
        self.follow_flow()
        self.interruptions.deliver()
        verdict = self.judge_budget()
        session = self.session
        if session.observer is not None:
            with session.lock:
                notify(
                    session.observer,
                    "boundary",
                    session.name,
                    session.projections,
                    self.budget,
                    session.clock(),
                )
        return verdict

    def follow_flow(self) -> None:
        """Record the session's move to another flow state, if its rhythm says so."""
        session = self.session

        def move(projections: Projections) -> list[Event]:
            flow = projections.flow
            # Judged on the caught-up log at the latest of this clock, the last action's time
            # and when the flow entered its state: workers whose clocks differ judge alike
            # (else each saw the other's actions as in the future, or a move a peer ahead of
            # it made as not due yet, and they moved the flow back and forth without end).
            name = session.name
            now = max(session.clock(), flow.latest(name), flow.since(name))
            moved = self.flow.observe(flow.state(session.name), flow.rhythm(session.name, now))
            return [] if moved is None else [moved]

        session.decide(move)

    def judge_budget(self) -> BudgetVerdict:
        """Assess the error budget; record the verdict when its rule changed; pause on it."""
        session = self.session
        verdicts: list[BudgetVerdict] = []

        def judge(projections: Projections) -> list[Event]:
            budget = projections.budget
            now = max(session.clock(), budget.latest(session.name))  # as for the flow
            window = budget.window(session.name, now, self.budget.window)
            verdict = assess(self.budget, window)
            view = projections.sessions.sessions.get(session.name)
            if view is not None and view.state == "paused":
                # Paused (by this worker or a peer) until a person resumes it: nothing is
                # judged meanwhile (a peer's "continue" recorded under the pause made the next
                # "pause" a second SessionPaused, refused: the worker died; and resuming then
                # kept the errors from before it).
                verdicts.append(msgspec.structs.replace(verdict, choice="pause", delay=0.0))
                return []
            verdicts.append(verdict)
            if verdict.rule == (window.last_rule or "budget.within"):
                return []  # the same rule as the last verdict recorded: nothing new to say
            events: list[Event] = [
                DecisionMade(
                    kind="budget",
                    subject=session.name,
                    choice=verdict.choice,
                    rule=verdict.rule,
                    inputs={"reason": verdict.reason, **verdict_inputs(verdict)},
                    alternatives=[
                        c for c in ("continue", "slow_down", "pause") if c != verdict.choice
                    ],
                    thresholds={"limit": float(self.budget.limit), "window": self.budget.window},
                )
            ]
            if verdict.choice == "pause":
                events.append(SessionPaused(reason=f"error budget: {verdict.reason}"))
            return events

        session.decide(
            judge, first_cause=lambda projections: projections.budget.last_error(session.name)
        )
        return verdicts[-1]
