"""PostgreSQL stopped mid-run under a fleet of worker processes (and brought back whatever
happens): an outage shorter than the workers' tolerance is ridden out and nothing is lost; a
longer one stops the workers with StorageUnavailable, fails no task, and new workers finish."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from onward.events import TaskFailed, open_log
from tests.crash._fleet import Fleet, Progress, check_log, wait_until

pytestmark = pytest.mark.postgres

CLUSTER = ["pg_ctlcluster", "--skip-systemctl-redirect"]


def cluster(action: str) -> None:
    versions = sorted(os.listdir("/etc/postgresql"))
    done = subprocess.run(
        [*CLUSTER, versions[-1], "main", action, *(["-m", "fast"] if action == "stop" else [])],
        check=False,
        timeout=120,
    )
    if done.returncode and not (action == "start" and ready()):  # started by someone else
        raise subprocess.CalledProcessError(done.returncode, done.args)


def ready() -> bool:
    return (
        subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], check=False
        ).returncode
        == 0
    )


@pytest.fixture
def outage() -> Iterator[None]:
    """Stop the server when the test says; always start it again afterwards."""
    if not os.path.isdir("/etc/postgresql"):
        pytest.skip("no local PostgreSQL cluster to stop")  # CI has one: this does not skip
    try:
        yield
    finally:
        if not ready():
            cluster("start")
        wait_until(ready, 60, "PostgreSQL to accept connections")


#: The link's own timers cut short (libpq's keepalives and TCP user timeout, the call and
#: connect timeouts: about 30 s by default, 3 s here), so that an outage outlasts each of them
#: several times over in seconds rather than minutes.
SHORT_TIMERS = {
    "call_timeout": "3",
    "connect_timeout": "2",
    "keepalives_idle": "1",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "tcp_user_timeout": "3000",
}


@pytest.mark.parametrize(
    ("down", "timers"),
    [
        pytest.param(30.0, {}, id="as-long-as-the-default-timers"),
        pytest.param(12.0, SHORT_TIMERS, id="four-times-the-short-timers"),
    ],
)
def test_workers_ride_out_a_postgres_outage(
    postgres_url: str, tmp_path: Path, outage: None, down: float, timers: dict[str, str]
) -> None:
    url = postgres_url + "".join(f"&{key}={value}" for key, value in timers.items())
    fleet = Fleet(tmp_path, url)
    fleet.hold = 0.0
    fleet.lease = down + 60.0  # the claims outlast the outage: nobody takes a task over
    tasks = 400
    fleet.submit(tasks)
    fleet.start(2)
    progress = Progress(postgres_url)
    try:
        wait_until(lambda: progress.succeeded() >= tasks // 5, 120, "a fifth of the tasks")
        cluster("stop")
        time.sleep(down)
        cluster("start")
        wait_until(lambda: progress.succeeded() == tasks, 300, "every task after the outage")
    finally:
        progress.close()
    ended = fleet.stop_all()
    assert all(code == 0 for code, _ in ended.values()), ended
    check_log(postgres_url, fleet, tasks)


def test_an_outage_past_the_tolerance_stops_the_workers_and_fails_no_task(
    postgres_url: str, tmp_path: Path, outage: None
) -> None:
    fleet = Fleet(tmp_path, postgres_url)
    fleet.hold = 0.0
    tasks = 300
    fleet.submit(tasks)
    first = fleet.start(2, extra={"FLEET_TOLERANCE": "3"})
    progress = Progress(postgres_url)
    try:
        wait_until(lambda: progress.succeeded() >= tasks // 5, 120, "a fifth of the tasks")
        cluster("stop")
        for pid in first:  # past their tolerance, they stop on their own
            assert fleet.workers[pid].wait(timeout=60) != 0
            assert "StorageUnavailable" in fleet.stderr(pid) or "unavailable for" in fleet.stderr(
                pid
            )
        cluster("start")
        wait_until(ready, 60, "PostgreSQL to accept connections")
        fleet.killed.update(first)  # they stopped mid-step: a step in flight may run again
        fleet.start(2)
        wait_until(lambda: progress.succeeded() == tasks, 300, "new workers to finish")
    finally:
        progress.close()
    fleet.stop_all()
    check_log(postgres_url, fleet, tasks)
    with open_log(postgres_url) as log:
        assert not any(isinstance(r.event, TaskFailed) for r in log.read())


OPEN_AND_RUN = """
import logging, sys
logging.basicConfig(level=logging.WARNING)
from onward import Engine
engine = Engine.open(sys.argv[1], session="restart", outage_tolerance=120)

@engine.task(name="hello")
def hello() -> str:
    return "hello"

task = engine.submit("hello")
engine.run()
print("result", engine.result(task))
engine.close()
"""


def test_a_worker_started_while_postgres_restarts_waits_for_it(
    postgres_url: str, tmp_path: Path, outage: None
) -> None:
    base = postgres_url.split("?", maxsplit=1)[0]
    # A smart shutdown waits for this connection to end; meanwhile the server answers every
    # new one "the database system is shutting down".
    held = psycopg.connect(base, autocommit=True)
    versions = sorted(os.listdir("/etc/postgresql"))
    stopper = subprocess.Popen([*CLUSTER, versions[-1], "main", "stop", "-m", "smart"])
    worker: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: not ready(), 60, "PostgreSQL to refuse new connections")
        stderr = tmp_path / "worker.err"
        with stderr.open("w") as err:
            worker = subprocess.Popen(
                [sys.executable, "-c", OPEN_AND_RUN, postgres_url],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        # The worker meets the shutdown, says so and waits (before, it exited at once).
        wait_until(
            lambda: worker.poll() is not None or "restarting" in stderr.read_text(),
            60,
            "the worker to meet the shutting-down server",
        )
        assert worker.poll() is None, stderr.read_text()
        held.close()
        assert stopper.wait(timeout=120) == 0
        assert worker.poll() is None, stderr.read_text()  # refused now: it still waits
        cluster("start")
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr.read_text()
        assert out.strip() == "result hello"
    finally:
        held.close()
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        if stopper.poll() is None:
            stopper.wait(timeout=120)


def test_a_server_never_seen_restarting_fails_the_opening_at_once(
    postgres_url: str,
) -> None:
    # A wrong port refuses connections as a stopped server does: it is reported, not waited for.
    from onward.events import BackendError

    wrong = postgres_url.replace(":5432/", ":1/")
    assert wrong != postgres_url
    started = time.monotonic()
    with pytest.raises(BackendError, match="cannot open the PostgreSQL log"):
        open_log(wrong, outage_tolerance=60)
    assert time.monotonic() - started < 30
