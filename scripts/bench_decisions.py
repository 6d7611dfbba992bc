"""Benchmark of onward's decisions: the rulebook, confidence scores and the session-level folds.

What it measures, in one run (everything in memory; the only files are a scratch SQLite file
that makes a real "database is locked" error):

* ``rule_decision_us`` / ``rule_decision_p99_us``:
``onward.judgement.rulebook.Rulebook().decide("error",
  facts)`` with the built-in rules, each sample one decision. The facts are those of 11 kinds of
  real exceptions (4 variants of each, with varying values), built by the engine's own
  ``Healer._rule`` (a rule function that records its facts catches them): error_type,
  exception_types, message, signature, step, attempt. 8 kinds match an error's own rule
  (``error.db-lock``, the first, to ``error.missing-key``, the last of them), a failing test
  step matches the last rule (``error.test-step``), and two match none (a ``ValueError``; a
  ``sqlite3.OperationalError`` that is not a lock, whose type matches the first rule and its
  message not). The kinds take turns; p50 and p99 of all samples, each kind's under
  ``details``. ``task_completed_decision_us`` and ``action_decision_us`` (under ``details``)
  are the same for the two other scenarios (the facts ``onward.runtime.scheduler`` and
  ``onward.judgement.actions.Judge`` pass).
* ``naive_rule_decision_us``: the peer, the naive way: a list scan of the same rules
  (``Rulebook().rules()``, in precedence order), ``re.search(pattern, str(fact))`` for each
  condition, in the same run, on the same facts, interleaved with the rulebook's samples;
  ``naive_vs_rule_decision_ratio`` is naive / rulebook. ``compiled_scan_rule_decision_us``
  (under ``details``) is the same scan over compiled patterns. ``replaced_design_decision_ms``
  is the 3-6 ms per decision that the design onward replaces took: a constant, not measured;
  ``replaced_design_vs_rule_decision_ratio`` divides its low end by the rulebook's p50.
* ``confidence_us``: scoring an action: ``Factors.of(...)`` + ``score(...)`` +
  ``thresholds.strategy(...)`` (the thresholds built once, as the ``Judge`` holds them), over 12
  action records (history, clarity, reversibility, impact, approvals), each sample one score;
  p50. Its floor, ``bare_call_7_args_us``: a bare Python function called with the same seven
  facts, each sample timed the same way, in turns with it. ``judge_decide_us`` (under
  ``details``) is the whole ``Judge.decide`` without the append: its projections read, the
  rulebook asked (scenario "action"), the score, the ``DecisionMade`` (and for "ask" the
  ``ApprovalRequested`` and ``TaskWaiting``) built into a batch, which a stand-in task run then
  drops instead of committing.
* ``projection_update_us``: per event, folding one realistic session's events (built as
  ``onward.events.Recorded``: 1,000 tasks, 400 with ``--quick``) through the budget, flow and
  degradation projections (``apply(r)`` of each, on every event; ``Projections.apply_page``
  sends each only the event types it reads). The session is what the engine would write, its
  moves decided by the engine's own rules while it is built: mostly ``StepCompleted``;
  ``StepFailed`` with the signatures of the error kinds above (about 6% of the steps, 40% in a
  few bad patches), each followed by what the healer appends (``ErrorObserved``,
  ``DecisionMade``, ``FixAttempted`` + ``FixSucceeded`` for a kind whose rule names a fix, else
  ``RetryScheduled`` + ``TaskWaiting`` and a new claim, sometimes a give-up and ``TaskFailed``);
  at each task boundary the flow moves that ``onward.judgement.flow.FlowMonitor`` makes from the
  rhythm (legal moves only), the budget decisions ``onward.judgement.budget.assess`` makes (a pause
  is resumed ten minutes later), and now and then a component that fails (``ComponentFailed`` +
  ``WorkaroundApplied``) and is restored later. Fresh projections each repeat; median of the
  repeats; the cycle collector is off while folding, as ``CatchUp`` has it. Each projection's
  own figure is under ``details``.
* ``apply_page_us``: the real hot path on the same records: ``Projections().apply_page``
  (every projection) in pages of 2,000 events, per event. The events are the full ones (the
  log's ``FoldReader`` hands the projections lean step outcomes instead, which fold the same).
* End to end, under ``details``: ``Engine.open("memory://", clock=..., sleep=...)`` (a fake
  clock that each step advances by 0.1-0.9 s: no real sleeping) running 200 tasks (100 with
  ``--quick``) of 4 steps each, after a 20-task warm-up; ``onward.runtime.run()`` time / tasks.
  Three variants in turns (25 rounds, 5 with ``--quick``), each on a fresh engine: the default
  judgement (healing with the rulebook, the error budget, the flow monitor, the task
  boundaries), ``healing=False``, and ``healing=False`` with the boundary's ``cross()``
  replaced by its constant verdict (no session-level policies: ``healing=False`` alone keeps
  them). Medians of the rounds; ``task_p50_*_us`` are the medians of the intervals between
  consecutive task starts, which bursts of other processes barely move. ``boundary_us`` is the
  time spent in ``onward.runtime.boundary.cross()`` per task, timed inside the default runs
  (``boundary_p50_us``: per crossing; ``boundary_warm_p50_us``: called 500 times in a row
  after the run, its caches warm). ``task_cpu_*_us`` divide the thread's CPU time
  instead of wall time (memory:// does no I/O; on a shared machine the wall time of a run
  swings by 2x with the other processes' load). Every step succeeds, so healing only adds its
  before-call checks, and the budget has no errors to count: this is the policies' floor.

Every figure is printed beside its floor (``floors`` in the JSON): the naive list scan for the
decisions, the bare call for the score, the bare loop over the events for the folds, and for
the end-to-end figures the same run with less of the engine. Targets (``targets``):
rule_decision_us <= 0.75 x naive_rule_decision_us (it was 10 µs); rule_decision_p99_us <= 2.25 x
naive_rule_decision_p99_us (it was 50 µs). Quote ratios, not times.

Run it from the repository root::

    .venv/bin/python scripts/bench_decisions.py             # a table, about 25-45 seconds
    .venv/bin/python scripts/bench_decisions.py --quick     # a table, about 6-12 seconds
    .venv/bin/python scripts/bench_decisions.py --json
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onward.events import Event, Recorded
    from onward.healing.signature import ErrorSignature
    from onward.judgement.rulebook import RuleInfo

import _bench
from _bench import FakeClock, Figure, Target, percentile, progress

SEED = 20_240_601
#: The time per decision of the design onward replaces: a stated constant, not measured here.
REPLACED_DESIGN_DECISION_MS = (3.0, 6.0)
PAGE_SIZE = 2000
VARIANTS_PER_KIND = 4
STEPS_PER_TASK = 4
WARMUP_TASKS = 20

FULL: dict[str, int] = {
    "rule_rounds": 4_000,
    "confidence_rounds": 8_000,
    "judge_rounds": 3_000,
    "session_tasks": 1_000,
    "fold_repeats": 31,
    "e2e_tasks": 200,
    "e2e_rounds": 25,
}
QUICK: dict[str, int] = {
    "rule_rounds": 800,
    "confidence_rounds": 2_500,
    "judge_rounds": 1_000,
    "session_tasks": 400,
    "fold_repeats": 9,
    "e2e_tasks": 100,
    "e2e_rounds": 5,
}

NAIVE = "list scan + re.search"
FOLD_LOOP = "bare loop, same events"
FIGURES = [
    Figure("rule decision p50", "rule_decision_us", "us", "naive_rule_decision_us", NAIVE),
    Figure(
        "rule decision p99",
        "rule_decision_p99_us",
        "us",
        "details.naive_rule_decision_p99_us",
        f"{NAIVE}, p99",
    ),
    Figure(
        "rule decision p50",
        "rule_decision_us",
        "us",
        "details.compiled_scan_rule_decision_us",
        "compiled list scan",
    ),
    Figure(
        "task_completed decision p50",
        "details.task_completed_decision_us",
        "us",
        "details.naive_task_completed_decision_us",
        NAIVE,
    ),
    Figure(
        "action decision p50",
        "details.action_decision_us",
        "us",
        "details.naive_action_decision_us",
        NAIVE,
    ),
    Figure(
        "Judge.decide p50, no append",
        "details.judge_decide_us",
        "us",
        "details.naive_action_decision_us",
        f"{NAIVE}, action",
    ),
    Figure(
        "Judge.decide p99, no append",
        "details.judge_decide_p99_us",
        "us",
        "details.naive_action_decision_p99_us",
        f"{NAIVE}, action p99",
    ),
    Figure(
        "score an action p50", "confidence_us", "us", "bare_call_7_args_us", "bare call, 7 args"
    ),
    Figure(
        "score an action p99",
        "details.confidence_p99_us",
        "us",
        "details.bare_call_7_args_p99_us",
        "bare call, 7 args, p99",
    ),
    Figure(
        "score, new Thresholds()",
        "details.confidence_new_thresholds_us",
        "us",
        "bare_call_7_args_us",
        "bare call, 7 args",
    ),
    Figure(
        "budget+flow+degradation/event",
        "projection_update_us",
        "us",
        "details.fold_loop_us",
        FOLD_LOOP,
    ),
    Figure(
        "budget fold/event", "details.budget_update_us", "us", "details.fold_loop_us", FOLD_LOOP
    ),
    Figure("flow fold/event", "details.flow_update_us", "us", "details.fold_loop_us", FOLD_LOOP),
    Figure(
        "degradation fold/event",
        "details.degradation_update_us",
        "us",
        "details.fold_loop_us",
        FOLD_LOOP,
    ),
    Figure("apply_page/event", "apply_page_us", "us", "details.fold_loop_us", FOLD_LOOP),
    Figure(
        "task CPU, default",
        "details.task_cpu_default_us",
        "us",
        "details.task_cpu_no_healing_us",
        "task CPU, healing=False",
    ),
    Figure(
        "task CPU, healing=False",
        "details.task_cpu_no_healing_us",
        "us",
        "details.task_cpu_no_policies_us",
        "task CPU, no policies",
    ),
    Figure(
        "task wall, default",
        "details.task_default_us",
        "us",
        "details.task_no_healing_us",
        "task wall, healing=False",
    ),
    Figure(
        "task wall, healing=False",
        "details.task_no_healing_us",
        "us",
        "details.task_no_policies_us",
        "task wall, no policies",
    ),
    Figure(
        "task p50 interval, default",
        "details.task_p50_default_us",
        "us",
        "details.task_p50_no_healing_us",
        "the same, healing=False",
    ),
    Figure(
        "task p50 interval, no healing",
        "details.task_p50_no_healing_us",
        "us",
        "details.task_p50_no_policies_us",
        "the same, no policies",
    ),
    Figure(
        "boundary.cross(), per task",
        "details.boundary_us",
        "us",
        "details.boundary_warm_p50_us",
        "the same, warm, p50",
    ),
    Figure(
        "boundary.cross() p50",
        "details.boundary_p50_us",
        "us",
        "details.boundary_warm_p50_us",
        "the same, warm, p50",
    ),
]
TARGETS = [
    Target("rule_decision", "rule_decision_us", "<=", 0.75, "naive_rule_decision_us", was=10),
    Target(
        "rule_decision_p99",
        "rule_decision_p99_us",
        "<=",
        2.25,
        "details.naive_rule_decision_p99_us",
        was=50,
    ),
]


def _us(ns: float) -> float:
    return round(ns / 1e3, 3)


def _p50_p99(samples: Iterable[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return _us(statistics.median(ordered)), _us(percentile(ordered, 0.99))


def timer_overhead_ns(calls: int = 100_000) -> float:
    """The median of ``perf_counter_ns() - perf_counter_ns()``: what each sample includes."""
    clock = time.perf_counter_ns
    gaps = []
    for _ in range(calls):
        t0 = clock()
        gaps.append(clock() - t0)
    return statistics.median(gaps)


# -- real errors and their facts -------------------------------------------------------------


class ErrorCase:
    """One kind of real error: the exception, the step it failed in, and the facts the healer
    asks the rulebook with.

    Attributes:
        kind: its name in the output.
        step: the step that raised it.
        expected: the rule that should decide it ("" for none).
        variants: (exception, attempt, facts) for each variant.
    """

    def __init__(self, kind: str, step: str, expected: str) -> None:
        self.kind = kind
        self.step = step
        self.expected = expected
        self.variants: list[tuple[Exception, int, dict[str, Any]]] = []


def _raised(action: Callable[[], object]) -> Exception:
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError(f"{action} did not raise")


def _locked_error(directory: Path, n: int) -> Exception:
    """A real "database is locked": another connection holds ``BEGIN IMMEDIATE``."""
    path = directory / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value INT)")
        holder.execute("BEGIN IMMEDIATE")
        writer = sqlite3.connect(path, timeout=0)
        try:

            def save() -> None:
                with writer:
                    writer.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (f"k{n}", n))

            return _raised(save)
        finally:
            writer.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _missing_table_error(n: int) -> Exception:
    db = sqlite3.connect(":memory:")
    try:
        return _raised(lambda: db.execute(f"SELECT value FROM results_{n} WHERE key = ?", ("k",)))
    finally:
        db.close()


def _error_factories(directory: Path) -> list[tuple[str, str, str, Callable[[int], Exception]]]:
    """(kind, step, expected rule, make the n-th variant's exception)."""

    def undecodable(n: int) -> Exception:
        data = f"notes {n}: café, crème brûlée, Zoë".encode("cp1252")
        return _raised(lambda: data.decode("utf-8"))

    def missing_directory(n: int) -> Exception:
        path = directory / "exports" / str(uuid.UUID(int=n * 7919)) / f"report-{n}.txt"
        return _raised(lambda: path.write_text("report\n"))

    def timeout(n: int) -> Exception:
        def fetch() -> None:
            raise TimeoutError(f"GET https://shop{n}.example.com/items/{n} timed out after 5.0 s")

        return _raised(fetch)

    def connection_reset(n: int) -> Exception:
        def call() -> None:
            raise ConnectionResetError(104, f"Connection reset by peer (vendor call {n})")

        return _raised(call)

    def json_noise(n: int) -> Exception:
        text = f"INFO GET /v2/reports/{n} -> 200\n" + json.dumps({"rows": [n, n + 1]})
        return _raised(lambda: json.loads(text))

    def markdown_code(n: int) -> Exception:
        code = f"Here is the code:\n\n```python\nresult = {n} * 2\n```\n"
        return _raised(lambda: compile(code, "<generated>", "exec"))

    def missing_key(n: int) -> Exception:
        config = {"host": f"db{n}.internal", "port": 5432 + n}
        return _raised(lambda: config["pool_size"])

    def failing_tests(n: int) -> Exception:
        def run() -> None:
            raise subprocess.CalledProcessError(n % 3 + 1, ["pytest", "-q", f"tests/test_{n}.py"])

        return _raised(run)

    def bad_value(n: int) -> Exception:
        return _raised(lambda: int(f"{n}.5 kg"))

    return [
        ("database_locked", "save_result", "error.db-lock", lambda n: _locked_error(directory, n)),
        ("undecodable_file", "read_notes", "error.encoding", undecodable),
        ("missing_parent_directory", "write_report", "error.path", missing_directory),
        ("timeout", "fetch_page", "error.timeout", timeout),
        ("connection_reset", "call_vendor", "error.connection-dropped", connection_reset),
        ("json_in_log_noise", "parse_report", "error.malformed-json", json_noise),
        ("code_in_markdown", "run_snippet", "error.syntax", markdown_code),
        ("missing_config_key", "load_config", "error.missing-key", missing_key),
        ("failing_test_step", "run_tests", "error.test-step", failing_tests),
        ("value_no_rule", "parse_weight", "", bad_value),
        ("sqlite_not_a_lock", "load_results", "", _missing_table_error),
    ]


def error_kinds(directory: Path, rng: random.Random) -> list[ErrorCase]:
    """The error kinds, their facts built by ``Healer._rule`` itself."""
    from onward import Rulebook, fingerprint
    from onward.healing.healer import Healer
    from onward.projections import Projections

    captured: list[dict[str, Any]] = []
    recorder = Rulebook(builtins=False)

    @recorder.function("bench.record-facts", "error")
    def record(scenario: str, facts: Mapping[str, Any]) -> None:
        captured.append(dict(facts))

    projections = Projections()
    healer = Healer(projections=lambda fresh: projections, clock=time.time, rulebook=recorder)
    book = Rulebook()
    kinds: list[ErrorCase] = []
    for name, step, expected, make in _error_factories(directory):
        kind = ErrorCase(name, step, expected)
        stand_in: Any = SimpleNamespace(name=step)
        for _ in range(VARIANTS_PER_KIND):
            exc = make(rng.randint(1, 10**6))
            attempt = rng.randint(1, 3)
            captured.clear()
            healer._rule(exc, fingerprint(exc), stand_in, attempt)
            (facts,) = captured
            verdict = book.decide("error", facts)
            decided = "" if verdict is None else verdict.rule
            if decided != kind.expected:
                raise SystemExit(f"rules: {name} is decided by {decided!r}, not {expected!r}")
            kind.variants.append((exc, attempt, facts))
        kinds.append(kind)
    return kinds


# -- the rulebook and its peers --------------------------------------------------------------


def naive_scan(rules: list[RuleInfo]) -> Callable[[str, Mapping[str, Any]], RuleInfo | None]:
    """The naive way: every rule in precedence order, ``re.search`` on each condition."""
    table = [(info.scenario, list(info.when.items()), info) for info in rules]

    def decide(scenario: str, facts: Mapping[str, Any]) -> RuleInfo | None:
        for rule_scenario, when, info in table:
            if rule_scenario != scenario:
                continue
            for fact, pattern in when:
                value = facts.get(fact)
                if value is None or re.search(pattern, str(value)) is None:
                    break
            else:
                return info
        return None

    return decide


def compiled_scan(rules: list[RuleInfo]) -> Callable[[str, Mapping[str, Any]], RuleInfo | None]:
    """The same scan with the patterns compiled once, and the rules grouped by scenario."""
    by_scenario: dict[str, list[tuple[list[tuple[str, re.Pattern[str]]], RuleInfo]]] = {}
    for info in rules:
        compiled = [(fact, re.compile(pattern)) for fact, pattern in info.when.items()]
        by_scenario.setdefault(info.scenario, []).append((compiled, info))

    def decide(scenario: str, facts: Mapping[str, Any]) -> RuleInfo | None:
        for when, info in by_scenario.get(scenario, ()):
            for fact, pattern in when:
                value = facts.get(fact)
                if value is None or pattern.search(str(value)) is None:
                    break
            else:
                return info
        return None

    return decide


def _other_scenarios() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(label, facts) of the scenarios "task_completed" and "action", as the engine asks."""
    return {
        "task_completed": [
            ("subtask", {"task": "summarise_page", "parent": "9f1c2e7a4b", "queued": 1}),
            ("last_in_queue", {"task": "crawl", "parent": "", "queued": 0}),
            ("more_queued", {"task": "crawl", "parent": "", "queued": 1}),
            ("more_queued_report", {"task": "build_report", "parent": "", "queued": 1}),
        ],
        "action": [
            ("deploy_high", {"action": "deploy_service", "impact": "high"}),
            ("drop_table_high", {"action": "drop_staging_table", "impact": "high"}),
            ("delete_medium", {"action": "delete_cache_entries", "impact": "medium"}),
            ("fetch_low", {"action": "fetch_pricing", "impact": "low"}),
            ("send_email_medium", {"action": "send_summary_email", "impact": "medium"}),
            ("publish_low", {"action": "publish_draft", "impact": "low"}),
        ],
    }


def rule_decisions(kinds: list[ErrorCase], counts: dict[str, int]) -> dict[str, Any]:
    """Per-decision times of the rulebook and its two peers, interleaved, on every scenario."""
    from onward import Rulebook

    book = Rulebook()
    rules = book.rules()
    contenders: dict[str, Callable[[str, Mapping[str, Any]], object]] = {
        "rulebook": book.decide,
        "naive": naive_scan(rules),
        "compiled": compiled_scan(rules),
    }
    mixes: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "error": [(k.kind, facts) for k in kinds for _, _, facts in k.variants],
        **_other_scenarios(),
    }
    # Every peer agrees with the rulebook on every facts of the mix.
    for scenario, mix in mixes.items():
        for label, facts in mix:
            verdict = book.decide(scenario, facts)
            want = None if verdict is None else verdict.rule
            for name in ("naive", "compiled"):
                found: Any = contenders[name](scenario, facts)
                if (None if found is None else found.id) != want:
                    raise SystemExit(f"rules: {name} decides {scenario} {label} otherwise")

    clock = time.perf_counter_ns
    samples: dict[tuple[str, str], dict[str, list[int]]] = {
        (scenario, name): {label: [] for label, _ in mix}
        for scenario, mix in mixes.items()
        for name in contenders
    }
    rounds = counts["rule_rounds"]
    names = list(contenders)
    progress(f"rulebook: {rounds} rounds over {sum(len(m) for m in mixes.values())} facts x 3")
    for _ in range(rounds // 10):  # warm-up: the rulebook's word cache, the re module's cache
        for scenario, mix in mixes.items():
            for _, facts in mix:
                for name in names:
                    contenders[name](scenario, facts)
    gc.collect()
    for round_ in range(rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        for scenario, mix in mixes.items():
            for name in order:
                decide = contenders[name]
                mine = samples[scenario, name]
                for label, facts in mix:
                    t0 = clock()
                    decide(scenario, facts)
                    mine[label].append(clock() - t0)

    def pooled(scenario: str, name: str) -> tuple[float, float]:
        return _p50_p99(t for per in samples[scenario, name].values() for t in per)

    figures: dict[str, Any] = {}
    rule_of = {k.kind: k.expected or "(none)" for k in kinds}
    for scenario, mix in mixes.items():
        prefix = "rule" if scenario == "error" else scenario
        for name in names:
            p50, p99 = pooled(scenario, name)
            who = "" if name == "rulebook" else ("naive_" if name == "naive" else "compiled_scan_")
            figures[f"{who}{prefix}_decision_us"] = p50
            figures[f"{who}{prefix}_decision_p99_us"] = p99
        per_label: dict[str, Any] = {}
        for label, facts in mix:
            if label in per_label:
                continue
            p50, p99 = _p50_p99(samples[scenario, "rulebook"][label])
            naive_p50, _ = _p50_p99(samples[scenario, "naive"][label])
            verdict_rule = rule_of.get(label)
            if verdict_rule is None:
                verdict = book.decide(scenario, facts)
                verdict_rule = "(none)" if verdict is None else verdict.rule
            per_label[label] = {
                "rule": verdict_rule,
                "p50_us": p50,
                "p99_us": p99,
                "naive_p50_us": naive_p50,
            }
        figures[f"{prefix}_decision_per_kind"] = per_label
    figures["rules_in_force"] = len(rules)
    figures["error_facts"] = len(mixes["error"])
    figures["example_error_facts"] = {
        k: (str(v) if not isinstance(v, int) else v) for k, v in kinds[0].variants[0][2].items()
    }
    return figures


# -- confidence ------------------------------------------------------------------------------

#: (runs, passed, clarity, reversible, impact, granted, denied): a spread of action records.
ACTION_RECORDS: list[tuple[int, int, float, bool, str, int, int]] = [
    (0, 0, 0.5, False, "medium", 0, 0),
    (3, 3, 0.5, True, "low", 0, 0),
    (40, 39, 0.5, True, "low", 0, 0),
    (120, 117, 0.67, False, "low", 2, 0),
    (12, 9, 0.5, True, "medium", 1, 1),
    (250, 250, 0.5, False, "medium", 0, 0),
    (7, 2, 0.83, False, "medium", 0, 3),
    (0, 0, 0.83, False, "high", 0, 0),
    (30, 30, 1.0, True, "high", 12, 0),
    (5, 5, 0.5, False, "high", 4, 1),
    (900, 880, 0.67, True, "medium", 0, 0),
    (18, 17, 0.5, True, "low", 3, 0),
]


def confidence(counts: dict[str, int]) -> dict[str, Any]:
    """Factors.of + score + strategy per sample; and the same with new thresholds each time."""
    from onward import Factors, Thresholds
    from onward.judgement.confidence import score

    settings = Thresholds()
    clock = time.perf_counter_ns
    rounds = counts["confidence_rounds"]
    held: list[int] = []
    fresh: list[int] = []
    floor: list[int] = []
    strategies: Counter[str] = Counter()

    def one(record: tuple[int, int, float, bool, str, int, int], thresholds: Any) -> str:
        runs, passed, clarity, reversible, impact, granted, denied = record
        factors = Factors.of(
            runs=runs,
            passed=passed,
            clarity=clarity,
            reversible=reversible,
            impact=impact,
            granted=granted,
            denied=denied,
        )
        return str(thresholds.strategy(score(factors)))

    for record in ACTION_RECORDS:
        strategies[one(record, settings)] += 1
    progress(f"confidence: {rounds} rounds over {len(ACTION_RECORDS)} action records")
    for _ in range(rounds // 10):
        for record in ACTION_RECORDS:
            one(record, settings)
    gc.collect()
    for _ in range(rounds):
        for record in ACTION_RECORDS:
            runs, passed, clarity, reversible, impact, granted, denied = record
            t0 = clock()
            factors = Factors.of(
                runs=runs,
                passed=passed,
                clarity=clarity,
                reversible=reversible,
                impact=impact,
                granted=granted,
                denied=denied,
            )
            settings.strategy(score(factors))
            t1 = clock()
            factors = Factors.of(
                runs=runs,
                passed=passed,
                clarity=clarity,
                reversible=reversible,
                impact=impact,
                granted=granted,
                denied=denied,
            )
            Thresholds().strategy(score(factors))
            t2 = clock()
            bare_call(runs, passed, clarity, reversible, impact, granted, denied)  # the floor
            floor.append(clock() - t2)
            fresh.append(t2 - t1)
            held.append(t1 - t0)
    p50, p99 = _p50_p99(held)
    fresh_p50, _ = _p50_p99(fresh)
    floor_p50, floor_p99 = _p50_p99(floor)
    return {
        "confidence_us": p50,
        "bare_call_7_args_us": floor_p50,
        "confidence_p99_us": p99,
        "bare_call_7_args_p99_us": floor_p99,
        "confidence_new_thresholds_us": fresh_p50,
        "confidence_strategies": dict(sorted(strategies.items())),
    }


def bare_call(
    runs: int, passed: int, clarity: float, reversible: bool, impact: str, granted: int, denied: int
) -> None:
    """The floor of scoring an action: a function that takes its seven facts, and returns."""


class _StandInRun:
    """What ``Judge.decide`` uses of a task run; its commit drops the batch (no append)."""

    def __init__(self) -> None:
        from onward.core.batch import Batch
        from onward.events import Context

        self.task_id = "4f9a1c2be07d4a5c9f3e2d1c0b9a8f7e"
        self.context = Context(session="bench", causation_id="c" * 32, actor="bench/1/a")
        self.committed = 0
        self._batch = Batch

    def new_batch(self) -> Any:
        return self._batch(self.context.causation_id)

    def commit(self, batch: Any) -> None:
        self.committed += len(batch.events)


def judge_decisions(counts: dict[str, int]) -> dict[str, Any]:
    """The whole ``Judge.decide`` per sample, without the append."""
    from onward import Judgement, Rulebook
    from onward.core.run import Suspended
    from onward.judgement.actions import Judge
    from onward.projections import Projections
    from onward.projections.decisions import ActionRecord

    projections = Projections()
    judge = Judge(
        rulebook=Rulebook(),
        projections=lambda fresh: projections,
        defers=lambda session, impact, urgent: False,
    )

    def undo(result: Any) -> None:
        return None

    def check(result: Any) -> bool:
        return True

    actions: list[tuple[str, Judgement, ActionRecord]] = [
        (
            "fetch_pricing",
            Judgement(impact="low", reversible=True),
            ActionRecord(runs=200, passed=200, granted=3),
        ),
        ("export_report", Judgement(impact="low"), ActionRecord(runs=40, passed=39)),
        ("write_draft", Judgement(impact="low", reversible=True), ActionRecord(runs=3, passed=3)),
        (
            "update_listing",
            Judgement(impact="medium", check=check, undo=undo),
            ActionRecord(runs=12, passed=10, granted=1),
        ),
        ("send_summary_email", Judgement(impact="medium", check=check), ActionRecord()),
        (
            "rotate_api_key",
            Judgement(impact="high", check=check, undo=undo),
            ActionRecord(runs=30, passed=30, granted=12),
        ),
        ("deploy_service", Judgement(impact="high", check=check), ActionRecord(runs=5, passed=5)),
    ]
    for name, _, record in actions:
        projections.decisions.actions[name] = record
    steps: list[tuple[Any, Judgement]] = [
        (SimpleNamespace(name=name), judgement) for name, judgement, _ in actions
    ]
    run: Any = _StandInRun()

    def decide(step: Any, judgement: Judgement) -> str:
        try:
            return str(judge.decide(run, step, 3, judgement).strategy)
        except Suspended:
            return "ask"

    strategy_of = {step.name: decide(step, judgement) for step, judgement in steps}
    clock = time.perf_counter_ns
    rounds = counts["judge_rounds"]
    samples: dict[str, list[int]] = {step.name: [] for step, _ in steps}
    progress(f"Judge.decide: {rounds} rounds over {len(steps)} actions")
    for _ in range(rounds // 10):
        for step, judgement in steps:
            decide(step, judgement)
    asked = 0
    gc.collect()
    for _ in range(rounds):
        for step, judgement in steps:
            t0 = clock()
            try:
                judge.decide(run, step, 3, judgement)
            except Suspended:
                asked += 1
            samples[step.name].append(clock() - t0)
    p50, p99 = _p50_p99(t for mine in samples.values() for t in mine)
    per_action: dict[str, Any] = {}
    for name, mine in samples.items():
        a50, a99 = _p50_p99(mine)
        per_action[name] = {"strategy": strategy_of[name], "p50_us": a50, "p99_us": a99}
    return {
        "judge_decide_us": p50,
        "judge_decide_p99_us": p99,
        "judge_decide_per_action": per_action,
    }


# -- a realistic session, and the folds ------------------------------------------------------


#: (the error case, its signature, the fix its rule prefers or "" for a retry, the rule's id)
_SessionError = tuple[ErrorCase, "ErrorSignature", str, str]

_WORKER = "bench-host/4242/a1b2c3"
_STEP_NAMES = ("fetch_page", "parse_report", "summarise", "save_result", "notify")


class SessionWriter:
    """Builds one session's records as the engine would append them.

    Its session-level moves (flow, budget) are decided by the engine's own rules on a scratch
    copy of the projections, which also checks that every event is legal where it lands.

    Args:
        session: the session's name.
        clock: the fake clock the records are stamped with.
        rng: the random source of durations, failures and sizes.
        errors: the errors a failing step raises, one picked at random each time.
    """

    def __init__(
        self, session: str, clock: FakeClock, rng: random.Random, errors: list[_SessionError]
    ) -> None:
        from onward.judgement.budget import ErrorBudget
        from onward.judgement.flow import FlowMonitor
        from onward.projections import Projections, session_stream

        self.session = session
        self.clock = clock
        self.rng = rng
        self.errors = errors
        self.records: list[Recorded] = []
        self.versions: dict[str, int] = {}
        self.scratch = Projections()
        self.monitor = FlowMonitor()
        self.budget = ErrorBudget(limit=25)
        self.session_stream = session_stream(session)
        self.seen: set[str] = set()

    def add(self, stream: str, event: Event, cause: str = "") -> str:
        """Append one event to a stream (folded into the scratch projections); its id."""
        from onward.events import Meta, Recorded, new_event_id

        version = self.versions.get(stream, 0) + 1
        self.versions[stream] = version
        meta = Meta(
            event_id=new_event_id(),
            time=self.clock.now,
            session=self.session,
            causation_id=cause,
            actor=_WORKER,
        )
        record = Recorded(stream, version, len(self.records) + 1, meta, event)
        self.records.append(record)
        self.scratch.apply(record)
        return meta.event_id

    def to_session(self, event: Event, cause: str = "") -> str:
        """Append one event to the session's stream."""
        return self.add(self.session_stream, event, cause)

    def boundary(self) -> None:
        """The flow move and the budget decision the engine would make here."""
        from onward.events import DecisionMade, SessionPaused, SessionResumed
        from onward.judgement.budget import assess, verdict_inputs

        flow = self.scratch.flow
        moved = self.monitor.observe(
            flow.state(self.session), flow.rhythm(self.session, self.clock.now)
        )
        if moved is not None:
            self.to_session(moved)
        budget = self.scratch.budget
        window = budget.window(self.session, self.clock.now, self.budget.window)
        verdict = assess(self.budget, window)
        # As Boundary.judge_budget: a decision when the verdict's rule changes (an onward
        # whose window has no last_rule records one when the choice changes).
        last_rule: str | None = getattr(window, "last_rule", None)
        if last_rule is not None:
            if verdict.rule == (last_rule or "budget.within"):
                return
        elif verdict.choice == (window.last_choice or "continue"):
            return
        decision = self.to_session(
            DecisionMade(
                kind="budget",
                subject=self.session,
                choice=verdict.choice,
                rule=verdict.rule,
                inputs={"reason": verdict.reason, **verdict_inputs(verdict)},
                alternatives=[c for c in ("continue", "slow_down", "pause") if c != verdict.choice],
                thresholds={"limit": float(self.budget.limit), "window": self.budget.window},
            ),
            budget.last_error(self.session),
        )
        if verdict.choice == "pause":
            self.to_session(SessionPaused(reason=f"error budget: {verdict.reason}"), decision)
            self.clock.advance(600.0)  # a person looks, then resumes the session
            self.to_session(SessionResumed(reason="resumed by a person"))
        elif verdict.choice == "slow_down":
            self.clock.advance(verdict.delay)

    def component(self, *, failed: bool) -> None:
        """The search index fails and a workaround stands in; or it is back."""
        from onward.events import (
            ComponentFailed,
            ComponentRestored,
            DegradationLevel,
            WorkaroundApplied,
        )

        if not failed:
            self.to_session(
                ComponentRestored(
                    component="search-index", quality_regained=0.15, level=DegradationLevel.FULL
                )
            )
            return
        cause = self.to_session(
            ComponentFailed(component="search-index", check="ping", message="connection refused")
        )
        self.to_session(
            WorkaroundApplied(
                component="search-index",
                workaround="grep-fallback",
                quality_loss=0.15,
                level=DegradationLevel.MINOR,
            ),
            cause,
        )

    def task(self, k: int, failure_rate: float) -> None:
        """One task from its submission to its end: 3-6 steps, each failing at this rate."""
        from onward.events import DecisionMade, TaskClaimed, TaskSubmitted, TaskSucceeded
        from onward.projections import task_stream

        rng = self.rng
        task_id = f"{rng.getrandbits(128):032x}"
        stream = task_stream(task_id)
        submitted = self.add(
            stream, TaskSubmitted(name="crawl", args=[f"https://example.org/page/{k}"])
        )
        claim = TaskClaimed(worker=_WORKER, lease_until=self.clock.now + 300.0)
        claimed = self.add(stream, claim, submitted)
        for index in range(rng.randint(3, 6)):
            self.clock.advance(rng.uniform(0.3, 2.5))
            claimed = self.step(stream, task_id, index, claimed, failure_rate)
            if not claimed:
                return  # the step failed for good, and the task with it
        decision = DecisionMade(
            kind="task_completed",
            subject=task_id,
            choice="next_task",
            rule="task.next",
            inputs={"task": "crawl", "parent": "", "queued": 1},
        )
        self.add(stream, decision, claimed)
        self.add(stream, TaskSucceeded(result={"pages": k}), claimed)

    def step(self, stream: str, task_id: str, index: int, claimed: str, failure_rate: float) -> str:
        """One step: its failed tries, each handled as the healer does, then its completion.

        Returns:
            The id of the task's current claim, or "" when the step (and the task) failed.
        """
        from onward.events import (
            DecisionMade,
            ErrorClassified,
            ErrorKind,
            ErrorObserved,
            FixAttempted,
            FixSucceeded,
            Jitter,
            RetryScheduled,
            StepCompleted,
            StepFailed,
            TaskClaimed,
            TaskFailed,
            TaskWaiting,
        )

        rng, clock = self.rng, self.clock
        name = _STEP_NAMES[index % len(_STEP_NAMES)]
        dependency = "search-api" if name == "fetch_page" else ""
        attempt = 1
        fixed: tuple[str, str] | None = None
        while rng.random() < failure_rate:
            case, signature, fix, rule = rng.choice(self.errors)
            final = attempt == 3 or case.expected == "error.test-step"
            failure = StepFailed(
                index=index,
                name=name,
                attempt=attempt,
                error_type=signature.error_type,
                message=signature.message,
                signature=signature.id,
                transient=not fix,
                final=final,
                dependency=dependency,
            )
            observed = self.add(
                stream,
                ErrorObserved(
                    signature=signature.id,
                    error_type=signature.error_type,
                    message=signature.message,
                    frames=list(signature.frames),
                    step_index=index,
                    causes=list(signature.causes),
                ),
                self.add(stream, failure, claimed),
            )
            if signature.id not in self.seen:
                self.seen.add(signature.id)
                classified = ErrorClassified(
                    signature=signature.id, kind=ErrorKind.UNKNOWN, reason="first seen"
                )
                self.add(stream, classified, observed)
            inputs = {"signature": signature.id, "step": name, "attempt": attempt}
            if final:
                give_up = DecisionMade(
                    kind="give_up",
                    subject=task_id,
                    rule=rule,
                    choice="fail the step",
                    inputs=inputs,
                )
                self.add(stream, give_up, observed)
                failed = TaskFailed(error_type=signature.error_type, message=signature.message)
                self.add(stream, failed, claimed)
                return ""
            attempt += 1
            if fix:  # the fix's call runs again at once
                decision = self.add(
                    stream,
                    DecisionMade(
                        kind="fix",
                        subject=task_id,
                        choice=fix,
                        rule=rule,
                        inputs=inputs,
                        alternatives=["retry", "give up"],
                    ),
                    observed,
                )
                change = {"arguments": {"encoding": "cp1252"}}
                attempted = FixAttempted(
                    fix=fix, signature=signature.id, step_index=index, change=change
                )
                self.add(stream, attempted, decision)
                fixed = (fix, signature.id)
                continue
            delay = round(rng.uniform(0.2, 4.0), 3)
            decision = self.add(
                stream,
                DecisionMade(
                    kind="retry",
                    subject=task_id,
                    choice=f"retry in {delay:.3f} s",
                    rule=rule,
                    inputs=inputs,
                    alternatives=["give up"],
                ),
                observed,
            )
            retry = RetryScheduled(
                step_index=index,
                attempt=attempt,
                delay=delay,
                due=clock.now + delay,
                policy="default",
                jitter=Jitter.FULL,
                error_type=signature.error_type,
                signature=signature.id,
            )
            self.add(stream, retry, decision)
            waiting = TaskWaiting(reason=f"retry of step {index}", until=clock.now + delay)
            self.add(stream, waiting, decision)
            clock.advance(delay)
            claims = self.scratch.tasks.tasks[task_id].attempt + 1
            claim = TaskClaimed(worker=_WORKER, lease_until=clock.now + 300.0, attempt=claims)
            claimed = self.add(stream, claim)
        completed = StepCompleted(
            index=index,
            name=name,
            result={"status": 200, "bytes": rng.randint(200, 90_000)},
            duration=round(rng.uniform(0.01, 2.0), 4),
            attempt=attempt,
            dependency=dependency,
        )
        completed_id = self.add(stream, completed, claimed)
        if fixed is not None:
            fix, signature_id = fixed
            self.add(
                stream,
                FixSucceeded(fix=fix, signature=signature_id, step_index=index),
                completed_id,
            )
        return claimed


def realistic_session(
    cases: list[ErrorCase], tasks: int, seed: int
) -> tuple[list[Recorded], dict[str, int]]:
    """One session's records: tasks of 3-6 steps, failures handled as the healer does,
    flow moves, budget decisions and a degraded component at task boundaries.

    Returns:
        The records, and how many there are of each event type (decisions by kind).
    """
    from onward import Rulebook, fingerprint
    from onward.events import DecisionMade, SessionStarted

    book = Rulebook()
    errors: list[_SessionError] = []
    for case in cases:
        exc, _, facts = case.variants[0]
        verdict = book.decide("error", facts)
        fix = verdict.fixes[0] if verdict is not None and verdict.fixes else ""
        errors.append((case, fingerprint(exc), fix, "" if verdict is None else verdict.rule))
    rng = random.Random(seed)
    writer = SessionWriter("bench", FakeClock(), rng, errors)
    writer.to_session(SessionStarted(name="bench", host="bench-host", pid=4242, version="bench"))
    bad_patch_until = -1
    component_back_at = -1
    for k in range(tasks):
        if component_back_at == k:
            writer.component(failed=False)
            component_back_at = -1
        writer.boundary()
        if k % 150 == 75 and component_back_at < 0:
            writer.component(failed=True)
            component_back_at = k + rng.randint(20, 60)
        if rng.random() < 0.01:
            bad_patch_until = k + rng.randint(5, 15)
        writer.task(k, 0.4 if k <= bad_patch_until else 0.06)
    writer.boundary()
    by_type = Counter(
        f"DecisionMade ({r.event.kind})"
        if isinstance(r.event, DecisionMade)
        else type(r.event).__name__
        for r in writer.records
    )
    return writer.records, dict(by_type.most_common())


def folds(records: list[Recorded], repeats: int) -> dict[str, Any]:
    """Per-event time of each fold, fresh projections each repeat; the collector off."""
    from onward.projections import Projections
    from onward.projections.budget import BudgetProjection
    from onward.projections.degradation import DegradationProjection
    from onward.projections.flow import FlowProjection

    def budget() -> Callable[[], None]:
        apply = BudgetProjection().apply
        return lambda: _each(records, apply)

    def flow() -> Callable[[], None]:
        apply = FlowProjection().apply
        return lambda: _each(records, apply)

    def degradation() -> Callable[[], None]:
        apply = DegradationProjection().apply
        return lambda: _each(records, apply)

    def three() -> Callable[[], None]:
        b, f, d = BudgetProjection().apply, FlowProjection().apply, DegradationProjection().apply

        def run() -> None:
            for r in records:
                b(r)
                f(r)
                d(r)

        return run

    pages = [records[i : i + PAGE_SIZE] for i in range(0, len(records), PAGE_SIZE)]

    def host() -> Callable[[], None]:
        apply_page = Projections().apply_page

        def run() -> None:
            for page in pages:
                apply_page(page)

        return run

    def loop() -> Callable[[], None]:
        return lambda: _each(records, _nothing)

    contenders: dict[str, Callable[[], Callable[[], None]]] = {
        "three": three,
        "budget": budget,
        "flow": flow,
        "degradation": degradation,
        "apply_page": host,
        "empty_loop": loop,
    }
    progress(f"folds: {len(records):,} events x {repeats} repeats x {len(contenders)} folds")
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for repeat in range(repeats + 1):  # the first round is a warm-up
        for name, make in contenders.items():
            run = make()
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter_ns()
                run()
                elapsed = time.perf_counter_ns() - t0
            finally:
                gc.enable()
            if repeat:
                times[name].append(elapsed / len(records))
    return {name: round(statistics.median(mine) / 1e3, 4) for name, mine in times.items()}


def _each(records: list[Recorded], apply: Callable[[Recorded], None]) -> None:
    for r in records:
        apply(r)


def _nothing(r: Recorded) -> None:
    return None


# -- end to end ------------------------------------------------------------------------------


def e2e_run(variant: str, tasks: int) -> dict[str, Any]:
    """One fresh engine on memory://: a warm-up, then ``tasks`` tasks of 4 steps, timed."""
    from onward import Engine
    from onward.events import FlowStateChanged

    clock = FakeClock()
    options: dict[str, Any] = {} if variant == "default" else {"healing": False}
    starts: list[int] = []
    crossings: list[int] = []
    with Engine.open(
        "memory://", session=f"e2e-{variant}", clock=clock, sleep=clock.sleep, **options
    ) as engine:

        @engine.step()
        def fetch(url: str) -> int:
            clock.advance(0.6)
            return len(url)

        @engine.step()
        def parse(size: int) -> dict[str, int]:
            clock.advance(0.2)
            return {"size": size, "words": size // 5}

        @engine.step()
        def summarise(doc: dict[str, int]) -> str:
            clock.advance(0.9)
            return f"{doc['words']} words"

        @engine.step()
        def store(summary: str) -> bool:
            clock.advance(0.1)
            return bool(summary)

        @engine.task(name="crawl")
        def crawl(k: int) -> bool:
            starts.append(time.perf_counter_ns())
            return store(summarise(parse(fetch(f"https://example.org/page/{k}"))))

        for k in range(WARMUP_TASKS):
            engine.submit(crawl, k)
        engine.run()
        cross = engine.boundary.cross
        if variant == "no_policies":
            verdict = cross()

            def constant() -> Any:
                return verdict

            engine.boundary.cross = constant  # type: ignore[method-assign]
        else:

            def timed() -> Any:
                t0 = time.perf_counter_ns()
                result = cross()
                crossings.append(time.perf_counter_ns() - t0)
                return result

            engine.boundary.cross = timed  # type: ignore[method-assign]
        for k in range(tasks):
            engine.submit(crawl, WARMUP_TASKS + k)
        starts.clear()
        gc.collect()
        cpu0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        summary = engine.run()
        elapsed = time.perf_counter_ns() - t0
        cpu = time.thread_time_ns() - cpu0
        if summary.succeeded != tasks or summary.steps_run != tasks * STEPS_PER_TASK:
            raise SystemExit(f"e2e {variant}: the run is not as planned: {summary}")
        warm: list[int] = []
        if variant == "default":  # the same crossing again and again: caches warm, no moves
            for _ in range(500):
                t0 = time.perf_counter_ns()
                cross()
                warm.append(time.perf_counter_ns() - t0)
        moves = sum(isinstance(r.event, FlowStateChanged) for r in engine.log.read())
        state = engine.projections.flow.state(engine.session).value
    intervals = [b - a for a, b in itertools.pairwise(starts)]
    return {
        "task_ns": elapsed / tasks,
        "task_cpu_ns": cpu / tasks,
        "interval_p50_ns": statistics.median(intervals),
        "boundary_ns": sum(crossings) / tasks if crossings else None,
        "boundary_p50_ns": statistics.median(crossings) if crossings else None,
        "boundary_warm_p50_ns": statistics.median(warm) if warm else None,
        "crossings": len(crossings),
        "flow_moves": moves,
        "flow_state": state,
    }


def end_to_end(counts: dict[str, int]) -> dict[str, Any]:
    """Default judgement, healing=False and no policies, in turns; medians per task."""
    tasks, rounds = counts["e2e_tasks"], counts["e2e_rounds"]
    variants = ["default", "no_healing", "no_policies"]
    progress(f"end to end: {rounds} rounds x {len(variants)} variants x {tasks} tasks")
    for variant in variants:  # untimed: imports, first engines
        e2e_run(variant, max(10, tasks // 10))
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_ in range(rounds):
        shift = round_ % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            runs[variant].append(e2e_run(variant, tasks))

    def median(variant: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[variant]))

    figures: dict[str, Any] = {}
    for key, label in (
        ("task_cpu_ns", "task_cpu"),
        ("task_ns", "task"),
        ("interval_p50_ns", "task_p50"),
    ):
        default, plain, bare = (median(v, key) for v in variants)
        figures[f"{label}_default_us"] = _us(default)
        figures[f"{label}_no_healing_us"] = _us(plain)
        figures[f"{label}_no_policies_us"] = _us(bare)
        figures[f"{label}_default_vs_no_healing_ratio"] = round(default / plain, 3)
        figures[f"{label}_no_healing_vs_no_policies_ratio"] = round(plain / bare, 3)
    last = runs["default"][-1]
    return {
        **figures,
        "boundary_us": _us(median("default", "boundary_ns")),
        "boundary_p50_us": _us(median("default", "boundary_p50_ns")),
        "boundary_warm_p50_us": _us(median("default", "boundary_warm_p50_ns")),
        "boundary_share_of_task_cpu": round(
            median("default", "boundary_ns") / median("default", "task_cpu_ns"), 4
        ),
        "boundary_no_healing_us": _us(median("no_healing", "boundary_ns")),
        **{
            f"task_cpu_{variant}_samples_us": [_us(r["task_cpu_ns"]) for r in runs[variant]]
            for variant in variants
        },
        "e2e_flow_moves": last["flow_moves"],
        "e2e_flow_state": last["flow_state"],
        "e2e_crossings": last["crossings"],
    }


# -- the run ---------------------------------------------------------------------------------


def measure(directory: Path, counts: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """Every figure beside its floor, the ratios, the details, and the counts."""
    rng = random.Random(SEED)
    progress("error kinds: real exceptions, facts from Healer._rule")
    kinds = error_kinds(directory, rng)
    overhead = timer_overhead_ns()
    ruled = rule_decisions(kinds, counts)
    scored = confidence(counts)
    judged = judge_decisions(counts)
    progress(f"session: {counts['session_tasks']} tasks")
    records, composition = realistic_session(kinds, counts["session_tasks"], SEED + 1)
    folded = folds(records, counts["fold_repeats"])
    ended = end_to_end(counts)

    low, _ = REPLACED_DESIGN_DECISION_MS
    ratio = _bench.ratio
    result: dict[str, Any] = {
        "rule_decision_us": ruled["rule_decision_us"],
        "rule_decision_p99_us": ruled["rule_decision_p99_us"],
        "naive_rule_decision_us": ruled["naive_rule_decision_us"],
        "naive_vs_rule_decision_ratio": ratio(
            ruled["naive_rule_decision_us"], ruled["rule_decision_us"]
        ),
        "replaced_design_decision_ms": list(REPLACED_DESIGN_DECISION_MS),
        "replaced_design_vs_rule_decision_ratio": ratio(low * 1e3, ruled["rule_decision_us"]),
        "confidence_us": scored["confidence_us"],
        "bare_call_7_args_us": scored["bare_call_7_args_us"],
        "projection_update_us": folded["three"],
        "apply_page_us": folded["apply_page"],
    }
    result["details"] = {
        **{k: v for k, v in ruled.items() if k not in result},
        **{k: v for k, v in scored.items() if k not in result},
        **judged,
        "budget_update_us": folded["budget"],
        "flow_update_us": folded["flow"],
        "degradation_update_us": folded["degradation"],
        "fold_loop_us": folded["empty_loop"],
        "session_events": len(records),
        "session_composition": composition,
        **ended,
        "timer_overhead_ns": overhead,
    }
    result["notes"] = [
        "replaced_design_decision_ms is a stated constant (the design onward replaces), "
        "not measured; its ratio uses the low end (3 ms)",
        "each per-sample figure includes one perf_counter_ns pair (timer_overhead_ns)",
        "healing=False keeps the task-boundary policies (budget, flow, components): "
        "task_*_no_policies_us also replace boundary.cross() by its constant verdict; the "
        "end-to-end ratios are of CPU time (thread_time), as other processes share the CPUs",
    ]
    result["counts"] = {
        **counts,
        "variants_per_kind": VARIANTS_PER_KIND,
        "steps_per_task": STEPS_PER_TASK,
        "warmup_tasks": WARMUP_TASKS,
        "page_size": PAGE_SIZE,
        "seed": SEED,
    }
    return result


def details(result: dict[str, Any]) -> list[str]:
    """The decisions by kind and by action, the session folded, the end-to-end runs."""
    details = result["details"]
    low, high = result["replaced_design_decision_ms"]
    lines = [
        f"{details['rules_in_force']} rules in force, {details['error_facts']} error facts; the"
        f" design onward replaces took {low:g}-{high:g} ms a decision (stated, not measured):"
        f" {result['replaced_design_vs_rule_decision_ratio']:,.0f}x the rulebook's p50",
        f"  {'kind':<26}{'rule':<32}{'p50 µs':>9}{'p99 µs':>9}{'naive µs':>10}{'ratio':>8}",
    ]
    for scenario in ("rule", "task_completed", "action"):
        for label, k in details[f"{scenario}_decision_per_kind"].items():
            lines.append(
                f"  {label:<26}{k['rule']:<32}{k['p50_us']:>9.2f}{k['p99_us']:>9.2f}"
                f"{k['naive_p50_us']:>10.2f}{k['p50_us'] / k['naive_p50_us']:>8.2f}"
            )
    floor = details["naive_action_decision_us"]
    lines.append(f"  Judge.decide by action (ratio to the naive action decision, {floor:.2f} µs)")
    for name, a in details["judge_decide_per_action"].items():
        lines.append(
            f"  {name:<26}{a['strategy']:<32}{a['p50_us']:>9.2f}{a['p99_us']:>9.2f}"
            f"{'':>10}{a['p50_us'] / floor:>8.2f}"
        )
    composition = ", ".join(f"{k} {v}" for k, v in details["session_composition"].items())
    lines.append(f"folds: {details['session_events']:,} events of one session: {composition}")
    lines.append(
        f"end to end: memory://, {STEPS_PER_TASK} steps a task; boundary.cross() takes "
        f"{details['boundary_share_of_task_cpu']:.1%} of a task's CPU time; "
        f"{details['e2e_flow_moves']} flow moves, ended {details['e2e_flow_state']}"
    )
    return lines


BENCHMARK = _bench.Benchmark(__doc__, FULL, QUICK, measure, FIGURES, TARGETS, details)

if __name__ == "__main__":
    sys.exit(BENCHMARK.main())
