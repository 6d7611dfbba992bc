"""Self-healing in the engine: fixes, retries and breakers, recorded as decisions, on SQLite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from onward import SIGNATURE_VERSION, Engine, TaskFailedError
from onward.events import FixAttempted, Jitter, Recorded, RetryScheduled, StepFailed, TaskWaiting
from onward.healing.breaker import BreakerPolicy
from onward.healing.fixes import FixRegistry, Remedy, StepCall
from onward.healing.retry import RetryBudget, RetryPolicies, RetryPolicy
from onward.testing import replay_check
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")


class Crash(BaseException):
    """Stands for the process dying: nothing after it is recorded."""


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(db, session="heal", clock=clock, sleep=clock.advance, seed=7, **options)


def kinds(history: list[Recorded]) -> list[str]:
    return [type(r.event).__name__ for r in history]


def decisions(history: list[Recorded]) -> list[Recorded]:
    """The healing decisions (not the rulebook's word on what follows a completed task)."""
    return [
        r
        for r in history
        if type(r.event).__name__ == "DecisionMade"
        and getattr(r.event, "kind", "") != "task_completed"
    ]


def by_id(history: list[Recorded]) -> dict[str, Recorded]:
    return {r.meta.event_id: r for r in history}


def test_a_transient_error_is_retried_after_its_recorded_delay(db: str, clock: FakeClock) -> None:
    calls: list[float] = []
    policy = RetryPolicy(max_attempts=4, base=2.0, jitter=Jitter.NONE)
    with open_engine(db, clock, retries=RetryPolicies(policy), fixes=FixRegistry()) as engine:

        @engine.step()
        def call_api(n: int) -> int:
            calls.append(clock.now)
            if len(calls) < 3:
                raise TimeoutError(f"read timed out after {n} s")
            return n

        @engine.task()
        def job() -> int:
            return call_api(30)

        start = clock.now
        task_id = engine.submit(job)
        summary = engine.run()
        assert engine.result(task_id) == 30
        assert calls == [start, start + 2.0, start + 6.0]  # base 2, multiplier 2, no jitter
        assert summary.waiting == 2
        history = engine.log.read_stream(f"task-{task_id}")
        retries = [r.event for r in history if type(r.event).__name__ == "RetryScheduled"]
        assert [getattr(e, "delay", None) for e in retries] == [2.0, 4.0]
        assert [getattr(e, "attempt", None) for e in retries] == [2, 3]
        # Each retry is a decision caused by the error it answers.
        index = by_id(history)
        for decision in decisions(history):
            assert getattr(decision.event, "kind", None) == "retry"
            cause = index[decision.meta.causation_id]
            assert type(cause.event).__name__ == "ErrorObserved"
            assert decision.event.inputs["attempt"] in (1, 2)  # type: ignore[union-attr]
        view = engine.refresh().errors.get(retries[0].signature)  # type: ignore[union-attr]
        assert view.occurrences == 2
        assert view.retries == 2
        assert view.retry_successes == 1


@pytest.mark.parametrize("fallback", ["value", "step"])
def test_a_task_that_catches_the_signal_to_wait_waits_and_its_history_stays_whole(
    db: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, fallback: str
) -> None:
    """A bare ``except:`` around a step catches the signal that the task now waits for a retry:
    what the task does next (return a value, call another step) is not recorded over its wait.
    It waits as recorded, its retries run, and its history folds."""
    calls: list[str] = []
    policy = RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE)
    with open_engine(db, clock, retries=RetryPolicies(policy), fixes=FixRegistry()) as engine:

        @engine.step()
        def fetch(url: str) -> str:
            calls.append("fetch")
            if len(calls) < 3:
                raise TimeoutError("the server was slow")
            return "fresh copy"

        @engine.step()
        def note(text: str) -> str:
            calls.append("note")
            return text

        @engine.task()
        def job(url: str) -> str:
            try:
                return fetch(url)
            except:  # noqa: E722 - the mistake under test
                return note("cached copy") if fallback == "step" else "cached copy"

        task_id = engine.submit(job, "https://example.org")
        summary = engine.run()
        assert engine.result(task_id) == "fresh copy"
        assert (summary.succeeded, summary.waiting) == (1, 2)
        assert calls == ["fetch", "fetch", "fetch"]  # `note` never ran over a wait
        warned = "caught onward's signal to wait" in caplog.text
        assert warned == (fallback == "value")
        history = kinds(engine.log.read_stream(f"task-{task_id}"))
        assert history.count("TaskWaiting") == 2
        assert history.count("TaskClaimed") == 3
        assert engine.log.verify().ok
    with open_engine(db, clock) as reopened:  # the history folds: nothing is damaged
        assert reopened.task_view(task_id).state == "succeeded"


def test_a_retry_due_before_a_crash_fires_at_its_due_time_after_resume(
    db: str, clock: FakeClock
) -> None:
    calls: list[float] = []
    policy = RetryPolicy(max_attempts=3, base=10.0, jitter=Jitter.NONE)

    def register(engine: Engine) -> Any:
        @engine.step()
        def fetch() -> str:
            calls.append(clock.now)
            if len(calls) == 1:
                raise ConnectionResetError("connection reset by peer")
            return "ok"

        @engine.task(name="job")
        def job() -> str:
            return fetch()

        return job

    def stop(seconds: float) -> None:
        raise Crash  # the process dies while it waits for the retry

    engine = Engine.open(
        db,
        session="heal",
        clock=clock,
        sleep=stop,
        seed=1,
        retries=RetryPolicies(policy),
        fixes=FixRegistry(),
    )
    task_id = engine.submit(register(engine))
    with pytest.raises(Crash):
        engine.run()
    engine.close()
    first = calls[0]
    clock.advance(3.0)  # resumed before the retry is due
    with open_engine(db, clock, retries=RetryPolicies(policy), fixes=FixRegistry()) as engine:
        register(engine)
        engine.run()
        assert engine.result(task_id) == "ok"
    assert calls == [first, first + 10.0]  # neither at once nor never: at its due time


def test_a_fix_changes_the_call_and_is_recorded(db: str, clock: FakeClock, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes("café crème — 10 €".encode("cp1252"))
    with open_engine(db, clock) as engine:

        @engine.step()
        def read(path: str, encoding: str = "utf-8") -> str:
            return Path(path).read_text(encoding=encoding)

        @engine.task()
        def job(path: str) -> str:
            return read(path)

        task_id = engine.submit(job, str(text))
        engine.run()
        assert engine.result(task_id) == "café crème — 10 €"
        history = engine.log.read_stream(f"task-{task_id}")
        assert "FixAttempted" in kinds(history)
        assert "FixSucceeded" in kinds(history)
        (decision,) = decisions(history)
        assert getattr(decision.event, "choice", None) == "decode-with-detected-encoding"
        failed = next(r for r in history if type(r.event).__name__ == "StepFailed")
        assert getattr(failed.event, "final", None) is False
        signature = getattr(failed.event, "signature", "")
        stats = engine.refresh().errors.fix_stats(signature)
        assert stats["decode-with-detected-encoding"].successes == 1


def test_a_fix_that_waits_waits_durably_and_is_settled_by_the_next_run(
    db: str, clock: FakeClock
) -> None:
    calls: list[float] = []
    with open_engine(db, clock) as engine:

        @engine.step()
        def fetch() -> str:
            calls.append(clock.now)
            if len(calls) == 1:
                raise ConnectionResetError("connection reset by peer")
            return "ok"

        @engine.task()
        def job() -> str:
            return fetch()

        task_id = engine.submit(job)
        summary = engine.run()
        assert engine.result(task_id) == "ok"
        assert summary.waiting == 1
        assert calls[1] > calls[0]  # after the fix's wait
        history = engine.log.read_stream(f"task-{task_id}")
        names = kinds(history)
        assert (
            names.index("FixAttempted") < names.index("TaskWaiting") < names.index("FixSucceeded")
        )
        (decision,) = decisions(history)
        assert getattr(decision.event, "choice", "") == "reconnect-after-dropped-connection"


def test_errors_nothing_can_cure_are_given_up_at_once(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        calls: list[int] = []

        @engine.step()
        def compute(x: int) -> int:
            calls.append(x)
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

        @engine.task()
        def job() -> int:
            return compute(1)

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(TaskFailedError):
            engine.result(task_id)
        assert calls == [1]
        (decision,) = decisions(engine.log.read_stream(f"task-{task_id}"))
        assert getattr(decision.event, "kind", None) == "give_up"
        assert decision.event.inputs["reason"] == "not retryable"  # type: ignore[union-attr]


def test_the_retry_budget_stops_a_retry_storm(db: str, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=5, base=1.0, jitter=Jitter.NONE)
    with open_engine(
        db,
        clock,
        retries=RetryPolicies(policy),
        retry_budget=RetryBudget(limit=2, window=600),
        fixes=FixRegistry(),
    ) as engine:

        @engine.step()
        def call_api() -> None:
            raise TimeoutError("timed out")

        @engine.task()
        def job() -> None:
            call_api()

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(TaskFailedError):
            engine.result(task_id)
        history = engine.log.read_stream(f"task-{task_id}")
        assert kinds(history).count("RetryScheduled") == 2
        last = decisions(history)[-1]
        assert last.event.inputs["reason"] == "retry budget spent"  # type: ignore[union-attr]


def test_retries_that_worked_spend_no_retry_budget(db: str, clock: FakeClock) -> None:
    """A busy session meeting a passing fault (each call fails once, then works) retries
    every task: only retries that failed or still await their outcome spend the budget."""
    policy = RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE)
    with open_engine(
        db,
        clock,
        retries=RetryPolicies(policy),
        retry_budget=RetryBudget(limit=2, window=600),
        fixes=FixRegistry(),
    ) as engine:
        failed: set[int] = set()

        @engine.step()
        def call_api(n: int) -> int:
            if n not in failed:
                failed.add(n)
                raise TimeoutError(f"timed out calling shard {n}")
            return n

        @engine.task()
        def job(n: int) -> int:
            return call_api(n)

        ids = []
        for n in range(6):  # one after another: a retry still awaiting its outcome spends
            ids.append(engine.submit(job, n))
            engine.run()
        assert [engine.result(task_id) for task_id in ids] == list(range(6))
        spent = [
            event.inputs["retry"]["budget_spent"]
            for task_id in ids
            for event in (r.event for r in decisions(engine.log.read_stream(f"task-{task_id}")))
        ]
        assert len(spent) == 6
        assert max(spent) < 2
        assert replay_check(engine.log, engine).ok


def test_a_learned_fix_is_applied_on_first_sight(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        seen: list[dict[str, Any]] = []

        @engine.step(hints={"defaults": {"region": "eu-west-1"}})
        def connect(config: dict[str, Any]) -> str:
            seen.append(config)
            return str(config["region"])

        @engine.task()
        def job() -> str:
            return connect({"host": "db"})

        first = engine.submit(job)
        engine.run()
        assert engine.result(first) == "eu-west-1"  # the built-in fix matched on its own
        signature = (
            next(
                r.event
                for r in engine.log.read_stream(f"task-{first}")
                if type(r.event).__name__ == "StepFailed"
            )
        ).signature
        engine.learn(signature, "use-declared-default", note="the region defaults to eu")
        assert engine.projections.errors.learned(signature) == ("use-declared-default",)
        with pytest.raises(Exception, match="no-such-fix"):
            engine.learn(signature, "no-such-fix")


def test_learning_a_fix_for_another_signature_format_says_it_applies_elsewhere(
    db: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A fix taught for a signature of another format (a newer onward's, sharing the log) is
    recorded for that onward, and this one says it will not apply it itself."""
    other = f"v{SIGNATURE_VERSION + 1}-" + "0123456789abcdef"
    with open_engine(db, clock) as engine, caplog.at_level(logging.WARNING, logger="onward"):
        engine.learn(f"v{SIGNATURE_VERSION}-" + "0123456789abcdef", "use-declared-default")
        assert caplog.records == []
        engine.learn(other, "use-declared-default")
        assert engine.projections.errors.learned(other) == ("use-declared-default",)
    (record,) = caplog.records
    assert other in record.getMessage()
    assert f"computes v{SIGNATURE_VERSION} signatures" in record.getMessage()


def test_a_breaker_opens_waits_and_closes(db: str, clock: FakeClock) -> None:
    policy = BreakerPolicy(failures=3, cooldown=60.0)
    up = [False]
    calls: list[float] = []
    with open_engine(db, clock, breakers=policy) as engine:

        @engine.step(breaker="search-api")
        def search(q: str) -> str:
            calls.append(clock.now)
            if not up[0]:
                raise RuntimeError("503 service unavailable")
            return q.upper()

        @engine.task()
        def job(q: str) -> str:
            return search(q)

        failing = [engine.submit(job, f"q{i}") for i in range(3)]
        engine.run()
        breaker = engine.refresh().breakers.get("search-api")
        assert breaker.state == "open"
        assert breaker.consecutive_failures == 3
        assert len(calls) == 3
        for task_id in failing:
            with pytest.raises(TaskFailedError):
                engine.result(task_id)

        up[0] = True
        opened_at = clock.now
        waiting = engine.submit(job, "later")
        engine.run()  # the step is not called while open: the task waits for the cool-down
        assert engine.result(waiting) == "LATER"
        assert calls[3] >= opened_at + 60.0  # called first at the half-open moment
        breaker = engine.refresh().breakers.get("search-api")
        assert breaker.state == "closed"
        moves = [(t.source, t.dest) for t in breaker.history]
        assert moves == [("new", "open"), ("open", "half_open"), ("half_open", "closed")]
        history = engine.log.read_stream(f"task-{waiting}")
        choices = [getattr(d.event, "choice", "") for d in decisions(history)]
        assert choices == ["wait", "half-open", "close"]
        assert engine.log.verify().ok


def test_a_fix_that_makes_progress_is_applied_again(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        tried: list[int] = []

        @engine.step()
        def load(batch_size: int = 64) -> int:
            tried.append(batch_size)
            if batch_size > 8:
                raise MemoryError(f"cannot allocate {batch_size} rows")
            return batch_size

        @engine.task()
        def job() -> int:
            return load()

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 8
        assert tried == [64, 32, 16, 8]
        history = engine.log.read_stream(f"task-{task_id}")
        applications = [r.event for r in history if type(r.event).__name__ == "FixAttempted"]
        assert [getattr(e, "again", None) for e in applications] == [False, True, True]
        assert "FixFailed" not in kinds(history)
        signature = getattr(applications[0], "signature", "")
        stats = engine.refresh().errors.fix_stats(signature)["halve-batch-size"]
        assert (stats.attempts, stats.successes, stats.failures) == (1, 1, 0)


def test_a_fix_applied_again_to_another_error_is_settled_for_the_error_it_answered(
    db: str, clock: FakeClock
) -> None:
    # A smaller batch gets further and runs out of memory elsewhere (another signature): the
    # outcome of the fix's run of applications is the first error's, or that error's record
    # would show an attempt that never ended and demote a fix that always worked.
    with open_engine(db, clock) as engine:

        def parse(rows: int) -> None:
            if rows > 16:
                raise MemoryError(f"cannot parse {rows} rows")

        def index(rows: int) -> None:
            if rows > 8:
                raise MemoryError(f"cannot index {rows} rows")

        @engine.step()
        def load(batch_size: int = 64) -> int:
            parse(batch_size)
            index(batch_size)
            return batch_size

        @engine.task()
        def job(n: int) -> int:
            return load()

        task_ids = [engine.submit(job, n) for n in range(4)]
        engine.run()
        assert [engine.result(task_id) for task_id in task_ids] == [8, 8, 8, 8]
        history = engine.log.read_stream(f"task-{task_ids[0]}")
        applications = [r.event for r in history if type(r.event).__name__ == "FixAttempted"]
        assert [getattr(e, "again", None) for e in applications] == [False, True, True]
        first = getattr(applications[0], "signature", "")
        assert {getattr(e, "signature", "") for e in applications} == {first}
        errors = engine.refresh().errors
        stats = errors.fix_stats(first)["halve-batch-size"]
        assert (stats.attempts, stats.successes, stats.failures) == (4, 4, 0)
        assert len(errors.signatures) == 2  # the other error is observed, with no fix of its own


def test_a_crash_during_a_fixed_call_resumes_with_the_fix(
    db: str, clock: FakeClock, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes("café".encode("cp1252"))
    die = [True]

    def register(engine: Engine) -> Any:
        @engine.step()
        def read(path: str, encoding: str = "utf-8") -> str:
            content = Path(path).read_text(encoding=encoding)
            if die:
                raise Crash  # the worker dies during the fixed call
            return content

        @engine.task(name="job")
        def job(path: str) -> str:
            return read(path)

        return job

    engine = open_engine(db, clock)
    task_id = engine.submit(register(engine), str(text))
    with pytest.raises(Crash):
        engine.run()
    engine.close()
    die.clear()
    with open_engine(db, clock) as engine:
        register(engine)
        engine.run()
        assert engine.result(task_id) == "café"
        history = engine.log.read_stream(f"task-{task_id}")
        names = kinds(history)
        attempts = [r.event for r in history if type(r.event).__name__ == "FixAttempted"]
        # One attempt of the fix, applied again after the crash (from the original call).
        assert [getattr(e, "again", None) for e in attempts].count(False) == 1
        assert names.count("TaskLeaseExpired") == 1
        assert "FixSucceeded" in names
        assert "FixFailed" not in names


def test_folding_one_event_at_a_time_equals_folding_pages(db: str, clock: FakeClock) -> None:
    from onward.events import open_log
    from onward.projections import Projections

    policy = BreakerPolicy(failures=2, cooldown=5.0)
    with open_engine(db, clock, breakers=policy) as engine:
        flaky = [0]

        @engine.step(breaker="api")
        def call(n: int) -> int:
            flaky[0] += 1
            if flaky[0] % 3 == 0:
                raise TimeoutError(f"timed out after {n} s")
            if flaky[0] in (4, 5):
                raise RuntimeError("503")
            return n

        @engine.task()
        def job(n: int) -> int:
            return call(n) + call(n + 1)

        for n in range(6):
            engine.submit(job, n)
        engine.run()
    log = open_log(db)
    one, paged = Projections(), Projections()
    for recorded in log.read():
        one.apply(recorded)
    for page in log.read_pages(page_size=7):
        paged.apply_page(page)
    assert one.snapshot() == paged.snapshot()
    assert one.snapshot()["errors"]
    assert one.snapshot()["breakers"]
    log.close()


@pytest.mark.parametrize("healing", [True, False])
def test_an_error_message_holding_a_lone_surrogate_is_recorded_escaped(
    db: str, clock: FakeClock, healing: bool
) -> None:
    """A message with a lone surrogate (a file name decoded with ``surrogateescape``) does not
    encode as UTF-8: it is recorded with the surrogate escaped, and the task gets the step's
    own exception, reading as recorded (as a replay raises it)."""
    with open_engine(db, clock, healing=healing) as engine:

        @engine.step()
        def parse(name: bytes) -> str:
            raise ValueError(f"cannot parse {name.decode('utf-8', 'surrogateescape')}")

        caught: list[str] = []

        @engine.task()
        def job() -> str:
            try:
                return parse(b"caf\xe9.txt")
            except ValueError as exc:
                caught.append(str(exc))
                return "caught"

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == "caught"
        assert caught == ["cannot parse caf\\udce9.txt"]  # as recorded
        (failed,) = [
            r.event
            for r in engine.log.read_stream(f"task-{task_id}")
            if type(r.event).__name__ == "StepFailed"
        ]
        assert failed.message == "cannot parse caf\\udce9.txt"  # type: ignore[attr-defined]


class SwitchMirror:
    """A fix for a refused connection: the same fetch from the mirror."""

    name = "switch-to-mirror"
    error_types = (ConnectionError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return not call.arguments["mirror"]

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        return Remedy(call=call.with_arguments(mirror=True), change={"mirror": [False, True]})


def test_a_retried_task_heals_its_failed_step_afresh(db: str, clock: FakeClock) -> None:
    policy = RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE)
    fixes = FixRegistry()
    fixes.register(SwitchMirror())
    calls: list[bool] = []
    succeed_at = [0]  # the call that succeeds (0: none)
    with open_engine(db, clock, retries=RetryPolicies(policy), fixes=fixes) as engine:

        @engine.step()
        def fetch(mirror: bool = False) -> str:
            calls.append(mirror)
            if len(calls) != succeed_at[0]:
                raise ConnectionRefusedError("connection refused")
            return "mirror" if mirror else "origin"

        @engine.task()
        def job() -> str:
            return fetch()

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(TaskFailedError):
            engine.result(task_id)
        # The fix, then a retry; the third call exhausts the attempts.
        assert calls == [False, True, False]
        succeed_at[0] = len(calls) + 3  # the third call of the new attempt succeeds
        engine.retry(task_id, reason="the network is back")
        engine.run()
        # The new attempt tries the fix again, then gets its retry.
        assert calls[3:] == [False, True, False]
        assert engine.result(task_id) == "origin"
        history = engine.log.read_stream(f"task-{task_id}")
        after = [r.event for r in history][kinds(history).index("TaskRetried") :]
        assert [getattr(e, "attempt", 0) for e in after if isinstance(e, StepFailed)] == [1, 2]
        assert [getattr(e, "again", None) for e in after if isinstance(e, FixAttempted)] == [False]
        assert sum(isinstance(e, RetryScheduled) for e in after) == 1
        # Both attempts replay as recorded.
        assert replay_check(engine.log, engine).ok


class SmallerPagesLater:
    """A fix for a quota on large pages: pages of 10, after a pause of 3 s."""

    name = "smaller-pages-after-a-pause"
    error_types = (RuntimeError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return "quota" in str(error) and int(call.arguments["page"]) > 10

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        page = call.arguments["page"]
        return Remedy(call=call.with_arguments(page=10), change={"page": [page, 10]}, delay=3.0)


def test_a_crash_during_a_fix_s_delay_makes_the_fix_s_call_after_the_rest_of_it(
    db: str, clock: FakeClock
) -> None:
    calls: list[tuple[int, float]] = []

    def register(engine: Engine) -> Any:
        @engine.step()
        def fetch(page: int) -> str:
            calls.append((page, clock.now))
            if page > 10:
                raise RuntimeError("quota exceeded for large pages")
            return f"page={page}"

        @engine.task(name="job")
        def job(page: int) -> str:
            return fetch(page)

        return job

    def crash(seconds: float) -> None:
        raise Crash  # the worker dies as the fix's delay begins

    fixes = FixRegistry()
    fixes.register(SmallerPagesLater())
    once = RetryPolicies(RetryPolicy(max_attempts=1))
    start = clock.now
    engine = Engine.open(
        db, session="heal", clock=clock, sleep=crash, seed=7, fixes=fixes, retries=once
    )
    task_id = engine.submit(register(engine), 100)
    with pytest.raises(Crash):
        engine.run()
    engine.close()
    clock.advance(1.0)
    with open_engine(db, clock, fixes=fixes, retries=once) as engine:
        register(engine)
        engine.run()
        assert engine.result(task_id) == "page=10"
        # The fix's call once its delay was over; the step's own call was not made again.
        assert calls == [(100, start), (10, start + 3.0)]
        history = engine.log.read_stream(f"task-{task_id}")
        names = kinds(history)
        assert (names.count("FixAttempted"), names.count("FixSucceeded")) == (1, 1)
        assert "FixFailed" not in names
        (wait,) = [r.event for r in history if isinstance(r.event, TaskWaiting)]
        assert wait.until == start + 3.0
        assert replay_check(engine.log, engine).ok


BAD_REMEDIES: dict[str, Callable[[StepCall], Any]] = {
    "raises": lambda call: (_ for _ in ()).throw(RuntimeError("the fix broke")),
    "a str": lambda call: "use the mirror",
    "a dict": lambda call: {"call": call},
    "a delay for ever": lambda call: Remedy(call=call, delay=float("inf")),
    "a delay past any date": lambda call: Remedy(call=call, delay=1e300),
    "a change it cannot record": lambda call: Remedy(call=call, change={"at": object()}),
    "a change that is a list": lambda call: Remedy(call=call, change=[1, 2]),  # type: ignore[arg-type]
    "a change that is a str": lambda call: Remedy(call=call, change="halved"),  # type: ignore[arg-type]
    "a call of another step": lambda call: Remedy(
        call=StepCall(step="other", arguments={"zzz": 1}, hints={}, attempt=1)
    ),
    "arguments that are a list": lambda call: Remedy(
        call=StepCall(step=call.step, arguments=[1, 2], hints={}, attempt=1)  # type: ignore[arg-type]
    ),
    # A name the step does not take (a typo): the call ran without the task's own argument,
    # its default in its place, and the wrong result was recorded.
    "an argument the step does not take": lambda call: Remedy(
        call=StepCall(step=call.step, arguments={"kee": "other"}, hints={}, attempt=1)
    ),
    "an argument left out": lambda call: Remedy(
        call=StepCall(step=call.step, arguments={}, hints={}, attempt=1)
    ),
}


@pytest.mark.parametrize("gives", sorted(BAD_REMEDIES))
def test_a_fix_that_gives_what_the_engine_cannot_use_is_skipped_and_the_failure_recorded(
    db: str, clock: FakeClock, gives: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A plug-in fix whose ``apply()`` raises or gives no usable remedy: skipped, said in the
    log, and the step's own failure recorded (a str or a dict failed the task with an
    AttributeError and recorded no failure, no error, no decision)."""

    class Broken:
        name = "broken-fix"
        error_types = (LookupError,)

        def matches(self, error: BaseException, call: StepCall) -> bool:
            return True

        def apply(self, error: BaseException, call: StepCall) -> Any:
            return BAD_REMEDIES[gives](call)

    fixes = FixRegistry()
    fixes.register(Broken())
    with open_engine(db, clock, fixes=fixes) as engine:

        @engine.step()
        def look_up(key: str = "default") -> str:
            raise KeyError(key)

        @engine.task()
        def job() -> str:
            return look_up("missing")

        task_id = engine.submit(job)
        engine.run()
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert (view.error or "").startswith("KeyError")
        recorded = kinds(engine.log.read_stream(f"task-{task_id}"))
        assert {"StepFailed", "ErrorObserved", "DecisionMade"} <= set(recorded)
        assert "FixAttempted" not in recorded
        assert "fix broken-fix: apply()" in caplog.text
