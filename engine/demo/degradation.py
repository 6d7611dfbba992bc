"""How the run degraded and recovered: the parent's read-only fold of the session's component
failures, workarounds and restorations (part of ``onward demo``).

The worker reports the index service down once its breaker opens (``engine.degrade``); the
engine answers with the workaround of its ladder (:class:`onward.events.WorkaroundApplied`, the
session's level with it) and restores it at the task boundary where its health check passes
again (:class:`onward.events.ComponentRestored`). :class:`DegradationFold` keeps those facts of one
session (feed it every record of the log, in order); :meth:`DegradationFold.story` tells them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from onward.demo.tasks import BACKUP_STEP
from onward.events import (
    ComponentFailed,
    ComponentRestored,
    DegradationLevel,
    Recorded,
    StepCompleted,
    WorkaroundApplied,
)

__all__ = ["Degradation", "DegradationFold", "LevelMove", "degradation_rows"]


class LevelMove(msgspec.Struct, frozen=True, kw_only=True):
    """The session's degradation level moved.

    Attributes:
        at: seconds since the run began.
        level: the level it moved to ("full", "minor", "moderate", "severe", "minimal").
        component: the component whose failure or restoration moved it.
        why: what happened.
    """

    at: float
    level: str
    component: str
    why: str


class Degradation(msgspec.Struct, frozen=True, kw_only=True):
    """How the run degraded and recovered.

    Attributes:
        failures: the components' failures reported (``engine.degrade``).
        workarounds: each workaround applied, by name, with how often.
        quality_loss: the most quality the session lost at once (0.0: never degraded).
        filed: the tasks that filed their totals with the workaround.
        restorations: the components restored by their health check.
        seconds_degraded: how long the session was degraded in all.
        moves: the level's moves, in order (the run starts at "full").
        level: the level at the end of the run.
    """

    failures: int
    workarounds: dict[str, int]
    quality_loss: float
    filed: int
    restorations: int
    seconds_degraded: float
    moves: list[LevelMove]
    level: str


class DegradationFold:
    """Folds one session's degradation (feed it every record of the log, in order).

    Args:
        session: the session of the run.
    """

    def __init__(self, session: str) -> None:
        self.session = session
        self.started: float | None = None
        self.failures = 0
        self.workarounds: dict[str, int] = {}
        self.quality_loss = 0.0
        self.filed = 0
        self.restorations = 0
        self.moves: list[LevelMove] = []
        self.level = DegradationLevel.FULL.value
        self.degraded_since: float | None = None
        self.degraded_for = 0.0
        self._failure = ""

    def apply(self, r: Recorded) -> None:
        """Fold one record."""
        if r.meta.session != self.session:
            return
        if self.started is None:
            self.started = r.meta.time
        event: Any = r.event
        if isinstance(event, ComponentFailed):
            self.failures += 1
            self._failure = event.message
        elif isinstance(event, WorkaroundApplied):
            name = event.workaround
            self.workarounds[name] = self.workarounds.get(name, 0) + 1
            self.quality_loss = max(self.quality_loss, event.quality_loss)
            why = f"{event.component} failed ({self._failure or 'no message'}): {name} stands in"
            self._move(r, event.level, event.component, f"{why}, losing {event.quality_loss:.0%}")
        elif isinstance(event, ComponentRestored):
            self.restorations += 1
            why = (
                f"{event.component} restored: its health check passed at a task boundary, "
                f"regaining {event.quality_regained:.0%}"
            )
            self._move(r, event.level, event.component, why)
        elif isinstance(event, StepCompleted) and event.name == BACKUP_STEP:
            self.filed += 1

    def _move(self, r: Recorded, level: DegradationLevel, component: str, why: str) -> None:
        now = r.meta.time
        if self.degraded_since is not None:
            self.degraded_for += now - self.degraded_since
        self.degraded_since = None if level == DegradationLevel.FULL else now
        self.level = level.value
        at = round(now - (self.started or now), 2)
        self.moves.append(LevelMove(at=at, level=level.value, component=component, why=why))

    def story(self) -> Degradation:
        """The session's degradation, as folded so far."""
        return Degradation(
            failures=self.failures,
            workarounds=dict(self.workarounds),
            quality_loss=self.quality_loss,
            filed=self.filed,
            restorations=self.restorations,
            seconds_degraded=round(self.degraded_for, 2),
            moves=list(self.moves),
            level=self.level,
        )


def degradation_rows(d: Degradation) -> list[tuple[str, str]]:
    """The report's lines about degradation: (heading, text) pairs."""
    if not d.failures:
        return [("degradation", "none: every component stayed healthy")]
    used = ", ".join(d.workarounds) or "no workaround"
    state = "back to full" if d.level == DegradationLevel.FULL.value else f"still {d.level}"
    rows = [
        (
            "degradation",
            f"{d.failures} component failure{'s' if d.failures != 1 else ''} reported; {used} "
            f"stood in for {d.seconds_degraded:.2f} s ({d.filed} task"
            f"{'s' if d.filed != 1 else ''} filed with it); {d.restorations} restored; "
            f"{state} at the end",
        )
    ]
    previous = DegradationLevel.FULL.value
    for m in d.moves:
        rows.append(("", f"  {m.at:6.2f} s  {previous:>7} -> {m.level:<8} {m.why}"))
        previous = m.level
    return rows
