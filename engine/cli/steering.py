"""Steering running work from the command line, without the tasks' code: ``onward retry``,
``fork``, ``abandon``, ``cancel``, ``reprioritise``, ``send``, ``get`` and ``resume`` (a paused
session); and what schedules and queue limits the log holds: ``onward schedules`` and
``onward limits``.

Each steering command appends what :class:`onward.Engine`'s method of the same name appends,
recorded as done by the person (``--by``, ``onward-cli:user@host`` by default), decided on the
caught-up log as an engine decides: an engine running the session, in any process, picks the
change up at its next look. None creates a log, and none opens the session (no
``SessionResumed``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import msgspec

from onward.cli.commands import fold, open_existing
from onward.cli.healing import _actor
from onward.cli.reports import emit_json, moment, task_row
from onward.cli.table import clip, printable, printable_json, table
from onward.cli.timeline import find_task
from onward.core.definitions import parse_priority
from onward.events import MAX_VALUE_DEPTH, EventLog, Priority, UsageError, encode_value
from onward.projections import LimitView, Projections, ScheduleView, TaskView
from onward.runtime.limits import Limits
from onward.runtime.registry import Registry
from onward.runtime.schedules import next_tick
from onward.runtime.session import Session
from onward.runtime.target import load_registry
from onward.runtime.tasks import Tasks
from onward.runtime.worker import worker_id

__all__ = [
    "add_steering_commands",
    "cmd_abandon",
    "cmd_cancel",
    "cmd_fork",
    "cmd_get",
    "cmd_limits",
    "cmd_reprioritise",
    "cmd_resume",
    "cmd_retry",
    "cmd_schedules",
    "cmd_send",
]


def _tasks_of(log: EventLog, session: str, by: str, registry: Registry | None = None) -> Tasks:
    """A session's tasks, steered from outside: caught up, not opened (nothing appended);
    ``registry``: the functions whose signatures arguments are checked against (none)."""
    outside = Session(
        log,
        session,
        clock=log.clock,
        sleep=time.sleep,
        lease=300.0,
        worker=by,
        checkpoint_every=0,
    )
    outside.host.open()
    return Tasks(outside, Registry() if registry is None else registry)


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(
            text,
            parse_constant=functools.partial(_not_json, what),
            parse_float=functools.partial(_finite, what),
            parse_int=functools.partial(_integer, what),
        )
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{what} must be JSON ({exc.msg} at column {exc.colno}): {text!r}"
        ) from None
    except RecursionError:  # far deeper than a stored value may be: refused as encoding would
        raise UsageError(f"{what} is nested deeper than {MAX_VALUE_DEPTH} levels") from None


def _from_stdin() -> str:
    """The JSON given on standard input (``-`` in its place on the command line).

    Raises:
        UsageError: it is not UTF-8.
    """
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the message on standard input is not UTF-8 (byte {exc.start} of {len(data)})"
        ) from None


def _not_json(what: str, constant: str) -> NoReturn:
    """Refuse what Python's json module takes and JSON has not (``NaN``, ``Infinity``)."""
    raise UsageError(f"{what} must be JSON: {constant} is not a JSON value (give a number)")


def _finite(what: str, number: str) -> float:
    """A JSON number as a float; one too large for a float (``1e999``) is refused, not read
    as infinity."""
    value = float(number)
    if not math.isfinite(value):
        raise UsageError(f"{what} must be JSON a float can hold: {number} is too large")
    return value


def _integer(what: str, digits: str) -> int:
    """A JSON integer; one longer than Python reads from text (4,300 digits by default) is
    refused with the limit, not with a traceback."""
    try:
        return int(digits)
    except ValueError:
        raise UsageError(
            f"{what} must be JSON onward can read: an integer of {len(digits.lstrip('-')):,} "
            f"digits is longer than {sys.get_int_max_str_digits():,} (give it as a string)"
        ) from None


def _writable(db: str) -> None:
    if db.lower().startswith("memory:"):
        raise UsageError("a memory:// log is new on every open: no task is in it")


def cmd_retry(args: argparse.Namespace) -> int:
    """Put a failed, cancelled or missed task back in the queue as a new attempt."""
    _writable(args.db)
    by = args.by or _actor()
    with open_existing(args.db) as log:
        view = find_task(fold(log).projections, args.task, log.url)
        was = view.state
        after = _tasks_of(log, view.session, by).retry(
            view.task_id, by=by, reason=args.reason, deadline=None
        )
    if args.json:
        emit_json({"retried": task_row(after), "was": was, "by": by})
        return 0
    print(f"retried: {_named(after)}, was {was}")
    print("its completed steps replay; it runs again from the step it stopped at")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    """Start a new task that takes a task's first steps as recorded and runs the rest afresh."""
    _writable(args.db)
    positional = None if args.args is None else _json_argument(args.args, "--args")
    named = None if args.kwargs is None else _json_argument(args.kwargs, "--kwargs")
    if positional is not None and not isinstance(positional, list):
        raise UsageError(f"--args must be a JSON array, got {args.args!r}")
    if named is not None and not isinstance(named, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {args.kwargs!r}")
    by = args.by or _actor()
    registry = Registry() if args.engine is None else load_registry(args.engine)
    with open_existing(args.db) as log:
        view = find_task(fold(log).projections, args.task, log.url)
        if args.engine is not None and not registry.knows(view.name):
            raise UsageError(
                f"{args.engine} registers no task {view.name!r} (task {view.task_id}): its "
                "signature is unknown there; name the engine that registers it"
            )
        # Registered there, the fork's arguments are bound to its signature before anything
        # is appended (Tasks.fork), as submit binds them.
        fork_id = _tasks_of(log, view.session, by, registry).fork(
            view.task_id, from_step=args.from_step, args=positional, kwargs=named
        )
    if args.json:
        emit_json({"fork": fork_id, "forked_from": view.task_id, "from_step": args.from_step})
        return 0
    print(f"forked: task {fork_id} from {view.task_id} (session {printable(view.session)})")
    print(f"its first {args.from_step} step(s) return {view.task_id}'s recorded outcomes")
    return 0


def cmd_abandon(args: argparse.Namespace) -> int:
    """Fail a task that waits, unregistered, for a function nobody has any more."""
    _writable(args.db)

    def abandon(tasks: Tasks, task_id: str, by: str) -> None:
        tasks.abandon(task_id, by=by, reason=args.reason)

    _was, after, by = _steer(args, abandon)
    if args.json:
        emit_json({"abandoned": task_row(after), "by": by})
        return 0
    print(f"abandoned: {_named(after)} failed")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a task that has not ended: a running one stops at its next step."""
    _writable(args.db)

    def cancel(tasks: Tasks, task_id: str, _by: str) -> None:
        tasks.cancel(task_id, args.reason)

    was, after, by = _steer(args, cancel)
    if args.json:
        emit_json({"cancelled": task_row(after), "was": was.state, "by": by})
        return 0
    print(f"cancelled: {_named(after)}, was {was.state}")
    if was.state == "running":
        print("its worker stops it at its next step; the step under way runs to its end")
    return 0


def cmd_reprioritise(args: argparse.Namespace) -> int:
    """Change the priority of a queued or waiting task."""
    _writable(args.db)
    priority = parse_priority(args.priority)  # refused before the log is opened

    def reprioritise(tasks: Tasks, task_id: str, _by: str) -> None:
        tasks.reprioritise(task_id, priority)

    was, after, by = _steer(args, reprioritise)
    if args.json:
        emit_json({"reprioritised": task_row(after), "was": was.priority, "by": by})
        return 0
    print(f"reprioritised: {_named(after)}, {was.priority} to {after.priority}")
    return 0


def _steer(
    args: argparse.Namespace, act: Callable[[Tasks, str, str], None]
) -> tuple[TaskView, TaskView, str]:
    """Find the task ``TASK`` names on the log at ``--db`` and act on it from outside, as
    ``--by`` (you by default): ``act(tasks, task_id, by)``.

    Returns:
        The task's view before and after, and who acted.
    """
    by = args.by or _actor()
    with open_existing(args.db) as log:
        was = find_task(fold(log).projections, args.task, log.url)
        tasks = _tasks_of(log, was.session, by)
        act(tasks, was.task_id, by)
        after = tasks.view(was.task_id)
    return was, after, by


def _named(view: TaskView) -> str:
    """A task as the steering commands name it: its id, function and session."""
    return f"task {view.task_id} ({printable(view.name)}, session {printable(view.session)})"


def cmd_send(args: argparse.Namespace) -> int:
    """Send a task a message; it takes it with ``engine.recv(TOPIC)``."""
    _writable(args.db)
    value = _json_argument(_from_stdin() if args.value == "-" else args.value, "the message")
    by = args.by or _actor()
    with open_existing(args.db) as log:
        view = find_task(fold(log).projections, args.task, log.url)
        place = _tasks_of(log, view.session, by).send(view.task_id, args.topic, value, sender=by)
    if args.json:
        emit_json({"sent": view.task_id, "topic": args.topic, "inbox_version": place, "by": by})
        return 0
    print(f"sent: {args.topic!r} to task {view.task_id} (message {place} of its inbox)")
    if view.waiting_topic == args.topic:
        print("it waits for this topic: it runs again at the next look of an engine")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Resume a paused session (the error budget paused it) with a fresh budget window: its
    workers take up work again at their next look."""
    _writable(args.db)
    by = args.by or _actor()
    with open_existing(args.db) as log:
        sessions = fold(log).projections.sessions.sessions
        view = sessions.get(args.session)
        if view is None:
            known = ", ".join(sorted(sessions)) or "none"
            raise UsageError(f"no session {args.session!r} in {log.url} (sessions: {known})")
        outside = _tasks_of(log, args.session, by).session
        resumed = outside.resume(args.reason or f"resumed by {by}")
    if args.json:
        emit_json({"session": args.session, "resumed": resumed, "by": by})
        return 0
    if resumed:
        print(f"resumed: session {printable(args.session)} (a fresh error budget window)")
    else:
        print(f"session {printable(args.session)} is not paused ({view.state}): nothing to do")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    """Print the last value a task published under a key (``engine.set_state``), as the log
    keeps it: JSON, the types JSON lacks tagged (``{"$tuple": [1, 2]}``, ``{"$float": "nan"}``,
    ``{"$bytes": ...}``), so that no value prints like another."""
    with open_existing(args.db) as log:
        view = find_task(fold(log).projections, args.task, log.url)
        try:
            value = _tasks_of(log, view.session, "onward-cli").state_of(view.task_id, args.key)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
    stored = encode_value(value, what=f"task {view.task_id}: {args.key!r}")
    if args.json:
        emit_json({"task": view.task_id, "key": args.key, "value": stored})
    else:
        print(printable_json(msgspec.json.format(msgspec.json.encode(stored), indent=2).decode()))
    return 0


class ScheduleRow(msgspec.Struct, frozen=True, kw_only=True):
    """One schedule, as ``onward schedules --json`` prints it."""

    session: str
    name: str
    task: str
    cron: str
    missed: str
    removed: bool
    last_tick: str | None
    next_tick: str | None
    runs: int
    skipped: int
    last_task: str


def _schedule_row(view: ScheduleView) -> ScheduleRow:
    upcoming = None if view.removed else next_tick(view)
    if upcoming == math.inf:
        upcoming = None  # it never fires again
    return ScheduleRow(
        session=view.session,
        name=view.name,
        task=view.task,
        cron=view.cron,
        missed=view.missed,
        removed=view.removed,
        last_tick=None if view.last_tick is None else moment(view.last_tick).isoformat(),
        next_tick=None if upcoming is None else moment(upcoming).isoformat(),
        runs=view.runs,
        skipped=view.skipped,
        last_task=view.last_task,
    )


def cmd_schedules(args: argparse.Namespace) -> int:
    """List the schedules: cron, policy, last and next tick, runs and skipped ticks."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        views = [
            v
            for v in sorted(
                projections.schedules.schedules.values(), key=lambda v: (v.session, v.name)
            )
            if args.session is None or v.session == args.session
        ]
    rows = [_schedule_row(v) for v in views]
    if args.json:
        emit_json({"log": log.url, "schedules": rows})
        return 0
    if not rows:
        print(f"no schedules in {log.url}")
        return 0
    print(
        table(
            [
                "SESSION",
                "SCHEDULE",
                "TASK",
                "CRON (UTC)",
                "MISSED",
                "LAST",
                "NEXT",
                "RUNS",
                "SKIPPED",
            ],
            [
                [
                    r.session,
                    clip(r.name, 32),
                    clip(r.task, 32),
                    r.cron,
                    r.missed,
                    _short(r.last_tick),
                    "removed" if r.removed else _short(r.next_tick),
                    r.runs,
                    r.skipped,
                ]
                for r in rows
            ],
        )
    )
    return 0


def _short(when: str | None) -> str:
    return "-" if when is None else when.replace("+00:00", "Z")


class LimitRow(msgspec.Struct, frozen=True, kw_only=True):
    """One queue limit, as ``onward limits --json`` prints it."""

    name: str
    concurrency: int | None
    rate: str
    in_use: int
    taken: int
    waiting: list[str]
    #: The permits that count (``task_id:index``).
    holders: list[str]
    #: Permits the log still holds that do not count: their worker is gone or their time ran
    #: out; each is given back when its task runs again.
    stale: list[str]


def _limit_row(view: LimitView, projections: Projections, now: float) -> LimitRow:
    waiting = sorted(
        task_id
        for task_id in projections.tasks.waiting
        if (waiter := projections.tasks.view(task_id)) is not None
        and waiter.waiting_limit == view.name
    )
    counting = Limits.counting(view, projections, now, asking=worker_id())
    return LimitRow(
        name=view.name,
        concurrency=view.concurrency,
        rate=view.rate,
        in_use=len(counting),
        taken=view.taken,
        waiting=waiting,
        holders=sorted(counting),
        stale=sorted(set(view.held) - set(counting)),
    )


def cmd_limits(args: argparse.Namespace) -> int:
    """List the queue limits: bounds, permits in use, taken, and the tasks waiting for one."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        now = log.clock()
        limits = projections.limits
        rows = [_limit_row(limits.view(name), projections, now) for name in sorted(limits.limits)]
    if args.json:
        emit_json({"log": log.url, "limits": rows})
        return 0
    if not rows:
        print(f"no queue limits in {log.url}")
        return 0
    print(
        table(
            ["LIMIT", "CONCURRENCY", "RATE", "IN USE", "TAKEN", "WAITING"],
            [
                [
                    r.name,
                    "-" if r.concurrency is None else str(r.concurrency),
                    r.rate or "-",
                    f"{r.in_use} (+{len(r.stale)} stale)" if r.stale else r.in_use,
                    r.taken,
                    f"{len(r.waiting)} waiting",
                ]
                for r in rows
            ],
        )
    )
    return 0


def add_steering_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the steering, schedule and limit commands with the parser's ``command`` helper."""
    retry = command(
        "retry",
        cmd_retry,
        "put a failed, cancelled or missed task back in the queue: its completed steps replay, "
        "it runs again from the step it stopped at (appends TaskRetried and the decision)",
    )
    _task_argument(retry)
    _audit_arguments(retry)

    fork = command(
        "fork",
        cmd_fork,
        "start a new task that takes a task's first N steps as recorded (their side effects "
        "are not done again) and runs the rest afresh",
    )
    _task_argument(fork)
    fork.add_argument(
        "--from-step",
        type=int,
        required=True,
        metavar="N",
        help="how many of its first steps to take as recorded",
    )
    fork.add_argument("--args", metavar="JSON", help="the new task's positional arguments")
    fork.add_argument("--kwargs", metavar="JSON", help="the new task's keyword arguments")
    fork.add_argument(
        "--engine",
        metavar="MODULE:ENGINE",
        help="where the task is registered, as for `onward worker`: --args and --kwargs that "
        "its signature does not take are refused before the fork is appended (the module is "
        "imported; the engines it opens with Engine.open open in memory, not on any log)",
    )
    _audit_arguments(fork, reason=False)

    abandon = command(
        "abandon",
        cmd_abandon,
        "fail a task that waits, unregistered, for a function no worker has any more",
    )
    _task_argument(abandon)
    _audit_arguments(abandon)

    cancel = command(
        "cancel",
        cmd_cancel,
        "cancel a task that has not ended: a running one stops at its next step (appends "
        "TaskCancelled; onward retry queues it again)",
    )
    _task_argument(cancel)
    _audit_arguments(cancel)

    reprioritise = command(
        "reprioritise",
        cmd_reprioritise,
        "change the priority of a queued or waiting task (appends TaskReprioritised)",
    )
    _task_argument(reprioritise)
    reprioritise.add_argument(
        "priority",
        metavar="PRIORITY",
        help=", ".join(p.value for p in Priority),
    )
    _audit_arguments(reprioritise, reason=False)

    send = command(
        "send",
        cmd_send,
        "send a task a message (it takes it with engine.recv(TOPIC)); appends MessageSent",
    )
    _task_argument(send)
    send.add_argument("topic", metavar="TOPIC", help="the message's topic")
    send.add_argument(
        "value",
        metavar="JSON",
        help="the message, as JSON; - reads it from standard input (one too long for a command)",
    )
    _audit_arguments(send, reason=False)

    resume = command(
        "resume",
        cmd_resume,
        "resume a paused session (its error budget paused it) with a fresh budget window; "
        "reopening a session does not resume it (appends SessionResumed)",
    )
    resume.add_argument("session", metavar="SESSION", help="the session")
    _audit_arguments(resume)

    get = command(
        "get", cmd_get, "print the last value a task published under KEY (engine.set_state)"
    )
    _task_argument(get)
    get.add_argument("key", metavar="KEY", help="the key")

    schedules = command(
        "schedules",
        cmd_schedules,
        "list the schedules: cron, missed-tick policy, last and next tick, runs and skips",
    )
    schedules.add_argument("--session", help="only this session's schedules")
    command(
        "limits",
        cmd_limits,
        "list the queue limits: bounds, permits in use, taken, tasks waiting for one",
    )


def _audit_arguments(parser: argparse.ArgumentParser, *, reason: bool = True) -> None:
    """``--reason`` (unless ``reason`` is False) and ``--by``: why and who, for the audit."""
    if reason:
        parser.add_argument("--reason", default="", metavar="TEXT", help="why, for the audit")
    parser.add_argument("--by", default="", metavar="NAME", help="who (default: you)")


def _task_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", metavar="TASK", help="the task id (or a unique prefix of it)")
