"""Splitting an event into blobs and joining it again loses nothing, for any event and limit;
an export imported into another log is that log again, and importing it twice imports it once.

At the level of the encoded JSON (:func:`split_event` / :func:`join_event`) and through a log:
any event of the vocabulary, appended under any inline limit, reads back equal (by
:meth:`read`, :meth:`read_stream` and :meth:`read_pages`), and the log verifies.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events import (
    Event,
    Redactor,
    StepCompleted,
    TaskSubmitted,
    blob_digest,
    export_log,
    import_log,
    open_log,
)
from onward.events.blobs import join_event, split_event
from tests.conftest import FakeClock
from tests.strategies import any_event, json_values

_SMALLEST_BLOB = 256

_fields = st.dictionaries(
    st.text(min_size=1, max_size=12).filter(lambda k: k != "type"),
    st.one_of(json_values(), st.text(min_size=200, max_size=3000)),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(fields=_fields, limit=st.integers(min_value=1, max_value=4000))
def test_join_of_split_is_the_event(fields: dict[str, Any], limit: int) -> None:
    event = {"type": "Sample", **fields}
    encoded = msgspec.json.encode(event)
    split = split_event(encoded, limit)
    if split is None:
        # Nothing to split: it fits, or no field is worth a blob.
        assert len(encoded) <= limit or all(
            len(msgspec.json.encode(v)) < _SMALLEST_BLOB for v in fields.values()
        )
        return
    assert msgspec.json.decode(join_event(split.rest, split.refs, split.blobs)) == event
    assert msgspec.json.decode(split.rest)["type"] == "Sample"
    for name, digest in split.refs:
        assert blob_digest(split.blobs[digest]) == digest
        assert msgspec.json.decode(split.blobs[digest]) == fields[name]
        assert name not in msgspec.json.decode(split.rest)
    kept = msgspec.json.decode(split.rest)
    assert len(split.rest) <= limit or all(
        len(msgspec.json.encode(v)) < _SMALLEST_BLOB for k, v in kept.items() if k != "type"
    )
    # Largest first: every field split off is at least as large as every field kept.
    if len(kept) > 1:
        smallest_split = min(len(split.blobs[d]) for _n, d in split.refs)
        largest_kept = max(len(msgspec.json.encode(v)) for k, v in kept.items() if k != "type")
        assert smallest_split >= largest_kept or len(split.rest) <= limit


_large_events = st.one_of(
    st.builds(
        TaskSubmitted,
        name=st.text(max_size=20),
        args=st.lists(st.one_of(json_values(), st.text(min_size=300, max_size=2000)), max_size=4),
        kwargs=st.dictionaries(st.text(max_size=8), st.text(min_size=0, max_size=1500), max_size=3),
    ),
    st.builds(
        StepCompleted,
        index=st.integers(0, 100),
        name=st.text(max_size=20),
        result=st.one_of(json_values(), st.text(min_size=300, max_size=5000)),
    ),
    any_event(),
)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(_large_events, min_size=1, max_size=6),
    limit=st.integers(min_value=64, max_value=3000),
)
def test_any_event_under_any_inline_limit_reads_back_as_appended(
    events: list[Event], limit: int
) -> None:
    # No secret patterns: random text must come back exactly (redaction has tests of its own).
    with open_log(
        "memory://", clock=FakeClock(), inline_limit=limit, redactor=Redactor(patterns=())
    ) as log:
        log.append("stream-1", events, expected_version=0)
        assert [r.event for r in log.read()] == events
        assert [r.event for r in log.read_stream("stream-1")] == events
        assert [r.event for page in log.read_pages(page_size=2) for r in page] == events
        assert log.verify().ok


@settings(max_examples=60, deadline=None)
@given(
    appends=st.lists(
        st.tuples(st.integers(0, 3), st.lists(_large_events, min_size=1, max_size=3)),
        min_size=1,
        max_size=6,
    ),
    limit=st.integers(min_value=64, max_value=3000),
)
def test_export_then_import_is_the_log_again_and_twice_is_once(
    appends: list[tuple[int, list[Event]]], limit: int
) -> None:
    options: dict[str, Any] = {"redactor": Redactor(patterns=()), "inline_limit": limit}
    with open_log("memory://", clock=FakeClock(), **options) as source:
        for stream, events in appends:
            source.append(f"stream-{stream}", events, expected_version=None)
        lines: list[bytes] = []
        export_log(source, lines.append)
        expected = [(r.stream, r.version, r.meta, r.event) for r in source.read()]
    with open_log("memory://", clock=FakeClock(), **options) as target:
        first = import_log(target, lines)
        again = import_log(target, lines)
        assert first.imported == len(expected)
        assert (again.imported, again.skipped) == (0, len(expected))
        assert [(r.stream, r.version, r.meta, r.event) for r in target.read()] == expected
        assert target.verify().ok
