"""A batch of events for one atomic commit of a task run: its own stream's, and others'.

A policy (healing, judgement) adds the events of one decision to a :class:`Batch`, each caused
by the event it answers, and hands it to the task run, which appends it in one commit.
"""

from __future__ import annotations

from onward.events import Append, Event, new_event_id

__all__ = ["Batch"]


class Batch:
    """Events for one atomic commit: the task's own stream, plus other streams (breakers).

    Args:
        cause: the cause of events added without one (the run's claim).

    Attributes:
        events: the task stream's events, in order.
        ids: their event ids.
        causes: the id of the event that caused each.
        also: appends to other streams in the same commit (a breaker's transition).
        wakes: the commit may make work runnable for an idle worker though its events do not
            say so by their kind (a subtask's end: see :attr:`onward.events.Append.wakes`).
    """

    def __init__(self, cause: str) -> None:
        self.cause = cause
        self.events: list[Event] = []
        self.ids: list[str] = []
        self.causes: list[str] = []
        self.also: list[Append] = []
        self.wakes = False

    def split(self, at: int) -> tuple[Batch, Batch]:
        """The batch cut before its event ``at``: the events before (with the other streams'
        appends) and the events from there on, each with its id and cause."""
        before, after = Batch(self.cause), Batch(self.cause)
        before.also = self.also
        before.wakes = after.wakes = self.wakes
        before.events, before.ids, before.causes = self.events[:at], self.ids[:at], self.causes[:at]
        after.events, after.ids, after.causes = self.events[at:], self.ids[at:], self.causes[at:]
        return before, after

    def add(self, event: Event, cause: str | None = None) -> str:
        """Add an event; returns its id (for the causes of later events)."""
        event_id = new_event_id()
        self.events.append(event)
        self.ids.append(event_id)
        self.causes.append(self.cause if cause is None else cause)
        return event_id
