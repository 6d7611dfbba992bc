"""The PostgreSQL backend: one log shared by many workers on many machines.

**Writers do not wait for each other.** An append is one statement (its own transaction): the
primary key on stream and version detects a clash, and no lock is taken, so the commits of
concurrent workers share the server's WAL flushes.

**Positions follow the writing transactions.** A record's position is
``xid * 2**20 + i``: ``xid`` is the id of the transaction that wrote it, ``i`` its place in that
transaction (from 1; a commit holds fewer than 2**20 records). Transactions do not commit in the
order of their ids, so a reader reads only below the *horizon*, the oldest transaction still
running anywhere in the database cluster (``pg_snapshot_xmin(pg_current_snapshot())``): every
transaction below it has ended, so no record can appear there later, and a reader that tails the
log with ``read(after=position)`` never passes over a record that commits late. Positions are
unique and grow in log order, but they are **not dense**: consecutive records are usually
2**20 or more apart. And a record becomes readable only once every transaction that got its id
before it has ended: a long-running writing transaction anywhere in the cluster (a migration, a
session left idle in a transaction) holds back what readers see until it ends. A reader that
must see a record (see below) waits up to :data:`HORIZON_PATIENCE` seconds for it, then raises a
transient error that names the transaction in the way.

**A handle reads what it knows.** Records this handle appended, and records it met reading a
stream, are below the horizon of its next read of the log (it waits the few milliseconds it may
take for older transactions to end), so a worker that catches up after an append or a lost race
sees the winning record.

**Idle workers wait on LISTEN.** An append that may make work runnable for another worker (a
submission, a hand-back, an expired lease, an approval's answer: any event outside
:data:`QUIET_TOPICS`) sends a ``NOTIFY`` on :attr:`PostgresLog.channel` with its commit; step
outcomes, claims and heartbeats, the bulk of the appends, do not, because PostgreSQL serialises
the commits that notify. A commit of quiet events that may make work runnable all the same says
so (:attr:`onward.events.Append.wakes`): the end of a subtask, whose parent may wait for it (the
worker that ended it may die before it runs the parent).

**A silent link is a dead one.** Every connection has TCP keepalives and a TCP user timeout
(a cut link fails within about half a minute), and every statement a deadline of its own
(:data:`CALL_TIMEOUT`, ``?call_timeout=``): a link whose far end acknowledges what it is sent
but never answers (a stalled proxy or pooler) passes every keepalive, and would hold a read
forever. Past the deadline the connection is cut and the call fails as on a dropped
connection, which the log's outage handling retries; the listening connection of an idle
worker is asked for a reply after as long a silence.

**Logs of earlier versions** (written through eventsourcing's recorder, which numbered records
1, 2, 3... under a table lock) open and read as they are: the table is the same
(``<table>_events``: notification_id, originator_id, originator_version, topic, state), and their
positions lie below the new ones. Opening one with ``create=True`` retires its sequence, so that
a writer of an earlier version still running fails with a clear error instead of numbering
records below positions that readers have passed: upgrade every process that writes to a log at
once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import unquote

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    Notification,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
    Subscription,
)
from psycopg import sql
from psycopg.pq import TransactionStatus

from onward.events.exceptions import BackendError, InvalidURL, LogNotFound, UsageError
from onward.events.log import EventLog, StoredRow
from onward.events.outage import DEFAULT_TOLERANCE, FIRST_PAUSE, LAST_PAUSE
from onward.events.redaction import redact_for_any_log, redacted_logger
from onward.events.url_parts import hide_password, split_log_url
from onward.events.watch import Watch

logger = redacted_logger("onward.events")

__all__ = [
    "CALL_TIMEOUT",
    "HORIZON_PATIENCE",
    "QUIET_TOPICS",
    "ROWS_PER_COMMIT",
    "PostgresCheckpointRecorder",
    "PostgresEventRecorder",
    "PostgresLog",
]

#: The bits of a position that number the records of one transaction.
_SHIFT = 20
#: A commit holds fewer records than this (a position keeps 20 bits for them).
ROWS_PER_COMMIT = 1 << _SHIFT
#: How long, in seconds, one statement waits for the server's reply before its connection is
#: given up as dead (a URL's ``call_timeout`` replaces it). TCP keepalives cannot tell a link
#: whose far end still acknowledges what it is sent but never answers (a stalled proxy or
#: pooler, a frozen host's kernel buffering for a stopped server): without a deadline, a worker
#: would wait on that read forever, its outage tolerance never counting.
CALL_TIMEOUT = 30.0
#: How long a read waits, in seconds, for a record it must see to fall below the horizon.
HORIZON_PATIENCE = 30.0
_FIRST_PAUSE = 0.0002
_LAST_PAUSE = 0.01
#: Idle connections a handle keeps for its threads.
_KEEP_IDLE = 8

#: The event tags whose appends send no ``NOTIFY``: they never make work runnable for an idle
#: worker (the worker appending them acts on what follows itself), and they are most appends.
#: A tag not listed here (a new event type too) notifies, and so does an append that says it
#: wakes (:attr:`onward.events.Append.wakes`: a subtask's ``TaskSucceeded`` or ``TaskFailed``).
QUIET_TOPICS = frozenset(
    {
        "ActionChecked",
        "ActionUndone",
        "ApprovalRequested",
        "BreakerHalfOpened",
        "BreakerOpened",
        "ComponentFailed",
        "ComponentRestored",
        "DecisionMade",
        "ErrorClassified",
        "ErrorObserved",
        "FixAttempted",
        "FixFailed",
        "FixLearned",
        "FixSucceeded",
        "FlowStateChanged",
        "InterruptionDeferred",
        "InterruptionDelivered",
        "MessageReceived",
        "PatchMarked",
        "PermitTaken",
        "RetryScheduled",
        "ScheduleTicked",
        "StateSet",
        "StepCompleted",
        "StepFailed",
        "StepStarted",
        "StepWithdrawn",
        "SubtasksRead",
        "TaskClaimed",
        "TaskFailed",
        "TaskProgressed",
        "TaskSucceeded",
        "ThresholdsAdjusted",
        "WorkaroundApplied",
        "WorkerClaimExpired",
        "WorkerHeartbeat",
    }
)

# The horizon as a position: every record below it was written by a transaction that ended.
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint * {shift}"
_POSITION = "pg_current_xact_id()::text::bigint * {shift}"


class PostgresLog(EventLog):
    """An event log in PostgreSQL (``postgresql://user:password@host:port/dbname?schema=s``).

    See the module's documentation for how positions, the horizon and notifications work.

    Args:
        url: the connection URL; ``schema`` (default ``public``), ``table`` (the table prefix,
            default ``onward``; both taken as written, capitals included, as a quoted SQL
            identifier: ``?table=Nightly`` makes ``"Nightly_events"``), ``connect_timeout``
            (seconds, default 10) and ``call_timeout`` (seconds, default
            :data:`CALL_TIMEOUT`; 0: none) may be given as query parameters, and so may
            libpq's other connection parameters (``sslmode``, ``sslrootcert``,
            ``application_name``, ``options``, ``password``, ...), passed to the connection
            as they are. Its password, wherever it is, is masked in
            :attr:`url` and in messages. What neither it nor libpq's environment (``PGHOST``,
            ``PGPORT``, ``PGUSER``, ``PGDATABASE``) nor a service file (``?service=NAME`` or
            ``PGSERVICE``) says is 127.0.0.1, port 5432, user ``postgres``; without a
            service, the URL or ``PGDATABASE`` names the database.
        create: create the schema and tables when missing; with False, a database without
            this log raises :class:`LogNotFound` and nothing is created.
        **options: passed to :class:`onward.events.EventLog`.

    Raises:
        InvalidURL: the URL does not name a database, names a bad schema (one of
            PostgreSQL's own: ``information_schema``, ``pg_*``) or table, or has an option
            that neither onward nor libpq knows.
        LogNotFound: ``create=False`` and the log's table does not exist.
        BackendError: the server cannot be reached.

    Attributes:
        schema: the schema that holds the tables.
        channel: the channel its waking appends notify.
    """

    def __init__(self, url: str, *, create: bool = True, **options: Any) -> None:
        EventLog.check_options(**options)  # before the tables are created
        parts = split_log_url(url)
        params = _query(url, parts.query)
        dbname = unquote(parts.path.lstrip("/"))
        named = dbname or "dbname" in params or os.environ.get("PGDATABASE")
        if not named and not _from_service(params):
            raise InvalidURL(f"PostgreSQL URL names no database: {_safe(url)}")
        self.schema = params.get("schema", "public")
        # Taken as written, as the schema is (both quoted wherever they are named).
        prefix = params.get("table", "onward")
        if not (self.schema.isidentifier() and prefix.isidentifier()):
            raise InvalidURL(f"schema and table must be plain identifiers: {_safe(url)}")
        # Its catalog, its TOAST and temporary tables, the standard's views: a superuser
        # could create the log's tables there, among PostgreSQL's own. Names are taken as
        # written, as PostgreSQL reserves them (``PG_x`` is not one of them).
        if self.schema == "information_schema" or self.schema.startswith("pg_"):
            raise InvalidURL(
                f"schema {self.schema!r} is one of PostgreSQL's own (information_schema, pg_*): "
                f"name a schema for the log's tables (?schema=onward): {_safe(url)}"
            )
        # PostgreSQL cuts longer names to 63 bytes without a word: two logs would share one.
        if len(self.schema.encode()) > 63:
            raise InvalidURL(f"schema {self.schema!r} is too long (at most 63 bytes in UTF-8)")
        if len(f"{prefix}_checkpoints".encode()) > 63:
            raise InvalidURL(f"table prefix {prefix!r} is too long (at most 51 bytes in UTF-8)")
        try:
            timeout = int(params.get("connect_timeout", "10"))
        except ValueError:
            raise InvalidURL(f"connect_timeout must be whole seconds: {_safe(url)}") from None
        try:
            call_timeout = float(params.get("call_timeout", CALL_TIMEOUT))
        except ValueError:
            call_timeout = -1.0
        if not 0 <= call_timeout < float("inf"):
            raise InvalidURL(f"call_timeout must be seconds, 0 or more: {_safe(url)}")
        given = {
            "dbname": dbname,
            "host": parts.hostname,
            "port": parts.port,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
        }
        connect_args: dict[str, Any] = {
            **_defaults(params),
            **{k: v for k, v in given.items() if v},
            "connect_timeout": timeout,
            "application_name": "onward",
            # A connection cut off mid-call (a network split) fails within about half a minute
            # instead of waiting for the kernel's own give-up (15 minutes to hours), so that
            # the outage tolerance counts it: probes after 10 s of silence, every 5 s, 3 of
            # them; unacknowledged data fails the connection after 30 s.
            **_KEEPALIVES,
            **_connection_parameters(params),
        }
        connections = _Connections(connect_args, call_timeout)
        opened: list[PostgresEventRecorder] = []

        def open_tables() -> None:
            nonlocal prefix
            if prefix != prefix.lower():
                prefix = _as_created(connect_args, self.schema, prefix)
            self.channel = _channel(self.schema, prefix)
            recorder = PostgresEventRecorder(connections, self.schema, prefix, self.channel)
            opened.append(recorder)
            if create:
                _create(connect_args, self.schema, prefix)
            elif not recorder.exists():
                raise LogNotFound(f"no log at {_safe(url)} (no table {prefix}_events)")

        try:
            _through_a_restart(
                open_tables,
                _safe(url),
                options.get("outage_tolerance", DEFAULT_TOLERANCE),
            )
        except LogNotFound:
            connections.close()
            raise
        except Exception as exc:
            connections.close()
            raise BackendError(
                f"cannot open the PostgreSQL log {_safe(url)}: {_one_line(exc)}"
            ) from exc
        recorder = opened[-1]
        checkpoints = PostgresCheckpointRecorder(connections, self.schema, prefix)
        self._events = recorder
        self._checkpoint_recorder = checkpoints
        self._connections = connections
        self._blobs = _BlobStatements(schema=self.schema, prefix=prefix)
        super().__init__(recorder, checkpoints, url=_safe(url), **options)

    def _insert(self, records: list[StoredEvent], wakes: bool = False) -> list[int]:
        return self._events.insert(records, wakes)

    def _store_blobs(self, blobs: dict[str, bytes]) -> None:
        # Its own statement, committed before the records that reference it: a blob left
        # unreferenced by a failed append is harmless.
        statements = self._blobs
        if not statements.known:
            if not self._connections.fetch(statements.exists, ())[0][0]:
                self._connections.fetch(statements.create, (), rows=False)
            statements.known = True
        digests = list(blobs)
        self._connections.fetch(
            statements.insert,
            (digests, [len(blobs[d]) for d in digests], [blobs[d] for d in digests]),
            rows=False,
        )

    def _select_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        statements = self._blobs
        if not statements.known:
            if not self._connections.fetch(statements.exists, ())[0][0]:
                return {}  # a log of an earlier version, never appended a blob to
            statements.known = True
        rows = self._connections.fetch(statements.select, (list(digests),))
        return {str(digest): bytes(data) for digest, data in rows}

    def _select_blob_sizes(self, digests: Sequence[str]) -> dict[str, int]:
        statements = self._blobs
        if not statements.known:
            if not self._connections.fetch(statements.exists, ())[0][0]:
                return {}
            statements.known = True
        rows = self._connections.fetch(statements.sizes, (list(digests),))
        return {str(digest): int(size or 0) for digest, size in rows}

    def _select_blob_digests(self) -> list[str]:
        if not self._connections.fetch(self._blobs.exists, ())[0][0]:
            return []
        return [str(r[0]) for r in self._connections.fetch(self._blobs.digests, ())]

    def _select_stream(self, stream: str, after: int, upto: int | None) -> list[StoredRow]:
        return self._events.stream(stream, after, upto)

    def _select_page(self, after: int, limit: int) -> list[StoredRow]:
        return self._events.page(after, limit)

    def _select_states(self, after: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        return self._events.states(after, limit)

    def _select_head(self) -> int:
        return self._events.head()

    def _select_stream_head(self, stream: str) -> StoredEvent | None:
        return self._events.stream_head(stream)

    def _select_streams(self) -> list[str]:
        return self._events.streams()

    def _prune_checkpoints(self, name: str, below: int) -> None:
        self._checkpoint_recorder.prune(name, below)

    def _watch(self) -> Watch:
        """``LISTEN`` on a connection of the watch's own (see :data:`QUIET_TOPICS`)."""
        try:
            return _Listener(self._events)
        except PersistenceError as exc:
            raise BackendError(f"cannot watch {self.url}: {exc}") from exc

    def _close_backend(self) -> None:
        self._connections.close()


class _BlobStatements:
    """The statements on a log's blobs (``<prefix>_blobs``: digest, size, data)."""

    def __init__(self, *, schema: str, prefix: str) -> None:
        table = sql.Identifier(schema, f"{prefix}_blobs")
        self.known = False  # the table is known to exist
        self.exists = _render(
            sql.SQL("SELECT to_regclass({name}) IS NOT NULL").format(
                name=sql.Literal(_regname(schema, f"{prefix}_blobs"))
            )
        )
        self.create = _render(sql.SQL(_CREATE_BLOBS).format(table))
        self.insert = _render(
            sql.SQL(
                "INSERT INTO {} (digest, size, data)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %b::bytea[])"
                # stored bytes unlike the new ones (which match their digest) were damaged
                " ON CONFLICT (digest) DO UPDATE SET size = EXCLUDED.size, data = EXCLUDED.data"
                " WHERE {}.data IS DISTINCT FROM EXCLUDED.data"
            ).format(table, table)
        )
        self.select = _render(
            sql.SQL("SELECT digest, data FROM {} WHERE digest = ANY(%s::text[])").format(table)
        )
        # The bytes' own length (known without reading them), not the size column: a damaged
        # row must not undo the bound on what a check reads at once.
        self.sizes = _render(
            sql.SQL(
                "SELECT digest, octet_length(data) FROM {} WHERE digest = ANY(%s::text[])"
            ).format(table)
        )
        self.digests = _render(sql.SQL("SELECT digest FROM {} ORDER BY digest").format(table))


_CREATE_BLOBS = (
    "CREATE TABLE IF NOT EXISTS {} (digest text PRIMARY KEY, size bigint NOT NULL,"
    " data bytea NOT NULL)"
)


class PostgresEventRecorder(ApplicationRecorder):
    """The records of one PostgreSQL log: appends without locks, positions by transaction,
    reads below the horizon (see the module's documentation).

    Args:
        connections: where its connections come from.
        schema: the schema of the table.
        prefix: the table prefix (the table is ``<prefix>_events``).
        channel: the channel that waking appends notify.
    """

    def __init__(self, connections: _Connections, schema: str, prefix: str, channel: str) -> None:
        self._connections = connections
        self._name = f"{schema}.{prefix}_events"
        self.channel = channel
        table = sql.Identifier(schema, f"{prefix}_events")
        shift = sql.Literal(ROWS_PER_COMMIT)
        horizon = sql.SQL(_HORIZON).format(shift=shift)
        position = sql.SQL(_POSITION).format(shift=shift)
        columns = sql.SQL("notification_id, originator_id, originator_version, topic, state")
        one = sql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({position} + 1, %b, %b, %b, %b)"
            " RETURNING notification_id"
        ).format(table=table, columns=columns, position=position)
        many = sql.SQL(
            "INSERT INTO {table} ({columns})"
            " SELECT {position} + r.i, r.s, r.v, r.t, r.st"
            " FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[])"
            " WITH ORDINALITY AS r(s, v, t, st, i)"
            " RETURNING notification_id"
        ).format(table=table, columns=columns, position=position)
        # pg_notify in the statement: still one round trip. One notification per transaction
        # (the same payload is folded), its payload the transaction's id.
        waking = sql.SQL(
            "WITH appended AS ({insert}) SELECT notification_id,"
            " pg_notify({channel}, (notification_id / {shift})::text) FROM appended"
        )
        self._insert_one = (
            _render(one),
            _render(waking.format(insert=one, channel=channel, shift=shift)),
        )
        self._insert_many = (
            _render(many),
            _render(waking.format(insert=many, channel=channel, shift=shift)),
        )
        self._exists = _render(
            sql.SQL("SELECT to_regclass({name}) IS NOT NULL").format(
                name=sql.Literal(_regname(schema, f"{prefix}_events"))
            )
        )
        self._stream = _render(
            sql.SQL(
                "SELECT {columns} FROM {table} WHERE originator_id = %s"
                " AND originator_version > %s AND originator_version <= %s"
                " ORDER BY originator_version"
            ).format(columns=columns, table=table)
        )
        self._stream_head = _render(
            sql.SQL(
                "SELECT {columns} FROM {table} WHERE originator_id = %s"
                " ORDER BY originator_version DESC LIMIT 1"
            ).format(columns=columns, table=table)
        )
        # The horizon comes first in every row (and alone when nothing is readable): the
        # lateral scan runs once, in position order, for the one row of the horizon.
        below = (
            "SELECT h.bound, e.* FROM (SELECT {horizon} AS bound) h LEFT JOIN LATERAL ("
            "SELECT {columns} FROM {table} WHERE notification_id > %s AND notification_id < h.bound"
            " ORDER BY notification_id LIMIT %s) e ON true"
        )
        self._page = _render(sql.SQL(below).format(horizon=horizon, columns=columns, table=table))
        self._states = _render(
            sql.SQL(below).format(
                horizon=horizon,
                columns=sql.SQL("notification_id, originator_id, originator_version, state"),
                table=table,
            )
        )
        self._range = _render(
            sql.SQL(
                "SELECT h.bound, e.* FROM (SELECT {horizon} AS bound) h LEFT JOIN LATERAL ("
                "SELECT {columns} FROM {table} WHERE notification_id > %s AND notification_id <= %s"
                " AND notification_id < h.bound"
                " AND (cardinality(%s::text[]) = 0 OR topic = ANY(%s))"
                " ORDER BY notification_id LIMIT %s) e ON true"
            ).format(horizon=horizon, columns=columns, table=table)
        )
        self._head = _render(
            sql.SQL(
                "SELECT h.bound, (SELECT max(notification_id) FROM {table}"
                " WHERE notification_id < h.bound) FROM (SELECT {horizon} AS bound) h"
            ).format(table=table, horizon=horizon)
        )
        self._streams = _render(
            sql.SQL(
                "SELECT originator_id FROM {table} GROUP BY originator_id"
                " ORDER BY MIN(notification_id)"
            ).format(table=table)
        )
        self._holder = (
            b"SELECT pid, datname, state, now() - xact_start, left(query, 100)"
            b" FROM pg_stat_activity WHERE backend_xid::text::bigint = %s"
        )
        # What this handle knows to be committed: its next read of the log includes it.
        self._known = 0
        self._known_lock = threading.Lock()

    # -- what the log calls --------------------------------------------------------------

    def exists(self) -> bool:
        """Whether the log's table exists."""
        return bool(self._connections.fetch(self._exists, ())[0][0])

    def insert(self, records: Sequence[StoredEvent], wakes: bool = False) -> list[int]:
        """Insert records in one transaction; notify the channel unless all are quiet and
        ``wakes`` is false (see :attr:`onward.events.Append.wakes`).

        Returns:
            Their positions, in order.

        Raises:
            UsageError: too many records for one commit.
            IntegrityError: a stream and version are taken (a version clash).
            OperationalError: the connection failed (the records may have been committed).
        """
        count = len(records)
        if not count:
            return []  # blobs alone (an import storing again what the log holds)
        if count >= ROWS_PER_COMMIT:
            raise UsageError(
                f"{count} events in one commit to {self._name}: a PostgreSQL log takes fewer "
                f"than {ROWS_PER_COMMIT} at once"
            )
        waking = wakes or any(r.topic not in QUIET_TOPICS for r in records)
        params: tuple[Any, ...]
        if count == 1:
            r = records[0]
            query = self._insert_one[waking]
            params = (r.originator_id, r.originator_version, r.topic, r.state)
        else:
            query = self._insert_many[waking]
            params = (
                [r.originator_id for r in records],
                [r.originator_version for r in records],
                [r.topic for r in records],
                [r.state for r in records],
            )
        # Positions grow with the place in the transaction, which follows the records' order.
        positions = sorted(row[0] for row in self._connections.fetch(query, params))
        self.known(positions[-1])
        return positions

    def stream(self, stream: str, after: int, upto: int | None) -> list[StoredRow]:
        """The records of one stream with version in ``(after, upto]``, by version."""
        rows: list[StoredRow] = self._connections.fetch(
            self._stream, (stream, after, upto if upto is not None else 2**62)
        )
        if rows:
            self.known(rows[-1][0])
        return rows

    def stream_head(self, stream: str) -> StoredEvent | None:
        """The last record of a stream, or None."""
        rows = self._connections.fetch(self._stream_head, (stream,))
        if not rows:
            return None
        position, originator_id, version, topic, state = rows[0]
        self.known(position)
        return StoredEvent(originator_id, version, topic, state)

    def page(self, after: int, limit: int) -> list[StoredRow]:
        """Up to ``limit`` records with position > ``after`` below the horizon, by position."""
        return self._below(self._page, (after, limit))

    def states(self, after: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        """Like :meth:`page`, without the topic column."""
        return self._below(self._states, (after, limit))

    def head(self) -> int:
        """The position of the last record below the horizon (0 when none)."""
        rows = self._horizon_rows(self._head, ())
        return int(rows[0][1] or 0)

    def streams(self) -> list[str]:
        """Every stream id, in order of first appearance."""
        return [row[0] for row in self._connections.fetch(self._streams, ())]

    def known(self, position: int) -> None:
        """Note that ``position`` is committed: the next read of the log includes it."""
        if position > self._known:
            with self._known_lock:
                self._known = max(self._known, position)

    def heard(self, payload: str) -> None:
        """A notification's payload (a transaction id): the next read includes its records."""
        with contextlib.suppress(ValueError):
            self.known(int(payload) << _SHIFT)

    @property
    def deadlines(self) -> _Deadlines:
        """What bounds each statement's wait for the server's reply."""
        return self._connections.deadlines

    def listen(self) -> psycopg.Connection[Any]:
        """A new connection that listens to the channel.

        Raises:
            OperationalError: the server cannot be reached.
        """
        with _translated(self._name):
            connection = self._connections.connect()
            try:
                connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            except BaseException:
                connection.close()
                raise
        return connection

    # -- reading below the horizon -------------------------------------------------------

    def _below(self, query: bytes, params: tuple[Any, ...]) -> list[Any]:
        rows = self._horizon_rows(query, params)
        if rows[0][1] is None:
            return []
        return [row[1:] for row in rows]

    def _horizon_rows(self, query: bytes, params: tuple[Any, ...]) -> list[Any]:
        """Rows of a query whose first column is the horizon, once the horizon has passed
        every record this handle knows of (waiting for older transactions to end).

        Raises:
            OperationalError: the horizon stayed below a known record for
                :data:`HORIZON_PATIENCE` seconds (a long transaction holds it back).
        """
        known = self._known
        pause = _FIRST_PAUSE
        deadline: float | None = None
        while True:
            rows: list[Any] = self._connections.fetch(query, params)
            bound = rows[0][0]
            if bound > known:
                return rows
            now = time.monotonic()
            if deadline is None:
                deadline = now + HORIZON_PATIENCE
            elif now >= deadline:
                raise OperationalError(self._held_back(bound >> _SHIFT))
            time.sleep(pause)
            pause = min(pause * 2, _LAST_PAUSE)

    def _held_back(self, xid: int) -> str:
        """Why the horizon does not move: the transaction at it, as far as the server says."""
        what = f"transaction {xid}"
        with contextlib.suppress(PersistenceError):
            found = self._connections.fetch(self._holder, (xid % 2**32,))
            if found:
                pid, database, state, age, query = found[0]
                what += f" (pid {pid}, database {database}, {state} for {age}: {query!r})"
        return (
            f"reading {self._name}: {what} has held back the log's horizon for "
            f"{HORIZON_PATIENCE:g} s; records written after it become readable when it ends"
        )

    # -- eventsourcing's recorder interface -----------------------------------------------

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int]:
        """Insert records in one transaction (see :meth:`insert`)."""
        del kwargs
        return self.insert(stored_events) if stored_events else []

    def select_events(
        self,
        originator_id: Any,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The records of one stream, by version."""
        rows = self.stream(str(originator_id), gt or 0, lte)
        if desc:
            rows.reverse()
        if limit is not None:
            rows = rows[:limit]
        return [StoredEvent(s, v, t, st) for _p, s, v, t, st in rows]

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Records by position, below the horizon."""
        after = (start or 0) - (1 if inclusive_of_start and start else 0)
        topics = list(topics)
        rows = self._horizon_rows(
            self._range, (after, stop if stop is not None else 2**62, topics, topics, limit)
        )
        if rows[0][1] is None:
            return []
        return [
            Notification(id=p, originator_id=s, originator_version=v, topic=t, state=st)
            for _bound, p, s, v, t, st in rows
        ]

    def max_notification_id(self) -> int | None:
        """The last position below the horizon (None when there is none)."""
        return self.head() or None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        """Not offered: onward tails a log with reads and :meth:`EventLog.watch`."""
        raise NotImplementedError("tail an onward log with EventLog.read and EventLog.watch")


class PostgresCheckpointRecorder(AggregateRecorder):
    """The projection checkpoints of one PostgreSQL log (table ``<prefix>_checkpoints``).

    Args:
        connections: where its connections come from.
        schema: the schema of the table.
        prefix: the table prefix.
    """

    def __init__(self, connections: _Connections, schema: str, prefix: str) -> None:
        self._connections = connections
        table = sql.Identifier(schema, f"{prefix}_checkpoints")
        self._insert = _render(
            sql.SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state)"
                " SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::bytea[])"
            ).format(table)
        )
        select = sql.SQL(
            "SELECT originator_id, originator_version, topic, state FROM {}"
            " WHERE originator_id = %s AND originator_version > %s AND originator_version <= %s"
            " ORDER BY originator_version{} LIMIT %s"
        )
        self._select = {
            desc: _render(select.format(table, sql.SQL(" DESC" if desc else "")))
            for desc in (False, True)
        }
        self._prune = _render(
            sql.SQL("DELETE FROM {} WHERE originator_id = %s AND originator_version < %s").format(
                table
            )
        )

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Insert checkpoints in one transaction.

        Raises:
            IntegrityError: a name and version are taken (another writer saved first).
        """
        del kwargs
        self._connections.fetch(
            self._insert,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            rows=False,
        )

    def select_events(
        self,
        originator_id: Any,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The checkpoints saved under one name, by version."""
        rows = self._connections.fetch(
            self._select[desc],
            (str(originator_id), gt or 0, lte if lte is not None else 2**62, limit),
        )
        return [StoredEvent(s, v, t, st) for s, v, t, st in rows]

    def prune(self, name: str, below: int) -> None:
        """Delete the checkpoints of ``name`` older than version ``below``."""
        self._connections.fetch(self._prune, (name, below), rows=False)


class _Deadlines:
    """Cuts the connection of a statement whose reply is later than its timeout.

    A thread of its own looks at the statements under way a few times per timeout and shuts
    down the socket of any that outlasted it: the statement's read then ends at once, as on a
    dropped connection (an :class:`OperationalError`, which the log's outage handling retries
    on a new connection). Shutting a socket down, not closing it: the connection stays the
    caller's to close, and its descriptor cannot be reused meanwhile.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._under_way: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._cut: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def timed(self, connection: psycopg.Connection[Any]) -> _Timed:
        """A context that bounds a statement on ``connection`` by the timeout; it raises
        :class:`psycopg.OperationalError` when the statement got no reply in time (its
        connection cut)."""
        return _Timed(self, connection)

    def begin(self, connection: psycopg.Connection[Any]) -> None:
        """A statement on ``connection`` starts: its reply is due within the timeout."""
        with self._lock:
            self._under_way[id(connection)] = (time.monotonic() + self.seconds, connection)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="onward-postgres-deadlines", daemon=True
                )
                self._thread.start()

    def end(self, connection: psycopg.Connection[Any]) -> bool:
        """The statement on ``connection`` ended; whether its connection was cut."""
        key = id(connection)
        with self._lock:
            self._under_way.pop(key, None)
            if key not in self._cut:
                return False
            self._cut.discard(key)
        return True

    def stop(self) -> None:
        """Stop the thread that looks at the statements under way."""
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(min(self.seconds / 4, 1.0)):
            now = time.monotonic()
            with self._lock:
                for key, (deadline, connection) in self._under_way.items():
                    if now >= deadline and key not in self._cut:
                        self._cut.add(key)
                        _shut_down(connection)


class _Timed:
    """A statement bounded by :class:`_Deadlines` (see :meth:`_Deadlines.timed`)."""

    __slots__ = ("_connection", "_deadlines")

    def __init__(self, deadlines: _Deadlines, connection: psycopg.Connection[Any]) -> None:
        self._deadlines = deadlines
        self._connection = connection

    def __enter__(self) -> None:
        if self._deadlines.seconds:
            self._deadlines.begin(self._connection)

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        deadlines = self._deadlines
        if not deadlines.seconds or not deadlines.end(self._connection):
            return
        if error is None:  # cut as the reply came: the statement is done, the connection not
            self._connection.close()
        elif isinstance(error, psycopg.Error):
            raise psycopg.OperationalError(
                f"no reply from the server within {deadlines.seconds:g} s (call_timeout):"
                " the connection was given up as dead"
            ) from error


def _shut_down(connection: psycopg.Connection[Any]) -> None:
    """Shut a connection's socket down: a read waiting on it ends at once."""
    with (
        contextlib.suppress(OSError, psycopg.Error),
        socket.socket(fileno=os.dup(connection.fileno())) as link,
    ):
        link.shutdown(socket.SHUT_RDWR)


class _Connections:
    """Autocommit connections to one database, one per thread that uses the log at a time,
    each with a cursor of its own (the statements are rendered to bytes once, and prepared).

    A connection that failed is closed, and so are the idle ones when it was lost (the server
    restarted: they are gone too); psycopg's errors become eventsourcing's, which the log's
    outage handling knows (:class:`OperationalError` and :class:`InterfaceError` are
    transient). A statement unanswered for ``call_timeout`` seconds loses its connection.
    """

    def __init__(self, connect_args: dict[str, Any], call_timeout: float = CALL_TIMEOUT) -> None:
        self._args = connect_args
        self._idle: list[tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]] = []
        self._lock = threading.Lock()
        self._closed = False
        self.deadlines = _Deadlines(call_timeout)

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection (psycopg's errors unchanged)."""
        return psycopg.connect(**self._args, autocommit=True)

    def fetch(self, query: bytes, params: tuple[Any, ...], *, rows: bool = True) -> Any:
        """Run one statement (its own transaction) and return its rows.

        Raises:
            PersistenceError: the statement failed (the subclass says how).
        """
        with self._lock:
            if self._closed:
                raise InterfaceError("the log's connections are closed")
            link = self._idle.pop() if self._idle else None
        with _translated(str(self._args.get("dbname", "the service's database"))):
            if link is None:
                connection = self.connect()
                link = (connection, connection.cursor())
            try:
                with self.deadlines.timed(link[0]):
                    link[1].execute(query, params, prepare=True)
                    found = link[1].fetchall() if rows else None
            except BaseException as exc:
                self._drop(link, lost=isinstance(exc, psycopg.OperationalError))
                raise
        self._put(link)
        return found

    def _put(self, link: tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]) -> None:
        if link[0].info.transaction_status != TransactionStatus.IDLE:
            link[0].close()
            return
        with self._lock:
            if not self._closed and len(self._idle) < _KEEP_IDLE:
                self._idle.append(link)
                return
        link[0].close()

    def _drop(
        self, link: tuple[psycopg.Connection[Any], psycopg.Cursor[Any]], *, lost: bool
    ) -> None:
        connection = link[0]
        sound = not (connection.broken or connection.closed)
        if sound and connection.info.transaction_status == TransactionStatus.IDLE:
            self._put(link)  # a failed statement on a sound connection
            return
        connection.close()
        if lost:
            with self._lock:
                idle, self._idle = self._idle, []
            for other, _cursor in idle:
                other.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when they come back."""
        self.deadlines.stop()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection, _cursor in idle:
            connection.close()


class _Listener(Watch):
    """A watch that ``LISTEN``s on a connection of its own; a lost connection is replaced at
    the next wait, which then says the log may have changed (notifications were missed)."""

    def __init__(self, recorder: PostgresEventRecorder) -> None:
        self._recorder = recorder
        self._deadlines = recorder.deadlines
        self._connection: psycopg.Connection[Any] | None = recorder.listen()
        self._heard = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """Wait for a waking append's notification, or ``timeout`` seconds. A connection
        silent for the call timeout is asked for a reply (a link that died silently would
        otherwise pass for a quiet log, and its notifications be missed for good).

        Raises:
            BackendError: the connection failed (the next wait reconnects).
        """
        try:
            if self._connection is None:
                self._connection = self._recorder.listen()
                self._heard = time.monotonic()
                return True
            connection = self._connection
            with _translated(self._recorder.channel):
                notes = list(connection.notifies(timeout=max(0.0, timeout), stop_after=1))
                if notes:
                    notes += connection.notifies(timeout=0)
                    self._heard = time.monotonic()
                elif self._deadlines.seconds and (
                    time.monotonic() - self._heard >= self._deadlines.seconds
                ):
                    # Notifications that arrive meanwhile wait for the next notifies().
                    with self._deadlines.timed(connection):
                        connection.execute("SELECT 1")
                    self._heard = time.monotonic()
        except PersistenceError as exc:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            raise BackendError(f"watching {self._recorder.channel} failed: {exc}") from exc
        for note in notes:
            self._recorder.heard(note.payload)
        return bool(notes)

    def close(self) -> None:
        """Close the listening connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@contextlib.contextmanager
def _translated(where: str) -> Iterator[None]:
    """psycopg's errors as eventsourcing's persistence errors (the log's outage handling
    retries :class:`OperationalError` and :class:`InterfaceError`)."""
    try:
        yield
    except psycopg.Error as exc:
        kind: type[PersistenceError] = PersistenceError
        for source, target in _ERRORS:
            if isinstance(exc, source):
                kind = target
                break
        raise kind(f"{where}: {exc}") from exc


_ERRORS: tuple[tuple[type[psycopg.Error], type[PersistenceError]], ...] = (
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.InterfaceError, InterfaceError),
    # A lost or refused connection, a restarting server, a serialization failure, a deadlock.
    (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.InternalError, InternalError),
    (psycopg.DatabaseError, DatabaseError),
)


def _one_line(exc: BaseException) -> str:
    """An error's message on one line: libpq's own run on ("\\n\\tIs the server running...")."""
    return " ".join(str(exc).split())


# What a server says while it restarts (SQLSTATE 57P03, 57P01): libpq gives no SQLSTATE for a
# refused connection, only these words (a server's in English; ``lc_messages`` may say them
# in another language, and then an opening fails at once). Not "the database system is not
# accepting connections": a standby with hot_standby off says it for good.
_RESTARTING = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
)
# What it says once it is down: only a server seen restarting is waited for through these (a
# wrong host or port says the same, and is reported at once).
_DOWN = ("connection refused", "no such file or directory", "server closed the connection")


def _through_a_restart(
    attempt: Callable[[], None],
    url: str,
    tolerance: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Call ``attempt`` (opening a log); while the server says it is restarting, and then
    while it is down, retry with back-off for up to ``tolerance`` seconds.

    A worker started by its supervisor while the server restarts waits for it, as appends and
    reads ride out an outage; a server that never said it restarts (a wrong port, a host that
    refuses) fails at once.

    Raises:
        Exception: what ``attempt`` raised last, when it is not a restart or the restart
            outlasted the tolerance.
    """
    pause = FIRST_PAUSE
    since: float | None = None
    while True:
        try:
            attempt()
            return
        except Exception as exc:
            said = _one_line(exc).lower()
            restarting = any(words in said for words in _RESTARTING)
            if not restarting and (since is None or not any(w in said for w in _DOWN)):
                raise
            now = clock()
            if since is None:
                since = now
                logger.warning(
                    "opening %s: the server is restarting; waiting up to %g s: %s",
                    url,
                    tolerance,
                    _one_line(exc),
                )
            if now - since + pause > tolerance:
                raise
            sleep(pause)
            pause = min(pause * 2, LAST_PAUSE)


def _as_created(connect_args: dict[str, Any], schema: str, prefix: str) -> str:
    """The table prefix of a log whose URL's ``table`` has capitals: as written, unless only
    its lower-cased tables exist (earlier versions of onward lower-cased the prefix, as
    eventsourcing did): those are the log, opened with a warning, not a new empty one beside
    it."""
    with psycopg.connect(**connect_args, autocommit=True) as connection:
        found = connection.execute(
            "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
            (_regname(schema, f"{prefix}_events"), _regname(schema, f"{prefix.lower()}_events")),
        ).fetchone()
    if found is None or found[0] or not found[1]:
        return prefix
    logger.warning(
        "table prefix %r: opening the log an earlier onward made under the lower-cased name "
        "%r (write ?table=%s to say so)",
        prefix,
        prefix.lower(),
        prefix.lower(),
    )
    return prefix.lower()


def _create(connect_args: dict[str, Any], schema: str, prefix: str) -> None:
    """Create the schema and tables of a log when missing, and retire the sequence of a log
    of an earlier version, holding the advisory lock of the log's creation: processes that
    open a new log at once create it one after the other (PostgreSQL's ``IF NOT EXISTS`` does
    not hold between concurrent creators)."""
    events = sql.Identifier(schema, f"{prefix}_events")
    with psycopg.connect(**connect_args, autocommit=True) as connection:
        key = int.from_bytes(
            hashlib.blake2b(f"onward:{schema}.{prefix}".encode(), digest_size=8).digest()
        )
        connection.execute("SELECT pg_advisory_lock(%s)", (key - 2**63,))
        names = (
            _regname(schema, f"{prefix}_events"),
            _regname(schema, f"{prefix}_events_notification_id_idx"),
            _regname(schema, f"{prefix}_checkpoints"),
            _regname(schema, f"{prefix}_blobs"),
        )
        # DDL only when something is missing: CREATE INDEX takes a lock on the table even
        # when the index exists, and would wait for every writer's transaction.
        found = connection.execute(
            "SELECT to_regnamespace(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL"
            " AND to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL"
            " AND to_regclass(%s) IS NOT NULL",
            (_quoted(schema), *names),
        ).fetchone()
        if found is not None and found[0]:
            _retire_sequence(connection, schema, prefix)
            return
        with connection.transaction():
            if schema != "public":
                connection.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (originator_id text NOT NULL,"
                    " originator_version bigint NOT NULL, topic text, state bytea,"
                    " notification_id bigint NOT NULL,"
                    " PRIMARY KEY (originator_id, originator_version))"
                ).format(events)
            )
            connection.execute(
                sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (notification_id)").format(
                    sql.Identifier(f"{prefix}_events_notification_id_idx"), events
                )
            )
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (originator_id text NOT NULL,"
                    " originator_version bigint NOT NULL, topic text, state bytea,"
                    " PRIMARY KEY (originator_id, originator_version))"
                ).format(sql.Identifier(schema, f"{prefix}_checkpoints"))
            )
            connection.execute(
                sql.SQL(_CREATE_BLOBS).format(sql.Identifier(schema, f"{prefix}_blobs"))
            )
            _retire_sequence(connection, schema, prefix)
        # The advisory lock goes with the connection.


def _retire_sequence(connection: psycopg.Connection[Any], schema: str, prefix: str) -> None:
    """A log written by an earlier version numbers records with a sequence: make a writer of
    that version fail with a clear error from now on, rather than number records below
    positions that readers have passed."""
    events = sql.Identifier(schema, f"{prefix}_events")
    found = connection.execute(
        "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a"
        " ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
        " WHERE d.adrelid = %s::regclass AND a.attname = 'notification_id'",
        (_regname(schema, f"{prefix}_events"),),
    ).fetchone()
    if found is None or "nextval" not in str(found[0]):
        return
    row = connection.execute(
        sql.SQL(
            "SELECT max(notification_id), pg_current_xact_id()::text::bigint * %s FROM {}"
        ).format(events),
        (ROWS_PER_COMMIT,),
    ).fetchone()
    assert row is not None
    if row[0] is not None and row[0] >= row[1]:
        raise BackendError(
            f"{schema}.{prefix}_events: its last position ({row[0]}) is not below the positions"
            f" of new records ({row[1]}); this log cannot be upgraded in place"
        )
    refuse = sql.Identifier(schema, f"{prefix}_refuse_sequence")
    with connection.transaction():
        connection.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'this onward log numbers its records by transaction now"
                " (a newer onward opened it): upgrade every process that writes to it'"
                " USING ERRCODE = 'feature_not_supported'; END $$"
            ).format(refuse)
        )
        connection.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN notification_id SET DEFAULT {}()").format(
                events, refuse
            )
        )


def _quoted(name: str) -> str:
    """A name as a quoted SQL identifier: ``MySchema`` stays itself (unquoted, PostgreSQL
    would read it as ``myschema``, while the tables are created under the quoted name)."""
    return '"' + name.replace('"', '""') + '"'


def _regname(schema: str, name: str) -> str:
    """A table's or an index's name for ``to_regclass`` and ``::regclass``, as created."""
    return f"{_quoted(schema)}.{_quoted(name)}"


def _render(query: sql.Composed) -> bytes:
    """A statement as bytes, once: psycopg then converts it from its cache at each call."""
    return query.as_bytes(None)


def _channel(schema: str, prefix: str) -> str:
    """The log's notification channel: a name of at most 63 bytes, the same for every
    process that opens the log."""
    name = f"onward.{schema}.{prefix}"
    if len(name.encode()) <= 63:  # PostgreSQL's limit is in bytes
        return name
    return "onward." + hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


#: The query options onward reads itself; every other one is a libpq connection parameter.
_OWN_OPTIONS = frozenset({"call_timeout", "schema", "table"})
#: The libpq parameters that hold secrets: their values are masked wherever a URL is shown.
_SECRET_OPTIONS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)


@functools.cache
@functools.cache
def _libpq_parameters() -> frozenset[str]:
    """The connection parameters the installed libpq knows (``sslmode``, ``options``, ...)."""
    return frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def _query(url: str, query: str) -> dict[str, str]:
    """A URL's query options, percent-decoded as libpq decodes them (``+`` stays ``+``).

    Raises:
        InvalidURL: an option without ``=``, given twice, or one that neither onward nor libpq
            knows.
    """
    params: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidURL(f"PostgreSQL URL option {unquote(key)!r} has no value: {_safe(url)}")
        name = unquote(key)
        if name in params:  # which one is meant? (the last one was taken, silently)
            raise InvalidURL(
                f"PostgreSQL URL option {name!r} is given more than once: {_safe(url)}"
            )
        params[name] = unquote(value)
    unknown = sorted(set(params) - _OWN_OPTIONS - _libpq_parameters())
    if unknown:
        raise InvalidURL(
            f"unknown PostgreSQL URL option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} in {_safe(url)}: onward takes schema and table, "
            "and libpq's connection parameters (sslmode, application_name, options, ...)"
        )
    return params


#: libpq's TCP settings of every connection (a URL's own options replace them).
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


#: What a URL that does not say connects to, with libpq's environment variable that says it
#: instead: the server on this machine's loopback, as ``postgres``.
_DEFAULTS: dict[str, tuple[str, Any]] = {
    "host": ("PGHOST", "127.0.0.1"),
    "port": ("PGPORT", 5432),
    "user": ("PGUSER", "postgres"),
}


def _from_service(params: dict[str, str]) -> bool:
    """Whether libpq takes the connection from a service file (``?service=`` or
    ``PGSERVICE``): then it says what the URL does not, and no default of onward's does."""
    return bool(params.get("service") or os.environ.get("PGSERVICE"))


def _defaults(params: dict[str, str]) -> dict[str, Any]:
    """onward's defaults for what neither the URL nor libpq's environment (``PGHOST``,
    ``PGPORT``, ``PGUSER``, a service file) gives."""
    if _from_service(params):
        return {}
    found = {
        key: value
        for key, (variable, value) in _DEFAULTS.items()
        if key not in params and not os.environ.get(variable)
    }
    if "hostaddr" in params or os.environ.get("PGHOSTADDR"):
        found.pop("host", None)
    return found


def _connection_parameters(params: dict[str, str]) -> dict[str, str]:
    """The query options to pass to libpq as they are (``connect_timeout`` is checked and
    passed apart)."""
    return {k: v for k, v in params.items() if k not in _OWN_OPTIONS and k != "connect_timeout"}


def _safe(url: str) -> str:
    """The URL with its secrets masked (the password after ``user:``, and in the query the
    values of :data:`_SECRET_OPTIONS` and of any option neither onward nor libpq knows: a
    misspelt ``PASSWORD=``), for messages, logs and reprs; never raises, even on a malformed
    URL."""
    scheme, sep, rest = url.partition("://")
    rest = hide_password(rest)
    head, mark, query = rest.partition("?")
    if mark:
        query, hash_, fragment = query.partition("#")
        pairs = [
            f"{key}=***"
            if eq and (_hides(unquote(key)) or _holds_a_secret(value))
            else f"{key}{eq}{value}"
            for key, eq, value in (pair.partition("=") for pair in query.split("&"))
        ]
        rest = f"{head}?{'&'.join(pairs)}{hash_}{fragment}"
    return f"{scheme}{sep}{rest}"


def _holds_a_secret(value: str) -> bool:
    """Whether a URL option's value, percent-decoded, holds a secret (``options=-c
    app.password%3D...``: libpq's options are server settings, which may be any)."""
    decoded = unquote(value)
    return redact_for_any_log(decoded) != decoded or redact_for_any_log(value) != value


def _hides(option: str) -> bool:
    """Whether a URL option's value is masked where the URL is shown: a secret's, or an
    option's that is none of the known ones (it may be a secret's, misspelt)."""
    if option.lower() in _SECRET_OPTIONS:
        return True
    try:
        known = _libpq_parameters()
    except Exception:  # libpq unreadable: mask what is not onward's own
        known = frozenset()
    return option not in _OWN_OPTIONS and option not in known
