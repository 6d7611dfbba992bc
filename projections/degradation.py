"""The degradation projection: each session's failed components, their workarounds and its level.

A component (the tests, the database, the network, ...) fails; the engine replaces it with the
next workaround of its ladder, each at a declared cost in quality; when the ladder is used up
it pauses the work and asks a person; when the component is back, its workaround is dropped.
The engine decides (see :mod:`onward.judgement.degradation`); this projection folds, per session
(``r.meta.session``, whatever the stream):

- :class:`onward.events.ComponentFailed`: counts a failure. It does not change the component's state
  by itself: the engine appends it together with what it does about it (the next two events).
- :class:`onward.events.WorkaroundApplied`: the component is degraded, served by that workaround at
  the loss the event records, one rung further down its ladder.
- :class:`onward.events.DecisionMade` of kind :data:`DECISION_KIND` whose choice is
  :data:`EXHAUSTED_CHOICE` about a component (its ``subject``): the ladder is exhausted.
- :class:`onward.events.ComponentRestored`: the component is healthy again, back on the top rung.
  Restoring a component that is not degraded nor exhausted changes nothing.

How losses combine:

- A degraded component costs its current workaround's loss.
- An exhausted component costs :data:`EXHAUSTED_LOSS`, or its last workaround's loss when that
  was more: the work it stood in for is not done at all, which is at least as bad.
- The session keeps ``quality_lost = 1 - prod(1 - loss)`` over those components: each loss
  takes its share of the quality the others left, so the total never exceeds 1. It is rounded
  to :data:`LOSS_DIGITS` decimals, so that a single declared loss of 0.15 reads as 0.15 (and
  falls in the level the bounds promise), not 0.15000000000000002.
- Its level is :func:`level_for` of that.

The losses and levels carried by the events are what the engine computed when it appended
them; the projection recomputes the level from the losses by the same rule. The registry of
ladders is never consulted: a replay reads the losses the events recorded.

Memory: a session keeps one small view per component it has seen, and the components come
from the engine's registry, so nothing here needs a cap.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from onward.events import (
    ComponentFailed,
    ComponentRestored,
    DecisionMade,
    DegradationLevel,
    Recorded,
    WorkaroundApplied,
)

__all__ = [
    "DECISION_KIND",
    "EXHAUSTED_CHOICE",
    "EXHAUSTED_LOSS",
    "LEVEL_BOUNDS",
    "LOSS_DIGITS",
    "ComponentState",
    "ComponentView",
    "DegradationProjection",
    "DegradationView",
    "SessionDegradation",
    "combine_losses",
    "exhausted_loss",
    "level_for",
]

#: The loss an exhausted component counts for (unless its last workaround lost more).
EXHAUSTED_LOSS = 0.5
#: The :class:`onward.events.DecisionMade` kind of the degradation decisions.
DECISION_KIND = "degradation"
#: The choice of the decision taken when a component's ladder is exhausted.
EXHAUSTED_CHOICE = "pause the task and ask"
#: The decimals ``quality_lost`` is rounded to.
LOSS_DIGITS = 9
#: The highest quality lost of each level below full, best first; above the last: minimal.
LEVEL_BOUNDS: tuple[tuple[float, DegradationLevel], ...] = (
    (0.0, DegradationLevel.FULL),
    (0.15, DegradationLevel.MINOR),
    (0.35, DegradationLevel.MODERATE),
    (0.6, DegradationLevel.SEVERE),
)


class ComponentState(enum.StrEnum):
    """How a component stands in a session.

    ``HEALTHY``: it works (or has not failed). ``DEGRADED``: a workaround stands in for it.
    ``EXHAUSTED``: it failed and no workaround is left: the work waits for a person.
    """

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    EXHAUSTED = "exhausted"


def level_for(quality_lost: float) -> DegradationLevel:
    """The degradation level of a share of quality lost.

    ``FULL`` at 0 (or below), ``MINOR`` up to 0.15, ``MODERATE`` up to 0.35, ``SEVERE`` up to
    0.6, ``MINIMAL`` above (each bound included in the better level; see :data:`LEVEL_BOUNDS`).

    Args:
        quality_lost: the share of quality lost, from 0.0 to 1.0.

    Returns:
        The level.
    """
    for bound, level in LEVEL_BOUNDS:
        if quality_lost <= bound:
            return level
    return DegradationLevel.MINIMAL


def combine_losses(losses: Iterable[float]) -> float:
    """The quality lost by a session whose components lose these shares.

    ``1 - prod(1 - loss)``, rounded to :data:`LOSS_DIGITS` decimals; the losses are combined in
    sorted order, so any order of the same losses gives the same float.

    Args:
        losses: each degraded or exhausted component's loss, from 0.0 to 1.0.

    Returns:
        The share of quality lost, from 0.0 (none, also for no losses) to 1.0.
    """
    kept = math.prod(1.0 - loss for loss in sorted(losses))
    return round(1.0 - kept, LOSS_DIGITS)


def exhausted_loss(last: float) -> float:
    """The loss an exhausted component counts for, given its last workaround's loss.

    Args:
        last: the loss of its last workaround (0.0 when it had none).

    Returns:
        The larger of :data:`EXHAUSTED_LOSS` and ``last``.
    """
    return max(EXHAUSTED_LOSS, last)


class ComponentView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What the log says about one component in one session.

    Attributes:
        name: the component's name.
        state: healthy, degraded or exhausted.
        workaround: the workaround standing in for it; for an exhausted component the last one
            tried ("" when healthy, or when it never had one).
        quality_loss: the share of quality it costs the session now (0.0 when healthy; see
            :data:`EXHAUSTED_LOSS`).
        since: when it entered its state: its workaround applied, its ladder exhausted, or its
            restoration (0.0 when it never left healthy).
        rung: how many workarounds were applied since it last was healthy.
        failures: how many times it failed in the session.
        last_failed_at: when it last failed (0.0 before any failure).
    """

    name: str
    state: ComponentState = ComponentState.HEALTHY
    workaround: str = ""
    quality_loss: float = 0.0
    since: float = 0.0
    rung: int = 0
    failures: int = 0
    last_failed_at: float = 0.0


class DegradationView(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How degraded one session is.

    Attributes:
        level: its degradation level (:func:`level_for` of ``quality_lost``).
        quality_lost: the share of quality its degraded and exhausted components cost it.
        components: every component it has seen fail, sorted by name.
    """

    level: DegradationLevel = DegradationLevel.FULL
    quality_lost: float = 0.0
    components: tuple[ComponentView, ...] = ()


class SessionDegradation(msgspec.Struct, kw_only=True):
    """One session's components, as the projection keeps them (and a checkpoint holds them).

    Attributes:
        session: the session's name.
        quality_lost: see :attr:`DegradationView.quality_lost`.
        level: see :attr:`DegradationView.level`.
        components: every component it has seen fail, by name.
    """

    session: str
    quality_lost: float = 0.0
    level: DegradationLevel = DegradationLevel.FULL
    components: dict[str, ComponentView] = msgspec.field(default_factory=dict)


_Fold = Callable[["DegradationProjection", Recorded, Any], None]


class DegradationProjection:
    """Folds degradation events into one :class:`DegradationView` per session.

    Attributes:
        sessions: each session's components and level, by session name.
        event_types: the event types :meth:`apply` reads (it ignores every other).
    """

    name = "degradation"
    event_types: frozenset[type[Any]] = frozenset(
        {ComponentFailed, WorkaroundApplied, ComponentRestored, DecisionMade}
    )

    def __init__(self) -> None:
        self.sessions: dict[str, SessionDegradation] = {}

    # -- folding ---------------------------------------------------------------------------

    def apply(self, r: Recorded) -> None:
        """Fold one event (any other than :attr:`event_types` is ignored at once)."""
        fold = _FOLDS.get(type(r.event))
        if fold is not None:
            fold(self, r, r.event)

    def _session(self, name: str) -> SessionDegradation:
        state = self.sessions.get(name)
        if state is None:
            state = self.sessions[name] = SessionDegradation(session=name)
        return state

    def _failed(self, r: Recorded, event: ComponentFailed) -> None:
        state = self._session(r.meta.session)
        name = event.component
        view = state.components.get(name) or ComponentView(name=name)
        state.components[name] = msgspec.structs.replace(
            view, failures=view.failures + 1, last_failed_at=r.meta.time
        )

    def _applied(self, r: Recorded, event: WorkaroundApplied) -> None:
        state = self._session(r.meta.session)
        name = event.component
        view = state.components.get(name) or ComponentView(name=name)
        if event.rung and (event.rung < view.rung or view.state == ComponentState.EXHAUSTED):
            return  # decided on an earlier state (another task's report came first): past it
        state.components[name] = msgspec.structs.replace(
            view,
            state=ComponentState.DEGRADED,
            workaround=event.workaround,
            quality_loss=event.quality_loss,
            since=r.meta.time,
            rung=event.rung or view.rung + 1,
        )
        _recompute(state)

    def _decided(self, r: Recorded, event: DecisionMade) -> None:
        if event.kind != DECISION_KIND or event.choice != EXHAUSTED_CHOICE:
            return
        state = self._session(r.meta.session)
        name = event.subject
        view = state.components.get(name) or ComponentView(name=name)
        if view.state != ComponentState.EXHAUSTED:
            view = msgspec.structs.replace(
                view,
                state=ComponentState.EXHAUSTED,
                quality_loss=exhausted_loss(view.quality_loss),
                since=r.meta.time,
            )
        state.components[name] = view
        _recompute(state)

    def _restored(self, r: Recorded, event: ComponentRestored) -> None:
        state = self.sessions.get(r.meta.session)
        if state is None:
            return
        name = event.component
        view = state.components.get(name)
        if view is None or view.state == ComponentState.HEALTHY:
            return
        state.components[name] = msgspec.structs.replace(
            view,
            state=ComponentState.HEALTHY,
            workaround="",
            quality_loss=0.0,
            since=r.meta.time,
            rung=0,
        )
        _recompute(state)

    # -- reading ---------------------------------------------------------------------------

    def view(self, session: str) -> DegradationView:
        """How degraded a session is (full, with no components, when it never degraded).

        Args:
            session: the session's name.

        Returns:
            Its level, quality lost and components (sorted by name).
        """
        state = self.sessions.get(session)
        if state is None:
            return DegradationView()
        return DegradationView(
            level=state.level,
            quality_lost=state.quality_lost,
            components=tuple(v for _, v in sorted(state.components.items())),
        )

    def component(self, session: str, name: str) -> ComponentView | None:
        """One component of a session.

        Args:
            session: the session's name.
            name: the component's name.

        Returns:
            Its view, or None when it never failed in that session.
        """
        state = self.sessions.get(session)
        return None if state is None else state.components.get(name)

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every session's degradation."""
        return {name: msgspec.to_builtins(self.view(name)) for name in sorted(self.sessions)}

    def dump(self) -> list[SessionDegradation]:
        """Every session's state, for a checkpoint (msgspec-encodable)."""
        return list(self.sessions.values())

    def load(self, saved: list[SessionDegradation]) -> None:
        """Restore from a checkpoint's :meth:`dump`."""
        self.sessions = {s.session: s for s in saved}


def _recompute(state: SessionDegradation) -> None:
    """Set the session's quality lost and level from its components' losses."""
    lost = combine_losses(
        v.quality_loss for v in state.components.values() if v.state != ComponentState.HEALTHY
    )
    state.quality_lost = lost
    state.level = level_for(lost)


_FOLDS: dict[type[Any], _Fold] = {
    ComponentFailed: DegradationProjection._failed,
    WorkaroundApplied: DegradationProjection._applied,
    DecisionMade: DegradationProjection._decided,
    ComponentRestored: DegradationProjection._restored,
}
