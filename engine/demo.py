"""``onward demo``: a real session over real files, killed with SIGKILL part-way and resumed.

The demo surveys every ``.py`` file of the running Python's standard library and site-packages
(code this project did not write): one task per package or directory (big ones split by
subdirectory), and per file two durable steps, ``read`` (size, lines, sha256 of the bytes,
decoded as UTF-8) and ``parse`` (functions, classes and imports counted with :mod:`ast`), then a
``summarise`` step per task. Step results are small: no file content enters the log. The errors
real files raise (``UnicodeDecodeError``, ``SyntaxError``, null bytes, ``RecursionError`` or
``MemoryError`` for deep nesting) are recorded as ``StepFailed``; the task notes them and goes
on with the next file.

The work runs in a child process (``python -m engine.demo``) on ``sqlite:///<db>``, session
``demo``. The parent only reads the log: it shows progress, and once about 40% of the tasks are
done, at a moment when a running task has recorded some of its steps, it kills the child with
SIGKILL. A new child reopens the session and resumes by replay; the parent then reports what the
crash cost and how to inspect the log.

Every step also writes its idempotency key to a scratch journal before it works, standing for
an external effect: that is how the demo counts the steps that really ran twice (at most the one
in flight in each task that was running at the crash). If the parent's polling is slower than the
work (a small ``--limit`` on a fast machine), the child would finish before the parent saw the
crash point; so a few tasks past it the child holds its next step, as a slow model call would,
until the kill comes.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import msgspec

from engine.engine import Engine, RunSummary
from engine.run import StepFailedError
from events import (
    EventLog,
    OnwardError,
    StepCompleted,
    StepFailed,
    TaskSucceeded,
    UsageError,
    VerifyReport,
    open_log,
)
from projections import Projections, TaskView

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
#: Files surveyed by default: every file of a usual install, about a minute on 2 cores.
DEFAULT_LIMIT = 6000
#: The session the demo's work runs in.
SESSION = "demo"
#: A package with more files than this is split by subdirectory (and long lists in chunks).
MAX_FILES_PER_TASK = 150
#: The share of tasks done when the worker is killed.
CRASH_AT = 0.4
#: How often the parent reads the log, in seconds.
POLL = 0.1

#: The fields of statements (and of except handlers and match cases) that hold statements.
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")

_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})


# -- the step results: small, frozen, never the file's content ---------------------------------


class FileFacts(msgspec.Struct, frozen=True):
    """What ``read`` records about a file."""

    size: int
    lines: int
    sha256: str


class Shape(msgspec.Struct, frozen=True):
    """What ``parse`` records about a file."""

    functions: int
    classes: int
    imports: int


class FileError(msgspec.Struct, frozen=True):
    """A file whose step raised: which step, the exception's type, and its message (clipped)."""

    path: str
    step: str
    kind: str
    message: str


class FileOutcome(msgspec.Struct, frozen=True):
    """One file's outcome inside a task (the input of ``summarise``)."""

    path: str
    facts: FileFacts | None = None
    shape: Shape | None = None
    error: FileError | None = None


class Totals(msgspec.Struct, frozen=True):
    """What ``summarise`` records for a task, and the task's result."""

    label: str
    files: int
    parsed: int
    bytes: int
    lines: int
    functions: int
    classes: int
    imports: int
    errors: list[FileError]


# -- the steps' work: plain functions over real files ------------------------------------------


def read_file(path: str) -> FileFacts:
    """Size, line count and sha256 of a file's bytes, which must decode as UTF-8.

    Raises:
        UnicodeDecodeError: the bytes are not UTF-8.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read()
    data.decode("utf-8")
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return FileFacts(size=len(data), lines=lines, sha256=hashlib.sha256(data).hexdigest())


def parse_file(path: str) -> Shape:
    """Counts of functions, classes and import statements in a Python file.

    Raises:
        SyntaxError: not valid Python for this interpreter (or, from Python 3.11.4, it holds
            null bytes).
        ValueError: the source holds null bytes (before Python 3.11.4).
        RecursionError: nesting too deep for the parser.
        UnicodeDecodeError: the bytes are not UTF-8.
    """
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    functions = classes = imports = 0
    # Definitions and imports are statements: walking the statement lists alone finds them all,
    # at a fifth of the cost of visiting every expression node.
    pending: list[list[Any]] = [ast.parse(text, filename=path).body]
    while pending:
        for node in pending.pop():
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions += 1
            elif isinstance(node, ast.ClassDef):
                classes += 1
            elif isinstance(node, ast.Import | ast.ImportFrom):
                imports += 1
            for field in _STATEMENT_LISTS:
                nested = getattr(node, field, None)
                if isinstance(nested, list):
                    pending.append(nested)
    return Shape(functions=functions, classes=classes, imports=imports)


def summarise(label: str, outcomes: Sequence[FileOutcome]) -> Totals:
    """The totals of a task's files."""
    facts = [o.facts for o in outcomes if o.facts is not None]
    shapes = [o.shape for o in outcomes if o.shape is not None]
    return Totals(
        label=label,
        files=len(outcomes),
        parsed=len(shapes),
        bytes=sum(f.size for f in facts),
        lines=sum(f.lines for f in facts),
        functions=sum(s.functions for s in shapes),
        classes=sum(s.classes for s in shapes),
        imports=sum(s.imports for s in shapes),
        errors=[o.error for o in outcomes if o.error is not None],
    )


def error_kind(exc: BaseException) -> str:
    """The type name of a step's error, also when it is replayed from the log."""
    if isinstance(exc, StepFailedError):
        return exc.error_type
    return type(exc).__name__


def _file_error(path: str, step: str, exc: Exception) -> FileError:
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return FileError(path=path, step=step, kind=error_kind(exc), message=message)


# -- the plan: which files, grouped into tasks -------------------------------------------------


class Unit(msgspec.Struct, frozen=True):
    """One task's work: files (relative, ``/``-separated) under a root."""

    label: str
    root: str
    files: list[str]


class Plan(msgspec.Struct, frozen=True):
    """The demo's work.

    Attributes:
        units: the tasks, in submission order.
        found: the ``.py`` files found.
        selected: the files surveyed (``found``, or ``--limit`` of them spread evenly).
        roots: each root's label, path and the files surveyed in it.
    """

    units: list[Unit]
    found: int
    selected: int
    roots: list[tuple[str, str, int]]


def default_roots() -> list[tuple[str, str]]:
    """The running Python's standard library and site-packages, as ``(label, path)``."""
    paths = sysconfig.get_paths()
    roots = [("stdlib", paths["stdlib"])]
    if os.path.realpath(paths["purelib"]) != os.path.realpath(paths["stdlib"]):
        roots.append(("site-packages", paths["purelib"]))
    return roots


def find_sources(root: str) -> list[str]:
    """Every ``.py`` file under ``root``, relative and ``/``-separated, sorted.

    Caches, hidden directories and nested ``site-packages`` are skipped.
    """
    found: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        rel = os.path.relpath(directory, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.extend(prefix + f for f in files if f.endswith(".py"))
    return sorted(found)


def _chunks(label: str, files: list[str], size: int) -> list[tuple[str, list[str]]]:
    if len(files) <= size:
        return [(label, files)]
    count = math.ceil(len(files) / size)
    step = math.ceil(len(files) / count)
    return [
        (f"{label} ({i + 1} of {count})", files[i * step : (i + 1) * step]) for i in range(count)
    ]


def _split(label: str, prefix: str, files: list[str], size: int) -> list[tuple[str, list[str]]]:
    """A directory's files as one group, or split by subdirectory when there are too many."""
    if len(files) <= size:
        return [(label, files)]
    direct = [f for f in files if "/" not in f[len(prefix) :]]
    subdirs: dict[str, list[str]] = {}
    for f in files:
        head, sep, _ = f[len(prefix) :].partition("/")
        if sep:
            subdirs.setdefault(head, []).append(f)
    groups = _chunks(f"{label}/*.py", direct, size) if direct else []
    for name, members in sorted(subdirs.items()):
        groups.extend(_split(f"{label}/{name}", f"{prefix}{name}/", members, size))
    return groups


def build_plan(
    limit: int | None = DEFAULT_LIMIT,
    *,
    roots: Sequence[tuple[str, str]] | None = None,
    max_files: int = MAX_FILES_PER_TASK,
) -> Plan:
    """Find the ``.py`` files and group them into tasks.

    Args:
        limit: survey at most this many files, taken evenly across all of them (None or 0:
            every file).
        roots: ``(label, path)`` pairs (the stdlib and site-packages by default).
        max_files: split a package with more files than this by subdirectory.
    """
    roots = default_roots() if roots is None else roots
    everything = [(label, path, rel) for label, path in roots for rel in find_sources(path)]
    chosen = everything
    if limit and limit < len(everything):
        chosen = [everything[i * len(everything) // limit] for i in range(limit)]
    units: list[Unit] = []
    counts: list[tuple[str, str, int]] = []
    for label, path in roots:
        files = [rel for root_label, _, rel in chosen if root_label == label]
        counts.append((label, path, len(files)))
        direct = [f for f in files if "/" not in f]
        groups = _chunks(f"{label}/*.py", direct, max_files) if direct else []
        packages: dict[str, list[str]] = {}
        for f in files:
            head, sep, _ = f.partition("/")
            if sep:
                packages.setdefault(head, []).append(f)
        for name, members in sorted(packages.items()):
            groups.extend(_split(f"{label}/{name}", f"{name}/", members, max_files))
        units.extend(Unit(label=g, root=path, files=members) for g, members in groups)
    return Plan(units=units, found=len(everything), selected=len(chosen), roots=counts)


# -- the worker: the child process that does the work ------------------------------------------


class _Gate:
    """The crash point's backstop: once ``after`` tasks have finished, hold every step that
    follows a recorded one in its task (so the kill lands mid-task, with steps to replay)."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.finished = 0
        self._lock = threading.Lock()

    def task_finished(self) -> None:
        with self._lock:
            self.finished += 1

    def pass_through(self, index: int) -> None:
        if self.after is not None and self.finished >= self.after and index > 0:
            threading.Event().wait()  # a step that never answers; the parent's SIGKILL ends it


def register(engine: Engine, *, journal: str | None = None, hold_after: int | None = None) -> None:
    """Register the demo's task (``survey``) and steps (``read``, ``parse``, ``summarise``).

    Args:
        engine: the engine.
        journal: a file each step appends its idempotency key to before it works.
        hold_after: hold every step once this many tasks have finished in this process.
    """
    gate = _Gate(hold_after)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if journal else None

    def effect() -> None:
        key = engine.idempotency_key()
        if fd is not None:
            os.write(fd, f"{key}\n".encode())
        gate.pass_through(int(key.rpartition(":")[2]))

    @engine.step(name="read")
    def read_step(path: str) -> FileFacts:
        effect()
        return read_file(path)

    @engine.step(name="parse")
    def parse_step(path: str) -> Shape:
        effect()
        return parse_file(path)

    @engine.step(name="summarise")
    def summarise_step(label: str, outcomes: list[FileOutcome]) -> Totals:
        effect()
        return summarise(label, outcomes)

    @engine.task(name="survey")
    def survey(label: str, root: str, files: list[str]) -> Totals:
        outcomes: list[FileOutcome] = []
        for i, rel in enumerate(files, 1):
            path = os.path.join(root, rel)
            try:
                facts = read_step(path)
            except OnwardError:
                raise  # the engine's own errors (a changed history, a conflict) are not files'
            except Exception as exc:
                outcomes.append(FileOutcome(rel, error=_file_error(rel, "read", exc)))
                continue
            try:
                shape = parse_step(path)
            except OnwardError:
                raise
            except Exception as exc:
                outcomes.append(FileOutcome(rel, facts, error=_file_error(rel, "parse", exc)))
            else:
                outcomes.append(FileOutcome(rel, facts, shape))
            if len(files) >= 30 and i % 10 == 0:
                engine.progress(i / len(files), rel)
        totals = summarise_step(label, outcomes)
        gate.task_finished()
        return totals


class _Said(msgspec.Struct, frozen=True, kw_only=True):
    """A line the worker prints for the parent."""

    event: str
    pid: int
    tasks: int = 0
    summary: RunSummary | None = None


def _say(message: _Said) -> None:
    sys.stdout.write(msgspec.json.encode(message).decode() + "\n")
    sys.stdout.flush()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """The child process: open the session, submit the plan read from stdin, run it."""
    parser = argparse.ArgumentParser(prog="python -m engine.demo")
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--submit", action="store_true", help="read a plan on stdin, submit it")
    parser.add_argument("--hold-after", type=int, default=None)
    parser.add_argument("--journal", default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # SyntaxWarnings from other people's code are not the point
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=Plan) if args.submit else None
    with Engine.open(f"sqlite:///{args.db}", session=SESSION) as engine:
        register(engine, journal=args.journal, hold_after=args.hold_after)
        if plan is not None:
            for unit in plan.units:
                engine.submit("survey", unit.label, unit.root, unit.files, key=unit.label)
        _say(_Said(event="ready", pid=os.getpid(), tasks=len(engine.tasks())))
        summary = engine.run(workers=args.workers)
        _say(_Said(event="done", pid=os.getpid(), summary=summary))
    return 0


# -- the parent: watch, kill, resume, report ---------------------------------------------------


class _Watch:
    """Folds the log read-only, as the worker appends to it."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.projections = Projections()
        self.step_outcomes = 0
        self.files = 0
        self.results: dict[str, Any] = {}

    def update(self) -> None:
        projections = self.projections
        for r in self.log.read(after=projections.position, page_size=5000):
            projections.apply(r)
            event = r.event
            if isinstance(event, StepCompleted | StepFailed):
                self.step_outcomes += 1
                if event.name == "read":
                    self.files += 1
            elif isinstance(event, TaskSucceeded):
                self.results[r.stream] = event.result

    @property
    def position(self) -> int:
        return self.projections.position

    def tasks(self) -> list[TaskView]:
        found = self.projections.tasks.tasks.values()
        return sorted((t for t in found if t.session == SESSION), key=lambda t: t.order)

    def ended(self) -> int:
        return sum(1 for t in self.tasks() if t.terminal)


class _Progress:
    """One updating line on a terminal; a line every 10% otherwise."""

    def __init__(self, tasks: int, files: int, stream: IO[str]) -> None:
        self.tasks = tasks
        self.files = files
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = -1

    def show(self, tasks: int, files: int, note: str, *, final: bool = False) -> None:
        fraction = files / self.files if self.files else 1.0
        text = f"{fraction:4.0%}  {tasks}/{self.tasks} tasks  {files}/{self.files} files  {note}"
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.stream.write(f"\r[{bar:-<30}] {text}".ljust(100)[:100])
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile > self.shown or final:
            self.shown = decile
            self.stream.write(f"  {text}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


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
    from engine.cli import sqlite_tables

    try:
        tables = sqlite_tables(path)
        if tables is None or "stored_events" not in tables:
            return False
        with open_log(f"sqlite:///{path}") as log:
            sessions = [s for s in log.streams() if s.startswith("session-")]
    except OnwardError:
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


def _spawn(path: str, workers: int, journal: str, *, plan: Plan | None, hold: int | None) -> Any:
    command = [
        sys.executable,
        "-m",
        "engine.demo",
        "--db",
        path,
        "--workers",
        str(workers),
        "--journal",
        journal,
    ]
    if plan is not None:
        command.append("--submit")
    if hold is not None:
        command += ["--hold-after", str(hold)]
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False, close_fds=True
    )
    assert child.stdin is not None
    try:
        if plan is not None:
            child.stdin.write(msgspec.json.encode(plan))
        child.stdin.close()
    except BrokenPipeError:
        pass
    return child


def _said(child: Any, wanted: str) -> _Said | None:
    """Read the worker's lines until the one wanted (None when it ends first)."""
    while True:
        line = child.stdout.readline()
        if not line:
            return None
        said = msgspec.json.decode(line, type=_Said)
        if said.event == wanted:
            return said


def _onward() -> str:
    if shutil.which("onward"):
        return "onward"
    if os.path.basename(sys.argv[0]) == "onward":
        return sys.argv[0]
    return f"{shlex.quote(sys.executable)} -m engine"


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
    progress = _Progress(total, plan.selected, err)
    with tempfile.TemporaryDirectory(prefix="onward-demo-") as scratch:
        journal = os.path.join(scratch, "steps.journal")
        child = _spawn(path, workers, journal, plan=plan, hold=hold)
        children = [child]
        log: EventLog | None = None
        try:
            if _said(child, "ready") is None:
                child.wait()
                err.write(f"onward demo: the worker stopped with status {child.returncode}\n")
                return 1
            log = open_log(f"sqlite:///{path}")
            watch = _Watch(log)
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
            first_summary: _Said | None = None
            if not killed:
                first_summary = _said(child, "done")
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
                child = _spawn(path, workers, journal, plan=None, hold=None)
                children.append(child)
                progress.message(
                    f"resuming: a new worker (pid {child.pid}) reopens session {SESSION!r}"
                )
                while child.poll() is None:
                    watch.update()
                    progress.show(watch.ended(), watch.files, "(worker 2, resumed)")
                    time.sleep(POLL)
                summary_line = _said(child, "done")
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
                executions = Counter(_journal_lines(journal))
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
            report = _report(
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
        out.write(_render(report))
    ok = report.verify.ok and report.tasks_unfinished == 0 and (not crash or report.crash)
    return 0 if ok else 1


def _journal_lines(journal: str) -> list[str]:
    try:
        with open(journal, encoding="utf-8") as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _report(
    path: str,
    plan: Plan,
    watch: _Watch,
    verify: VerifyReport,
    crash: CrashReport | None,
    journal: str,
    seconds: float,
) -> DemoReport:
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
        step_executions=len(_journal_lines(journal)),
        crash=crash,
        seconds=round(seconds, 3),
        verify=verify,
        commands=commands,
    )


def _render(r: DemoReport) -> str:
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


if __name__ == "__main__":
    raise SystemExit(worker_main())
