"""What the ``onward`` read commands print with ``--json``: the rows and reports, and how they
are built from the projections.

The keys are stable: msgspec encodes a Struct's fields in declaration order, so a field is
added at the end or not at all.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from onward.judgement.approvals import Approval
from onward.projections import TASK, Projections, TaskView

__all__ = [
    "DiagramReport",
    "EventRow",
    "QueueRow",
    "ReplayReport",
    "SessionRow",
    "SessionsReport",
    "ShowReport",
    "TaskRow",
    "TasksReport",
    "count_states",
    "emit_json",
    "json_text",
    "moment",
    "queue_rows",
    "session_rows",
    "task_row",
]


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One session, as ``onward sessions --json`` prints it: its lifecycle, its tasks by state,
    its flow state, degradation level, errors in the hour before the log's last event, and the
    approvals waiting for a human."""

    name: str
    state: str
    started: datetime
    updated: datetime
    openings: int
    host: str
    pid: int
    tasks: dict[str, int]
    flow: str = "idle"
    degradation: str = "full"
    quality_lost: float = 0.0
    errors_last_hour: int = 0
    approvals_waiting: int = 0
    damage: str = ""


class SessionsReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward sessions --json``."""

    log: str
    position: int
    sessions: list[SessionRow]


class TaskRow(msgspec.Struct, frozen=True, kw_only=True):
    """One task, as ``onward tasks --json`` and ``onward replay --json`` print it."""

    task_id: str
    session: str
    name: str
    key: str | None
    state: str
    priority: str
    attempt: int
    steps: int
    progress: float
    error: str
    submitted: datetime
    position: int
    damage: str = ""
    #: Events of types this onward does not know (a newer one wrote them): not resumed.
    unknown_events: int = 0


class ApprovalsReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward approvals --json``: the requests waiting for a human, oldest first."""

    log: str
    position: int
    approvals: list[Approval]


class TasksReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward tasks --json``."""

    log: str
    position: int
    tasks: list[TaskRow]


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a task's timeline."""

    position: int
    version: int
    time: datetime | str  # a time no date can show (a damaged record's): its seconds, as text
    type: str
    actor: str
    fields: dict[str, Any]


class ShowReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward show TASK --json``."""

    log: str
    task: TaskRow
    view: dict[str, Any]  # every field of the TaskView, defaults included
    events: list[EventRow]
    damage: str = ""  # why its history cannot be trusted; its events are then shown unchecked
    messages: list[EventRow] = []  # the messages sent to it (its inbox), read or not
    inbox_damage: str = ""  # why its inbox cannot be trusted; its messages are then unchecked


class QueueRow(msgspec.Struct, frozen=True, kw_only=True):
    """One queued task, in queue order (``rank`` 1 runs next)."""

    rank: int
    task_id: str
    session: str
    name: str
    priority: str
    position: int


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward replay --to POSITION --json``."""

    log: str
    requested: int
    position: int
    head: int
    time: datetime | None
    checkpoint: int | None
    counts: dict[str, int]
    queue: list[QueueRow]
    tasks: list[TaskRow]
    sessions: list[SessionRow]


class DiagramReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward diagram LIFECYCLE --json``."""

    lifecycle: str
    mermaid: str


def moment(t: float) -> datetime:
    """A time in seconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


def emit_json(value: object) -> None:
    """Print a report to stdout as indented JSON."""
    sys.stdout.write(json_text(value))


def json_text(value: object) -> str:
    """A report as indented JSON, one trailing newline."""
    return msgspec.json.format(msgspec.json.encode(value)).decode() + "\n"


def count_states(views: Sequence[TaskView]) -> dict[str, int]:
    """How many tasks are in each state, every state of the task lifecycle listed."""
    counts = dict.fromkeys(TASK.states, 0)
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
    return counts


def task_row(view: TaskView) -> TaskRow:
    """A task's row."""
    return TaskRow(
        task_id=view.task_id,
        session=view.session,
        name=view.name,
        key=view.key,
        state=view.state,
        priority=view.priority,
        attempt=view.attempt,
        steps=view.steps,
        progress=round(view.progress, 4),
        error=view.error,
        submitted=moment(view.submitted_at),
        position=view.order,
        damage=view.damage,
        unknown_events=view.unknown_events,
    )


def session_rows(projections: Projections) -> list[SessionRow]:
    """Every session's row, in the order they started, with its tasks by state."""
    tasks = list(projections.tasks.tasks.values())
    rows = []
    for session in sorted(projections.sessions.sessions.values(), key=lambda s: s.started_at):
        degraded = projections.degradation.view(session.name)
        rows.append(
            SessionRow(
                name=session.name,
                state=session.state,
                started=moment(session.started_at),
                updated=moment(session.updated_at),
                openings=session.openings,
                host=session.host,
                pid=session.pid,
                tasks=count_states([t for t in tasks if t.session == session.name]),
                flow=projections.flow.state(session.name).value,
                degradation=degraded.level.value,
                quality_lost=degraded.quality_lost,
                errors_last_hour=projections.budget.window(
                    session.name, projections.time, 3600.0
                ).errors,
                approvals_waiting=len(projections.decisions.waiting(session.name)),
                damage=session.damage,
            )
        )
    return rows


def queue_rows(projections: Projections) -> list[QueueRow]:
    """The queued tasks of every session, in queue order."""
    return [
        QueueRow(
            rank=i,
            task_id=v.task_id,
            session=v.session,
            name=v.name,
            priority=v.priority,
            position=v.order,
        )
        for i, v in enumerate(projections.tasks.queued(), 1)
    ]
