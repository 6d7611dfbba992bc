"""The exceptions onward raises.

Every exception derives from :class:`OnwardError`, and also from the builtin that fits, so
``except ValueError`` keeps working for callers who do not know onward. Three families are kept
apart: you misused the API, the log is damaged, the backend failed::

    OnwardError
    ├── UsageError (ValueError) ............. a bad argument, raised before anything is written
    │   ├── InvalidURL
    │   ├── LogNotFound (FileNotFoundError) . opening with create=False where no log is
    │   ├── NotALog ......................... the path holds something else: a directory, an
    │   │                                     empty, text or unknown file, another SQLite database
    │   ├── PayloadTooLarge
    │   ├── UnencodableValue (TypeError too)
    │   └── InvalidArchive .................. an export file that is malformed, truncated or
    │                                         changed (``onward import``)
    ├── ConflictError
    │   ├── VersionConflict ................. an append at a stale expected version
    │   └── ImportConflict .................. the target of an import holds another history
    ├── LogDamaged .......................... the stored log is not what was written
    │   ├── CorruptRecord ................... a record does not decode or its checksum fails
    │   └── UnknownEventType ................ an event from a newer onward, refused where it matters
    └── BackendError (OSError) .............. the database failed or could not be reached
        └── StorageUnavailable .............. an outage outlasted the log's tolerance
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ConflictError",
    "CorruptRecord",
    "ImportConflict",
    "InvalidArchive",
    "InvalidURL",
    "LogDamaged",
    "LogNotFound",
    "NotALog",
    "OnwardError",
    "PayloadTooLarge",
    "StorageUnavailable",
    "UnencodableValue",
    "UnknownEventType",
    "UsageError",
    "VersionConflict",
]


class OnwardError(Exception):
    """The root of every exception raised by onward."""


class UsageError(OnwardError, ValueError):
    """The API was called with a bad argument; nothing was written."""


class InvalidURL(UsageError):
    """A log URL that names no supported backend or is malformed."""


class LogNotFound(UsageError, FileNotFoundError):
    """No log at this location, and the caller asked not to create one (``create=False``)."""


class NotALog(UsageError):
    """The path holds something that is not an onward log, so it is neither opened nor changed.

    Attributes:
        path: the path.
        found: what is there: "a directory", "an empty file", "a text file", "an SQLite
            database without an onward log", ...
    """

    def __init__(self, message: str, *, path: str, found: str) -> None:
        super().__init__(message)
        self.path = path
        self.found = found


class PayloadTooLarge(UsageError):
    """An event whose encoded size exceeds the log's payload limit; the whole batch is refused."""

    def __init__(self, message: str, *, stream: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.stream = stream
        self.size = size
        self.limit = limit


class UnencodableValue(UsageError, TypeError):
    """A value that msgspec cannot encode (a set of objects, a custom class, ...)."""


class InvalidArchive(UsageError):
    """An export file that cannot be imported as it is: not JSON lines of an export, a record
    or blob that fails its checksum or chain, or a file cut short; nothing was imported.

    Attributes:
        line: the line where it was found (1 for the first).
    """

    def __init__(self, message: str, *, line: int) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class ConflictError(OnwardError):
    """Another writer got there first."""


class ImportConflict(ConflictError):
    """The target of an import holds another history of a stream of the file (another record
    at one of its versions), or lacks the versions the file's records follow; nothing was
    imported."""


class VersionConflict(ConflictError):
    """An append whose expected version is not the stream's current version.

    Attributes:
        stream: the stream appended to.
        expected: the version the caller expected.
        actual: the stream's version found in the log (``None`` if not known).
    """

    def __init__(self, stream: str, expected: int, actual: int | None) -> None:
        found = "unknown" if actual is None else str(actual)
        super().__init__(
            f"stream {stream!r}: expected version {expected}, but the log has version {found}"
        )
        self.stream = stream
        self.expected = expected
        self.actual = actual


class LogDamaged(OnwardError):
    """The stored log differs from what onward wrote (a torn write, a bit flip, tampering)."""


class CorruptRecord(LogDamaged):
    """One stored record does not decode, or its checksum does not match its content.

    Attributes:
        reason: what is wrong with it.
        kind: "corrupt" (it does not decode or fails its checksum), "gap" (versions before it
            are missing) or "chain" (it does not point at its predecessor's checksum).
        stream: the record's stream.
        version: its version in that stream.
        position: its global position in the log.
    """

    def __init__(
        self, message: str, *, stream: str, version: int, position: int, kind: str = "corrupt"
    ) -> None:
        super().__init__(f"{message} (stream {stream!r}, version {version}, position {position})")
        self.reason = message
        self.kind = kind
        self.stream = stream
        self.version = version
        self.position = position


class UnknownEventType(LogDamaged):
    """An event type this version of onward does not know, probably written by a newer one.

    The audit can still read it (it decodes as :class:`onward.events.UnknownEvent`); resuming work
    over it is refused with this error.
    """


class BackendError(OnwardError, OSError):
    """The storage backend failed or could not be reached."""


class StorageUnavailable(BackendError):
    """The storage stayed unavailable (locked, down, unreachable) for longer than the log's
    outage tolerance; transient errors before that were retried.

    Nothing committed is lost, and a task under way is not failed: the worker hands its tasks
    back when it can, and they are runnable again by the next run of any engine.

    Attributes:
        lasted: how long the outage had lasted when it gave up, in seconds.
    """

    def __init__(self, message: str, *, lasted: float = 0.0) -> None:
        super().__init__(message)
        self.lasted = lasted
