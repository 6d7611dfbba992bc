"""Benchmark of onward's event log against raw sqlite3 and eventsourcing, in events per second.

What it measures, in one run, on one file system (every run on fresh SQLite files in one
directory, after a short untimed warm-up on the same file):

* ``append_1_full_eps``: ``log.append(stream, [event], expected_version=v)``, one event per
  append (one commit each), ``synchronous=FULL`` (onward's default), a few hundred streams
  round-robin; ``raw_1_full_eps`` is the raw sqlite3 reference: WAL, ``synchronous=FULL``, one
  ``INSERT`` + ``COMMIT`` per row into a table shaped like onward's (stream, version, topic,
  state; primary key on stream and version), with a blob as long as onward's stored record.
* ``append_100_full_eps`` / ``raw_100_full_eps``: the same with 100 events per commit.
* ``append_1_normal_eps`` / ``raw_1_normal_eps``: one event per commit, ``synchronous=NORMAL``.
* ``read_decode_eps``: ``for r in log.read()`` over a log of N events (decoding included),
  built with 100-event appends at ``synchronous=NORMAL``; the median of five reads. Its floor,
  ``raw_read_decode_eps``: plain sqlite3 reads the same rows, 1,000 a page, and msgspec decodes
  each state into the envelope (``Meta`` and a tagged union of the event types).
* ``verify_eps``: ``log.verify()`` over that log (checksums, hash chains and SQLite's own
  integrity check); median of five. Its floor, ``raw_read_hash_eps``: the same raw read,
  blake2b-128 of each row's stream, version, tag and state, and ``PRAGMA integrity_check`` on
  a connection of its own. Floors and onward alternate (floor, onward, onward, floor, ...).
* ``eventsourcing_save_eps``: eventsourcing's own ``Application`` on SQLite (default settings),
  one new event per ``save()`` on a few hundred aggregates created (and saved) beforehand.
* ``redact_us``: the log's redaction of one typical event (``Redactor.redact_json_many`` of
  the encoded event, as an append of one event runs it), averaged over a mix of the events a
  task's run appends, none holding a secret; ``redact_secret_us`` the same for an error message
  that holds a token (the slow path: the strings are decoded, redacted and encoded again).
  Their floor, ``encode_us``: msgspec encoding the same events. The best of several rounds.

Contenders measured side by side run in turns on fresh files (raw, onward, then onward, raw,
...; eventsourcing joins the single FULL appends), so that drift in the disk's speed falls on
all of them. Every figure is printed beside its floor, and every target is a ratio to it
(``targets`` and ``floors`` in the JSON); quote ratios, not times.

Run it from the repository root::

    .venv/bin/python scripts/bench_log.py             # a table, about 1-2 minutes
    .venv/bin/python scripts/bench_log.py --quick     # a table, about 20-30 seconds
    .venv/bin/python scripts/bench_log.py --json --db-dir /tmp/bench --events 200000
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target, progress
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

ROOT = Path(__file__).resolve().parent.parent

STREAMS = 300
WARMUP_FRACTION = 0.05
ROUNDS = 4  # each contender runs four times, in turns, a quarter of its commits each

FULL_COUNTS = {
    "single_full": 100_000,
    "single_normal": 200_000,
    "batches_full": 3_000,
    "saves": 60_000,
}
QUICK_COUNTS = {
    "single_full": 15_000,
    "single_normal": 40_000,
    "batches_full": 600,
    "saves": 12_000,
}
FULL_EVENTS = 200_000
QUICK_EVENTS = 100_000
READ_REPEATS = 5  # reads and verifies of the same log; the median counts

RAW_FULL = "raw sqlite3 commit, FULL"
FIGURES = [
    Figure("append, 1/commit, FULL", "append_1_full_eps", "eps", "raw_1_full_eps", RAW_FULL),
    Figure(
        "append, 100/commit, FULL",
        "append_100_full_eps",
        "eps",
        "raw_100_full_eps",
        "raw sqlite3, 100/commit, FULL",
    ),
    Figure(
        "append, 1/commit, NORMAL",
        "append_1_normal_eps",
        "eps",
        "raw_1_normal_eps",
        "raw sqlite3 commit, NORMAL",
    ),
    Figure(
        "eventsourcing save(), FULL", "eventsourcing_save_eps", "eps", "raw_1_full_eps", RAW_FULL
    ),
    Figure(
        "read + decode",
        "read_decode_eps",
        "eps",
        "raw_read_decode_eps",
        "raw read + msgspec decode",
    ),
    Figure(
        "verify", "verify_eps", "eps", "raw_read_hash_eps", "raw read + blake2b + integrity check"
    ),
    Figure("redact, typical event", "redact_us", "us", "encode_us", "msgspec encode of it"),
    Figure(
        "redact, a message with a token",
        "redact_secret_us",
        "us",
        "encode_secret_us",
        "msgspec encode of it",
    ),
]
TARGETS = [
    Target("append_1_full", "append_1_full_eps", ">=", 0.8, "raw_1_full_eps"),
    Target("append_100_full", "append_100_full_eps", ">=", 0.5, "raw_100_full_eps"),
    Target("read_decode", "read_decode_eps", ">=", 0.8, "raw_read_decode_eps", was=1_000_000),
    Target("verify", "verify_eps", ">=", 0.65, "raw_read_hash_eps", was=500_000),
    Target("vs_eventsourcing", "append_1_full_eps", ">", 1, "eventsourcing_save_eps"),
]


def make_event(i: int) -> Any:
    from onward.events import StepCompleted

    return StepCompleted(
        index=i, name="fetch", result={"status": 200, "bytes": 1234}, duration=0.01
    )


def typical_events() -> list[Any]:
    """What a task's run appends, in the proportions of a run of a few steps."""
    from onward.events import (
        DecisionMade,
        StepCompleted,
        StepFailed,
        TaskClaimed,
        TaskSubmitted,
        TaskSucceeded,
    )

    return [
        TaskSubmitted(name="crawl", args=["https://example.org/docs/", 3], kwargs={"depth": 2}),
        TaskClaimed(worker="worker-7/41234/98765432/a1b2c3", lease_until=1.7e9, attempt=1),
        *[
            StepCompleted(index=i, name="fetch", result={"status": 200, "bytes": 1234 + i})
            for i in range(4)
        ],
        StepFailed(
            index=4,
            name="fetch",
            error_type="TimeoutError",
            message="read timed out after 30.0 s (https://api.example.com/v1/items?page=3)",
        ),
        DecisionMade(
            kind="task_completed",
            subject="7b8c9d0e1f2a3b4c",
            choice="continue",
            rule="default",
            inputs={"task": "crawl", "queued": 1},
        ),
        TaskSucceeded(result={"pages": 12, "links": 340}),
    ]


def redaction(rounds: int) -> dict[str, float]:
    """Microseconds per event to redact (and, the floor, to encode) typical events, and an
    error message holding a token; the best of ``rounds`` rounds."""
    import msgspec

    from onward.events import Redactor, StepFailed

    redactor = Redactor()
    encoder = msgspec.json.Encoder()
    typical = [encoder.encode(e) for e in typical_events()]
    token = "ghp_" + "k3Jx9Qa2Lm8ZpW4n" * 2 + "aB3d"
    secret = [
        encoder.encode(
            StepFailed(
                index=0,
                name="call_api",
                error_type="httpx.HTTPStatusError",
                message=f"401 Unauthorized for https://api.github.com/user (token {token})",
            )
        )
    ]

    def per_event(work: Callable[[], object], events: int, repeat: int = 2000) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(repeat):
                work()
            best = min(best, time.perf_counter() - started)
        return best / (repeat * events) * 1e6

    def redact_each(docs: list[bytes]) -> Callable[[], object]:
        return lambda: [redactor.redact_json_many([d]) for d in docs]

    def encode_each(events: list[Any]) -> Callable[[], object]:
        return lambda: [encoder.encode(e) for e in events]

    assert secret[0] != redactor.redact_json_many(secret)[0], "the token must be redacted"
    assert redactor.redact_json_many(typical) == typical, "typical events hold no secret"
    typical_events_ = typical_events()
    failed = [msgspec.json.decode(secret[0], type=StepFailed)]
    return {
        "redact_us": round(per_event(redact_each(typical), len(typical)), 3),
        "encode_us": round(per_event(encode_each(typical_events_), len(typical)), 3),
        "redact_secret_us": round(per_event(redact_each(secret), 1), 3),
        "encode_secret_us": round(per_event(encode_each(failed), 1), 3),
    }


def warmup_count(count: int) -> int:
    return max(10, int(count * WARMUP_FRACTION))


# -- onward --------------------------------------------------------------------------------


def onward_appends(path: Path, synchronous: str, commits: int, per_commit: int) -> float:
    """Seconds for ``commits`` appends of ``per_commit`` events each, after a warm-up."""
    from onward.events import open_log

    events = [make_event(i) for i in range(per_commit)]
    versions = [0] * STREAMS
    names = [f"task-{s:04d}" for s in range(STREAMS)]
    url = f"sqlite:///{path}" + ("" if synchronous == "full" else f"?synchronous={synchronous}")
    with open_log(url) as log:
        append = log.append

        def run(start: int, n: int) -> None:
            for i in range(start, start + n):
                s = i % STREAMS
                v = versions[s]
                append(names[s], events, expected_version=v)
                versions[s] = v + per_commit

        warm = warmup_count(commits)
        run(0, warm)
        t0 = time.perf_counter()
        run(warm, commits)
        return time.perf_counter() - t0


def build_log(path: Path, total: int) -> None:
    """A log of ``total`` events, written fast: 100 events per append, synchronous=normal."""
    from onward.events import open_log

    per_commit = 100
    events = [make_event(i) for i in range(per_commit)]
    streams = max(1, min(2_000, total // 1_000))
    versions = [0] * streams
    with open_log(f"sqlite:///{path}?synchronous=normal") as log:
        written = 0
        i = 0
        while written < total:
            s = i % streams
            n = min(per_commit, total - written)
            log.append(f"task-{s:05d}", events[:n], expected_version=versions[s])
            versions[s] += n
            written += n
            i += 1


def onward_read(path: Path, total: int) -> dict[str, float]:
    """Median seconds to read and decode the whole log, and to verify it, each beside its
    floor (a raw read that decodes, or hashes, the same rows), in turns."""
    from onward.events import open_log

    decode = _bench.decode_rows()
    seconds: dict[str, list[float]] = {"read": [], "verify": [], "decode": [], "hash": []}
    with open_log(f"sqlite:///{path}?synchronous=normal") as log:
        for _ in log.read(upto=min(total, 5_000)):  # warm-up
            pass

        def read() -> None:
            n = 0
            t0 = time.perf_counter()
            for _ in log.read():
                n += 1
            seconds["read"].append(time.perf_counter() - t0)
            if n != total:
                raise SystemExit(f"read {n} events from {path}, expected {total}")
            t0 = time.perf_counter()
            report = log.verify()
            seconds["verify"].append(time.perf_counter() - t0)
            if not report.ok or report.events != total:
                raise SystemExit(f"verify of {path} failed: {report}")

        def floors() -> None:
            seconds["decode"].append(_bench.raw_read(path, decode)[0])
            seconds["hash"].append(_bench.raw_read(path, hash_rows)[0] + integrity_check(path))

        for repeat in range(READ_REPEATS):
            for run in (floors, read) if repeat % 2 == 0 else (read, floors):
                run()
    return {name: statistics.median(times) for name, times in seconds.items()}


def integrity_check(path: Path) -> float:
    """Seconds of SQLite's own structure check of the log (part of verify, and its floor)."""
    db = sqlite3.connect(path)
    try:
        t0 = time.perf_counter()
        found = db.execute("PRAGMA integrity_check(100)").fetchall()
        elapsed = time.perf_counter() - t0
    finally:
        db.close()
    if found != [("ok",)]:
        raise SystemExit(f"{path}: SQLite's integrity check: {found}")
    return elapsed


def hash_rows(rows: list[Any]) -> None:
    """blake2b-128 of each row's stream, version, tag and state: the floor of verify."""
    blake2b = hashlib.blake2b
    for _, stream, version, topic, state in rows:
        blake2b(
            b"%s\x00%d\x00%s\x00%s" % (stream.encode(), version, topic.encode(), state),
            digest_size=16,
        ).hexdigest()


def record_size(path: Path) -> int:
    """The length of onward's stored state for the benchmark's event."""
    from onward.events import open_log

    with open_log(f"sqlite:///{path}?synchronous=normal") as log:
        log.append("task-0000", [make_event(42)], expected_version=0)
    db = sqlite3.connect(path)
    try:
        (size,) = db.execute("SELECT length(state) FROM stored_events").fetchone()
    finally:
        db.close()
    return int(size)


# -- raw sqlite3 -----------------------------------------------------------------------------


def raw_inserts(path: Path, synchronous: str, commits: int, per_commit: int, blob: bytes) -> float:
    """Seconds for ``commits`` transactions of ``per_commit`` rows each, after a warm-up."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute(
            "CREATE TABLE IF NOT EXISTS events (stream TEXT, version INTEGER, topic TEXT,"
            " state BLOB, PRIMARY KEY (stream, version))"
        )
        versions = [0] * STREAMS
        names = [f"task-{s:04d}" for s in range(STREAMS)]
        execute = db.execute
        insert = "INSERT INTO events VALUES (?, ?, ?, ?)"

        def run(start: int, n: int) -> None:
            for i in range(start, start + n):
                s = i % STREAMS
                stream = names[s]
                v = versions[s]
                execute("BEGIN")
                for k in range(1, per_commit + 1):
                    execute(insert, (stream, v + k, "StepCompleted", blob))
                execute("COMMIT")
                versions[s] = v + per_commit

        warm = warmup_count(commits)
        run(0, warm)
        t0 = time.perf_counter()
        run(warm, commits)
        return time.perf_counter() - t0
    finally:
        db.close()


# -- eventsourcing ---------------------------------------------------------------------------


class EsTask(Aggregate):
    """eventsourcing's counterpart of a task: an aggregate that records completed steps."""

    def __init__(self) -> None:
        self.steps = 0

    @event("StepCompleted")
    def complete_step(self, index: int, name: str, result: dict[str, int], duration: float) -> None:
        self.steps += 1


def eventsourcing_saves(path: Path, saves: int) -> float:
    """Seconds for ``saves`` calls of ``Application.save()``, one new event each."""
    app: Application = Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )
    try:
        tasks = [EsTask() for _ in range(STREAMS)]
        for task in tasks:  # creation events, and the warm-up
            app.save(task)
        result = {"status": 200, "bytes": 1234}

        def run(start: int, n: int) -> None:
            for i in range(start, start + n):
                task = tasks[i % STREAMS]
                task.complete_step(index=i, name="fetch", result=result, duration=0.01)
                app.save(task)

        warm = warmup_count(saves)
        run(0, warm)
        t0 = time.perf_counter()
        run(warm, saves)
        return time.perf_counter() - t0
    finally:
        app.close()


# -- the run ---------------------------------------------------------------------------------


#: A contender in an alternation: name, commits in all, events per commit, and a function
#: that runs some commits on a fresh file and returns the seconds they took.
Contender = tuple[str, int, int, Callable[[Path, int], float]]


def alternate(files: Files, label: str, contenders: list[Contender]) -> dict[str, float]:
    """Events/s of each contender, run in turns: A, B, C, then C, B, A, and so on.

    Each contender runs ``ROUNDS`` times, each time a share of its commits on a fresh file,
    so that a change in the disk's speed during the run falls on all of them alike.
    """
    seconds = dict.fromkeys((c[0] for c in contenders), 0.0)
    events = dict.fromkeys((c[0] for c in contenders), 0)
    for round_ in range(ROUNDS):
        order = contenders if round_ % 2 == 0 else contenders[::-1]
        for name, commits, per_commit, run in order:
            share = max(1, commits // ROUNDS)
            seconds[name] += run(files.new(f"{name}-{label}"), share)
            events[name] += share * per_commit
    return {name: events[name] / seconds[name] for name in seconds}


def appends(
    files: Files,
    label: str,
    *,
    synchronous: str,
    commits: int,
    per_commit: int,
    blob: bytes,
    others: tuple[Contender, ...] = (),
) -> dict[str, float]:
    """Onward's and raw sqlite3's events/s at one synchronous level and batch size.

    ``others`` join the alternation (eventsourcing, beside the single FULL appends).
    """

    def raw(path: Path, n: int) -> float:
        return raw_inserts(path, synchronous, n, per_commit, blob)

    def onward(path: Path, n: int) -> float:
        return onward_appends(path, synchronous, n, per_commit)

    return alternate(
        files,
        label,
        [("raw", commits, per_commit, raw), ("onward", commits, per_commit, onward), *others],
    )


def measure(directory: Path, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure beside its floor, the ratios, and the counts they were measured with."""
    total = args.events or (QUICK_EVENTS if args.quick else FULL_EVENTS)
    files = Files(directory)
    size = record_size(files.new("probe"))
    blob = (b'{"meta":{},"event":{"type":"StepCompleted","result":{}}}' + b"x" * size)[:size]
    progress(f"record size {size} bytes; streams {STREAMS}; writing in {directory}")

    progress(
        f"1 event per commit, FULL: {counts['single_full']} commits,"
        f" and {counts['saves']} eventsourcing saves"
    )
    full_1 = appends(
        files,
        "1-full",
        synchronous="full",
        commits=counts["single_full"],
        per_commit=1,
        blob=blob,
        others=(("eventsourcing", counts["saves"], 1, eventsourcing_saves),),
    )
    a1f, r1f, es = full_1["onward"], full_1["raw"], full_1["eventsourcing"]
    progress(f"100 events per commit, FULL: {counts['batches_full']} commits")
    full_100 = appends(
        files,
        "100-full",
        synchronous="full",
        commits=counts["batches_full"],
        per_commit=100,
        blob=blob,
    )
    a100, r100 = full_100["onward"], full_100["raw"]
    progress(f"1 event per commit, NORMAL: {counts['single_normal']} commits")
    normal_1 = appends(
        files,
        "1-normal",
        synchronous="normal",
        commits=counts["single_normal"],
        per_commit=1,
        blob=blob,
    )
    a1n, r1n = normal_1["onward"], normal_1["raw"]

    progress("redaction of typical events")
    redacted = redaction(rounds=3 if args.quick else 7)

    progress(f"building a log of {total} events")
    big = files.new("read")
    build_log(big, total)
    progress(f"reading and verifying it {READ_REPEATS} times, each beside its floor")
    read = onward_read(big, total)

    return {
        "append_1_full_eps": round(a1f),
        "raw_1_full_eps": round(r1f),
        "append_100_full_eps": round(a100),
        "raw_100_full_eps": round(r100),
        "append_1_normal_eps": round(a1n),
        "raw_1_normal_eps": round(r1n),
        "read_decode_eps": round(total / read["read"]),
        "raw_read_decode_eps": round(total / read["decode"]),
        "verify_eps": round(total / read["verify"]),
        "raw_read_hash_eps": round(total / read["hash"]),
        "eventsourcing_save_eps": round(es),
        **redacted,
        "append_1_full_ratio": round(a1f / r1f, 3),
        "append_100_full_ratio": round(a100 / r100, 3),
        "append_1_normal_ratio": round(a1n / r1n, 3),
        "vs_eventsourcing_ratio": round(a1f / es, 3),
        "counts": {
            "single_full_commits": (counts["single_full"] // ROUNDS) * ROUNDS,
            "batch_full_commits": (counts["batches_full"] // ROUNDS) * ROUNDS,
            "batch_size": 100,
            "single_normal_commits": (counts["single_normal"] // ROUNDS) * ROUNDS,
            "read_events": total,
            "eventsourcing_saves": (counts["saves"] // ROUNDS) * ROUNDS,
            "read_repeats": READ_REPEATS,
            "streams": STREAMS,
            "warmup_fraction": WARMUP_FRACTION,
        },
        "record_bytes": size,
    }


def details(result: dict[str, Any]) -> list[str]:
    """What the figures were measured on."""
    counts = result["counts"]
    return [
        f"{result['record_bytes']}-byte records, {counts['streams']} streams; "
        f"{counts['single_full_commits']:,} + {counts['batch_full_commits']:,}x100 FULL, "
        f"{counts['single_normal_commits']:,} NORMAL commits, "
        f"{counts['read_events']:,} events read {counts['read_repeats']} times, "
        f"{counts['eventsourcing_saves']:,} es saves"
    ]


def events_count(text: str) -> int:
    """``--events``: a positive number."""
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"--events must be positive, not {text!r}")
    return int(text)


def arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's own option: ``--events``."""
    parser.add_argument(
        "--events", type=events_count, help="events in the log that is read and verified"
    )


#: The environment's figures also stand at the top level, where this benchmark had them.
FLAT_ENVIRONMENT = {
    "sqlite_version": "sqlite_version",
    "python": "python",
    "filesystem": "filesystem",
    "cpus": "cpus",
    "load_1min_before": "load_average_at_start",
    "load_1min_after": "load_average_at_end",
}
BENCHMARK = _bench.Benchmark(
    __doc__,
    FULL_COUNTS,
    QUICK_COUNTS,
    measure,
    FIGURES,
    TARGETS,
    details,
    flat_environment=FLAT_ENVIRONMENT,
    arguments=arguments,
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
