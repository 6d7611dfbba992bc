"""A SQLite log folds the records it committed itself from memory, as it stored them, while
nobody else commits to its file: the projections come out as a fold read from the file makes
them; once another connection has committed (another writer's record between two of its own, a
record removed behind its back), the fold reads the file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from onward.events import StepCompleted, TaskClaimed, TaskSubmitted, open_log
from onward.projections import CatchUp
from tests.conftest import FakeClock


def test_a_fold_of_its_own_records_equals_a_fold_read_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    clock = FakeClock()
    with open_log(url, clock=clock) as log:
        log.append("task-a", [TaskSubmitted(name="job")], expected_version=0)
        host = CatchUp(log, checkpoint_every=0)
        host.open()
        reads: list[int] = []
        select_page = log._select_page
        monkeypatch.setattr(log, "_select_page", lambda a, n: reads.append(a) or select_page(a, n))
        log.append(
            "task-a", [TaskClaimed(worker="w", lease_until=clock() + 60)], expected_version=1
        )
        for i in range(5):
            log.append(
                "task-a", [StepCompleted(index=i, name="f", result=i)], expected_version=2 + i
            )
        assert [row[0] for row in log.own_rows(1)] == list(range(2, 8))
        assert host.catch_up() == 6
        assert reads == [7]  # the file is read only past its own records
        assert log.own_rows(7) == []  # let go once folded
    with open_log(url, clock=clock) as fresh:
        assert fresh.own_rows(0) == []
        replayed = CatchUp(fresh, checkpoint_every=0)
        replayed.open(use_checkpoint=False)
    assert host.projections.position == replayed.projections.position == 7
    assert host.projections.encode() == replayed.projections.encode()


def test_another_writers_record_between_its_own_is_read_from_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    clock = FakeClock()
    with open_log(url, clock=clock) as mine, open_log(url, clock=clock) as theirs:
        mine.append("task-a", [TaskSubmitted(name="mine")], expected_version=0)
        host = CatchUp(mine, checkpoint_every=0)
        host.open()
        theirs.append("task-b", [TaskSubmitted(name="theirs")], expected_version=0)
        mine.append(
            "task-a", [TaskClaimed(worker="w", lease_until=clock() + 60)], expected_version=1
        )
        # Position 2 is not its own: no run of its own records follows position 1.
        assert mine.own_rows(1) == []
        assert [row[0] for row in mine.own_rows(2)] == [3]
        assert mine.own_rows(2, upto=2) == []
        assert host.catch_up() == 2
        assert set(host.projections.tasks.tasks) == {"a", "b"}
    with open_log(url, clock=clock) as fresh:
        replayed = CatchUp(fresh, checkpoint_every=0)
        replayed.open(use_checkpoint=False)
    assert host.projections.encode() == replayed.projections.encode()


def test_a_record_removed_behind_its_back_is_not_folded(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    clock = FakeClock()
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        log.append("task-a", [TaskSubmitted(name="job")], expected_version=0)
        host = CatchUp(log, checkpoint_every=0)
        host.open()
        log.append("task-b", [TaskSubmitted(name="job")], expected_version=0)
        log.append("task-c", [TaskSubmitted(name="job")], expected_version=0)
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("DELETE FROM stored_events WHERE rowid = 2")
        assert host.catch_up() == 1
        assert set(host.projections.tasks.tasks) == {"a", "c"}


def test_a_log_nobody_folds_keeps_a_bounded_number_of_bytes_of_its_own_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records up to the inline limit (1 MiB) are kept as rows: without a bound on their bytes,
    # a log appended to with no fold would hold thousands of them.
    monkeypatch.setattr("onward.events.log._OWN_BYTES", 64 * 1024)
    with open_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        for version in range(1, 41):
            big = StepCompleted(index=version, name="read", result="x" * 10_000)
            log.append("task-a", [big], expected_version=version - 1)
        kept = log._own
        assert 0 < sum(len(row[4]) for row in kept) == log._own_bytes <= 64 * 1024
        assert [row[0] for row in kept] == list(range(41 - len(kept), 41))  # the newest
        assert log.own_rows(0) == []  # the oldest are gone: a fold reads them from the file
        first = kept[0][0]
        assert [row[0] for row in log.own_rows(first - 1)] == list(range(first, 41))
