"""Shared fixtures: an injected clock, the PostgreSQL URL, temporary logs."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import settings

from onward.events import EventLog
from onward.events.outage import Outage

# Properties, not timings: an example slowed by a busy machine (CI has 2 cores) is no failure.
settings.register_profile("onward", deadline=None)
settings.load_profile("onward")

POSTGRES_URL = os.environ.get("ONWARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL with a schema of its own, dropped afterwards."""
    schema = "onward_test_" + uuid.uuid4().hex[:12]
    base = POSTGRES_URL.split("?")[0]
    yield f"{base}?schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sync", "async"])
def both_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on both paths: ``Engine.run`` as it is, and as ``Engine.run_async`` on an
    event loop of its own (its tasks' plain functions in worker threads, every storage call off
    the loop, the step outcomes group-committed)."""
    if request.param == "async":
        from onward import Engine, RunSummary

        def run_on_a_loop(
            self: Engine, *, workers: int = 1, max_runs: int | None = None, **options: float
        ) -> RunSummary:
            return asyncio.run(self.run_async(concurrency=workers, max_runs=max_runs, **options))

        monkeypatch.setattr(Engine, "run", run_on_a_loop)
    return str(request.param)


class OutageClock(FakeClock):
    """A log's outage handling on a fake clock of its own (it counts how long ago the last
    outage ended), and a way to have the log ride one out now."""

    def __init__(self, log: EventLog) -> None:
        super().__init__(0.0)
        self.outage = log.outage = Outage(log.url, clock=self, sleep=self.advance)

    def ride_out(self) -> None:
        """A read through a lock that holds for one try: an outage ridden out now."""
        locked = iter([True, False])

        def through_a_lock() -> int:
            if next(locked):
                raise sqlite3.OperationalError("database is locked")
            return 1

        self.outage.call("a read", through_a_lock)
