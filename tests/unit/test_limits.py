"""Queue limits: concurrency and rate across every worker of a log, waits recorded, on the real
engine and a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from onward import Engine, Observer, TaskFailedError, UsageError
from onward.cli.main import main
from onward.events import LimitSet, PermitReturned, PermitTaken, TaskWaiting, Watch
from onward.runtime.limits import Rate, parse_rate
from onward.runtime.session import SILENCE_GRACE
from tests.conftest import FakeClock, OutageClock
from tests.secrets_corpus import GITHUB_PAT


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


def open_engine(db: str, clock: FakeClock | None = None, **options: object) -> Engine:
    if clock is None:
        return Engine.open(db, session="limits", healing=False, **options)
    return Engine.open(
        db, session="limits", clock=clock, sleep=clock.advance, healing=False, **options
    )


def held_at_most(engine: Engine, limit: str) -> int:
    """The most permits of a limit ever held at once, by the log's order of takes and returns
    (the order every worker decided on)."""
    held: set[tuple[str, int]] = set()
    most = 0
    for r in engine.log.read_stream(f"limit-{limit}"):
        event = r.event
        if isinstance(event, PermitTaken):
            held.add((event.task_id, event.index))
        elif isinstance(event, PermitReturned):
            held.discard((event.task_id, event.index))
        most = max(most, len(held))
    return most


def test_steps_under_a_limit_never_run_more_at_once_than_it_allows(db: str) -> None:
    inside = 0
    most_inside = 0
    lock = threading.Lock()
    with open_engine(db) as engine:
        engine.limit("model-api", concurrency=2)

        @engine.step(limit="model-api")
        def ask(question: int) -> int:
            nonlocal inside, most_inside
            with lock:
                inside += 1
                most_inside = max(most_inside, inside)
            total = sum(range(20_000))  # some work, while others try to get in
            with lock:
                inside -= 1
            return question + total * 0

        @engine.step()
        def unlimited(n: int) -> int:
            return n

        @engine.task()
        def job(question: int) -> int:
            return ask(unlimited(question)) + ask(question)

        ids = [engine.submit(job, n) for n in range(16)]
        engine.run(workers=6)
        assert [engine.result(i) for i in ids] == [2 * n for n in range(16)]
        assert most_inside <= 2
        assert held_at_most(engine, "model-api") <= 2
        taken = [
            r for r in engine.log.read_stream("limit-model-api") if isinstance(r.event, PermitTaken)
        ]
        assert len(taken) == 32  # one permit per limited step, none for the other
        (view,) = engine.limits()
        assert (view.concurrency, view.held, view.taken) == (2, {}, 32)


def test_a_rate_spreads_the_starts_and_the_waits_are_recorded(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        engine.limit("search", rate="3/minute")

        @engine.step(limit="search")
        def search(n: int) -> int:
            return n

        @engine.task()
        def job(n: int) -> int:
            return search(n)

        started = clock()
        ids = [engine.submit(job, n) for n in range(7)]
        engine.run()
        assert [engine.result(i) for i in ids] == list(range(7))
        takes = [
            r.meta.time
            for r in engine.log.read_stream("limit-search")
            if isinstance(r.event, PermitTaken)
        ]
        assert takes == [started] * 3 + [started + 60] * 3 + [started + 120]
        waits = [
            r.event
            for i in ids
            for r in engine.log.read_stream(f"task-{i}")
            if isinstance(r.event, TaskWaiting)
        ]
        assert waits
        assert all(w.limit == "search" and "3 taken" in w.reason for w in waits)


def test_a_freed_permit_wakes_a_waiting_task_at_once(db: str, clock: FakeClock) -> None:
    order: list[str] = []
    with open_engine(db, clock) as engine:
        engine.limit("gpu", concurrency=1)

        @engine.step(limit="gpu")
        def train(name: str) -> str:
            order.append(name)
            return name

        @engine.task()
        def job(name: str) -> str:
            return train(name)

        ids = [engine.submit(job, name) for name in ("a", "b", "c")]
        engine.run()
        assert order == ["a", "b", "c"]
        assert [engine.result(i) for i in ids] == ["a", "b", "c"]
        assert clock() < 1_700_000_000.0 + 1  # woken by the returns, not by a timer


def test_a_permit_is_given_back_when_its_step_fails(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        engine.limit("flaky", concurrency=1)

        @engine.step(limit="flaky")
        def call(n: int) -> int:
            if n == 0:
                raise ConnectionError("refused")
            return n

        @engine.task()
        def job(n: int) -> int:
            return call(n)

        failing, fine = engine.submit(job, 0), engine.submit(job, 1)
        engine.run()
        with pytest.raises(TaskFailedError, match="refused"):
            engine.result(failing)
        assert engine.result(fine) == 1
        assert held_at_most(engine, "flaky") == 1
        assert engine.limits()[0].held == {}


def test_limits_hold_for_async_tasks(db: str) -> None:
    with open_engine(db) as engine:
        engine.limit("api", concurrency=3)
        inside = 0
        most = 0

        @engine.step(limit="api")
        async def call(n: int) -> int:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            inside -= 1
            return n

        @engine.task()
        async def job(n: int) -> int:
            return await call(n) + await call(n)

        ids = [engine.submit(job, n) for n in range(20)]
        asyncio.run(engine.run_async(concurrency=10))
        assert [engine.result(i) for i in ids] == [2 * n for n in range(20)]
        assert most <= 3
        assert held_at_most(engine, "api") <= 3


def test_a_limit_is_declared_once_and_every_worker_holds_to_the_latest(db: str) -> None:
    with open_engine(db) as first:
        first.limit("api", concurrency=4, rate="60/minute")
    with open_engine(db) as second:
        second.limit("api", concurrency=4, rate="60/minute")  # the same: nothing recorded
        second.limit("api", concurrency=2)  # a change
        sets = [r.event for r in second.log.read_stream("limit-api")]
        assert sets == [
            LimitSet(name="api", concurrency=4, rate="60/minute"),
            LimitSet(name="api", concurrency=2, rate=""),
        ]
        (view,) = second.limits()
        assert (view.concurrency, view.rate) == (2, "")


def test_a_step_under_an_undeclared_limit_fails_its_task_clearly(db: str) -> None:
    with open_engine(db) as engine:

        @engine.step(limit="nowhere")
        def call() -> int:
            return 1

        @engine.task()
        def job() -> int:
            return call()

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(TaskFailedError, match="limit 'nowhere' is not declared"):
            engine.result(task_id)


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("60/minute", Rate(60, 60.0)),
        ("5/second", Rate(5, 1.0)),
        ("1000/hour", Rate(1000, 3600.0)),
        ("10/30s", Rate(10, 30.0)),
        (" 2 / min ", Rate(2, 60.0)),
        ("10/.5s", Rate(10, 0.5)),
        ("10/1.s", Rate(10, 1.0)),
        ("", None),
    ],
)
def test_rates_are_read(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    "text",
    [
        "60",
        "60 per minute",
        "0/minute",
        "5/day",
        "1/2h",
        "-1/s",
        "x/s",
        "10/.s",
        "10/..s",
        "1" * 5000 + "/s",
        "10/" + "9" * 5000 + "s",
        "100001/hour",  # more than the takes kept to count them: it never waited
        "999999999999999999/second",
    ],
)
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="rate"):
        parse_rate(text)


def test_a_plain_step_with_a_timeout_cannot_take_a_limit(db: str) -> None:
    """Timed out, its body ran on in its thread: the permit given back (or the retry under
    it) let four bodies run at once under ``concurrency=1``."""
    with open_engine(db) as engine:
        engine.limit("api", concurrency=1)
        with pytest.raises(UsageError, match="cannot have both a timeout and a queue limit"):

            @engine.step(limit="api", timeout=3)
            def call(n: int) -> int:
                return n

        @engine.step(limit="api", timeout=3)  # cancelled at its timeout: its body ends
        async def call_async(n: int) -> int:
            return n

        @engine.step(limit="api")
        def call_untimed(n: int) -> int:
            return n


def test_bad_limits_are_refused(db: str) -> None:
    with open_engine(db) as engine:
        with pytest.raises(UsageError, match="give a concurrency, a rate, or both"):
            engine.limit("api")
        with pytest.raises(UsageError, match="concurrency must be an int >= 1"):
            engine.limit("api", concurrency=0)
        with pytest.raises(UsageError, match="concurrency must be an int >= 1"):
            engine.limit("api", concurrency=True)
        with pytest.raises(UsageError, match="non-empty"):
            engine.limit("", concurrency=1)
        with pytest.raises(UsageError, match="secret"):
            engine.limit(f"api {GITHUB_PAT}", concurrency=1)
        assert engine.limits() == []


def test_onward_limits_lists_bounds_permits_and_waiting_tasks(
    db: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_engine(db, clock) as engine:
        engine.limit("search", concurrency=1, rate="1/hour")

        @engine.step(limit="search")
        def search(n: int) -> int:
            return n

        @engine.task()
        def job(n: int) -> int:
            return search(n)

        for n in range(3):
            engine.submit(job, n)
        engine.run(max_runs=3)
    path = db.removeprefix("sqlite:///")
    assert main(["limits", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "search" in out
    assert "1/hour" in out
    assert "2 waiting" in out


def test_a_worker_that_lost_a_step_gives_back_only_its_own_permit(db: str) -> None:
    """A worker paused in a limited step, whose task was taken over meanwhile, gives its permit
    back when it wakes: the permit the step's new worker took since stays held."""
    with open_engine(db) as engine:
        engine.limit("api", concurrency=1)
        stream = "limit-api"
        for event in (
            PermitTaken(task_id="t", index=0, worker="old", until=1.0),
            PermitTaken(task_id="t", index=0, worker="new", until=2.0),
            PermitReturned(task_id="t", index=0, worker="old"),
        ):
            engine.log.append(stream, [event], expected_version=None)
        view = engine.refresh().limits.view("api")
        assert view.held == {"t:0": ("new", 2.0)}
        engine.log.append(
            stream, [PermitReturned(task_id="t", index=0, worker="new")], expected_version=None
        )
        assert engine.refresh().limits.view("api").held == {}
        # A return of a log written before returns named their worker gives back any holder.
        engine.log.append(
            stream,
            [
                PermitTaken(task_id="t", index=1, worker="new", until=3.0),
                PermitReturned(task_id="t", index=1),
            ],
            expected_version=None,
        )
        assert engine.refresh().limits.view("api").held == {}


def test_onward_limits_tells_a_stale_permit_from_one_that_counts(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A permit whose time ran out and whose task no longer runs under its worker (the worker
    died) is listed as stale, not as in use: it does not count against the limit."""
    with open_engine(db) as engine:
        engine.limit("api", concurrency=2)
        stream = "limit-api"
        for event in (
            PermitTaken(task_id="gone", index=0, worker="dead-host/1/a1", until=1.0),
            PermitTaken(task_id="live", index=3, worker="live-host/2/b2", until=time.time() + 3600),
        ):
            engine.log.append(stream, [event], expected_version=None)
    path = db.removeprefix("sqlite:///")
    assert main(["limits", "--db", path, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["limits"]
    assert (row["in_use"], row["holders"], row["stale"]) == (1, ["live:3"], ["gone:0"])
    assert main(["limits", "--db", path]) == 0
    assert "1 (+1 stale)" in capsys.readouterr().out


HOLDER = """
import sys
from onward import Engine

engine = Engine.open(sys.argv[1], session="holder", healing=False)
engine.limit("api", concurrency=1)


@engine.step(limit="api")
def hold() -> int:
    print("holding", flush=True)
    sys.stdin.read()  # the test lets go (closes it) once the waiter waits
    return 1


@engine.task()
def job() -> int:
    return hold()


engine.submit(job)
engine.run()
engine.close()
"""


@contextlib.contextmanager
def holding(tmp_path: Path, db: str) -> Iterator[subprocess.Popen[str]]:
    """A process whose task holds the permit of limit ``api`` until its standard input is
    closed: given once it holds it, killed afterwards if it still runs."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    command = [sys.executable, str(script), db]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "holding\n", "the holder exited first"
            yield holder
        finally:
            if holder.poll() is None:
                holder.kill()


class ReleaseOnceWaiting(Observer):
    """Lets the holder go once the waiting run has recorded its wait: its run ends waiting."""

    def __init__(self, holder: subprocess.Popen[str]) -> None:
        self.holder = holder

    def task_ended(self, token: object, outcome: str) -> None:
        if outcome == "waiting":
            assert self.holder.stdin is not None
            self.holder.stdin.close()


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_permit_freed_by_another_process_wakes_a_waiting_run_at_once(
    tmp_path: Path, db: str, path: str
) -> None:
    """``run()`` waiting for a permit (its timer a third of a lease away: 200 s here) goes on
    as soon as another process gives the permit back: it hears of the log's change."""
    with (
        holding(tmp_path, db) as holder,
        Engine.open(
            db,
            session="waiter",
            healing=False,
            lease=600.0,
            observer=ReleaseOnceWaiting(holder),
        ) as engine,
    ):
        engine.limit("api", concurrency=1)

        @engine.step(limit="api")
        def call() -> str:
            return "called"

        @engine.task()
        def job() -> str:
            return call()

        task_id = engine.submit(job)
        started = time.monotonic()
        if path == "sync":
            engine.run()
        else:
            asyncio.run(engine.run_async())
        waited = time.monotonic() - started
        assert engine.result(task_id) == "called"
        assert any(
            isinstance(r.event, TaskWaiting) for r in engine.log.read_stream(f"task-{task_id}")
        )
        assert waited < 60, f"run() woke {waited:.0f} s after the permit was free"
        assert holder.wait(timeout=60) == 0


def test_a_permit_of_a_killed_worker_of_this_host_is_free_at_once(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its process is known dead: its permit counted until its lease ran out (5 minutes by
    default) while the limited dependency stood idle."""
    with holding(tmp_path, db) as holder:
        holder.kill()
        holder.wait()
    path = db.removeprefix("sqlite:///")
    assert main(["limits", "--db", path, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["limits"]
    assert (row["in_use"], row["holders"], len(row["stale"])) == (0, [], 1)


def test_a_permit_counts_through_an_outage_until_a_lease_after_it(
    db: str, clock: FakeClock
) -> None:
    """During an outage of the storage no holder can record its heartbeat: a worker that rode
    one out counts a silent holder's permit while its task runs, until the holder has had a
    lease to speak again (as it waits before taking the holder's task over)."""
    holder = open_engine(db, clock, lease=10.0)
    peer = open_engine(db, clock, lease=10.0)
    since_outage = OutageClock(peer.log)
    started: list[str] = []
    seen: list[list[str]] = []
    try:
        for engine in (holder, peer):
            engine.limit("api", concurrency=1)

            @engine.step(name="call", limit="api")
            def call(who: str) -> None:
                started.append(who)
                if who != "holder":
                    return
                clock.advance(60.0)  # long past its permit and lease: no heartbeat recorded
                since_outage.ride_out()  # the peer rides out an outage
                # Before the holder's task in the queue once the peer takes it over.
                peer.submit("job", "peer", priority="high")
                peer.run(max_runs=1)
                seen.append(list(started))
                since_outage.advance(10.0)  # a lease later, the silence counts
                peer.run(max_runs=0)  # once an append of the peer's own went through
                clock.advance(SILENCE_GRACE + 5.0)  # a grace ago, and past its look again
                peer.run(max_runs=1)
                seen.append(list(started))

            @engine.task(name="job")
            def job(who: str) -> None:
                call(who)

        holder.submit("job", "holder")
        holder.run(max_runs=1)
        assert seen == [["holder"], ["holder", "peer"]]
    finally:
        peer.close()
        holder.close()


def until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait for another thread's progress (a condition of the log or of the step bodies)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.01)


def test_a_cancelled_run_gives_back_only_its_own_permit_when_a_retry_took_it_again(
    db: str,
) -> None:
    """A task cancelled in a limited step and retried on the same worker runs that step again
    while the cancelled body still runs (as the README says); when the cancelled body ends,
    its run gives back its own permit, not the retried run's, so a third body does not start
    past the limit."""
    gates: dict[tuple[str, int], threading.Event] = {}
    active: list[tuple[str, int]] = []
    lock = threading.Lock()
    with open_engine(db) as engine:
        engine.limit("api", concurrency=1)

        @engine.step(limit="api")
        def call(name: str) -> str:
            with lock:
                run = 1 + sum(1 for key in gates if key[0] == name)
                gate = gates[name, run] = threading.Event()
                active.append((name, run))
            gate.wait(60)
            with lock:
                active.remove((name, run))
            return name

        @engine.task()
        def job(name: str) -> str:
            return call(name)

        first = engine.submit(job, "first")
        stop = threading.Event()
        serving = threading.Thread(
            target=engine.serve, kwargs={"workers": 3, "stop": stop, "handle_signals": False}
        )
        serving.start()
        try:
            until(lambda: ("first", 1) in active, "the first body")
            engine.cancel(first, "to retry it")
            engine.retry(first)
            until(lambda: ("first", 2) in active, "the retried body")
            gates["first", 1].set()
            until(
                lambda: any(
                    isinstance(r.event, PermitReturned) for r in engine.log.read_stream("limit-api")
                ),
                "the cancelled run's give-back",
            )
            second = engine.submit(job, "second")
            until(
                lambda: (
                    ("second", 1) in active
                    or (
                        (view := engine.refresh().tasks.view(second)) is not None
                        and view.waiting_limit == "api"
                    )
                ),
                "the second task to run or wait",
            )
            assert ("second", 1) not in active, active
            assert engine.refresh().limits.view("api").held.keys() == {f"{first}:0"}
            gates["first", 2].set()
            until(lambda: ("second", 1) in gates, "the second body")
            gates["second", 1].set()
            until(
                lambda: (
                    (view := engine.refresh().tasks.view(second)) is not None
                    and view.state == "succeeded"
                ),
                "the second task's end",
            )
        finally:
            for gate in gates.values():
                gate.set()
            stop.set()
            serving.join(60)
        assert engine.result(first) == "first"


def test_a_limit_stream_with_an_event_of_a_newer_onward_still_gives_permits(
    db: str, clock: FakeClock
) -> None:
    """A newer onward wrote an event of its own on a limit's stream (the chain intact): a
    step under the limit takes its permit after it, and its task runs (the take appended at
    the version before that event, failed, and the task was handed back, again and again)."""
    from onward.events import Codec, Event, all_event_types, open_log
    from tests.unit.test_async_appends import run_in_a_thread

    class FromTheFuture(Event, frozen=True, kw_only=True, tag="FromTheFuture"):
        """An event type a newer onward might write."""

    def register(engine: Engine) -> None:
        engine.limit("gpu", concurrency=1)

        @engine.step(limit="gpu")
        def train(name: str) -> str:
            return name

        @engine.task(name="job")
        def job(name: str) -> str:
            return train(name)

    with open_engine(db, clock) as engine:
        register(engine)
        engine.submit("job", "a")
        engine.run()
        version = len(engine.log.read_stream("limit-gpu"))
    writer = open_log(db)
    writer.codec.register(FromTheFuture)
    writer.append("limit-gpu", [FromTheFuture()], expected_version=version)
    writer.close()

    known = [t for t in all_event_types() if t.__struct_config__.tag != "FromTheFuture"]
    with open_engine(db, clock, codec=Codec(types=known)) as engine:
        register(engine)
        task_id = engine.submit("job", "b")
        summary = run_in_a_thread(engine.run)
        assert (summary.runs, summary.succeeded) == (1, 1)
        assert engine.result(task_id) == "b"
        assert engine.projections.limits.view("gpu").version == version + 3  # taken, returned


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_permit_freed_just_before_the_run_starts_watching_still_wakes_it(
    db: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The permit is given back after the waiting run looked for work and before its watch of
    the log began: a watch opened then has nothing to compare with, so the run looks again at
    once instead of sleeping through the change until its timer (200 s here)."""
    holding, let_go = threading.Event(), threading.Event()
    with Engine.open(db, session="holder", healing=False) as holder:
        holder.limit("api", concurrency=1)

        @holder.step(limit="api")
        def hold() -> int:
            holding.set()
            let_go.wait()
            return 1

        @holder.task()
        def held() -> int:
            return hold()

        holder.submit(held)
        holder_run = threading.Thread(target=holder.run, daemon=True)
        holder_run.start()
        holding.wait()
        with Engine.open(db, session="waiter", healing=False, lease=600.0) as engine:
            engine.limit("api", concurrency=1)
            called: list[str] = []
            slept_through: list[str] = []

            @engine.step(limit="api")
            def call() -> str:
                called.append("call")
                return "called"

            @engine.task()
            def job() -> str:
                return call()

            task_id = engine.submit(job)
            watch = engine.log.watch

            def watch_once_freed() -> Watch:
                """The interleaving: the holder gives its permit back (its run ends) just
                before the waiting run's watch begins."""
                let_go.set()
                holder_run.join()
                opened = watch()
                wait = opened.wait

                def wait_seen(timeout: float) -> bool:
                    if wait(0.0):
                        return True
                    if not called:  # the permit is free, the run would sleep on
                        slept_through.append(f"a look of {timeout} s")
                        return True  # ends the test's run now, not in 200 s
                    return wait(timeout)

                monkeypatch.setattr(opened, "wait", wait_seen)
                return opened

            monkeypatch.setattr(engine.log, "watch", watch_once_freed)
            if path == "sync":
                engine.run()
            else:
                asyncio.run(engine.run_async())
            assert engine.result(task_id) == "called"
            assert slept_through == []
