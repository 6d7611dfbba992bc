"""Registered task and step functions, found by name (never pickled)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from onward.core import fields
from onward.core.definitions import (
    Judgement,
    StepDef,
    TaskDef,
    call_target,
    default_name,
    is_async,
    return_type,
    type_hints,
)
from onward.core.errors import NotRegistered
from onward.events import Priority, UsageError

__all__ = ["Registry"]


class Registry:
    """The tasks and steps an engine knows, by name."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}
        self.steps: dict[str, StepDef] = {}
        #: Former names of tasks, for the tasks submitted under them.
        self.task_aliases: dict[str, str] = {}

    def add_task(
        self,
        fn: Callable[..., Any],
        name: str | None,
        priority: Priority,
        aliases: Sequence[str] = (),
    ) -> TaskDef:
        """Register ``fn`` as a task (re-registering the same name replaces it); tasks
        submitted under one of ``aliases`` (its former names) run it too.

        Raises:
            UsageError: an alias that is the task's own name, or an empty one, a function
                whose parameters Python cannot tell (submitted arguments are checked against
                them), or a generator function (a task returns one value).
        """
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"{default_name(fn)} cannot be a task: its parameters cannot be read ({exc}); "
                "register a function that calls it"
            ) from None
        target = call_target(fn)
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise UsageError(
                f"{name or default_name(fn)} is a generator: a task returns one value "
                "(return a list)"
            )
        hints = type_hints(fn)
        definition = TaskDef(
            name=name or default_name(fn),
            fn=fn,
            priority=priority,
            signature=signature,
            is_async=is_async(fn),
            annotations={k: v for k, v in hints.items() if k != "return"},
            returns=hints.get("return", Any),
        )
        for alias in aliases:
            if not alias or alias == definition.name:
                raise UsageError(
                    f"task {definition.name}: an alias must be another, non-empty name, "
                    f"got {alias!r}"
                )
            self.task_aliases[alias] = definition.name
        self.tasks[definition.name] = definition
        return definition

    def knows(self, name: str) -> bool:
        """Whether a task submitted under ``name`` has a function here."""
        return name in self.tasks or name in self.task_aliases

    def add_step(
        self,
        fn: Callable[..., Any],
        name: str | None,
        at_most_once: bool,
        *,
        breaker: str = "",
        hints: dict[str, Any] | None = None,
        judgement: Judgement | None = None,
        timeout: float | None = None,
        aliases: Sequence[str] = (),
        limit: str = "",
    ) -> StepDef:
        """Register ``fn`` as a step; outcomes recorded under one of ``aliases`` (its former
        names) are its own.

        Raises:
            UsageError: a timeout that is not a positive number of seconds, a timeout and a
                limit on a plain function, or a function that is a generator (a step returns
                one value).
        """
        if timeout is not None and not (fields.seconds(timeout) and timeout > 0):
            raise UsageError(
                f"a step's timeout must be positive seconds (at most {fields.MOST_SECONDS}), "
                f"got {fields.shown(timeout)}"
            )
        target = call_target(fn)
        if timeout is not None and limit and not is_async(fn):
            # Timed out, a plain body runs on in its thread (nothing can stop it): the permit
            # given back then, or the retry under it, would let more bodies run than allowed.
            raise UsageError(
                f"{name or default_name(fn)}: a plain (def) step cannot have both a timeout and "
                f"a queue limit ({limit!r}): its body runs on after the timeout, past the "
                "limit; make it async def (cancelled at its timeout) or drop one of them"
            )
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise UsageError(
                f"{name or default_name(fn)} is a generator: a step returns one value "
                "(return a list)"
            )
        definition = StepDef(
            name=name or default_name(fn),
            fn=fn,
            at_most_once=at_most_once,
            returns=return_type(fn),
            breaker=breaker,
            hints=dict(hints or {}),
            judgement=judgement,
            is_async=is_async(fn),
            timeout=None if timeout is None else float(timeout),
            aliases=tuple(aliases),
            limit=limit,
        )
        self.steps[definition.name] = definition
        return definition

    def task(self, name_or_fn: str | Callable[..., Any]) -> TaskDef:
        """The task registered under a name, or for a function.

        Raises:
            NotRegistered: none is.
        """
        if callable(name_or_fn):
            for definition in self.tasks.values():
                if definition.fn is name_or_fn or getattr(name_or_fn, "__wrapped__", None) is (
                    definition.fn
                ):
                    return definition
            label = getattr(name_or_fn, "__qualname__", repr(name_or_fn))
            raise NotRegistered(
                f"{label} is not registered as a task: decorate it with @engine.task()"
            )
        try:
            return self.tasks[self.task_aliases.get(name_or_fn, name_or_fn)]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise NotRegistered(
                f"no task registered as {name_or_fn!r} (registered: {known})"
            ) from None
