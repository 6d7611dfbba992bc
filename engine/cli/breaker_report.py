"""The circuit breakers as ``onward breakers`` prints them: one row per dependency, then each
breaker's transitions.

The rows are read from :class:`onward.projections.breakers.BreakerProjection`; the JSON keys are
stable (fields are added at the end of a Struct or not at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from onward.cli.reports import moment
from onward.cli.table import iso, table
from onward.projections.breakers import BreakerProjection, BreakerView

__all__ = [
    "BreakerRow",
    "BreakersReport",
    "TransitionRow",
    "breaker_rows",
    "breakers_table",
    "transitions_table",
]


class TransitionRow(msgspec.Struct, frozen=True, kw_only=True):
    """One move of a breaker: ``source`` is "new" for its first."""

    source: str
    dest: str
    time: datetime
    position: int


class BreakerRow(msgspec.Struct, frozen=True, kw_only=True):
    """One dependency's breaker, as ``onward breakers --json`` prints it.

    ``failure_rate`` is the share of failures among the ``recent_calls`` last calls since the
    breaker last closed; ``opened_at`` and ``cooldown_until`` are those of its last opening
    (None if it never opened).
    """

    dependency: str
    state: str
    consecutive_failures: int
    failure_rate: float
    recent_calls: int
    calls: int
    failures: int
    last_failure_at: datetime | None
    opened_at: datetime | None
    cooldown_until: datetime | None
    trial_calls: int
    trial_successes: int
    trial_failures: int
    history: list[TransitionRow]


class BreakersReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward breakers --json``."""

    log: str
    position: int
    breakers: list[BreakerRow]


_BREAKER_HEADERS = (
    "DEPENDENCY", "STATE", "CONSECUTIVE", "FAIL RATE", "RECENT", "CALLS", "OPENED AT",
    "COOL-DOWN UNTIL",
)  # fmt: skip


def _when(t: float) -> datetime | None:
    return moment(t) if t else None


def _row(view: BreakerView) -> BreakerRow:
    return BreakerRow(
        dependency=view.dependency,
        state=view.state,
        consecutive_failures=view.consecutive_failures,
        failure_rate=round(view.failure_rate, 4),
        recent_calls=len(view.recent),
        calls=view.calls,
        failures=view.failures,
        last_failure_at=_when(view.last_failure_at),
        opened_at=_when(view.opened_at),
        cooldown_until=_when(view.cooldown_until),
        trial_calls=view.trial_calls,
        trial_successes=view.trial_successes,
        trial_failures=view.trial_failures,
        history=[
            TransitionRow(source=t.source, dest=t.dest, time=moment(t.time), position=t.position)
            for t in view.history
        ],
    )


def breaker_rows(breakers: BreakerProjection) -> list[BreakerRow]:
    """Every dependency's breaker, by dependency name."""
    return [_row(breakers.breakers[name]) for name in sorted(breakers.breakers)]


def _time(value: datetime | None) -> str:
    return "-" if value is None else iso(value.timestamp())


def breakers_table(rows: Sequence[BreakerRow], *, indent: str = "") -> str:
    """Breakers as a table: FAIL RATE over the RECENT calls, CALLS as ``failed/made``."""
    return table(
        _BREAKER_HEADERS,
        [
            [
                r.dependency,
                r.state,
                r.consecutive_failures,
                f"{r.failure_rate:.0%}",
                r.recent_calls,
                f"{r.failures}/{r.calls}",
                _time(r.opened_at),
                _time(r.cooldown_until),
            ]
            for r in rows
        ],
        indent=indent,
    )


def transitions_table(rows: Sequence[TransitionRow], *, indent: str = "") -> str:
    """A breaker's transitions as a table, oldest first."""
    return table(
        ["POS", "TIME", "FROM", "TO"],
        [[t.position, iso(t.time.timestamp(), "milliseconds"), t.source, t.dest] for t in rows],
        indent=indent,
    )
