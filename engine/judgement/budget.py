"""The error budget: how many errors a session may spend per window, and what happens after.

A session spends its budget with every failed try of a step (each try counts, final or not),
over a sliding window of ``window`` seconds. Some error types may have budgets of their own
(``per_type``). :func:`assess` reads the window that
:class:`onward.projections.budget.BudgetProjection` counts and gives a :class:`BudgetVerdict`, by
the first rule that holds:

1. **within budget** (fewer than ``limit`` errors, and no per-type budget spent):
   ``continue`` (rule ``budget.within``);
2. spent, and a **systemic** signature failed in the window (one that failed again after a fix
   or a retry was attempted for it, for good, and whose fixes and retries have not worked in
   the session): ``pause`` the session (rule ``budget.systemic``); resuming it
   (:meth:`onward.Engine.resume`, ``onward resume``; reopening it does not) starts a fresh
   window;
3. spent, and the **burn rate is rising** (the window's newer half holds at least 2 errors and
   more than ``rising`` times its older half): ``slow_down``, ``slow_down`` seconds between
   tasks (rule ``budget.rising``);
4. spent, otherwise: the errors are **transient noise**, so ``continue``
   (rule ``budget.transient-noise``). The budget never stops a session for noise.

The trend is the newer half's count over the older half's (an empty older half counts as one
error, so the ratio stays finite; 0.0 when there are no errors in the window).

Per-type budgets name error types as retry rules do: a bare name (``"TimeoutError"``) counts
that type from any module; a qualified name (``"sqlite3.OperationalError"``) counts that one
and the bare name, not the same name in another module.

This module only decides; it reads no clock. The engine records a verdict as a
:class:`onward.events.DecisionMade` of kind ``"budget"`` (with :func:`verdict_inputs`) when its rule
differs from the session's last one::

    window = projections.budget.window(session, clock(), budget.window)
    verdict = assess(budget, window)
    if verdict.rule != (window.last_rule or "budget.within"):
        ...  # append DecisionMade(kind="budget", choice=verdict.choice, rule=verdict.rule, ...)
"""

from __future__ import annotations

from typing import Any

import msgspec

from onward.core.fields import MOST_SECONDS, finite, seconds, shown
from onward.events import UsageError
from onward.projections.budget import ERRORS_KEPT, BudgetWindow

__all__ = ["BudgetVerdict", "ErrorBudget", "assess", "verdict_inputs"]


def _check_limit(limit: object, field: str) -> None:
    """Refuse a budget's limit that is not a count its window can reach."""
    if isinstance(limit, int) and not isinstance(limit, bool) and 1 <= limit <= ERRORS_KEPT:
        return
    why = ""
    if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > ERRORS_KEPT:
        why = (
            f" (a session counts its last {ERRORS_KEPT} failed tries: a larger limit could "
            "never be spent)"
        )
    raise UsageError(
        f"error budget: {field} must be an int in [1, {ERRORS_KEPT}], not {shown(limit)}{why}"
    )


class ErrorBudget(msgspec.Struct, frozen=True, kw_only=True):
    """How many errors a session may spend per window, and how it slows down.

    Attributes:
        limit: the errors a session may spend in one window (at most 1000: a session counts
            its last 1000 failed tries).
        window: the window's length, in seconds.
        per_type: error type names, each with its own limit in the window (at most 1000).
        slow_down: the seconds to wait between tasks while the burn rate is rising (2 s by
            default: a burst at a session's start counts as rising for half the window, so a
            long pause per task would stall a healthy session for up to half an hour).
        rising: the burn rate is rising when the window's newer half holds more than
            ``rising`` times the errors of its older half (and at least 2).

    Raises:
        UsageError: ``limit`` or a per-type limit not an int in [1, 1000] (a larger one could
            never be spent), ``per_type`` not a dict of non-empty type names, ``window`` not a
            positive finite number, ``slow_down`` negative or not finite, ``rising`` below 1
            or not finite (a bool is no number). The message names the field and the value.
    """

    limit: int = 10
    window: float = 3600.0
    per_type: dict[str, int] = msgspec.field(default_factory=dict)
    slow_down: float = 2.0
    rising: float = 1.5

    def __post_init__(self) -> None:
        _check_limit(self.limit, "limit")
        if not (seconds(self.window) and self.window > 0):
            raise UsageError(
                f"error budget: window must be a positive number of seconds (at most "
                f"{MOST_SECONDS}), not {shown(self.window)}"
            )
        if not isinstance(self.per_type, dict):
            raise UsageError(
                f"error budget: per_type must be a dict of error type names and limits, not "
                f"{shown(self.per_type)}"
            )
        for name, limit in self.per_type.items():
            if not (isinstance(name, str) and name):
                raise UsageError(
                    f"error budget: per_type must name error types by non-empty str, not "
                    f"{shown(name)}"
                )
            _check_limit(limit, f"per_type[{name!r}]")
        if not seconds(self.slow_down):
            raise UsageError(
                f"error budget: slow_down must be a number of seconds in [0, {MOST_SECONDS}], "
                f"not {shown(self.slow_down)}"
            )
        if not (finite(self.rising) and self.rising >= 1):
            raise UsageError(
                f"error budget: rising must be a finite number at least 1, not {shown(self.rising)}"
            )


class BudgetVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """What the error budget says a session should do, and why.

    Attributes:
        choice: "continue", "slow_down" or "pause".
        rule: the rule that chose it: "budget.within", "budget.systemic", "budget.rising" or
            "budget.transient-noise".
        reason: one sentence for people.
        spent: the errors in the window.
        limit: the errors the window allows.
        remaining: the errors left before the budget is spent (0 once it is).
        exhausted_types: the error types whose own budget is spent, sorted.
        diversity: how many distinct signatures the window's errors have.
        trend: the burn rate's ratio, newer half over older half (0.0 with no errors).
        rising: whether the burn rate is rising.
        systemic: the systemic signatures that failed in the window, sorted.
        delay: the seconds to wait between tasks (``slow_down`` when slowing down, else 0.0).
    """

    choice: str
    rule: str
    reason: str
    spent: int
    limit: int
    remaining: int
    exhausted_types: tuple[str, ...] = ()
    diversity: int = 0
    trend: float = 0.0
    rising: bool = False
    systemic: tuple[str, ...] = ()
    delay: float = 0.0


def _same_type(pattern: str, name: str) -> bool:
    """Whether a per-type budget's name counts errors of type ``name`` (see the module doc)."""
    if pattern == name:
        return True
    if "." in pattern and "." in name:
        return False
    return pattern.rpartition(".")[2] == name.rpartition(".")[2]


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def assess(budget: ErrorBudget, window: BudgetWindow) -> BudgetVerdict:
    """Judge a session's window of errors against its budget (the rules in the module doc).

    Args:
        budget: the session's error budget.
        window: the session's errors in the budget's window, from
            :meth:`onward.projections.budget.BudgetProjection.window`.

    Returns:
        The verdict: its choice, the rule that chose it, and the figures it read.
    """
    spent = window.errors
    exhausted = tuple(
        sorted(
            pattern
            for pattern, limit in budget.per_type.items()
            if sum(n for name, n in window.by_type.items() if _same_type(pattern, name)) >= limit
        )
    )
    first, second = window.first_half, window.second_half
    trend = second / first if first else float(second)
    rising = second >= 2 and second > budget.rising * first
    figures: dict[str, Any] = {
        "spent": spent,
        "limit": budget.limit,
        "remaining": max(budget.limit - spent, 0),
        "exhausted_types": exhausted,
        "diversity": window.signatures,
        "trend": trend,
        "rising": rising,
        "systemic": window.systemic,
    }
    used = f"{_plural(spent, 'error')} of {budget.limit} in the last {budget.window:g} s"
    if spent < budget.limit and not exhausted:
        return BudgetVerdict(
            choice="continue",
            rule="budget.within",
            reason=f"{used}: within budget.",
            **figures,
        )
    if exhausted:
        used += f", the budget of {', '.join(exhausted)} spent"
    if window.systemic:
        recurring = ", ".join(window.systemic)
        return BudgetVerdict(
            choice="pause",
            rule="budget.systemic",
            reason=f"{used}, and errors recur after fixes and retries ({recurring}): pause.",
            **figures,
        )
    if rising:
        return BudgetVerdict(
            choice="slow_down",
            rule="budget.rising",
            reason=(
                f"{used}, and the burn rate is rising ({second} errors in the newer half of "
                f"the window against {first}): wait {budget.slow_down:g} s between tasks."
            ),
            delay=budget.slow_down,
            **figures,
        )
    return BudgetVerdict(
        choice="continue",
        rule="budget.transient-noise",
        reason=(
            f"{used}, but as transient noise ({_plural(window.signatures, 'signature')}, none "
            f"recurring after a remedy, the burn rate not rising): carry on."
        ),
        **figures,
    )


def verdict_inputs(v: BudgetVerdict) -> dict[str, Any]:
    """A verdict's figures and reason as plain JSON values, for a
    :class:`onward.events.DecisionMade`.

    Args:
        v: the verdict.

    Returns:
        Every field but ``choice`` and ``rule`` (which the decision records in its own
        fields); tuples become lists.
    """
    # Through JSON, so that the inputs equal what the log reads back (lists, not tuples).
    inputs: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(v))
    del inputs["choice"], inputs["rule"]
    return inputs
