"""Values as the log keeps them: task arguments, step and task results, read back as they were.

A step's result is what every later run of its task gets back, so it must come back from the
log exactly as it went in: the same types, the same values. JSON alone cannot promise that (it
has no bytes, tuples, sets, dates, NaN, or dict keys other than strings), so a value is stored
as plain JSON where JSON is enough and as a one-key object naming its type where it is not::

    b"\\x00\\x01"            {"$bytes": "AAE="}
    (1, "a")               {"$tuple": [1, "a"]}
    {3, 4}                 {"$set": [3, 4]}          ($frozenset too)
    {1: "x"}               {"$dict": [[1, "x"]]}     (also a dict whose one key starts with $)
    float("nan")           {"$float": "nan"}         (inf, -inf)
    datetime, date, time, timedelta, UUID, Decimal: {"$datetime": "2024-11-25T10:00:00Z"}, ...
    (a UTC offset with seconds, 12:00+00:19:32, as ISO 8601 has it: RFC 3339 has minutes only)

Objects msgspec knows (Structs, dataclasses, attrs classes) are stored as the dict (an
array-like Struct: the list) of their fields, as msgspec lays them out, each field's value
stored as above (a set in a field stays a set); a NamedTuple as its tuple, an enum as its
value, a subclass of ``int``, ``str``, ``float``, ``bytes`` as its base value. They come back
as their type where the reader names it (a step's return annotation, a task's parameter
annotations) and as those plain values where it does not: :func:`decode_value` rebuilds them
(:mod:`onward.events.value_types`: a dataclass without calling its ``__init__`` or
``__post_init__`` again). An annotation converts nothing else: a value that does not match it
(a ``str`` under ``-> bytes``) comes back as it was returned. The engine hands a step's
caller the value decoded from what it recorded, on the first run too, so the first run and
every replay see the same thing whatever the annotation says.

What cannot come back as it went in is refused with a :class:`UsageError` before anything is
written, naming the offending place (``[2]['when']``; a secret among its keys redacted by the
log's redactor): an object msgspec cannot encode, a value that contains itself, one nested
deeper than :data:`MAX_VALUE_DEPTH` levels, a set or dict key that would not be hashable once
read back (a Struct in a set), a dataclass or attrs instance holding an attribute that is none
of its fields (set by ``__post_init__``: rebuilt from its fields, it would lack it).

Stored values written by older versions (plain JSON) still read back: their objects, enums and
subclasses are rebuilt by the annotations as before, but a value JSON had no type for (a
tuple stored as a list, bytes as base64 text, a date as ISO text) comes back as that JSON, as
it cannot be told from a list or a text the function returned.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from onward.events.exceptions import UsageError
from onward.events.objects import Layout, layout_of
from onward.events.redaction import Redactor
from onward.events.value_types import MISMATCH, reader_for

__all__ = ["MAX_VALUE_DEPTH", "decode_value", "encode_value"]

#: The deepest nesting of containers a stored value may have.
MAX_VALUE_DEPTH = 100

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()

# Types msgspec keeps as they are in ``to_builtins`` (the walk below tags them).
_NATIVE = (
    bytes,
    bytearray,
    memoryview,
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    uuid.UUID,
    decimal.Decimal,
)
# Tagged as their text, read back with msgspec's own parsers.
_TEXT_TAGS: dict[type[Any], str] = {
    datetime.datetime: "$datetime",
    datetime.date: "$date",
    datetime.time: "$time",
    datetime.timedelta: "$timedelta",
    uuid.UUID: "$uuid",
    decimal.Decimal: "$decimal",
}
_TEXT_TYPES: dict[str, type[Any]] = {tag: cls for cls, tag in _TEXT_TAGS.items()}
# What has a UTC offset, which msgspec writes in whole minutes (see _text).
_ZONED = (datetime.datetime, datetime.time)
_MINUTE = datetime.timedelta(minutes=1)
#: A UTC offset with seconds (and microseconds), at the end of an ISO 8601 text.
_ODD_OFFSET = re.compile(r"([+-])(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?\Z")
_SCALARS = (str, int, bool, type(None))
# What a subclass of a scalar (a str enum, a numpy-free int subclass) is stored as.
_SCALAR_BASES: tuple[type[Any], ...] = (bool, int, str, float, bytes, bytearray)


class _Refused(Exception):
    """A value that cannot be stored: what is wrong, and where (the path is built on the way
    out, so that a value that can be stored costs no path)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
        self.path: list[str] = []

    def at(self, segment: str) -> _Refused:
        """This refusal, one level further out."""
        self.path.insert(0, segment)
        return self


def encode_value(
    value: Any, *, what: str | Callable[[], str], redactor: Redactor | None = None
) -> Any:
    """The stored form of a value: plain JSON values, tagged where JSON would lose its type.

    Args:
        value: a task argument, or a step's or task's result.
        what: what it is, for the error message (``"task crawl: argument urls"``), or what
            makes that text when a message needs it (a step's result, stored on every step,
            then costs no text).
        redactor: the log's redactor: the stored form is redacted as the log will redact it,
            and ``bytes``, which the log sees only as base64, are redacted before they are
            encoded; None redacts nothing.

    Returns:
        The stored form, exactly as the log will hold it: plain JSON values (lists, dicts,
        strings, numbers), secrets redacted as the log redacts them.

    Raises:
        UsageError: the value cannot be stored so as to come back as it is (see the module);
            the place named by its keys and the reason are redacted by ``redactor``.
    """
    plain = _plain_json(value)
    if plain is not None:  # plain JSON already: no walk needed
        raw, stored = plain
        if redactor is not None:
            redacted = redactor.redact_json(raw)
            if redacted is not raw:
                return _entries_kept(redacted, what)
        return stored  # what the log's JSON reads back as, already read
    redact_bytes = None if redactor is None else _bytes_redactor(redactor)
    try:
        packed = _pack(value, 0, set(), redact_bytes)
    except _Refused as refused:
        # The path is made of the value's own keys (a dict of clients by API key), and the
        # reason may quote the value: both are redacted, as the log would redact them.
        where = _redacted("".join(refused.path), redactor).strip()  # " (a member)" first
        if len(where) > 80:  # a deep path: its two ends say enough
            where = f"{where[:38]}...{where[-38:]}"
        at = f" at {where}" if where else ""
        raise UsageError(f"{_named(what)}{at}: {_redacted(refused.why, redactor)}") from None
    try:
        raw = _ENCODER.encode(packed)
    except (TypeError, ValueError, OverflowError) as exc:  # a lone surrogate in a string
        raise UsageError(
            f"{_named(what)}: cannot be stored ({_redacted(str(exc), redactor)})"
        ) from None
    if redactor is not None:
        redacted = redactor.redact_json(raw)
        if redacted is not raw:
            return _entries_kept(redacted, what)
    return _DECODER.decode(raw)


def _named(what: str | Callable[[], str]) -> str:
    """The text of :func:`encode_value`'s ``what``."""
    return what if isinstance(what, str) else what()


def _entries_kept(redacted: bytes, what: str | Callable[[], str]) -> Any:
    """The stored form of a value whose secrets were redacted, unless the redaction merged
    entries: two keys of a dict (or members of a set) that differ only by their secrets would
    come back as one, the other's contents lost.

    Raises:
        UsageError: entries would be lost (the message names none: they hold the secrets).
    """
    try:  # the stdlib's reader hands each object's members over before it drops a repeat
        merged = _merges(json.loads(redacted, object_pairs_hook=_distinct_members))
    except _Merged:
        merged = True
    if merged:
        raise UsageError(
            f"{_named(what)}: keys of a dict (or members of a set) that differ only by "
            "secrets, which the log redacts, would come back as one and entries be lost: key "
            "it by something else (an id, a digest of the secret)"
        )
    return _DECODER.decode(redacted)


class _Merged(Exception):
    """An object of a redacted value's JSON names a member twice."""


def _distinct_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({name for name, _ in pairs}) != len(pairs):
        raise _Merged
    return dict(pairs)


def _merges(stored: Any) -> bool:
    """Whether a stored value holds a set, or a dict kept in pairs, whose members read back
    as fewer than it lists (redaction made two of them the same)."""
    pending = [stored]
    while pending:
        item = pending.pop()
        if type(item) is list:
            pending.extend(item)
        elif type(item) is dict:
            if len(item) == 1:
                ((tag, inner),) = item.items()
                if type(inner) is list and tag in _SET_TAGS:
                    members = [_unpack(v) for v in inner]
                elif type(inner) is list and tag == "$dict":
                    members = [_unpack(pair[0]) for pair in inner if type(pair) is list and pair]
                else:
                    members = []
                try:
                    if len(set(members)) != len(members):
                        return True
                except TypeError:  # not one of ours: nothing to merge
                    pass
            pending.extend(item.values())
    return False


_SET_TAGS = frozenset({"$set", "$frozenset"})


def _redacted(text: str, redactor: Redactor | None) -> str:
    """A part of an error message that comes from the value, its secrets redacted."""
    return text if redactor is None else redactor.redact(text)


def decode_value(stored: Any, into: Any = Any) -> Any:
    """A value read back from its stored form: tags resolved, then what ``into`` names
    rebuilt (see :mod:`onward.events.value_types`).

    Args:
        stored: what the log holds (as decoded from its JSON).
        into: the type the reader expects (a step's return annotation, a parameter's). Only
            objects, enums and subclasses of scalars are rebuilt by it, where the stored value
            is their kept form; any other value comes back as it was kept, whatever ``into``
            says (a ``str`` under ``bytes`` stays a ``str``).

    Returns:
        The value. The same stored value and ``into`` give the same value every time: the
        first run and every replay see the same thing.
    """
    value = _unpack(stored)
    if into is Any or type(value) is into:  # nothing to rebuild
        return value
    reader = reader_for(into)
    if reader is None:
        return value
    rebuilt = reader(value)
    return value if rebuilt is MISMATCH else rebuilt


def _plain_json(value: Any) -> tuple[bytes, Any] | None:
    """The JSON of a value that JSON keeps exactly (no tag needed, none to escape, shallow
    enough) and the value as read back from it (the value itself for a str, int, bool or
    None), or None: then the value is walked and tagged.

    Encoding and decoding in C and comparing costs less than walking the value in Python. A
    value that does not come back equal (a tuple, bytes, NaN, a non-string key, a Struct), holds
    a dict whose first key starts with ``$``, or is nested deeper than :data:`MAX_VALUE_DEPTH`
    takes the walk.
    """
    try:
        raw = _ENCODER.encode(value)
        if type(value) in _SCALARS:
            return None if type(value) is int and _too_long(value) else (raw, value)
        back = _DECODER.decode(raw)
        same = back == value
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.DecodeError):
        return None  # the walk says what is wrong, and where
    # find, not "in" (see onward.events.redaction.might_hold_a_secret): no TypeError made
    if not same or raw.find(b'{"$') >= 0:
        return None
    if raw.count(b"[") + raw.count(b"{") > MAX_VALUE_DEPTH and not _shallow(back):
        return None
    return raw, back


def _shallow(value: Any) -> bool:
    """Whether no container of a decoded JSON value lies deeper than :data:`MAX_VALUE_DEPTH`."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_VALUE_DEPTH:
            return False
        inner = container.values() if type(container) is dict else container
        pending.extend((v, depth + 1) for v in inner if type(v) is list or type(v) is dict)
    return True


def _bytes_redactor(redactor: Redactor) -> Callable[[bytes], bytes]:
    def redact(data: bytes) -> bytes:
        # Latin-1 maps each byte to one character and back, so only a secret's bytes change.
        text = data.decode("latin-1")
        redacted = redactor.redact(text)
        return data if redacted == text else redacted.encode("latin-1", "replace")

    return redact


#: The most characters (digits and sign) a stored int may have: what msgspec reads back
#: (Python's own limit for converting an int to text, by default, counts digits alone).
_INT_DIGITS = 4300
_INT_LIMIT = 10**_INT_DIGITS


def _too_long(value: int) -> bool:
    """Whether an int's text (its minus sign included) is longer than a stored one's may be
    (cheap for a usual int)."""
    return value.bit_length() > 14_000 and (
        value >= _INT_LIMIT if value >= 0 else -value >= _INT_LIMIT // 10
    )


def _pack(
    value: Any,
    depth: int,
    active: set[int],
    redact: Callable[[bytes], bytes] | None,
) -> Any:
    cls = type(value)
    if cls in _SCALARS:
        if cls is int and _too_long(value):
            raise _Refused(
                f"an int of more than {_INT_DIGITS} digits with its sign (the log keeps an "
                f"int as JSON text, of up to {_INT_DIGITS} digits, {_INT_DIGITS - 1} with a "
                "minus sign)"
            )
        return value
    if cls is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if cls is list or cls is dict or cls is tuple or cls is set or cls is frozenset:
        return _pack_container(value, cls, depth, active, redact)
    if cls is bytes or cls is bytearray or cls is memoryview:
        data = bytes(value)
        if redact is not None:
            data = redact(data)
        kind = "$bytearray" if cls is bytearray else "$bytes"
        return {kind: base64.b64encode(data).decode("ascii")}
    tag = _TEXT_TAGS.get(cls)
    if tag is not None:
        return {tag: _text(value, cls)}
    return _pack_other(value, depth, active, redact)


def _text(value: Any, cls: type[Any]) -> str:
    """The text a datetime, date, time, timedelta, UUID or Decimal is kept as."""
    if cls in _ZONED and value.tzinfo is not None and value.tzinfo is not datetime.UTC:
        offset = value.utcoffset()
        if offset and offset % _MINUTE:
            # RFC 3339, which msgspec writes, has whole minutes in an offset (msgspec would
            # round 12:00+00:19:32, Amsterdam's before 1937, to another instant): ISO 8601's
            # seconds, read back by _untag.
            return value.isoformat()  # type: ignore[no-any-return]
    text: str = msgspec.to_builtins(value)
    return text


def _pack_container(
    value: Any,
    cls: type[Any],
    depth: int,
    active: set[int],
    redact: Callable[[bytes], bytes] | None,
) -> Any:
    if depth >= MAX_VALUE_DEPTH:
        raise _Refused(f"nested deeper than {MAX_VALUE_DEPTH} levels")
    key = id(value)
    if key in active:
        raise _Refused("it contains itself (a reference cycle)")
    active.add(key)
    inner = depth + 1
    try:
        if cls is dict:
            return _pack_dict(value, inner, active, redact)
        items: list[Any] = []
        ordered = cls is list or cls is tuple
        pack = _pack if ordered else _pack_key
        try:
            for v in value:
                items.append(pack(v, inner, active, redact))
        except _Refused as refused:
            # The item that failed is the one after those packed.
            raise refused.at(f"[{len(items)}]" if ordered else " (a member)") from None
        if cls is list:
            return items
        if not ordered:
            _distinct(list(value), items, "members")
        return {"$tuple" if cls is tuple else "$set" if cls is set else "$frozenset": items}
    finally:
        active.discard(key)


def _pack_dict(
    value: dict[Any, Any],
    depth: int,
    active: set[int],
    redact: Callable[[bytes], bytes] | None,
) -> Any:
    plain = all(type(k) is str for k in value) and not (
        len(value) == 1 and next(iter(value)).startswith("$")
    )
    packed: dict[str, Any] = {}
    pairs: list[list[Any]] = []
    for k, v in value.items():
        try:
            if plain:
                packed[k] = _pack(v, depth, active, redact)
                continue
            stored_key = _pack_key(k, depth, active, redact)
        except _Refused as refused:
            suffix = " (a key)" if not plain else ""
            raise refused.at(f"[{k!r}]" if plain else suffix) from None
        try:
            pairs.append([stored_key, _pack(v, depth, active, redact)])
        except _Refused as refused:
            raise refused.at(f"[{k!r}]") from None
    if not plain:
        _distinct(list(value), [stored for stored, _ in pairs], "keys")
    return packed if plain else {"$dict": pairs}


def _distinct(given: list[Any], stored: list[Any], what: str) -> None:
    """Refuse a set's members or a dict's keys that would read back as one (a plain enum
    member and its value, ``True`` and ``1.0`` in another guise): one would be lost."""
    seen: dict[Any, Any] = {}
    for original, packed in zip(given, stored, strict=True):
        read = _unpack(packed)
        if read in seen:
            raise _Refused(
                f"its {what} {seen[read]!r} and {original!r} would read back as one "
                f"({read!r}), and one of them would be lost"
            )
        seen[read] = original


def _pack_key(
    value: Any,
    depth: int,
    active: set[int],
    redact: Callable[[bytes], bytes] | None,
) -> Any:
    """A dict key or a set member: it must be hashable once read back."""
    packed = _pack(value, depth, active, redact)
    try:
        hash(_unpack(packed))
    except TypeError:
        raise _Refused(
            f"a {type(value).__name__} would read back as an unhashable "
            f"{type(_unpack(packed)).__name__}",
        ) from None
    return packed


def _pack_other(
    value: Any,
    depth: int,
    active: set[int],
    redact: Callable[[bytes], bytes] | None,
) -> Any:
    """Subclasses of the types above, enums, and objects msgspec knows (Structs, dataclasses,
    attrs classes): as msgspec encodes them, their contents packed in turn."""
    if isinstance(value, enum.Enum):
        return _pack(value.value, depth, active, redact)
    for scalar in _SCALAR_BASES:
        if isinstance(value, scalar):
            return _pack(scalar(value), depth, active, redact)
    for container in (tuple, list, dict, set, frozenset):  # NamedTuple, OrderedDict, ...
        if isinstance(value, container):
            return _pack_container(value, container, depth, active, redact)
    for native, tag in _TEXT_TAGS.items():  # datetime before date: dict order
        if isinstance(value, native):
            try:
                return {tag: _text(_as_native(value, native), native)}
            except (TypeError, ValueError) as exc:
                raise _Refused(
                    f"a {type(value).__qualname__} cannot be stored as a {tag[1:]} ({exc})"
                ) from None
    if depth >= MAX_VALUE_DEPTH:
        raise _Refused(f"nested deeper than {MAX_VALUE_DEPTH} levels")
    key = id(value)
    if key in active:
        raise _Refused("it contains itself (a reference cycle)")
    layout = layout_of(value)
    plain = _builtins(value) if layout is None else _fields(value, layout)
    active.add(key)
    try:
        return _pack(plain, depth, active, redact)
    finally:
        active.discard(key)


def _fields(value: Any, layout: Layout) -> Any:
    """An object as the dict (or list) of its fields, as msgspec lays it out, each field's
    value as it is (packed in turn, so that a set in a field stays a set).

    Raises:
        _Refused: it holds attributes that are none of its fields: rebuilt from its fields
            (without calling ``__init__`` or ``__post_init__`` again), it would lack them.
    """
    if layout.unkept:
        names = ", ".join(repr(n) for n in layout.unkept)
        one = len(layout.unkept) == 1
        raise _Refused(
            f"a {type(value).__qualname__} holds {names}, which {'is' if one else 'are'} "
            "none of its fields (set by __post_init__?): only its fields are kept, so it "
            f"would not come back the same; make {'it a field' if one else 'them fields'} "
            "(field(init=False)) or return a dict"
        )
    return layout.fields


def _builtins(value: Any) -> Any:
    """Another object msgspec knows, as msgspec makes it builtin values.

    Raises:
        _Refused: msgspec cannot encode it.
    """
    try:
        return msgspec.to_builtins(value, builtin_types=_NATIVE, str_keys=False)
    except RecursionError:
        raise _Refused("it contains itself, or is nested too deeply") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise _Refused(
            f"a value of type {type(value).__qualname__} cannot be stored ({exc})"
        ) from None


def _as_native(value: Any, native: type[Any]) -> Any:
    """A subclass's value as its base type (a pandas Timestamp as a datetime)."""
    if native is uuid.UUID:
        return uuid.UUID(int=value.int)
    if native is decimal.Decimal:
        return decimal.Decimal(str(value))
    if native is datetime.timedelta:
        return datetime.timedelta(value.days, value.seconds, value.microseconds)
    return native.fromisoformat(value.isoformat())


def _unpack(stored: Any) -> Any:
    cls = type(stored)
    if cls is list:
        return [_unpack(v) for v in stored]
    if cls is not dict:
        return stored
    if len(stored) == 1:
        ((tag, inner),) = stored.items()
        if tag[:1] == "$":
            decoded = _untag(tag, inner)
            if decoded is not _UNTAGGED:
                return decoded
    return {k: _unpack(v) for k, v in stored.items()}


_UNTAGGED = object()


def _untag(tag: str, inner: Any) -> Any:
    """The value a tagged object stands for (``_UNTAGGED`` for an unknown or malformed tag:
    a plain dict of an older version)."""
    try:
        if tag == "$tuple" and type(inner) is list:
            return tuple(_unpack(v) for v in inner)
        if tag == "$set" and type(inner) is list:
            return {_unpack(v) for v in inner}
        if tag == "$frozenset" and type(inner) is list:
            return frozenset(_unpack(v) for v in inner)
        if tag == "$dict" and type(inner) is list:
            return {_unpack(k): _unpack(v) for k, v in inner}
        if tag == "$bytes" and type(inner) is str:
            return base64.b64decode(inner, validate=True)
        if tag == "$bytearray" and type(inner) is str:
            return bytearray(base64.b64decode(inner, validate=True))
        if tag == "$float" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        cls = _TEXT_TYPES.get(tag)
        if cls is not None and type(inner) is str:
            try:
                return msgspec.convert(inner, cls)
            except msgspec.ValidationError:
                if cls in _ZONED:
                    return _with_odd_offset(inner, cls)
                raise
    except (ValueError, TypeError, msgspec.ValidationError):
        pass
    return _UNTAGGED


def _with_odd_offset(text: str, cls: type[Any]) -> Any:
    """A datetime or time whose UTC offset has seconds, from the ISO 8601 text it is kept as
    (see :func:`_text`).

    Raises:
        ValueError: the text is no such value.
    """
    found = _ODD_OFFSET.search(text)
    if found is None:
        raise ValueError(text)
    sign, hours, minutes, seconds, fraction = found.groups()
    offset = datetime.timedelta(
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int((fraction or "0").ljust(6, "0")),
    )
    if not offset % _MINUTE:
        raise ValueError(text)  # only what _text writes: any other text is not a tag of ours
    # Parsed here: Python's own reading drops the microseconds of an offset.
    naive = cls.fromisoformat(text[: found.start()])
    return naive.replace(tzinfo=datetime.timezone(-offset if sign == "-" else offset))
