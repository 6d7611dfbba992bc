"""The engine: durable tasks and steps over the event log.

The engine never mutates state directly: it decides (which task to claim, whether a lease
expired, whether a deadline passed), appends the decision as events, and reads its state back
from the projections folded from the log. Reopening the same log and session resumes every
unfinished task: its completed steps return their recorded results, and execution continues at
the first step with no recorded outcome.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from onward.core.errors import (
    ComponentUnavailable,
    DeadlineMissed,
    NotFinished,
    TaskCancelledError,
    TaskFailedError,
    TaskNotFound,
)
from onward.core.machines import transition
from onward.events import (
    Append,
    ApprovalRequested,
    Context,
    Event,
    EventLog,
    FixLearned,
    InterruptionDeferred,
    InterruptionDelivered,
    Priority,
    SessionResumed,
    SessionStarted,
    TaskCancelled,
    TaskDeadlineMissed,
    TaskFailed,
    TaskProgressed,
    TaskReprioritised,
    TaskSubmitted,
    TaskSucceeded,
    TaskWaiting,
    UnencodableValue,
    UnknownEventType,
    UsageError,
    VersionConflict,
    WorkaroundApplied,
    new_event_id,
    open_log,
)
from onward.healing.breaker import BreakerPolicy
from onward.healing.fixes import FixRegistry
from onward.healing.healer import Healer
from onward.healing.retry import RetryBudget, RetryPolicies
from onward.judgement.actions import Check, Judge, Judgement, Undo
from onward.judgement.approvals import Approval, answer, pending
from onward.judgement.budget import ErrorBudget
from onward.judgement.confidence import Thresholds
from onward.judgement.degradation import (
    Component,
    Components,
    HealthCheck,
    Workaround,
    plan_failure,
    plan_restorations,
    plan_restore,
)
from onward.judgement.flow import FlowMonitor, FlowPolicy
from onward.judgement.rulebook import Rulebook
from onward.projections import CatchUp, Projections, TaskView, session_stream, task_stream
from onward.projections.degradation import DegradationView
from onward.runtime.boundary import Boundary, Interruption, log_interruption
from onward.runtime.registry import Registry, StepDef, parse_priority
from onward.runtime.run import CURRENT_RUN, Suspended, TaskRun, derived_id, submission_id
from onward.runtime.scheduler import RunSummary, Scheduler
from onward.runtime.worker import worker_id

__all__ = ["LEARNING_STREAM", "Engine"]

#: The stream of what people taught the engine (learned fixes); it spans sessions.
LEARNING_STREAM = "learning"


F = TypeVar("F", bound=Callable[..., Any])

_TERMINAL_OUTCOMES = ("succeeded", "failed", "cancelled", "missed")


class Engine:
    """Durable tasks and steps for one session of work.

    Open it with :meth:`Engine.open`; register functions with :meth:`task` and :meth:`step`;
    :meth:`submit` work and :meth:`run` it. It is a context manager.

    Args:
        log: an open event log (the engine closes it).
        session: the session's name; reopening the same name resumes it.
        clock: the source of time (a fake one in tests).
        sleep: how to wait for a timer (tests pass one that advances their fake clock).
        lease: seconds a worker's claim on a task lasts without news from it.
        checkpoint_every: save a projection checkpoint after this many events.
        healing: fix, retry and guard failing steps (see :mod:`onward.healing.healer`); False makes
            every step failure final at once.
        fixes: the fix registry (the built-in fixes by default).
        retries: the retry policies per error type or signature.
        retry_budget: the retries a session may schedule per window.
        breakers: when circuit breakers open, and for how long.
        seed: the seed of the retry jitter (recorded delays are never recomputed).
        thresholds: the confidence thresholds of actions (see :mod:`onward.judgement.confidence`).
        components: the components and their workaround ladders (the nine defaults when
            None; see :mod:`onward.judgement.degradation`).
        rulebook: the decision rules (the built-in ones when None; see
        :mod:`onward.judgement.rulebook`). budget: the session's error budget (10 errors per hour
        when None; see
            :mod:`onward.judgement.budget`).
        flow: when the session's rhythm counts as flowing (see :mod:`onward.judgement.flow`).
        on_interruption: called with each notice or approval request delivered to people
            (logged by default).
    """

    def __init__(
        self,
        log: EventLog,
        *,
        session: str,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lease: float = 300.0,
        checkpoint_every: int = 50_000,
        healing: bool = True,
        fixes: FixRegistry | None = None,
        retries: RetryPolicies | None = None,
        retry_budget: RetryBudget | None = None,
        breakers: BreakerPolicy | None = None,
        seed: int | None = None,
        thresholds: Thresholds | None = None,
        components: Components | None = None,
        rulebook: Rulebook | None = None,
        budget: ErrorBudget | None = None,
        flow: FlowPolicy | None = None,
        on_interruption: Callable[[Interruption], None] | None = None,
    ) -> None:
        if not session or not isinstance(session, str):
            raise UsageError(f"session must be a non-empty string, got {session!r}")
        if lease <= 0:
            raise UsageError(f"lease must be positive, got {lease}")
        self.log = log
        self.session = session
        self.clock = clock or log.clock
        self._sleep = sleep
        self.lease = lease
        self.worker = worker_id()
        self.registry = Registry()
        self._host = CatchUp(log, checkpoint_every=checkpoint_every)
        self._lock = threading.RLock()
        self._closed = False
        self._context = Context(session=session, actor=self.worker)
        self.rulebook = rulebook if rulebook is not None else Rulebook()
        self.healer: Healer | None = None
        if healing:
            self.healer = Healer(
                fixes=fixes,
                retries=retries,
                budget=retry_budget,
                breakers=breakers,
                seed=seed,
                projections=self._current_projections,
                clock=self.clock,
                rulebook=self.rulebook,
            )
        self.flow = FlowMonitor(flow)
        self.judge = Judge(
            thresholds=thresholds,
            rulebook=self.rulebook,
            projections=self._current_projections,
            defers=self._defers,
            asked=self._asked,
        )
        self.components = components if components is not None else Components()
        self.boundary = Boundary(
            self,
            budget=budget or ErrorBudget(),
            flow=self.flow,
            on_interruption=on_interruption or log_interruption,
        )
        self._host.open()
        self._open_session()

    @classmethod
    def open(
        cls,
        url: str = "sqlite:///onward.db",
        *,
        session: str = "default",
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lease: float = 300.0,
        checkpoint_every: int = 50_000,
        healing: bool = True,
        fixes: FixRegistry | None = None,
        retries: RetryPolicies | None = None,
        retry_budget: RetryBudget | None = None,
        breakers: BreakerPolicy | None = None,
        seed: int | None = None,
        thresholds: Thresholds | None = None,
        components: Components | None = None,
        rulebook: Rulebook | None = None,
        budget: ErrorBudget | None = None,
        flow: FlowPolicy | None = None,
        on_interruption: Callable[[Interruption], None] | None = None,
        **log_options: Any,
    ) -> Engine:
        """Open (or create) a log and start or resume a session on it.

        Args:
            url: the log: ``sqlite:///path``, ``memory://`` or ``postgresql://...``.
            session: the session's name; reopening it resumes its unfinished tasks.
            clock: the source of time in seconds since the epoch (``time.time`` by default).
            sleep: how to wait for a timer.
            lease: seconds a claim on a task lasts without news from its worker.
            checkpoint_every: save a projection checkpoint after this many events.
            healing: fix, retry and guard failing steps (False: failures are final at once).
            fixes: the fix registry (the built-in fixes by default).
            retries: the retry policies per error type or signature.
            retry_budget: the retries a session may schedule per window.
            breakers: when circuit breakers open, and for how long.
            seed: the seed of the retry jitter.
            thresholds: the confidence thresholds of actions.
            components: the components and their workaround ladders.
            rulebook: the decision rules (the built-in ones when None).
            budget: the session's error budget.
            flow: when the session's rhythm counts as flowing.
            on_interruption: called with each notice or approval request delivered.
            **log_options: passed to :func:`onward.events.open_log`.

        Raises:
            InvalidURL: an unsupported URL.
            LogDamaged: the log's history is corrupt or foreign.
        """
        if clock is not None:
            log_options["clock"] = clock
        log = open_log(url, **log_options)
        try:
            return cls(
                log,
                session=session,
                clock=clock,
                sleep=sleep,
                lease=lease,
                checkpoint_every=checkpoint_every,
                healing=healing,
                fixes=fixes,
                retries=retries,
                retry_budget=retry_budget,
                breakers=breakers,
                seed=seed,
                thresholds=thresholds,
                components=components,
                rulebook=rulebook,
                budget=budget,
                flow=flow,
                on_interruption=on_interruption,
            )
        except BaseException:
            log.close()
            raise

    # -- the session -----------------------------------------------------------------------

    def _open_session(self) -> None:
        projections = self._host.projections
        view = projections.sessions.sessions.get(self.session)
        stream = session_stream(self.session)
        if view is None:
            event: SessionStarted | SessionResumed = SessionStarted(
                name=self.session,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=_version(),
            )
            expected = 0
        else:
            unfinished = [t for t in self._session_tasks() if not t.terminal]
            for task in unfinished:
                if task.unknown_events:
                    raise UnknownEventType(
                        f"task {task.task_id} has {task.unknown_events} events of types this "
                        "version of onward does not know (written by a newer one?); refusing to "
                        "resume it. `onward show` can still read it."
                    )
            event = SessionResumed(reason="reopened", recovered_tasks=len(unfinished))
            expected = view.version
        transition(
            self.log,
            "session",
            self.session,
            stream,
            view.state if view else "new",
            expected,
            event,
            self._context,
        )
        self._host.catch_up()

    def _session_tasks(self) -> Iterable[TaskView]:
        return (t for t in self._host.projections.tasks.tasks.values() if t.session == self.session)

    def _current_projections(self, fresh: bool) -> Projections:
        if fresh:
            with self._lock:
                self._host.catch_up()
        return self._host.projections

    @property
    def projections(self) -> Projections:
        """The read models as of the last catch-up (call :meth:`refresh` to catch up)."""
        return self._host.projections

    def refresh(self) -> Projections:
        """Fold every event appended since the last look (by this or any other process)."""
        with self._lock:
            self._host.catch_up()
        return self._host.projections

    # -- registration ----------------------------------------------------------------------

    def task(
        self, *, name: str | None = None, priority: Priority | str = Priority.NORMAL
    ) -> Callable[[F], F]:
        """Register a function as a task: ``@engine.task()`` or ``@engine.task(priority="high")``.

        The function stays callable as before; :meth:`submit` queues it durably.

        Args:
            name: the name its tasks are stored under (the function's qualified name by default).
            priority: the default priority of its tasks.

        Raises:
            UsageError: an unknown priority.
        """
        level = parse_priority(priority)

        def register(f: F) -> F:
            self.registry.add_task(f, name, level)
            return f

        return register

    def step(
        self,
        *,
        name: str | None = None,
        at_most_once: bool = False,
        breaker: str = "",
        hints: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Register a function as a durable step: ``@engine.step()``.

        Called inside a task, its outcome is recorded once; a re-run of the task returns the
        recorded result without calling it. Called outside a task, it is a plain call.

        Args:
            name: the name its outcomes are recorded under.
            at_most_once: record the step's start first, and make recovery raise
                :class:`~onward.core.errors.StepInterrupted` instead of running it again if it was
                in flight when its worker died.
            breaker: the dependency it calls (``"search-api"``): a circuit breaker per
                dependency stops calling it while it keeps failing.
            hints: what fixes may use: which parameter is a batch size, a fallback location,
                declared defaults and alternatives (see :mod:`onward.healing.remedies`).
        """

        def register(f: F) -> F:
            definition = self.registry.add_step(f, name, at_most_once, breaker=breaker, hints=hints)
            return self._durable(definition)  # type: ignore[return-value]

        return register

    def action(
        self,
        *,
        name: str | None = None,
        impact: str = "medium",
        check: Check | None = None,
        undo: Undo | None = None,
        reversible: bool = False,
        urgent: bool = False,
        question: str = "",
        at_most_once: bool = False,
        breaker: str = "",
        hints: dict[str, Any] | None = None,
    ) -> Callable[[F], F]:
        """Register a function as an action: a durable step run by the engine's confidence.

        Before its first run in a task the engine scores it (its history, the rule that
        matches it, its reversibility, its impact, past approvals) and runs it immediately,
        monitored (then ``check``), reversibly (``undo`` on a failed check) or only once a
        human approves (the task waits durably); see :mod:`onward.judgement.actions`.

        Args:
            name: the name its outcomes and history are recorded under.
            impact: what is at stake if it goes wrong: "low", "medium" or "high".
            check: given its result, whether it did what it should; a failed check is
                handled as the step's failure.
            undo: given its result, undo its effect (makes it reversible).
            reversible: it can be undone without an ``undo`` (a draft, a dry run).
            urgent: its approval requests are never deferred while the session flows.
            question: what a human is asked when it needs approval.
            at_most_once: as for :meth:`step`.
            breaker: as for :meth:`step`.
            hints: as for :meth:`step`.

        Raises:
            UsageError: an unknown impact.
        """
        judgement = Judgement(
            impact=impact,
            check=check,
            undo=undo,
            reversible=reversible,
            urgent=urgent,
            question=question,
        )

        def register(f: F) -> F:
            definition = self.registry.add_step(
                f, name, at_most_once, breaker=breaker, hints=hints, judgement=judgement
            )
            return self._durable(definition)  # type: ignore[return-value]

        return register

    @staticmethod
    def _durable(definition: StepDef) -> Callable[..., Any]:
        fn = definition.fn

        @functools.wraps(fn)
        def durable_step(*args: Any, **kwargs: Any) -> Any:
            run = CURRENT_RUN.get()
            if run is None:
                return fn(*args, **kwargs)
            return run.call(definition, args, kwargs)

        return durable_step

    # -- submitting and steering -----------------------------------------------------------

    def submit(
        self,
        task: Callable[..., Any] | str,
        /,
        *args: Any,
        priority: Priority | str | None = None,
        deadline: float | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Queue a task durably.

        Inside a running task, the new task is its subtask (see :meth:`wait`), and submitting
        again when the parent re-runs after a crash returns the same subtask.

        Args:
            task: a registered task function or its registered name.
            *args: its positional arguments (msgspec-encodable values).
            priority: critical, high, normal or low (the task's registered default if None).
            deadline: when it must be done, in seconds since the epoch; if it is still
                queued or waiting then, it is marked as having missed its deadline.
            key: an idempotency key: submitting again with the same key in this session
                returns the first task's id and queues nothing.
            **kwargs: its keyword arguments.

        Returns:
            The task's id.

        Raises:
            NotRegistered: the task is not registered.
            UsageError: the arguments do not fit its signature, or are not encodable;
                nothing was appended.
        """
        definition = self.registry.task(task)
        self._check_open()
        try:
            definition.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UsageError(f"task {definition.name}: {exc}") from None
        level = definition.priority if priority is None else parse_priority(priority)
        if deadline is not None and not isinstance(deadline, int | float):
            raise UsageError(f"deadline must be seconds since the epoch, got {deadline!r}")
        parent = CURRENT_RUN.get()
        if parent is not None:
            parent.children += 1
            task_id = derived_id(parent.task_id, "child", str(parent.children))
        elif key is not None:
            task_id = derived_id(self.session, "key", key)
        else:
            task_id = os.urandom(8).hex()
        event = TaskSubmitted(
            name=definition.name,
            args=list(args),
            kwargs=kwargs,
            priority=level,
            deadline=None if deadline is None else float(deadline),
            key=key,
            parent=parent.task_id if parent is not None else None,
        )
        context = self._context
        if parent is not None:
            context = Context(
                session=self.session,
                actor=self.worker,
                causation_id=parent.context.causation_id,
                correlation_id=parent.context.correlation_id,
            )
        else:
            context = Context(session=self.session, actor=self.worker, correlation_id=task_id)
        try:
            self.log.append(
                task_stream(task_id),
                [event],
                expected_version=0,
                event_ids=[submission_id(task_id)],
                context=context,
            )
        except VersionConflict:
            if parent is None and key is None:
                raise
            # The same key (or the same subtask of a re-run parent) was submitted before.
        except UnencodableValue as exc:
            raise UsageError(f"task {definition.name}: arguments cannot be stored: {exc}") from exc
        return task_id

    def cancel(self, task_id: str, reason: str = "") -> None:
        """Cancel a task that has not ended (a running one stops at its next step).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task has already ended.
        """
        self._steer(task_id, TaskCancelled(reason=reason))

    def reprioritise(self, task_id: str, priority: Priority | str) -> None:
        """Change the priority of a queued or waiting task.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task is running or has ended.
        """
        level = parse_priority(priority)
        view = self.task_view(task_id)
        self._steer(task_id, TaskReprioritised(priority=level, previous=Priority(view.priority)))

    def _steer(self, task_id: str, event: TaskCancelled | TaskReprioritised) -> None:
        with self._lock:
            for _ in range(10):
                view = self.task_view(task_id)
                try:
                    transition(
                        self.log,
                        "task",
                        task_id,
                        task_stream(task_id),
                        view.state,
                        view.version,
                        event,
                        self._context,
                    )
                except VersionConflict:
                    self._host.catch_up()
                    continue
                self._host.catch_up()
                return
            raise UsageError(f"task {task_id}: too many concurrent changes, try again")

    def progress(self, fraction: float, note: str = "") -> None:
        """Checkpoint the current task's progress (inside a task).

        Args:
            fraction: how much is done, in [0, 1].
            note: a word on where it stands.

        Raises:
            UsageError: outside a task, or a fraction outside [0, 1].
        """
        run = self._current_run("progress()")
        if not 0.0 <= fraction <= 1.0:
            raise UsageError(f"progress fraction must be in [0, 1], got {fraction}")
        run.record([TaskProgressed(fraction=float(fraction), note=note)])

    def wait(self, task_ids: Iterable[str]) -> list[Any]:
        """Wait durably for subtasks (inside a task) and return their results, in order.

        If any has not ended, the task is parked (``TaskWaiting``) and re-runs once they all
        have; its completed steps replay from the log, so the wait costs no work twice.

        Raises:
            UsageError: outside a task.
            TaskFailedError, TaskCancelledError, DeadlineMissed: a subtask did not succeed.
        """
        run = self._current_run("wait()")
        ids = list(task_ids)
        with self._lock:
            self._host.catch_up()
            views = [self.task_view(t) for t in ids]
        if all(v.terminal for v in views):
            return [self.result(t) for t in ids]
        run.record([TaskWaiting(reason="subtasks", on=ids)])
        raise Suspended()

    def learn(self, signature: str, fix: str, note: str = "") -> None:
        """Record that a fix worked for an error: from now on that error gets that fix first.

        Args:
            signature: the error's signature id (``onward errors`` lists them).
            fix: the fix's name (``onward fixes`` lists the registered ones).
            note: why, for the audit.

        Raises:
            UsageError: an unknown fix, or a signature that is not a signature id.
        """
        self._check_open()
        if not signature.startswith("v") or "-" not in signature:
            raise UsageError(f"{signature!r} is not an error signature id (like v1-0123abcd...)")
        if self.healer is not None:
            self.healer.fixes.get(fix)
        self.log.append(
            LEARNING_STREAM,
            [FixLearned(fix=fix, signature=signature, source="manual", note=note)],
            expected_version=None,
            context=self._context,
        )
        self.refresh()

    def approvals(self, *, session: str | None = None) -> list[Approval]:
        """The approval requests waiting for a human, oldest first.

        Args:
            session: only this session's (every session's when None).
        """
        self._check_open()
        with self._lock:
            return pending(self._host, session)

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
        """
        return self._answer(decision_id, granted=False, note=note, by=by)

    def _answer(self, decision_id: str, *, granted: bool, note: str, by: str) -> Approval:
        self._check_open()
        with self._lock:
            request = answer(
                self.log,
                self._host,
                decision_id,
                granted=granted,
                by=by,
                note=note,
                context=self._context,
            )
        return Approval.of(request, self._host.projections)

    # -- interruptions and the session's rhythm ------------------------------------------

    def _defers(self, session: str, impact: str, urgent: bool) -> bool:
        state = self._host.projections.flow.state(session)
        return self.flow.defers(state, urgent=urgent, impact=impact)

    def _asked(self, decision_id: str, question: str, session: str) -> None:
        """An approval request not deferred: hand it to ``on_interruption`` now."""
        self.boundary.notify(
            Interruption(
                interruption_id=decision_id, kind="approval", summary=question, session=session
            )
        )

    def notify(self, summary: str, *, kind: str = "notice", urgent: bool = False) -> str:
        """Tell people something: at once, or at the next task boundary while the session flows.

        A notice that is not urgent, given while the session is flowing, is deferred
        (``InterruptionDeferred``) and delivered at the next task boundary
        (``InterruptionDelivered``); otherwise it is delivered now. Delivery calls the engine's
        ``on_interruption``.

        Args:
            summary: what to say.
            kind: what sort of interruption it is.
            urgent: never defer it.

        Returns:
            The interruption's id.
        """
        self._check_open()
        interruption_id = new_event_id()
        run = CURRENT_RUN.get()
        with self._lock:
            self._host.catch_up()
            if self._defers(self.session, "", urgent):
                deferred = InterruptionDeferred(
                    interruption_id=interruption_id, kind=kind, summary=summary
                )
                if run is not None:
                    run.record([deferred])
                else:
                    self._record_session([deferred])
                self._host.catch_up()
                return interruption_id
            self._record_session([InterruptionDelivered(interruption_id=interruption_id)])
            self._host.catch_up()
        self.boundary.notify(
            Interruption(
                interruption_id=interruption_id, kind=kind, summary=summary, session=self.session
            )
        )
        return interruption_id

    def resume(self, reason: str = "resumed by a person") -> bool:
        """Resume this session after a pause (the error budget's, say) with a fresh window.

        Returns:
            Whether it was paused.
        """
        self._check_open()
        with self._lock:
            self._host.catch_up()
            view = self._host.projections.sessions.sessions.get(self.session)
            if view is None or view.state != "paused":
                return False
            transition(
                self.log,
                "session",
                self.session,
                session_stream(self.session),
                view.state,
                view.version,
                SessionResumed(reason=reason),
                self._context,
            )
            self._host.catch_up()
        return True

    # -- graceful degradation --------------------------------------------------------------

    def component(
        self,
        name: str,
        *,
        check: HealthCheck | None = None,
        workarounds: Iterable[Workaround] = (),
        description: str = "",
    ) -> Component:
        """Register a component, or give a registered one a health check or another ladder.

        Args:
            name: its name ("search_api"; the nine defaults are "tests", "database",
                "external_api", "linting", "build", "imports", "file_io", "network" and
                "compilation").
            check: tells whether it works again; a degraded component whose check passes is
                restored at the next task boundary.
            workarounds: its ladder, best first (the registered ladder when empty).
            description: what it is.

        Raises:
            UsageError: a bad name or ladder.
        """
        return self.components.register(
            name, check=check, workarounds=tuple(workarounds), description=description
        )

    def degrade(self, component: str, *, message: str = "") -> Workaround | None:
        """Report a failed component: the engine takes the next workaround of its ladder.

        Returns the workaround to use (its name says which alternative to take). Inside a task
        the report is durable like a step: a re-run returns the recorded workaround without
        recording the failure again. When no workaround is left, a decision to pause the task
        and ask is recorded and the task waits for a human; approved, this returns None (go
        on without the component); denied, it raises :class:`ComponentUnavailable`. Outside a
        task, with no workaround left, it records the decision and returns None.

        Args:
            component: the component's name.
            message: how it failed.

        Raises:
            UsageError: an unregistered component.
            ComponentUnavailable: a human refused to go on without it.
        """
        self._check_open()
        registered = self.components.get(component)
        run = CURRENT_RUN.get()
        if run is not None:
            seen = run.degrade_calls
            run.degrade_calls += 1
            if seen < len(run.degradations):
                return self._recorded_degradation(run, registered, *run.degradations[seen])
        with self._lock:
            self._host.catch_up()
            view = self._host.projections.degradation.view(self.session)
            planned = plan_failure(self.components, view, component, message=message)
            if run is None:
                self._record_session(planned)
                self._host.catch_up()
                applied = planned[-1]
                return self._workaround(registered, getattr(applied, "workaround", ""))
        batch = run.new_batch()
        cause: str | None = None
        for event in planned:
            cause = batch.add(event, cause)
        applied = planned[-1]
        if isinstance(applied, WorkaroundApplied):
            run.commit(batch)
            run.degradations.append((component, applied.workaround, ""))
            return self._workaround(registered, applied.workaround)
        assert cause is not None
        requested = batch.add(
            ApprovalRequested(
                decision_id=cause,
                subject=run.task_id,
                question=f"component {component!r} failed with no workaround left "
                f"({message or 'no message'}): go on without it?",
                options=["approve", "deny"],
                impact="high",
            ),
            cause,
        )
        batch.add(TaskWaiting(reason=f"component {component} has no workaround left"), requested)
        run.commit(batch)
        self._asked(cause, f"component {component!r} has no workaround left", self.session)
        raise Suspended()

    def _recorded_degradation(
        self, run: TaskRun, registered: Component, component: str, workaround: str, ask: str
    ) -> Workaround | None:
        if workaround:
            return self._workaround(registered, workaround)
        answer_ = run.answers.get(ask)
        if answer_ is None:  # nobody answered yet: wait again
            run.record([TaskWaiting(reason=f"component {component} has no workaround left")])
            raise Suspended()
        granted, note = answer_
        if granted:
            return None
        raise ComponentUnavailable(component, note)

    @staticmethod
    def _workaround(registered: Component, name: str) -> Workaround | None:
        for workaround in registered.workarounds:
            if workaround.name == name:
                return workaround
        return None

    def restore(self, component: str) -> bool:
        """Say that a failed component works again (without its health check).

        Returns:
            Whether it was degraded (and is now restored).

        Raises:
            UsageError: an unregistered component.
        """
        self._check_open()
        with self._lock:
            self._host.catch_up()
            view = self._host.projections.degradation.view(self.session)
            planned = plan_restore(self.components, view, component)
            if planned:
                self._record_session(planned)
                self._host.catch_up()
        return bool(planned)

    def restore_components(self) -> int:
        """Run the health check of every failed component; restore those that pass.

        The run loop calls it at each task boundary while a component is degraded.

        Returns:
            How many were restored.
        """
        with self._lock:
            view = self._host.projections.degradation.view(self.session)
            if not view.components or all(c.state == "healthy" for c in view.components):
                return 0
            planned = plan_restorations(self.components, view)
            if planned:
                self._record_session(planned, chain=False)
                self._host.catch_up()
        return len(planned)

    def degradation(self) -> DegradationView:
        """This session's degradation: its level, quality lost and failed components."""
        return self.refresh().degradation.view(self.session)

    def workaround(self, component: str) -> str | None:
        """The workaround standing in for a component now, or None when it is not degraded.

        Raises:
            UsageError: an unregistered component.
        """
        self.components.get(component)
        view = self.refresh().degradation.component(self.session, component)
        if view is None or view.state != "degraded":
            return None
        return view.workaround or None

    def _record_session(
        self, events: Sequence[Event], *, chain: bool = True, first_cause: str = ""
    ) -> list[str]:
        """Append events to the session's stream (each caused by the one before if ``chain``,
        the first by ``first_cause``), looking again when another worker appended first."""
        stream = session_stream(self.session)
        for _ in range(20):
            view = self._host.projections.sessions.sessions.get(self.session)
            version = view.version if view is not None else 0
            ids = [new_event_id() for _ in events]
            first = first_cause or self._context.causation_id
            causes = [first, *ids[:-1]] if chain else None
            try:
                self.log.commit(
                    [
                        Append(
                            stream=stream,
                            events=events,
                            expected_version=version,
                            event_ids=ids,
                            context=self._context,
                            causes=causes,
                        )
                    ]
                )
            except VersionConflict:
                self._host.catch_up()
                continue
            return ids
        raise UsageError(f"session {self.session}: too many concurrent appends, try again")

    def idempotency_key(self) -> str:
        """The idempotency key of the step being executed: ``<task id>:<step index>``.

        Pass it to external systems so that a step re-run after a crash does its effect once.

        Raises:
            UsageError: not inside a step.
        """
        run = self._current_run("idempotency_key()")
        if run.current_step is None:
            raise UsageError("idempotency_key() is only available while a step runs")
        return run.idempotency_key(run.current_step)

    @staticmethod
    def _current_run(what: str) -> TaskRun:
        run = CURRENT_RUN.get()
        if run is None:
            raise UsageError(f"{what} can only be called inside a running task")
        return run

    # -- reading ---------------------------------------------------------------------------

    def task_view(self, task_id: str) -> TaskView:
        """What the log says about a task (as of the last catch-up).

        Raises:
            TaskNotFound: no such task.
        """
        view = self._host.projections.tasks.tasks.get(task_id)
        if view is None:
            with self._lock:
                self._host.catch_up()
            view = self._host.projections.tasks.tasks.get(task_id)
        if view is None:
            raise TaskNotFound(f"no task {task_id!r} in {self.log.url}")
        return view

    def tasks(self, state: str | None = None) -> list[TaskView]:
        """This session's tasks in submission order, optionally only those in one state."""
        self.refresh()
        found = [t for t in self._session_tasks() if state is None or t.state == state]
        return sorted(found, key=lambda t: t.order)

    def result(self, task_id: str) -> Any:
        """The recorded return value of a task that succeeded.

        Raises:
            TaskNotFound: no such task.
            NotFinished: it has not ended.
            TaskFailedError: it failed (with the recorded error type and message).
            TaskCancelledError: it was cancelled.
            DeadlineMissed: it missed its deadline.
        """
        self._check_open()
        history = self.log.read_stream(task_stream(task_id))
        if not history:
            raise TaskNotFound(f"no task {task_id!r} in {self.log.url}")
        last = history[-1].event
        if isinstance(last, TaskSucceeded):
            return last.result
        if isinstance(last, TaskFailed):
            raise TaskFailedError(task_id, last.error_type, last.message)
        if isinstance(last, TaskCancelled):
            raise TaskCancelledError(
                f"task {task_id} was cancelled: {last.reason}".rstrip(": "), task_id=task_id
            )
        if isinstance(last, TaskDeadlineMissed):
            raise DeadlineMissed(f"task {task_id} missed its deadline", task_id=task_id)
        raise NotFinished(f"task {task_id} has not finished yet")

    # -- running ---------------------------------------------------------------------------

    def run(
        self, *, workers: int = 1, max_runs: int | None = None, await_approvals: float = 0.0
    ) -> RunSummary:
        """Run this session's tasks until none is runnable.

        Tasks waiting on a timer are waited for (with the engine's ``sleep``); tasks waiting
        for other sessions' work end the run, and so do tasks waiting for a human unless
        ``await_approvals`` says to wait for the answers.

        Args:
            workers: how many tasks may run at once (threads of this process).
            max_runs: stop after starting this many task runs.
            await_approvals: seconds to keep looking for answers (from any process) while
                only approvals are left; 0 ends the run at once.

        Returns:
            What the run did.
        """
        return Scheduler(self).run(
            workers=workers, max_runs=max_runs, await_approvals=await_approvals
        )

    # -- lifecycle -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"the engine for session {self.session!r} is closed")

    def checkpoint(self) -> None:
        """Save a projection checkpoint now (reopening then reads only the tail)."""
        with self._lock:
            self._host.catch_up()
            self._host.checkpoint()

    def close(self) -> None:
        """Close the engine and its log (the session stays open: reopening resumes it)."""
        if self._closed:
            return
        self._closed = True
        self.log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("onward")
    except Exception:
        return "unknown"
