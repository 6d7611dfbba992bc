"""Registered task and step functions, found by name (never pickled)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from onward.core.definitions import (
    Judgement,
    StepDef,
    TaskDef,
    default_name,
    return_type,
    type_hints,
)
from onward.core.errors import NotRegistered
from onward.events import Priority

__all__ = ["Registry"]


class Registry:
    """The tasks and steps an engine knows, by name."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}
        self.steps: dict[str, StepDef] = {}

    def add_task(self, fn: Callable[..., Any], name: str | None, priority: Priority) -> TaskDef:
        """Register ``fn`` as a task (re-registering the same name replaces it)."""
        hints = type_hints(fn)
        definition = TaskDef(
            name=name or default_name(fn),
            fn=fn,
            priority=priority,
            signature=inspect.signature(fn),
            annotations={k: v for k, v in hints.items() if k != "return"},
            returns=hints.get("return", Any),
        )
        self.tasks[definition.name] = definition
        return definition

    def add_step(
        self,
        fn: Callable[..., Any],
        name: str | None,
        at_most_once: bool,
        *,
        breaker: str = "",
        hints: dict[str, Any] | None = None,
        judgement: Judgement | None = None,
    ) -> StepDef:
        """Register ``fn`` as a step."""
        definition = StepDef(
            name=name or default_name(fn),
            fn=fn,
            at_most_once=at_most_once,
            returns=return_type(fn),
            breaker=breaker,
            hints=dict(hints or {}),
            judgement=judgement,
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
            return self.tasks[name_or_fn]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise NotRegistered(
                f"no task registered as {name_or_fn!r} (registered: {known})"
            ) from None
