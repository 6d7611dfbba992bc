"""onward.testing: the fake clock, engines for tests, the pytest plugin's fixtures, replay_check
and `onward to-test`."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import datetime
import decimal
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, RetryPolicies, RetryPolicy, UsageError
from onward.cli import main
from onward.projections import inbox_stream
from onward.testing import (
    NO_BACKOFF,
    FakeClock,
    ReplayCheck,
    decode_history,
    encode_history,
    open_engine,
    replay_check,
    replay_recorded,
    replay_task,
)

ROOT = Path(__file__).parents[2]


def flaky_engine(engine: Engine, failures: int = 1) -> object:
    left = {"n": failures}

    @engine.step()
    def fetch() -> str:
        if left["n"]:
            left["n"] -= 1
            raise TimeoutError("the service was slow")
        return "page"

    @engine.task()
    def job() -> str:
        return fetch()

    return job


def test_the_engines_timers_and_back_offs_move_the_fake_clock(onward_engine: Engine) -> None:
    clock = onward_engine.clock
    assert isinstance(clock, FakeClock)
    started = clock.now
    task_id = onward_engine.submit(flaky_engine(onward_engine, failures=2))
    onward_engine.run()  # two back-offs waited for: no wall time
    assert onward_engine.result(task_id) == "page"
    assert clock.now - started == pytest.approx(sum(clock.slept))
    assert clock.now - started > 0


@pytest.mark.onward(backoff=False, session="quick")
def test_the_no_back_off_mode_retries_at_once(onward_engine: Engine) -> None:
    clock = onward_engine.clock
    assert isinstance(clock, FakeClock)
    started = clock.now
    task_id = onward_engine.submit(flaky_engine(onward_engine, failures=2))
    onward_engine.run()
    assert onward_engine.result(task_id) == "page"
    assert onward_engine.session == "quick"
    assert clock.now - started < 1e-3


def test_the_sqlite_engine_is_a_real_file(onward_sqlite_engine: Engine, tmp_path: Path) -> None:
    assert onward_sqlite_engine.log.url.startswith("sqlite:///")
    assert (tmp_path / "onward-test.db").exists()


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_durable_sleep_of_years_is_one_jump_of_the_fake_clock(
    onward_engine: Engine, path: str
) -> None:
    """A run on a fake clock jumps to the timer, where it waited an hour at a time: a sleep of
    nine years took 79,000 naps (seconds of CPU); one past ten years lasts ten years (a later
    end could not be dated), where 1e300 seconds never returned."""
    clock = onward_engine.clock
    assert isinstance(clock, FakeClock)
    years = 9 * 365 * 86400.0

    @onward_engine.task(name="patient")
    def patient() -> str:
        onward_engine.sleep(years)
        return "woke"

    @onward_engine.task(name="forever")
    def forever() -> str:
        onward_engine.sleep(1e300)
        return "woke"

    started = clock.now
    task_id = onward_engine.submit(patient)
    if path == "sync":
        onward_engine.run()
    else:
        asyncio.run(onward_engine.run_async())
    assert onward_engine.result(task_id) == "woke"
    assert clock.now - started == pytest.approx(years)
    assert len(clock.slept) < 5
    started = clock.now
    task_id = onward_engine.submit(forever)
    onward_engine.run()
    assert onward_engine.result(task_id) == "woke"
    assert clock.now - started == pytest.approx(10 * 366 * 86400)


def test_a_jump_of_the_fake_clock_stops_at_schedule_ticks_and_deadlines(tmp_path: Path) -> None:
    """Jumping to a timer a day away, a run on a fake clock fired an hourly schedule once (not
    24 times) and saw a subtask's deadline of two hours missed after a day."""
    hour = 1_700_000_000.0 - 1_700_000_000.0 % 3600
    clock = FakeClock(start=hour + 60)
    runs: list[float] = []
    with open_engine(f"sqlite:///{tmp_path / 'jump.db'}", clock=clock) as engine:

        @engine.task(schedule="0 * * * *")
        def hourly() -> None:
            runs.append(clock.now)

        @engine.task()
        def slow() -> str:
            engine.sleep(24 * 3600.0)
            return "done"

        @engine.task()
        def waiter() -> str:
            child = engine.submit(slow, deadline=clock.now + 2 * 3600.0)
            try:
                engine.wait([child])
            except Exception as failure:  # the subtask missed its deadline
                return f"{type(failure).__name__} after {(clock.now - hour) / 3600:.1f} h"
            return "in time"

        task_id = engine.submit(waiter)
        sleeper = engine.submit(slow)  # keeps the run going for a day
        engine.run()
        assert engine.result(task_id).endswith("after 2.0 h")
        assert engine.result(sleeper) == "done"
        assert len(runs) == 24


def test_a_fake_clock_only_moves_forward() -> None:
    clock = FakeClock(start=10.0)
    clock.advance(5)
    clock.sleep(-1)  # an engine may ask for a timer already due: no move
    assert clock() == 15.0
    with pytest.raises(UsageError, match="forward"):
        clock.advance(-1)
    for seconds in (float("nan"), float("inf"), float("-inf")):  # were taken as no move
        with pytest.raises(UsageError, match="finite seconds"):
            clock.sleep(seconds)
    with pytest.raises(UsageError, match="sleeps a number of seconds"):
        clock.sleep("1")  # type: ignore[arg-type]
    for start in (float("nan"), float("inf"), "5", True):  # NaN was taken: every timer stalled
        with pytest.raises(UsageError, match="starts at a finite time"):
            FakeClock(start=start)  # type: ignore[arg-type]


def test_open_engine_keeps_given_retries() -> None:
    policies = RetryPolicies(RetryPolicy(name="mine"))
    with open_engine(backoff=False, retries=policies) as engine:
        assert engine.healer is not None
        assert engine.healer.retries is policies
    with open_engine(backoff=False) as engine:
        assert engine.healer is not None
        assert engine.healer.retries is NO_BACKOFF


def test_open_engine_takes_a_clock_and_a_sleep_of_its_own() -> None:
    clock = FakeClock()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    with open_engine(clock=clock, sleep=sleep) as engine:
        task_id = engine.submit(flaky_engine(engine))
        engine.run()  # one back-off, waited for by the given sleep
        assert engine.result(task_id) == "page"
    assert slept
    assert clock.slept == []
    with open_engine(clock=lambda: 5.0) as engine:  # not a FakeClock: used as given
        assert engine.clock() == 5.0


def test_engine_open_on_a_fake_clock_alone_moves_it_through_back_offs() -> None:
    """Engine.open given a fake clock and no sleep waited for its first back-off in real time,
    while the clock stood still: the run never ended."""
    clock = FakeClock()
    with Engine.open("memory://", clock=clock) as engine:
        task_id = engine.submit(flaky_engine(engine))
        runner = threading.Thread(target=engine.run, daemon=True)
        runner.start()
        runner.join(timeout=60)  # without the fix: a wait that never ends
        assert not runner.is_alive(), "the run waits in real time for a fake clock's back-off"
        assert engine.result(task_id) == "page"
    assert clock.slept  # the back-off moved the clock


# -- replay_check ----------------------------------------------------------------------------


def register(engine: Engine, *, variant: str = "same") -> None:
    @engine.step()
    def read(name: str) -> str:
        return f"text of {name}"

    @engine.step()
    def count(text: str) -> int:
        return len(text)

    @engine.step()
    def other(text: str) -> int:
        return 0

    @engine.task()
    def survey(name: str) -> int:
        text = read(name)
        if variant == "renamed":
            return other(text)
        if variant == "fewer":
            return 11
        total = count(text)
        if variant == "more":
            total += count(text)
        if variant == "result":
            total += 1
        return total


@pytest.fixture
def recorded(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with open_engine(url, session="night") as engine:
        register(engine)
        for name in ("a", "bb"):
            engine.submit("survey", name)
        engine.run()
    return url


def test_the_same_code_replays_every_task(recorded: str) -> None:
    with open_engine() as engine:
        register(engine)
        check = replay_check(recorded, engine)
    assert check.ok, check.explain()
    assert (check.checked, check.steps) == (2, 4)
    assert "deterministic" in check.explain()


def test_replay_check_given_no_engine_or_no_log_says_so(recorded: str) -> None:
    with pytest.raises(UsageError, match=r"through an Engine .* got a NoneType"):
        replay_check(recorded, None)  # type: ignore[arg-type]
    with open_engine() as engine:
        with pytest.raises(UsageError, match=r"an EventLog or its URL .* got a PosixPath"):
            replay_check(Path(recorded.removeprefix("sqlite:///")), engine)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"through an Engine .* got a str"):
            replay_task("engine", [])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variant", "kind"),
    [("renamed", "step"), ("fewer", "fewer"), ("more", "unrecorded"), ("result", "result")],
)
def test_changed_code_is_reported(recorded: str, variant: str, kind: str) -> None:
    with open_engine() as engine:
        register(engine, variant=variant)
        check = replay_check(recorded, engine)
    assert not check.ok
    assert kind in {d.kind for d in check.divergences}
    assert f"{kind}:" in check.explain()


def test_a_replay_runs_no_step_and_appends_nothing(recorded: str) -> None:
    with open_engine() as engine:
        register(engine, variant="more")
        before = engine.log.head()
        replay_check(recorded, engine)
        assert engine.log.head() == before


def test_a_task_that_cancelled_a_step_under_way_is_skipped_not_called_nondeterministic(
    tmp_path: Path,
) -> None:
    """An async task cancels a step under way (a timeout around it would): the step leaves no
    outcome, the next one takes the next index. A replay cannot tell how the code went on
    from the cancelled call (it depends on when it came): the task is skipped, saying why,
    where it was reported as a divergence ("unrecorded"); the tasks beside it are checked."""
    url = f"sqlite:///{tmp_path / 'cancel.db'}"
    with open_engine(url, session="cut") as engine:
        started = asyncio.Event()

        @engine.step()
        async def slow() -> int:
            started.set()
            await asyncio.Event().wait()  # never ends: cancelled
            return 1

        @engine.step()
        async def fast() -> int:
            return 2

        @engine.task()
        async def cuts() -> int:
            under_way = asyncio.create_task(slow())
            signal = asyncio.create_task(started.wait())
            await asyncio.wait([under_way, signal], return_when=asyncio.FIRST_COMPLETED)
            signal.cancel()
            under_way.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await under_way
            return await fast()  # type: ignore[no-any-return]

        @engine.task()
        async def plain() -> int:
            return await fast()  # type: ignore[no-any-return]

        cut, whole = engine.submit(cuts), engine.submit(plain)
        asyncio.run(engine.run_async())
        assert (engine.result(cut), engine.result(whole)) == (2, 2)
        check = replay_check(engine.log, engine)
    assert check.ok
    assert check.checked == 1
    (why,) = check.skipped
    assert why.startswith(f"task {cut}: its call at step 0 ('slow') was cancelled")
    assert check.cut_short == 1


def register_family(engine: Engine, *, variant: str = "same") -> None:
    """A parent that submits a subtask it never waits for, and one it waits for."""

    @engine.step()
    def plan(n: int) -> int:
        return n + 1

    @engine.step()
    def audit(n: int) -> int:
        return n

    @engine.task()
    def child(x: int) -> int:
        return x * 2

    @engine.task()
    def notify(x: int) -> None:
        pass

    @engine.task()
    def parent(n: int) -> int:
        k = audit(n) if variant == "renamed" else plan(n)
        if variant == "more":
            audit(k)
        engine.submit(notify, k)
        if variant == "late":
            audit(k)
        (doubled,) = engine.wait([engine.submit(child, k)])
        return int(doubled)


@pytest.fixture
def family(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'family.db'}"
    with open_engine(url, session="night") as engine:
        register_family(engine)
        task_id = engine.submit("parent", 20)
        engine.run()
        assert engine.result(task_id) == 42
    return url


def test_a_task_that_waited_for_subtasks_replays_past_the_wait_appending_nothing(
    family: str,
) -> None:
    from onward.events import open_log

    for url in ("memory://", family):  # another engine, then the one that recorded it
        with open_engine(url, session="night") as engine, open_log(family) as log:
            register_family(engine)
            before, recorded_head = engine.log.head(), log.head()
            check = replay_check(family, engine)
            (history,) = [
                h
                for stream in log.streams()
                if stream.startswith("task-")
                and getattr((h := log.read_stream(stream))[0].event, "name", "") == "parent"
            ]
            text = encode_history(history)  # without the subtask's end: not replayed past it
            alone = replay_recorded(engine, text, task_id=history[0].stream[5:])
            assert (alone.ok, alone.checked, len(alone.skipped)) == (True, 0, 1)
            # no subtask submitted, no wait recorded, in either log
            assert (engine.log.head(), log.head()) == (before, recorded_head), url
        assert check.ok, check.explain()
        assert (check.checked, check.steps) == (3, 1)  # the wait answered from the log


def register_courier(engine: Engine) -> None:
    @engine.task(name="mailbox")
    def mailbox() -> None: ...

    @engine.step(name="post")
    def post(to: str) -> int:
        return engine.send(to, "go", "from a step")

    @engine.task(name="courier")
    def courier(to: str) -> list[int]:
        return [engine.send(to, "go", "from the body"), post(to)]


def test_a_replay_sends_no_message_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mail.db'}"
    with open_engine(url, session="night") as engine:
        register_courier(engine)
        to = engine.submit("mailbox")
        courier = engine.submit("courier", to)
        engine.run()
        assert engine.result(courier) == [1, 2]
        head = engine.log.head()
        check = replay_check(url, engine)
        assert check.ok, check.explain()
        assert engine.log.head() == head  # nothing sent, nothing appended
        assert len(engine.log.read_stream(inbox_stream(to))) == 2


@pytest.mark.parametrize(
    ("variant", "kind"), [("renamed", "step"), ("more", "unrecorded"), ("late", "unrecorded")]
)
def test_a_change_before_the_wait_for_subtasks_is_reported(
    family: str, variant: str, kind: str
) -> None:
    with open_engine() as engine:
        register_family(engine, variant=variant)
        check = replay_check(family, engine)
        assert engine.tasks() == []  # the subtask it never waits for: not submitted either
    assert [(d.name, d.kind) for d in check.divergences] == [("parent", kind)]


def test_unregistered_tasks_are_skipped(recorded: str) -> None:
    with open_engine() as engine:
        check = replay_check(recorded, engine, session="night")
    assert not check.ok  # nothing replayed proves nothing
    assert check.checked == 0
    assert len(check.skipped) == check.unregistered == 2


def test_a_history_round_trips_as_text(recorded: str) -> None:
    from onward.events import open_log
    from onward.projections import task_stream

    with open_log(recorded, create=False) as log:
        task_id = next(s for s in log.streams() if s.startswith("task-"))[5:]
        history = log.read_stream(task_stream(task_id))
    text = encode_history(history)
    again = decode_history(text, task_id=task_id, session="night")
    assert [r.event for r in again] == [r.event for r in history]
    with open_engine() as engine:
        register(engine)
        assert replay_recorded(engine, text, task_id=task_id).ok
    with pytest.raises(UsageError, match="line 1"):
        decode_history("not json", task_id="t")


@dataclasses.dataclass
class Point:
    x: int
    y: int


#: Results JSON alone does not keep: the log records them tagged with their type.
TYPED_RESULTS: dict[str, Any] = {
    "bytes": b"\x00\xffraw",
    "tuple": (1, "a"),
    "set": {"pear", "fig", "apple"},
    "frozenset": frozenset({1, 2}),
    "datetime": datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    "decimal": decimal.Decimal("1.10"),
    "uuid": uuid.UUID(int=5),
    "nan": float("nan"),
    "inf": float("-inf"),
    "int_keys": {1: "a", 2: (float("nan"), b"z")},
    "dataclass": Point(1, 2),
    "big_int": 2**70,
}


def returning(value: Any) -> Callable[[], Any]:
    def returns() -> Any:
        return value

    return returns


def register_typed(engine: Engine, changed: dict[str, Any] | None = None) -> None:
    for name, value in TYPED_RESULTS.items():
        engine.task(name=f"returns_{name}")(returning((changed or {}).get(name, value)))


def test_results_of_every_stored_type_replay_as_recorded(tmp_path: Path) -> None:
    from onward.events import open_log
    from onward.projections import task_stream

    url = f"sqlite:///{tmp_path / 'typed.db'}"
    with open_engine(url) as engine:
        register_typed(engine)
        ids = {name: engine.submit(f"returns_{name}") for name in TYPED_RESULTS}
        engine.run()
        assert repr(engine.result(ids["tuple"])) == "(1, 'a')"
        check = replay_check(url, engine)
        assert check.ok, check.explain()
        assert check.checked == len(TYPED_RESULTS)
        with open_log(url, create=False) as log:  # as `onward to-test` embeds it
            for name, task_id in ids.items():
                text = encode_history(log.read_stream(task_stream(task_id)))
                assert replay_recorded(engine, text, task_id=task_id).ok, name


@pytest.mark.parametrize(
    ("name", "now"),
    [
        ("tuple", [1, "a"]),
        ("bytes", "AP9yYXc="),
        ("set", ["apple", "fig", "pear"]),
        ("nan", float("inf")),
        ("int_keys", {"1": "a", "2": [None, "eg=="]}),
    ],
)
def test_a_result_of_another_type_is_reported(tmp_path: Path, name: str, now: Any) -> None:
    url = f"sqlite:///{tmp_path / 'typed.db'}"
    with open_engine(url) as engine:
        register_typed(engine)
        engine.submit(f"returns_{name}")
        engine.run()
    with open_engine() as engine:
        register_typed(engine, changed={name: now})
        check = replay_check(url, engine)
    assert [d.kind for d in check.divergences] == ["result"], check.explain()


@pytest.mark.parametrize("now", ["raises", "returns"])
def test_what_the_code_does_now_is_redacted_in_a_divergence(tmp_path: Path, now: str) -> None:
    """A divergence shows what the code raised or returned in the replay: a secret in it is
    redacted, as the log's side of the divergence is (a test prints ``explain()`` in CI)."""
    token = "ghp_" + "q7Lw2" * 7 + "x"
    url = f"sqlite:///{tmp_path / 'log.db'}"

    def register(engine: Engine, *, changed: bool) -> None:
        @engine.task(name="connect")
        def connect() -> str:
            if changed and now == "raises":
                raise RuntimeError(f"refused: password=hunter2 {token}")
            return f"password=hunter2 {token}" if changed else "fine"

    with open_engine(url) as engine:
        register(engine, changed=False)
        engine.submit("connect")
        engine.run()
    with open_engine() as engine:
        register(engine, changed=True)
        check = replay_check(url, engine)
    text = check.explain()
    assert [d.kind for d in check.divergences] == ["error" if now == "raises" else "result"]
    assert "[REDACTED:" in check.divergences[0].found, text
    assert "hunter2" not in text
    assert token not in text


def register_publisher(engine: Engine, *, variant: str = "same") -> None:
    @engine.step()
    def draft(pr: int) -> str:
        return f"draft for {pr}"

    @engine.task(name="publisher")
    def publisher(pr: int) -> str:
        text = draft(pr)
        engine.set_state("draft", text)
        engine.progress(0.5, "half way")
        if variant == "more":
            draft(pr + 1)
        engine.set_state("done", True)
        return text

    @engine.task(name="async_publisher")
    async def async_publisher(pr: int) -> str:
        await engine.set_state("draft", pr)
        await engine.progress(1.0)
        return str(pr)


def test_what_a_task_publishes_is_neither_appended_nor_a_divergence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'published.db'}"
    with open_engine(url) as engine:
        register_publisher(engine)
        task_id = engine.submit("publisher", 7)
        engine.submit("async_publisher", 8)
        engine.run()
        assert engine.get_state(task_id, "done") is True
        head = engine.log.head()
        check = replay_check(url, engine)
        assert check.ok, check.explain()
        assert engine.log.head() == head
    with open_engine() as engine:  # a step after what it publishes is still checked
        register_publisher(engine, variant="more")
        (divergence,) = replay_check(url, engine).divergences
    assert (divergence.kind, divergence.index, divergence.found) == (
        "unrecorded",
        1,
        "calls 'draft'",
    )


def test_a_task_retried_after_it_failed_replays_up_to_where_it_waits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retried.db'}"
    broken = {"on": True}
    with open_engine(url, backoff=False) as engine:

        @engine.step()
        def fetch(n: int) -> int:
            if broken["on"]:
                raise RuntimeError("upstream is down")
            return n

        @engine.task(name="job")
        def job(n: int) -> int:
            return fetch(n) + int(engine.recv("go"))

        task_id = engine.submit(job, 1)
        engine.run()
        assert engine.tasks()[0].state == "failed"
        broken["on"] = False
        engine.retry(task_id)
        engine.run()
        assert engine.tasks()[0].state == "waiting"  # for its message, after its failed end
        check = replay_check(url, engine)
        assert check.ok, check.explain()
        engine.send(task_id, "go", 2)
        engine.run()
        assert engine.result(task_id) == 3
        check = replay_check(url, engine)
        assert check.ok, check.explain()
        assert check.steps == 2


def test_replay_check_runs_async_tasks_from_inside_an_event_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'async.db'}"
    with open_engine(url) as engine:
        register_publisher(engine)

        @engine.step()
        async def ask(prompt: str) -> str:
            return prompt.upper()

        @engine.task(name="agent")
        async def agent(prompt: str) -> str:
            return await ask(prompt)

        async def an_async_test() -> ReplayCheck:
            engine.submit(agent, "hi")
            engine.submit("async_publisher", 1)
            await engine.run_async()
            return replay_check(url, engine)  # called where an event loop runs

        check = asyncio.run(an_async_test())
    assert check.ok, check.explain()
    assert (check.checked, check.steps) == (2, 1)


@pytest.mark.parametrize(
    ("call", "named"), [("recv", "onward.recv('go')"), ("sleep", "onward.sleep")]
)
def test_an_unrecorded_durable_call_is_named(tmp_path: Path, call: str, named: str) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"

    def register_waiter(engine: Engine, *, changed: bool) -> None:
        @engine.task(name="waiter")
        def waiter() -> int:
            if changed:
                engine.recv("go") if call == "recv" else engine.sleep(5)
            return 1

    with open_engine(url) as engine:
        register_waiter(engine, changed=False)
        engine.submit("waiter")
        engine.run()
    with open_engine() as engine:
        register_waiter(engine, changed=True)
        (divergence,) = replay_check(url, engine).divergences
    assert (divergence.kind, divergence.index) == ("unrecorded", 0)
    assert divergence.found == f"calls {named!r}"


# -- onward to-test --------------------------------------------------------------------------

APP = """
from onward import Engine

engine = Engine.open()  # ONWARD_DB: the recording's log, then memory:// in the test


@engine.step()
def fetch(url: str) -> str:
    return "<html>" + url + "</html>"


@engine.task()
def crawl(url: str) -> int:
    return len(fetch(url)){extra}
"""


def run_pytest(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ONWARD_DB", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def test_to_test_writes_a_regression_test_that_replays_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "app.py").write_text(APP.format(extra=""))
    db = tmp_path / "work.db"
    recording = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app; t = app.engine.submit(app.crawl, 'https://example.org'); "
            "app.engine.run(); print(t)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "ONWARD_DB": f"sqlite:///{db}"},
    )
    task_id = recording.stdout.strip()
    assert main(["to-test", task_id[:10], "--db", str(db), "--engine", "app:engine"]) == 0
    source = capsys.readouterr().out
    assert f"task {task_id} (crawl)" in source
    test_file = tmp_path / "tests" / "test_crawl.py"
    test_file.parent.mkdir()
    test_file.write_text(source)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout

    # The task's code changes: the regression test says where it parts from the recording.
    (tmp_path / "app.py").write_text(APP.format(extra=" + len(fetch(url))"))
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 1
    assert "unrecorded: the log records no outcome here, the code calls 'fetch'" in done.stdout


def test_to_test_of_a_fork_of_a_fork_replays_with_the_outcomes_it_took(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test embeds the outcomes the fork took from its origin (up the chain of forks),
    which the test's own empty log does not hold."""
    (tmp_path / "app.py").write_text(APP.format(extra=""))
    db = tmp_path / "work.db"
    recording = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app; t = app.engine.submit(app.crawl, 'https://example.org'); "
            "app.engine.run(); f = app.engine.fork(t, from_step=1); app.engine.run(); "
            "g = app.engine.fork(f, from_step=1); app.engine.run(); print(g)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "ONWARD_DB": f"sqlite:///{db}"},
    )
    task_id = recording.stdout.strip()
    assert main(["to-test", task_id, "--db", str(db), "--engine", "app:engine"]) == 0
    test_file = tmp_path / "tests" / "test_fork.py"
    test_file.parent.mkdir()
    test_file.write_text(capsys.readouterr().out)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


#: A task name and a session that would end the generated docstring and run code, a backslash
#: that would end it in an escape, and a character that Unicode's \w takes but no Python name
#: may hold.
HOSTILE_NAME = 'x² """ + __import__("pathlib").Path("pwned").write_text("name") + """ \\'
HOSTILE_SESSION = "s''' + __import__('pathlib').Path('pwned').write_text('session') + '''"
HOSTILE_APP = f"""
from onward import Engine

engine = Engine.open(session={HOSTILE_SESSION!r})


@engine.step()
def fetch(url: str) -> str:
    return "<html>" + url + "</html>"


@engine.task(name={HOSTILE_NAME!r})
def crawl(url: str) -> int:
    return len(fetch(url))
"""


def test_to_test_writes_values_from_the_log_safely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A task name, a session and a log path that hold quotes and backslashes give a module
    that compiles, runs none of them, says them as they are, and replays the task."""
    (tmp_path / "app.py").write_text(HOSTILE_APP)
    folder = tmp_path / 'logs\\x"""\\N'
    folder.mkdir()
    db = folder / "work.db"
    recording = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app; t = app.engine.submit(app.crawl, 'https://example.org'); "
            "app.engine.run(); print(t)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "ONWARD_DB": f"sqlite:///{db}"},
    )
    task_id = recording.stdout.strip()
    assert main(["to-test", task_id, "--db", str(db), "--engine", "app:engine", "--json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    assert (generated["task_id"], generated["name"]) == (task_id, HOSTILE_NAME)
    assert (generated["session"], generated["engine"]) == (HOSTILE_SESSION, "app:engine")
    source = generated["source"]
    module = ast.parse(source)
    doc = ast.get_docstring(module, clean=False) or ""
    assert f"({HOSTILE_NAME}),\nrecorded in session {HOSTILE_SESSION!r} of sqlite:///{db}" in doc
    # The docstring, the imports, ENGINE, HISTORY, INHERITED, SUBTASKS and the test: no other
    # statement.
    assert [type(node).__name__ for node in module.body] == [
        "Expr",
        "Import",
        "ImportFrom",
        "Assign",
        "Assign",
        "Assign",
        "Assign",
        "FunctionDef",
    ]
    test_file = tmp_path / "tests" / "test_hostile.py"
    test_file.parent.mkdir()
    test_file.write_text(source)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert not list(tmp_path.rglob("pwned"))


def test_to_test_refuses_an_unknown_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "work.db"
    with open_engine(f"sqlite:///{db}") as engine:
        register(engine)
        task_id = engine.submit("survey", "a")
    assert main(["to-test", "nope", "--db", str(db), "--engine", "app:engine"]) == 2
    assert "no task 'nope'" in capsys.readouterr().err
    assert main(["to-test", "", "--db", str(db), "--engine", "app"]) == 2
    capsys.readouterr()
    for target in ("app", "app:", ":engine", "app:engine:x", "app..jobs:engine", "app:en gine"):
        assert main(["to-test", task_id, "--db", str(db), "--engine", target]) == 2, target
        assert "expected MODULE:ENGINE" in capsys.readouterr().err


def test_to_test_refuses_a_task_that_never_ran(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replayed, a task with no step outcome and no end meets nothing to compare with: the
    test written would pass whatever the code does. It is refused, and says why."""
    db = tmp_path / "work.db"
    with open_engine(f"sqlite:///{db}") as engine:
        register(engine)
        task_id = engine.submit("survey", "a")
    assert main(["to-test", task_id, "--db", str(db), "--engine", "app:engine"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"task {task_id} ('survey', queued) has no history to check" in captured.err
    assert len(captured.err.splitlines()) == 1


CUTTING_APP = """
import asyncio

from onward import Engine

engine = Engine.open()  # ONWARD_DB: the recording's log, then memory:// in the test


@engine.step()
async def slow() -> int:
    await asyncio.Event().wait()  # never ends: the timeout around it cancels it
    return 1


@engine.step()
async def fast() -> int:
    return 2


@engine.task()
async def cuts() -> int:
    try:
        return await asyncio.wait_for(slow(), timeout=0.01)
    except TimeoutError:
        return await fast()
"""


def test_to_test_of_a_task_that_gave_up_on_a_step_writes_a_test_that_skips_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay cannot follow the task past the step it cancelled: the regression test skips,
    saying why, where it failed on the very code it was recorded from."""
    (tmp_path / "app.py").write_text(CUTTING_APP)
    db = tmp_path / "work.db"
    recording = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app, asyncio; t = app.engine.submit(app.cuts); "
            "asyncio.run(app.engine.run_async()); print(t, app.engine.result(t))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "ONWARD_DB": f"sqlite:///{db}"},
    )
    task_id, result = recording.stdout.split()
    assert result == "2"
    assert main(["to-test", task_id, "--db", str(db), "--engine", "app:engine"]) == 0
    test_file = tmp_path / "test_cuts.py"
    test_file.write_text(capsys.readouterr().out)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout


@pytest.mark.parametrize(
    ("marker", "check"),
    [
        ("backoff=False", "assert onward_engine.clock is onward_clock"),
        # a clock or sleep of the marker's own replaces the fake one's
        ("sleep=MINE.sleep", "assert onward_engine.clock is onward_clock"),
        ("clock=MINE, sleep=MINE.sleep", "assert onward_engine.clock is MINE"),
        ("clock=MINE", "assert onward_engine.clock is MINE and onward_clock.slept == []"),
    ],
)
def test_the_plugin_is_registered_for_pytest(tmp_path: Path, marker: str, check: str) -> None:
    test_file = tmp_path / "test_uses_fixtures.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            import pytest
            from onward.testing import FakeClock

            MINE = FakeClock(start=5.0)

            @pytest.mark.onward({marker})
            def test_it(onward_engine, onward_sqlite_engine, onward_clock):
                {check}
                assert onward_sqlite_engine.clock is onward_engine.clock
            """
        )
    )
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_modules_and_a_tests_markers_both_apply(tmp_path: Path) -> None:
    """The module's options were dropped when the test had a marker of its own, and one given
    without its name was ignored (``onward(False)`` still backed off)."""
    test_file = tmp_path / "test_markers.py"
    test_file.write_text(
        textwrap.dedent(
            """
            import pytest

            pytestmark = pytest.mark.onward(session="from-the-module", backoff=True)


            class TestThem:
                pytestmark = pytest.mark.onward(backoff=False)

                @pytest.mark.onward(session="from-the-test")
                def test_closest_wins(self, onward_engine):
                    assert onward_engine.session == "from-the-test"

                def test_the_class_and_module(self, onward_engine, onward_clock):
                    assert onward_engine.session == "from-the-module"

                    @onward_engine.step()
                    def flaky() -> None:
                        raise TimeoutError("slow")

                    @onward_engine.task()
                    def job() -> None:
                        flaky()

                    onward_engine.submit(job)
                    onward_engine.run()
                    assert sum(onward_clock.slept) < 0.001  # no back-off: the class's option


            @pytest.mark.onward(False)
            def test_unnamed(onward_engine):
                pass
            """
        )
    )
    done = run_pytest(test_file, tmp_path)
    assert "2 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert "takes the options of Engine.open by name (backoff=False), got (False,)" in done.stdout


def test_the_readme_pytest_example_runs_under_pytest(tmp_path: Path) -> None:
    import re

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (example,) = [b for b in blocks if "def test_crawl(onward_engine)" in b]
    test_file = tmp_path / "test_readme_example.py"
    test_file.write_text(example)
    done = run_pytest(test_file, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


VALUED_APP = """
import datetime

from onward import Engine

engine = Engine.open()


@engine.step()
def describe(text: str) -> str:
    return f"{len(text)} characters"


@engine.task()
def typed(payload: bytes, pair: tuple[int, str], day: datetime.date, text: str) -> str:
    assert isinstance(payload, bytes) and isinstance(pair, tuple), (payload, pair)
    assert isinstance(day, datetime.date), day
    return f"{payload!r} {pair!r} {day.isoformat()} {describe(text)}"


@engine.task()
def untyped(payload, pair, number):
    return [type(payload).__name__, type(pair).__name__, repr(number), describe(str(pair))]
"""


def test_replay_and_to_test_give_a_task_its_arguments_as_its_runs_had_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes, tuples and dates came to a replay in their stored form (``{'$bytes': ...}``):
    every task taking one diverged, and its generated test failed on the same code. A string
    with U+2028, U+2029 or U+0085 cut its record in two in the generated test."""
    (tmp_path / "app.py").write_text(VALUED_APP)
    db = tmp_path / "work.db"
    recording = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app, datetime; from onward.testing import replay_check; "
            "a = app.engine.submit(app.typed, b'ab\\x00', (1, 'x'), datetime.date(2026, 12, 6), "
            "'line\\u2028sep\\u2029par\\x85nel'); "
            "b = app.engine.submit(app.untyped, b'ab', (1, 'x'), float('nan')); "
            "app.engine.run(); print(a, b); print(replay_check(app.engine.log, app.engine).ok)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "ONWARD_DB": f"sqlite:///{db}"},
    )
    ids, check = recording.stdout.splitlines()
    assert check == "True", recording.stdout
    for task_id, name in zip(ids.split(), ("typed", "untyped"), strict=True):
        assert main(["to-test", task_id, "--db", str(db), "--engine", "app:engine"]) == 0
        test_file = tmp_path / "tests" / f"test_{name}.py"
        test_file.parent.mkdir(exist_ok=True)
        test_file.write_text(capsys.readouterr().out)
        done = run_pytest(test_file, tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_replay_of_a_target_leaves_the_environment_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ONWARD_DB stayed memory:// for every test that ran after a generated one.
    from onward.testing.replay import replay_recorded

    (tmp_path / "leaves_env_app.py").write_text(APP.format(extra=""))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ONWARD_DB", raising=False)
    with pytest.raises(UsageError, match="starts with its TaskSubmitted"):  # no history
        replay_recorded("leaves_env_app:engine", "", task_id="t")
    assert "ONWARD_DB" not in os.environ
    import leaves_env_app  # type: ignore[import-not-found]

    assert leaves_env_app.engine.log.url == "memory://"
    leaves_env_app.engine.close()


def test_a_history_with_unicode_line_separators_round_trips() -> None:
    from onward.events import Meta, Recorded, TaskSubmitted
    from onward.testing.replay import decode_history, encode_history

    texts = ["a\u2028b", "c\u2029d", "e\x85f", "g\x1ch", "i\r\nj"]
    history = [
        Recorded("task-t", 1, 1, Meta(event_id="e1", time=1.0), TaskSubmitted(name="n", args=texts))
    ]
    (back,) = decode_history(encode_history(history), task_id="t")
    assert isinstance(back.event, TaskSubmitted)
    assert back.event.args == texts
