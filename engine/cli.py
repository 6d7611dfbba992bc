"""The ``onward`` command line: read, check and replay any log without the user's code.

Every log command takes ``--db`` (a file path or a log URL) and ``--json``. The read commands
fold the log with :class:`projections.CatchUp` and never append: opening an
:class:`~engine.Engine` would record a ``SessionResumed``, so they do not. A log file that does
not exist is reported, never created.

::

    onward sessions                    the sessions: state, start, openings, tasks by state
    onward tasks [--session S] [--state X]
    onward show TASK                   a task's timeline (every event of its stream) and view
    onward replay --to POSITION        every task and the queue as they were at that position
    onward verify                      checksums and hash chains; exit 1 on damage
    onward diagram task|session|breaker
    onward demo                        a real session over the standard library, with a crash

Exit status: 0 done, 1 the log is damaged (``verify``) or the demo failed, 2 a bad argument,
a missing log, an unknown task, or a log that cannot be read.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import msgspec

from engine.errors import TaskNotFound
from engine.machines import LIFECYCLES, diagram
from events import (
    BackendError,
    EventLog,
    OnwardError,
    Recorded,
    UnknownEvent,
    UsageError,
    open_log,
)
from projections import TASK, CatchUp, Projections, TaskView, task_stream

__all__ = ["build_parser", "main"]

DEFAULT_DB = "onward.db"
#: The table the SQLite backend keeps events in (eventsourcing's application recorder).
_LOG_TABLE = "stored_events"

# -- the JSON shapes (stable keys: msgspec encodes fields in declaration order) ---------------


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One session, as ``onward sessions --json`` prints it."""

    name: str
    state: str
    started: datetime
    updated: datetime
    openings: int
    host: str
    pid: int
    tasks: dict[str, int]


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


class TasksReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward tasks --json``."""

    log: str
    position: int
    tasks: list[TaskRow]


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """One event of a task's timeline."""

    position: int
    version: int
    time: datetime
    type: str
    actor: str
    fields: dict[str, Any]


class ShowReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward show TASK --json``."""

    log: str
    task: TaskRow
    view: TaskView
    events: list[EventRow]


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


# -- helpers -----------------------------------------------------------------------------------


def _url(db: str) -> str:
    return db if "://" in db else f"sqlite:///{db}"


def _sqlite_path(url: str) -> str | None:
    """The file an SQLite URL names (None for other backends)."""
    if not url.lower().startswith("sqlite:"):
        return None
    path = urlsplit(url).path
    return unquote(path[1:] if path.startswith("/") else path)


def sqlite_tables(path: str) -> set[str] | None:
    """The tables of an SQLite file, read without changing it (None: not an SQLite file).

    Raises:
        BackendError: the file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return None
        uri = f"file:{quote(path)}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except (OSError, sqlite3.Error) as exc:
        raise BackendError(f"cannot read {path}: {exc}") from exc
    return {str(r[0]) for r in rows}


def _open(db: str) -> EventLog:
    """Open an existing log; a missing SQLite log is an error, never created.

    The SQLite backend creates its file and tables when they are missing, so the file is
    checked first (read-only): it must exist and hold the log's table.

    Raises:
        UsageError: no log at that path.
        BackendError: the file cannot be read.
    """
    url = _url(db)
    path = _sqlite_path(url)
    if path is not None:
        shown = db if "://" not in db else path
        if not os.path.isfile(path):
            raise UsageError(f"no log at {shown}")
        tables = sqlite_tables(path)
        if tables is None:
            raise UsageError(f"no log at {shown} (not an SQLite database)")
        if _LOG_TABLE not in tables:
            raise UsageError(f"no log at {shown} (an SQLite database without an onward log)")
    return open_log(url)


def _fold(log: EventLog, *, upto: int | None = None, use_checkpoint: bool = True) -> CatchUp:
    host = CatchUp(log, upto=upto, checkpoint_every=0)
    host.open(use_checkpoint=use_checkpoint)
    return host


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def iso(t: float, timespec: str = "seconds") -> str:
    """A time in seconds since the epoch as ISO-8601 UTC (``2024-05-01T12:00:00Z``)."""
    return _when(t).isoformat(timespec=timespec).replace("+00:00", "Z")


def _emit_json(value: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "") -> str:
    """Rows as an aligned plain-text table; numbers align right, text left."""
    cells = [[str(c) for c in row] for row in rows]
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


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _counts(views: Sequence[TaskView]) -> dict[str, int]:
    counts = dict.fromkeys(TASK.states, 0)
    for view in views:
        counts[view.state] = counts.get(view.state, 0) + 1
    return counts


def _by_state(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {n}" for state, n in counts.items() if n) or "-"


def _task_row(view: TaskView) -> TaskRow:
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
        submitted=_when(view.submitted_at),
        position=view.order,
    )


def _session_rows(projections: Projections) -> list[SessionRow]:
    tasks = list(projections.tasks.tasks.values())
    rows = []
    for session in sorted(projections.sessions.sessions.values(), key=lambda s: s.started_at):
        rows.append(
            SessionRow(
                name=session.name,
                state=session.state,
                started=_when(session.started_at),
                updated=_when(session.updated_at),
                openings=session.openings,
                host=session.host,
                pid=session.pid,
                tasks=_counts([t for t in tasks if t.session == session.name]),
            )
        )
    return rows


def _tasks_table(rows: Sequence[TaskRow], *, indent: str = "") -> str:
    keyed = any(r.key for r in rows)  # the KEY column only when some task has one
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
                _clip(r.name, 40),
                *([_clip(r.key or "-", 48)] if keyed else []),
                r.state,
                r.priority,
                r.attempt,
                r.steps,
                f"{r.progress:.0%}",
                _clip(r.error, 60),
            ]
            for r in rows
        ],
        indent=indent,
    )


def _sessions_table(rows: Sequence[SessionRow], *, indent: str = "") -> str:
    return table(
        ["SESSION", "STATE", "STARTED", "UPDATED", "OPENINGS", "TASKS", "BY STATE"],
        [
            [
                r.name,
                r.state,
                iso(r.started.timestamp()),
                iso(r.updated.timestamp()),
                r.openings,
                sum(r.tasks.values()),
                _by_state(r.tasks),
            ]
            for r in rows
        ],
        indent=indent,
    )


def _find_task(projections: Projections, wanted: str, url: str) -> TaskView:
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


_TIME_FIELDS = frozenset({"lease_until", "deadline", "until"})
_VIEW_TIMES = frozenset({"submitted_at", "updated_at", "lease_until", "waiting_until", "deadline"})


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
        return "(unknown to this onward) " + _clip(msgspec.json.encode(event.data).decode(), 100)
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
        parts.append(f"{info.name}={_clip(text, 60)}")
    return _clip(" ".join(parts), 140)


def _type_of(r: Recorded) -> str:
    event = r.event
    if isinstance(event, UnknownEvent):
        return event.type
    tag = type(event).__struct_config__.tag
    return tag if isinstance(tag, str) else type(event).__name__


# -- the commands ------------------------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    """List the sessions: state, start, openings and their tasks by state."""
    with _open(args.db) as log:
        projections = _fold(log).projections
        rows = _session_rows(projections)
        if args.json:
            _emit_json(SessionsReport(log=log.url, position=projections.position, sessions=rows))
        elif not rows:
            print(f"no sessions in {log.url}")
        else:
            print(_sessions_table(rows))
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """List the tasks in submission order (queued ones in queue order with ``--state queued``)."""
    with _open(args.db) as log:
        projections = _fold(log).projections
        tasks = projections.tasks
        if args.state == "queued":
            views = list(tasks.queued(args.session))
        else:
            views = sorted(
                (
                    v
                    for v in tasks.tasks.values()
                    if (args.session is None or v.session == args.session)
                    and (args.state is None or v.state == args.state)
                ),
                key=lambda v: v.order,
            )
        rows = [_task_row(v) for v in views]
        if args.json:
            _emit_json(TasksReport(log=log.url, position=projections.position, tasks=rows))
        elif not rows:
            print(f"no tasks in {log.url}" + (" that match" if args.session or args.state else ""))
        else:
            print(_tasks_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a task's timeline (every event of its stream) and its view."""
    with _open(args.db) as log:
        projections = _fold(log).projections
        view = _find_task(projections, args.task, log.url)
        history = log.read_stream(task_stream(view.task_id))
        events = [
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
        if args.json:
            _emit_json(ShowReport(log=log.url, task=_task_row(view), view=view, events=events))
            return 0
        print(f"task {view.task_id}  {view.name}  ({view.state})  in {log.url}")
        print()
        print(
            table(
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
        )
        print()
        fields = msgspec.structs.asdict(view)
        width = max(len(k) for k in fields)
        for key, value in fields.items():
            text = "-" if value in ("", None, []) else str(value)
            if key in _VIEW_TIMES and value:
                text = iso(value, "milliseconds")
            elif key == "progress":
                text = f"{value:.0%}"
            print(f"{key.ljust(width)}  {text}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Fold the log up to a position and print every task and the queue as they were then."""
    if args.to < 0:
        raise UsageError(f"--to must be a position >= 0, got {args.to}")
    with _open(args.db) as log:
        head = log.head()
        host = _fold(log, upto=args.to, use_checkpoint=not args.no_checkpoint)
        projections = host.projections
        position = projections.position
        when = None
        if position:
            for r in log.read(after=position - 1, upto=position):
                when = _when(r.meta.time)
        views = sorted(projections.tasks.tasks.values(), key=lambda v: v.order)
        queue = [
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
        report = ReplayReport(
            log=log.url,
            requested=args.to,
            position=position,
            head=head,
            time=when,
            checkpoint=host.loaded_checkpoint,
            counts=_counts(views),
            queue=queue,
            tasks=[_task_row(v) for v in views],
            sessions=_session_rows(projections),
        )
    if args.json:
        _emit_json(report)
        return 0
    at = f" ({iso(when.timestamp(), 'milliseconds')})" if when else ""
    print(f"{report.log} replayed to position {position}{at}; the log's head is {head}")
    if report.checkpoint is not None:
        print(f"(from the checkpoint at {report.checkpoint}, then the tail)")
    print()
    if report.sessions:
        print("sessions:")
        print(_sessions_table(report.sessions, indent="  "))
        print()
    print(f"tasks by state: {_by_state(report.counts)}")
    print()
    print(f"queue ({len(queue)}, first runs next):")
    if queue:
        print(
            table(
                ["#", "TASK", "SESSION", "NAME", "PRIORITY", "SUBMITTED AT"],
                [
                    [q.rank, q.task_id, q.session, _clip(q.name, 40), q.priority, q.position]
                    for q in queue
                ],
                indent="  ",
            )
        )
    print()
    print(f"tasks ({len(report.tasks)}):")
    if report.tasks:
        print(_tasks_table(report.tasks, indent="  "))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every checksum and hash chain; exit 1 on damage."""
    with _open(args.db) as log:
        report = log.verify()
    if args.json:
        _emit_json(report)
    elif report.ok:
        print(f"ok: {report.events} events in {report.streams} streams, head {report.head}")
    else:
        where = "a torn tail (the end of the log)" if report.torn_tail else "the middle of the log"
        print(f"DAMAGED: {len(report.problems)} damaged records in {where}")
        for problem in report.problems:
            print(f"  {problem}")
    return 0 if report.ok else 1


def cmd_diagram(args: argparse.Namespace) -> int:
    """Print a lifecycle as a Mermaid state diagram."""
    text = diagram(args.lifecycle)
    if args.json:
        _emit_json(DiagramReport(lifecycle=args.lifecycle, mermaid=text))
    else:
        print(text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo (see :mod:`engine.demo`)."""
    from engine.demo import run_demo

    return run_demo(
        db=args.db,
        limit=args.limit,
        workers=args.workers,
        crash=not args.no_crash,
        yes=args.yes,
        as_json=args.json,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``onward`` command."""
    from engine.demo import DEFAULT_DB as DEMO_DB
    from engine.demo import DEFAULT_LIMIT

    parser = argparse.ArgumentParser(
        prog="onward",
        description="Inspect, verify and replay onward event logs, without your code.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        db: str | None = DEFAULT_DB,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if db is not None:
            p.add_argument("--db", default=db, help=f"log file or URL (default {db})")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=handler)
        return p

    command("sessions", cmd_sessions, "list the sessions: state, start, openings, tasks by state")

    tasks = command(
        "tasks",
        cmd_tasks,
        "list the tasks in submission order (with --state queued: in queue order)",
    )
    tasks.add_argument("--session", help="only this session's tasks")
    tasks.add_argument("--state", choices=TASK.states, help="only tasks in this state")

    show = command("show", cmd_show, "print a task's timeline (every event) and its state")
    show.add_argument("task", metavar="TASK", help="the task id (or a unique prefix of it)")

    replay = command(
        "replay",
        cmd_replay,
        "fold the log up to a position: every task and the queue as they were then",
    )
    replay.add_argument(
        "--to", type=int, required=True, metavar="POSITION", help="the last position to fold"
    )
    replay.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="replay from the first event, ignoring any saved checkpoint",
    )

    command("verify", cmd_verify, "check every checksum and hash chain; exit 1 on damage")

    diagram_ = command(
        "diagram", cmd_diagram, "print a lifecycle as a Mermaid state diagram", db=None
    )
    diagram_.add_argument("lifecycle", choices=sorted(LIFECYCLES), help="which lifecycle")

    demo = command(
        "demo",
        cmd_demo,
        "survey every .py file of this Python's standard library and site-packages as durable "
        "tasks, kill the worker with SIGKILL part-way, resume it by replay, and report",
        db=DEMO_DB,
    )
    demo.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"survey at most N files, spread evenly over all of them (default {DEFAULT_LIMIT}, "
        "about a minute on 2 cores; 0 for every file)",
    )
    demo.add_argument(
        "--workers", type=int, default=1, metavar="N", help="tasks run at once (default 1)"
    )
    demo.add_argument("--no-crash", action="store_true", help="run without killing the worker")
    demo.add_argument("--yes", action="store_true", help="replace --db without asking if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onward`` command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except OnwardError as exc:
        print(f"onward {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
