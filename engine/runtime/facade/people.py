"""The part of :class:`onward.Engine` where people come in: answering approval requests,
teaching fixes, notices, resuming a paused session.
"""

from __future__ import annotations

import re
from typing import Any

from onward.events import (
    EventLog,
    FixLearned,
    UsageError,
    redacted_logger,
)
from onward.healing.healer import Healer
from onward.healing.signature import SIGNATURE_VERSION, other_signature_format
from onward.judgement.approvals import Approval, answer, pending
from onward.runtime.facade import arguments
from onward.runtime.facade.inside import Pending
from onward.runtime.interruptions import Interruptions
from onward.runtime.run import on_event_loop, running_task
from onward.runtime.session import Session

__all__ = ["LEARNING_STREAM", "People"]


#: The stream of what people taught the engine (learned fixes); it spans sessions.
LEARNING_STREAM = "learning"

# A whole signature id: its format's version, a dash and (at least) 16 lowercase hex digits,
# as onward.healing.signature makes them and `onward learn` takes them. A lesson is looked up
# by the whole id: one learned for a prefix would never apply.
_SIGNATURE_ID = re.compile(r"v[0-9]+-[0-9a-f]{16,}")

logger = redacted_logger("onward.engine")


class People:
    """Where people come in: approvals, taught fixes, notices and resuming.

    A part of :class:`onward.Engine` (which sets the attributes below).
    """

    log: EventLog
    healer: Healer | None
    _session: Session
    _interruptions: Interruptions

    def learn(self, signature: str, fix: str, note: str = "") -> None:
        """Record that a fix worked for an error: from now on that error gets that fix first.

        Args:
            signature: the error's whole signature id (like ``v1-0123456789abcdef``;
                ``onward errors`` lists them).
            fix: the fix's name (``onward fixes`` lists the registered ones).
            note: why, for the audit.

        Raises:
            UsageError: an unknown fix, a signature that is not a whole signature id (a prefix
                included), or a note that is not a str.
        """
        self._session.check_open()
        arguments.name(signature, "learn(): signature")
        arguments.name(fix, "learn(): fix")
        arguments.text(note, "learn(): note")
        self.log.redactor.check_name(fix, "learn(): fix")  # applied by its name
        if not _SIGNATURE_ID.fullmatch(signature):
            raise UsageError(
                f"learn(): {signature!r} is not a whole error signature id (like "
                "v1-0123456789abcdef; onward errors lists them)"
            )
        if self.healer is not None:
            self.healer.fixes.get(fix)
        if (version := other_signature_format(signature)) is not None:
            logger.warning(
                "learn(): %s is a signature of format v%s; this onward computes v%d signatures "
                "(SIGNATURE_VERSION), so only an onward of that format applies the fix",
                signature,
                version,
                SIGNATURE_VERSION,
            )
        self.log.append(
            LEARNING_STREAM,
            [FixLearned(fix=fix, signature=signature, source="manual", note=note)],
            expected_version=None,
            context=self._session.context,
        )
        self._session.catch_up()

    def approvals(self, *, session: str | None = None) -> list[Approval]:
        """The approval requests waiting for a human, oldest first.

        Args:
            session: only this session's (every session's when None).

        Raises:
            UsageError: a session that is not a str.
        """
        self._session.check_open()
        arguments.optional_name(session, "approvals(): session")
        with self._session.lock:
            return pending(self._session.host, session)

    def approve(self, decision_id: str, *, note: str = "", by: str = "") -> Approval:
        """Approve an action that waits for a human: its task runs again and acts.

        Another process may answer too (``onward approve ID``); a running engine sees it.

        Args:
            decision_id: the decision's id (or a unique prefix): ``approvals()`` lists them.
            note: what the approver says, for the audit.
            by: who approves.

        Returns:
            The request answered.

        Raises:
            ApprovalNotFound: no such request awaits an answer.
            InvalidTransition: its task has ended meanwhile.
            UsageError: a decision id, note or ``by`` that is not a str.
        """
        return self._answer(decision_id, granted=True, note=note, by=by)

    def deny(self, decision_id: str, *, note: str = "", by: str = "") -> Approval:
        """Refuse an action that waits for a human: its step fails with ``ActionDenied``.

        Args:
            decision_id: the decision's id (or a unique prefix).
            note: why, for the audit (the task sees it in the error).
            by: who refuses.

        Returns:
            The request answered.

        Raises:
            ApprovalNotFound: no such request awaits an answer.
            InvalidTransition: its task has ended meanwhile.
            UsageError: a decision id, note or ``by`` that is not a str.
        """
        return self._answer(decision_id, granted=False, note=note, by=by)

    def _answer(self, decision_id: str, *, granted: bool, note: str, by: str) -> Approval:
        self._session.check_open()
        call = "approve()" if granted else "deny()"
        arguments.name(decision_id, f"{call}: decision_id")
        arguments.text(note, f"{call}: note")
        arguments.text(by, f"{call}: by")
        with self._session.lock:
            request = answer(
                self.log,
                self._session.host,
                decision_id,
                granted=granted,
                by=by,
                note=note,
                context=self._session.context,
            )
        return Approval.of(request, self._session.projections)

    def notify(self, summary: str, *, kind: str = "notice", urgent: bool = False) -> Any:
        """Tell people something: at once, or at the next task boundary while the session flows.

        A notice that is not urgent, given while the session is flowing, is deferred
        (``InterruptionDeferred``) and delivered at the next task boundary
        (``InterruptionDelivered``); otherwise it is delivered now. Delivery calls the engine's
        ``on_interruption``. In an ``async def`` task, await it: ``await engine.notify(...)``
        (nothing is recorded or delivered until it is awaited).

        Given by a task's code, a notice is given once: a re-run of the task (after a crash, a
        takeover, a retry) that gives it again, as the n-th notice after the same step of its
        code (or of a step's attempt), finds it recorded and neither records nor delivers it
        again: coroutines gathered at once that notify as their steps end keep their own
        notices, in whatever order a re-run meets them. Its delivery is
        recorded before ``on_interruption`` is called: a crash between the two loses that
        notice rather than giving it twice.

        Args:
            summary: what to say.
            kind: what sort of interruption it is.
            urgent: never defer it.

        Returns:
            The interruption's id, or in an ``async def`` task a
            :class:`~onward.runtime.facade.inside.Pending` of it.

        Raises:
            UsageError: a summary or kind that is not a str, or ``urgent`` not a bool.
        """
        self._session.check_open()
        summary = arguments.text(summary, "notify(): summary")
        kind = arguments.name(kind, "notify(): kind")
        urgent = arguments.flag(urgent, "notify(): urgent")
        run = running_task("notify()")
        if run is not None and on_event_loop():  # the loop must not wait for a step appending
            # Its id is taken now, where the code calls notify (see TaskRun.notice_id).
            notice = self._interruptions.notice(run, summary, kind)
            return Pending(
                run, self._interruptions.notify_async(run, notice, urgent=urgent), "notify(...)"
            )
        return self._interruptions.notify(summary, kind=kind, urgent=urgent)

    def resume(self, reason: str = "resumed by a person") -> bool:
        """Resume this session after a pause (the error budget's, say) with a fresh window.

        Returns:
            Whether it was paused.

        Raises:
            UsageError: a reason that is not a str.
        """
        self._session.check_open()
        return self._session.resume(arguments.text(reason, "resume(): reason"))
