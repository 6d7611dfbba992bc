"""A fleet of real worker processes on one session: start them, kill them, check what they did.

Each worker is ``python -m onward worker fleet_app:engine`` in a directory holding the
application module below; its steps write one line per body run to a journal of their own
process (``journal-<pid>.txt``, each line fsync'ed), so the test sees which step bodies ran, in
which process, and can tell a re-run of a step in flight at a kill from one that should not
have happened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from onward import Engine
from onward.events import StepCompleted, TaskSucceeded, open_log
from onward.projections import CatchUp

SESSION = "fleet"
TASK = "fleet.job"

#: The application the workers serve: a task of STEPS steps; each step body journals its run.
APP = """
import os
import time

from onward import Engine

STEPS = int(os.environ.get("FLEET_STEPS", "5"))
HOLD = float(os.environ.get("FLEET_HOLD", "0"))  # seconds step 0 of a "slow" task takes
engine = Engine.open(
    lease=float(os.environ.get("FLEET_LEASE", "2.0")),
    outage_tolerance=float(os.environ.get("FLEET_TOLERANCE", "300")),
    create=False,
)
JOURNAL = os.path.join(os.environ["FLEET_DIR"], f"journal-{os.getpid()}.txt")


def journal(line):
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@engine.step(name="fleet.work")
def work(task: str, index: int, slow: bool) -> int:
    journal(f"{time.monotonic_ns()} {task} {index} {os.getpid()}")
    if slow and index == 0:
        time.sleep(HOLD)
    return index * index


@engine.task(name="fleet.job")
def job(task: str, slow: bool = False) -> int:
    return sum(work(task, i, slow) for i in range(STEPS))
"""


@dataclass
class Fleet:
    """Worker processes on one log and session, and what they did.

    Args:
        directory: where the application and the journals live.
        url: the log.
        app: the application module the workers serve (``fleet_app``).
    """

    directory: Path
    url: str
    app: str = APP
    workers: dict[int, subprocess.Popen[str]] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)
    lease: float = 2.0
    hold: float = 1.0
    errors: dict[int, IO[str]] = field(default_factory=dict)
    _started: int = 0

    def __post_init__(self) -> None:
        (self.directory / "fleet_app.py").write_text(textwrap.dedent(self.app))
        with open_log(self.url):
            pass  # the tables exist before the workers open it with create=False

    def env(self, host: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "FLEET_DIR": str(self.directory),
            "FLEET_LEASE": str(self.lease),
            "FLEET_HOLD": str(self.hold),
            "PYTHONPATH": str(self.directory),
            **extra,
        }
        if host is not None:
            env["ONWARD_HOST"] = host
        return env

    def start(
        self,
        count: int = 1,
        *,
        threads: int = 2,
        host: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> list[int]:
        """Start ``count`` workers at once; returns their pids."""
        started = []
        for _ in range(count):
            self._started += 1
            err = open(self.directory / f"worker-{self._started}.err", "w+")  # noqa: SIM115
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "onward",
                    "worker",
                    "fleet_app:engine",
                    "--db",
                    self.url,
                    "--session",
                    SESSION,
                    "--workers",
                    str(threads),
                ],
                cwd=self.directory,
                env=self.env(host, **(extra or {})),
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
            self.workers[process.pid] = process
            self.errors[process.pid] = err
            started.append(process.pid)
        return started

    def stderr(self, pid: int) -> str:
        """What a worker wrote to its standard error so far."""
        err = self.errors[pid]
        err.flush()
        return Path(err.name).read_text()

    def serving(self, pid: int) -> bool:
        """Whether a worker got as far as serving (its signal handlers are in place)."""
        return "serving session" in self.stderr(pid)

    def kill(self, pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send a signal to a worker (SIGKILL: it is gone)."""
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            self.workers[pid].wait()
            self.killed.add(pid)

    def alive(self) -> list[int]:
        return [pid for pid, p in self.workers.items() if p.poll() is None]

    def stop_all(self, timeout: float = 60) -> dict[int, tuple[int, str]]:
        """SIGTERM every live worker once it serves; wait; their exit codes and standard
        error."""
        for pid in self.alive():
            wait_until(lambda: self.serving(pid), timeout, f"worker {pid} to serve")  # noqa: B023
            os.kill(pid, signal.SIGTERM)
        ended = {}
        for pid, process in self.workers.items():
            if pid in self.killed:
                continue
            process.wait(timeout=timeout)
            ended[pid] = (process.returncode, self.stderr(pid))
        for err in self.errors.values():
            err.close()
        return ended

    def submit(self, count: int, *, slow: int = 0, steps: int = 5) -> list[str]:
        """Submit tasks (the first ``slow`` of them hold their first step)."""
        del steps
        with Engine.open(self.url, session=SESSION) as engine:

            @engine.task(name=TASK)
            def job(task: str, slow: bool = False) -> int:
                raise AssertionError("runs in the workers")

            return [engine.submit(job, f"t{i}", slow=i < slow, key=f"t{i}") for i in range(count)]

    def runs(self) -> dict[tuple[str, int], list[int]]:
        """Each step's body runs: (task argument, index) -> the pids that ran it, in order."""
        lines = []
        for journal in self.directory.glob("journal-*.txt"):
            for line in journal.read_text().splitlines():
                at, task, index, pid = line.split()
                lines.append((int(at), task, int(index), int(pid)))
        found: dict[tuple[str, int], list[int]] = defaultdict(list)
        for _at, task, index, pid in sorted(lines):  # in the order the bodies ran
            found[(task, index)].append(pid)
        return found


class Progress:
    """A read-only fold of the fleet's log: how many of its tasks succeeded so far."""

    def __init__(self, url: str) -> None:
        self.log = open_log(url)
        self.host = CatchUp(self.log, checkpoint_every=0)
        self.host.open()

    def succeeded(self) -> int:
        self.host.catch_up(save=False)
        return sum(
            1
            for t in self.host.projections.tasks.tasks.values()
            if t.session == SESSION and t.state == "succeeded"
        )

    def close(self) -> None:
        self.log.close()


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` (real time: these are real processes) until true."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def check_log(
    url: str, fleet: Fleet, tasks: int, steps: int = 5, *, lost_lease: frozenset[int] = frozenset()
) -> None:
    """Every task succeeded once; each step outcome recorded once; a step body ran again only
    when the process that ran it before was killed (or lost its lease while it was paused);
    the log verifies."""
    outcomes: Counter[tuple[str, int]] = Counter()
    successes: Counter[str] = Counter()
    with open_log(url) as log:
        report = log.verify()
        assert report.ok, report.problems
        for r in log.read():
            if isinstance(r.event, StepCompleted):
                outcomes[(r.stream, r.event.index)] += 1
            elif isinstance(r.event, TaskSucceeded):
                successes[r.stream] += 1
    assert len(successes) == tasks
    assert set(successes.values()) == {1}
    assert len(outcomes) == tasks * steps
    assert set(outcomes.values()) == {1}, [k for k, v in outcomes.items() if v > 1]
    runs = fleet.runs()
    assert len(runs) == tasks * steps
    for key, pids in runs.items():
        # Every run but the last was cut short by a kill of its process.
        cut_short = fleet.killed | lost_lease
        assert all(pid in cut_short for pid in pids[:-1]), (key, pids, cut_short)
