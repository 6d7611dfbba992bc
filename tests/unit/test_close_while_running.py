"""Closing an engine while it runs in another thread stops the run as SIGTERM stops a worker:
nothing more is claimed, each running task is handed back at its next step with the outcomes
of the steps in flight recorded, and ``close()`` returns once the run has."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, ErrorBudget, Observer, RunSummary, UsageError
from onward.events import StepCompleted, open_log
from onward.healing.fixes import FixRegistry, Remedy, StepCall
from onward.healing.retry import RetryPolicies, RetryPolicy
from onward.judgement.budget import assess
from tests.conftest import FakeClock

LIMIT = 60.0  # a hang fails the test instead of holding the suite


class Background:
    """A call in a thread of its own, its outcome kept."""

    def __init__(self, call: Any) -> None:
        self.outcome: list[Any] = []
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Any) -> None:
        try:
            self.outcome.append(call())
        except BaseException as exc:  # kept for the test to look at
            self.outcome.append(exc)

    def result(self) -> Any:
        self.thread.join(LIMIT)
        assert not self.thread.is_alive(), "it hung"
        return self.outcome[0]


def _completed(db: Path) -> Counter[str]:
    with open_log(f"sqlite:///{db}") as log:
        return Counter(r.stream for r in log.read() if isinstance(r.event, StepCompleted))


@pytest.mark.parametrize("how", ["run", "serve", "run_async", "serve_async"])
def test_close_stops_a_run_in_another_thread_and_loses_no_step(tmp_path: Path, how: str) -> None:
    db = tmp_path / "log.db"
    bodies: Counter[tuple[str, int]] = Counter()
    in_steps = threading.Barrier(3)  # two steps under way, and the test
    closing = threading.Event()
    engine = Engine.open(f"sqlite:///{db}", session="s")

    @engine.step()
    def work(i: int) -> int:
        bodies[(engine.idempotency_key(), i)] += 1
        if i == 1:
            in_steps.wait(LIMIT)
            assert closing.wait(LIMIT)
        return i

    @engine.task()
    def job(n: int) -> int:
        return sum(work(i) for i in range(n))

    ids = [engine.submit(job, 4) for _ in range(5)]

    def start() -> RunSummary:
        if how == "run":
            return engine.run(workers=2)
        if how == "serve":
            return engine.serve(workers=2, handle_signals=False)
        if how == "run_async":
            return asyncio.run(engine.run_async(concurrency=2))
        return asyncio.run(engine.serve_async(concurrency=2, handle_signals=False))

    running = Background(start)
    in_steps.wait(LIMIT)  # two tasks are in their second step
    closer = Background(engine.close)
    closing.set()  # their steps end while close() waits
    assert closer.result() is None
    summary = running.result()
    assert isinstance(summary, RunSummary), summary
    assert summary.released == 2  # handed back at their next step
    assert summary.runs == 2  # nothing more was claimed
    # The outcomes of the steps in flight were recorded: a new run does not run them again.
    with Engine.open(f"sqlite:///{db}", session="s") as again:

        @again.step(name="work")
        def work_again(i: int) -> int:
            bodies[(again.idempotency_key(), i)] += 1
            return i

        @again.task(name="job")
        def job_again(n: int) -> int:
            return sum(work_again(i) for i in range(n))

        again.run()
        assert [again.result(t) for t in ids] == [6] * 5
    assert [k for k, v in bodies.items() if v > 1] == []
    assert all(n == 4 for n in _completed(db).values())


def test_close_of_an_idle_service_returns_and_ends_it(tmp_path: Path) -> None:
    """An idle service waited for news of the log after close() had returned, for good."""
    engine = Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s")
    served = threading.Event()

    @engine.task()
    def ping() -> str:
        served.set()
        return "pong"

    task_id = engine.submit(ping)
    serving = Background(lambda: engine.serve(workers=2, handle_signals=False))
    assert served.wait(LIMIT)  # under way; then idle, waiting for news
    closer = Background(engine.close)
    assert closer.result() is None
    summary = serving.result()
    assert isinstance(summary, RunSummary), summary
    assert summary.succeeded == 1
    with pytest.raises(UsageError, match="closed"):
        engine.run()
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s") as again:
        assert again.result(task_id) == "pong"


def test_close_from_a_step_stops_the_run_and_closes_as_it_returns(tmp_path: Path) -> None:
    """A step cannot wait for the run that waits for it: close() asks the run to stop and
    returns; the task is handed back at its next step; the engine closes as the run returns."""
    db = tmp_path / "log.db"
    bodies: Counter[int] = Counter()
    engine = Engine.open(f"sqlite:///{db}", session="s")

    @engine.step()
    def work(i: int) -> int:
        bodies[i] += 1
        if i == 1:
            engine.close()  # returns: the run stops after this step
        return i

    @engine.task()
    def job(n: int) -> int:
        return sum(work(i) for i in range(n))

    task_id = engine.submit(job, 3)
    summary = Background(engine.run).result()
    assert summary.released == 1
    with pytest.raises(UsageError, match="closed"):
        engine.run()
    with Engine.open(f"sqlite:///{db}", session="s") as again:

        @again.step(name="work")
        def work_again(i: int) -> int:
            bodies[i] += 1
            return i

        @again.task(name="job")
        def job_again(n: int) -> int:
            return sum(work_again(i) for i in range(n))

        again.run()
        assert again.result(task_id) == 3
    assert bodies == Counter({0: 1, 1: 1, 2: 1})  # no step ran twice


def test_close_from_an_observers_hook_in_a_pool_thread_does_not_hang(tmp_path: Path) -> None:
    db = tmp_path / "log.db"

    class Closer(Observer):
        def task_started(self, start: Any) -> Any:
            engine.close()
            return None

    engine = Engine.open(f"sqlite:///{db}", session="s", observer=Closer())

    @engine.task()
    def job(n: int) -> int:
        return n

    ids = [engine.submit(job, i) for i in range(4)]
    summary = Background(lambda: engine.run(workers=2)).result()
    assert summary.runs <= 2
    with pytest.raises(UsageError, match="closed"):
        engine.submit(job, 9)
    with Engine.open(f"sqlite:///{db}", session="s") as again:

        @again.task(name="job")
        def job_again(n: int) -> int:
            return n

        again.run()
        assert [again.result(t) for t in ids] == [0, 1, 2, 3]


@pytest.mark.parametrize("how", ["run", "run_async"])
def test_close_ends_a_run_waiting_for_a_timer(tmp_path: Path, how: str) -> None:
    """The run napped until the timer was due (up to an hour), and close() with it."""
    waiting = threading.Event()

    class Waiting(Observer):
        def task_ended(self, token: Any, outcome: str) -> None:
            if outcome == "waiting":
                waiting.set()

    engine = Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s", observer=Waiting())

    @engine.task()
    def later() -> str:
        engine.sleep(3600)
        return "done"

    engine.submit(later)
    running = Background(engine.run if how == "run" else lambda: asyncio.run(engine.run_async()))
    assert waiting.wait(LIMIT)
    closer = Background(engine.close)
    assert closer.result() is None  # within LIMIT, not an hour
    assert isinstance(running.result(), RunSummary)


@pytest.mark.parametrize("how", ["run", "serve", "run_async", "serve_async"])
def test_a_run_slowed_down_by_the_error_budget_lets_others_in_and_close_ends_its_wait(
    tmp_path: Path, how: str
) -> None:
    """The run waited out the budget's slow-down (here an hour) holding the session's lock: a
    submission from another thread waited with it, and close() could not end it."""
    clock = FakeClock()
    slowing = threading.Event()

    class Slowing(Observer):
        def boundary(self, session: str, projections: Any, budget: Any, now: float) -> None:
            window = projections.budget.window(session, now, budget.window)
            if assess(budget, window).choice == "slow_down":
                slowing.set()

    engine = Engine.open(
        f"sqlite:///{tmp_path / 'log.db'}",
        session="s",
        clock=clock,
        observer=Slowing(),
        budget=ErrorBudget(limit=2, slow_down=3600.0),
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
    )

    @engine.step()
    def call_service() -> None:
        clock.advance(1.0)  # the errors come faster and faster: the burn rate rises
        raise ValueError("the service refused")

    @engine.task()
    def job(n: int) -> None:
        call_service()

    for n in range(4):
        engine.submit(job, n)

    def start() -> RunSummary:
        if how == "run":
            return engine.run()
        if how == "serve":
            return engine.serve(handle_signals=False)
        if how == "run_async":
            return asyncio.run(engine.run_async())
        return asyncio.run(engine.serve_async(handle_signals=False))

    running = Background(start)
    assert slowing.wait(LIMIT)  # three tasks failed: the run waits before the fourth
    submitted = Background(lambda: engine.submit(job, 99))
    assert isinstance(submitted.result(), str)  # within LIMIT, not after the hour
    closer = Background(engine.close)
    assert closer.result() is None  # the wait ended with the run
    summary = running.result()
    assert isinstance(summary, RunSummary), summary
    assert (summary.runs, summary.failed) == (3, 3)  # nothing claimed after the wait


class SmallerPagesMuchLater:
    """A fix for a quota on large pages: pages of 10, after an hour."""

    name = "smaller-pages-much-later"
    error_types = (RuntimeError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return "quota" in str(error) and int(call.arguments["page"]) > 10

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        page = call.arguments["page"]
        return Remedy(call=call.with_arguments(page=10), change={"page": [page, 10]}, delay=3600)


@pytest.mark.parametrize("how", ["run", "serve", "run_async", "serve_async"])
def test_close_ends_a_fix_s_delay_and_the_task_is_handed_back(tmp_path: Path, how: str) -> None:
    """The run waited out a fix's delay (here an hour) before the task could be handed back:
    close() waited with it. The delay is recorded: the next run waits what is left of it."""
    db = f"sqlite:///{tmp_path / 'log.db'}"
    clock = FakeClock()
    fixing = threading.Event()

    class Fixing(Observer):
        def step_ended(self, token: Any, *, decision: str = "", **_: Any) -> None:
            if decision == "fix":
                fixing.set()

    fixes = FixRegistry()
    fixes.register(SmallerPagesMuchLater())
    once = RetryPolicies(RetryPolicy(max_attempts=1))
    calls: list[int] = []

    def register(engine: Engine) -> Any:
        @engine.step()
        def fetch(page: int) -> str:
            calls.append(page)
            if page > 10:
                raise RuntimeError("quota exceeded for large pages")
            return f"page={page}"

        @engine.task(name="job")
        def job(page: int) -> str:
            return fetch(page)

        return job

    engine = Engine.open(db, session="s", clock=clock, observer=Fixing(), fixes=fixes, retries=once)
    task_id = engine.submit(register(engine), 100)

    def start() -> RunSummary:
        if how == "run":
            return engine.run()
        if how == "serve":
            return engine.serve(handle_signals=False)
        if how == "run_async":
            return asyncio.run(engine.run_async())
        return asyncio.run(engine.serve_async(handle_signals=False))

    running = Background(start)
    assert fixing.wait(LIMIT)
    closer = Background(engine.close)
    assert closer.result() is None  # within LIMIT, not an hour
    summary = running.result()
    assert isinstance(summary, RunSummary), summary
    assert summary.released == 1
    clock.advance(3600)
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance, fixes=fixes) as again:
        register(again)
        again.run()
        assert again.result(task_id) == "page=10"
    assert calls == [100, 10]  # the fix's call, once; the step's own call not made again
