"""The session projection: each session's lifecycle, from its stream ``session-<name>``."""

from __future__ import annotations

from typing import Any

import msgspec

from onward.events import Recorded, SessionEnded, SessionStarted, UnknownEvent
from onward.events.integrity import StreamDamage
from onward.projections.lifecycle import SESSION

__all__ = ["SESSION_PREFIX", "SessionProjection", "SessionView", "session_stream"]

#: Every session's stream is ``session-<name>``.
SESSION_PREFIX = "session-"


def session_stream(name: str) -> str:
    """The stream of a session."""
    return SESSION_PREFIX + name


class SessionView(msgspec.Struct, kw_only=True):
    """What the log says about one session.

    Attributes:
        name: the session's name.
        state: active, paused or ended; "damaged" when its history cannot be trusted (see
            ``damage``): it cannot be opened.
        started_at: when it first started.
        updated_at: the time of its last event.
        openings: how many times it was opened (1 + resumptions).
        host: the host that last opened it.
        pid: the process that last opened it.
        version: its stream's version.
        ended_reason: why it last ended.
        unknown_events: events of types this onward does not know.
        damage: why its history cannot be trusted: which record, and what is wrong with it
            ("" when it can).
    """

    name: str
    state: str
    started_at: float
    updated_at: float
    openings: int = 1
    host: str = ""
    pid: int = 0
    version: int = 0
    ended_reason: str = ""
    unknown_events: int = 0
    damage: str = ""


class SessionProjection:
    """Folds session streams into :class:`SessionView` objects."""

    name = "sessions"

    def __init__(self) -> None:
        self.sessions: dict[str, SessionView] = {}

    def apply(self, r: Recorded) -> None:
        """Fold one event of a session stream.

        Raises:
            IllegalTransition: the event is not allowed in the session's current state (unless
                the session holds events of a newer onward, after which its state may be stale).
        """
        event = r.event
        name = r.stream[len(SESSION_PREFIX) :]
        view = self.sessions.get(name)
        if isinstance(event, UnknownEvent):
            if view is None:
                view = SessionView(
                    name=name, state="unknown", started_at=r.meta.time, updated_at=r.meta.time
                )
                self.sessions[name] = view
            view.unknown_events += 1
            view.version = r.version
            view.updated_at = r.meta.time
            return
        tag = event.__struct_config__.tag
        assert isinstance(tag, str)
        if view is None:
            state = SESSION.evolve(SESSION.initial, tag, stream=r.stream, version=r.version)
            assert isinstance(event, SessionStarted)
            self.sessions[name] = SessionView(
                name=name,
                state=state,
                started_at=r.meta.time,
                updated_at=r.meta.time,
                host=event.host,
                pid=event.pid,
                version=r.version,
            )
            return
        after = SESSION.table.get((view.state, tag))
        if after is None and not view.unknown_events:
            SESSION.evolve(view.state, tag, stream=r.stream, version=r.version)  # raises
        view.state = after or view.state
        view.updated_at = r.meta.time
        view.version = r.version
        if tag == "SessionResumed":
            view.openings += 1
        elif isinstance(event, SessionEnded):
            view.ended_reason = event.reason

    def damage(self, name: str, damage: StreamDamage) -> None:
        """Mark a session whose history cannot be trusted from one of its records on (the
        folds skip its stream's later events).

        Args:
            name: the session.
            damage: its stream's first bad record and what is wrong with it.
        """
        view = self.sessions.get(name)
        if view is None:
            view = self.sessions[name] = SessionView(
                name=name, state="damaged", started_at=0.0, updated_at=0.0, openings=0
            )
        view.state = "damaged"
        view.damage = str(damage)

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every session."""
        return {k: msgspec.structs.asdict(v) for k, v in sorted(self.sessions.items())}

    def dump(self) -> list[SessionView]:
        """Every session view, for a checkpoint."""
        return list(self.sessions.values())

    def load(self, views: list[SessionView]) -> None:
        """Restore from a checkpoint's session views."""
        self.sessions = {v.name: v for v in views}
