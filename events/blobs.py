"""Blobs: the large values of an event, stored once beside the log and referenced from it.

An event whose encoded form (already redacted) is larger than the log's *inline limit* is split
before it is sealed: its largest fields, one after another until the rest fits, leave the event
and become **blobs**, each stored once under its digest (SHA-256 of its bytes, so the same
value appended twice is kept once) in a table of the log's own database. The record keeps the
rest of the event and, for each field it lost, the field's name and the blob's digest, under
``split`` where an intact record has ``event``::

    {"meta":{...},"split":{"blobs":[["result","9f2c..."]],"event":{"type":"StepCompleted",...}}}

The record's checksum covers that form, so its stream's hash chain, the head record and
``verify`` treat it as any record; the digests cover the blobs. A record is joined again when it
is read, each blob checked against its digest, and its event comes back as it was appended. No
decoder of events accepts a record without ``event``, so a split record can never be folded
unjoined; a record with ``event`` reads as before.

Only an event's own fields are split off, never part of one: a field holds a value whole (a step's
result, a task's arguments, a message), so a blob is that value's JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import msgspec

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_PAYLOAD_LIMIT",
    "SplitEvent",
    "blob_digest",
    "join_event",
    "join_state",
    "split_event",
    "split_of",
]

#: The largest encoded event kept whole in its record (bytes); larger ones are split.
DEFAULT_INLINE_LIMIT = 1024 * 1024
#: The largest encoded event accepted at all (bytes), blobs included.
DEFAULT_PAYLOAD_LIMIT = 256 * 1024 * 1024

# A field smaller than this is left in the record: its reference would save nothing.
_SMALLEST_BLOB = 256

_ENCODER = msgspec.json.Encoder()
_DIGEST_LEN = 64


def blob_digest(data: bytes) -> str:
    """The address of a blob: SHA-256 of its bytes, 64 hex digits (the hash most processors
    compute in hardware: about twice as fast as blake2b on a 2 MiB value here)."""
    return hashlib.sha256(data).hexdigest()


class SplitEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event split into what its record keeps and the blobs it references.

    Attributes:
        rest: the event's JSON without the fields split off.
        refs: ``(field, digest)`` of each field split off, largest first.
        blobs: each blob's bytes (the field's JSON) by digest.
    """

    rest: bytes
    refs: list[tuple[str, str]]
    blobs: dict[str, bytes]

    def body(self) -> bytes:
        """What the record stores under ``split``: the references, then the rest."""
        return b'{"blobs":' + _ENCODER.encode(self.refs) + b',"event":' + self.rest + b"}"


class _Split(msgspec.Struct):
    blobs: list[tuple[str, str]]
    event: msgspec.Raw


class _SplitRecord(msgspec.Struct):
    meta: msgspec.Raw
    split: _Split


_SPLIT_RECORD = msgspec.json.Decoder(_SplitRecord)


def split_event(event_json: bytes, inline_limit: int) -> SplitEvent | None:
    """Split an encoded event whose JSON is over ``inline_limit`` bytes.

    The largest fields leave first, until the rest fits (the ``type`` tag always stays; a field
    of fewer than 256 bytes is not worth a reference).

    Returns:
        The split, or None when the event fits already or has no field worth splitting off.
    """
    if len(event_json) <= inline_limit:
        return None
    try:
        fields = msgspec.json.decode(event_json)
    except msgspec.DecodeError:
        return None
    if type(fields) is not dict:
        return None
    sized = sorted(
        ((_ENCODER.encode(value), name) for name, value in fields.items() if name != "type"),
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    size = len(event_json)
    refs: list[tuple[str, str]] = []
    blobs: dict[str, bytes] = {}
    for encoded, name in sized:
        if size <= inline_limit or len(encoded) < _SMALLEST_BLOB:
            break
        digest = blob_digest(encoded)
        refs.append((name, digest))
        blobs[digest] = encoded
        del fields[name]
        size -= len(encoded)
    if not refs:
        return None
    return SplitEvent(rest=_ENCODER.encode(fields), refs=refs, blobs=blobs)


def join_event(rest: bytes, refs: list[tuple[str, str]], blobs: Mapping[str, bytes]) -> bytes:
    """The event's JSON again, from what its record kept and its blobs.

    The fields split off come last: the JSON differs from the original in field order only.

    Raises:
        KeyError: a blob is not in ``blobs``.
    """
    parts = [rest[:-1]]
    first = rest.strip() == b"{}"
    for name, digest in refs:
        if not first:
            parts.append(b",")
        first = False
        parts += (_ENCODER.encode(name), b":", blobs[digest])
    parts.append(b"}")
    return b"".join(parts)


def split_of(state: bytes) -> tuple[bytes, list[tuple[str, str]], bytes] | None:
    """The envelope, the references and the rest of the event of a split record's state.

    Returns:
        ``(meta_json, refs, rest)``, or None when the state is not a split record.
    """
    try:
        record = _SPLIT_RECORD.decode(state)
    except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
        return None
    refs = record.split.blobs
    if any(len(digest) != _DIGEST_LEN for _name, digest in refs):
        return None
    return bytes(record.meta), refs, bytes(record.split.event)


def join_state(meta_json: bytes, event_json: bytes) -> bytes:
    """A record's state as if it had never been split (its checksum is the split record's:
    only decoders read a joined state, never checks)."""
    return b'{"meta":' + meta_json + b',"event":' + event_json + b"}"
