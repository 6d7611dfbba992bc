"""A fake clock for tests: time moves only when the test, a timer or a back-off moves it."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from onward.events import UsageError

__all__ = ["FakeClock"]


class FakeClock:
    """An engine's clock that stands still until told to move.

    Pass it as the engine's ``clock`` (its ``sleep`` is then the engine's too, unless another
    is given): every timer the engine waits for (a retry's back-off, a breaker's cool-down, a
    fix's delay, ``engine.sleep``) then moves it instead of sleeping, so a test that meets
    hours of back-off runs at once. A step's ``timeout`` counts its time as well: a step body
    that moves it (``clock.advance(60)``, a slow call simulated) by its timeout or more fails
    with ``TimeoutError`` once it returns, at once, as if it had overrun in real time. Only
    the body's own moves count (see :meth:`metered`): another task's back-off that moves the
    clock while the body awaits does not time it out.

    Args:
        start: the time it shows first, in seconds since the epoch.

    Attributes:
        now: the time it shows.
        slept: the seconds the engine asked to sleep, in order.
        virtual: True: a serving worker (``serve``) with nothing to run moves it to its next
            timer through ``sleep`` instead of waiting in real time. A clock of your own may
            say so too, if its ``sleep`` moves it at once.
    """

    virtual = True

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        if isinstance(start, bool) or not (isinstance(start, int | float) and math.isfinite(start)):
            raise UsageError(f"a fake clock starts at a finite time in seconds, got {start!r}")
        self.now = float(start)
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward.

        Raises:
            UsageError: a negative or non-finite number of seconds, or no number.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise UsageError(f"a fake clock moves forward by a number of seconds, got {seconds!r}")
        try:
            later = self.now + float(seconds)
        except OverflowError:  # an int past a float's range
            later = math.inf
        if not (math.isfinite(later) and seconds >= 0):
            raise UsageError(f"a fake clock moves forward by finite seconds, got {seconds!r}")
        moves = _MOVES.get()
        if moves is not None and moves[0] is self:
            moves[1][0] += later - self.now
        self.now = later

    @contextmanager
    def metered(self) -> Iterator[Callable[[], float]]:
        """Count the seconds this clock is moved from within the block: from its context, and
        the threads and tasks started from it (a step body's own ``advance`` or ``sleep``),
        not from other tasks' (a sibling's retry back-off). The engine meters a step body
        that has a timeout so; a clock of your own may offer this too.

        Yields:
            What gives the seconds counted so far.
        """
        moved = [0.0]
        token = _MOVES.set((self, moved))
        try:
            yield lambda: moved[0]
        finally:
            _MOVES.reset(token)

    def sleep(self, seconds: float) -> None:
        """What the engine calls to wait: the clock moves by ``seconds`` at once (a wait
        already due, at most 0, moves it by nothing).

        Raises:
            UsageError: a number of seconds that is not finite, or not a number.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise UsageError(f"a fake clock sleeps a number of seconds, got {seconds!r}")
        self.slept.append(seconds)
        self.advance(max(0.0, seconds) if math.isfinite(seconds) else seconds)  # refused


# The clock a step body's context meters (see FakeClock.metered), and the seconds counted.
_MOVES: ContextVar[tuple[FakeClock, list[float]] | None] = ContextVar(
    "onward_fake_clock_moves", default=None
)
