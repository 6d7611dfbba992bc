"""``onward quarantine TASK``: set a damaged or stuck task aside, so that its session goes on.

It appends one ``TaskQuarantined`` to the task's stream (after its last record, damaged or
not): the task never runs again, a parent waiting for it sees it end, and an engine running
that session, in any process, picks it up at its next look. It never creates a log.
"""

from __future__ import annotations

import argparse

from onward.cli.commands import fold, open_existing
from onward.cli.healing import _actor
from onward.cli.reports import emit_json, task_row
from onward.cli.table import printable
from onward.cli.timeline import find_task
from onward.events import Context, UsageError
from onward.runtime.tasks import quarantine

__all__ = ["cmd_quarantine"]


def cmd_quarantine(args: argparse.Namespace) -> int:
    """Set a task aside for good: one ``TaskQuarantined`` in its stream."""
    if args.db.lower().startswith("memory:"):
        raise UsageError("a memory:// log is new on every open: no task waits in it")
    by = args.by or _actor()
    with open_existing(args.db) as log:
        host = fold(log)
        view = find_task(host.projections, args.task, log.url)
        was = view.state
        after = quarantine(
            log,
            host,
            view.task_id,
            reason=args.reason,
            by=by,
            context=Context(session=view.session, actor=by, correlation_id=view.task_id),
        )
    if args.json:
        emit_json({"quarantined": task_row(after), "was": was, "by": by})
        return 0
    name, session = printable(after.name or "?"), printable(after.session)
    print(f"quarantined: task {after.task_id} ({name}, session {session})")
    print(f"it was {was}" + (f": {printable(after.damage)}" if after.damage else ""))
    print("it never runs again; the rest of its session goes on")
    return 0
