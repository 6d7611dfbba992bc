"""The simulated session's worker: the child process the simulator runs and kills.

``python -m onward.sim`` opens the session (``--session``, the profile's name by default) on the
real SQLite log through the real engine, on a virtual clock that starts where the log's last
event (or the killed worker before it) left it, registers the profile's work
(:mod:`onward.sim.work`), submits each task as it arrives (idempotently: a worker that takes
over submits nothing twice) and runs them until the simulated hours are over. The simulated
person lives here too: as the clock passes their moment they answer approval requests, teach
the fix of a new error the engine gave up on, and resume a session its error budget paused. It
tells the parent ``kill ...`` when it reaches a kill moment (then waits to be killed) and
``done`` at the end.

Nothing it does depends on wall time or on threads: the person's moments are drawn from the
seed and what the seed decided (never from a random decision id), and no heartbeat beats (see
:data:`LEASE`), so the same profile and seed give the same log, event for event.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from onward.events import Jitter, open_log
from onward.healing.breaker import BreakerPolicy
from onward.healing.retry import RetryPolicies, RetryPolicy
from onward.judgement.budget import ErrorBudget
from onward.runtime.engine import Engine
from onward.sim.interrupt import Interrupted, stop_signals
from onward.sim.profile import load_profile
from onward.sim.work import TEACH, register_work, run_plan
from onward.sim.world import TimedRulebook, VirtualClock, World, arrivals, task_plan

__all__ = ["LEASE", "ORIGIN", "PERSON", "RESTART_DELAY", "SimWorker", "worker_main"]

#: What the simulated sessions record as their origin (``SessionStarted.config["origin"]``):
#: a log whose every session has it holds only simulations.
ORIGIN = "onward simulate"

#: Who the simulated person is, in the log.
PERSON = "simulated person"
#: Simulated seconds from a kill to the new worker's start.
RESTART_DELAY = 20.0
#: Task runs per turn of the worker's loop (new arrivals are submitted between turns).
TURN = 25
#: How long after the end the worker keeps finishing the tasks that arrived in time.
GRACE = 2 * 3600.0
#: The workers' lease, in seconds: a week.
LEASE = 7 * 24 * 3600.0


class SimWorker:
    """One worker process's share of the simulated session."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.profile = load_profile(args.profile)
        self.session: str = args.session or self.profile.name
        self.seed = args.seed
        self.start = args.start
        self.end = args.start + args.hours * 3600
        with open_log(args.db) as log:
            last = log.head()
            tail = list(log.read(after=max(0, last - 1))) if last else []
        # A new worker goes on a little after the last event, or after the moment the worker
        # before it was killed at (it may have waited past its last event).
        moments = [r.meta.time for r in tail]
        if args.killed_at is not None:
            moments.append(args.killed_at)
        begin = max(moments) + RESTART_DELAY if moments else args.start
        self.clock = VirtualClock(max(begin, args.start))
        kills = [
            (float(t), where) for t, where in (k.split("@") for k in args.kills.split(",") if k)
        ]
        self.world = World(
            self.profile,
            self.seed,
            self.clock,
            start=args.start,
            hours=args.hours,
            kills=kills,
            journal=Path(args.journal),
            scratch=Path(args.scratch),
            generation=args.generation,
        )
        self.rulebook = TimedRulebook(Path(args.timings))
        self.world.before_kill = self.rulebook.flush
        self.engine = Engine.open(
            args.db,
            session=self.session,
            clock=self.clock,
            sleep=self.clock.sleep,
            # The heartbeat beats every third of a lease of wall time, at whatever simulated
            # moment that is: a lease longer than any simulation keeps it from beating, so the
            # log depends on the seed only. A killed worker's tasks are taken back at once all
            # the same (its process is known dead).
            lease=LEASE,
            rulebook=self.rulebook,
            retries=RetryPolicies(
                RetryPolicy(name="sim", max_attempts=4, base=2.0, cap=120.0, jitter=Jitter.FULL)
            ),
            breakers=BreakerPolicy(failures=5, cooldown=120.0),
            budget=ErrorBudget(limit=self.profile.budget_per_hour, window=3600.0),
            seed=self.seed,
            origin=ORIGIN,
        )
        self.calls = register_work(self.engine, self.world)
        task = self.profile.task

        @self.engine.task(name=task)
        def do(number: int, plan: list[list[Any]]) -> int:
            return run_plan(self.calls, f"{task}-{number}", plan)

        self.task = do
        self.arrivals = arrivals(self.profile, self.seed, args.start, args.hours)
        self.submitted = 0
        self._busy = False
        self._next_look = 0.0
        self.clock.on_move = self.person

    # -- the person ------------------------------------------------------------------------

    def _delay(self, what: str, key: str, minutes: tuple[float, float]) -> float:
        return random.Random(f"{self.seed}:{what}:{key}").uniform(*minutes) * 60

    def person(self, now: float) -> None:
        """What the simulated person does as time passes: answer requests whose moment came,
        teach fixes for new errors given up on."""
        if self._busy or now < self._next_look:
            return
        self._busy = True
        self._next_look = now + 30.0
        try:
            engine = self.engine
            for request in engine.approvals(session=self.session):
                # Keyed by what the seed decides (the task, its action, the moment it asked),
                # not by the decision's id: that is a random event id, new in every run.
                asked = f"{request.task_id}:{request.action}:{request.requested_at!r}"
                due = request.requested_at + self._delay(
                    "answer", asked, self.profile.person.answer_minutes
                )
                if now >= due:
                    engine.approve(request.decision_id, note="looks right", by=PERSON)
            for view in list(engine.projections.errors.signatures.values()):
                fix = TEACH.get(view.error_type.rpartition(".")[2])
                if fix is None or fix in view.learned or not view.occurrences:
                    continue
                due = view.first_seen + self._delay(
                    "teach", view.signature, self.profile.person.teach_minutes
                )
                if now >= due:
                    engine.learn(view.signature, fix, note=f"{PERSON}: the API's new schema")
        finally:
            self._busy = False

    # -- the loop --------------------------------------------------------------------------

    def submit_arrived(self) -> None:
        """Submit every task whose moment has come (idempotent keys: once in the session)."""
        now = self.clock.now
        while self.submitted < len(self.arrivals) and self.arrivals[self.submitted] <= now:
            n = self.submitted
            at = self.arrivals[n]
            plan = task_plan(self.profile, self.seed, n, at, self.start)
            self.engine.submit(self.task, n, plan, key=f"{self.session}-{n}")
            self.submitted += 1

    def next_moment(self) -> float | None:
        """When something happens next while nothing is runnable: an arrival, or the
        person's next look while a request waits."""
        moments = []
        if self.submitted < len(self.arrivals):
            moments.append(self.arrivals[self.submitted])
        if self.engine.approvals(session=self.session) or self.engine.projections.tasks.waiting:
            moments.append(self.clock.now + 60.0)
        return min(moments) if moments else None

    def run(self) -> None:
        """Work until the hours are over and the tasks that arrived in time are done."""
        engine = self.engine
        while True:
            self.submit_arrived()
            summary = engine.run(max_runs=TURN)
            if summary.paused:
                # The budget paused the session: the person looks, then resumes it.
                delay = self._delay(
                    "resume", str(self.clock.now), self.profile.person.resume_minutes
                )
                self.clock.sleep(delay)
                engine.resume(f"{PERSON} resumed it after reading `onward why`")
                continue
            if summary.runs:
                continue
            unfinished = any(not v.terminal for v in engine.tasks())
            if self.clock.now >= self.end and (
                not unfinished or self.clock.now >= self.end + GRACE
            ):
                break
            moment = self.next_moment()
            if moment is None:
                if self.clock.now >= self.end:
                    break
                moment = self.end
            self.clock.sleep(max(1.0, moment - self.clock.now))
        self.world.finish()
        self.rulebook.flush()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """The worker process (``python -m onward.sim``).

    Returns:
        Its exit status: 0 at the end of the hours, 130 or 143 when SIGINT or SIGTERM stopped
        it, 141 when its parent is gone (its pipe broke).
    """
    parser = argparse.ArgumentParser(prog="python -m onward.sim")
    parser.add_argument("--db", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--session", default=None)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--hours", type=float, required=True)
    parser.add_argument("--start", type=float, required=True)
    parser.add_argument("--kills", default="")
    parser.add_argument("--killed-at", type=float, default=None)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--scratch", required=True)
    parser.add_argument("--timings", required=True)
    parser.add_argument("--generation", type=int, default=1)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    # Stopped by its parent (SIGTERM: the user interrupted the simulation), by Ctrl-C (SIGINT
    # to the terminal's whole process group), or left by its parent (its pipe is broken): it
    # leaves without a word, the log as its transactions left it.
    try:
        with stop_signals():
            worker = SimWorker(args)
            try:
                worker.run()
            except Interrupted as stop:
                # The frames the signal cut short may hold a read it interrupted: let that read
                # end (its connection back in the pool) before the pool closes, rather than at
                # exit, where it says "Pool is closed" on standard error.
                traceback.clear_frames(stop.__traceback__)
                raise
            finally:
                worker.engine.close()
            sys.stdout.write(msgspec.json.encode({"event": "done"}).decode() + "\n")
            sys.stdout.flush()
    except Interrupted as stop:
        return stop.status
    except BrokenPipeError:
        # Nothing more can be said, not even at exit's flush of what is left.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return 0
