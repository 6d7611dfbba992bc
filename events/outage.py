"""Riding out storage outages: transient errors are retried, up to a tolerance.

A locked SQLite file (a backup, a migration, another tool holding it past the busy timeout) or
its full disk, a PostgreSQL server restarting, a dropped connection or a serialization failure
is an *outage*, not a failure of the work: :class:`Outage` retries the call with exponential
back-off until it succeeds or the outage has lasted longer than its tolerance, and then raises
:class:`~onward.events.exceptions.StorageUnavailable`. Other storage errors (a missing table, a
malformed query) are not retried.

An append retried after an ambiguous failure (the connection dropped during COMMIT: did it
commit?) writes the same records again, with the same event ids, at the same versions: if the
first attempt committed, the insert clashes with its own records, and the log says they were
already recorded.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from eventsourcing.persistence import InterfaceError, OperationalError, PersistenceError

from onward.events.exceptions import StorageUnavailable, UsageError
from onward.events.redaction import redacted_logger

__all__ = ["DEFAULT_TOLERANCE", "MOST_TOLERANCE", "Outage", "check_tolerance", "transient"]

logger = redacted_logger("onward.events")

T = TypeVar("T")

#: How long an outage is ridden out by default, in seconds.
DEFAULT_TOLERANCE = 300.0
#: The longest tolerance taken (ten years: a longer wait could not be dated).
MOST_TOLERANCE = 10 * 366 * 86400
#: The first pause before a retry, and the longest, in seconds.
FIRST_PAUSE = 0.05
LAST_PAUSE = 2.0

# Words of a message that say a SQLite error is a lock or a passing I/O fault (a full disk
# among them: space comes back as other files go), not a mistake.
_TRANSIENT_SQLITE = ("locked", "busy", "disk i/o error", "unable to open", "disk is full")


def transient(exc: BaseException) -> bool:
    """Whether a storage error is an outage that may pass (worth retrying)."""
    if isinstance(exc, InterfaceError):
        return True  # the connection is gone: a new one may work
    if isinstance(exc, OperationalError | sqlite3.OperationalError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, sqlite3.Error) or isinstance(exc, sqlite3.OperationalError):
            text = str(cause if isinstance(cause, sqlite3.Error) else exc).lower()
            return any(word in text for word in _TRANSIENT_SQLITE)
        return True  # PostgreSQL: a lost or refused connection, a restart, a serialization
    return False


def check_tolerance(tolerance: object) -> None:
    """Check an outage tolerance: a number of seconds in ``[0, MOST_TOLERANCE]``.

    Raises:
        UsageError: anything else (a bool, NaN, inf, a number past ten years).
    """
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not 0 <= tolerance <= MOST_TOLERANCE
    ):
        raise UsageError(
            f"outage_tolerance must be seconds in [0, {MOST_TOLERANCE}], got {tolerance!r}"
        )


class Outage:
    """Retries a storage call through transient errors for up to ``tolerance`` seconds.

    Args:
        url: the log's URL (for messages).
        tolerance: how long an outage is ridden out, in seconds (0: never retry).
        sleep: how to wait between tries (``time.sleep``).
        clock: a monotonic clock (``time.monotonic``).

    Raises:
        UsageError: a negative or non-finite tolerance.
    """

    def __init__(
        self,
        url: str,
        tolerance: float = DEFAULT_TOLERANCE,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_tolerance(tolerance)
        self.url = url
        self.tolerance = float(tolerance)
        self._sleep = sleep
        self._clock = clock
        # When the current outage began, seen by any thread: calls under way together give up
        # together, when the outage (not each call) has lasted the tolerance.
        self._since: float | None = None
        # When the last outage ended (by ``clock``; None: none seen).
        self._ended: float | None = None
        self._lock = threading.Lock()
        # Bumped by give_up(): the calls under way then stop retrying.
        self._generation = 0
        self._given_up = threading.Condition(self._lock)

    def give_up(self) -> None:
        """Make the calls under way stop retrying (a worker stops at once): each raises
        :class:`StorageUnavailable` at its next try, or at once if it is pausing between
        tries. Calls made afterwards retry as before."""
        with self._lock:
            self._generation += 1
            self._given_up.notify_all()

    def _pause(self, seconds: float, generation: int) -> None:
        """Wait between the tries of a call made in ``generation``; a real wait ends early
        when the calls under way give up (an injected ``sleep`` is called as it is)."""
        if self._sleep is not time.sleep:
            self._sleep(seconds)
            return
        with self._given_up:
            self._given_up.wait_for(lambda: self._generation != generation, timeout=seconds)

    def since_last(self) -> float:
        """Seconds since the last outage this log rode out ended: 0 while one is under way,
        infinite when none was seen.

        A worker's peers could record nothing during an outage either (no heartbeat, no step
        outcome): their silence then says nothing about whether they live.
        """
        with self._lock:
            if self._since is not None:
                return 0.0
            if self._ended is None:
                return float("inf")
            return self._clock() - self._ended

    def call(self, what: str, attempt: Callable[[], T]) -> T:
        """Call ``attempt`` until it returns, retrying transient storage errors.

        Args:
            what: what the call does, for messages ("append to stream 'task-1'").
            attempt: the call.

        Returns:
            What it returned.

        Raises:
            StorageUnavailable: the outage outlasted the tolerance.
            PersistenceError: a storage error that is not transient (unchanged, for the
                caller to translate).
        """
        pause = FIRST_PAUSE
        tries = 0
        generation = self._generation
        # When this call first failed: its own outage, which another call's success does not
        # end (a read answers while a writer's lock holds every append back). Not when the
        # failed try began: a call may wait a long time before it fails for reasons that are
        # no outage (a wait for notifications, another call's turn).
        failing_since: float | None = None
        while True:
            try:
                result = attempt()
            except (PersistenceError, sqlite3.OperationalError) as exc:
                if not transient(exc):
                    raise
                now = self._clock()
                if failing_since is None:
                    failing_since = now
                with self._lock:
                    if self._since is None:
                        self._since = failing_since
                        logger.warning("%s: %s is unavailable, retrying: %s", what, self.url, exc)
                    started = min(self._since, failing_since)
                tries += 1
                lasted = now - started
                if lasted + pause > self.tolerance:
                    raise StorageUnavailable(
                        f"{what}: {self.url} was unavailable for {lasted:.1f} s "
                        f"({tries} tries; the tolerance is {self.tolerance:g} s): {exc}",
                        lasted=lasted,
                    ) from exc
                self._pause(pause, generation)
                if self._generation != generation:
                    raise StorageUnavailable(
                        f"{what}: {self.url} was unavailable for {lasted:.1f} s ({tries} "
                        f"tries); given up as the worker stops at once: {exc}",
                        lasted=lasted,
                    ) from exc
                pause = min(pause * 2, LAST_PAUSE)
                continue
            if self._since is not None:  # the storage answers again: the outage is over
                with self._lock:
                    since, self._since = self._since, None
                    self._ended = self._clock()
                if since is not None:
                    logger.warning(
                        "%s: %s is back after %.1f s", what, self.url, self._clock() - since
                    )
            return result
