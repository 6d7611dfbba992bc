"""Lifecycles as data: each flow type's states and transitions, defined once.

From one :class:`Lifecycle` come both the pure ``evolve(state, tag)`` table lookup that the
projections fold with (live and in replay), and — in :mod:`onward.core.machines` — the shared
``transitions`` Machine that validates a decision before it is appended and draws the diagram.

An event that the table does not allow in the current state is a corrupt or foreign history:
:meth:`Lifecycle.evolve` raises :class:`IllegalTransition` naming the stream, version and
states, and the projections mark that stream damaged (its task, session or breaker unusable)
while every other stream folds on.
"""

from __future__ import annotations

import msgspec

from onward.events import LogDamaged, OnwardError

__all__ = [
    "BREAKER",
    "FLOW",
    "SESSION",
    "TASK",
    "IllegalTransition",
    "Lifecycle",
    "Transition",
]


class IllegalTransition(LogDamaged, ValueError):
    """An event that its lifecycle does not allow in the current state.

    Attributes:
        lifecycle: the lifecycle's name ("task", "session", ...).
        stream: the stream, when known.
        version: the event's version in it, when known.
        state: the state the stream was in.
        trigger: the event's tag.
    """

    def __init__(
        self, lifecycle: str, state: str, trigger: str, *, stream: str = "", version: int = 0
    ) -> None:
        where = f" (stream {stream!r}, version {version})" if stream else ""
        super().__init__(
            f"{lifecycle} lifecycle: {trigger} is not allowed in state {state!r}{where}"
        )
        self.lifecycle = lifecycle
        self.stream = stream
        self.version = version
        self.state = state
        self.trigger = trigger


class Transition(msgspec.Struct, frozen=True):
    """One allowed transition: on ``trigger`` (an event tag), from each of ``sources`` to ``dest``.

    ``dest`` None means the state does not change (an event that records progress).
    """

    trigger: str
    sources: tuple[str, ...]
    dest: str | None = None


class Lifecycle:
    """A state machine defined as data.

    Args:
        name: what it is the lifecycle of ("task").
        states: every state, the initial one first.
        transitions: the allowed transitions.
        terminal: the states nothing leaves.
        initial: the state before the first event (a pseudo-state, "new" by default).
    """

    def __init__(
        self,
        name: str,
        states: tuple[str, ...],
        transitions: tuple[Transition, ...],
        *,
        terminal: tuple[str, ...] = (),
        initial: str = "new",
    ) -> None:
        self.name = name
        self.states = states
        self.transitions = transitions
        self.terminal = frozenset(terminal)
        self.initial = initial
        known = {initial, *states}
        table: dict[tuple[str, str], str] = {}
        for t in transitions:
            for source in t.sources:
                if source not in known or (t.dest is not None and t.dest not in known):
                    raise OnwardError(f"{name} lifecycle: unknown state in {t}")
                table[(source, t.trigger)] = t.dest if t.dest is not None else source
        self.table = table
        self.triggers = frozenset(t.trigger for t in transitions)

    def allows(self, state: str, trigger: str) -> bool:
        """Whether ``trigger`` may happen in ``state``."""
        return (state, trigger) in self.table

    def evolve(self, state: str, trigger: str, *, stream: str = "", version: int = 0) -> str:
        """The state after ``trigger`` happens in ``state``.

        Raises:
            IllegalTransition: the lifecycle does not allow it.
        """
        try:
            return self.table[(state, trigger)]
        except KeyError:
            raise IllegalTransition(
                self.name, state, trigger, stream=stream, version=version
            ) from None


_WORKING = (
    "StepStarted",
    "StepWithdrawn",
    "StepCompleted",
    "StepFailed",
    "ErrorObserved",
    "ErrorClassified",
    "FixAttempted",
    "FixSucceeded",
    "FixFailed",
    "DecisionMade",
    "TaskProgressed",
    "WorkaroundApplied",
    "ComponentFailed",
    "ComponentRestored",
    "ActionChecked",
    "ActionUndone",
    "ThresholdsAdjusted",
    "InterruptionDeferred",
    "InterruptionDelivered",
    "PatchMarked",
    "MessageReceived",
    "SubtasksRead",
    "StateSet",
)

#: A task: queued until claimed, running until it ends or waits, waiting until its condition
#: holds and a worker claims it again. A task no worker has a function for waits, unregistered,
#: until one has. A failed, cancelled or missed task may be retried (queued again). A person may
#: quarantine it (set it aside for good) from any state that has not ended; the projections also
#: fold a ``TaskQuarantined`` in a stream whose history is damaged, whatever state it was in.
TASK = Lifecycle(
    "task",
    (
        "queued",
        "running",
        "waiting",
        "unregistered",
        "succeeded",
        "failed",
        "cancelled",
        "missed",
        "quarantined",
    ),
    (
        Transition("TaskSubmitted", ("new",), "queued"),
        Transition("TaskReprioritised", ("queued", "waiting", "unregistered")),
        Transition("TaskUnregistered", ("queued", "waiting"), "unregistered"),
        Transition("TaskClaimed", ("queued", "waiting", "unregistered"), "running"),
        Transition("TaskLeaseExpired", ("running",), "queued"),
        Transition("TaskReleased", ("running",), "queued"),
        *(Transition(tag, ("running",)) for tag in _WORKING if tag != "StepCompleted"),
        # A step under way when its task was cancelled: its run records the step's success
        # after the cancellation (a retry replays it).
        Transition("StepCompleted", ("running", "cancelled")),
        Transition("RetryScheduled", ("running",)),
        Transition("ApprovalRequested", ("running",)),
        # A request asked again by a retry is answered whenever the task has not ended:
        # queued again, or run again before it reaches the action.
        Transition("ApprovalGranted", ("queued", "waiting", "running", "unregistered")),
        Transition("ApprovalDenied", ("queued", "waiting", "running", "unregistered")),
        Transition("TaskWaiting", ("running",), "waiting"),
        Transition("TaskSucceeded", ("running",), "succeeded"),
        Transition("TaskFailed", ("running", "waiting", "unregistered"), "failed"),
        Transition("TaskCancelled", ("queued", "running", "waiting", "unregistered"), "cancelled"),
        Transition("TaskDeadlineMissed", ("queued", "waiting", "unregistered"), "missed"),
        Transition(
            "TaskQuarantined", ("queued", "running", "waiting", "unregistered"), "quarantined"
        ),
        Transition("TaskRetried", ("failed", "cancelled", "missed"), "queued"),
    ),
    terminal=("succeeded", "failed", "cancelled", "missed", "quarantined"),
)

#: A session: active from its start, paused and resumed, ended (and resumed again if reopened).
SESSION = Lifecycle(
    "session",
    ("active", "paused", "ended"),
    (
        Transition("SessionStarted", ("new",), "active"),
        Transition("SessionPaused", ("active",), "paused"),
        Transition("SessionResumed", ("active", "paused", "ended"), "active"),
        Transition("SessionEnded", ("active", "paused"), "ended"),
        Transition("DecisionMade", ("active", "paused")),
        Transition("ThresholdsAdjusted", ("active", "paused")),
        Transition("FlowStateChanged", ("active", "paused")),
        Transition("InterruptionDeferred", ("active", "paused")),
        Transition("InterruptionDelivered", ("active", "paused")),
        Transition("FixLearned", ("active", "paused", "ended")),
        Transition("ComponentFailed", ("active", "paused")),
        Transition("WorkaroundApplied", ("active", "paused")),
        Transition("ComponentRestored", ("active", "paused", "ended")),
    ),
)

#: A circuit breaker on one dependency: closed, open after failures, half-open after a cool-down.
BREAKER = Lifecycle(
    "breaker",
    ("closed", "open", "half_open"),
    (
        Transition("BreakerOpened", ("new", "closed", "half_open"), "open"),
        # From half-open: a trial that had no outcome within a cool-down is taken over.
        Transition("BreakerHalfOpened", ("open", "half_open"), "half_open"),
        Transition("BreakerClosed", ("half_open", "open"), "closed"),
    ),
)

#: A session's working rhythm. Every move is one :class:`onward.events.FlowStateChanged`; its
#: trigger names the state it enters (``to_flowing``: see
#: :func:`onward.projections.flow.flow_trigger`), so the diagram reads as the moves. Idle work
#: warms up before it flows or is disrupted.
FLOW = Lifecycle(
    "flow",
    ("idle", "warming", "flowing", "disrupted"),
    (
        Transition("to_warming", ("idle", "flowing", "disrupted"), "warming"),
        Transition("to_flowing", ("warming", "disrupted"), "flowing"),
        Transition("to_disrupted", ("warming", "flowing"), "disrupted"),
        Transition("to_idle", ("warming", "flowing", "disrupted"), "idle"),
    ),
    initial="idle",
)
