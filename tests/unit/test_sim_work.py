"""The simulator's plan runner: a step's failure is stepped over, the engine's refusals are not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from onward.core.errors import ActionDenied, StepMismatch, StreamDamaged
from onward.events import LogDamaged, UsageError
from onward.events.integrity import StreamDamage
from onward.sim.work import run_plan


def _raising(error: BaseException) -> dict[str, Callable[..., Any]]:
    def fails(name: str, seconds: float, fault: str) -> None:
        raise error

    def passes(name: str, seconds: float, fault: str) -> None:
        return None

    return {"fails": fails, "passes": passes}


PLAN = [["passes", 0, ""], ["fails", 0, ""], ["passes", 0, ""]]


@pytest.mark.parametrize(
    "error", [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), ActionDenied("deploy", "no")]
)
def test_a_step_failed_for_good_is_skipped_and_the_plan_goes_on(error: Exception) -> None:
    assert run_plan(_raising(error), "t", PLAN) == 2


@pytest.mark.parametrize(
    "error",
    [
        UsageError("not a step"),
        StepMismatch("t", 1, "read_source", "parse_reply"),
        StreamDamaged(
            "task",
            "t",
            StreamDamage(
                stream="t", version=2, position=9, kind="gap", reason="a record is missing"
            ),
        ),
        LogDamaged("the log cannot be read"),
    ],
)
def test_what_is_no_steps_failure_ends_the_task(error: Exception) -> None:
    with pytest.raises(type(error)):
        run_plan(_raising(error), "t", PLAN)
