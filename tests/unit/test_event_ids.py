"""Event ids drawn for an append: 32 lowercase hex digits each, none repeated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from eventsourcing.persistence import StoredEvent

from onward.events import StepCompleted, UsageError, new_event_id, open_log
from onward.events.log import _stored_event, new_event_ids

_ID = re.compile(r"[0-9a-f]{32}")


def test_ids_drawn_together_are_hex_and_distinct() -> None:
    for count in (0, 1, 2, 100):
        ids = new_event_ids(count)
        assert len(ids) == count
        assert all(_ID.fullmatch(i) for i in ids)
    many = [i for _ in range(100) for i in new_event_ids(100)] + [new_event_id()]
    assert len(set(many)) == len(many)


def test_an_append_stores_the_ids_it_returns(tmp_path: Path) -> None:
    events = [StepCompleted(index=i, name="fetch", result=i) for i in range(3)]
    with open_log(f"sqlite:///{tmp_path}/log.db") as log:
        result = log.append("task-1", events, expected_version=0)
        stored = [r.meta.event_id for r in log.read_stream("task-1")]
    assert stored == result.event_ids
    assert all(_ID.fullmatch(i) for i in stored)
    assert len(set(stored)) == 3


def test_a_record_is_built_as_the_recorder_builds_it() -> None:
    record = _stored_event("task-1", 7, "StepCompleted", b"{}")
    assert record == StoredEvent("task-1", 7, "StepCompleted", b"{}")
    assert vars(record) == vars(StoredEvent("task-1", 7, "StepCompleted", b"{}"))


def test_given_ids_are_1_to_64_ascii_letters_digits_dashes_or_underscores(
    tmp_path: Path,
) -> None:
    taken = ["a", "Z9", "step-1_retry", "_", "-", "f" * 64, "0" * 32, "A-b_C"]
    refused: list[object] = [
        "",
        "f" * 65,
        "\u00e9",
        "\u0663",
        "\uff46",
        "a b",
        "a.b",
        "a\x00",
        7,
        None,
        b"ab",
    ]
    with open_log(f"sqlite:///{tmp_path}/log.db") as log:
        for version, event_id in enumerate(taken):
            event = StepCompleted(index=version, name="fetch", result=version)
            log.append("task-1", [event], expected_version=version, event_ids=[event_id])
        assert [r.meta.event_id for r in log.read_stream("task-1")] == taken
        for event_id in refused:
            with pytest.raises(UsageError, match="must be 1-64 letters"):
                log.append(
                    "task-1",
                    [StepCompleted(index=99, name="fetch", result=0)],
                    expected_version=len(taken),
                    event_ids=[event_id],  # type: ignore[list-item]
                )
        assert log.read_stream("task-1")[-1].meta.event_id == taken[-1]
