"""An SQLite log whose file is moved, removed or replaced while it is open: nothing is written
on to a file no one will open again, and no empty log appears at the old path; the appends
wait, as in an outage, for the file to come back."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from onward import Engine
from onward.events import NotALog, StepCompleted, StorageUnavailable, TaskSubmitted, open_log
from onward.events import sqlite as sqlite_backend


@pytest.fixture(autouse=True)
def look_at_every_append(monkeypatch: pytest.MonkeyPatch) -> None:
    """A log looks at its file at most every 50 ms (a look costs a few µs of a step); here at
    every transaction, so that the append right after a move is the one refused."""
    monkeypatch.setattr(sqlite_backend, "_LOOK_AGAIN", 0.0)


def submitted(name: str) -> list[TaskSubmitted]:
    return [TaskSubmitted(name=name)]


def test_an_append_to_a_moved_log_waits_for_it_and_lands_once_it_is_back(tmp_path: Path) -> None:
    db, moved = tmp_path / "log.db", tmp_path / "elsewhere.db"
    with open_log(f"sqlite:///{db}", outage_tolerance=0) as log:
        log.append("task-1", submitted("a"), expected_version=0)
        os.rename(db, moved)
        with pytest.raises(StorageUnavailable, match="was moved or removed while the log was"):
            log.append("task-1", submitted("b"), expected_version=1)
        assert not db.exists()  # no empty log at the old path
        os.rename(moved, db)
        log.append("task-1", submitted("c"), expected_version=1)
    with open_log(f"sqlite:///{db}") as log:
        assert [r.event.name for r in log.read()] == ["a", "c"]  # type: ignore[attr-defined]
        assert log.verify().ok


def test_an_append_to_a_log_replaced_by_another_file_is_refused(tmp_path: Path) -> None:
    db, moved, other = tmp_path / "log.db", tmp_path / "elsewhere.db", tmp_path / "other.db"
    with open_log(f"sqlite:///{other}") as log:
        log.append("task-9", submitted("z"), expected_version=0)
    with open_log(f"sqlite:///{db}", outage_tolerance=0) as log:
        log.append("task-1", submitted("a"), expected_version=0)
        os.rename(db, moved)
        os.rename(other, db)
        with pytest.raises(StorageUnavailable, match="replaced by another file"):
            log.append("task-1", submitted("b"), expected_version=1)
    os.replace(moved, db)  # the first log back in its place, with its write-ahead log
    with open_log(f"sqlite:///{db}") as log:
        assert [(r.stream, r.event.name) for r in log.read()] == [("task-1", "a")]  # type: ignore[attr-defined]
        assert log.verify().ok


def test_no_new_log_takes_the_write_ahead_log_of_one_moved_away(tmp_path: Path) -> None:
    db, moved = tmp_path / "log.db", tmp_path / "elsewhere.db"
    with open_log(f"sqlite:///{db}") as log:
        log.append("task-1", submitted("a"), expected_version=0)
        os.rename(db, moved)
        with pytest.raises(NotALog, match=r"its write-ahead log .*-wal .* is there") as refused:
            open_log(f"sqlite:///{db}")
        assert refused.value.found == "a write-ahead log without its database"
        assert not db.exists()
        os.rename(moved, db)
        log.append("task-1", submitted("b"), expected_version=1)
    with open_log(f"sqlite:///{db}") as log:
        assert [r.event.name for r in log.read()] == ["a", "b"]  # type: ignore[attr-defined]


def open_engine(db: Path, tolerance: float, in_step: dict[int, object]) -> Engine:
    engine = Engine.open(f"sqlite:///{db}", session="s", outage_tolerance=tolerance)

    @engine.step()
    def work(index: int) -> int:
        action = in_step.pop(index, None)
        if callable(action):
            action()
        return index * 10

    @engine.task()
    def job() -> list[int]:
        return [work(i) for i in range(4)]

    return engine


def test_a_log_removed_under_a_running_task_stops_the_run(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    engine = open_engine(db, 0.5, {2: lambda: os.unlink(db)})
    try:
        engine.submit("job")
        # Live, each step's outcome would go to a file that is gone once the engine closes.
        with pytest.raises(StorageUnavailable, match="was moved or removed"):
            engine.run()
        assert not db.exists()
    finally:
        engine.close()


class Warned(logging.Handler):
    """Set when the log says it is waiting for its storage."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "is unavailable, retrying" in record.getMessage():
            self.seen.set()


def test_a_log_moved_away_and_back_under_a_running_task_loses_nothing(tmp_path: Path) -> None:
    db, moved = tmp_path / "log.db", tmp_path / "elsewhere.db"
    warned = Warned()
    logging.getLogger("onward.events").addHandler(warned)

    def move_back() -> None:
        assert warned.seen.wait(60)
        os.rename(moved, db)

    mover = threading.Thread(target=move_back)
    try:
        engine = open_engine(db, 60.0, {1: lambda: (os.rename(db, moved), mover.start())})
        with engine:
            task_id = engine.submit("job")
            summary = engine.run()
            assert (summary.succeeded, summary.failed) == (1, 0)
            assert engine.result(task_id) == [0, 10, 20, 30]
        mover.join()
    finally:
        logging.getLogger("onward.events").removeHandler(warned)
    with open_log(f"sqlite:///{db}") as log:
        completed = Counter(r.event.index for r in log.read() if isinstance(r.event, StepCompleted))
        assert log.verify().ok
    assert completed == {0: 1, 1: 1, 2: 1, 3: 1}


def test_a_log_created_by_another_process_meanwhile_is_not_taken_for_a_stranded_one(
    tmp_path: Path,
) -> None:
    """Its path was missing when looked at, then another process created the log, whose
    write-ahead log was there by the time its size was read: the healthy log was refused."""
    from onward.events.sqlite_file import _refuse_orphan_wal

    db = tmp_path / "log.db"
    with open_log(f"sqlite:///{db}") as log:
        log.append("task-1", submitted("a"), expected_version=0)
        assert Path(f"{db}-wal").stat().st_size > 32
        _refuse_orphan_wal(str(db))  # the database is there: nothing refused
