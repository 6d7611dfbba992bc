"""The subtasks a replayed task waits for: their ends as the task's recorded run saw them.

A replay (:mod:`onward.testing.replay`) answers ``engine.wait(ids)`` (through its run's
:meth:`~onward.runtime.run.TaskRun.subtasks_ended`) with the ends the history's log held when
the task went on past its wait for them, as the recorded run read them (a result, or the error
a subtask that did not succeed raises), and with None (the task waits there) for a subtask
whose end it has none of.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from onward.events import (
    EventLog,
    MessageReceived,
    PatchMarked,
    Recorded,
    StepCompleted,
    StepFailed,
    StepStarted,
    SubtasksRead,
    TaskFailed,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    TaskWaiting,
    UnknownEvent,
)
from onward.projections import task_stream
from onward.runtime.registry import Registry
from onward.runtime.tasks import end_of, result_of_end

#: What a task's run appends as its code goes on: a step's, a sleep's or a receive's record,
#: a wait, a patch mark, its end.
_PROGRESS = (
    SubtasksRead,
    StepStarted,
    StepCompleted,
    StepFailed,
    MessageReceived,
    TaskWaiting,
    PatchMarked,
    TaskSucceeded,
    TaskFailed,
)


def subtask_ends(
    log: EventLog, history: Sequence[Recorded], children: Iterable[str]
) -> dict[str, list[Recorded]]:
    """The ends of the subtasks of a task as its recorded run's waits read them, each as its
    submission and its end.

    A wait that read an end without success recorded it (``SubtasksRead``): each such read is
    given under ``"<subtask>@<version>"`` (see :func:`pinned_key`), the subtask's stream at
    that version. A wait that recorded no read found its subtasks succeeded (for good), or it
    is an earlier onward's: each subtask is given under its id, as it succeeded, else as it
    was when the task went on past its last recorded wait for it (or, with no such wait, at
    the history's end).

    Args:
        log: the log that holds the task's history and its subtasks'.
        history: the task's stream, in version order.
        children: the tasks it submitted (those it waited for without a recorded wait, as
            they had ended by then, included); the ones its recorded waits name are added.

    Returns:
        Per subtask (and per recorded read of one), its ``TaskSubmitted`` and its end. A
        subtask that had not ended then, or that the log does not hold, is left out.
    """
    if not history:
        return {}
    waited = [
        child
        for r in history
        if isinstance(e := r.event, TaskWaiting) and e.reason == "subtasks"
        for child in e.on
    ]
    found: dict[str, list[Recorded]] = {}
    reads = [r.event for r in history if isinstance(r.event, SubtasksRead)]
    for read in reads:
        for child, version in zip(read.on, read.versions, strict=False):
            records = [
                r
                for r in log.read_stream(task_stream(child))
                if r.version <= version and not isinstance(r.event, UnknownEvent)
            ]
            end = _end_of(records)
            if end is not None:
                found[pinned_key(child, version)] = end
    for child in dict.fromkeys([*children, *waited, *(c for read in reads for c in read.on)]):
        records = [
            r for r in log.read_stream(task_stream(child)) if not isinstance(r.event, UnknownEvent)
        ]
        succeeded = next((r for r in records if isinstance(r.event, TaskSucceeded)), None)
        if records and succeeded is not None:  # a success is for good
            if isinstance(records[0].event, TaskSubmitted):
                found[child] = [records[0], succeeded]
            continue
        before = _went_on(history, child)
        if before is None:
            continue
        end = _end_of([r for r in records if r.position < before])
        if end is not None:
            found[child] = end
    return found


def pinned_key(child: str, version: int) -> str:
    """Where :func:`subtask_ends` gives a subtask's end as a recorded read read it."""
    return f"{child}@{version}"


def _end_of(records: list[Recorded]) -> list[Recorded] | None:
    """A subtask's submission and its end among ``records`` (None: it had not ended)."""
    found = end_of(records)
    return None if found is None else list(found)


def _went_on(history: Sequence[Recorded], child: str) -> int | None:
    """The log position before which a subtask's end was there for the task's run to read:
    the first record the run appended after its last recorded wait for it in the task's last
    attempt (None: the task never went on from that wait), or past the history's end (no
    such wait: the run read it ended when it asked; a wait of an earlier attempt that met an
    end without success is pinned by its recorded read instead)."""
    retried = [i for i, r in enumerate(history) if isinstance(r.event, TaskRetried)]
    last = retried[-1] + 1 if retried else 0
    waits = [
        i
        for i, r in enumerate(history)
        if i >= last
        and isinstance(e := r.event, TaskWaiting)
        and e.reason == "subtasks"
        and child in e.on
    ]
    if not waits:
        return history[-1].position + 1
    after = history[waits[-1] + 1 :]
    return next((r.position for r in after if isinstance(r.event, _PROGRESS)), None)


def ended_as_recorded(
    ids: list[str], ends: Mapping[str, Sequence[Recorded]], registry: Registry
) -> list[Any] | None:
    """The answer of a replayed ``engine.wait(ids)`` (see :meth:`TaskRun.subtasks_ended`):
    the subtasks' results from ``ends`` (see :func:`subtask_ends`), the error of the first
    that did not succeed, or None (the task waits there) when one has no end there.

    Raises:
        TaskFailedError, TaskCancelledError, DeadlineMissed, TaskQuarantinedError: a subtask
            did not succeed.
    """
    if not all(len(ends.get(t, ())) > 1 for t in ids):  # (a submission alone: not ended)
        return None
    return [result_of_end(t, ends[t][0].event, ends[t][-1].event, registry) for t in ids]
