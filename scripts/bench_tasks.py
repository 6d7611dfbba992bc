"""Benchmark of onward's durable tasks against raw sqlite3, DBOS and LangGraph.

What it measures, in one run, on one file system (fresh SQLite files in one directory):

* ``step_us``: one durable step of a trivial function inside a task: ``Engine.open(
  "sqlite:///FILE", session=...)`` (``synchronous=FULL``, the default), ``@engine.step() def
  f(i: int) -> int: return i + 1``, one task calling it N times (N = 2,000), time of
  ``onward.runtime.run()`` / N, after a 50-step warm-up task on the same file.
* ``raw_commit_us``: the raw reference: sqlite3 on the same file system, WAL,
  ``synchronous=FULL``, one ``INSERT`` of a 200-byte row + ``COMMIT``, into a table shaped like
  onward's (stream, version, topic, state; primary key on stream and version); N commits / N.
  Raw and onward alternate (raw, onward, onward, raw, ...) on fresh files, and the median of
  the rounds counts, so that drift in the disk's speed falls on both. Under ``details``:
  ``step_p50_us`` / ``raw_commit_p50_us``, the medians of the intervals between consecutive
  steps (commits), which bursts of another process's I/O barely move; ``step_normal_us`` and
  ``raw_commit_normal_us``, the same at ``synchronous=NORMAL`` (no fsync per commit), whose
  difference is the engine's own CPU cost per step (``engine_cpu_per_step_us``).
* ``dbos_step_us`` / ``langgraph_step_us``: the peers' durable step on SQLite, each in a child
  process (``scripts/_bench_children/``), run as DESIGN.md describes: DBOS 3.4 with
  ``DBOS(config={"name": ..., "system_database_url": "sqlite:///FILE"})``, the file put in WAL
  before DBOS creates its tables, ``DBOS.launch()``, a workflow of N trivial ``@DBOS.step()``
  calls, wall time / N; LangGraph with ``SqliteSaver(sqlite3.connect(FILE,
  check_same_thread=False))`` and ``durability="sync"``, a graph looping over one trivial node
  N times. Both after a 50-step warm-up, interleaved with the rounds above, median of the
  repeats. ``null`` with a note when a peer is not importable.
* ``resume_s``: a child process runs a 1,000-step task whose step 500 SIGKILLs its own process;
  then the time from just before ``subprocess.Popen`` of a new process (which opens the engine,
  registers the functions and calls ``run()``) to its first newly executed step (step 500
  writes ``time.time()`` to a file). Interpreter start-up and imports are included, from
  bytecode as a deployed onward's (children write and read it even under
  ``PYTHONDONTWRITEBYTECODE``).
  ``dbos_resume_s``: the same for DBOS (a new process calls ``DBOS.launch()``, which recovers
  the pending workflow). Median of the repeats. Their floor, ``process_start_s``: the same
  timing of a new interpreter (same executable, same environment) whose first line writes the
  time to the file; measured before and after each of onward's resumes, median.
* ``replay_eps``: events per second of ``CatchUp(log, checkpoint_every=0).open(
  use_checkpoint=False)`` (read, decode and fold every projection) over a log of 1,000,000
  events (100,000 with ``--quick``): 100,000 tasks of 10 events each (TaskSubmitted,
  TaskClaimed, 7 x StepCompleted, TaskSucceeded), written with ``log.commit`` in batches of
  500 events at ``synchronous=normal``. Best of four repeats (a CPU-bound figure);
  ``replay_cpu_eps`` in ``details`` divides by the process's CPU time instead of wall time.
  Every record's checksum is checked as it is read (the default); ``replay_unverified_eps``
  is the same replay of a log opened with ``verify_reads=False``, in turns with the checked
  one, so that ``checksum_cost_ratio`` (checked / unchecked) is what checking costs.
  Its floor, ``raw_read_decode_eps``: plain sqlite3 reads the same rows, 1,000 a page, and
  msgspec decodes each state into the envelope (``Meta`` and a tagged union of the event
  types); in turns with the replays, best of as many (``raw_read_decode_cpu_eps`` by CPU time).
* ``open_checkpoint_s``: after a checkpoint at the head of that log and a tail of 1,000 more
  events, the time of a fresh ``CatchUp(log).open()`` in a new process (``open_log_s``, the
  time to open the log, is reported beside it). Median of three child processes.
* ``rss_mb_100k_tasks``: peak RSS of a child process that calls ``Engine.open`` on a log of
  100,000 queued tasks (submitted, never run), which folds it (and, at the engine's default
  ``checkpoint_every``, saves a checkpoint); ``rss_mb_empty_log`` is the same on an empty log.
  The peak is ``VmHWM`` from ``/proc/self/status``: on Linux ``getrusage``'s ``ru_maxrss``
  carries the parent's RSS across ``fork`` + ``exec``, so with a big parent it measures the
  parent (``ru_maxrss_mb_100k_tasks`` is kept in ``details`` for comparison).

Every figure is printed beside its floor (``floors`` in the JSON). Targets (``targets``):
step_us <= 1.3 x raw_commit_us; dbos_step_us >= 5 x step_us; resume_s <= 15 x process_start_s
(it was 0.5 s); replay_eps >= 0.5 x raw_read_decode_eps (it was 650,000); and, absolute, with
no raw counterpart or not a matter of speed: open_checkpoint_s <= 0.1; rss_mb_100k_tasks <= 200.
Quote ratios, not times: the disk's fsync time varies a lot on a shared machine (the load
average and the Linux pressure figures at the start and the end are in ``environment``).

Run it from the repository root, with the peers installed (``pip install -e '.[bench]'``)::

    .venv/bin/python scripts/bench_tasks.py             # a table, about 1.5-2.5 minutes
    .venv/bin/python scripts/bench_tasks.py --quick     # a table, about 15-50 seconds
    .venv/bin/python scripts/bench_tasks.py --json --db-dir /tmp/bench-tasks
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target, progress

ROOT = Path(__file__).resolve().parent.parent
CHILDREN = Path(__file__).resolve().parent / "_bench_children"

RAW_ROW_BYTES = 200
WARMUP_STEPS = 50
WARMUP_COMMITS = 100
RESUME_STEPS = 1_000
KILL_AT = 500
TASK_EVENTS = 10  # TaskSubmitted, TaskClaimed, 7 x StepCompleted, TaskSucceeded
BATCH_EVENTS = 500
TAIL_EVENTS = 1_000
QUEUED_TASKS = 100_000
CHILD_TIMEOUT = 300.0
PEERS = ("dbos", "langgraph", "langgraph-checkpoint-sqlite")

FULL: dict[str, int] = {
    "steps": 2_000,
    "step_rounds": 6,
    "peer_steps": 2_000,
    "peer_repeats": 3,
    "resume_repeats": 3,
    "replay_events": 1_000_000,
    "replay_repeats": 4,
    "open_repeats": 3,
}
QUICK: dict[str, int] = {
    "steps": 2_000,
    "step_rounds": 2,
    "peer_steps": 500,
    "peer_repeats": 1,
    "resume_repeats": 1,
    "replay_events": 100_000,
    "replay_repeats": 1,
    "open_repeats": 3,
}

RAW_FULL = "raw sqlite3 commit, FULL"
START = "new interpreter, 1st line"
FIGURES = [
    Figure("durable step, FULL", "step_us", "us", "raw_commit_us", RAW_FULL),
    Figure(
        "durable step, FULL, p50 interval",
        "details.step_p50_us",
        "us",
        "details.raw_commit_p50_us",
        "raw commit, p50 interval",
    ),
    Figure(
        "durable step, NORMAL",
        "details.step_normal_us",
        "us",
        "details.raw_commit_normal_us",
        "raw sqlite3 commit, NORMAL",
    ),
    Figure(
        "engine CPU per step",
        "engine_cpu_per_step_us",
        "us",
        "details.raw_commit_normal_us",
        "raw sqlite3 commit, NORMAL",
    ),
    Figure("DBOS step, FULL", "dbos_step_us", "us", "raw_commit_us", RAW_FULL),
    Figure("LangGraph step, FULL", "langgraph_step_us", "us", "raw_commit_us", RAW_FULL),
    Figure("resume after kill -9", "resume_s", "s", "process_start_s", START),
    Figure("DBOS resume after kill -9", "dbos_resume_s", "s", "process_start_s", START),
    Figure("replay (read + fold)", "replay_eps", "eps", "raw_read_decode_eps", "raw read + decode"),
    Figure(
        "replay, checksums unchecked",
        "replay_unverified_eps",
        "eps",
        "raw_read_decode_eps",
        "raw read + decode",
    ),
    Figure(
        "replay, by CPU time",
        "details.replay_cpu_eps",
        "eps",
        "details.raw_read_decode_cpu_eps",
        "raw read + decode, CPU",
    ),
    Figure("open with checkpoint", "open_checkpoint_s", "s", why="no raw counterpart"),
    Figure(
        "RSS, 100k queued tasks",
        "rss_mb_100k_tasks",
        "MB",
        "details.rss_mb_empty_log",
        "RSS, empty log",
    ),
]
TARGETS = [
    Target("step_vs_raw", "step_us", "<=", 1.3, "raw_commit_us"),
    Target("vs_dbos", "dbos_step_us", ">=", 5, "step_us"),
    Target("resume", "resume_s", "<=", 15, "process_start_s", was=0.5),
    Target("replay", "replay_eps", ">=", 0.5, "raw_read_decode_eps", was=650_000),
    Target(
        "open_checkpoint",
        "open_checkpoint_s",
        "<=",
        0.1,
        why="no raw counterpart: decoding a checkpoint of 100k task views is onward's own work",
    ),
    Target(
        "rss",
        "rss_mb_100k_tasks",
        "<=",
        200,
        why="memory does not scale with the machine's speed",
    ),
]


class ChildFailed(Exception):
    """A child process did not end as the benchmark expects."""


def child_env() -> dict[str, str]:
    """The environment of a child: this one, with the repository first on the import path,
    and bytecode written and read as usual.

    A deployed onward runs from bytecode (``pip install`` compiles it), as the interpreter of
    the floor runs its standard library from bytecode; with ``PYTHONDONTWRITEBYTECODE`` set
    (some sandboxes set it) every child would compile onward's 100 modules from source first.
    The crashed child of a resume writes the bytecode; the timed one reads it.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def run_child(script: str, *args: str, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    """Run a child script to its end; its last stdout line, as JSON."""
    done = subprocess.run(
        [sys.executable, str(CHILDREN / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=child_env(),
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ChildFailed(f"{script} {args[0]} exited with {done.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- one durable step ------------------------------------------------------------------------


def onward_steps(
    path: Path, steps: int, synchronous: str = "full"
) -> tuple[float, int, list[float]]:
    """Seconds per durable step of one task of ``steps`` steps, the step's record size, and
    the intervals between consecutive steps' returns (for a median that ignores bursts)."""
    url = f"sqlite:///{path}" + ("" if synchronous == "full" else f"?synchronous={synchronous}")
    seconds, intervals = _bench.step_task(url, steps, warmup=WARMUP_STEPS)
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT length(state) FROM stored_events WHERE topic='StepCompleted'"
            " ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
    return seconds, int(row[0]), intervals


def _intervals(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


def raw_commits(path: Path, commits: int, synchronous: str = "FULL") -> tuple[float, list[float]]:
    """Seconds per raw sqlite3 INSERT + COMMIT of one 200-byte row (WAL), and the intervals
    between consecutive commits' returns."""
    stamps: list[float] = []
    blob = b"x" * RAW_ROW_BYTES
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute(
            "CREATE TABLE events (stream TEXT, version INTEGER, topic TEXT, state BLOB,"
            " PRIMARY KEY (stream, version))"
        )
        execute = db.execute
        insert = "INSERT INTO events VALUES (?, ?, ?, ?)"
        for v in range(WARMUP_COMMITS):
            execute("BEGIN")
            execute(insert, ("task-warm-up", v, "StepCompleted", blob))
            execute("COMMIT")
        stamp = stamps.append
        clock = time.perf_counter
        t0 = clock()
        for v in range(commits):
            execute("BEGIN")
            execute(insert, ("task-bench", v, "StepCompleted", blob))
            execute("COMMIT")
            stamp(clock())
        return (clock() - t0) / commits, _intervals(stamps)
    finally:
        db.close()


def durable_steps(files: Files, counts: dict[str, int]) -> tuple[dict[str, Any], list[str]]:
    """Onward's step, the raw commit and the peers' steps, interleaved.

    Raw and onward alternate (raw, onward, onward, raw, ...); after every other round, while
    repeats remain, DBOS and LangGraph run once each in child processes. Medians count.
    """
    steps, rounds = counts["steps"], counts["step_rounds"]
    onward: list[float] = []
    raw: list[float] = []
    peers: dict[str, list[float]] = {"dbos_step_us": [], "langgraph_step_us": []}
    notes: list[str] = []
    runnable = []
    for key, module, script in (
        ("dbos_step_us", "dbos", "dbos_child.py"),
        ("langgraph_step_us", "langgraph.checkpoint.sqlite", "langgraph_child.py"),
    ):
        if _importable(module):
            runnable.append((key, script))
        else:
            notes.append(f"{key}: {module} is not importable (pip install -e '.[bench]')")
    record = 0
    onward_intervals: list[float] = []
    raw_intervals: list[float] = []
    for round_ in range(rounds):
        progress(f"durable steps: round {round_ + 1} of {rounds}")
        order = ("raw", "onward") if round_ % 2 == 0 else ("onward", "raw")
        for who in order:
            if who == "raw":
                seconds, intervals = raw_commits(files.new("raw-full"), steps)
                raw.append(seconds)
                raw_intervals += intervals
            else:
                seconds, record, intervals = onward_steps(files.new("step-full"), steps)
                onward.append(seconds)
                onward_intervals += intervals
        if round_ % 2 == 1 or round_ // 2 >= counts["peer_repeats"]:
            continue
        for key, script in list(runnable):
            try:
                figure = run_child(script, "step", str(files.new(key)), str(counts["peer_steps"]))
            except (ChildFailed, subprocess.TimeoutExpired) as exc:
                notes.append(f"{key}: {exc}")
                runnable.remove((key, script))
                continue
            peers[key].append(figure["step_us"])
    # The same at synchronous=NORMAL: the difference is the engine's CPU cost per step.
    raw_normal, _ = raw_commits(files.new("raw-normal"), steps, "NORMAL")
    step_normal, _, _ = onward_steps(files.new("step-normal"), steps, "normal")
    step_p50 = statistics.median(onward_intervals)
    raw_p50 = statistics.median(raw_intervals)
    figures: dict[str, Any] = {
        "step_us": statistics.median(onward) * 1e6,
        "raw_commit_us": statistics.median(raw) * 1e6,
        "step_normal_us": step_normal * 1e6,
        "raw_commit_normal_us": raw_normal * 1e6,
        "step_p50_us": step_p50 * 1e6,
        "raw_commit_p50_us": raw_p50 * 1e6,
        "step_vs_raw_p50_ratio": round(step_p50 / raw_p50, 3),
        "step_samples_us": [round(x * 1e6, 1) for x in onward],
        "raw_samples_us": [round(x * 1e6, 1) for x in raw],
        "step_record_bytes": record,
    }
    for key, samples in peers.items():
        figures[key] = statistics.median(samples) if samples else None
        figures[key.replace("_us", "_samples_us")] = [round(x, 1) for x in samples]
    return figures, notes


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# -- resuming after kill -9 ------------------------------------------------------------------


def resume_once(files: Files, script: str, label: str) -> tuple[float, dict[str, Any]]:
    """Kill a child half-way through a 1,000-step task; time a new one to its first new step."""
    path = files.new(label)
    stamp = Path(f"{path}.stamp")
    stamp.unlink(missing_ok=True)
    crash = ["crash", str(path), str(RESUME_STEPS), str(KILL_AT)]
    crashed = subprocess.run(
        [sys.executable, str(CHILDREN / script), *crash],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
        env=child_env(),
    )
    if crashed.returncode != -9:
        tail = (crashed.stderr.strip().splitlines() or [crashed.stdout.strip()])[-1]
        raise ChildFailed(f"{script} crash exited with {crashed.returncode}: {tail}")
    seconds, out = time_to_stamp([str(CHILDREN / script), "resume", str(path)], stamp)
    return seconds, json.loads(out.strip().splitlines()[-1])


def time_to_stamp(command: list[str], stamp: Path) -> tuple[float, str]:
    """Seconds from just before a new interpreter starts ``command`` (the stamp file's path
    added) to the ``time.time()`` it writes to the stamp; and what it printed."""
    stamp.unlink(missing_ok=True)
    env = child_env()
    t0 = time.time()
    child = subprocess.Popen(
        [sys.executable, *command, str(stamp)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = child.communicate(timeout=CHILD_TIMEOUT)
    if child.returncode != 0 or not stamp.exists():
        tail = (err.strip().splitlines() or ["(no output)"])[-1]
        raise ChildFailed(f"{command[0]} exited with {child.returncode}: {tail}")
    return float(stamp.read_text()) - t0, out


def process_start(files: Files) -> float:
    """The floor of a resume: a new interpreter whose first line writes the time to a file."""
    first_line = "import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))"
    seconds, _ = time_to_stamp(["-c", first_line], Path(f"{files.new('start')}.stamp"))
    return seconds


def resumes(files: Files, repeats: int) -> tuple[dict[str, Any], list[str]]:
    """onward's and DBOS's restart after kill -9, to the first newly executed step."""
    notes: list[str] = []
    onward: list[float] = []
    starts: list[float] = []
    for _ in range(repeats):
        starts.append(process_start(files))
        seconds, summary = resume_once(files, "onward_child.py", "resume")
        expected = {"steps_run": RESUME_STEPS - KILL_AT, "steps_replayed": KILL_AT}
        if any(summary[k] != v for k, v in expected.items()) or summary["succeeded"] != 1:
            raise ChildFailed(f"onward's resumed run is not what was expected: {summary}")
        onward.append(seconds)
        starts.append(process_start(files))
    figures: dict[str, Any] = {
        "resume_s": statistics.median(onward),
        "resume_samples_s": [round(s, 3) for s in onward],
        "process_start_s": statistics.median(starts),
        "process_start_samples_s": [round(s, 4) for s in starts],
        "dbos_resume_s": None,
    }
    if not _importable("dbos"):
        notes.append("dbos_resume_s: dbos is not importable (pip install -e '.[bench]')")
        return figures, notes
    dbos: list[float] = []
    try:
        for _ in range(repeats):
            seconds, summary = resume_once(files, "dbos_child.py", "dbos-resume")
            if summary.get("result") != RESUME_STEPS:
                raise ChildFailed(f"DBOS's recovered workflow returned {summary}")
            dbos.append(seconds)
    except (ChildFailed, subprocess.TimeoutExpired) as exc:
        notes.append(f"dbos_resume_s: {exc}")
    if dbos:
        figures["dbos_resume_s"] = statistics.median(dbos)
        figures["dbos_resume_samples_s"] = [round(s, 3) for s in dbos]
    return figures, notes


# -- replay and checkpoints ------------------------------------------------------------------


def task_events(k: int) -> list[Any]:
    """The ten events of one task that ran to its end: submitted, claimed, 7 steps, succeeded."""
    from onward.events import StepCompleted, TaskClaimed, TaskSubmitted, TaskSucceeded

    steps = TASK_EVENTS - 3
    return [
        TaskSubmitted(name="crawl", args=[f"https://example.org/page/{k}"]),
        TaskClaimed(worker="bench-host/4242/a1b2c3", lease_until=1.9e9, attempt=1),
        *(
            StepCompleted(
                index=i, name="fetch", result={"status": 200, "bytes": 1234 + i}, duration=0.012
            )
            for i in range(steps)
        ),
        TaskSucceeded(result={"pages": steps, "task": k}),
    ]


def write_tasks(log: Any, first: int, count: int, *, queued_only: bool = False) -> None:
    """Append ``count`` tasks (all ten events each, or only TaskSubmitted) in 500-event commits."""
    from onward.events import Append, Context, TaskSubmitted
    from onward.projections import task_stream

    per_task = 1 if queued_only else TASK_EVENTS
    per_commit = max(1, BATCH_EVENTS // per_task)
    for start in range(first, first + count, per_commit):
        appends = []
        for k in range(start, min(first + count, start + per_commit)):
            task_id = f"{k:016x}"
            events = (
                [TaskSubmitted(name="crawl", args=[f"https://example.org/page/{k}"])]
                if queued_only
                else task_events(k)
            )
            context = Context(
                session="bench", actor="bench-host/4242/a1b2c3", correlation_id=task_id
            )
            appends.append(
                Append(
                    stream=task_stream(task_id), events=events, expected_version=0, context=context
                )
            )
        log.commit(appends)


def start_session(log: Any) -> None:
    """The session stream's first event, as ``Engine.open`` writes it."""
    from onward.events import Context, SessionStarted
    from onward.projections import session_stream

    log.append(
        session_stream("bench"),
        [SessionStarted(name="bench", host="bench-host", pid=4242, version="bench")],
        expected_version=0,
        context=Context(session="bench", actor="bench-host/4242/a1b2c3"),
    )


def replay_and_open(files: Files, total: int, repeats: int, opens: int) -> dict[str, Any]:
    """Build a log of ``total`` events; replay it; checkpoint it; reopen it in new processes."""
    from onward.events import open_log
    from onward.projections import CatchUp

    path = files.new("replay")
    tasks = total // TASK_EVENTS
    progress(f"replay: building a log of {tasks * TASK_EVENTS:,} events ({tasks:,} tasks)")
    t0 = time.perf_counter()
    with open_log(f"sqlite:///{path}?synchronous=normal") as log:
        start_session(log)
        write_tasks(log, 0, tasks)
        events = log.head()
    build_seconds = time.perf_counter() - t0

    seconds: list[float] = []
    cpu: list[float] = []
    unverified: list[float] = []
    floor: list[tuple[float, float]] = []
    decode = _bench.decode_rows()
    with open_log(f"sqlite:///{path}?synchronous=normal") as log:
        for repeat in range(repeats):
            if repeat % 2 == 0:  # the floor and the replay in turns: floor, replay, replay, ...
                progress(f"replay: the floor, a raw read and decode of {events:,} events")
                floor.append(_bench.raw_read(path, decode))
            # Checked and unchecked in turns too, the first one alternating.
            for verify in (True, False) if repeat % 2 == 0 else (False, True):
                log.verify_reads = verify
                checked = "" if verify else ", checksums unchecked"
                progress(f"replay: folding {events:,} events{checked}")
                host = CatchUp(log, checkpoint_every=0)
                c0, t0 = time.process_time(), time.perf_counter()
                projections = host.open(use_checkpoint=False)
                wall, used = time.perf_counter() - t0, time.process_time() - c0
                if verify:
                    seconds.append(wall)
                    cpu.append(used)
                else:
                    unverified.append(wall)
                if projections.position != events or len(projections.tasks.tasks) != tasks:
                    raise ChildFailed(f"replay folded {projections.position} of {events} events")
            log.verify_reads = True
            if repeat % 2 == 1 or repeat == repeats - 1:
                progress(f"replay: the floor, a raw read and decode of {events:,} events")
                floor.append(_bench.raw_read(path, decode))
        t0 = time.perf_counter()
        host.checkpoint()
        checkpoint_seconds = time.perf_counter() - t0
        write_tasks(log, tasks, TAIL_EVENTS // TASK_EVENTS)  # the tail after the checkpoint
        head = log.head()

    progress(f"open with a checkpoint: {opens} new processes")
    reopened = [run_child("onward_child.py", "open", str(path)) for _ in range(opens)]
    for r in reopened:
        if r["position"] != head or r["checkpoint_position"] != events:
            raise ChildFailed(f"the reopened projections are not at the head {head}: {r}")
    return {
        "replay_eps": round(events / min(seconds)),
        "replay_unverified_eps": round(events / min(unverified)),
        "raw_read_decode_eps": round(events / min(wall for wall, _ in floor)),
        "replay_samples_s": [round(s, 3) for s in seconds],
        "replay_unverified_samples_s": [round(s, 3) for s in unverified],
        "raw_read_decode_samples_s": [round(wall, 3) for wall, _ in floor],
        "replay_cpu_eps": round(events / min(cpu)),
        "raw_read_decode_cpu_eps": round(events / min(c for _, c in floor)),
        "replay_events": events,
        "replay_build_s": round(build_seconds, 2),
        "checkpoint_save_s": round(checkpoint_seconds, 4),
        "open_checkpoint_s": statistics.median(r["catch_up_open_s"] for r in reopened),
        "open_checkpoint_samples_s": [round(r["catch_up_open_s"], 4) for r in reopened],
        "open_log_s": statistics.median(r["open_log_s"] for r in reopened),
        "checkpoint_tail_events": head - events,
        "log_mb": round(os.path.getsize(path) / 2**20, 1),
    }


def memory(files: Files) -> dict[str, Any]:
    """Peak RSS of a new process that opens an engine on 100,000 queued tasks (and on none)."""
    from onward.events import open_log

    path = files.new("queued")
    progress(f"memory: a log of {QUEUED_TASKS:,} queued tasks")
    with open_log(f"sqlite:///{path}?synchronous=normal") as log:
        start_session(log)
        write_tasks(log, 0, QUEUED_TASKS, queued_only=True)
    full = run_child("onward_child.py", "rss", str(path))
    if full["queued"] != QUEUED_TASKS:
        raise ChildFailed(f"the engine sees {full['queued']} queued tasks, not {QUEUED_TASKS}")
    empty = run_child("onward_child.py", "rss", str(files.new("empty")))
    before = full["peak_rss_before_open_mb"]
    return {
        "rss_mb_100k_tasks": round(full["peak_rss_mb"], 1),
        "rss_mb_empty_log": round(empty["peak_rss_mb"], 1),
        "rss_mb_after_imports": None if before is None else round(before, 1),
        "ru_maxrss_mb_100k_tasks": round(full["ru_maxrss_mb"], 1),
        "engine_open_100k_tasks_s": round(full["open_s"], 3),
    }


# -- the run ---------------------------------------------------------------------------------


def _round(value: Any, digits: int) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def measure(directory: Path, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure beside its floor, the ratios, the details, and the counts."""
    files = Files(directory)
    steps, notes = durable_steps(files, counts)
    progress(f"resume after kill -9: {counts['resume_repeats']} each")
    resume, resume_notes = resumes(files, counts["resume_repeats"])
    notes += resume_notes
    replay = replay_and_open(
        files, counts["replay_events"], counts["replay_repeats"], counts["open_repeats"]
    )
    rss = memory(files)

    result: dict[str, Any] = {
        "step_us": round(steps["step_us"], 1),
        "raw_commit_us": round(steps["raw_commit_us"], 1),
        "dbos_step_us": _round(steps["dbos_step_us"], 1),
        "langgraph_step_us": _round(steps["langgraph_step_us"], 1),
        "resume_s": round(resume["resume_s"], 3),
        "dbos_resume_s": _round(resume["dbos_resume_s"], 3),
        "process_start_s": round(resume["process_start_s"], 4),
        "replay_eps": replay["replay_eps"],
        "replay_unverified_eps": replay["replay_unverified_eps"],
        "raw_read_decode_eps": replay["raw_read_decode_eps"],
        "open_checkpoint_s": round(replay["open_checkpoint_s"], 4),
        "rss_mb_100k_tasks": rss["rss_mb_100k_tasks"],
    }
    ratio = _bench.ratio
    result["step_vs_raw_ratio"] = ratio(steps["step_us"], steps["raw_commit_us"])
    result["dbos_vs_step_ratio"] = ratio(steps["dbos_step_us"], steps["step_us"])
    result["langgraph_vs_step_ratio"] = ratio(steps["langgraph_step_us"], steps["step_us"])
    result["dbos_resume_vs_resume_ratio"] = ratio(resume["dbos_resume_s"], resume["resume_s"])
    result["checksum_cost_ratio"] = ratio(replay["replay_eps"], replay["replay_unverified_eps"])
    result["engine_cpu_per_step_us"] = round(
        steps["step_normal_us"] - steps["raw_commit_normal_us"], 1
    )
    result["details"] = {
        **{k: _round(v, 1) for k, v in steps.items() if k not in result},
        **{k: v for k, v in resume.items() if k.endswith("samples_s")},
        **{k: v for k, v in replay.items() if k not in result},
        **{k: v for k, v in rss.items() if k not in result},
    }
    result["notes"] = notes
    result["counts"] = {
        **counts,
        "raw_row_bytes": RAW_ROW_BYTES,
        "resume_steps": RESUME_STEPS,
        "kill_at": KILL_AT,
        "queued_tasks": QUEUED_TASKS,
    }
    return result


def details(result: dict[str, Any]) -> list[str]:
    """What the figures were measured on, and what stands behind them."""
    details = result["details"]
    return [
        f"{details['replay_events']:,} events replayed (log {details['log_mb']} MB, built in "
        f"{details['replay_build_s']} s); checkpoint saved in {details['checkpoint_save_s']} s, "
        f"opened with a tail of {details['checkpoint_tail_events']:,} events; the log itself "
        f"opens in {details['open_log_s']:.4f} s",
        f"{details['step_record_bytes']}-byte step records vs {RAW_ROW_BYTES}-byte raw rows; "
        f"RSS after the imports {details['rss_mb_after_imports']} MB",
    ]


BENCHMARK = _bench.Benchmark(
    __doc__, FULL, QUICK, measure, FIGURES, TARGETS, details, packages=PEERS
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
