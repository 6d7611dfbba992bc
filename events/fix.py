"""Events about fixes: registered remedies for an error signature, and how they fared.

A fix's success rate is a projection over these events, and it spans sessions.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from onward.events.base import Event

__all__ = ["FixAttempted", "FixFailed", "FixLearned", "FixSucceeded"]


class FixAttempted(Event, frozen=True, kw_only=True):
    """A fix was applied to an error, before the failed work is tried again.

    Attributes:
        fix: the fix's registered name.
        signature: the error signature it answers.
        step_index: the step it was applied to (None: the task as a whole).
        change: what the fix changed (arguments, settings, ...), as plain JSON values.
        again: True when the same fix is applied once more to the same step because its last
            application made progress but not enough (a batch halved again); one outcome,
            success or failure, settles all the applications of one such run.
    """

    family: ClassVar[str] = "fix"

    fix: str
    signature: str
    step_index: int | None = None
    change: dict[str, Any] = msgspec.field(default_factory=dict)
    again: bool = False


class FixSucceeded(Event, frozen=True, kw_only=True):
    """The work a fix was applied to succeeded on the next try.

    Attributes:
        fix: the fix's registered name.
        signature: the error signature it answered.
        step_index: the step it was applied to (None: the task as a whole).
    """

    family: ClassVar[str] = "fix"

    fix: str
    signature: str
    step_index: int | None = None


class FixFailed(Event, frozen=True, kw_only=True):
    """The work a fix was applied to failed again.

    Attributes:
        fix: the fix's registered name.
        signature: the error signature it answered.
        step_index: the step it was applied to (None: the task as a whole).
        message: how it failed this time ("" when not known).
    """

    family: ClassVar[str] = "fix"

    fix: str
    signature: str
    step_index: int | None = None
    message: str = ""


class FixLearned(Event, frozen=True, kw_only=True):
    """A fix became known for an error signature, so that later errors like it get it too.

    Attributes:
        fix: the fix's registered name.
        signature: the error signature (or signature pattern) it answers.
        source: where it was learned from: "manual" (a person fixed the error) or "automatic"
            (the engine found that it works).
        note: what the fix does, for people ("" when none).
    """

    family: ClassVar[str] = "fix"

    fix: str
    signature: str
    source: str = "manual"
    note: str = ""
