"""``onward demo``: a real session over real files, killed with SIGKILL part-way and resumed.

The demo surveys every ``.py`` file of the running Python's standard library and site-packages
(code this project did not write), one durable task per package or directory, two durable steps
per file and a summary per task. Its parts:

- :mod:`onward.demo.plan`: which files, grouped into tasks;
- :mod:`onward.demo.survey`: the steps' work on a file, and their small results (no file content
  enters the log; the errors real files raise are fixed or recorded, and the survey goes on);
- :mod:`onward.demo.index`: the flaky index service the summaries are filed with (seeded);
- :mod:`onward.demo.tasks`: the survey's tasks and steps, and where each files its totals;
- :mod:`onward.demo.worker`: the child process (``python -m onward.demo``) that runs them;
- :mod:`onward.demo.watch`: the parent's read-only fold of the log, and the progress line;
- :mod:`onward.demo.publish`: the last task, which publishes the totals once a person
  approves;
- :mod:`onward.demo.healing`, :mod:`onward.demo.degradation`, :mod:`onward.demo.budget`
  and :mod:`onward.demo.approval`: what healing, degradation, the error budget and the
  approval did in the run, folded from the log;
- :mod:`onward.demo.report`: the report (which ends with a link to the session's HTML page,
  :mod:`onward.report`, written next to the log);
- this module: the parent, which runs it all.

The work runs in a child process on ``sqlite:///<db>``, session ``demo``. The parent reads the
log: it shows progress, and once about 40% of the tasks are done, at a moment when a running
task has recorded some of its steps, it kills the child with SIGKILL. A new child reopens the
session and resumes by replay. Once the survey is done, its last task asks a person before it
publishes the totals to a file next to the log: the parent, seeing the request in the log,
answers it from a second process (``onward approve ID``), as a person would from another
terminal; with ``--yes`` the worker approves it itself. The parent then reports what the crash
cost, what healing did, how the session degraded and recovered, the error budget's decisions,
the approval, how to inspect the log, and ends with ``onward why`` on the approval's decision.

The errors are real ones: files that are not UTF-8 and files that are not Python 3 (from the
standard library's own test data), and the faults of a flaky index service, seeded
(:mod:`onward.demo.index`): timeouts, dropped connections, a busy server, a spent quota, and an
outage that opens its circuit breaker. The engine fixes, retries or gives up
(:mod:`onward.healing.healer`), and after the run the worker teaches it the fix a person would for
the quota errors it gave up. Running the demo again on the same log (the default when ``--db`` holds
an earlier run's log; ``--fresh`` starts over) opens a new session, ``demo-2``, and the errors
whose signature was fixed before are fixed on first sight: learning spans sessions.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import signal
import sys
import tempfile
import time
from typing import IO
from urllib.parse import unquote, urlsplit

import msgspec

from onward.cli.main import AddCommand
from onward.demo.approval import AnswerRun, Approver, explain_decision
from onward.demo.index import DEFAULT_SEED
from onward.demo.plan import DEFAULT_LIMIT, Plan, Unit, build_plan
from onward.demo.publish import totals_path
from onward.demo.report import (
    CrashReport,
    DemoReport,
    build_report,
    render_report,
    report_page,
    rerun_steps,
)
from onward.demo.survey import (
    FileError,
    FileFacts,
    FileOutcome,
    Shape,
    Totals,
    error_kind,
    parse_file,
    parse_source,
    read_file,
    summarise,
)
from onward.demo.tasks import register
from onward.demo.watch import Progress, Watch
from onward.demo.worker import (
    BUDGET,
    SESSION,
    WorkerMessage,
    spawn_worker,
    wait_for,
    worker_main,
)
from onward.events import EventLog, OnwardError, StepCompleted, StepFailed, UsageError, open_log
from onward.report import write_report

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_LIMIT",
    "DEFAULT_SEED",
    "DemoReport",
    "FileError",
    "FileFacts",
    "FileOutcome",
    "Plan",
    "Shape",
    "Totals",
    "Unit",
    "add_arguments",
    "build_plan",
    "error_kind",
    "parse_file",
    "parse_source",
    "read_file",
    "register",
    "register_command",
    "run_demo",
    "run_from_args",
    "summarise",
    "worker_main",
]

#: The demo's log file, in the current directory (a later run adds a session to it).
DEFAULT_DB = "onward-demo.db"
#: The share of tasks done when the worker is killed.
CRASH_AT = 0.4
#: How often the parent reads the log, in seconds.
POLL = 0.1
#: What the parent says when it approves the publication for you.
APPROVAL_NOTE = "approved by onward demo for you: the file holds the survey totals, nothing else"


def _demo_path(db: str) -> str:
    if "://" in db:
        parts = urlsplit(db)
        if parts.scheme.lower() != "sqlite":
            raise UsageError(f"the demo runs on SQLite: use a file path, not {db!r}")
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    else:
        path = db
    path = os.path.abspath(path)
    if not os.path.isdir(os.path.dirname(path)):
        raise UsageError(f"no directory {os.path.dirname(path)} for the demo's log")
    return path


_DEMO_SESSION = re.compile(rf"session-{SESSION}(-[0-9]+)?")


def _demo_sessions(path: str) -> list[str] | None:
    """The sessions of a log that earlier demo runs left (None: no such log, or another log:
    one with a session the demo does not name)."""
    if not os.path.exists(path):
        return None
    try:
        with open_log(path, create=False) as log:
            streams = [s for s in log.streams() if s.startswith("session-")]
    except OnwardError:  # LogNotFound too: not a log at all
        return None
    if not streams or not all(_DEMO_SESSION.fullmatch(s) for s in streams):
        return None
    return [s.removeprefix("session-") for s in streams]


def _next_session(earlier: list[str]) -> str:
    """The session of the next run on a log: ``demo``, then ``demo-2``, ``demo-3``..."""
    if not earlier:
        return SESSION
    n = len(earlier) + 1
    while f"{SESSION}-{n}" in earlier:
        n += 1
    return f"{SESSION}-{n}"


def _clear(path: str, yes: bool) -> None:
    """Delete the demo's log (and its WAL files) before a run.

    Raises:
        UsageError: the file is not a previous demo's log and the user did not agree, or the
            path (or a WAL file's) is a directory, which is never removed.
    """
    for suffix in ("", "-wal", "-shm", "-journal"):
        if os.path.isdir(path + suffix) and not os.path.islink(path + suffix):
            raise UsageError(
                f"{path + suffix} is a directory, not a log file: name a file for the demo's log"
            )
    if os.path.exists(path) and not (yes or _demo_sessions(path) is not None):
        if not sys.stdin.isatty():
            raise UsageError(f"{path} exists and is not a demo log; pass --yes to replace it")
        answer = input(f"{path} exists and is not a demo log. Replace it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise UsageError(f"{path} left as it was")
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def run_demo(
    *,
    db: str = DEFAULT_DB,
    limit: int | None = DEFAULT_LIMIT,
    workers: int = 1,
    crash: bool = True,
    yes: bool = False,
    seed: int = DEFAULT_SEED,
    fresh: bool = False,
    as_json: bool = False,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run the demo and print its report; returns the exit status.

    Args:
        db: the log file. If earlier demo runs left it, the run is a new session on it (what
            they learned applies); else it is created (replacing any other file, see ``yes``).
        limit: survey at most this many files (None or 0: all).
        workers: tasks run at once by the worker (the faults are the same from run to run
            with one).
        crash: kill the worker with SIGKILL at about 40% of the tasks, then resume.
        yes: answer yes to every question: replace ``db`` without asking when it is not a
            previous demo's log, and let the worker approve the publication of the totals
            itself (else the parent approves it from a second process, ``onward approve``).
        seed: the seed of the index service's faults.
        fresh: delete the log of earlier demo runs first, and start over.
        as_json: print the report as JSON.
        out: where the report goes (stdout).
        err: where progress goes (stderr).

    Raises:
        UsageError: bad arguments, or ``db`` is not to be replaced.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if limit is not None and limit < 0:
        raise UsageError(f"--limit must be >= 0, got {limit}")
    path = _demo_path(db)
    earlier = None if fresh else _demo_sessions(path)
    if earlier is None:
        _clear(path, yes)
        earlier = []
    session = _next_session(earlier)
    run = len(earlier) + 1
    started = time.perf_counter()
    plan = build_plan(limit)
    if not plan.units:
        raise UsageError("no .py files found to survey")
    total = len(plan.units)
    where = ", ".join(f"{label} {root} ({n} files)" for label, root, n in plan.roots)
    again = (
        f" (run {run} on this log: what earlier runs learned applies; --fresh starts over)"
        if run > 1
        else ""
    )
    err.write(
        f"onward demo: surveying {plan.selected} of {plan.found} .py files in {total} tasks: "
        f"{where}\nlog: {path} (SQLite, synchronous=FULL), session {session!r}{again}, "
        f"{workers} worker thread{'s' if workers > 1 else ''}, index service faults seed {seed}\n"
        f"last, the totals go to {totals_path(path)} once approved "
        f"({'by the worker: --yes' if yes else 'from a second process, as a person would'})\n"
    )
    hold = min(total - 1, math.ceil(CRASH_AT * total) + max(1, total // 10)) if crash else None
    crash_at = min(math.ceil(CRASH_AT * total), hold) if hold is not None else None
    progress = Progress(total, plan.selected, err)
    # Created here, not by the worker: a path that takes no file (a read-only folder, a full
    # disk) is told in one line rather than by the worker's traceback.
    with open_log(path):
        pass
    with tempfile.TemporaryDirectory(prefix="onward-demo-") as scratch:
        journal = os.path.join(scratch, "steps.journal")
        child = spawn_worker(
            path, workers, journal, plan=plan, hold=hold, session=session, seed=seed, yes=yes
        )
        children = [child]
        log: EventLog | None = None
        try:
            if wait_for(child, "ready") is None:
                child.wait()
                err.write(f"onward demo: the worker stopped with status {child.returncode}\n")
                return 1
            log = open_log(path)
            watch = Watch(log, session)
            approver = None if yes else Approver(path, APPROVAL_NOTE)
            killed = False
            # Kill once ~40% of the tasks are done, while a running task has recorded steps.
            while True:
                status = child.poll()
                watch.update()
                ended = watch.ended()
                progress.show(ended, watch.files, "(worker 1)" + watch.note())
                _answer(approver, watch, progress)
                if (
                    crash_at is not None
                    and status is None
                    and ended >= crash_at
                    and any(t.state == "running" and t.steps for t in watch.tasks())
                ):
                    os.kill(child.pid, signal.SIGKILL)
                    child.wait()
                    killed = True
                    break
                if status is not None:
                    break
                time.sleep(POLL)
            crash_report: CrashReport | None = None
            first_summary: WorkerMessage | None = None
            if not killed:
                first_summary = wait_for(child, "done")
                child.wait()
                if child.returncode != 0 or first_summary is None:
                    progress.done()
                    err.write(f"onward demo: the worker stopped with status {child.returncode}\n")
                    return 1
            else:
                watch.update()
                at = watch.position
                running = [t for t in watch.tasks() if t.state == "running"]
                in_flight = [t.task_id for t in running]
                recorded = sum(t.steps for t in running)
                before = watch.step_outcomes
                tasks_done = watch.ended()
                files_done = watch.files
                progress.message(
                    f"\nKILLED the worker (pid {child.pid}) with SIGKILL at position {at}: "
                    f"{tasks_done}/{total} tasks done, {len(in_flight)} in flight"
                )
                restart = time.time()
                child = spawn_worker(
                    path,
                    workers,
                    journal,
                    plan=None,
                    hold=None,
                    session=session,
                    seed=seed,
                    yes=yes,
                )
                children.append(child)
                progress.message(
                    f"resuming: a new worker (pid {child.pid}) reopens session {session!r}"
                )
                while child.poll() is None:
                    watch.update()
                    progress.show(watch.ended(), watch.files, "(worker 2, resumed)" + watch.note())
                    _answer(approver, watch, progress)
                    time.sleep(POLL)
                summary_line = wait_for(child, "done")
                if child.returncode != 0 or summary_line is None:
                    progress.done()
                    err.write(f"onward demo: the worker stopped with status {child.returncode}\n")
                    return 1
                summary = summary_line.summary
                watch.update()  # every outcome, before the journal is compared with them
                assert summary is not None
                first = next(
                    (
                        r.meta.time
                        for r in log.read(after=at, page_size=500)
                        if isinstance(r.event, StepCompleted | StepFailed)
                    ),
                    None,
                )
                crash_report = CrashReport(
                    pid=children[0].pid,
                    position=at,
                    tasks_done=tasks_done,
                    files_done=files_done,
                    steps_before=before,
                    in_flight=in_flight,
                    recovered=summary.recovered,
                    steps_replayed=recorded,
                    replays=summary.steps_replayed,
                    steps_rerun=rerun_steps(journal, watch.outcomes),
                    restart_to_first_step=None if first is None else first - restart,
                )
            watch.update()
            progress.show(watch.ended(), watch.files, "done", final=True)
            progress.done()
            verify = log.verify()
            report = build_report(
                path,
                plan,
                watch,
                verify,
                crash_report,
                journal,
                time.perf_counter() - started,
                run=run,
                seed=seed,
                budget=BUDGET,
                answered_from=None if approver is None else approver.answered,
            )
            if report.approval is not None:
                why = explain_decision(path, report.approval.decision_id, as_json=as_json)
                report = msgspec.structs.replace(report, why=why)
            report = msgspec.structs.replace(report, page=_write_page(log, path, session, err))
        finally:
            for c in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
                if c.stdout is not None:
                    c.stdout.close()
            if log is not None:
                log.close()
    if as_json:
        out.write(msgspec.json.format(msgspec.json.encode(report)).decode() + "\n")
    else:
        out.write(render_report(report))
    published = report.approval is not None and report.approval.task_state == "succeeded"
    ok = (
        report.verify.ok
        and report.tasks_unfinished == 0
        and (not crash or report.crash is not None)
        and published
    )
    return 0 if ok else 1


def _write_page(log: EventLog, path: str, session: str, err: IO[str]) -> str:
    """Write the session's HTML report next to the log; its path ("" when it failed)."""
    page = report_page(path, session)
    try:
        write_report(log, page, session=session)
    except (OnwardError, OSError) as exc:  # the demo's run stands without its page
        err.write(f"onward demo: the HTML report could not be written: {exc}\n")
        return ""
    return page


def _answer(approver: Approver | None, watch: Watch, progress: Progress) -> AnswerRun | None:
    """Approve the request the log shows waiting, from a second process (once)."""
    if approver is None:
        return None
    request = watch.approval.request
    done = approver.answer(watch.approval)
    if done is None or request is None:
        return done
    progress.message(
        f"\nASKED: {request.question} (decision {done.decision_id[:12]}, impact {request.impact})"
    )
    verdict = "APPROVED" if done.status == 0 else f"the answer FAILED (exit {done.status})"
    progress.message(
        f"{verdict} from a second process (pid {done.pid}): onward approve "
        f"{done.decision_id[:12]}... --note {done.note!r}"
    )
    return done


def register_command(command: AddCommand) -> None:
    """Add ``onward demo`` to the command line (the ``onward.commands`` entry point)."""
    demo = command(
        "demo",
        run_from_args,
        "survey every .py file of this Python's standard library and site-packages as durable "
        "tasks, kill the worker with SIGKILL part-way, resume it by replay, and report",
        db=DEFAULT_DB,
    )
    demo.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"survey at most N files, spread evenly over all of them (default {DEFAULT_LIMIT}, "
        "about a minute on 2 cores; 0 for every file)",
    )
    demo.add_argument(
        "--workers", type=int, default=1, metavar="N", help="tasks run at once (default 1)"
    )
    demo.add_argument("--no-crash", action="store_true", help="run without killing the worker")
    demo.add_argument(
        "--yes",
        action="store_true",
        help="answer yes to every question: replace a --db that is not a demo log without "
        "asking, and let the worker approve the publication of the totals itself",
    )
    add_arguments(demo)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's healing options to its ``onward demo`` parser: ``--seed`` and ``--fresh``."""
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        metavar="N",
        help=f"seed of the index service's faults (default {DEFAULT_SEED}): the same seed meets "
        "the same faults in each task that calls the running service (which tasks call during "
        "its outage is the clock's)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the log of earlier demo runs first (by default a run on it is a new "
        "session, and what earlier runs learned applies)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the demo with the options of ``onward demo`` (those of :func:`add_arguments`
    included; absent ones take their defaults)."""
    return run_demo(
        db=getattr(args, "db", DEFAULT_DB),
        limit=getattr(args, "limit", DEFAULT_LIMIT),
        workers=getattr(args, "workers", 1),
        crash=not getattr(args, "no_crash", False),
        yes=getattr(args, "yes", False),
        seed=getattr(args, "seed", DEFAULT_SEED),
        fresh=getattr(args, "fresh", False),
        as_json=getattr(args, "json", False),
    )
