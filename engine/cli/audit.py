"""The audit of decisions, as ``onward why`` prints it: what the engine chose, and why.

A :class:`onward.events.DecisionMade` records what it looked at; its ``causation_id`` points at the
event it answers (an ``ErrorObserved``), which points at its own cause (the ``StepFailed``),
and so on back to the run's ``TaskClaimed``. :func:`explain` reads the log once, indexing every
event by its id, then walks each decision's chain of causes until an event with no cause, a
cause the log does not hold, or an event already seen (a cycle in a damaged log).

Every decision shows the same fields, whatever its kind: its rule and strategy, its confidence
and factors, the thresholds it compared against (a budget decision's limit and window), its
inputs (a budget decision's verdict figures) and the alternatives it passed over; "-" where a
kind records none. A decision a person was asked about (an :class:`onward.events.ApprovalRequested`
with its id) shows the question, and the answer once the log holds one
(:class:`onward.events.ApprovalGranted` or :class:`onward.events.ApprovalDenied`): who gave it,
when, and what they said.

A damaged record (one that fails its checksum or does not decode) is skipped, so that damage
elsewhere in the log does not stop the audit of a healthy task; when a skipped record could
matter to the explanation (it is in the stream of a decision shown, a chain ends at a cause the
log does not hold, or it lies between a position asked for and the decision found before it),
the report says so in one line (``damage``).

The JSON keys are stable (fields are added at the end of a Struct or not at all).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from onward.cli.reports import moment
from onward.cli.table import clip, iso, printable, table
from onward.core.errors import DecisionNotFound
from onward.events import (
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    CorruptRecord,
    DecisionMade,
    EventLog,
    Recorded,
    UnknownEvent,
)
from onward.events.integrity import check_rows
from onward.projections.task import TASK_PREFIX, task_stream

__all__ = [
    "CHAIN_ENDS",
    "ApprovalRow",
    "CauseRow",
    "DecisionNotFound",
    "DecisionRow",
    "WhyReport",
    "decision_lines",
    "explain",
]

#: How a chain of causes ends: at an event with no cause, at a cause the log does not hold, or
#: at an event already in the chain (only a damaged log has one).
CHAIN_ENDS = ("root", "missing", "cycle")

#: The fields a link of the chain shows, by event type; other types show their plain fields.
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "ErrorObserved": ("signature", "error_type", "message"),
    "StepFailed": ("name", "index", "attempt", "error_type", "message"),
    "TaskClaimed": ("worker", "attempt"),
    "TaskSubmitted": ("name", "key", "parent"),
    "DecisionMade": ("kind", "subject", "choice"),
}


class CauseRow(msgspec.Struct, frozen=True, kw_only=True):
    """One link of a decision's chain of causes, nearest first.

    Attributes:
        event_id: the event's id.
        position: its global position.
        stream: its stream.
        time: when it was appended.
        type: its type.
        fields: its key fields (for ``ErrorObserved``, ``StepFailed``, ``TaskClaimed``, ...)
            or, for other types, its plain fields that differ from their defaults.
    """

    event_id: str
    position: int
    stream: str
    time: datetime
    type: str
    fields: dict[str, Any]


class ApprovalRow(msgspec.Struct, frozen=True, kw_only=True):
    """How a person was asked about a decision, and how they answered.

    Attributes:
        question: what they were asked ("" when the log holds an answer but no request).
        impact: what was at stake, as the request said ("" when not stated).
        requested_at: when they were asked (None without a request).
        request_position: the request's global position (None without one).
        answer: "approved", "denied", or "" while the request awaits an answer.
        by: who answered, as they said ("" when not said, or not answered).
        note: what they said ("" when nothing).
        actor: the worker or person whose append recorded the answer ("" while it awaits).
        answered_at: when they answered (None while the request awaits an answer).
        answer_id: the id of the ``ApprovalGranted`` or ``ApprovalDenied`` ("" while it
            awaits).
        answer_position: its global position (None while it awaits).
    """

    question: str = ""
    impact: str = ""
    requested_at: datetime | None = None
    request_position: int | None = None
    answer: str = ""
    by: str = ""
    note: str = ""
    actor: str = ""
    answered_at: datetime | None = None
    answer_id: str = ""
    answer_position: int | None = None


class DecisionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One decision, whole, and its chain of causes.

    Attributes:
        chain_end: how the chain ends, one of :data:`CHAIN_ENDS`.
        missing_cause: the cause id the log does not hold ("" unless ``chain_end`` is
            "missing").
        approval: how a person was asked about it and answered (None when nobody was asked).
    """

    decision_id: str
    position: int
    stream: str
    time: datetime
    kind: str
    subject: str
    choice: str
    rule: str
    strategy: str | None
    confidence: float | None
    factors: dict[str, float]
    thresholds: dict[str, float]
    inputs: dict[str, Any]
    alternatives: list[str]
    causes: list[CauseRow]
    chain_end: str
    missing_cause: str
    approval: ApprovalRow | None = None


class WhyReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward why ID --json``.

    Attributes:
        query: the ID asked for.
        matched: what it was taken as: "decision", "task" or "position".
        target: the decision id, task id or position it resolved to.
        damage: a sentence on the damaged records skipped that could matter to these
            decisions ("" when none could).
    """

    log: str
    query: str
    matched: str
    target: str
    decisions: list[DecisionRow]
    damage: str = ""


class _Skipped(msgspec.Struct, frozen=True):
    """A damaged record the audit left out: where it is, and what is wrong with it."""

    position: int
    stream: str
    why: str


@dataclass
class _Index:
    """The log read once: every event's position by its id (the event itself is read again
    when a chain of causes reaches it: a log of millions of events is not held decoded), the
    decisions in log order, the task ids, and the approval requests and answers by the id of
    the decision they are about (the first of each: a task's lifecycle takes one answer)."""

    log: EventLog
    positions: dict[str, int] = field(default_factory=dict)
    last: int = 0
    decisions: list[Recorded] = field(default_factory=list)
    tasks: set[str] = field(default_factory=set)
    requests: dict[str, Recorded] = field(default_factory=dict)
    answers: dict[str, Recorded] = field(default_factory=dict)

    def event(self, event_id: str) -> Recorded | None:
        """The event of that id (None: the log holds no readable one)."""
        position = self.positions.get(event_id)
        if position is None:
            return None
        return next(iter(self.log.read(after=position - 1, upto=position, page_size=1)), None)

    @classmethod
    def of(cls, log: EventLog, records: Iterable[Recorded]) -> _Index:
        index = cls(log)
        for r in records:
            event = r.event
            index.positions[r.meta.event_id] = r.position
            index.last = max(index.last, r.position)
            if isinstance(event, DecisionMade):
                index.decisions.append(r)
            elif isinstance(event, ApprovalRequested):
                index.requests.setdefault(event.decision_id, r)
            elif isinstance(event, ApprovalGranted | ApprovalDenied):
                index.answers.setdefault(event.decision_id, r)
            if r.stream.startswith(TASK_PREFIX):
                index.tasks.add(r.stream[len(TASK_PREFIX) :])
        return index


def _readable(log: EventLog, skipped: list[_Skipped]) -> Iterator[Recorded]:
    """Every record of the log that passes its checksum and decodes, in log order; each other
    one is added to ``skipped`` instead."""
    for rows in log.read_rows():
        bad = dict(check_rows(rows))
        for i, (position, stream, version, topic, state) in enumerate(rows):
            why = bad.get(i)
            if why is None:
                try:
                    yield log.decode_record(stream, version, position, topic, state)
                    continue
                except CorruptRecord as exc:
                    why = exc.reason
            skipped.append(_Skipped(position, str(stream), why))


def _damage_note(
    skipped: list[_Skipped], rows: list[DecisionRow], *, task: str = "", upto: int = 0
) -> str:
    """One sentence on the skipped records that could matter to ``rows`` ("" when none):
    those in the stream of a decision shown or of ``task``, and those after the last decision
    shown up to the position ``upto`` asked for (a later decision may be among them). With a
    chain that ends at a cause the log does not hold, any skipped record could be that cause."""
    streams = {row.stream for row in rows}
    if task:
        streams.add(task_stream(task))
    last = max((row.position for row in rows), default=0)
    near = [s for s in skipped if s.stream in streams or last < s.position <= upto]
    if not near and not (skipped and any(row.chain_end == "missing" for row in rows)):
        return ""
    first = (near or skipped)[0]
    return (
        f"{len(near or skipped)} damaged record(s) skipped that may belong here (the first at "
        f"position {first.position}, stream {first.stream!r}: {first.why}); `onward verify` "
        "says more"
    )


def _type_of(r: Recorded) -> str:
    event = r.event
    if isinstance(event, UnknownEvent):
        return event.type
    tag = type(event).__struct_config__.tag
    return tag if isinstance(tag, str) else type(event).__name__


def _plain(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _key_fields(r: Recorded) -> dict[str, Any]:
    event = r.event
    if isinstance(event, UnknownEvent):
        return {k: v for k, v in event.data.items() if _plain(v)}
    names = _KEY_FIELDS.get(_type_of(r))
    if names is not None:
        values = msgspec.to_builtins(event)
        assert isinstance(values, dict)
        return {n: values[n] for n in names if n in values and values[n] not in (None, "")}
    out: dict[str, Any] = {}
    for info in msgspec.structs.fields(event):
        value = getattr(event, info.name)
        if _plain(value) and (info.default is msgspec.NODEFAULT or value != info.default):
            out[info.name] = msgspec.to_builtins(value)
    return out


def _cause_row(r: Recorded) -> CauseRow:
    return CauseRow(
        event_id=r.meta.event_id,
        position=r.position,
        stream=r.stream,
        time=moment(r.meta.time),
        type=_type_of(r),
        fields=_key_fields(r),
    )


def _approval_row(decision_id: str, index: _Index) -> ApprovalRow | None:
    """How a person was asked about a decision and answered (None when nobody was asked)."""
    asked = index.requests.get(decision_id)
    answered = index.answers.get(decision_id)
    if asked is None and answered is None:
        return None
    row = ApprovalRow()
    if asked is not None and isinstance(asked.event, ApprovalRequested):
        row = msgspec.structs.replace(
            row,
            question=asked.event.question,
            impact=asked.event.impact,
            requested_at=moment(asked.meta.time),
            request_position=asked.position,
        )
    if answered is not None and isinstance(answered.event, ApprovalGranted | ApprovalDenied):
        row = msgspec.structs.replace(
            row,
            answer="approved" if isinstance(answered.event, ApprovalGranted) else "denied",
            by=answered.event.by,
            note=answered.event.note,
            actor=answered.meta.actor,
            answered_at=moment(answered.meta.time),
            answer_id=answered.meta.event_id,
            answer_position=answered.position,
        )
    return row


def _decision_row(r: Recorded, index: _Index) -> DecisionRow:
    """A decision and its chain of causes, walked event by event through the index."""
    d = r.event
    assert isinstance(d, DecisionMade)
    causes: list[CauseRow] = []
    seen = {r.meta.event_id}
    cause = r.meta.causation_id
    end, missing = "root", ""
    while cause:
        if cause in seen:
            end = "cycle"
            break
        link = index.event(cause)
        if link is None:
            end, missing = "missing", cause
            break
        seen.add(cause)
        causes.append(_cause_row(link))
        cause = link.meta.causation_id
    return DecisionRow(
        decision_id=r.meta.event_id,
        position=r.position,
        stream=r.stream,
        time=moment(r.meta.time),
        kind=d.kind,
        subject=d.subject,
        choice=d.choice,
        rule=d.rule,
        strategy=None if d.strategy is None else str(d.strategy.value),
        confidence=d.confidence,
        factors=dict(d.factors),
        thresholds=dict(d.thresholds),
        inputs=dict(d.inputs),
        alternatives=list(d.alternatives),
        causes=causes,
        chain_end=end,
        missing_cause=missing,
        approval=_approval_row(r.meta.event_id, index),
    )


def _position_meant(index: _Index, query: str, url: str) -> bool:
    """Whether digits (``N`` or ``@N``) name a position rather than the start of an id: ``@N``
    always; bare digits when no task or decision id starts with them, or when they are past
    the log's last position (a whole id of digits alone is an id).

    Raises:
        DecisionNotFound: bare digits that could be either.
    """
    if query.startswith("@"):
        return True
    if query in index.positions or query in index.tasks:
        return False
    starting = sorted(
        k
        for k in (*index.tasks, *(r.meta.event_id for r in index.decisions))
        if k.startswith(query)
    )
    if not starting:
        return True
    if int(query) > index.last:
        return False  # no such position: the start of an id
    raise DecisionNotFound(
        f"{query!r} is a position and the start of {len(starting)} task or decision id(s) in "
        f"{url} ({', '.join(starting[:5])}): give more of the id, or @{query} for the position"
    )


def _resolve(index: _Index, query: str, url: str) -> tuple[str, str, list[Recorded]]:
    """The decisions ``query`` names: (what it matched, the resolved target, the decisions)."""
    r = index.event(query) if query in index.positions else None
    if r is not None and not isinstance(r.event, DecisionMade):
        raise DecisionNotFound(
            f"event {query} in {url} is a {_type_of(r)} (position {r.position}, stream "
            f"{r.stream}), not a decision"
        )
    at = query.removeprefix("@")
    if at.isascii() and at.isdecimal() and _position_meant(index, query, url):
        position = int(at)
        before = [r for r in index.decisions if r.position <= position]
        if not before:
            raise DecisionNotFound(f"no decision at or before position {position} in {url}")
        return "position", str(before[-1].position), [before[-1]]
    decisions = {r.meta.event_id: r for r in index.decisions}
    if query in decisions:
        return "decision", query, [decisions[query]]
    if query in index.tasks:
        task_id = query
    else:
        ids = [k for k in decisions if query and k.startswith(query)]
        tasks = [t for t in index.tasks if query and t.startswith(query)]
        if len(ids) + len(tasks) > 1:
            names = ", ".join(sorted(ids + tasks)[:5])
            raise DecisionNotFound(
                f"{len(ids)} decisions and {len(tasks)} tasks in {url} start with {query!r}: "
                f"{names}"
            )
        if ids:
            return "decision", ids[0], [decisions[ids[0]]]
        if not tasks:
            raise DecisionNotFound(
                f"no decision, task or position {query!r} in {url} ({len(decisions)} decisions "
                "in the log)"
            )
        task_id = tasks[0]
    stream = task_stream(task_id)
    found = [
        r
        for r in index.decisions
        if r.stream == stream or (isinstance(r.event, DecisionMade) and r.event.subject == task_id)
    ]
    if not found:
        raise DecisionNotFound(f"task {task_id} in {url} has no decisions")
    return "task", task_id, found


def explain(log: EventLog, query: str) -> WhyReport:
    """The decisions ``query`` names, each with its chain of causes.

    Args:
        log: the log to read (read once, never appended to).
        query: a decision id (or a unique prefix of one), a task id (or a unique prefix: every
            decision of that task, in log order), or a global position (the decision at that
            position, or the last one before it).

    Raises:
        DecisionNotFound: nothing, or several things, match ``query``, or it names an event
            that is not a decision, or a task without decisions (saying how many damaged
            records were skipped, if any).
    """
    skipped: list[_Skipped] = []
    index = _Index.of(log, _readable(log, skipped))
    try:
        matched, target, found = _resolve(index, query, log.url)
    except DecisionNotFound as exc:
        if not skipped:
            raise
        raise DecisionNotFound(
            f"{exc} ({len(skipped)} damaged record(s) skipped; `onward verify` says more)"
        ) from None
    rows = [_decision_row(r, index) for r in found]
    return WhyReport(
        log=log.url,
        query=query,
        matched=matched,
        target=target,
        decisions=rows,
        damage=_damage_note(
            skipped,
            rows,
            task=target if matched == "task" else "",
            upto=int(query.removeprefix("@")) if matched == "position" else 0,
        ),
    )


def _compact(value: object) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _pairs(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


_ENDS = {
    "root": "an event with no cause",
    "missing": "a cause the log does not hold",
    "cycle": "an event already in the chain (a cycle: the log is damaged)",
}


def _when(t: datetime) -> str:
    return iso(t.timestamp(), "milliseconds")


def _approval_lines(a: ApprovalRow, decision_id: str) -> list[tuple[str, str]]:
    """The ``asked`` and ``answer`` fields of a decision a person was asked about."""
    fields: list[tuple[str, str]] = []
    if a.requested_at is not None:
        stake = f", impact {a.impact}" if a.impact else ""
        fields.append(
            (
                "asked",
                f"{clip(a.question, 100) or '-'} (at {_when(a.requested_at)}, position "
                f"{a.request_position}{stake})",
            )
        )
    if a.answered_at is None:
        fields.append(
            (
                "answer",
                f"none yet: `onward approve {decision_id}` or `onward deny {decision_id}`",
            )
        )
        return fields
    who = f"by {a.by}" if a.by else "by someone unnamed"
    if a.actor and a.actor != a.by:
        who += f" (through {a.actor})"
    said = f': "{clip(a.note, 100)}"' if a.note else ", with no note"
    fields.append(
        (
            "answer",
            f"{a.answer} {who} at {_when(a.answered_at)} (position {a.answer_position}){said}",
        )
    )
    return fields


def decision_lines(row: DecisionRow) -> list[str]:
    """A decision for people: its fields one a line ("-" where its kind records none), the
    question a person was asked about it and their answer, its inputs, then its chain of
    causes."""
    fields: list[tuple[str, str]] = [
        ("kind", row.kind),
        ("choice", row.choice),
        ("subject", row.subject),
        ("time", _when(row.time)),
        ("position", f"{row.position} in stream {row.stream}"),
        ("rule", row.rule or "-"),
        ("strategy", row.strategy or "-"),
        ("confidence", "-" if row.confidence is None else f"{row.confidence:.2f}"),
        ("factors", _pairs(row.factors) or "-"),
        ("thresholds", _pairs(row.thresholds) or "-"),
        ("alternatives", ", ".join(row.alternatives) or "-"),
    ]
    if row.approval is not None:
        fields += _approval_lines(row.approval, row.decision_id)
    width = max(len(name) for name, _ in fields)
    lines = [f"decision {row.decision_id}"]
    lines += [f"  {name.ljust(width)}  {printable(value)}" for name, value in fields]
    lines.append(f"  inputs ({len(row.inputs)}):")
    if row.inputs:
        key_width = max(len(k) for k in row.inputs)
        lines += [
            f"    {printable(k).ljust(key_width)}  {printable(_compact(v))}"
            for k, v in row.inputs.items()
        ]
    lines.append(f"  chain of causes ({len(row.causes)}, nearest first):")
    if row.causes:
        rows = [
            [
                c.position,
                c.stream,
                c.type,
                clip(" ".join(f"{k}={_compact(v)}" for k, v in c.fields.items()), 100),
            ]
            for c in row.causes
        ]
        lines.append(table(["POS", "STREAM", "TYPE", "DETAILS"], rows, indent="    "))
    end = _ENDS[row.chain_end]
    if row.missing_cause:
        end += f" ({printable(row.missing_cause)})"
    lines.append(f"  the chain ends at {end}")
    return lines
