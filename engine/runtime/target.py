"""Where an application's engine is: a ``MODULE:ENGINE`` target, as ``onward worker`` and
``onward.testing`` take it."""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from pathlib import Path
from types import ModuleType

from onward.core.run import error_message
from onward.events import OnwardError, UsageError
from onward.runtime.engine import REGISTRATIONS_ONLY, Engine
from onward.runtime.registry import Registry

__all__ = ["load_engine", "load_registry"]


def load_engine(target: str) -> Engine:
    """Import ``module:attribute`` (from the current directory too) and return its engine: the
    attribute itself, or what it returns when it is a function.

    Raises:
        UsageError: a malformed target, a module that does not import, or an attribute that
            is missing or is not an engine (nor a function returning one).
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(f"expected MODULE:ENGINE (like myapp.jobs:engine), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r}: {exc}") from exc
    except OnwardError:
        raise  # the module opened its engine, and that failed: the error says why
    except Exception as exc:  # the user's module failed as it ran: say where, not a traceback
        raise _failed(f"importing {module_name!r}", exc) from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise UsageError(f"module {module_name!r} has no {attribute!r}") from None
    if not isinstance(found, Engine) and callable(found):
        # A task or a step is no factory: called here, its body would run outside the log,
        # its effects done by a mistyped target (the task's name for the engine's).
        registered = _registered(module, found)
        if registered is not None:
            raise UsageError(
                f"{target} is the {registered}, not an onward Engine: name the engine "
                "(MODULE:ENGINE)"
            )
        try:
            found = found()
        except OnwardError:
            raise  # the function opened its engine, and that failed: the error says why
        except Exception as exc:  # a missing setting, a function that takes arguments
            raise _failed(f"calling {target}()", exc) from exc
    if not isinstance(found, Engine):
        kind = type(found).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise UsageError(f"{target} is {article} {kind}, not an onward Engine")
    return found


def load_registry(target: str) -> Registry:
    """The tasks and steps registered on an application's engine (``MODULE:ENGINE``), read
    without touching its log: while the module is imported, the engines it opens with
    :meth:`Engine.open` open on ``memory://`` (none of its logs is created, opened or appended
    to), and the engine is closed at once.

    Raises:
        UsageError: as :func:`load_engine`.
    """
    token = REGISTRATIONS_ONLY.set(True)
    try:
        engine = load_engine(target)
    finally:
        REGISTRATIONS_ONLY.reset(token)
    try:
        return engine.registry
    finally:
        engine.close()


def _registered(module: ModuleType, found: object) -> str | None:
    """What ``found`` is registered as in an engine of ``module`` (``"task 'triage' of
    jobs:engine"``), or None: not a task or step of any engine the module holds."""
    for attribute, value in vars(module).items():
        if not isinstance(value, Engine):
            continue
        for kind, definitions in (("task", value.registry.tasks), ("step", value.registry.steps)):
            for definition in definitions.values():
                if found is definition.fn or getattr(found, "__wrapped__", None) is definition.fn:
                    return f"{kind} {definition.name!r} of {module.__name__}:{attribute}"
    return None


def _failed(what: str, exc: Exception) -> UsageError:
    """The error of the user's code that failed as the target was loaded: what, and where
    (one line, not a traceback)."""
    frames = traceback.extract_tb(exc.__traceback__)
    # The deepest line of the user's own code (not of the standard library, nor of onward).
    others = ("<", sysconfig.get_paths()["stdlib"], str(Path(__file__).resolve().parents[1]))
    own = [f for f in frames if not f.filename.startswith(others)]
    where = f" ({own[-1].filename}, line {own[-1].lineno})" if own else ""
    # Redacted and bounded, as every message onward writes (a token in a missing setting).
    return UsageError(f"{what} failed: {type(exc).__name__}: {error_message(exc)}{where}")
