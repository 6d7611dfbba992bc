"""A process killed (``kill -9``) during a fix's delay: after it, the fix's call is made.

A fix may change a step's call and ask to wait first (``Remedy(call=..., delay=3)``). The wait is
in the process; the changed call is not in the log. The child applies such a fix and, as it
waits, the parent kills it with SIGKILL. Reopened on a clock one second later, the session waits
durably for the two seconds left (reopened after the delay, not at all), then makes the fix's
call (not the step's own again), and the fix is recorded as a success.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from onward import Engine, RetryPolicies, RetryPolicy
from onward.events import FixAttempted, FixFailed, FixSucceeded, StepFailed, TaskWaiting
from onward.healing.fixes import FixRegistry, Remedy, StepCall
from tests.conftest import FakeClock
from tests.crash._child import killed_once_it_says

pytestmark = pytest.mark.slow

T0 = 1_700_000_000.0


class SmallerPagesLater:
    """A fix for a quota on large pages: ask for pages of 10, after a pause of 3 s."""

    name = "smaller-pages-after-a-pause"

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return "quota" in str(error) and int(call.arguments["page"]) > 10

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        page = call.arguments["page"]
        return Remedy(call=call.with_arguments(page=10), change={"page": [page, 10]}, delay=3.0)


CHILD = textwrap.dedent(
    """
    import sys
    import threading
    from pathlib import Path

    from onward import Engine, RetryPolicies, RetryPolicy
    from onward.healing.fixes import FixRegistry
    from tests.crash.test_kill_fix_delay import SmallerPagesLater

    def sleep(seconds: float) -> None:
        print(f"pausing {seconds:g}", flush=True)  # the fix's delay: tell the parent
        threading.Event().wait()  # until the parent kills us

    db, journal = sys.argv[1], Path(sys.argv[2])
    fixes = FixRegistry()
    fixes.register(SmallerPagesLater())
    engine = Engine.open(
        f"sqlite:///{db}",
        session="pages",
        clock=lambda: T0,
        sleep=sleep,
        fixes=fixes,
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
    )

    @engine.step()
    def fetch(page: int) -> str:
        with journal.open("a") as f:
            f.write(f"page={page}\\n")
        if page > 10:
            raise RuntimeError("quota exceeded for large pages")
        return f"ok page={page}"

    @engine.task()
    def job(page: int) -> str:
        return fetch(page)

    engine.submit(job, 100, key="pages")
    engine.run()
    """
).replace("T0", repr(T0))


@pytest.mark.parametrize("later", [1.0, 10.0])
def test_a_kill_during_a_fix_s_delay_makes_the_fix_s_call_after_the_rest_of_it(
    tmp_path: Path, later: float
) -> None:
    db, journal = tmp_path / "work.db", tmp_path / "journal"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with killed_once_it_says(script, db, journal, says="pausing 3\n"):
        pass  # the child waits out the fix's delay
    assert journal.read_text().splitlines() == ["page=100"]

    clock = FakeClock(T0 + later)  # reopened within the fix's delay of 3 s, or after it
    fixes = FixRegistry()
    fixes.register(SmallerPagesLater())
    calls: list[tuple[int, float]] = []
    with Engine.open(
        f"sqlite:///{db}",
        session="pages",
        clock=clock,
        sleep=clock.advance,
        fixes=fixes,
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
    ) as engine:

        @engine.step()
        def fetch(page: int) -> str:
            calls.append((page, clock.now))
            if page > 10:
                raise RuntimeError("quota exceeded for large pages")
            return f"ok page={page}"

        @engine.task()
        def job(page: int) -> str:
            return fetch(page)

        (task,) = engine.tasks()
        engine.run()
        assert engine.result(task.task_id) == "ok page=10"
        # The fix's call, once the delay was over (the step's own was not made again).
        assert calls == [(10, max(T0 + 3.0, T0 + later))]
        history = [r.event for r in engine.log.read_stream(f"task-{task.task_id}")]
        assert sum(isinstance(e, StepFailed) for e in history) == 1
        assert sum(isinstance(e, FixAttempted) for e in history) == 1
        assert not any(isinstance(e, FixFailed) for e in history)
        (succeeded,) = [e for e in history if isinstance(e, FixSucceeded)]
        assert succeeded.fix == "smaller-pages-after-a-pause"
        waits = [e for e in history if isinstance(e, TaskWaiting)]
        left = [("fix smaller-pages-after-a-pause of step 0", T0 + 3.0)] if later < 3 else []
        assert [(w.reason, w.until) for w in waits] == left  # what was left of it, durably
        stats = engine.refresh().errors.fix_stats(succeeded.signature)
        assert stats["smaller-pages-after-a-pause"].successes == 1
