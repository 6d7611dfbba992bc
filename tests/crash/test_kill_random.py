"""Kill a real process at seeded random moments of a 1,000-step task, then resume it.

No test waits on the clock: the child draws the insert it dies at (and whether just before or
just after it) from ``random.Random(seed)``. The seeds are printed and named in every assertion;
set ``ONWARD_CRASH_SEED`` to try other ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.crash._worker import FIXED_COMMITS, check_aftermath, onward_verify, run_case

STEPS = 1000
BOUNDARIES = STEPS + FIXED_COMMITS
BASE_SEED = int(os.environ.get("ONWARD_CRASH_SEED", "1729"))
SEEDS = [BASE_SEED + i for i in range(5)]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", SEEDS, ids=lambda s: f"seed{s}")
def test_kill_at_random_moment_then_resume(tmp_path: Path, seed: int) -> None:
    print(f"seed {seed} (rerun with ONWARD_CRASH_SEED={seed})")
    after = run_case(
        tmp_path,
        steps=STEPS,
        phases=[{"random_upto": BOUNDARIES}, {}],
        seed=seed,
        checkpoint_every=97,  # resuming also goes through a checkpoint plus the log's tail
        case=f"seed {seed}",
    )
    killed = after.phases[0]
    after.case = f"seed {seed}: killed {killed.when} insert {killed.kill_at} of {BOUNDARIES}"
    print(after.case, killed.killed_topics())
    assert killed.killed, f"[{after.case}] the first process was not killed"
    check_aftermath(after, steps=STEPS)
    verified = onward_verify(after.db)
    assert verified.returncode == 0, f"[{after.case}] {verified.stdout}{verified.stderr}"
    assert verified.stdout.startswith("ok:"), f"[{after.case}] {verified.stdout}"
