"""Confidence-based execution of actions, and approvals answered from another engine, on SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.core.errors import ActionDenied, ApprovalNotFound
from onward.events import Recorded, Strategy, UsageError
from onward.judgement.confidence import Factors, Thresholds, score
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(db, session="judge", clock=clock, sleep=clock.advance, seed=3, **options)


def kinds(history: list[Recorded]) -> list[str]:
    return [type(r.event).__name__ for r in history]


def confidence_decisions(history: list[Recorded]) -> list[Any]:
    return [
        r.event
        for r in history
        if type(r.event).__name__ == "DecisionMade" and r.event.kind == "confidence"  # type: ignore[union-attr]
    ]


def test_the_score_is_the_documented_weighted_mean() -> None:
    factors = Factors(history=1.0, clarity=0.5, reversibility=1.0, impact=1.0, approvals=0.5)
    assert score(factors) == pytest.approx(0.35 + 0.075 + 0.2 + 0.2 + 0.05)
    new = Factors.of(
        runs=0, passed=0, clarity=0.5, reversible=False, impact="high", granted=0, denied=0
    )
    assert score(new) < 0.5  # a new, irreversible, high-impact action: ask
    assert Thresholds().strategy(score(new)) == Strategy.ASK


@pytest.mark.parametrize(
    ("confidence", "strategy"),
    [
        (0.95, "immediate"),
        (0.9, "monitored"),
        (0.8, "monitored"),
        (0.6, "reversible"),
        (0.5, "ask"),
    ],
)
def test_thresholds_pick_the_strategy(confidence: float, strategy: str) -> None:
    assert Thresholds().strategy(confidence) == strategy


def test_thresholds_adapt_within_their_bounds() -> None:
    t = Thresholds()
    for _ in range(100):
        t = t.adapt(failed=True, streak=0) or t
    assert (t.immediate, t.monitored, t.reversible) == (0.98, 0.89, 0.69)
    for _ in range(200):
        t = t.adapt(failed=False, streak=t.streak) or t
    assert (t.immediate, t.monitored, t.reversible) == (0.8, 0.6, 0.4)
    assert Thresholds().adapt(failed=False, streak=3) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"immediate": 0.99},
        {"immediate": 0.85, "monitored": 0.86},
        {"step": 0.0},
        {"streak": 0},
    ],
)
def test_bad_thresholds_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Thresholds(**settings)


def test_an_unknown_impact_is_refused(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine, pytest.raises(UsageError, match="impact"):
        engine.action(impact="catastrophic")


def test_a_confident_action_runs_and_its_outcome_is_its_history(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="low", undo=lambda result: None, check=lambda result: result > 0)
        def tidy(n: int) -> int:
            return n

        @engine.task()
        def job(n: int) -> int:
            return tidy(n)

        ids = [engine.submit(job, n) for n in (1, 2, 3)]
        engine.run()
        assert [engine.result(t) for t in ids] == [1, 2, 3]
        history = engine.log.read_stream(f"task-{ids[0]}")
        decision = confidence_decisions(history)[0]
        # Low impact and undoable, with no history yet: 0.70, not above the monitored threshold.
        assert decision.confidence == pytest.approx(0.70)
        assert decision.strategy == Strategy.REVERSIBLE
        assert set(decision.factors) == {
            "history",
            "clarity",
            "reversibility",
            "impact",
            "approvals",
        }
        assert decision.thresholds == {"immediate": 0.9, "monitored": 0.7, "reversible": 0.5}
        assert "ActionChecked" in kinds(history)
        record = engine.refresh().decisions.action("tidy")
        assert (record.runs, record.passed) == (3, 3)
        later = confidence_decisions(engine.log.read_stream(f"task-{ids[2]}"))[0]
        assert later.confidence > decision.confidence  # two passed runs raised it
        assert later.strategy == Strategy.MONITORED


def test_a_failed_check_is_a_step_failure_and_a_reversible_action_is_undone(
    db: str, clock: FakeClock
) -> None:
    undone: list[int] = []
    with open_engine(db, clock, healing=False) as engine:

        @engine.action(impact="medium", undo=undone.append, check=lambda result: result < 10)
        def write(n: int) -> int:
            return n

        @engine.task()
        def job(n: int) -> int:
            return write(n)

        task_id = engine.submit(job, 50)
        summary = engine.run()
        assert summary.failed == 1
        assert undone == [50]
        history = engine.log.read_stream(f"task-{task_id}")
        names = kinds(history)
        assert (
            names.index("ActionUndone") < names.index("ActionChecked") < names.index("StepFailed")
        )
        assert "ThresholdsAdjusted" in names  # a failed check of an action run alone: caution
        adjusted = engine.refresh().decisions.thresholds
        assert adjusted["reversible"] == pytest.approx(0.52)
        view = engine.task_view(task_id)
        assert "CheckFailed" in view.error


def test_a_failed_undo_is_said_in_the_steps_failure(db: str, clock: FakeClock) -> None:
    """Only the log's ``ActionUndone ok=false`` said it: the error read as if it was undone."""

    def undo(result: int) -> None:
        raise OSError("the row is locked")

    with open_engine(db, clock, healing=False) as engine:

        @engine.action(impact="medium", undo=undo, check=lambda result: result < 10)
        def write(n: int) -> int:
            return n

        @engine.task()
        def job(n: int) -> int:
            return write(n)

        task_id = engine.submit(job, 50)
        assert engine.run().failed == 1
        error = engine.task_view(task_id).error
        assert "the check returned False; undoing it failed: " in error
        assert "the row is locked" in error


def test_what_an_action_records_names_events_of_the_log(db: str, clock: FakeClock) -> None:
    """Each check and undo names the decision that ruled its action, and each event's cause is
    an event recorded before it: ``onward why`` follows them (the decisions of actions run at
    once were appended under other ids than the ones their checks named)."""
    with open_engine(db, clock, healing=False) as engine:

        @engine.action(impact="medium", undo=lambda result: None, check=lambda result: result < 10)
        def write(n: int) -> int:
            return n

        @engine.task()
        def job(n: int) -> int:
            return write(n) + write(n + 1)

        engine.submit(job, 1)
        engine.submit(job, 50)  # its check fails: undone
        engine.run()
        records = list(engine.log.read())
        before: set[str] = set()
        named = 0
        for r in records:
            assert r.meta.causation_id in before | {""}, r
            decision_id = getattr(r.event, "decision_id", None)
            if decision_id is not None:
                named += 1
                assert decision_id in before, r
                ruling = next(x.event for x in records if x.meta.event_id == decision_id)
                assert type(ruling).__name__ == "DecisionMade"
            before.add(r.meta.event_id)
        assert named == 3  # two checks passed, then one failed (and its action was undone)


def test_an_unsure_action_waits_for_an_approval_given_by_another_process(
    db: str, clock: FakeClock
) -> None:
    ran: list[str] = []
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def deploy(target: str) -> str:
            ran.append(target)
            return f"deployed {target}"

        @engine.task()
        def release(target: str) -> str:
            return deploy(target)

        task_id = engine.submit(release, "prod")
        summary = engine.run()
        assert summary.waiting == 1
        assert ran == []
        (request,) = engine.approvals()
        assert request.task_id == task_id
        assert request.action == "deploy"
        assert request.impact == "high"
        assert request.confidence is not None

        with Engine.open(db, session="operator", clock=clock) as other:
            answered = other.approve(request.decision_id[:10], note="go", by="ana")
            assert answered.decision_id == request.decision_id
            with pytest.raises(ApprovalNotFound, match="already approved"):
                other.approve(request.decision_id)

        summary = engine.run()
        assert summary.succeeded == 1
        assert ran == ["prod"]
        assert engine.result(task_id) == "deployed prod"
        assert engine.approvals() == []
        record = engine.refresh().decisions.action("deploy")
        assert (record.granted, record.runs, record.passed) == (1, 1, 1)


def test_a_denied_action_fails_its_step_with_the_note(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def drop_table(name: str) -> str:
            return name

        @engine.task()
        def cleanup() -> str:
            try:
                return drop_table("users")
            except ActionDenied as exc:
                return f"skipped: {exc.note}"

        task_id = engine.submit(cleanup)
        engine.run()
        (request,) = engine.approvals()
        engine.deny(request.decision_id, note="not on Fridays")
        engine.run()
        assert engine.result(task_id) == "skipped: not on Fridays"
        assert engine.refresh().decisions.action("drop_table").denied == 1


def test_a_retry_after_a_denial_asks_again_and_the_denial_counts_once(
    db: str, clock: FakeClock
) -> None:
    """Each retry failed again at once with the same denial, never asking, and raised every
    threshold again: one refusal tightened every later action's judgement step by step."""
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def publish() -> str:
            return "published"

        @engine.task()
        def release() -> str:
            return publish()

        task_id = engine.submit(release)
        engine.run()
        (first,) = engine.approvals()
        engine.deny(first.decision_id, note="not yet")
        engine.run()
        assert engine.task_view(task_id).state == "failed"
        engine.retry(task_id)
        engine.run()
        (again,) = engine.approvals()  # asked anew
        assert again.decision_id != first.decision_id
        engine.approve(again.decision_id)
        engine.run()
        assert engine.result(task_id) == "published"
        adjusted = [r for r in engine.log.read() if type(r.event).__name__ == "ThresholdsAdjusted"]
        assert len(adjusted) == 1


def test_a_caught_denial_reads_the_same_when_the_task_runs_again(db: str, clock: FakeClock) -> None:
    """Run again (after a sleep), the task caught ``action 'publish' was denied: action
    'publish' was denied: nope`` with that whole message for its note."""
    seen: list[tuple[str, str]] = []
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def publish() -> str:
            return "published"

        @engine.task()
        def release() -> str:
            try:
                publish()
            except ActionDenied as exc:
                seen.append((str(exc), exc.note))
            engine.sleep(30)
            return "done"

        task_id = engine.submit(release)
        engine.run()
        (request,) = engine.approvals()
        engine.deny(request.decision_id, note="nope: not today")
        engine.run()
        assert engine.result(task_id) == "done"
    said = ("action 'publish' was denied: nope: not today", "nope: not today")
    assert seen == [said, said]


def test_run_can_wait_for_an_answer_given_while_it_runs(db: str, clock: FakeClock) -> None:
    looks: list[float] = []
    operators: list[Engine] = []

    def sleep(seconds: float) -> None:
        looks.append(seconds)
        clock.advance(seconds)
        if len(looks) == 3:  # a human answers from another process meanwhile
            (operator,) = operators
            operator.approve(operator.approvals()[0].decision_id)

    with Engine.open(db, session="judge", clock=clock, sleep=sleep, seed=3) as engine:
        operator = Engine.open(db, session="operator", clock=clock)
        operators.append(operator)

        @engine.action(impact="high")
        def publish() -> str:
            return "published"

        @engine.task()
        def job() -> str:
            return publish()

        task_id = engine.submit(job)
        summary = engine.run(await_approvals=60.0)
        operator.close()
        assert summary.succeeded == 1
        assert engine.result(task_id) == "published"
        assert len(looks) == 3


def test_patience_runs_out(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def publish() -> str:
            return "published"

        @engine.task()
        def job() -> str:
            return publish()

        engine.submit(job)
        start = clock.now
        summary = engine.run(await_approvals=5.0)
        assert summary.waiting == 1
        assert summary.succeeded == 0
        assert clock.now - start == pytest.approx(5.0)
        with pytest.raises(UsageError):
            engine.run(await_approvals=-1)


def test_a_waiting_approval_survives_a_reopen(db: str, clock: FakeClock) -> None:
    def define(engine: Engine) -> Any:
        @engine.action(impact="high")
        def migrate() -> str:
            return "migrated"

        @engine.task()
        def job() -> str:
            return migrate()

        return job

    with open_engine(db, clock) as engine:
        task_id = engine.submit(define(engine))
        engine.run()
    with open_engine(db, clock) as engine:
        define(engine)
        assert engine.run().runs == 0  # still waiting: nobody answered
        assert engine.task_view(task_id).state == "waiting"
        (request,) = engine.approvals()
        engine.approve(request.decision_id)
        engine.run()
        assert engine.result(task_id) == "migrated"
        history = engine.log.read_stream(f"task-{task_id}")
        assert len(confidence_decisions(history)) == 1  # decided once, read back after


def test_answering_an_unknown_request(db: str, clock: FakeClock) -> None:
    with open_engine(db, clock) as engine, pytest.raises(ApprovalNotFound, match="no approval"):
        engine.approve("ffff")


@pytest.mark.parametrize("ending", ["cancelled", "quarantined", "missed"])
def test_a_request_lapses_when_its_task_ends_and_a_retry_asks_it_again(
    db: str, clock: FakeClock, ending: str
) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def push() -> str:
            return "pushed"

        @engine.task()
        def job() -> str:
            return push()

        task_id = engine.submit(job, deadline=clock.now + 60)
        engine.run()
        (request,) = engine.approvals()
        if ending == "cancelled":
            engine.cancel(task_id)
        elif ending == "quarantined":
            engine.quarantine(task_id, reason="set aside")
        else:
            clock.advance(120)
            engine.run()
        assert engine.task_view(task_id).state == ending
        assert engine.approvals() == []
        with pytest.raises(ApprovalNotFound, match=rf"task {task_id} ended \({ending}\)"):
            engine.deny(request.decision_id[:8])
        start = clock.now
        engine.run(await_approvals=5.0)
        assert clock.now == start  # nothing is left to wait for
        if ending == "quarantined":
            return
        engine.retry(task_id)
        assert [a.decision_id for a in engine.approvals()] == [request.decision_id]
        assert engine.run().waiting == 1
        engine.approve(request.decision_id)
        engine.run()
        assert engine.result(task_id) == "pushed"


def test_a_missed_task_retried_with_a_new_deadline_asks_its_approval_again(
    db: str, clock: FakeClock
) -> None:
    with open_engine(db, clock) as engine:

        @engine.action(impact="high")
        def push() -> str:
            return "pushed"

        @engine.task()
        def job() -> str:
            return push()

        task_id = engine.submit(job, deadline=clock.now + 60)
        engine.run()
        (request,) = engine.approvals()
        clock.advance(120)
        engine.run()
        assert engine.task_view(task_id).state == "missed"
        engine.retry(task_id, deadline=clock.now + 3_600)  # the old deadline has passed
        assert engine.run().waiting == 1  # not missed again at once: its deadline is ahead
        view = engine.task_view(task_id)
        assert (view.state, view.deadline) == ("waiting", clock.now + 3_600)
        assert [a.decision_id for a in engine.approvals()] == [request.decision_id]
        engine.approve(request.decision_id)
        engine.run()
        assert engine.result(task_id) == "pushed"


def test_an_approval_request_reaches_on_interruption_at_once(db: str, clock: FakeClock) -> None:
    from onward import Interruption

    heard: list[Interruption] = []
    with open_engine(db, clock, on_interruption=heard.append) as engine:

        @engine.action(impact="high", question="ship it?")
        def ship() -> str:
            return "shipped"

        @engine.task()
        def job() -> str:
            return ship()

        engine.submit(job)
        engine.run()
        (request,) = engine.approvals()
        assert [(i.kind, i.interruption_id, i.summary) for i in heard] == [
            ("approval", request.decision_id, "ship it?")
        ]
        assert heard[0].deferred_for == 0.0
