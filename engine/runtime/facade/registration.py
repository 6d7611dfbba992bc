"""The registration part of :class:`onward.Engine`: ``@engine.task``, ``@engine.step`` and
``@engine.action``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from onward.core.definitions import (
    Check,
    Judgement,
    StepDef,
    Undo,
    default_name,
    parse_priority,
)
from onward.events import (
    EventLog,
    Priority,
    UsageError,
)
from onward.runtime.facade import arguments
from onward.runtime.facade.steering import SUBMIT_OPTIONS
from onward.runtime.registry import Registry
from onward.runtime.run import (
    CURRENT_STEP,
    on_event_loop,
    running_task,
)
from onward.runtime.schedules import Schedules

__all__ = ["Registration"]


F = TypeVar("F", bound=Callable[..., Any])


class Registration:
    """Registering functions: tasks, steps and judged actions.

    A part of :class:`onward.Engine` (which sets the attributes below).
    """

    log: EventLog
    registry: Registry
    _schedules: Schedules

    def task(
        self,
        _function: object = None,
        /,
        *,
        name: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        aliases: Sequence[str] = (),
        schedule: str | None = None,
    ) -> Callable[[F], F]:
        """Register a function as a task: ``@engine.task()`` or ``@engine.task(priority="high")``.

        The function stays callable as before; :meth:`submit` queues it durably. A task
        submitted under a name no worker has a function for waits, unregistered (``onward tasks
        --state unregistered``), until one registers it, or a person abandons it
        (:meth:`abandon`).

        A parameter named like one of :meth:`submit`'s own options (``priority``,
        ``deadline``, ``key``) cannot be given by keyword through it, since ``submit`` takes
        that keyword for itself: it is given positionally. So it must be positional-only
        (``def fetch(bucket, key="index.html", /)``) or required (given by keyword, it is then
        reported missing); one with a default, or keyword-only, is refused here, as its value
        would be lost.

        Args:
            name: the name its tasks are stored under (the function's qualified name by default).
            priority: the default priority of its tasks.
            aliases: its former names: tasks submitted under them run this function (a rename
                that keeps the queued and unfinished tasks).
            schedule: a cron expression (``"*/15 * * * *"``, UTC): the task, which then takes
                no arguments, is submitted at each tick (see :meth:`schedule`).

        Raises:
            UsageError: an unknown priority, a bad alias or cron expression, a name that holds
                a secret or is not a str, a function whose parameters Python cannot read, or a
                parameter named like an option of :meth:`submit` that has a default or is
                keyword-only.
        """
        _with_parentheses(_function, "task")
        level = parse_priority(priority)
        arguments.optional_name(name, "task(): name")
        aliases = arguments.names(aliases, "task(): aliases")
        if schedule is not None:
            arguments.name(schedule, "task(): schedule")

        def register(f: F) -> F:
            _check_function(f, "@engine.task()")
            self.log.redactor.check_name(name or default_name(f), "task name")
            _check_parameters(f, name or default_name(f))
            definition = self.registry.add_task(f, name, level, aliases)
            if schedule is not None:
                self._schedules.set(
                    definition,
                    cron=schedule,
                    args=(),
                    kwargs={},
                    name=None,
                    missed="once",
                    priority=None,
                )
                self._schedules.retire_renamed(definition, aliases)
            return f

        return register

    def step(
        self,
        _function: object = None,
        /,
        *,
        name: str | None = None,
        at_most_once: bool = False,
        breaker: str = "",
        hints: dict[str, Any] | None = None,
        timeout: float | None = None,
        aliases: Sequence[str] = (),
        limit: str = "",
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
                late result is ignored). Under the testing kit's ``FakeClock`` the
                clock's time counts too: a body that moves the clock by its timeout or more
                (a slow call, simulated) times out when it returns (other tasks' moves of
                the clock meanwhile do not count); a body stuck in real time is still cut
                off after the timeout in real time.
            aliases: its former names: the outcomes recorded under them are its own (a rename
                that replays the histories recorded before it).
            limit: the queue limit it runs under (see :meth:`limit`): it takes a permit before
                each run, and its task waits, recorded, while none is free.

        Raises:
            UsageError: a bad timeout, a generator function, a name or breaker that holds a
                secret, or an argument of the wrong type.
        """
        _with_parentheses(_function, "step")
        _check_step_options(
            "step()",
            name=name,
            at_most_once=at_most_once,
            breaker=breaker,
            hints=hints,
            timeout=timeout,
        )
        aliases = arguments.names(aliases, "step(): aliases")
        arguments.text(limit, "step(): limit")

        def register(f: F) -> F:
            _check_function(f, "@engine.step()")
            self._check_step_names(name or default_name(f), breaker)
            self.log.redactor.check_name(limit, "limit name")
            definition = self.registry.add_step(
                f,
                name,
                at_most_once,
                breaker=breaker,
                hints=hints,
                timeout=timeout,
                aliases=aliases,
                limit=limit,
            )
            return self._durable(definition)  # type: ignore[return-value]

        return register

    def action(
        self,
        _function: object = None,
        /,
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
            UsageError: an unknown impact, a bad timeout, or an argument of the wrong type.
        """
        _with_parentheses(_function, "action")
        _check_step_options(
            "action()",
            name=name,
            at_most_once=at_most_once,
            breaker=breaker,
            hints=hints,
            timeout=timeout,
        )
        aliases = arguments.names(aliases, "action(): aliases")
        arguments.callback(check, "action(): check")
        arguments.callback(undo, "action(): undo")
        arguments.flag(reversible, "action(): reversible")
        arguments.flag(urgent, "action(): urgent")
        arguments.text(question, "action(): question")
        judgement = Judgement(
            impact=impact,
            check=check,
            undo=undo,
            reversible=reversible,
            urgent=urgent,
            question=question,
        )

        def register(f: F) -> F:
            _check_function(f, "@engine.action()")
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
        called = f"{getattr(fn, '__name__', None) or definition.name}(...)"  # as written
        what = f"step {definition.name!r}"

        @functools.wraps(fn)
        def durable_step(*args: Any, **kwargs: Any) -> Any:
            run = running_task(what)
            if run is None or CURRENT_STEP.get() is not None:
                # Outside a task; or inside another step's body, as a part of it: its outcome
                # is recorded as that step's, and a replay does not run it.
                return fn(*args, **kwargs)
            if on_event_loop():  # left unawaited, the task fails saying so
                return run.hand(called, run.call_async(definition, args, kwargs))
            return run.call(definition, args, kwargs)

        return durable_step


def _with_parentheses(given: object, decorator: str) -> None:
    """Refuse a decorator used bare (``@engine.task`` above a function, which hands it the
    function): it takes keywords only, and is written with parentheses.

    Raises:
        UsageError: something was given.
    """
    if given is None:
        return
    what = (
        f"the function {given.__name__!r}"
        if callable(given) and hasattr(given, "__name__")
        else "a positional argument"
    )
    raise UsageError(
        f"@engine.{decorator} was given {what}: write @engine.{decorator}() with parentheses "
        f"(its options are keywords: @engine.{decorator}(name=...))"
    )


def _check_function(f: object, what: str) -> None:
    """Refuse to register what is not a function."""
    if not callable(f):
        raise UsageError(f"{what} registers a function, got a value of type {type(f).__name__}")


def _check_parameters(f: Callable[..., Any], task: str) -> None:
    """Refuse a task whose parameter named like an option of ``submit`` could only be given by
    keyword, or would silently keep its default: ``submit`` takes that keyword for itself."""
    try:
        parameters = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        return  # the registry refuses it, saying why
    for parameter in parameters:
        if parameter.name not in SUBMIT_OPTIONS or parameter.kind not in (
            parameter.POSITIONAL_OR_KEYWORD,
            parameter.KEYWORD_ONLY,
        ):
            continue
        if parameter.kind is parameter.KEYWORD_ONLY or parameter.default is not parameter.empty:
            how = "is keyword-only" if parameter.kind is parameter.KEYWORD_ONLY else "has a default"
            raise UsageError(
                f"task {task}: its parameter {parameter.name!r} {how}, but submit() takes "
                f"{parameter.name}= as its own option, so a value given by that keyword would "
                f"never reach the task: make {parameter.name!r} positional-only (before a `/` "
                "in the signature) or rename it"
            )


def _check_step_options(
    what: str,
    *,
    name: str | None,
    at_most_once: bool,
    breaker: str,
    hints: dict[str, Any] | None,
    timeout: float | None,
) -> None:
    """Check the options a step and an action share (the registry checks the timeout's
    value, once it is not a bool: ``True`` is no number of seconds)."""
    arguments.optional_name(name, f"{what}: name")
    arguments.flag(at_most_once, f"{what}: at_most_once")
    arguments.text(breaker, f"{what}: breaker")
    if hints is not None:
        arguments.keywords(hints, f"{what}: hints")
    if isinstance(timeout, bool):
        raise UsageError(f"{what}: timeout must be positive seconds, got bool {timeout!r}")
