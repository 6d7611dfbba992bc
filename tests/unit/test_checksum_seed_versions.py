"""A page's records pass their checksums at any version, on either side of the versions whose
seeds a reader computes once a page (a stream's first 64), and a record changed at any of them
still fails."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from onward.events import TaskProgressed, open_log
from onward.events.integrity import check_rows


def test_records_past_the_first_versions_pass_and_a_changed_one_fails(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with open_log(f"sqlite:///{path}") as log:
        log.append("stream-a", [TaskProgressed(fraction=0.5, note="a")] * 130, expected_version=0)
        log.append("stream-b", [TaskProgressed(fraction=0.5, note="b")] * 2, expected_version=0)
    with closing(sqlite3.connect(path)) as raw:
        rows = raw.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " ORDER BY rowid"
        ).fetchall()
    assert check_rows(rows) == []
    for version in (63, 64, 65, 130):
        index = version - 1
        p, s, v, t, st = rows[index]
        assert v == version
        damaged = [*rows[:index], (p, s, v, t, st.replace(b'"a"', b'"z"')), *rows[index + 1 :]]
        assert [i for i, _why in check_rows(damaged)] == [index]
        moved = [*rows[:index], (p, s, v + 1, t, st), *rows[index + 1 :]]
        assert [i for i, _why in check_rows(moved)] == [index]
