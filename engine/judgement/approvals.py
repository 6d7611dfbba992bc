"""Approvals: the questions that wait for a human, and their answers, from any process.

An action whose confidence is too low to act alone (:mod:`onward.judgement.actions`) records an
:class:`onward.events.ApprovalRequested`, and its task waits durably. :func:`answer` appends the
human's :class:`onward.events.ApprovalGranted` or :class:`onward.events.ApprovalDenied` to that
task's stream, at its expected version: the engine running the session (in this process or another)
sees the task ready at its next look, runs it again, and acts on the answer. A crash while waiting
changes nothing: the request and the wait are in the log, and the task still waits after resume.
"""

from __future__ import annotations

import msgspec

from onward.core.errors import ApprovalNotFound
from onward.core.machines import transition
from onward.events import ApprovalDenied, ApprovalGranted, Context, EventLog, VersionConflict
from onward.projections import CatchUp, Projections, task_stream
from onward.projections.decisions import PendingApproval

__all__ = ["Approval", "answer", "find_pending", "pending"]


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """An approval request waiting for a human.

    Attributes:
        decision_id: the id to answer it by (``onward approve ID``).
        task_id: the task that waits.
        session: the task's session.
        action: the action it is about.
        question: what the human is asked.
        impact: what is at stake ("low", "medium", "high").
        confidence: the engine's confidence in the action (None when not scored).
        requested_at: when it was asked.
        deferred: the flow monitor holds it back until the next task boundary.
    """

    decision_id: str
    task_id: str
    session: str
    action: str
    question: str
    impact: str
    confidence: float | None
    requested_at: float
    deferred: bool

    @classmethod
    def of(cls, p: PendingApproval, projections: Projections) -> Approval:
        """The public picture of a pending approval (its deferral read from the flow)."""
        held = projections.flow.pending(p.session)
        return cls(
            decision_id=p.decision_id,
            task_id=p.task_id,
            session=p.session,
            action=p.action,
            question=p.question,
            impact=p.impact,
            confidence=p.confidence,
            requested_at=p.requested_at,
            deferred=any(d.interruption_id == p.decision_id for d in held),
        )


def pending(host: CatchUp, session: str | None = None) -> list[Approval]:
    """The approval requests still unanswered, oldest first (one session's, if given)."""
    host.catch_up(save=False)
    projections = host.projections
    return [Approval.of(p, projections) for p in projections.decisions.waiting(session)]


def find_pending(host: CatchUp, decision_id: str) -> PendingApproval:
    """The unanswered approval request with this decision id, or a unique prefix of it.

    Raises:
        ApprovalNotFound: none, several, one already answered (saying how), or one whose
            task ended unanswered (saying how it ended).
    """
    decisions = host.projections.decisions
    if not decision_id:
        raise ApprovalNotFound("an approval id is required (`onward approvals` lists them)")
    found = decisions.pending.get(decision_id)
    if found is not None:
        return found
    matches = [p for key, p in decisions.pending.items() if key.startswith(decision_id)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        ids = ", ".join(sorted(p.decision_id for p in matches)[:5])
        raise ApprovalNotFound(f"{decision_id!r} matches {len(matches)} approvals: {ids}")
    lapsed = [a for key, a in decisions.lapsed.items() if key.startswith(decision_id)]
    if len(lapsed) == 1:
        request = lapsed[0].request
        raise ApprovalNotFound(
            f"approval {request.decision_id!r} awaits no answer: its task {request.task_id} "
            f"ended ({lapsed[0].ended}) before anyone answered"
        )
    answered = [a for key, a in decisions.answers.items() if key.startswith(decision_id)]
    if len(answered) == 1:
        verb = "approved" if answered[0].granted else "denied"
        by = f" by {answered[0].by}" if answered[0].by else ""
        raise ApprovalNotFound(f"approval {decision_id!r} was already {verb}{by}")
    raise ApprovalNotFound(
        f"no approval request {decision_id!r} awaits an answer in {host.log.url} "
        "(`onward approvals` lists them)"
    )


def answer(
    log: EventLog,
    host: CatchUp,
    decision_id: str,
    *,
    granted: bool,
    by: str = "",
    note: str = "",
    context: Context | None = None,
) -> PendingApproval:
    """Answer an approval request: append the grant or the refusal to its task's stream.

    Args:
        log: the log.
        host: its projections' catch-up host.
        decision_id: the decision awaiting approval (or a unique prefix of its id).
        granted: True to approve, False to deny.
        by: who answers.
        note: what they say, for the audit.
        context: the envelope fields (the session and actor answering).

    Returns:
        The request answered.

    Raises:
        ApprovalNotFound: no such request awaits an answer.
        InvalidTransition: its task has ended meanwhile (cancelled, say).
    """
    for _ in range(10):
        host.catch_up(save=False)
        request = find_pending(host, decision_id)
        view = host.projections.tasks.view(request.task_id)
        if view is None:
            raise ApprovalNotFound(f"approval {decision_id!r}: its task is not in the log")
        event = (
            ApprovalGranted(decision_id=request.decision_id, by=by, note=note)
            if granted
            else ApprovalDenied(decision_id=request.decision_id, by=by, note=note)
        )
        envelope = Context(
            session=view.session,
            actor=(context.actor if context is not None else "") or by,
            causation_id=request.decision_id,
            correlation_id=view.task_id,
        )
        try:
            transition(
                log,
                "task",
                view.task_id,
                task_stream(view.task_id),
                view.state,
                view.version,
                event,
                envelope,
            )
        except VersionConflict:
            continue  # the task moved meanwhile: look again
        host.catch_up(save=False)
        return request
    raise ApprovalNotFound(f"approval {decision_id!r}: its task keeps changing; try again")
