"""Events of a session: one named stretch of autonomous work, stored in ``session-<name>``."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from onward.events.base import Event

__all__ = ["SessionEnded", "SessionPaused", "SessionResumed", "SessionStarted"]


class SessionStarted(Event, frozen=True, kw_only=True):
    """A session was opened for the first time.

    Reopening an existing session appends :class:`SessionResumed` instead.

    Attributes:
        name: the session's name (``nightly-refactor``).
        host: the machine it started on ("" when unknown).
        pid: the process that started it (0 when unknown).
        version: the version of onward that started it ("" when unknown).
        config: the session's settings, as plain JSON values (secrets redacted): ``budget``,
            the error budget it opened with (``{"limit": 10, "window": 3600.0, ...}``); empty
            in a log of an earlier onward, which did not record it.
    """

    family: ClassVar[str] = "session"

    name: str
    host: str = ""
    pid: int = 0
    version: str = ""
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class SessionPaused(Event, frozen=True, kw_only=True):
    """The session stopped taking new work; its tasks keep their state and wait.

    Attributes:
        reason: why it paused (a user's request, an exhausted error budget, ...).
    """

    family: ClassVar[str] = "session"

    reason: str = ""


class SessionResumed(Event, frozen=True, kw_only=True):
    """The session took up work again: after a pause, or reopened after a stop or a crash.

    Attributes:
        reason: why it resumed ("reopened", "crash recovery", a user's request, ...).
        recovered_tasks: how many unfinished tasks it found and took up again.
        config: when reopened, the settings it was reopened with, as
            :attr:`SessionStarted.config` (empty after a pause, or in an older onward's log).
    """

    family: ClassVar[str] = "session"

    reason: str = ""
    recovered_tasks: int = 0
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class SessionEnded(Event, frozen=True, kw_only=True):
    """The session finished; reopening it later appends :class:`SessionResumed`.

    Attributes:
        reason: why it ended ("queue empty", a user's request, a deadline, ...).
        tasks_done: how many of its tasks succeeded.
        tasks_failed: how many of its tasks failed or were cancelled.
    """

    family: ClassVar[str] = "session"

    reason: str = ""
    tasks_done: int = 0
    tasks_failed: int = 0
