"""The survey's worker: the child process that does the work (part of ``onward demo``).

``python -m onward.demo`` opens a session (``demo``, or ``demo-2``... on the log of earlier
runs) on ``sqlite:///<db>``, registers the survey's tasks (:mod:`onward.demo.tasks`) and the
last one, which publishes the totals once a person approves (:mod:`onward.demo.publish`); it
submits the plan it reads on stdin (with ``--submit``) and runs it, waiting for the approval
(with ``--yes`` it approves it itself), and resuming the session if its error budget pauses
it, as a person would (:func:`run_survey`). Then it does what a person reading
``onward errors`` would: it teaches the engine ``use-backup-index`` for the quota errors it gave
up (:func:`~onward.demo.tasks.teach`). It tells the parent where it is with one JSON
:class:`WorkerMessage` a line on stdout: ``ready`` once the tasks are submitted, ``done`` with
the run's summary.

Healing is tuned so that the demo takes about a minute, not an afternoon: retries wait 0.1 to
2 s (:data:`RETRIES`), the breaker cools down for 2 s (:data:`BREAKERS`) and the error budget
slows the run down by a fraction of a second, not half a minute (:data:`BUDGET`); every wait
is durable, as in production.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence

import msgspec

from onward.demo.index import DEFAULT_SEED, plan_outage
from onward.demo.plan import Plan
from onward.demo.publish import totals_path
from onward.demo.tasks import register, submit, teach
from onward.events import Jitter
from onward.healing.breaker import BreakerPolicy
from onward.healing.retry import RetryBudget, RetryPolicies, RetryPolicy
from onward.judgement.budget import ErrorBudget
from onward.runtime.engine import Engine
from onward.runtime.scheduler import RunSummary

__all__ = [
    "APPROVAL_PATIENCE",
    "BREAKERS",
    "BUDGET",
    "MAX_RESUMES",
    "RESUME_REASON",
    "RETRIES",
    "RETRY_BUDGET",
    "SESSION",
    "YES_BY",
    "WorkerMessage",
    "approve_waiting",
    "run_survey",
    "spawn_worker",
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
#: 10 failed tries in 30 s; while the burn rate rises (the newer half of the window holds more
#: than 3 times the errors of the older half: a burst such as the outage, not steady noise),
#: 0.05 s between tasks.
BUDGET = ErrorBudget(limit=10, window=30.0, slow_down=0.05, rising=3.0)
#: How long the worker looks for a person's answer once only the approval is left, in seconds.
APPROVAL_PATIENCE = 120.0
#: Who approves with ``--yes``.
YES_BY = "onward demo --yes"
#: How often the worker resumes a session its error budget paused, in one run.
MAX_RESUMES = 3
#: Why it does.
RESUME_REASON = (
    "onward demo resumed it, as a person would once `onward why` shows the errors that paused it"
)


def approve_waiting(engine: Engine) -> list[str]:
    """Approve every request of the session that waits for an answer (``--yes``).

    Returns:
        The decision ids approved.
    """
    approved: list[str] = []
    for approval in engine.approvals(session=engine.session):
        engine.approve(
            approval.decision_id,
            note="--yes: answer yes to every question",
            by=f"{YES_BY} (the worker, pid {os.getpid()})",
        )
        approved.append(approval.decision_id)
    return approved


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


def _added(a: RunSummary, b: RunSummary) -> RunSummary:
    """Two runs' summaries as one."""
    return RunSummary(
        runs=a.runs + b.runs,
        succeeded=a.succeeded + b.succeeded,
        failed=a.failed + b.failed,
        waiting=a.waiting + b.waiting,
        cancelled=a.cancelled + b.cancelled,
        missed=a.missed + b.missed,
        recovered=a.recovered + b.recovered,
        steps_run=a.steps_run + b.steps_run,
        steps_replayed=a.steps_replayed + b.steps_replayed,
        elapsed=a.elapsed + b.elapsed,
        paused=b.paused,
    )


def run_survey(
    engine: Engine, *, workers: int = 1, yes: bool = False, patience: float = APPROVAL_PATIENCE
) -> RunSummary:
    """Run the session's tasks to the end, as the demo's worker does.

    Without ``yes`` the run looks for a person's answer to the approval request for up to
    ``patience`` seconds (:meth:`Engine.run`'s ``await_approvals``); with it, the worker
    approves the request itself at once (:func:`approve_waiting`) and runs on. When the error
    budget pauses the session, the worker does what a person reading ``onward why`` would: it
    resumes it (at most :data:`MAX_RESUMES` times).

    Returns:
        What the runs did, added up.
    """
    wait = 0.0 if yes else patience
    summary = engine.run(workers=workers, await_approvals=wait)
    for _ in range(MAX_RESUMES + 1):
        if summary.paused and engine.resume(RESUME_REASON):
            summary = _added(summary, engine.run(workers=workers, await_approvals=wait))
        elif yes and approve_waiting(engine):
            summary = _added(summary, engine.run(workers=workers))
        else:
            break
    return summary


def worker_main(argv: Sequence[str] | None = None) -> int:
    """The child process: open the session, submit the plan read from stdin, run it."""
    parser = argparse.ArgumentParser(prog="python -m onward.demo")
    parser.add_argument("--db", required=True)
    parser.add_argument("--session", default=SESSION)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--submit", action="store_true", help="read a plan on stdin, submit it")
    parser.add_argument("--hold-after", type=int, default=None)
    parser.add_argument("--journal", default=None)
    parser.add_argument("--yes", action="store_true", help="approve the requests at once")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # SyntaxWarnings from other people's code are not the point
    plan = msgspec.json.decode(sys.stdin.buffer.read(), type=Plan) if args.submit else None
    with Engine.open(
        args.db,
        session=args.session,
        retries=RETRIES,
        retry_budget=RETRY_BUDGET,
        breakers=BREAKERS,
        budget=BUDGET,
        seed=args.seed,
    ) as engine:
        service = register(
            engine,
            seed=args.seed,
            journal=args.journal,
            hold_after=args.hold_after,
            publish_to=totals_path(args.db),
        )
        if plan is not None:
            submit(engine, plan)
        tasks = len(engine.tasks())
        service.outage = plan_outage(sum(t.name == "survey" for t in engine.tasks()))
        _tell_parent(WorkerMessage(event="ready", pid=os.getpid(), tasks=tasks))
        summary = run_survey(engine, workers=args.workers, yes=args.yes)
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
    yes: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a worker (``python -m onward.demo``) on the log at ``path``.

    Args:
        path: the log file.
        workers: tasks run at once.
        journal: the file each step appends its idempotency key to.
        plan: the plan to submit (None: resume the session's tasks).
        hold: hold every step once this many tasks have finished (None: never).
        session: the session to open.
        seed: the seed of the index service's faults.
        yes: approve the approval requests itself, at once (else wait for a person's answer).
    """
    command = [
        sys.executable,
        "-m",
        "onward.demo",
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
    if yes:
        command.append("--yes")
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
