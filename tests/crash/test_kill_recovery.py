"""Kill the process that recovers from a kill, at each boundary of its recovery, then finish.

The first process dies with step 16 of 50 in flight (just before its StepCompleted commit).
The second reopens the session and dies at one of its own inserts: the SessionResumed, the
repeated (idempotent) submission, the expiry of the dead worker's lease, the new claim, the
re-run of step 16, a later step, the TaskSucceeded. A third process finishes the task.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.crash._worker import check_aftermath, onward_verify, run_case

STEPS = 50
FIRST_KILL = {"kill_at": 20, "when": "before"}  # the StepCompleted of step 16
IN_FLIGHT = 16

# Inserts of the second process after FIRST_KILL: 1 SessionResumed, 2 TaskSubmitted (clashes
# with the recorded one: the submission is idempotent), 3 TaskLeaseExpired, 4 TaskClaimed,
# 5..38 StepCompleted of steps 16..49, 39 the rulebook's DecisionMade with the TaskSucceeded.
SECOND = [
    (1, "SessionResumed"),
    (2, "TaskSubmitted"),
    (3, "TaskLeaseExpired"),
    (4, "TaskClaimed"),
    (5, "StepCompleted"),
    (20, "StepCompleted"),
    (39, "DecisionMade+TaskSucceeded"),
]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize(("k", "topic"), SECOND, ids=[f"k{k}-{t}" for k, t in SECOND])
def test_kill_during_recovery_then_finish(tmp_path: Path, k: int, topic: str, when: str) -> None:
    case = f"first killed before step {IN_FLIGHT} was recorded; second killed {when} {topic} ({k})"
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[FIRST_KILL, {"kill_at": k, "when": when}, {}],
        case=case,
    )
    first, second, _ = after.phases
    assert first.killed, f"[{case}] the first process was not killed"
    assert second.killed, f"[{case}] the second process was not killed"
    assert "+".join(second.killed_topics()) == topic, f"[{case}] {second.killed_at}"
    check_aftermath(after, steps=STEPS)
    runs = after.runs_of(IN_FLIGHT)
    # Step 16 runs a third time only if the second process died with it in flight again.
    expected = 3 if (k, when) == (5, "before") else 2
    assert len(runs) == expected, f"[{case}] step {IN_FLIGHT} ran in pids {runs}"


def test_kill_the_same_step_in_flight_three_times(tmp_path: Path) -> None:
    again = {"kill_at": 5, "when": "before"}  # step 16's StepCompleted once more
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[FIRST_KILL, again, again, {}],
        case="step 16 in flight at three kills",
    )
    assert all(p.killed for p in after.phases[:3])
    check_aftermath(after, steps=STEPS)
    assert len(after.runs_of(IN_FLIGHT)) == 4
    assert all(len(after.runs_of(i)) == 1 for i in range(STEPS) if i != IN_FLIGHT)


BASE_SEED = int(os.environ.get("ONWARD_CRASH_SEED", "1729"))


@pytest.mark.parametrize("seed", [BASE_SEED + i for i in range(3)], ids=lambda s: f"seed{s}")
def test_kill_repeatedly_at_random_moments(tmp_path: Path, seed: int) -> None:
    """Three processes in a row die at seeded random inserts of a 1,000-step task."""
    print(f"seed {seed} (rerun with ONWARD_CRASH_SEED={seed})")
    kill = {"random_upto": 400}
    after = run_case(
        tmp_path,
        steps=1000,
        phases=[kill, kill, kill, {}],
        seed=seed,
        checkpoint_every=97,
        case=f"seed {seed}",
    )
    after.case = f"seed {seed}: kills " + ", ".join(
        f"{p.when} {p.kill_at} ({'killed' if p.killed else 'finished'})" for p in after.phases[:3]
    )
    print(after.case)
    assert after.phases[0].killed, f"[{after.case}]"
    check_aftermath(after, steps=1000)
    verified = onward_verify(after.db)
    assert verified.returncode == 0, f"[{after.case}] {verified.stdout}{verified.stderr}"
