"""Benchmark of onward's self-healing: fingerprints, fix decisions, protected steps, auto-fixes.

What it measures, in one run (SQLite files are fresh, in one directory):

* ``fingerprint_us``: ``onward.healing.signature.fingerprint(exc)`` per call, for a realistic
exception:
  5 in-app frames on its traceback (raised 4 calls deep), its message holding numbers, a path
  and a uuid, with a ``__cause__`` (a ``KeyError``). Raised once, fingerprinted many times
  (the per-code-object frame cache is warm, as in a long session, and so are the caches of
  normalised messages and of signatures: the same failure met again); median of the repeats.
  Its floor, ``naive_fingerprint_us``: the exception's type, message, frames (file and
  function) and causes joined and hashed with blake2b, nothing normalised or left out, in turns
  with it. ``fingerprint_raise_us`` under ``details`` includes raising and catching it each
  time, each time with other values in its message (so its normalisation is not cached);
  its floor, ``raise_us``, raises and catches it alone.
* ``known_error_decision_us`` / ``known_error_decision_p99_us``: what
  :meth:`onward.healing.healer.Healer._remedy` does for an error already seen, without appending:
  ``fingerprint(exc)``, then ``errors.get(sig)``, ``errors.fix_stats(sig)`` (as ``FixStats``)
  and ``errors.learned(sig)`` on the engine's error-learning DB, then
  ``healer.fixes.candidates(exc, call, ...)`` and ``fix.apply(exc, call)`` of the first
  candidate that applies. The engine is opened on ``memory://`` and the workload below (7 error
  kinds) runs on it first, so that each signature has a fix history; the exceptions and the
  ``StepCall`` are the very ones the engine handled (recorded from ``Healer.on_failure``).
  Each sample times one decision; the kinds take turns; p50 and p99 of all samples, each kind's
  and each stage's p50 under ``details``. A fix with a side effect (creating a directory) is
  undone, untimed, after each sample; ``known_error_decision_p99_without_mkdir_us`` leaves
  that kind out (its ``mkdir`` is a file-system write, 100-250 µs here);
  ``known_error_choice_us`` / ``known_error_choice_p99_us`` (under ``details``) time the choice
  alone: the fingerprint, the lookup and the candidates, without ``apply``. Their floor,
  ``known_error_naive_fingerprint_us`` (p50; p99 under ``details``): the naive fingerprint
  above of the same exceptions, each sample timed the same way right after each decision.
* ``protected_step_ratio``: a successful durable step guarded by healing (a retry policy,
  ``@engine.step(breaker="api")``) over a plain durable step (``@engine.step()`` on
  ``Engine.open(..., healing=False)``), both on SQLite files in one directory at
  ``synchronous=FULL`` (the default): one task of 1,000 steps after a 50-step warm-up, time of
  ``onward.runtime.run()`` / steps. Plain and protected alternate (plain, protected, protected,
  plain, ...) on fresh files, after one untimed run of each; ratio of the medians.
  ``protected_step_p50_ratio`` under ``details`` is the ratio of the medians of the intervals
  between consecutive steps, which bursts of other I/O barely move.
* ``onward_protection_us``: the same two paths on ``memory://`` (no fsync: the engine's own
  CPU), protected minus plain per step, median of alternating rounds.
* ``tenacity_us`` / ``pybreaker_us``: the peers' overhead on a successful call, as references:
  ``tenacity.retry(stop=stop_after_attempt(3), wait=wait_exponential_jitter())(f)()`` and
  ``pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)(f)()``, each decorated once, minus a
  bare ``f()``; median of the repeats (decorating on every call is under ``details``). Their
  floor and ``onward_protection_us``'s: ``bare_call_us`` (under ``details``), the bare ``f()``.
* ``seen_error_autofix_rate``: a seeded workload of real errors run through the real engine on
  an SQLite file (``synchronous=FULL``) with an injected clock and sleep (no real sleeping):
  200 tasks (70 with ``--quick``), one error each, over 7 kinds with varying values: a cp1252
  file read as UTF-8; SQLite's "database is locked" (another connection holds ``BEGIN
  IMMEDIATE`` when the step writes with ``timeout=0``; it commits while the engine sleeps);
  JSON inside log lines; Python inside Markdown fences; a config without a key the step
  declares a default for; a file written into a missing directory; a ``TimeoutError`` from a
  call with a ``timeout`` parameter. Each task is submitted and run to its end before the next.
  Then the log is folded in order through a fresh ``onward.projections.errors.ErrorProjection``: an
  error is *seen* when, at its first ``StepFailed``, its signature already has a ``best_fix``
  (a fix with at least one success); it is *fixed automatically* when its step then succeeded
  through a fix (``FixSucceeded``) with no ``RetryScheduled`` and no give-up decision. The rate
  is fixed / seen; ``first_sight_fix_rate`` is the same for the others; per kind under
  ``details``.

Every figure is printed beside its floor (``floors`` in the JSON). Targets (``targets``):
protected_step_us <= 1.15 x plain_step_us (``protected_step_ratio``); known_error_decision_us <=
23 x known_error_naive_fingerprint_us (it was 50 µs); and, absolute, a share and not a time:
seen_error_autofix_rate >= 0.95; and, absolute, the performance issue's: known_error_decision_us
<= 20, known_error_decision_p99_us <= 50, fingerprint_us <= 10. Quote ratios, not times.

Run it from the repository root, with the peers installed (``pip install -e '.[bench]'``)::

    .venv/bin/python scripts/bench_healing.py             # a table, about 25-60 seconds
    .venv/bin/python scripts/bench_healing.py --quick     # a table, about 10-15 seconds
    .venv/bin/python scripts/bench_healing.py --json --db-dir /tmp/bench-healing
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import random
import sqlite3
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onward import Engine

import _bench
from _bench import FakeClock, Figure, Files, Target, percentile, progress

ROOT = Path(__file__).resolve().parent.parent

WARMUP_STEPS = 50
SEED = 20_240_601

FULL: dict[str, int] = {
    "fingerprint_calls": 50_000,
    "fingerprint_repeats": 5,
    "decision_samples_per_kind": 5_000,
    "decision_history_per_kind": 5,
    "steps": 1_000,
    "step_rounds": 20,
    "memory_steps": 5_000,
    "memory_rounds": 10,
    "peer_calls": 100_000,
    "peer_repeats": 5,
    "workload_tasks": 200,
}
QUICK: dict[str, int] = {
    "fingerprint_calls": 20_000,
    "fingerprint_repeats": 3,
    "decision_samples_per_kind": 1_500,
    "decision_history_per_kind": 3,
    "steps": 1_000,
    "step_rounds": 8,
    "memory_steps": 3_000,
    "memory_rounds": 6,
    "peer_calls": 50_000,
    "peer_repeats": 3,
    "workload_tasks": 70,
}

BARE = "bare call f()"
FIGURES = [
    Figure("fingerprint", "fingerprint_us", "us", "naive_fingerprint_us", "naive fingerprint"),
    Figure(
        "fingerprint, with the raise",
        "details.fingerprint_raise_us",
        "us",
        "details.raise_us",
        "raise and catch alone",
    ),
    Figure(
        "known-error decision p50",
        "known_error_decision_us",
        "us",
        "known_error_naive_fingerprint_us",
        "naive fingerprint p50",
    ),
    Figure(
        "known-error decision p50, own time",
        "known_error_decision_us",
        "us",
        why="the decision's own time",
    ),
    Figure(
        "known-error decision p99",
        "known_error_decision_p99_us",
        "us",
        "details.known_error_naive_fingerprint_p99_us",
        "naive fingerprint p99",
    ),
    Figure(
        "known-error p99, no mkdir",
        "details.known_error_decision_p99_without_mkdir_us",
        "us",
        "details.known_error_naive_fingerprint_p99_us",
        "naive fingerprint p99",
    ),
    Figure(
        "known-error choice p99 (no apply)",
        "details.known_error_choice_p99_us",
        "us",
        "details.known_error_naive_fingerprint_p99_us",
        "naive fingerprint p99",
    ),
    Figure(
        "protected step, SQLite FULL",
        "details.protected_step_us",
        "us",
        "details.plain_step_us",
        "plain step",
    ),
    Figure(
        "protected step, p50 interval",
        "details.protected_step_p50_us",
        "us",
        "details.plain_step_p50_us",
        "plain step, p50 interval",
    ),
    Figure(
        "protected step, memory://",
        "details.memory_protected_step_us",
        "us",
        "details.memory_plain_step_us",
        "plain step, memory://",
    ),
    Figure("protection per step", "onward_protection_us", "us", "details.bare_call_us", BARE),
    Figure("tenacity retry, per call", "tenacity_us", "us", "details.bare_call_us", BARE),
    Figure("pybreaker, per call", "pybreaker_us", "us", "details.bare_call_us", BARE),
    Figure("seen errors fixed", "seen_error_autofix_rate", "share", why="a share, not a time"),
    Figure("first sightings fixed", "first_sight_fix_rate", "share", why="a share, not a time"),
]
TARGETS = [
    Target("protected_step", "details.protected_step_us", "<=", 1.15, "details.plain_step_us"),
    Target(
        "seen_error_autofix",
        "seen_error_autofix_rate",
        ">=",
        0.95,
        why="a share of errors, not a time",
    ),
    Target(
        "known_error_decision",
        "known_error_decision_us",
        "<=",
        23,
        "known_error_naive_fingerprint_us",
        was=50,
    ),
    # The performance issue's absolute targets: an agent meets a known error, the decision
    # must cost about what a rule's does.
    Target(
        "known_error_decision_abs",
        "known_error_decision_us",
        "<=",
        20,
        why="the decision's own time, the chosen fix's apply() included",
    ),
    Target(
        "known_error_decision_p99",
        "known_error_decision_p99_us",
        "<=",
        50,
        why="the decision's own time, the chosen fix's apply() included",
    ),
    Target("fingerprint", "fingerprint_us", "<=", 10, why="a signature's own time"),
]


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 2)


# -- the fingerprint -------------------------------------------------------------------------


class OrderRejected(Exception):
    """The application's own error, as a step would raise it."""


def _check_fields(order: dict[str, Any], n: int, customer: str) -> None:
    try:
        order["fields"]
    except KeyError as exc:
        raise OrderRejected(
            f"order {n} for customer {customer} rejected at "
            f"/srv/data/orders/2024/{n}.json: expected 3 fields, got {len(order)} "
            f"(after 1.5 s, attempt 2 of 5)"
        ) from exc


def _validate_order(order: dict[str, Any], n: int, customer: str) -> None:
    _check_fields(order, n, customer)


def _load_order(n: int, customer: str) -> None:
    _validate_order({"id": n, "total": 12.5}, n, customer)


def _import_batch(n: int, customer: str) -> None:
    _load_order(n, customer)


def realistic_exception(n: int = 4711) -> BaseException:
    """An OrderRejected raised through 5 in-app frames (this one included), caused by a
    KeyError."""
    try:
        _import_batch(n, str(uuid.UUID(int=n * 7919)))
    except OrderRejected as exc:
        return exc
    raise AssertionError("_import_batch did not raise")


def naive_fingerprint(exc: BaseException) -> str:
    """The floor of a fingerprint: the exception's type, message, frames (file and function)
    and causes, joined and hashed with blake2b; nothing normalised, nothing left out."""
    parts = [type(exc).__qualname__, str(exc)]
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        parts.append(f"{code.co_filename}:{code.co_name}")
        tb = tb.tb_next
    cause = exc.__cause__
    while cause is not None:
        parts.append(f"{type(cause).__qualname__}: {cause}")
        cause = cause.__cause__
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).hexdigest()


def fingerprints(counts: dict[str, int]) -> dict[str, Any]:
    """Per-call cost of fingerprint(exc), without and with the raise, each beside its floor."""
    from onward import fingerprint

    exc = realistic_exception()
    signature = fingerprint(exc)
    if len(signature.frames) != 5 or not signature.causes:
        raise SystemExit(f"the benchmark's exception is not as described: {signature}")
    calls = counts["fingerprint_calls"]
    times: dict[str, list[float]] = {"alone": [], "naive": [], "raised": [], "raise": []}

    def timed(name: str, n: int, call: Callable[[int], object]) -> None:
        t0 = time.perf_counter()
        for i in range(n):
            call(i)
        times[name].append((time.perf_counter() - t0) / n)

    for _ in range(counts["fingerprint_repeats"]):
        timed("alone", calls, lambda i: fingerprint(exc))
        timed("naive", calls, lambda i: naive_fingerprint(exc))
        timed("raised", calls // 4, lambda i: fingerprint(realistic_exception(i)))
        timed("raise", calls // 4, realistic_exception)
    return {
        "fingerprint_us": _us(statistics.median(times["alone"])),
        "naive_fingerprint_us": _us(statistics.median(times["naive"])),
        "fingerprint_raise_us": _us(statistics.median(times["raised"])),
        "raise_us": _us(statistics.median(times["raise"])),
        "fingerprint_samples_us": [_us(s) for s in times["alone"]],
        "fingerprint_example": str(signature),
    }


# -- the workload of real errors -------------------------------------------------------------

KINDS = (
    "undecodable_file",
    "database_locked",
    "json_in_log_noise",
    "code_in_markdown",
    "missing_config_key",
    "missing_parent_directory",
    "timeout",
)

_NAMES = ("café", "naïve", "Zoë", "crème brûlée", "señor", "Ångström", "déjà vu", "Müller")
_PROSE = (
    "Here is the code you asked for:",
    "Sure! Below is the function.",
    "Certainly, this computes the area",
    "The following snippet should work",
    "Here's the fixed version:",
)
_CONFIG_DEFAULTS: dict[str, Any] = {"retries": 3, "timeout": 30.0, "pool_size": 4}


class Workload:
    """Seven kinds of real errors, each a task with one step, and what makes them happen.

    Args:
        directory: where its files go (the files it reads and writes, the app database).
        clock: the engine's injected clock (the timeout kind advances it).
    """

    def __init__(self, directory: Path, clock: FakeClock) -> None:
        self.directory = directory
        self.clock = clock
        self.app_db = directory / "app.db"
        with sqlite3.connect(self.app_db) as db:
            db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value INTEGER)")
        db.close()
        self.latency: dict[str, float] = {}
        self.tasks: dict[str, Callable[..., Any]] = {}

    def register(self, engine: Engine) -> None:
        """Register the steps and tasks on an engine."""
        clock = self.clock
        latency = self.latency

        @engine.step()
        def read_notes(path: str, encoding: str = "utf-8") -> str:
            return Path(path).read_text(encoding=encoding)

        @engine.task(name="undecodable_file")
        def summarise_notes(path: str) -> int:
            return len(read_notes(path))

        @engine.step()
        def save_result(db: str, key: str, value: int) -> int:
            conn = sqlite3.connect(db, timeout=0)
            try:
                with conn:
                    conn.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (key, value))
            finally:
                conn.close()
            return value

        @engine.task(name="database_locked")
        def record_result(db: str, key: str, value: int) -> int:
            return save_result(db, key, value)

        @engine.step()
        def parse_report(text: str) -> dict[str, Any]:
            report: dict[str, Any] = json.loads(text)
            return report

        @engine.task(name="json_in_log_noise")
        def ingest_report(text: str) -> int:
            return len(parse_report(text)["rows"])

        @engine.step()
        def run_snippet(code: str) -> int:
            namespace: dict[str, Any] = {}
            exec(compile(code, "<snippet>", "exec"), namespace)
            return int(namespace["result"])

        @engine.task(name="code_in_markdown")
        def evaluate_snippet(code: str) -> int:
            return run_snippet(code)

        @engine.step(hints={"defaults": _CONFIG_DEFAULTS})
        def connect_service(config: dict[str, Any]) -> str:
            return (
                f"{config['host']}:{config['port']} retries={config['retries']} "
                f"timeout={config['timeout']} pool={config['pool_size']}"
            )

        @engine.task(name="missing_config_key")
        def open_service(config: dict[str, Any]) -> str:
            return connect_service(config)

        @engine.step()
        def write_report(path: str, text: str) -> int:
            return Path(path).write_text(text, encoding="utf-8")

        @engine.task(name="missing_parent_directory")
        def export_report(path: str, text: str) -> int:
            return write_report(path, text)

        @engine.step()
        def fetch_page(url: str, timeout: float = 5.0) -> int:
            needed = latency[url]
            if needed > timeout:
                clock.advance(timeout)
                host = url.split("/")[2]
                raise TimeoutError(
                    f"HTTPSConnectionPool(host={host!r}, port=443): Read timed out. "
                    f"(read timeout={timeout})"
                )
            clock.advance(needed)
            return 200

        @engine.task(name="timeout")
        def crawl(url: str) -> int:
            return fetch_page(url)

        self.tasks = {
            "undecodable_file": summarise_notes,
            "database_locked": record_result,
            "json_in_log_noise": ingest_report,
            "code_in_markdown": evaluate_snippet,
            "missing_config_key": open_service,
            "missing_parent_directory": export_report,
            "timeout": crawl,
        }

    def plan(self, count: int, seed: int, *, per_kind: int | None = None) -> list[tuple[str, int]]:
        """The tasks to run: (kind, n), shuffled by ``seed`` (or ``per_kind`` of each, in turn)."""
        if per_kind is not None:
            return [(kind, n) for n in range(per_kind) for kind in KINDS]
        plan = [(KINDS[i % len(KINDS)], i) for i in range(count)]
        random.Random(seed).shuffle(plan)
        return plan

    def submit(self, engine: Engine, kind: str, n: int, rng: random.Random) -> str:
        """Prepare what makes task ``n`` of ``kind`` fail once, and submit it."""
        task = self.tasks[kind]
        if kind == "undecodable_file":
            path = self.directory / "notes" / f"{uuid.UUID(int=rng.getrandbits(128))}.txt"
            path.parent.mkdir(exist_ok=True)
            words = rng.sample(_NAMES, 3)
            text = f"{words[0]} ordered {rng.randint(1, 999)} x {words[1]} for {words[2]}"
            if rng.random() < 0.3:  # a byte that cannot start a character comes first
                text = f"€{rng.randint(2, 90)}: {text}"
            path.write_bytes(text.encode("cp1252"))
            return str(engine.submit(task, str(path)))
        if kind == "database_locked":
            holder = sqlite3.connect(self.app_db, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
            holder.execute(
                "INSERT OR REPLACE INTO results VALUES (?, ?)", (f"holder-{n}", rng.randint(0, 9))
            )

            def release() -> None:
                holder.execute("COMMIT")
                holder.close()

            self.clock.meanwhile(release)
            return str(engine.submit(task, str(self.app_db), f"job-{n}", rng.randint(1, 10**6)))
        if kind == "json_in_log_noise":
            rows = [{"id": rng.randint(1, 10**5), "score": rng.random()} for _ in range(3)]
            text = (
                f"INFO GET https://api.example.com/v2/reports/{rng.randint(1, 10**6)} -> 200 "
                f"in {rng.randint(5, 900)} ms\n"
                + json.dumps({"rows": rows, "page": rng.randint(1, 50)})
                + f"\nINFO parsed {len(rows)} rows at 2024-06-{rng.randint(1, 28):02d}T12:00:00Z"
            )
            return str(engine.submit(task, text))
        if kind == "code_in_markdown":
            w, h = rng.randint(1, 99), rng.randint(1, 99)
            code = (
                f"{rng.choice(_PROSE)}\n\n```python\ndef area(w, h):\n    return w * h\n\n"
                f"result = area({w}, {h})\n```\n\nIt multiplies {w} by {h}."
            )
            return str(engine.submit(task, code))
        if kind == "missing_config_key":
            config: dict[str, Any] = {"host": f"db{n}.internal", "port": 5432 + n % 7}
            missing = rng.choice(sorted(_CONFIG_DEFAULTS))
            config.update({k: v for k, v in _CONFIG_DEFAULTS.items() if k != missing})
            return str(engine.submit(task, config))
        if kind == "missing_parent_directory":
            path = (
                self.directory
                / "exports"
                / f"2024-{rng.randint(1, 12):02d}"
                / str(uuid.UUID(int=rng.getrandbits(128)))
                / f"report-{n}.txt"
            )
            return str(engine.submit(task, str(path), f"report {n}: {rng.random():.4f}\n"))
        if kind == "timeout":
            url = f"https://shop{rng.randint(1, 40)}.example.com/items/{n}?page={rng.randint(1, 9)}"
            self.latency[url] = rng.uniform(5.5, 9.5)  # more than the 5 s timeout, less than 10
            return str(engine.submit(task, url))
        raise ValueError(f"unknown kind {kind!r}")


def fold_outcomes(log: Any, kind_of: dict[str, str]) -> list[dict[str, Any]]:
    """Each task's error, read back from the log in order through a fresh error DB.

    Returns, per task that failed: its kind, its first signature, whether that signature had a
    best fix (at least one success) before, and whether its step was fixed automatically.
    """
    from onward.events import (
        DecisionMade,
        FixSucceeded,
        RetryScheduled,
        StepCompleted,
        StepFailed,
        TaskSucceeded,
    )
    from onward.projections.errors import ErrorProjection

    errors = ErrorProjection()
    tasks: dict[str, dict[str, Any]] = {}
    for r in log.read():
        event = r.event
        task = tasks.get(r.stream)
        if isinstance(event, StepFailed) and event.signature and task is None:
            view = errors.signatures.get(event.signature)
            tasks[r.stream] = {
                "task": r.stream,
                "kind": kind_of.get(r.stream, "?"),
                "signature": event.signature,
                "seen": view is not None and view.best_fix is not None,
                "fix": False,
                "retry": False,
                "give_up": False,
                "completed": False,
                "succeeded": False,
            }
        elif task is not None:
            if isinstance(event, FixSucceeded):
                task["fix"] = True
            elif isinstance(event, RetryScheduled):
                task["retry"] = True
            elif isinstance(event, DecisionMade) and event.kind == "give_up":
                task["give_up"] = True
            elif isinstance(event, StepCompleted):
                task["completed"] = True
            elif isinstance(event, TaskSucceeded):
                task["succeeded"] = True
        errors.apply(r)
    for task in tasks.values():
        task["fixed"] = (
            task["fix"] and task["completed"] and not task["retry"] and not task["give_up"]
        )
    return list(tasks.values())


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def autofix(files: Files, counts: dict[str, int]) -> dict[str, Any]:
    """Run the seeded workload through the real engine on SQLite; fold the outcomes."""
    from onward import Engine
    from onward.projections import task_stream

    clock = FakeClock()
    directory = files.folder("workload")
    workload = Workload(directory, clock)
    url = f"sqlite:///{files.new('workload')}"
    plan = workload.plan(counts["workload_tasks"], SEED)
    rng = random.Random(SEED + 1)
    kind_of: dict[str, str] = {}
    progress(f"workload: {len(plan)} tasks over {len(KINDS)} error kinds, on SQLite")
    t0 = time.perf_counter()
    with Engine.open(url, session="workload", clock=clock, sleep=clock.sleep, seed=SEED) as engine:
        workload.register(engine)
        failed = 0
        for kind, n in plan:
            task_id = workload.submit(engine, kind, n, rng)
            kind_of[task_stream(task_id)] = kind
            summary = engine.run()
            failed += summary.failed
        outcomes = fold_outcomes(engine.log, kind_of)
        signatures = len(engine.refresh().errors.signatures)
    elapsed = time.perf_counter() - t0

    seen = [o for o in outcomes if o["seen"]]
    first = [o for o in outcomes if not o["seen"]]
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [o for o in outcomes if o["kind"] == kind]
        mine_seen = [o for o in mine if o["seen"]]
        mine_first = [o for o in mine if not o["seen"]]
        per_kind[kind] = {
            "errors": len(mine),
            "signatures": len({o["signature"] for o in mine}),
            "seen": len(mine_seen),
            "seen_fixed": sum(o["fixed"] for o in mine_seen),
            "first_sight": len(mine_first),
            "first_sight_fixed": sum(o["fixed"] for o in mine_first),
            "retried": sum(o["retry"] for o in mine),
            "gave_up": sum(o["give_up"] for o in mine),
        }
    return {
        "seen_error_autofix_rate": _rate(sum(o["fixed"] for o in seen), len(seen)),
        "first_sight_fix_rate": _rate(sum(o["fixed"] for o in first), len(first)),
        "errors": len(outcomes),
        "seen_errors": len(seen),
        "first_sight_errors": len(first),
        "tasks": len(plan),
        "tasks_failed": failed,
        "tasks_without_error": len(plan) - len(outcomes),
        "signatures": signatures,
        "per_kind": per_kind,
        "workload_s": round(elapsed, 2),
    }


# -- the decision for a known error ----------------------------------------------------------


def decisions(files: Files, counts: dict[str, int]) -> dict[str, Any]:
    """Time fingerprint + error-DB lookup + fix choice + apply for errors with a fix history."""
    from onward import Engine, FixStats, StepCall, fingerprint

    clock = FakeClock()
    workload = Workload(files.folder("decisions"), clock)
    rng = random.Random(SEED + 2)
    handled: dict[str, tuple[BaseException, StepCall]] = {}
    with Engine.open("memory://", session="decisions", clock=clock, sleep=clock.sleep) as engine:
        workload.register(engine)
        healer = engine.healer
        assert healer is not None
        on_failure = healer.on_failure
        current: list[str] = [""]

        def recording(run: Any, step: Any, index: int, attempt: int, call: StepCall,
                      exc: Exception, *rest: Any) -> Any:  # fmt: skip
            handled[current[0]] = (exc, call)
            return on_failure(run, step, index, attempt, call, exc, *rest)

        healer.on_failure = recording  # type: ignore[method-assign]
        for kind, n in workload.plan(0, SEED, per_kind=counts["decision_history_per_kind"]):
            current[0] = kind
            workload.submit(engine, kind, n, rng)
            engine.run()
        healer.on_failure = on_failure  # type: ignore[method-assign]
        errors = engine.refresh().errors
        fixes = healer.fixes

        def decide(exc: BaseException, call: StepCall) -> tuple[str, list[int]]:
            t0 = time.perf_counter_ns()
            sig = fingerprint(exc).id
            t1 = time.perf_counter_ns()
            errors.get(sig)
            stats = {
                name: FixStats(attempts=r.attempts, successes=r.successes)
                for name, r in errors.fix_stats(sig).items()
            }
            learned = errors.learned(sig)
            t2 = time.perf_counter_ns()
            candidates = fixes.candidates(exc, call, signature=sig, stats=stats, learned=learned)
            t3 = time.perf_counter_ns()
            chosen = ""
            for fix in candidates:
                try:
                    remedy = fix.apply(exc, call)
                except Exception:
                    continue
                if remedy is not None:
                    chosen = fix.name
                    break
            t4 = time.perf_counter_ns()
            return chosen, [t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3]

        def undo(exc: BaseException) -> None:
            # create-missing-parent-directory made the directory: remove it for the next sample
            filename = getattr(exc, "filename", None)
            if isinstance(exc, FileNotFoundError) and filename:
                Path(filename).unlink(missing_ok=True)
                parent = Path(filename).parent
                if parent.exists():
                    parent.rmdir()

        for exc, _ in handled.values():
            undo(exc)
        expected: dict[str, str] = {}
        for kind, (exc, call) in handled.items():
            view = errors.get(fingerprint(exc).id)
            if view.best_fix is None:
                raise SystemExit(f"decisions: {kind}'s signature has no fix history: {view}")
            chosen, _ = decide(exc, call)
            undo(exc)
            if chosen != view.best_fix:
                raise SystemExit(f"decisions: {kind} chose {chosen!r}, not {view.best_fix!r}")
            expected[kind] = chosen

        samples: dict[str, list[list[int]]] = {kind: [] for kind in handled}
        order = list(handled.items())
        gc.collect()
        clock = time.perf_counter_ns
        for _ in range(counts["decision_samples_per_kind"]):
            for kind, (exc, call) in order:
                chosen, times = decide(exc, call)
                undo(exc)
                t0 = clock()  # the floor: the naive fingerprint of the same exception
                naive_fingerprint(exc)
                times.append(clock() - t0)
                samples[kind].append(times)
                if chosen != expected[kind]:
                    raise SystemExit(f"decisions: {kind} chose {chosen!r} this time")

    pooled = sorted(t[0] for mine in samples.values() for t in mine)
    stages = ("fingerprint", "lookup", "candidates", "apply")
    per_kind: dict[str, Any] = {}
    for kind, mine in samples.items():
        totals = sorted(t[0] for t in mine)
        per_kind[kind] = {
            "fix": expected[kind],
            "p50_us": round(statistics.median(totals) / 1e3, 2),
            "p99_us": round(percentile(totals, 0.99) / 1e3, 2),
            "naive_fingerprint_p50_us": round(statistics.median(t[5] for t in mine) / 1e3, 2),
            **{
                f"{stage}_p50_us": round(statistics.median(t[i + 1] for t in mine) / 1e3, 2)
                for i, stage in enumerate(stages)
            },
        }
    everything = [t for mine in samples.values() for t in mine]
    # Creating a directory is a file-system write, not a decision: the p99 without that kind.
    pure = sorted(
        t[0]
        for kind, mine in samples.items()
        if expected[kind] != "create-missing-parent-directory"
        for t in mine
    )
    floor = sorted(t[5] for mine in samples.values() for t in mine)
    # The choice alone: fingerprint, lookup and candidates, without the chosen fix's own work.
    choice = sorted(t[1] + t[2] + t[3] for mine in samples.values() for t in mine)
    return {
        "known_error_decision_us": round(statistics.median(pooled) / 1e3, 2),
        "known_error_decision_p99_us": round(percentile(pooled, 0.99) / 1e3, 2),
        "known_error_naive_fingerprint_us": round(statistics.median(floor) / 1e3, 2),
        "known_error_naive_fingerprint_p99_us": round(percentile(floor, 0.99) / 1e3, 2),
        "known_error_decision_p99_without_mkdir_us": round(percentile(pure, 0.99) / 1e3, 2),
        "known_error_choice_us": round(statistics.median(choice) / 1e3, 2),
        "known_error_choice_p99_us": round(percentile(choice, 0.99) / 1e3, 2),
        "decision_stage_p50_us": {
            stage: round(statistics.median(t[i + 1] for t in everything) / 1e3, 2)
            for i, stage in enumerate(stages)
        },
        "decision_per_kind": per_kind,
    }


# -- the protected step ----------------------------------------------------------------------


def steps(url: str, count: int, *, protected: bool) -> tuple[float, list[float]]:
    """Seconds per durable step of one task of ``count`` steps, and the intervals between
    consecutive steps, plain (healing off) or protected (healing, a retry policy, a breaker)."""
    from onward import BreakerPolicy, RetryPolicies, RetryPolicy

    if not protected:
        return _bench.step_task(url, count, warmup=WARMUP_STEPS, healing=False)

    def counted(engine: Engine) -> None:
        if engine.projections.breakers.get("api").calls < count:
            raise SystemExit("the protected steps were not counted by the breaker")

    return _bench.step_task(
        url,
        count,
        warmup=WARMUP_STEPS,
        step={"breaker": "api"},
        check=counted,
        retries=RetryPolicies(RetryPolicy(max_attempts=3)),
        breakers=BreakerPolicy(failures=5, cooldown=60.0),
    )


def alternate(rounds: int, run: Callable[[str], tuple[float, list[float]]]) -> dict[str, list[Any]]:
    """Plain and protected in turns (plain, protected, protected, plain, ...)."""
    results: dict[str, list[Any]] = {"plain": [], "protected": [], "plain_i": [], "protected_i": []}
    for round_ in range(rounds):
        order = ("plain", "protected") if round_ % 2 == 0 else ("protected", "plain")
        for who in order:
            seconds, intervals = run(who)
            results[who].append(seconds)
            results[f"{who}_i"] += intervals
    return results


def protected_steps(files: Files, counts: dict[str, int]) -> dict[str, Any]:
    """The protected step over the plain one, on SQLite (FULL) and on memory://."""
    count, rounds = counts["steps"], counts["step_rounds"]

    def on_sqlite(who: str) -> tuple[float, list[float]]:
        progress(f"protected step: {who}, {count} steps on SQLite")
        return steps(f"sqlite:///{files.new(who)}", count, protected=who == "protected")

    for who in ("plain", "protected"):  # untimed: the first files in a directory run slow
        steps(f"sqlite:///{files.new(f'warm-up-{who}')}", 200, protected=who == "protected")
    full = alternate(rounds, on_sqlite)
    memory_count = counts["memory_steps"]
    progress(f"protected step: {counts['memory_rounds']} rounds of {memory_count} on memory://")
    memory = alternate(
        counts["memory_rounds"],
        lambda who: steps("memory://", memory_count, protected=who == "protected"),
    )
    plain, protected = statistics.median(full["plain"]), statistics.median(full["protected"])
    plain_p50 = statistics.median(full["plain_i"])
    protected_p50 = statistics.median(full["protected_i"])
    memory_plain = statistics.median(memory["plain"])
    memory_protected = statistics.median(memory["protected"])
    return {
        "protected_step_ratio": round(protected / plain, 3),
        "onward_protection_us": _us(memory_protected - memory_plain),
        "plain_step_us": _us(plain),
        "protected_step_us": _us(protected),
        "protected_step_p50_ratio": round(protected_p50 / plain_p50, 3),
        "plain_step_p50_us": _us(plain_p50),
        "protected_step_p50_us": _us(protected_p50),
        "plain_step_samples_us": [_us(s) for s in full["plain"]],
        "protected_step_samples_us": [_us(s) for s in full["protected"]],
        "memory_plain_step_us": _us(memory_plain),
        "memory_protected_step_us": _us(memory_protected),
        "memory_protected_step_ratio": round(memory_protected / memory_plain, 3),
    }


# -- the peers -------------------------------------------------------------------------------


def per_call(fn: Callable[[], Any], calls: int) -> float:
    """Seconds per call of ``fn`` in a tight loop."""
    loop = itertools.repeat(None, calls)
    t0 = time.perf_counter()
    for _ in loop:
        fn()
    return (time.perf_counter() - t0) / calls


def peers(counts: dict[str, int]) -> tuple[dict[str, Any], list[str]]:
    """tenacity's and pybreaker's overhead on a successful call, minus a bare call."""
    notes: list[str] = []
    calls, repeats = counts["peer_calls"], counts["peer_repeats"]

    def f() -> int:
        return 1

    contenders: dict[str, Callable[[], Any]] = {"bare": f}
    try:
        import tenacity

        def retrying() -> Callable[[], Any]:
            wait = tenacity.wait_exponential_jitter()
            return tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=wait)(f)

        def tenacity_decorating() -> Any:
            return retrying()()

        contenders["tenacity"] = retrying()
        contenders["tenacity_decorating"] = tenacity_decorating
    except ImportError:
        notes.append("tenacity_us: tenacity is not importable (pip install -e '.[bench]')")
    try:
        import pybreaker

        def guarded() -> Callable[[], Any]:
            breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
            guarded_f: Callable[[], Any] = breaker(f)
            return guarded_f

        def pybreaker_decorating() -> Any:
            return guarded()()

        contenders["pybreaker"] = guarded()
        contenders["pybreaker_decorating"] = pybreaker_decorating
    except ImportError:
        notes.append("pybreaker_us: pybreaker is not importable (pip install -e '.[bench]')")
    progress(f"peers: {', '.join(c for c in contenders if c != 'bare')}")
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            n = calls if "decorating" not in name else max(1, calls // 10)
            per_call(fn, max(1, n // 10))  # warm-up
            times[name].append(per_call(fn, n))
    bare = statistics.median(times["bare"])
    figures: dict[str, Any] = {"bare_call_us": round(bare * 1e6, 3)}
    for name in ("tenacity", "pybreaker", "tenacity_decorating", "pybreaker_decorating"):
        figures[f"{name}_us"] = (
            _us(statistics.median(times[name]) - bare) if name in times else None
        )
    return figures, notes


# -- the run ---------------------------------------------------------------------------------


def measure(directory: Path, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure beside its floor, the ratios, the details, and the counts."""
    files = Files(directory)
    progress("fingerprint")
    printed = fingerprints(counts)
    progress("known-error decisions (memory://)")
    decided = decisions(files, counts)
    peer, notes = peers(counts)
    guarded = protected_steps(files, counts)
    fixed = autofix(files, counts)

    result: dict[str, Any] = {
        "fingerprint_us": printed["fingerprint_us"],
        "naive_fingerprint_us": printed["naive_fingerprint_us"],
        "known_error_decision_us": decided["known_error_decision_us"],
        "known_error_decision_p99_us": decided["known_error_decision_p99_us"],
        "known_error_naive_fingerprint_us": decided["known_error_naive_fingerprint_us"],
        "protected_step_ratio": guarded["protected_step_ratio"],
        "onward_protection_us": guarded["onward_protection_us"],
        "tenacity_us": peer["tenacity_us"],
        "pybreaker_us": peer["pybreaker_us"],
        "seen_error_autofix_rate": fixed["seen_error_autofix_rate"],
        "first_sight_fix_rate": fixed["first_sight_fix_rate"],
        "errors": fixed["errors"],
        "seen_errors": fixed["seen_errors"],
    }
    protection = guarded["onward_protection_us"]
    result["tenacity_vs_protection_ratio"] = _bench.ratio(peer["tenacity_us"], protection)
    result["pybreaker_vs_protection_ratio"] = _bench.ratio(peer["pybreaker_us"], protection)
    result["details"] = {
        **{k: v for k, v in printed.items() if k not in result},
        **{k: v for k, v in decided.items() if k not in result},
        **{k: v for k, v in guarded.items() if k not in result},
        **{k: v for k, v in peer.items() if k not in result},
        **{k: v for k, v in fixed.items() if k not in result},
    }
    result["notes"] = notes
    result["counts"] = {**counts, "warmup_steps": WARMUP_STEPS, "seed": SEED}
    return result


def details(result: dict[str, Any]) -> list[str]:
    """The decisions by stage and by kind, and the auto-fix workload by kind."""
    details = result["details"]
    floor = result["known_error_naive_fingerprint_us"]
    stages = ", ".join(
        f"{k} {v:.2f} ({v / floor:.1f}x)" for k, v in details["decision_stage_p50_us"].items()
    )
    lines = [f"known-error decision stages, p50 µs (x the naive fingerprint): {stages}"]
    lines.append(f"  {'kind':<26}{'fix':<34}{'p50 µs':>9}{'p99 µs':>9}{'floor µs':>10}{'ratio':>8}")
    for kind, k in details["decision_per_kind"].items():
        naive = k["naive_fingerprint_p50_us"]
        lines.append(
            f"  {kind:<26}{k['fix']:<34}{k['p50_us']:>9.2f}{k['p99_us']:>9.2f}"
            f"{naive:>10.2f}{k['p50_us'] / naive:>8.2f}"
        )
    lines.append(
        f"auto-fix: {result['seen_errors']} seen errors, {details['first_sight_errors']} first"
        f" sightings; {result['errors']} errors, {details['signatures']} signatures,"
        f" {details['tasks_failed']} tasks failed"
    )
    lines.append(f"  {'kind':<26}{'errors':>7}{'sigs':>6}{'seen':>6}{'fixed':>7}{'first':>7}"
                 f"{'fixed':>7}{'retried':>9}{'gave up':>9}")  # fmt: skip
    for kind, k in details["per_kind"].items():
        lines.append(
            f"  {kind:<26}{k['errors']:>7}{k['signatures']:>6}{k['seen']:>6}{k['seen_fixed']:>7}"
            f"{k['first_sight']:>7}{k['first_sight_fixed']:>7}{k['retried']:>9}{k['gave_up']:>9}"
        )
    return lines


BENCHMARK = _bench.Benchmark(
    __doc__, FULL, QUICK, measure, FIGURES, TARGETS, details, packages=("tenacity", "pybreaker")
)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
