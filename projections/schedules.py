"""The schedule projection: each session's schedules and their last tick, from the streams
``schedule-<session>:<name>``."""

from __future__ import annotations

from typing import Any

import msgspec

from onward.events import Recorded, ScheduleRemoved, ScheduleSet, ScheduleTicked

__all__ = ["SCHEDULE_PREFIX", "ScheduleProjection", "ScheduleView", "schedule_stream"]

#: Every schedule's stream is ``schedule-<session>:<name>``.
SCHEDULE_PREFIX = "schedule-"


def schedule_stream(session: str, name: str) -> str:
    """The stream of one session's schedule."""
    return f"{SCHEDULE_PREFIX}{session}:{name}"


class ScheduleView(msgspec.Struct, kw_only=True):
    """What the log says about one schedule.

    Attributes:
        session: its session.
        name: its name.
        task: the task it submits.
        cron: its cron expression (UTC).
        args: the task's positional arguments.
        kwargs: the task's keyword arguments.
        priority: the tasks' priority.
        missed: "once" or "skip" (see :class:`onward.events.ScheduleSet`).
        set_at: when it was (last) set; ticks count from then.
        last_tick: the last tick handled (None: none yet).
        last_task: the task submitted for it ("" when skipped).
        runs: the tasks it submitted.
        skipped: the ticks it skipped (or covered by one run).
        removed: it was removed (no more ticks until it is set again).
        version: its stream's version.
    """

    session: str
    name: str
    task: str
    cron: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: str
    missed: str
    set_at: float
    last_tick: float | None = None
    last_task: str = ""
    runs: int = 0
    skipped: int = 0
    removed: bool = False
    version: int = 0


class ScheduleProjection:
    """Folds schedule streams into :class:`ScheduleView` objects."""

    def __init__(self) -> None:
        self.schedules: dict[str, ScheduleView] = {}  # by stream

    def apply(self, r: Recorded) -> None:
        """Fold one event of a schedule stream (others are ignored)."""
        event = r.event
        if isinstance(event, ScheduleSet):
            before = self.schedules.get(r.stream)
            self.schedules[r.stream] = ScheduleView(
                session=r.meta.session,
                name=event.name,
                task=event.task,
                cron=event.cron,
                args=list(event.args),
                kwargs=dict(event.kwargs),
                priority=event.priority.value,
                missed=event.missed,
                set_at=r.meta.time,
                last_tick=before.last_tick if before is not None else None,
                last_task=before.last_task if before is not None else "",
                runs=before.runs if before is not None else 0,
                skipped=before.skipped if before is not None else 0,
                version=r.version,
            )
        elif isinstance(event, ScheduleTicked):
            view = self.schedules.get(r.stream)
            if view is None:
                return
            view.last_tick = event.tick
            view.last_task = event.task_id
            view.runs += bool(event.task_id)
            view.skipped += event.missed + (not event.task_id)
            view.version = r.version
        elif isinstance(event, ScheduleRemoved):
            view = self.schedules.get(r.stream)
            if view is not None:
                view.removed = True
                view.version = r.version

    def of(self, session: str) -> list[ScheduleView]:
        """A session's schedules (the removed ones included), by name."""
        return sorted(
            (v for v in self.schedules.values() if v.session == session), key=lambda v: v.name
        )

    def get(self, session: str, name: str) -> ScheduleView | None:
        """One schedule of a session (None: never set)."""
        return self.schedules.get(schedule_stream(session, name))

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every schedule."""
        return {k: msgspec.structs.asdict(v) for k, v in sorted(self.schedules.items())}

    def dump(self) -> list[ScheduleView]:
        """Every schedule view, for a checkpoint."""
        return list(self.schedules.values())

    def load(self, views: list[ScheduleView]) -> None:
        """Restore from a checkpoint's schedule views."""
        self.schedules = {schedule_stream(v.session, v.name): v for v in views}
