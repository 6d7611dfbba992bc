"""The engine's own storage faults: an SQLite file locked past the busy timeout at each storage
boundary of a step (by another process holding it), is ridden out; an outage longer than the
tolerance stops the run with StorageUnavailable, fails no task, and the same engine's next run
finishes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.events import StepCompleted, StorageUnavailable, TaskFailed, open_log
from onward.events.log import EventLog

LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


class Locker:
    """Another process that holds the SQLite file exclusively for a while."""

    def __init__(self, tmp_path: Path, db: Path) -> None:
        self.script = tmp_path / "locker.py"
        self.script.write_text(textwrap.dedent(LOCKER))
        self.db = db
        self.processes: list[subprocess.Popen[str]] = []

    def hold(self, seconds: float) -> None:
        """Lock the file now (returns once it is locked) for ``seconds``."""
        process = subprocess.Popen(
            [sys.executable, str(self.script), str(self.db), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "locked"
        self.processes.append(process)

    def wait(self) -> None:
        for process in self.processes:
            process.communicate(timeout=60)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "log.db"


@pytest.fixture
def locker(tmp_path: Path, db: Path) -> Iterator[Locker]:
    found = Locker(tmp_path, db)
    yield found
    found.wait()


def open_engine(db: Path, tolerance: float) -> Engine:
    engine = Engine.open(
        f"sqlite:///{db}?busy_timeout=0.2", session="s", outage_tolerance=tolerance
    )

    @engine.step()
    def work(index: int) -> int:
        return index * 10

    @engine.task()
    def job() -> list[int]:
        return [work(i) for i in range(4)]

    return engine


def lock_at(
    monkeypatch: pytest.MonkeyPatch, insert: int, when: str, hold: Callable[[], None]
) -> None:
    """Lock the file at the ``insert``-th insert of this process: just before it, or just
    after it committed."""
    real = EventLog._insert
    calls = Counter[str]()

    def instrumented(self: EventLog, records: list[Any], wakes: bool = False) -> list[int]:
        calls["inserts"] += 1
        if calls["inserts"] == insert and when == "before":
            hold()
        positions = real(self, records, wakes)
        if calls["inserts"] == insert and when == "after":
            hold()
        return positions

    monkeypatch.setattr(EventLog, "_insert", instrumented)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("insert", [3, 4, 6])  # the claim, a step's outcome, the last step's
def test_a_lock_past_the_busy_timeout_is_ridden_out(
    db: Path, locker: Locker, monkeypatch: pytest.MonkeyPatch, insert: int, when: str
) -> None:
    with open_engine(db, tolerance=30.0) as engine:
        task_id = engine.submit("job")
        lock_at(monkeypatch, insert, when, lambda: locker.hold(1.0))
        summary = engine.run()
        assert (summary.succeeded, summary.failed) == (1, 0)
        assert engine.result(task_id) == [0, 10, 20, 30]
    with open_log(f"sqlite:///{db}") as log:
        events = [r.event for r in log.read()]
        assert log.verify().ok
    assert sum(isinstance(e, StepCompleted) for e in events) == 4
    assert not any(isinstance(e, TaskFailed) for e in events)


def test_an_outage_past_the_tolerance_stops_the_run_and_fails_no_task(
    db: Path, locker: Locker, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_engine(db, tolerance=0.5) as engine:
        task_id = engine.submit("job")
        lock_at(monkeypatch, 5, "before", lambda: locker.hold(2.0))
        with pytest.raises(StorageUnavailable, match="unavailable for"):
            engine.run()
        assert engine.refresh().tasks.tasks[task_id].state == "running"
        locker.wait()  # the storage is back
        summary = engine.run()  # the same engine takes its own task back at once
        assert (summary.runs, summary.succeeded, summary.recovered) == (1, 1, 1)
        assert engine.result(task_id) == [0, 10, 20, 30]
    with open_log(f"sqlite:///{db}") as log:
        events = [r.event for r in log.read()]
    completed = Counter(e.index for e in events if isinstance(e, StepCompleted))
    assert completed == {0: 1, 1: 1, 2: 1, 3: 1}
    assert not any(isinstance(e, TaskFailed) for e in events)
