"""The histories of the tasks a worker claimed, kept between their runs.

A task that waits (a durable sleep, a message not yet sent, a retry's back-off, a limit's
permit) ends its run; the run that takes it up again starts from its whole history. Read
whole at each claim, a task that waits ``W`` times reads ``W`` histories growing to ``W``
steps each (1,000 sleeps: 2.5 million records read, checked and decoded). A worker keeps the
histories it read and reads only what was appended since.

A kept history is trusted only as far as the log still holds it: the first record read after
it must point at the checksum of its last one (a tail removed and written again reads as a
broken link, and the stream is read whole again, every record checked), and the claim that
follows is an append at the version the history ends at, refused if the stream is elsewhere.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from onward.events import CorruptRecord, EventLog, Recorded, StreamTail

#: How many bytes of records a worker keeps in all, as stored (about 2.5 times as much in
#: memory for small records): the histories least recently read go first, and a task's
#: history is let go when its run ends other than waiting.
KEPT_BYTES = 8 * 2**20
# A stream read_many leaves to read (its history is kept: only what came since is read).
_UNREAD = StreamTail([], "", 0)


class Histories:
    """The streams a worker read, each with the checksum of its last record, kept up to a
    size in all (least recently read first out).

    Args:
        log: the log they are read from.
        limit: the most bytes kept in all (as the records are stored); a larger history is
            read whole each time.
    """

    def __init__(self, log: EventLog, limit: int = KEPT_BYTES) -> None:
        self._log = log
        self._limit = limit
        self._kept: OrderedDict[str, StreamTail] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def read(self, stream: str) -> list[Recorded]:
        """The stream's events in version order, as :meth:`EventLog.read_stream` returns
        them (a new list the caller may change), reading only those after the kept ones.

        Raises:
            CorruptRecord: a record read does not decode, fails its checksum, or does not
                follow its predecessor.
        """
        with self._lock:
            kept = self._take(stream)
        read = None
        if kept is not None and kept.events:
            new = self._log.read_stream_on(stream, after=kept.events[-1].version, link=kept.link)
            if new is not None:
                read = StreamTail(kept.events + new.events, new.link, kept.size + new.size)
        if read is None:
            read = self._log.read_stream_on(stream)
            if read is None:  # a first record that points at a predecessor (unchecked reads)
                return self._log.read_stream(stream)
        self._keep(stream, read)
        return list(read.events)

    def read_many(self, streams: Sequence[str]) -> dict[str, list[Recorded] | CorruptRecord]:
        """:meth:`read` of several streams: those with nothing kept are read together (one
        query for many, as a worker claiming many tasks at once reads their histories).

        Returns:
            Per stream, its events as :meth:`read` returns them, or the
            :class:`CorruptRecord` that :meth:`read` would have raised (a damaged stream does
            not hold the others back).

        Raises:
            BackendError: the database failed.
        """
        found: dict[str, list[Recorded] | CorruptRecord] = {}
        with self._lock:
            whole = [stream for stream in streams if stream not in self._kept]
        tails = self._log.read_streams_on(whole) if whole else {}
        for stream in streams:
            tail = tails.get(stream, _UNREAD)
            try:
                if isinstance(tail, CorruptRecord):
                    raise tail
                if tail is None:  # a first record that points at a predecessor
                    found[stream] = self._log.read_stream(stream)
                elif tail is _UNREAD:  # kept: only what came since is read
                    found[stream] = self.read(stream)
                else:
                    assert isinstance(tail, StreamTail)
                    self._keep(stream, tail)
                    found[stream] = list(tail.events)
            except CorruptRecord as damage:
                found[stream] = damage
        return found

    def _keep(self, stream: str, read: StreamTail) -> None:
        if read.events and read.size <= self._limit:
            with self._lock:
                self._take(stream)
                self._kept[stream] = read
                self._size += read.size
                while self._size > self._limit:
                    self._size -= self._kept.popitem(last=False)[1].size

    def forget(self, stream: str) -> None:
        """Keep nothing of this stream (its task ended)."""
        with self._lock:
            self._take(stream)

    def _take(self, stream: str) -> StreamTail | None:
        kept = self._kept.pop(stream, None)
        if kept is not None:
            self._size -= kept.size
        return kept
