"""A lock on the SQLite file past the busy timeout but shorter than the lease: an outage for the
worker that runs a step (its heartbeats fail and back off), none for an idle peer on the same
host (its reads go on in WAL mode, and it writes nothing while the file is locked).

The promise: "silence during an outage (and for a lease after it) does not count", and a step
body runs again only when its worker died or lost its lease. What happened: the lock ended a
little before the running worker's last heartbeat ran out; the running worker's next try at a beat
waited out its back-off pause (up to two seconds), and the idle peer, which never saw the
outage, expired the claim the moment the lease ended and ran the step's body again while its
worker lived, unpaused.

Before a peer's silence counts, the idle peer now appends a heartbeat of its own and waits a
grace (the longest back-off pause and a second) after it went through: the running worker's
retried beat lands meanwhile, and the expiry is fenced by it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import IO

import pytest

from onward import Engine
from onward.events import TaskLeaseExpired, WorkerHeartbeat, open_log

pytestmark = pytest.mark.slow

APP = """
import os
import time

from onward import Engine

engine = Engine.open(lease=3.0, create=False)
JOURNAL = os.environ["JOURNAL"]


@engine.step(name="silence.work")
def work(i: int, hold: float) -> int:
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i} {os.getpid()}\\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    time.sleep(hold)
    return i


@engine.task(name="silence.job")
def job(hold: float) -> int:
    return work(0, hold) + work(1, 0.0)
"""


def test_a_lock_past_the_busy_timeout_shorter_than_the_lease_takes_no_live_task_over(
    tmp_path: Path,
) -> None:
    (tmp_path / "silence_app.py").write_text(textwrap.dedent(APP))
    journal = tmp_path / "journal.txt"
    db = tmp_path / "log.db"
    url = f"sqlite:///{db}?busy_timeout=0.2"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "JOURNAL": str(journal)}
    with Engine.open(url, session="silence") as engine:

        @engine.task(name="silence.job")
        def job(hold: float) -> int:
            raise AssertionError("runs in the workers")

        engine.submit(job, 8.0, key="one")

    errors: list[IO[str]] = []

    def worker(n: int) -> subprocess.Popen[bytes]:
        errors.append((tmp_path / f"worker-{n}.err").open("w"))
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "onward", "worker", "silence_app:engine"),
                *("--db", url, "--session", "silence"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors[-1],
        )

    running = worker(1)
    idle: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while not (journal.exists() and journal.read_text()):  # step 0's body runs
            assert time.monotonic() < deadline
            time.sleep(0.01)
        idle = worker(2)
        while "serving session" not in (tmp_path / "worker-2.err").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with open_log(url) as log:
            last = max(r.position for r in log.read())
            while True:  # the running worker's next beat: lock the file just after it
                beats = list(log.read(after=last))
                if beats:
                    last = beats[-1].position
                if any(isinstance(r.event, WorkerHeartbeat) for r in beats):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.005)
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        time.sleep(2.85)  # past the busy timeout (an outage), within the lease (3 s)
        lock.execute("COMMIT")
        lock.close()
        time.sleep(10)  # step 0 ends (8 s), step 1 runs
    finally:
        for process in (running, idle):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        for err in errors:
            err.close()
    runs = [line.split() for line in journal.read_text().splitlines()]
    with open_log(url) as log:
        expired = sum(isinstance(r.event, TaskLeaseExpired) for r in log.read())
    assert [i for i, _pid in runs] == ["0", "1"], (runs, expired)
    assert expired == 0


LIMITED = """
import os
import time

from onward import Engine

engine = Engine.open(lease=3.0, create=False)
engine.limit("one", concurrency=1)
JOURNAL = os.environ["JOURNAL"]


def journal(line):
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{time.monotonic_ns()} {line} {os.getpid()}\\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@engine.step(name="silence.limited", limit="one")
def limited(name: str, hold: float) -> int:
    journal(f"start {name}")
    time.sleep(hold)
    journal(f"end {name}")
    return 1


@engine.task(name="silence.limited_job")
def limited_job(name: str, hold: float) -> int:
    return limited(name, hold)
"""

SUBMIT = """
import sys

import silence_app

sys.stdin.readline()
silence_app.engine.submit("silence.limited_job", "second", 0.5, key="second")
"""


def test_a_lock_past_the_busy_timeout_frees_no_permit_of_a_live_worker(tmp_path: Path) -> None:
    """The same lock, and a task submitted just after the running worker's last beat ran out:
    the idle peer claims it and asks for the permit the running worker holds (concurrency 1).
    It took it, the holder's silence counting, and the two limited bodies ran at once."""
    (tmp_path / "silence_app.py").write_text(textwrap.dedent(LIMITED))
    journal = tmp_path / "journal.txt"
    db = tmp_path / "log.db"
    url = f"sqlite:///{db}?busy_timeout=0.2"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "JOURNAL": str(journal)}
    with Engine.open(url, session="silence") as engine:

        @engine.task(name="silence.limited_job")
        def limited_job(name: str, hold: float) -> int:
            raise AssertionError("runs in the workers")

        engine.submit(limited_job, "first", 8.0, key="first")
    errors: list[IO[str]] = []

    def start(n: int, *args: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        errors.append((tmp_path / f"process-{n}.err").open("w"))
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env={**env, "ONWARD_DB": url, "ONWARD_SESSION": "silence"},
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=errors[-1],
            text=True,
        )

    worker = ("-m", "onward", "worker", "silence_app:engine", "--db", url, "--session", "silence")
    running = start(1, *worker)
    processes = [running]
    try:
        deadline = time.monotonic() + 60
        while not (journal.exists() and journal.read_text()):  # the first body runs
            assert time.monotonic() < deadline
            time.sleep(0.01)
        processes.append(start(2, *worker))
        submitter = start(3, "-c", textwrap.dedent(SUBMIT), stdin=subprocess.PIPE)
        processes.append(submitter)
        while "serving session" not in (tmp_path / "process-2.err").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(1.0)  # the submitter has imported the application
        with open_log(url) as log:
            last = max(r.position for r in log.read())
            while True:  # the running worker's next beat: lock the file just after it
                beats = list(log.read(after=last))
                if beats:
                    last = beats[-1].position
                if any(isinstance(r.event, WorkerHeartbeat) for r in beats):
                    break
                assert time.monotonic() < deadline
                time.sleep(0.005)
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        time.sleep(2.85)  # past the busy timeout (an outage), within the lease (3 s)
        lock.execute("COMMIT")
        lock.close()
        time.sleep(0.15)  # the beat has run out, its retry waits out its back-off pause
        assert submitter.stdin is not None
        submitter.stdin.write("go\n")
        submitter.stdin.close()
        assert submitter.wait(60) == 0
        time.sleep(10)  # the first body ends (8 s), the second runs
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        for err in errors:
            err.close()
    lines = [line.split()[1:3] for line in sorted(journal.read_text().splitlines())]
    assert lines == [
        ["start", "first"],
        ["end", "first"],
        ["start", "second"],
        ["end", "second"],
    ], lines
