"""Threads inside tasks: a task's code that hands steps to threads it starts with its context
is refused (their order changes from run to run), and a single worker's task does not hold
the session while it runs (threads it waits for may call the engine)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, RunSummary
from onward.events import StepCompleted, StepStarted, TaskFailed, open_log


def _run_guarded(run: Callable[[], RunSummary], limit: float = 60.0) -> RunSummary:
    """``run()`` in a thread: a hang fails the test instead of holding the suite."""
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(run()), daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "the run hung"
    assert outcome, "the run raised"
    summary = outcome[0]
    assert isinstance(summary, RunSummary)
    return summary


def _failure(db: Path, task_id: str) -> str:
    with open_log(f"sqlite:///{db}") as log:
        events = [r.event for r in log.read_stream(f"task-{task_id}")]
    assert not any(isinstance(e, StepStarted) for e in events), "a step was recorded"
    failed = [e for e in events if isinstance(e, TaskFailed)]
    assert failed, events
    return failed[-1].message


@pytest.mark.parametrize("path", ["async", "sync"])
def test_steps_called_from_threads_that_carry_the_tasks_context_are_refused(
    tmp_path: Path, path: str
) -> None:
    db = tmp_path / "log.db"
    ran: list[str] = []
    with Engine.open(f"sqlite:///{db}", session="s") as engine:

        @engine.step()
        def fetch(url: str) -> str:
            ran.append(url)
            return f"<{url}>"

        @engine.task()
        async def gathering(n: int) -> list[str]:
            return list(
                await asyncio.gather(*(asyncio.to_thread(fetch, f"u{i}") for i in range(n)))
            )

        @engine.task()
        def pooled(n: int) -> list[str]:
            with ThreadPoolExecutor(4) as pool:
                calls = [
                    pool.submit(contextvars.copy_context().run, fetch, f"u{i}") for i in range(n)
                ]
                return [c.result() for c in calls]

        task_id = engine.submit(gathering if path == "async" else pooled, 4)
        summary = _run_guarded(engine.run)
    assert summary.failed == 1
    assert ran == []  # refused before any body ran
    message = _failure(db, task_id)
    assert "step 'fetch' was called from a thread" in message
    assert "asyncio.to_thread" in message


def test_submit_from_a_thread_that_carries_the_tasks_context_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with Engine.open(f"sqlite:///{db}", session="s") as engine:

        @engine.task()
        def child(i: int) -> int:
            return i

        @engine.task()
        async def parent(n: int) -> list[str]:
            return list(
                await asyncio.gather(
                    *(asyncio.to_thread(engine.submit, child, i) for i in range(n))
                )
            )

        task_id = engine.submit(parent, 3)
        _run_guarded(engine.run)
        assert [t.name for t in engine.tasks()] == ["parent"]  # no child was made
    assert "submit() was called from a thread" in _failure(db, task_id)


def test_a_plain_step_awaited_directly_and_a_step_starting_threads_still_work(
    tmp_path: Path,
) -> None:
    """The engine's own threads (a plain step's, a policy's) are not the task's."""
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s") as engine:

        @engine.step()
        def inner(i: int) -> int:
            return i * 10

        @engine.step()
        def fan_out(n: int) -> list[int]:
            # A step's body may start threads of its own: steps called there are part of it.
            with ThreadPoolExecutor(2) as pool:
                return list(pool.map(contextvars.copy_context().run, [inner] * n, range(n)))

        @engine.task()
        async def agent(n: int) -> list[int]:
            first = await asyncio.gather(*(inner(i) for i in range(n)))
            return [*first, *(await fan_out(n))]

        task_id = engine.submit(agent, 3)
        summary = _run_guarded(engine.run)
        assert summary.succeeded == 1
        assert engine.result(task_id) == [0, 10, 20, 0, 10, 20]


def test_a_single_workers_task_may_wait_for_threads_that_call_the_engine(tmp_path: Path) -> None:
    """``run()`` with one worker ran the task holding the session, so a thread the task waited
    for, calling the engine (a send, a submit), waited for the task: the run hung."""
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s") as engine:

        @engine.task()
        def listener() -> str:
            return str(engine.recv("go", timeout=60))

        @engine.step()
        def announce(ids: list[str]) -> int:
            with ThreadPoolExecutor(3) as pool:  # plain threads: outside the task
                list(pool.map(lambda t: engine.send(t, "go", "now"), ids))
                return len(list(pool.map(lambda _: engine.submit(listener), ids)))

        @engine.task()
        def boss(ids: list[str]) -> int:
            return announce(ids)

        listeners = [engine.submit(listener) for _ in range(3)]
        engine.run(max_runs=3)  # they wait for the message
        boss_id = engine.submit(boss, listeners)
        _run_guarded(lambda: engine.run(workers=1, max_runs=4))
        assert engine.result(boss_id) == 3
        assert [engine.result(t) for t in listeners] == ["now"] * 3


def test_another_thread_cancels_a_single_workers_running_task(tmp_path: Path) -> None:
    """A cancel from another thread lands while the task runs (it waited for the task's end,
    then found it succeeded)."""
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s") as engine:
        started, cancelled = threading.Event(), threading.Event()
        steps: list[int] = []

        @engine.step()
        def work(i: int) -> int:
            steps.append(i)
            if i == 0:
                started.set()
                assert cancelled.wait(60), "the cancel never returned"
            return i

        @engine.task()
        def long(n: int) -> int:
            return sum(work(i) for i in range(n))

        task_id = engine.submit(long, 5)

        def cancel() -> None:
            assert started.wait(60)
            engine.cancel(task_id, reason="enough")
            cancelled.set()

        canceller = threading.Thread(target=cancel, daemon=True)
        canceller.start()
        summary = _run_guarded(lambda: engine.run(workers=1))
        canceller.join(60)
        assert summary.cancelled == 1
        assert engine.task_view(task_id).state == "cancelled"
        assert steps == [0]  # it stopped at its next step
        # The step under way at the cancel was recorded: a retry replays it, never runs it again.
        engine.retry(task_id, by="test")
        _run_guarded(lambda: engine.run(workers=1))
        assert engine.result(task_id) == 10
        assert steps == [0, 1, 2, 3, 4]


def test_an_interruption_handler_reached_from_an_async_task_may_call_the_engine(
    tmp_path: Path,
) -> None:
    """The handler runs in a thread the engine hands the task's wait to: its calls are the
    engine's own, not a thread the task's code started."""
    paged: list[str] = []

    def handler(interruption: Any) -> None:
        paged.append(engine.submit(pager, interruption.kind))

    engine = Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s", on_interruption=handler)
    with engine:
        engine.component("search", check=lambda: False, workarounds=[])

        @engine.task()
        def pager(kind: str) -> str:
            return f"paged: {kind}"

        @engine.task()
        async def job() -> str:
            return str(await engine.degrade("search", message="down"))

        engine.submit(job)
        _run_guarded(lambda: engine.run(max_runs=1))
        assert len(paged) == 1
        assert engine.task_view(paged[0]).name == "pager"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_engine_run_from_inside_another_engines_step_records_its_own_steps(
    workers: int,
) -> None:
    """The inner tasks took the outer step's body for theirs: every inner step ran as a part
    of it, its outcome never recorded (with one worker, and with N once each task ran in a
    copy of the caller's context)."""
    outer = Engine.open("memory://", session="outer")

    @outer.step()
    def run_inner() -> list[int]:
        with Engine.open("memory://", session="inner") as inner:

            @inner.step()
            def fetch(i: int) -> int:
                return i * 2

            @inner.task(name="job")
            def job(i: int) -> int:
                return fetch(i) + fetch(i + 1)

            for i in range(3):
                inner.submit("job", i)
            summary = inner.run(workers=workers)
            steps = sum(isinstance(r.event, StepCompleted) for r in inner.log.read())
            return [summary.succeeded, steps]

    @outer.task(name="main")
    def main() -> list[int]:
        return run_inner()

    with outer:
        task_id = outer.submit("main")
        outer.run()
        assert outer.result(task_id) == [3, 6]


@pytest.mark.parametrize("runner", ["run", "run_async"])
def test_a_clock_set_forward_ends_a_durable_wait_when_the_engine_clock_reaches_it(
    tmp_path: Path, runner: str
) -> None:
    """The wait was counted in real time: a machine resumed from suspend (its clock set
    forward) overslept by as much as it had been away, up to an hour."""
    import time as real_time

    offset = [0.0]

    def clock() -> float:
        return real_time.time() + offset[0]

    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s", clock=clock) as engine:

        @engine.task()
        def nap() -> str:
            engine.sleep(600)
            return "awake"

        task_id = engine.submit(nap)
        forward = threading.Timer(0.3, lambda: offset.__setitem__(0, 600.0))
        forward.start()
        began = real_time.monotonic()
        if runner == "run":
            engine.run()
        else:
            asyncio.run(engine.run_async())
        forward.join()
        assert engine.result(task_id) == "awake"
        assert real_time.monotonic() - began < 60  # not the 600 s of real time
