"""A worker whose SQLite log's file system fills up rides it out as an outage: it waits for
space to come back, then finishes every task once, and the log verifies.

The log lives on a small tmpfs of its own, filled by another file: mounting one takes root.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash._fleet import Fleet, Progress, check_log, wait_until


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB file system of its own, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system takes root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        check=False,
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no space left."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return
                chunk = chunk[: len(chunk) // 2]


def test_a_full_disk_is_ridden_out_and_every_task_ends_once(
    tmp_path: Path, small_disk: Path
) -> None:
    url = f"sqlite:///{small_disk / 'log.db'}"
    fleet = Fleet(tmp_path, url, hold=2.0)
    (pid,) = fleet.start()
    process = fleet.workers[pid]
    progress = Progress(url)
    try:
        fleet.submit(6, slow=6)  # each holds its first step's body a while
        wait_until(fleet.runs, 60, "a step's body to run")
        filler = small_disk / "filler"
        fill(filler)  # its outcome finds the disk full
        wait_until(
            lambda: "retrying" in fleet.stderr(pid) or process.poll() is not None,
            60,
            "the worker to meet the full disk",
        )
        assert process.poll() is None, fleet.stderr(pid)  # it waits for space, not stops
        filler.unlink()
        wait_until(lambda: progress.succeeded() == 6, 120, "every task to succeed")
        ended = fleet.stop_all()
    finally:
        progress.close()
        for alive in fleet.alive():
            os.kill(alive, signal.SIGKILL)
    assert ended[pid][0] == 0, ended[pid][1]
    check_log(url, fleet, 6)
