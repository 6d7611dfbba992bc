"""The SQLite backend passes the log conformance suite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from onward.events import EventLog, open_log
from tests.conformance.log_suite import SharedLogSuite
from tests.conftest import FakeClock


class TestSQLiteLog(SharedLogSuite):
    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.path = tmp_path / "log.db"

    def make_log(self, clock: FakeClock, **options: Any) -> EventLog:
        return open_log(f"sqlite:///{self.path}", clock=clock, **options)

    def second_handle(self) -> EventLog:
        return open_log(f"sqlite:///{self.path}")
