"""Graceful degradation reported by tasks that run at the same moment (``run(workers=N)``)."""

from __future__ import annotations

import threading
from pathlib import Path

from onward import Engine
from onward.judgement.degradation import Workaround
from tests.conftest import FakeClock

LADDER = [Workaround(name="cache", quality_loss=0.2), Workaround(name="skip", quality_loss=0.5)]


def test_tasks_reporting_one_failure_at_once_walk_the_ladder_as_one_after_the_other(
    tmp_path: Path,
) -> None:
    """Four worker threads report the failure together: the first takes the first rung, the
    second the next, and the others find the ladder run out (they ask a person), as when the
    tasks run one by one."""
    clock = FakeClock()
    together = threading.Barrier(4, timeout=60)
    got: dict[int, str] = {}
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with Engine.open(url, session="s", clock=clock, sleep=clock.advance) as engine:
        engine.component("search", workarounds=LADDER)

        @engine.task(name="lookup")
        def lookup(n: int) -> str:
            together.wait()  # all four are running: they report at the same moment
            found = engine.degrade("search", message=f"503 for {n}")
            got[n] = found.name if found else "none"
            return got[n]

        for n in range(4):
            engine.submit("lookup", n)
        engine.run(workers=4, max_runs=4)
        assert sorted(got.values()) == ["cache", "skip"]  # the other two wait for a person
        (component,) = engine.degradation().components
        assert (component.state, component.rung, component.failures) == ("exhausted", 2, 4)
        assert len(engine.approvals()) == 2
