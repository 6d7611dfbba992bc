"""``onward demo``: a real session over real files, killed with SIGKILL part-way and resumed.

The demo surveys every ``.py`` file of the running Python's standard library and site-packages
(code this project did not write), one durable task per package or directory, two durable steps
per file and a summary per task. Its parts:

- :mod:`engine.survey_plan`: which files, grouped into tasks;
- :mod:`engine.survey`: the steps' work on a file, and their small results (no file content
  enters the log; the errors real files raise are recorded, and the survey goes on);
- :mod:`engine.survey_worker`: the child process (``python -m engine.demo``) that runs them;
- :mod:`engine.survey_watch`: the parent's read-only fold of the log, and the progress line;
- :mod:`engine.survey_report`: the report;
- this module: the parent, which runs it all.

The work runs in a child process on ``sqlite:///<db>``, session ``demo``. The parent only reads
the log: it shows progress, and once about 40% of the tasks are done, at a moment when a running
task has recorded some of its steps, it kills the child with SIGKILL. A new child reopens the
session and resumes by replay; the parent then reports what the crash cost and how to inspect
the log.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from typing import IO
from urllib.parse import unquote, urlsplit

import msgspec

from engine.survey import (
    FileError,
    FileFacts,
    FileOutcome,
    Shape,
    Totals,
    error_kind,
    parse_file,
    read_file,
    summarise,
)
from engine.survey_plan import DEFAULT_LIMIT, Plan, Unit, build_plan
from engine.survey_report import (
    CrashReport,
    DemoReport,
    build_report,
    journal_lines,
    render_report,
)
from engine.survey_watch import Progress, Watch
from engine.survey_worker import (
    SESSION,
    WorkerMessage,
    register,
    spawn_worker,
    wait_for,
    worker_main,
)
from events import EventLog, OnwardError, StepCompleted, StepFailed, UsageError, open_log

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_LIMIT",
    "DemoReport",
    "FileError",
    "FileFacts",
    "FileOutcome",
    "Plan",
    "Shape",
    "Totals",
    "Unit",
    "build_plan",
    "error_kind",
    "parse_file",
    "read_file",
    "register",
    "run_demo",
    "summarise",
    "worker_main",
]

#: The demo's log file, in the current directory (replaced on every run).
DEFAULT_DB = "onward-demo.db"
#: The share of tasks done when the worker is killed.
CRASH_AT = 0.4
#: How often the parent reads the log, in seconds.
POLL = 0.1


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


def _previous_demo(path: str) -> bool:
    """Whether a file is a log a previous demo left: its only session is the demo's."""
    try:
        with open_log(f"sqlite:///{path}", create=False) as log:
            sessions = [s for s in log.streams() if s.startswith("session-")]
    except OnwardError:  # LogNotFound too: not a log at all
        return False
    return sessions == [f"session-{SESSION}"]


def _clear(path: str, yes: bool) -> None:
    """Delete the demo's log (and its WAL files) before a run.

    Raises:
        UsageError: the file is not a previous demo's log and the user did not agree.
    """
    if os.path.exists(path) and not (yes or _previous_demo(path)):
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
    as_json: bool = False,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Run the demo and print its report; returns the exit status.

    Args:
        db: the log file (deleted first if it exists).
        limit: survey at most this many files (None or 0: all).
        workers: tasks run at once by the worker.
        crash: kill the worker with SIGKILL at about 40% of the tasks, then resume.
        yes: replace ``db`` without asking when it is not a previous demo's log.
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
    _clear(path, yes)
    started = time.perf_counter()
    plan = build_plan(limit)
    if not plan.units:
        raise UsageError("no .py files found to survey")
    total = len(plan.units)
    where = ", ".join(f"{label} {root} ({n} files)" for label, root, n in plan.roots)
    err.write(
        f"onward demo: surveying {plan.selected} of {plan.found} .py files in {total} tasks: "
        f"{where}\nlog: {path} (SQLite, synchronous=FULL), session {SESSION!r}, "
        f"{workers} worker thread{'s' if workers > 1 else ''}\n"
    )
    hold = min(total - 1, math.ceil(CRASH_AT * total) + max(1, total // 10)) if crash else None
    crash_at = min(math.ceil(CRASH_AT * total), hold) if hold is not None else None
    progress = Progress(total, plan.selected, err)
    with tempfile.TemporaryDirectory(prefix="onward-demo-") as scratch:
        journal = os.path.join(scratch, "steps.journal")
        child = spawn_worker(path, workers, journal, plan=plan, hold=hold)
        children = [child]
        log: EventLog | None = None
        try:
            if wait_for(child, "ready") is None:
                child.wait()
                err.write(f"onward demo: the worker stopped with status {child.returncode}\n")
                return 1
            log = open_log(f"sqlite:///{path}")
            watch = Watch(log)
            killed = False
            # Kill once ~40% of the tasks are done, while a running task has recorded steps.
            while True:
                status = child.poll()
                watch.update()
                ended = watch.ended()
                progress.show(ended, watch.files, "(worker 1)")
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
                in_flight = [t.task_id for t in watch.tasks() if t.state == "running"]
                before = watch.step_outcomes
                tasks_done = watch.ended()
                files_done = watch.files
                progress.message(
                    f"\nKILLED the worker (pid {child.pid}) with SIGKILL at position {at}: "
                    f"{tasks_done}/{total} tasks done, {len(in_flight)} in flight"
                )
                restart = time.time()
                child = spawn_worker(path, workers, journal, plan=None, hold=None)
                children.append(child)
                progress.message(
                    f"resuming: a new worker (pid {child.pid}) reopens session {SESSION!r}"
                )
                while child.poll() is None:
                    watch.update()
                    progress.show(watch.ended(), watch.files, "(worker 2, resumed)")
                    time.sleep(POLL)
                summary_line = wait_for(child, "done")
                if child.returncode != 0 or summary_line is None:
                    progress.done()
                    err.write(f"onward demo: the worker stopped with status {child.returncode}\n")
                    return 1
                summary = summary_line.summary
                assert summary is not None
                first = next(
                    (
                        r.meta.time
                        for r in log.read(after=at, page_size=500)
                        if isinstance(r.event, StepCompleted | StepFailed)
                    ),
                    None,
                )
                executions = Counter(journal_lines(journal))
                crash_report = CrashReport(
                    pid=children[0].pid,
                    position=at,
                    tasks_done=tasks_done,
                    files_done=files_done,
                    steps_before=before,
                    in_flight=in_flight,
                    recovered=summary.recovered,
                    steps_replayed=summary.steps_replayed,
                    steps_rerun=sum(n - 1 for n in executions.values() if n > 1),
                    restart_to_first_step=None if first is None else first - restart,
                )
            watch.update()
            progress.show(watch.ended(), watch.files, "done", final=True)
            progress.done()
            verify = log.verify()
            report = build_report(
                path, plan, watch, verify, crash_report, journal, time.perf_counter() - started
            )
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
    ok = report.verify.ok and report.tasks_unfinished == 0 and (not crash or report.crash)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(worker_main())
