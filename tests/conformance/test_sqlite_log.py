"""The SQLite backend passes the log conformance suite."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from onward.events import BackendError, EventLog, VersionConflict, open_log
from tests.conformance.log_suite import SharedLogSuite, progressed, submitted
from tests.conftest import FakeClock


class TestSQLiteLog(SharedLogSuite):
    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.path = tmp_path / "log.db"

    def make_log(self, clock: FakeClock, **options: Any) -> EventLog:
        return open_log(f"sqlite:///{self.path}", clock=clock, **options)

    def second_handle(self) -> EventLog:
        return open_log(f"sqlite:///{self.path}")


def test_the_writer_holds_no_statement_open_after_an_append(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The writer runs its statements on one cursor it keeps: whatever an append met (a
    clash with another handle's append inside its transaction, the lock held by another
    connection, a head record that does not decode), it leaves no statement open holding a
    snapshot, so another connection checkpoints the whole WAL. Each record's state is a
    blob."""
    path = tmp_path / "log.db"
    url = f"sqlite:///{path}"
    with (
        open_log(url, clock=clock, busy_timeout=0.001, outage_tolerance=0.0) as log,
        open_log(url, clock=clock) as other,
    ):
        log.append("task-1", [submitted()], expected_version=0)
        other.append("task-1", [progressed(0.5)], expected_version=1)
        with pytest.raises(VersionConflict):
            log.append("task-1", [progressed(0.6)], expected_version=1)
        with closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            with pytest.raises(BackendError):
                log.append("task-2", [submitted()], expected_version=0)
            db.execute("UPDATE onward_head SET chain = CAST(x'ff' AS TEXT)")
            db.execute("COMMIT")
            log.append("task-2", [submitted()], expected_version=0)
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
            kinds = db.execute("SELECT DISTINCT typeof(state) FROM stored_events").fetchall()
        assert kinds == [("blob",)]
        assert (tmp_path / "log.db-wal").stat().st_size == 0
        assert log.verify().ok
        assert [r.version for r in log.read_stream("task-1")] == [1, 2]
