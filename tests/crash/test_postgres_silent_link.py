"""Workers that reach PostgreSQL through a TCP proxy of its own process, and the proxy stopped
(SIGSTOP: a silently dead link, no reset, the kernel still acknowledging what is sent) or
killed and started again on the same port.

A worker behind a stopped proxy notices within its call timeout instead of waiting forever on
a read; a peer connected directly takes its task over within about a lease; when the link
comes back, the stalled worker is fenced: no step outcome is recorded twice and the log
verifies. A proxy killed and restarted is ridden out as an outage.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from tests.crash._fleet import Fleet, Progress, check_log, wait_until

pytestmark = pytest.mark.postgres

PROXY = Path(__file__).with_name("_proxy.py")


class Proxy:
    """The proxy process: start, stop, continue, kill and start again on the same port."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PROXY), str(self.port), "5432"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """kill -9: every connection through it is cut."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()  # a stopped process dies of SIGKILL too
            self.process.wait()
            assert self.process.stdout is not None
            self.process.stdout.close()
            self.process = None

    def url(self, direct: str, **options: str) -> str:
        """The direct URL through the proxy, with these options added."""
        url = direct.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")
        assert url != direct, direct
        return url + "".join(f"&{key}={value}" for key, value in options.items())


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    """A started proxy, killed afterwards whatever happens."""
    proxy = Proxy()
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.kill()


def clean_up(fleet: Fleet, proxy: Proxy) -> None:
    """Whatever happened: the proxy killed, every worker still alive killed, their files
    closed."""
    proxy.kill()
    for pid in fleet.alive():
        fleet.kill(pid)
    for err in fleet.errors.values():
        err.close()


def listening(url: str) -> bool:
    """Whether a connection to the server listens on the channel of the log at ``url``: its
    last statement was the ``LISTEN``, or the question a silent listening connection is
    asked (no other connection asks it)."""
    schema = parse_qs(urlsplit(url).query)["schema"][0]
    with psycopg.connect(url.split("?", maxsplit=1)[0], autocommit=True) as connection:
        found = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query IN (%s, 'SELECT 1')"
            " AND pid <> pg_backend_pid()",
            (f'LISTEN "onward.{schema}.onward"',),
        ).fetchone()
    return found is not None and found[0] > 0


def started_step(fleet: Fleet, pid: int, task: str, index: int) -> bool:
    return pid in fleet.runs().get((task, index), [])


#: The tasks of a stalled-link test: the first one's first step outlasts the lease.
STALL_TASKS = 6


def stall_one_worker(
    fleet: Fleet, proxy: Proxy, direct: str, tolerance: str | None = None
) -> tuple[int, int]:
    """A worker behind the proxy begins the slow task's first step (which outlasts its lease),
    the proxy is stopped under it, and a peer connected directly finishes every task.

    Returns:
        The stalled worker's pid and the peer's.
    """
    fleet.lease = 2.0
    fleet.hold = 4.0  # the slow task's first step outlasts the lease
    fleet.submit(STALL_TASKS, slow=1)
    fleet.url = proxy.url(direct, call_timeout="3", connect_timeout="2")
    extra = {} if tolerance is None else {"FLEET_TOLERANCE": tolerance}
    (stalled,) = fleet.start(1, threads=1, extra=extra)
    wait_until(lambda: started_step(fleet, stalled, "t0", 0), 60, "the slow step to begin")
    proxy.signal(signal.SIGSTOP)
    fleet.url = direct
    (peer,) = fleet.start(1, threads=2)
    progress = Progress(direct)
    try:
        wait_until(lambda: progress.succeeded() == STALL_TASKS, 120, "the peer to finish")
    finally:
        progress.close()
    return stalled, peer


def test_a_stopped_link_is_noticed_and_the_peer_takes_over(
    postgres_url: str, tmp_path: Path, proxy: Proxy
) -> None:
    fleet = Fleet(tmp_path, postgres_url)
    try:
        stalled, peer = stall_one_worker(fleet, proxy, postgres_url)
        # Not a read that waits forever: the stalled worker counts the silence as an outage.
        wait_until(
            lambda: "is unavailable, retrying" in fleet.stderr(stalled),
            60,
            "the stalled worker to notice the dead link",
        )
        proxy.signal(signal.SIGCONT)
        ended = fleet.stop_all()
    finally:
        clean_up(fleet, proxy)
    assert all(code == 0 for code, _ in ended.values()), ended
    assert peer in ended
    check_log(postgres_url, fleet, STALL_TASKS, lost_lease=frozenset({stalled}))


def test_a_killed_and_restarted_proxy_is_ridden_out(
    postgres_url: str, tmp_path: Path, proxy: Proxy
) -> None:
    fleet = Fleet(tmp_path, proxy.url(postgres_url, call_timeout="3", connect_timeout="2"))
    fleet.lease = 60.0  # the claims outlast the cut: nobody takes a task over
    fleet.hold = 0.0
    tasks = 200
    fleet.submit(tasks)
    progress = Progress(postgres_url)
    try:
        fleet.start(1, threads=2)
        wait_until(lambda: progress.succeeded() >= tasks // 5, 120, "a fifth of the tasks")
        proxy.kill()
        time.sleep(3)  # real processes: the link stays cut for a while
        proxy.start()
        wait_until(lambda: progress.succeeded() == tasks, 120, "every task after the cut")
        ended = fleet.stop_all()
    finally:
        progress.close()
        clean_up(fleet, proxy)
    assert all(code == 0 for code, _ in ended.values()), ended
    check_log(postgres_url, fleet, tasks)


def test_a_worker_behind_a_link_that_stays_dead_gives_up_within_its_tolerance(
    postgres_url: str, tmp_path: Path, proxy: Proxy
) -> None:
    fleet = Fleet(tmp_path, postgres_url)
    try:
        stalled, peer = stall_one_worker(fleet, proxy, postgres_url, tolerance="8")
        # No read waits forever: the worker's calls fail, it rides the silence out as an
        # outage for its tolerance, then stops with a typed error.
        wait_until(lambda: stalled not in fleet.alive(), 90, "the stalled worker to give up")
        proxy.signal(signal.SIGCONT)
        ended = fleet.stop_all()
    finally:
        clean_up(fleet, proxy)
    code, said = ended[stalled]
    assert code != 0, said
    assert "was unavailable for" in said, said  # StorageUnavailable
    assert ended[peer][0] == 0, ended[peer]
    check_log(postgres_url, fleet, STALL_TASKS, lost_lease=frozenset({stalled}))


def test_an_idle_worker_notices_its_listening_connection_died_silently(
    postgres_url: str, tmp_path: Path, proxy: Proxy
) -> None:
    """An idle worker waits on LISTEN: a link that dies without a reset would pass for a quiet
    log (its notifications lost for good) unless the connection is asked for a reply."""
    fleet = Fleet(tmp_path, proxy.url(postgres_url, call_timeout="2", connect_timeout="2"))
    try:
        (idle,) = fleet.start(1, threads=1)
        wait_until(lambda: fleet.serving(idle), 60, "the worker to serve")
        # Its watch connects after it says it serves: a link stopped before that would be
        # noticed by the connect's timeout, not by the question to a silent connection.
        wait_until(lambda: listening(postgres_url), 60, "the worker to listen")
        proxy.signal(signal.SIGSTOP)
        wait_until(
            lambda: any(
                line.startswith("watching") and "no reply from the server" in line
                for line in fleet.stderr(idle).splitlines()
            ),
            60,
            "the idle worker to notice its listening connection is dead",
        )
        proxy.signal(signal.SIGCONT)
        fleet.submit(3)  # heard again, and run
        progress = Progress(postgres_url)
        try:
            wait_until(lambda: progress.succeeded() == 3, 120, "the tasks after the link is back")
        finally:
            progress.close()
        ended = fleet.stop_all()
    finally:
        clean_up(fleet, proxy)
    assert ended[idle][0] == 0, ended[idle]
    check_log(postgres_url, fleet, 3)
