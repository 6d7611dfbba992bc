"""``onward simulate --db`` and ``onward demo --db`` at a path where no log can be created (a
directory that takes no new file): one line naming the path and why, exit 2, no traceback
from the worker process they start, and nothing left behind.

``/proc`` is a directory in which no file can be created, whoever runs the test (root
included, who passes a read-only mode's check).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from onward.cli.main import main

#: A path whose directory exists and takes no new file.
NOWHERE = Path("/proc") / "onward-test-no-such-log.db"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_simulate_names_a_log_it_cannot_create(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--hours", "0.01", "--db", str(NOWHERE)]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(
        f"onward simulate: cannot create the SQLite log {NOWHERE}: "
    ), err
    assert not NOWHERE.exists()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_demo_names_a_log_it_cannot_create(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--db", str(NOWHERE), "--limit", "2", "--yes"]) == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(
        f"onward demo: cannot create the SQLite log {NOWHERE}: "
    ), err
    assert not NOWHERE.exists()
