"""A worker killed (``kill -9``) just after it records a subtask's end: an idle peer runs the
parent that waited for it at once, not a third of a lease later.

The end of a subtask is the only news that makes its waiting parent runnable, and the worker
that recorded it is the only one that acts on it by itself. Here that worker dies at that very
moment (its observer kills it once the subtask's end is committed); its peer, idle on another
host (so that the dead process is not seen by its pid), must hear of the end as it hears of a
submission. The lease is long (60 s): an idle worker that only looks again on its own (every
third of a lease) fails the test's wait, which is a sixth of a lease.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from onward import Engine
from onward.events import TaskClaimed, TaskSucceeded, open_log
from onward.projections import task_stream
from tests.crash._fleet import SESSION, Fleet, wait_until

pytestmark = pytest.mark.slow

LEASE = 60.0

#: The parent waits for its one subtask; the subtask holds until the test opens its gate; a
#: worker started with FLEET_DOOMED=1 kills itself once it has recorded the subtask's end.
APP = """
import os
import signal
import time

from onward import Engine, Observer

DIR = os.environ["FLEET_DIR"]


class DiesAfterTheSubtask(Observer):
    def task_started(self, start):
        return start.name

    def task_ended(self, token, outcome):
        if os.environ.get("FLEET_DOOMED") == "1" and token == "fleet.child":
            os.kill(os.getpid(), signal.SIGKILL)


engine = Engine.open(
    lease=float(os.environ["FLEET_LEASE"]), create=False, observer=DiesAfterTheSubtask()
)


@engine.task(name="fleet.child")
def child() -> int:
    open(os.path.join(DIR, f"child-{os.getpid()}"), "w").close()
    while not os.path.exists(os.path.join(DIR, "gate")):
        time.sleep(0.005)
    return 41


@engine.task(name="fleet.parent")
def parent() -> int:
    (found,) = engine.wait([engine.submit(child)])
    return found + 1


@engine.task(name="fleet.ping")
def ping() -> int:
    return 0
"""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def submit(url: str, name: str) -> str:
    with Engine.open(url, session=SESSION) as engine:

        @engine.task(name=name)
        def stand_in() -> int:
            raise AssertionError("runs in the workers")

        return engine.submit(stand_in, key=name)


def ended(url: str, task_id: str) -> bool:
    with open_log(url) as log:
        return any(
            isinstance(r.event, TaskSucceeded) for r in log.read_stream(task_stream(task_id))
        )


def test_a_peer_runs_the_parent_at_once_when_the_worker_that_ended_its_subtask_dies(
    url: str, tmp_path: Path
) -> None:
    fleet = Fleet(tmp_path, url, app=APP)
    fleet.lease = LEASE
    try:
        (doomed,) = fleet.start(1, threads=1, extra={"FLEET_DOOMED": "1"})
        parent = submit(url, "fleet.parent")
        wait_until((tmp_path / f"child-{doomed}").exists, 60, "the subtask to run")
        (peer,) = fleet.start(1, threads=1, host="elsewhere")
        # The peer runs a task of its own (the doomed worker is busy): it serves, and has
        # caught up past the parent's wait, before the subtask ends.
        ping = submit(url, "fleet.ping")
        wait_until(lambda: ended(url, ping), 60, "the peer to run a task")
        (tmp_path / "gate").touch()
        assert fleet.workers[doomed].wait(timeout=60) == -signal.SIGKILL
        fleet.killed.add(doomed)
        wait_until(lambda: ended(url, parent), LEASE / 6, "a peer to run the parent")
    finally:
        for pid in fleet.alive():
            fleet.kill(pid)
        for err in fleet.errors.values():
            err.close()
    with open_log(url) as log:
        claims = [
            r.event.worker
            for r in log.read_stream(task_stream(parent))
            if isinstance(r.event, TaskClaimed)
        ]
    # The doomed worker ran the parent first (it waited), the peer ran it again.
    assert [c.split("/")[1] for c in claims] == [str(doomed), str(peer)]
