"""The breaker projection: each dependency's circuit breaker and the calls made to it.

A breaker is an explicit state machine on its own stream, ``breaker-<dependency>``, following
:data:`onward.projections.lifecycle.BREAKER`: closed -> open after too many failures, open ->
half-open after a cool-down, half-open -> closed when the trial calls succeed (or back to open
when one fails), half-open -> half-open when another task takes over a trial that had no outcome
within a cool-down. Only the trial task's calls count as the trial's outcome: a call that began
before the breaker half-opened tells nothing of now. The engine decides those moves; this
projection folds them, and it also folds the calls the breaker judges by: every step outcome
(:class:`onward.events.StepCompleted`, :class:`onward.events.StepFailed`, each try counted) that
names a ``dependency``.

It needs the full step-outcome events: a step outcome without a ``dependency`` (as the lean
types of :class:`onward.projections.reading.FoldReader` read it, until they keep that field) counts
for no breaker.
"""

from __future__ import annotations

from typing import Any

import msgspec

from onward.events import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    Recorded,
    UnknownEvent,
)
from onward.events.integrity import StreamDamage
from onward.projections.lifecycle import BREAKER
from onward.projections.reading import FOLDED_STEP_OUTCOMES
from onward.projections.task import TASK_PREFIX

__all__ = [
    "BREAKER_PREFIX",
    "RECENT_LIMIT",
    "TRANSITIONS_LIMIT",
    "BreakerProjection",
    "BreakerTransition",
    "BreakerView",
    "breaker_stream",
]

#: Every breaker's stream is ``breaker-<dependency>``.
BREAKER_PREFIX = "breaker-"
#: The outcomes each breaker keeps for its failure rate (the last ones).
RECENT_LIMIT = 20
#: The transitions each breaker keeps (the last ones).
TRANSITIONS_LIMIT = 20

_SUCCESS_TYPES = frozenset(
    kind for kind in FOLDED_STEP_OUTCOMES if kind.__struct_config__.tag == "StepCompleted"
)


def breaker_stream(dependency: str) -> str:
    """The stream of a dependency's breaker."""
    return BREAKER_PREFIX + dependency


class BreakerTransition(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One move of a breaker.

    Attributes:
        position: the event's position in the log.
        time: the event's time.
        source: the state it left ("new" for a breaker's first event).
        dest: the state it entered.
    """

    position: int
    time: float
    source: str
    dest: str


class BreakerView(msgspec.Struct, kw_only=True, gc=False):
    """What the log says about one dependency's breaker and the calls made to it.

    Attributes:
        dependency: the dependency it guards.
        state: "closed", "open" or "half_open" ("closed" when it never opened); "damaged"
            when its stream's history cannot be trusted (see ``damage``): it guards nothing
            then, and no transition of it is folded.
        version: its stream's version (0 when it has none yet).
        calls: every call (step try) recorded against the dependency.
        failures: how many of those failed.
        consecutive_failures: the failures since the last success or the last closing.
        recent: the last :data:`RECENT_LIMIT` outcomes since the last closing, oldest first
            (True for a success).
        last_failure_at: the time of the last failure (0.0 before any).
        last_failure_id: the event id of the last failure's ``StepFailed`` ("" before any):
            what a breaker opened at a later call answers (its decision's cause).
        opened_at: when it last opened (0.0 if it never did).
        cooldown_until: when that opening's cool-down ends (0.0 if it never opened).
        trial_calls: how many trial calls its half-open state lets through (0 unless
            half-open).
        trial_successes: the calls that succeeded since it last half-opened (0 unless
            half-open).
        trial_failures: the calls that failed since it last half-opened (0 unless half-open).
        trial_task: the task whose call is the half-open trial ("" unless half-open, or when
            an earlier onward half-opened it).
        half_opened_at: when it last half-opened (0.0 if it never did).
        history: its last :data:`TRANSITIONS_LIMIT` transitions, oldest first.
        unknown_events: events of types this onward does not know in its stream.
        damage: why its stream's history cannot be trusted ("" when it can).
    """

    dependency: str
    state: str = "closed"
    version: int = 0
    calls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    recent: tuple[bool, ...] = ()
    last_failure_at: float = 0.0
    last_failure_id: str = ""
    opened_at: float = 0.0
    cooldown_until: float = 0.0
    trial_calls: int = 0
    trial_successes: int = 0
    trial_failures: int = 0
    trial_task: str = ""
    half_opened_at: float = 0.0
    history: tuple[BreakerTransition, ...] = ()
    unknown_events: int = 0
    damage: str = ""

    @property
    def failure_rate(self) -> float:
        """The share of :attr:`recent` outcomes that failed (0.0 when there are none)."""
        recent = self.recent
        return recent.count(False) / len(recent) if recent else 0.0


class BreakerProjection:
    """Folds breaker streams and step outcomes into one :class:`BreakerView` per dependency.

    Attributes:
        breakers: every breaker's view, by dependency.
    """

    name = "breakers"

    def __init__(self) -> None:
        self.breakers: dict[str, BreakerView] = {}

    # -- folding ---------------------------------------------------------------------------

    def apply(self, r: Recorded) -> None:
        """Fold one event: a breaker stream's event, or a step outcome naming a dependency.

        Raises:
            IllegalTransition: a breaker stream holds an event that :data:`BREAKER` does not
                allow in the breaker's current state (unless the stream holds events of a
                newer onward, after which its state may be stale).
        """
        event = r.event
        kind = type(event)
        if kind in FOLDED_STEP_OUTCOMES:
            dependency = getattr(event, "dependency", "")
            if dependency:
                self._call(r, dependency, ok=kind in _SUCCESS_TYPES)
            return
        if r.stream.startswith(BREAKER_PREFIX):
            self._move(r)

    def _view(self, dependency: str) -> BreakerView:
        view = self.breakers.get(dependency)
        if view is None:
            view = self.breakers[dependency] = BreakerView(dependency=dependency)
        return view

    def _call(self, r: Recorded, dependency: str, *, ok: bool) -> None:
        view = self._view(dependency)
        view.calls += 1
        recent = view.recent
        if len(recent) >= RECENT_LIMIT:
            recent = recent[len(recent) - RECENT_LIMIT + 1 :]
        view.recent = (*recent, ok)
        # The trial's outcome is the trial task's call's ("": a log of an earlier onward).
        half_open = view.state == "half_open" and (
            not view.trial_task or r.stream == TASK_PREFIX + view.trial_task
        )
        if ok:
            view.consecutive_failures = 0
            if half_open:
                view.trial_successes += 1
        else:
            view.failures += 1
            view.consecutive_failures += 1
            view.last_failure_at = r.meta.time
            view.last_failure_id = r.meta.event_id
            if half_open:
                view.trial_failures += 1

    def _move(self, r: Recorded) -> None:
        view = self._view(r.stream[len(BREAKER_PREFIX) :])
        event = r.event
        if isinstance(event, UnknownEvent):
            view.unknown_events += 1
            view.version = r.version
            return
        tag = event.__struct_config__.tag
        assert isinstance(tag, str)
        before = view.state if view.history else BREAKER.initial
        after = BREAKER.table.get((before, tag))
        if after is None:
            if view.unknown_events:
                # After an event of a newer kind the state may be stale: read on, do not judge.
                view.version = r.version
                return
            BREAKER.evolve(before, tag, stream=r.stream, version=r.version)  # raises
            return
        history = view.history
        if len(history) >= TRANSITIONS_LIMIT:
            history = history[len(history) - TRANSITIONS_LIMIT + 1 :]
        view.history = (*history, BreakerTransition(r.position, r.meta.time, before, after))
        view.state = after
        view.trial_calls = view.trial_successes = view.trial_failures = 0
        view.trial_task = ""
        if isinstance(event, BreakerOpened):
            view.opened_at = r.meta.time
            view.cooldown_until = event.cooldown_until
        elif isinstance(event, BreakerHalfOpened):
            view.trial_calls = event.trial_calls
            view.trial_task = event.trial_task
            view.half_opened_at = r.meta.time
        elif isinstance(event, BreakerClosed):
            # A closed breaker judges the calls made from now on, not the ones that opened it.
            view.consecutive_failures = 0
            view.recent = ()
        # The version last: a worker thread that reads the version before the state (to
        # append the next transition at it) never pairs a new version with an old state.
        view.version = r.version

    def damage(self, dependency: str, damage: StreamDamage) -> None:
        """Mark a breaker whose stream's history cannot be trusted (the folds skip its later
        transitions; the calls to its dependency still count).

        Args:
            dependency: the dependency it guards.
            damage: its stream's first bad record and what is wrong with it.
        """
        view = self._view(dependency)
        view.state = "damaged"
        view.damage = str(damage)

    # -- reading ---------------------------------------------------------------------------

    def get(self, dependency: str) -> BreakerView:
        """The breaker of a dependency (a closed one, not stored, when the log has none)."""
        view = self.breakers.get(dependency)
        return BreakerView(dependency=dependency) if view is None else view

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every breaker (with its failure rate)."""
        picture: dict[str, Any] = {}
        for key, view in sorted(self.breakers.items()):
            plain = msgspec.to_builtins(view)
            plain["failure_rate"] = view.failure_rate
            picture[key] = plain
        return picture

    def dump(self) -> list[BreakerView]:
        """Every breaker view, for a checkpoint."""
        return list(self.breakers.values())

    def load(self, views: list[BreakerView]) -> None:
        """Restore from a checkpoint's breaker views."""
        self.breakers = {v.dependency: v for v in views}
