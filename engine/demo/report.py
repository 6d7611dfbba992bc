"""What ``onward demo`` reports: the survey's totals, what the crash cost, what healing did
(errors by signature, fixes and their success rates, retries, the breaker's moves, what was
learned, and on a later run the errors fixed on first sight), how the session degraded and
recovered, the error budget's decisions, the approval and who gave it, the log's check, the
commands to inspect the log, and last ``onward why`` on the approval's decision."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Callable

import msgspec

from onward.demo.approval import AnswerRun, ApprovalStory, WhyRun
from onward.demo.budget import BudgetStory, budget_rows
from onward.demo.degradation import Degradation, degradation_rows
from onward.demo.healing import Healing, SignatureLine, healing
from onward.demo.index import DEPENDENCY
from onward.demo.plan import Plan
from onward.demo.survey import Totals
from onward.demo.watch import Watch
from onward.events import VerifyReport
from onward.judgement.budget import ErrorBudget

__all__ = [
    "CrashReport",
    "DemoReport",
    "build_report",
    "journal_lines",
    "onward_command",
    "render_report",
    "report_page",
]


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
        steps_replayed: the steps the tasks in flight had recorded: the resumed worker returned
            them from the log without running them.
        replays: every step the resumed worker returned from the log (tasks that waited for a
            retry or for the breaker replay theirs too).
        steps_rerun: step tries that ran without recording an outcome, and ran again (a
            try's key is in the journal more often than the log records its outcomes).
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
    replays: int
    steps_rerun: int
    restart_to_first_step: float | None


class DemoReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``onward demo --json`` prints.

    Attributes:
        session: the run's session (``demo``; ``demo-2``... for later runs on the same log).
        run: which run of the demo on this log it is (1 for the first).
        seed: the seed of the index service's faults.
        indexed: the tasks whose totals each index holds ("" for none).
        learned_commands: the ``onward learn`` command equivalent to each fix the run taught
            (``healing.learned``).
        steps: the step outcomes recorded (each try, completed or failed).
        step_executions: the step tries that ran (the journal's lines).
        healing: what healing did.
        degradation: how the session degraded and recovered.
        budget: the error budget's decisions.
        approval: the approval request, its decision and its answer (None: nothing was asked).
        why: ``onward why`` on the approval's decision (its ``--json`` object with ``--json``).
        page: the session's HTML report (``onward report``), written next to the log ("" when
            it could not be written).
    """

    db: str
    session: str
    run: int
    seed: int
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
    indexed: dict[str, int]
    learned_commands: list[str]
    steps: int
    step_executions: int
    healing: Healing
    crash: CrashReport | None
    seconds: float
    verify: VerifyReport
    commands: list[str]
    degradation: Degradation
    budget: BudgetStory
    approval: ApprovalStory | None
    why: WhyRun | None = None
    page: str = ""


def report_page(path: str, session: str) -> str:
    """Where the demo writes its session's HTML report: next to the log."""
    stem = path[: -len(".db")] if path.endswith(".db") else path
    return f"{stem}-{session}-report.html"


def journal_lines(journal: str) -> list[str]:
    """The idempotency keys the steps wrote to the journal, one per execution."""
    try:
        with open(journal, encoding="utf-8") as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def onward_command() -> str:
    """How to call the ``onward`` command from here."""
    if shutil.which("onward"):
        return "onward"
    if os.path.basename(sys.argv[0]) == "onward":
        return sys.argv[0]
    return f"{shlex.quote(sys.executable)} -m engine"


def rerun_steps(journal: str, outcomes: Counter[str]) -> int:
    """The step tries that ran with no outcome recorded (killed in flight) and so ran again."""
    executions = Counter(journal_lines(journal))
    return sum(max(0, n - outcomes[key]) for key, n in executions.items())


def build_report(
    path: str,
    plan: Plan,
    watch: Watch,
    verify: VerifyReport,
    crash: CrashReport | None,
    journal: str,
    seconds: float,
    *,
    run: int = 1,
    seed: int = 0,
    budget: ErrorBudget | None = None,
    answered_from: AnswerRun | None = None,
) -> DemoReport:
    """The demo's report (its ``why`` is added once the run is reported).

    Args:
        path: the log file.
        plan: the survey's plan.
        watch: the log, folded to its end.
        verify: the log's check.
        crash: what the kill cost (None: no crash).
        journal: the steps' journal.
        seconds: how long the demo took.
        run: which run of the demo on this log it is.
        seed: the seed of the index service's faults.
        budget: the error budget the worker ran with.
        answered_from: the parent's ``onward approve``, if it ran.
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
    onward = onward_command()
    db = shlex.quote(os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path)
    show = (crash.in_flight[0] if crash and crash.in_flight else None) or (
        tasks[0].task_id if tasks else "TASK"
    )
    healed = healing(watch.healing, watch.projections)
    replay_to = crash.position if crash else watch.position // 2
    commands = [
        f"{onward} sessions --db {db}",
        f"{onward} tasks --session {watch.session} --db {db}",
        f"{onward} show {show} --db {db}",
        f"{onward} replay --to {replay_to} --db {db}",
        f"{onward} errors --db {db}",
        f"{onward} breakers --db {db}",
    ]
    if healed.healed_task is not None:
        commands.append(f"{onward} show {healed.healed_task} --db {db}")
    approval = watch.approval.story(
        watch.task_state(watch.approval.request.subject) if watch.approval.request else "",
        answered_from,
    )
    if approval is not None:
        commands.append(f"{onward} approvals --db {db}")
        commands.append(f"{onward} why {approval.decision_id} --db {db}")
    commands.append(f"{onward} verify --db {db}")
    learned = [
        # --custom: the fix is the demo's own, registered by its worker, not a built-in one.
        f"{onward} learn {lesson.signature} {lesson.fix} --custom --db {db}"
        for lesson in healed.learned
    ]
    indexed = Counter(t.index for t in totals)
    return DemoReport(
        db=path,
        session=watch.session,
        run=run,
        seed=seed,
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
        indexed=dict(indexed.most_common()),
        learned_commands=learned,
        steps=watch.step_outcomes,
        step_executions=len(journal_lines(journal)),
        healing=healed,
        crash=crash,
        seconds=round(seconds, 3),
        verify=verify,
        commands=commands,
        degradation=watch.degradation.story(),
        budget=watch.budget.story(budget or ErrorBudget()),
        approval=approval,
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _short(error_type: str) -> str:
    return error_type.rpartition(".")[2]


def _groups(signatures: list[SignatureLine]) -> list[list[SignatureLine]]:
    """Signatures that read alike in the report (type, kind, step, what was done), together;
    ``SyntaxError`` has one per file, as its message names the file."""
    groups: dict[tuple[object, ...], list[SignatureLine]] = {}
    for s in signatures:
        key = (
            s.error_type,
            s.kind,
            s.step,
            tuple(sorted(s.fixes)),
            bool(s.retried),
            bool(s.given_up),
            s.known,
        )
        groups.setdefault(key, []).append(s)
    return sorted(groups.values(), key=lambda g: -sum(s.errors for s in g))


def render_report(r: DemoReport) -> str:
    """The report as text for the terminal."""
    title = f"session {r.session!r}, seed {r.seed}"
    if r.run > 1:
        title = f"run {r.run} on this log: {title}"
    lines = ["", f"onward demo: done ({title})", ""]

    def row(name: str, text: str) -> None:
        lines.append(f"  {name:<13}{text}")

    h = r.healing
    row(
        "tasks",
        f"{r.tasks}: {r.tasks_succeeded} succeeded, {r.tasks_failed} failed, "
        f"{r.tasks_unfinished} unfinished",
    )
    error_total = sum(r.errors.values())
    healed = f"{h.healed_files} healed by a fix, " if h.healed_files else ""
    row(
        "files",
        f"{r.files:,} surveyed: {r.files_parsed:,} parsed; {healed}{error_total} kept an error",
    )
    for kind, n in r.errors.items():
        row("", f"{kind} x{n}, e.g.")
        for example in r.error_examples.get(kind, [])[:2]:
            row("", f"    {_clip(example, 110)}")
    row(
        "code",
        f"{r.lines:,} lines, {r.functions:,} functions, {r.classes:,} classes, "
        f"{r.imports:,} imports",
    )
    filed = [f"{n} with the {name} index" for name, n in r.indexed.items() if name]
    row(
        "index",
        f"totals filed with the {DEPENDENCY}: "
        + (", ".join(filed) or "none")
        + f"; {r.indexed.get('', 0)} given up",
    )
    row(
        "steps",
        f"{r.steps:,} outcomes recorded (one per try), {r.step_executions:,} step executions",
    )
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
        row(
            "",
            f"{c.replays:,} step replays in all after the restart (a task that waits for a "
            "retry or the breaker replays its steps when it runs again)",
        )
        if c.restart_to_first_step is not None:
            row(
                "",
                f"{c.restart_to_first_step:.2f} s from restart to the first resumed step "
                "(new process, open, replay, recovery)",
            )
    else:
        row("crash", "none (--no-crash)")
    _render_healing(h, row)
    for lesson, command in zip(h.learned, r.learned_commands, strict=False):
        row(
            "learned",
            f"{lesson.fix} for {_short(lesson.error_type) or 'the error'} "
            f"[{lesson.signature}], given up in this run; the demo taught it as a person would:",
        )
        row("", f"    {command}")
    if h.learned or (h.fixes and h.first_sight is None):
        row(
            "next",
            "run the demo again on this log: a new session, where the errors fixed or taught "
            "in this one are fixed on first sight",
        )
    for heading, text in degradation_rows(r.degradation) + budget_rows(r.budget):
        row(heading, text)
    _render_approval(r, row)
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
    if r.why is not None:
        lines += ["", f"why did the engine ask? {_why_command(r)}", ""]
        lines += [f"  {line}".rstrip() for line in r.why.text.splitlines()]
    if r.page:
        command = (
            f"{onward_command()} report --db {_db(r)} --session {r.session} "
            f"-o {shlex.quote(os.path.basename(r.page))}"
        )
        lines += [
            "",
            "the whole session on one page (timeline, errors, breakers, budget, decisions):",
            f"  file://{r.page}",
            f"  ({command})",
        ]
    return "\n".join(lines) + "\n"


def _db(r: DemoReport) -> str:
    relative = os.path.relpath(r.db)
    return shlex.quote(relative if not relative.startswith("..") else r.db)


def _why_command(r: DemoReport) -> str:
    assert r.why is not None
    return f"{onward_command()} why {r.why.decision_id} --db {_db(r)}"


def _render_approval(r: DemoReport, row: Callable[[str, str], None]) -> None:
    a = r.approval
    if a is None:
        row("approval", "none asked")
        return
    forced = f", forced by rule {a.rule}" if a.rule else ""
    score = "-" if a.confidence is None else f"{a.confidence:.2f}"
    row(
        "approval",
        f"{a.action} (impact {a.impact}) asked at {a.asked_at:.1f} s: confidence {score}, "
        f"strategy {a.strategy}{forced}",
    )
    row("", f"  asked: {_clip(a.question, 100)}")
    if not a.answer:
        row("", f"  no answer yet: `{onward_command()} approve {a.decision_id} --db {_db(r)}`")
    else:
        after = f" after {a.waited:.2f} s" if a.waited is not None else ""
        row("", f'  {a.answer}{after} by {a.by or "someone unnamed"}: "{_clip(a.note, 80)}"')
        source = a.answered_from
        if source is not None:
            row("", f"  from a second process (pid {source.pid}, exit {source.status}):")
            row(
                "",
                f"    {onward_command()} approve {source.decision_id} --db {_db(r)} "
                f"--note {shlex.quote(source.note)}",
            )
        who = "the same worker (--yes)" if a.actor == a.asked_by else f"{a.actor}"
        row("", f"  asked by worker {a.asked_by}; answer appended by {who}")
    if a.checked is not None:
        held = "held" if a.checked else "FAILED" + (", undone" if a.undone else "")
        where = f": {a.published}" if a.published else ""
        row("", f"  the action ran; its check read the file back: {held}{where}")
    row("", f"  task {a.task_id}: {a.task_state}")


def _render_healing(h: Healing, row: Callable[[str, str], None]) -> None:
    if not h.errors:
        row("errors", "none")
    else:
        kinds = ", ".join(f"{n} {kind}" for kind, n in h.kinds.items())
        row(
            "errors",
            f"{_plural(h.errors, 'error')} in {_plural(len(h.signatures), 'signature')}: "
            f"{kinds} (the signature's kind, from the error-learning DB)",
        )
    for group in _groups(h.signatures):
        first = group[0]
        fixed: Counter[str] = Counter()
        for s in group:
            fixed.update(s.fixes)
        done = [f"fixed {n} by {fix}" for fix, n in fixed.most_common()]
        retried = sum(s.retried for s in group)
        given_up = sum(s.given_up for s in group)
        if retried:
            done.append(f"retried {retried}")
        if given_up:
            done.append(f"given up {given_up}")
        known = " [fixed before]" if first.known else ""
        head = f"{_short(first.error_type)} x{sum(s.errors for s in group)}"
        if len(group) > 1:
            head += f" ({len(group)} sig.)"
        text = f"  {head:<30} {first.kind:<9} {first.step:<9} {', '.join(done)}{known}"
        row("", _clip(text, 120))
    for i, f in enumerate(h.fixes):
        row(
            "fixes" if i == 0 else "",
            f"{f.fix:<35} {f.successes}/{f.attempts} succeeded in this run, "
            f"{f.successes_all}/{f.attempts_all} in all runs (rate {f.rate:.2f})",
        )
    row(
        "retries",
        f"{h.retries} scheduled, {h.retries_succeeded} succeeded"
        if h.retries
        else "none scheduled",
    )
    for b in h.breakers:
        row(
            "breaker",
            f"{b.dependency}: {b.calls} calls, {b.failures} failed; tasks waited for the "
            f"half-open moment {_plural(b.held, 'time')}; {b.state.replace('_', '-')} at the end",
        )
        for m in b.moves:
            row("", f"  {m.at:6.1f} s  {m.state.replace('_', '-'):<10} {m.why}")
    for lesson in h.learned_before:
        where = (
            f"in an earlier run (session {lesson.session!r})"
            if lesson.session
            else "taught with `onward learn`"
        )
        row(
            "learned",
            f"{_short(lesson.error_type) or 'error'} [{lesson.signature}] -> {lesson.fix}, {where}",
        )
    if h.first_sight is not None:
        fs = h.first_sight
        row(
            "first sight",
            f"fixed on first sight: {fs.fixed} of {_plural(fs.errors, 'error')} whose signature "
            f"was fixed before ({_plural(fs.signatures, 'signature')})",
        )
