"""``onward approvals``, ``onward approve ID`` and ``onward deny ID``: humans answer the engine.

``approvals`` lists the approval requests waiting for an answer. ``approve`` and ``deny`` append
the answer (one ``ApprovalGranted`` or ``ApprovalDenied``) to the waiting task's stream; the
engine running that session, in any process, runs the task again and acts on it. Neither
creates a log.
"""

from __future__ import annotations

import argparse

from onward.cli.commands import fold, open_existing
from onward.cli.healing import _actor
from onward.cli.reports import ApprovalsReport, emit_json
from onward.cli.table import clip, iso, printable, table
from onward.events import Context, UsageError
from onward.events.redaction import redact_for_any_log
from onward.judgement.approvals import Approval, answer, pending

__all__ = ["add_answer_arguments", "cmd_approvals", "cmd_approve", "cmd_deny"]


def cmd_approvals(args: argparse.Namespace) -> int:
    """List the approval requests waiting for a human, oldest first."""
    with open_existing(args.db) as log:
        host = fold(log)
        waiting = pending(host, args.session)
    if args.json:
        emit_json(
            ApprovalsReport(log=log.url, position=host.projections.position, approvals=waiting)
        )
        return 0
    if not waiting:
        print("no approval waits for an answer")
        return 0
    rows = [
        (
            a.decision_id[:12],
            a.session,
            a.task_id[:12],
            a.action or "-",
            a.impact or "-",
            "-" if a.confidence is None else f"{a.confidence:.2f}",
            iso(a.requested_at),
            "deferred" if a.deferred else "",
            clip(a.question, 60),
        )
        for a in waiting
    ]
    headers = ("ID", "SESSION", "TASK", "ACTION", "IMPACT", "SCORE", "ASKED", "", "QUESTION")
    print(table(headers, rows))
    print("\nanswer with `onward approve ID [--note TEXT]` or `onward deny ID [--note TEXT]`")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve a waiting request: its task runs again and acts."""
    return _answer(args, granted=True)


def cmd_deny(args: argparse.Namespace) -> int:
    """Refuse a waiting request: its step fails with ``ActionDenied``."""
    return _answer(args, granted=False)


def _answer(args: argparse.Namespace, *, granted: bool) -> int:
    if args.db.lower().startswith("memory:"):
        raise UsageError("a memory:// log is new on every open: no approval waits in it")
    by = args.by or _actor()
    with open_existing(args.db) as log:
        host = fold(log)
        request = answer(
            log,
            host,
            args.id,
            granted=granted,
            by=by,
            note=args.note,
            context=Context(actor=by),
        )
    approval = Approval.of(request, host.projections)
    if args.json:
        emit_json({"answer": "approved" if granted else "denied", "by": by, "request": approval})
        return 0
    verb = "approved" if granted else "denied"
    what = f"action {approval.action!r}" if approval.action else "the request"
    session = printable(approval.session)
    print(f"{verb}: {what} of task {approval.task_id} (session {session})")
    if args.note:
        print(f"note: {printable(redact_for_any_log(args.note))}")
    print("the engine running that session picks the answer up at its next look")
    return 0


def add_answer_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``approve`` and ``deny``."""
    parser.add_argument(
        "id", metavar="ID", help="the approval's id, or a unique prefix (`onward approvals`)"
    )
    parser.add_argument("--note", default="", metavar="TEXT", help="why, for the audit")
    parser.add_argument("--by", default="", metavar="NAME", help="who answers (default: you)")
