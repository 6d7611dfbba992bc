"""Graceful degradation at run time: failed components, their workarounds, their restoration.

The policy (which workaround comes next, what the session's level is) lives in
:mod:`onward.judgement.degradation`; this module records its plans. Inside a task, reporting a
failed component is durable like a step: a re-run returns the recorded workaround without
recording the failure again; with no workaround left, the task waits for a person.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from onward.core.batch import Batch
from onward.core.errors import ComponentUnavailable
from onward.core.run import Suspended
from onward.events import (
    ApprovalRequested,
    ComponentFailed,
    Event,
    TaskWaiting,
    WorkaroundApplied,
)
from onward.judgement.degradation import (
    Component,
    Components,
    HealthCheck,
    Workaround,
    passing_checks,
    plan_failure,
    plan_restorations,
    plan_restore,
)
from onward.projections import Projections
from onward.projections.degradation import DegradationView
from onward.runtime.interruptions import Interruptions
from onward.runtime.run import TaskRun, delegate, running_task
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
        # Per event loop: its async def tasks report failures one at a time.
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

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
        run = running_task("degrade()")
        if run is None:
            plans: list[list[Event]] = []

            def fail(projections: Projections) -> list[Event]:
                view = projections.degradation.view(session.name)
                plans[:] = [plan_failure(self.components, view, component, message=message)]
                return plans[0]

            session.catch_up()
            session.decide(fail)
            return _workaround(registered, getattr(plans[0][-1], "workaround", ""))
        index, seen = run.degradation_slot(component)
        reported = run.degradations_of(index, component)
        if seen < len(reported):
            recorded = _recorded(run, registered, *reported[seen])
            if isinstance(recorded, TaskWaiting):
                run.record([recorded])
                raise Suspended()
            return recorded
        # Planned and recorded under the session's lock: the tasks of this process report one
        # after the other, each on the state the one before left (the next rung each). Tasks
        # of other processes that report at the same moment may plan the same rung: it is
        # folded once (WorkaroundApplied.rung).
        with session.lock:
            planned = self._planned(run, component, message, index)
            if planned.applied is not None:
                run.commit(planned.batch)
                session.host.catch_up()
        if planned.applied is not None:
            reported.append((component, planned.applied.workaround, ""))
            return _workaround(registered, planned.applied.workaround)
        run.commit(_asking(run, planned))
        self._asked(planned)
        raise Suspended()

    def degrade_async(
        self, run: TaskRun, component: str, *, message: str = ""
    ) -> Coroutine[Any, Any, Workaround | None]:
        """:meth:`degrade` in an ``async def`` task: what to await (an unregistered component
        is refused at once).

        The event loop waits neither for the disk nor for a lock: the failure is planned in a
        worker thread, under the session's lock, and appended as the task's steps append
        (:meth:`TaskRun.commit_async`), so that a step of the task appending meanwhile
        finishes first. The ``async def`` tasks of one loop report one after the other, each
        on the state the one before left, as the tasks of a process's threads do.

        Raises:
            UsageError: an unregistered component.
        """
        return self._degrading(run, self.components.get(component), component, message)

    async def _degrading(
        self, run: TaskRun, registered: Component, component: str, message: str
    ) -> Workaround | None:
        # In the order the calls start, as a re-run takes them.
        index, seen = run.degradation_slot(component)
        reported = run.degradations_of(index, component)
        if seen < len(reported):
            recorded = _recorded(run, registered, *reported[seen])
            if isinstance(recorded, TaskWaiting):
                await run.wait_async([recorded])
                raise Suspended()
            return recorded
        session = self.session
        async with self._turn():
            planned = await delegate(self._planned_now, run, component, message, index)
            if planned.applied is not None:
                await run.commit_async(planned.batch)
                reported.append((component, planned.applied.workaround, ""))
                await asyncio.to_thread(session.catch_up)
                return _workaround(registered, planned.applied.workaround)
        # Out of turn: a wait is recorded once the task's steps under way have recorded their
        # outcomes, and one of them may be reporting a failure too.
        await run.wait_async(_asking(run, planned), then=lambda: self._asked(planned))
        raise Suspended()

    def _turn(self) -> asyncio.Lock:
        """The running loop's turn to report a failure (taken in the order asked for)."""
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = asyncio.Lock()
        return turn

    def _planned_now(
        self, run: TaskRun, component: str, message: str, index: int | None
    ) -> _Planned:
        """:meth:`_planned` under the session's lock (in a worker thread)."""
        with self.session.lock:
            return self._planned(run, component, message, index)

    def _planned(self, run: TaskRun, component: str, message: str, index: int | None) -> _Planned:
        """A failure's events on the session's state now, in a batch of the task's (the caller
        holds the session's lock), reported by the body of step ``index`` (None: by the
        task's own code)."""
        session = self.session
        session.host.catch_up()
        view = session.projections.degradation.view(session.name)
        events = plan_failure(self.components, view, component, message=message)
        batch = run.new_batch()
        cause: str | None = None
        for event in events:
            cause = batch.add(
                msgspec.structs.replace(event, step_index=index)
                if isinstance(event, ComponentFailed) and index is not None
                else event,
                cause,
            )
        assert cause is not None
        last = events[-1]
        applied = last if isinstance(last, WorkaroundApplied) else None
        return _Planned(batch, cause, applied, component, message)

    def _asked(self, planned: _Planned) -> None:
        """Hand the question, once recorded, to the application."""
        self.interruptions.asked(
            planned.cause,
            f"component {planned.component!r} has no workaround left",
            self.session.name,
        )

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

        The checks (calls to the services: I/O) run before the restorations are decided,
        without the session's lock when the caller holds none (a run's task boundary): the
        worker's other threads go on meanwhile. A component that changed meanwhile (a
        failure recorded by another thread or worker) is not restored on its older check.
        Once checks were called, the projections are caught up: what the caller decides next
        (a claim, the error budget's verdict) reads what was appended while they ran (a
        submission, a peer's pause).

        Returns:
            How many were restored.
        """
        session = self.session
        with session.lock:
            view = session.projections.degradation.view(session.name)
        if not view.components or all(c.state == "healthy" for c in view.components):
            return 0
        passed = passing_checks(self.components, view)
        with session.lock:
            # The checks took a while: what the log says since (a failure a peer's task met,
            # on its own stream) is read before the restorations are decided on it.
            session.host.catch_up()
            if not passed:
                return 0
            restored = session.decide(
                lambda projections: plan_restorations(
                    self.components, projections.degradation.view(session.name), passed=passed
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


@dataclass(frozen=True, slots=True)
class _Planned:
    """A reported failure, planned: its events in a batch of the task's."""

    batch: Batch
    #: The id of its last event (with no workaround left, the decision a person is asked).
    cause: str
    #: The workaround taken (None: none is left).
    applied: WorkaroundApplied | None
    component: str
    message: str


def _asking(run: TaskRun, planned: _Planned) -> Batch:
    """A failure with no workaround left: its batch, with the question to a person and the
    task's wait."""
    batch, cause, component = planned.batch, planned.cause, planned.component
    requested = batch.add(
        ApprovalRequested(
            decision_id=cause,
            subject=run.task_id,
            question=f"component {component!r} failed with no workaround left "
            f"({planned.message or 'no message'}): go on without it?",
            options=["approve", "deny"],
            impact="high",
        ),
        cause,
    )
    batch.add(TaskWaiting(reason=f"component {component} has no workaround left"), requested)
    return batch


def _recorded(
    run: TaskRun, registered: Component, component: str, workaround: str, ask: str
) -> Workaround | TaskWaiting | None:
    """A degradation the task recorded before: its workaround, the person's answer, or the
    wait to record while nobody has answered.

    Raises:
        ComponentUnavailable: the person refused to go on without it.
    """
    if workaround:
        return _workaround(registered, workaround)
    answer = run.answers.get(ask)
    if answer is None:
        return TaskWaiting(reason=f"component {component} has no workaround left")
    granted, note = answer
    if granted:
        return None
    raise ComponentUnavailable(component, note)


def _workaround(registered: Component, name: str) -> Workaround | None:
    for workaround in registered.workarounds:
        if workaround.name == name:
            return workaround
    return None
