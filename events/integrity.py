"""Integrity checks over a whole log: checksums, hash chains, version order.

Each record's checksum covers its stream, version, type, envelope and event; each envelope
names the checksum of the previous event of its stream. Walking the log in position order
therefore finds a flipped bit (checksum), a deleted record (a version gap or a broken chain), a
duplicated or swapped record (checksum, order) and a truncated record (checksum). Damage that
no intact record follows is a **torn tail** (a write cut short); anything else is damage in the
middle of the log.

What the records alone cannot show (the last event of a stream removed cleanly, a whole stream
removed, the newest records removed: nothing points at them) the log's **head record** shows.
A backend that keeps one writes it in the same transaction as every append: the last position,
the count of records, and a hash chain over every record's checksum in position order
(``chain = H(chain || checksum)``, one link per record, from :data:`CHAIN_START`). The check
walks the records, links the chain again and compares: any record removed, added, moved or
given another checksum breaks it. A log that an older onward wrote, or a backend that keeps no
head (PostgreSQL, for now), is "not tracked". An older log starts being tracked at its first
append by a newer onward: its head's ``base`` is the position it starts after.

What this cannot see: two records of different streams trading positions in a log whose head
is not tracked (each stream's own order is unchanged).

:func:`check_rows` is the same checksum check, fast, for the readers that decode records for
replay or resume: a record that fails it is never folded or replayed.

A projection checkpoint is a cache, trusted only as onward saved it: its **seal**
(:func:`checkpoint_seal`, stored in its header) covers everything a reader takes from it (its
name, schema, position and data) and the checksum of the log's record at its position, so a
checkpoint changed since (an earlier position, other bytes), or one of another log, fails the
check and is ignored: the projections are folded from the log instead.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence

import msgspec
import xxhash

from onward.events.base import Recorded
from onward.events.codec import (
    LAYOUT,
    Codec,
    checksum_body,
    checksum_of,
    legacy_checksum,
    prev_of,
    stream_seed,
    tag_seed,
    version_seed,
)

__all__ = [
    "CHAIN_START",
    "HEAD_DAMAGED",
    "HEAD_REMOVED",
    "HeadCheck",
    "LogHead",
    "Problem",
    "ProblemKind",
    "StreamDamage",
    "Verifier",
    "VerifyReport",
    "advance_chain",
    "check_decoded",
    "check_rows",
    "checkpoint_seal",
    "damaged_streams",
]

#: The hash chain of a log before its first record (hex).
CHAIN_START = "0" * 32


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
    MISSING = "missing"
    """Positions the head record covers hold no record (a removed record, stream or tail)."""
    HEAD = "head"
    """The records do not match the head record's count or hash chain (records removed,
    added or rewritten behind onward's back)."""
    BLOB = "blob"
    """A blob the record references is missing or does not match its digest."""
    ILLEGAL = "illegal"
    """The record is intact, but its lifecycle does not allow it in its stream's state."""
    STORAGE = "storage"
    """The database's own structure is damaged (an index that disagrees with the records it
    indexes, a page out of place): the records may check out while reads by stream come back
    short. Found by the backend's own check (SQLite's ``PRAGMA integrity_check``)."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One damaged record, or (kind ``storage``, no stream) damage to the database's own
    structure.

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
        if not self.stream:  # a record that is gone: its stream is not known
            return f"position {self.position}: {self.kind}: {self.detail}"
        return (
            f"position {self.position}, stream {self.stream!r}, version {self.version}: "
            f"{self.kind}: {self.detail}"
        )


class StreamDamage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Why a stream cannot be trusted from one of its records on.

    Attributes:
        stream: the stream.
        version: the version of its first bad record.
        position: that record's global position.
        kind: what is wrong with it (``corrupt``, ``gap``, ``chain``, ``order``, ``illegal``,
            ``blob``, or ``storage``: the database's index misses it).
        reason: a sentence for a human.
    """

    stream: str
    version: int
    position: int
    kind: ProblemKind
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} at version {self.version} (position {self.position}): {self.reason}"


class LogHead(msgspec.Struct, frozen=True, kw_only=True):
    """The head record: what a log held after its last append, written with that append.

    Attributes:
        base: the position the head's count and chain start after (0: the whole log; a log
            written by an older onward starts being tracked at its first newer append).
        position: the position of the last record appended.
        count: how many records were appended after ``base``.
        chain: the hash chain over those records' checksums, in position order (hex).
    """

    base: int
    position: int
    count: int
    chain: str


class HeadCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`onward.events.EventLog.verify` found comparing the records with the head
    record.

    Attributes:
        status: "ok", "not tracked" (no head record: an older log never appended to since,
            or a backend that keeps none), "damaged", or "not checked" (``onward verify --json``
            on a database that cannot be read at all).
        base: the position tracking starts after.
        position: the last position the head record names.
        count: the records it counts after ``base``.
        found: the records found after ``base`` up to ``position``.
        detail: a sentence for a human.
    """

    status: str
    base: int = 0
    position: int = 0
    count: int = 0
    found: int = 0
    detail: str = ""


#: What a backend reports when it keeps a head record but finds none (it was removed).
HEAD_REMOVED = LogHead(base=-1, position=-1, count=-1, chain="")
#: What a backend reports when its head record holds what onward never writes (a count that is
#: not a number, a chain that is not text: changed behind onward's back).
HEAD_DAMAGED = LogHead(base=-2, position=-2, count=-2, chain="")


def advance_chain(chain: str, checksums: Iterable[bytes]) -> str:
    """Link checksums (32 hex digits each, as stored) onto a hash chain, one link each.

    Args:
        chain: the chain so far (hex; :data:`CHAIN_START` for none).
        checksums: the records' stored checksums, in position order.

    Returns:
        The chain after them (hex).
    """
    # A copy of an empty hasher is blake2b-128 anew, without parsing its parameters again.
    fresh = _BLAKE2B_128.copy
    link = bytes.fromhex(chain)
    for checksum in checksums:
        hasher = fresh()
        hasher.update(link + checksum)
        link = hasher.digest()
    return link.hex()


_BLAKE2B_128 = hashlib.blake2b(digest_size=16)


_START, _END = LAYOUT.checksum
_MASK = 2**64 - 1
_CHECKSUM_PREFIX = LAYOUT.checksum_prefix
# The same as text: a record's bytes up to its body are this and its checksum's hex digits.
_CHECKSUM_PREFIX_TEXT = _CHECKSUM_PREFIX.decode("ascii")
assert len(_CHECKSUM_PREFIX) == _START


class _VersionSeeds(dict[int, int]):
    """A version's part of its record's seed, looked up for the versions most records have,
    computed for any other."""

    def __missing__(self, version: int) -> int:
        return version_seed(version)


_VERSION_SEEDS = {v: version_seed(v) for v in range(4096)}
_ANY_VERSION_SEEDS = _VersionSeeds(_VERSION_SEEDS)
_NO_STREAM = object()


def _all_pass(
    rows: Sequence[tuple[int, str, int, str, bytes]], version_of: dict[int, int] = _VERSION_SEEDS
) -> bool:
    """Whether every row passes its checksum, checked with fewer steps per row than
    :func:`check_rows`'s row by row check: True only when that check passes every row; False
    when any row fails or is not shaped as stored rows are (that check then says which, and
    why).

    The heads (prefix and checksum) of the rows, joined, are compared with the expected heads
    joined, in one comparison: each expected head has the same length and a stored one is
    never longer, so the two are equal only when every row's head is its own expected head.
    A stream's part of the seeds is computed once for each run of its records in the page.
    """
    checksum, end, prefix = checksum_body, _END, _CHECKSUM_PREFIX_TEXT
    streams: dict[str, int] = {}
    tags: dict[str, int] = {}
    expected: list[str] = []
    add = expected.append
    last: object = _NO_STREAM
    of_stream = 0
    try:
        for _p, s, v, t, st in rows:
            if s != last:
                of_stream = streams.get(s) or streams.setdefault(s, stream_seed(s))
                last = s
            of_tag = tags.get(t)
            if of_tag is None:
                of_tag = tags[t] = tag_seed(t)
            add(checksum(st[end:], of_stream ^ of_tag ^ version_of[v]))
        stored = b"".join([row[4][:end] for row in rows])
        return stored == (prefix + prefix.join(expected)).encode()
    except KeyError:  # a version past those looked up (a plain dict's lookup is the quickest)
        return version_of is not _ANY_VERSION_SEEDS and _all_pass(rows, _ANY_VERSION_SEEDS)
    except (TypeError, AttributeError, UnicodeEncodeError, OverflowError, ValueError):
        return False  # a state that is not bytes, a stream that is not text, ...


def check_rows(rows: Sequence[tuple[int, str, int, str, bytes]]) -> list[tuple[int, str]]:
    """Check the checksum of each stored row ``(position, stream, version, topic, state)``.

    The readers' check: the same as :meth:`Codec.check` on each row, in one fast pass.

    Returns:
        The index in ``rows`` and what is wrong, of each row that fails (empty when all pass).
    """
    if not rows or _all_pass(rows):
        return []  # the common case
    checksum = checksum_body
    end, prefix = _END, _CHECKSUM_PREFIX_TEXT
    # The seeds' parts of the page's streams and tags, each computed once (most records of a
    # page share their stream with others, and their tag with many).
    streams: dict[str, int] = {}
    tags: dict[str, int] = {}
    stream_of, tag_of = streams.get, tags.get
    golden = version_seed(1)  # inline below: version_seed(v) is v * golden & _MASK

    def new_stream(stream: str) -> int:
        seed = streams[stream] = stream_seed(stream)
        return seed

    def new_tag(topic: str) -> int:
        seed = tags[topic] = tag_seed(topic)
        return seed

    try:
        # A record's bytes up to its body are the prefix and its checksum: one comparison.
        failed = [
            p
            for p, s, v, t, st in rows
            if st[:end]
            != (
                prefix
                + checksum(
                    st[end:],
                    (stream_of(s) or new_stream(s))
                    ^ (tag_of(t) or new_tag(t))
                    ^ (v * golden & _MASK),
                )
            ).encode()
        ]
    except (TypeError, AttributeError, UnicodeEncodeError, OverflowError):
        # a state that is not bytes, a version that is not a number: the slow check says which
        failed = None
    if failed == []:
        return []  # the common case
    if failed is not None:
        # Records an onward before xxh3 wrote carry blake2b: one more fast pass for them.
        legacy_suspects = set(failed)
        failed = [
            p
            for p, s, v, t, st in rows
            if p in legacy_suspects
            and st[:end] != (prefix + legacy_checksum(s, v, t, st[end:])).encode()
        ]
        if not failed:
            return []
    suspects = None if failed is None else set(failed)
    bad = [i for i, row in enumerate(rows) if suspects is None or row[0] in suspects]
    found: list[tuple[int, str]] = []
    for i in bad:
        _p, s, v, t, st = rows[i]
        if not (isinstance(s, str) and isinstance(t, str)):
            found.append((i, "record has no stream or type"))
            continue
        wrong = Codec.check(s, v, t, st)  # a record written before xxh3 passes here
        if wrong is not None:
            found.append((i, wrong))
    return found


def checkpoint_seal(name: str, schema: int, position: int, data: bytes, anchor: str = "") -> str:
    """The seal of a projection checkpoint: xxh3-128 over its name, schema, position and data
    (32 hex digits), so that a checkpoint changed in any of them after it was saved is known;
    and over ``anchor``, the checksum of the record at its position, so that a checkpoint of
    another log (or of records since replaced) is known too.

    Args:
        name: the projection's name.
        schema: its schema version.
        position: the last position folded into it.
        data: its encoded state.
        anchor: the checksum of the log's record at ``position`` ("" for none: the seal of an
            onward that did not bind checkpoints to their log).

    Returns:
        The seal (hex).
    """
    header = [name, schema, position, anchor] if anchor else [name, schema, position]
    seal = xxhash.xxh3_128(msgspec.json.encode(header))
    seal.update(data)
    return seal.hexdigest()


def check_decoded(
    rows: Sequence[tuple[int, str, int, bytes]],
    records: Sequence[Recorded],
    tag_seeds: Mapping[type, int],
) -> bool:
    """Whether every row ``(position, stream, version, state)`` passes its checksum, for a
    reader that decoded the rows first and did not read their tag column: the tag's part of
    each seed is that of the type of its decoded event (``tag_seeds``: each type's
    :func:`tag_seed`). The decoded type is the tag the record's own bytes name, which the
    checksum covers; the tag column, a copy kept for queries, is checked by
    :func:`check_rows` (``onward verify``).

    Args:
        rows: the stored rows.
        records: each row decoded, in order.
        tag_seeds: the seed part of each event type that may be decoded.

    Returns:
        True when all pass; False when one fails or has a type without a seed
        (:func:`check_rows` on the rows with their tags says which and why).
    """
    checksum = checksum_body
    end, prefix = _END, _CHECKSUM_PREFIX_TEXT
    streams: dict[str, int] = {}
    stream_of = streams.get
    golden = version_seed(1)  # inline below: version_seed(v) is v * golden & _MASK

    def new_stream(stream: str) -> int:
        seed = streams[stream] = stream_seed(stream)
        return seed

    try:
        failed = [
            (s, v, st, r.event)
            for (_p, s, v, st), r in zip(rows, records, strict=True)
            if st[:end]
            != (
                prefix
                + checksum(
                    st[end:],
                    (stream_of(s) or new_stream(s))
                    ^ tag_seeds[type(r.event)]
                    ^ (v * golden & _MASK),
                )
            ).encode()
        ]
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError, OverflowError):
        return False
    # Records an onward before xxh3 wrote carry blake2b over the same fields.
    for s, v, st, event in failed:
        tag = type(event).__struct_config__.tag
        if not isinstance(tag, str) or (
            st[:end] != (prefix + legacy_checksum(s, v, tag, st[end:])).encode()
        ):
            return False
    return True


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """The result of :meth:`onward.events.EventLog.verify`.

    Attributes:
        ok: True when no record is damaged or missing (and, from ``onward verify``, every
            lifecycle folds).
        events: the records checked.
        streams: the streams seen.
        head: the last position checked.
        problems: the damaged records, in position order.
        torn_tail: True when every damaged record lies after the last intact one (a write cut
            short at the end of the log), False when there is damage in the middle or records
            are missing.
        head_record: the records compared with the log's head record.
        damaged_streams: each stream that cannot be trusted from one of its records on, by
            its first bad record, in position order.
        quarantined: the damaged task streams whose task a person set aside since (filled in
            by ``onward verify``, which replays the lifecycles).
        unknown_types: the event types of intact records that this onward does not know (a
            newer onward wrote them): not damage, but their records are kept and shown, never
            folded, and a task holding one is not resumed.
    """

    ok: bool
    events: int
    streams: int
    head: int
    problems: list[Problem]
    torn_tail: bool
    head_record: HeadCheck = HeadCheck(status="not tracked")
    damaged_streams: list[StreamDamage] = msgspec.field(default_factory=list)
    quarantined: list[str] = msgspec.field(default_factory=list)
    unknown_types: list[str] = msgspec.field(default_factory=list)

    def where(self) -> list[str]:
        """Where the problems lie, for a human, each place once (empty when ok): a torn tail,
        the newest records gone (the head record names a later end than the last record),
        the head record disagreeing with the records, intact records that their lifecycle
        does not allow, the database's own structure (an index or a page), or damage in the
        middle of the log."""
        places: list[str] = []
        rest = list(self.problems)
        if self.torn_tail:
            places.append("a torn tail (a write cut short at the end of the log)")
            rest = [p for p in rest if p.kind not in _RECORD_KINDS]
        gone = [p for p in rest if p.kind is ProblemKind.MISSING and p.position > self.head]
        if gone:
            places.append("the newest records are gone (from the end of the log)")
        kinds = {p.kind for p in rest if p not in gone}
        if ProblemKind.HEAD in kinds:
            places.append("the log's head record disagrees with its records")
        if ProblemKind.ILLEGAL in kinds:
            places.append("intact records that their lifecycle does not allow")
        if ProblemKind.STORAGE in kinds:
            # REINDEX rebuilds an index whose pages read but disagree with the records; it
            # fails on pages that no longer read (it frees them first), which a dump of the
            # records, reading their table alone, into a new file rebuilds there.
            places.append(
                "the database's own structure, not the records (an index or a page: reads by "
                "stream can come back short or fail; with no worker running and the file "
                "backed up, SQLite's REINDEX rebuilds an index whose pages still read from the "
                "records; where it too says malformed, `sqlite3 LOG .dump | sqlite3 NEW.db` "
                "copies the records into a new file, with its indexes, to put in its place; "
                "where the dump fails too, a page the records need is damaged: restore the log's "
                "backup)"
            )
        if kinds - {ProblemKind.HEAD, ProblemKind.ILLEGAL, ProblemKind.STORAGE}:
            places.append("damage in the middle of the log")
        return places


#: The problems that concern one record's own bytes (the others concern the log as a whole).
_RECORD_KINDS = frozenset(
    {ProblemKind.CORRUPT, ProblemKind.GAP, ProblemKind.CHAIN, ProblemKind.ORDER}
)


def damaged_streams(problems: Iterable[Problem]) -> list[StreamDamage]:
    """The first problem of each stream, as :class:`StreamDamage`, in position order."""
    first: dict[str, StreamDamage] = {}
    for p in sorted(problems, key=lambda p: p.position):
        if p.stream and p.stream not in first:
            first[p.stream] = StreamDamage(
                stream=p.stream,
                version=p.version,
                position=p.position,
                kind=p.kind,
                reason=p.detail,
            )
    return list(first.values())


class Verifier:
    """Checks records fed in position order; :meth:`finish` gives the report.

    Args:
        codec: the codec whose checksums the records carry.
        head: the log's head record, read before the first record is fed (None: the log
            keeps none).
        dense: the backend gives positions with no gaps (SQLite), so that a position missing
            between two records is a removed record.
    """

    def __init__(self, codec: Codec, head: LogHead | None = None, *, dense: bool = False) -> None:
        self._check = codec.check
        self._knows = codec.knows
        self._topics: set[str] = set()  # the tags of the intact records
        # stream -> (version, checksum as stored bytes; None when that record was damaged)
        self._heads: dict[str, tuple[int, bytes | None]] = {}
        self._problems: list[Problem] = []
        self._events = 0
        self._head = 0
        self._last_good = 0
        self._log_head = None if head is HEAD_REMOVED or head is HEAD_DAMAGED else head
        self._head_removed = head is HEAD_REMOVED
        self._head_damaged = head is HEAD_DAMAGED
        self._dense = dense
        self._link = bytes.fromhex(CHAIN_START)
        self._linked = 0  # records linked into the chain (after the head's base, up to its end)
        self._last_linked = self._log_head.base if self._log_head is not None else 0
        self._gaps: list[tuple[int, int]] = []  # positions missing between linked records

    def feed_page(self, rows: list[tuple[int, str, int, str, bytes]]) -> None:
        """Check records in position order: the same as :meth:`feed` on each, faster.

        The common case (an intact record that continues its stream's chain) is checked
        inline; anything else goes through :meth:`feed`, which says what is wrong.
        """
        heads = self._heads
        get = heads.get
        checksum = checksum_body
        streams: dict[str, int] = {}  # the seeds' parts of the page's streams and tags
        tags: dict[str, int] = {}
        start, end = LAYOUT.checksum
        prev_start, prev_end = LAYOUT.prev
        prev_prefix, checksum_prefix = LAYOUT.prev_prefix, LAYOUT.checksum_prefix
        no_head = (0, b"")
        checked = 0
        seen = self._topics.add
        for row in rows:
            position, stream, version, topic, state = row
            try:
                stored = state[start:end]
                seed = streams.get(stream)
                if seed is None:
                    seed = streams[stream] = stream_seed(stream)
                part = tags.get(topic)
                if part is None:
                    part = tags[topic] = tag_seed(topic)
                seed ^= part ^ version_seed(version)
                last_version, last_sum = get(stream, no_head)
                intact = (
                    version == last_version + 1
                    and (
                        state[prev_start:prev_end] == last_sum
                        if state.startswith(prev_prefix, end)
                        else not last_sum
                    )
                    and state.startswith(checksum_prefix)
                    and checksum(state[end:], seed).encode() == stored
                )
            except (TypeError, AttributeError, UnicodeEncodeError, OverflowError):
                intact = False  # a column of the wrong type: _feed says which
            if not intact:
                self._events += checked
                checked = 0
                self._feed(row)
                continue
            heads[stream] = (version, stored)
            seen(topic)
            checked += 1
            self._head = self._last_good = position
        self._events += checked
        if self._log_head is not None:
            self._chain(rows)

    def feed(self, row: tuple[int, str, int, str, bytes]) -> None:
        """Check one record: ``(position, stream, version, topic, state)``."""
        self._feed(row)
        if self._log_head is not None:
            self._chain([row])

    def _chain(self, rows: list[tuple[int, str, int, str, bytes]]) -> None:
        """Link the records the head record covers into the chain, noting missing positions."""
        assert self._log_head is not None
        base, end_position = self._log_head.base, self._log_head.position
        start, end = LAYOUT.checksum
        blake2b = hashlib.blake2b
        link, last = self._link, self._last_linked
        if (
            rows
            and rows[0][0] == last + 1
            and rows[-1][0] <= end_position
            and rows[-1][0] - rows[0][0] == len(rows) - 1
        ):
            # The common page: every record after the last one linked, none missing.
            try:
                for row in rows:
                    link = blake2b(link + row[4][start:end], digest_size=16).digest()
            except TypeError:
                pass  # a state that is not bytes: one at a time below
            else:
                self._link, self._last_linked = link, rows[-1][0]
                self._linked += len(rows)
                return
            link = self._link
        linked = self._linked
        for row in rows:
            position, state = row[0], row[4]
            if position <= base or position > end_position:
                continue
            if position != last + 1:
                self._gaps.append((last + 1, position - 1))
            checksum = state[start:end] if isinstance(state, bytes) else b""
            link = blake2b(link + checksum, digest_size=16).digest()
            last = position
            linked += 1
        self._link, self._last_linked, self._linked = link, last, linked

    def _feed(self, row: tuple[int, str, int, str, bytes]) -> None:
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
        self._topics.add(topic)
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

    def _check_head(self) -> HeadCheck:
        """Compare the records linked with the head record; add what is missing as problems."""
        head = self._log_head
        if self._head_removed:
            self._add(
                ProblemKind.HEAD,
                "",
                0,
                self._head,
                "the head record is gone: the log keeps one, and it was removed",
            )
            return HeadCheck(status="damaged", detail="the head record was removed")
        if self._head_damaged:
            self._add(
                ProblemKind.HEAD,
                "",
                0,
                self._head,
                "the head record is damaged: it holds what onward never writes (a count or "
                "position that is not a number, a chain that is not text)",
            )
            return HeadCheck(status="damaged", detail="the head record is damaged")
        if head is None and not self._head:
            return HeadCheck(
                status="not tracked",
                detail="this log holds no record yet: its head record comes with the first",
            )
        if head is None:
            return HeadCheck(
                status="not tracked",
                detail="this log keeps no head record (written by an older onward and not "
                "appended to since, or a backend that keeps none): a removed tail or stream "
                "cannot be detected",
            )
        found = self._linked
        missing_before = len(self._problems)
        if self._dense:
            for first, last in self._gaps:
                self._missing(first, last, "removed from the middle of the log")
        if self._last_linked < head.position:
            self._missing(
                self._last_linked + 1,
                head.position,
                f"the newest records are gone: the head record says the log ends at position "
                f"{head.position}",
            )
        elif found != head.count and len(self._problems) == missing_before:
            more = "fewer" if found < head.count else "more"
            self._add(
                ProblemKind.HEAD,
                "",
                0,
                head.position,
                f"the log holds {found} records after position {head.base} up to "
                f"{head.position}, {more} than the {head.count} its head record counts",
            )
        chained = self._link.hex() == head.chain
        if (
            not chained
            and len(self._problems) == missing_before
            and not any(p.kind in _RECORD_KINDS for p in self._problems)
        ):
            self._add(
                ProblemKind.HEAD,
                "",
                0,
                head.position,
                "the records do not match the head record's hash chain (a record removed, "
                "added, moved or rewritten)",
            )
        ok = chained and found == head.count and self._last_linked == head.position
        where = f"{found} records after position {head.base}"
        return HeadCheck(
            status="ok" if ok else "damaged",
            base=head.base,
            position=head.position,
            count=head.count,
            found=found,
            detail=(
                f"{where} match the head record's count and hash chain"
                if ok
                else f"{where}; the head record counts {head.count} up to position "
                f"{head.position}, and its hash chain "
                + ("matches" if chained else "does not match")
            ),
        )

    def _missing(self, first: int, last: int, why: str) -> None:
        span = f"position {first} is" if first == last else f"positions {first}..{last} are"
        self._add(ProblemKind.MISSING, "", 0, first, f"{span} missing: {why}")

    def finish(self, head_after: LogHead | None = None) -> VerifyReport:
        """The report over every record fed so far.

        Args:
            head_after: the head record read again after the last record was fed: a record
                past its position was not appended by onward (an append moves the head in its
                own transaction).
        """
        head_record = self._check_head()
        if (
            head_after is not None
            and head_after is not HEAD_REMOVED
            and head_after is not HEAD_DAMAGED
            and self._log_head is not None
            and self._head > head_after.position
        ):
            self._add(
                ProblemKind.HEAD,
                "",
                0,
                head_after.position + 1,
                f"records after position {head_after.position}, where the head record ends, "
                "were not appended by onward",
            )
        problems = sorted(self._problems, key=lambda p: p.position)
        record_problems = [p for p in problems if p.kind in _RECORD_KINDS]
        torn = (
            bool(record_problems)
            and len(record_problems) == len(problems)
            and min(p.position for p in record_problems) > self._last_good
        )
        return VerifyReport(
            ok=not problems,
            events=self._events,
            streams=len(self._heads),
            head=self._head,
            problems=problems,
            torn_tail=torn,
            head_record=head_record,
            damaged_streams=damaged_streams(problems),
            unknown_types=sorted(t for t in self._topics if not self._knows(t)),
        )
