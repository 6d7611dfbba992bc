"""Many worker processes on one session, on SQLite and PostgreSQL: opened at the same instant,
killed with SIGKILL at random and replaced, paused past their lease, stopped with SIGTERM.

Every task succeeds once, no step outcome is recorded twice, a step body runs again only when
the process that ran it was killed (or lost its lease while paused), the log reopens and verifies.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onward.events import (
    StepCompleted,
    TaskLeaseExpired,
    TaskReleased,
    WorkerHeartbeat,
    WorkerStopped,
    open_log,
)
from tests.crash._fleet import Fleet, Progress, check_log, wait_until

TASKS = int(os.environ.get("ONWARD_FLEET_TASKS", "2000"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def test_workers_opened_at_once_and_killed_at_random_finish_every_task_once(
    url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("ONWARD_FLEET_SEED", str(random.randrange(2**32))))
    print(f"seed {seed}")  # shown on failure
    rng = random.Random(seed)
    fleet = Fleet(tmp_path, url)
    fleet.submit(TASKS)
    fleet.start(3)  # at the same instant, on a log they did not create
    fleet.start(1, host="elsewhere")  # a peer on another host: its tasks wait for its lease
    progress = Progress(url)
    # Kill a random worker (and start a new one) each time the work passes one of these marks.
    marks = sorted(rng.uniform(0.05, 0.85) for _ in range(5))
    kills = 0
    try:
        while (done := progress.succeeded()) < TASKS:
            time.sleep(0.02)
            for pid, process in fleet.workers.items():
                if pid not in fleet.killed and process.poll() is not None:
                    raise AssertionError(f"worker {pid} exited: {fleet.stderr(pid)}")
            if marks and done >= marks[0] * TASKS:
                marks.pop(0)
                fleet.kill(rng.choice(fleet.alive()))
                kills += 1
                fleet.start(1, host=rng.choice([None, "elsewhere"]))
        ended = fleet.stop_all()
    finally:
        progress.close()
        for pid in fleet.alive():
            os.kill(pid, signal.SIGKILL)
    assert kills == 5
    for pid, (code, err) in ended.items():
        assert code == 0, (pid, err)
    check_log(url, fleet, TASKS)
    with open_log(url) as log:
        stopped = [r for r in log.read() if isinstance(r.event, WorkerStopped)]
    assert {r.event.reason for r in stopped} == {"SIGTERM"}
    assert len(stopped) == len(ended)


def test_a_step_three_leases_long_runs_once_beside_a_worker_on_another_host(
    url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, url)
    fleet.lease = 1.0
    fleet.hold = 3 * fleet.lease
    fleet.submit(1, slow=1)
    (first,) = fleet.start(1, threads=1)
    wait_until(lambda: bool(fleet.runs()), 30, "the slow step to start")
    fleet.start(1, threads=1, host="elsewhere")  # it would take the task over if it could
    progress = Progress(url)
    try:
        wait_until(lambda: progress.succeeded() == 1, 60, "the task")
    finally:
        progress.close()
    fleet.stop_all()
    assert fleet.runs()[("t0", 0)] == [first]
    with open_log(url) as log:
        events = [r.event for r in log.read()]
    assert not any(isinstance(e, TaskLeaseExpired) for e in events)
    assert sum(isinstance(e, WorkerHeartbeat) for e in events) >= 2


def test_a_worker_paused_past_its_lease_appends_nothing_stale(url: str, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, url)
    fleet.lease = 1.0
    fleet.hold = 3.0
    fleet.submit(1, slow=1)
    (paused,) = fleet.start(1, threads=1)
    wait_until(lambda: bool(fleet.runs()), 30, "the slow step to start")
    fleet.kill(paused, signal.SIGSTOP)
    (peer,) = fleet.start(1, threads=1, host="elsewhere")
    progress = Progress(url)
    try:
        wait_until(lambda: progress.succeeded() == 1, 60, "the peer to finish the task")
        fleet.kill(paused, signal.SIGCONT)
        # The paused worker wakes in the middle of its step: whatever it records next is at a
        # version the peer moved past, so it is refused; it lets the task go.
        time.sleep(fleet.hold + fleet.lease)
    finally:
        progress.close()
    ended = fleet.stop_all()
    assert all(code == 0 for code, _ in ended.values()), ended
    check_log(url, fleet, 1, lost_lease=frozenset({paused}))
    assert fleet.runs()[("t0", 0)] == [paused, peer]
    with open_log(url) as log:
        history = [r for r in log.read() if r.stream.startswith("task-")]
    completed = [r for r in history if isinstance(r.event, StepCompleted)]
    assert all(r.meta.actor.split("/")[1] == str(peer) for r in completed)
    assert any(isinstance(r.event, TaskLeaseExpired) for r in history)


def test_a_lone_worker_paused_past_its_lease_goes_on_with_its_task(
    url: str, tmp_path: Path
) -> None:
    """No peer took the task while it was paused: its claim is still its own, and the step in
    flight is recorded once (the worker does not expire its own live claim)."""
    fleet = Fleet(tmp_path, url)
    fleet.lease = 1.0
    fleet.hold = 2.0
    fleet.submit(1, slow=1)
    (paused,) = fleet.start(1, threads=1)
    wait_until(lambda: bool(fleet.runs()), 30, "the slow step to start")
    fleet.kill(paused, signal.SIGSTOP)
    time.sleep(3 * fleet.lease)  # real time: the pause must outlast the lease
    fleet.kill(paused, signal.SIGCONT)
    progress = Progress(url)
    try:
        wait_until(lambda: progress.succeeded() == 1, 60, "the worker to finish its task")
    finally:
        progress.close()
    fleet.stop_all()
    check_log(url, fleet, 1)
    assert fleet.runs()[("t0", 0)] == [paused]
    with open_log(url) as log:
        assert not [r for r in log.read() if isinstance(r.event, TaskLeaseExpired)]


def test_an_idle_worker_takes_over_a_killed_peer_of_its_host_within_a_second_or_so(
    url: str, tmp_path: Path
) -> None:
    """The dead process appends nothing that would wake its idle peer: the peer looks for dead
    workers of its host often, not only every third of a lease (20 s here)."""
    fleet = Fleet(tmp_path, url)
    fleet.lease = 60.0
    fleet.hold = 600.0
    fleet.submit(1, slow=1)
    (doomed,) = fleet.start(1, threads=1)
    wait_until(lambda: bool(fleet.runs()), 30, "the slow step to start")
    fleet.hold = 0.0  # for the peer's run of it
    (peer,) = fleet.start(1, threads=1)
    wait_until(lambda: fleet.serving(peer), 30, "the peer to serve")
    fleet.kill(doomed)
    progress = Progress(url)
    try:
        killed = time.monotonic()
        wait_until(lambda: progress.succeeded() == 1, 60, "the peer to take the task over")
        assert time.monotonic() - killed < fleet.lease / 6
    finally:
        progress.close()
    fleet.stop_all()
    assert fleet.runs()[("t0", 0)] == [doomed, peer]


def test_sigterm_hands_running_tasks_back_at_their_next_step(url: str, tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, url)
    fleet.submit(4, slow=4)
    (stopping,) = fleet.start(1, threads=4)
    wait_until(lambda: len(fleet.runs()) == 4, 30, "four slow steps to start")
    os.kill(stopping, signal.SIGTERM)
    assert fleet.workers[stopping].wait(timeout=60) == 0, fleet.stderr(stopping)
    with open_log(url) as log:
        released = [r for r in log.read() if isinstance(r.event, TaskReleased)]
    assert len(released) == 4
    (peer,) = fleet.start(1, threads=4)
    progress = Progress(url)
    try:
        wait_until(lambda: progress.succeeded() == 4, 60, "a peer to take the tasks at once")
    finally:
        progress.close()
    fleet.stop_all()
    check_log(url, fleet, 4)
    for task in ("t0", "t1", "t2", "t3"):
        assert fleet.runs()[(task, 0)] == [stopping]  # its first step finished before the stop
        assert fleet.runs()[(task, 1)] == [peer]


@pytest.mark.parametrize("hangup", ["default", "ignored"])
def test_a_hangup_stops_a_worker_gracefully_unless_it_is_ignored(
    tmp_path: Path, hangup: str
) -> None:
    """SIGHUP (its terminal closed, an SSH session ended) killed the worker at once, its
    tasks left running until their leases ran out. Under ``nohup`` it stays ignored."""
    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path / 'fleet.db'}")
    fleet.submit(1, slow=4)
    disposition = signal.SIG_DFL if hangup == "default" else signal.SIG_IGN
    before = signal.signal(signal.SIGHUP, disposition)  # what the worker inherits
    try:
        (stopping,) = fleet.start(1, threads=1)
    finally:
        signal.signal(signal.SIGHUP, before)
    wait_until(lambda: len(fleet.runs()) == 1, 30, "the slow step to start")
    os.kill(stopping, signal.SIGHUP)
    if hangup == "ignored":
        os.kill(stopping, signal.SIGTERM)  # the first signal it takes
    assert fleet.workers[stopping].wait(timeout=60) == 0, fleet.stderr(stopping)
    fleet.stop_all()
    with open_log(fleet.url) as log:
        events = [r.event for r in log.read()]
    assert sum(isinstance(e, TaskReleased) for e in events) == 1  # handed back, not left running
    stopped = [e.reason for e in events if isinstance(e, WorkerStopped)]
    assert stopped == ["SIGHUP" if hangup == "default" else "SIGTERM"]


def test_a_second_sigterm_stops_the_worker_at_once(tmp_path: Path) -> None:
    """The first SIGTERM waits for the steps in flight; a second stops the worker at once,
    without recording them (their tasks are taken over when their leases run out)."""
    fleet = Fleet(tmp_path, f"sqlite:///{tmp_path / 'fleet.db'}", hold=600.0)
    fleet.submit(2, slow=2)
    (stopping,) = fleet.start(1, threads=2)
    wait_until(lambda: len(fleet.runs()) == 2, 30, "two slow steps to start")
    os.kill(stopping, signal.SIGTERM)
    wait_until(lambda: "hand their tasks back" in fleet.stderr(stopping), 30, "the first SIGTERM")
    os.kill(stopping, signal.SIGTERM)
    assert fleet.workers[stopping].wait(timeout=30) == 143, fleet.stderr(stopping)  # 128 + 15
    assert "stopped at once" in fleet.stderr(stopping)
    fleet.stop_all()
    with open_log(fleet.url) as log:
        assert not [r for r in log.read() if isinstance(r.event, StepCompleted)]


def test_a_second_sigterm_stops_the_worker_at_once_during_a_storage_outage(
    tmp_path: Path,
) -> None:
    """The log is locked by another process while the worker's tasks run: an outage it rides
    out, its step outcomes waiting to be appended. A second SIGTERM still stops the worker at
    once, without waiting for the storage to come back; the log verifies afterwards."""
    path = tmp_path / "fleet.db"
    fleet = Fleet(tmp_path, f"sqlite:///{path}")
    fleet.submit(200)
    (stopping,) = fleet.start(1, threads=2)
    # A busy timeout long enough to get the lock between the worker's appends (0.1 s lost
    # that race now and then).
    outage = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        wait_until(lambda: len(fleet.runs()) >= 2, 30, "steps to run")
        outage.execute("BEGIN EXCLUSIVE")  # every append now waits for the lock
        os.kill(stopping, signal.SIGTERM)
        # Taken (the worker may be riding the outage out in a claim of its own, and say no more).
        wait_until(lambda: "stopping once" in fleet.stderr(stopping), 30, "the first SIGTERM")
        os.kill(stopping, signal.SIGTERM)
        # The outage outlasts this wait (the lock is held until after it, and the worker would
        # ride it out for its tolerance, 300 s).
        try:
            code = fleet.workers[stopping].wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 143, fleet.stderr(stopping)
    finally:
        outage.close()
        if fleet.workers[stopping].poll() is None:  # it failed to stop: leave no process
            fleet.kill(stopping)
            fleet.stop_all()  # nor an open file
    assert "stopped at once" in fleet.stderr(stopping)
    fleet.stop_all()
    with open_log(fleet.url) as log:
        assert log.verify().ok
