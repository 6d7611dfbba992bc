"""The in-memory backend: eventsourcing's POPO recorder behind the shared log.

Nothing survives the process. It passes the same conformance suite as the databases, so tests
of code above the log can trust it as a fake.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.popo import POPOAggregateRecorder, POPOApplicationRecorder

from onward.events.codec import LAYOUT
from onward.events.exceptions import LogNotFound
from onward.events.integrity import CHAIN_START, LogHead, advance_chain
from onward.events.log import EventLog, StoredRow

__all__ = ["MemoryLog"]


class MemoryLog(EventLog):
    """An event log held in memory (``memory://``).

    Args:
        create: must be True: a memory log never exists before it is opened.
        **options: passed to :class:`onward.events.EventLog` (codec, redactor, clock,
        payload_limit, inline_limit).

    Raises:
        LogNotFound: ``create=False``.
    """

    def __init__(self, *, create: bool = True, **options: Any) -> None:
        if not create:
            raise LogNotFound("no log at memory:// (a memory log exists only in its process)")
        self._popo = POPOApplicationRecorder()
        self._log_head = LogHead(base=0, position=0, count=0, chain=CHAIN_START)
        self._head_lock = threading.Lock()
        self._blobs: dict[str, bytes] = {}
        super().__init__(self._popo, POPOAggregateRecorder(), url="memory://", **options)

    # Positions are the index in the recorder's list, plus one.
    dense_positions = True

    def _insert(self, records: list[StoredEvent], wakes: bool = False) -> list[int]:
        with self._head_lock:  # the head advances in the order the records are stored
            positions = super()._insert(records, wakes)
            head = self._log_head
            start, end = LAYOUT.checksum
            self._log_head = LogHead(
                base=head.base,
                position=positions[-1] if positions else head.position,
                count=head.count + len(positions),
                chain=advance_chain(head.chain, (r.state[start:end] for r in records)),
            )
        return positions

    def _store_blobs(self, blobs: dict[str, bytes]) -> None:
        with self._head_lock:
            for digest, data in blobs.items():
                self._blobs.setdefault(digest, data)

    def _select_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        with self._head_lock:
            return {d: self._blobs[d] for d in digests if d in self._blobs}

    def _select_blob_digests(self) -> list[str]:
        with self._head_lock:
            return list(self._blobs)

    def _select_log_head(self) -> LogHead | None:
        return self._log_head

    def _select_stream(self, stream: str, after: int, upto: int | None) -> list[StoredRow]:
        popo = self._popo
        with popo._database_lock:
            index = popo._stored_events_index.get(stream, {})
            rows: list[StoredRow] = []
            for version in sorted(index):
                if version > after and (upto is None or version <= upto):
                    s: StoredEvent = popo._stored_events[index[version]]
                    rows.append((index[version] + 1, stream, version, s.topic, s.state))
            return rows
