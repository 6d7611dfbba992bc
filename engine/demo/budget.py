"""The error budget at work in one demo run: the parent's read-only fold of the session's budget
decisions (part of ``onward demo``).

At each task boundary the engine judges the session's failed tries in the budget's window
(:mod:`onward.judgement.budget`) and records a :class:`onward.events.DecisionMade` of kind
``"budget"`` in the session's stream when the rule changes: ``continue`` within budget or for
transient noise,
``slow_down`` while the burn rate rises (the run waits between tasks), ``pause`` for systemic
errors. :class:`BudgetFold` keeps those decisions of one session, and the task starts that
came while the budget slowed the run down.
"""

from __future__ import annotations

import msgspec

from onward.events import DecisionMade, Recorded, SessionPaused, SessionResumed, TaskClaimed
from onward.judgement.budget import ErrorBudget
from onward.projections.budget import BUDGET_KIND

__all__ = ["BudgetDecision", "BudgetFold", "BudgetStory", "budget_rows"]


class BudgetDecision(msgspec.Struct, frozen=True, kw_only=True):
    """One budget decision.

    Attributes:
        decision_id: its id (``onward why`` it).
        at: seconds since the run began.
        choice: "continue", "slow_down" or "pause".
        rule: the rule that chose it ("budget.within", "budget.rising", ...).
        spent: the failed tries in the window.
        limit: the failed tries the window allows.
        rising: whether the burn rate was rising.
        systemic: the systemic signatures (errors that recur after fixes and retries).
        diversity: the distinct signatures in the window.
        delay: the seconds it waits between tasks (slow_down).
        reason: its reason, for people.
        task_starts: the task starts that followed it until the next decision.
    """

    decision_id: str
    at: float
    choice: str
    rule: str
    spent: int
    limit: int
    rising: bool
    systemic: list[str]
    diversity: int
    delay: float
    reason: str
    task_starts: int


class BudgetStory(msgspec.Struct, frozen=True, kw_only=True):
    """The error budget in the run.

    Attributes:
        limit: the failed tries a window allows.
        window: the window, in seconds.
        slow_down: the wait between tasks while the burn rate rises, in seconds.
        decisions: its decisions, in order.
        slowed_starts: the task starts that waited ``slow_down`` first.
        pauses: the times it paused the session.
        resumptions: the times the session was resumed after a pause.
    """

    limit: int
    window: float
    slow_down: float
    decisions: list[BudgetDecision]
    slowed_starts: int
    pauses: int
    resumptions: int


class BudgetFold:
    """Folds one session's budget decisions (feed it every record of the log, in order).

    Args:
        session: the session of the run.
    """

    def __init__(self, session: str) -> None:
        self.session = session
        self.started: float | None = None
        self.decisions: list[BudgetDecision] = []
        self.starts: list[int] = []  # the task starts after each decision
        self.pauses = 0
        self.resumptions = 0

    def apply(self, r: Recorded) -> None:
        """Fold one record."""
        if r.meta.session != self.session:
            return
        if self.started is None:
            self.started = r.meta.time
        event = r.event
        if isinstance(event, DecisionMade) and event.kind == BUDGET_KIND:
            inputs = event.inputs
            self.decisions.append(
                BudgetDecision(
                    decision_id=r.meta.event_id,
                    at=round(r.meta.time - self.started, 2),
                    choice=event.choice,
                    rule=event.rule,
                    spent=int(inputs.get("spent", 0)),
                    limit=int(inputs.get("limit", 0)),
                    rising=bool(inputs.get("rising", False)),
                    systemic=[str(s) for s in inputs.get("systemic", [])],
                    diversity=int(inputs.get("diversity", 0)),
                    delay=float(inputs.get("delay", 0.0)),
                    reason=str(inputs.get("reason", "")),
                    task_starts=0,
                )
            )
            self.starts.append(0)
        elif isinstance(event, TaskClaimed) and self.starts:
            self.starts[-1] += 1
        elif isinstance(event, SessionPaused):
            self.pauses += 1
        elif isinstance(event, SessionResumed) and self.pauses > self.resumptions:
            self.resumptions += 1

    def story(self, budget: ErrorBudget) -> BudgetStory:
        """The budget's decisions folded so far, with the budget they applied."""
        decisions = [
            msgspec.structs.replace(d, task_starts=n)
            for d, n in zip(self.decisions, self.starts, strict=True)
        ]
        return BudgetStory(
            limit=budget.limit,
            window=budget.window,
            slow_down=budget.slow_down,
            decisions=decisions,
            slowed_starts=sum(d.task_starts for d in decisions if d.choice == "slow_down"),
            pauses=self.pauses,
            resumptions=self.resumptions,
        )


def _nature(d: BudgetDecision) -> str:
    if d.systemic:
        return f"systemic: {len(d.systemic)} signature(s) recur after fixes and retries"
    if d.spent >= d.limit:
        return f"transient: {d.diversity} signatures, none recurring after a remedy"
    return "within budget"


def budget_rows(b: BudgetStory) -> list[tuple[str, str]]:
    """The report's lines about the error budget: (heading, text) pairs."""
    head = (
        f"{b.limit} failed tries per {b.window:g} s, {b.slow_down:g} s between tasks while the "
        f"burn rate rises: {len(b.decisions)} decision{'s' if len(b.decisions) != 1 else ''}"
    )
    if b.slowed_starts:
        head += (
            f"; {b.slowed_starts} task starts waited {b.slow_down:g} s "
            f"({b.slowed_starts * b.slow_down:.1f} s in all)"
        )
    if b.pauses:
        head += f"; paused {b.pauses}x, resumed {b.resumptions}x"
    rows = [("budget", head)]
    for d in b.decisions:
        trend = ", rising" if d.rising else ""
        rows.append(
            (
                "",
                f"  {d.at:6.2f} s  {d.choice:<9} {d.rule:<23} {d.spent}/{d.limit} spent{trend}; "
                f"{_nature(d)}",
            )
        )
    return rows
