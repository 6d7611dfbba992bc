"""Export a log (or one session of it) as JSON lines, and import such a file into another log.

An export is one JSON object per line: a header, then every record as it is stored (its
stream, version, position in the source, type, and the sealed record itself: envelope with its
checksum and link to the previous event of its stream, and the event), each blob a record
references before that record (its bytes in base64), and an end line that counts them::

    {"line":"header","format":"onward-export","version":1,"source":"sqlite:///a.db","session":"s"}
    {"line":"blob","digest":"9f2c...","data":"eyJib2R5Ijo..."}
    {"line":"record","position":17,"stream":"task-3f..","version":2,"type":"StepCompleted",
     "record":{"meta":{"checksum":"...","prev":"...","event_id":"...",...},"split":{...}}}
    {"line":"end","records":120,"blobs":1}

Records keep their bytes, so their checksums, hash chains and event ids hold in any log: an
import checks every line (its checksum, its stream's chain from the version before it, each
blob's digest, the end line's counts) before it writes anything, then inserts the records
(new positions, the source's order) with their blobs in one commit. A record the target holds
already, the same checksum at the same version, is skipped: importing a file twice imports it
once. A target that holds another history of a stream is refused (:class:`ImportConflict`).

With a session, the export holds every stream that has an event of that session, whole (a
stream's chain cannot be cut): its tasks, the session's own stream, and shared streams the
session appended to (breakers, learning, limits), with other sessions' events in them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union

import msgspec

from onward.events.blobs import blob_digest, split_of
from onward.events.codec import Codec, checksum_of, prev_of
from onward.events.exceptions import CorruptRecord, ImportConflict, InvalidArchive, UsageError
from onward.events.integrity import check_rows
from onward.events.log import EventLog, StoredRow

__all__ = ["FORMAT", "ExportSummary", "ImportSummary", "export_log", "import_log"]

#: The ``format`` of an export's header line.
FORMAT = "onward-export"
_VERSION = 1


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


class _End(msgspec.Struct, frozen=True, tag="end", tag_field="line"):
    records: int
    blobs: int


_Line = Union[_Header, _Blob, _Record, _End]  # noqa: UP007
_LINE: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_Line)
_ENCODER = msgspec.json.Encoder()


class _SessionOnly(msgspec.Struct):
    session: str = ""


class _MetaOnly(msgspec.Struct):
    meta: _SessionOnly


_META = msgspec.json.Decoder(_MetaOnly)


def export_log(
    log: EventLog, write: Callable[[bytes], Any], *, session: str | None = None
) -> ExportSummary:
    """Write the log's records (every one, or those of the streams of one session) as lines.

    Each record is checked first (its checksum; a split record's blobs against their
    digests): a damaged log is not exported.

    Args:
        log: the log to read.
        write: called with each line, newline included (``sys.stdout.buffer.write``).
        session: only the streams that have an event of this session, whole.

    Returns:
        What was written.

    Raises:
        CorruptRecord: a record fails its checksum or a blob is missing or damaged (``onward
            verify`` says more); the lines before it were written.
        UsageError: ``session`` names no session of this log.
    """
    streams = None if session is None else _streams_of(log, session)
    write(
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
        for position, stream, version, topic, state in rows:
            if streams is not None and stream not in streams:
                continue
            for line in _blob_lines(log, (position, stream, version, topic, state), written):
                write(line)
            write(
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
    write(_ENCODER.encode(_End(records=records, blobs=len(written))) + b"\n")
    return ExportSummary(records=records, blobs=len(written), streams=len(seen_streams))


def _streams_of(log: EventLog, session: str) -> set[str]:
    """The streams that have an event of ``session``."""
    streams: set[str] = set()
    for rows in log.read_states(page_size=5000):
        for _position, stream, _version, state in rows:
            if stream in streams:
                continue
            try:
                if _META.decode(state).meta.session == session:
                    streams.add(stream)
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                continue  # a damaged record: the export's own check stops at it
    if not streams:
        raise UsageError(f"the log {log.url} has no event of session {session!r}")
    return streams


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

    records: list[tuple[str, int, str, bytes]]  # stream, version, topic, state
    blobs: dict[str, bytes]
    needs: dict[int, list[str]]  # the blobs each record references, by record index
    lines: list[int]  # the line of each record


def import_log(log: EventLog, lines: Iterable[bytes]) -> ImportSummary:
    """Import an export into ``log``: every line checked first, then the records the log does
    not hold yet inserted in one commit, with their blobs.

    Args:
        log: the target (of any backend).
        lines: the file's lines (an open binary file).

    Returns:
        What was imported and skipped.

    Raises:
        InvalidArchive: a line is not valid JSON or not a line of an export, a record fails its
            checksum or its stream's chain, a blob its digest, a record references a blob the
            file lacks, or the file ends before its end line (truncated); nothing is written.
        ImportConflict: the log holds another history of a stream of the file, or lacks the
            versions before the file's first record of a stream; nothing is written.
        BackendError: the database failed.
    """
    parsed = _parse(lines)
    new: list[int] = []
    skipped = 0
    firsts: dict[str, int] = {}
    for i, (stream, _version, _topic, _state) in enumerate(parsed.records):
        firsts.setdefault(stream, i)
    held: dict[str, int] = {}
    for stream, first in firsts.items():
        held[stream] = _check_against(log, parsed, stream, first)
    for i, (stream, version, _topic, _state) in enumerate(parsed.records):
        if version <= held[stream]:
            skipped += 1
        else:
            new.append(i)
    wanted = {digest for i in new for digest in parsed.needs.get(i, [])}
    blobs = {digest: parsed.blobs[digest] for digest in sorted(wanted)}
    if new:
        log.insert_records([parsed.records[i] for i in new], blobs)
    return ImportSummary(
        records=len(parsed.records),
        imported=len(new),
        skipped=skipped,
        blobs=len(parsed.blobs),
        streams=len(firsts),
    )


def _check_against(log: EventLog, parsed: _Parsed, stream: str, first: int) -> int:
    """The version the log holds of ``stream`` that the file's records continue; refuses a
    log that holds another history of it or lacks the versions before the file's first."""
    held = log.stream_version(stream)
    records = [r for r in parsed.records if r[0] == stream]
    start = records[0][1]
    line = parsed.lines[first]
    if start > held + 1:
        raise ImportConflict(
            f"line {line}: stream {stream!r} starts at version {start} in the file, but "
            f"{log.url} holds only {held} versions of it"
        )
    if held == 0:
        return 0
    ours = log.stream_rows(stream, after=max(start - 2, 0), upto=min(held, records[-1][1]))
    by_version = {v: st for _p, _s, v, _t, st in ours}
    if start > 1 and checksum_of(by_version[start - 1]) != prev_of(records[0][3]):
        raise ImportConflict(
            f"line {line}: stream {stream!r} version {start} does not follow version "
            f"{start - 1} in {log.url}: the log holds another history of it"
        )
    for _stream, version, _topic, state in records:
        if version > held:
            break
        if checksum_of(by_version[version]) != checksum_of(state):
            raise ImportConflict(
                f"stream {stream!r} version {version}: {log.url} holds another record there "
                "(another history of this stream)"
            )
    return held


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
    number = 0
    for number, raw in enumerate(lines, start=1):
        if end is not None:
            raise InvalidArchive("a line after the end line", line=number)
        if not raw.strip():
            continue
        try:
            line = _LINE.decode(raw)
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
            if line.version != _VERSION:
                raise InvalidArchive(
                    f"an export of version {line.version}; this onward reads {_VERSION}",
                    line=number,
                )
            header = line
            continue
        if isinstance(line, _Header):
            raise InvalidArchive("a second header line", line=number)
        if isinstance(line, _End):
            end = line
            continue
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
            line=number,
        )
    return _Parsed(records=records, blobs=blobs, needs=needs, lines=record_lines)
