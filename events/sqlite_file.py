"""What is at an SQLite log's path: a new log made whole before it appears, an existing file
checked before anything touches it, and a warning when others may read it.

A path that exists must hold an onward log. Anything else (a directory, an empty file, a text
file, bytes of no known format, an SQLite database without onward's tables, a truncated or
malformed database) is refused with an error that says which, and it is left exactly as it was:
the checks read the file without locking it, and never let SQLite create a ``-wal`` or ``-shm``
file beside it.

A file this process already holds open as a log is never read by a descriptor of its own: on
POSIX, closing any descriptor of a file drops every lock the process holds on it, SQLite's
included, and another process closing its connection would then take itself for the last one
and delete the write-ahead journal this process still writes to (SQLite's "How To Corrupt An
SQLite Database File", 2.2). A log counts itself here (:func:`hold_log_file`) before its first
connection and until its last one has closed.

A new log is built in a private file in the same directory (mode 0600, WAL, onward's tables)
and then linked to its path, which fails if another process got there first: so no process
ever sees a half-made log at the path, and two processes creating the same log at once end up
with the same one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
from urllib.parse import quote

from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteDatastore,
)

from onward.events.exceptions import BackendError, LogDamaged, NotALog, UsageError
from onward.events.redaction import redacted_logger

__all__ = [
    "check_file_name",
    "check_log_file",
    "create_log_file",
    "file_head",
    "forked_away",
    "hold_log_file",
    "moved_away",
    "release_log_file",
    "warn_if_shared",
]

logger = redacted_logger("onward.events")

_MAGIC = b"SQLite format 3\x00"
# A write-ahead log's header; a longer one holds frames (commits).
_WAL_HEADER = 32
_HEADER = 100
# Bytes read to tell a text file from bytes of no known format.
_SNIFF = 512
_TABLES = ("stored_events", "stored_checkpoints")


class _Holds:
    """The files (device, inode) this process holds open as logs, with how many holds each;
    its lock is taken to read a file's first bytes, so that no hold (and so no connection)
    begins meanwhile."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: dict[tuple[int, int], int] = {}
        #: The files the parent held when this process was forked from it.
        self.inherited: set[tuple[int, int]] = set()

    def forked(self) -> None:
        """In a forked child: none held, the lock free (the parent's may have been taken at
        the fork), and what the parent held remembered (SQLite there cannot be trusted)."""
        self.lock = threading.Lock()
        self.inherited |= set(self.count)
        self.count = {}


_HOLDS = _Holds()
os.register_at_fork(after_in_child=_HOLDS.forked)


def hold_log_file(path: str) -> tuple[int, int]:
    """Count the file at ``path`` as held open by a log of this process, before that log
    connects to it; returns the key to :func:`release_log_file` after its last connection has
    closed.

    Raises:
        BackendError: the file cannot be found or read.
        UsageError: this process was forked from one that had the file open.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror}") from exc
    key = (info.st_dev, info.st_ino)
    if key in _HOLDS.inherited:
        # SQLite keeps its locks' bookkeeping per file in the process: a forked child's copy
        # says it holds locks it never took, and the parent's close then deletes the journal
        # the child writes to (committed appends lost).
        raise forked_away(path)
    with _HOLDS.lock:
        _HOLDS.count[key] = _HOLDS.count.get(key, 0) + 1
    return key


def forked_away(log: str) -> UsageError:
    """The error of a log used, or opened again, in a process forked from one that had it
    open (see :func:`hold_log_file`)."""
    return UsageError(
        f"the log {log} was open in the process this one was forked from: SQLite cannot be "
        "used across fork(); open the log in a process started by spawn or forkserver "
        "(multiprocessing.get_context('spawn')), or before the parent opens it"
    )


def release_log_file(key: tuple[int, int]) -> None:
    """End one hold of :func:`hold_log_file` (the log's connections have all closed)."""
    with _HOLDS.lock:
        left = _HOLDS.count.get(key, 0) - 1
        if left > 0:
            _HOLDS.count[key] = left
        else:
            _HOLDS.count.pop(key, None)


def moved_away(path: str, key: tuple[int, int]) -> str | None:
    """Why the file a log holds (``key``, from :func:`hold_log_file`) is no longer at
    ``path``, or None when it still is.

    A log whose file was moved, removed or replaced while it was open must not write on:
    SQLite would go on writing to the file it has open, its latest commits in a write-ahead
    log named after the old path (a file moved elsewhere opens without them; a removed one is
    gone with them), and a new connection would create an empty log at the path.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        found = "was moved or removed"
    except OSError:
        return None  # not readable now: SQLite says why when it tries
    else:
        if (info.st_dev, info.st_ino) == key:
            return None
        found = "was replaced by another file"
    return (
        f"{path} {found} while the log was open: appends and reads wait for it to come back "
        f"(move the log back to {path}: its latest commits are in {path}-wal beside it)"
    )


def file_head(path: str, size: int, info: os.stat_result | None = None) -> bytes | None:
    """The first ``size`` bytes of the file at ``path``; None when this process holds it open
    as a log, which is never read by a descriptor of its own (see the module's docstring).

    Raises:
        OSError: the file cannot be read.
    """
    if info is None:
        info = os.stat(path)
    with _HOLDS.lock:
        if (info.st_dev, info.st_ino) in _HOLDS.count:
            return None
        with open(path, "rb") as f:
            return f.read(size)


def _refuse(path: str, found: str, why: str) -> NotALog:
    return NotALog(f"{path} {why}", path=path, found=found)


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sample is still text.
        return exc.start >= len(head) - 3
    return True


def _page_size(header: bytes) -> int:
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def check_file_name(path: str) -> None:
    """Check that ``path``, as given, names a file: one that ends in a separator names a
    directory (made absolute, it would lose the separator and name a file instead).

    Raises:
        NotALog: it ends in a separator.
    """
    if path.endswith(("/", os.sep)):
        raise _refuse(
            path,
            "a directory's name",
            f"ends in {path[-1]!r}: it names a directory, not a log file: name a file in it",
        )


def check_log_file(path: str) -> bool:
    """Check what is at ``path``; nothing is created or changed.

    Returns:
        True when an onward log is there, False when nothing is.

    Raises:
        NotALog: something else is there (a directory, an empty, text or unknown file, an
            SQLite database without an onward log).
        LogDamaged: an SQLite database that is truncated or malformed.
        BackendError: the file cannot be read.
        UsageError: the path holds a NUL byte, which no file name can.
    """
    if "\x00" in path:
        raise UsageError(f"a log path cannot hold a NUL byte: {path!r}")
    try:
        path.encode()
    except UnicodeEncodeError:
        raise UsageError(
            f"a log path must be text that encodes to UTF-8 (it holds a lone surrogate): "
            f"{path.encode(errors='backslashreplace').decode()!r}"
        ) from None
    try:
        info = os.stat(path)
    except FileNotFoundError:
        _refuse_orphan_wal(path)
        return False
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "a directory", "is a directory, not a log file: name a file in it")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "a special file", "is not a regular file, so not a log file")
    if info.st_size == 0:
        raise _refuse(
            path,
            "an empty file",
            "is an empty file (0 bytes), not an onward log: onward creates a log only where "
            "there is no file; remove it or choose another path",
        )
    try:
        head = file_head(path, _SNIFF, info)
    except OSError as exc:
        raise BackendError(f"cannot read {path}: {exc.strerror}") from exc
    if head is None:
        return True  # a log this process has open: checked when it was opened
    if not head.startswith(_MAGIC):
        if _MAGIC.startswith(head):
            raise LogDamaged(f"{path} is a damaged SQLite database: truncated to {len(head)} bytes")
        if _looks_like_text(head):
            raise _refuse(path, "a text file", "is a text file, not an onward log")
        raise _refuse(
            path,
            "an unknown file",
            "is not an SQLite database: its first bytes match no known format (a damaged "
            "log, or another kind of file)",
        )
    _check_structure(path, head, info.st_size)
    tables = _tables(path)
    if "stored_events" not in tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise _refuse(
            path,
            "an SQLite database without an onward log",
            "is an SQLite database without an onward log "
            + (f"(its tables: {shown})" if tables else "(it has no tables)"),
        )
    return True


def _refuse_orphan_wal(path: str) -> None:
    """Refuse a path with no database but a write-ahead log that holds frames: the log that
    was there was moved or removed while open, and a new database there would take that log's
    latest commits for its own."""
    try:
        size = os.stat(path + "-wal").st_size
    except OSError:
        return
    if size > _WAL_HEADER and not os.path.exists(path):  # (not one created meanwhile)
        raise _refuse(
            path,
            "a write-ahead log without its database",
            f"is missing, but its write-ahead log {path}-wal ({size:,} bytes) is there: the "
            "log was moved or removed while it was open, and its latest commits are in that "
            f"file. Move the log back to {path}, or remove {path}-wal and {path}-shm to start "
            "a new log there",
        )


def _check_structure(path: str, head: bytes, size: int) -> None:
    """Refuse an SQLite file whose header does not fit its size (a truncated copy)."""
    if len(head) < _HEADER:
        raise LogDamaged(f"{path} is a damaged SQLite database: truncated to {size} bytes")
    page = _page_size(head)
    if page < 512 or page > 65536 or page & (page - 1):
        raise LogDamaged(f"{path} is a damaged SQLite database: its header is overwritten")
    if size % page:
        raise LogDamaged(
            f"{path} is a damaged SQLite database: truncated ({size} bytes is not a whole "
            f"number of {page}-byte pages)"
        )
    if os.path.exists(path + "-wal"):
        return  # a writer may be checkpointing: the header can run ahead of the file
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]  # the in-header size is valid for this change count
    if valid and pages and size < pages * page:
        raise LogDamaged(
            f"{path} is a damaged SQLite database: truncated ({size} of {pages * page} bytes)"
        )


def _uri(path: str, mode: str) -> str:
    return f"file:{quote(os.path.abspath(path))}?{mode}"


def _tables(path: str) -> set[str]:
    """The tables of the SQLite database at ``path``, read without creating any file.

    Without a ``-wal`` file, the database file is all there is, and it is read as immutable
    (no lock, no ``-shm``); with one, another process has it open and a read-only connection
    shares its files.
    """
    mode = "mode=ro" if os.path.exists(path + "-wal") else "immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(_uri(path, mode), uri=True)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # (a name that is not UTF-8)
        raise LogDamaged(f"{path} is a damaged SQLite database: {exc}") from exc
    return {str(r[0]) for r in rows}


def create_log_file(path: str, busy_timeout: float) -> None:
    """Create a new, empty onward log at ``path`` unless one appeared there meanwhile.

    Raises:
        BackendError: the directory is missing or not writable, or SQLite failed.
    """
    directory, name = os.path.split(path)
    scratch = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.new")
    try:
        fd = os.open(scratch, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.close(fd)
    except OSError as exc:
        raise BackendError(f"cannot create the SQLite log {path}: {exc.strerror}") from exc
    try:
        _build(scratch, busy_timeout)
        try:
            os.link(scratch, path)
        except FileExistsError:
            pass  # another process created it first: open theirs
        except OSError:
            # No hard links on this file system: create in place, where a process that
            # opens the path at the same moment may find it still empty.
            _create_in_place(path, busy_timeout)
    finally:
        for leftover in (scratch, scratch + "-wal", scratch + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _create_in_place(path: str, busy_timeout: float) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise BackendError(f"cannot create the SQLite log {path}: {exc.strerror}") from exc
    os.close(fd)
    _build(path, busy_timeout)


def _build(path: str, busy_timeout: float) -> None:
    """Give the file at ``path`` onward's tables, in WAL mode, and fold the WAL back in."""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=busy_timeout)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise BackendError(f"cannot create the SQLite log {path}: {exc}") from exc
    datastore = SQLiteDatastore(
        path, lock_timeout=max(1, round(busy_timeout)), originator_id_type="text"
    )
    try:
        SQLiteApplicationRecorder(datastore, _TABLES[0]).create_table()
        SQLiteAggregateRecorder(datastore, _TABLES[1]).create_table()
    except Exception as exc:
        raise BackendError(f"cannot create the SQLite log {path}: {exc}") from exc
    finally:
        datastore.close()


def warn_if_shared(path: str) -> None:
    """Log a warning for each of the log's files that others than its owner may read or write,
    and for a log file with more than one hard link.

    The log holds task arguments, step results and error messages; onward creates its files
    with mode 0600, and SQLite gives the ``-wal`` and ``-shm`` files the database's mode. A
    wider mode is left as it is (a group may share the log on purpose), and said once per open.
    """
    try:
        links = os.stat(path).st_nlink
    except OSError:
        links = 1
    if links > 1:
        # SQLite keeps the write-ahead journal beside the path a log is opened by: writers
        # that open one file by two paths journal apart, and wreck it.
        logger.warning(
            "%s has %d hard links: open the log by one path only (writers that open it by "
            "two paths keep two write-ahead journals and damage it)",
            path,
            links,
        )
    for suffix in ("", "-wal", "-shm"):
        name = path + suffix
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            logger.warning(
                "%s has mode %04o: others than its owner may read or change the log "
                "(onward creates it 0600; chmod 600 it unless it is shared on purpose)",
                name,
                mode,
            )
