"""The simulated world a worker runs in: a virtual clock, the fault model's schedule, the
person, and the seeded moments the worker is killed.

Everything is seeded: the same profile and seed give the same arrivals, plans, outages, kill
moments and answers. Time is the :class:`VirtualClock`'s: a step's work moves it by its
simulated duration, the engine's timers move it by their wait, and the person acts as it
passes their moment.
"""

from __future__ import annotations

import array
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onward.judgement.rulebook import Rulebook, Verdict
from onward.runtime.run import CURRENT_RUN, CURRENT_STEP
from onward.sim.profile import Profile

__all__ = [
    "TimedRulebook",
    "VirtualClock",
    "World",
    "arrivals",
    "kill_plan",
    "outage_windows",
    "task_plan",
]


class VirtualClock:
    """Simulated time: it moves only when work is done or a timer is waited for; each move
    gives ``on_move`` a turn (the person acts then)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.on_move: Callable[[float], None] | None = None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (>= 0)."""
        self.now += max(0.0, seconds)
        if self.on_move is not None:
            self.on_move(self.now)

    def sleep(self, seconds: float) -> None:
        """The engine's wait for a timer: time passes at once."""
        self.advance(seconds)


class TimedRulebook(Rulebook):
    """The built-in rulebook, each decision timed (nanoseconds of wall time), the samples
    appended to a file every so often (a killed worker loses only its last ones)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.samples = array.array("q")

    def decide(self, scenario: str, facts: Any) -> Verdict | None:
        started = time.perf_counter_ns()
        verdict = super().decide(scenario, facts)
        self.samples.append(time.perf_counter_ns() - started)
        if len(self.samples) >= 32:
            self.flush()
        return verdict

    def flush(self) -> None:
        """Append the samples to the file."""
        with open(self.path, "ab") as out:
            self.samples.tofile(out)
        del self.samples[:]


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(map(str, (seed, *parts))))


def arrivals(profile: Profile, seed: int, start: float, hours: float) -> list[float]:
    """When each task arrives: the backlog at the start, then a Poisson stream."""
    rng = _rng(seed, "arrivals")
    times = [start] * profile.backlog
    at, end = start, start + hours * 3600
    while profile.tasks_per_hour > 0:
        at += rng.expovariate(profile.tasks_per_hour / 3600)
        if at >= end:
            break
        times.append(at)
    return times


def task_plan(profile: Profile, seed: int, number: int, at: float, start: float) -> list[list[Any]]:
    """One task's steps: ``[kind, seconds, fault]`` each (fault "" for none)."""
    rng = _rng(seed, "task", number)
    hours = (at - start) / 3600
    plan: list[list[Any]] = []
    for step in profile.steps:
        if rng.random() >= step.share:
            continue
        for _ in range(rng.randint(*step.repeat)):
            fault = ""
            for rate in profile.errors:
                if (
                    rate.step == step.kind
                    and hours >= rate.since_hours
                    and rng.random() < rate.rate
                ):
                    fault = rate.error
                    break
            plan.append([step.kind, round(rng.uniform(*step.seconds), 3), fault])
    return plan


def outage_windows(
    profile: Profile, seed: int, start: float, hours: float
) -> dict[str, list[tuple[float, float]]]:
    """Each component's outages: ``(from, to)``, at seeded moments of the session."""
    windows: dict[str, list[tuple[float, float]]] = {}
    for outage in profile.outages:
        rng = _rng(seed, "outage", outage.component)
        for _ in range(outage.count):
            begin = start + rng.uniform(0.05, 0.9) * hours * 3600
            minutes = rng.uniform(*outage.minutes)
            windows.setdefault(outage.component, []).append((begin, begin + minutes * 60))
    return windows


def kill_plan(profile: Profile, seed: int, start: float, hours: float) -> list[tuple[float, str]]:
    """When the worker is killed with SIGKILL, and where: ``before`` a step's work (just after
    the last outcome was recorded) or ``after`` it (its effect done, its outcome not yet).

    A kill whose moment comes while no step works (the worker waits for an arrival, a timer
    or a person) comes at the next step's work; one that no step's work follows comes when the
    hours are over (:meth:`World.finish`): every planned kill happens."""
    rng = _rng(seed, "kills")
    moments = sorted(start + rng.uniform(0.05, 0.95) * hours * 3600 for _ in range(profile.crashes))
    return [(m, rng.choice(("before", "after"))) for m in moments]


class World:
    """What a worker's steps meet: the clock, the outages, the kills, the journal.

    Args:
        profile: the profile.
        seed: the seed.
        clock: the virtual clock.
        start: the session's start.
        hours: its length.
        kills: the kill moments still to come.
        journal: the file each step's work appends its idempotency key to.
        scratch: where steps write files.
        generation: which worker process this is (1 for the first).
    """

    def __init__(
        self,
        profile: Profile,
        seed: int,
        clock: VirtualClock,
        *,
        start: float,
        hours: float,
        kills: list[tuple[float, str]],
        journal: Path,
        scratch: Path,
        generation: int,
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.clock = clock
        self.kills = list(kills)
        self.journal = open(journal, "a", encoding="utf-8")  # noqa: SIM115 - open while the worker lives
        self.scratch = scratch
        self.generation = generation
        self.windows = outage_windows(profile, seed, start, hours)
        self.steps_of = {o.component: o.step for o in profile.outages}
        self._seen: set[str] = set()
        #: Called just before the worker says it reached a kill moment (to save what it has).
        self.before_kill: Callable[[], None] | None = None

    def down(self, component: str) -> bool:
        """Whether a component is in one of its outages now."""
        now = self.clock.now
        return any(a <= now < b for a, b in self.windows.get(component, ()))

    def uses(self, component: str, kind: str) -> bool:
        """Whether a kind of work depends on a component."""
        return self.steps_of.get(component) == kind

    def first(self, key: str) -> bool:
        """True the first time a key is asked in this process (a fault that passes on retry)."""
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    def work(self, seconds: float) -> None:
        """A step's work: journal it, take its time; die at a kill moment that has come."""
        self._kill("before")
        run, index = CURRENT_RUN.get(), CURRENT_STEP.get()
        if run is not None and index is not None:
            self.journal.write(f"{self.generation} {run.idempotency_key(index)}\n")
            self.journal.flush()
        self.clock.advance(seconds)
        self._kill("after")

    def finish(self) -> None:
        """The hours are over: die at a kill whose moment came after the last step's work (it
        had no step to come at), so that every planned kill happens."""
        self._kill("end")

    def _kill(self, where: str) -> None:
        if not self.kills or self.clock.now < self.kills[0][0]:
            return
        if where != "end" and self.kills[0][1] != where:
            return
        moment, _ = self.kills.pop(0)
        if self.before_kill is not None:
            self.before_kill()
        parent = os.getppid()
        try:
            sys.stdout.write(f"kill {moment!r} {where} {os.getpid()} {self.clock.now!r}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The parent is gone (it was killed): nobody will kill this process, it dies as
            # planned. Not an exception, which the engine would take for the step's failure.
            os._exit(128 + signal.SIGPIPE)
        while os.getppid() == parent:  # the parent kills this process with SIGKILL now
            time.sleep(1)
        os._exit(128 + signal.SIGPIPE)  # or it was gone before it could
