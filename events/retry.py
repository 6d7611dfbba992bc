"""Events about retries: a failed step scheduled to run again after a backoff delay."""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event
from onward.events.kinds import Jitter

__all__ = ["RetryScheduled"]


class RetryScheduled(Event, frozen=True, kw_only=True):
    """A failed step will run again at a due time.

    The delay, jitter included, is computed once and recorded here; replay never recomputes it.

    Attributes:
        step_index: the step to run again.
        attempt: the number of the coming try, from 2.
        delay: the backoff delay, jitter included, in seconds.
        due: when the coming try is due, in seconds since the epoch.
        policy: the name of the retry policy that chose the delay.
        jitter: how the delay was randomised.
        error_type: the qualified type name of the error that caused the retry.
        signature: the error signature of that error ("" when not computed).
    """

    family: ClassVar[str] = "retry"

    step_index: int
    attempt: int
    delay: float
    due: float
    policy: str = ""
    jitter: Jitter = Jitter.NONE
    error_type: str = ""
    signature: str = ""
