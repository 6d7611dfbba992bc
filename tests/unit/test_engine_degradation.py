"""Graceful degradation through the engine: ladders walked, restored, and asked about, on SQLite."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, ErrorBudget, RetryPolicies, RetryPolicy
from onward.core.errors import ComponentUnavailable
from onward.events import DegradationLevel, Jitter, UsageError
from onward.judgement.degradation import Workaround
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(db, session="degrade", clock=clock, sleep=clock.advance, **options)


LADDER = [Workaround(name="cache", quality_loss=0.2), Workaround(name="skip", quality_loss=0.5)]


def test_a_failing_component_walks_its_ladder_and_comes_back(db: str, clock: FakeClock) -> None:
    healthy = {"search": False}
    with open_engine(db, clock) as engine:
        engine.component("search", check=lambda: healthy["search"], workarounds=LADDER)

        @engine.task()
        def lookup(n: int) -> str:
            found = engine.degrade("search", message="503") if n < 2 else None
            return found.name if found else "full"

        ids = [engine.submit(lookup, n) for n in range(2)]
        engine.run()
        assert [engine.result(t) for t in ids] == ["cache", "skip"]
        view = engine.degradation()
        assert view.level == DegradationLevel.SEVERE  # the skip rung loses 0.5
        assert view.quality_lost == pytest.approx(0.5)
        healthy["search"] = True
        engine.submit(lookup, 5)
        engine.run()
        assert engine.degradation().level == DegradationLevel.FULL


def test_a_rerun_reads_the_recorded_workaround_back(db: str, clock: FakeClock) -> None:
    runs: list[str] = []
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)

        @engine.step()
        def flaky() -> None:
            if len(runs) == 1:
                raise TimeoutError("read timed out")

        @engine.task()
        def job() -> str:
            found = engine.degrade("search")
            assert found is not None
            runs.append(found.name)
            flaky()
            return found.name

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == "cache"
        assert runs == ["cache", "cache"]  # the second run got the same rung back
        assert engine.degradation().quality_lost == pytest.approx(0.2)


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_rerun_reads_back_the_workarounds_of_its_code_and_of_its_steps_apart(
    db: str, clock: FakeClock, kind: str
) -> None:
    """A step's body reports one component, then the task's code another, then a later step
    fails once (the task runs again, replaying the first step without its body): the task's
    code gets its own workaround back, not the one the step's body was given."""
    seen: list[str | None] = []
    tries: list[int] = []
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)
        engine.component("index", workarounds=[Workaround(name="scan", quality_loss=0.3)])

        @engine.step()
        def fetch() -> str:
            found = engine.degrade("search")
            return found.name if found else "none"

        @engine.step()
        def flaky() -> None:
            tries.append(1)
            if len(tries) == 1:
                raise TimeoutError("read timed out")

        if kind == "plain":

            @engine.task(name="job")
            def job() -> list[str | None]:
                fetched = fetch()
                found = engine.degrade("index")
                seen.append(found.name if found else None)
                flaky()
                return [fetched, seen[-1]]

        else:

            @engine.task(name="job")
            async def job_async() -> list[str | None]:
                fetched = await fetch()
                found = await engine.degrade("index")
                seen.append(found.name if found else None)
                await flaky()
                return [fetched, seen[-1]]

        task_id = engine.submit("job")
        engine.run()
        assert engine.result(task_id) == ["cache", "scan"]
        assert seen == ["scan", "scan"]  # the second run got the same rung back
        (failed,) = [
            r.event
            for r in engine.log.read()
            if type(r.event).__name__ == "ComponentFailed" and r.event.component == "search"  # type: ignore[union-attr]
        ]
        assert failed.step_index == 0  # type: ignore[union-attr]


def test_gathered_coroutines_get_their_own_components_workarounds_back_whatever_order(
    db: str, clock: FakeClock
) -> None:
    """Two gathered coroutines of an async def task each report a component failed once their
    step ends; a third one's step fails and its retry makes the task wait. Live, the second
    coroutine reports first, and the wait is recorded before the first one reports; the
    re-run replays both steps at once and meets the first coroutine first: each gets the
    workaround of its own component (the second, the one it was given)."""
    index_reported = threading.Event()
    tries: list[int] = []
    seen: list[tuple[str, str | None]] = []
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)
        engine.component(
            "index",
            workarounds=[
                Workaround(name="scan", quality_loss=0.3),
                Workaround(name="stale", quality_loss=0.4),
            ],
        )

        @engine.step()
        def slow() -> None:
            assert index_reported.wait(timeout=30)  # ends once "index" was reported

        @engine.step()
        def fast() -> None:
            pass

        @engine.step()
        def flaky() -> None:
            tries.append(1)
            if len(tries) == 1:
                raise TimeoutError("read timed out")  # its retry is due later: the task waits

        @engine.task(name="job")
        async def job() -> list[str | None]:
            async def a() -> str | None:
                await slow()
                found = await engine.degrade("search")
                seen.append(("search", found.name if found else None))
                return found.name if found else None

            async def b() -> str | None:
                await fast()
                found = await engine.degrade("index")
                index_reported.set()
                seen.append(("index", found.name if found else None))
                return found.name if found else None

            async def c() -> None:
                await flaky()

            return list(await asyncio.gather(a(), b(), c()))

        task_id = engine.submit("job")
        engine.run()
        assert len(tries) == 2  # the task ran again
        assert engine.result(task_id) == ["cache", "scan", None]
        assert sorted(set(seen)) == [("index", "scan"), ("search", "cache")]


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_each_try_of_a_step_that_reports_a_failure_walks_the_ladder_on(
    db: str, clock: FakeClock, kind: str
) -> None:
    """A step's body reports its component failed, then fails: its next try reports it failed
    again and gets the next rung (what a retry meets is a further failure), and a re-run after
    the step completed (a later step's retry) does not run its body again."""
    tries: list[str | None] = []
    later: list[int] = []
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)

        @engine.step()
        def fetch() -> str:
            found = engine.degrade("search")
            tries.append(found.name if found else None)
            if len(tries) == 1:
                raise TimeoutError("the cache timed out too")
            return found.name if found else "none"

        @engine.step()
        def flaky() -> None:
            later.append(1)
            if len(later) == 1:
                raise TimeoutError("read timed out")

        if kind == "plain":

            @engine.task(name="job")
            def job() -> str:
                fetched = fetch()
                flaky()
                return fetched

        else:

            @engine.task(name="job")
            async def job_async() -> str:
                fetched = await fetch()
                await flaky()
                return fetched

        task_id = engine.submit("job")
        engine.run()
        assert tries == ["cache", "skip"]
        assert engine.result(task_id) == "skip"
        assert len(later) == 2


def test_no_workaround_left_pauses_the_task_and_asks(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER[:1])

        @engine.task()
        def job(n: int) -> str:
            if n == 1:  # the first failure takes the only workaround
                engine.degrade("search", message=f"failure {n}")
            try:
                found = engine.degrade("search", message="again")
            except ComponentUnavailable as exc:
                return f"stopped: {exc.note}"
            return "without search" if found is None else found.name

        first = engine.submit(job, 1)
        summary = engine.run()
        assert summary.waiting == 1
        (request,) = engine.approvals()
        assert request.task_id == first
        assert request.action == "search"
        engine.approve(request.decision_id, note="fine")
        engine.run()
        assert engine.result(first) == "without search"

        second = engine.submit(job, 2)
        engine.run()
        (request,) = engine.approvals()
        engine.deny(request.decision_id, note="needs search")
        engine.run()
        assert engine.result(second) == "stopped: needs search"


def test_degrading_outside_a_task_and_restoring_by_hand(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        found = engine.degrade("network", message="unreachable")
        assert found is not None
        assert found.quality_loss > 0
        assert engine.degradation().level != DegradationLevel.FULL
        assert engine.restore("network") is True
        assert engine.restore("network") is False
        assert engine.degradation().level == DegradationLevel.FULL
        with pytest.raises(UsageError, match=r"warp-drive"):
            engine.degrade("warp-drive")


def test_the_workaround_in_effect(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:
        engine.component("search", workarounds=LADDER)
        assert engine.workaround("search") is None
        engine.degrade("search")
        assert engine.workaround("search") == "cache"
        engine.restore("search")
        assert engine.workaround("search") is None
        with pytest.raises(UsageError, match="unknown component"):
            engine.workaround("warp-drive")


def test_a_health_check_at_a_boundary_holds_no_other_thread_back(db: str, clock: FakeClock) -> None:
    """A component's health check (a call to the service: I/O) ran at the task boundary with
    the session's lock held: the worker's other threads waited for it."""
    checking = threading.Event()
    let_go = threading.Event()

    def check() -> bool:
        checking.set()
        return let_go.wait(timeout=60)

    with open_engine(db, clock) as engine:
        engine.component("search", check=check, workarounds=LADDER)
        assert engine.degrade("search", message="503") is not None

        @engine.task()
        def lookup() -> str:
            return engine.workaround("search") or "full"

        first = engine.submit(lookup)
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)
        runner.start()
        try:
            assert checking.wait(timeout=60)
            done = threading.Event()
            spare = engine.submit(lookup)
            threading.Thread(
                target=lambda: (engine.cancel(spare, reason="not needed"), done.set()), daemon=True
            ).start()
            assert done.wait(timeout=10), "a cancel waited for the health check"
        finally:
            let_go.set()
            runner.join(timeout=60)
        (summary,) = summaries
        assert summary.succeeded == 1
        assert engine.result(first) == "full"  # the check passed: restored before it ran
        assert engine.task_view(spare).state == "cancelled"
        assert engine.degradation().level == DegradationLevel.FULL


def test_a_check_that_passed_before_a_new_failure_restores_nothing(
    db: str, clock: FakeClock
) -> None:
    """The health checks at a boundary run without the session's lock: a failure recorded
    while a check is under way (the service went down again) is newer than what the check
    said, and the restoration decided on the check's stale 'passed' undid it."""
    up = {"search": True}
    checking = threading.Event()
    let_go = threading.Event()

    def check() -> bool:
        said = up["search"]  # the service answers ...
        checking.set()
        let_go.wait(timeout=60)  # ... and the answer takes a while to come back
        return said

    with open_engine(db, clock) as engine:
        engine.component("search", check=check, workarounds=LADDER)
        assert engine.degrade("search", message="503") is not None
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)
        runner.start()
        try:
            assert checking.wait(timeout=60)
            checking.clear()
            up["search"] = False  # down again: a caller meets it failing, after the check
            failed = threading.Event()
            threading.Thread(
                target=lambda: (engine.degrade("search", message="503 again"), failed.set()),
                daemon=True,
            ).start()
            assert failed.wait(timeout=10)
        finally:
            let_go.set()
            runner.join(timeout=60)
        assert summaries
        (search,) = engine.degradation().components
        assert search.failures == 2
        assert search.state != "healthy", "restored on a check older than its last failure"
        assert search.workaround == "skip"


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_check_that_passed_before_a_peer_s_task_met_a_failure_restores_nothing(
    request: pytest.FixtureRequest, db: str, clock: FakeClock, backend: str
) -> None:
    """As above, with the failure met by a task of another worker (recorded on the task's
    stream, not the session's): the restoration was decided on projections not caught up
    since the checks began, so it did not see it."""
    if backend == "postgres":
        db = str(request.getfixturevalue("postgres_url"))
    checking = threading.Event()
    let_go = threading.Event()

    def check() -> bool:
        checking.set()
        let_go.wait(timeout=60)
        return True  # what the service said when asked, before it went down again

    with open_engine(db, clock) as engine, open_engine(db, clock) as peer:
        engine.component("search", check=check, workarounds=LADDER)
        peer.component("search", check=lambda: False, workarounds=LADDER)

        @peer.task()
        def lookup() -> str:
            found = peer.degrade("search", message="503 again")
            return found.name if found else "full"

        assert engine.degrade("search", message="503") is not None
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)
        runner.start()
        try:
            assert checking.wait(timeout=60)
            checking.clear()
            met = peer.submit(lookup)
            peer.run()
            assert peer.result(met) == "skip"
        finally:
            let_go.set()
            runner.join(timeout=60)
        assert summaries
        (search,) = engine.degradation().components
        assert search.failures == 2
        assert search.state != "healthy", "restored on a check older than its last failure"


def test_a_pause_recorded_by_a_peer_during_a_health_check_starts_nothing(
    db: str, clock: FakeClock
) -> None:
    """The health checks at a boundary take a while (calls to the services) and run without
    the session's lock; whether the session is paused was read before them: a peer whose
    error budget paused the session meanwhile was not seen, and this worker started a task
    under the pause."""
    checking = threading.Event()
    let_go = threading.Event()

    def check() -> bool:
        checking.set()
        let_go.wait(timeout=60)
        return False  # still down

    retries = RetryPolicies(RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE))
    budget = ErrorBudget(limit=3)
    with (
        open_engine(db, clock, budget=budget, retries=retries) as engine,
        open_engine(db, clock, budget=budget, retries=retries) as peer,
    ):
        engine.component("search", check=check, workarounds=LADDER)
        peer.component("search", check=lambda: False, workarounds=LADDER)
        started: list[str] = []

        @engine.task()
        def lookup() -> str:
            started.append("lookup")
            return "done"

        @peer.step()
        def call_service() -> None:
            raise TimeoutError("the service did not answer")

        @peer.task()
        def job(n: int) -> None:
            call_service()

        assert engine.degrade("search", message="503") is not None
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)
        runner.start()
        try:
            assert checking.wait(timeout=60)
            for n in range(5):
                peer.submit(job, n)
            assert peer.run().paused  # the peer's errors spent the budget: paused
            waiting = engine.submit(lookup)
        finally:
            let_go.set()
            runner.join(timeout=60)
        (summary,) = summaries
        assert started == [], "a task started under the peer's pause"
        assert summary.paused
        assert summary.runs == 0
        assert not engine.task_view(waiting).terminal


def test_a_task_submitted_during_a_health_check_is_run(db: str, clock: FakeClock) -> None:
    """A task submitted (from another thread) while the run's boundary waited for a health
    check was not seen: the run looked for work on the log as it was before the check, found
    none, and ended with the task queued."""
    checking = threading.Event()
    let_go = threading.Event()

    def check() -> bool:
        checking.set()
        let_go.wait(timeout=60)
        return False  # still down

    with open_engine(db, clock) as engine:
        engine.component("search", check=check, workarounds=LADDER)

        @engine.task()
        def lookup() -> str:
            return engine.workaround("search") or "full"

        assert engine.degrade("search", message="503") is not None
        summaries: list[Any] = []
        runner = threading.Thread(target=lambda: summaries.append(engine.run()), daemon=True)
        runner.start()
        try:
            assert checking.wait(timeout=60)
            submitted = engine.submit(lookup)
        finally:
            let_go.set()
            runner.join(timeout=60)
        (summary,) = summaries
        assert summary.succeeded == 1, "the run ended with the task submitted queued"
        assert engine.result(submitted) == "cache"
