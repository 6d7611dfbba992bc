"""Workers killed (``kill -9``) while they steer running work: a durable sleep, a ``recv``
waiting for its message, a schedule's tick, the re-run of a retried task, a fork's fresh steps
and a step holding a queue limit's permit.

Each test starts a real worker process (``_steering.py``), waits for the line it prints at the
moment that matters, kills it with SIGKILL, and resumes with a new engine (in this process,
its clock injected). The step bodies append to a side-effect file, so the tests count which
bodies ran, and in which process: no completed step runs again (only the one in flight at the
kill may), sleeps keep their deadline, a message is taken once, a tick runs once, a dead
worker's permit comes back. And a process that looked at a task before a worker (or the CLI)
changed it steers it as the log has it now: it retries the task a worker failed, cancels the
one another process retried.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.events import (
    MessageReceived,
    MessageSent,
    PermitTaken,
    Recorded,
    ScheduleTicked,
    StepCompleted,
    StepStarted,
    TaskCancelled,
    TaskFailed,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    decode_value,
    open_log,
)
from onward.projections import inbox_stream
from onward.runtime.limits import Limits
from tests.crash._steering import (
    CRON,
    FIRST_TICK,
    LEASE,
    LIMIT,
    NAP,
    SESSION,
    START,
    Clock,
    define,
)

CHILD = Path(__file__).with_name("_steering.py")
ROOT = Path(__file__).parents[2]
#: How long a worker may take to reach a moment (a bound for a loaded machine, never waited
#: out when all is well).
PATIENCE = 120.0
#: How far the resumed engines' clocks may move (past the longest wait of the tests).
HORIZON = START + 2 * NAP


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'steer.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture(params=["sync", "async"])
def path(request: pytest.FixtureRequest) -> str:
    """The worker serves on the sync path (``serve``) or on an event loop (``serve_async``,
    the tasks ``async def``); the resumed engine runs the same way."""
    return str(request.param)


def run(engine: Engine, path: str = "sync") -> None:
    if path == "async":
        asyncio.run(engine.run_async())
    else:
        engine.run()


def named(task: str, path: str) -> str:
    return f"{task}-async" if path == "async" else task


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'steer.db'}"


class Worker:
    """A worker process of ``_steering.py``, read line by line, killed with SIGKILL."""

    def __init__(self, tmp_path: Path, url: str, host: str | None = None, **plan: Any) -> None:
        self.tmp_path = tmp_path
        n = len(list(tmp_path.glob("plan-*.json")))
        plan_path = tmp_path / f"plan-{n}.json"
        plan_path.write_text(json.dumps({"url": url, "dir": str(tmp_path), **plan}))
        self.errors = tmp_path / f"stderr-{n}.txt"
        with self.errors.open("w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD), str(plan_path)],
                env={
                    **os.environ,
                    "PYTHONPATH": str(ROOT),
                    **({"ONWARD_HOST": host} if host is not None else {}),
                },
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        self._buffer = b""
        self.said: list[str] = []

    def expect(self, line: str) -> None:
        """Read the worker's lines until ``line`` (waiting on its pipe, at most PATIENCE)."""
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            while b"\n" in self._buffer:
                got, self._buffer = self._buffer.split(b"\n", 1)
                self.said.append(got.decode())
                if got.decode() == line:
                    return
            ready, _, _ = select.select([stdout], [], [], PATIENCE)
            chunk = os.read(stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.kill()
                raise AssertionError(
                    f"the worker never said {line!r} (it said {self.said}); its stderr:\n"
                    + self.errors.read_text()
                )
            self._buffer += chunk

    def kill(self) -> None:
        """SIGKILL it and reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=PATIENCE)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def killed_at(self, line: str) -> int:
        """Wait for ``line``, then SIGKILL; returns the dead worker's pid."""
        self.expect(line)
        self.kill()
        assert self.process.returncode == -signal.SIGKILL
        return self.process.pid


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def start(workers: list[Worker], tmp_path: Path, url: str, **plan: Any) -> Worker:
    worker = Worker(tmp_path, url, **plan)
    workers.append(worker)
    return worker


def waits(clock: Clock, horizon: float = HORIZON) -> Callable[[float], None]:
    """An engine's sleep that moves its clock, and fails a run that would wait past
    ``horizon`` (for something that never comes)."""

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        assert clock.now < horizon, f"the run still waits at {clock.now}: nothing came"

    return sleep


def resume(url: str, tmp_path: Path, clock: Clock, **options: Any) -> Engine:
    """A new engine on the session, the tasks defined (its sleeps move its clock)."""
    engine = Engine.open(
        url, session=SESSION, clock=clock, sleep=waits(clock), lease=LEASE, healing=False
    )
    define(engine, tmp_path / "side-effects.txt", **options)
    return engine


def side_effects(tmp_path: Path) -> list[tuple[str, int]]:
    """The step bodies that ran, in order: (what, pid)."""
    path = tmp_path / "side-effects.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(what, int(pid)) for what, pid in (line.split(" ") for line in lines)]


def runs(tmp_path: Path) -> Counter[str]:
    """How many times each step body ran."""
    return Counter(what for what, _ in side_effects(tmp_path))


def history(engine: Engine, task_id: str) -> list[Recorded]:
    return engine.log.read_stream(f"task-{task_id}")


def completed(engine: Engine, task_id: str) -> Counter[int]:
    """How many times each step index of a task is recorded as completed."""
    return Counter(
        r.event.index for r in history(engine, task_id) if isinstance(r.event, StepCompleted)
    )


def only_task(engine: Engine, name: str) -> str:
    (task,) = [t for t in engine.tasks() if t.name == name]
    return task.task_id


def check_verified(url: str) -> None:
    with open_log(url) as log:
        report = log.verify()
    assert report.ok, [str(p) for p in report.problems]


# -- a durable sleep ---------------------------------------------------------------------------


def test_a_sleep_killed_midway_keeps_its_deadline(
    url: str, path: str, tmp_path: Path, workers: list[Worker]
) -> None:
    plan = {"submit": [[named("sleeper", path), [], "nap"]], "async": path == "async"}
    dead = start(workers, tmp_path, url, **plan).killed_at("idle")  # it waits for the timer
    assert side_effects(tmp_path) == [("before-sleep", dead)]

    clock = Clock(START + 1000.0)  # back 1000 s into the nap
    with resume(url, tmp_path, clock) as engine:
        task_id = only_task(engine, named("sleeper", path))
        (started,) = [r.event for r in history(engine, task_id) if isinstance(r.event, StepStarted)]
        assert started.wake_at == START + NAP
        run(engine, path)  # waits (with its clock) for the rest of the nap only
        assert clock.now == START + NAP  # not a new nap of NAP from the restart
        assert engine.result(task_id) == ["before-sleep", "after-sleep"]
        assert completed(engine, task_id) == {0: 1, 1: 1, 2: 1}
    assert runs(tmp_path) == {"before-sleep": 1, "after-sleep": 1}
    check_verified(url)


def test_a_worker_killed_just_after_a_sleep_ended_does_not_sleep_again(
    sqlite_url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    url = sqlite_url
    start(workers, tmp_path, url, submit=[["sleeper", [], "nap"]]).killed_at("idle")
    # The next worker comes after the nap: it ends it and dies in the step after it.
    late = start(workers, tmp_path, url, start=START + NAP + 1.0, hold="after-sleep")
    late.killed_at("in after-sleep")

    clock = Clock(START + NAP + 2.0)
    with resume(url, tmp_path, clock) as engine:
        task_id = only_task(engine, "sleeper")
        run(engine)
        assert clock.now == START + NAP + 2.0  # no new nap: the recorded one is over
        assert engine.result(task_id) == ["before-sleep", "after-sleep"]
        assert completed(engine, task_id) == {0: 1, 1: 1, 2: 1}
    assert runs(tmp_path) == {"before-sleep": 1, "after-sleep": 2}  # the one in flight, again
    check_verified(url)


# -- a message ---------------------------------------------------------------------------------


def test_a_message_sent_while_the_worker_was_dead_is_taken_exactly_once(
    url: str, path: str, tmp_path: Path, workers: list[Worker]
) -> None:
    name = named("listener", path)
    serving = {"async": path == "async"}
    first = start(workers, tmp_path, url, submit=[[name, [], "ear"]], **serving)
    first.killed_at("idle")  # the task waits in recv; the worker waits for news
    with Engine.open(url, session="sender", clock=Clock()) as sender:  # another process's send
        (task,) = [t for t in sender.projections.tasks.tasks.values() if t.name == name]
        assert task.state == "waiting"
        sender.send(task.task_id, "go", "first")

    # The next worker takes the message, then dies in the step that uses it.
    second = start(workers, tmp_path, url, hold="use-first", **serving)
    second.killed_at("in use-first")
    with Engine.open(url, session="sender", clock=Clock()) as sender:
        sender.send(task.task_id, "go", "second")  # must stay in the inbox

    with resume(url, tmp_path, Clock()) as engine:
        run(engine, path)
        assert engine.result(task.task_id) == "use-first"
        received = [r.event for r in history(engine, task.task_id)]
        taken = [e for e in received if isinstance(e, MessageReceived)]
        assert [(e.index, e.topic, e.inbox_version) for e in taken] == [(1, "go", 1)]
        assert completed(engine, task.task_id) == {0: 1, 2: 1}
    # The step in flight at the kill ran again, with the same message; nothing else did.
    assert runs(tmp_path) == {"before-recv": 1, "use-first": 2}
    check_verified(url)


def test_a_recv_killed_while_waiting_keeps_its_timeout(
    sqlite_url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    url = sqlite_url
    start(workers, tmp_path, url, submit=[["patient", [], "ear"]]).killed_at("idle")

    clock = Clock(START + 1000.0)
    with resume(url, tmp_path, clock) as engine:
        task_id = only_task(engine, "patient")
        run(engine)  # nothing comes: it waits for the rest of the timeout only
        assert clock.now == START + NAP
        assert engine.result(task_id) == "use-None"
        taken = [r.event for r in history(engine, task_id) if isinstance(r.event, MessageReceived)]
        assert [(e.index, e.inbox_version) for e in taken] == [(1, None)]
    assert runs(tmp_path) == {"before-recv": 1, "use-None": 1}
    check_verified(url)


@pytest.mark.parametrize("hold", ["post-mid", "after-send"])
def test_messages_a_task_sends_are_sent_once_whatever_re_runs_it(
    url: str, tmp_path: Path, workers: list[Worker], hold: str
) -> None:
    """One message from the task's body before the kill, one from a step's body, one after:
    the re-run of the task (and of the step in flight) sends none of them again."""
    with resume(url, tmp_path, Clock()) as engine:
        to = engine.submit("child", "inbox only")  # never run: its inbox is what counts
    child = start(workers, tmp_path, url, hold=hold, submit=[["courier", [to], "c"]])
    child.killed_at(f"in {hold}")

    with resume(url, tmp_path, Clock()) as engine:
        courier = only_task(engine, "courier")
        engine.run()
        assert engine.result(courier) == "sent"
        inbox = [r.event for r in engine.log.read_stream(inbox_stream(to))]
        assert [(e.topic, decode_value(e.value)) for e in inbox if isinstance(e, MessageSent)] == [
            ("go", "first"),
            ("go", "mid"),
            ("go", "last"),
        ]
    # The step in flight at the kill ran again (its message was not sent again).
    assert runs(tmp_path)[hold] == 2
    check_verified(url)


@pytest.mark.parametrize("hold", ["spawn-one", "after-spawn"])
def test_subtasks_submitted_in_a_steps_body_keep_their_ids_across_a_kill(
    url: str, tmp_path: Path, workers: list[Worker], hold: str
) -> None:
    """A completed step's body does not run on the re-run: its subtask must not shift the ids
    of the subtasks the task's body submits after it (the second would be taken for the
    first, and never run)."""
    start(workers, tmp_path, url, hold=hold, submit=[["spawner", [], "s"]]).killed_at(f"in {hold}")

    with resume(url, tmp_path, Clock()) as engine:
        spawner = only_task(engine, "spawner")
        engine.run()
        one, two = engine.result(spawner)
        assert one != two
        assert (engine.result(one), engine.result(two)) == ("one", "two")
        children = [t for t in engine.tasks() if t.name == "child"]
        assert sorted(t.task_id for t in children) == sorted([one, two])
    assert runs(tmp_path)[hold] == 2
    check_verified(url)


# -- a schedule's tick -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment", ["tick before", "tick after", "in tick-work"], ids=["before", "after", "in-task"]
)
def test_a_tick_around_a_kill_runs_exactly_once(
    url: str, tmp_path: Path, workers: list[Worker], moment: str
) -> None:
    plan: dict[str, Any] = {"schedule": True}
    if moment.startswith("tick"):
        plan["tick"] = moment.split()[1]
    else:
        plan["hold"] = "tick-work"
    start(workers, tmp_path, url, **plan).killed_at(moment)

    clock = Clock(FIRST_TICK + 10.0)
    with resume(url, tmp_path, clock) as engine, resume(url, tmp_path, clock) as peer:
        engine.run()
        peer.run()  # a second worker finds nothing left of that tick
        ticks = [r.event for r in engine.log.read() if isinstance(r.event, ScheduleTicked)]
        assert [t.tick for t in ticks] == [FIRST_TICK]
        (task,) = engine.tasks()
        assert (task.task_id, task.state) == (ticks[0].task_id, "succeeded")
        assert engine.result(task.task_id) == "tick-work"
        assert completed(engine, task.task_id) == {0: 1}
        submitted = [r for r in history(engine, task.task_id) if isinstance(r.event, TaskSubmitted)]
        assert len(submitted) == 1
        (schedule,) = engine.schedules()
        assert schedule.cron == CRON
    # Once, or twice when the kill was in the task's only step (then in flight).
    assert runs(tmp_path) == {"tick-work": 2 if moment == "in tick-work" else 1}
    check_verified(url)


# -- a retry -----------------------------------------------------------------------------------


def test_a_retried_task_killed_in_its_rerun_replays_its_completed_steps(
    url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    (tmp_path / "broken").touch()
    clock = Clock()
    with resume(url, tmp_path, clock) as engine:
        task_id = engine.submit("flaky")
        engine.run()
        assert engine.task_view(task_id).state == "failed"
        (tmp_path / "broken").unlink()  # repaired
        engine.retry(task_id, by="ops", reason="the service is back")
    assert runs(tmp_path) == {"a": 1, "b": 1}

    start(workers, tmp_path, url, hold="b").killed_at("in b")  # in the re-run of the failed step

    with resume(url, tmp_path, clock) as engine:
        engine.run()
        assert engine.result(task_id) == ["a", "b", "c"]
        events = [r.event for r in history(engine, task_id)]
        assert sum(isinstance(e, TaskRetried) for e in events) == 1
        assert completed(engine, task_id) == {0: 1, 1: 1, 2: 1}
    assert runs(tmp_path) == {"a": 1, "b": 3, "c": 1}  # failed, killed, done
    check_verified(url)


# -- a fork ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hold", ["act-boldly", "finish-boldly"])
def test_a_fork_killed_in_its_fresh_steps_never_redoes_the_replayed_ones(
    url: str, tmp_path: Path, workers: list[Worker], hold: str
) -> None:
    clock = Clock()
    with resume(url, tmp_path, clock) as engine:
        origin = engine.submit("planner", "ship", "carefully")
        engine.run()
        fork = engine.fork(origin, from_step=1, args=["ship", "boldly"])

    start(workers, tmp_path, url, hold=hold).killed_at(f"in {hold}")

    with resume(url, tmp_path, clock) as engine:
        engine.run()
        assert engine.result(fork) == ["plan-ship", "act-boldly", "finish-boldly"]
        assert engine.task_view(fork).forked_from == origin
        # Step 0 is the origin's outcome (read from its history): the fork records its own.
        assert completed(engine, fork) == {1: 1, 2: 1}
        succeeded = [r for r in history(engine, fork) if isinstance(r.event, TaskSucceeded)]
        assert len(succeeded) == 1
    expected = {
        "plan-ship": 1,  # the origin's only: the fork took its outcome
        "act-carefully": 1,
        "finish-carefully": 1,
        "act-boldly": 2 if hold == "act-boldly" else 1,
        "finish-boldly": 2 if hold == "finish-boldly" else 1,
    }
    assert runs(tmp_path) == expected
    check_verified(url)


# -- a queue limit -----------------------------------------------------------------------------


def permits_in_use(engine: Engine) -> int:
    projections = engine.refresh()
    return Limits.in_use(projections.limits.view(LIMIT), projections, engine.clock())


@pytest.mark.parametrize("host", ["another host", "this host"])
def test_a_permit_held_by_a_dead_worker_comes_back_a_lease_later(
    url: str, tmp_path: Path, workers: list[Worker], host: str
) -> None:
    """The dead worker's session is never served again: its permit must not be lost. On this
    host, where the worker is seen dead, it comes back at once."""
    child = start(
        workers,
        tmp_path,
        url,
        host="elsewhere" if host == "another host" else None,
        session="crew",
        hold="call-dead",
        submit=[["limited", ["dead"], "d"]],
    )
    child.killed_at("in call-dead")

    clock = Clock(START + 1.0)
    with Engine.open(
        url,
        session="other",
        clock=clock,
        sleep=waits(clock, START + 10 * LEASE),
        lease=LEASE,
        healing=False,
    ) as engine:
        define(engine, tmp_path / "side-effects.txt")
        task_id = engine.submit("limited", "live")
        engine.run()  # the permit counts for now: the task waits, its worker's clock moves on
        assert engine.result(task_id) == "call-live"
        if host == "this host":
            assert clock.now == START + 1.0  # no wait
        else:
            assert clock.now >= START + LEASE  # not before the permit's lease ran out
            assert clock.now <= START + 2 * LEASE
        taken = [
            r for r in engine.log.read_stream(f"limit-{LIMIT}") if isinstance(r.event, PermitTaken)
        ]
        assert len(taken) == 2  # the dead worker's, then this one's
        assert taken[-1].event.task_id == task_id
    assert runs(tmp_path) == {"call-dead": 1, "call-live": 1}
    check_verified(url)


def test_a_step_taken_over_from_a_dead_worker_runs_under_a_permit_that_counts(
    url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    child = start(workers, tmp_path, url, hold="call-first", submit=[["limited", ["first"], "1"]])
    child.killed_at("in call-first")

    in_use: dict[str, int] = {}
    clock = Clock(START + 2 * LEASE)  # the dead worker's permit ran out meanwhile

    def look(what: str) -> None:
        in_use[what] = permits_in_use(engine)

    with resume(url, tmp_path, clock, seen=look) as engine:
        first = only_task(engine, "limited")
        second = engine.submit("limited", "second")
        engine.run()
        assert engine.result(first) == "call-first"
        assert engine.result(second) == "call-second"
    # Each step ran while exactly one permit counted: its own.
    assert in_use == {"call-first": 1, "call-second": 1}
    assert runs(tmp_path) == {"call-first": 2, "call-second": 1}
    check_verified(url)


# -- steering from a process that looked before another changed the task ------------------------


def onward_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``onward ARGS --db URL`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "onward", *args, "--db", url],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=False,
    )


def failed_by_a_worker(workers: list[Worker], tmp_path: Path, url: str, task_id: str) -> None:
    """A worker process runs the session until the task has failed, then is killed."""
    worker = start(workers, tmp_path, url)
    with open_log(url) as log:
        while not any(isinstance(r.event, TaskFailed) for r in log.read_stream(f"task-{task_id}")):
            worker.expect("idle")
    worker.kill()


def test_a_task_a_worker_failed_is_retried_by_an_engine_that_saw_it_queued(
    url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    (tmp_path / "broken").touch()
    clock = Clock()
    with resume(url, tmp_path, clock) as engine:
        task_id = engine.submit("flaky")
        assert engine.task_view(task_id).state == "queued"  # as this engine last saw it
        failed_by_a_worker(workers, tmp_path, url, task_id)
        (tmp_path / "broken").unlink()
        assert engine.retry(task_id, by="ops").state == "queued"
        engine.run()
        assert engine.result(task_id) == ["a", "b", "c"]
    check_verified(url)


def test_a_task_another_process_retried_is_steered_by_an_engine_that_saw_it_failed(
    url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    (tmp_path / "broken").touch()
    clock = Clock()
    with resume(url, tmp_path, clock) as engine:
        task_id = engine.submit("flaky")
        failed_by_a_worker(workers, tmp_path, url, task_id)
        assert engine.tasks()[0].state == "failed"  # as this engine last saw it
        done = onward_cli(url, "retry", task_id, "--by", "ops")
        assert done.returncode == 0, done.stderr
        engine.reprioritise(task_id, "high")
        assert engine.tasks()[0].priority == "high"
        engine.cancel(task_id, reason="not needed after all")
        assert engine.tasks()[0].state == "cancelled"
        events = [r.event for r in history(engine, task_id)]
        assert isinstance(events[-1], TaskCancelled)
    check_verified(url)
