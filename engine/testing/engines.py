"""Engines for tests: on ``memory://`` or a temporary SQLite file, on a fake clock, and with
retries due at once when asked (the no-back-off mode)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from onward.events import Jitter, UsageError
from onward.healing.retry import RetryPolicies, RetryPolicy
from onward.runtime.engine import Engine
from onward.testing.clock import FakeClock

__all__ = ["NO_BACKOFF", "open_engine"]

#: Retry policies whose retries are due a microsecond after the failure: the same attempts as
#: the default policy, no back-off to wait through (even on a real clock).
NO_BACKOFF = RetryPolicies(
    RetryPolicy(name="no-backoff", base=1e-6, multiplier=1.0, cap=1e-6, jitter=Jitter.NONE)
)


def open_engine(
    url: str = "memory://",
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], None] | None = None,
    session: str = "test",
    backoff: bool = True,
    **options: Any,
) -> Engine:
    """Open an engine for a test: on a fake clock that its timers and back-offs move.

    Args:
        url: the log (``memory://`` by default; ``sqlite:///PATH`` for a real file).
        clock: the engine's clock: a :class:`FakeClock` (a new one when None), or any other
            source of time, used as given.
        sleep: how the engine waits for a timer; when None, the fake clock's ``sleep`` (which
            moves it), or :meth:`onward.Engine.open`'s own for a clock that is not a
            :class:`FakeClock` (``time.sleep``, or the clock's own ``sleep`` when it says it is
            ``virtual``).
        session: the session's name.
        backoff: False for the no-back-off mode (:data:`NO_BACKOFF`, unless ``retries`` is
            given).
        **options: any other option of :meth:`onward.Engine.open`.

    Returns:
        The engine (close it, or use it as a context manager).

    Raises:
        UsageError: a bad option (as :meth:`onward.Engine.open`).
    """
    if not isinstance(backoff, bool):
        raise UsageError(f"backoff must be True or False, got {backoff!r}")
    clock = clock if clock is not None else FakeClock()
    if sleep is None and isinstance(clock, FakeClock):
        sleep = clock.sleep
    if sleep is not None:
        options["sleep"] = sleep
    if not backoff:
        options.setdefault("retries", NO_BACKOFF)
    return Engine.open(url, session=session, clock=clock, **options)
