"""The enums that events share: priorities, error kinds, strategies, levels and states.

Each is a :class:`enum.StrEnum`, so it is stored as its plain string value and compares equal
to it (``Priority.HIGH == "high"``).
"""

from __future__ import annotations

import enum

__all__ = [
    "BreakerState",
    "DegradationLevel",
    "ErrorKind",
    "FlowState",
    "Jitter",
    "Priority",
    "Strategy",
]


class Priority(enum.StrEnum):
    """How urgent a task is; the queue runs a higher priority first.

    Compare priorities by :attr:`rank`, not by value: the values sort alphabetically.
    """

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """The queue order: 0 for critical up to 3 for low (lower runs first)."""
        return _PRIORITY_RANKS[self]


_PRIORITY_RANKS = {
    Priority.CRITICAL: 0,
    Priority.HIGH: 1,
    Priority.NORMAL: 2,
    Priority.LOW: 3,
}


class ErrorKind(enum.StrEnum):
    """What an error says about the world, which decides how the engine answers it.

    ``TRANSIENT`` errors pass on their own (a timeout, a rate limit): retry them. ``SYSTEMIC``
    errors repeat until something changes (a bad argument, a missing file): fix, work around or
    ask. ``UNKNOWN`` errors are not classified yet.
    """

    TRANSIENT = "transient"
    SYSTEMIC = "systemic"
    UNKNOWN = "unknown"


class Strategy(enum.StrEnum):
    """How the engine carries out a decision, from most to least confident.

    ``IMMEDIATE``: act alone. ``MONITORED``: act and watch the outcome closely. ``REVERSIBLE``:
    act only in a way that can be undone. ``ASK``: wait for a human's approval.
    """

    IMMEDIATE = "immediate"
    MONITORED = "monitored"
    REVERSIBLE = "reversible"
    ASK = "ask"


class DegradationLevel(enum.StrEnum):
    """How much of its full service the session still gives, from ``FULL`` down to ``MINIMAL``."""

    FULL = "full"
    MINOR = "minor"
    MODERATE = "moderate"
    SEVERE = "severe"
    MINIMAL = "minimal"


class FlowState(enum.StrEnum):
    """The session's working rhythm.

    ``IDLE``: nothing to do. ``WARMING``: work has started, the rhythm is not settled.
    ``FLOWING``: steady work at a low error rate (interruptions are deferred). ``DISRUPTED``:
    errors or interruptions broke the rhythm.
    """

    IDLE = "idle"
    WARMING = "warming"
    FLOWING = "flowing"
    DISRUPTED = "disrupted"


class BreakerState(enum.StrEnum):
    """A circuit breaker's state.

    ``CLOSED``: calls pass. ``OPEN``: calls are refused until the cooldown ends. ``HALF_OPEN``:
    a few trial calls pass to test whether the dependency has recovered.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Jitter(enum.StrEnum):
    """How a retry's backoff delay is randomised, so that many retries do not strike together.

    ``NONE``: the computed delay as is. ``FULL``: uniform in [0, delay]. ``EQUAL``: half the
    delay plus uniform in [0, delay / 2]. ``DECORRELATED``: uniform in [base, 3 x the previous
    delay], capped.
    """

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"
