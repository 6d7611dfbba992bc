"""The report's time axis: a session's time laid out left to right, its idle gaps collapsed.

A session of eight hours may work in bursts with long waits between them (a nightly job waits
for its data, an agent for a person). The axis keeps every stretch of work at its true scale and
shrinks each gap longer than :data:`GAP_SHARE` of the session (or :data:`GAP_MIN` seconds) to a
fixed :data:`COLLAPSED_WIDTH` of the axis, marked as such on the page.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

__all__ = ["COLLAPSED_WIDTH", "GAP_MIN", "GAP_SHARE", "Axis"]

#: A gap between stretches of work collapses when it is longer than this share of the session.
GAP_SHARE = 0.04
#: ... and longer than this many seconds.
GAP_MIN = 120.0
#: The share of the axis a collapsed gap takes.
COLLAPSED_WIDTH = 0.012


class Axis:
    """Maps times to positions in [0, 1] along the page's time axis.

    Args:
        pieces: ``(start, end, collapsed)`` in time order, end to end.
    """

    def __init__(self, pieces: Sequence[tuple[float, float, bool]]) -> None:
        self.pieces = list(pieces) or [(0.0, 1.0, False)]
        open_time = sum(e - s for s, e, c in self.pieces if not c) or 1.0
        collapsed = sum(1 for *_, c in self.pieces if c)
        scale = (1.0 - COLLAPSED_WIDTH * collapsed) / open_time
        self._starts = [s for s, _, _ in self.pieces]
        self._x: list[float] = []
        self._widths: list[float] = []
        x = 0.0
        for start, end, folded in self.pieces:
            width = COLLAPSED_WIDTH if folded else (end - start) * scale
            self._x.append(x)
            self._widths.append(width)
            x += width
        self.start = self.pieces[0][0]
        self.end = self.pieces[-1][1]

    @classmethod
    def of(cls, start: float, end: float, busy: Iterable[tuple[float, float]]) -> Axis:
        """The axis of a session from ``start`` to ``end`` whose work fills ``busy`` spans."""
        end = max(end, start + 1e-6)
        threshold = max(GAP_MIN, (end - start) * GAP_SHARE)
        pieces: list[tuple[float, float, bool]] = []
        cursor = start
        for first, last in sorted(busy):
            s, e = max(first, start), min(max(last, first), end)
            if s - cursor > threshold:
                pieces.append((cursor, s, True))
                cursor = s
            cursor = max(cursor, e)
        if end - cursor > threshold:
            pieces.append((cursor, end, True))
        # Fill the stretches of work between the collapsed gaps.
        filled: list[tuple[float, float, bool]] = []
        at = start
        for s, e, _ in pieces:
            if s > at:
                filled.append((at, s, False))
            filled.append((s, e, True))
            at = e
        if at < end or not filled:
            filled.append((at, end, False))
        return cls(filled)

    def x(self, time: float) -> float:
        """The position of a time, in [0, 1]."""
        i = max(0, bisect.bisect_right(self._starts, time) - 1)
        start, end, _ = self.pieces[i]
        share = 0.0 if end <= start else min(1.0, max(0.0, (time - start) / (end - start)))
        return min(1.0, max(0.0, self._x[i] + share * self._widths[i]))

    def time(self, x: float) -> float:
        """The time at a position (the inverse of :meth:`x`)."""
        i = max(0, bisect.bisect_right(self._x, x) - 1)
        start, end, _ = self.pieces[i]
        width = self._widths[i]
        share = 0.0 if width <= 0 else min(1.0, max(0.0, (x - self._x[i]) / width))
        return start + share * (end - start)

    def collapsed(self) -> list[tuple[float, float, float, float]]:
        """Each collapsed gap: its start and end times, and its start and end positions."""
        return [
            (s, e, self._x[i], self._x[i] + self._widths[i])
            for i, (s, e, c) in enumerate(self.pieces)
            if c
        ]
