"""Registered task and step functions, found by name (never pickled)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
from onward.events import Priority, UsageError, redacted_logger

__all__ = ["Registry"]

logger = redacted_logger("onward.engine")

_Def = TypeVar("_Def", TaskDef, StepDef)


class Registry:
    """The tasks and steps an engine knows, by name."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDef] = {}
        self.steps: dict[str, StepDef] = {}
        #: Former names of tasks, for the tasks submitted under them.
        self.task_aliases: dict[str, str] = {}
        #: Former names of steps, for the outcomes recorded under them.
        self.step_aliases: dict[str, str] = {}

    def add_task(
        self,
        fn: Callable[..., Any],
        name: str | None,
        priority: Priority,
        aliases: Sequence[str] = (),
    ) -> TaskDef:
        """Register ``fn`` as a task; tasks submitted under one of ``aliases`` (its former
        names) run it too. A name is taken once: the same function registered again, or
        defined again (its module reloaded, a notebook's cell run again), replaces it.

        Raises:
            UsageError: an alias that is the task's own name, or an empty one, a function
                whose parameters Python cannot tell (submitted arguments are checked against
                them), a generator function (a task returns one value), or a name another
                function has (see :func:`_check_name`).
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
        _check_name("task", definition.name, self.tasks.get(definition.name), fn)
        _add_aliases("task", definition, aliases, self.tasks, self.task_aliases)
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
        names) are its own. A name is taken once, as a task's is (:meth:`add_task`), and so
        is an alias.

        Raises:
            UsageError: a timeout that is not a positive number of seconds, a timeout and a
                limit on a plain function, a function that is a generator (a step returns
                one value), a name another function has (see :func:`_check_name`), a name
                that is another step's alias, or an alias that is the step's own name, empty,
                or another step's name or alias.
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
        _check_name("step", definition.name, self.steps.get(definition.name), fn)
        _add_aliases("step", definition, aliases, self.steps, self.step_aliases)
        self.steps[definition.name] = definition
        return definition

    def task(self, name_or_fn: str | Callable[..., Any]) -> TaskDef:
        """The task registered under a name, or for a function.

        Raises:
            NotRegistered: none is.
        """
        if callable(name_or_fn):
            # A method is bound anew at each attribute access: equal to the registered one (the
            # same function of the same object), not the same. Two methods compare by their
            # object's identity, never by its __eq__.
            method = inspect.ismethod(name_or_fn)
            for definition in self.tasks.values():
                if (
                    definition.fn is name_or_fn
                    or getattr(name_or_fn, "__wrapped__", None) is definition.fn
                    or (method and inspect.ismethod(definition.fn) and definition.fn == name_or_fn)
                ):
                    return definition
            label = getattr(name_or_fn, "__qualname__", repr(name_or_fn))
            function = getattr(name_or_fn, "__func__", None) if method else None
            if function is not None and any(d.fn is function for d in self.tasks.values()):
                # @engine.task() in a class's body registers the function, which takes the
                # object as its first argument: no object can be a task's argument.
                raise NotRegistered(
                    f"{label} is registered as its class's function, not as this object's "
                    "method: a task's arguments are stored, and an object cannot be; register "
                    f"the object's method (engine.task()(obj.{function.__name__})) or make it "
                    "a staticmethod"
                )
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


def _add_aliases(
    kind: str,
    definition: _Def,
    aliases: Sequence[str],
    registered: dict[str, _Def],
    former: dict[str, str],
) -> None:
    """Take ``aliases`` as former names of ``definition`` (a task's or a step's), in
    ``former``: refused when the definition's own name is another's former name, or when an
    alias is empty, its own name, or another definition's name or alias (what is recorded or
    submitted under it would be either's). A definition registered again renamed, its old
    name now an alias, replaces the old registration.

    Raises:
        UsageError: as above.
    """
    name = definition.name
    taken_as = former.get(name)
    if taken_as is not None and taken_as != name:
        raise UsageError(
            f"{kind} name {name!r} is a former name of {kind} {taken_as!r} (an alias: "
            f"{_UNDER_ALIAS[kind][0]}); give this one another name"
        )
    renamed = []
    for alias in aliases:
        if not alias or alias == name:
            raise UsageError(
                f"{kind} {name}: an alias must be another, non-empty name, got {alias!r}"
            )
        owner = former.get(alias, name)
        held = registered.get(alias)
        if held is not None and _renamed(held.fn, definition.fn):
            renamed.append(alias)  # this definition, run again renamed (its old name an alias)
            continue
        if held is not None or owner != name:
            other = alias if held is not None else owner
            raise UsageError(
                f"{kind} {name}: its alias {alias!r} is taken by {kind} {other!r} "
                f"({_UNDER_ALIAS[kind][1]})"
            )
    for alias in renamed:
        logger.warning("%s %r is renamed %r: it replaces the one before", kind, alias, name)
    for alias in aliases:
        registered.pop(alias, None)
        former[alias] = name


#: What goes by a former name, for the messages of :func:`_add_aliases`: under one alias,
#: and under one that two definitions would share.
_UNDER_ALIAS = {
    "task": (
        "the tasks submitted under it run that one",
        "the tasks submitted under it would run either",
    ),
    "step": (
        "the outcomes recorded under it are that one's",
        "an outcome recorded under it would be taken for either's",
    ),
}


def _check_name(
    kind: str, name: str, registered: TaskDef | StepDef | None, fn: Callable[..., Any]
) -> None:
    """Refuse a name that another function has: the name is what the log records, and the
    tasks and outcomes recorded under it would run or replay through whichever registered
    last (the import order, or the call order of a factory).

    A callable is its function (wrappers looked through: ``functools.wraps``, onward's own)
    and what it binds (a partial's arguments, a method's object, a callable object itself).
    The same function binding the same things replaces it (registered again, through another
    wrapper, with other options). So does the same definition run again, with a warning: a
    module reloaded, a notebook's cell run twice, a module run as ``__main__`` and imported
    too (the same module and qualified name, or the same source file and line).

    Raises:
        UsageError: ``name`` is registered to a function defined elsewhere, to another
            function made by the same code in a function (a factory's), or to the same
            function binding other things (another partial, another object's method).
    """
    if registered is None or registered.fn is fn:
        return
    (old, old_binding), (new, new_binding) = _parts(registered.fn), _parts(fn)
    if old is new:
        same = _same_binding(old_binding, new_binding)
        if same is False:
            raise UsageError(
                f"{kind} name {name!r} is taken by another callable of the same function "
                f"({_place(new)}) binding other arguments or another object: the log knows a "
                f"{kind} by its name alone; give each its own name with name="
            )
        if same is None:
            logger.warning(
                "%s %r is registered again, to %s binding what cannot be compared: it "
                "replaces the one before",
                kind,
                name,
                _place(new),
            )
        return
    if "<locals>" in _place(new) and _code(old) is _code(new):
        raise UsageError(
            f"{kind} name {name!r} is taken by another function made by the same code "
            f"({_place(new)}), as a factory makes them: the log knows a {kind} by its name "
            "alone; give each its own name with name="
        )
    if _same_source(old, new):
        logger.warning(
            "%s %r is registered again, to %s: it replaces the one before (a module reloaded, "
            "a notebook's cell run again)",
            kind,
            name,
            _place(new),
        )
        return
    raise UsageError(
        f"{kind} name {name!r} is taken by {_place(old)}: {_place(new)} cannot have it too "
        f"(the log knows a {kind} by its name alone); give one of them its own name with name="
    )


#: What a callable binds besides its function: nothing, a partial's arguments, an object.
_Binding = tuple[str, Any]
_UNBOUND: _Binding = ("", None)


def _parts(fn: Any) -> tuple[Any, _Binding]:
    """A callable's function (wrappers looked through) and what it binds."""
    for _ in range(100):  # a chain of wrappers, however long (a cycle ends here)
        if isinstance(fn, functools.partial):
            func, binding = _parts(fn.func)
            return func, ("partial", (binding, fn.args, fn.keywords))
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is None or wrapped is fn:
            break
        fn = wrapped
    if inspect.ismethod(fn):
        return fn.__func__, ("object", fn.__self__)
    if inspect.isroutine(fn) or inspect.isclass(fn):
        return fn, _UNBOUND
    return type(fn).__call__, ("object", fn)  # a callable object: its class's __call__


def _renamed(registered: Callable[..., Any], fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is the definition of ``registered`` run again (or it again)."""
    (old, old_binding), (new, new_binding) = _parts(registered), _parts(fn)
    if old is new:
        return _same_binding(old_binding, new_binding) is not False
    return _same_source(old, new)


def _same_binding(old: _Binding, new: _Binding) -> bool | None:
    """Whether two bindings of one function are the same (None: they cannot be compared)."""
    if old[0] != new[0]:
        return False
    if old[1] is new[1]:
        return True
    try:
        return bool(old[1] == new[1])
    except Exception:  # a comparison that raises, or gives what is no bool (an array)
        return None


def _code(fn: Any) -> Any:
    """A function's code object (None for what has none: a class, a builtin)."""
    return getattr(getattr(fn, "__func__", fn), "__code__", None)


def _same_source(old: Any, new: Any) -> bool:
    """Whether two definitions are one definition run again: the same module and qualified
    name (but for lambdas, which share theirs), or the same source file (a real one: not
    ``<string>``, which all code made from text shares) and first line."""
    old_code, new_code = _code(old), _code(new)
    same_line = (
        old_code is not None
        and new_code is not None
        and not new_code.co_filename.startswith("<")
        and (old_code.co_filename, old_code.co_firstlineno)
        == (new_code.co_filename, new_code.co_firstlineno)
    )
    return same_line or (_place(old) == _place(new) and "<lambda>" not in _place(new))


def _place(fn: Callable[..., Any]) -> str:
    """Where a function is defined: its module and full qualified name."""
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}"
