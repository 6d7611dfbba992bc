"""Benchmark of continuous operation: both shipped profiles of ``onward simulate`` for 8
simulated hours, and the HTML report of each 8-hour log.

What it measures, in one run (each profile on a fresh SQLite file, ``synchronous=FULL``):

* for ``coding-agent`` and ``nightly-data-job`` (under their names in the JSON): every figure of
  ``onward simulate``'s table (``onward.sim.measure`` says how each is counted): the automatic
  fix rate of all errors and of errors seen (and resolved) before, the rulebook's decision
  latency p50 / p99 in the workers, prompts to a person per 100 actions, premature stops,
  errors per hour tolerated, continuous hours, component failures worked around, crashes
  (real ``kill -9`` of the worker process at seeded moments) recovered and completed steps
  re-run after them; ``wall_s``, the simulation's wall time (worker processes, restarts and
  the measurement included), and ``sim_speedup``, simulated seconds per wall second;
  ``report_s``, the wall time of ``onward.report.write_report`` on the 8-hour log (one pass
  over the log, the page written).
* top level: the slower profile's ``sim_speedup`` and ``wall_s``, the slower ``report_s``.

The design onward replaces stated its figures without a workload (85.7% of errors fixed
automatically, 100% of those seen before, 3-6 ms a decision, 3-5 prompts per 100 actions, a
10% stop rate, 10+ errors an hour tolerated, 3-6 hours of continuous work, 70% of component
failures worked around): they are printed beside, not measured. The figures are shares and
counts of a seeded simulated session, and the decision latency is a wall time of the
rulebook in situ: none has a raw floor, so the targets are absolute (the issue's): seen-before
errors fixed 100%; <= 2 prompts per 100 actions; 0 premature stops; every crash recovered
and 0 completed steps re-run; >= 8 simulated hours; decision p99 <= 50 µs; an 8-hour session
simulated in under 5 minutes.

Run it from the repository root::

    .venv/bin/python scripts/bench_simulate.py            # a table, about 1-2 minutes
    .venv/bin/python scripts/bench_simulate.py --quick    # 1 simulated hour each
    .venv/bin/python scripts/bench_simulate.py --json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Target, progress

SEED = 1
FULL = {"hours": 8}
QUICK = {"hours": 1}
PROFILES = ("coding-agent", "nightly-data-job")
KEYS = {"coding-agent": "coding_agent", "nightly-data-job": "nightly_data_job"}


def measure(directory: Path, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    from onward.events import open_log
    from onward.report import write_report
    from onward.sim import run_simulation

    result: dict[str, Any] = {}
    for name in PROFILES:
        db = directory / f"{name}.db"
        progress(f"simulating {name} for {counts['hours']} hours (seed {SEED})...")
        started = time.perf_counter()
        sim = run_simulation(profile=name, seed=SEED, hours=counts["hours"], db=str(db))
        wall = time.perf_counter() - started
        with open_log(f"sqlite:///{db}", create=False) as log:
            t0 = time.perf_counter()
            write_report(log, directory / f"{name}.html", session=name)
            report_s = time.perf_counter() - t0
        figures = {
            "fix_rate": sim.fix_rate,
            "seen_before_fix_rate": sim.seen_before_fix_rate,
            "decision_p50_us": sim.decision_p50_us,
            "decision_p99_us": sim.decision_p99_us,
            "prompts_per_100_actions": sim.prompts_per_100_actions,
            "premature_stops": sim.premature_stops,
            "errors_per_hour": sim.errors_per_hour,
            "continuous_hours": sim.continuous_hours,
            "worked_around_rate": sim.worked_around_rate,
            "crashes_recovered_rate": (sim.crashes_recovered / sim.crashes if sim.crashes else 1.0),
            "completed_steps_rerun": sim.completed_steps_rerun,
            "sim_speedup": round(sim.simulated_hours * 3600 / wall, 1),
            "wall_s": round(wall, 2),
            "report_s": round(report_s, 3),
            "counts": {
                "events": sim.events,
                "tasks": sim.tasks,
                "actions": sim.actions,
                "errors": sim.errors,
                "errors_fixed": sim.errors_fixed,
                "errors_worked_around": sim.errors_worked_around,
                "seen_before": sim.seen_before,
                "decisions": sim.decisions,
                "prompts": sim.prompts,
                "crashes": sim.crashes,
                "crashes_recovered": sim.crashes_recovered,
                "in_flight_steps_rerun": sim.in_flight_steps_rerun,
                "lessons_taught": sim.lessons_taught,
                "component_failures": sim.component_failures,
                "simulated_hours": sim.simulated_hours,
            },
        }
        progress(
            f"  {sim.simulated_hours:.2f} h in {wall:.1f} s; report of {sim.events:,} events "
            f"in {report_s:.2f} s"
        )
        result[KEYS[name]] = figures
    both = [result[k] for k in KEYS.values()]
    result["sim_speedup"] = min(f["sim_speedup"] for f in both)
    result["wall_s"] = max(f["wall_s"] for f in both)
    result["report_s"] = max(f["report_s"] for f in both)
    result["counts"] = {"hours": counts["hours"], "seed": SEED}
    result["notes"] = [
        "the design onward replaces: 85.7% fixed (100% seen before), 3-6 ms a decision, 3-5 "
        "prompts per 100 actions, 10% stop rate, 10+ errors/h, 3-6 h, 70% worked around "
        "(stated, not measured)",
        "an error fixed automatically includes one whose step gave up on a component that its "
        "task then worked around (counts.errors_worked_around)",
    ]
    return result


WHY = "a share or count of the seeded session: no raw floor"
FIGURES: list[Figure] = []
TARGETS: list[Target] = []
for _key in KEYS.values():
    FIGURES += [
        Figure(f"{_key}: fix rate, all errors", f"{_key}.fix_rate", "share", why=WHY),
        Figure(f"{_key}: fix rate, seen before", f"{_key}.seen_before_fix_rate", "share", why=WHY),
        Figure(
            f"{_key}: decision p50", f"{_key}.decision_p50_us", "us", why="the rulebook in situ"
        ),
        Figure(
            f"{_key}: decision p99", f"{_key}.decision_p99_us", "us", why="the rulebook in situ"
        ),
        Figure(
            f"{_key}: prompts per 100 actions",
            f"{_key}.prompts_per_100_actions",
            "",
            why=WHY,
        ),
        Figure(f"{_key}: premature stops", f"{_key}.premature_stops", "", why=WHY),
        Figure(f"{_key}: errors per hour", f"{_key}.errors_per_hour", "", why=WHY),
        Figure(f"{_key}: continuous hours", f"{_key}.continuous_hours", "", why=WHY),
        Figure(f"{_key}: worked around", f"{_key}.worked_around_rate", "share", why=WHY),
        Figure(f"{_key}: crashes recovered", f"{_key}.crashes_recovered_rate", "share", why=WHY),
        Figure(f"{_key}: completed steps re-run", f"{_key}.completed_steps_rerun", "", why=WHY),
        Figure(f"{_key}: simulated s per s", f"{_key}.sim_speedup", "", why="wall time"),
        Figure(f"{_key}: wall time", f"{_key}.wall_s", "s", why="wall time"),
        Figure(f"{_key}: report of the log", f"{_key}.report_s", "s", why="wall time"),
    ]
    TARGETS += [
        Target(f"{_key}_seen_before_fixed", f"{_key}.seen_before_fix_rate", ">=", 1.0, why=WHY),
        Target(f"{_key}_prompts", f"{_key}.prompts_per_100_actions", "<=", 2.0, why=WHY),
        Target(f"{_key}_no_premature_stop", f"{_key}.premature_stops", "<=", 0, why=WHY),
        Target(f"{_key}_crashes_recovered", f"{_key}.crashes_recovered_rate", ">=", 1.0, why=WHY),
        Target(f"{_key}_no_completed_rerun", f"{_key}.completed_steps_rerun", "<=", 0, why=WHY),
        Target(f"{_key}_hours", f"{_key}.continuous_hours", ">=", 8.0, why=WHY),
        Target(
            f"{_key}_decision_p99",
            f"{_key}.decision_p99_us",
            "<=",
            50.0,
            why="the issue's absolute bound on a wall time in situ",
        ),
        Target(f"{_key}_under_5_minutes", f"{_key}.wall_s", "<=", 300.0, why="the issue's bound"),
    ]


def details(result: dict[str, Any]) -> list[str]:
    lines = []
    for key in KEYS.values():
        c = result[key]["counts"]
        lines.append(
            f"{key}: {c['simulated_hours']:.2f} h, {c['tasks']:,} tasks, {c['events']:,} events, "
            f"{c['actions']:,} actions, {c['errors']:,} errors ({c['errors_fixed']:,} fixed, "
            f"{c['errors_worked_around']} of them worked around; {c['seen_before']:,} seen "
            f"before), {c['prompts']} prompts, {c['crashes']} kill -9 "
            f"({c['in_flight_steps_rerun']} in-flight step(s) re-run), {c['lessons_taught']} "
            f"lesson(s) taught, {c['decisions']:,} decisions timed"
        )
    return lines


BENCHMARK = _bench.Benchmark(__doc__, FULL, QUICK, measure, FIGURES, TARGETS, details)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
