"""Checking a log whole: its records, and every lifecycle replayed over them.

:meth:`onward.events.EventLog.verify` checks what the records themselves can show (checksums,
each stream's chain, the head record). :func:`verify_log` also replays every lifecycle (task,
session, breaker, flow) from the first record, as the engine folds them, so that a log the
engine cannot fold as written is never reported ok: an intact record that its lifecycle does
not allow is a problem of kind ``illegal``.
"""

from __future__ import annotations

import msgspec

from onward.events import EventLog, Problem, ProblemKind, VerifyReport
from onward.events.integrity import damaged_streams
from onward.projections.host import CatchUp
from onward.projections.task import TASK_PREFIX

__all__ = ["verify_log"]


def verify_log(log: EventLog) -> VerifyReport:
    """Check every record, stream chain and the head record, then replay every lifecycle.

    Args:
        log: the log to check (nothing is written to it, not even a checkpoint).

    Returns:
        :meth:`~onward.events.EventLog.verify`'s report, with the lifecycles' problems added
        (kind ``illegal``), every damaged stream named with its first bad record, and the
        damaged tasks that were quarantined since.

    Raises:
        BackendError: the log cannot be read.
    """
    report = log.verify()
    projections = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
    # What the replay found besides the records' own checks: a lifecycle broken, and a record
    # whose checksum holds but that does not decode (a time stored as null by a clock that
    # gave NaN, written before such times were refused).
    seen = {(p.stream, p.position) for p in report.problems}
    illegal = [
        Problem(
            kind=d.kind,
            stream=d.stream,
            version=d.version,
            position=d.position,
            detail=d.reason,
        )
        for d in projections.damaged.values()
        if d.kind is ProblemKind.ILLEGAL or (d.stream, d.position) not in seen
    ]
    problems = sorted([*report.problems, *illegal], key=lambda p: p.position)
    tasks = projections.tasks.tasks
    quarantined = [
        stream
        for stream in projections.damaged
        if stream.startswith(TASK_PREFIX)
        and (view := tasks.get(stream[len(TASK_PREFIX) :])) is not None
        and view.state == "quarantined"
    ]
    return msgspec.structs.replace(
        report,
        ok=not problems,
        problems=problems,
        torn_tail=report.torn_tail and not illegal,
        damaged_streams=damaged_streams(problems),
        quarantined=quarantined,
    )
