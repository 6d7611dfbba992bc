"""Events about errors: what was seen, and what kind of error it is judged to be."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from onward.events.base import Event
from onward.events.kinds import ErrorKind

__all__ = ["ErrorClassified", "ErrorObserved"]


class ErrorObserved(Event, frozen=True, kw_only=True):
    """An exception was caught and fingerprinted.

    Attributes:
        signature: the error signature: a stable fingerprint of the type, the normalised
            message, the in-app frames and the cause chain.
        error_type: the exception's type name, qualified outside builtins
            (``ValueError``, ``sqlite3.OperationalError``).
        message: the exception's message (secrets redacted).
        frames: the in-app frames, outermost first, as ``module:function`` without line
            numbers.
        step_index: the step that raised (None: it was raised outside a step).
        causes: its cause chain, nearest first, each as ``Type: normalised message``.
    """

    family: ClassVar[str] = "error"

    signature: str
    error_type: str
    message: str = ""
    frames: list[str] = msgspec.field(default_factory=list)
    step_index: int | None = None
    causes: list[str] = msgspec.field(default_factory=list)


class ErrorClassified(Event, frozen=True, kw_only=True):
    """An error signature was judged transient, systemic or unknown.

    Attributes:
        signature: the error signature it judges.
        kind: the verdict.
        reason: what the verdict rests on (a rule's id, the type's default, the history, ...).
    """

    family: ClassVar[str] = "error"

    signature: str
    kind: ErrorKind
    reason: str = ""
