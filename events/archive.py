"""Export a log (or one session of it) as JSON lines, and import such a file into another log.

An export is one JSON object per line: a header, then every record as it is stored (its
stream, version, position in the source, type, and the sealed record itself: envelope with its
checksum and link to the previous event of its stream, and the event), each blob a record
references before that record (its bytes in base64), and an end line that counts them and
carries a digest of every line before it::

    {"line":"header","format":"onward-export","version":2,"source":"sqlite:///a.db","session":"s"}
    {"line":"blob","digest":"9f2c...","data":"eyJib2R5Ijo..."}
    {"line":"record","position":17,"stream":"task-3f..","version":2,"type":"StepCompleted",
     "record":{"meta":{"checksum":"...","prev":"...","event_id":"...",...},"split":{...}}}
    {"line":"end","records":120,"blobs":1,"digest":"5be1..."}

The end line's ``digest`` is a BLAKE2b-128 (hex) over every line before it, the header
included, each without its trailing whitespace and ended by one newline: a line removed, added
or changed anywhere (with the counts made to agree) fails it. Version 1 files, written before
the digest, have none and are read as before (their end line's counts are all that shows a
removed stream tail); a version 2 file whose end line lacks it is refused.

An export is taken only from an intact log: every record is checked as it is written (its
checksum; a split record's blobs against their digests), and the whole pass as :meth:`verify
<onward.events.EventLog.verify>` does (each stream's versions from 1 with no gap, its hash
chain, the log's head record: a removed record, stream tail or stream), before the end line is
written. A damaged log is refused, and a file it was being written to has no end line, which
an import refuses.

Records keep their bytes, so their checksums, hash chains and event ids hold in any log: an
import checks every line (its checksum, its stream's chain from the version before it, each
blob's digest, the end line's counts and digest) and the target's copy of each stream before
it writes anything, then inserts the records (new positions, the source's order) with their
blobs, in commits of 100,000 records (one commit for a smaller file). A record the
target holds already, the same checksum at the same version, is skipped: importing a file
twice imports it once. A target that holds another history of a stream is refused
(:class:`ImportConflict`); one whose copy of a stream misses versions is damaged
(:class:`LogDamaged`).

With a session, the export holds every stream that has an event of that session, whole (a
stream's chain cannot be cut): its tasks, the session's own stream, and shared streams the
session appended to (breakers, learning, limits), with other sessions' events in them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn, Union

import msgspec

from onward.events.blobs import blob_digest, split_of
from onward.events.codec import Codec, checksum_of, prev_of
from onward.events.exceptions import (
    CorruptRecord,
    ImportConflict,
    InvalidArchive,
    LogDamaged,
    UsageError,
)
from onward.events.integrity import Problem, Verifier, check_rows
from onward.events.log import EventLog, StoredRow

__all__ = [
    "FORMAT",
    "ExportFile",
    "ExportSummary",
    "ImportSummary",
    "export_log",
    "import_log",
    "read_export",
]

#: The ``format`` of an export's header line.
FORMAT = "onward-export"
#: The version written: 2 carries a digest on its end line.
_VERSION = 2
#: The versions read.
_READS = (1, 2)
#: The records an import writes in one commit: a PostgreSQL log takes fewer than 2**20 at once
#: (``onward.events.postgres.ROWS_PER_COMMIT``), and a smaller commit holds fewer blobs.
_COMMIT_ROWS = 100_000
#: Blobs are large (each over the log's inline limit): a few to a commit.
_BLOBS_PER_COMMIT = 16
#: The blob bytes past which an import's commit ends (PostgreSQL refuses a message over 1 GiB,
#: and one blob may be up to the payload limit, 256 MiB by default).
_COMMIT_BLOB_BYTES = 256 * 2**20


class ExportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`export_log` wrote.

    Attributes:
        records: the records written.
        blobs: the blobs written.
        streams: the streams they belong to.
    """

    records: int
    blobs: int
    streams: int


class ImportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`import_log` did.

    Attributes:
        records: the records the file holds.
        imported: the records inserted.
        skipped: the records the target held already (the same checksum at the same version).
        blobs: the blobs the file holds.
        streams: the streams of the file.
    """

    records: int
    imported: int
    skipped: int
    blobs: int
    streams: int


class _Header(msgspec.Struct, frozen=True, tag="header", tag_field="line"):
    format: str
    version: int
    source: str = ""
    session: str | None = None


class _Blob(msgspec.Struct, frozen=True, tag="blob", tag_field="line"):
    digest: str
    data: str  # base64


class _Record(msgspec.Struct, frozen=True, tag="record", tag_field="line"):
    position: int
    stream: str
    version: int
    type: str
    record: msgspec.Raw


class _End(msgspec.Struct, frozen=True, tag="end", tag_field="line", omit_defaults=True):
    records: int
    blobs: int
    digest: str = ""  # none in a version 1 file


_Line = Union[_Header, _Blob, _Record, _End]  # noqa: UP007
_LINE: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_Line)
_ENCODER = msgspec.json.Encoder()


def _lines_digest() -> Any:
    """The running hash of an export's lines before its end line."""
    return hashlib.blake2b(digest_size=16)


class _SessionOnly(msgspec.Struct):
    session: str = ""


class _MetaOnly(msgspec.Struct):
    meta: _SessionOnly


_META = msgspec.json.Decoder(_MetaOnly)
#: The streams of a task and of its inbox, as :mod:`onward.projections` names them.
_TASK, _INBOX = "task-", "inbox-"


def export_log(
    log: EventLog, write: Callable[[bytes], Any], *, session: str | None = None
) -> ExportSummary:
    """Write the log's records (every one, or those of the streams of one session) as lines.

    A damaged log is not exported: each record is checked as it is written (its checksum; a
    split record's blobs against their digests), and every record of the log (of every
    stream, with a session too) as :meth:`~onward.events.EventLog.verify` does (each stream's
    versions from 1 with no gap and its hash chain, the log's head record) before the end line
    is written. Reading the log once, this costs about what ``onward verify`` does.

    Args:
        log: the log to read.
        write: called with each line, newline included (``sys.stdout.buffer.write``).
        session: only the streams that have an event of this session, whole.

    Returns:
        What was written.

    Raises:
        CorruptRecord: a record fails its checksum, a blob is missing or damaged, or a stream
            misses versions or breaks its chain (its stream, version and position; ``onward
            verify`` says more). The lines before it were written, the end line was not, so
            an import refuses what was written.
        LogDamaged: records are missing where the log's head record shows them (a removed
            record, stream tail or stream); the end line was not written.
        UsageError: ``session`` names no session of this log.
    """
    streams = None if session is None else _streams_of(log, session)
    verifier = Verifier(log.codec, log.head_record(), dense=log.dense_positions)
    digest = _lines_digest()

    def emit(line: bytes) -> None:
        digest.update(line)
        write(line)

    emit(
        _ENCODER.encode(_Header(format=FORMAT, version=_VERSION, source=log.url, session=session))
        + b"\n"
    )
    written: set[str] = set()
    seen_streams: set[str] = set()
    records = 0
    for rows in log.read_rows(page_size=1000):
        bad = check_rows(rows)
        if bad:
            index, why = bad[0]
            position, stream, version, _topic, _state = rows[index]
            raise CorruptRecord(
                f"{why}; not exported (run onward verify)",
                stream=stream,
                version=version,
                position=position,
            )
        verifier.feed_page(rows)
        for position, stream, version, topic, state in rows:
            if streams is not None and stream not in streams:
                continue
            for line in _blob_lines(log, (position, stream, version, topic, state), written):
                emit(line)
            emit(
                _ENCODER.encode(
                    _Record(
                        position=position,
                        stream=stream,
                        version=version,
                        type=topic,
                        record=msgspec.Raw(bytes(state)),
                    )
                )
                + b"\n"
            )
            records += 1
            seen_streams.add(stream)
    report = verifier.finish(log.head_record())
    if not report.ok:
        _refuse(log, report.problems)
    write(
        _ENCODER.encode(_End(records=records, blobs=len(written), digest=digest.hexdigest()))
        + b"\n"
    )
    return ExportSummary(records=records, blobs=len(written), streams=len(seen_streams))


def _refuse(log: EventLog, problems: list[Problem]) -> NoReturn:
    """Raise for the first problem the export's pass over the log found that names a stream
    (else for the first: a missing record's stream is not known)."""
    first = next((p for p in problems if p.stream), problems[0])
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    if first.stream:
        raise CorruptRecord(
            f"{first.kind}: {first.detail}; not exported{more} (run onward verify)",
            stream=first.stream,
            version=first.version,
            position=first.position,
            kind=str(first.kind),
        )
    raise LogDamaged(f"{log.url}: {first}; not exported{more} (run onward verify)")


def _streams_of(log: EventLog, session: str) -> set[str]:
    """The streams that have an event of ``session``, and the inboxes of its tasks (whose
    messages may all come from other sessions: a task's or an engine's send records the
    sender's)."""
    streams: set[str] = set()
    inboxes: set[str] = set()
    for rows in log.read_states(page_size=5000):
        for _position, stream, _version, state in rows:
            if stream in streams:
                continue
            if stream.startswith(_INBOX):
                inboxes.add(stream)
            try:
                if _META.decode(state).meta.session == session:
                    streams.add(stream)
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                continue  # a damaged record: the export's own check stops at it
    if not streams:
        raise UsageError(f"the log {log.url} has no event of session {session!r}")
    return streams | {inbox for inbox in inboxes if _TASK + inbox.removeprefix(_INBOX) in streams}


def _blob_lines(log: EventLog, row: StoredRow, written: set[str]) -> Iterator[bytes]:
    """The lines of the blobs a record references that were not written yet."""
    position, stream, version, _topic, state = row
    if b',"split":' not in state:
        return
    split = split_of(bytes(state))
    if split is None:
        return
    for name, digest in split[1]:
        if digest in written:
            continue
        data = log.blob(digest)
        if data is None or blob_digest(data) != digest:
            why = "is missing" if data is None else "does not match its digest"
            raise CorruptRecord(
                f"the blob {digest} of its field {name!r} {why}; not exported",
                stream=stream,
                version=version,
                position=position,
                kind="blob",
            )
        written.add(digest)
        yield _ENCODER.encode(_Blob(digest=digest, data=base64.b64encode(data).decode())) + b"\n"


class _Parsed(msgspec.Struct, kw_only=True):
    """A file read and checked line by line."""

    header: _Header
    records: list[tuple[str, int, str, bytes]]  # stream, version, topic, state
    blobs: dict[str, bytes]
    needs: dict[int, list[str]]  # the blobs each record references, by record index
    lines: list[int]  # the line of each record


class ExportFile:
    """An export read and checked whole by :func:`read_export`, to import with
    :func:`import_log` (``onward import`` reads the file before it opens or creates the log).

    Attributes:
        source: the URL of the log it was exported from.
        session: the session it holds the streams of (None: the whole log).
        records: the records it holds.
        blobs: the blobs it holds.
        streams: the streams of its records.
    """

    __slots__ = ("_parsed", "blobs", "records", "session", "source", "streams")

    def __init__(self, parsed: _Parsed) -> None:
        self._parsed = parsed
        self.source = parsed.header.source
        self.session = parsed.header.session
        self.records = len(parsed.records)
        self.blobs = len(parsed.blobs)
        self.streams = len({stream for stream, _v, _t, _s in parsed.records})

    def __repr__(self) -> str:
        return (
            f"ExportFile(source={self.source!r}, session={self.session!r}, "
            f"records={self.records}, blobs={self.blobs}, streams={self.streams})"
        )


def read_export(lines: Iterable[bytes]) -> ExportFile:
    """Read an export and check every line, writing nothing anywhere.

    Args:
        lines: the file's lines (an open binary file).

    Returns:
        The file, checked, for :func:`import_log`.

    Raises:
        InvalidArchive: a line is not valid JSON or not a line of an export, a record fails its
            checksum or its stream's chain, a blob its digest, a record references a blob the
            file lacks, the end line's counts or digest do not match the lines before it (a
            line removed, added or changed), or the file ends before its end line (truncated).
    """
    return ExportFile(_parse(lines))


def import_log(log: EventLog, lines: Iterable[bytes] | ExportFile) -> ImportSummary:
    """Import an export into ``log``: every line checked first (see :func:`read_export`), and
    the log's copy of each of its streams, then the records the log does not hold yet inserted
    with their blobs, in the file's order.

    The records go in commits of up to 100,000, with up to about 256 MiB of blobs (one commit
    for a smaller file). A crash or a
    failure of the database between two commits leaves the records of the commits before it:
    each stream of the file holds its first versions with no gap, and importing the file again
    adds only the records still missing.

    Args:
        log: the target (of any backend).
        lines: the file's lines (an open binary file), or the file :func:`read_export` read.

    Returns:
        What was imported and skipped.

    Raises:
        InvalidArchive: the file is not a whole, unchanged export (see :func:`read_export`);
            nothing is written.
        ImportConflict: the log holds another history of a stream of the file, or lacks the
            versions before the file's first record of a stream; nothing is written.
        LogDamaged: the log's copy of a stream of the file misses versions (records removed
            from the log: ``onward verify`` says more); nothing is written.
        BackendError: the database failed (the commits before the failure stay).
    """
    parsed = (lines if isinstance(lines, ExportFile) else read_export(lines))._parsed
    by_stream: dict[str, list[int]] = {}
    for i, (stream, _version, _topic, _state) in enumerate(parsed.records):
        by_stream.setdefault(stream, []).append(i)
    held = {stream: _held_of(log, parsed, stream, found) for stream, found in by_stream.items()}
    new = [i for i, record in enumerate(parsed.records) if record[1] > held[record[0]]]
    for chunk, wanted in _commits(new, parsed):
        blobs = {digest: parsed.blobs[digest] for digest in sorted(wanted)}
        log.insert_records([parsed.records[i] for i in chunk], blobs)
    # The blobs of records the log held already, stored again: one damaged since it was stored
    # (bytes that no longer match its digest) is repaired; a sound one stays as it is.
    written = {digest for i in new for digest in parsed.needs.get(i, [])}
    held_blobs = sorted(set(parsed.blobs) - written)
    batch: list[str] = []
    size = 0
    for digest in held_blobs:
        more = len(parsed.blobs[digest])
        if batch and (len(batch) >= _BLOBS_PER_COMMIT or size + more > _COMMIT_BLOB_BYTES):
            log.insert_records([], {d: parsed.blobs[d] for d in batch})
            batch, size = [], 0
        batch.append(digest)
        size += more
    if batch:
        log.insert_records([], {d: parsed.blobs[d] for d in batch})
    return ImportSummary(
        records=len(parsed.records),
        imported=len(new),
        skipped=len(parsed.records) - len(new),
        blobs=len(parsed.blobs),
        streams=len(by_stream),
    )


def _commits(new: list[int], parsed: _Parsed) -> Iterator[tuple[list[int], set[str]]]:
    """The records to import in commits, in the file's order, with the blobs each commit's
    records need: at most :data:`_COMMIT_ROWS` records, and blobs past
    :data:`_COMMIT_BLOB_BYTES` start the next commit (PostgreSQL takes no message over 1 GiB)."""
    chunk: list[int] = []
    wanted: set[str] = set()
    size = 0
    for i in new:
        needs = [d for d in parsed.needs.get(i, []) if d not in wanted]
        more = sum(len(parsed.blobs[d]) for d in needs)
        if chunk and (len(chunk) >= _COMMIT_ROWS or (more and size + more > _COMMIT_BLOB_BYTES)):
            yield chunk, wanted
            chunk, wanted, size = [], set(), 0
            needs = list(dict.fromkeys(parsed.needs.get(i, [])))
            more = sum(len(parsed.blobs[d]) for d in needs)
        chunk.append(i)
        wanted.update(needs)
        size += more
    if chunk:
        yield chunk, wanted


def _held_of(log: EventLog, parsed: _Parsed, stream: str, found: list[int]) -> int:
    """The version the log holds of ``stream`` that the file's records of it (at ``found``)
    continue; refuses a log that holds another history of it, lacks the versions before the
    file's first, or misses versions of its own copy."""
    held = log.stream_version(stream)
    records = [parsed.records[i] for i in found]
    start, last = records[0][1], records[-1][1]
    line = parsed.lines[found[0]]
    if start > held + 1:
        raise ImportConflict(
            f"line {line}: stream {stream!r} starts at version {start} in the file, but "
            f"{log.url} holds only {held} versions of it"
        )
    if held == 0:
        return 0
    low, high = max(start - 1, 1), min(held, last)
    ours = {v: st for _p, _s, v, _t, st in log.stream_rows(stream, after=low - 1, upto=high)}
    missing = [v for v in range(low, high + 1) if v not in ours]
    if missing:
        gone = str(missing[0]) if len(missing) == 1 else f"{missing[0]}..{missing[-1]}"
        raise LogDamaged(
            f"stream {stream!r} of {log.url} holds version {held} but not {gone} (records "
            f"removed from it: run onward verify on it); nothing imported"
        )
    if start > 1 and checksum_of(ours[start - 1]) != prev_of(records[0][3]):
        raise ImportConflict(
            f"line {line}: stream {stream!r} version {start} does not follow version "
            f"{start - 1} in {log.url}: the log holds another history of it"
        )
    for _stream, version, _topic, state in records:
        if version > held:
            break
        if checksum_of(ours[version]) != checksum_of(state):
            raise ImportConflict(
                f"stream {stream!r} version {version}: {log.url} holds another record there "
                "(another history of this stream)"
            )
    return held


def _reformatted(state: bytes) -> bool:
    """Whether a record that fails its check holds a checksum all the same, elsewhere than a
    sealed record holds it: its JSON was written again (other spacing, other key order), which
    changes the bytes its checksum covers."""
    try:
        record = msgspec.json.decode(state)
    except (msgspec.DecodeError, RecursionError):
        return False
    meta = record.get("meta") if isinstance(record, dict) else None
    stored = meta.get("checksum") if isinstance(meta, dict) else None
    return isinstance(stored, str) and bool(stored) and checksum_of(state) != stored


def _parse(lines: Iterable[bytes]) -> _Parsed:
    """Read and check every line of an export.

    Raises:
        InvalidArchive: what is wrong, and on which line.
    """
    check = Codec.check
    records: list[tuple[str, int, str, bytes]] = []
    record_lines: list[int] = []
    blobs: dict[str, bytes] = {}
    needs: dict[int, list[str]] = {}
    chains: dict[str, tuple[int, str]] = {}  # stream -> last version and checksum in the file
    header = end = None
    digest = _lines_digest()
    at_end = number = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip()
        if not text:
            continue  # (a blank line after the end line too: an editor's, `echo >>`'s)
        if end is not None:
            raise InvalidArchive("a line after the end line", line=number)
        try:
            line = _LINE.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise InvalidArchive(f"not a line of an export ({exc})", line=number) from None
        except RecursionError:  # onward never writes a record nested anywhere near this deep
            raise InvalidArchive(
                "not a line of an export (nested deeper than the decoder can follow)",
                line=number,
            ) from None
        if header is None:
            if not isinstance(line, _Header) or line.format != FORMAT:
                raise InvalidArchive(
                    f"not an onward export (the first line is no {FORMAT} header)", line=number
                )
            if line.version not in _READS:
                raise InvalidArchive(
                    f"an export of version {line.version}; this onward reads "
                    f"{' and '.join(map(str, _READS))}",
                    line=number,
                )
            header = line
            digest.update(text + b"\n")
            continue
        if isinstance(line, _Header):
            raise InvalidArchive("a second header line", line=number)
        if isinstance(line, _End):
            end, at_end = line, number
            continue
        digest.update(text + b"\n")
        if isinstance(line, _Blob):
            try:
                data = base64.b64decode(line.data, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidArchive("a blob whose data is not base64", line=number) from None
            if blob_digest(data) != line.digest:
                raise InvalidArchive(
                    f"the blob {line.digest} does not match its digest (damaged or changed)",
                    line=number,
                )
            blobs[line.digest] = data
            continue
        state = bytes(line.record)
        wrong = check(line.stream, line.version, line.type, state)
        if wrong is not None:
            if _reformatted(state):
                wrong = (
                    "record's text is not as exported (re-formatted?): its checksum does not match"
                )
            raise InvalidArchive(
                f"stream {line.stream!r} version {line.version}: {wrong}", line=number
            )
        last = chains.get(line.stream)
        if last is not None:
            if line.version != last[0] + 1 or prev_of(state) != last[1]:
                raise InvalidArchive(
                    f"stream {line.stream!r} version {line.version} does not follow version "
                    f"{last[0]} of the file (a removed, reordered or changed record)",
                    line=number,
                )
        elif line.version == 1 and prev_of(state):
            raise InvalidArchive(
                f"stream {line.stream!r} version 1 points at a previous record", line=number
            )
        chains[line.stream] = (line.version, checksum_of(state))
        split = split_of(state) if b',"split":' in state else None
        if split is not None:
            missing = [d for _n, d in split[1] if d not in blobs]
            if missing:
                raise InvalidArchive(
                    f"stream {line.stream!r} version {line.version} references the blob "
                    f"{missing[0]}, which no line before it holds",
                    line=number,
                )
            needs[len(records)] = [d for _n, d in split[1]]
        records.append((line.stream, line.version, line.type, state))
        record_lines.append(number)
    if header is None:
        raise InvalidArchive("an empty file, not an onward export", line=number)
    if end is None:
        raise InvalidArchive(
            f"the file ends without its end line after {len(records)} records (truncated)",
            line=number,
        )
    if end.records != len(records) or end.blobs != len(blobs):
        raise InvalidArchive(
            f"the end line counts {end.records} records and {end.blobs} blobs, the file holds "
            f"{len(records)} and {len(blobs)} (lines removed or added)",
            line=at_end,
        )
    if header.version >= 2 and end.digest != digest.hexdigest():
        raise InvalidArchive(
            "the end line's digest does not match the lines before it (a line removed, added "
            "or changed)"
            if end.digest
            else f"the end line has no digest, which an export of version {header.version} "
            "carries (an edited file)",
            line=at_end,
        )
    return _Parsed(header=header, records=records, blobs=blobs, needs=needs, lines=record_lines)
