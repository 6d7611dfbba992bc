"""The demo's one approval, and the decision it ends on (part of ``onward demo``).

The survey's last task asks before it publishes the totals (:mod:`onward.demo.publish`).
:class:`ApprovalFold` folds, read-only, the session's confidence decisions, the approval
request and its answer, the action's check and the task's end. The parent answers the request
from a second process, as a person would from another terminal (:func:`answer_approval` runs
``onward approve ID``), unless ``--yes`` told the worker to approve it itself; at the end it runs
``onward why`` on the request's decision (:func:`explain_decision`).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec

from onward.events import (
    ActionChecked,
    ActionUndone,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    DecisionMade,
    Recorded,
    TaskSucceeded,
)
from onward.projections.task import TASK_PREFIX

__all__ = [
    "AnswerRun",
    "ApprovalFold",
    "ApprovalStory",
    "Approver",
    "WhyRun",
    "answer_approval",
    "explain_decision",
]

#: Seconds a child command (``onward approve``, ``onward why``) may take.
COMMAND_TIMEOUT = 120.0


class AnswerRun(msgspec.Struct, frozen=True, kw_only=True):
    """The parent's ``onward approve ID`` (a second process).

    Attributes:
        decision_id: the request it answered.
        note: the note it gave.
        pid: its process id.
        status: its exit status (0: the answer is in the log).
        output: what it printed.
    """

    decision_id: str
    note: str
    pid: int
    status: int
    output: str


class ApprovalStory(msgspec.Struct, frozen=True, kw_only=True):
    """The approval request of the run, its decision and its answer.

    Attributes:
        decision_id: the confidence decision that asked (``onward why`` it).
        task_id: the task that waited.
        action: the action it is about.
        question: what a person was asked.
        impact: what was at stake.
        confidence: the engine's confidence in the action.
        strategy: the strategy the decision chose ("ask").
        rule: the rule that forced it ("" when the score alone chose it).
        asked_by: the worker whose append asked.
        asked_at: seconds since the run began.
        answer: "approved", "denied", or "" while it waits.
        by: who answered, as they said.
        note: what they said.
        actor: the process whose append recorded the answer.
        waited: seconds from the request to the answer (None while it waits).
        checked: whether the action's check held (None before it ran).
        undone: whether the action was undone after a failed check.
        task_state: the task's state at the end of the run.
        published: where the action wrote ("" before it did).
        answered_from: the parent's ``onward approve`` (None with ``--yes``, or not yet).
    """

    decision_id: str
    task_id: str
    action: str
    question: str
    impact: str
    confidence: float | None
    strategy: str
    rule: str
    asked_by: str
    asked_at: float
    answer: str
    by: str
    note: str
    actor: str
    waited: float | None
    checked: bool | None
    undone: bool
    task_state: str
    published: str
    answered_from: AnswerRun | None = None


class WhyRun(msgspec.Struct, frozen=True, kw_only=True):
    """The parent's ``onward why ID`` (``--json`` for a JSON report).

    Attributes:
        decision_id: the decision explained.
        status: its exit status.
        text: what it printed (without ``--json``).
        report: the ``onward why --json`` object (with it; None without).
    """

    decision_id: str
    status: int
    text: str = ""
    report: msgspec.Raw | None = None


class ApprovalFold:
    """Folds one session's approval (feed it every record of the log, in order).

    Args:
        session: the session of the run.
    """

    def __init__(self, session: str) -> None:
        self.session = session
        self.started: float | None = None
        self.decisions: dict[str, DecisionMade] = {}
        self.request: ApprovalRequested | None = None
        self.asked: Recorded | None = None
        self.answered: Recorded | None = None
        self.checked: bool | None = None
        self.undone = False
        self.result: Any = None

    def apply(self, r: Recorded) -> None:
        """Fold one record."""
        if r.meta.session != self.session:
            return
        if self.started is None:
            self.started = r.meta.time
        event = r.event
        if isinstance(event, DecisionMade):
            if event.kind == "confidence":
                self.decisions[r.meta.event_id] = event
        elif isinstance(event, ApprovalRequested):
            if self.request is None and event.decision_id in self.decisions:
                self.request, self.asked = event, r
        elif isinstance(event, ApprovalGranted | ApprovalDenied):
            if self.request is not None and event.decision_id == self.request.decision_id:
                self.answered = r
        elif isinstance(event, ActionChecked):
            if self.request is not None and event.decision_id == self.request.decision_id:
                self.checked = event.passed
        elif self.request is not None and r.stream == TASK_PREFIX + self.request.subject:
            if isinstance(event, ActionUndone):
                self.undone = self.undone or event.ok
            elif isinstance(event, TaskSucceeded):
                self.result = event.result

    def waiting(self) -> str | None:
        """The decision id of the request that waits for an answer (None: none waits)."""
        if self.request is None or self.answered is not None:
            return None
        return self.request.decision_id

    def story(self, task_state: str, answered_from: AnswerRun | None) -> ApprovalStory | None:
        """The approval as folded so far (None: nothing was asked).

        Args:
            task_state: the waiting task's state now.
            answered_from: the parent's ``onward approve``, if it ran.
        """
        request, asked = self.request, self.asked
        if request is None or asked is None:
            return None
        decision = self.decisions[request.decision_id]
        answered = self.answered
        answer, by, note, actor, waited = "", "", "", "", None
        if answered is not None:
            event = answered.event
            assert isinstance(event, ApprovalGranted | ApprovalDenied)
            answer = "approved" if isinstance(event, ApprovalGranted) else "denied"
            by, note, actor = event.by, event.note, answered.meta.actor
            waited = round(answered.meta.time - asked.meta.time, 2)
        published = self.result.get("path", "") if isinstance(self.result, dict) else ""
        return ApprovalStory(
            decision_id=request.decision_id,
            task_id=request.subject,
            action=str(decision.inputs.get("action", "")),
            question=request.question,
            impact=request.impact,
            confidence=decision.confidence,
            strategy="" if decision.strategy is None else decision.strategy.value,
            rule=decision.rule,
            asked_by=asked.meta.actor,
            asked_at=round(asked.meta.time - (self.started or asked.meta.time), 2),
            answer=answer,
            by=by,
            note=note,
            actor=actor,
            waited=waited,
            checked=self.checked,
            undone=self.undone,
            task_state=task_state,
            published=str(published),
            answered_from=answered_from,
        )


class Approver:
    """The demo's parent standing in for a person: it approves the run's request once, from a
    second process, as soon as the log shows it.

    Args:
        path: the log file.
        note: what it says when it approves.
    """

    def __init__(self, path: str, note: str) -> None:
        self.path = path
        self.note = note
        self.answered: AnswerRun | None = None

    def answer(self, fold: ApprovalFold) -> AnswerRun | None:
        """Approve the request that waits, if any, unless done before.

        Returns:
            The ``onward approve`` it ran now (None: it ran none now).
        """
        waiting = fold.waiting()
        if waiting is None or self.answered is not None:
            return None
        self.answered = answer_approval(self.path, waiting, self.note)
        return self.answered


def _engine_command(*args: str) -> subprocess.Popen[str]:
    """Start ``python -m engine ARGS`` (the ``onward`` command) as a second process."""
    return subprocess.Popen(
        [sys.executable, "-m", "onward", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=True,
    )


def answer_approval(path: str, decision_id: str, note: str) -> AnswerRun:
    """Approve a request from a second process: ``onward approve ID --db PATH --note NOTE``.

    Args:
        path: the log file.
        decision_id: the request's decision id.
        note: what the approver says.
    """
    child = _engine_command("approve", decision_id, "--db", path, "--note", note)
    output, errors = child.communicate(timeout=COMMAND_TIMEOUT)
    return AnswerRun(
        decision_id=decision_id,
        note=note,
        pid=child.pid,
        status=child.returncode,
        output=(output + errors).strip(),
    )


def explain_decision(path: str, decision_id: str, *, as_json: bool) -> WhyRun:
    """Run ``onward why ID --db PATH`` (with ``--json`` when asked) and keep what it printed.

    Args:
        path: the log file.
        decision_id: the decision to explain.
        as_json: ask for its JSON report.
    """
    args = ["why", decision_id, "--db", path] + (["--json"] if as_json else [])
    child = _engine_command(*args)
    output, errors = child.communicate(timeout=COMMAND_TIMEOUT)
    if as_json and child.returncode == 0:
        return WhyRun(decision_id=decision_id, status=0, report=msgspec.Raw(output.encode()))
    return WhyRun(decision_id=decision_id, status=child.returncode, text=(output + errors).rstrip())
