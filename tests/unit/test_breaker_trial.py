"""A half-open breaker's trial: one call goes, the others wait for its outcome."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.healing.breaker import BreakerPolicy
from onward.healing.retry import RetryPolicies, RetryPolicy
from onward.projections import TaskView
from tests.conftest import FakeClock


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(db, session="heal", clock=clock, sleep=clock.advance, seed=7, **options)


@pytest.mark.parametrize("trial", ["succeeds", "fails"])
def test_a_half_open_breaker_lets_one_trial_call_through_the_others_wait(
    db: str, clock: FakeClock, trial: str
) -> None:
    """While one task's call is the half-open trial, another worker's call to the same
    dependency waits for its outcome (it is not a second trial)."""
    import threading

    policy = BreakerPolicy(failures=1, cooldown=60.0)
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    calls: list[str] = []
    seen: dict[str, object] = {}

    def register(engine: Engine, inside: Any = None) -> None:
        @engine.step(name="search", breaker="search-api")
        def search(q: str) -> str:
            calls.append(q)
            if inside is not None and q == "trial":
                inside()
            if q == "first" or (q == "trial" and trial == "fails"):
                raise RuntimeError("503 service unavailable")
            return q.upper()

        @engine.task(name="job")
        def job(q: str) -> str:
            return search(q)

    with Engine.open(
        db, session="other", clock=clock, sleep=clock.advance, breakers=policy, retries=retries
    ) as peer:
        register(peer)
        waiting = peer.submit("job", "peer")

        def peer_runs_meanwhile() -> None:  # another worker, while the trial is in flight
            worker = threading.Thread(target=lambda: seen.update(summary=peer.run(max_runs=1)))
            worker.start()
            worker.join()
            seen["view"] = peer.task_view(waiting)

        with open_engine(db, clock, breakers=policy, retries=retries) as engine:
            register(engine, inside=peer_runs_meanwhile)
            engine.submit("job", "first")
            engine.run()
            assert engine.refresh().breakers.get("search-api").state == "open"
            clock.advance(61.0)
            trial_task = engine.submit("job", "trial")
            engine.run(max_runs=1)
            assert calls == ["first", "trial"]  # the peer's call did not go
            view = seen["view"]
            assert isinstance(view, TaskView)
            assert view.state == "waiting"
            assert "half-open" in str(view.waiting_reason)
            after = engine.refresh().breakers.get("search-api")
            assert after.state == ("closed" if trial == "succeeds" else "open")
            assert engine.task_view(trial_task).state == (
                "succeeded" if trial == "succeeds" else "failed"
            )
            # The peer's task waited for the trial's outcome: a success closed the breaker,
            # and it runs now, not at the end of the cool-down it was given.
            peer.refresh()
            held_until = peer.task_view(waiting).waiting_until
            assert held_until is not None
            if trial == "succeeds":
                assert held_until <= clock.now
                assert peer.run().succeeded == 1
                assert calls[-1] == "peer"
            else:
                assert held_until > clock.now  # still open: it waits out the cool-down


def test_each_close_decision_is_the_one_of_a_breaker_closed(db: str, clock: FakeClock) -> None:
    """A task's second call on a breaker its trial had just closed saw it half-open still: a
    "close" decision was recorded, its transition refused, and `onward why` explained a close
    that never happened."""
    from onward.events import BreakerClosed, DecisionMade

    down = [True]
    with open_engine(
        db,
        clock,
        breakers=BreakerPolicy(failures=1, cooldown=0.2),
        retries=RetryPolicies(RetryPolicy(max_attempts=5, base=0.01)),
    ) as engine:

        @engine.step(name="call", breaker="api")
        def call(i: int) -> int:
            if down:
                down.clear()
                raise ConnectionError("api down")
            return i

        @engine.task(name="two")
        def two() -> int:
            return call(1) + call(2) + call(3)

        task_id = engine.submit(two)
        engine.run()
        assert engine.result(task_id) == 6
        events = [r.event for r in engine.log.read()]
        assert engine.log.verify().ok
    closes = [e for e in events if isinstance(e, DecisionMade) and e.choice == "close"]
    assert len(closes) == len([e for e in events if isinstance(e, BreakerClosed)]) == 1


def test_a_call_begun_before_the_breaker_opened_does_not_close_it_for_the_trial(
    db: str, clock: FakeClock
) -> None:
    """A slow call that began while the breaker was closed, and succeeds while another task's
    half-open trial is under way, is no trial: the breaker stays half-open, and the trial's
    failure opens it again (it was closed "trial: succeeded" while the trial failed)."""
    import contextlib
    import threading

    b_done, trial_in, slow_done = threading.Event(), threading.Event(), threading.Event()
    policy = BreakerPolicy(failures=2, cooldown=60.0)
    with open_engine(
        db, clock, breakers=policy, retries=RetryPolicies(RetryPolicy(max_attempts=1))
    ) as engine:

        @engine.step(name="api", breaker="api")
        def api(who: str) -> str:
            if who == "slow":  # begun while closed, it returns during the trial
                assert b_done.wait(10)
                clock.advance(61.0)
                assert trial_in.wait(10)
                return "ok"
            if who == "trial":
                trial_in.set()
                assert slow_done.wait(10)
            raise ConnectionError("503 service unavailable")

        @engine.step(name="mark")
        def mark(which: str) -> None:
            (b_done if which == "b" else slow_done).set()

        @engine.task(name="slow", priority="high")
        def slow() -> str:
            result = api("slow")
            mark("slow")
            return result

        @engine.task(name="failing")
        def failing() -> None:
            for _ in range(2):  # opens the breaker
                with contextlib.suppress(ConnectionError):
                    api("b")
            mark("b")

        @engine.task(name="trial", priority="low")
        def trial() -> None:
            api("trial")

        slow_task = engine.submit("slow")
        engine.submit("failing")
        trial_task = engine.submit("trial")
        engine.run(workers=2)
        assert engine.task_view(slow_task).state == "succeeded"
        assert engine.task_view(trial_task).state == "failed"
        view = engine.refresh().breakers.get("api")
        assert [(t.source, t.dest) for t in view.history] == [
            ("new", "open"),
            ("open", "half_open"),
            ("half_open", "open"),
        ]
        assert view.state == "open"


def test_a_trial_without_an_outcome_is_taken_over_by_one_call_the_others_wait(
    db: str, clock: FakeClock
) -> None:
    """A trial call that outlives a cool-down (a slow call, or its worker gone) is taken over
    by the next call alone: the calls of other workers meanwhile all went to the dependency
    that was still down, each taken for a trial."""
    import threading

    policy = BreakerPolicy(failures=1, cooldown=60.0)
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    calls: list[str] = []
    peers: list[Engine] = []

    def register(engine: Engine, after: Engine | None) -> None:
        @engine.step(name="search", breaker="search-api")
        def search(q: str) -> str:
            calls.append(q)
            if q == "trial":
                clock.advance(61.0)  # it outlives the cool-down: the trial looks lost
            if after is not None and q != "first":  # the next worker runs meanwhile
                worker = threading.Thread(target=lambda: after.run(max_runs=1))
                worker.start()
                worker.join()
            raise ConnectionError("503 service unavailable")

        @engine.task(name="job")
        def job(q: str) -> str:
            return search(q)

    try:
        for _ in range(3):
            peer = Engine.open(
                db,
                session="other",
                clock=clock,
                sleep=clock.advance,
                breakers=policy,
                retries=retries,
            )
            register(peer, peers[-1] if peers else None)
            peers.append(peer)
        for n in range(3):
            peers[0].submit("job", f"peer{n}")
        with open_engine(db, clock, breakers=policy, retries=retries) as engine:
            register(engine, peers[-1])
            engine.submit("job", "first")
            engine.run(max_runs=1)
            clock.advance(61.0)
            engine.submit("job", "trial")
            engine.run(max_runs=1)
            assert calls == ["first", "trial", "peer0"]  # one took the trial over
            view = engine.refresh().breakers.get("search-api")
            assert [(t.source, t.dest) for t in view.history] == [
                ("new", "open"),
                ("open", "half_open"),
                ("half_open", "half_open"),
                ("half_open", "open"),
            ]
            assert engine.log.verify().ok
    finally:
        for peer in peers:
            peer.close()


def test_a_call_begun_before_the_breaker_opened_does_not_open_it_again_for_the_trial(
    db: str, clock: FakeClock
) -> None:
    """A slow call that began while the breaker was closed, and fails while another task's
    half-open trial is under way, is no trial either: the breaker stays half-open and the
    trial's success closes it (it was opened again, and the trial's success thrown away: every
    task went on waiting a cool-down for a dependency that was back)."""
    import contextlib
    import threading

    b_done, trial_in, slow_done = threading.Event(), threading.Event(), threading.Event()
    policy = BreakerPolicy(failures=2, cooldown=60.0)
    with open_engine(
        db, clock, breakers=policy, retries=RetryPolicies(RetryPolicy(max_attempts=1))
    ) as engine:

        @engine.step(name="api", breaker="api")
        def api(who: str) -> str:
            if who == "slow":  # begun while closed, it fails during the trial
                assert b_done.wait(10)
                clock.advance(61.0)
                assert trial_in.wait(10)
                raise ConnectionError("503 service unavailable")
            if who == "trial":
                trial_in.set()
                assert slow_done.wait(10)
                return "ok"
            raise ConnectionError("503 service unavailable")

        @engine.step(name="mark")
        def mark(which: str) -> None:
            (b_done if which == "b" else slow_done).set()

        @engine.task(name="slow", priority="high")
        def slow() -> None:
            try:
                api("slow")
            finally:
                mark("slow")

        @engine.task(name="failing")
        def failing() -> None:
            for _ in range(2):  # opens the breaker
                with contextlib.suppress(ConnectionError):
                    api("b")
            mark("b")

        @engine.task(name="trial", priority="low")
        def trial() -> str:
            return api("trial")

        engine.submit("slow")
        engine.submit("failing")
        trial_task = engine.submit("trial")
        engine.run(workers=2)
        assert engine.task_view(trial_task).state == "succeeded"
        view = engine.refresh().breakers.get("api")
        assert [(t.source, t.dest) for t in view.history] == [
            ("new", "open"),
            ("open", "half_open"),
            ("half_open", "closed"),
        ]
        assert view.state == "closed"


class RacingClock(FakeClock):
    """A fake clock that lets another worker move first when a breaker's check reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: Any = None

    def __call__(self) -> float:
        if self.meanwhile is not None and sys._getframe(1).f_code.co_name == "before_call":
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()
        return self.now


def test_a_call_that_lost_the_race_to_half_open_waits_when_the_winners_trial_failed(
    db: str,
) -> None:
    """Two workers find an open breaker past its cool-down; the other half-opens it first and
    its trial fails, opening it again. This one's half-open is refused: its call waits for the
    new cool-down (it went through, to the dependency just found still down)."""
    import threading

    clock = RacingClock()
    policy = BreakerPolicy(failures=1, cooldown=60.0)
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    calls: list[str] = []

    def register(engine: Engine) -> None:
        @engine.step(name="search", breaker="search-api")
        def search(q: str) -> str:
            calls.append(q)
            raise ConnectionError("503 service unavailable")

        @engine.task(name="job")
        def job(q: str) -> str:
            return search(q)

    with Engine.open(
        db,
        session="other",
        clock=lambda: clock.now,
        sleep=clock.advance,
        breakers=policy,
        retries=retries,
    ) as peer:
        register(peer)
        with open_engine(db, clock, breakers=policy, retries=retries) as engine:
            register(engine)
            engine.submit("job", "first")
            engine.run(max_runs=1)
            clock.advance(61.0)
            peer.submit("job", "peer")
            late = engine.submit("job", "late")

            def peer_moves_first() -> None:
                worker = threading.Thread(target=lambda: peer.run(max_runs=1))
                worker.start()
                worker.join()

            clock.meanwhile = peer_moves_first
            engine.run(max_runs=1)
            assert clock.meanwhile is None  # the peer moved in between
            assert calls == ["first", "peer"]
            assert engine.refresh().breakers.get("search-api").state == "open"
            assert engine.task_view(late).state == "waiting"


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
def test_a_call_begun_before_the_breaker_opened_moves_it_not_once_the_trial_outlived_a_cooldown(
    db: str, clock: FakeClock, outcome: str
) -> None:
    """A slow call that began while the breaker was closed and ends once the trial has had no
    outcome for a cool-down is still no trial: it neither closes the breaker nor opens it
    again (its success was recorded as "trial: succeeded" while the trial was still to fail,
    or its failure threw away the trial's success)."""
    import contextlib
    import threading

    b_done, trial_in, slow_done = threading.Event(), threading.Event(), threading.Event()
    policy = BreakerPolicy(failures=2, cooldown=60.0)
    with open_engine(
        db, clock, breakers=policy, retries=RetryPolicies(RetryPolicy(max_attempts=1))
    ) as engine:

        @engine.step(name="api", breaker="api")
        def api(who: str) -> str:
            if who == "slow":  # begun while closed, it ends once the trial outlived a cool-down
                assert b_done.wait(10)
                clock.advance(61.0)
                assert trial_in.wait(10)
                clock.advance(61.0)
                if outcome == "succeeds":
                    return "ok"
                raise ConnectionError("503 service unavailable")
            if who == "trial":
                trial_in.set()
                assert slow_done.wait(10)
                if outcome == "fails":
                    return "ok"
            raise ConnectionError("503 service unavailable")

        @engine.step(name="mark")
        def mark(which: str) -> None:
            (b_done if which == "b" else slow_done).set()

        @engine.task(name="slow", priority="high")
        def slow() -> None:
            try:
                api("slow")
            finally:
                mark("slow")

        @engine.task(name="failing")
        def failing() -> None:
            for _ in range(2):  # opens the breaker
                with contextlib.suppress(ConnectionError):
                    api("b")
            mark("b")

        @engine.task(name="trial", priority="low")
        def trial() -> None:
            api("trial")

        engine.submit("slow")
        engine.submit("failing")
        engine.submit("trial")
        engine.run(workers=2)
        view = engine.refresh().breakers.get("api")
        # The trial's outcome decides: it failed (opened again) or succeeded (closed).
        dest = "open" if outcome == "succeeds" else "closed"
        assert [(t.source, t.dest) for t in view.history] == [
            ("new", "open"),
            ("open", "half_open"),
            ("half_open", dest),
        ]
