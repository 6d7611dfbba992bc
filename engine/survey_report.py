"""What ``onward demo`` reports: the survey's totals, what the crash cost, the log's check, and
the commands to inspect the log."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections import Counter

import msgspec

from engine.survey import Totals
from engine.survey_plan import Plan
from engine.survey_watch import Watch
from events import VerifyReport

__all__ = ["CrashReport", "DemoReport", "build_report", "journal_lines", "render_report"]


class CrashReport(msgspec.Struct, frozen=True, kw_only=True):
    """What the kill interrupted and what resuming cost.

    Attributes:
        pid: the worker killed with SIGKILL.
        position: the log's head at the kill (``onward replay --to`` it).
        tasks_done: tasks ended before the kill.
        files_done: files read before the kill.
        steps_before: step outcomes recorded before the kill.
        in_flight: the tasks running at the kill.
        recovered: tasks the resumed worker took back from the dead one.
        steps_replayed: steps the resumed worker returned from the log without running them.
        steps_rerun: steps that ran twice (their key is in the journal twice).
        restart_to_first_step: seconds from starting the new worker to its first step outcome.
    """

    pid: int
    position: int
    tasks_done: int
    files_done: int
    steps_before: int
    in_flight: list[str]
    recovered: int
    steps_replayed: int
    steps_rerun: int
    restart_to_first_step: float | None


class DemoReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``onward demo --json`` prints."""

    db: str
    files_found: int
    files: int
    tasks: int
    tasks_succeeded: int
    tasks_failed: int
    tasks_unfinished: int
    files_parsed: int
    errors: dict[str, int]
    error_examples: dict[str, list[str]]
    lines: int
    functions: int
    classes: int
    imports: int
    steps: int
    step_executions: int
    crash: CrashReport | None
    seconds: float
    verify: VerifyReport
    commands: list[str]


def journal_lines(journal: str) -> list[str]:
    """The idempotency keys the steps wrote to the journal, one per execution."""
    try:
        with open(journal, encoding="utf-8") as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _onward() -> str:
    """How to call the ``onward`` command from here."""
    if shutil.which("onward"):
        return "onward"
    if os.path.basename(sys.argv[0]) == "onward":
        return sys.argv[0]
    return f"{shlex.quote(sys.executable)} -m engine"


def build_report(
    path: str,
    plan: Plan,
    watch: Watch,
    verify: VerifyReport,
    crash: CrashReport | None,
    journal: str,
    seconds: float,
) -> DemoReport:
    """The demo's report.

    Args:
        path: the log file.
        plan: the survey's plan.
        watch: the log, folded to its end.
        verify: the log's check.
        crash: what the kill cost (None: no crash).
        journal: the steps' journal.
        seconds: how long the demo took.
    """
    tasks = watch.tasks()
    totals = [msgspec.convert(v, Totals) for v in watch.results.values()]
    errors: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for t in totals:
        for e in t.errors:
            errors[e.kind] += 1
            root = t.label.partition("/")[0]
            if len(examples.setdefault(e.kind, [])) < 3:
                examples[e.kind].append(f"{root}/{e.path}: {e.message}")
    onward = _onward()
    db = shlex.quote(os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path)
    show = (crash.in_flight[0] if crash and crash.in_flight else None) or (
        tasks[0].task_id if tasks else "TASK"
    )
    replay_to = crash.position if crash else watch.position // 2
    commands = [
        f"{onward} sessions --db {db}",
        f"{onward} tasks --db {db}",
        f"{onward} show {show} --db {db}",
        f"{onward} replay --to {replay_to} --db {db}",
        f"{onward} verify --db {db}",
    ]
    return DemoReport(
        db=path,
        files_found=plan.found,
        files=sum(t.files for t in totals),
        tasks=len(tasks),
        tasks_succeeded=sum(1 for t in tasks if t.state == "succeeded"),
        tasks_failed=sum(1 for t in tasks if t.state == "failed"),
        tasks_unfinished=sum(1 for t in tasks if not t.terminal),
        files_parsed=sum(t.parsed for t in totals),
        errors=dict(errors.most_common()),
        error_examples=examples,
        lines=sum(t.lines for t in totals),
        functions=sum(t.functions for t in totals),
        classes=sum(t.classes for t in totals),
        imports=sum(t.imports for t in totals),
        steps=watch.step_outcomes,
        step_executions=len(journal_lines(journal)),
        crash=crash,
        seconds=round(seconds, 3),
        verify=verify,
        commands=commands,
    )


def render_report(r: DemoReport) -> str:
    """The report as text for the terminal."""
    lines = ["", "onward demo: done", ""]

    def row(name: str, text: str) -> None:
        lines.append(f"  {name:<13}{text}")

    row(
        "tasks",
        f"{r.tasks}: {r.tasks_succeeded} succeeded, {r.tasks_failed} failed, "
        f"{r.tasks_unfinished} unfinished",
    )
    error_total = sum(r.errors.values())
    row("files", f"{r.files:,} surveyed: {r.files_parsed:,} parsed, {error_total} raised errors")
    for kind, n in r.errors.items():
        row("", f"{kind} x{n}, e.g.")
        for example in r.error_examples.get(kind, [])[:2]:
            row("", f"    {example if len(example) <= 110 else example[:107] + '...'}")
    row(
        "code",
        f"{r.lines:,} lines, {r.functions:,} functions, {r.classes:,} classes, "
        f"{r.imports:,} imports",
    )
    row("steps", f"{r.steps:,} outcomes recorded, {r.step_executions:,} step executions")
    c = r.crash
    if c is not None:
        row(
            "crash",
            f"worker pid {c.pid} killed with SIGKILL at position {c.position:,}: "
            f"{c.tasks_done} tasks and {c.files_done:,} files done, "
            f"{c.steps_before:,} steps recorded",
        )
        row(
            "",
            f"{len(c.in_flight)} task{'s' if len(c.in_flight) != 1 else ''} in flight: "
            + (", ".join(c.in_flight) or "none"),
        )
        row(
            "resume",
            f"{c.recovered} task{'s' if c.recovered != 1 else ''} recovered; "
            f"{c.steps_replayed} step{'s' if c.steps_replayed != 1 else ''} replayed from the "
            f"log (not run again), {c.steps_rerun} re-run (at most one per task in flight)",
        )
        if c.restart_to_first_step is not None:
            row(
                "",
                f"{c.restart_to_first_step:.2f} s from restart to the first resumed step "
                "(new process, open, replay, recovery)",
            )
    else:
        row("crash", "none (--no-crash)")
    row("total time", f"{r.seconds:.1f} s")
    v = r.verify
    row(
        "verify",
        f"ok: {v.events:,} events in {v.streams:,} streams, head {v.head:,}"
        if v.ok
        else f"DAMAGED: {len(v.problems)} records",
    )
    lines += ["", "inspect the log:"]
    lines += [f"  {command}" for command in r.commands]
    return "\n".join(lines) + "\n"
