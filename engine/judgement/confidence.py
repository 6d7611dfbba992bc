"""Confidence-based execution: a score from documented factors, a strategy from the score.

An **action** is a step whose way of running depends on how sure the engine is of it
(``@engine.action(...)``). Before its first run the engine scores it, in [0, 1], as the weighted
mean of five factors, each in [0, 1] (weights in :data:`WEIGHTS`):

========================  ======  =============================================================
factor                    weight  value
========================  ======  =============================================================
``history``               0.35    (passed + 1) / (runs + 2): its checked runs, across sessions
``clarity``               0.15    how specific the rule that matched it is (0.5 with no rule)
``reversibility``         0.20    1.0 when it declares an ``undo`` (or ``reversible=True``), else 0
``impact``                0.20    low 1.0, medium 0.6, high 0.2 (the less at stake, the surer)
``approvals``             0.10    (granted + 1) / (granted + denied + 2): humans' past answers
========================  ======  =============================================================

The score picks the strategy by the thresholds in force (:class:`Thresholds`):

- above ``immediate`` (0.9): **immediate**, run it;
- above ``monitored`` (0.7): **monitored**, run it, then its declared ``check``; a failed check
  is handled as the step's failure (fix, retry or give up);
- above ``reversible`` (0.5): **reversible**, run it, check it, and run its declared ``undo``
  when the check fails (an action with no ``undo`` cannot run reversibly: it asks instead);
- otherwise **ask**: an approval is requested and the task waits durably for the answer.

A rule of the rulebook (scenario ``"action"``) may force a strategy.

The thresholds adapt to outcomes by one bounded rule (:meth:`Thresholds.adapt`): a failed check
of an action the engine ran alone, or a refused approval, raises every threshold by ``step``
(more caution); ``streak`` passed checks in a row lower them by ``step / 2``. Each threshold
stays within its bounds (:data:`BOUNDS`), and every adjustment is a
:class:`onward.events.ThresholdsAdjusted` event.
"""

from __future__ import annotations

from typing import Any

import msgspec

from onward.core.fields import shown
from onward.events import Strategy, UsageError

__all__ = [
    "BOUNDS",
    "IMPACTS",
    "WEIGHTS",
    "Factors",
    "Thresholds",
    "impact_factor",
    "score",
]

#: The weight of each factor in the score (they sum to 1).
WEIGHTS: dict[str, float] = {
    "history": 0.35,
    "clarity": 0.15,
    "reversibility": 0.20,
    "impact": 0.20,
    "approvals": 0.10,
}

#: The factor for each declared impact.
IMPACTS: dict[str, float] = {"low": 1.0, "medium": 0.6, "high": 0.2}

#: Each threshold's bounds: adaptation never moves it outside them.
BOUNDS: dict[str, tuple[float, float]] = {
    "immediate": (0.80, 0.98),
    "monitored": (0.60, 0.89),
    "reversible": (0.40, 0.69),
}


def impact_factor(impact: str) -> float:
    """The ``impact`` factor of a declared impact ("low", "medium" or "high").

    Raises:
        UsageError: another impact.
    """
    try:
        return IMPACTS[impact]
    except KeyError:
        raise UsageError(f"impact must be one of {sorted(IMPACTS)}, got {impact!r}") from None


class Factors(msgspec.Struct, frozen=True, kw_only=True):
    """The confidence factors of one decision, each in [0, 1] (see the module docstring)."""

    history: float
    clarity: float
    reversibility: float
    impact: float
    approvals: float

    @classmethod
    def of(
        cls,
        *,
        runs: int,
        passed: int,
        clarity: float,
        reversible: bool,
        impact: str,
        granted: int,
        denied: int,
    ) -> Factors:
        """The factors from an action's record and declaration.

        Args:
            runs: its checked runs so far.
            passed: how many of them passed.
            clarity: how specific the matching rule is (0.5 when none matched).
            reversible: whether it can be undone.
            impact: "low", "medium" or "high".
            granted: its approval requests granted so far.
            denied: its approval requests denied so far.
        """
        return cls(
            history=(passed + 1) / (runs + 2),
            clarity=clarity,
            reversibility=1.0 if reversible else 0.0,
            impact=impact_factor(impact),
            approvals=(granted + 1) / (granted + denied + 2),
        )

    def as_dict(self) -> dict[str, float]:
        """The factors by name, rounded for the record."""
        return {name: round(getattr(self, name), 4) for name in WEIGHTS}


def score(factors: Factors) -> float:
    """The confidence score: the weighted mean of the factors, in [0, 1]."""
    total = (
        WEIGHTS["history"] * factors.history
        + WEIGHTS["clarity"] * factors.clarity
        + WEIGHTS["reversibility"] * factors.reversibility
        + WEIGHTS["impact"] * factors.impact
        + WEIGHTS["approvals"] * factors.approvals
    )
    return min(1.0, max(0.0, round(total, 6)))


class Thresholds(msgspec.Struct, frozen=True, kw_only=True):
    """The scores above which the engine acts alone (see the module docstring).

    Attributes:
        immediate: above it, run at once.
        monitored: above it, run and check.
        reversible: above it, run, check and undo on a failed check; at or below it, ask.
        step: how far one adjustment moves the thresholds.
        streak: passed checks in a row that lower the thresholds by ``step / 2``.

    Raises:
        UsageError: a threshold or the step not a number (a bool is none), thresholds out of
            order or outside their bounds, a step outside (0, 0.1], or a streak not an int at
            least 1.
    """

    immediate: float = 0.9
    monitored: float = 0.7
    reversible: float = 0.5
    step: float = 0.02
    streak: int = 20

    def __post_init__(self) -> None:
        for name in (*BOUNDS, "step"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"threshold {name} must be a number, got {shown(value)}")
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise UsageError(f"threshold {name} must be in [{low}, {high}], got {value}")
        if not self.immediate > self.monitored > self.reversible:
            raise UsageError(
                "thresholds must be in order immediate > monitored > reversible, got "
                f"{self.immediate}, {self.monitored}, {self.reversible}"
            )
        if not 0.0 < self.step <= 0.1:
            raise UsageError(f"threshold step must be in (0, 0.1], got {self.step}")
        streak = self.streak
        if isinstance(streak, bool) or not isinstance(streak, int) or streak < 1:
            raise UsageError(f"threshold streak must be an int at least 1, got {shown(streak)}")

    def strategy(self, confidence: float) -> Strategy:
        """The strategy for a score."""
        if confidence > self.immediate:
            return Strategy.IMMEDIATE
        if confidence > self.monitored:
            return Strategy.MONITORED
        if confidence > self.reversible:
            return Strategy.REVERSIBLE
        return Strategy.ASK

    def as_dict(self) -> dict[str, float]:
        """The three thresholds by name."""
        return {name: getattr(self, name) for name in BOUNDS}

    def with_values(self, values: dict[str, float]) -> Thresholds:
        """These settings with the thresholds recorded in the log (those it holds)."""
        if not values:
            return self
        merged = {**self.as_dict(), **{k: v for k, v in values.items() if k in BOUNDS}}
        try:
            return msgspec.structs.replace(self, **merged)
        except UsageError:
            return self  # a recorded set that no longer fits these bounds: keep the settings

    def adapt(self, *, failed: bool, streak: int) -> Thresholds | None:
        """The thresholds after an outcome, or None when they stay.

        Args:
            failed: a check of an action run without asking failed, or a human refused one.
            streak: passed checks in a row, this outcome included.
        """
        if failed:
            delta = self.step
        elif streak >= self.streak:
            delta = -self.step / 2
        else:
            return None
        moved: dict[str, Any] = {}
        for name, (low, high) in BOUNDS.items():
            moved[name] = round(min(high, max(low, getattr(self, name) + delta)), 4)
        if moved == self.as_dict():
            return None
        if not moved["immediate"] > moved["monitored"] > moved["reversible"]:
            return None
        return msgspec.structs.replace(self, **moved)
