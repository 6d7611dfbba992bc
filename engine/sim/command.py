"""``onward simulate --hours 8 --seed S [--profile FILE] [--db URL]``: hours of an agent's
work in minutes, and the figures they give.

The parent process plans the kills (seeded moments of simulated time), starts the worker
(``python -m onward.sim``, :mod:`onward.sim.worker`) on the real SQLite log, and when the worker
says it reached a kill moment, kills it with SIGKILL and starts the next one, which resumes the
session by replay. At the end it reads the figures from the log (:mod:`onward.sim.measure`) and
prints the table, the design onward replaces beside this run (``--json``: the figures).
SIGINT (Ctrl-C) and SIGTERM stop it (:mod:`onward.sim.interrupt`): the worker is stopped and
waited for, the temporary log removed, and the command says so in one line (exit 130, 143).

The session is named after the profile. ``--db`` takes a new path, a log without events, or
the log of earlier runs: one whose every session was opened, each time, by ``onward simulate``
(each opening records it, ``SessionStarted.config["origin"]``, ``SessionResumed``'s after a
restart, whatever its name). Any other log is refused, unless ``--yes``: simulated work would
join its sessions' learning, breakers and error signatures, dated after its last event. On an
existing log the run starts after the log's last event, as the simulated clock never goes back;
a session name the log holds already gives a new session: ``NAME-2``, ``NAME-3``...
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
from onward.cli.table import printable
from onward.events import (
    EventLog,
    LogNotFound,
    SessionResumed,
    SessionStarted,
    UsageError,
    open_log,
)
from onward.events.sqlite_file import check_file_name
from onward.sim.interrupt import Interrupted, signals_held, stop_signals
from onward.sim.measure import Kill, SimResult, measure, table
from onward.sim.profile import PROFILES, load_profile
from onward.sim.worker import ORIGIN
from onward.sim.world import kill_plan

__all__ = ["START", "register_command", "run_simulation"]

#: When simulated sessions start: 2025-01-06 22:00 UTC (a Monday night).
START = 1_736_200_800.0
#: Simulated seconds from the last event of an earlier run's log to the start of a new session.
GAP = 60.0
#: Wall seconds a worker has to stop on SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def _db_path(db: str) -> Path:
    named = db
    if "://" in db:
        parts = urlsplit(db)
        if parts.scheme.lower() != "sqlite":
            raise UsageError(f"the simulator runs on a SQLite log: a file path, not {db!r}")
        named = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    check_file_name(named)
    return Path(named).absolute()


def _simulated(log: EventLog, stream: str) -> bool:
    """Whether the session of ``stream`` was opened by ``onward simulate`` only: its first
    event, and each time it was opened again (a restarted worker, or other work under its
    name), says so."""
    events = [r.event for r in log.read_stream(stream)]
    return (
        bool(events)
        and isinstance(events[0], SessionStarted)
        and all(
            e.config.get("origin") == ORIGIN
            for e in events
            if isinstance(e, SessionStarted | SessionResumed)
        )
    )


def _new_session(path: Path, profile: str, *, yes: bool = False) -> tuple[str, float]:
    """The session a run on the log at ``path`` simulates, and when it starts.

    On a new log: the profile's name, at :data:`START`. On an existing log: the profile's
    name, or the first free ``NAME-2``, ``NAME-3``... when the log holds it, starting
    :data:`GAP` after the log's last event (not before :data:`START`).

    Raises:
        UsageError: the log holds events, and a session that ``onward simulate`` did not
            open or none at all (work of its own), and not ``yes``.
        NotALog, LogDamaged, BackendError: what is at ``path`` is not a readable onward log.
    """
    try:
        log = open_log(str(path), create=False)
    except LogNotFound:
        return profile, START
    with log:
        sessions = [s for s in log.streams() if s.startswith("session-")]
        head = log.head()
        if head and not yes:
            foreign = next((s for s in sessions if not _simulated(log, s)), None)
            if foreign is not None or not sessions:
                what = (
                    f"session {printable(repr(foreign.removeprefix('session-')))}, "
                    "which onward simulate did not open"
                    if foreign is not None
                    else "events of no session"
                )
                raise UsageError(
                    f"{path} holds work other than earlier simulations ({what}): simulate into "
                    "a new file, or pass --yes to add simulated work to it"
                )
        taken = {s.removeprefix("session-") for s in sessions}
        last = [r.meta.time for r in log.read(after=head - 1)] if head else []
    session, n = profile, 1
    while session in taken:
        n += 1
        session = f"{profile}-{n}"
    return session, max([START, *(t + GAP for t in last)])


def run_simulation(
    *,
    profile: str = PROFILES[0],
    seed: int = 1,
    hours: float = 8.0,
    db: str | None = None,
    yes: bool = False,
    err: IO[str] | None = None,
) -> SimResult:
    """Simulate a session and measure it.

    Args:
        profile: a shipped profile's name or a TOML file.
        seed: the seed of every draw.
        hours: simulated hours of work.
        db: the SQLite log (a temporary one, removed afterwards, when None); on a log that
            holds the profile's session already, a new session (``NAME-2``...) after it.
            A log that holds work other than earlier simulations' (a session that
            ``onward simulate`` did not open) is refused, unless ``yes``.
        yes: add simulated work to a log that holds other work.
        err: where progress goes (stderr).

    Returns:
        The figures.

    Raises:
        UsageError: a bad profile, seed or number of hours, a log that is not SQLite, or one
            that holds other work than earlier simulations' (without ``yes``).
        NotALog: ``db`` holds something other than an onward log (a directory, another
            application's database).
        LogDamaged: ``db`` is a damaged SQLite file.
        RuntimeError: a worker stopped without finishing nor reaching a kill moment.
        Interrupted: SIGINT or SIGTERM came (taken while it runs, when called from the main
            thread): the worker was stopped and waited for, the temporary log removed; a log
            at ``db`` keeps what its transactions committed.
    """
    err = err or sys.stderr
    if not 0 < hours <= 72:
        raise UsageError(f"--hours must be in (0, 72], got {hours}")
    with stop_signals():
        return _simulate(profile=profile, seed=seed, hours=hours, db=db, yes=yes, err=err)


def _simulate(
    *, profile: str, seed: int, hours: float, db: str | None, yes: bool, err: IO[str]
) -> SimResult:
    """:func:`run_simulation`, once the stop signals are taken."""
    loaded = load_profile(profile)
    session, start = loaded.name, START
    if db is not None:
        path = _db_path(db)
        if not path.parent.is_dir():
            raise UsageError(f"no directory {path.parent} for the simulation's log")
        session, start = _new_session(path, loaded.name, yes=yes)
        # Created here, not by the worker: a path that takes no file (a read-only folder,
        # a full disk) is told in one line rather than by the worker's traceback.
        with open_log(str(path)):
            pass
    # A stop signal can come at any moment: what is made under signals_held() is known to the
    # clean-up below, which stops the worker before its files go.
    scratch: Path | None = None
    child: subprocess.Popen[str] | None = None
    try:
        with signals_held():
            scratch = Path(tempfile.mkdtemp(prefix="onward-sim-"))
        if db is None:
            path = scratch / "sim.db"
        journal, files = scratch / "steps.journal", scratch / "files"
        files.mkdir()
        kills = kill_plan(loaded, seed, start, hours)
        done_kills: list[Kill] = []
        generations: dict[int, int] = {}
        timings: list[Path] = []
        stopped_at = start
        started = time.perf_counter()
        where = f"the log {path}" if db is not None else "a temporary log (removed at the end)"
        err.write(
            f"onward simulate: {printable(loaded.name)}, {hours:g} simulated hours, seed {seed}, "
            f"{len(kills)} kill -9 planned; session {session!r} of {where}\n"
        )
        generation = 0
        while True:
            generation += 1
            timing = scratch / f"decisions-{generation}.bin"
            timings.append(timing)
            remaining = ",".join(f"{t!r}@{w}" for t, w in kills[len(done_kills) :])
            killed_at = [] if not done_kills else ["--killed-at", repr(stopped_at)]
            argv = [
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
                "--session",
                session,
                "--start",
                repr(start),
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
                *killed_at,
            ]
            with signals_held():  # the worker inherits them held, until it takes them
                child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            generations[child.pid] = generation
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.startswith("kill "):
                # The moment it died at: its planned one, or later (the next step's work).
                _, _planned, where, _pid, moment = line.split()
                stopped_at = float(moment)
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                child.stdout.close()
                done_kills.append(
                    Kill(moment=float(moment), where=where, pid=child.pid, generation=generation)
                )
                place = (
                    "when the hours were over: no step's work came after its moment"
                    if where == "end"
                    else f"{where} a step's work"
                )
                err.write(
                    f"  KILLED worker {generation} (pid {child.pid}) with SIGKILL at "
                    f"+{(float(moment) - start) / 3600:.2f} h ({place}); "
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
        with open_log(str(path), create=False) as log:
            result = measure(
                log,
                profile=loaded.name,
                session=session,
                seed=seed,
                hours=hours,
                start=start,
                journal=journal,
                timings=timings,
                kills=done_kills,
                generations=generations,
                wall_seconds=wall,
            )
        if db is None:
            result.db = ""  # the temporary log is removed below: nothing to point at
        return result
    finally:
        # The log stays when it was asked for (--db); the worker goes first, then the scratch
        # folder (the temporary log with it otherwise). A signal meanwhile waits for the end.
        with signals_held():
            if child is not None:
                _stop(child)
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)


def _stop(child: subprocess.Popen[str]) -> None:
    """Stop a worker that still runs (SIGTERM, then SIGKILL if it lingers) and wait for it."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if child.stdout is not None:
        child.stdout.close()


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run ``onward simulate``."""
    try:
        result = run_simulation(
            profile=args.profile, seed=args.seed, hours=args.hours, db=args.db, yes=args.yes
        )
    except Interrupted as stop:
        kept = (
            f"the log {args.db} keeps what was committed"
            if args.db
            else "the temporary log is removed"
        )
        sys.stderr.write(
            f"onward simulate: stopped by {stop.signal.name}: the worker is stopped, {kept}\n"
        )
        return stop.status
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(result)).decode() + "\n")
    else:
        sys.stdout.write(table(result) + "\n")
        if args.db:
            sys.stdout.write(
                f"see it whole: onward report --db {args.db} --session {result.session} "
                "-o report.html\n"
            )
    return 1 if any(held is False for held in result.targets.values()) else 0


def register_command(command: AddCommand) -> None:
    """Add ``onward simulate`` to the command line (the ``onward.commands`` entry point)."""
    simulate = command(
        "simulate",
        cmd_simulate,
        "simulate hours of an agent's work on a virtual clock through the real engine and a "
        "real SQLite log, with seeded faults, outages and kill -9 of the worker, and print the "
        "figures beside the design onward replaces (exit 1 when a target is missed; on a log "
        "of an earlier run, a new session after it)",
        db=None,
    )
    simulate.add_argument(
        "--db",
        default=None,
        help="the SQLite log to keep (default: a temporary one): a new file, a log without "
        "events, or the log of earlier runs (every session in it opened by onward simulate, as "
        "each records); any other log is refused without --yes",
    )
    simulate.add_argument(
        "--yes",
        action="store_true",
        help="add simulated work to a --db log that holds other work than earlier simulations "
        "(its learning, breakers and error signatures take it in, dated after its last event)",
    )
    simulate.add_argument("--hours", type=float, default=8.0, help="simulated hours (default 8)")
    simulate.add_argument("--seed", type=int, default=1, help="the seed of every draw (default 1)")
    simulate.add_argument(
        "--profile",
        default=PROFILES[0],
        metavar="FILE",
        help=f"a profile: {' or '.join(PROFILES)} (shipped), or a TOML file of your own",
    )
