"""The survey's worker: the child process that does the work (part of ``onward demo``).

``python -m engine.demo`` opens a session (``demo``, or ``demo-2``... on the log of earlier
runs) on ``sqlite:///<db>``, registers the ``survey`` task and its steps, the index service it
files totals with (:mod:`engine.survey_index`) and the fix a person may teach for it, submits the
plan it reads on stdin (with ``--submit``) and runs it. Then it does what a person reading
``onward errors`` would: it teaches the engine ``use-backup-index`` for the quota errors it gave
up (:func:`teach`). It tells the parent where it is with one JSON :class:`WorkerMessage` a line
on stdout: ``ready`` once the tasks are submitted, ``done`` with the run's summary.

Healing is tuned so that the demo takes about a minute, not an afternoon: retries wait 0.1 to
2 s (:data:`RETRIES`) and the breaker cools down for 2 s (:data:`BREAKERS`); every wait is
durable, as in production.

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

from engine.breaker import BreakerPolicy
from engine.engine import Engine
from engine.retry import RetryBudget, RetryPolicies, RetryPolicy
from engine.scheduler import RunSummary
from engine.survey import (
    FileFacts,
    FileOutcome,
    Shape,
    Totals,
    file_error,
    parse_source,
    read_file,
    read_source,
    summarise,
)
from engine.survey_index import (
    DEFAULT_SEED,
    DEPENDENCY,
    IndexService,
    QuotaExceeded,
    UseBackupIndex,
    plan_outage,
)
from engine.survey_plan import Plan
from events import Jitter, OnwardError
from projections import task_stream

__all__ = [
    "BREAKERS",
    "RETRIES",
    "RETRY_BUDGET",
    "SESSION",
    "WorkerMessage",
    "register",
    "spawn_worker",
    "teach",
    "wait_for",
    "worker_main",
]

#: The session of the demo's first run on a log (later runs: ``demo-2``, ``demo-3``, ...).
SESSION = "demo"
#: Retries wait 0.1-0.2 s, then twice as long each time, up to 2 s; 8 tries in all.
RETRIES = RetryPolicies(
    RetryPolicy(name="demo", max_attempts=8, base=0.2, cap=2.0, jitter=Jitter.EQUAL)
)
#: The session may schedule 100 retries a minute.
RETRY_BUDGET = RetryBudget(limit=100, window=60.0)
#: A breaker opens after 5 failures in a row and cools down for 2 s.
BREAKERS = BreakerPolicy(failures=5, cooldown=2.0)


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


def register(
    engine: Engine,
    *,
    seed: int = DEFAULT_SEED,
    journal: str | None = None,
    hold_after: int | None = None,
) -> IndexService:
    """Register the demo's task (``survey``), steps (``read``, ``parse``, ``summarise``) and the
    fix ``use-backup-index`` (offered only where learned).

    Args:
        engine: the engine.
        seed: the seed of the index service's faults.
        journal: a file each step appends its idempotency key to before it works.
        hold_after: hold every step once this many tasks have finished in this process.

    Returns:
        The index service ``summarise`` files with; set its ``outage`` once the session's tasks
        are submitted (:func:`~engine.survey_index.plan_outage`; no outage until then).
    """
    if engine.healer is not None and UseBackupIndex.name not in engine.healer.fixes:
        engine.healer.fixes.register(UseBackupIndex())
    service = IndexService(engine.log, session=engine.session, seed=seed, outage=None)
    gate = _Gate(hold_after)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if journal else None

    def effect() -> None:
        key = engine.idempotency_key()
        if fd is not None:
            os.write(fd, f"{key}\n".encode())
        gate.pass_through(int(key.rpartition(":")[2]))

    # The parameter is ``filename``, not ``path``: fixes take ``path`` for a file a step writes.
    @engine.step(name="read", hints={"encoding": "encoding"})
    def read_step(filename: str, encoding: str = "utf-8") -> FileFacts:
        effect()
        return read_file(filename, encoding)

    @engine.step(name="parse", hints={"code": "source"})
    def parse_step(source: str, name: str) -> Shape:
        effect()
        return parse_source(source, name)

    @engine.step(name="summarise", breaker=DEPENDENCY, hints={"timeout": "timeout"})
    def summarise_step(
        label: str, outcomes: list[FileOutcome], timeout: float = 1.0, index: str = "primary"
    ) -> Totals:
        effect()
        task_id = engine.idempotency_key().rpartition(":")[0]
        service.publish(label, stream=task_stream(task_id), timeout=timeout, index=index)
        return summarise(label, outcomes, index=index)

    @engine.task(name="survey")
    def survey(label: str, root: str, files: list[str]) -> Totals:
        origin = label.partition("/")[0]
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
                # The text goes to ``parse`` as an argument (so fixes can repair it), read again
                # in the encoding ``read`` settled on; only the counts are recorded.
                shape = parse_step(read_source(path, facts.encoding), f"{origin}/{rel}")
            except OnwardError:
                raise
            except Exception as exc:
                outcomes.append(FileOutcome(rel, facts, error=file_error(rel, "parse", exc)))
            else:
                outcomes.append(FileOutcome(rel, facts, shape))
            if len(files) >= 30 and i % 10 == 0:
                engine.progress(i / len(files), rel)
        try:
            totals = summarise_step(label, outcomes)
        except OnwardError:
            raise
        except Exception as exc:  # given up: the totals stand, unindexed
            totals = msgspec.structs.replace(
                summarise(label, outcomes), index_error=file_error(label, "summarise", exc)
            )
        gate.task_finished()
        return totals

    return service


def teach(engine: Engine) -> list[str]:
    """Do what a person reading ``onward errors`` after the run would: the quota errors of the
    primary index were given up, and the backup index has no quota, so teach the engine
    ``use-backup-index`` for their signatures (``onward learn SIGNATURE use-backup-index``).

    Returns:
        The signatures taught.
    """
    quota = f"{QuotaExceeded.__module__}.{QuotaExceeded.__qualname__}"
    taught: list[str] = []
    for signature, view in sorted(engine.refresh().errors.signatures.items()):
        if (
            view.error_type == quota
            and engine.session in view.sessions
            and view.best_fix is None
            and UseBackupIndex.name not in view.learned
        ):
            engine.learn(
                signature,
                UseBackupIndex.name,
                note="the primary index ran out of quota; the backup index has none",
            )
            taught.append(signature)
    return taught


class WorkerMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A line the worker prints for the parent.

    Attributes:
        event: ``ready`` (the plan is submitted) or ``done`` (the run is over).
        pid: the worker's process id.
        tasks: the session's tasks (with ``ready``).
        summary: what the run did (with ``done``).
        taught: the error signatures the worker taught a fix for after the run (with ``done``).
    """

    event: str
    pid: int
    tasks: int = 0
    summary: RunSummary | None = None
    taught: list[str] = msgspec.field(default_factory=list)


def _tell_parent(message: WorkerMessage) -> None:
    sys.stdout.write(msgspec.json.encode(message).decode() + "\n")
    sys.stdout.flush()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """The child process: open the session, submit the plan read from stdin, run it."""
    parser = argparse.ArgumentParser(prog="python -m engine.demo")
    parser.add_argument("--db", required=True)
    parser.add_argument("--session", default=SESSION)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--submit", action="store_true", help="read a plan on stdin, submit it")
    parser.add_argument("--hold-after", type=int, default=None)
    parser.add_argument("--journal", default=None)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # SyntaxWarnings from other people's code are not the point
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=Plan) if args.submit else None
    with Engine.open(
        f"sqlite:///{args.db}",
        session=args.session,
        retries=RETRIES,
        retry_budget=RETRY_BUDGET,
        breakers=BREAKERS,
        seed=args.seed,
    ) as engine:
        service = register(engine, seed=args.seed, journal=args.journal, hold_after=args.hold_after)
        if plan is not None:
            for unit in plan.units:
                engine.submit("survey", unit.label, unit.root, unit.files, key=unit.label)
        tasks = len(engine.tasks())
        service.outage = plan_outage(tasks)
        _tell_parent(WorkerMessage(event="ready", pid=os.getpid(), tasks=tasks))
        summary = engine.run(workers=args.workers)
        taught = teach(engine)
        _tell_parent(WorkerMessage(event="done", pid=os.getpid(), summary=summary, taught=taught))
    return 0


def spawn_worker(
    path: str,
    workers: int,
    journal: str,
    *,
    plan: Plan | None,
    hold: int | None,
    session: str = SESSION,
    seed: int = DEFAULT_SEED,
) -> subprocess.Popen[bytes]:
    """Start a worker (``python -m engine.demo``) on the log at ``path``.

    Args:
        path: the log file.
        workers: tasks run at once.
        journal: the file each step appends its idempotency key to.
        plan: the plan to submit (None: resume the session's tasks).
        hold: hold every step once this many tasks have finished (None: never).
        session: the session to open.
        seed: the seed of the index service's faults.
    """
    command = [
        sys.executable,
        "-m",
        "engine.demo",
        "--db",
        path,
        "--session",
        session,
        "--seed",
        str(seed),
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
