"""What a fork takes from the task it forks: the recorded outcomes of its first steps.

A fork's first ``inherit_steps`` steps are not run: each returns what its origin recorded at
that index (a result, a caught failure, a message taken) and a patch the origin took before
them is taken too. The fork's own stream does not hold them, so a fork of a fork looks
through its origin to the origin's origin for the steps the origin inherited.
"""

from __future__ import annotations

from collections.abc import Sequence

from onward.events import (
    EventLog,
    MessageReceived,
    PatchMarked,
    Recorded,
    StepCompleted,
    StepFailed,
    StepWithdrawn,
    TaskRetried,
    TaskSubmitted,
)
from onward.projections import task_stream

__all__ = ["inherited_records", "origin_history", "outcome_records", "recorded_outcomes"]


def recorded_outcomes(history: Sequence[Recorded], upto: int | None = None) -> dict[int, Recorded]:
    """Per step index (below ``upto``, when given), the record of its outcome as ``history``
    (one task's stream) holds it at its end: a ``StepCompleted``, a final ``StepFailed`` (not
    undone by a later ``TaskRetried``, nor withdrawn: its caller gave the call up) or a
    ``MessageReceived``."""
    found: dict[int, Recorded] = {}
    for r in history:
        event = r.event
        if isinstance(event, StepCompleted | MessageReceived) or (
            isinstance(event, StepFailed) and event.final
        ):
            if upto is None or event.index < upto:
                found[event.index] = r
        elif isinstance(event, StepWithdrawn):
            failed = found.get(event.index)
            if failed is not None and isinstance(failed.event, StepFailed):
                del found[event.index]
        elif isinstance(event, TaskRetried):  # failed steps run again in the new attempt
            for index in [i for i, f in found.items() if isinstance(f.event, StepFailed)]:
                del found[index]
    return found


def outcome_records(log: EventLog, history: list[Recorded], upto: int) -> list[Recorded]:
    """The records that give a task's first ``upto`` steps their outcomes, and the patches
    taken before them, in the order to apply them: the task's own (``history``), and for the
    steps it took as a fork, its origin's (and so on up a chain of forks), nearest last.

    Only the records below each link's bound are taken: a fork's origin answers for the
    fork's first ``inherit_steps`` steps and no more.
    """
    links: list[tuple[list[Recorded], int]] = []
    while history and upto > 0:
        links.append((history, upto))
        submitted = history[0].event
        if not isinstance(submitted, TaskSubmitted) or submitted.forked_from is None:
            break
        upto = min(upto, submitted.inherit_steps)
        history = origin_history(log, submitted) if upto > 0 else []
    records: list[Recorded] = []
    for link, bound in reversed(links):
        chosen = {id(r) for r in recorded_outcomes(link, bound).values()}
        records += [
            r
            for r in link
            if id(r) in chosen or (isinstance(r.event, PatchMarked) and r.event.index < bound)
        ]
    return records


def inherited_records(log: EventLog, submitted: TaskSubmitted) -> list[Recorded]:
    """For a fork (its ``TaskSubmitted``), the records of its origin (and up its chain of
    forks) that give its first ``inherit_steps`` steps their outcomes; none for any other
    task."""
    if submitted.forked_from is None or not submitted.inherit_steps:
        return []
    return outcome_records(log, origin_history(log, submitted), submitted.inherit_steps)


def origin_history(log: EventLog, submitted: TaskSubmitted) -> list[Recorded]:
    """A fork's origin's stream as it was when the fork was made (a retry of the origin
    since changes nothing the fork takes). What the origin wrote after is not read: damage
    there is none of the fork's."""
    assert submitted.forked_from is not None
    return log.read_stream(task_stream(submitted.forked_from), upto=submitted.origin_version)
