"""A page's checksums, checked in one go by the readers (``check_rows``), fail exactly the
rows that fail their own check (``Codec.check``): whatever the page mixes (streams in runs or
interleaved, versions past any precomputed range or below zero) and however its rows were
edited (a version, stream or tag rewritten, a state cut short or given to another row)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events.codec import LAYOUT, Codec, record_checksum
from onward.events.integrity import check_rows

START, END = LAYOUT.checksum
PREFIX = LAYOUT.checksum_prefix

Row = tuple[int, Any, Any, Any, Any]

versions = st.one_of(
    st.integers(1, 50),
    st.integers(4090, 4100),  # across the versions whose seed part a reader looks up
    st.integers(-3, 0),
    st.integers(2**31, 2**40),
)
streams = st.sampled_from(["task-a", "task-b", "session-x", "é-stream"])
tags = st.sampled_from(["TaskSubmitted", "StepCompleted", "TaskSucceeded"])


def sealed(position: int, stream: str, version: int, topic: str, body: bytes) -> Row:
    checksum = record_checksum(stream, version, topic, body).encode()
    return (position, stream, version, topic, PREFIX + checksum + body)


@st.composite
def pages(draw: st.DrawFn) -> list[Row]:
    rows = [
        sealed(
            i + 1,
            draw(streams),
            draw(versions),
            draw(tags),
            draw(st.binary(min_size=2, max_size=40)),
        )
        for i in range(draw(st.integers(1, 12)))
    ]
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(rows) - 1))
        p, s, v, t, state = rows[i]
        edit = draw(st.sampled_from(["version", "stream", "tag", "cut", "swap", "type"]))
        if edit == "version":
            rows[i] = (p, s, draw(versions), t, state)
        elif edit == "stream":
            rows[i] = (p, draw(streams), v, t, state)
        elif edit == "tag":
            rows[i] = (p, s, v, draw(tags), state)
        elif edit == "cut" and state is not None:
            rows[i] = (p, s, v, t, state[: draw(st.integers(0, len(state)))])
        elif edit == "swap":
            j = draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = (p, s, v, t, rows[j][4]), (*rows[j][:4], state)
        else:
            rows[i] = draw(st.sampled_from([(p, None, v, t, state), (p, s, v, t, None)]))
    return rows


def fails_alone(row: Row) -> bool:
    _p, stream, version, topic, state = row
    return Codec.check(stream, version, topic, state) is not None


@settings(max_examples=400)
@given(pages())
def test_a_page_fails_exactly_the_rows_that_fail_alone(rows: list[Row]) -> None:
    found = [index for index, _why in check_rows(rows)]
    assert found == [i for i, row in enumerate(rows) if fails_alone(row)], rows


def test_a_record_cut_inside_its_checksum_fails_in_a_page_of_intact_ones() -> None:
    rows = [sealed(i + 1, "task-a", i + 1, "StepCompleted", b'"x":%d}}' % i) for i in range(5)]
    assert check_rows(rows) == []
    cut = (*rows[2][:4], rows[2][4][: END - 1])
    assert [index for index, _why in check_rows([*rows[:2], cut, *rows[3:]])] == [2]
    moved = [*rows[:4], (6, "task-a", 5000, "StepCompleted", rows[4][4])]
    assert [index for index, _why in check_rows(moved)] == [4]
    far = [sealed(1, "task-a", 5000, "StepCompleted", b"{}}"), *rows[1:]]
    assert check_rows(far) == []
