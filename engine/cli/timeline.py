"""A task's timeline, as ``onward show`` prints it: every event of its stream, and its view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from onward.cli.reports import EventRow, moment
from onward.cli.table import clip, iso, printable, table
from onward.core.errors import TaskNotFound
from onward.events import Recorded, UnknownEvent
from onward.projections import Projections, TaskView

__all__ = ["event_rows", "find_task", "timeline_table", "view_lines"]

#: Event fields that hold a time in seconds since the epoch.
_TIME_FIELDS = frozenset({"lease_until", "deadline", "until"})
#: View fields that hold a time in seconds since the epoch.
_VIEW_TIMES = frozenset({"submitted_at", "updated_at", "lease_until", "waiting_until", "deadline"})


def find_task(projections: Projections, wanted: str, url: str) -> TaskView:
    """A task by its id or a unique prefix of it.

    Raises:
        TaskNotFound: no task, or several, match.
    """
    tasks = projections.tasks.tasks
    if wanted in tasks:
        return tasks[wanted]
    found = [v for k, v in tasks.items() if wanted and k.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if found:
        ids = ", ".join(sorted(v.task_id for v in found)[:5])
        raise TaskNotFound(f"{len(found)} tasks in {url} start with {wanted!r}: {ids}")
    raise TaskNotFound(f"no task {wanted!r} in {url}")


def _type_of(r: Recorded) -> str:
    event = r.event
    if isinstance(event, UnknownEvent):
        return event.type
    tag = type(event).__struct_config__.tag
    return tag if isinstance(tag, str) else type(event).__name__


def _fields(event: object) -> dict[str, Any]:
    if isinstance(event, UnknownEvent):
        return dict(event.data)
    value = msgspec.to_builtins(event)
    assert isinstance(value, dict)
    value.pop("type", None)
    return value


def _details(event: object) -> str:
    """The fields of an event that differ from their defaults, as ``key=value``, clipped."""
    if isinstance(event, UnknownEvent):
        return "(unknown to this onward) " + clip(msgspec.json.encode(event.data).decode(), 100)
    assert isinstance(event, msgspec.Struct)
    parts = []
    for info in msgspec.structs.fields(event):
        value = getattr(event, info.name)
        if info.default is not msgspec.NODEFAULT and value == info.default:
            continue
        if info.default_factory is not msgspec.NODEFAULT and value == info.default_factory():
            continue
        if info.name in _TIME_FIELDS and isinstance(value, int | float):
            text = iso(value, "milliseconds")
        elif info.name == "duration" and isinstance(value, float):
            text = f"{value * 1000:.1f}ms"
        elif isinstance(value, str):
            text = value
        else:
            text = msgspec.json.encode(value).decode()
        parts.append(f"{info.name}={clip(text, 60)}")
    return clip(" ".join(parts), 140)


def event_rows(history: Sequence[Recorded]) -> list[EventRow]:
    """A stream's events as rows, every field kept."""
    return [
        EventRow(
            position=r.position,
            version=r.version,
            time=_when(r.meta.time),
            type=_type_of(r),
            actor=r.meta.actor,
            fields=_fields(r.event),
        )
        for r in history
    ]


def _when(t: float) -> datetime | str:
    """A record's time as a date, or as the text :func:`iso` gives a time no date can show
    (a damaged or foreign record's: ``1e+300s after 1970 (no date)``)."""
    try:
        return moment(t)
    except (ValueError, OverflowError, OSError):
        return iso(t, "microseconds")


def timeline_table(history: Sequence[Recorded]) -> str:
    """A stream's events as a table, one line each, with the fields that are not defaults."""
    return table(
        ["POS", "VER", "TIME", "TYPE", "DETAILS"],
        [
            [
                r.position,
                r.version,
                iso(r.meta.time, "milliseconds"),
                _type_of(r),
                _details(r.event),
            ]
            for r in history
        ],
    )


def view_lines(view: TaskView) -> list[str]:
    """A task's view, one ``field  value`` line per field (times as ISO-8601, empty as ``-``)."""
    fields = msgspec.structs.asdict(view)
    width = max(len(k) for k in fields)
    lines = []
    for key, value in fields.items():
        text = "-" if value in ("", None, []) else str(value)
        if key in _VIEW_TIMES and value:
            text = iso(value, "milliseconds")
        elif key == "progress":
            text = f"{value:.0%}"
        lines.append(f"{key.ljust(width)}  {printable(text)}")
    return lines
