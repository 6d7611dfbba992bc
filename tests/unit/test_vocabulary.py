"""The event vocabulary: every event type is covered, round-trips, and is well formed."""

from __future__ import annotations

import functools
import importlib
import inspect
import operator
import pkgutil
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from onward import events
from onward.events.base import Event
from onward.events.kinds import Priority
from tests.strategies import EVENT_STRATEGIES


def _vocabulary() -> list[type[Event]]:
    """Every event type defined in a module of the ``events`` package, found by walking."""
    for module in pkgutil.iter_modules(events.__path__):
        importlib.import_module(f"onward.events.{module.name}")
    found: list[type[Event]] = []
    pending: list[type[Event]] = [Event]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__.startswith("onward.events.") and sub not in found:
                found.append(sub)
    return sorted(found, key=lambda cls: (cls.__module__, cls.__name__))


VOCABULARY = _vocabulary()
ANY_EVENT: Any = functools.reduce(operator.or_, VOCABULARY)
DECODER = msgspec.json.Decoder(ANY_EVENT)


def _ids(cls: type[Event]) -> str:
    return cls.__name__


def test_vocabulary_is_found() -> None:
    families = {cls.family for cls in VOCABULARY}
    assert {"session", "task", "step", "error", "fix", "retry"} <= families
    assert {"breaker", "degradation", "decision", "flow"} <= families


@pytest.mark.parametrize("event_type", VOCABULARY, ids=_ids)
def test_every_event_type_has_a_strategy(event_type: type[Event]) -> None:
    assert event_type in EVENT_STRATEGIES, (
        f"{event_type.__module__}.{event_type.__name__} has no strategy in tests/strategies.py"
    )


def test_no_strategy_for_a_type_outside_the_vocabulary() -> None:
    assert set(EVENT_STRATEGIES) <= set(VOCABULARY)


@pytest.mark.parametrize("event_type", VOCABULARY, ids=_ids)
@given(data=st.data())
def test_round_trip(event_type: type[Event], data: st.DataObject) -> None:
    event = data.draw(EVENT_STRATEGIES[event_type])
    assert type(event) is event_type
    encoded = msgspec.json.encode(event)
    decoded = DECODER.decode(encoded)
    assert type(decoded) is event_type
    assert decoded == event
    assert msgspec.json.decode(encoded)["type"] == event_type.__name__


@pytest.mark.parametrize("event_type", VOCABULARY, ids=_ids)
def test_event_type_is_well_formed(event_type: type[Event]) -> None:
    config = event_type.__struct_config__
    assert config.frozen
    assert config.tag == event_type.__name__
    assert config.tag_field == "type"
    parameters = inspect.signature(event_type).parameters.values()
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)
    assert event_type.family == event_type.__module__.rsplit(".", 1)[1]


@pytest.mark.parametrize("event_type", VOCABULARY, ids=_ids)
def test_event_type_documents_its_fields(event_type: type[Event]) -> None:
    doc = inspect.getdoc(event_type)
    assert doc, f"{event_type.__name__} has no docstring"
    assert doc != inspect.getdoc(Event), f"{event_type.__name__} inherits its docstring"
    fields = event_type.__struct_fields__
    if fields:
        assert "Attributes:" in doc
        attributes = doc.split("Attributes:", 1)[1]
        for field in fields:
            assert f"\n    {field}: " in f"\n{attributes}", (
                f"{event_type.__name__}.{field} is not documented"
            )


def test_tags_are_unique() -> None:
    tags = [cls.__struct_config__.tag for cls in VOCABULARY]
    assert len(tags) == len(set(tags))


def test_priority_rank_orders_the_queue() -> None:
    assert sorted(Priority, key=lambda p: p.rank) == [
        Priority.CRITICAL,
        Priority.HIGH,
        Priority.NORMAL,
        Priority.LOW,
    ]
    assert Priority("high") is Priority.HIGH
    assert Priority.HIGH.value == "high"
    assert msgspec.json.encode(Priority.HIGH) == b'"high"'
