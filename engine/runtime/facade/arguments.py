"""The checks of what callers pass to :class:`onward.Engine`, made before anything is appended.

An event's fields are typed (a note is a ``str``, a deadline a ``float``), and msgspec encodes
what it is given: a value of another type would be written as it is and then fail to decode,
damaging its stream for good. So every value a method of the engine puts into an event, or
looks a task up by, is checked here first, and a wrong one is refused with a
:class:`~onward.events.UsageError` that names the call and the argument.

A refused value is shown only when it is a number, a bool or None: anything else is named by
its type, since its text could hold a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from onward.core.definitions import is_async
from onward.core.fields import MOST_SECONDS, finite
from onward.events import Redactor, UsageError

__all__ = [
    "callback",
    "count",
    "flag",
    "fraction",
    "keywords",
    "limit",
    "moment",
    "name",
    "names",
    "optional_name",
    "policy",
    "positional",
    "seconds",
    "step_index",
    "text",
]


_T = TypeVar("_T")


#: Redacts what a message shows of a refused text (the default patterns: no log is at hand).
_REDACTOR = Redactor()


def _shown(value: object) -> str:
    """A refused value as a message may show it."""
    if value is None or isinstance(value, bool | int | float):
        return f"{type(value).__name__} {value!r}"
    if value == "":
        return "an empty str"
    return f"a value of type {type(value).__name__}"


def text(value: object, what: str) -> str:
    """A text argument (a reason, a note, who did it), empty or not.

    Raises:
        UsageError: it is not a ``str``, or it does not encode to UTF-8 (a lone surrogate:
            no log could store it).
    """
    if not isinstance(value, str):
        raise UsageError(f"{what} must be a str, got {_shown(value)}")
    return _stored_as_is(value, what)


def name(value: object, what: str) -> str:
    """A name or an id: a non-empty ``str``.

    Raises:
        UsageError: it is not one.
    """
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what} must be a non-empty str, got {_shown(value)}")
    return _stored_as_is(value, what)


def optional_name(value: object, what: str) -> str | None:
    """A name that may be left out (None), else a non-empty ``str``.

    Raises:
        UsageError: it is neither.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"{what} must be a non-empty str or None, got {_shown(value)}")
    return _stored_as_is(value, what)


def _stored_as_is(value: str, what: str) -> str:
    """A name or a text, which the log stores: one that does not encode to UTF-8 (a lone
    surrogate, from a file name decoded with ``surrogateescape``) is refused.

    Raises:
        UsageError: it does not encode.
    """
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            shown = _REDACTOR.redact(value)  # a secret in it stays out of the message
            raise UsageError(
                f"{what} must encode to UTF-8 (it is stored), got {shown!r}: {exc.reason}"
            ) from None
    return value


def names(values: object, what: str) -> list[str]:
    """Several names: an iterable of non-empty ``str`` (a single ``str`` is refused, not
    taken as its characters).

    Raises:
        UsageError: it is not an iterable, is a ``str``, or holds something else.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise UsageError(f"{what} must be an iterable of str (a list), got {_shown(values)}")
    found = list(values)
    for i, value in enumerate(found):
        name(value, f"{what}[{i}]")
    return found


def flag(value: object, what: str) -> bool:
    """A ``bool`` argument.

    Raises:
        UsageError: it is not a ``bool``.
    """
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be True or False, got {_shown(value)}")
    return value


def moment(value: object, what: str) -> float | None:
    """A moment in seconds since the epoch (a deadline), or None.

    Raises:
        UsageError: not a finite number (a bool, a str, NaN, infinity).
    """
    if value is None:
        return None
    if not finite(value):
        raise UsageError(
            f"{what} must be a finite number of seconds since the epoch or None, "
            f"got {_shown(value)}"
        )
    return float(value)


def seconds(value: object, what: str) -> float:
    """A duration: a finite number of seconds >= 0; one over ten years is ten years (a later
    end could not be dated; ``timeout=10**9`` stands for "for ever").

    Raises:
        UsageError: anything else.
    """
    if not finite(value) or value < 0:
        raise UsageError(f"{what} must be a finite number of seconds >= 0, got {_shown(value)}")
    return float(min(value, MOST_SECONDS))


def fraction(value: object, what: str) -> float:
    """A fraction: a number in [0, 1].

    Raises:
        UsageError: anything else.
    """
    if not finite(value) or not 0 <= value <= 1:
        raise UsageError(f"{what} must be a number in [0, 1], got {_shown(value)}")
    return float(value)


def step_index(value: object, what: str) -> int:
    """A step's index: an ``int`` >= 0.

    Raises:
        UsageError: anything else (a bool included).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{what} must be an int >= 0, got {_shown(value)}")
    return value


def count(value: object, what: str) -> int:
    """How many (workers, tasks at once): an ``int`` >= 1.

    Raises:
        UsageError: anything else (a bool, a str, a float included).
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{what} must be an int >= 1, got {_shown(value)}")
    return value


def limit(value: object, what: str) -> int | None:
    """At most how many (task runs), or None (no limit): an ``int`` >= 0.

    Raises:
        UsageError: anything else (a bool, a str, a float included).
    """
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UsageError(f"{what} must be an int >= 0 or None, got {_shown(value)}")
    return value


def positional(values: object, what: str) -> tuple[Any, ...]:
    """A task's positional arguments given as one value: a sequence (a list, a tuple), never
    a ``str`` or ``bytes`` (which would be taken as its characters).

    Raises:
        UsageError: anything else.
    """
    if isinstance(values, str | bytes | bytearray) or not isinstance(values, Sequence):
        raise UsageError(f"{what} must be a list or a tuple, got {_shown(values)}")
    return tuple(values)


def keywords(values: object, what: str) -> dict[str, Any]:
    """Keyword arguments given as one value: a mapping whose keys are ``str``.

    Raises:
        UsageError: anything else; the message names a bad key by its type only.
    """
    if not isinstance(values, Mapping):
        raise UsageError(f"{what} must be a dict, got {_shown(values)}")
    for key in values:
        if not isinstance(key, str):
            raise UsageError(f"{what} must have str keys, got a key {_shown(key)}")
    return dict(values)


def callback(value: object, what: str) -> Callable[..., Any] | None:
    """A function the engine calls later (a check, an undo), or None.

    The engine calls it as a plain function, never awaiting what it returns: an ``async def``
    one (or a partial of one, or an object whose ``__call__`` is one) would hand back a
    coroutine, which counts as true, so it is refused here rather than always passing.

    Raises:
        UsageError: it is neither callable nor None, or it is ``async def``.
    """
    if value is not None and not callable(value):
        raise UsageError(f"{what} must be a function or None, got {_shown(value)}")
    if value is not None and is_async(value):
        raise UsageError(
            f"{what} is an async def function, which the engine would call without awaiting "
            "it: give a plain def (it runs off the event loop, in a worker thread in an async "
            "def task, so it may block, or run a coroutine with asyncio.run())"
        )
    return value


def policy(value: object, kind: type[_T], what: str, hint: str = "") -> _T | None:
    """An option that is an instance of one class (a policy, a registry), or None.

    Args:
        value: the option given.
        kind: the class it must be an instance of.
        what: the option's name, for the message.
        hint: how to build one from what was given, when that is not obvious.

    Raises:
        UsageError: anything else (a dict of its settings included); the message names the
            class.
    """
    if value is None or isinstance(value, kind):
        return value
    if not hint and isinstance(value, Mapping) and issubclass(kind, msgspec.Struct):
        hint = f"{kind.__name__}(**settings) builds one from a dict"
    article = "an" if kind.__name__[:1] in "AEIOU" else "a"
    raise UsageError(
        f"{what} must be {article} {kind.__name__} or None, got {_shown(value)}"
        + (f" ({hint})" if hint else "")
    )
