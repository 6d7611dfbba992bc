"""A worker killed with SIGKILL while it records a step result large enough to be a blob:
inside the transaction that stores the blob and its record, or just after it committed. The
process that resumes loses nothing, runs no completed step again, and gets every value back
as it ran; the log verifies, blobs included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from onward.events import open_log
from tests.crash import _blobs_child
from tests.crash._blobs_child import STEPS, digest, value

CHILD = Path(_blobs_child.__file__)


def phase(db: Path, out: Path, number: int, moment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), str(db), str(out), str(number), moment],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.parametrize("moment", ["inside", "after"])
def test_kill_9_while_recording_a_blob_then_resume(tmp_path: Path, moment: str) -> None:
    db = tmp_path / "blobs.db"
    first = phase(db, tmp_path, 1, moment)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert not (tmp_path / "result.json").exists()
    second = phase(db, tmp_path, 2, moment)
    assert second.returncode == 0, second.stderr

    done = json.loads((tmp_path / "result.json").read_text())
    assert done["result"] == [digest(value(i)) for i in range(STEPS)]
    runs = Counter(
        int(line.split()[0]) for line in (tmp_path / "effects").read_text().split("\n") if line
    )
    if moment == "inside":
        # The second result was not committed: that step, in flight, runs again; no other.
        assert runs == {0: 1, 1: 2, 2: 1, 3: 1}
        assert done["replayed"] == 1
    else:
        assert runs == {0: 1, 1: 1, 2: 1, 3: 1}
        assert done["replayed"] == 2

    verified = subprocess.run(
        [sys.executable, "-m", "onward", "verify", "--db", str(db)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with open_log(f"sqlite:///{db}", create=False) as log:
        assert len(log.blob_digests()) == STEPS
