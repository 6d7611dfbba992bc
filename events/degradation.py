"""Events of graceful degradation: a failing component, its workaround, its recovery."""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event
from onward.events.kinds import DegradationLevel

__all__ = ["ComponentFailed", "ComponentRestored", "WorkaroundApplied"]


class ComponentFailed(Event, frozen=True, kw_only=True):
    """A component the work depends on failed its health check.

    Attributes:
        component: the component's name (a search index, a model, a tool).
        check: the health check that failed ("" when it failed in use).
        message: how it failed.
        step_index: reported by the body of this step of its task (None: by the task's own
            code, or outside a task): a re-run gives each call its recorded workaround.
    """

    family: ClassVar[str] = "degradation"

    component: str
    check: str = ""
    message: str = ""
    step_index: int | None = None


class WorkaroundApplied(Event, frozen=True, kw_only=True):
    """A degraded alternative replaced a failed component, at a cost in quality.

    Attributes:
        component: the component it stands in for.
        workaround: the workaround's registered name.
        quality_loss: the share of quality lost, from 0.0 (none) to 1.0 (all).
        level: the session's degradation level once it is applied.
        rung: its place on the component's ladder, from 1 (0 in logs of an earlier onward):
            two reports of one failure decided on the same state take the same rung.
    """

    family: ClassVar[str] = "degradation"

    component: str
    workaround: str
    quality_loss: float = 0.0
    level: DegradationLevel
    rung: int = 0


class ComponentRestored(Event, frozen=True, kw_only=True):
    """A failed component passed its health check again; its workaround is dropped.

    Attributes:
        component: the component's name.
        quality_regained: the share of quality regained, from 0.0 to 1.0.
        level: the session's degradation level once it is restored.
    """

    family: ClassVar[str] = "degradation"

    component: str
    quality_regained: float = 0.0
    level: DegradationLevel
