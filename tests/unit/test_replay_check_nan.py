"""replay_check compares a task's result with NaN the same as NaN wherever it is: a float's
or a ``Decimal``'s (quiet or signalling), in a list, a set, a frozenset, a dict's keys."""

from __future__ import annotations

import decimal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.events import open_log
from onward.projections import task_stream
from onward.testing import encode_history, open_engine, replay_check, replay_recorded

NAN = float("nan")
DNAN = decimal.Decimal("NaN")

#: Results that hold NaN where ``==`` never finds it equal (or raises, for a signalling NaN).
NAN_RESULTS: dict[str, Any] = {
    "set": {NAN, 1.5},
    "two_nans_in_a_set": {float("nan"), float("nan"), "x"},
    "frozenset": frozenset({NAN}),
    "dict_key": {NAN: 1, 2.0: "b"},
    "tuple_key": {(NAN, 1): "t"},
    "frozenset_key": {frozenset({NAN}): [NAN]},
    "set_of_tuples": {(1, NAN), (2, DNAN)},
    "decimal": DNAN,
    "signalling_decimal": decimal.Decimal("sNaN"),
    "negative_decimal": decimal.Decimal("-NaN"),
    "decimal_in_a_tuple": (DNAN, 1),
    "decimal_key": {DNAN: "d"},
    "nested": [{"deep": {NAN: {DNAN}}}],
}

#: What each result becomes in the changed code: still NaN-bearing, but not the same.
CHANGED: dict[str, Any] = {
    "set": {NAN, 2.5},
    "dict_key": {NAN: 2, 2.0: "b"},
    "decimal": decimal.Decimal("1"),
    "signalling_decimal": NAN,  # a float NaN is not a Decimal NaN
    "decimal_key": {DNAN: "e"},
    "nested": [{"deep": {NAN: {DNAN, decimal.Decimal("0")}}}],
}


def returning(value: Any) -> Callable[[], Any]:
    def returns() -> Any:
        return value

    return returns


def register(engine: Engine, results: dict[str, Any]) -> None:
    for name, value in results.items():
        engine.task(name=f"returns_{name}")(returning(value))


def test_results_holding_nan_anywhere_replay_as_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    with open_engine(url) as engine:
        register(engine, NAN_RESULTS)
        ids = {name: engine.submit(f"returns_{name}") for name in NAN_RESULTS}
        engine.run()
        assert all(engine.task_view(t).state == "succeeded" for t in ids.values())
        check = replay_check(url, engine)
        assert check.ok, check.explain()
        assert check.checked == len(NAN_RESULTS)
        with open_log(url, create=False) as log:  # as `onward to-test` embeds it
            for name, task_id in ids.items():
                text = encode_history(log.read_stream(task_stream(task_id)))
                assert replay_recorded(engine, text, task_id=task_id).ok, name


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_another_result_beside_nan_is_still_reported(tmp_path: Path, name: str) -> None:
    url = f"sqlite:///{tmp_path / 'nan.db'}"
    with open_engine(url) as engine:
        register(engine, {name: NAN_RESULTS[name]})
        engine.submit(f"returns_{name}")
        engine.run()
    with open_engine() as engine:
        register(engine, {name: CHANGED[name]})
        check = replay_check(url, engine)
    assert [d.kind for d in check.divergences] == ["result"], check.explain()
