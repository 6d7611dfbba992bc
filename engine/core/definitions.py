"""What tasks, steps and actions declare: the definitions the registry holds and the policies
read.

A :class:`TaskDef` and a :class:`StepDef` are found by name (functions are never pickled); an
action's :class:`Judgement` says what is at stake when it runs (its impact, its check, its
undo), for the confidence policy (:mod:`onward.judgement.actions`) to weigh.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import msgspec

from onward.events import Priority, UsageError, decode_value, redacted_logger
from onward.events.value_types import annotations_of

__all__ = [
    "IMPACTS",
    "Check",
    "Judgement",
    "StepDef",
    "TaskDef",
    "Undo",
    "call_target",
    "default_name",
    "is_async",
    "parse_priority",
    "return_type",
    "type_hints",
]

logger = redacted_logger("onward.engine")

#: What an action may declare to be at stake, least first.
IMPACTS = ("low", "medium", "high")


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
    ``<locals>`` of an enclosing function.

    A name must be the same in every process that runs the code: only what has a qualified
    name (a function, a method, a class) gets one by default. A ``functools.partial`` or an
    object with a ``__call__`` has only its repr, which holds a memory address (and two
    partials of one function, or two objects of one class, could not be told apart by their
    function's or class's name): it is registered with ``name=``, as in Temporal.

    Raises:
        UsageError: ``fn`` has no qualified name.
    """
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not isinstance(qualname, str) or not qualname:
        kind = type(fn)
        raise UsageError(
            f"{fn!r} has no name that stays the same in another process: a "
            f"{kind.__module__}.{kind.__qualname__} object has no qualified name, only a repr "
            "that holds a memory address; register it with name=, as in "
            "engine.step(name=...)(fn) or engine.task(name=...)(fn)"
        )
    return qualname.rsplit("<locals>.", 1)[-1]


def call_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What a call of ``fn`` runs: the function a ``functools.partial`` wraps, the
    ``__call__`` of an object's class (Python looks it up there), or ``fn`` itself (a
    function, a method, a class)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.isroutine(fn) or inspect.isclass(fn):
        return fn
    return type(fn).__call__


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine to await: an ``async def`` function or
    method, a partial of one, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call_target(fn))


def type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """A function's resolved annotations by parameter name (and ``"return"``), read from what
    a call of it runs (:func:`call_target`).

    Each annotation is resolved on its own: one that does not resolve (a name imported only
    under ``TYPE_CHECKING``, with ``from __future__ import annotations``) is left out, so its
    values are taken as recorded (as for ``Any``), and a warning on the ``onward.engine``
    logger names it; the others are used.
    """
    hints, unresolved = annotations_of(call_target(fn))
    _warn_unresolved(fn, unresolved)
    return hints


def return_type(fn: Callable[..., Any]) -> Any:
    """A function's annotated return type (``Any`` when it has none or it does not resolve,
    with a warning, as :func:`type_hints` says; its parameters' annotations are not looked
    at)."""
    hints, unresolved = annotations_of(call_target(fn))
    _warn_unresolved(fn, {k: v for k, v in unresolved.items() if k == "return"})
    return hints.get("return", Any)


def _warn_unresolved(fn: Callable[..., Any], unresolved: dict[str, str]) -> None:
    for name, why in unresolved.items():
        what = "its return" if name == "return" else f"parameter {name!r}"
        logger.warning(
            "%s: the annotation of %s, %s: its values are taken as recorded, as for Any "
            "(import the name at run time for them to be rebuilt as its type)",
            getattr(fn, "__qualname__", None) or repr(fn),
            what,
            why,
        )


class Check(Protocol):
    """An action's check: given its result, whether the action did what it should."""

    def __call__(self, result: Any, /) -> bool: ...


class Undo(Protocol):
    """An action's compensation: given its result, undo its effect."""

    def __call__(self, result: Any, /) -> object: ...


class Judgement(msgspec.Struct, frozen=True, kw_only=True):
    """What an action declares for its confidence and its strategies.

    Attributes:
        impact: what is at stake if it goes wrong: "low", "medium" or "high".
        check: verifies its result (monitored and reversible runs, and approved ones).
        undo: undoes its effect when the check fails (a reversible run needs one).
        reversible: it can be undone without an ``undo`` (a dry run, a draft); True when
            ``undo`` is given.
        urgent: its approval requests are never deferred by the flow monitor.
        question: what a human is asked when it needs approval ("" for a default question).

    Raises:
        UsageError: an unknown impact.
    """

    impact: str = "medium"
    check: Check | None = None
    undo: Undo | None = None
    reversible: bool = False
    urgent: bool = False
    question: str = ""

    def __post_init__(self) -> None:
        if self.impact not in IMPACTS:
            raise UsageError(f"impact must be one of {sorted(IMPACTS)}, got {self.impact!r}")

    @property
    def can_undo(self) -> bool:
        """Whether a failed check can be undone."""
        return self.undo is not None or self.reversible


class TaskDef(msgspec.Struct, frozen=True):
    """A function registered as a task.

    Attributes:
        name: the name tasks are submitted and stored under.
        fn: the function.
        priority: the default priority of its tasks.
        signature: the function's signature, to check arguments at submit.
        is_async: it is an ``async def`` (its runs are awaited).
        annotations: its resolved annotations by parameter name: recorded arguments are
            converted back to them.
        returns: its annotated return type: its recorded result is converted back to it.
    """

    name: str
    fn: Callable[..., Any]
    priority: Priority
    signature: inspect.Signature
    is_async: bool = False
    annotations: dict[str, Any] = msgspec.field(default_factory=dict)
    returns: Any = Any

    def argument_types(
        self, positional: int, names: Iterable[str]
    ) -> tuple[list[Any], dict[str, Any]]:
        """The annotated type of each argument of a call: ``positional`` positional ones, and
        keyword ones by name (``Any`` where there is no annotation).

        Returns:
            The positional arguments' types, in order, and the keyword arguments' by name.
        """
        params = list(self.signature.parameters.values())
        plain = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        rest = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), None)
        extra = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)
        hints = self.annotations
        ordered = [
            hints.get(plain[i].name if i < len(plain) else rest or "", Any)
            for i in range(positional)
        ]
        named: dict[str, Any] = {}
        for name in names:
            param = self.signature.parameters.get(name)
            if param is not None and param.kind in (
                param.POSITIONAL_OR_KEYWORD,
                param.KEYWORD_ONLY,
            ):
                named[name] = hints.get(name, Any)
            else:
                named[name] = hints.get(extra or "", Any)
        return ordered, named

    def arguments(
        self, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """A call's arguments as recorded, converted to the parameters' annotations (bytes,
        tuples, dates and classes as they were given): every run of the task, the first and
        each replay included, gets the same values."""
        positional, named = self.argument_types(len(args), kwargs)
        return (
            [decode_value(a, t) for a, t in zip(args, positional, strict=True)],
            {k: decode_value(v, named[k]) for k, v in kwargs.items()},
        )


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
        judgement: for an action, its impact, check and undo (see
            :mod:`onward.judgement.actions`); None for a plain step.
        is_async: it is an ``async def``: only an async task may call it (it is awaited).
        timeout: seconds it may take before it fails with ``TimeoutError`` (None: no limit).
        aliases: its former names: outcomes recorded under them are its own.
        limit: the queue limit it takes a permit of before it runs ("" for none).
    """

    name: str
    fn: Callable[..., Any]
    at_most_once: bool
    returns: Any
    breaker: str = ""
    hints: dict[str, Any] = msgspec.field(default_factory=dict)
    judgement: Judgement | None = None
    is_async: bool = False
    timeout: float | None = None
    aliases: tuple[str, ...] = ()
    limit: str = ""

    def answers_to(self, name: str) -> bool:
        """Whether an outcome recorded under ``name`` is this step's (its name or a former
        one)."""
        return name == self.name or name in self.aliases
