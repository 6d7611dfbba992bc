"""What the policies' checks of their fields share: a finite number, a whole number, and how a
refused value is shown in the error (a number as it is, anything else by its type only, so
that a secret given by mistake is never echoed)."""

from __future__ import annotations

import math
from typing import TypeGuard

__all__ = ["MOST_SECONDS", "finite", "seconds", "shown", "whole"]

#: The longest duration a policy takes (ten years): a longer one could not be dated (a wait
#: due past year 9999 breaks the clocks and the reports that show it).
MOST_SECONDS = 10 * 366 * 86400


def finite(value: object) -> TypeGuard[int | float]:
    """Whether it is a finite number (a bool is none: ``True`` is no number of seconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def seconds(value: object, *, least: float = 0.0) -> TypeGuard[int | float]:
    """Whether it is a number of seconds in ``[least, MOST_SECONDS]`` (a bool is none)."""
    return finite(value) and least <= value <= MOST_SECONDS


def whole(value: object) -> TypeGuard[int]:
    """Whether it is an int (a bool is none)."""
    return isinstance(value, int) and not isinstance(value, bool)


def shown(value: object) -> str:
    """A refused value as a message shows it: a number as it is, anything else by its type."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str) and not value:
        return "an empty str"
    return f"a value of type {type(value).__name__}"
