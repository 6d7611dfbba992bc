"""The SQLite backend: the embedded default.

Built on eventsourcing's SQLite application recorder (table ``stored_events``; the global
position is the rowid). Defaults: WAL, ``synchronous=FULL`` (durable against power loss; pass
``synchronous="normal"`` to trade that for speed), a busy timeout so that several processes can
append to one file, and the database file created with mode 0600.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
    SQLiteFactory,
)

from onward.events.codec import LAYOUT
from onward.events.exceptions import BackendError, LogDamaged, LogNotFound, UsageError
from onward.events.integrity import (
    CHAIN_START,
    HEAD_DAMAGED,
    HEAD_REMOVED,
    LogHead,
    Problem,
    ProblemKind,
    advance_chain,
)
from onward.events.log import EventLog, StoredRow
from onward.events.redaction import redacted_logger
from onward.events.sqlite_file import (
    check_file_name,
    check_log_file,
    create_log_file,
    forked_away,
    hold_log_file,
    moved_away,
    release_log_file,
    warn_if_shared,
)
from onward.events.watch import PollingWatch, Watch

__all__ = ["SQLiteLog", "SQLiteWriterRecorder", "Synchronous", "sqlite_url"]

logger = redacted_logger("onward.events")

#: SQLite's ``PRAGMA synchronous`` levels onward accepts.
Synchronous = Literal["full", "normal", "extra"]

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}
# The longest busy_timeout, in seconds: SQLite takes it in milliseconds, as a C int.
MAX_BUSY_TIMEOUT = (2**31 - 1) / 1000

# The head record (see onward.events.integrity): one row, rewritten in every append's
# transaction. A log written by an older onward gets the table at its first newer append.
_CREATE_HEAD = (
    "CREATE TABLE IF NOT EXISTS onward_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " base INTEGER NOT NULL, position INTEGER NOT NULL, count INTEGER NOT NULL,"
    " chain TEXT NOT NULL)"
)
_SELECT_HEAD = "SELECT base, position, count, chain FROM onward_head WHERE id = 1"
_HEAD_TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'onward_head'"
# The blobs (see onward.events.blobs): created at the first append that stores one.
# A blob is stored once per digest; stored bytes that differ from the new ones (which match
# their digest: content-addressed) were damaged since, and are replaced by the good ones.
_INSERT_BLOB = (
    "INSERT INTO onward_blobs (digest, size, data) VALUES (?, ?, ?) ON CONFLICT (digest) DO "
    "UPDATE SET size = excluded.size, data = excluded.data WHERE data IS NOT excluded.data"
)
_CREATE_BLOBS = (
    "CREATE TABLE IF NOT EXISTS onward_blobs (digest TEXT PRIMARY KEY,"
    " size INTEGER NOT NULL, data BLOB NOT NULL)"
)
_CHECKSUM = slice(*LAYOUT.checksum)
# What SQLite says of a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB), by code and by message
# (eventsourcing's errors carry SQLite's as their cause).
_DAMAGE_CODES = frozenset({11, 26})
_DAMAGE_WORDS = ("database disk image is malformed", "file is not a database")


#: How many prepared statements a reading connection keeps (sqlite3's default).
_CACHED_STATEMENTS = 128
#: The busy timeout of a reading connection, in seconds, when none is given (eventsourcing's).
_LOCK_TIMEOUT = 5

#: How long a look finding the log's file in its place holds, in seconds.
_LOOK_AGAIN = 0.05


#: sqlite3's errors and eventsourcing's, in the order its transaction translates them.
_TRANSLATED: tuple[tuple[type[sqlite3.Error], type[PersistenceError]], ...] = (
    (sqlite3.InterfaceError, InterfaceError),
    (sqlite3.DataError, DataError),
    (sqlite3.OperationalError, OperationalError),
    (sqlite3.IntegrityError, IntegrityError),
    (sqlite3.InternalError, InternalError),
    (sqlite3.ProgrammingError, ProgrammingError),
    (sqlite3.NotSupportedError, NotSupportedError),
    (sqlite3.DatabaseError, DatabaseError),
)


def _file_gone(why: str) -> sqlite3.OperationalError:
    """The error of a log whose file is no longer at its path (:func:`moved_away`): SQLite's
    own words for a file it cannot open, which the log's outage handling rides out until the
    file is back or the tolerance has passed."""
    return sqlite3.OperationalError(f"unable to open database file: {why}")


class _PooledConnection(SQLiteConnection):
    """eventsourcing's pooled connection, ending its transactions through prepared
    statements: sqlite3's own ``rollback()`` and ``commit()`` compile theirs each time."""

    def rollback(self) -> None:
        raw = self._sqlite_conn
        if raw.in_transaction:
            raw.execute("ROLLBACK")

    def commit(self) -> None:
        raw = self._sqlite_conn
        if raw.in_transaction:
            raw.execute("COMMIT")

    def select(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """The rows of one SELECT, run on its own: a single statement reads one snapshot of
        the database by itself, with none of the BEGIN and ROLLBACK around it that a
        transaction of eventsourcing's adds (three statements for one). A text column that
        holds bytes that are not UTF-8 (damage done behind onward's back) is read again with
        each bad byte as U+FFFD, so that its record fails its checksum and is reported as
        damaged instead of making the whole log unreadable.

        Raises:
            PersistenceError: as eventsourcing's transaction translates sqlite3's errors
                (an :class:`OperationalError` for a busy or unreadable database).
        """
        raw = self._sqlite_conn
        cursor = raw.cursor()
        cursor.row_factory = None  # plain tuples (the pool's connections make sqlite3.Row)
        try:
            try:
                cursor.execute(sql, params)
                return cursor.fetchall()
            except sqlite3.OperationalError as exc:
                if "decode to UTF-8" not in str(exc):
                    raise
            raw.text_factory = _lenient_text
            try:
                cursor.execute(sql, params)
                return cursor.fetchall()
            finally:
                raw.text_factory = str
        except sqlite3.Error as exc:
            raise _translated(exc) from exc
        finally:
            cursor.close()  # its statement reset: no read snapshot held in the pool


class _TunedPool(SQLiteConnectionPool):
    """eventsourcing's pool, with our PRAGMAs on every new connection, and none made to a file
    that took the log's place (it would be an empty log beside the one in use)."""

    synchronous = "FULL"
    busy_timeout_ms = 30_000
    file_key: tuple[int, int] | None = None

    def _create_connection(self) -> SQLiteConnection:
        if self.file_key is not None:
            gone = moved_away(self.db_name, self.file_key)
            if gone is not None:
                raise InterfaceError(gone) from _file_gone(gone)
        # Made here rather than by eventsourcing's pool, which keeps one prepared statement
        # per connection: a read's BEGIN and SELECT then take each other's place, and each
        # read compiles both again (tens of thousands of instructions, a task's claim's
        # history among them). The file is in WAL already (_set_wal).
        try:
            raw = sqlite3.connect(
                self.db_name,
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                cached_statements=_CACHED_STATEMENTS,
                timeout=self.lock_timeout or _LOCK_TIMEOUT,
            )
        except (sqlite3.Error, TypeError) as exc:
            raise InterfaceError(exc) from exc
        raw.row_factory = sqlite3.Row
        raw.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        raw.execute(f"PRAGMA synchronous={self.synchronous}")
        return _PooledConnection(sqlite_conn=raw, max_age=self.max_age)


class SQLiteWriterRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, with one dedicated writer connection.

    Appends are the hot path (one per durable step): this skips the pool's interlocking and
    starts each transaction with ``BEGIN IMMEDIATE``, so a writer waits for another process's
    lock with the busy timeout instead of failing on a lock upgrade. Reads use the pool. Each
    append also advances the log's head record, in its own transaction.
    """

    # The benchmark turns it off to measure what the head record costs an append; a log
    # appended to without it fails verify from then on.
    _track_head = True

    def __init__(
        self,
        datastore: SQLiteDatastore,
        *,
        busy_timeout: float,
        synchronous: str,
        file_key: tuple[int, int] | None = None,
    ):
        super().__init__(datastore, "stored_events")
        self._busy_timeout = busy_timeout
        # The file the log holds (sqlite_file.hold_log_file): a transaction first checks that
        # it is still at the path (sqlite_file.moved_away), when the last look is
        # _LOOK_AGAIN old (a look costs a path's resolution: a few µs of a step's time).
        self._file_key = file_key
        self._look_again = 0.0
        self._synchronous = synchronous
        self._writer: sqlite3.Connection | None = None
        # The writer's one cursor, for all its statements: a new cursor per statement (what
        # Connection.execute makes) costs about a microsecond of each append.
        self._statements: sqlite3.Cursor | None = None
        self._writer_lock = threading.Lock()
        self._closed = False
        self._head_table = False  # the head table is known to exist
        # The head record as this writer's last append left it: the next append advances it
        # with an UPDATE conditional on it, and reads it only when someone else appended since.
        self._head: tuple[int, int, int, str] | None = None

    def _connect(self) -> sqlite3.Cursor:
        """The writer connection's cursor, the connection opened first if need be."""
        statements = self._statements
        if statements is None:
            if self._closed:  # an append racing the log's close: never a new connection
                raise UsageError(f"the log {sqlite_url(self.datastore.pool.db_name)} is closed")
            writer = sqlite3.connect(
                self.datastore.pool.db_name,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            writer.execute(f"PRAGMA busy_timeout={max(1, int(self._busy_timeout * 1000))}")
            writer.execute(f"PRAGMA synchronous={self._synchronous}")
            self._writer = writer
            statements = self._statements = writer.cursor()
        return statements

    def changes_of_others(self) -> int | None:
        """SQLite's ``data_version`` on the writer's connection: it changes when any other
        connection (another process, another log of the file, a tool) commits to the file,
        and never for this writer's own commits. None before the writer's first append (it
        has committed nothing of its own: no connection is opened for this).

        Raises:
            OperationalError: the database failed.
        """
        with self._writer_lock:
            if self._statements is None:
                return None
            try:
                row = self._statements.execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as exc:
                raise OperationalError(exc) from exc
        return int(row[0])

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        *,
        blobs: dict[str, bytes] | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """Insert records in one transaction; return their positions (rowids).

        Args:
            stored_events: the records.
            blobs: blobs the records reference, by digest, stored in the same transaction
                (one already there is kept).

        Raises:
            IntegrityError: a record's stream and version are taken (a version clash).
            OperationalError: the database failed.
        """
        with self._writer_lock:
            if self._file_key is not None and (now := time.monotonic()) >= self._look_again:
                gone = moved_away(self.datastore.pool.db_name, self._file_key)
                if gone is not None:
                    raise OperationalError(gone) from _file_gone(gone)
                self._look_again = now + _LOOK_AGAIN
            writer = self._connect()
            try:
                writer.execute("BEGIN IMMEDIATE")
                if blobs:
                    writer.execute(_CREATE_BLOBS)
                    writer.executemany(_INSERT_BLOB, [(d, len(b), b) for d, b in blobs.items()])
                positions = []
                for s in stored_events:
                    # The state as a bytearray: sqlite3 binds it as the same blob at once,
                    # where bytes first go through its adapters' lookup and fail it (which
                    # costs more than the copy: about 1% of a step's CPU).
                    cursor = writer.execute(
                        self.insert_events_statement,
                        (s.originator_id, s.originator_version, s.topic, bytearray(s.state)),
                    )
                    positions.append(int(cursor.lastrowid or 0))
                head = self._advance_head(writer, stored_events, positions)
                writer.execute("COMMIT")
                self._head_table = True
                self._head = head
            except sqlite3.IntegrityError as exc:
                _rollback(writer.connection)
                self._head = None
                raise IntegrityError(exc) from exc
            except sqlite3.Error as exc:
                _rollback(writer.connection)
                self._head = None
                raise OperationalError(exc) from exc
            except BaseException:
                _rollback(writer.connection)
                self._head = None
                raise
            return positions

    def _advance_head(
        self,
        writer: sqlite3.Cursor,
        stored_events: Sequence[StoredEvent],
        positions: list[int],
    ) -> tuple[int, int, int, str] | None:
        """Advance the head record over the records just inserted, in the same transaction;
        returns it as it now is (None: not tracked).

        The head this writer left is advanced by one UPDATE that holds only if the record is
        still that (nobody else appended since); otherwise it is read and advanced.
        """
        if not positions or not self._track_head:
            return None
        cached = self._head
        if cached is not None:
            base, position, count, chain = cached
            advanced = (
                base,
                positions[-1],
                count + len(positions),
                advance_chain(chain, [s.state[_CHECKSUM] for s in stored_events]),
            )
            updated = writer.execute(
                "UPDATE onward_head SET position = ?, count = ?, chain = ?"
                " WHERE id = 1 AND base = ? AND position = ? AND count = ? AND chain = ?",
                (advanced[1], advanced[2], advanced[3], base, position, count, chain),
            )
            if updated.rowcount == 1:
                return advanced
        head = self._read_head(writer, positions[0])
        return self._write_head(writer, head, stored_events, positions)

    def _read_head(self, writer: sqlite3.Cursor, first: int) -> tuple[int, int, int, str] | None:
        """The head record inside the append's transaction (None: this append creates it),
        whose first record is at position ``first``."""
        if not self._track_head:
            return None
        tracked = self._head_table or bool(writer.execute(_HEAD_TABLE_EXISTS).fetchone())
        if not tracked:
            writer.execute(_CREATE_HEAD)
        try:
            row = writer.execute(_SELECT_HEAD).fetchone()
        except sqlite3.OperationalError as exc:
            if "decode to UTF-8" not in str(exc):
                raise
            row = (None, None, None, None)  # a chain that is not text: damaged
        if row is None:
            if tracked and first > 1:
                # Removed behind onward's back (verify reports it until now; a log of an
                # earlier onward has no head table at all).
                logger.warning(
                    "the head record of %s is gone: it starts again after this append",
                    self.datastore.pool.db_name,
                )
            return None
        head = _head_fields(row)
        if head is None:
            # Changed behind onward's back (verify reports it until now): tracking starts
            # again after the records already in the log, as after a removed head record.
            logger.warning(
                "the head record of %s is damaged (%r): it starts again after this append",
                self.datastore.pool.db_name,
                row,
            )
        return head

    def _write_head(
        self,
        writer: sqlite3.Cursor,
        head: tuple[int, int, int, str] | None,
        stored_events: Sequence[StoredEvent],
        positions: list[int],
    ) -> tuple[int, int, int, str] | None:
        """Advance the head record ``head`` (as read) over the records just inserted, in the
        same transaction; returns it as it now is (None: not tracked)."""
        if not positions or not self._track_head:
            return None
        chain = advance_chain(
            CHAIN_START if head is None else head[3], (s.state[_CHECKSUM] for s in stored_events)
        )
        if head is None:
            # Tracking starts here: after every record already in the log (none in a new one),
            # in place of a damaged head record.
            advanced = (positions[0] - 1, positions[-1], len(positions), chain)
            writer.execute("INSERT OR REPLACE INTO onward_head VALUES (1, ?, ?, ?, ?)", advanced)
        else:
            advanced = (head[0], positions[-1], head[2] + len(positions), chain)
            writer.execute(
                "UPDATE onward_head SET position = ?, count = ?, chain = ? WHERE id = 1",
                advanced[1:],
            )
        return advanced

    def close(self) -> None:
        """Close the writer connection (for good: no append opens another)."""
        with self._writer_lock:
            self._closed = True
            if self._statements is not None:
                # First: a cursor still holding its last statement keeps the connection open
                # past its close() (SQLite closes it when that statement goes, at a garbage
                # collection), its -wal and -shm files with it.
                self._statements.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = self._statements = None


#: The most problems SQLite's integrity check reports in one verify.
_STORAGE_PROBLEMS = 100
_MISSING_FROM_INDEX = re.compile(r"row (\d+) missing from index (\S+)")


def _head_fields(row: Sequence[Any]) -> tuple[int, int, int, str] | None:
    """The head record's base, position, count and chain; None when they are not what onward
    writes (whole numbers and a hash chain in hex)."""
    base, position, count, chain = row
    if not (
        type(base) is int
        and type(position) is int
        and type(count) is int
        and count >= 0
        and isinstance(chain, str)
        and len(chain) == len(CHAIN_START)
    ):
        return None
    try:
        bytes.fromhex(chain)
    except ValueError:
        return None
    return base, position, count, chain


def _blob_bytes(data: object) -> bytes:
    """A blob's data as stored; a value that is not bytes (text, a number, NULL: changed
    behind onward's back) as bytes that fail the blob's digest, so it reads as damaged."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogateescape")
    return b"" if data is None else str(data).encode()


def _translated(exc: sqlite3.Error) -> PersistenceError:
    """sqlite3's error as eventsourcing's transaction raises it (the log's outage handling
    and error messages read those)."""
    for raw, ours in _TRANSLATED:
        if isinstance(exc, raw):
            return ours(exc)
    return PersistenceError(exc)


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _rollback(connection: sqlite3.Connection) -> None:
    if connection.in_transaction:
        connection.execute("ROLLBACK")


class SQLiteLog(EventLog):
    """An event log in one SQLite file (``sqlite:///path``).

    Args:
        path: the database file; created with mode 0600 when there is no file at all. A file
            that is there must hold an onward log: anything else is refused and left as it is
            (see :mod:`onward.events.sqlite_file`). An existing log whose files others may
            read gets a warning (logged), not a change of mode.
        synchronous: ``"full"`` (default), ``"normal"`` or ``"extra"``.
        busy_timeout: seconds a writer waits for another process's lock (at most
            :data:`MAX_BUSY_TIMEOUT`, SQLite's limit).
        create: create the log when there is no file; with False, a missing file raises
            :class:`LogNotFound` and nothing is written.
        **options: passed to :class:`onward.events.EventLog`.

    Raises:
        UsageError: a bad option.
        LogNotFound: ``create=False`` and there is no file at ``path``.
        NotALog: the path ends in a separator, or holds a directory, an empty, text or
            unknown file, or an SQLite database without an onward log.
        LogDamaged: the file is a truncated or malformed SQLite database.
        BackendError: the file cannot be created or opened.
    """

    # A position is the rowid: the next one is always one past the largest.
    dense_positions = True
    remembers_own_rows = True

    def __init__(
        self,
        path: str,
        *,
        synchronous: Synchronous = "full",
        busy_timeout: float = 30.0,
        create: bool = True,
        **options: Any,
    ) -> None:
        EventLog.check_options(**options)  # before the file is created
        if synchronous not in _SYNCHRONOUS:
            raise UsageError(
                f"synchronous must be one of {sorted(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not 0 < busy_timeout <= MAX_BUSY_TIMEOUT  # NaN and inf too
        ):
            raise UsageError(
                f"busy_timeout must be a positive number of seconds up to {MAX_BUSY_TIMEOUT}, "
                f"got {busy_timeout}"
            )
        if not path or path == ":memory:":
            raise UsageError("an SQLite log needs a file path; use memory:// for a log in memory")
        check_file_name(path)
        self.path = os.path.abspath(path)
        self.synchronous = synchronous
        self._pid = os.getpid()
        exists = check_log_file(self.path)
        if not exists and not create:
            raise LogNotFound(f"no log at {self.path} (no such file)")
        if exists:
            warn_if_shared(self.path)
        else:
            create_log_file(self.path, busy_timeout)
        # Held before the first connection and until the last has closed (sqlite_file); a log
        # dropped unclosed lets go of it when it is collected.
        key = hold_log_file(self.path)
        self._release = weakref.finalize(self, release_log_file, key)
        try:
            self._connect(create, busy_timeout, options, key)
        except BaseException:
            self._close_connections()
            raise

    def _connect(
        self, create: bool, busy_timeout: float, options: dict[str, Any], key: tuple[int, int]
    ) -> None:
        """Open the log's connections (its file exists and is held, as ``key``)."""
        _set_wal(self.path, busy_timeout)
        factory = SQLiteFactory.construct(
            {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.path,
                "SQLITE_LOCK_TIMEOUT": str(max(1, round(busy_timeout))),
                "ORIGINATOR_ID_TYPE": "text",
                "CREATE_TABLE": "true" if create else "false",
            }
        )
        datastore: SQLiteDatastore = factory.datastore
        pool = _TunedPool(db_name=self.path, lock_timeout=max(1, round(busy_timeout)))
        pool.synchronous = _SYNCHRONOUS[self.synchronous]
        pool.busy_timeout_ms = max(1, int(busy_timeout * 1000))
        pool.file_key = key
        datastore.pool.close()
        datastore.pool = pool
        self._datastore = datastore
        if not create:
            # The checkpoint table may be missing from a log that never saved one.
            with datastore.transaction(commit=True) as c:
                for statement in factory.aggregate_recorder_class(
                    datastore, "stored_checkpoints"
                ).create_table_statements:
                    c.execute(statement)
        try:
            recorder = SQLiteWriterRecorder(
                datastore,
                busy_timeout=busy_timeout,
                synchronous=_SYNCHRONOUS[self.synchronous],
                file_key=key,
            )
            if create:
                recorder.create_table()
            checkpoints = factory.aggregate_recorder("checkpoints")
        except Exception as exc:
            datastore.close()
            raise _cannot_open(self.path, exc) from exc
        self._writer = recorder
        super().__init__(recorder, checkpoints, url=sqlite_url(self.path), **options)

    def _changes_of_others(self) -> int | None:
        return self._writer.changes_of_others()

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        pool = self._datastore.pool
        connection = pool.get_connection(is_writer=False)
        try:
            assert isinstance(connection, _PooledConnection)
            return connection.select(sql, params)
        finally:
            pool.put_connection(connection)

    def _select_stream(self, stream: str, after: int, upto: int | None) -> list[StoredRow]:
        if upto is None:
            return self._query(
                "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
                " WHERE originator_id=? AND originator_version>? ORDER BY originator_version",
                (stream, after),
            )
        return self._query(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " WHERE originator_id=? AND originator_version>? AND originator_version<=?"
            " ORDER BY originator_version",
            (stream, after, upto),
        )

    def _select_rows_of(self, streams: Sequence[str]) -> list[StoredRow]:
        marks = ",".join("?" * len(streams))
        return self._query(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            f" WHERE originator_id IN ({marks}) ORDER BY originator_id, originator_version",
            tuple(streams),
        )

    def _select_page(self, after: int, limit: int) -> list[StoredRow]:
        return self._query(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " WHERE rowid>? ORDER BY rowid LIMIT ?",
            (after, limit),
        )

    def _select_states(self, after: int, limit: int) -> list[tuple[int, str, int, bytes]]:
        return self._query(
            "SELECT rowid, originator_id, originator_version, state FROM stored_events"
            " WHERE rowid>? ORDER BY rowid LIMIT ?",
            (after, limit),
        )

    def _damage(self, exc: PersistenceError) -> str | None:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, sqlite3.DatabaseError) and (
                getattr(cause, "sqlite_errorcode", None) in _DAMAGE_CODES
                or any(words in str(cause) for words in _DAMAGE_WORDS)
            ):
                return str(cause)
            cause = cause.__cause__ or cause.__context__
        return None

    def _insert_with_blobs(
        self, records: list[StoredEvent], blobs: dict[str, bytes], wakes: bool = False
    ) -> list[int]:
        # Its watch sees every commit (``PRAGMA data_version``): nothing to do for ``wakes``.
        return self._writer.insert_events(records, blobs=blobs)

    def _store_blobs(self, blobs: dict[str, bytes]) -> None:
        self._writer.insert_events([], blobs=blobs)

    def _has_blobs(self) -> bool:
        return bool(
            self._query(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='onward_blobs'", ()
            )
        )

    def _select_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        if not digests or not self._has_blobs():
            return {}
        marks = ",".join("?" * len(digests))
        rows = self._query(
            f"SELECT digest, data FROM onward_blobs WHERE digest IN ({marks})", tuple(digests)
        )
        return {str(digest): _blob_bytes(data) for digest, data in rows}

    def _select_blob_sizes(self, digests: Sequence[str]) -> dict[str, int]:
        if not digests or not self._has_blobs():
            return {}
        marks = ",".join("?" * len(digests))
        # The bytes' own length (SQLite knows it without reading them), not the size column,
        # which a damaged row may hold anything in: the bound on what a check reads at once
        # must not rest on it.
        rows = self._query(
            f"SELECT digest, length(data) FROM onward_blobs WHERE digest IN ({marks})",
            tuple(digests),
        )
        return {str(digest): int(size or 0) for digest, size in rows}

    def _select_blob_digests(self) -> list[str]:
        if not self._has_blobs():
            return []
        return [
            str(r[0]) for r in self._query("SELECT digest FROM onward_blobs ORDER BY rowid", ())
        ]

    def _select_head(self) -> int:
        rows = self._query("SELECT MAX(rowid) FROM stored_events", ())
        return int(rows[0][0] or 0)

    def _check_storage(self) -> list[Problem]:
        """What SQLite's ``PRAGMA integrity_check`` finds (up to :data:`_STORAGE_PROBLEMS`):
        a record missing from the index of its stream is one problem at its position."""
        check = f"PRAGMA integrity_check({_STORAGE_PROBLEMS})"
        try:
            found = [
                str(r[0])
                for r in self._read(
                    "check the database's structure", lambda: self._query(check, ())
                )
            ]
        except LogDamaged as exc:  # too damaged to look at (a passing failure is raised)
            found = [str(exc)]
        if found == ["ok"]:
            return []
        # the indexes of the records' table: a row another table's index misses is not a record
        indexes: set[str] = set()
        with contextlib.suppress(LogDamaged):
            indexes = {
                str(r[0])
                for r in self._read(
                    "read the database's indexes",
                    lambda: self._query(
                        "SELECT name FROM sqlite_master"
                        " WHERE type='index' AND tbl_name='stored_events'",
                        (),
                    ),
                )
            }
        problems: list[Problem] = []
        for message in found:
            missing = _MISSING_FROM_INDEX.fullmatch(message)
            stream, version, position = "", 0, 0
            rows: list[Any] = []
            if missing is not None and missing[2] in indexes:
                position = int(missing[1])
                with contextlib.suppress(sqlite3.DatabaseError, PersistenceError):
                    rows = self._query(
                        "SELECT originator_id, originator_version FROM stored_events WHERE rowid=?",
                        (position,),
                    )
                if rows:
                    stream, version = str(rows[0][0]), int(rows[0][1])
            problems.append(
                Problem(
                    kind=ProblemKind.STORAGE,
                    stream=stream,
                    version=version,
                    position=position,
                    detail=f"SQLite's integrity check: {message}",
                )
            )
        if len(found) >= _STORAGE_PROBLEMS:
            problems[-1] = msgspec.structs.replace(
                problems[-1], detail=problems[-1].detail + f"; the check stops at {len(found)}"
            )
        return problems

    def _select_log_head(self) -> LogHead | None:
        tables = self._query(
            "SELECT name FROM sqlite_master WHERE type='table' AND name='onward_head'", ()
        )
        if not tables:
            return None  # written by an older onward and not appended to since
        rows = self._query(_SELECT_HEAD, ())
        if not rows:
            return HEAD_REMOVED
        head = _head_fields(rows[0])
        if head is None:
            return HEAD_DAMAGED
        base, position, count, chain = head
        return LogHead(base=base, position=position, count=count, chain=chain)

    def _select_stream_head(self, stream: str) -> StoredEvent | None:
        rows = self._query(
            "SELECT originator_id, originator_version, topic, state FROM stored_events"
            " WHERE originator_id=? ORDER BY originator_version DESC LIMIT 1",
            (stream,),
        )
        return StoredEvent(*rows[0]) if rows else None

    def _select_streams(self) -> list[str]:
        rows = self._query(
            "SELECT originator_id FROM stored_events GROUP BY originator_id ORDER BY MIN(rowid)",
            (),
        )
        return [r[0] for r in rows]

    def _prune_checkpoints(self, name: str, below: int) -> None:
        with self._datastore.transaction(commit=True) as c:
            c.execute(
                "DELETE FROM stored_checkpoints WHERE originator_id=? AND originator_version<?",
                (name, below),
            )

    def _watch(self) -> Watch:
        """``PRAGMA data_version`` on a connection of the watch's own: it changes whenever
        another connection (any process's, this log's writer included) commits."""
        # It may outlive the log's own connections: it holds the file too, until closed.
        release = functools.partial(release_log_file, hold_log_file(self.path))
        lock = threading.Lock()
        connection: sqlite3.Connection | None = None

        def probe() -> int:
            with lock:
                assert connection is not None
                return int(connection.execute("PRAGMA data_version").fetchone()[0])

        def close() -> None:
            nonlocal connection
            with lock:
                if connection is not None:
                    try:
                        connection.close()
                    finally:
                        connection = None
                        release()

        try:
            connection = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
            return PollingWatch(probe, close)
        except BaseException:
            if connection is None:
                release()
            else:
                close()
            raise

    def _check_open(self) -> None:
        super()._check_open()
        if os.getpid() != self._pid:
            raise forked_away(self.url)

    def _close_backend(self) -> None:
        if os.getpid() != self._pid:
            return  # the parent's connections: closing them here would end its locks
        self._close_connections()

    def _close_connections(self) -> None:
        """Close what this log opened, each part whatever the others do, then let go of its
        file (never while a connection of it is open)."""
        try:
            for opened in (getattr(self, "_writer", None), getattr(self, "_datastore", None)):
                if opened is not None:
                    with contextlib.suppress(Exception):
                        opened.close()
        finally:
            self._release()


def _cannot_open(path: str, exc: BaseException) -> BackendError:
    """The error of a log file that would not open, saying why when its place is read-only:
    SQLite writes beside a log (its ``-wal`` and ``-shm`` files) even to read it."""
    folder = os.path.dirname(os.path.abspath(path))
    why = ""
    if not os.access(folder, os.W_OK):
        why = f" (its folder {folder} is not writable: copy the log to a writable place to read it)"
    elif os.path.exists(path) and not os.access(path, os.W_OK):
        why = " (the file is not writable: SQLite writes to a log even to read it)"
    return BackendError(f"cannot open the SQLite log {path}: {exc}{why}")


def _set_wal(path: str, busy_timeout: float) -> None:
    """Switch the file to WAL before the pool connects, waiting out other processes' locks.

    The journal mode is stored in the file; eventsourcing's pool then finds WAL already set
    instead of switching it itself. Switching needs the file to itself, and SQLite does not
    apply the busy timeout to it, so a process that finds it locked tries again until the
    timeout.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.005
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=busy_timeout)) as conn:
                conn.execute(f"PRAGMA busy_timeout={max(1, int(busy_timeout * 1000))}")
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise _cannot_open(path, exc) from exc
        except sqlite3.Error as exc:
            raise _cannot_open(path, exc) from exc
        time.sleep(pause)  # another process is creating or switching the file right now
        pause = min(pause * 2, 0.1)


def sqlite_url(path: str) -> str:
    """The ``sqlite:///`` URL of a file path, which opens that very file again: the characters
    a URL reads otherwise (``%``, ``?``, ``#``, and the control characters a URL parser drops)
    percent-encoded, all others as they are."""
    return "sqlite:///" + "".join(
        f"%{ord(c):02X}" if c in "%?#" or ord(c) < 0x20 or ord(c) == 0x7F else c for c in path
    )
