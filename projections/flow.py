"""The flow projection: each session's working rhythm, flow state and held-back interruptions.

It folds, per session (``r.meta.session``), from any stream:

- every step outcome (:class:`onward.events.StepCompleted`, :class:`onward.events.StepFailed`, full
  or lean, each try counted) as one action: its time and whether it failed. A session keeps only the
  actions of the last :data:`WINDOW` seconds before its latest one, at most
  :data:`ACTIONS_KEPT` of them. An action stamped earlier than the latest one (by a worker
  whose clock runs behind) counts as at the latest one, and one stamped a whole window before
  it is dropped: the actions stay in time order, so the rhythm counts only the ends it trims;
- :class:`onward.events.FlowStateChanged`: the session's flow state, checked against
  :data:`onward.projections.lifecycle.FLOW`, and when it entered it;
- :class:`onward.events.InterruptionDeferred` and :class:`onward.events.InterruptionDelivered`: the
  interruptions held back and not delivered yet (the last :data:`PENDING_KEPT` of them).

:mod:`onward.judgement.flow` decides the moves from the :class:`Rhythm` this projection measures.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from onward.events import (
    FlowState,
    FlowStateChanged,
    InterruptionDeferred,
    InterruptionDelivered,
    Meta,
    Recorded,
)
from onward.projections.lifecycle import FLOW
from onward.projections.reading import FOLDED_STEP_OUTCOMES

__all__ = [
    "ACTIONS_KEPT",
    "PENDING_KEPT",
    "WINDOW",
    "Deferred",
    "FlowLedger",
    "FlowProjection",
    "Rhythm",
    "flow_trigger",
]

#: The seconds of actions the rhythm is measured over.
WINDOW = 60.0
#: The actions each session keeps at most, however many fit in the window.
ACTIONS_KEPT = 10_000
#: The deferred interruptions each session keeps pending at most (the last ones).
PENDING_KEPT = 1000

_FAILURE_TYPES = frozenset(
    kind for kind in FOLDED_STEP_OUTCOMES if kind.__struct_config__.tag == "StepFailed"
)
_TRIGGERS = {state: "to_" + state.value for state in FlowState}


def flow_trigger(state: FlowState) -> str:
    """The :data:`onward.projections.lifecycle.FLOW` trigger that enters ``state``
    ("to_flowing")."""
    return _TRIGGERS[state]


class Rhythm(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A session's working rhythm over the :data:`WINDOW` seconds up to a moment.

    Attributes:
        actions_per_minute: the actions (step tries) per minute.
        error_rate: the share of them that failed, from 0.0 to 1.0 (0.0 with no actions).
        actions: the actions in the window.
        failures: the failed ones.
    """

    actions_per_minute: float = 0.0
    error_rate: float = 0.0
    actions: int = 0
    failures: int = 0


class Deferred(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An interruption held back and not delivered yet.

    Attributes:
        interruption_id: the interruption's id.
        kind: what sort of interruption it is ("approval", "notification", ...).
        summary: what it is about, for people ("" when none).
        deferred_at: when it was held back.
    """

    interruption_id: str
    kind: str
    summary: str = ""
    deferred_at: float = 0.0


class FlowLedger(msgspec.Struct, kw_only=True, gc=False):
    """One session's flow, as a checkpoint stores it.

    Attributes:
        session: the session's name.
        state: its flow state.
        since: when it entered that state (0.0 when it never changed).
        latest: the time of its latest action (0.0 before any).
        actions: the times of its actions kept for the window, in log order.
        failed: whether each of those actions failed.
        pending: its deferred interruptions not delivered yet, in deferral order.
    """

    session: str
    state: FlowState = FlowState.IDLE
    since: float = 0.0
    latest: float = 0.0
    actions: tuple[float, ...] = ()
    failed: tuple[bool, ...] = ()
    pending: tuple[Deferred, ...] = ()


class _Flow:
    """One session's flow while folding."""

    __slots__ = ("actions", "failed", "failures", "latest", "pending", "since", "state")

    def __init__(self) -> None:
        self.state = FlowState.IDLE
        self.since = 0.0
        self.latest = 0.0
        # Two deques in step rather than one of pairs: an action then keeps the event's own
        # time object and a shared bool, and allocates nothing.
        # At most ACTIONS_KEPT of them: a longer run of actions keeps its last ones.
        self.actions: deque[float] = deque(maxlen=ACTIONS_KEPT)
        self.failed: deque[bool] = deque(maxlen=ACTIONS_KEPT)
        self.failures = 0  # sum(failed), kept as the deques change
        self.pending: dict[str, Deferred] = {}


class FlowProjection:
    """Folds step outcomes, flow moves and interruptions into one flow per session."""

    name = "flow"

    def __init__(self) -> None:
        self._flows: dict[str, _Flow] = {}
        self._fold: dict[type[Any], Callable[[Recorded, Any], None]] = {
            FlowStateChanged: self._changed,
            InterruptionDeferred: self._deferred,
            InterruptionDelivered: self._delivered,
        }
        for kind in FOLDED_STEP_OUTCOMES:  # the full events and the lean ones alike
            self._fold[kind] = self._failed if kind in _FAILURE_TYPES else self._completed

    @functools.cached_property
    def event_types(self) -> frozenset[type[Any]]:
        """The event types this projection reads (a fold may skip the others)."""
        return frozenset(self._fold)

    # -- folding ---------------------------------------------------------------------------

    def apply(self, r: Recorded) -> None:
        """Fold one event, of any stream; events the flow does not read are skipped.

        Raises:
            IllegalTransition: a :class:`onward.events.FlowStateChanged` that
                :data:`onward.projections.lifecycle.FLOW` does not allow in the session's state.
        """
        fold = self._fold.get(type(r.event))
        if fold is not None:
            fold(r, r.event)

    def _flow(self, session: str) -> _Flow:
        flow = self._flows.get(session)
        if flow is None:
            flow = self._flows[session] = _Flow()
        return flow

    def _action(self, r: Recorded, failed: bool) -> None:
        self.fold_actions(((r.meta.session, r.meta.time, failed),))

    def fold_actions(self, outcomes: Iterable[tuple[str, float, bool]]) -> None:
        """Fold step outcomes given as ``(session, time, failed)``, in log order.

        The same as :meth:`apply` on each (the host gives a page's step outcomes at once: no
        other event changes what they change).
        """
        flows = self._flows
        for session, when, failed in outcomes:
            flow = flows.get(session)
            if flow is None:
                flow = flows[session] = _Flow()
            latest = flow.latest
            if when < latest:
                if when <= latest - WINDOW:
                    continue
                at = latest
            else:
                flow.latest = latest = at = when
            actions, flags = flow.actions, flow.failed
            if len(actions) >= ACTIONS_KEPT:
                actions.popleft()
                flow.failures -= flags.popleft()
            actions.append(at)
            flags.append(failed)
            flow.failures += failed
            edge = latest - WINDOW
            while actions and actions[0] <= edge:  # edge == latest at a huge time (rounding)
                actions.popleft()
                flow.failures -= flags.popleft()

    def fold_outcomes(self, outcomes: Sequence[Meta], failures: Sequence[int]) -> None:
        """Fold step outcomes given as their envelopes, in log order, and the indexes of
        the failed ones among them.

        The same as :meth:`fold_actions`; a page of one session's outcomes stamped in time
        order (the common case) is folded at once.
        """
        first = outcomes[0].session
        times = [m.time for m in outcomes]
        flow = self._flows.get(first)
        if (
            flow is not None
            and times[0] >= flow.latest
            and [m.session for m in outcomes].count(first) == len(times)
            and times == sorted(times)
        ):
            # Each action at its own time, none dropped: they join the window at once (the
            # deques keep the last ACTIONS_KEPT), then the window drops those not newer than
            # its start: the same actions that folding each in turn would keep.
            actions, failed = flow.actions, flow.failed
            kept, count = len(actions), len(times)
            dropped = min(kept, kept + count - ACTIONS_KEPT)
            if dropped > 0:
                flow.failures -= sum(itertools.islice(failed, dropped))
            first_kept = count - ACTIONS_KEPT  # of the new ones
            flags = [False] * count
            for i in failures:
                flags[i] = True
                flow.failures += i >= first_kept
            actions.extend(times)
            failed.extend(flags)
            flow.latest = latest = times[-1]
            edge = latest - WINDOW
            while actions and actions[0] <= edge:
                actions.popleft()
                flow.failures -= failed.popleft()
            return
        failed_at = set(failures)
        self.fold_actions((m.session, m.time, i in failed_at) for i, m in enumerate(outcomes))

    def _completed(self, r: Recorded, event: Any) -> None:
        self._action(r, False)

    def _failed(self, r: Recorded, event: Any) -> None:
        self._action(r, True)

    def _changed(self, r: Recorded, event: FlowStateChanged) -> None:
        flow = self._flow(r.meta.session)
        FLOW.evolve(flow.state, flow_trigger(event.state), stream=r.stream, version=r.version)
        flow.state = event.state
        flow.since = r.meta.time

    def _deferred(self, r: Recorded, event: InterruptionDeferred) -> None:
        pending = self._flow(r.meta.session).pending
        # Deferred again: it moves to the end, as of its new deferral.
        pending.pop(event.interruption_id, None)
        pending[event.interruption_id] = Deferred(
            interruption_id=event.interruption_id,
            kind=event.kind,
            summary=event.summary,
            deferred_at=r.meta.time,
        )
        if len(pending) > PENDING_KEPT:
            del pending[next(iter(pending))]

    def _delivered(self, r: Recorded, event: InterruptionDelivered) -> None:
        flow = self._flows.get(r.meta.session)
        if flow is not None:
            flow.pending.pop(event.interruption_id, None)

    # -- reading ---------------------------------------------------------------------------

    def rhythm(self, session: str, now: float) -> Rhythm:
        """Measure a session's rhythm over ``(now - WINDOW, now]``.

        Args:
            session: the session's name.
            now: the window's end, in seconds since the epoch (from the engine's clock); the
                session's actions before its latest one minus :data:`WINDOW` are no longer
                kept, so a ``now`` earlier than that latest action may miss some.

        Returns:
            The rhythm (all zero for a session with no actions in the window).
        """
        flow = self._flows.get(session)
        if flow is None:
            return Rhythm()
        start = now - WINDOW
        times, flags = flow.actions, flow.failed
        kept, failures = len(times), flow.failures
        # The actions are in time order: trim the ones before the window, then the ones after.
        before = 0
        for time, failed in zip(times, flags, strict=True):
            if time > start:
                break
            before += 1
            failures -= failed
        after = 0
        for time, failed in zip(reversed(times), reversed(flags), strict=True):
            if after == kept - before or time <= now:
                break
            after += 1
            failures -= failed
        actions = kept - before - after
        if not actions:
            return Rhythm()
        return Rhythm(
            actions_per_minute=actions * 60.0 / WINDOW,
            error_rate=failures / actions,
            actions=actions,
            failures=failures,
        )

    def latest(self, session: str) -> float:
        """The time of a session's latest action (0.0 for none): a worker whose clock runs
        behind a peer's judges the rhythm from there, not from before the peer's actions."""
        flow = self._flows.get(session)
        return 0.0 if flow is None else flow.latest

    def state(self, session: str) -> FlowState:
        """A session's flow state (``IDLE`` for a session the log has no flow for)."""
        flow = self._flows.get(session)
        return FlowState.IDLE if flow is None else flow.state

    def since(self, session: str) -> float:
        """When a session entered its flow state (0.0 when it never changed)."""
        flow = self._flows.get(session)
        return 0.0 if flow is None else flow.since

    def pending(self, session: str) -> list[Deferred]:
        """A session's deferred interruptions not delivered yet, in deferral order."""
        flow = self._flows.get(session)
        return [] if flow is None else list(flow.pending.values())

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every session's flow."""
        return {
            session: {
                "state": flow.state.value,
                "since": flow.since,
                "latest": flow.latest,
                "actions": list(flow.actions),
                "failed": list(flow.failed),
                "pending": [msgspec.to_builtins(d) for d in flow.pending.values()],
            }
            for session, flow in sorted(self._flows.items())
        }

    def dump(self) -> list[FlowLedger]:
        """Every session's flow, for a checkpoint."""
        return [
            FlowLedger(
                session=session,
                state=flow.state,
                since=flow.since,
                latest=flow.latest,
                actions=tuple(flow.actions),
                failed=tuple(flow.failed),
                pending=tuple(flow.pending.values()),
            )
            for session, flow in self._flows.items()
        ]

    def load(self, saved: list[FlowLedger]) -> None:
        """Restore from a checkpoint's flows."""
        self._flows = {}
        for entry in saved:
            flow = self._flows[entry.session] = _Flow()
            flow.state = entry.state
            flow.since = entry.since
            flow.latest = entry.latest
            flow.actions.extend(entry.actions)
            flow.failed.extend(entry.failed)
            flow.failures = sum(flow.failed)
            flow.pending = {d.interruption_id: d for d in entry.pending}
