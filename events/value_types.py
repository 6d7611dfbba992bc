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
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import functools
import sys
import types
import typing
from collections.abc import Callable, Iterator
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

# Readers by annotation. Bounded: an annotation of a class made at run time is not kept for good.
_READERS: dict[Any, Reader | None] = {}
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
    try:
        return _READERS[hint]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation (Annotated with a dict): built each time
        return _build(hint)
    if len(_READERS) >= _MAX_READERS:
        _READERS.clear()
    reader = _READERS[hint] = _build(hint)
    return reader


def _kept(reader: Reader, value: Any) -> Any:
    """A value rebuilt, or as it is where it is not the kept form of the reader's type."""
    rebuilt = reader(value)
    return value if rebuilt is MISMATCH else rebuilt


_SEQUENCES = (
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Collection,
    collections.abc.Iterable,
)
_SETS = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_WRAPPERS = (typing.Annotated, typing.ClassVar, typing.Final, typing.Required, typing.NotRequired)


def _build(hint: Any) -> Reader | None:
    if hint is Any or hint is object or hint is None or hint is type(None):
        return None
    if isinstance(hint, typing.NewType):
        return reader_for(hint.__supertype__)
    origin = typing.get_origin(hint)
    if origin is None:
        return _for_class(hint) if isinstance(hint, type) else None
    args = typing.get_args(hint)
    if origin in _WRAPPERS:
        return reader_for(args[0]) if args else None
    if origin is typing.Union or origin is types.UnionType:
        return _union(args)
    if origin is tuple:
        return _tuple(args)
    item = reader_for(args[0]) if args else None
    if origin is list or origin in _SEQUENCES:
        return None if item is None else functools.partial(_read_list, item, origin is not list)
    if origin in _SETS:
        return None if item is None else functools.partial(_read_set, item)
    if origin in _MAPPINGS:
        value = reader_for(args[1]) if len(args) == 2 else None
        if item is None and value is None:
            return None
        return functools.partial(_read_dict, item, value)
    if isinstance(origin, type):  # a generic class of the user's: Box[int]
        return _for_class(origin)
    return None  # Literal, Callable, type[...]: taken as kept


def _read_list(item: Reader, tuples_too: bool, value: Any) -> Any:
    cls = type(value)
    if cls is list or (tuples_too and cls is tuple):
        items = [v if (r := item(v)) is MISMATCH else r for v in value]
        return items if cls is list else tuple(items)
    return MISMATCH


def _read_set(item: Reader, value: Any) -> Any:
    cls = type(value)
    if cls is set or cls is frozenset:
        return cls(_kept(item, v) for v in value)
    return MISMATCH


def _read_dict(key: Reader | None, item: Reader | None, value: Any) -> Any:
    if type(value) is not dict:
        return MISMATCH
    return {
        (k if key is None else _kept(key, k)): (v if item is None else _kept(item, v))
        for k, v in value.items()
    }


def _tuple(args: tuple[Any, ...]) -> Reader | None:
    if len(args) == 2 and args[1] is Ellipsis:
        item = reader_for(args[0])
        if item is None:
            return None
        return lambda value: (
            tuple(_kept(item, v) for v in value) if type(value) is tuple else MISMATCH
        )
    items = [reader_for(a) for a in args]
    if all(r is None for r in items):
        return None

    def read(value: Any) -> Any:
        if type(value) is not tuple or len(value) != len(items):
            return MISMATCH
        return tuple(v if r is None else _kept(r, v) for r, v in zip(items, value, strict=True))

    return read


def _union(args: tuple[Any, ...]) -> Reader | None:
    """The first member (in the annotation's order) whose kept form the value is."""
    members = [(reader_for(a), _accepts(a)) for a in args]
    if all(r is None for r, _ in members):
        return None

    def read(value: Any) -> Any:
        for reader, accepts in members:
            if reader is None:
                if accepts(value):
                    return value
            else:
                rebuilt = reader(value)
                if rebuilt is not MISMATCH:
                    return rebuilt
        return MISMATCH

    return read


def _accepts(hint: Any) -> Callable[[Any], bool]:
    """Whether a value is of a union's member that nothing is rebuilt for."""
    if hint is None or hint is type(None):
        return lambda value: value is None
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type):
        return lambda value: isinstance(value, origin)
    return lambda value: True


def _for_class(cls: type[Any]) -> Reader | None:
    if cls.__module__ == "builtins":
        return None
    if issubclass(cls, msgspec.Struct):
        return _StructReader(cls)
    if dataclasses.is_dataclass(cls):
        return _ObjectReader(cls, _dataclass_fields)
    if hasattr(cls, "__attrs_attrs__"):
        return _ObjectReader(cls, _attrs_fields)
    if typing.is_typeddict(cls):
        return _TypedDictReader(cls)
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return _NamedTupleReader(cls)
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


def _dataclass_fields(cls: type[Any]) -> list[_Field]:
    types_ = _field_types(cls)
    missing = dataclasses.MISSING
    return [
        (
            f.name,
            reader_for(types_.get(f.name, Any)),
            _ABSENT if f.default is missing else f.default,
            _ABSENT if f.default_factory is missing else (f.default_factory, False),
            f.init,
        )
        for f in dataclasses.fields(cls)
    ]


def _attrs_fields(cls: type[Any]) -> list[_Field]:
    types_ = _field_types(cls)
    fields: list[_Field] = []
    for a in cls.__attrs_attrs__:
        default, factory = a.default, _ABSENT
        if type(default).__name__ == "Factory":
            default, factory = _ABSENT, (default.factory, default.takes_self)
        elif type(default).__name__ == "_Nothing":
            default = _ABSENT
        fields.append((a.name, reader_for(types_.get(a.name, Any)), default, factory, a.init))
    return fields


class _ObjectReader:
    """Rebuilds a dataclass or an attrs class from the dict of its fields, without calling
    ``__init__`` or ``__post_init__`` (as copy and pickle do)."""

    def __init__(self, cls: Any, fields: Callable[[type[Any]], list[_Field]]) -> None:
        self.cls = cls
        self.list_fields = fields
        self.fields: list[_Field] | None = None  # resolved on first use: a field may name cls

    def __call__(self, value: Any) -> Any:
        if type(value) is not dict:
            return MISMATCH
        fields = self.fields
        if fields is None:
            fields = self.fields = self.list_fields(self.cls)
        try:
            rebuilt = self.cls.__new__(self.cls)
        except Exception:  # a __new__ that needs arguments: it cannot be rebuilt so
            return MISMATCH
        for name, reader, default, factory, init in fields:
            field = value.get(name, _ABSENT)
            if field is not _ABSENT:
                if reader is not None:
                    field = _kept(reader, field)
            elif default is not _ABSENT:
                field = default
            elif factory is not _ABSENT:
                make, takes_self = factory
                field = make(rebuilt) if takes_self else make()
            elif init:
                return MISMATCH  # a field every instance has: not this class's dict
            else:
                continue
            object.__setattr__(rebuilt, name, field)
        return rebuilt


class _StructReader:
    """Rebuilds a msgspec Struct from the dict (or list) of its fields, as msgspec's decoders
    do (its ``__post_init__`` runs)."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        config = cls.__struct_config__
        self.array_like: bool = config.array_like
        self.tag_field: str | None = config.tag_field
        self.tag: Any = config.tag
        self.forbid_unknown: bool = config.forbid_unknown_fields
        self.fields: list[tuple[str, str, Reader | None, bool]] | None = None

    def _resolve(self) -> list[tuple[str, str, Reader | None, bool]]:
        cls = self.cls
        types_ = _field_types(cls)
        names = cls.__struct_fields__
        first = len(names) - len(cls.__struct_defaults__)
        return [
            (name, key, reader_for(types_.get(name, Any)), i < first)
            for i, (name, key) in enumerate(zip(names, cls.__struct_encode_fields__, strict=True))
        ]

    def __call__(self, value: Any) -> Any:
        fields = self.fields
        if fields is None:
            fields = self.fields = self._resolve()
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
            stored = {key: v for (_, key, _, _), v in zip(fields, items, strict=False)}
        else:
            if type(value) is not dict:
                return MISMATCH
            if self.tag is not None and value.get(self.tag_field, self.tag) != self.tag:
                return MISMATCH
            stored = value
        arguments: dict[str, Any] = {}
        for name, key, reader, required in fields:
            field = stored.get(key, _ABSENT)
            if field is _ABSENT:
                if required:
                    return MISMATCH
                continue  # left to its default
            arguments[name] = field if reader is None else _kept(reader, field)
        if self.forbid_unknown and not self.array_like:
            known = {key for _, key, _, _ in fields} | {self.tag_field}
            if any(k not in known for k in stored):
                return MISMATCH
        try:
            return self.cls(**arguments)
        except Exception:  # its __post_init__ refuses it now
            return MISMATCH


class _NamedTupleReader:
    """Rebuilds a NamedTuple from its tuple (its fields' values by their annotations)."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.readers: list[Reader | None] | None = None

    def __call__(self, value: Any) -> Any:
        cls = self.cls
        if type(value) is not tuple or len(value) > len(cls._fields):
            return MISMATCH
        readers = self.readers
        if readers is None:
            types_ = _field_types(cls)
            readers = self.readers = [reader_for(types_.get(n, Any)) for n in cls._fields]
        items = [v if r is None else _kept(r, v) for r, v in zip(readers, value, strict=False)]
        defaults = cls._field_defaults
        for name in cls._fields[len(items) :]:
            if name not in defaults:
                return MISMATCH
            items.append(defaults[name])
        return cls._make(items)


class _TypedDictReader:
    """A TypedDict's values rebuilt by its keys' annotations."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.readers: dict[str, Reader] | None = None

    def __call__(self, value: Any) -> Any:
        if type(value) is not dict:
            return MISMATCH
        readers = self.readers
        if readers is None:
            hints = _field_types(self.cls).items()
            found = {key: reader_for(hint) for key, hint in hints}
            readers = self.readers = {k: r for k, r in found.items() if r is not None}
        if not readers:
            return value
        return {k: (_kept(readers[k], v) if k in readers else v) for k, v in value.items()}
