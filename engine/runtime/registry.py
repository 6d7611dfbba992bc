"""Registered task and step functions, found by name (never pickled)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from onward.core.errors import NotRegistered
from onward.events import Priority, UsageError
from onward.judgement.actions import Judgement

__all__ = ["Registry", "StepDef", "TaskDef", "parse_priority"]


def parse_priority(value: Priority | str) -> Priority:
    """A priority from its name.

    Raises:
        UsageError: not one of critical, high, normal, low.
    """
    try:
        return Priority(value)
    except ValueError:
        names = ", ".join(p.value for p in Priority)
        raise UsageError(f"unknown priority {value!r}: use one of {names}") from None


def default_name(fn: Callable[..., Any]) -> str:
    """The name a function is registered under by default: its qualified name, without the
    ``<locals>`` of an enclosing function."""
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn))
    return str(qualname).rsplit("<locals>.", 1)[-1]


def _return_type(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:  # unresolvable annotations: take results as recorded
        return Any


class TaskDef(msgspec.Struct, frozen=True):
    """A function registered as a task.

    Attributes:
        name: the name tasks are submitted and stored under.
        fn: the function.
        priority: the default priority of its tasks.
        signature: the function's signature, to check arguments at submit.
    """

    name: str
    fn: Callable[..., Any]
    priority: Priority
    signature: inspect.Signature


class StepDef(msgspec.Struct, frozen=True):
    """A function registered as a durable step.

    Attributes:
        name: the name its outcomes are recorded under.
        fn: the function.
        at_most_once: recovery raises instead of running it again when it was in flight.
        returns: its annotated return type: recorded results are converted back to it.
        breaker: the dependency whose circuit breaker guards it ("" for none).
        hints: what it declares for fixes (which parameter is a batch size, a fallback
            location, declared defaults...; see :mod:`onward.healing.remedies`).
        judgement: for an action, its impact, check and undo (see :mod:`onward.judgement.actions`);
            None for a plain step.
    """

    name: str
    fn: Callable[..., Any]
    at_most_once: bool
    returns: Any
    breaker: str = ""
    hints: dict[str, Any] = msgspec.field(default_factory=dict)
    judgement: Judgement | None = None


class Registry:
    """The tasks and steps an engine knows, by name."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}
        self.steps: dict[str, StepDef] = {}

    def add_task(self, fn: Callable[..., Any], name: str | None, priority: Priority) -> TaskDef:
        """Register ``fn`` as a task (re-registering the same name replaces it)."""
        definition = TaskDef(
            name=name or default_name(fn),
            fn=fn,
            priority=priority,
            signature=inspect.signature(fn),
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
            returns=_return_type(fn),
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
