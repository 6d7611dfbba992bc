"""Waiting for a log to change, without busy polling: what an idle worker does.

:meth:`onward.events.EventLog.watch` returns a :class:`Watch`; its :meth:`Watch.wait` returns
as soon as another append may have happened (or its timeout passes). Backends watch the way
their database allows: SQLite by ``PRAGMA data_version`` on a connection of the watch's own
with a bounded back-off, PostgreSQL by ``LISTEN``, the memory log by a condition its commits
notify; :class:`PollingWatch` polls the log's head for any other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["FIRST_POLL", "LAST_POLL", "PollingWatch", "Watch"]

#: The first pause of a polling watch after a change, in seconds.
FIRST_POLL = 0.002
#: The longest pause of a polling watch while nothing changes, in seconds.
LAST_POLL = 0.05


class Watch:
    """Tells a waiting reader that the log may have changed.

    A watch may report a change that is not one (the reader then finds nothing new); it never
    sleeps through one for longer than its back-off.
    """

    def wait(self, timeout: float) -> bool:
        """Wait until the log may have changed, or ``timeout`` seconds pass.

        Returns:
            True when it may have changed.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the watch holds (a connection); :meth:`wait` must not be called after."""


class PollingWatch(Watch):
    """A watch that polls a cheap probe of the log's state with a bounded back-off.

    Args:
        probe: returns a value that changes whenever the log does (its head, a data version).
        close: called once by :meth:`close`.
    """

    def __init__(self, probe: Callable[[], object], close: Callable[[], None] | None = None):
        self._probe = probe
        self._close = close
        self._last = probe()
        self._pause = FIRST_POLL
        self._closed = threading.Event()

    def wait(self, timeout: float) -> bool:
        """Poll until the probe's value changes or ``timeout`` seconds pass."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            current = self._probe()
            if current != self._last:
                self._last = current
                self._pause = FIRST_POLL
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self._closed.is_set():
                return False
            self._closed.wait(min(self._pause, left))
            self._pause = min(self._pause * 2, LAST_POLL)

    def close(self) -> None:
        """Stop polling."""
        if not self._closed.is_set():
            self._closed.set()
            if self._close is not None:
                self._close()
