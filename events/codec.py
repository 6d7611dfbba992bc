"""The codec: events to stored bytes and back, with checksums, upcasting and tolerant decoding.

A stored record's ``state`` is the msgspec JSON of ``{"meta": Meta, "event": Event}``; its
``topic`` is the event's tag. The envelope's ``checksum`` is its first field, so the checksum
covers every byte that follows it (the rest of the envelope and the event) plus the record's
stream, version and tag: a flipped bit anywhere in a record is caught without re-encoding.
The checksum is xxh3-128 of the body, seeded with the record's stream, tag and version
(:func:`record_checksum`, :func:`record_seed`): a checksum for damage, not a signature
(whoever can rewrite a record can recompute any unkeyed hash). Records written before it was
chosen carry blake2b-128 over the same fields, which is still accepted
(:func:`legacy_checksum`).

Compatibility: adding a field with a default is free. Any other change gives the type a new tag
and registers an upcaster from the old one (:meth:`Codec.register_upcaster`); records written
under the old tag are read back as the current shape. A tag that neither a type nor an upcaster
knows (an event from a newer onward) decodes as :class:`~onward.events.base.UnknownEvent`.
"""

from __future__ import annotations

import hashlib
import itertools
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Union

import msgspec
import xxhash

from onward.events.base import Event, Meta, Recorded, UnknownEvent
from onward.events.exceptions import CorruptRecord, UnencodableValue, UsageError

__all__ = [
    "LAYOUT",
    "MAX_EVENT_DEPTH",
    "Codec",
    "RecordLayout",
    "Upcaster",
    "all_event_types",
    "checksum_body",
    "checksum_of",
    "legacy_checksum",
    "prev_of",
    "record_checksum",
    "record_seed",
    "stream_seed",
    "tag_seed",
    "version_seed",
]

#: Turns the stored fields of an old tag into ``(new_tag, new_fields)``.
Upcaster = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]

_CHECKSUM_PREFIX = b'{"meta":{"checksum":"'
_CHECKSUM_LEN = 32
_BODY_START = len(_CHECKSUM_PREFIX) + _CHECKSUM_LEN
_PLACEHOLDER = "0" * _CHECKSUM_LEN


_PREV_PREFIX = b'","prev":"'
_PREV_START = _BODY_START + len(_PREV_PREFIX)

#: The deepest nesting of containers an event's JSON may have, which every read of the log
#: follows from wherever it runs (msgspec decodes nesting on the interpreter's stack). onward's
#: own values nest at most three JSON levels (a dict with keys that are not strings) for each
#: of their 100 (``MAX_VALUE_DEPTH``), under a few of the event's own.
MAX_EVENT_DEPTH = 400
#: Every byte but a bracket.
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
#: Braces as square brackets: the encoder's brackets pair up, so only their depth counts, and
#: one kind of pair taken out per pass takes out one level of nesting, no more.
_BRACES_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")


#: The passes that remove a level each before the rest is measured in one pass.
_CHEAP_PASSES = 8
#: What each byte left of the brackets adds to the depth: ``[`` one, ``]`` minus one.
_BRACKET_STEP = [0] * 256
_BRACKET_STEP[ord("[")], _BRACKET_STEP[ord("]")] = 1, -1


def _nested_within(event_json: bytes, limit: int) -> bool:
    """Whether no container of ``event_json`` lies deeper than ``limit``.

    Its strings taken out, its brackets alone are read: a few passes in C each remove the
    innermost pairs, one level of nesting (most values end there); what is left is measured in
    one linear pass, so a deep value costs its length, not its length times its depth."""
    # A container is a bracket or more: no deeper than the bytes are many (most events), or
    # than they hold brackets.
    if len(event_json) <= limit or event_json.count(b"[") + event_json.count(b"{") <= limit:
        return True
    # With its escaped backslashes and quotes gone, each quote left starts or ends a string.
    unquoted = event_json.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unquoted.split(b'"')[::2]).translate(_BRACES_AS_BRACKETS, _NOT_BRACKETS)
    passes = min(limit, _CHEAP_PASSES)
    for _ in range(passes):
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return True
    # Each pass took exactly one level off: the rest may be ``limit - passes`` deep.
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets))) <= limit - passes


class RecordLayout(msgspec.Struct, frozen=True):
    """Where a sealed record keeps its checksum and previous hash (fixed byte offsets).

    Attributes:
        checksum_prefix: the bytes every sealed record starts with.
        checksum: the slice ``(start, end)`` of the checksum's 32 hex digits.
        prev_prefix: the bytes before the previous hash, right after the checksum.
        prev: the slice ``(start, end)`` of the previous hash, when it is there.
    """

    checksum_prefix: bytes
    checksum: tuple[int, int]
    prev_prefix: bytes
    prev: tuple[int, int]


#: The layout of every record this codec seals.
LAYOUT = RecordLayout(
    checksum_prefix=_CHECKSUM_PREFIX,
    checksum=(len(_CHECKSUM_PREFIX), _BODY_START),
    prev_prefix=_PREV_PREFIX,
    prev=(_PREV_START, _PREV_START + _CHECKSUM_LEN),
)


def checksum_of(state: bytes) -> str:
    """The checksum stored at the start of a sealed record (not checked)."""
    return state[len(_CHECKSUM_PREFIX) : _BODY_START].decode("ascii", "replace")


def prev_of(state: bytes) -> str:
    """The previous hash stored in a sealed record ("" for a stream's first event).

    Reads it at its fixed offset: only meaningful once the record's checksum has been checked.
    """
    if state[_BODY_START:_PREV_START] == _PREV_PREFIX:
        return state[_PREV_START : _PREV_START + _CHECKSUM_LEN].decode("ascii", "replace")
    return ""


class _MetaTail(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The envelope's fields after ``event_id``, in :class:`Meta`'s order."""

    time: float
    session: str = ""
    causation_id: str = ""
    correlation_id: str = ""
    actor: str = ""


#: How many envelope tails :meth:`Codec.meta_tail` keeps (one per task running, mostly).
_TAILS_MAX = 4096


class _Tag(msgspec.Struct, frozen=True):
    type: str = ""


class _TagOnly(msgspec.Struct):
    event: _Tag = _Tag()


_TAG_ONLY = msgspec.json.Decoder(_TagOnly)


def _stored_tag(state: bytes) -> str:
    """The ``type`` of a stored record's event ("" when the record does not parse)."""
    try:
        return _TAG_ONLY.decode(state).event.type
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, TypeError):
        return ""


class _Envelope(msgspec.Struct):
    meta: Meta
    event: msgspec.Raw


def all_event_types() -> list[type[Event]]:
    """Every concrete event type defined so far (subclasses of :class:`Event`, recursively).

    Returns:
        The types, in definition order of their bases.
    """
    found: list[type[Event]] = []
    pending: list[type[Event]] = [Event]
    while pending:
        cls = pending.pop(0)
        for sub in cls.__subclasses__():
            if sub not in found:
                found.append(sub)
                pending.append(sub)
    return found


#: xxh3-128 of a record's body (32 hex digits), seeded with its place (:func:`record_seed`):
#: about five times cheaper to check than blake2b over the same bytes.
checksum_body: Callable[[bytes, int], str] = xxhash.xxh3_128_hexdigest
_place = xxhash.xxh3_64_intdigest
#: 2**64 over the golden ratio: multiplied by it, a version's bits spread over all 64.
_GOLDEN = 0x9E3779B97F4A7C15
_MASK = 2**64 - 1


def stream_seed(stream: str) -> int:
    """A stream's part of its records' seeds: xxh3-64 of its id."""
    return _place(stream.encode())


def tag_seed(topic: str) -> int:
    """A tag's part of its records' seeds: xxh3-64 of it, under another seed than a stream's
    (a stream and a tag that trade places do not cancel out)."""
    return _place(topic.encode(), 1)


def version_seed(version: int) -> int:
    """A version's part of its record's seed: the version times :data:`_GOLDEN`, modulo 2**64
    (XOR'ed as it is, two small versions would differ in a few low bits only)."""
    return version * _GOLDEN & _MASK


def record_seed(stream: str, version: int, topic: str) -> int:
    """What binds a record's checksum to its place: the XOR of its stream's, tag's and
    version's parts. A reader computes a stream's and a tag's part once for all their
    records."""
    return stream_seed(stream) ^ tag_seed(topic) ^ version_seed(version)


def _seed_of_encoded(stream_prefix: bytes, version: int, topic: bytes) -> int:
    """:func:`record_seed` of a stream and tag already encoded (``stream + "\0"``, the tag)."""
    return _place(stream_prefix[:-1]) ^ _place(topic, 1) ^ (version * _GOLDEN & _MASK)


def record_checksum(stream: str, version: int, topic: str, body: bytes) -> str:
    """The checksum of a record: xxh3-128 over its body, seeded with its stream, tag and
    version (:func:`record_seed`). A flipped bit in any of them changes it."""
    return checksum_body(body, record_seed(stream, version, topic))


def legacy_checksum(stream: str, version: int, topic: str, body: bytes) -> str:
    """The checksum of a record written by an onward before xxh3: blake2b-128 over its stream,
    version and tag, each followed by a zero byte, then its body. A record passes its check
    with either."""
    return hashlib.blake2b(
        b"%s\x00%d\x00%s\x00%s" % (stream.encode(), version, topic.encode(), body),
        digest_size=16,
    ).hexdigest()


def _raw_for_any(annotation: Any) -> Any:
    """``annotation`` with its ``Any`` values made ``msgspec.Raw`` (scanned, not built): in
    lists, tuples, a dict's values, unions and ``Annotated``. Elsewhere (a dict's keys, a
    set's members, other generics) it stays as it is, and is built as the read will build it:
    msgspec takes no Raw there."""
    if annotation is Any:
        return msgspec.Raw
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if not args:
        return annotation
    if origin in (list, tuple):
        shaped = tuple(a if a is Ellipsis else _raw_for_any(a) for a in args)
        return origin[shaped] if shaped != args else annotation
    if origin is dict and len(args) == 2:
        value = _raw_for_any(args[1])
        return dict[args[0], value] if value is not args[1] else annotation  # type: ignore[valid-type]
    if origin is typing.Union or origin is types.UnionType:
        shaped = tuple(_raw_for_any(a) for a in args)
        # msgspec takes no Raw among a union's members: a union with Any is Any.
        if msgspec.Raw in shaped:
            return msgspec.Raw
        return Union[shaped] if shaped != args else annotation  # noqa: UP007
    if origin is typing.Annotated:
        inner = _raw_for_any(args[0])
        return msgspec.Raw if inner is msgspec.Raw else annotation
    return annotation


def _shape_of(cls: type[Event]) -> type[Any]:
    """A struct that decodes what ``cls`` encodes to, its ``Any`` values scanned, not built
    (``cls`` itself when that cannot be made, or when ``cls`` checks its values itself in a
    ``__post_init__``, which a read runs)."""
    if getattr(cls, "__post_init__", None) is not None:
        return cls
    try:
        config = cls.__struct_config__
        fields: list[Any] = []
        for info in msgspec.structs.fields(cls):
            shaped = _raw_for_any(info.type)
            if info.default is not msgspec.NODEFAULT:
                fields.append((info.encode_name, shaped, info.default))
            elif info.default_factory is not msgspec.NODEFAULT:
                fields.append(
                    (info.encode_name, shaped, msgspec.field(default_factory=info.default_factory))
                )
            else:
                fields.append((info.encode_name, shaped))
        return msgspec.defstruct(
            f"_{cls.__name__}Shape",
            fields,
            kw_only=True,
            tag=config.tag,
            tag_field=config.tag_field,
            array_like=config.array_like,
        )
    except (TypeError, ValueError, NameError):
        return cls


def _reads_back(kind: type[Event], event_json: bytes) -> bool:
    """Whether ``kind`` itself decodes ``event_json`` (what a read does)."""
    try:
        msgspec.json.decode(event_json, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False
    return True


def _onwards(cls: type[Event]) -> bool:
    return cls.__module__.startswith("onward.")


def _check_event_type(cls: type[Event], taken: type[Event] | None) -> None:
    """Refuse an event type that would make every read of a log fail: one stored as an array
    (its union with the others cannot be decoded), or one of yours under the tag of one of
    onward's (a class named ``StepCompleted``), which would take the place of onward's own.
    A type of yours defined again (a module reloaded) replaces the earlier one.

    Raises:
        UsageError: it is one of these.
    """
    if cls.__struct_config__.array_like:
        raise UsageError(
            f"event type {cls.__module__}.{cls.__qualname__}: array_like=True is not supported "
            "(events are stored as JSON objects)"
        )
    if taken is not None and _onwards(taken) != _onwards(cls):
        yours, ours = (taken, cls) if _onwards(cls) else (cls, taken)
        tag = ours.__struct_config__.tag
        raise UsageError(
            f"event type {yours.__module__}.{yours.__qualname__} takes the tag {tag!r} of "
            f"onward's {ours.__module__}.{ours.__qualname__}: give it another, as in "
            f'class {yours.__name__}(Event, tag="myapp.{yours.__name__}")'
        )


class Codec:
    """Encodes events with their envelope into stored bytes, and decodes them back.

    Args:
        types: the event types to know; by default every subclass of :class:`Event` defined
            when the codec is built.
    """

    def __init__(self, types: Iterable[type[Event]] | None = None) -> None:
        self._types: dict[str, type[Event]] = {}
        for cls in all_event_types() if types is None else types:
            tag = cls.__struct_config__.tag
            if isinstance(tag, str):
                _check_event_type(cls, self._types.get(tag))
                self._types[tag] = cls
        self._upcasters: dict[str, Upcaster] = {}
        self._read_upcast: set[str] = set()
        self._encoder = msgspec.json.Encoder()
        self._envelope = msgspec.json.Decoder(_Envelope)
        # By the class of an event appended: what checks that it decodes as itself.
        self._checkers: dict[type[Event], msgspec.json.Decoder[Any]] = {}
        # By (session, causation id, correlation id, actor): the envelope's JSON after its time.
        self._tails: dict[tuple[str, str, str, str], bytes] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        self._decoders = {tag: msgspec.json.Decoder(cls) for tag, cls in self._types.items()}
        # One pass for the common case: the envelope and an event of a known type together.
        # Old tags (upcasters), unknown tags and bad records fall back to the two-pass path.
        types = tuple(self._types.values())
        if types:
            union = types[0] if len(types) == 1 else Union[types]  # noqa: UP007
            typed = msgspec.defstruct("_TypedEnvelope", [("meta", Meta), ("event", union)])
            self._typed: msgspec.json.Decoder[Any] | None = msgspec.json.Decoder(typed)
        else:
            self._typed = None

    @property
    def tags(self) -> frozenset[str]:
        """The tags this codec decodes to a known type."""
        return frozenset(self._types)

    @property
    def types(self) -> dict[str, type[Event]]:
        """The known event types by tag (a copy)."""
        return dict(self._types)

    def register(self, cls: type[Event]) -> None:
        """Teach the codec one more event type (a type defined after the codec was built)."""
        tag = cls.__struct_config__.tag
        if not isinstance(tag, str):
            raise UnencodableValue(f"{cls.__qualname__} has no tag: subclass events.Event")
        _check_event_type(cls, self._types.get(tag))
        self._types[tag] = cls
        self._rebuild()

    @property
    def upcast_tags(self) -> frozenset[str]:
        """The old tags this codec has read records under as one of onward's own types,
        through its upcasters, since it was built: an onward without those upcasters reads
        those records otherwise (as unknown events)."""
        return frozenset(self._read_upcast)

    def register_upcaster(self, old_tag: str, upcaster: Upcaster) -> None:
        """Read records stored under ``old_tag`` through ``upcaster``.

        Args:
            old_tag: the tag of the old shape (no current type may use it).
            upcaster: turns the old fields into ``(new_tag, new_fields)``; chains are followed,
                so an upcaster may return another old tag.
        """
        self._upcasters[old_tag] = upcaster

    def encode_event(self, event: Event) -> bytes:
        """The msgspec JSON of one event.

        Raises:
            UnencodableValue: a field holds a value msgspec cannot encode.
        """
        try:
            return self._encoder.encode(event)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnencodableValue(f"cannot encode {type(event).__name__}: {exc}") from exc
        except RecursionError:
            raise UnencodableValue(
                f"cannot encode {type(event).__name__}: a value in it contains itself or is "
                f"nested deeper than {MAX_EVENT_DEPTH} levels"
            ) from None

    def check_decodes(self, event: Event, event_json: bytes) -> None:
        """Check that an event's JSON decodes as its own type, as every read will decode it.

        msgspec checks field types when it decodes, not when an event is built: an event
        built with a value of another type (``TaskSubmitted(name=123)``) encodes, and would
        then make every read of the log fail at its record. Values typed ``Any`` (a step's
        result, a task's arguments) are only scanned, not built.

        Raises:
            UnencodableValue: it does not decode as its type, or it is nested deeper than
                :data:`MAX_EVENT_DEPTH`.
        """
        cls = type(event)
        if not _nested_within(event_json, MAX_EVENT_DEPTH):
            raise UnencodableValue(
                f"{cls.__name__} is nested deeper than {MAX_EVENT_DEPTH} levels: a read of the "
                "log could not follow it"
            )
        checker = self._checkers.get(cls)
        if checker is None:
            checker = self._checkers[cls] = msgspec.json.Decoder(_shape_of(cls))
        try:
            checker.decode(event_json)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            if _reads_back(cls, event_json):  # the shape was stricter than the class
                return
            raise UnencodableValue(
                f"{cls.__name__} would not read back as itself: {exc} (a field holds a value "
                "its class does not take)"
            ) from exc

    def encode_meta(self, meta: Meta) -> bytes:
        """The msgspec JSON of an envelope whose checksum is still to be filled in."""
        return self._encoder.encode(meta)

    @staticmethod
    def seal(stream: str, version: int, topic: str, meta_json: bytes, event_json: bytes) -> bytes:
        """Assemble a record's state and fill in its checksum.

        Args:
            meta_json: the envelope, encoded with a placeholder checksum of 32 zeros.
            event_json: the event, encoded (and already redacted).

        Returns:
            The stored state, whose checksum is :func:`record_checksum` of what follows it.
        """
        state = b'{"meta":' + meta_json + b',"event":' + event_json + b"}"
        body = state[_BODY_START:]
        checksum = record_checksum(stream, version, topic, body)
        return _CHECKSUM_PREFIX + checksum.encode() + body

    def meta_tail(
        self, time: float, session: str, causation_id: str, correlation_id: str, actor: str
    ) -> bytes:
        """The envelope's fields after ``event_id``, shared by the events of one append, as
        the JSON that follows ``"event_id":"...",`` (see :meth:`seal_new`)."""
        # ``time`` comes first and is never left out (it has no default): the fields after it
        # are the same on most appends (a task's steps), so they are encoded once and kept.
        names = (session, causation_id, correlation_id, actor)
        after = self._tails.get(names)
        if after is None:
            after = self._tail_after_time(names)
        return b'"time":' + self._encoder.encode(time) + after

    def _tail_after_time(self, names: tuple[str, str, str, str]) -> bytes:
        """What follows the time in :meth:`meta_tail`'s JSON for these names, encoded as
        :class:`_MetaTail` encodes them, and kept for the next appends that share them."""
        session, causation_id, correlation_id, actor = names
        encoded = self._encoder.encode(
            _MetaTail(
                time=0,
                session=session,
                causation_id=causation_id,
                correlation_id=correlation_id,
                actor=actor,
            )
        )
        assert encoded.startswith(b'{"time":0')
        after = encoded[len(b'{"time":0') :]
        if len(self._tails) >= _TAILS_MAX:  # many tasks' causes: stay bounded
            self._tails.clear()
        self._tails[names] = after
        return after

    @staticmethod
    def seal_with(
        stream_prefix: bytes,
        version: int,
        topic: bytes,
        meta_json: bytes,
        event_json: bytes,
        *,
        key: bytes = b',"event":',
    ) -> tuple[bytes, str]:
        """:meth:`seal` for the hot path: the stream already encoded (``stream + "\0"``).

        Args:
            key: what comes between the envelope and the event: ``,"event":``, or
                ``,"split":`` for an event split into blobs (see :mod:`onward.events.blobs`).

        Returns:
            The sealed state and its checksum.
        """
        body = b"".join((b'{"meta":', meta_json, key, event_json, b"}"))[_BODY_START:]
        checksum = checksum_body(body, _seed_of_encoded(stream_prefix, version, topic))
        return b"".join((_CHECKSUM_PREFIX, checksum.encode(), body)), checksum

    @staticmethod
    def seal_new(
        stream_prefix: bytes,
        version: int,
        topic: bytes,
        prev: str,
        event_id: str,
        tail: bytes,
        event_json: bytes,
    ) -> tuple[bytes, str]:
        """Seal a new record in one go, its envelope written straight into the sealed bytes
        (the append's hot path; :meth:`seal_with` seals an envelope encoded from a Meta).

        Returns:
            The sealed state and its checksum.
        """
        return Codec.seal_seeded(
            _seed_of_encoded(stream_prefix, version, topic), prev, event_id, tail, event_json
        )

    @staticmethod
    def seal_seeded(
        seed: int, prev: str, event_id: str, tail: bytes, event_json: bytes
    ) -> tuple[bytes, str]:
        """:meth:`seal_new` given the record's seed (:func:`record_seed` of its stream,
        version and tag), which an append computes from its stream's and tags' parts, each
        once for all its records.

        Returns:
            The sealed state and its checksum.
        """
        if prev:
            body = b"".join(
                (_PREV_PREFIX, prev.encode(), b'","event_id":"', event_id.encode(), b'",', tail,
                 b',"event":', event_json, b"}")
            )  # fmt: skip
        else:
            body = b"".join(
                (b'","event_id":"', event_id.encode(), b'",', tail, b',"event":', event_json, b"}")
            )
        checksum = checksum_body(body, seed)
        return b"".join((_CHECKSUM_PREFIX, checksum.encode(), body)), checksum

    @staticmethod
    def placeholder() -> str:
        """The checksum to encode an envelope with before :meth:`seal` fills it in."""
        return _PLACEHOLDER

    @staticmethod
    def check(stream: str, version: int, topic: str, state: bytes) -> str | None:
        """Check one stored record's checksum.

        Returns:
            None when the record is intact, else what is wrong with it.
        """
        if not isinstance(state, bytes | bytearray | memoryview):
            return f"record has no state (found {type(state).__name__})"
        if not (isinstance(stream, str) and isinstance(topic, str) and type(version) is int):
            found = ", ".join(type(value).__name__ for value in (stream, version, topic))
            return f"record's stream, version and tag are not text, a number, text ({found})"
        state = bytes(state)
        if state[: len(_CHECKSUM_PREFIX)] != _CHECKSUM_PREFIX or len(state) < _BODY_START + 2:
            return "record has no checksum (truncated or overwritten)"
        stored = state[len(_CHECKSUM_PREFIX) : _BODY_START]
        body = state[_BODY_START:]
        actual = record_checksum(stream, version, topic, body)
        if (
            stored != actual.encode()
            and stored != legacy_checksum(stream, version, topic, body).encode()
        ):
            return (
                f"checksum mismatch: stored {stored.decode('ascii', 'replace')}, computed {actual}"
            )
        return None

    @property
    def typed_decoder(self) -> msgspec.json.Decoder[Any] | None:
        """The one-pass decoder of a stored state into ``.meta`` and ``.event`` (None when no
        type is known). It raises on old, unknown or damaged records: then use
        :meth:`decode_state`, which says what is wrong."""
        return self._typed

    def decode_state(self, position: int, stream: str, version: int, state: bytes) -> Recorded:
        """Decode a record without its tag column: the tag is also the event's ``type`` (a
        record whose two disagree fails ``verify``).

        Raises:
            CorruptRecord: the record does not decode.
        """
        return self.decode(stream, version, position, _stored_tag(state), state)

    def decode_page(self, rows: list[tuple[int, str, int, str, bytes]]) -> list[Recorded]:
        """Decode stored rows ``(position, stream, version, topic, state)`` in one go.

        Raises:
            CorruptRecord: a record does not decode.
        """
        typed = self._typed
        if typed is not None:
            decode = typed.decode
            try:
                return [
                    Recorded(s, v, p, (both := decode(st)).meta, both.event)
                    for p, s, v, _t, st in rows
                ]
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                pass  # an old, unknown or damaged record in this page: one at a time
        return [self.decode(s, v, p, t, st) for p, s, v, t, st in rows]

    def decode(
        self, stream: str, version: int, position: int, topic: str, state: bytes
    ) -> Recorded:
        """Decode one stored record (without checking its checksum: :meth:`check` does).

        Raises:
            CorruptRecord: the record does not decode, or its fields do not fit its type.
        """
        typed = self._typed
        if typed is not None and topic in self._decoders:
            try:
                both = typed.decode(state)
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                pass  # the slow path below says what is wrong
            else:
                return Recorded(stream, version, position, both.meta, both.event)
        try:
            envelope = self._envelope.decode(state)
        except (msgspec.DecodeError, UnicodeDecodeError, TypeError) as exc:
            raise CorruptRecord(
                f"record does not decode: {exc}", stream=stream, version=version, position=position
            ) from exc
        return Recorded(
            stream=stream,
            version=version,
            position=position,
            meta=envelope.meta,
            event=self.decode_event(topic, envelope.event, stream, version, position),
        )

    def knows(self, topic: str) -> bool:
        """Whether ``topic`` is a tag of this codec: a type of it, or an old tag one of its
        upcasters reads; False for a type of a newer onward (it decodes as
        :class:`~onward.events.base.UnknownEvent`)."""
        return topic in self._types or topic in self._upcasters

    def _upcast(
        self, tag: str, data: dict[str, Any], stream: str, version: int, position: int
    ) -> tuple[str, dict[str, Any]]:
        """One step of upcasting: the upcaster of ``tag`` over the stored fields.

        Raises:
            CorruptRecord: the upcaster raised (a record of a shape it was not written for),
                or did not give a tag and fields: the record does not decode, as one whose
                fields do not fit its type.
        """
        upcaster = self._upcasters[tag]
        try:
            new_tag, fields = upcaster(data)
            if not (isinstance(new_tag, str) and isinstance(fields, dict)):
                raise TypeError(
                    f"it returned {type(new_tag).__name__} and {type(fields).__name__}, "
                    "not a tag and a dict of fields"
                )
        except MemoryError:
            raise  # this process ran short, the record is not at fault: read it again later
        except Exception as exc:  # the application's code: whatever it raises
            name = getattr(upcaster, "__qualname__", type(upcaster).__qualname__)
            raise CorruptRecord(
                f"event of type {tag!r} does not decode: its upcaster {name} failed: "
                f"{type(exc).__name__}: {exc}",
                stream=stream,
                version=version,
                position=position,
            ) from exc
        return new_tag, fields

    def decode_event(
        self, topic: str, raw: bytes | msgspec.Raw, stream: str, version: int, position: int
    ) -> Event | UnknownEvent:
        """Decode one stored event by its tag, upcasting old tags and tolerating unknown ones."""
        decoder = self._decoders.get(topic)
        try:
            if decoder is not None:
                return decoder.decode(raw)
            data = msgspec.json.decode(raw, type=dict[str, Any])
            tag = topic
            seen = {tag}
            while tag in self._upcasters:
                tag, data = self._upcast(tag, data, stream, version, position)
                if tag in seen:
                    break
                seen.add(tag)
            cls = self._types.get(tag)
            if cls is None:
                data.pop("type", None)
                return UnknownEvent(type=tag, data=data)
            data["type"] = tag
            event = msgspec.convert(data, type=cls)
            if _onwards(cls):
                self._read_upcast.add(topic)
            return event
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
            raise CorruptRecord(
                f"event of type {topic!r} does not decode: {exc}",
                stream=stream,
                version=version,
                position=position,
            ) from exc
