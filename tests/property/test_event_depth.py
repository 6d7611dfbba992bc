"""The log's depth check (``_nested_within``) against a reference walk of the decoded value:
every JSON the codec writes, strings holding brackets, quotes and escapes included, is within
a limit exactly when its deepest container is, whether the check ends in its passes over the
brackets or in its one linear count after them."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events.codec import _CHEAP_PASSES, _nested_within

_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\\\ab\u2028\u202e'), max_size=6)
_LEAVES = st.none() | st.integers() | _TEXT
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=40,
)


def depth(value: Any) -> int:
    """How many containers deep ``value`` is (0 for a leaf)."""
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def chain(levels: int, tail: Any) -> Any:
    """``tail`` under ``levels`` containers, lists and dicts in turns."""
    for level in range(levels):
        tail = [tail] if level % 2 else {"k[": tail}
    return tail


@settings(max_examples=400, deadline=None)
@given(
    value=_VALUES,
    extra=st.integers(0, 2 * _CHEAP_PASSES + 4),
    limit=st.integers(1, 3 * _CHEAP_PASSES),
)
def test_the_depth_check_agrees_with_a_walk(value: Any, extra: int, limit: int) -> None:
    whole = chain(extra, value)
    expected = depth(whole) <= limit
    for written in (
        msgspec.json.encode(whole),
        json.dumps(whole).encode(),
        json.dumps(whole, ensure_ascii=False).encode(),
    ):
        assert _nested_within(written, limit) is expected, written
