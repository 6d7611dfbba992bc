"""Events of a per-dependency circuit breaker, stored in ``breaker-<name>``.

A breaker moves closed -> open -> half-open -> closed (or back to open if a trial call fails).
"""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event

__all__ = ["BreakerClosed", "BreakerHalfOpened", "BreakerOpened"]


class BreakerOpened(Event, frozen=True, kw_only=True):
    """A dependency failed too often: calls to it are refused until the cooldown ends.

    Attributes:
        dependency: the dependency it guards (a model API, a database, a host).
        consecutive_failures: how many calls failed in a row when it opened.
        failure_rate: the share of recent calls that failed, from 0.0 to 1.0.
        cooldown_until: when it may half-open, in seconds since the epoch.
    """

    family: ClassVar[str] = "breaker"

    dependency: str
    consecutive_failures: int = 0
    failure_rate: float = 0.0
    cooldown_until: float


class BreakerHalfOpened(Event, frozen=True, kw_only=True):
    """The cooldown ended: a few trial calls may pass to test the dependency.

    Attributes:
        dependency: the dependency it guards.
        trial_calls: how many trial calls it lets through.
        trial_task: the task whose call is the trial ("" in logs of an earlier onward): the
            others wait for its outcome.
    """

    family: ClassVar[str] = "breaker"

    dependency: str
    trial_calls: int = 1
    trial_task: str = ""


class BreakerClosed(Event, frozen=True, kw_only=True):
    """The dependency recovered: calls pass again.

    Attributes:
        dependency: the dependency it guards.
        successes: how many trial calls succeeded before it closed.
    """

    family: ClassVar[str] = "breaker"

    dependency: str
    successes: int = 0
