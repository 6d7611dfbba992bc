"""The event log: atomic appends at an expected version, reads, and integrity checks.

:class:`EventLog` holds everything the backends share: encoding, redaction, the payload limit,
the hash chain of each stream and optimistic concurrency. A backend (``MemoryLog``,
``SQLiteLog``, ``PostgresLog``) plugs an eventsourcing application recorder in and may replace
the few queries that its database answers faster.

A stream's versions start at 1 with no gaps. An append states the version it expects the
stream to be at; the insert of version ``expected + 1`` is what detects a clash (the database's
primary key on stream and version), so no read is needed on the common path.

Every read that decodes records for replay or resume checks their checksums first
(``verify_reads``). A backend may keep a **head record** (see :mod:`onward.events.integrity`):
it advances it over the records of each insert in the insert's own transaction, in position
order, and returns it from ``_select_log_head``. A backend whose concurrent writers commit out
of position order (PostgreSQL) cannot do that inside each append; it may advance the head
lazily instead (a reader, under a lock, linking the records committed since, in position
order), or keep none: ``verify`` then says "not tracked".
"""

from __future__ import annotations

import collections
import functools
import os
import random
import re
import threading
import time as _time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

import msgspec
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ConnectionPoolClosedError,
    IntegrityError,
    PersistenceError,
    StoredEvent,
)

from onward.events.base import Event, Meta, Recorded
from onward.events.blobs import (
    DEFAULT_INLINE_LIMIT,
    DEFAULT_PAYLOAD_LIMIT,
    blob_digest,
    join_event,
    join_state,
    split_event,
    split_of,
)
from onward.events.codec import Codec, prev_of, stream_seed, tag_seed, version_seed
from onward.events.codec import checksum_of as _checksum_of
from onward.events.exceptions import (
    BackendError,
    CorruptRecord,
    ImportConflict,
    LogDamaged,
    OnwardError,
    PayloadTooLarge,
    StorageUnavailable,
    UsageError,
    VersionConflict,
)
from onward.events.integrity import (
    LogHead,
    Problem,
    ProblemKind,
    Verifier,
    VerifyReport,
    check_rows,
    checkpoint_seal,
    damaged_streams,
)
from onward.events.outage import DEFAULT_TOLERANCE, Outage, check_tolerance
from onward.events.redaction import Redactor, redacted_logger
from onward.events.watch import PollingWatch, Watch

__all__ = [
    "Append",
    "AppendResult",
    "Checkpoint",
    "Clock",
    "Context",
    "EventLog",
    "StoredRow",
    "new_event_id",
]

logger = redacted_logger("onward.events")

#: A source of time in seconds since the epoch; tests inject a fake one.
Clock = Callable[[], float]

#: ``(position, stream, version, topic, state)`` as a backend returns it.
StoredRow = tuple[int, str, int, str, bytes]
_Row = TypeVar("_Row", StoredRow, tuple[int, str, int, bytes])


class StreamTail(NamedTuple):
    """What :meth:`EventLog.read_stream_on` read of a stream.

    Attributes:
        events: the events, in version order.
        link: the checksum of the last version read (the next read's ``link``).
        size: the bytes the events were decoded from (each record's stored state, a split
            one's joined with its blobs).
    """

    events: list[Recorded]
    link: str
    size: int


_T = TypeVar("_T")

_HEAD_CACHE_SIZE = 200_000
#: How many of its last committed rows, and how many of their bytes, a log keeps for its own
#: fold (:meth:`EventLog.own_rows`): a log nobody folds holds no more than this.
_OWN_ROWS = 4096
_OWN_BYTES = 4 * 1024 * 1024
_ANY_VERSION_RETRIES = 20
#: How many blobs :meth:`EventLog.blobs` asks for in one query (SQLite's bound parameters).
_BLOBS_PER_READ = 500
#: How many streams :meth:`EventLog.read_streams_on` asks for in one query (the same bound).
_STREAMS_PER_READ = 500
#: The bytes of blobs read together to check them (their stored sizes say): a page of small
#: ones in one read, a large one alone.
_CHECK_BYTES = 16 * 2**20
# The largest version or position a backend stores (a signed 64-bit integer, as SQLite's and
# PostgreSQL's BIGINT).
_MAX_INT64 = 2**63 - 1


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """Who appends and why: copied into the envelope of every event of one append.

    Attributes:
        session: the session the events belong to.
        causation_id: the id of the event that caused them.
        correlation_id: the id shared by one chain of work.
        actor: the worker appending.
    """

    session: str = ""
    causation_id: str = ""
    correlation_id: str = ""
    actor: str = ""


class Append(msgspec.Struct, frozen=True, kw_only=True):
    """Events for one stream, part of an atomic :meth:`EventLog.commit`.

    Attributes:
        stream: the stream to append to.
        events: the events, in order.
        expected_version: the stream's version before the append (0 for a new stream), or
            ``None`` to append after whatever is there.
        event_ids: ids for the events (32 hex digits each); pass the same ids again to make a
            retry after an ambiguous commit a no-op. Fresh ids by default.
        context: the envelope fields shared by these events.
        causes: a causation id per event, overriding ``context.causation_id`` (so that a
            decision can point at the error it answers, appended in the same batch).
        wakes: the commit may make work runnable for an idle worker though its events do not
            say so by their kind (a subtask's end, whose parent may wait for it): it wakes
            the log's watchers (a PostgreSQL log notifies, see
            :data:`onward.events.postgres.QUIET_TOPICS`).
    """

    stream: str
    events: Sequence[Event]
    expected_version: int | None
    event_ids: Sequence[str] | None = None
    context: Context = Context()
    causes: Sequence[str] | None = None
    wakes: bool = False


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an append wrote.

    Attributes:
        event_ids: the ids of the appended events, in order.
        positions: their global positions (empty when the backend does not report them).
        versions: each stream's version after the append.
        already_recorded: True when these exact events were already in the log (a retried
            append after an ambiguous commit), so nothing new was written.
    """

    event_ids: list[str]
    positions: list[int]
    versions: dict[str, int]
    already_recorded: bool = False


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A saved picture of a projection, so that reopening reads only the tail of the log.

    Attributes:
        name: the projection's name.
        schema: the projection's schema version when it was saved; a checkpoint of another
            schema is ignored and the log replayed.
        position: the last position folded into it.
        data: the projection's encoded state.
    """

    name: str
    schema: int
    position: int
    data: bytes


# Event ids come from a generator of onward's own, seeded from the system's random source when
# the process starts and again in every child a fork makes (never from the ``random`` module's
# shared one, which an application may seed): no system call and no lock on the step path.
_IDS = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _IDS.seed(os.urandom(32)))


def new_event_id() -> str:
    """A fresh random event id (32 hex digits)."""
    # The 16 bytes' hex: the same digits as formatting the int with "032x", in a third of
    # the time (an id or more on every step).
    return _IDS.getrandbits(128).to_bytes(16).hex()


def new_event_ids(count: int) -> list[str]:
    """``count`` fresh random event ids: the hex digits of one draw of ``128 * count`` bits,
    32 to an id (formatting each id's number on its own costs several times more)."""
    if count == 1:
        return [_IDS.getrandbits(128).to_bytes(16).hex()]
    digits = _IDS.getrandbits(128 * count).to_bytes(16 * count, "big").hex()
    # The draw's lowest 128 bits come first from the generator: cut from the end, the ids
    # are those of ``count`` draws of 128 bits, in their order.
    return [digits[i - 32 : i] for i in range(32 * count, 0, -32)]


_new_object = object.__new__


def _stored_event(stream: str, version: int, topic: str, state: bytes) -> StoredEvent:
    """``StoredEvent(stream, version, topic, state)``, built without the frozen dataclass's
    ``__init__`` (its four ``object.__setattr__`` calls cost more than the rest of a record's
    sealing): the same object, its fields set in their order."""
    record: StoredEvent = _new_object(StoredEvent)
    fields = record.__dict__
    fields["originator_id"] = stream
    fields["originator_version"] = version
    fields["topic"] = topic
    fields["state"] = state
    return record


_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


#: What :meth:`EventLog._encode` returns: the records, each append's (stream, expected
#: version, count), the event ids, each stream's new head, and the blobs by digest.
_Encoded = tuple[
    list[StoredEvent],
    list[tuple[str, int, int]],
    list[str],
    dict[str, tuple[int, str]],
    dict[str, bytes],
]

_SPLIT_KEY = b',"split":'

#: What the names of an append checked for secrets name (see :meth:`Redactor.check_names`).
_NAMED = ("stream id", "session name", "actor")

#: Each event type's tag and its part of a record's seed (:func:`tag_seed`), looked up once
#: for all appends: both depend on the type alone.
_TAG_PARTS: dict[type[Event], tuple[str, int]] = {}
_TAG_PARTS_MAX = 1024


class _EnvelopeOnly(msgspec.Struct):
    meta: Meta


_ENVELOPE_ONLY = msgspec.json.Decoder(_EnvelopeOnly)


def _check_event_id(stream: str, event_id: object) -> None:
    if not isinstance(event_id, str) or _EVENT_ID.fullmatch(event_id) is None:
        raise UsageError(
            f"stream {stream!r}: event id {event_id!r} must be 1-64 letters, digits, '-' or '_'"
        )


def _wakes(appends: Sequence[Append]) -> bool:
    """Whether any of the appends wakes the log's watchers whatever its events' kinds."""
    # A loop: a generator for any() costs more than most appends' one look.
    for a in appends:  # noqa: SIM110
        if a.wakes:
            return True
    return False


def _encodable(text: str) -> bool:
    """Whether a text encodes to UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


#: The times a record may carry: years 1 to 9999, in seconds since 1970 (what a date holds).
_FIRST = -62_135_596_800
_LAST = 253_402_300_800

#: A record's version's part of its seed is ``version * _GOLDEN & _MASK`` (``version_seed``).
_GOLDEN = version_seed(1)
_MASK = 2**64 - 1


class EventLog(ABC):
    """An append-only log of events in streams, with a global order.

    Do not build one directly: call :func:`onward.events.open_log`.

    Args:
        recorder: the eventsourcing application recorder that stores the records.
        checkpoints: the eventsourcing recorder that stores projection checkpoints.
        url: the URL the log was opened with (without any password), for messages.
        codec: the codec; one that knows every event type by default.
        redactor: the secret redactor applied to every event before it is written.
        clock: the source of the envelope's time.
        payload_limit: the largest encoded event accepted, in bytes, blobs included (256 MiB
            by default); a larger one raises :class:`PayloadTooLarge` and nothing is written.
        inline_limit: the largest encoded event kept whole in its record (1 MiB by default);
            the largest fields of a larger one are stored as blobs beside the log (see
            :mod:`onward.events.blobs`) and read back with it.
        outage_tolerance: how long, in seconds, appends and reads retry through transient
            storage errors (a locked file, a restarting server) before they raise
            :class:`StorageUnavailable` (see :mod:`onward.events.outage`).
        verify_reads: check each record's checksum whenever it is decoded for replay or
            resume (:meth:`read`, :meth:`read_pages`, :meth:`read_stream`); False trusts the
            storage and reads faster.
    """

    #: Whether the backend's positions have no gaps, so that a missing one is a removed record.
    dense_positions = False
    #: Whether the log keeps the rows of its last commits for its own fold (:meth:`own_rows`):
    #: a backend that can tell whether anyone else changed the storage since
    #: (:meth:`changes_of_others`).
    remembers_own_rows = False

    def __init__(
        self,
        recorder: ApplicationRecorder,
        checkpoints: AggregateRecorder,
        *,
        url: str,
        codec: Codec | None = None,
        redactor: Redactor | None = None,
        clock: Clock = _time.time,
        payload_limit: int = DEFAULT_PAYLOAD_LIMIT,
        inline_limit: int = DEFAULT_INLINE_LIMIT,
        outage_tolerance: float = DEFAULT_TOLERANCE,
        verify_reads: bool = True,
    ) -> None:
        self.check_options(
            payload_limit=payload_limit,
            inline_limit=inline_limit,
            outage_tolerance=outage_tolerance,
        )
        self._recorder = recorder
        self._checkpoints = checkpoints
        self.url = url
        self.codec = codec or Codec()
        self.redactor = redactor or Redactor()
        self.clock = clock
        self.payload_limit = payload_limit
        self.inline_limit = inline_limit
        self.outage = Outage(url, outage_tolerance)
        self.verify_reads = verify_reads
        self._heads: dict[str, tuple[int, str]] = {}
        self._heads_lock = threading.Lock()
        # The rows of this log's last commits, as stored, for its own fold (:meth:`own_rows`).
        self._own: collections.deque[StoredRow] = collections.deque()
        self._own_bytes = 0
        self._closed = False

    @staticmethod
    def check_options(**options: Any) -> None:
        """Check the options common to every backend, before a backend creates anything.

        Raises:
            UsageError: a limit that is not a positive int, or an outage tolerance that is
                not a number of seconds in range.
        """
        for name in ("payload_limit", "inline_limit"):
            limit = options.get(name, 1)
            if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
                raise UsageError(f"{name} must be a positive int (bytes), got {limit!r}")
        check_tolerance(options.get("outage_tolerance", DEFAULT_TOLERANCE))

    # -- backend hooks -------------------------------------------------------------------

    def _insert(self, records: list[StoredEvent], wakes: bool = False) -> list[int]:
        """Insert records atomically; return their positions (or [] when unknown).

        ``wakes``: the commit wakes the log's watchers whatever its records' kinds (see
        :attr:`Append.wakes`); a backend whose watch sees every commit ignores it.
        """
        ids = self._recorder.insert_events(records)
        return list(ids) if ids else []

    def _insert_with_blobs(
        self, records: list[StoredEvent], blobs: dict[str, bytes], wakes: bool = False
    ) -> list[int]:
        """Store blobs, then insert records that reference them; return the records' positions.

        By default the blobs are stored first, in a transaction of their own: a blob whose
        records then fail to commit stays, unreferenced and harmless (the same value appended
        again finds it). A backend may store both in one transaction.
        """
        self._store_blobs(blobs)
        return self._insert(records, wakes)

    def _store_blobs(self, blobs: dict[str, bytes]) -> None:
        """Store blobs under their digests, keeping one already there (content-addressed)."""
        raise NotImplementedError(f"{type(self).__name__} stores no blobs")

    def _select_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """The blobs found among ``digests``, by digest (a missing one is left out)."""
        return {}

    def _select_blob_digests(self) -> list[str]:
        """The digest of every blob stored."""
        return []

    def _select_blob_sizes(self, digests: Sequence[str]) -> dict[str, int]:
        """The length of the bytes of each blob found among ``digests``."""
        return {d: len(data) for d, data in self._select_blobs(digests).items()}

    @abstractmethod
    def _select_stream(self, stream: str, after: int, upto: int | None) -> list[StoredRow]:
        """The records of one stream with version in ``(after, upto]``, by version."""

    def _select_page(self, after: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` records with position > ``after``, by position."""
        notes = self._recorder.select_notifications(after, limit, inclusive_of_start=False)
        return [(n.id, str(n.originator_id), n.originator_version, n.topic, n.state) for n in notes]

    def _select_states(self, after: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        """Like :meth:`_select_page`, without the tag column (a reader decodes it)."""
        return [(p, s, v, st) for p, s, v, _t, st in self._select_page(after, limit)]

    def _select_head(self) -> int:
        return self._recorder.max_notification_id() or 0

    def _select_stream_head(self, stream: str) -> StoredEvent | None:
        found = self._recorder.select_events(stream, desc=True, limit=1)
        return found[0] if found else None

    def _select_streams(self) -> list[str]:
        """Every stream id in the log (used by the CLI; a full scan by default)."""
        seen: dict[str, None] = {}
        for rows in self.read_rows():
            for row in rows:
                seen.setdefault(row[1], None)
        return list(seen)

    def _select_log_head(self) -> LogHead | None:
        """The head record, written with every append (None: this log keeps none).

        A backend that keeps one updates it in the transaction of each insert; PostgreSQL,
        whose concurrent writers commit out of position order, keeps none for now.
        """
        return None

    def _prune_checkpoints(self, name: str, below: int) -> None:  # noqa: B027 - optional hook
        """Delete the checkpoints of ``name`` older than version ``below``."""

    def _close_backend(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's connections."""

    def _watch(self) -> Watch:
        """A watch of this log (polling its head by default)."""
        return PollingWatch(self._select_head)

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        event_ids: Sequence[str] | None = None,
        context: Context = Context(),  # noqa: B008 - immutable
        wakes: bool = False,
    ) -> AppendResult:
        """Append events to one stream atomically at an expected version.

        Args:
            stream: the stream id.
            events: the events to append, in order (at least one).
            expected_version: the stream's current version (0 for a new stream), or ``None``
                to append after whatever is there.
            event_ids: ids for the events; re-appending the same ids at the same version is a
                no-op (for retries after an ambiguous commit).
            context: session, causation, correlation and actor for the envelopes.
            wakes: wake the log's watchers whatever the events' kinds (see
                :attr:`Append.wakes`).

        Returns:
            What was written.

        Raises:
            VersionConflict: the stream is not at ``expected_version``.
            PayloadTooLarge: an event encodes to more than the payload limit.
            UnencodableValue: an event holds a value that cannot be encoded.
            BackendError: the database failed.
        """
        return self.commit(
            [
                Append(
                    stream=stream,
                    events=events,
                    expected_version=expected_version,
                    event_ids=event_ids,
                    context=context,
                    wakes=wakes,
                )
            ]
        )

    def commit(self, appends: Sequence[Append]) -> AppendResult:
        """Append to several streams in one atomic transaction: all or nothing.

        Raises:
            VersionConflict: one of the streams is not at its expected version.
            PayloadTooLarge: an event encodes to more than the payload limit.
            UsageError: an empty append, a stream named twice, ids that do not match.
            BackendError: the database failed.
        """
        self._check_open()
        if not appends:
            raise UsageError("commit() needs at least one Append")
        for _ in range(_ANY_VERSION_RETRIES):
            records, resolved, ids, heads, blobs = self._encode(appends)
            try:
                # Through an outage the same records are inserted again: if an attempt did
                # commit after all, the next clashes with its own records (already recorded).
                positions = self.outage.call(
                    f"append to {resolved[0][0]!r}",
                    self._inserter(records, blobs, _wakes(appends)),
                )
            except IntegrityError as exc:
                clash = self._explain_clash(resolved, ids)
                if isinstance(clash, AppendResult):
                    return clash
                if all(a.expected_version is not None for a in appends):
                    raise clash from exc
                for a in appends:  # some stream was at "any" version: read heads again
                    self._forget(a.stream)
                continue
            except PersistenceError as exc:
                raise self._failure(f"append to {self.url}", exc) from exc
            versions = self._remember(heads, records, positions, blobs)
            return AppendResult(event_ids=ids, positions=positions, versions=versions)
        raise BackendError(f"append to {self.url}: gave up after {_ANY_VERSION_RETRIES} clashes")

    def commit_groups(self, groups: Sequence[Sequence[Append]]) -> list[AppendResult | OnwardError]:
        """Commit independent groups of appends in one transaction (one fsync for all): each
        group is all or nothing at its streams' expected versions, as :meth:`commit` would
        make it, and a group that cannot be committed does not hold the others back.

        This is the group commit of many tasks whose steps end together: no stream may appear
        in two groups.

        Returns:
            Per group, in order, what :meth:`commit` would have returned or raised (a
            :class:`VersionConflict`, a :class:`UsageError`...).

        Raises:
            StorageUnavailable: an outage outlasted the tolerance (nothing was committed).
            BackendError: the database failed otherwise.
        """
        self._check_open()
        results: list[AppendResult | OnwardError | None] = [None] * len(groups)
        encoded: list[tuple[int, _Encoded]] = []
        for i, group in enumerate(groups):
            try:
                if not group:
                    raise UsageError("commit() needs at least one Append")
                encoded.append((i, self._encode(group)))
            except OnwardError as exc:
                results[i] = exc
        records = [record for _, found in encoded for record in found[0]]
        blobs = {digest: data for _, found in encoded for digest, data in found[4].items()}
        wakes = any(a.wakes for i, _ in encoded for a in groups[i])
        if records:
            try:
                positions = self.outage.call(
                    f"append of {len(encoded)} groups", self._inserter(records, blobs, wakes)
                )
            except IntegrityError:
                # A group clashed (another worker got there first): each on its own, then.
                for i, _ in encoded:
                    try:
                        results[i] = self.commit(groups[i])
                    except OnwardError as exc:
                        results[i] = exc
                positions = None
            except PersistenceError as exc:
                raise self._failure(f"append to {self.url}", exc) from exc
            if positions is not None:
                at = 0
                for i, (group_records, _resolved, ids, heads, group_blobs) in encoded:
                    mine = positions[at : at + len(group_records)] if positions else []
                    at += len(group_records)
                    versions = self._remember(heads, group_records, mine, group_blobs)
                    results[i] = AppendResult(event_ids=ids, positions=mine, versions=versions)
        return [r if r is not None else UsageError("nothing to commit") for r in results]

    def _inserter(
        self, records: list[StoredEvent], blobs: dict[str, bytes], wakes: bool = False
    ) -> Callable[[], list[int]]:
        if blobs:
            return functools.partial(self._insert_with_blobs, records, blobs, wakes)
        return functools.partial(self._insert, records, wakes)

    def _encode(self, appends: Sequence[Append]) -> _Encoded:
        now = self.clock()
        if not isinstance(now, int | float) or not _FIRST <= now < _LAST:  # NaN too
            raise UsageError(
                f"the log's clock gave {now!r}, not a time in seconds since 1970 within years "
                "1 to 9999 (time.time, not time.time_ns or a str): nothing is written"
            )
        codec = self.codec
        limit = self.payload_limit
        inline = self.inline_limit
        blobs: dict[str, bytes] = {}
        records: list[StoredEvent] = []
        heads: dict[str, tuple[int, str]] = {}
        redactor, encode_event, seal = self.redactor, codec.encode_event, codec.seal_with
        seal_seeded = codec.seal_seeded
        tags = _TAG_PARTS
        golden, mask = _GOLDEN, _MASK
        check = codec.check_decodes
        stored_event = _stored_event
        resolved: list[tuple[str, int, int]] = []  # stream, expected version, count
        all_ids: list[str] = []
        streams: set[str] = set()
        for a in appends:
            stream, events, event_ids, causes = a.stream, a.events, a.event_ids, a.causes
            if type(stream) is not str or not stream:
                raise UsageError(f"stream id must be a non-empty str, got {stream!r}")
            if "\x00" in stream or not _encodable(stream):
                # PostgreSQL cannot store a NUL, and no database a lone surrogate.
                shown = self.redactor.redact(stream)
                raise UsageError(f"stream id {shown!r} holds a NUL or a lone surrogate")
            if not isinstance(events, list | tuple):
                raise UsageError(
                    f"append to stream {stream!r}: events must be a list of events, got "
                    f"{type(events).__name__}"
                )
            if not events:
                raise UsageError(f"append to stream {stream!r} has no events")
            # Ids are stored as given (redacting one would change what it names): refuse one
            # that holds a secret.
            ctx = a.context
            redactor.check_names((stream, ctx.session, ctx.actor), _NAMED)
            if stream in streams:
                raise UsageError(f"stream {stream!r} appears twice in one commit")
            streams.add(stream)
            if event_ids is not None and a.expected_version is None:
                raise UsageError(
                    f"stream {stream!r}: event_ids make a retry a no-op only at an expected "
                    "version; pass expected_version too"
                )
            if causes is not None and len(causes) != len(events):
                raise UsageError(
                    f"stream {stream!r}: {len(causes)} causes for {len(events)} events"
                )
            if event_ids is not None and len(event_ids) != len(events):
                raise UsageError(
                    f"stream {stream!r}: {len(event_ids)} event ids for {len(events)} events"
                )
            version, prev = self._head_for(stream, a.expected_version)
            resolved.append((stream, version, len(events)))
            for event in events:
                if not isinstance(event, Event):
                    raise UsageError(f"stream {stream!r}: {event!r} is not an events.Event")
            jsons = redactor.redact_json_many(
                [encode_event(event) for event in events], own_id=ctx.correlation_id
            )
            keys: list[bytes] | None = None  # where the event goes in each record
            # Index loops: a zip(strict=True) parses its keyword on every call, and the
            # lists are of one length by construction.
            for j in range(len(jsons)):
                event, event_json = events[j], jsons[j]
                if len(event_json) > limit:
                    raise PayloadTooLarge(
                        f"stream {stream!r}: {type(event).__name__} encodes to "
                        f"{len(event_json)} bytes, over the log's limit of {limit}",
                        stream=stream,
                        size=len(event_json),
                        limit=limit,
                    )
                check(event, event_json)
                if len(event_json) > inline:
                    split = split_event(event_json, inline)
                    if split is not None:
                        blobs.update(split.blobs)
                        jsons[j] = split.body()
                        keys = keys or [b',"event":'] * len(jsons)
                        keys[j] = _SPLIT_KEY
            if event_ids is None:
                ids = new_event_ids(len(events))
            else:
                ids = list(event_ids)
                for event_id in ids:
                    _check_event_id(stream, event_id)
            tail = codec.meta_tail(
                now, ctx.session, ctx.causation_id, ctx.correlation_id, ctx.actor
            )
            stream_part = stream_seed(stream)
            for i in range(len(jsons)):
                event, event_json = events[i], jsons[i]
                version += 1
                tag = tags.get(type(event))
                if tag is None:
                    topic = event.__struct_config__.tag  # a new object at each look
                    assert isinstance(topic, str)
                    if len(tags) >= _TAG_PARTS_MAX:  # event types made on the fly: stay bounded
                        tags.clear()
                    tag = tags[type(event)] = (topic, tag_seed(topic))
                topic = tag[0]
                if keys is not None and keys[i] == _SPLIT_KEY:
                    # The event leaves "event" for "split" (after the envelope, as usual).
                    state, prev = seal(
                        f"{stream}\x00".encode(),
                        version,
                        topic.encode(),
                        codec.encode_meta(
                            Meta(
                                checksum=codec.placeholder(),
                                prev=prev,
                                event_id=ids[i],
                                time=now,
                                session=ctx.session,
                                causation_id=ctx.causation_id if causes is None else causes[i],
                                correlation_id=ctx.correlation_id,
                                actor=ctx.actor,
                            )
                        ),
                        event_json,
                        key=_SPLIT_KEY,
                    )
                    records.append(stored_event(stream, version, topic, state))
                    continue
                if causes is None:
                    state, prev = seal_seeded(
                        stream_part ^ tag[1] ^ (version * golden & mask),
                        prev,
                        ids[i],
                        tail,
                        event_json,
                    )
                    records.append(stored_event(stream, version, topic, state))
                    continue
                meta_json = codec.encode_meta(
                    Meta(
                        checksum=codec.placeholder(),
                        prev=prev,
                        event_id=ids[i],
                        time=now,
                        session=ctx.session,
                        causation_id=causes[i],
                        correlation_id=ctx.correlation_id,
                        actor=ctx.actor,
                    )
                )
                stream_prefix = f"{stream}\x00".encode()
                state, prev = seal(stream_prefix, version, topic.encode(), meta_json, event_json)
                records.append(stored_event(stream, version, topic, state))
            heads[stream] = (version, prev)
            all_ids.extend(ids)
        return records, resolved, all_ids, heads, blobs

    def _head_for(self, stream: str, expected: int | None) -> tuple[int, str]:
        """The version to append after and the checksum it has (the new event's ``prev``).

        Raises:
            UsageError: ``expected`` is neither None nor an int from 0 to 2**63 - 1 (a bool,
                a float or a huge int would be taken as, or clash with, another version).
        """
        if expected is not None and (type(expected) is not int or not 0 <= expected <= _MAX_INT64):
            raise UsageError(
                f"stream {stream!r}: expected_version must be None or an int from 0 to "
                f"2**63 - 1, got {expected!r}"
            )
        cached = self._heads.get(stream)
        if cached is not None and (expected is None or cached[0] == expected):
            return cached  # the common case: this log appended the stream's last event
        try:
            return self.outage.call(
                f"append to {stream!r}", lambda: self._select_head_for(stream, expected)
            )
        except PersistenceError as exc:
            raise self._failure(f"append to {self.url}", exc) from exc

    def _select_head_for(self, stream: str, expected: int | None) -> tuple[int, str]:
        cached = self._heads.get(stream)
        if expected is None:
            if cached is not None:
                return cached
            last = self._select_stream_head(stream)
            if last is None:
                return 0, ""
            return last.originator_version, _link_to(last.state)
        if expected == 0:
            return 0, ""
        if cached is not None and cached[0] == expected:
            return cached
        rows = self._select_stream(stream, expected - 1, expected)
        if not rows:
            last = self._select_stream_head(stream)
            raise VersionConflict(stream, expected, last.originator_version if last else 0)
        return expected, _link_to(rows[0][4])

    def _explain_clash(
        self, resolved: list[tuple[str, int, int]], ids: list[str]
    ) -> AppendResult | VersionConflict:
        """After a primary-key clash: the same events already there, or a real conflict."""
        recorded_ids: list[str] = []
        positions: list[int] = []
        versions: dict[str, int] = {}
        for stream, expected, count in resolved:
            rows = self._read(
                f"read stream {stream!r}",
                functools.partial(self._select_stream, stream, expected, expected + count),
            )
            for row in rows:
                try:  # the envelope alone: a split record's blobs are not needed
                    meta = _ENVELOPE_ONLY.decode(row[4]).meta
                except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                    meta = self.decode_record(row[1], row[2], row[0], row[3], row[4]).meta
                recorded_ids.append(meta.event_id)
                positions.append(row[0])
            versions[stream] = expected + count
        if recorded_ids == ids:
            logger.debug("append of %d events was already recorded", len(ids))
            return AppendResult(
                event_ids=ids, positions=positions, versions=versions, already_recorded=True
            )
        for stream, expected, _count in resolved:
            self._forget(stream)
            last = self._read(
                f"read stream {stream!r}", functools.partial(self._select_stream_head, stream)
            )
            actual = last.originator_version if last else 0
            if actual != expected:
                return VersionConflict(stream, expected, actual)
        stream, expected, _ = resolved[0]
        return VersionConflict(stream, expected, None)

    def _remember(
        self,
        heads: dict[str, tuple[int, str]],
        records: list[StoredEvent],
        positions: list[int],
        blobs: dict[str, bytes],
    ) -> dict[str, int]:
        """Cache each stream's new head (version and checksum) for the next append, and the
        committed records as rows for :meth:`own_rows` (not those that reference blobs, which
        a fold reads with their blobs)."""
        versions: dict[str, int] = {}
        with self._heads_lock:
            if self.remembers_own_rows and not blobs and len(positions) == len(records):
                own = self._own
                size = self._own_bytes
                for j in range(len(records)):
                    r = records[j]
                    own.append(
                        (positions[j], str(r.originator_id), r.originator_version, r.topic, r.state)
                    )
                    size += len(r.state)
                while own and (len(own) > _OWN_ROWS or size > _OWN_BYTES):
                    size -= len(own.popleft()[4])  # the oldest go: a fold past them reads them
                self._own_bytes = size
            cache = self._heads
            for stream, head in heads.items():
                cache.pop(stream, None)  # re-insert at the end: the cache evicts oldest first
                cache[stream] = head
                versions[stream] = head[0]
            while len(cache) > _HEAD_CACHE_SIZE:
                del cache[next(iter(cache))]
        return versions

    def _saw_head(self, stream: str, version: int, link: str) -> None:
        """Cache a stream's head as a read to its end found it (its last record, read whole
        from the log): the reader's next append there, at that version (a claim after the
        task's history was read), needs no read of the record it follows. Kept only over an
        older head: a newer one is this log's own append that went in meanwhile. A head that
        is stale by then (another worker appended since) costs what a stale own head costs:
        the insert clashes, the stream is looked at again."""
        with self._heads_lock:
            cache = self._heads
            cached = cache.get(stream)
            if cached is not None and cached[0] >= version:
                return
            cache.pop(stream, None)  # at the end: the cache evicts oldest first
            cache[stream] = (version, link)
            while len(cache) > _HEAD_CACHE_SIZE:
                del cache[next(iter(cache))]

    def _forget(self, stream: str) -> None:
        with self._heads_lock:
            self._heads.pop(stream, None)

    # -- reading -------------------------------------------------------------------------

    def read_stream(
        self, stream: str, *, after: int = 0, upto: int | None = None, verify: bool | None = None
    ) -> list[Recorded]:
        """The events of one stream, in version order.

        Args:
            stream: the stream id.
            after: only versions greater than this.
            upto: only versions up to this one (all when None): the records after it are not
                read, nor checked.
            verify: check each record's checksum, that the versions follow each other and
                that each record points at its predecessor's checksum (the log's
                ``verify_reads`` by default; False to audit a damaged stream).

        Raises:
            UsageError: ``after`` (or ``upto``) is not a non-negative int.
            CorruptRecord: a record does not decode, fails its checksum, or does not follow
                its predecessor (a removed or rewritten record).
        """
        self._check_open()
        _check_bound("after", after)
        if upto is not None:
            _check_bound("upto", upto)
        decode = self.decode_record
        rows = self._read(
            f"read stream {stream!r}", lambda: self._select_stream(stream, after, upto)
        )
        if self.verify_reads if verify is None else verify:
            _check_stream(rows, after)
        return [decode(s, v, p, t, st) for p, s, v, t, st in rows]

    def read_stream_on(self, stream: str, *, after: int = 0, link: str = "") -> StreamTail | None:
        """The events of one stream after version ``after``, for a reader that keeps what it
        read and reads only what came since: the first event read must point at ``link``,
        the checksum of version ``after`` as that reader read it ("" for the stream's start).
        Returns the events with the checksum of the last version read (``link`` when there
        is none after ``after``) and their size; or None when the stream no longer goes on
        from what the reader holds (its tail was removed and written again): the reader
        reads it whole again.

        Raises:
            UsageError: ``after`` is not a non-negative int.
            CorruptRecord: as :meth:`read_stream` (the log's ``verify_reads`` decides whether
                checksums are checked; the link to ``link`` always is).
        """
        self._check_open()
        _check_bound("after", after)
        rows = self._read(
            f"read stream {stream!r}", lambda: self._select_stream(stream, after, None)
        )
        return self._tail_of(stream, rows, after, link)

    def read_streams_on(
        self, streams: Sequence[str]
    ) -> dict[str, StreamTail | CorruptRecord | None]:
        """:meth:`read_stream_on` of several whole streams (``after`` 0, ``link`` ""), read
        together (one query for many streams where the backend can): what a worker claiming
        many tasks at once reads of their histories.

        Returns:
            Per stream, what :meth:`read_stream_on` would have returned, or the
            :class:`CorruptRecord` it would have raised: a damaged stream does not hold the
            others back.

        Raises:
            BackendError: the database failed (StorageUnavailable: an outage outlasted the
                tolerance).
        """
        self._check_open()
        wanted = list(dict.fromkeys(streams))
        by_stream: dict[str, list[StoredRow]] = {stream: [] for stream in wanted}
        for at in range(0, len(wanted), _STREAMS_PER_READ):
            part = wanted[at : at + _STREAMS_PER_READ]
            rows = self._read(
                f"read {len(part)} streams from {part[0]!r}",
                functools.partial(self._select_rows_of, part),
            )
            for row in rows:
                by_stream[row[1]].append(row)
        found: dict[str, StreamTail | CorruptRecord | None] = {}
        for stream, rows in by_stream.items():
            try:
                found[stream] = self._tail_of(stream, rows, 0, "")
            except CorruptRecord as damage:
                found[stream] = damage
        return found

    def _select_rows_of(self, streams: Sequence[str]) -> list[StoredRow]:
        """The records of several streams, each stream's by version (a backend that can
        reads them in one query)."""
        return [row for stream in streams for row in self._select_stream(stream, 0, None)]

    def _tail_of(
        self, stream: str, rows: list[StoredRow], after: int, link: str
    ) -> StreamTail | None:
        """:meth:`read_stream_on` of the rows read of a stream after version ``after``."""
        if not rows:
            return StreamTail([], link, 0)
        if self.verify_reads:
            _check_stream(rows, after)
        if prev_of(rows[0][4]) != link:
            return None
        decode = self._decode_sized
        events, size = [], 0
        for p, s, v, t, st in rows:
            event, stored = decode(s, v, p, t, st)
            events.append(event)
            size += stored
        last = _link_to(rows[-1][4])
        self._saw_head(stream, rows[-1][2], last)
        return StreamTail(events, last, size)

    def decode_record(
        self, stream: str, version: int, position: int, topic: str, state: bytes
    ) -> Recorded:
        """Decode one stored record, joining a split one with its blobs (its checksum is not
        checked: :func:`onward.events.integrity.check_rows` does that).

        Raises:
            CorruptRecord: the record does not decode, or a blob it references is missing or
                does not match its digest (``kind="blob"``).
        """
        return self._decode_sized(stream, version, position, topic, state)[0]

    def _decode_sized(
        self, stream: str, version: int, position: int, topic: str, state: bytes
    ) -> tuple[Recorded, int]:
        """:meth:`decode_record`, and the bytes it decoded (a split record's joined state)."""
        try:
            return self.codec.decode(stream, version, position, topic, state), len(state)
        except CorruptRecord:
            joined = self._joined(stream, version, position, state)
            if joined is None:
                raise
        return self.codec.decode(stream, version, position, topic, joined), len(joined)

    def decode_state(self, position: int, stream: str, version: int, state: bytes) -> Recorded:
        """Like :meth:`decode_record`, for a record read without its tag column (the event's
        ``type`` is its tag).

        Raises:
            CorruptRecord: as :meth:`decode_record`.
        """
        try:
            return self.codec.decode_state(position, stream, version, state)
        except CorruptRecord:
            joined = self._joined(stream, version, position, state)
            if joined is None:
                raise
        return self.codec.decode_state(position, stream, version, joined)

    def _decode_page(self, rows: list[StoredRow]) -> list[Recorded]:
        typed = self.codec.typed_decoder
        if typed is not None:
            decode = typed.decode
            try:
                return [
                    Recorded(s, v, p, (both := decode(st)).meta, both.event)
                    for p, s, v, _t, st in rows
                ]
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                pass  # an old, unknown, split or damaged record in this page: one at a time
        decode_record = self.decode_record
        return [decode_record(s, v, p, t, st) for p, s, v, t, st in rows]

    def _joined(self, stream: str, version: int, position: int, state: bytes) -> bytes | None:
        """The state of a split record joined with its blobs (None: not a split record).

        Raises:
            CorruptRecord: a blob is missing, or does not match its digest (checked unless the
                log was opened with ``verify_reads=False``).
        """
        split = split_of(state) if isinstance(state, bytes) else None
        if split is None:
            return None
        meta_json, refs, rest = split
        found = self.split_blobs(stream, version, position, refs)
        return join_state(meta_json, join_event(rest, refs, found))

    def split_blobs(
        self, stream: str, version: int, position: int, refs: Sequence[tuple[str, str]]
    ) -> dict[str, bytes]:
        """The blobs a split record references, each checked against its digest (unless the
        log was opened with ``verify_reads=False``).

        Args:
            stream: the record's stream.
            version: its version.
            position: its position.
            refs: ``(field, digest)`` of each field the record split off.

        Returns:
            Each blob's bytes, by digest.

        Raises:
            CorruptRecord: a blob is missing, or does not match its digest (``kind="blob"``).
            BackendError: the database failed.
        """
        digests = [digest for _name, digest in refs]
        found = self._read(
            f"read the blobs of stream {stream!r}",
            functools.partial(self._select_blobs, digests),
        )
        check = self.verify_reads
        for name, digest in refs:
            data = found.get(digest)
            why = (
                "is missing"
                if data is None
                else None
                if not check or blob_digest(data) == digest
                else "does not match its digest"
            )
            if why is not None:
                raise CorruptRecord(
                    f"the blob {digest} of its field {name!r} {why}",
                    stream=stream,
                    version=version,
                    position=position,
                    kind="blob",
                )
        return found

    def blob(self, digest: str) -> bytes | None:
        """The bytes of one blob (None when the log holds none under that digest); they are
        not checked against the digest.

        Raises:
            BackendError: the database failed.
        """
        self._check_open()
        found = self._read(f"read blob {digest}", functools.partial(self._select_blobs, [digest]))
        return found.get(digest)

    def intact_blobs(self, digests: Iterable[str]) -> set[str]:
        """The digests among ``digests`` whose blob the log holds intact (its bytes match the
        digest), read together while their sizes add up to little (16 MiB) and let go
        of once checked: memory stays bounded by a few blobs, not by all of them.

        Raises:
            BackendError: the database failed.
        """
        self._check_open()
        wanted = list(dict.fromkeys(digests))
        sizes = self._by_chunks("size", self._select_blob_sizes, wanted)
        # Together as long as their sizes add up to little (one read for a page of small
        # ones); one that would take a read past that starts the next, so a large one is alone.
        batches: list[list[str]] = []
        held = 0
        for digest in (d for d in wanted if d in sizes):
            size = max(0, sizes[digest])
            if not batches or len(batches[-1]) >= _BLOBS_PER_READ or held + size > _CHECK_BYTES:
                if not batches or batches[-1]:
                    batches.append([])
                held = 0
            batches[-1].append(digest)
            held += size
        intact: set[str] = set()
        for batch in batches:
            found = self._read(
                f"read {len(batch)} blobs", functools.partial(self._select_blobs, batch)
            )
            intact.update(d for d, data in found.items() if blob_digest(data) == d)
            del found
        return intact

    def blobs(self, digests: Iterable[str]) -> dict[str, bytes]:
        """The bytes of the blobs found among ``digests``, by digest (a missing one is left
        out), read a few hundred at a time; they are not checked against their digests.

        Raises:
            BackendError: the database failed.
        """
        self._check_open()
        return self._by_chunks("read", self._select_blobs, list(dict.fromkeys(digests)))

    def _by_chunks(
        self, what: str, select: Callable[[Sequence[str]], dict[str, _T]], wanted: list[str]
    ) -> dict[str, _T]:
        """``select`` of the blobs ``wanted``, a few hundred digests to a query."""
        found: dict[str, _T] = {}
        for start in range(0, len(wanted), _BLOBS_PER_READ):
            chunk = wanted[start : start + _BLOBS_PER_READ]
            found |= self._read(f"{what} {len(chunk)} blobs", functools.partial(select, chunk))
        return found

    def blob_digests(self) -> list[str]:
        """The digest of every blob the log holds.

        Raises:
            BackendError: the database failed.
        """
        self._check_open()
        return self._read("list the blobs", self._select_blob_digests)

    def stream_rows(
        self, stream: str, *, after: int = 0, upto: int | None = None
    ) -> list[StoredRow]:
        """The stored records of one stream with version in ``(after, upto]``, undecoded and
        unchecked, by version.

        Raises:
            UsageError: ``after`` or ``upto`` is not a non-negative int.
            BackendError: the database failed.
        """
        self._check_open()
        _check_bound("after", after)
        if upto is not None:
            _check_bound("upto", upto)
        return self._read(
            f"read stream {stream!r}", functools.partial(self._select_stream, stream, after, upto)
        )

    def insert_records(
        self, records: Sequence[tuple[str, int, str, bytes]], blobs: dict[str, bytes]
    ) -> list[int]:
        """Insert sealed records as they are, with the blobs they reference, in one commit
        (:func:`onward.events.archive.import_log` checks them first: this checks nothing but
        that their versions are free).

        Args:
            records: ``(stream, version, topic, state)`` each, in the order to store them.
            blobs: the blobs by digest.

        Returns:
            Their positions.

        Raises:
            ImportConflict: a stream already holds one of the versions (another writer got
                there first); nothing was inserted.
            BackendError: the database failed.
        """
        self._check_open()
        stored = [StoredEvent(s, v, t, bytes(st)) for s, v, t, st in records]
        streams = {r[0] for r in records}
        try:
            positions = self.outage.call(
                f"insert {len(stored)} records", self._inserter(stored, blobs)
            )
        except IntegrityError as exc:
            raise ImportConflict(
                f"{self.url}: a version of one of {len(streams)} streams was taken meanwhile "
                "(nothing of this commit was inserted): run the import again, which keeps what "
                "the log holds and refuses only another history"
            ) from exc
        except PersistenceError as exc:
            raise self._failure(f"insert into {self.url}", exc) from exc
        finally:
            for stream in streams:
                self._forget(stream)
        return positions

    def stream_version(self, stream: str) -> int:
        """The current version of a stream (0 when it has no events)."""
        self._check_open()
        last = self._read(f"read stream {stream!r}", lambda: self._select_stream_head(stream))
        return last.originator_version if last else 0

    def _read(self, what: str, select: Callable[[], _T]) -> _T:
        """A read, retried through an outage.

        Raises:
            StorageUnavailable: the outage outlasted the tolerance.
            BackendError: the database failed otherwise.
        """
        try:
            return self.outage.call(what, select)
        except PersistenceError as exc:
            raise self._failure(f"{what} from {self.url}", exc) from exc
        except ConnectionPoolClosedError:  # a read racing the log's close
            raise UsageError(f"the log {self.url} is closed") from None

    def _failure(self, what: str, exc: PersistenceError) -> OnwardError:
        """The error for a failed database call: :class:`LogDamaged` when the database says
        its file is damaged, :class:`BackendError` otherwise."""
        damage = self._damage(exc)
        if damage is not None:
            return LogDamaged(f"{what} failed: the database is damaged ({damage})")
        return BackendError(f"{what} failed: {exc}")

    def _damage(self, exc: PersistenceError) -> str | None:
        """What the database said of its damage, when ``exc`` says it is damaged (a malformed
        or overwritten file); None for any other failure. The backend's to say."""
        return None

    def read(
        self, *, after: int = 0, upto: int | None = None, page_size: int = 1000
    ) -> Iterator[Recorded]:
        """Every event after a global position, in log order, fetched a page at a time.

        Memory stays bounded by ``page_size`` however long the log is.

        Args:
            after: start after this position (0 for the whole log).
            upto: stop after this position (inclusive); the end of the log by default.
            page_size: records fetched per query.

        Raises:
            UsageError: ``after`` or ``upto`` is not a non-negative int, or ``page_size`` is
                not positive (raised when iteration starts).
            CorruptRecord: a record does not decode or fails its checksum (the records before
                it are yielded first).
        """
        # One record at a time: the objects of the last event are freed and reused at once,
        # which is faster than keeping a whole decoded page alive; and the common case decodes
        # inline, in one pass.
        typed = self.codec.typed_decoder
        decode = typed.decode if typed is not None else None
        slow = self.decode_record
        errors = (msgspec.DecodeError, UnicodeDecodeError, TypeError)
        verify = self.verify_reads
        for rows in self._pages(self._select_page, after, upto, page_size):
            damage = _first_damage(rows) if verify else None
            for p, s, v, t, st in rows if damage is None else rows[: damage[0]]:
                if decode is not None:
                    try:
                        both = decode(st)
                    except errors:
                        pass  # old, unknown or damaged: the slow path says what
                    else:
                        yield Recorded(s, v, p, both.meta, both.event)
                        continue
                yield slow(s, v, p, t, st)
            if damage is not None:
                raise _corrupt(rows, *damage)

    def read_pages(
        self, *, after: int = 0, upto: int | None = None, page_size: int = 1000
    ) -> Iterator[list[Recorded]]:
        """Like :meth:`read`, a page (a list) at a time: the fastest way to fold a long log.

        Raises:
            CorruptRecord: a record does not decode or fails its checksum (the records before
                it are yielded first).
        """
        decode_page = self._decode_page
        verify = self.verify_reads
        for rows in self.read_rows(after=after, upto=upto, page_size=page_size):
            damage = _first_damage(rows) if verify else None
            if damage is not None:
                if damage[0]:
                    yield decode_page(rows[: damage[0]])
                raise _corrupt(rows, *damage)
            yield decode_page(rows)

    def read_states(
        self, *, after: int = 0, upto: int | None = None, page_size: int = 1000
    ) -> Iterator[list[tuple[int, str, int, bytes]]]:
        """The stored records after a position, undecoded and without their tag column, a page
        at a time: ``(position, stream, version, state)`` for readers that decode only what
        they need; :meth:`Codec.decode_state` decodes one. Their checksums are not checked
        (the checksum covers the tag: :meth:`read_rows` and
        :func:`onward.events.integrity.check_rows` check them).
        """
        return self._pages(self._select_states, after, upto, page_size)

    def changes_of_others(self) -> int | None:
        """A number that changes whenever anyone but this log commits to its storage (another
        process, another log of the same file, a tool), never for this log's own commits;
        None where the backend cannot tell (then :meth:`own_rows` finds none).

        Raises:
            BackendError: the database failed.
        """
        if not self.remembers_own_rows:
            return None
        self._check_open()
        return self._read("look for others' changes", self._changes_of_others)

    def _changes_of_others(self) -> int | None:
        raise NotImplementedError(f"{type(self).__name__} cannot tell others' changes")

    def own_rows(self, after: int, upto: int | None = None) -> list[StoredRow]:
        """The rows this log committed itself at the positions right after ``after`` (to
        ``upto``), as it stored them, in a run of consecutive positions; empty when the next
        position is not one of them (another writer's, or one no longer kept). Rows at
        ``after`` or before are let go: the reader is past them.

        These are what this log wrote, not a read of the storage: they are what the storage
        holds only while nobody else has committed to it since the reader last read it
        (:meth:`changes_of_others` unchanged); a reader that checks the storage reads it.
        """
        with self._heads_lock:
            own = self._own
            while own and own[0][0] <= after:
                self._own_bytes -= len(own.popleft()[4])
            if not own or own[0][0] != after + 1:
                # Commits of other threads may have been remembered out of order.
                rows = sorted(row for row in own if row[0] > after)
                if not rows or rows[0][0] != after + 1:
                    return []
            else:
                rows = list(own)
        run: list[StoredRow] = []
        expected = after + 1
        for row in rows:
            if row[0] != expected or (upto is not None and row[0] > upto):
                break
            run.append(row)
            expected += 1
        return run

    def read_rows(
        self, *, after: int = 0, upto: int | None = None, page_size: int = 1000
    ) -> Iterator[list[StoredRow]]:
        """The stored records after a position, undecoded, a page at a time.

        Each row is ``(position, stream, version, topic, state)``, for integrity checks.
        """
        return self._pages(self._select_page, after, upto, page_size)

    def _pages(
        self,
        select: Callable[[int, int], list[_Row]],
        after: int,
        upto: int | None,
        page_size: int,
    ) -> Iterator[list[_Row]]:
        """Pages of ``select(after, limit)`` rows (position first), cut at ``upto``."""
        self._check_open()
        _check_bound("after", after)
        if upto is not None:
            _check_bound("upto", upto)
        if page_size <= 0:
            raise UsageError(f"page_size must be positive, got {page_size}")
        return self._paging(select, after, upto, page_size)

    def _paging(
        self,
        select: Callable[[int, int], list[_Row]],
        after: int,
        upto: int | None,
        page_size: int,
    ) -> Iterator[list[_Row]]:
        position = after
        while True:
            rows = self._read(
                f"read after position {position}", functools.partial(select, position, page_size)
            )
            if upto is not None and rows and rows[-1][0] > upto:
                rows = [row for row in rows if row[0] <= upto]
                if rows:
                    yield rows
                return
            if rows:
                yield rows
            if len(rows) < page_size:
                return
            position = rows[-1][0]

    def watch(self) -> Watch:
        """A watch that tells when another append may have happened, for an idle worker.

        Returns:
            The watch; close it when done.
        """
        self._check_open()
        return self._watch()

    def head_record(self) -> LogHead | None:
        """The log's head record: its last position, record count and hash chain, written in
        the transaction of every append (None: this log keeps none).

        Raises:
            BackendError: the database failed.
        """
        self._check_open()
        return self._read("read the head record", self._select_log_head)

    def head(self) -> int:
        """The position of the last event in the log (0 when empty)."""
        self._check_open()
        return self._read("read the head", self._select_head)

    def streams(self) -> list[str]:
        """Every stream id in the log, in order of first appearance."""
        self._check_open()
        return self._read("list the streams", self._select_streams)

    def verify(self) -> VerifyReport:
        """Check every record's checksum, every stream's hash chain, the log's head record, the
        blobs records reference and, where the backend has one, the database's own structure
        check (SQLite's ``PRAGMA integrity_check``: a damaged index reads streams short).

        Returns:
            A report: which records are damaged or missing (stream, version, position, what),
            whether the damage is confined to the tail of the log (a torn write) or lies in the
            middle, and what the head record says (a removed tail or stream breaks it).
        """
        verifier = Verifier(self.codec, self.head_record(), dense=self.dense_positions)
        # Each split record's references: (stream, version, position, field, digest).
        refs: list[tuple[str, int, int, str, str]] = []
        for rows in self.read_rows(page_size=5000):
            verifier.feed_page(rows)
            try:  # one search of the page's states in C, most pages holding no split record
                if _SPLIT_KEY not in b"\x00".join([row[4] for row in rows]):
                    continue
            except TypeError:
                pass  # a state that is not bytes: looked at one by one
            for position, stream, version, _topic, state in rows:
                if isinstance(state, bytes) and _SPLIT_KEY in state:
                    split = split_of(state)
                    if split is not None:
                        refs += [(stream, version, position, n, d) for n, d in split[1]]
        report = verifier.finish(self.head_record())
        problems = self._check_blobs(refs) + self._check_storage()
        if not problems:
            return report
        problems = sorted([*report.problems, *problems], key=lambda p: p.position)
        return msgspec.structs.replace(
            report,
            ok=False,
            problems=problems,
            torn_tail=False,
            damaged_streams=damaged_streams(problems),
        )

    def _check_storage(self) -> list[Problem]:
        """The problems the database's own structure check finds (an index that disagrees
        with its table); none where the backend has no such check. The backend's to say."""
        return []

    def _check_blobs(self, refs: list[tuple[str, int, int, str, str]]) -> list[Problem]:
        """A problem for each reference to a blob that is missing or fails its digest (each
        blob read and hashed once)."""
        problems: list[Problem] = []
        checked: dict[str, str | None] = {}  # digest -> what is wrong with it
        for stream, version, position, name, digest in refs:
            if digest not in checked:
                data = self.blob(digest)
                checked[digest] = (
                    "is missing"
                    if data is None
                    else None
                    if blob_digest(data) == digest
                    else "does not match its digest (a damaged or rewritten blob)"
                )
            why = checked[digest]
            if why is not None:
                problems.append(
                    Problem(
                        kind=ProblemKind.BLOB,
                        stream=stream,
                        version=version,
                        position=position,
                        detail=f"the blob {digest} of its field {name!r} {why}",
                    )
                )
        return problems

    # -- checkpoints -----------------------------------------------------------------------

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a projection checkpoint, sealed (older ones of the same name are pruned).

        Its header holds its schema, its position and its seal
        (:func:`~onward.events.integrity.checkpoint_seal`), which covers those and its name and
        data: :meth:`load_checkpoint` ignores it if any of them changes.

        A checkpoint only saves time: one the database does not take (an outage, a role that
        may not write or delete checkpoints, a full disk) is skipped with a warning, and the
        projections are folded from the log as far as they must be.
        """
        self._check_open()
        try:
            last = self._checkpoints.select_events(checkpoint.name, desc=True, limit=1)
            version = last[0].originator_version + 1 if last else 1
            data = bytes(checkpoint.data)
            anchor = self._anchor(checkpoint.position)
            seal = checkpoint_seal(
                checkpoint.name, checkpoint.schema, checkpoint.position, data, anchor
            )
            header = msgspec.json.encode([checkpoint.schema, checkpoint.position, seal])
            self._checkpoints.insert_events(
                [StoredEvent(checkpoint.name, version, header.decode(), data)]
            )
        except IntegrityError:
            logger.debug("checkpoint %s raced with another writer; skipped", checkpoint.name)
            return
        except PersistenceError as exc:
            logger.warning("checkpoint %s skipped: %s", checkpoint.name, _one_line(exc))
            return
        try:
            self._prune_checkpoints(checkpoint.name, version)
        except PersistenceError as exc:
            logger.warning(
                "checkpoint %s saved; the older ones were not removed: %s",
                checkpoint.name,
                _one_line(exc),
            )

    def load_checkpoint(self, name: str) -> Checkpoint | None:
        """The latest checkpoint saved under ``name``, or None: also when it is not exactly
        as onward saved it (a header or data changed since, a state that is not bytes), or
        was saved by an onward that did not seal checkpoints, or cannot be read at all (a
        damaged row or page). A checkpoint is a cache: without it the projections are folded
        from the log.

        Raises:
            StorageUnavailable: an outage outlasted the tolerance.
        """
        self._check_open()
        try:
            last = self._read(
                f"load checkpoint {name!r}",
                functools.partial(self._checkpoints.select_events, name, desc=True, limit=1),
            )
        except StorageUnavailable:
            raise  # an outage: the log cannot be read either
        except (BackendError, LogDamaged) as exc:  # the row, or its page, is unreadable
            logger.warning("checkpoint %s cannot be read (%s); ignored", name, exc)
            return None
        if not last:
            return None
        topic, state = last[0].topic, last[0].state
        if not isinstance(state, bytes | bytearray | memoryview):
            logger.warning(
                "checkpoint %s holds no bytes (a %s); ignored", name, type(state).__name__
            )
            return None
        try:
            schema, position, seal = _CHECKPOINT_HEADER.decode(topic)
        except (msgspec.DecodeError, TypeError):
            if _unsealed(topic):
                logger.info(
                    "checkpoint %s was saved without a seal (by an older onward); ignored", name
                )
            else:
                logger.warning("checkpoint %s has an unreadable header; ignored", name)
            return None
        data = bytes(state)
        try:
            anchor = self._read(
                f"load checkpoint {name!r}", functools.partial(self._anchor, position)
            )
            head = self.head() if position > 0 and not anchor else 0
        except StorageUnavailable:
            raise
        except (BackendError, LogDamaged) as exc:
            logger.warning("checkpoint %s: its record cannot be read (%s); ignored", name, exc)
            return None
        if position > 0 and not anchor:
            # Records it folded are gone (a removed tail, a restored copy of the file), or it
            # was saved from another log: what it holds is not what this log says.
            logger.warning(
                "checkpoint %s (position %d): the log holds no record there (the log ends at "
                "%d); ignored",
                name,
                position,
                head,
            )
            return None
        if seal != checkpoint_seal(name, schema, position, data, anchor):
            if anchor and seal == checkpoint_seal(name, schema, position, data):
                logger.info(
                    "checkpoint %s was saved without its record's checksum (by an older "
                    "onward); ignored",
                    name,
                )
                return None
            logger.warning(
                "checkpoint %s (position %d) does not match its seal or the log's record at "
                "that position: changed since it was saved, or of another log; ignored",
                name,
                position,
            )
            return None
        return Checkpoint(name=name, schema=schema, position=position, data=data)

    def _anchor(self, position: int) -> str:
        """The checksum of the record at ``position`` ("" for none), which a checkpoint's
        seal covers: a checkpoint binds to the log it was saved from."""
        rows = self._select_page(position - 1, 1) if position > 0 else []
        if not rows or rows[0][0] != position:
            return ""
        return _link_to(rows[0][4])

    # -- lifecycle -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"the log {self.url} is closed")

    def close(self) -> None:
        """Close the log and its connections; further calls raise :class:`UsageError`."""
        if not self._closed:
            self._closed = True
            self._close_backend()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


#: A checkpoint's header: its schema, its position and its seal.
_CHECKPOINT_HEADER = msgspec.json.Decoder(tuple[int, int, str])


def _one_line(exc: BaseException) -> str:
    """An error's first line (a database's error may go on with its context)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_bound(name: str, value: object) -> None:
    """Refuse a read bound (``after``, ``upto``) that is not a non-negative int: a negative
    one would read as versions missing from an intact stream, a bool or float as a number.

    Raises:
        UsageError: it is not.
    """
    if type(value) is not int or not 0 <= value <= _MAX_INT64:
        raise UsageError(f"{name} must be an int from 0 to 2**63 - 1, got {value!r}")


def _unsealed(topic: object) -> bool:
    """A checkpoint header as onwards before the seal wrote it: ``[schema, position]``."""
    try:
        msgspec.json.decode(topic, type=tuple[int, int])  # type: ignore[call-overload]
    except (msgspec.DecodeError, TypeError):
        return False
    return True


def _link_to(state: object) -> str:
    """The checksum a new record links to, from its predecessor's stored state ("" when that
    state is damaged beyond reading: ``verify`` reports the damage, not the link)."""
    return _checksum_of(state) if isinstance(state, bytes) else ""


def _first_damage(rows: Sequence[StoredRow]) -> tuple[int, str] | None:
    """The index of the first row that fails its checksum, and why (None: all pass)."""
    bad = check_rows(rows)
    return bad[0] if bad else None


def _corrupt(rows: Sequence[StoredRow], index: int, why: str) -> CorruptRecord:
    position, stream, version, _topic, _state = rows[index]
    return CorruptRecord(why, stream=str(stream), version=version, position=position)


def _check_stream(rows: Sequence[StoredRow], after: int) -> None:
    """Check the rows of one stream read after version ``after``: checksums, versions one
    after another, and each record pointing at its predecessor's checksum.

    Raises:
        CorruptRecord: the first record that fails.
    """
    damage = _first_damage(rows)
    if damage is not None:
        raise _corrupt(rows, *damage)
    expected_version = after + 1
    previous = ""
    for i, (position, stream, version, _topic, state) in enumerate(rows):
        if version != expected_version:
            gap = version > expected_version
            raise CorruptRecord(
                f"versions {expected_version}..{version - 1} are missing"
                if gap
                else f"version {version} comes after version {expected_version - 1}",
                stream=stream,
                version=version,
                position=position,
                kind="gap" if gap else "order",
            )
        if (i or not after) and prev_of(state) != previous:
            raise CorruptRecord(
                "does not point at the checksum of the previous version (a removed or "
                "rewritten record)",
                stream=stream,
                version=version,
                position=position,
                kind="chain",
            )
        previous = _checksum_of(state)
        expected_version += 1
