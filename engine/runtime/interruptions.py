"""Interruptions: notices and approval requests for a person, held back while the session flows.

A notice that is not urgent, given while the session is flowing (:mod:`onward.judgement.flow`),
is deferred (:class:`onward.events.InterruptionDeferred`) and delivered at the next task boundary
(:class:`onward.events.InterruptionDelivered`); otherwise it is delivered at once. Delivery
calls the engine's ``on_interruption`` (logged by default). Approval requests go the same way:
the judge asks :meth:`Interruptions.defers` before it records one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec

from onward.events import (
    Event,
    InterruptionDeferred,
    InterruptionDelivered,
    new_event_id,
    redacted_logger,
)
from onward.judgement.flow import FlowMonitor
from onward.projections import Projections
from onward.projections.flow import Deferred
from onward.runtime.run import Publishing, TaskRun, delegate, running_task
from onward.runtime.session import Session

__all__ = ["Interruption", "Interruptions", "log_interruption"]

logger = redacted_logger("onward.engine")


class Interruption(msgspec.Struct, frozen=True, kw_only=True):
    """Something for a person's attention: a notice, or an approval request.

    Attributes:
        interruption_id: its id (an approval's is the decision's id).
        kind: "approval", "notice", ...
        summary: what it is about.
        session: the session it comes from.
        deferred_for: how long the flow monitor held it back, in seconds (0.0: not held).
    """

    interruption_id: str
    kind: str
    summary: str
    session: str
    deferred_for: float = 0.0


def log_interruption(interruption: Interruption) -> None:
    """The default ``on_interruption``: log it (a NullHandler unless the application listens)."""
    held = f" (held {interruption.deferred_for:.0f} s)" if interruption.deferred_for else ""
    logger.info("%s%s: %s", interruption.kind, held, interruption.summary)


class Interruptions:
    """Delivers notices and approval requests to people, or holds them while the session flows.

    Args:
        session: the session.
        flow: the flow monitor (whether the session's state defers an interruption).
        on_interruption: called with each interruption delivered.
    """

    def __init__(
        self,
        session: Session,
        flow: FlowMonitor,
        on_interruption: Callable[[Interruption], None] = log_interruption,
    ) -> None:
        self.session = session
        self.flow = flow
        self.on_interruption = on_interruption

    def defers(self, session: str, impact: str, urgent: bool) -> bool:
        """Whether an interruption of this impact, urgent or not, is deferred now."""
        state = self.session.projections.flow.state(session)
        return self.flow.defers(state, urgent=urgent, impact=impact)

    def asked(self, decision_id: str, question: str, session: str) -> None:
        """An approval request not deferred: hand it to ``on_interruption`` now."""
        self.hand_over(
            Interruption(
                interruption_id=decision_id, kind="approval", summary=question, session=session
            )
        )

    def notify(self, summary: str, *, kind: str = "notice", urgent: bool = False) -> str:
        """Tell people something: at once, or at the next task boundary while the session flows.

        Inside a task, once per call, whatever re-runs the task (see :meth:`notify_in`);
        outside, the deferral or the delivery is recorded on the session's stream.

        Returns:
            The interruption's id.
        """
        session = self.session
        run = running_task("notify()")
        if run is not None:
            return self.notify_in(run, self.notice(run, summary, kind), urgent=urgent)
        interruption = Interruption(
            interruption_id=new_event_id(), kind=kind, summary=summary, session=session.name
        )
        held: list[bool] = []

        def defer_or_deliver(projections: Projections) -> list[Event]:
            held[:] = [self.defers(session.name, "", urgent)]
            if held[0]:
                return [_deferral(interruption)]
            return [InterruptionDelivered(interruption_id=interruption.interruption_id)]

        session.catch_up()
        session.decide(defer_or_deliver)
        if not held[0]:
            self.hand_over(interruption)
        return interruption.interruption_id

    def notice(self, run: TaskRun, summary: str, kind: str = "notice") -> Interruption:
        """The next notice a task's code gives: its id is the same on a re-run
        (:meth:`TaskRun.notice_id`)."""
        return Interruption(
            interruption_id=run.notice_id(),
            kind=kind,
            summary=summary,
            session=self.session.name,
        )

    def notify_in(self, run: TaskRun, interruption: Interruption, *, urgent: bool) -> str:
        """Give a notice from a task's code, once: its deferral or its delivery is recorded on
        the task's stream, and a re-run (after a crash, a takeover, a retry) that finds it
        there neither records nor delivers it again.

        The delivery is recorded before the notice is handed to ``on_interruption``, as a
        deferred notice's delivery at a task boundary is: a crash between the two loses that
        notice rather than giving it twice.

        Returns:
            The interruption's id.
        """
        if interruption.interruption_id in run.notices:  # given by an earlier run
            return interruption.interruption_id
        if self._deferred_now(urgent):
            run.record([_deferral(interruption)])
            run.notices.add(interruption.interruption_id)
            self.session.catch_up()
        else:
            run.record([InterruptionDelivered(interruption_id=interruption.interruption_id)])
            run.notices.add(interruption.interruption_id)
            run.effect(Publishing(self.hand_over, interruption))
        return interruption.interruption_id

    async def notify_async(
        self, run: TaskRun, interruption: Interruption, *, urgent: bool = False
    ) -> str:
        """:meth:`notify_in` in an ``async def`` task: the event loop waits neither for the
        disk nor for a step of the task that appends meanwhile (the deferral or the delivery
        is appended as the task's steps append; the rest runs in worker threads).

        Args:
            run: the task's run.
            interruption: the notice, from :meth:`notice` (taken when the code calls
                ``notify``, so that its id follows the order of the calls).
            urgent: never defer it.

        Returns:
            The interruption's id.
        """
        if interruption.interruption_id in run.notices:  # given by an earlier run
            return interruption.interruption_id
        if await delegate(self._deferred_now, urgent):
            await run.record_async([_deferral(interruption)])
            run.notices.add(interruption.interruption_id)
            await asyncio.to_thread(self.session.catch_up)
        else:
            await run.record_async(
                [InterruptionDelivered(interruption_id=interruption.interruption_id)]
            )
            run.notices.add(interruption.interruption_id)
            await run.effect_async(Publishing(self.hand_over, interruption))
        return interruption.interruption_id

    def _deferred_now(self, urgent: bool) -> bool:
        """Whether a notice is deferred on the session's state now (inside a task)."""
        self.session.catch_up()
        return self.defers(self.session.name, "", urgent)

    def deliver(self) -> int:
        """Deliver the interruptions deferred while the session flowed (at a task boundary):
        record their delivery, then hand them to ``on_interruption`` (without the session's
        lock when the caller holds none: a run's task boundary). Once handed over, the
        projections are caught up: what the caller decides next (a claim, the error budget's
        verdict) reads what was appended while ``on_interruption`` ran.

        Returns:
            How many were delivered.
        """
        session = self.session
        now = session.clock()
        held: list[Deferred] = []
        delivered: list[InterruptionDelivered] = []

        def deliver(projections: Projections) -> list[Event]:
            # Another worker may have delivered some meanwhile: only what is still held.
            held[:] = projections.flow.pending(session.name)
            delivered[:] = [
                InterruptionDelivered(
                    interruption_id=d.interruption_id, deferred_for=max(0.0, now - d.deferred_at)
                )
                for d in held
            ]
            return list(delivered)

        with session.lock:
            if not session.projections.flow.pending(session.name):
                return 0
        if not session.decide(deliver, chain=False):
            return 0
        for d, event in zip(held, delivered, strict=True):
            self.hand_over(
                Interruption(
                    interruption_id=d.interruption_id,
                    kind=d.kind,
                    summary=d.summary,
                    session=session.name,
                    deferred_for=event.deferred_for,
                )
            )
        session.catch_up()  # on_interruption took a while (a message sent to people)
        return len(held)

    def hand_over(self, interruption: Interruption) -> None:
        """Hand an interruption to the application (its callback's failure is logged only).

        Its summary is redacted first: the application may log or send it anywhere, and a
        deferred one, read back from the log, is redacted too.
        """
        summary = self.session.log.redactor.redact(interruption.summary)
        if summary != interruption.summary:
            interruption = msgspec.structs.replace(interruption, summary=summary)
        try:
            self.on_interruption(interruption)
        except Exception:
            logger.exception("on_interruption failed for %s", interruption.interruption_id)


def _deferral(interruption: Interruption) -> InterruptionDeferred:
    """The record of a notice held back while the session flows."""
    return InterruptionDeferred(
        interruption_id=interruption.interruption_id,
        kind=interruption.kind,
        summary=interruption.summary,
    )
