"""Plain-text tables for the terminal: aligned columns, ISO-8601 times, clipped text.

Text read from a log (a session's or a task's name, an error) may hold any character: every
cell and clipped text is made :func:`printable`, so that a line break cannot add a row and an
escape sequence cannot drive the reader's terminal. JSON output keeps the values exact.
"""

from __future__ import annotations

from collections.abc import Sequence

from onward.cli.reports import QueueRow, SessionRow, TaskRow, moment
from onward.core.display import printable, printable_json

__all__ = [
    "by_state",
    "clip",
    "iso",
    "printable",
    "printable_json",
    "queue_table",
    "sessions_table",
    "table",
    "tasks_table",
]


def iso(t: float, timespec: str = "seconds") -> str:
    """A time in seconds since the epoch as ISO-8601 UTC (``2024-05-01T12:00:00Z``); one a
    date cannot show (a deadline past the year 9999) as its seconds."""
    try:
        return moment(t).isoformat(timespec=timespec).replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return f"{t:.6g}s after 1970 (no date)"


def clip(text: str, width: int) -> str:
    """``text`` on one line (runs of whitespace made one space, other control characters
    escaped), cut to ``width`` with ``...``."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 3] + "..."


def by_state(counts: dict[str, int]) -> str:
    """Task counts as ``queued 1, failed 2`` (states with none left out; ``-`` when empty)."""
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    """Rows as an aligned plain-text table; numbers align right, text left."""
    cells = [[printable(str(c)) for c in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | float) for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if numeric[i] else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return (indent + "  ".join(parts)).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def tasks_table(rows: Sequence[TaskRow], *, indent: str = "") -> str:
    """Tasks as a table (the KEY column only when some task has a key)."""
    keyed = any(r.key for r in rows)
    headers = ["TASK", "SESSION", "NAME", "KEY", "STATE", "PRIORITY", "ATTEMPT", "STEPS"]
    headers += ["PROGRESS", "ERROR"]
    if not keyed:
        headers.remove("KEY")
    return table(
        headers,
        [
            [
                r.task_id,
                r.session,
                clip(r.name, 40),
                *([clip(r.key or "-", 48)] if keyed else []),
                r.state,
                r.priority,
                r.attempt,
                r.steps,
                f"{r.progress:.0%}",
                clip(r.error or r.damage, 60),
            ]
            for r in rows
        ],
        indent=indent,
    )


def sessions_table(rows: Sequence[SessionRow], *, indent: str = "") -> str:
    """Sessions as a table, with their tasks by state."""
    return table(
        [
            "SESSION",
            "STATE",
            "STARTED",
            "UPDATED",
            "OPENINGS",
            "FLOW",
            "LEVEL",
            "ERRORS/H",
            "ASKING",
            "TASKS",
            "BY STATE",
        ],
        [
            [
                r.name,
                r.state,
                iso(r.started.timestamp()),
                iso(r.updated.timestamp()),
                r.openings,
                r.flow,
                r.degradation,
                r.errors_last_hour,
                r.approvals_waiting,
                sum(r.tasks.values()),
                by_state(r.tasks),
            ]
            for r in rows
        ],
        indent=indent,
    )


def queue_table(rows: Sequence[QueueRow], *, indent: str = "") -> str:
    """The queue as a table, the task that runs next first."""
    return table(
        ["#", "TASK", "SESSION", "NAME", "PRIORITY", "SUBMITTED AT"],
        [[q.rank, q.task_id, q.session, clip(q.name, 40), q.priority, q.position] for q in rows],
        indent=indent,
    )
