"""One pass over the log: the projections folded, and the session's story aggregated.

The pass reads the log as the projections' fold does (:class:`onward.projections.reading.
FoldReader`: every record checked, step results skipped), folds each page into the projections
and hands the same page to a :class:`_Collector` that keeps what the page draws: task runs per
worker, the moments to mark, the breakers', flow's and degradation's states over time, the
approvals and the decisions. A stream the projections mark damaged gives it nothing from
its first bad record on (a task run it left open ends there, "damaged"). Memory grows with the
session's task runs and errors, never with its step results.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, TypeGuard

from onward.events import (
    CorruptRecord,
    EventLog,
    LogNotFound,
    Recorded,
    StreamDamage,
    UnknownEvent,
    UsageError,
)
from onward.judgement.budget import ErrorBudget
from onward.projections import Projections
from onward.projections.degradation import EXHAUSTED_CHOICE, DegradationProjection
from onward.projections.reading import FoldReader
from onward.projections.session import SESSION_PREFIX
from onward.projections.task import TASK_PREFIX
from onward.report.axis import Axis
from onward.report.model import (
    APPROVALS_KEPT,
    BINS,
    DECISIONS_KEPT,
    RUNS_DRAWN,
    SIGNATURES_KEPT,
    ApprovalRow,
    Band,
    ComponentRow,
    DecisionCount,
    DecisionRow,
    Lane,
    Mark,
    RunBar,
    SessionReport,
    SignatureRow,
    Totals,
)

__all__ = ["collect_report", "pick_session"]

#: The events that end a task run, and the outcome each gives it.
_RUN_ENDS = {
    "TaskSucceeded": "succeeded",
    "TaskFailed": "failed",
    "TaskWaiting": "waiting",
    "TaskReleased": "released",
    "TaskLeaseExpired": "crashed",
    "TaskCancelled": "cancelled",
    "TaskQuarantined": "quarantined",
    "TaskDeadlineMissed": "missed",
}

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def pick_session(log: EventLog, session: str | None) -> tuple[str, list[str]]:
    """The session to report (``session``, else the one whose stream moved last), and every
    session of the log.

    Raises:
        UsageError: no such session, or a log with no session at all.
    """
    # A stream id that is not text (NULL, a blob) is a damaged row: verify reports it.
    names = [
        s[len(SESSION_PREFIX) :]
        for s in log.streams()
        if isinstance(s, str) and s.startswith(SESSION_PREFIX)
    ]
    if not names:
        raise UsageError(f"no session in {log.url}")
    if session is not None:
        if session not in names:
            raise UsageError(f"no session {session!r} in {log.url} (there are: {', '.join(names)})")
        return session, names
    latest = max(names, key=lambda n: _last_moved(log, SESSION_PREFIX + n))
    return latest, names


def _last_moved(log: EventLog, stream: str) -> float:
    """When a stream last moved: the time of its newest record that decodes (0.0 when none
    does), so that a session whose last record is damaged is still reported, as damaged."""
    for position, s, version, topic, state in reversed(log.stream_rows(stream)):
        try:
            return log.decode_record(s, version, position, topic, state).meta.time
        except CorruptRecord:
            continue
    return 0.0


def _tag(event: object) -> str:
    config = getattr(type(event), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return tag if isinstance(tag, str) else ""


class _Collector:
    """Keeps what the page draws, event by event (one session's)."""

    def __init__(self, session: str) -> None:
        self.session = session
        self.totals = Totals()
        # None until the session's first event (a fake clock may well start at 0).
        self.start: float | None = None
        self.end: float | None = None
        self.names: dict[str, str] = {}
        self.workers: dict[str, int] = {}
        # task id -> [start, last, lane, steps]
        self.open: dict[str, list[Any]] = {}
        self.runs: list[tuple[RunBar, int]] = []
        self.marks: list[Mark] = []
        self.failures: list[float] = []
        # The error budget's limit and window over time, as the session's opening and its
        # budget decisions recorded them: (time, limit, window).
        self.budget_settings: list[tuple[float, int, float]] = []
        self.budget_moves: list[tuple[float, str, str]] = []
        # Where the budget's window started afresh, as its projection has it: a resumption
        # after its pause (time, the failures before it, which no longer count).
        self.budget_fresh: list[tuple[float, int]] = []
        self.budget_paused = False
        self.breakers: dict[str, list[tuple[float, str, str]]] = {}
        self.flow: list[tuple[float, str, str]] = []
        self.levels: list[tuple[float, str, str]] = []
        # The session's level as `onward sessions` has it, folded event by event (a workaround's
        # own level says nothing of a component left with none).
        self.degradation = DegradationProjection()
        self.components: dict[str, dict[str, Any]] = {}
        self.component_rows: list[dict[str, Any]] = []
        self.approvals: dict[str, dict[str, Any]] = {}
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.decisions: deque[DecisionRow] = deque(maxlen=DECISIONS_KEPT)
        self.observed: Counter[str] = Counter()

    def lane(self, worker: str) -> int:
        return self.workers.setdefault(worker, len(self.workers))

    def mark(self, kind: str, time: float, task_id: str, what: str) -> None:
        run = self.open.get(task_id)
        lane = run[2] if run is not None else 0
        self.marks.append(Mark(kind, time, lane, what))

    def page(self, records: list[Recorded], damaged: Mapping[str, StreamDamage]) -> None:
        """Keep a page's records of the session, but a damaged stream's from its first bad
        record on (``damaged``: the projections' damaged streams, after the page's fold)."""
        session = self.session
        for r in records:
            meta = r.meta
            if meta.session != session:
                continue
            damage = damaged.get(r.stream) if damaged else None
            if damage is not None and r.position >= damage.position:
                continue
            event = r.event
            if isinstance(event, UnknownEvent):
                continue
            time = meta.time
            if self.start is None:
                self.start = time
            self.end = time if self.end is None else max(self.end, time)
            self.totals.events += 1
            tag = _tag(event)
            stream = r.stream
            task_id = stream[len(TASK_PREFIX) :] if stream.startswith(TASK_PREFIX) else ""
            handler = _HANDLERS.get(tag)
            if handler is not None:
                handler(self, r, event, time, task_id)
            if task_id and task_id in self.open:
                run = self.open[task_id]
                run[1] = time
                outcome = _RUN_ENDS.get(tag)
                if outcome is not None:
                    self._close(task_id, time, outcome)

    def _close(self, task_id: str, time: float, outcome: str) -> None:
        start, last, lane, steps = self.open.pop(task_id)
        # A crashed run ended with its last news, not when its lease was found expired.
        end = last if outcome == "crashed" else time
        bar = RunBar(start, max(end, start), task_id, self.names.get(task_id, ""), steps, outcome)
        self.runs.append((bar, lane))

    # -- handlers, by event type -----------------------------------------------------------

    def submitted(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.names[task_id] = e.name

    def claimed(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.runs += 1
        if task_id in self.open:  # a claim over a run whose end the log does not say
            self._close(task_id, time, "taken")
        self.open[task_id] = [time, time, self.lane(e.worker), 0]

    def lease_expired(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.lease_expiries += 1
        run = self.open.get(task_id)
        lane = run[2] if run is not None else self.lane(e.worker)
        at = run[1] if run is not None else time
        self.marks.append(Mark("crash", at, lane, f"worker gone; task {task_id} taken back"))

    def waiting(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.mark("wait", time, task_id, f"{self.names.get(task_id, task_id)}: {e.reason}")

    def step_completed(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.steps += 1
        run = self.open.get(task_id)
        if run is not None:
            run[3] += 1

    def step_failed(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.step_failures += 1
        self.failures.append(time)
        if getattr(e, "final", True):
            self.totals.steps += 1
        self.mark(
            "failure",
            time,
            task_id,
            f"{self.names.get(task_id, task_id)} step {e.index}: {getattr(e, 'error_type', '')}",
        )

    def observed_error(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.observed[e.signature] += 1

    def fix_attempted(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.fixes += 1
        self.mark("fix", time, task_id, f"fix {e.fix} for {e.signature[:12]}")

    def fix_succeeded(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.fixes_succeeded += 1

    def retry(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.retries += 1
        self.mark("retry", time, task_id, f"retry {e.attempt} in {e.delay:.1f} s ({e.error_type})")

    def decision(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        kind = e.kind
        self.totals.decisions[kind] = self.totals.decisions.get(kind, 0) + 1
        # "retry in 1.212 s" and "retry in 4.442 s" count as one choice.
        self.counts[(kind, e.rule, _NUMBER.sub("N", e.choice))] += 1
        self.decisions.append(
            DecisionRow(
                decision_id=r.meta.event_id,
                time=time,
                position=r.position,
                kind=kind,
                subject=e.subject,
                choice=e.choice,
                rule=e.rule,
                strategy=str(e.strategy or ""),
                confidence=e.confidence,
                factors=dict(e.factors),
                alternatives=list(e.alternatives),
                inputs=dict(e.inputs),
            )
        )
        if kind == "budget":
            self.budget_moves.append((time, e.choice, e.rule))
            self.budget_paused = e.choice == "pause"
            self.budget_set(time, e.thresholds)
        elif kind == "degradation":
            row = self.components.get(e.subject)
            if row is not None:
                row["asked"] = True
            if e.choice == EXHAUSTED_CHOICE:
                self.level_after(r, time, f"{e.subject}: no workaround left")

    def approval_requested(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.approvals += 1
        self.approvals[e.decision_id] = {
            "decision_id": e.decision_id,
            "task_id": e.subject,
            "asked_at": time,
            "question": e.question,
            "impact": e.impact,
            "answer": "",
            "by": "",
            "note": "",
            "answered_at": None,
            "lapsed": "",
            "lapsed_at": None,
        }
        self.mark("approval", time, task_id, f"asked: {e.question}")

    def approval_answered(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        row = self.approvals.get(e.decision_id)
        if row is not None:
            granted = _tag(e) == "ApprovalGranted"
            row.update(
                answer="granted" if granted else "denied",
                by=e.by,
                note=e.note,
                answered_at=time,
            )

    def breaker(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        tag = _tag(e)
        if tag == "BreakerOpened":
            state, note = "open", f"{e.consecutive_failures} failures in a row"
        elif tag == "BreakerHalfOpened":
            state, note = "half_open", f"{e.trial_calls} trial call(s)"
        else:
            state, note = "closed", f"{e.successes} trial success(es)"
        self.breakers.setdefault(e.dependency, []).append((time, state, note))

    def flow_changed(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        note = f"{e.actions_per_minute:.1f} actions/min, {e.error_rate:.0%} errors"
        self.flow.append((time, str(e.state), note))

    def component_failed(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.degradation.apply(r)
        row = {
            "component": e.component,
            "failed_at": time,
            "message": e.message,
            "workaround": "",
            "quality_loss": 0.0,
            "restored_at": None,
            "asked": False,
        }
        self.components[e.component] = row
        self.component_rows.append(row)

    def workaround(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        # one decided on an earlier state (another task's report came first) changes nothing
        if not self.level_after(r, time, f"{e.component} -> {e.workaround}"):
            return
        row = self.components.get(e.component)
        if row is not None:
            row.update(workaround=e.workaround, quality_loss=e.quality_loss)

    def restored(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        row = self.components.pop(e.component, None)
        if row is not None:
            row["restored_at"] = time
        self.level_after(r, time, f"{e.component} restored")

    def level_after(self, r: Recorded, time: float, note: str) -> bool:
        """The session's degradation level after this record, on its track; False when the
        record changed nothing (the sessions' projection passes it by)."""
        before = self.degradation.view(self.session)
        self.degradation.apply(r)
        after = self.degradation.view(self.session)
        if after == before:
            return False
        self.levels.append((time, str(after.level), note))
        return True

    def started(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.budget_set(time, e.config.get("budget"))

    def resumed(self, r: Recorded, e: Any, time: float, task_id: str) -> None:
        self.totals.resumed += 1
        if self.budget_paused:  # the first resumption after a pause: the window starts afresh
            self.budget_fresh.append((time, len(self.failures)))
            self.budget_paused = False
        # A session reopened with another budget spends that one from then on.
        self.budget_set(time, e.config.get("budget"))

    def budget_set(self, time: float, budget: object) -> None:
        """Keep the error budget's limit and window in force from ``time`` on, as recorded
        (an earlier onward allowed limits this one refuses); a record without them (an earlier
        onward's opening) changes nothing."""
        if not isinstance(budget, Mapping):
            return
        limit, window = budget.get("limit"), budget.get("window")
        if _positive(limit) and limit >= 1 and _positive(window):
            setting = (time, int(limit), float(window))
            if not self.budget_settings or self.budget_settings[-1][1:] != setting[1:]:
                self.budget_settings.append(setting)


_HANDLERS: dict[str, Any] = {
    "TaskSubmitted": _Collector.submitted,
    "TaskClaimed": _Collector.claimed,
    "TaskLeaseExpired": _Collector.lease_expired,
    "TaskWaiting": _Collector.waiting,
    "StepCompleted": _Collector.step_completed,
    "StepFailed": _Collector.step_failed,
    "ErrorObserved": _Collector.observed_error,
    "FixAttempted": _Collector.fix_attempted,
    "FixSucceeded": _Collector.fix_succeeded,
    "RetryScheduled": _Collector.retry,
    "DecisionMade": _Collector.decision,
    "ApprovalRequested": _Collector.approval_requested,
    "ApprovalGranted": _Collector.approval_answered,
    "ApprovalDenied": _Collector.approval_answered,
    "BreakerOpened": _Collector.breaker,
    "BreakerHalfOpened": _Collector.breaker,
    "BreakerClosed": _Collector.breaker,
    "FlowStateChanged": _Collector.flow_changed,
    "ComponentFailed": _Collector.component_failed,
    "WorkaroundApplied": _Collector.workaround,
    "ComponentRestored": _Collector.restored,
    "SessionStarted": _Collector.started,
    "SessionResumed": _Collector.resumed,
}


def _positive(value: object) -> TypeGuard[int | float]:
    """Whether a recorded value is a number a budget's limit or window can be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e300


def _bands(moves: list[tuple[float, str, str]], start: float, end: float, first: str) -> list[Band]:
    """States held between moves, from ``start`` (in ``first``) to ``end``."""
    bands: list[Band] = []
    state, since, note = first, start, ""
    for time, new, why in moves:
        if time > since:
            bands.append(Band(since, time, state, note))
        state, since, note = new, time, why
    bands.append(Band(since, max(end, since), state, note))
    return bands


def _bins(c: _Collector, axis: Axis, lanes: list[Lane]) -> None:
    """Spread the runs and the marks over the axis's bins, lane by lane."""
    for lane in lanes:
        lane.busy = [0.0] * BINS
    width = 1.0 / BINS
    for bar, index in c.runs:
        busy = lanes[index].busy
        x0, x1 = axis.x(bar.start), axis.x(bar.end)
        first = min(BINS - 1, int(x0 / width))
        last = min(BINS - 1, int(x1 / width))
        for b in range(first, last + 1):
            left, right = b * width, (b + 1) * width
            busy[b] += max(0.0, min(x1, right) - max(x0, left)) / width
    for lane in lanes:
        lane.busy = [round(min(1.0, v), 3) for v in lane.busy]
    for mark in c.marks:
        if 0 <= mark.lane < len(lanes):
            counts = lanes[mark.lane].marks.setdefault(mark.kind, [0] * BINS)
            counts[min(BINS - 1, int(axis.x(mark.time) / width))] += 1


def _budgets(c: _Collector) -> list[tuple[float, int, float]]:
    """The budget's settings over time, in time order; the default's alone when the log
    records none (an earlier onward's log: the page says the limit is assumed)."""
    if not c.budget_settings:
        default = ErrorBudget()
        return [(float("-inf"), default.limit, default.window)]
    return sorted(c.budget_settings, key=lambda s: s[0])


def _burn(c: _Collector, axis: Axis) -> list[float]:
    """Per bin: the failed tries in the budget's window at the bin's end, over the limit, by
    the setting in force then (before the first recorded, the first); from a resumption after
    a pause on, only the failed tries since (the budget counts afresh)."""
    starts = [(float("-inf"), 0), *c.budget_fresh]
    fresh = [time for time, _ in starts]
    counted = [sorted(c.failures[before:]) for _, before in starts]
    settings = _budgets(c)
    times = [time for time, _, _ in settings]
    burn: list[float] = []
    for b in range(BINS):
        at = axis.time((b + 1) / BINS)
        _, limit, window = settings[max(0, bisect.bisect_right(times, at) - 1)]
        failures = counted[bisect.bisect_right(fresh, at) - 1]
        spent = bisect.bisect_right(failures, at) - bisect.bisect_right(failures, at - window)
        burn.append(round(spent / limit, 3))
    return burn


def _signatures(projections: Projections, observed: Counter[str]) -> list[SignatureRow]:
    views = sorted(
        projections.errors.signatures.values(),
        key=lambda v: (-observed.get(v.signature, 0), -v.occurrences, v.signature),
    )
    rows: list[SignatureRow] = []
    for view in views[:SIGNATURES_KEPT]:
        rows.append(
            SignatureRow(
                signature=view.signature,
                error_type=view.error_type,
                message=view.message,
                kind=view.kind,
                occurrences=view.occurrences,
                in_session=observed.get(view.signature, 0),
                fixes={n: [f.attempts, f.successes] for n, f in view.fixes.items()},
                learned=list(view.learned),
                retries=view.retries,
                retry_successes=view.retry_successes,
                best_fix=view.best_fix or "",
            )
        )
    return rows


def collect_report(log: EventLog, session: str | None = None) -> SessionReport:
    """Read a log once and gather what its session's report shows.

    Args:
        log: the log (only read).
        session: the session (the one whose stream moved last when None).

    Returns:
        The report's data.

    Raises:
        UsageError: no such session.
        LogNotFound: the log holds no session at all.
    """
    try:
        name, sessions = pick_session(log, session)
    except UsageError:
        if session is None:
            raise LogNotFound(f"{log.url} holds no session to report") from None
        raise
    projections = Projections()
    collector = _Collector(name)
    for page in FoldReader(log).pages():
        if isinstance(page, list):
            projections.apply_page(page)
            collector.page(page, projections.damaged)
        else:
            projections.mark_damaged(page)
    c = collector
    start = c.start if c.start is not None else 0.0
    end = max(c.end if c.end is not None else start, start)
    for task_id in list(c.open):  # still running at the log's end, or its stream damaged
        if TASK_PREFIX + task_id in projections.damaged:
            c._close(task_id, c.open[task_id][1], "damaged")
        else:
            c._close(task_id, end, "running")
    states = Counter(v.state for v in projections.tasks.tasks.values() if v.session == name)
    c.totals.tasks = dict(states.most_common())
    axis = Axis.of(start, end, ((bar.start, bar.end) for bar, _ in c.runs))
    lanes = [
        Lane(worker=w, label=f"worker {i + 1} ({_pid(w)})")
        for w, i in sorted(c.workers.items(), key=lambda x: x[1])
    ] or [Lane(worker="", label="no worker")]
    drawn = "runs" if len(c.runs) <= RUNS_DRAWN else "bins"
    marks: list[Mark] = []
    if drawn == "runs":
        for bar, index in c.runs:
            lanes[index].runs.append(bar)
        marks = c.marks
    else:
        _bins(c, axis, lanes)
    approvals = list(c.approvals.values())[-APPROVALS_KEPT:]
    lapsed = projections.decisions.lapsed
    for row in approvals:
        # As engine.approvals() sees it: a request whose task ended unanswered lapsed (a
        # retry of the task asks it again; the projection then holds it as waiting).
        gone = lapsed.get(row["decision_id"]) if not row["answer"] else None
        if gone is not None:
            row.update(lapsed=gone.ended, lapsed_at=gone.time)
    _, budget_limit, budget_window = _budgets(c)[-1]
    return SessionReport(
        log=log.url,
        session=name,
        sessions=sessions,
        start=start,
        end=end,
        totals=c.totals,
        drawn=drawn,
        axis=[list(p) for p in axis.pieces],  # type: ignore[misc]
        lanes=lanes,
        marks=marks,
        budget_limit=budget_limit,
        budget_window=budget_window,
        budget_recorded=bool(c.budget_settings),
        budget_settings=sorted(c.budget_settings, key=lambda s: s[0]),
        burn=_burn(c, axis),
        budget_moves=c.budget_moves,
        breakers={d: _bands(m, start, end, "closed") for d, m in sorted(c.breakers.items())},
        flow=_bands(c.flow, start, end, "idle"),
        degradation=_bands(c.levels, start, end, "full"),
        components=[ComponentRow(**row) for row in c.component_rows],
        approvals=[ApprovalRow(**row) for row in approvals],
        decision_counts=[DecisionCount(k, r, ch, n) for (k, r, ch), n in c.counts.most_common()],
        decisions=list(reversed(c.decisions)),
        signatures=_signatures(projections, c.observed),
        damaged=[
            f"{d.stream!r}: {d}"
            for d in sorted(projections.damaged.values(), key=lambda d: d.position)
        ],
    )


def _pid(worker: str) -> str:
    parts = worker.split("/")
    return f"pid {parts[1]}" if len(parts) > 1 else worker
