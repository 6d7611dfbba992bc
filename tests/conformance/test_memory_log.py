"""The memory backend passes the log conformance suite."""

from __future__ import annotations

from typing import Any

from onward.events import EventLog, open_log
from tests.conformance.log_suite import EventLogSuite
from tests.conftest import FakeClock


class TestMemoryLog(EventLogSuite):
    def make_log(self, clock: FakeClock, **options: Any) -> EventLog:
        return open_log("memory://", clock=clock, **options)
