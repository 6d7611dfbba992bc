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
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Self, Unpack, cast

import msgspec

from onward.core import fields
from onward.core.fields import MOST_SECONDS, finite, shown
from onward.events import (
    Codec,
    EventLog,
    Redactor,
    UsageError,
    open_log,
)
from onward.healing.breaker import BreakerPolicy
from onward.healing.fixes import FixRegistry
from onward.healing.healer import Healer
from onward.healing.retry import RetryBudget, RetryPolicies, RetryPolicy
from onward.judgement.actions import Judge
from onward.judgement.budget import ErrorBudget
from onward.judgement.confidence import Thresholds
from onward.judgement.degradation import Components
from onward.judgement.flow import FlowMonitor, FlowPolicy
from onward.judgement.rulebook import Rulebook
from onward.projections import Projections
from onward.runtime.boundary import Boundary
from onward.runtime.degradations import Degradations
from onward.runtime.facade import arguments
from onward.runtime.facade.components import Degrading
from onward.runtime.facade.inside import InsideATask
from onward.runtime.facade.people import LEARNING_STREAM, People
from onward.runtime.facade.registration import Registration
from onward.runtime.facade.steering import Steering
from onward.runtime.interruptions import Interruptions, log_interruption
from onward.runtime.limits import Limits
from onward.runtime.observer import OBSERVER_HOOKS
from onward.runtime.options import ENGINE_OPTIONS, EngineOptions, OpenOptions
from onward.runtime.registry import Registry
from onward.runtime.runs import Runs
from onward.runtime.scheduler import RunSummary, Scheduler
from onward.runtime.schedules import Schedules
from onward.runtime.service import serve, serve_async
from onward.runtime.session import Session
from onward.runtime.tasks import Tasks
from onward.runtime.worker import live, worker_id

__all__ = ["LEARNING_STREAM", "REGISTRATIONS_ONLY", "Engine"]

#: True while an application's module is imported for its registrations alone
#: (:func:`onward.runtime.target.load_registry`): every engine it opens with
#: :meth:`Engine.open` opens on ``memory://``, whatever log it names, so that none is created,
#: opened or appended to.
REGISTRATIONS_ONLY: ContextVar[bool] = ContextVar("REGISTRATIONS_ONLY", default=False)

#: The log options of a database file, which a ``memory://`` log does not take.
_FILE_OPTIONS = frozenset({"synchronous", "busy_timeout", "create"})

#: The class each policy-like option must be an instance of (or None, for its default).
_POLICY_OPTIONS: dict[str, type] = {
    "fixes": FixRegistry,
    "retries": RetryPolicies,
    "retry_budget": RetryBudget,
    "breakers": BreakerPolicy,
    "thresholds": Thresholds,
    "components": Components,
    "rulebook": Rulebook,
    "budget": ErrorBudget,
    "flow": FlowPolicy,
}


def _check_options(options: Mapping[str, object]) -> None:
    """Refuse an engine option of the wrong kind now, not at the first failure it would meet.

    Raises:
        UsageError: a policy-like option of another class, or a lease that is not a positive
            finite number of seconds.
    """
    for key, kind in _POLICY_OPTIONS.items():
        value = options.get(key)
        hint = ""
        if key == "retries" and isinstance(value, RetryPolicy):
            hint = "for one policy: retries=RetryPolicies(policy)"
        arguments.policy(value, kind, f"engine option {key}", hint)
    if "lease" in options:
        lease = options["lease"]
        if not (finite(lease) and 0 < lease <= MOST_SECONDS):
            raise UsageError(
                f"engine option lease must be positive and at most {MOST_SECONDS} s, got "
                f"{shown(lease)}"
            )
    _check_plain_options(options)


#: The options whose value is a flag.
_FLAGS = ("healing", "create", "verify_reads")
#: The options whose value is called (None: the default), and what with.
_CALLABLES = {
    "clock": "no arguments, returning seconds since 1970",
    "sleep": "seconds",
    "on_interruption": "an Interruption",
}


def _check_plain_options(options: Mapping[str, object]) -> None:
    """Refuse a flag, a callable, a number or an object option of the wrong kind (they failed
    later with a raw ``TypeError`` or ``AttributeError``, or were taken for their truth).

    Raises:
        UsageError: the option named, with what it takes.
    """
    for key in _FLAGS:
        if key in options and not isinstance(options[key], bool):
            raise UsageError(f"engine option {key} must be True or False, got {options[key]!r}")
    for key, takes in _CALLABLES.items():
        value = options.get(key)
        if value is not None and not callable(value):
            raise UsageError(f"engine option {key} must be a function of {takes}, got {value!r}")
    every = options.get("checkpoint_every", 0)
    if not fields.whole(every) or every < 0:
        raise UsageError(
            f"engine option checkpoint_every must be an int >= 0 (events; 0: never), got {every!r}"
        )
    seed = options.get("seed")
    if seed is not None and not fields.whole(seed):
        raise UsageError(f"engine option seed must be an int or None, got {fields.shown(seed)}")
    host = options.get("host", "x")
    if not isinstance(host, str) or not host or not host.isprintable():
        shown = repr(host) if isinstance(host, str) else fields.shown(host)
        raise UsageError(f"engine option host must be a printable, non-empty str, got {shown}")
    origin = options.get("origin", "x")
    if not isinstance(origin, str) or not origin or not origin.isprintable():
        shown = repr(origin) if isinstance(origin, str) else fields.shown(origin)
        raise UsageError(f"engine option origin must be a printable, non-empty str, got {shown}")
    for key, kind in (("codec", Codec), ("redactor", Redactor)):
        value = options.get(key)
        if value is not None and not isinstance(value, kind):
            raise UsageError(
                f"engine option {key} must be a {kind.__name__}, got {fields.shown(value)}"
            )
    observer = options.get("observer")
    if observer is not None and (
        isinstance(observer, type)  # the class, not an instance of it
        or not any(callable(getattr(observer, hook, None)) for hook in OBSERVER_HOOKS)
    ):
        raise UsageError(
            "engine option observer must be an onward.Observer (or an object with some of its "
            f"hooks: {', '.join(OBSERVER_HOOKS)}), got {fields.shown(observer)}"
        )
    synchronous = options.get("synchronous", "full")
    if not isinstance(synchronous, str):
        raise UsageError(
            f"engine option synchronous must be 'full', 'normal' or 'extra', got {synchronous!r}"
        )


def _sleep_of(clock: Callable[[], float]) -> Callable[[float], None]:
    """How an engine given no ``sleep`` waits for a timer: a virtual clock's own ``sleep``
    (a test's fake clock, ``virtual`` True), else ``time.sleep``. Waited for in real time, a
    fake clock's timers never came due: its first back-off held the run for good."""
    sleep = getattr(clock, "sleep", None)
    if getattr(clock, "virtual", False) is True and callable(sleep):
        return cast("Callable[[float], None]", sleep)
    return time.sleep


class Engine(Registration, Steering, InsideATask, People, Degrading):
    """Durable tasks and steps for one session of work.

    Open it with :meth:`Engine.open`; register functions with :meth:`task` and :meth:`step`;
    :meth:`submit` work and :meth:`run` it. It is a context manager.

    Its methods come in groups, each a module of :mod:`onward.runtime.facade`: registering
    (:class:`~onward.runtime.facade.registration.Registration`), submitting and steering tasks,
    schedules and limits (:class:`~onward.runtime.facade.steering.Steering`), what a running
    task calls (:class:`~onward.runtime.facade.inside.InsideATask`), where people come in
    (:class:`~onward.runtime.facade.people.People`) and graceful degradation
    (:class:`~onward.runtime.facade.components.Degrading`). This class holds what they share
    and the loops that run the tasks.

    Args:
        log: an open event log (the engine closes it).
        session: the session's name; reopening the same name resumes it.
        **options: the engine's options (:class:`~onward.runtime.options.EngineOptions`:
            clock, sleep, lease, checkpoint_every, healing, fixes, retries, retry_budget,
            breakers, seed, thresholds, components, rulebook, budget, flow,
            on_interruption, observer, host, origin).

    Raises:
        UsageError: a bad session name (one that holds a secret or a NUL included) or option: an
            unknown one, a policy-like one (fixes, retries, retry_budget, breakers,
            thresholds, components, rulebook, budget, flow) that is neither None nor an
            instance of its class, or a lease that is not a positive finite number.

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
        if "\x00" in session:
            # Ids derived from a session's name and a key or a schedule are joined by NUL:
            # session "a\x00key\x00b" with key "c" would be session "a" with key "b\x00key\x00c".
            raise UsageError(f"session name {session!r} holds a NUL character; choose one without")
        log.redactor.check_name(session, "session name")
        unknown = sorted(set(options) - ENGINE_OPTIONS)
        if unknown:
            raise UsageError(f"unknown engine options: {', '.join(unknown)}")
        _check_options(options)
        lease = options.get("lease", 300.0)
        self.log = log
        self.session = session
        self.clock = options.get("clock") or log.clock
        self.lease = lease
        self.worker = worker_id(options.get("host"))
        budget = options.get("budget") or ErrorBudget()
        # What the log cannot tell otherwise (the report draws the burn against the budget).
        config: dict[str, Any] = {"budget": msgspec.to_builtins(budget)}
        if "origin" in options:
            config["origin"] = options["origin"]
        self._session = Session(
            log,
            session,
            clock=self.clock,
            sleep=options.get("sleep") or _sleep_of(self.clock),
            lease=lease,
            worker=self.worker,
            checkpoint_every=options.get("checkpoint_every", 50_000),
            config=config,
        )
        self._session.observer = options.get("observer")
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
            budget=budget,
            flow=self.flow,
            degradations=self._degradations,
            interruptions=self._interruptions,
        )
        self._tasks = Tasks(self._session, self.registry)
        self._limits = Limits(self._session)
        self._schedules = Schedules(self._session, self.registry, self._tasks)
        self._runs = Runs()
        self._closing = threading.Lock()  # one close at a time; a second waits for the first
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
                redactor, payload_limit, inline_limit, synchronous, busy_timeout, create; see
                :class:`~onward.runtime.options.OpenOptions` and
                :func:`onward.events.open_log`).

        Raises:
            UsageError: an unknown option, or an option of the wrong kind (see
                :class:`Engine`).
            InvalidURL: an unsupported URL.
            StreamDamaged: the session's own history cannot be trusted (a damaged task only
                is not resumed; other sessions open as usual).
            NotALog: the path holds something else than a log (a directory, an empty, text or
                unknown file, another SQLite database); nothing was changed.
            LogDamaged: the log's history is corrupt or foreign, or its file is truncated.
            LogNotFound: ``create=False`` and there is no log there.
            BackendError: the database cannot be opened or created (a missing directory, no
                permission, a server that does not answer).
        """
        unknown = sorted(set(options) - OpenOptions.__optional_keys__)
        if unknown:
            raise UsageError(f"unknown options of Engine.open: {', '.join(unknown)}")
        _check_options(options)  # before the log is opened (or created)
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
        if REGISTRATIONS_ONLY.get():  # imported for its registrations: no log of its own
            url = "memory://"
            log_options = {k: v for k, v in log_options.items() if k not in _FILE_OPTIONS}
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

        Raises:
            UsageError: ``workers`` not an int >= 1, ``max_runs`` not an int >= 0 (or None),
                ``await_approvals`` not a number of seconds >= 0.
        """
        workers = arguments.count(workers, "run(): workers")
        max_runs = arguments.limit(max_runs, "run(): max_runs")
        await_approvals = arguments.seconds(await_approvals, "run(): await_approvals")
        scheduler = self._scheduler()
        with self._runs.under_way(scheduler):
            return scheduler.run(
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
            handle_signals: stop on SIGTERM and SIGINT, and SIGHUP unless it is ignored or
                handled already (only from the main thread).

        Returns:
            What it did.

        Raises:
            UsageError: ``workers`` not an int >= 1, or the engine is closed.
        """
        workers = arguments.count(workers, "serve(): workers")
        handle_signals = arguments.flag(handle_signals, "serve(): handle_signals")
        scheduler = self._scheduler()
        with self._runs.under_way(scheduler):
            return serve(scheduler, workers=workers, stop=stop, handle_signals=handle_signals)

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

        Raises:
            UsageError: ``concurrency`` not an int >= 1, ``max_runs`` not an int >= 0 (or
                None), ``await_approvals`` not a number of seconds >= 0.
        """
        concurrency = arguments.count(concurrency, "run_async(): concurrency")
        max_runs = arguments.limit(max_runs, "run_async(): max_runs")
        await_approvals = arguments.seconds(await_approvals, "run_async(): await_approvals")
        scheduler = self._scheduler()
        with self._runs.under_way(scheduler):
            return await scheduler.run_async(
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
            handle_signals: the first SIGTERM, SIGINT or SIGHUP (as :meth:`serve`) stops it
                gracefully, a second at once
                (when the loop runs in the main thread).

        Returns:
            What it did.

        Raises:
            UsageError: ``concurrency`` not an int >= 1, or the engine is closed.
        """
        concurrency = arguments.count(concurrency, "serve_async(): concurrency")
        handle_signals = arguments.flag(handle_signals, "serve_async(): handle_signals")
        scheduler = self._scheduler()
        with self._runs.under_way(scheduler):
            return await serve_async(
                scheduler, concurrency=concurrency, stop=stop, handle_signals=handle_signals
            )

    def _scheduler(self) -> Scheduler:
        return Scheduler(
            self._session,
            registry=self.registry,
            boundary=self.boundary,
            degradations=self._degradations,
            rulebook=self.rulebook,
            healer=self.healer,
            judge=self.judge,
            schedules=self._schedules,
            limits=self._limits,
            last_to_stop=self._runs.last_to_stop,
        )

    # -- lifecycle -------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Save a projection checkpoint now (reopening then reads only the tail)."""
        with self._session.lock:
            self._session.host.catch_up()
            self._session.host.checkpoint()

    def close(self) -> None:
        """Close the engine and its log (the session stays open: reopening resumes it).

        Runs under way (``run``, ``serve``, ``run_async``, ``serve_async``) are stopped first,
        as a worker stops on SIGTERM: they claim nothing more, each running task is handed
        back at its next step (the steps in flight end, their outcomes recorded). Called from
        another thread, this returns once they have returned and the log is closed. Called from
        a run's own context (a task, a step, an observer's hook, a signal handler that
        interrupted the thread awaiting the run), it cannot wait for what waits for it: it
        returns at once, and the engine closes as the last run returns.
        """
        self._runs.stop(self._close_now)

    def _close_now(self) -> None:
        with self._closing:
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
