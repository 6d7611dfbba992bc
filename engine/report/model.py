"""What a session's report holds: the figures and series one pass over the log gives.

Everything here is aggregated so that its size does not grow with the log: the timeline's task
runs are drawn one by one only for small sessions (:data:`RUNS_DRAWN`), else as per-lane bins;
the decisions table keeps the latest :data:`DECISIONS_KEPT` decisions whole and counts the rest
by kind, rule and choice; the error-learning table keeps the most frequent signatures.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "APPROVALS_KEPT",
    "BINS",
    "DECISIONS_KEPT",
    "RUNS_DRAWN",
    "SIGNATURES_KEPT",
    "ApprovalRow",
    "Band",
    "ComponentRow",
    "DecisionCount",
    "DecisionRow",
    "Lane",
    "Mark",
    "RunBar",
    "SessionReport",
    "SignatureRow",
    "Totals",
]

#: Task runs drawn one by one up to this many; above it, the timeline shows bins.
RUNS_DRAWN = 400
#: Columns of the binned timeline and of the charts.
BINS = 240
#: Decisions shown whole (the latest); the others are counted.
DECISIONS_KEPT = 200
#: Approval requests listed (the latest).
APPROVALS_KEPT = 300
#: Error signatures listed (the most frequent).
SIGNATURES_KEPT = 100


class Totals(msgspec.Struct, kw_only=True):
    """The session in numbers.

    Attributes:
        events: its events.
        tasks: its tasks, by state.
        runs: task runs (claims).
        steps: step outcomes recorded (completed or failed for good).
        step_failures: failed tries of steps.
        fixes: fixes applied.
        fixes_succeeded: fixes whose step then succeeded.
        retries: retries scheduled.
        decisions: decisions recorded, by kind.
        approvals: approval requests.
        lease_expiries: claims of dead or gone workers taken back (crashes).
        resumed: times the session was reopened or resumed.
    """

    events: int = 0
    tasks: dict[str, int] = msgspec.field(default_factory=dict)
    runs: int = 0
    steps: int = 0
    step_failures: int = 0
    fixes: int = 0
    fixes_succeeded: int = 0
    retries: int = 0
    decisions: dict[str, int] = msgspec.field(default_factory=dict)
    approvals: int = 0
    lease_expiries: int = 0
    resumed: int = 0


class RunBar(msgspec.Struct, frozen=True, array_like=True):
    """One task run on a worker's lane: start, end, task, name, steps, outcome."""

    start: float
    end: float
    task_id: str
    name: str
    steps: int
    outcome: str


class Mark(msgspec.Struct, frozen=True, array_like=True):
    """Something that happened at a moment: its kind (failure, fix, retry, wait, crash,
    approval), time, lane index and what, for the tooltip."""

    kind: str
    time: float
    lane: int
    what: str


class Lane(msgspec.Struct, kw_only=True):
    """A worker's lane.

    Attributes:
        worker: the worker's id.
        label: how the page names it.
        runs: its task runs (when the timeline draws runs).
        busy: per bin, the share of the bin it ran a task (when the timeline draws bins).
        marks: per bin and mark kind, how many (when the timeline draws bins).
    """

    worker: str
    label: str
    runs: list[RunBar] = msgspec.field(default_factory=list)
    busy: list[float] = msgspec.field(default_factory=list)
    marks: dict[str, list[int]] = msgspec.field(default_factory=dict)


class Band(msgspec.Struct, frozen=True, array_like=True):
    """A state held from ``start`` to ``end`` (a breaker's, the flow's, the degradation
    level)."""

    start: float
    end: float
    state: str
    note: str


class ComponentRow(msgspec.Struct, frozen=True, kw_only=True):
    """A component failure: when, what stood in, when it came back."""

    component: str
    failed_at: float
    message: str
    workaround: str
    quality_loss: float
    restored_at: float | None
    asked: bool


class ApprovalRow(msgspec.Struct, frozen=True, kw_only=True):
    """An approval request and its answer ("" while none).

    A request whose task ended before anyone answered it lapsed (it is no longer awaited, as
    in :meth:`onward.Engine.approvals`): ``lapsed`` says how the task ended ("cancelled",
    "failed", "missed", "quarantined", "succeeded"; "" while the request waits or once it is
    answered) and ``lapsed_at`` when.
    """

    decision_id: str
    task_id: str
    asked_at: float
    question: str
    impact: str
    answer: str
    by: str
    note: str
    answered_at: float | None
    lapsed: str = ""
    lapsed_at: float | None = None


class DecisionRow(msgspec.Struct, frozen=True, kw_only=True):
    """A decision whole: its kind, subject, choice, rule, strategy, confidence, factors,
    alternatives and inputs."""

    decision_id: str
    time: float
    position: int
    kind: str
    subject: str
    choice: str
    rule: str
    strategy: str
    confidence: float | None
    factors: dict[str, float]
    alternatives: list[str]
    inputs: dict[str, Any]


class DecisionCount(msgspec.Struct, frozen=True, array_like=True):
    """How many decisions of one kind, rule and choice."""

    kind: str
    rule: str
    choice: str
    count: int


class SignatureRow(msgspec.Struct, frozen=True, kw_only=True):
    """An error signature in the error-learning DB, with its fixes' success rates."""

    signature: str
    error_type: str
    message: str
    kind: str
    occurrences: int
    in_session: int
    fixes: dict[str, list[int]]
    learned: list[str]
    retries: int
    retry_successes: int
    best_fix: str


class SessionReport(msgspec.Struct, kw_only=True):
    """What ``onward report`` draws for one session (and prints with ``--json``).

    Attributes:
        log: the log's URL.
        session: the session.
        sessions: every session of the log.
        start: the time of the session's first event.
        end: the time of its last event.
        totals: the session in numbers.
        drawn: "runs" when the timeline draws each run, "bins" when it draws bins.
        axis: the time axis's pieces, ``[start, end, collapsed]``: the idle gaps collapse.
        lanes: the workers' lanes.
        marks: the moments marked on the timeline (with "runs").
        budget_limit: the error budget's limit (the latest recorded; the default's when the log
            records none).
        budget_window: its window, in seconds.
        budget_recorded: whether the log records the session's budget (when its session
            opened, or in a budget decision); False for an earlier onward's log that recorded
            neither: the limit and window are then the default's, assumed.
        budget_settings: the budget's limit and window as recorded over time: time, limit,
            window (a session reopened with another budget spends that one from then on).
        burn: per bin of the axis, the errors in the window at the bin's end over the limit in
            force then.
        budget_moves: the budget's decisions: time, choice, rule.
        breakers: per dependency, its states over time.
        flow: the flow's states over time.
        degradation: the degradation level over time.
        components: the component failures and workarounds.
        approvals: the approval requests and their answers (the latest).
        decision_counts: every decision, counted by kind, rule and choice.
        decisions: the latest decisions, whole.
        signatures: the error-learning DB (the most frequent signatures).
        damaged: each damaged stream of the log (its own records from the first bad one on
            are left out of the report), with why, in position order.
    """

    log: str
    session: str
    sessions: list[str]
    start: float
    end: float
    totals: Totals
    drawn: str
    axis: list[tuple[float, float, bool]]
    lanes: list[Lane]
    marks: list[Mark]
    budget_limit: int
    budget_window: float
    burn: list[float]
    budget_moves: list[tuple[float, str, str]]
    breakers: dict[str, list[Band]]
    flow: list[Band]
    degradation: list[Band]
    components: list[ComponentRow]
    approvals: list[ApprovalRow]
    decision_counts: list[DecisionCount]
    decisions: list[DecisionRow]
    signatures: list[SignatureRow]
    damaged: list[str] = []
    budget_recorded: bool = False
    budget_settings: list[tuple[float, int, float]] = []
