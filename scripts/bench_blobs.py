"""Benchmark of large step results: a step returning 2 MiB, stored as a blob, beside raw sqlite3.

What it measures, in one run (fresh SQLite files in one directory, ``synchronous=FULL``):

* ``blob_step_ms``: one task of N steps, each returning a different 2 MiB text (a file's
  content, as a coding agent reads it): wall time of ``Engine.run()`` / N. Each step's
  outcome is one append that stores the result as a blob and the record that references it,
  in one transaction.
* ``raw_write_ms``: the floor: raw sqlite3 on the same file system, WAL, FULL, the same 2 MiB
  (the result's JSON) in one row per INSERT + COMMIT.
* ``blob_read_ms``: reading one of those steps back as replay does (``read_stream`` of the
  task, the blob joined and checked against its digest, the record decoded) / N, beside
  ``raw_read_ms``, a raw SELECT of the same bytes.
* ``value_encode_ms``: of ``blob_step_ms``, what encoding one result costs before the log sees
  it (``encode_value``, secrets redaction included), measured alone.

Targets: blob_step_ms <= 8 x raw_write_ms (most of it is redaction: a secret scan of 2 MiB
of text, by the engine and again by the log); blob_read_ms <= 4 x raw_read_ms.

    .venv/bin/python scripts/bench_blobs.py --json
"""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import _bench
from _bench import Figure, Files, Target

from onward import Engine
from onward.events import Redactor, StepCompleted
from onward.events.values import encode_value
from onward.projections import task_stream

FULL: dict[str, int] = {"steps": 20, "raw_rows": 20}
QUICK: dict[str, int] = {"steps": 5, "raw_rows": 5}

SIZE = 2 * 1024 * 1024
RAW_WRITE = "raw sqlite3, 2 MiB row + commit"
RAW_READ = "raw sqlite3, SELECT of 2 MiB"

FIGURES = [
    Figure("step with a 2 MiB result", "blob_step_ms", "ms", "raw_write_ms", RAW_WRITE),
    Figure("read a 2 MiB result back", "blob_read_ms", "ms", "raw_read_ms", RAW_READ),
    Figure("encode + redact one result", "value_encode_ms", "ms", "raw_write_ms", RAW_WRITE),
]
TARGETS = [
    Target("blob_write", "blob_step_ms", "<=", 8, "raw_write_ms"),
    Target("blob_read", "blob_read_ms", "<=", 4, "raw_read_ms"),
]


def value(index: int) -> str:
    """About 2 MiB of source-like text, different for each step."""
    line = f"    def handler_{index}(request):  return respond(request.body, status=200)\n"
    return (line * (SIZE // len(line) + 1))[:SIZE]


def blob_steps(path: Path, steps: int) -> tuple[float, float]:
    """Seconds per step of a task whose steps return 2 MiB each, and per step read back."""
    with Engine.open(f"sqlite:///{path}", session="bench") as engine:

        @engine.step(name="read_file")
        def read_file(i: int) -> str:
            return value(i)

        @engine.task(name="review")
        def review(n: int) -> int:
            return sum(len(read_file(i)) for i in range(n))

        task_id = engine.submit(review, steps)
        t0 = time.perf_counter()
        summary = engine.run()
        written = time.perf_counter() - t0
        if summary.steps_run != steps or engine.result(task_id) != steps * SIZE:
            raise SystemExit(f"the blob task did not run {steps} steps: {summary}")
        if len(engine.log.blob_digests()) != steps:
            raise SystemExit("the results were not stored as blobs")
        t0 = time.perf_counter()
        history = engine.log.read_stream(task_stream(task_id))
        read = time.perf_counter() - t0
        results = [r.event.result for r in history if isinstance(r.event, StepCompleted)]
        if results != [value(i) for i in range(steps)]:
            raise SystemExit("a result did not read back as it was returned")
    return written / steps, read / steps


def raw_rows(path: Path, rows: int) -> tuple[float, float]:
    """Raw sqlite3, WAL, FULL: seconds per 2 MiB row written (INSERT + COMMIT), and read."""
    import msgspec

    payloads = [msgspec.json.encode(value(i)) for i in range(rows)]
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE blobs (digest TEXT PRIMARY KEY, data BLOB NOT NULL)")
        t0 = time.perf_counter()
        for i, payload in enumerate(payloads):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO blobs VALUES (?, ?)", (str(i), payload))
            db.execute("COMMIT")
        written = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(rows):
            db.execute("SELECT data FROM blobs WHERE digest = ?", (str(i),)).fetchone()
        read = time.perf_counter() - t0
    finally:
        db.close()
    return written / rows, read / rows


def encode_cost(rows: int) -> float:
    """Seconds to encode one result as the engine does, redaction included."""
    redactor = Redactor()
    texts = [value(i) for i in range(rows)]
    t0 = time.perf_counter()
    for text in texts:
        encode_value(text, what="bench", redactor=redactor)
    return (time.perf_counter() - t0) / rows


def measure(directory: Path, counts: dict[str, int], args: Any) -> dict[str, Any]:
    """Every figure, in one run."""
    del args
    files = Files(directory)
    _bench.progress("raw sqlite3: 2 MiB rows")
    raw_write, raw_read = raw_rows(files.new("raw"), counts["raw_rows"])
    _bench.progress("onward: steps with 2 MiB results")
    step, read = blob_steps(files.new("blobs"), counts["steps"])
    _bench.progress("encoding alone")
    encode = encode_cost(counts["raw_rows"])
    return {
        "blob_step_ms": round(step * 1000, 2),
        "raw_write_ms": round(raw_write * 1000, 2),
        "blob_read_ms": round(read * 1000, 2),
        "raw_read_ms": round(raw_read * 1000, 2),
        "value_encode_ms": round(encode * 1000, 2),
        "details": {"result_bytes": SIZE},
        "counts": counts,
    }


def details(result: dict[str, Any]) -> list[str]:
    """What one result weighs."""
    return [f"each result: {result.get('details', {}).get('result_bytes')} bytes of text"]


BENCHMARK = _bench.Benchmark(__doc__, FULL, QUICK, measure, FIGURES, TARGETS, details)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
