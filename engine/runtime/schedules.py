"""Schedules: a task submitted at the ticks of a cron expression, at most once per tick however
many workers serve the session; ticks found due together run it once.

A schedule lives in its own stream, ``schedule-<session>:<name>`` with ``%`` and ``:``
percent-encoded in both names (see :func:`~onward.projections.schedule_stream`; one an earlier
onward recorded keeps its stream). Declaring it records a
:class:`~onward.events.ScheduleSet` (only when the log's differs). A worker that finds a tick
due (at each task boundary, and while it waits for work) commits, in one transaction, a
:class:`~onward.events.ScheduleTicked` at the schedule stream's expected version and the
task's :class:`~onward.events.TaskSubmitted`: of several workers that find the same tick due,
one commits and the others' appends are refused. The task's id is derived from the session,
the schedule and the tick, so that a tick never submits two tasks.

Ticks missed while no worker ran (an outage) follow the schedule's ``missed`` policy: "once"
runs the task once for all of them, at the first look after the outage; "skip" runs none of
them, unless the latest is less than :data:`GRACE` seconds late (then it runs, on time). A
tick that came due while a worker of the session ran is not missed, however late it is found:
a worker busy with a task looks at the schedules only at its next task boundary, and runs the
task then, once, for the latest of the ticks due (the earlier ones are counted in its
``missed``: a long task does not leave a burst of runs behind it). A worker ran
at the tick when the one that looks has run since before it (its ``run()`` or ``serve()``
began earlier), or when another worker holds one of the session's tasks, claimed before the
tick and held since. Cron expressions are read by cronsim, in UTC.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim, CronSimError

from onward.core.definitions import TaskDef, parse_priority
from onward.events import (
    Append,
    Context,
    Priority,
    ScheduleRemoved,
    ScheduleSet,
    ScheduleTicked,
    TaskSubmitted,
    UsageError,
    VersionConflict,
)
from onward.projections import Projections, ScheduleView, task_stream
from onward.runtime.registry import Registry
from onward.runtime.run import derived_id, submission_id
from onward.runtime.session import Session
from onward.runtime.tasks import Tasks

__all__ = ["GRACE", "MISSED_POLICIES", "Schedules", "parse_cron"]

#: A tick found due at most this many seconds late is on time (the "skip" policy runs it),
#: whether or not a worker ran at the tick.
GRACE = 60.0
#: What to do about the ticks missed while no worker ran.
MISSED_POLICIES = ("once", "skip")
#: Missed ticks are counted up to this many (a minutely schedule down for months).
_COUNT_AT_MOST = 100_000


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def parse_cron(expression: str, now: float) -> CronSim:
    """Check a cron expression (five fields, or six with seconds; UTC) with cronsim.

    Raises:
        UsageError: cronsim refuses it, or it never fires (``0 0 31 2 *``: cronsim looks 50
            years ahead).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise UsageError(f"a schedule's cron must be a cron expression, got {expression!r}")
    try:
        sim = CronSim(expression.strip(), _moment(now))
    except CronSimError as exc:
        raise UsageError(f"cron expression {expression!r}: {exc}") from None
    if _first(expression.strip(), now) == math.inf:
        raise UsageError(f"cron expression {expression!r} never fires (no tick in 50 years)")
    return sim


def _first(cron: str, after: float) -> float:
    """The first tick of ``cron`` after ``after``; inf when there is none (a cron no date
    matches, or past the last date a datetime holds)."""
    try:
        return next(CronSim(cron, _moment(after))).timestamp()
    except (StopIteration, CronSimError, OverflowError, ValueError, OSError):
        return math.inf


def next_tick(view: ScheduleView) -> float:
    """A schedule's next tick after the last one it handled (or after it was set); inf when
    it never fires again (a cron declared by an onward that let one through that never
    fires)."""
    return _first(view.cron, max(view.set_at, view.last_tick or 0.0))


class Schedules:
    """One engine's view of its session's schedules: declaring them and firing their ticks.

    Args:
        session: the session.
        registry: the registered tasks (a worker fires only the ticks of tasks it has).
        tasks: stores a scheduled task's arguments as a submission stores them.
    """

    def __init__(self, session: Session, registry: Registry, tasks: Tasks) -> None:
        self.session = session
        self.registry = registry
        self.tasks = tasks
        # The next tick of each schedule, by name, for the version it was computed at.
        self._next: dict[str, tuple[int, float]] = {}

    def set(
        self,
        definition: TaskDef,
        *,
        cron: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str | None,
        missed: str,
        priority: Priority | str | None,
    ) -> str:
        """Declare a schedule (see :meth:`onward.Engine.schedule`); returns its name.

        Raises:
            UsageError: a bad cron expression, policy, name or arguments.
        """
        session = self.session
        session.check_open()
        name = definition.name if name is None else name
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"a schedule's name must be a non-empty string, got {name!r}")
        session.log.redactor.check_name(name, "schedule name")
        parse_cron(cron, session.clock())
        if missed not in MISSED_POLICIES:
            raise UsageError(f"missed must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}")
        stored_args, stored_kwargs = self.tasks.stored_arguments(definition, args, kwargs)
        level = definition.priority if priority is None else parse_priority(priority)
        wanted = ScheduleSet(
            name=name,
            task=definition.name,
            cron=cron.strip(),
            args=stored_args,
            kwargs=stored_kwargs,
            priority=level,
            missed=missed,
        )

        stream, there = session.catch_up().schedules.stream_of(session.name, name)
        if there is not None and there.name != name:
            raise UsageError(
                f"schedule {name!r} of session {session.name!r}: its stream {stream!r} holds "
                f"the session's schedule {there.name!r}, recorded by an earlier onward; choose "
                "another name"
            )

        def unless_the_same(projections: Projections) -> tuple[list[ScheduleSet], int]:
            # The stream's version: an earlier onward may have recorded another session's
            # schedule on it.
            view = projections.schedules.get(session.name, name)
            same = view is not None and not view.removed and _same(view, wanted)
            return ([] if same else [wanted]), projections.schedules.version_of(stream)

        session.decide_on(stream, unless_the_same, f"schedule {name!r}")
        return name

    def retire_renamed(self, definition: TaskDef, aliases: Sequence[str]) -> int:
        """Remove the schedules that ``@engine.task(schedule=...)`` declared under a task's
        former names (its aliases): the renamed task declares its own, under its new name, and
        the old one would submit it a second time at each tick. A schedule declared under
        another name (``engine.schedule(..., name=...)``) is left alone. Returns how many were
        removed.
        """
        session = self.session
        removed = 0
        for alias in aliases:

            def if_declared_for(
                projections: Projections, alias: str = alias
            ) -> tuple[list[ScheduleRemoved], int]:
                view = projections.schedules.get(session.name, alias)
                if view is None or view.removed or view.task != alias:
                    return [], 0
                reason = f"its task was renamed to {definition.name!r}"
                return [ScheduleRemoved(reason=reason)], view.version

            stream, _ = session.catch_up().schedules.stream_of(session.name, alias)
            removed += session.decide_on(stream, if_declared_for, f"schedule {alias!r}")
        return removed

    def remove(self, name: str, reason: str) -> bool:
        """Remove a schedule (see :meth:`onward.Engine.unschedule`); False when it was not
        set."""
        session = self.session
        session.check_open()

        def if_set(projections: Projections) -> tuple[list[ScheduleRemoved], int]:
            view = projections.schedules.get(session.name, name)
            if view is None or view.removed:
                return [], 0
            return [ScheduleRemoved(reason=reason)], view.version

        stream, _ = session.catch_up().schedules.stream_of(session.name, name)
        return session.decide_on(stream, if_set, f"schedule {name!r}")

    def listed(self) -> list[ScheduleView]:
        """This session's schedules (removed ones included), by name."""
        return self.session.catch_up().schedules.of(self.session.name)

    def fire(self, began: float | None = None) -> int:
        """Handle every tick now due of this session's schedules whose task this worker has
        (the caller holds the session's lock, caught up); returns how many tasks it
        submitted.

        Args:
            began: when the worker's current run began (None: now): a tick due since then
                came due while it ran, so it is never missed.
        """
        session = self.session
        now = session.clock()
        began = now if began is None else began
        fired = 0
        for view in session.projections.schedules.of(session.name):
            if view.removed or not self.registry.knows(view.task):
                continue
            if self._next_of(view) > now:
                continue
            fired += self._tick(view, now, began)
        if fired:
            session.host.catch_up()
        return fired

    def next_due(self) -> float | None:
        """When this session's next tick is due (None: no schedule this worker fires)."""
        moments = [
            self._next_of(view)
            for view in self.session.projections.schedules.of(self.session.name)
            if not view.removed and self.registry.knows(view.task)
        ]
        moments = [m for m in moments if m != math.inf]  # never again: nothing to wait for
        return min(moments) if moments else None

    def _next_of(self, view: ScheduleView) -> float:
        known = self._next.get(view.name)
        if known is None or known[0] != view.version:
            known = self._next[view.name] = (view.version, next_tick(view))
        return known[1]

    def _missed(self, tick: float, now: float, began: float) -> bool:
        """Whether a tick came due while no worker of the session ran (see the module's
        docstring): not when it is at most :data:`GRACE` late, when this worker has run since
        before it, or when another worker held one of the session's tasks from before it and
        through it."""
        if now - tick <= GRACE or began <= tick:
            return False
        session = self.session
        workers = session.projections.workers
        for task in session.running_tasks():
            if task.state != "running" or task.worker == session.worker or task.updated_at > tick:
                continue
            holds = max(
                task.lease_until,
                task.updated_at + session.lease,
                workers.holds_until(task.worker),
            )
            if holds >= tick:
                return False
        return True

    def _tick(self, view: ScheduleView, now: float, began: float) -> int:
        """Commit the due tick of one schedule with its task (or its skip); 1 when a task was
        submitted."""
        session = self.session
        start = max(view.set_at, view.last_tick or 0.0)
        latest = next(CronSim(view.cron, _moment(now) + timedelta(microseconds=1), reverse=True))
        tick = latest.timestamp()
        if tick <= start:
            return 0
        due = 0
        for moment in CronSim(view.cron, _moment(start)):
            if moment > latest or due >= _COUNT_AT_MOST:
                break
            due += 1
        run = view.missed == "once" or not self._missed(tick, now, began)
        task_id = derived_id(session.name, "schedule", view.name, repr(tick)) if run else ""
        context = Context(session=session.name, actor=session.worker, correlation_id=task_id)
        appends = [
            Append(
                stream=view.stream,
                events=[ScheduleTicked(tick=tick, task_id=task_id, missed=max(0, due - 1))],
                expected_version=view.version,
                context=context,
            )
        ]
        if run:
            appends.append(
                Append(
                    stream=task_stream(task_id),
                    events=[
                        TaskSubmitted(
                            name=view.task,
                            args=list(view.args),
                            kwargs=dict(view.kwargs),
                            priority=Priority(view.priority),
                            schedule=view.name,
                        )
                    ],
                    expected_version=0,
                    event_ids=[submission_id(task_id)],
                    context=context,
                )
            )
        with contextlib.suppress(VersionConflict):  # another worker handled the tick first
            session.log.commit(appends)
            return int(run)
        return 0


def _same(view: ScheduleView, wanted: ScheduleSet) -> bool:
    return (view.task, view.cron, view.args, view.kwargs, view.priority, view.missed) == (
        wanted.task,
        wanted.cron,
        wanted.args,
        wanted.kwargs,
        wanted.priority.value,
        wanted.missed,
    )
