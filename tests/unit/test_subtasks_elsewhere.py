"""A parent that submitted a subtask by name re-runs on a worker without that task's code (an
older version of the fleet): its replayed ``submit`` returns the subtask it recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from onward import Engine, NotRegistered
from tests.conftest import FakeClock


def _open(db: Path, clock: FakeClock) -> Engine:
    return Engine.open(f"sqlite:///{db}", session="fleet", clock=clock, sleep=clock.advance)


def test_a_replayed_submit_of_a_task_this_worker_lacks_returns_the_recorded_subtask(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = tmp_path / "log.db"

    def register_parent(engine: Engine) -> None:
        @engine.task()
        def parent() -> str:
            child = engine.submit("child", 2)
            engine.sleep(5)  # its code runs again from the start after the wait
            return child

    with _open(db, clock) as new:  # a worker with both tasks
        register_parent(new)

        @new.task()
        def child(n: int) -> int:
            return n * 2

        parent_id = new.submit("parent")
        new.run(max_runs=1)  # the parent submits its subtask, then waits
        [child_id] = [t.task_id for t in new.tasks() if t.name == "child"]

    with _open(db, clock) as old:  # a worker of an older version: no "child" here
        register_parent(old)
        old.run(max_runs=2)  # the parent again, after its wait, and the child (unregistered)
        assert old.task_view(parent_id).state == "succeeded"
        assert old.result(parent_id) == child_id
        assert old.task_view(child_id).state == "unregistered"
        assert [t.name for t in old.tasks()].count("child") == 1
        # Outside a task, an unknown name is still refused.
        with pytest.raises(NotRegistered):
            old.submit("child", 3)


def test_a_first_submit_of_a_task_this_worker_lacks_still_fails(
    tmp_path: Path, clock: FakeClock
) -> None:
    with _open(tmp_path / "log.db", clock) as engine:

        @engine.task()
        def parent() -> str:
            return engine.submit("missing", 1)

        task_id = engine.submit(parent)
        engine.run()
        assert engine.task_view(task_id).state == "failed"
        assert "missing" in (engine.task_view(task_id).error or "")
