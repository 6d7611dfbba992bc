"""An at-most-once step in flight at a kill is not run again: the resumed task fails instead.

The task runs steps 0..4; step 2 is at-most-once, so its start is committed before its body
runs. Inserts of the first process: 1 SessionStarted, 2 TaskSubmitted, 3 TaskClaimed,
4 and 5 StepCompleted (steps 0, 1), 6 StepStarted (step 2), 7 StepCompleted (step 2), 8 and 9
StepCompleted (steps 3, 4), 10 DecisionMade + TaskSucceeded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from onward import Engine, StepInterrupted
from onward.events import StepStarted
from tests.crash._worker import (
    ONCE_NAME,
    SESSION,
    STEP_NAME,
    TASK_NAME,
    Aftermath,
    check_aftermath,
    expected_result,
    run_case,
    step_value,
)

STEPS = 5
ONCE = 2


def _interrupted_message(after: Aftermath) -> str:
    started = [r.event for r in after.task_events() if isinstance(r.event, StepStarted)]
    assert [(s.index, s.name) for s in started] == [(ONCE, ONCE_NAME)]
    assert started[0].idempotency_key == f"{after.task_id}:{ONCE}"
    return str(StepInterrupted(after.task_id, ONCE, ONCE_NAME))


@pytest.mark.parametrize(
    ("k", "when", "bodies"),
    [
        (6, "after", 0),  # its start is committed, its body had not run yet
        (7, "before", 1),  # its body ran, its completion was not committed
    ],
)
def test_in_flight_at_most_once_step_fails_the_task(
    tmp_path: Path, k: int, when: str, bodies: int
) -> None:
    case = f"at-most-once step {ONCE} in flight: killed {when} insert {k}"
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[{"kill_at": k, "when": when}, {}],
        at_most_once=ONCE,
        case=case,
    )
    killed, _ = after.phases
    assert killed.killed, f"[{case}]"
    assert killed.killed_topics() == ["StepStarted" if k == 6 else "StepCompleted"]
    check_aftermath(after, steps=STEPS, succeeded=False)
    assert after.outcome["outcome"] == "failed", f"[{case}] {after.outcome}"
    assert after.outcome["error_type"] == "StepInterrupted", f"[{case}] {after.outcome}"
    assert after.outcome["message"] == _interrupted_message(after), f"[{case}]"
    assert len(after.runs_of(ONCE)) == bodies, f"[{case}] step {ONCE} ran {after.runs_of(ONCE)}"
    assert [i for _, i, _, _ in after.side_lines] == [0, 1, 2][: ONCE + bodies], f"[{case}]"


def test_interrupted_stays_interrupted_when_recovery_is_killed(tmp_path: Path) -> None:
    # The second process dies just before committing the TaskFailed (its 5th insert: after
    # SessionResumed, the repeated TaskSubmitted, TaskLeaseExpired and TaskClaimed).
    case = "at-most-once step in flight; recovery killed before TaskFailed"
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[{"kill_at": 7, "when": "before"}, {"kill_at": 5, "when": "before"}, {}],
        at_most_once=ONCE,
        case=case,
    )
    assert after.phases[1].killed_topics() == ["TaskFailed"], f"[{case}]"
    check_aftermath(after, steps=STEPS, succeeded=False)
    assert after.outcome["error_type"] == "StepInterrupted", f"[{case}] {after.outcome}"
    assert after.outcome["message"] == _interrupted_message(after)
    assert len(after.runs_of(ONCE)) == 1, f"[{case}] step {ONCE} ran {after.runs_of(ONCE)}"


@pytest.mark.parametrize(("k", "when"), [(6, "before"), (7, "after")])
def test_at_most_once_step_not_in_flight_is_not_interrupted(
    tmp_path: Path, k: int, when: str
) -> None:
    # Killed before its start was committed, or after its completion was: the task succeeds.
    case = f"at-most-once step {ONCE} not in flight: killed {when} insert {k}"
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[{"kill_at": k, "when": when}, {}],
        at_most_once=ONCE,
        case=case,
    )
    assert after.phases[0].killed, f"[{case}]"
    check_aftermath(after, steps=STEPS)
    assert len(after.runs_of(ONCE)) == 1, f"[{case}] step {ONCE} ran {after.runs_of(ONCE)}"


def test_a_person_retrying_an_interrupted_task_runs_the_step_again(tmp_path: Path) -> None:
    # Its start committed, its body never ran: the resumed task fails as interrupted. A person
    # checks the step's effect and retries the task: the new attempt runs the step (once) and
    # the task goes on, instead of failing again with the same StepInterrupted for good.
    case = "at-most-once step in flight, then retried by a person"
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[{"kill_at": 6, "when": "after"}, {}],
        at_most_once=ONCE,
        case=case,
    )
    assert after.outcome["error_type"] == "StepInterrupted", f"[{case}] {after.outcome}"
    ran: list[int] = []
    with Engine.open(f"sqlite:///{tmp_path / 'work.db'}", session=SESSION) as engine:

        @engine.step(name=STEP_NAME)
        def work(index: int) -> str:
            ran.append(index)
            return step_value(index)

        @engine.step(name=ONCE_NAME, at_most_once=True)
        def work_once(index: int) -> str:
            ran.append(index)
            return step_value(index)

        @engine.task(name=TASK_NAME)
        def job(steps: int, once: int) -> list[str]:
            return [(work_once if i == once else work)(i) for i in range(steps)]

        engine.retry(after.task_id)
        assert engine.run().succeeded == 1
        assert engine.result(after.task_id) == expected_result(STEPS)
    assert ran == [ONCE, *range(ONCE + 1, STEPS)], f"[{case}] {ran}"
