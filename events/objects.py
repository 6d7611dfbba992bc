"""How an object is kept in the log: the dict of its fields, as msgspec lays it out.

A msgspec ``Struct``, a dataclass or an attrs class instance is kept as the dict of its fields
by the keys msgspec encodes them under (a Struct's renamed keys, its tag first, its defaults
left out under ``omit_defaults``; an array-like Struct as the list of its values). The fields'
values are left as the object holds them, for :mod:`onward.events.values` to store each as it
stores any value (a set in a field stays a set: ``msgspec.to_builtins`` would make it a list).
:mod:`onward.events.value_types` rebuilds the object from them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import msgspec

__all__ = ["Layout", "layout_of"]

_ABSENT: Any = object()
_UNSET = msgspec.UNSET


class Layout(msgspec.Struct, frozen=True, gc=False):
    """How an object is kept: the dict (or list) of its fields, as msgspec lays it out.

    Attributes:
        fields: the dict of its fields by the key each is kept under (a tagged Struct's tag
            first), or the list of their values for an array-like Struct; the values as the
            object holds them.
        unkept: attributes the object holds that are none of its fields (they would not
            come back).
    """

    fields: dict[str, Any] | list[Any]
    unkept: list[str]


def layout_of(value: Any) -> Layout | None:
    """How an object is kept: a Struct, a dataclass or an attrs class instance (None for
    anything else)."""
    cls = type(value)
    if isinstance(value, msgspec.Struct):
        return Layout(_struct_fields(value, cls), [])
    names: tuple[str, ...]
    if dataclasses.is_dataclass(cls):
        names = _dataclass_names(cls)
    elif hasattr(cls, "__attrs_attrs__"):
        names = tuple(a.name for a in cls.__attrs_attrs__)
    else:
        return None
    state = getattr(value, "__dict__", None)
    fields: dict[str, Any] = {}
    for name in names:  # one never set, or UNSET, is left out (as msgspec does)
        field = state.get(name, _ABSENT) if state is not None else getattr(value, name, _ABSENT)
        if field is not _ABSENT and field is not _UNSET:
            fields[name] = field
    unkept: list[str] = []
    if state is not None and len(state) > len(fields):
        unkept = [k for k in state if k not in fields and not _cached(cls, k)]
    return Layout(fields, unkept)


@functools.lru_cache(maxsize=1024)
def _dataclass_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _cached(cls: type[Any], name: str) -> bool:
    """Whether an attribute is a ``functools.cached_property``'s value (computed again)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return isinstance(vars(klass)[name], functools.cached_property)
    return False


def _struct_fields(value: Any, cls: Any) -> dict[str, Any] | list[Any]:
    array_like, head, fields = _struct_shape(cls)
    if array_like:
        return [tag for _, tag in head] + [getattr(value, name) for name, _, _ in fields]
    kept = dict(head)
    for name, key, default in fields:
        field = getattr(value, name)
        if field is _UNSET or (default is not _ABSENT and _is_default(field, default)):
            continue
        kept[key] = field
    return kept


@functools.lru_cache(maxsize=1024)
def _struct_shape(cls: Any) -> tuple[bool, list[tuple[str, Any]], list[tuple[str, str, Any]]]:
    """A Struct class's layout: array-like, its tag, and its fields (name, key, and the
    default it is left out at, under ``omit_defaults``)."""
    config = cls.__struct_config__
    head = [] if config.tag is None else [(config.tag_field, config.tag)]
    names = cls.__struct_fields__
    defaults = cls.__struct_defaults__
    first = len(names) - len(defaults)
    fields = [
        (
            name,
            key,
            defaults[i - first] if config.omit_defaults and i >= first else _ABSENT,
        )
        for i, (name, key) in enumerate(zip(names, cls.__struct_encode_fields__, strict=True))
    ]
    return config.array_like, head, fields


def _is_default(value: Any, default: Any) -> bool:
    """Whether msgspec leaves a field out under ``omit_defaults``: it is its default, or an
    empty value of its default factory's builtin type."""
    if value is default:
        return True
    factory = getattr(default, "factory", None)
    return factory in (list, dict, set, bytearray) and type(value) is factory and not len(value)
