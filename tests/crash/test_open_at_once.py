"""Opening is idempotent: any number of processes may open the same new log and session at the
same instant (tables, schema and session created by whichever comes first), on SQLite and
PostgreSQL, and none fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onward.events import SessionResumed, SessionStarted, open_log

OPENER = """
import sys, time
from pathlib import Path

from onward import Engine

go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
with Engine.open(sys.argv[1], session="shared") as engine:
    print(engine.worker)
"""

PROCESSES = 6


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
    else:
        yield request.getfixturevalue("postgres_url")  # a schema nobody created yet


@pytest.mark.parametrize("round_", range(3))
def test_processes_opening_a_new_log_at_once_all_succeed(
    fresh_url: str, tmp_path: Path, round_: int
) -> None:
    script = tmp_path / "opener.py"
    script.write_text(textwrap.dedent(OPENER))
    go = tmp_path / f"go-{round_}"
    openers = [
        subprocess.Popen(
            [sys.executable, str(script), fresh_url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    time.sleep(0.5)  # let them all start and wait at the line
    go.touch()
    results = [p.communicate(timeout=120) for p in openers]
    failures = [(p.returncode, err) for p, (_, err) in zip(openers, results, strict=True)]
    assert all(code == 0 for code, _ in failures), failures
    with open_log(fresh_url) as log:
        events = [r.event for r in log.read_stream("session-shared")]
        assert log.verify().ok
    assert isinstance(events[0], SessionStarted)
    assert sum(isinstance(e, SessionStarted) for e in events) == 1
    assert sum(isinstance(e, SessionResumed) for e in events) == PROCESSES - 1
