"""The engine: durable tasks and steps over the event log, the one obvious entry.

The engine never mutates state directly: it decides (which task to claim, whether a lease
expired, whether a deadline passed), appends the decision as events, and reads its state back
from the projections folded from the log. Reopening the same log and session resumes every
unfinished task: its completed steps return their recorded results, and execution continues at
the first step with no recorded outcome.

This facade delegates: the session's log and stream to :class:`~onward.runtime.session.Session`,
a task's run to :class:`~onward.runtime.run.TaskRun`, the loop to
:class:`~onward.runtime.scheduler.Scheduler`, task boundaries to
:class:`~onward.runtime.boundary.Boundary`, components to
:class:`~onward.runtime.degradations.Degradations`, notices to
:class:`~onward.runtime.interruptions.Interruptions`, approvals to
:mod:`onward.judgement.approvals`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from onward.core.definitions import (
    Check,
    Judgement,
    StepDef,
    Undo,
    default_name,
    parse_priority,
)
from onward.core.run import Suspended
from onward.events import (
    EventLog,
    FixLearned,
    Priority,
    StateSet,
    TaskProgressed,
    TaskWaiting,
    UnencodableValue,
    UsageError,
    open_log,
)
from onward.healing.healer import Healer
from onward.judgement.actions import Judge
from onward.judgement.approvals import Approval, answer, pending
from onward.judgement.budget import ErrorBudget
from onward.judgement.degradation import Component, Components, HealthCheck, Workaround
from onward.judgement.flow import FlowMonitor
from onward.judgement.rulebook import Rulebook
from onward.projections import Projections, TaskView, inbox_stream
from onward.projections.degradation import DegradationView
from onward.runtime.boundary import Boundary
from onward.runtime.degradations import Degradations
from onward.runtime.interruptions import Interruptions, log_interruption
from onward.runtime.options import ENGINE_OPTIONS, EngineOptions, OpenOptions
from onward.runtime.registry import Registry
from onward.runtime.run import (
    CURRENT_RUN,
    CURRENT_STEP,
    TaskRun,
    drive,
    drive_async,
    on_event_loop,
)
from onward.runtime.scheduler import RunSummary, Scheduler
from onward.runtime.service import serve, serve_async
from onward.runtime.session import Session
from onward.runtime.tasks import Tasks
from onward.runtime.worker import live, worker_id

__all__ = ["LEARNING_STREAM", "Engine"]

#: The stream of what people taught the engine (learned fixes); it spans sessions.
LEARNING_STREAM = "learning"


F = TypeVar("F", bound=Callable[..., Any])


class Engine:
    """Durable tasks and steps for one session of work.

    Open it with :meth:`Engine.open`; register functions with :meth:`task` and :meth:`step`;
    :meth:`submit` work and :meth:`run` it. It is a context manager.

    Args:
        log: an open event log (the engine closes it).
        session: the session's name; reopening the same name resumes it.
        **options: the engine's options (:class:`~onward.runtime.options.EngineOptions`:
            clock, sleep, lease, checkpoint_every, healing, fixes, retries, retry_budget,
            breakers, seed, thresholds, components, rulebook, budget, flow,
            on_interruption).

    Raises:
        UsageError: a bad session name (one that holds a secret included) or option.

    Attributes:
        log: the log.
        session: the session's name.
        clock: the source of time.
        lease: the lease of a claim, in seconds.
        worker: this engine's worker id (``host/pid/start/nonce``).
        registry: the registered tasks and steps.
        rulebook: the decision rules.
        healer: heals failing steps (None with ``healing=False``).
        judge: scores and records actions.
        flow: the flow monitor.
        components: the components and their workaround ladders.
        boundary: the policies applied between task runs.
    """

    def __init__(self, log: EventLog, *, session: str, **options: Unpack[EngineOptions]) -> None:
        if not session or not isinstance(session, str):
            raise UsageError(f"session must be a non-empty string, got {session!r}")
        log.redactor.check_name(session, "session name")
        unknown = sorted(set(options) - ENGINE_OPTIONS)
        if unknown:
            raise UsageError(f"unknown engine options: {', '.join(unknown)}")
        lease = options.get("lease", 300.0)
        if not lease > 0:
            raise UsageError(f"lease must be positive, got {lease}")
        self.log = log
        self.session = session
        self.clock = options.get("clock") or log.clock
        self.lease = lease
        self.worker = worker_id(options.get("host"))
        self._session = Session(
            log,
            session,
            clock=self.clock,
            sleep=options.get("sleep", time.sleep),
            lease=lease,
            worker=self.worker,
            checkpoint_every=options.get("checkpoint_every", 50_000),
        )
        current = self._session.current
        self.registry = Registry()
        rulebook = options.get("rulebook")
        self.rulebook = rulebook if rulebook is not None else Rulebook()
        self.healer: Healer | None = None
        if options.get("healing", True):
            self.healer = Healer(
                fixes=options.get("fixes"),
                retries=options.get("retries"),
                budget=options.get("retry_budget"),
                breakers=options.get("breakers"),
                seed=options.get("seed"),
                projections=current,
                clock=self.clock,
                rulebook=self.rulebook,
            )
        self.flow = FlowMonitor(options.get("flow"))
        self._interruptions = Interruptions(
            self._session, self.flow, options.get("on_interruption") or log_interruption
        )
        self.judge = Judge(
            thresholds=options.get("thresholds"),
            rulebook=self.rulebook,
            projections=current,
            defers=self._interruptions.defers,
            asked=self._interruptions.asked,
        )
        components = options.get("components")
        self.components = components if components is not None else Components()
        self._degradations = Degradations(self._session, self.components, self._interruptions)
        self.boundary = Boundary(
            self._session,
            budget=options.get("budget") or ErrorBudget(),
            flow=self.flow,
            degradations=self._degradations,
            interruptions=self._interruptions,
        )
        self._tasks = Tasks(self._session, self.registry)
        self._session.open()
        live(self.worker, True)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        session: str | None = None,
        **options: Unpack[OpenOptions],
    ) -> Engine:
        """Open (or create) a log and start or resume a session on it.

        Args:
            url: the log: ``sqlite:///path``, ``memory://`` or ``postgresql://...``
                (``ONWARD_DB`` when None, else ``sqlite:///onward.db``).
            session: the session's name; reopening it resumes its unfinished tasks
                (``ONWARD_SESSION`` when None, else "default").
            **options: the engine's options (see :class:`Engine`) and the log's (codec,
                redactor, payload_limit, synchronous, busy_timeout, create; see
                :class:`~onward.runtime.options.OpenOptions` and
                :func:`onward.events.open_log`).

        Raises:
            UsageError: an unknown option.
            InvalidURL: an unsupported URL.
            StreamDamaged: the session's own history cannot be trusted (a damaged task only
                is not resumed; other sessions open as usual).
            NotALog: the path holds something else than a log (a directory, an empty, text or
                unknown file, another SQLite database); nothing was changed.
            LogDamaged: the log's history is corrupt or foreign, or its file is truncated.
        """
        unknown = sorted(set(options) - OpenOptions.__optional_keys__)
        if unknown:
            raise UsageError(f"unknown options of Engine.open: {', '.join(unknown)}")
        engine_options: dict[str, Any] = {}
        log_options: dict[str, Any] = {}
        for key, value in options.items():
            (engine_options if key in ENGINE_OPTIONS else log_options)[key] = value
        if options.get("clock") is not None:
            log_options["clock"] = options["clock"]
        if url is None:
            url = os.environ.get("ONWARD_DB") or "sqlite:///onward.db"
        if session is None:
            session = os.environ.get("ONWARD_SESSION") or "default"
        log = open_log(url, **log_options)
        try:
            return cls(log, session=session, **engine_options)
        except BaseException:
            log.close()
            raise

    # -- reading the projections -----------------------------------------------------------

    @property
    def projections(self) -> Projections:
        """The read models as of the last catch-up (call :meth:`refresh` to catch up)."""
        return self._session.projections

    def refresh(self) -> Projections:
        """Fold every event appended since the last look (by this or any other process)."""
        return self._session.catch_up()

    # -- registration ----------------------------------------------------------------------

    def task(
        self,
        *,
        name: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        aliases: Sequence[str] = (),
    ) -> Callable[[F], F]:
        """Register a function as a task: ``@engine.task()`` or ``@engine.task(priority="high")``.

        The function stays callable as before; :meth:`submit` queues it durably. A task
        submitted under a name no worker has a function for waits, unregistered (``onward tasks
        --state unregistered``), until one registers it, or a person abandons it
        (:meth:`abandon`).

        Args:
            name: the name its tasks are stored under (the function's qualified name by default).
            priority: the default priority of its tasks.
            aliases: its former names: tasks submitted under them run this function (a rename
                that keeps the queued and unfinished tasks).

        Raises:
            UsageError: an unknown priority, a bad alias, or a name that holds a secret.
        """
        level = parse_priority(priority)

        def register(f: F) -> F:
            self.log.redactor.check_name(name or default_name(f), "task name")
            self.registry.add_task(f, name, level, aliases)
            return f

        return register

    def step(
        self,
        *,
        name: str | None = None,
        at_most_once: bool = False,
        breaker: str = "",
        hints: dict[str, Any] | None = None,
        timeout: float | None = None,
        aliases: Sequence[str] = (),
    ) -> Callable[[F], F]:
        """Register a function as a durable step: ``@engine.step()``, on a ``def`` or an
        ``async def``.

        Called inside a task, its outcome is recorded once; a re-run of the task returns the
        recorded result without calling it. Called outside a task, it is a plain call.

        An ``async def`` step is awaited, from an ``async def`` task only. A plain step called
        from an ``async def`` task is awaited too (``await fetch(url)``): it runs in a worker
        thread, so that the event loop never blocks.

        Args:
            name: the name its outcomes are recorded under.
            at_most_once: record the step's start first, and make recovery raise
                :class:`~onward.core.errors.StepInterrupted` instead of running it again if it was
                in flight when its worker died.
            breaker: the dependency it calls (``"search-api"``): a circuit breaker per
                dependency stops calling it while it keeps failing.
            hints: what fixes may use: which parameter is a batch size, a fallback location,
                declared defaults and alternatives (see :mod:`onward.healing.remedies`).
            timeout: seconds it may take; then it fails with ``TimeoutError``, a failure like
                any other (healed, retried, recorded). An ``async def`` step is cancelled; a
                plain one runs in a thread of its own, which goes on in the background (its
                late result is ignored).
            aliases: its former names: the outcomes recorded under them are its own (a rename
                that replays the histories recorded before it).

        Raises:
            UsageError: a bad timeout, a generator function, or a name or breaker that holds a
                secret.
        """

        def register(f: F) -> F:
            self._check_step_names(name or default_name(f), breaker)
            definition = self.registry.add_step(
                f,
                name,
                at_most_once,
                breaker=breaker,
                hints=hints,
                timeout=timeout,
                aliases=aliases,
            )
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
        timeout: float | None = None,
        aliases: Sequence[str] = (),
    ) -> Callable[[F], F]:
        """Register a function as an action: a durable step run by the engine's confidence
        (``def`` or ``async def``, as for :meth:`step`).

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
            timeout: as for :meth:`step`.
            aliases: as for :meth:`step`.

        Raises:
            UsageError: an unknown impact, a bad timeout.
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
            self._check_step_names(name or default_name(f), breaker)
            definition = self.registry.add_step(
                f,
                name,
                at_most_once,
                breaker=breaker,
                hints=hints,
                judgement=judgement,
                timeout=timeout,
                aliases=aliases,
            )
            return self._durable(definition)  # type: ignore[return-value]

        return register

    def _check_step_names(self, name: str, breaker: str) -> None:
        """Refuse a step or breaker name that holds a secret (names are stored as given)."""
        self.log.redactor.check_name(name, "step name")
        self.log.redactor.check_name(breaker, "breaker name")

    @staticmethod
    def _durable(definition: StepDef) -> Callable[..., Any]:
        """The step as its callers call it: durable inside a task, a plain call outside.

        Called on an event loop (in an ``async def`` task) every step call returns an
        awaitable; elsewhere (a plain task, or a plain step's thread) it runs in place, and an
        ``async def`` step raises ``UsageError`` at once.
        """
        fn = definition.fn

        @functools.wraps(fn)
        def durable_step(*args: Any, **kwargs: Any) -> Any:
            run = CURRENT_RUN.get()
            if run is None:
                return fn(*args, **kwargs)
            if on_event_loop():
                return run.call_async(definition, args, kwargs)
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
        return self._tasks.submit(
            definition, args, kwargs, priority=priority, deadline=deadline, key=key
        )

    def cancel(self, task_id: str, reason: str = "") -> None:
        """Cancel a task that has not ended (a running one stops at its next step).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task has already ended.
        """
        self._tasks.cancel(task_id, reason)

    def quarantine(self, task_id: str, *, reason: str = "", by: str = "") -> TaskView:
        """Set a task aside for good, so that the rest of the session proceeds.

        For a task whose history cannot be trusted (``state == "damaged"``: a record fails its
        checksum, was removed, or breaks its lifecycle), one that holds events of a newer
        onward, or one that is stuck. Appends one ``TaskQuarantined``: the task never runs
        again, :meth:`result` raises :class:`~onward.core.errors.TaskQuarantinedError`, and a
        parent waiting for it sees it end. ``onward quarantine TASK`` does the same from a
        shell.

        Args:
            task_id: the task.
            reason: why, for the audit.
            by: who sets it aside (this engine's worker id by default).

        Returns:
            The task's view afterwards (state ``quarantined``).

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task has already ended.
        """
        return self._tasks.quarantine(task_id, reason, by or self.worker)

    def reprioritise(self, task_id: str, priority: Priority | str) -> None:
        """Change the priority of a queued or waiting task.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: the task is running or has ended.
        """
        self._tasks.reprioritise(task_id, priority)

    def retry(
        self,
        task_id: str,
        *,
        by: str = "",
        reason: str = "",
        deadline: float | None = None,
    ) -> TaskView:
        """Put a failed, cancelled or missed task back in the queue as a new attempt of the
        same task: its completed steps replay from the log, and execution starts again at the
        step that failed. The decision is recorded with who asked (``onward why TASK``).

        Args:
            task_id: the task.
            by: who asks.
            reason: why, for the audit.
            deadline: its deadline from now on, in seconds since the epoch (None: none).

        Returns:
            The task's view, queued again.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it has not failed, been cancelled or missed its deadline.
        """
        return self._tasks.retry(task_id, by=by, reason=reason, deadline=deadline)

    def fork(
        self,
        task_id: str,
        *,
        from_step: int,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> str:
        """Start a new task whose first ``from_step`` steps return the recorded outcomes of
        ``task_id``'s, and whose later steps run afresh (to try another way from a point).

        The new task names its origin (``forked_from``). The first steps' side effects are not
        done again: their outcomes are taken as they were recorded, even with other arguments.

        Args:
            task_id: the task to fork.
            from_step: how many of its first steps to take as they were (each must have a
                recorded outcome).
            args: the new task's positional arguments (the origin's when None).
            kwargs: its keyword arguments (the origin's when None).

        Returns:
            The new task's id.

        Raises:
            TaskNotFound: no such task.
            UsageError: a step before ``from_step`` has no recorded outcome, or arguments that
                cannot be stored.
        """
        return self._tasks.fork(
            task_id,
            from_step=from_step,
            args=None if args is None else list(args),
            kwargs=kwargs,
        )

    def abandon(self, task_id: str, *, by: str = "", reason: str = "") -> None:
        """Fail a task that waits, unregistered, for a function nobody registers any more.

        Raises:
            TaskNotFound: no such task.
            InvalidTransition: it is not unregistered.
        """
        self._tasks.abandon(task_id, by=by, reason=reason)

    def patched(self, change_id: str) -> bool:
        """Whether the running task takes the new code path of a change (inside a task).

        New runs take it (and that is recorded); a history recorded before the change replays
        the old path, so its completed steps still match::

            if engine.patched("fetch-with-retry"):
                page = fetch_v2(url)
            else:
                page = fetch(url)

        Raises:
            UsageError: outside a task, or an empty change id.
        """
        run = self._current_run("patched()")
        if not isinstance(change_id, str) or not change_id:
            raise UsageError(f"a change id must be a non-empty string, got {change_id!r}")
        return run.patched(change_id)

    def send(self, task_id: str, topic: str, value: Any = None, *, sender: str = "") -> int:
        """Send a task a message, from anywhere (another task, another process, the CLI:
        ``onward send TASK TOPIC JSON``); the task takes it with :meth:`recv`.

        Returns:
            The message's place in the task's inbox.

        Raises:
            TaskNotFound: no such task.
            UsageError: an empty topic, or a value that cannot be stored.
        """
        return self._tasks.send(task_id, topic, value, sender=sender or self.worker)

    def recv(self, topic: str, *, timeout: float | None = None) -> Any:
        """Take the next message of ``topic`` sent to the running task (inside a task).

        Exactly once in the task's history: the message taken is recorded, and a re-run gets
        the same one. With none yet, the task waits durably (the worker is free meanwhile)
        until one comes or ``timeout`` seconds pass; then this returns None. In an ``async
        def`` task, await it.

        Raises:
            UsageError: outside a task, an empty topic, or a negative timeout.
        """
        run = self._current_run("recv()")
        if not isinstance(topic, str) or not topic:
            raise UsageError(f"recv() needs a non-empty topic, got {topic!r}")
        if timeout is not None and not (
            isinstance(timeout, int | float) and 0 <= timeout < float("inf")
        ):
            raise UsageError(f"recv() takes a timeout in seconds >= 0, got {timeout!r}")
        inbox = functools.partial(self.log.read_stream, inbox_stream(run.task_id))
        receiving = run.receiving(topic, timeout, inbox)
        if on_event_loop():
            return drive_async(receiving, run.effect_async)
        return drive(receiving, run.effect)

    def set_state(self, key: str, value: Any) -> None:
        """Publish a value of the running task's for others to read (inside a task):
        :meth:`get_state`, ``onward get TASK KEY``.

        Raises:
            UsageError: outside a task, an empty key, or a value that cannot be stored.
        """
        run = self._current_run("set_state()")
        if not isinstance(key, str) or not key:
            raise UsageError(f"set_state() needs a non-empty key, got {key!r}")
        try:
            run.record([StateSet(key=key, value=value)])
        except UnencodableValue as exc:
            raise UsageError(f"set_state({key!r}): the value cannot be stored: {exc}") from exc

    def get_state(self, task_id: str, key: str) -> Any:
        """The last value a task published under ``key`` (:meth:`set_state`).

        Raises:
            TaskNotFound: no such task.
            KeyError: it published nothing under that key.
        """
        return self._tasks.state_of(task_id, key)

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
        with self._session.lock:
            self._session.host.catch_up()
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
        self._session.check_open()
        if not signature.startswith("v") or "-" not in signature:
            raise UsageError(f"{signature!r} is not an error signature id (like v1-0123abcd...)")
        if self.healer is not None:
            self.healer.fixes.get(fix)
        self.log.append(
            LEARNING_STREAM,
            [FixLearned(fix=fix, signature=signature, source="manual", note=note)],
            expected_version=None,
            context=self._session.context,
        )
        self.refresh()

    def approvals(self, *, session: str | None = None) -> list[Approval]:
        """The approval requests waiting for a human, oldest first.

        Args:
            session: only this session's (every session's when None).
        """
        self._session.check_open()
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
        self._session.check_open()
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

    # -- interruptions and the session's rhythm ------------------------------------------

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
        self._session.check_open()
        return self._interruptions.notify(summary, kind=kind, urgent=urgent)

    def resume(self, reason: str = "resumed by a person") -> bool:
        """Resume this session after a pause (the error budget's, say) with a fresh window.

        Returns:
            Whether it was paused.
        """
        self._session.check_open()
        return self._session.resume(reason)

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
        self.log.redactor.check_name(name, "component name")
        return self._degradations.component(
            name, check=check, workarounds=workarounds, description=description
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
        self._session.check_open()
        return self._degradations.degrade(component, message=message)

    def restore(self, component: str) -> bool:
        """Say that a failed component works again (without its health check).

        Returns:
            Whether it was degraded (and is now restored).

        Raises:
            UsageError: an unregistered component.
        """
        self._session.check_open()
        return self._degradations.restore(component)

    def restore_components(self) -> int:
        """Run the health check of every failed component; restore those that pass.

        The run loop calls it at each task boundary while a component is degraded.

        Returns:
            How many were restored.
        """
        return self._degradations.restore_all()

    def degradation(self) -> DegradationView:
        """This session's degradation: its level, quality lost and failed components."""
        return self._degradations.view()

    def workaround(self, component: str) -> str | None:
        """The workaround standing in for a component now, or None when it is not degraded.

        Raises:
            UsageError: an unregistered component.
        """
        return self._degradations.workaround(component)

    def idempotency_key(self) -> str:
        """The idempotency key of the step being executed: ``<task id>:<step index>``.

        Pass it to external systems so that a step re-run after a crash does its effect once.

        Raises:
            UsageError: not inside a step.
        """
        run = self._current_run("idempotency_key()")
        index = CURRENT_STEP.get()
        if index is None:
            raise UsageError("idempotency_key() is only available while a step runs")
        return run.idempotency_key(index)

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
        return self._tasks.view(task_id)

    def tasks(self, state: str | None = None) -> list[TaskView]:
        """This session's tasks in submission order, optionally only those in one state."""
        return self._tasks.listed(state)

    def result(self, task_id: str) -> Any:
        """The recorded return value of a task that succeeded.

        Raises:
            TaskNotFound: no such task.
            NotFinished: it has not ended.
            TaskFailedError: it failed (with the recorded error type and message).
            TaskCancelledError: it was cancelled.
            DeadlineMissed: it missed its deadline.
            TaskQuarantinedError: a person set it aside.
            StreamDamaged: its history cannot be trusted (``task_view(id).damage`` says why).
            CorruptRecord: a record of its stream fails its checksum (found on this read).
            UnknownEventType: it has not ended and holds events of a newer onward.
        """
        return self._tasks.result(task_id)

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
        return self._scheduler().run(
            workers=workers, max_runs=max_runs, await_approvals=await_approvals
        )

    def serve(
        self,
        *,
        workers: int = 1,
        stop: threading.Event | None = None,
        handle_signals: bool = True,
    ) -> RunSummary:
        """Work on this session's tasks until stopped: the worker service.

        Unlike :meth:`run`, it does not return when nothing is runnable: it waits for new work
        without busy polling (a change of the log: another process's submission, an answer, a
        peer handing a task back), for timers, and for the moment a peer's claim runs out (a
        dead or paused peer's task is taken over within about one lease). While tasks run, a
        heartbeat keeps their claims (a step may outlast the lease). Any number of workers, in
        any number of processes and machines, may serve one session.

        Stopping (``stop`` set, or the first SIGTERM/SIGINT when called from the main thread
        with ``handle_signals``) claims nothing more; each running task is handed back at its
        next step (``TaskReleased``: a peer takes it at once) and the worker records that it
        stopped. A second signal stops at once (``KeyboardInterrupt``); its tasks are then
        taken over when their lease runs out.

        Args:
            workers: how many tasks may run at once (threads of this process).
            stop: set it to stop (from another thread, or a signal handler of your own).
            handle_signals: stop on SIGTERM and SIGINT (only from the main thread).

        Returns:
            What it did.

        Raises:
            UsageError: ``workers`` below 1, or the engine is closed.
        """
        return serve(self._scheduler(), workers=workers, stop=stop, handle_signals=handle_signals)

    async def run_async(
        self, *, concurrency: int = 1, max_runs: int | None = None, await_approvals: float = 0.0
    ) -> RunSummary:
        """Run this session's tasks on the running event loop until none is runnable.

        Up to ``concurrency`` tasks run at once: an ``async def`` task is awaited, a plain one
        runs in a worker thread, and every storage call runs off the loop. The step outcomes of
        tasks that end together are appended in one transaction (group commit); each task goes
        on only once its own outcome is durable. Retry waits, breaker cool-downs and
        :meth:`sleep` are durable timers that keep no slot busy.

        Cancelling it cancels its tasks: each is handed back (``TaskReleased``), and a
        cancelled await is no step failure.

        Args:
            concurrency: how many tasks may run at once.
            max_runs: stop after starting this many task runs.
            await_approvals: seconds to keep looking for answers while only approvals are
                left.

        Returns:
            What the run did.
        """
        return await self._scheduler().run_async(
            concurrency=concurrency, max_runs=max_runs, await_approvals=await_approvals
        )

    async def serve_async(
        self,
        *,
        concurrency: int = 1,
        stop: asyncio.Event | None = None,
        handle_signals: bool = True,
    ) -> RunSummary:
        """:meth:`serve` on the running event loop, with up to ``concurrency`` tasks at once
        (as :meth:`run_async` runs them).

        Args:
            concurrency: how many tasks may run at once.
            stop: set it to stop gracefully.
            handle_signals: the first SIGTERM or SIGINT stops it gracefully, a second at once
                (when the loop runs in the main thread).

        Returns:
            What it did.
        """
        return await serve_async(
            self._scheduler(), concurrency=concurrency, stop=stop, handle_signals=handle_signals
        )

    def sleep(self, seconds: float) -> Any:
        """Sleep durably inside a task: the task waits (the worker is free meanwhile) and goes
        on after ``seconds``, across crashes and restarts; a re-run returns at once once the
        sleep is recorded as over. In an ``async def`` task, await it.

        Args:
            seconds: how long, >= 0.

        Returns:
            None, or in an ``async def`` task an awaitable of None.

        Raises:
            UsageError: outside a task, or a negative or non-finite duration.
        """
        run = self._current_run("sleep()")
        if not (isinstance(seconds, int | float) and 0 <= seconds < float("inf")):
            raise UsageError(f"sleep() takes seconds >= 0, got {seconds!r}")
        if on_event_loop():
            return drive_async(run.sleeping(float(seconds)), run.effect_async)
        drive(run.sleeping(float(seconds)), run.effect)
        return None

    def _scheduler(self) -> Scheduler:
        return Scheduler(
            self._session,
            registry=self.registry,
            boundary=self.boundary,
            degradations=self._degradations,
            rulebook=self.rulebook,
            healer=self.healer,
            judge=self.judge,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Save a projection checkpoint now (reopening then reads only the tail)."""
        with self._session.lock:
            self._session.host.catch_up()
            self._session.host.checkpoint()

    def close(self) -> None:
        """Close the engine and its log (the session stays open: reopening resumes it)."""
        if self._session.closed:
            return
        self._session.closed = True
        live(self.worker, False)
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
