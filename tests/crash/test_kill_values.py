"""A worker killed with SIGKILL after a step's outcome was committed: the process that resumes
the task sees the same argument and the same step result, type for type, as the one that
died (datetimes, sets, bytes, NaN, infinities, int keys, UUIDs, Decimals, dates, durations)."""

from __future__ import annotations

import pickle
import signal
import subprocess
import sys
from pathlib import Path

from tests.crash import _values_child
from tests.strategies import same_value

CHILD = Path(_values_child.__file__)


def phase(db: Path, out: Path, number: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), str(db), str(out), str(number)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_values_after_kill_9_are_the_values_before(tmp_path: Path) -> None:
    db = tmp_path / "values.db"
    first = phase(db, tmp_path, 1)
    assert first.returncode == -signal.SIGKILL, first.stderr
    second = phase(db, tmp_path, 2)
    assert second.returncode == 0, second.stderr

    seen_first = pickle.loads((tmp_path / "seen-1.pkl").read_bytes())
    seen_second = pickle.loads((tmp_path / "seen-2.pkl").read_bytes())
    result, replayed = pickle.loads((tmp_path / "result-2.pkl").read_bytes())
    assert replayed == 1  # the step was not run again: its outcome came from the log
    (argument_first, got_first), (argument_second, got_second) = seen_first, seen_second

    assert same_value(got_first, got_second), (got_first, got_second)
    assert same_value(argument_first, argument_second), (argument_first, argument_second)
    # And both are what the code passed and returned, not a JSON approximation of them.
    assert same_value(got_first, _values_child.RESULT)
    assert same_value(argument_first, _values_child.ARGUMENT)
    assert same_value(result, _values_child.RESULT)
