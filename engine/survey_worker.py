"""The survey's worker: the child process that does the work (part of ``onward demo``).

``python -m engine.demo`` opens the session ``demo`` on ``sqlite:///<db>``, registers the
``survey`` task and its steps, submits the plan it reads on stdin (with ``--submit``) and runs
it. It tells the parent where it is with one JSON :class:`WorkerMessage` a line on stdout:
``ready`` once the tasks are submitted, ``done`` with the run's summary.

Every step also writes its idempotency key to a journal before it works, standing for an
external effect: that is how the parent counts the steps that really ran twice. With
``--hold-after N``, once N tasks have finished, the worker holds its next step (as a slow model
call would) until the parent's SIGKILL, so the kill cannot miss a fast run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence

import msgspec

from engine.engine import Engine, RunSummary
from engine.survey import (
    FileFacts,
    FileOutcome,
    Shape,
    Totals,
    file_error,
    parse_file,
    read_file,
    summarise,
)
from engine.survey_plan import Plan
from events import OnwardError

__all__ = ["SESSION", "WorkerMessage", "register", "spawn_worker", "wait_for", "worker_main"]

#: The session the demo's work runs in.
SESSION = "demo"


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
                outcomes.append(FileOutcome(rel, error=file_error(rel, "read", exc)))
                continue
            try:
                shape = parse_step(path)
            except OnwardError:
                raise
            except Exception as exc:
                outcomes.append(FileOutcome(rel, facts, error=file_error(rel, "parse", exc)))
            else:
                outcomes.append(FileOutcome(rel, facts, shape))
            if len(files) >= 30 and i % 10 == 0:
                engine.progress(i / len(files), rel)
        totals = summarise_step(label, outcomes)
        gate.task_finished()
        return totals


class WorkerMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A line the worker prints for the parent.

    Attributes:
        event: ``ready`` (the plan is submitted) or ``done`` (the run is over).
        pid: the worker's process id.
        tasks: the session's tasks (with ``ready``).
        summary: what the run did (with ``done``).
    """

    event: str
    pid: int
    tasks: int = 0
    summary: RunSummary | None = None


def _tell_parent(message: WorkerMessage) -> None:
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
        _tell_parent(WorkerMessage(event="ready", pid=os.getpid(), tasks=len(engine.tasks())))
        summary = engine.run(workers=args.workers)
        _tell_parent(WorkerMessage(event="done", pid=os.getpid(), summary=summary))
    return 0


def spawn_worker(
    path: str, workers: int, journal: str, *, plan: Plan | None, hold: int | None
) -> subprocess.Popen[bytes]:
    """Start a worker (``python -m engine.demo``) on the log at ``path``.

    Args:
        path: the log file.
        workers: tasks run at once.
        journal: the file each step appends its idempotency key to.
        plan: the plan to submit (None: resume the session's tasks).
        hold: hold every step once this many tasks have finished (None: never).
    """
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


def wait_for(child: subprocess.Popen[bytes], wanted: str) -> WorkerMessage | None:
    """Read the worker's lines until the one wanted (None when it ends first)."""
    assert child.stdout is not None
    while True:
        line = child.stdout.readline()
        if not line:
            return None
        message = msgspec.json.decode(line, type=WorkerMessage)
        if message.event == wanted:
            return message
