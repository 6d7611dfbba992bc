"""The ``onward`` command line: read, check and replay any log without the user's code.

Every log command takes ``--db`` (a file path or a log URL) and ``--json``. The read commands
never append and never create a log (see :mod:`onward.cli.commands`).

::

    onward sessions                    the sessions: state, start, openings, tasks by state
    onward tasks [--session S] [--state X]
    onward show TASK                   a task's timeline (every event of its stream) and view
    onward replay --to POSITION        every task and the queue as they were at that position
    onward verify                      checksums, hash chains, head record, lifecycles; exit 1 on
                                       damage
    onward quarantine TASK [--reason TEXT]  set a damaged or stuck task aside
    onward diagram task|session|breaker
    onward demo                        a real session over the standard library, with a crash
    onward errors [--kind K]           the error-learning DB: one row per error signature
    onward errors SIGNATURE            one signature: fixes tried, learned, retries, history
    onward learn SIGNATURE FIX         a fix worked for this error: the engine tries it first
    onward breakers                    each dependency's circuit breaker and its transitions
    onward fixes                       the built-in fixes (no log needed)
    onward why ID                      a decision (or a task's, or at a position) and its causes
    onward rules [--rules FILE]        the decision rules in force, in precedence order
    onward approvals [--session S]     the approval requests waiting for a human
    onward approve ID [--note TEXT]    approve one: its task runs again and acts
    onward deny ID [--note TEXT]       refuse one: its action fails with ActionDenied
    onward init                        create a log's tables ahead of its workers
    onward export [--session S] > session.jsonl
                                       every record with its envelope, one JSON line each
    onward import FILE                 load an export into the log at --db (checked first;
                                       idempotent)
    onward worker MODULE:ENGINE [--workers N] [--session S]
                                       serve a session's tasks until SIGTERM or Ctrl-C
    onward report [--session S] -o report.html
                                       one self-contained HTML page of a session
    onward retry|fork|abandon|send TASK ...
                                       steer a task without its code (see onward.cli.steering)
    onward to-test TASK --engine MODULE:ENGINE > test_task.py
                                       a recorded task as a regression test that replays it
    onward simulate --hours 8 --seed S [--profile FILE]
                                       hours of an agent's work on a virtual clock, with
                                       faults and kill -9, and the figures they give

``import`` writes records as they are in the file (and creates its log when missing).
``learn``, ``approve``, ``deny``, ``quarantine``, ``retry``, ``fork``, ``abandon`` and ``send``
are the only commands that append (a ``FixLearned``, an ``ApprovalGranted`` or
``ApprovalDenied``, a ``TaskQuarantined``, a ``TaskRetried`` with its ``DecisionMade``, the
fork's ``TaskSubmitted``, a ``TaskFailed`` or a ``MessageSent``), and only to a log that exists.
``export -o`` and ``report -o`` refuse to write over the log they read or any SQLite database.

Exit status: 0 done, 1 the log is damaged (``verify``) or the demo failed, 2 a bad argument,
a missing log, an unknown task, decision, signature or fix, a log that cannot be read, or an
output that cannot be written (a full disk).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import NoReturn, Protocol

from onward.cli.approvals import add_answer_arguments, cmd_approvals, cmd_approve, cmd_deny
from onward.cli.commands import (
    cmd_diagram,
    cmd_replay,
    cmd_sessions,
    cmd_show,
    cmd_tasks,
    cmd_verify,
    cmd_why,
    tell_damage,
)
from onward.cli.error_report import KINDS
from onward.cli.healing import cmd_breakers, cmd_errors, cmd_fixes, cmd_learn
from onward.cli.quarantine import cmd_quarantine
from onward.cli.report import add_report_arguments, cmd_report
from onward.cli.rules import add_rules_arguments, cmd_rules
from onward.cli.steering import add_steering_commands
from onward.cli.table import printable
from onward.cli.to_test import add_to_test_arguments, cmd_to_test
from onward.cli.transfer import add_transfer_commands
from onward.cli.worker import add_worker_arguments, cmd_init, cmd_worker
from onward.core.machines import LIFECYCLES
from onward.events import LogDamaged, OnwardError
from onward.events.redaction import redact_for_any_log
from onward.projections import TASK

__all__ = ["COMMANDS_GROUP", "AddCommand", "build_parser", "main"]

DEFAULT_DB = "onward.db"

#: The entry-point group of commands that other packages add (the demo is one): each entry
#: point names a callable that is given :data:`AddCommand` and adds its subcommands with it.
COMMANDS_GROUP = "onward.commands"


class AddCommand(Protocol):
    """Adds a subcommand: its name, its handler, its help, and the ``--db`` default (None for
    a command that reads no log); returns its parser, for more arguments."""

    def __call__(
        self,
        name: str,
        handler: Callable[[argparse.Namespace], int],
        help_: str,
        *,
        db: str | None = ...,
    ) -> argparse.ArgumentParser: ...


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose errors (which echo what was typed: ``--to token=...``) show
    no secret, as onward's own errors do not."""

    def error(self, message: str) -> NoReturn:
        super().error(redact_for_any_log(message))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``onward`` command."""
    parser = _Parser(
        prog="onward",
        description="Inspect, verify and replay onward event logs, without your code, and "
        "teach the engine which fix works for an error.",
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
        if db == DEFAULT_DB:
            # The log the engine opens by default: ONWARD_DB, as Engine.open() reads it.
            p.add_argument(
                "--db",
                default=os.environ.get("ONWARD_DB") or db,
                help=f"log file or URL (default: $ONWARD_DB, else {db})",
            )
        elif db is not None:  # a log of the command's own (the demo's)
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
    tasks.add_argument(
        "--state",
        choices=(*TASK.states, "damaged", "unknown"),
        help="only tasks in this state",
    )

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

    command(
        "verify",
        cmd_verify,
        "check every checksum, hash chain and the head record, and replay every lifecycle; "
        "exit 1 on damage",
    )
    quarantine = command(
        "quarantine",
        cmd_quarantine,
        "set a damaged or stuck task aside for good, so that the rest of its session goes on "
        "(appends TaskQuarantined; never creates a log)",
    )
    quarantine.add_argument("task", metavar="TASK", help="the task id (or a unique prefix of it)")
    quarantine.add_argument("--reason", default="", metavar="TEXT", help="why, for the audit")
    quarantine.add_argument("--by", default="", metavar="NAME", help="who (default: you)")

    diagram_ = command(
        "diagram", cmd_diagram, "print a lifecycle as a Mermaid state diagram", db=None
    )
    diagram_.add_argument("lifecycle", choices=sorted(LIFECYCLES), help="which lifecycle")

    errors = command(
        "errors",
        cmd_errors,
        "list the error-learning DB (one row per error signature, most occurrences first), "
        "or show one signature whole",
    )
    errors.add_argument(
        "signature",
        metavar="SIGNATURE",
        nargs="?",
        help="show this signature (its id or a unique prefix of it)",
    )
    errors.add_argument("--kind", choices=KINDS, help="only signatures of this kind")

    learn = command(
        "learn",
        cmd_learn,
        "record that a fix worked for an error: from now on that error gets that fix first "
        "(appends one FixLearned to the stream 'learning'; never creates a log)",
    )
    learn.add_argument(
        "signature", metavar="SIGNATURE", help="the error signature (its id or a unique prefix)"
    )
    learn.add_argument("fix", metavar="FIX", help="the fix's name (`onward fixes` lists them)")
    learn.add_argument("--note", default="", metavar="TEXT", help="why, for the audit")
    learn.add_argument(
        "--force",
        action="store_true",
        help="accept a whole signature id this log has not seen yet",
    )
    learn.add_argument(
        "--custom",
        action="store_true",
        help="accept a fix that is not built in (one you register yourself)",
    )

    command(
        "breakers",
        cmd_breakers,
        "list each dependency's circuit breaker (state, failures, cool-down) and its transitions",
    )
    why = command(
        "why",
        cmd_why,
        "explain decisions: what was chosen, on what inputs, over which alternatives, and the "
        "chain of events that caused it",
    )
    why.add_argument(
        "id",
        metavar="ID",
        help="a decision id, a task id (every decision of that task) or a position (the last "
        "decision at or before it; @N when N also starts an id); ids may be unique prefixes",
    )
    command("fixes", cmd_fixes, "list the built-in fixes and what each is for", db=None)
    rules = command(
        "rules", cmd_rules, "list the decision rules in force, in precedence order", db=None
    )
    add_rules_arguments(rules)
    approvals = command(
        "approvals", cmd_approvals, "list the approval requests waiting for a human, oldest first"
    )
    approvals.add_argument("--session", help="only this session's requests")
    approve = command(
        "approve",
        cmd_approve,
        "approve a waiting request: its task runs again and acts (appends ApprovalGranted)",
    )
    add_answer_arguments(approve)
    deny = command(
        "deny",
        cmd_deny,
        "refuse a waiting request: its action fails with ActionDenied (appends ApprovalDenied)",
    )
    add_answer_arguments(deny)
    command(
        "init",
        cmd_init,
        "create a log's tables ahead of its workers (appends nothing; safe to run again)",
    )
    worker = command(
        "worker",
        cmd_worker,
        "serve a session's tasks until SIGTERM or Ctrl-C: import MODULE (where the tasks are "
        "registered) and run its ENGINE's worker service",
        db=None,
    )
    worker.add_argument(
        "--db", default=None, help="the log (sets ONWARD_DB; default: the one ENGINE opens)"
    )
    add_worker_arguments(worker)
    add_steering_commands(command)
    add_transfer_commands(command)
    report = command(
        "report",
        cmd_report,
        "write one self-contained HTML page of a session: timeline, error budget, breakers, "
        "degradation, flow, approvals, decisions and error learning",
    )
    add_report_arguments(report)
    to_test = command(
        "to-test",
        cmd_to_test,
        "print a pytest module that replays a recorded task against your code (> test_task.py)",
    )
    add_to_test_arguments(to_test)
    for plugin in entry_points(group=COMMANDS_GROUP):
        try:
            register = plugin.load()
            register(command)
        except Exception as exc:  # a broken plugin must not take the other commands down
            _say(f"onward: command plugin {plugin.name!r} failed to load: {exc}")
    return parser


def _say(message: str) -> None:
    """Print an error message on the standard error: its secrets redacted, as the log would
    not keep them, and each line printable, as it may quote the log or an input file (a name
    holding an escape sequence must not drive the terminal)."""
    lines = redact_for_any_log(message).split("\n")
    print("\n".join(printable(line) for line in lines), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onward`` command; returns its exit status."""
    for name in ("stdout", "stderr"):  # started with it closed (`>&-`): written to nowhere
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # Ctrl-C while the commands load
        return 130
    try:
        status: int = args.handler(args)
    except LogDamaged as exc:  # the database's own, or a record's: said in one line, with
        # what to do, by every command that reads a log
        db = getattr(args, "db", None)
        _say(f"onward {args.command}: {tell_damage(db, exc) if db else exc}")
        return 2
    except OnwardError as exc:  # a misuse, no log at --db (LogNotFound), an unreadable log
        # What the user typed may be echoed (a malformed JSON message, a DSN read as a path):
        # its secrets are not, as the log would not keep them.
        _say(f"onward {args.command}: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `onward tasks | head`: the reader left; say nothing more
        _drop_stdout()
        return 0
    except OSError as exc:  # a write that failed: a full disk, a quota, an I/O error
        reason = exc.strerror or str(exc)
        if exc.filename is not None:
            what = f"{exc.filename}: {reason}"
        else:
            what = f"cannot write {getattr(args, 'output', None) or 'the output'}: {reason}"
        _say(f"onward {args.command}: {what}")
        _drop_stdout()
        return 2
    try:
        sys.stdout.flush()  # the last of the output: its failure is told here, not at exit
    except BrokenPipeError:
        _drop_stdout()
    except OSError as exc:
        print(
            f"onward {args.command}: cannot write the standard output: {exc.strerror or exc}",
            file=sys.stderr,
        )
        _drop_stdout()
        return 2
    return status


def _drop_stdout() -> None:
    """Send what is left of the standard output to /dev/null, so that Python's flush at exit
    neither fails again nor prints a traceback."""
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file (captured, replaced): nothing is flushed at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
