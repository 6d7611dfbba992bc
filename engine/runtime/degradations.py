"""Graceful degradation at run time: failed components, their workarounds, their restoration.

The policy (which workaround comes next, what the session's level is) lives in
:mod:`onward.judgement.degradation`; this module records its plans. Inside a task, reporting a
failed component is durable like a step: a re-run returns the recorded workaround without
recording the failure again; with no workaround left, the task waits for a person.
"""

from __future__ import annotations

from collections.abc import Iterable

from onward.core.errors import ComponentUnavailable
from onward.core.run import Suspended
from onward.events import ApprovalRequested, Event, TaskWaiting, WorkaroundApplied
from onward.judgement.degradation import (
    Component,
    Components,
    HealthCheck,
    Workaround,
    plan_failure,
    plan_restorations,
    plan_restore,
)
from onward.projections import Projections
from onward.projections.degradation import DegradationView
from onward.runtime.interruptions import Interruptions
from onward.runtime.run import CURRENT_RUN, TaskRun
from onward.runtime.session import Session

__all__ = ["Degradations"]


class Degradations:
    """A session's components: their failures, workarounds and restorations, as events.

    Args:
        session: the session.
        components: the components and their workaround ladders.
        interruptions: who asks a person when no workaround is left.
    """

    def __init__(
        self, session: Session, components: Components, interruptions: Interruptions
    ) -> None:
        self.session = session
        self.components = components
        self.interruptions = interruptions

    def component(
        self,
        name: str,
        *,
        check: HealthCheck | None = None,
        workarounds: Iterable[Workaround] = (),
        description: str = "",
    ) -> Component:
        """Register a component, or give a registered one a health check or another ladder
        (see :meth:`onward.Engine.component`)."""
        return self.components.register(
            name, check=check, workarounds=tuple(workarounds), description=description
        )

    def degrade(self, component: str, *, message: str = "") -> Workaround | None:
        """Report a failed component and take the next workaround of its ladder (see
        :meth:`onward.Engine.degrade`).

        Raises:
            UsageError: an unregistered component.
            ComponentUnavailable: a human refused to go on without it.
            Suspended: inside a task, no workaround is left: the task waits for a person.
        """
        session = self.session
        registered = self.components.get(component)
        run = CURRENT_RUN.get()
        if run is not None:
            seen = run.degrade_calls
            run.degrade_calls += 1
            if seen < len(run.degradations):
                return self._recorded(run, registered, *run.degradations[seen])
        if run is None:
            plans: list[list[Event]] = []

            def fail(projections: Projections) -> list[Event]:
                view = projections.degradation.view(session.name)
                plans[:] = [plan_failure(self.components, view, component, message=message)]
                return plans[0]

            session.catch_up()
            session.decide(fail)
            return _workaround(registered, getattr(plans[0][-1], "workaround", ""))
        # Planned and recorded under the session's lock: the tasks of this process report one
        # after the other, each on the state the one before left (the next rung each). Tasks
        # of other processes that report at the same moment may plan the same rung: it is
        # folded once (WorkaroundApplied.rung).
        with session.lock:
            session.host.catch_up()
            view = session.projections.degradation.view(session.name)
            planned = plan_failure(self.components, view, component, message=message)
            batch = run.new_batch()
            cause: str | None = None
            for event in planned:
                cause = batch.add(event, cause)
            applied = planned[-1]
            if isinstance(applied, WorkaroundApplied):
                run.commit(batch)
                session.host.catch_up()
        if isinstance(applied, WorkaroundApplied):
            run.degradations.append((component, applied.workaround, ""))
            return _workaround(registered, applied.workaround)
        assert cause is not None
        requested = batch.add(
            ApprovalRequested(
                decision_id=cause,
                subject=run.task_id,
                question=f"component {component!r} failed with no workaround left "
                f"({message or 'no message'}): go on without it?",
                options=["approve", "deny"],
                impact="high",
            ),
            cause,
        )
        batch.add(TaskWaiting(reason=f"component {component} has no workaround left"), requested)
        run.commit(batch)
        self.interruptions.asked(
            cause, f"component {component!r} has no workaround left", session.name
        )
        raise Suspended()

    @staticmethod
    def _recorded(
        run: TaskRun, registered: Component, component: str, workaround: str, ask: str
    ) -> Workaround | None:
        """A degradation this task recorded before: its workaround, or the person's answer."""
        if workaround:
            return _workaround(registered, workaround)
        answer = run.answers.get(ask)
        if answer is None:  # nobody answered yet: wait again
            run.record([TaskWaiting(reason=f"component {component} has no workaround left")])
            raise Suspended()
        granted, note = answer
        if granted:
            return None
        raise ComponentUnavailable(component, note)

    def restore(self, component: str) -> bool:
        """Say that a failed component works again (without its health check).

        Returns:
            Whether it was degraded (and is now restored).

        Raises:
            UsageError: an unregistered component.
        """
        session = self.session
        self.components.get(component)
        session.catch_up()
        restored = session.decide(
            lambda projections: plan_restore(
                self.components, projections.degradation.view(session.name), component
            )
        )
        return bool(restored)

    def restore_all(self) -> int:
        """Run the health check of every failed component; restore those that pass.

        Returns:
            How many were restored.
        """
        session = self.session
        view = session.projections.degradation.view(session.name)
        if not view.components or all(c.state == "healthy" for c in view.components):
            return 0
        restored = session.decide(
            lambda projections: plan_restorations(
                self.components, projections.degradation.view(session.name)
            ),
            chain=False,
        )
        return len(restored)

    def view(self) -> DegradationView:
        """The session's degradation: its level, quality lost and failed components."""
        session = self.session
        return session.catch_up().degradation.view(session.name)

    def workaround(self, component: str) -> str | None:
        """The workaround standing in for a component now, or None when it is not degraded.

        Raises:
            UsageError: an unregistered component.
        """
        self.components.get(component)
        session = self.session
        view = session.catch_up().degradation.component(session.name, component)
        if view is None or view.state != "degraded":
            return None
        return view.workaround or None


def _workaround(registered: Component, name: str) -> Workaround | None:
    for workaround in registered.workarounds:
        if workaround.name == name:
            return workaround
    return None
