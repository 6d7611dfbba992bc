"""Event ids drawn for an append: 32 lowercase hex digits each, none repeated."""

from __future__ import annotations

import re
from pathlib import Path

from eventsourcing.persistence import StoredEvent

from onward.events import StepCompleted, new_event_id, open_log
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
