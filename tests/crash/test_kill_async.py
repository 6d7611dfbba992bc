"""kill -9 while many async tasks are in flight: on resume each task's completed steps never
run again; at most the steps in flight at the kill run again; every outcome is recorded once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter, defaultdict
from pathlib import Path

from onward.events import StepCompleted, TaskSucceeded, open_log

CHILD = """
import asyncio, os, sys

from onward import Engine

DB, JOURNAL = sys.argv[1], sys.argv[2]
engine = Engine.open(f"sqlite:///{DB}", session="async-crash")


def journal(line):
    fd = os.open(JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


@engine.step(name="async.part")
async def part(task: int, index: int) -> int:
    journal(f"{task} {index} {os.getpid()}")
    await asyncio.sleep(0.002 * ((task * 7 + index) % 5))
    return task * 10 + index


@engine.task(name="async.whole")
async def whole(task: int) -> int:
    return sum([await part(task, i) for i in range(4)])


if sys.argv[3] == "submit":
    for n in range(int(sys.argv[4])):
        engine.submit("async.whole", n, key=str(n))
else:
    asyncio.run(engine.run_async(concurrency=64))
engine.close()
"""

TASKS = 300
CONCURRENCY = 64


def test_kill_during_many_in_flight_async_tasks(tmp_path: Path) -> None:
    seed = int(os.environ.get("ONWARD_CRASH_SEED", str(random.randrange(2**32))))
    print(f"seed {seed}")
    rng = random.Random(seed)
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    db, journal = tmp_path / "log.db", tmp_path / "journal.txt"
    child = [sys.executable, str(script), str(db), str(journal)]
    subprocess.run([*child, "submit", str(TASKS)], check=True, timeout=120)
    first = subprocess.Popen([*child, "run"], stderr=subprocess.DEVNULL)
    # Kill it once a random share of the step bodies has started.
    mark = rng.uniform(0.2, 0.7) * TASKS * 4
    deadline = time.monotonic() + 120
    while not journal.exists() or len(journal.read_text().splitlines()) < mark:
        assert first.poll() is None, "the child ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    with open_log(f"sqlite:///{db}") as log:
        before = {
            (r.stream, r.event.index) for r in log.read() if isinstance(r.event, StepCompleted)
        }
    assert before, "the kill came before any step was recorded"
    second = subprocess.run(
        [*child, "run"], check=False, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr
    runs: defaultdict[tuple[int, int], list[int]] = defaultdict(list)
    for line in journal.read_text().splitlines():
        task, index, pid = map(int, line.split())
        runs[(task, index)].append(pid)
    with open_log(f"sqlite:///{db}") as log:
        assert log.verify().ok
        submitted = {}
        outcomes: Counter[tuple[str, int]] = Counter()
        succeeded = 0
        for r in log.read():
            if type(r.event).__name__ == "TaskSubmitted":
                submitted[r.stream] = r.event.args[0]  # type: ignore[attr-defined]
            elif isinstance(r.event, StepCompleted):
                outcomes[(r.stream, r.event.index)] += 1
            elif isinstance(r.event, TaskSucceeded):
                succeeded += 1
    assert succeeded == TASKS
    assert set(outcomes.values()) == {1}  # every outcome recorded once
    rerun = {key for key, pids in runs.items() if len(pids) > 1}
    recorded_before = {(submitted[stream], index) for stream, index in before}
    assert not rerun & recorded_before  # a completed step never ran again
    assert all(runs[key][0] == first.pid for key in rerun)  # only the killed run's
    assert len(rerun) <= CONCURRENCY  # at most the steps in flight
