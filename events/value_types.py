"""The types a value read back from the log takes from its reader's annotation.

The log keeps most values exactly, types and all (:mod:`onward.events.values`). Three kinds
are kept as plain values, and are rebuilt where the reader's annotation (a step's return
annotation, a task's parameter's) names their type:

- an object (a msgspec ``Struct``, a dataclass, an attrs class) is kept as the dict of its
  fields (the list, for an array-like Struct), a ``NamedTuple`` as its tuple: it is rebuilt
  from them, each field's value in turn by the field's annotation (a ``TypedDict``'s values
  too). A dataclass or an attrs class is rebuilt as :mod:`copy` and :mod:`pickle` rebuild it:
  its fields set without calling ``__init__`` or ``__post_init__``, which ran when the value
  was made (running them again could change it: a counter of attempts would count twice). A
  Struct is rebuilt as msgspec's decoders rebuild it: its ``__post_init__``, which msgspec
  runs on every decode, runs again.
- an ``Enum`` is kept as its value;
- a subclass of ``int``, ``str``, ``float``, ``bytes`` or ``bytearray`` as its base value:
  rebuilt without calling its ``__new__`` or ``__init__``.

Containers the annotation names (``list[Point]``, ``dict[str, Point]``, ``tuple[Point, int]``,
``Point | None``, ...) are walked to reach those. Nothing else is converted: a value that is
not the kept form of what the annotation names comes back as it is, whatever the annotation
says (a ``str`` returned under ``-> bytes`` is that ``str``, never decoded from base64; an
``int`` under ``-> float`` keeps all its digits; a ``list`` under ``-> tuple`` stays a list).

An object's kept form is the dict of its fields and nothing else: a dict with a key that is
none of the class's fields (a ``Dog``'s ``breed`` under ``-> Cat``), or without a field every
instance has, is not one, and comes back as that dict. The log does not keep an object's
class, only its fields, so a union (``Cat | Dog``) takes the first member whose kept form the
value is *exactly* (every field an instance of it keeps, its tag, each field's value of the
field's type, all the way down); only where none is does it take the first member that reads
the value with a default filled in or a field's value left as it was kept.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

__all__ = ["MISMATCH", "Reader", "annotations_of", "reader_for"]

#: What a reader returns for a value that is not the kept form of its type.
MISMATCH: Any = type("Mismatch", (), {"__repr__": lambda self: "MISMATCH"})()

#: Rebuilds a value read back as a type (or returns :data:`MISMATCH`).
Reader = Callable[[Any], Any]

# The bases a subclass of a scalar is kept as, in the order values.py tries them.
_SCALAR_BASES: tuple[type[Any], ...] = (int, str, float, bytes, bytearray)
_ABSENT: Any = object()
_UNSET = msgspec.UNSET

# Readers by annotation, and whether they read only the exact kept form (see _reader).
# Bounded: an annotation of a class made at run time is not kept for good.
_READERS: dict[tuple[Any, bool], Reader | None] = {}
_MAX_READERS = 4096


def annotations_of(target: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A function's or a class's annotations, each resolved on its own: a name that does not
    resolve (one imported only under ``TYPE_CHECKING``) leaves the others usable.

    Returns:
        The resolved annotations by name (``"return"`` for a function's return), and those
        that did not resolve, by name: the annotation and why (``"'Conn', does not resolve
        (NameError: ...)"``).
    """
    try:
        return typing.get_type_hints(target), {}
    except Exception:  # one of them does not resolve: take them one by one
        pass
    resolved: dict[str, Any] = {}
    unresolved: dict[str, str] = {}
    for name, annotation, globalns, localns in _raw_annotations(target):
        try:
            resolved[name] = typing.get_type_hints(_One(name, annotation), globalns, localns)[name]
        except Exception as exc:
            resolved.pop(name, None)
            unresolved[name] = f"{annotation!r}, does not resolve ({type(exc).__name__}: {exc})"
    return resolved, unresolved


class _One:
    """One annotation, for :func:`typing.get_type_hints` to resolve on its own."""

    def __init__(self, name: str, annotation: Any) -> None:
        self.__annotations__ = {name: annotation}


def _raw_annotations(target: Any) -> Iterator[tuple[str, Any, dict[str, Any], Any]]:
    """Each annotation as written, with the namespaces it is resolved in (as
    :func:`typing.get_type_hints` finds them)."""
    if isinstance(target, type):
        for base in reversed(target.__mro__):
            module = sys.modules.get(base.__module__)
            globalns = dict(vars(module)) if module is not None else {}
            for name, annotation in vars(base).get("__annotations__", {}).items():
                yield name, annotation, globalns, dict(vars(base))
        return
    unwrapped = target
    while hasattr(unwrapped, "__wrapped__"):
        unwrapped = unwrapped.__wrapped__
    globalns = getattr(unwrapped, "__globals__", {})
    annotations = getattr(target, "__annotations__", None)
    for name, annotation in (annotations if isinstance(annotations, dict) else {}).items():
        yield name, annotation, globalns, None


def reader_for(hint: Any) -> Reader | None:
    """What rebuilds a value read back as ``hint`` (see the module); None when nothing of it
    is ever rebuilt (``int``, ``dict[str, list[str]]``, ``Any``): the value is taken as kept.
    """
    return _reader(hint, exact=False)


def _reader(hint: Any, exact: bool) -> Reader | None:
    """The reader of ``hint``, cached. An exact one reads a value only where it is exactly the
    kept form of ``hint``, all the way down (each object stored whole, each other value of its
    annotated type), and returns :data:`MISMATCH` for any other: what a union tries first. An
    exact reader is None only for ``Any``, which every value is."""
    key = (hint, exact)
    try:
        return _READERS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation (Annotated with a dict): built each time
        return _build(hint, exact)
    if len(_READERS) >= _MAX_READERS:
        _READERS.clear()
    reader = _READERS[key] = _build(hint, exact)
    return reader


def _kept(reader: Reader, value: Any) -> Any:
    """A value rebuilt, or as it is where it is not the kept form of the reader's type."""
    rebuilt = reader(value)
    return value if rebuilt is MISMATCH else rebuilt


def _read_field(reader: Reader | None, value: Any, exact: bool) -> Any:
    """A field's value read by ``reader``, as it is where it is not the kept form of the
    reader's type; MISMATCH where ``exact`` and it is not."""
    if reader is None:
        return value
    rebuilt = reader(value)
    if rebuilt is MISMATCH:
        return MISMATCH if exact else value
    return rebuilt


def _read_each(reader: Reader | None, values: Iterable[Any], exact: bool) -> list[Any] | None:
    """Values read by ``reader``, each as it is where it is not the kept form of the reader's
    type; None where ``exact`` and one is not."""
    if reader is None:
        return list(values)
    read: list[Any] = []
    for value in values:
        rebuilt = reader(value)
        if rebuilt is MISMATCH:
            if exact:
                return None
            rebuilt = value
        read.append(rebuilt)
    return read


_SEQUENCES = (
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Collection,
    collections.abc.Iterable,
)
_SETS = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_WRAPPERS = (typing.Annotated, typing.ClassVar, typing.Final, typing.Required, typing.NotRequired)


def _build(hint: Any, exact: bool) -> Reader | None:
    reader = _rebuilding(hint, exact)
    if reader is None and exact:  # nothing to rebuild: the value as it is, where it is one
        accepts = _accepts(hint)
        return None if accepts is None else functools.partial(_read_accepted, accepts)
    return reader


def _read_accepted(accepts: Callable[[Any], bool], value: Any) -> Any:
    return value if accepts(value) else MISMATCH


def _rebuilding(hint: Any, exact: bool) -> Reader | None:
    """What rebuilds something in a value read as ``hint``; None when nothing of it is."""
    if hint is Any or hint is object or hint is None or hint is type(None):
        return None
    if isinstance(hint, typing.NewType):
        return _reader(hint.__supertype__, exact)
    origin = typing.get_origin(hint)
    if origin is None:
        return _for_class(hint, exact) if isinstance(hint, type) else None
    args = typing.get_args(hint)
    if origin in _WRAPPERS:
        return _reader(args[0], exact) if args else None
    if origin is typing.Union or origin is types.UnionType:
        return _union(args, exact)
    if origin is tuple:
        return _tuple(args, exact)
    item = _reader(args[0], exact) if args else None
    if origin is list or origin in _SEQUENCES:
        if item is None:
            return None
        return functools.partial(_read_list, item, origin is not list, exact)
    if origin in _SETS:
        return None if item is None else functools.partial(_read_set, item, exact)
    if origin in _MAPPINGS:
        value = _reader(args[1], exact) if len(args) == 2 else None
        if item is None and value is None:
            return None
        return functools.partial(_read_dict, item, value, exact)
    if isinstance(origin, type):  # a generic class of the user's: Box[int]
        return _for_class(origin, exact)
    return None  # Literal, Callable, type[...]: taken as kept


def _read_list(item: Reader, tuples_too: bool, exact: bool, value: Any) -> Any:
    cls = type(value)
    if cls is list or (tuples_too and cls is tuple):
        items = _read_each(item, value, exact)
        if items is None:
            return MISMATCH
        return items if cls is list else tuple(items)
    return MISMATCH


def _read_set(item: Reader, exact: bool, value: Any) -> Any:
    cls = type(value)
    if cls is set or cls is frozenset:
        items = _read_each(item, value, exact)
        return MISMATCH if items is None else cls(items)
    return MISMATCH


def _read_dict(key: Reader | None, item: Reader | None, exact: bool, value: Any) -> Any:
    if type(value) is not dict:
        return MISMATCH
    keys = _read_each(key, value.keys(), exact)
    items = _read_each(item, value.values(), exact)
    if keys is None or items is None:
        return MISMATCH
    return dict(zip(keys, items, strict=True))


def _tuple(args: tuple[Any, ...], exact: bool) -> Reader | None:
    if len(args) == 2 and args[1] is Ellipsis:
        item = _reader(args[0], exact)
        if item is None:
            return None

        def read_all(value: Any) -> Any:
            items = _read_each(item, value, exact) if type(value) is tuple else None
            return MISMATCH if items is None else tuple(items)

        return read_all
    items = [_reader(a, exact) for a in args]
    if all(r is None for r in items):
        return None

    def read(value: Any) -> Any:
        if type(value) is not tuple or len(value) != len(items):
            return MISMATCH
        kept: list[Any] = []
        for reader, v in zip(items, value, strict=True):
            rebuilt = v if reader is None else reader(v)
            if rebuilt is MISMATCH:
                if exact:
                    return MISMATCH
                rebuilt = v
            kept.append(rebuilt)
        return tuple(kept)

    return read


def _union(args: tuple[Any, ...], exact: bool) -> Reader | None:
    """The first member (in the annotation's order) whose kept form the value is exactly;
    else, unless ``exact``, the first that reads it (a default filled in, a field's value as
    it was kept)."""
    members = [(reader_for(a), _accepts(a)) for a in args]
    exacts = [_reader(a, exact=True) for a in args]
    # Nothing to rebuild; an exact reader still tells the members apart, unless one is Any.
    if all(r is None for r, _ in members) and (not exact or None in exacts):
        return None

    def read(value: Any) -> Any:
        for exact_reader in exacts:
            if exact_reader is None:  # Any
                return value
            rebuilt = exact_reader(value)
            if rebuilt is not MISMATCH:
                return rebuilt
        if exact:
            return MISMATCH
        for reader, accepts in members:
            if reader is None:
                if accepts is None or accepts(value):
                    return value
            else:
                rebuilt = reader(value)
                if rebuilt is not MISMATCH:
                    return rebuilt
        return MISMATCH

    return read


def _accepts(hint: Any) -> Callable[[Any], bool] | None:
    """Whether a value is of a type that nothing is rebuilt for (None: every value is)."""
    if hint is None or hint is type(None):
        return lambda value: value is None
    origin = typing.get_origin(hint) or hint
    if origin is typing.Any:  # a class since Python 3.11, of which nothing is an instance
        return None
    if origin is typing.Literal:
        allowed = typing.get_args(hint)
        return lambda value: any(type(value) is type(a) and value == a for a in allowed)
    if isinstance(origin, type) and origin is not object:
        try:
            isinstance(None, origin)
        except TypeError:  # a Protocol that is not runtime-checkable: nothing is read as one
            return lambda value: False
        return lambda value: isinstance(value, origin)
    return None


def _for_class(cls: type[Any], exact: bool) -> Reader | None:
    if cls.__module__ == "builtins":
        return None
    if issubclass(cls, msgspec.Struct):
        return _StructReader(cls, exact)
    if dataclasses.is_dataclass(cls):
        return _ObjectReader(cls, _dataclass_fields, exact)
    if hasattr(cls, "__attrs_attrs__"):
        return _ObjectReader(cls, _attrs_fields, exact)
    if typing.is_typeddict(cls):
        return _TypedDictReader(cls, exact)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _NamedTupleReader(cls, exact)
    if issubclass(cls, enum.Enum):
        return functools.partial(_read_enum, cls)
    for base in _SCALAR_BASES:
        if issubclass(cls, base):
            return functools.partial(_read_subclass, cls, base)
    return None


def _read_enum(cls: type[enum.Enum], value: Any) -> Any:
    try:
        member = cls(value)
    except Exception:  # not one of its values (or its _missing_ raised)
        return MISMATCH
    kept = member.value
    return member if type(kept) is type(value) and kept == value else MISMATCH


def _read_subclass(cls: type[Any], base: type[Any], value: Any) -> Any:
    if type(value) is not base:
        return MISMATCH
    if base is bytearray:
        rebuilt = bytearray.__new__(cls)
        bytearray.__init__(rebuilt, value)
        return rebuilt
    return base.__new__(cls, value)


def _field_types(cls: type[Any]) -> dict[str, Any]:
    """A class's field annotations, resolved (one that does not resolve reads as ``Any``)."""
    return annotations_of(cls)[0]


# A field of an object: its name, its reader, and how it is filled when it was not kept
# (a default, a factory, else required when it is set by __init__).
_Field = tuple[str, "Reader | None", Any, Any, bool]


def _dataclass_fields(cls: type[Any], exact: bool) -> list[_Field]:
    types_ = _field_types(cls)
    missing = dataclasses.MISSING
    return [
        (
            f.name,
            _reader(types_.get(f.name, Any), exact),
            _ABSENT if f.default is missing else f.default,
            _ABSENT if f.default_factory is missing else (f.default_factory, False),
            f.init,
        )
        for f in dataclasses.fields(cls)
    ]


def _attrs_fields(cls: type[Any], exact: bool) -> list[_Field]:
    types_ = _field_types(cls)
    fields: list[_Field] = []
    for a in cls.__attrs_attrs__:
        default, factory = a.default, _ABSENT
        if type(default).__name__ == "Factory":
            default, factory = _ABSENT, (default.factory, default.takes_self)
        elif type(default).__name__ == "_Nothing":
            default = _ABSENT
        reader = _reader(types_.get(a.name, Any), exact)
        fields.append((a.name, reader, default, factory, a.init))
    return fields


class _ObjectReader:
    """Rebuilds a dataclass or an attrs class from the dict of its fields, without calling
    ``__init__`` or ``__post_init__`` (as copy and pickle do).

    A dict with a key that is none of its fields is not one. An instance keeps every field it
    has, so an exact reader takes no dict without one (but one never set, or ``UNSET``, which
    is left out); the other fills a field that has a default, and keeps a field's value that
    is not the kept form of its annotation as it was kept."""

    def __init__(
        self, cls: Any, fields: Callable[[type[Any], bool], list[_Field]], exact: bool
    ) -> None:
        self.cls = cls
        self.list_fields = fields
        self.exact = exact
        self.fields: list[_Field] | None = None  # resolved on first use: a field may name cls
        self.names: frozenset[str] = frozenset()

    def __call__(self, value: Any) -> Any:
        if type(value) is not dict:
            return MISMATCH
        fields = self.fields
        if fields is None:
            fields = self.list_fields(self.cls, self.exact)
            self.names = frozenset(name for name, *_ in fields)
            self.fields = fields
        if not value.keys() <= self.names:  # a key that is none of its fields
            return MISMATCH
        try:
            rebuilt = self.cls.__new__(self.cls)
        except Exception:  # a __new__ that needs arguments: it cannot be rebuilt so
            return MISMATCH
        exact = self.exact
        for name, reader, default, factory, init in fields:
            field = value.get(name, _ABSENT)
            if field is not _ABSENT:
                field = _read_field(reader, field, exact)
                if field is MISMATCH:
                    return MISMATCH
            elif default is _UNSET:  # left out, as msgspec leaves UNSET out
                field = default
            elif default is _ABSENT and factory is _ABSENT and not init:
                continue  # never set
            elif exact:
                return MISMATCH  # a field every instance keeps
            elif default is not _ABSENT:
                field = default
            elif factory is not _ABSENT:
                make, takes_self = factory
                field = make(rebuilt) if takes_self else make()
            else:
                return MISMATCH  # a field every instance has: not this class's dict
            object.__setattr__(rebuilt, name, field)
        return rebuilt


# A field of a Struct: its name, the key it is kept under, its reader, whether every
# instance keeps it, and whether it may be left out even so (omit_defaults, UNSET).
_StructField = tuple[str, str, "Reader | None", bool, bool]


class _StructReader:
    """Rebuilds a msgspec Struct from the dict (or list) of its fields, as msgspec's decoders
    do (its ``__post_init__`` runs).

    A dict with a key that is none of its fields (nor its tag) is not one. An exact reader
    takes one only with every field msgspec keeps (all of them, but a default under
    ``omit_defaults``, and ``UNSET``), its tag, and each field's value of the field's type."""

    def __init__(self, cls: Any, exact: bool) -> None:
        self.cls = cls
        self.exact = exact
        config = cls.__struct_config__
        self.array_like: bool = config.array_like
        self.tag_field: str | None = config.tag_field
        self.tag: Any = config.tag
        self.fields: list[_StructField] | None = None
        self.keys: frozenset[str | None] = frozenset()

    def _resolve(self) -> list[_StructField]:
        cls = self.cls
        types_ = _field_types(cls)
        names = cls.__struct_fields__
        defaults = cls.__struct_defaults__
        first = len(names) - len(defaults)
        omit = cls.__struct_config__.omit_defaults
        fields: list[_StructField] = []
        for i, (name, key) in enumerate(zip(names, cls.__struct_encode_fields__, strict=True)):
            required = i < first
            omitted = not required and (omit or defaults[i - first] is _UNSET)
            fields.append(
                (name, key, _reader(types_.get(name, Any), self.exact), required, omitted)
            )
        self.keys = frozenset([key for _, key, _, _, _ in fields] + [self.tag_field])
        return fields

    def __call__(self, value: Any) -> Any:
        fields = self.fields
        if fields is None:
            fields = self.fields = self._resolve()
        exact = self.exact
        if self.array_like:
            if type(value) is not list:
                return MISMATCH
            items = value
            if self.tag is not None:
                if not items or items[0] != self.tag:
                    return MISMATCH
                items = items[1:]
            if len(items) > len(fields):
                return MISMATCH
            stored = {key: v for (_, key, _, _, _), v in zip(fields, items, strict=False)}
        else:
            if type(value) is not dict or not value.keys() <= self.keys:
                return MISMATCH
            if self.tag is not None:
                tag = value.get(self.tag_field, _ABSENT)
                if tag != self.tag and (exact or tag is not _ABSENT):
                    return MISMATCH
            stored = value
        arguments: dict[str, Any] = {}
        for name, key, reader, required, omitted in fields:
            field = stored.get(key, _ABSENT)
            if field is _ABSENT:
                if required or (exact and not omitted):
                    return MISMATCH
                continue  # left to its default
            field = _read_field(reader, field, exact)
            if field is MISMATCH:
                return MISMATCH
            arguments[name] = field
        try:
            return self.cls(**arguments)
        except Exception:  # its __post_init__ refuses it now
            return MISMATCH


class _NamedTupleReader:
    """Rebuilds a NamedTuple from its tuple (its fields' values by their annotations); an
    exact reader only from the whole tuple, each value of its field's type."""

    def __init__(self, cls: Any, exact: bool) -> None:
        self.cls = cls
        self.exact = exact
        self.readers: list[Reader | None] | None = None

    def __call__(self, value: Any) -> Any:
        cls = self.cls
        size = len(cls._fields)
        if type(value) is not tuple or len(value) > size or (self.exact and len(value) < size):
            return MISMATCH
        readers = self.readers
        if readers is None:
            types_ = _field_types(cls)
            readers = self.readers = [_reader(types_.get(n, Any), self.exact) for n in cls._fields]
        items: list[Any] = []
        for reader, v in zip(readers, value, strict=False):
            rebuilt = v if reader is None else reader(v)
            if rebuilt is MISMATCH:
                if self.exact:
                    return MISMATCH
                rebuilt = v
            items.append(rebuilt)
        defaults = cls._field_defaults
        for name in cls._fields[len(items) :]:
            if name not in defaults:
                return MISMATCH
            items.append(defaults[name])
        return cls._make(items)


class _TypedDictReader:
    """A TypedDict's values rebuilt by its keys' annotations; an exact reader takes only a
    dict of its keys (its required ones all there), each value of its key's type."""

    def __init__(self, cls: Any, exact: bool) -> None:
        self.cls = cls
        self.exact = exact
        self.readers: dict[str, Reader] | None = None

    def __call__(self, value: Any) -> Any:
        if type(value) is not dict:
            return MISMATCH
        cls = self.cls
        readers = self.readers
        if readers is None:
            hints = _field_types(cls).items()
            found = {key: _reader(hint, self.exact) for key, hint in hints}
            readers = self.readers = {k: r for k, r in found.items() if r is not None}
        if self.exact:
            if not cls.__required_keys__ <= value.keys() or not value.keys() <= (
                cls.__required_keys__ | cls.__optional_keys__
            ):
                return MISMATCH
            read = {k: (readers[k](v) if k in readers else v) for k, v in value.items()}
            return MISMATCH if any(v is MISMATCH for v in read.values()) else read
        if not readers:
            return value
        return {k: (_kept(readers[k], v) if k in readers else v) for k, v in value.items()}
