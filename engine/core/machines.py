"""The shared ``transitions`` Machines built from the lifecycles in
:mod:`onward.projections.lifecycle`.

One Machine per lifecycle, never one per task (a Machine costs 100-280 µs and tens of KB; a
table lookup under a microsecond). The engine asks :func:`validate` before it appends a decision
that changes a lifecycle's state; :func:`diagram` draws a lifecycle as Mermaid.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from transitions import Machine

from onward.core.errors import InvalidTransition
from onward.events import AppendResult, Context, Event, EventLog, UsageError
from onward.projections.lifecycle import BREAKER, FLOW, SESSION, TASK, Lifecycle

__all__ = ["LIFECYCLES", "diagram", "transition", "validate"]

#: The lifecycles by name.
LIFECYCLES: dict[str, Lifecycle] = {
    "task": TASK,
    "session": SESSION,
    "breaker": BREAKER,
    "flow": FLOW,
}


def _definition(lifecycle: Lifecycle) -> dict[str, Any]:
    return {
        "states": [lifecycle.initial, *lifecycle.states],
        "transitions": [
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for t in lifecycle.transitions
        ],
        "initial": lifecycle.initial,
        "auto_transitions": False,
    }


def _lifecycle(name: str) -> Lifecycle:
    """The lifecycle of that name.

    Raises:
        UsageError: there is none.
    """
    found = LIFECYCLES.get(name) if isinstance(name, str) else None
    if found is None:
        raise UsageError(f"no lifecycle {name!r} (the lifecycles: {', '.join(LIFECYCLES)})")
    return found


def _machine(name: str) -> Machine:
    _lifecycle(name)  # a name that is no lifecycle (or no str) is refused before the cache
    return _built(name)


@cache
def _built(name: str) -> Machine:
    return Machine(model=None, **_definition(_lifecycle(name)))


def validate(lifecycle: str, subject: str, state: str, trigger: str) -> None:
    """Check that ``trigger`` may happen in ``state``, before anything is appended.

    Args:
        lifecycle: "task", "session" or "breaker".
        subject: the task id, session or breaker name (for the message).
        state: the current state.
        trigger: the event tag about to be appended.

    Raises:
        InvalidTransition: the lifecycle does not allow it.
        UsageError: no lifecycle of that name.
    """
    if not _machine(lifecycle).get_transitions(trigger=trigger, source=state):
        raise InvalidTransition(lifecycle, subject, state, trigger)


def transition(
    log: EventLog,
    lifecycle: str,
    subject: str,
    stream: str,
    state: str,
    version: int,
    event: Event,
    context: Context,
    *,
    wakes: bool = False,
) -> AppendResult:
    """Validate a lifecycle trigger, then append it at the stream's expected version.

    Args:
        log: the log.
        lifecycle: "task", "session" or "breaker".
        subject: the task id, session or breaker name (for messages).
        stream: its stream.
        state: its current state (from the projections).
        version: its stream's current version.
        event: the trigger.
        context: the envelope fields.
        wakes: wake the log's watchers whatever the event's kind (see
            :attr:`onward.events.Append.wakes`).

    Raises:
        InvalidTransition: the lifecycle does not allow it; nothing was appended.
        VersionConflict: the stream moved on since ``version``.
    """
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    validate(lifecycle, subject, state, tag)
    return log.append(stream, [event], expected_version=version, context=context, wakes=wakes)


def diagram(lifecycle: str) -> str:
    """The lifecycle as a Mermaid state diagram.

    Raises:
        UsageError: no lifecycle of that name.
    """
    from transitions.extensions import GraphMachine

    graph = GraphMachine(
        title=f"{lifecycle} lifecycle", graph_engine="mermaid", **_definition(_lifecycle(lifecycle))
    )
    return str(graph.get_graph().draw(None))
