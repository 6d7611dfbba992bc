"""A process killed (``kill -9``) while its task waits for a human leaves the task waiting.

The child runs a task whose high-impact action asks for approval, then keeps looking for the
answer (``run(await_approvals=...)``). The parent sees the request in the log, kills the child
with SIGKILL, reopens the session: the task still waits, the request is still listed, and once
approved (by the parent, a second process) the task finishes, the action having run once.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from onward import Engine
from tests.crash._child import killed_once_it_says

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    from onward import Engine

    def sleep(seconds: float) -> None:
        print("waiting", flush=True)  # the run loop looks for an answer: tell the parent
        time.sleep(seconds)

    db, journal = sys.argv[1], Path(sys.argv[2])
    engine = Engine.open(f"sqlite:///{db}", session="release", sleep=sleep)

    @engine.action(impact="high")
    def deploy(target: str) -> str:
        with journal.open("a") as f:
            f.write(target + "\\n")
        return f"deployed {target}"

    @engine.task()
    def release(target: str) -> str:
        return deploy(target)

    if len(sys.argv) > 3:
        engine.submit(release, "prod", key="prod")
    engine.run(await_approvals=600.0)
    """
)


def define(engine: Engine, journal: Path) -> None:
    @engine.action(impact="high")
    def deploy(target: str) -> str:
        with journal.open("a") as f:
            f.write(target + "\n")
        return f"deployed {target}"

    @engine.task()
    def release(target: str) -> str:
        return deploy(target)


def test_a_kill_while_waiting_for_approval_leaves_the_task_waiting(tmp_path: Path) -> None:
    db, journal = tmp_path / "work.db", tmp_path / "journal"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with (
        killed_once_it_says(script, db, journal, "submit", says="waiting\n"),
        Engine.open(f"sqlite:///{db}", session="observer") as observer,
    ):
        assert len(observer.approvals()) == 1

    with Engine.open(f"sqlite:///{db}", session="release") as engine:
        define(engine, journal)
        (task,) = engine.tasks()
        assert task.state == "waiting"
        assert engine.run().runs == 0  # nobody answered: it still waits
        (request,) = engine.approvals()
        assert request.action == "deploy"
        engine.approve(request.decision_id, note="after the crash", by="ops")
        engine.run()
        assert engine.result(task.task_id) == "deployed prod"
    assert journal.read_text().splitlines() == ["prod"]  # the action ran once, after approval
