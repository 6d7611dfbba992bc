"""replay_check on ``async def`` tasks whose ``asyncio.TaskGroup`` cancelled a step under way:
the group the replay's own signal comes back in (nested or not, beside the task's own errors)
is read as that signal, and the task is skipped saying why, as for a timeout around a step."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onward import Engine
from onward.testing import open_engine, replay_check


def register(engine: Engine, variant: str) -> None:
    @engine.step()
    async def slow() -> str:
        await asyncio.Event().wait()  # never ends: the group cancels it
        return "slow"

    @engine.step()
    async def bad() -> str:
        raise ValueError("boom")

    async def both() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(slow())
            group.create_task(bad())

    @engine.task(name="job")
    async def job() -> str:
        if variant == "caught":  # the ValueError handled: the rest of the group goes on up
            outcome = "not caught"
            try:
                await both()
            except* ValueError:
                outcome = "caught"
            return outcome
        if variant == "nested":  # a group in a group
            async with asyncio.TaskGroup() as outer:
                outer.create_task(both())
        await both()  # raised: the task fails with the group
        return "unreached"


@pytest.mark.parametrize("variant", ["caught", "raised", "nested"])
def test_a_step_a_task_group_cancelled_is_skipped_saying_why(tmp_path: Path, variant: str) -> None:
    url = f"sqlite:///{tmp_path / 'group.db'}"
    with open_engine(url, session="night", backoff=False) as engine:
        register(engine, variant)
        task_id = engine.submit("job")
        asyncio.run(engine.run_async())
        assert engine.task_view(task_id).state == ("succeeded" if variant == "caught" else "failed")
        check = replay_check(url, engine)
    assert check.ok, check.explain()
    assert (check.checked, check.cut_short) == (0, 1)
    (why,) = check.skipped
    assert why.startswith(f"task {task_id}: its call at step 0 ('slow') was cancelled")
