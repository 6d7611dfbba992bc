"""A checkpoint's schema number pins the shape it is saved in and the lifecycles it was folded
by: a change to either without a new ``Projections.SCHEMA`` would let one onward take another's
checkpoint as its own (a field read as another, a transition one allows and the other calls
damage), where the rule is to rebuild the projections from the log."""

from __future__ import annotations

import enum
import hashlib

import msgspec
import msgspec.inspect as mi

from onward.projections import Projections
from onward.projections.host import _Saved
from onward.projections.lifecycle import BREAKER, FLOW, SESSION, TASK

#: The digest of the checkpoint's shape and the lifecycles, by schema number. A new schema
#: takes the digest this test prints when it fails.
PINNED = {24: "b4687a27f8c73739"}


def _render(kind: mi.Type, structs: dict[str, str]) -> str:
    """One type as text; every struct met is written once into ``structs`` by its name."""
    if isinstance(kind, mi.StructType):
        name = kind.cls.__qualname__
        if name not in structs:
            structs[name] = ""  # a struct that holds itself is written once
            fields = ", ".join(
                f"{f.encode_name}:{_render(f.type, structs)}{'' if f.required else '?'}"
                for f in kind.fields
            )
            structs[name] = f"{'array' if kind.array_like else 'map'}({fields})"
        return name
    if isinstance(kind, mi.EnumType):
        members = _enum_values(kind.cls)
        return f"enum({members})"
    if isinstance(kind, mi.LiteralType):
        return f"literal({sorted(map(repr, kind.values))})"
    if isinstance(kind, mi.UnionType):
        return "|".join(sorted(_render(t, structs) for t in kind.types))
    if isinstance(kind, mi.DictType):
        return f"dict[{_render(kind.key_type, structs)},{_render(kind.value_type, structs)}]"
    if isinstance(kind, mi.TupleType):
        return f"tuple[{','.join(_render(t, structs) for t in kind.item_types)}]"
    if isinstance(kind, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return f"{type(kind).__name__}[{_render(kind.item_type, structs)}]"
    return type(kind).__name__


def _enum_values(cls: type[enum.Enum]) -> str:
    """An enumeration's values, as a checkpoint stores them."""
    return ",".join(sorted(repr(member.value) for member in cls))


def shape_digest() -> str:
    """The digest of the checkpoint's shape (every struct it holds, field by field) and of
    every lifecycle's table."""
    structs: dict[str, str] = {}
    _render(mi.type_info(_Saved), structs)
    lifecycles = {
        lifecycle.name: sorted(
            f"{state}+{trigger}>{dest}" for (state, trigger), dest in lifecycle.table.items()
        )
        for lifecycle in (TASK, SESSION, BREAKER, FLOW)
    }
    text = msgspec.json.encode({"structs": dict(sorted(structs.items())), "lifecycles": lifecycles})
    return hashlib.sha256(text).hexdigest()[:16]


def test_the_checkpoint_shape_and_the_lifecycles_are_the_ones_of_this_schema() -> None:
    digest = shape_digest()
    assert PINNED.get(Projections.SCHEMA) == digest, (
        "the checkpoint's shape or a lifecycle changed: bump Projections.SCHEMA (older "
        f"checkpoints are then rebuilt) and pin {{{Projections.SCHEMA + 1}: {digest!r}}} here"
        if Projections.SCHEMA in PINNED
        else f"pin the digest of schema {Projections.SCHEMA}: {{{Projections.SCHEMA}: {digest!r}}}"
    )


def test_the_digest_sees_a_field_and_a_transition_change() -> None:
    before = shape_digest()
    table = dict(TASK.table)
    try:
        TASK.table[("succeeded", "TaskSubmitted")] = "pending"
        assert shape_digest() != before
    finally:
        TASK.table.clear()
        TASK.table.update(table)
    assert shape_digest() == before
