"""The graceful-degradation part of :class:`onward.Engine`: components, their workaround
ladders, degrading and restoring them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from onward.events import (
    EventLog,
    UsageError,
)
from onward.judgement.degradation import Component, HealthCheck, Workaround
from onward.projections.degradation import DegradationView
from onward.runtime.degradations import Degradations
from onward.runtime.facade import arguments
from onward.runtime.facade.inside import Pending
from onward.runtime.run import on_event_loop, running_task
from onward.runtime.session import Session

__all__ = ["Degrading"]


class Degrading:
    """Graceful degradation: components, their workarounds, restoring them.

    A part of :class:`onward.Engine` (which sets the attributes below).
    """

    log: EventLog
    _session: Session
    _degradations: Degradations

    def component(
        self,
        name: str,
        *,
        check: HealthCheck | None = None,
        workarounds: Iterable[Workaround] = (),
        description: str = "",
    ) -> Component:
        """Register a component, or give a registered one a health check or another ladder.

        Args:
            name: its name ("search_api"; the nine defaults are "tests", "database",
                "external_api", "linting", "build", "imports", "file_io", "network" and
                "compilation").
            check: tells whether it works again; a degraded component whose check passes is
                restored at the next task boundary.
            workarounds: its ladder, best first (the registered ladder when empty).
            description: what it is.

        Raises:
            UsageError: a bad name or ladder, a check that is not a function, or a
                description that is not a str.
        """
        self.log.redactor.check_name(arguments.name(name, "component(): name"), "component name")
        if isinstance(workarounds, str) or not isinstance(workarounds, Iterable):
            raise UsageError(
                f"component {name!r}: workarounds must be an iterable of Workaround, got a "
                f"value of type {type(workarounds).__name__}"
            )
        ladder = tuple(workarounds)
        for rung in ladder:
            if not isinstance(rung, Workaround):
                raise UsageError(
                    f"component {name!r}: workarounds must be Workaround values, got a value "
                    f"of type {type(rung).__name__}"
                )
        return self._degradations.component(
            name,
            check=arguments.callback(check, f"component({name!r}): check"),
            workarounds=ladder,
            description=arguments.text(description, f"component({name!r}): description"),
        )

    def degrade(self, component: str, *, message: str = "") -> Any:
        """Report a failed component: the engine takes the next workaround of its ladder.

        Returns the workaround to use (its name says which alternative to take). Inside a task
        the report is durable like a step: a re-run returns the recorded workaround without
        recording the failure again. When no workaround is left, a decision to pause the task
        and ask is recorded and the task waits for a human; approved, this returns None (go
        on without the component); denied, it raises :class:`ComponentUnavailable`. Outside a
        task, with no workaround left, it records the decision and returns None.

        In an ``async def`` task, await it: ``used = await engine.degrade("search")`` (the
        failure is planned and recorded without blocking the loop, while the task's other
        steps append).

        Args:
            component: the component's name.
            message: how it failed.

        Returns:
            The workaround or None, or in an ``async def`` task a
            :class:`~onward.runtime.facade.inside.Pending` of it, which raises UsageError if
            used without being awaited.

        Raises:
            UsageError: an unregistered component, or a message that is not a str.
            ComponentUnavailable: a human refused to go on without it.
        """
        self._session.check_open()
        name = arguments.name(component, "degrade(): component")
        message = arguments.text(message, "degrade(): message")
        run = running_task("degrade()")
        if run is not None and on_event_loop():  # the loop must not wait for a step appending
            return Pending(
                run,
                self._degradations.degrade_async(run, name, message=message),
                f"degrade({name!r})",
            )
        return self._degradations.degrade(name, message=message)

    def restore(self, component: str) -> bool:
        """Say that a failed component works again (without its health check).

        Returns:
            Whether it was degraded (and is now restored).

        Raises:
            UsageError: an unregistered component.
        """
        self._session.check_open()
        return self._degradations.restore(arguments.name(component, "restore(): component"))

    def restore_components(self) -> int:
        """Run the health check of every failed component; restore those that pass.

        The run loop calls it at each task boundary while a component is degraded.

        Returns:
            How many were restored.
        """
        return self._degradations.restore_all()

    def degradation(self) -> DegradationView:
        """This session's degradation: its level, quality lost and failed components."""
        return self._degradations.view()

    def workaround(self, component: str) -> str | None:
        """The workaround standing in for a component now, or None when it is not degraded.

        Raises:
            UsageError: an unregistered component.
        """
        return self._degradations.workaround(arguments.name(component, "workaround(): component"))
