"""A value is the same on a task's first run and on its replay: what a step returns to its
caller, and what the task is given as arguments, in type and in value.

Each example runs a real engine on a fresh SQLite file. The first run stops right after the
step (a ``BaseException`` that no ``except Exception`` catches, as a crash would end it),
leaving the task running; a new engine on the same file takes the task over, replays the
step from the log and finishes. Both runs note what they saw.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward import Engine
from onward.events import Redactor, encode_value
from tests.conftest import FakeClock
from tests.strategies import same_value, stored_values


class Crash(BaseException):
    """Ends the first run after its step, as a crash would."""


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(msgspec.Struct, frozen=True):
    x: float
    when: datetime.datetime
    tags: frozenset[str]
    raw: bytes
    colour: Colour
    pair: tuple[int, str]


@dataclasses.dataclass(frozen=True)
class Box:
    points: list[Point]
    by_id: dict[int, Point]
    extra: Any  # anything, kept as it is (a set stays a set)


SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_twice(value: Any, returns: Any = Any, takes: Any = Any) -> tuple[list[Any], Any]:
    """Submit a task taking ``value`` whose step returns ``value``; crash its first run after
    the step; finish it on a new engine. Returns what each run saw, ``(argument, result)``,
    and the task's result read by a third engine."""
    seen: list[tuple[Any, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'values.db'}"

        def engine_for(crash: bool) -> Engine:
            engine = Engine.open(url, session="values", clock=FakeClock(), healing=False)

            def produce() -> Any:
                return value

            produce.__annotations__["return"] = returns
            step = engine.step(name="produce")(produce)

            def job(arg: Any) -> Any:
                got = step()
                seen.append((arg, got))
                if crash:
                    raise Crash
                return got

            job.__annotations__["arg"] = takes
            job.__annotations__["return"] = returns
            engine.task(name="job")(job)
            return engine

        first = engine_for(crash=True)
        task_id = first.submit("job", value)
        with contextlib.suppress(Crash):
            first.run()
        first.close()
        second = engine_for(crash=False)
        summary = second.run()
        assert summary.steps_replayed == 1, summary
        assert summary.succeeded == 1, summary
        second.close()
        third = engine_for(crash=False)
        result = third.result(task_id)
        third.close()
    return seen, result


def fields_of(value: Any) -> Any:
    """A Struct's or dataclass's fields as a dict, all the way down (containers kept), so that
    :func:`same_value` compares them (NaN included, sets in any order)."""
    if isinstance(value, msgspec.Struct):
        return {f: fields_of(getattr(value, f)) for f in value.__struct_fields__}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: fields_of(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list):
        return [fields_of(v) for v in value]
    if isinstance(value, dict):
        return {k: fields_of(v) for k, v in value.items()}
    return value


def faithful(value: Any) -> bool:
    """Whether the redactor leaves the value alone (a drawn text may look like a secret)."""
    return bool(encode_value(value, what="v") == encode_value(value, what="v", redactor=Redactor()))


# Annotations that name no object, enum or subclass: they never change a value (a text under
# `bytes` is not decoded from base64, a list under `tuple` stays a list).
PLAIN_ANNOTATIONS: list[Any] = [
    Any,
    int,
    float,
    str,
    bytes,
    bool,
    tuple,
    list,
    dict,
    frozenset[int],
    datetime.date,
    datetime.datetime,
    tuple[int, int],
    list[float],
    dict[int, str],
    bytes | None,
]


@settings(SETTINGS, max_examples=100)
@given(stored_values(), st.sampled_from(PLAIN_ANNOTATIONS))
def test_any_value_is_the_same_on_the_first_run_and_the_replay(value: Any, annotation: Any) -> None:
    seen, result = run_twice(value, returns=annotation, takes=annotation)
    assert len(seen) == 2
    (arg_first, got_first), (arg_replay, got_replay) = seen
    assert same_value(got_first, got_replay), (got_first, got_replay)
    assert same_value(arg_first, arg_replay), (arg_first, arg_replay)
    assert same_value(result, got_first), (result, got_first)
    if faithful(value):
        assert same_value(got_first, value), (got_first, value)
        assert same_value(arg_first, value), (arg_first, value)


_points = st.builds(
    Point,
    x=st.floats(),
    when=st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    tags=st.frozensets(st.text(max_size=8), max_size=3),
    raw=st.binary(max_size=16),
    colour=st.sampled_from(Colour),
    pair=st.tuples(st.integers(), st.text(max_size=8)),
)
_boxes = st.builds(
    Box,
    points=st.lists(_points, max_size=3),
    by_id=st.dictionaries(st.integers(), _points, max_size=2),
    extra=stored_values(),
)


@SETTINGS
@given(_points)
def test_an_annotated_struct_comes_back_as_itself(point: Point) -> None:
    seen, result = run_twice(point, returns=Point, takes=Point)
    (arg_first, got_first), (arg_replay, got_replay) = seen
    for got in (got_first, got_replay, arg_first, arg_replay, result):
        assert type(got) is Point
    assert same_value(fields_of(got_first), fields_of(got_replay))
    assert same_value(fields_of(arg_first), fields_of(arg_replay))
    assert same_value(fields_of(result), fields_of(got_first))
    if faithful(point):
        assert same_value(fields_of(got_first), fields_of(point))
        assert same_value(fields_of(arg_first), fields_of(point))


@SETTINGS
@given(_boxes)
def test_an_annotated_dataclass_comes_back_as_itself(box: Box) -> None:
    seen, result = run_twice(box, returns=Box, takes=Box)
    (arg_first, got_first), (arg_replay, got_replay) = seen
    for got in (got_first, got_replay, arg_first, arg_replay, result):
        assert type(got) is Box
    assert same_value(fields_of(got_first), fields_of(got_replay))
    assert same_value(fields_of(arg_first), fields_of(arg_replay))
    if faithful(box):
        assert same_value(fields_of(got_first), fields_of(box))


@SETTINGS
@given(_points)
def test_an_unannotated_struct_is_the_same_plain_value_on_both_runs(point: Point) -> None:
    seen, _ = run_twice(point)
    (arg_first, got_first), (arg_replay, got_replay) = seen
    assert type(got_first) is dict
    assert same_value(got_first, got_replay)
    assert same_value(arg_first, arg_replay)
