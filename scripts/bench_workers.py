"""Benchmark of worker processes sharing one log: PostgreSQL (onward's recorder, and the earlier
one for comparison), SQLite, raw PostgreSQL commits, and DBOS on the same server.

What it measures, in one run, against the PostgreSQL server of ``--db`` (default
``ONWARD_TEST_POSTGRES`` or ``postgresql://postgres@127.0.0.1:5432/test``; each measurement in a
schema of its own, dropped afterwards):

* ``pg_steps_per_s_1``, ``_2``, ``_4``, ``_8``: N worker processes (``Engine.serve(workers=1)``
  each, in ``scripts/_bench_children/worker_child.py``), opened on a log where ``tasks`` tasks
  of ``steps_per_task`` trivial durable steps wait; once every process is ready, they start
  together. Steps recorded / the time from the first claim to the last success (the envelopes'
  times: process start-up is left out). ``pg_earlier_steps_per_s_1`` and ``_8``: the same with
  the PostgreSQL log as onward wrote it before its own recorder (eventsourcing's recorder: a
  table lock per append; ``scripts/_bench_children/earlier_postgres.py``).
* ``raw_pg_commits_per_s_8`` (the floor): 8 processes, one psycopg connection each, inserting
  one row shaped like an onward record (300-byte state) per transaction, into a table with
  onward's keys; commits / wall time. Measured before and after the worker runs; the higher
  counts. ``raw_pg_commit_us``: the same with one process, microseconds per commit.
* ``sqlite_steps_per_s_1`` / ``_4``: the worker runs on one SQLite file (``synchronous=FULL``),
  beside ``raw_sqlite_commits_per_s`` (sqlite3, WAL, FULL, one row per commit, one connection).
* ``claim_p99_ms``: in the 8-worker PostgreSQL run, the 99th percentile of the time a worker's
  scheduler takes to claim a task (from asking for one to holding it, lost races and the
  catch-ups after them included). ``details.lost_claims_per_task``: claims that lost a race
  (a VersionConflict), per task.
* ``pickup_after_kill_s``: a worker of another (simulated) host runs a step that takes a
  minute, with a lease of ``LEASE`` seconds (heartbeats keep it); a second, idle worker serves
  beside it; SIGKILL to the first; the time until the second claims the task. Worst of the
  repeats.
* ``idle_wakeup_ms``: two idle workers; another process submits a one-step task; the time from
  the submission to the claim (the envelopes' times), median of the rounds (the maximum in
  ``details``; ``details.idle_wakeup_sqlite_ms`` on SQLite).
* ``pg_step_us``: one task of ``pg_steps`` trivial steps in one process on PostgreSQL (as
  ``bench_tasks.py`` times a step), microseconds per step; ``dbos_pg_step_us``: DBOS 3.4 on the
  same server (``DBOS(config={"name": ..., "system_database_url": "postgresql://..."})``, a
  workflow of ``pg_steps`` trivial steps after a 50-step warm-up, wall time / steps; database
  ``onward_bench_dbos``, dropped afterwards).

Targets: pg_steps_per_s_8 >= 0.5 x raw_pg_commits_per_s_8 and >= 4 x pg_earlier_steps_per_s_1;
dbos_pg_step_us > pg_step_us (ahead of DBOS per step); absolute: idle_wakeup_ms <= 50 and
pickup_after_kill_s <= LEASE + SILENCE_GRACE + 1 (a peer on another host counts a silent
worker's silence only a grace after an append of its own went through). This machine has 2
cores: 8 worker processes share them with the server, so the 8-worker figures are bound by CPU
as much as by the disk.

Run it from the repository root, with the peers installed (``pip install -e '.[bench]'``)::

    .venv/bin/python scripts/bench_workers.py             # a table, about 3-4 minutes
    .venv/bin/python scripts/bench_workers.py --quick     # a table, about a minute
    .venv/bin/python scripts/bench_workers.py --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target, progress

from onward.runtime.session import SILENCE_GRACE

ROOT = Path(__file__).resolve().parent.parent
CHILDREN = Path(__file__).resolve().parent / "_bench_children"
sys.path.insert(0, str(CHILDREN))

SESSION = "bench"
LEASE = 2.0  # seconds: the lease of the pick-up measurement
THROUGHPUT_LEASE = 60.0  # long enough that no claim runs out during a throughput run
DBOS_DATABASE = "onward_bench_dbos"
CHILD_TIMEOUT = 300.0
PEERS = ("dbos", "psycopg")

FULL: dict[str, int] = {
    "tasks": 400,
    "steps_per_task": 10,
    "earlier_tasks": 200,
    "raw_commits": 1_500,
    "sqlite_raw_commits": 1_000,
    "wakeups": 20,
    "pickups": 3,
    "pg_steps": 2_000,
}
QUICK: dict[str, int] = {
    "tasks": 120,
    "steps_per_task": 10,
    "earlier_tasks": 60,
    "raw_commits": 500,
    "sqlite_raw_commits": 500,
    "wakeups": 8,
    "pickups": 1,
    "pg_steps": 500,
}

RAW_8 = "raw commits, 8 connections"
FIGURES = [
    Figure("1 worker, PostgreSQL", "pg_steps_per_s_1", "eps", "raw_pg_commits_per_s_8", RAW_8),
    Figure("2 workers", "pg_steps_per_s_2", "eps", "raw_pg_commits_per_s_8", RAW_8),
    Figure("4 workers", "pg_steps_per_s_4", "eps", "raw_pg_commits_per_s_8", RAW_8),
    Figure("8 workers", "pg_steps_per_s_8", "eps", "raw_pg_commits_per_s_8", RAW_8),
    Figure(
        "8 workers vs the earlier recorder",
        "pg_steps_per_s_8",
        "eps",
        "pg_earlier_steps_per_s_1",
        "earlier recorder, 1 worker",
    ),
    Figure(
        "earlier recorder, 1 worker",
        "pg_earlier_steps_per_s_1",
        "eps",
        "raw_pg_commits_per_s_8",
        RAW_8,
    ),
    Figure(
        "earlier recorder, 8 workers",
        "pg_earlier_steps_per_s_8",
        "eps",
        "raw_pg_commits_per_s_8",
        RAW_8,
    ),
    Figure(
        "1 worker, SQLite",
        "sqlite_steps_per_s_1",
        "eps",
        "raw_sqlite_commits_per_s",
        "raw sqlite3 commits, FULL",
    ),
    Figure(
        "4 workers, SQLite",
        "sqlite_steps_per_s_4",
        "eps",
        "raw_sqlite_commits_per_s",
        "raw sqlite3 commits, FULL",
    ),
    Figure("claim, p99, 8 workers", "claim_p99_ms", "ms", "raw_pg_commit_ms", "raw commit"),
    Figure("pick-up after kill -9", "pickup_after_kill_s", "s", "lease_s", "the lease"),
    Figure("idle worker wakes up", "idle_wakeup_ms", "ms", why="a notification, not a speed"),
    Figure("durable step, PostgreSQL", "pg_step_us", "us", "raw_pg_commit_us", "raw commit"),
    Figure("DBOS step, PostgreSQL", "dbos_pg_step_us", "us", "raw_pg_commit_us", "raw commit"),
]
TARGETS = [
    Target("steps_8_vs_raw", "pg_steps_per_s_8", ">=", 0.5, "raw_pg_commits_per_s_8"),
    Target(
        "steps_8_vs_earlier_1",
        "pg_steps_per_s_8",
        ">=",
        4,
        "pg_earlier_steps_per_s_1",
        was=4 * 445,
    ),
    Target("vs_dbos", "dbos_pg_step_us", ">", 1, "pg_step_us"),
    Target(
        "idle_wakeup",
        "idle_wakeup_ms",
        "<=",
        50,
        why="the time a notification takes to wake a worker, not a matter of disk speed",
    ),
    Target(
        "pickup",
        "pickup_after_kill_s",
        "<=",
        LEASE + SILENCE_GRACE + 1,
        why="bound by the lease, a duration the user sets, and the silence's grace",
    ),
]


class ChildFailed(Exception):
    """A child process did not end as the benchmark expects."""


def child_env(**extra: str) -> dict[str, str]:
    """This environment, with the repository first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def last_json(process: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """The JSON object a child printed last, once it ended."""
    out, err = process.communicate(timeout=CHILD_TIMEOUT)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise ChildFailed(f"{what} ended with {process.returncode}: {err[-2000:]}")
    found: dict[str, Any] = json.loads(lines[-1])
    return found


def start_together(commands: list[list[str]], go: Path, **env: str) -> list[subprocess.Popen[str]]:
    """Start children that print ``ready`` and wait for ``go``; create it once all are ready."""
    go.unlink(missing_ok=True)
    children = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(**env),
        )
        for command in commands
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            child.kill()
            raise ChildFailed(f"a child did not start: {line!r} {child.communicate()[1][-2000:]}")
    go.touch()
    return children


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    pause: float,
    children: Sequence[subprocess.Popen[str]] = (),
) -> None:
    """Poll ``condition`` until it holds; fail when it times out or a child ends meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        ended = [child for child in children if child.poll() is not None]
        if ended:
            raise ChildFailed(
                f"a child ended while waiting for {what}: {ended[0].communicate()[1][-2000:]}"
            )
        if time.monotonic() > deadline:
            raise ChildFailed(f"timed out waiting for {what}")
        time.sleep(pause)


def process_cpu(pid: int) -> float:
    """The CPU seconds a process has used (user and system, from /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[int, int]:
    """The machine's busy and total CPU time so far (clock ticks, from /proc/stat)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


# -- PostgreSQL schemas and logs -------------------------------------------------------------


class Server:
    """The PostgreSQL server of the benchmark: fresh schemas on its database."""

    def __init__(self, url: str) -> None:
        self.url = url.partition("?")[0]

    @contextlib.contextmanager
    def schema(self) -> Iterator[str]:
        """A fresh schema's log URL; the schema is dropped afterwards."""
        import psycopg

        name = "onward_bench_" + uuid.uuid4().hex[:10]
        try:
            yield f"{self.url}?schema={name}"
        finally:
            with psycopg.connect(self.url, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def count(self, url: str, topic: str) -> int:
        """How many records of a tag a log holds (a raw count, cheap to poll)."""
        import psycopg

        schema = url.partition("schema=")[2]
        with psycopg.connect(self.url, autocommit=True) as connection:
            row = connection.execute(
                f'SELECT count(*) FROM "{schema}".onward_events WHERE topic = %s', (topic,)
            ).fetchone()
        return int(row[0]) if row else 0


def open_any(url: str, recorder: str) -> Any:
    """The log at ``url``: onward's own, or the earlier PostgreSQL one."""
    if recorder == "earlier":
        from earlier_postgres import EarlierPostgresLog

        return EarlierPostgresLog(url)
    from onward.events import open_log

    return open_log(url)


def submit(url: str, recorder: str, tasks: int, steps: int, *, slow: bool = False) -> list[str]:
    """Submit tasks of ``steps`` steps to the session (creating the log first)."""
    from onward import Engine

    with Engine(open_any(url, recorder), session=SESSION) as engine:

        @engine.task(name="bench.job")
        def job(n: int, slow: bool = False) -> int:
            raise AssertionError("runs in the workers")

        return [engine.submit(job, steps, slow=slow) for _ in range(tasks)]


def sqlite_count(url: str, topic: str) -> int:
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
        row = db.execute("SELECT count(*) FROM stored_events WHERE topic = ?", (topic,)).fetchone()
    return int(row[0])


def worker_command(url: str, lease: float, recorder: str, go: Path, host: str = "") -> list[str]:
    return [
        sys.executable,
        str(CHILDREN / "worker_child.py"),
        url,
        SESSION,
        str(lease),
        recorder,
        host,
        str(go),
    ]


def stop(children: list[subprocess.Popen[str]], what: str) -> list[dict[str, Any]]:
    """SIGTERM each child; what each printed."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    return [last_json(child, what) for child in children]


# -- throughput ------------------------------------------------------------------------------


def fleet(
    url: str,
    workers: int,
    tasks: int,
    steps: int,
    recorder: str,
    go: Path,
    count: Callable[[str, str], int],
) -> dict[str, Any]:
    """``workers`` processes work off ``tasks`` tasks; steps per second and the claims."""
    submit(url, recorder, tasks, steps)
    children = start_together(
        [worker_command(url, THROUGHPUT_LEASE, recorder, go) for _ in range(workers)], go
    )
    cpu_before, machine_before = [process_cpu(c.pid) for c in children], machine_cpu()
    try:
        wait_until(
            lambda: count(url, "TaskSucceeded") >= tasks,
            CHILD_TIMEOUT,
            "the tasks",
            0.05,
            children,
        )
        cpu = sum(process_cpu(c.pid) for c in children) - sum(cpu_before)
        busy, total = (b - a for a, b in zip(machine_before, machine_cpu(), strict=True))
    finally:
        reports = stop(children, f"a worker on {url}")
    first = last = None
    step_count = events = 0
    with open_any(url, recorder) as log:
        for r in log.read():
            tag = type(r.event).__name__
            if tag == "TaskClaimed" and first is None:
                first = r.meta.time
            elif tag == "TaskSucceeded":
                last = r.meta.time if last is None else max(last, r.meta.time)
            elif tag == "StepCompleted":
                step_count += 1
            if first is not None:
                events += 1
    if first is None or last is None or step_count != tasks * steps:
        raise ChildFailed(f"{workers} workers on {url}: {step_count} steps of {tasks * steps}")
    claims = sorted(ms for report in reports for ms in report["claims_ms"])
    return {
        "steps_per_s": round(step_count / (last - first)),
        "events_per_s": round(events / (last - first)),
        "claim_p50_ms": round(_bench.percentile(claims, 0.5), 2),
        "claim_p99_ms": round(_bench.percentile(claims, 0.99), 2),
        "lost_claims_per_task": round(sum(r["lost_claims"] for r in reports) / tasks, 3),
        "lost_other_per_task": round(sum(r["lost_other"] for r in reports) / tasks, 3),
        "worker_cpu_us_per_step": round(cpu / step_count * 1e6),
        "machine_busy_share": round(busy / total, 2) if total else None,
    }


def raw_commits(server: Server, processes: int, commits: int, go: Path) -> float:
    """Commits per second of ``processes`` raw writers, one row per transaction."""
    import psycopg

    with server.schema() as url:
        schema = url.partition("schema=")[2]
        table = f'"{schema}".raw'
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
            connection.execute(
                f"CREATE TABLE {table} (stream text NOT NULL, version bigint NOT NULL,"
                " topic text, state bytea, position bigint NOT NULL,"
                " PRIMARY KEY (stream, version))"
            )
            connection.execute(f"CREATE UNIQUE INDEX ON {table} (position)")
        command = [
            sys.executable,
            str(CHILDREN / "pg_raw_child.py"),
            server.url,
            table,
            str(commits),
            str(go),
        ]
        children = start_together([command] * processes, go)
        reports = [last_json(child, "a raw writer") for child in children]
    started = min(r["started"] for r in reports)
    ended = max(r["ended"] for r in reports)
    return float(sum(r["commits"] for r in reports) / (ended - started))


def raw_sqlite_commits(path: Path, commits: int) -> float:
    """Commits per second of sqlite3, WAL, FULL, one row per commit."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE raw (stream TEXT, version INTEGER, topic TEXT, state BLOB,"
            " PRIMARY KEY (stream, version))"
        )
        state = os.urandom(150).hex().encode()
        started = time.perf_counter()
        for i in range(commits):
            db.execute("BEGIN")
            db.execute("INSERT INTO raw VALUES ('raw', ?, 'StepCompleted', ?)", (i, state))
            db.execute("COMMIT")
        return commits / (time.perf_counter() - started)


# -- latency ---------------------------------------------------------------------------------


def idle_wakeups(url: str, rounds: int, go: Path, count: Callable[[str, str], int]) -> list[float]:
    """Milliseconds from a submission in this process to its claim by an idle worker."""
    from onward import Engine

    submit(url, "own", 0, 1)  # the log and the session exist before the workers open it
    children = start_together([worker_command(url, THROUGHPUT_LEASE, "own", go)] * 2, go)
    try:
        with Engine.open(url, session=SESSION) as engine:

            @engine.task(name="bench.job")
            def job(n: int, slow: bool = False) -> int:
                raise AssertionError("runs in the workers")

            time.sleep(0.5)  # the workers reach their idle wait
            for i in range(rounds):
                engine.submit(job, 1)
                wait_until(lambda: count(url, "TaskSucceeded") > i, 30, "a wake-up", 0.002)  # noqa: B023
                time.sleep(0.1)  # idle again
    finally:
        stop(children, "an idle worker")
    submitted: dict[str, float] = {}
    claimed: dict[str, float] = {}
    with open_any(url, "own") as log:
        for r in log.read():
            tag = type(r.event).__name__
            if tag == "TaskSubmitted":
                submitted[r.stream] = r.meta.time
            elif tag == "TaskClaimed":
                claimed.setdefault(r.stream, r.meta.time)
    return sorted((claimed[s] - submitted[s]) * 1000 for s in submitted)


def pickups(server: Server, repeats: int, go: Path) -> list[float]:
    """Seconds from SIGKILL of a worker (of another host, in a long step) to the claim of its
    task by an idle peer."""
    found = []
    for _ in range(repeats):
        with server.schema() as url:
            submit(url, "own", 0, 1)
            holder = start_together(
                [worker_command(url, LEASE, "own", go, host="elsewhere")], go, BENCH_HOLD="60"
            )
            try:
                [task] = submit(url, "own", 1, 2, slow=True)
                wait_until(lambda: server.count(url, "TaskClaimed") >= 1, 30, "the claim", 0.01)
                peer = start_together([worker_command(url, LEASE, "own", go)], go.with_suffix(".b"))
                time.sleep(1.0)  # the peer serves, idle: the task's lease holds
                killed_at = time.time()
                holder[0].kill()
                holder[0].wait()
                wait_until(
                    lambda: server.count(url, "TaskClaimed") >= 2,
                    30,
                    "the take-over",
                    0.01,
                )
                stop(peer, "the peer")
            finally:
                for child in holder:
                    if child.poll() is None:
                        child.kill()
            with open_any(url, "own") as log:
                claims = [
                    r.meta.time
                    for r in log.read_stream(f"task-{task}")
                    if type(r.event).__name__ == "TaskClaimed"
                ]
            found.append(claims[1] - killed_at)
    return found


def dbos_step(server: Server, steps: int) -> tuple[float | None, str]:
    """DBOS's step on the same server, in a child process; None and a note without DBOS."""
    import importlib.util

    import psycopg

    if importlib.util.find_spec("dbos") is None:
        return None, "DBOS is not installed (pip install -e '.[bench]')"
    url = server.url.rsplit("/", 1)[0] + f"/{DBOS_DATABASE}"
    try:
        child = subprocess.Popen(
            [sys.executable, str(CHILDREN / "dbos_pg_child.py"), url, str(steps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        return float(last_json(child, "DBOS")["step_us"]), ""
    finally:
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {DBOS_DATABASE} WITH (FORCE)")


# -- the run ---------------------------------------------------------------------------------


def measure(directory: Path, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure beside its floor, the details, and the counts."""
    server = Server(args.db)
    files = Files(directory)
    go = directory / "go"
    tasks, steps = counts["tasks"], counts["steps_per_task"]
    result: dict[str, Any] = {}
    details: dict[str, Any] = {}
    notes: list[str] = []

    progress("raw PostgreSQL commits")
    raw_before = raw_commits(server, 8, counts["raw_commits"], go)
    raw_1 = raw_commits(server, 1, counts["raw_commits"], go)
    for workers in (1, 2, 4, 8):
        progress(f"{workers} worker(s), PostgreSQL: {tasks} tasks of {steps} steps")
        with server.schema() as url:
            run = fleet(url, workers, tasks, steps, "own", go, server.count)
        result[f"pg_steps_per_s_{workers}"] = run["steps_per_s"]
        details[f"pg_{workers}"] = run
    for workers in (1, 8):
        earlier = counts["earlier_tasks"]
        progress(f"{workers} worker(s), the earlier recorder: {earlier} tasks of {steps} steps")
        with server.schema() as url:
            run = fleet(url, workers, earlier, steps, "earlier", go, server.count)
        result[f"pg_earlier_steps_per_s_{workers}"] = run["steps_per_s"]
        details[f"pg_earlier_{workers}"] = run
    raw_after = raw_commits(server, 8, counts["raw_commits"], go)
    result["raw_pg_commits_per_s_8"] = round(max(raw_before, raw_after))
    details["raw_pg_commits_per_s_8_before_after"] = [round(raw_before), round(raw_after)]
    result["raw_pg_commit_us"] = round(1e6 / raw_1, 1)
    result["raw_pg_commit_ms"] = round(1e3 / raw_1, 3)

    for workers in (1, 4):
        progress(f"{workers} worker(s), SQLite")
        url = f"sqlite:///{files.new(f'sqlite-{workers}')}"
        run = fleet(url, workers, tasks, steps, "own", go, sqlite_count)
        result[f"sqlite_steps_per_s_{workers}"] = run["steps_per_s"]
        details[f"sqlite_{workers}"] = run
    result["raw_sqlite_commits_per_s"] = round(
        raw_sqlite_commits(files.new("raw-sqlite"), counts["sqlite_raw_commits"])
    )

    result["claim_p99_ms"] = details["pg_8"]["claim_p99_ms"]
    details["lost_claims_per_task"] = details["pg_8"]["lost_claims_per_task"]

    progress(f"pick-up after kill -9: {counts['pickups']}, lease {LEASE} s")
    taken = pickups(server, counts["pickups"], go)
    result["pickup_after_kill_s"] = round(max(taken), 3)
    result["lease_s"] = LEASE
    details["pickup_after_kill_samples_s"] = [round(s, 3) for s in taken]

    progress(f"idle wake-ups: {counts['wakeups']} on PostgreSQL, then on SQLite")
    with server.schema() as url:
        woken = idle_wakeups(url, counts["wakeups"], go, server.count)
    result["idle_wakeup_ms"] = round(statistics.median(woken), 1)
    details["idle_wakeup_max_ms"] = round(max(woken), 1)
    woken_sqlite = idle_wakeups(
        f"sqlite:///{files.new('wakeup')}", counts["wakeups"], go, sqlite_count
    )
    details["idle_wakeup_sqlite_ms"] = round(statistics.median(woken_sqlite), 1)
    details["idle_wakeup_sqlite_max_ms"] = round(max(woken_sqlite), 1)

    progress(f"one task of {counts['pg_steps']} steps on PostgreSQL; DBOS on the same server")
    with server.schema() as url:
        per_step, _gaps = _bench.step_task(url, counts["pg_steps"])
    result["pg_step_us"] = round(per_step * 1e6, 1)
    dbos_us, note = dbos_step(server, counts["pg_steps"])
    result["dbos_pg_step_us"] = None if dbos_us is None else round(dbos_us, 1)
    if note:
        notes.append(note)

    result["details"] = details
    result["notes"] = notes
    result["counts"] = {**counts, "lease_s": LEASE, "throughput_lease_s": THROUGHPUT_LEASE}
    return result


def table_details(result: dict[str, Any]) -> list[str]:
    """The claims, lost races and wake-ups behind the figures."""
    d = result["details"]
    lines = []
    for key in (
        "pg_1",
        "pg_2",
        "pg_4",
        "pg_8",
        "pg_earlier_1",
        "pg_earlier_8",
        "sqlite_1",
        "sqlite_4",
    ):
        run = d[key]
        lines.append(
            f"{key}: {run['events_per_s']:,} events/s; claim p50 {run['claim_p50_ms']} ms, "
            f"p99 {run['claim_p99_ms']} ms; lost races per task: {run['lost_claims_per_task']} "
            f"claims, {run['lost_other_per_task']} other; workers' CPU "
            f"{run['worker_cpu_us_per_step']} us/step, machine busy {run['machine_busy_share']}"
        )
    lines.append(
        "raw commits/s, 8 connections, before and after: "
        f"{d['raw_pg_commits_per_s_8_before_after']}"
    )
    lines.append(
        f"idle wake-up: max {d['idle_wakeup_max_ms']} ms; on SQLite median "
        f"{d['idle_wakeup_sqlite_ms']} ms, max {d['idle_wakeup_sqlite_max_ms']} ms"
    )
    lines.append(f"pick-ups after kill -9 (s): {d['pickup_after_kill_samples_s']}")
    return lines


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("ONWARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"),
        help="the PostgreSQL database (schemas of its own are created and dropped)",
    )


BENCHMARK = _bench.Benchmark(
    __doc__,
    FULL,
    QUICK,
    measure,
    FIGURES,
    TARGETS,
    table_details,
    packages=PEERS,
    arguments=arguments,
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
