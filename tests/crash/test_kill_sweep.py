"""Kill a real process at every storage boundary of a 50-step task, then resume it.

For each commit k of an uninterrupted run (the session start, the submission, the claim, each
StepCompleted, the TaskSucceeded with the rulebook's decision on what follows it), a child
process SIGKILLs itself just before or just after its k-th insert; a second process reopens the
same log and session and finishes the task. The promises are then checked on what both left
behind (see ``_worker.check_aftermath``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.crash._worker import FIXED_COMMITS, check_aftermath, expected_result, run_case

STEPS = 50
BOUNDARIES = STEPS + FIXED_COMMITS

pytestmark = pytest.mark.slow


def _topic_at(k: int) -> str:
    if k == 1:
        return "SessionStarted"
    if k == 2:
        return "TaskSubmitted"
    if k == 3:
        return "TaskClaimed"
    if k == BOUNDARIES:
        return "DecisionMade+TaskSucceeded"  # one commit: what follows the task, and its end
    return "StepCompleted"


def test_uninterrupted_run_has_the_swept_boundaries(tmp_path: Path) -> None:
    after = run_case(tmp_path, steps=STEPS, phases=[{}], case="uninterrupted")
    (phase,) = after.phases
    topics = ["+".join(r["topic"] for r in entry["records"]) for entry in phase.committed]
    assert topics[:BOUNDARIES] == [_topic_at(k) for k in range(1, BOUNDARIES + 1)]
    # After the task, at the run's last task boundary, the flow monitor may record the
    # session's rhythm: session-level, not one of the task's boundaries.
    assert set(topics[BOUNDARIES:]) <= {"FlowStateChanged"}, topics
    assert after.outcome["result"] == expected_result(STEPS)
    check_aftermath(after, steps=STEPS)


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("k", range(1, BOUNDARIES + 1), ids=lambda k: f"k{k:02d}")
def test_kill_at_boundary_then_resume(tmp_path: Path, k: int, when: str) -> None:
    case = f"kill {when} insert {k} ({_topic_at(k)}) of {BOUNDARIES}"
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[{"kill_at": k, "when": when}, {}],
        case=case,
    )
    killed, resumed = after.phases
    assert killed.killed, f"[{case}] the first process was not killed"
    assert "+".join(killed.killed_topics()) == _topic_at(k), f"[{case}] {killed.killed_at}"
    assert len(killed.committed) == (k if when == "after" else k - 1), f"[{case}]"
    check_aftermath(after, steps=STEPS)
    # The step in flight at a kill before its StepCompleted ran twice; nothing else did.
    in_flight = k - FIXED_COMMITS if _topic_at(k) == "StepCompleted" else None
    twice = sorted(i for i in range(STEPS) if len(after.runs_of(i)) > 1)
    assert twice == ([in_flight] if when == "before" and in_flight is not None else []), (
        f"[{case}] steps run twice: {twice}"
    )
    if k == BOUNDARIES and when == "after":
        assert resumed.outcome["summary"]["runs"] == 0, f"[{case}] re-ran a finished task"
