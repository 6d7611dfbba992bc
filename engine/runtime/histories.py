"""The histories of the tasks a worker claimed, kept between their runs.

A task that waits (a durable sleep, a message not yet sent, a retry's back-off, a limit's
permit) ends its run; the run that takes it up again starts from its whole history. Read
whole at each claim, a task that waits ``W`` times reads ``W`` histories growing to ``W``
steps each (1,000 sleeps: 0.9 million records read, checked and decoded). A worker keeps the
histories it read and reads only what was appended since.

A kept history is trusted only as far as the log still holds it: the first record read after
it must point at the checksum of its last one (a tail removed and written again reads as a
broken link, and the stream is read whole again, every record checked), and the claim that
follows is an append at the version the history ends at, refused if the stream is elsewhere.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from onward.events import EventLog, Recorded

#: How many records a worker keeps in all, about 1 KB each (the histories least recently read
#: go first; a task's history is let go when its run ends other than waiting).
KEPT_RECORDS = 20_000


class Histories:
    """The streams a worker read, each with the checksum of its last record, kept up to a
    number of records in all (least recently read first out).

    Args:
        log: the log they are read from.
        limit: the most records kept in all; a longer history is read whole each time.
    """

    def __init__(self, log: EventLog, limit: int = KEPT_RECORDS) -> None:
        self._log = log
        self._limit = limit
        self._kept: OrderedDict[str, tuple[list[Recorded], str]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def read(self, stream: str) -> list[Recorded]:
        """The stream's events in version order, as :meth:`EventLog.read_stream` returns
        them (a new list the caller may change), reading only those after the kept ones.

        Raises:
            CorruptRecord: a record read does not decode, fails its checksum, or does not
                follow its predecessor.
        """
        with self._lock:
            kept = self._kept.pop(stream, None)
            if kept is not None:
                self._count -= len(kept[0])
        read = None
        if kept is not None:
            held, link = kept
            read = self._log.read_stream_on(stream, after=held[-1].version, link=link)
            if read is not None:
                read = (held + read[0], read[1])
        if read is None:
            read = self._log.read_stream_on(stream)
            if read is None:  # a first record that points at a predecessor
                return self._log.read_stream(stream)  # raises CorruptRecord (when verified)
        events = read[0]
        if events and len(events) <= self._limit:
            with self._lock:
                self._forget(stream)
                self._kept[stream] = read
                self._count += len(events)
                while self._count > self._limit:
                    self._count -= len(self._kept.popitem(last=False)[1][0])
        return list(events)

    def forget(self, stream: str) -> None:
        """Keep nothing of this stream (its task ended)."""
        with self._lock:
            self._forget(stream)

    def _forget(self, stream: str) -> None:
        kept = self._kept.pop(stream, None)
        if kept is not None:
            self._count -= len(kept[0])
