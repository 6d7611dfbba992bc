"""The base of every event, its envelope, and an event as read back from the log."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

__all__ = ["Event", "Meta", "Recorded", "UnknownEvent"]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    """The base of every onward event: a frozen, keyword-only, tagged msgspec Struct.

    Declare every subclass as ``class X(Event, frozen=True, kw_only=True):``: msgspec applies
    ``kw_only`` only to the fields a class defines itself. A subclass's tag (its stored
    ``type``) is its class name unless it names another with ``tag="X.v2"``. Adding a field
    with a default is a compatible change; any other change needs a new tag and an upcaster
    from the old one (see :mod:`onward.events.codec`).
    """

    #: The layer that owns events of this type: "session", "task", "step", ... (for docs and
    #: the CLI; not stored).
    family: ClassVar[str] = "event"


class UnknownEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event whose type this version of onward does not know (written by a newer one).

    The audit can still show it; resuming work over it raises
    :class:`onward.events.UnknownEventType`.

    Attributes:
        type: the stored tag.
        data: the stored fields, as plain JSON values.
    """

    type: str
    data: dict[str, Any]


class Meta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """The envelope that every stored event carries.

    Attributes:
        event_id: a unique id (32 hex digits); re-appending the same ids at the same expected
            version is a no-op.
        time: when the event was appended, in seconds since the epoch (from the log's clock).
        session: the session the event belongs to ("" when none).
        causation_id: the id of the event that caused this one ("" when none).
        correlation_id: the id shared by every event of one chain of work ("" when none).
        actor: the worker that appended it ("" when not named).
        checksum: the hash of this record (stream, version, type, envelope and event); it is
            also the link the next event of the stream points back to.
        prev: the checksum of the previous event of the same stream ("" for the first).
    """

    # The checksum comes first: it covers every byte stored after it (see events.codec).
    checksum: str = ""
    prev: str = ""
    event_id: str
    time: float
    session: str = ""
    causation_id: str = ""
    correlation_id: str = ""
    actor: str = ""


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """An event as read back from the log.

    Not tracked by the cycle collector (a record never refers back to itself through its
    event): a replay makes one for every event, and tracking each cost about 3% of it.

    Attributes:
        stream: the stream it belongs to (one per task, session, breaker, ...).
        version: its version in that stream, from 1 with no gaps.
        position: its global position in the log, increasing with commit order.
        meta: its envelope.
        event: the event itself, or an :class:`UnknownEvent`.
    """

    stream: str
    version: int
    position: int
    meta: Meta
    event: Event | UnknownEvent
