"""``onward simulate --hours 8 --seed S [--profile FILE] [--db URL]``: hours of an agent's
work in minutes, and the figures they give.

The parent process plans the kills (seeded moments of simulated time), starts the worker
(``python -m onward.sim``, :mod:`onward.sim.worker`) on the real SQLite log, and when the worker
says it reached a kill moment, kills it with SIGKILL and starts the next one, which resumes the
session by replay. At the end it reads the figures from the log (:mod:`onward.sim.measure`) and
prints the table, the design onward replaces beside this run (``--json``: the figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import msgspec

from onward.cli.main import AddCommand
from onward.events import UsageError, open_log
from onward.sim.measure import Kill, SimResult, measure, table
from onward.sim.profile import PROFILES, load_profile
from onward.sim.world import kill_plan

__all__ = ["START", "register_command", "run_simulation"]

#: When simulated sessions start: 2025-01-06 22:00 UTC (a Monday night).
START = 1_736_200_800.0


def _db_path(db: str) -> Path:
    if "://" not in db:
        return Path(db).absolute()
    parts = urlsplit(db)
    if parts.scheme.lower() != "sqlite":
        raise UsageError(f"the simulator runs on a SQLite log: a file path, not {db!r}")
    return Path(unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)).absolute()


def run_simulation(
    *,
    profile: str = PROFILES[0],
    seed: int = 1,
    hours: float = 8.0,
    db: str | None = None,
    err: IO[str] | None = None,
) -> SimResult:
    """Simulate a session and measure it.

    Args:
        profile: a shipped profile's name or a TOML file.
        seed: the seed of every draw.
        hours: simulated hours of work.
        db: the SQLite log (a temporary one, removed afterwards, when None; a new session
            on an existing one).
        err: where progress goes (stderr).

    Returns:
        The figures.

    Raises:
        UsageError: a bad profile, seed or number of hours, or a log that is not SQLite.
        RuntimeError: a worker stopped without finishing nor reaching a kill moment.
    """
    err = err or sys.stderr
    if not 0 < hours <= 72:
        raise UsageError(f"--hours must be in (0, 72], got {hours}")
    loaded = load_profile(profile)
    scratch = Path(tempfile.mkdtemp(prefix="onward-sim-"))
    path = _db_path(db) if db is not None else scratch / "sim.db"
    if not path.parent.is_dir():
        raise UsageError(f"no directory {path.parent} for the simulation's log")
    journal, files = scratch / "steps.journal", scratch / "files"
    files.mkdir()
    kills = kill_plan(loaded, seed, START, hours)
    done_kills: list[Kill] = []
    generations: dict[int, int] = {}
    timings: list[Path] = []
    started = time.perf_counter()
    err.write(
        f"onward simulate: {loaded.name}, {hours:g} simulated hours, seed {seed}, "
        f"{len(kills)} kill -9 planned; log {path}\n"
    )
    try:
        generation = 0
        while True:
            generation += 1
            timing = scratch / f"decisions-{generation}.bin"
            timings.append(timing)
            remaining = ",".join(f"{t!r}@{w}" for t, w in kills[len(done_kills) :])
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "onward.sim",
                    "--db",
                    str(path),
                    "--profile",
                    str(profile),
                    "--seed",
                    str(seed),
                    "--hours",
                    str(hours),
                    "--start",
                    repr(START),
                    "--kills",
                    remaining,
                    "--journal",
                    str(journal),
                    "--scratch",
                    str(files),
                    "--timings",
                    str(timing),
                    "--generation",
                    str(generation),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            generations[child.pid] = generation
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.startswith("kill "):
                _, moment, where, _pid = line.split()
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                child.stdout.close()
                done_kills.append(
                    Kill(moment=float(moment), where=where, pid=child.pid, generation=generation)
                )
                err.write(
                    f"  KILLED worker {generation} (pid {child.pid}) with SIGKILL at "
                    f"+{(float(moment) - START) / 3600:.2f} h ({where} a step's work); "
                    "a new worker resumes the session\n"
                )
                continue
            child.wait()
            child.stdout.close()
            if child.returncode != 0 or '"done"' not in line:
                raise RuntimeError(
                    f"the simulation's worker stopped with status {child.returncode}"
                )
            break
        wall = time.perf_counter() - started
        with open_log(f"sqlite:///{path}", create=False) as log:
            return measure(
                log,
                profile=loaded.name,
                seed=seed,
                hours=hours,
                start=START,
                journal=journal,
                timings=timings,
                kills=done_kills,
                generations=generations,
                wall_seconds=wall,
            )
    finally:
        shutil.rmtree(files, ignore_errors=True)
        for leftover in (journal, *timings):
            leftover.unlink(missing_ok=True)
        # The log stays when it was asked for (--db); the scratch folder (the temporary log
        # with it otherwise) goes.
        shutil.rmtree(scratch, ignore_errors=True)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``onward simulate``."""
    result = run_simulation(profile=args.profile, seed=args.seed, hours=args.hours, db=args.db)
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(result)).decode() + "\n")
    else:
        sys.stdout.write(table(result) + "\n")
        if args.db:
            sys.stdout.write(
                f"see it whole: onward report --db {args.db} --session {result.profile} "
                "-o report.html\n"
            )
    return 0 if all(result.targets.values()) else 1


def register_command(command: AddCommand) -> None:
    """Add ``onward simulate`` to the command line (the ``onward.commands`` entry point)."""
    simulate = command(
        "simulate",
        cmd_simulate,
        "simulate hours of an agent's work on a virtual clock through the real engine and a "
        "real SQLite log, with seeded faults, outages and kill -9 of the worker, and print the "
        "figures beside the design onward replaces (exit 1 when a target is missed)",
        db=None,
    )
    simulate.add_argument(
        "--db", default=None, help="the SQLite log to keep (default: a temporary one)"
    )
    simulate.add_argument("--hours", type=float, default=8.0, help="simulated hours (default 8)")
    simulate.add_argument("--seed", type=int, default=1, help="the seed of every draw (default 1)")
    simulate.add_argument(
        "--profile",
        default=PROFILES[0],
        metavar="FILE",
        help=f"a profile: {' or '.join(PROFILES)} (shipped), or a TOML file of your own",
    )
