"""Events of schedules: tasks submitted on a cron schedule, stored in ``schedule-<session>:<name>``.

A schedule is set (:class:`ScheduleSet`) by the code that declares it; each tick is claimed by
exactly one worker, however many run the session: the :class:`ScheduleTicked` is an append at
the schedule stream's expected version, committed with the task it submits.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from onward.events.base import Event
from onward.events.kinds import Priority

__all__ = ["ScheduleRemoved", "ScheduleSet", "ScheduleTicked"]


class ScheduleSet(Event, frozen=True, kw_only=True):
    """A schedule was declared (or changed): a task to submit at each tick of a cron expression.

    Attributes:
        name: the schedule's name.
        task: the name of the task it submits.
        cron: the cron expression (five fields, UTC).
        args: the task's positional arguments, as plain JSON values.
        kwargs: its keyword arguments.
        priority: the tasks' priority.
        missed: what to do about ticks missed while no worker ran (an outage): "once" runs the
            task once for all of them, "skip" runs none of them.
    """

    family: ClassVar[str] = "schedule"

    name: str
    task: str
    cron: str
    args: list[Any] = msgspec.field(default_factory=list)
    kwargs: dict[str, Any] = msgspec.field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    missed: str = "once"


class ScheduleTicked(Event, frozen=True, kw_only=True):
    """A tick of a schedule was handled: its task submitted, or the missed ticks skipped.

    Attributes:
        tick: the tick's time, in seconds since the epoch (the latest one handled).
        task_id: the task submitted for it ("" when skipped).
        missed: how many earlier ticks were due and are covered by this one (run once for all,
            or skipped).
    """

    family: ClassVar[str] = "schedule"

    tick: float
    task_id: str = ""
    missed: int = 0


class ScheduleRemoved(Event, frozen=True, kw_only=True):
    """A schedule was removed: no more ticks (its tasks already submitted run on).

    Attributes:
        reason: why, as given.
    """

    family: ClassVar[str] = "schedule"

    reason: str = ""
