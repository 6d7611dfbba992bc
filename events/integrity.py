"""Integrity checks over a whole log: checksums, hash chains, version order.

Each record's checksum covers its stream, version, type, envelope and event; each envelope
names the checksum of the previous event of its stream. Walking the log in position order
therefore finds a flipped bit (checksum), a deleted record (a version gap or a broken chain), a
duplicated or swapped record (checksum, order) and a truncated record (checksum). Damage that
no intact record follows is a **torn tail** (a write cut short); anything else is damage in the
middle of the log.

What this cannot see: the last event of a stream removed cleanly (nothing points at it), and
two records of different streams trading positions (each stream's own order is unchanged).
"""

from __future__ import annotations

import enum
import hashlib

import msgspec

from onward.events.codec import LAYOUT, Codec, checksum_of, prev_of

__all__ = ["Problem", "ProblemKind", "Verifier", "VerifyReport"]


class ProblemKind(enum.StrEnum):
    """What is wrong with a record."""

    CORRUPT = "corrupt"
    """The record does not match its checksum (a flipped bit, a truncated or rewritten row)."""
    GAP = "gap"
    """Versions are missing before this record (a deleted row)."""
    CHAIN = "chain"
    """The record does not point at its predecessor's checksum (a replaced or moved row)."""
    ORDER = "order"
    """The record's version is not after its predecessor's (a swapped or duplicated row)."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One damaged record.

    Attributes:
        kind: what is wrong.
        stream: the record's stream.
        version: its version.
        position: its global position.
        detail: a sentence for a human.
    """

    kind: ProblemKind
    stream: str
    version: int
    position: int
    detail: str

    def __str__(self) -> str:
        return (
            f"position {self.position}, stream {self.stream!r}, version {self.version}: "
            f"{self.kind}: {self.detail}"
        )


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The result of :meth:`onward.events.EventLog.verify`.

    Attributes:
        ok: True when no record is damaged.
        events: the records checked.
        streams: the streams seen.
        head: the last position checked.
        problems: the damaged records, in position order.
        torn_tail: True when every damaged record lies after the last intact one (a write cut
            short at the end of the log), False when there is damage in the middle.
    """

    ok: bool
    events: int
    streams: int
    head: int
    problems: list[Problem]
    torn_tail: bool


class Verifier:
    """Checks records fed in position order; :meth:`finish` gives the report."""

    def __init__(self, codec: Codec) -> None:
        self._check = codec.check
        # stream -> (version, checksum as stored bytes; None when that record was damaged)
        self._heads: dict[str, tuple[int, bytes | None]] = {}
        self._problems: list[Problem] = []
        self._events = 0
        self._head = 0
        self._last_good = 0

    def feed_page(self, rows: list[tuple[int, str, int, str, bytes]]) -> None:
        """Check records in position order: the same as :meth:`feed` on each, faster.

        The common case (an intact record that continues its stream's chain) is checked
        inline; anything else goes through :meth:`feed`, which says what is wrong.
        """
        heads = self._heads
        get = heads.get
        blake2b = hashlib.blake2b
        start, end = LAYOUT.checksum
        prev_start, prev_end = LAYOUT.prev
        prev_prefix, checksum_prefix = LAYOUT.prev_prefix, LAYOUT.checksum_prefix
        no_head = (0, b"")
        checked = 0
        for row in rows:
            position, stream, version, topic, state = row
            try:
                stored = state[start:end]
                last_version, last_sum = get(stream, no_head)
                intact = (
                    version == last_version + 1
                    and (
                        state[prev_start:prev_end] == last_sum
                        if state.startswith(prev_prefix, end)
                        else not last_sum
                    )
                    and state.startswith(checksum_prefix)
                    and blake2b(
                        b"%s\x00%d\x00%s\x00%s"
                        % (stream.encode(), version, topic.encode(), state[end:]),
                        digest_size=16,
                    )
                    .hexdigest()
                    .encode()
                    == stored
                )
            except (TypeError, AttributeError):
                intact = False
            if not intact:
                self._events += checked
                checked = 0
                self.feed(row)
                continue
            heads[stream] = (version, stored)
            checked += 1
            self._head = self._last_good = position
        self._events += checked

    def feed(self, row: tuple[int, str, int, str, bytes]) -> None:
        """Check one record: ``(position, stream, version, topic, state)``."""
        position, stream, version, topic, state = row
        self._events += 1
        self._head = position
        wrong = self._check(stream, version, topic, state)
        previous = self._heads.get(stream)
        if wrong is not None:
            self._add(ProblemKind.CORRUPT, stream, version, position, wrong)
            # Its stored version may be the damaged part: assume it is the next one.
            self._heads[stream] = ((previous[0] if previous else 0) + 1, None)
            return
        checksum = checksum_of(state).encode()
        last_version, last_sum = previous if previous is not None else (0, b"")
        if version <= last_version:
            self._add(
                ProblemKind.ORDER,
                stream,
                version,
                position,
                f"version {version} comes after version {last_version} of the same stream",
            )
            return
        self._heads[stream] = (version, checksum)
        if version != last_version + 1:
            self._add(
                ProblemKind.GAP,
                stream,
                version,
                position,
                f"versions {last_version + 1}..{version - 1} are missing",
            )
        elif last_sum is not None and prev_of(state).encode() != last_sum:
            self._add(
                ProblemKind.CHAIN,
                stream,
                version,
                position,
                "does not point at the checksum of the previous version",
            )
        else:
            self._last_good = position

    def _add(
        self, kind: ProblemKind, stream: str, version: int, position: int, detail: str
    ) -> None:
        self._problems.append(
            Problem(kind=kind, stream=stream, version=version, position=position, detail=detail)
        )

    def finish(self) -> VerifyReport:
        """The report over every record fed so far."""
        problems = self._problems
        torn = bool(problems) and min(p.position for p in problems) > self._last_good
        return VerifyReport(
            ok=not problems,
            events=self._events,
            streams=len(self._heads),
            head=self._head,
            problems=problems,
            torn_tail=torn,
        )
