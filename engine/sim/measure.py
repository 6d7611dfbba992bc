"""What a simulated session shows, read from its log, its steps' journal and its decision
timings, beside the figures the design onward replaces stated (not measured: it had no
workload).

How each figure is counted:

- **an error** is a failed try of a step (``StepFailed``). It was **fixed automatically** when
  its step then completed with no fix taught by a person for its signature in between, or when
  its step failed for good on a component that its task then worked around (a
  ``WorkaroundApplied`` in the same task: the work went on without a person; counted apart as
  ``errors_worked_around``);
- an error was **seen before** when, as it happened, its signature had already been met and
  resolved (a step it failed completed, or a person taught its fix), in this session or an
  earlier one on the same log;
- **decision latency**: the rulebook's decisions timed in the workers (every error, action and
  completed task asks it), wall time, p50 and p99;
- **prompts per 100 actions**: approval requests per 100 step outcomes (each step done or given
  up, durable sleeps and the model calls' routes aside);
- **premature stops**: times the session stopped before its hours were over (its error budget
  paused it, or the work ended early);
- **errors per hour tolerated**: errors per simulated hour of the session's continuous work;
- **continuous hours**: simulated hours from the start to the first premature stop (or the end);
- **component failures worked around**: ``ComponentFailed`` answered by a ``WorkaroundApplied``;
- **crashes recovered**: kills after which a new worker resumed the session and took back every
  task the dead one held;
- **completed steps re-run**: step executions (the journal's lines) of a step whose outcome a
  worker killed earlier had already recorded. A step in flight at a kill may run again (at least
  once); that is counted apart.
"""

from __future__ import annotations

import array
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from onward.events import EventLog, UnknownEvent
from onward.runtime.run import SLEEP_STEP
from onward.sim.work import ROUTE_STEP

__all__ = ["DESIGN", "Kill", "SimResult", "measure", "table"]

#: Step outcomes that are no action of the agent: a durable sleep, a model call's route.
_NO_ACTIONS = (SLEEP_STEP, ROUTE_STEP)

#: The figures the design onward replaces claimed, as stated (3-6 ms a decision, ...).
DESIGN: dict[str, str] = {
    "fix_rate": "85.7%",
    "seen_before_fix_rate": "100%",
    "decisions": "3-6 ms",
    "prompts_per_100_actions": "3-5",
    "premature_stops": "10% stop rate",
    "errors_per_hour": "10+",
    "continuous_hours": "3-6",
    "worked_around_rate": "70%",
    "crashes_recovered": "not stated",
    "completed_steps_rerun": "not stated",
}


class Kill(msgspec.Struct, frozen=True, kw_only=True):
    """A kill -9 of a worker: the simulated moment it died at (its planned one, or later: at
    the next step's work, or when the hours were over), where ("before" or "after" a step's
    work, or "end"), the process, its generation (1 for the first worker)."""

    moment: float
    where: str
    pid: int
    generation: int


class SimResult(msgspec.Struct, kw_only=True):
    """The figures of one simulated session (see the module docstring for how each is
    counted). ``targets`` says which of the issue's targets hold: None for a target the run
    gave no sample to judge by (no decision made, no crash, no error seen before, no
    action). ``db`` is the log's URL, "" when it was a temporary one (removed at the end)."""

    profile: str
    session: str
    seed: int
    db: str
    hours: float
    simulated_hours: float
    wall_seconds: float
    sim_speedup: float
    events: int
    tasks: int
    actions: int
    errors: int
    errors_fixed: int
    errors_worked_around: int
    fix_rate: float
    seen_before: int
    seen_before_fixed: int
    seen_before_fix_rate: float
    decisions: int
    decision_p50_us: float
    decision_p99_us: float
    prompts: int
    prompts_per_100_actions: float
    premature_stops: int
    errors_per_hour: float
    continuous_hours: float
    component_failures: int
    worked_around: int
    worked_around_rate: float
    crashes: int
    crashes_recovered: int
    completed_steps_rerun: int
    in_flight_steps_rerun: int
    lessons_taught: int
    targets: dict[str, bool | None] = msgspec.field(default_factory=dict)


def _pid(worker: str) -> int:
    parts = worker.split("/")
    try:
        return int(parts[1])
    except (IndexError, ValueError):
        return 0


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(
    log: EventLog,
    *,
    profile: str,
    seed: int,
    hours: float,
    start: float,
    journal: Path,
    timings: list[Path],
    kills: list[Kill],
    generations: dict[int, int],
    wall_seconds: float,
    finished: bool = True,
    session: str | None = None,
) -> SimResult:
    """Read the figures of a simulated session from its log and files.

    Args:
        log: the session's log.
        profile: the profile it simulated.
        seed: its seed.
        hours: the hours it was to run.
        start: when it started (simulated).
        journal: the steps' journal (``generation key`` a line).
        timings: the decision timing files of its workers.
        kills: the kills.
        generations: each worker process's generation, by pid.
        wall_seconds: how long the simulation took.
        finished: the last worker ran to the end of the hours (it may have idled at the end,
            with nothing to record).
        session: the session's name (default: the profile's).
    """
    session = profile if session is None else session
    errors = fixed = seen = seen_fixed = prompts = actions = around = 0
    errors_continuous = 0  # the errors up to the first premature stop
    given_up: dict[str, list[tuple[str, bool, int]]] = {}
    stops = failures_of_components = worked = lessons = 0
    first_stop: float | None = None
    end = start
    events = 0
    tasks: set[str] = set()
    resolved: set[str] = set()
    learned_at: dict[str, list[int]] = {}
    pending: dict[tuple[str, int], list[tuple[str, bool, int]]] = {}
    # Other sessions' failed tries, by step, until the step completes (their signatures are
    # resolved then) or gives up: what an earlier session on the log resolved counts as met.
    elsewhere: dict[tuple[str, int], list[str]] = {}
    completed_by: dict[str, int] = {}  # step key -> generation that recorded its completion
    held: dict[str, int] = {}  # task -> pid of the worker whose run is open
    taken_back: Counter[int] = Counter()
    left_held: Counter[int] = Counter()
    resumed_after: list[float] = []
    for r in log.read(page_size=2000):
        meta = r.meta
        event: Any = r.event
        if meta.session != session or isinstance(event, UnknownEvent):
            # Learning spans sessions: their errors are no errors of this one, but what they
            # resolved is seen before here.
            other = type(event).__name__
            if other == "FixLearned":
                learned_at.setdefault(event.signature, []).append(r.position)
                resolved.add(event.signature)
            elif other == "StepFailed":
                tried = (r.stream, event.index)
                elsewhere.setdefault(tried, []).append(event.signature or event.error_type)
                if event.final:
                    elsewhere.pop(tried, None)
            elif other == "StepCompleted":
                resolved.update(elsewhere.pop((r.stream, event.index), ()))
            continue
        events += 1
        end = max(end, meta.time)
        name = type(event).__name__
        task = r.stream[5:] if r.stream.startswith("task-") else ""
        if name == "StepFailed":
            errors += 1
            errors_continuous += first_stop is None
            sig = event.signature or f"{event.error_type}"
            known = sig in resolved
            seen += known
            pending.setdefault((task, event.index), []).append((sig, known, r.position))
            if event.final:
                lost = pending.pop((task, event.index), [])
                given_up.setdefault(task, []).extend(lost)
                actions += event.name not in _NO_ACTIONS
        elif name == "StepCompleted":
            actions += event.name not in _NO_ACTIONS
            key = f"{task}:{event.index}"
            completed_by.setdefault(key, generations.get(_pid(meta.actor), 0))
            for sig, known, at in pending.pop((task, event.index), ()):
                taught = any(at < p < r.position for p in learned_at.get(sig, ()))
                if not taught:
                    fixed += 1
                    seen_fixed += known
                resolved.add(sig)
        elif name == "FixLearned":
            lessons += 1
            learned_at.setdefault(event.signature, []).append(r.position)
            resolved.add(event.signature)
        elif name == "ApprovalRequested":
            prompts += 1
        elif name == "SessionPaused":
            stops += 1
            first_stop = meta.time if first_stop is None else first_stop
        elif name == "SessionResumed":
            resumed_after.append(meta.time)
        elif name == "ComponentFailed":
            failures_of_components += 1
        elif name == "WorkaroundApplied":
            worked += 1
            for _sig, known, _at in given_up.pop(task, ()):
                around += 1
                fixed += 1
                seen_fixed += known
        elif name == "TaskSubmitted":
            tasks.add(task)
        elif name == "TaskClaimed":
            held[task] = _pid(event.worker)
        elif name == "TaskLeaseExpired":
            taken_back[_pid(event.worker)] += 1
            held.pop(task, None)
        elif name in (
            "TaskSucceeded",
            "TaskFailed",
            "TaskWaiting",
            "TaskReleased",
            "TaskCancelled",
        ):
            held.pop(task, None)
            if name != "TaskWaiting":
                given_up.pop(task, None)
    for pid in held.values():
        left_held[pid] += 1
    if finished:
        end = max(end, start + hours * 3600)
    if end < start + hours * 3600 - 60:
        stops += 1  # the work ended before its hours
        first_stop = end if first_stop is None else first_stop
    continuous = ((first_stop if first_stop is not None else end) - start) / 3600
    # A kill is recovered when a later worker resumed the session and nothing the dead worker
    # held was left held by it.
    recovered = sum(
        1 for k in kills if any(t > k.moment for t in resumed_after) and not left_held.get(k.pid)
    )
    rerun = in_flight = 0
    executions: Counter[tuple[int, str]] = Counter()
    if journal.exists():
        for line in journal.read_text(encoding="utf-8").splitlines():
            number, _, step = line.partition(" ")
            executions[(int(number), step)] += 1
    for (generation, key), n in executions.items():
        done_in = completed_by.get(key)
        if done_in is not None and generation > done_in:
            rerun += n
        elif generation > 1 and executions.get((generation - 1, key)):
            in_flight += n
    samples: list[float] = []
    for path in timings:
        if path.exists():
            data = array.array("q")
            data.frombytes(path.read_bytes())
            samples.extend(v / 1000 for v in data)
    simulated = (end - start) / 3600
    result = SimResult(
        profile=profile,
        session=session,
        seed=seed,
        db=log.url,
        hours=hours,
        simulated_hours=round(simulated, 3),
        wall_seconds=round(wall_seconds, 2),
        sim_speedup=round(simulated * 3600 / wall_seconds, 1) if wall_seconds else 0.0,
        events=events,
        tasks=len(tasks),
        actions=actions,
        errors=errors,
        errors_fixed=fixed,
        errors_worked_around=around,
        fix_rate=round(fixed / errors, 4) if errors else 1.0,
        seen_before=seen,
        seen_before_fixed=seen_fixed,
        seen_before_fix_rate=round(seen_fixed / seen, 4) if seen else 1.0,
        decisions=len(samples),
        decision_p50_us=round(_percentile(samples, 0.5), 2),
        decision_p99_us=round(_percentile(samples, 0.99), 2),
        prompts=prompts,
        prompts_per_100_actions=round(100 * prompts / actions, 3) if actions else 0.0,
        premature_stops=stops,
        errors_per_hour=round(errors_continuous / continuous, 2) if continuous > 0 else 0.0,
        continuous_hours=round(continuous, 3),
        component_failures=failures_of_components,
        worked_around=worked,
        worked_around_rate=(
            round(worked / failures_of_components, 4) if failures_of_components else 1.0
        ),
        crashes=len(kills),
        crashes_recovered=recovered,
        completed_steps_rerun=rerun,
        in_flight_steps_rerun=in_flight,
        lessons_taught=lessons,
    )
    result.targets = {
        "seen_before_fixed_100": _held(seen, result.seen_before_fix_rate >= 1.0),
        "prompts_at_most_2_per_100": _held(actions, result.prompts_per_100_actions <= 2.0),
        "no_premature_stop": result.premature_stops == 0,
        "crashes_all_recovered": _held(len(kills), result.crashes_recovered == result.crashes),
        "no_completed_step_rerun": _held(len(kills), result.completed_steps_rerun == 0),
        "at_least_8_hours": result.continuous_hours >= min(8.0, hours),
        "decision_p99_at_most_50_us": _held(len(samples), result.decision_p99_us <= 50.0),
    }
    return result


def _held(samples: int, met: bool) -> bool | None:
    """Whether a target holds: None when the run gave no sample to judge it by (a share of
    nothing, a percentile of no time), which must not read as met."""
    return met if samples else None


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part:,}/{whole:,})" if whole else "n/a (none)"


def table(r: SimResult) -> str:
    """The comparison table for people: the design it replaces beside this run."""
    t = r.targets

    def met(key: str) -> str:
        held = t.get(key)
        return "no data" if held is None else "met" if held else "MISSED"

    rows = [
        ("figure", "design it replaces", "onward (this run)", "target", ""),
        (
            "automatic fix rate, all errors",
            DESIGN["fix_rate"],
            _share(r.errors_fixed, r.errors),
            "",
            "",
        ),
        (
            "  errors seen before",
            DESIGN["seen_before_fix_rate"],
            _share(r.seen_before_fixed, r.seen_before),
            "100%",
            met("seen_before_fixed_100"),
        ),
        (
            "decision latency p50 / p99",
            DESIGN["decisions"],
            f"{r.decision_p50_us:.1f} / {r.decision_p99_us:.1f} µs ({r.decisions:,})",
            "p99 <= 50 µs",
            met("decision_p99_at_most_50_us"),
        ),
        (
            "prompts per 100 actions",
            DESIGN["prompts_per_100_actions"],
            f"{r.prompts_per_100_actions:.2f} ({r.prompts}/{r.actions:,})",
            "<= 2",
            met("prompts_at_most_2_per_100"),
        ),
        (
            "premature stops",
            DESIGN["premature_stops"],
            str(r.premature_stops),
            "0",
            met("no_premature_stop"),
        ),
        (
            "errors per hour tolerated",
            DESIGN["errors_per_hour"],
            f"{r.errors_per_hour:.1f}",
            "",
            "",
        ),
        (
            "continuous hours",
            DESIGN["continuous_hours"],
            f"{r.continuous_hours:.2f}",
            f">= {min(8.0, r.hours):g}",
            met("at_least_8_hours"),
        ),
        (
            "component failures worked around",
            DESIGN["worked_around_rate"],
            _share(r.worked_around, r.component_failures),
            "",
            "",
        ),
        (
            "crashes (kill -9) recovered",
            DESIGN["crashes_recovered"],
            _share(r.crashes_recovered, r.crashes),
            "100%",
            met("crashes_all_recovered"),
        ),
        (
            "completed steps re-run after crashes",
            DESIGN["completed_steps_rerun"],
            f"{r.completed_steps_rerun} ({r.in_flight_steps_rerun} in flight re-run)",
            "0",
            met("no_completed_step_rerun"),
        ),
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    lines = [
        "  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    session = f" (session {r.session})" if r.session != r.profile else ""
    head = (
        f"onward simulate: profile {r.profile}{session}, seed {r.seed}: {r.simulated_hours:.2f} "
        f"simulated hours in {r.wall_seconds:.1f} s ({r.sim_speedup:,.0f} simulated seconds a "
        "second); "
        f"{r.tasks:,} tasks, {r.events:,} events, {r.crashes} kill -9, "
        f"{r.lessons_taught} fix(es) taught by the simulated person"
    )
    log = r.db or "a temporary one, removed at the end (--db FILE keeps it)"
    return "\n".join([head, "", *lines, "", f"log: {log}"])
