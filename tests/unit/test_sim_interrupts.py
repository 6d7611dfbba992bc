"""``onward simulate`` interrupted: Ctrl-C and SIGTERM stop it in one line, with its worker
stopped and waited for and its temporary log removed; a profile that is not UTF-8 is refused.

Real processes: ``onward simulate`` runs in a process group of its own, with its temporary
folder (TMPDIR) in the test's, so that what it leaves behind (a scratch folder, a worker whose
command line names it) is known to be this run's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onward.cli.main import main
from onward.events import UsageError, open_log
from onward.sim import load_profile

#: How long a simulation may take to get under way (it is seconds; this is a loaded machine's).
DEADLINE = 30.0


def workers(marker: Path) -> list[int]:
    """The live processes whose command line names ``marker`` (the simulation's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if str(marker).encode() in cmdline and b"onward.sim" in cmdline:
            found.append(int(entry.name))
    return found


def wait_until_under_way(tmp: Path, process: subprocess.Popen[str] | None = None) -> None:
    """Return once a worker did a step's work (the journal has a line); fail past DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if any(j.stat().st_size for j in tmp.glob("onward-sim-*/steps.journal")) and workers(tmp):
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"onward simulate ended first: {process.communicate()}")
        time.sleep(0.01)  # a poll's pace, not a synchronisation: the loop waits on the journal
    pytest.fail("the simulation did not get under way")


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    """The simulation's TMPDIR; a worker left at the end (a test fails then) is killed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    yield folder
    for pid in workers(folder):
        os.kill(pid, signal.SIGKILL)


def simulate(tmp: Path, *more: str) -> subprocess.Popen[str]:
    """``onward simulate`` of 8 hours of the shipped profile, in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "onward", "simulate", "--hours", "8", "--seed", "3", *more],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
        start_new_session=True,
    )


def assert_stopped_cleanly(tmp: Path, err: str, name: str) -> None:
    assert "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(f"onward simulate: stopped by {name}: "), err
    assert not list(tmp.glob("onward-sim-*"))  # the scratch folder, temporary log with it
    assert workers(tmp) == []  # the worker was stopped and waited for


def test_ctrl_c_stops_the_simulation_and_its_worker(tmp: Path) -> None:
    process = simulate(tmp)
    wait_until_under_way(tmp, process)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 130
    assert_stopped_cleanly(tmp, err, "SIGINT")
    assert "the temporary log is removed" in err


def test_sigterm_stops_the_simulation_and_its_worker(tmp: Path) -> None:
    process = simulate(tmp)
    wait_until_under_way(tmp, process)
    process.terminate()  # the parent only: it stops its worker
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 143
    assert_stopped_cleanly(tmp, err, "SIGTERM")


def test_sigterm_leaves_a_kept_log_whole(tmp: Path, tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    process = simulate(tmp, "--db", str(db))
    wait_until_under_way(tmp, process)
    process.terminate()
    _, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 143
    assert_stopped_cleanly(tmp, err, "SIGTERM")
    assert f"the log {db} keeps what was committed" in err
    with open_log(f"sqlite:///{db}", create=False) as log:
        assert log.head() > 0
        assert log.verify().ok


def test_an_interrupted_command_in_process_restores_the_signal_handlers(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt() -> None:
        """SIGINT to this process alone, once the worker works: the command stops its worker
        (and, should the wait fail, the command still stops)."""
        try:
            wait_until_under_way(tmp)
        finally:
            os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt)
    interrupter.start()
    try:
        status = main(["simulate", "--hours", "8", "--seed", "3"])
    finally:
        interrupter.join()
    assert status == 130
    assert_stopped_cleanly(tmp, capsys.readouterr().err, "SIGINT")
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_profile_that_is_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "café"\n'.encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8") as refused:
        load_profile(bad)
    assert str(bad) in str(refused.value)
    db = tmp_path / "never.db"
    assert main(["simulate", "--hours", "0.1", "--profile", str(bad), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"onward simulate: {bad} is not TOML: not UTF-8 text "
        "(invalid continuation byte at byte 11)\n"  # é in Latin-1, then a quote
    )
    assert not db.exists()  # refused before anything started
