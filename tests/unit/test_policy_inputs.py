"""What the healing and judgement policies accept: every field checked as the policy is built,
so that no value the log cannot record (NaN, infinity) and no limit the engine cannot count up to
gets as far as a session; and the engine's policy options checked when it opens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine
from onward.events import Jitter, UsageError, open_log
from onward.healing.breaker import BreakerPolicy
from onward.healing.retry import RetryBudget, RetryPolicies, RetryPolicy, RetryRule
from onward.judgement.budget import ErrorBudget
from onward.judgement.confidence import Thresholds
from onward.judgement.degradation import Component, Workaround
from onward.judgement.flow import FlowPolicy
from onward.projections.breakers import RECENT_LIMIT
from onward.projections.budget import ERRORS_KEPT
from onward.projections.errors import RETRY_TIMES_LIMIT
from tests.conftest import FakeClock

NAN = float("nan")
INF = float("inf")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


# -- every policy refuses what it cannot use, naming the field and the value --------------

#: (policy, its settings, what the message says): the field, then the value as shown.
REFUSED: list[tuple[type[Any], dict[str, Any], str]] = [
    # non-finite numbers, which the log would record as null (a damaged stream)
    (RetryPolicy, {"max_attempts": INF}, "max_attempts.*inf"),
    (RetryPolicy, {"max_attempts": NAN}, "max_attempts.*nan"),
    (BreakerPolicy, {"cooldown": INF}, "cooldown.*inf"),
    (BreakerPolicy, {"cooldown": NAN}, "cooldown.*nan"),
    (BreakerPolicy, {"failure_rate": NAN}, "failure_rate.*nan"),
    (RetryBudget, {"limit": NAN}, "limit.*nan"),
    (ErrorBudget, {"limit": NAN}, "limit.*nan"),
    (ErrorBudget, {"limit": INF}, "limit.*inf"),
    (ErrorBudget, {"per_type": {"X": NAN}}, r"per_type\['X'\].*nan"),
    (FlowPolicy, {"warm_actions": NAN}, "warm_actions.*nan"),
    (Thresholds, {"immediate": NAN}, "immediate.*nan"),
    (Thresholds, {"step": NAN}, "step.*nan"),
    # out of range
    (BreakerPolicy, {"failures": 0}, "failures.* 0"),
    (BreakerPolicy, {"failures": -3}, "failures.*-3"),
    (BreakerPolicy, {"failures": 10**400}, "failures.*1000000"),
    (BreakerPolicy, {"cooldown": -60.0}, "cooldown.*-60.0"),
    (BreakerPolicy, {"failure_rate": 2.0}, "failure_rate.*2.0"),
    (BreakerPolicy, {"failure_rate": 0.0}, "failure_rate.*0.0"),
    (BreakerPolicy, {"window": 0}, "window.* 0"),
    (BreakerPolicy, {"min_calls": -1}, "min_calls.*-1"),
    (BreakerPolicy, {"min_calls": 0}, "min_calls.* 0"),
    (RetryPolicy, {"max_attempts": 10**100}, "max_attempts"),
    (RetryBudget, {"limit": -0.5}, "limit.*-0.5"),
    # a duration no clock can date (past ten years): it failed later, as an OverflowError
    (BreakerPolicy, {"cooldown": 1e300}, "cooldown.*1e\\+300"),
    (ErrorBudget, {"slow_down": 1e300}, "slow_down.*1e\\+300"),
    (ErrorBudget, {"window": 1e12}, "window.*1000000000000.0"),
    (RetryPolicy, {"cap": 1e300}, "cap.*1e\\+300"),
    (RetryPolicy, {"base": 1e300, "cap": 1e300}, "base.*1e\\+300"),
    (RetryBudget, {"window": 1e300}, "window.*1e\\+300"),
    # a fraction where a count is meant
    (RetryPolicy, {"max_attempts": 2.5}, "max_attempts.*2.5"),
    (ErrorBudget, {"limit": 1.5}, "limit.*1.5"),
    (Thresholds, {"streak": 2.5}, "streak.*2.5"),
    # a bool where a number is meant
    (RetryPolicy, {"max_attempts": True}, "max_attempts.*True"),
    (RetryPolicy, {"base": True}, "base.*True"),
    (BreakerPolicy, {"failures": True}, "failures.*True"),
    (BreakerPolicy, {"cooldown": False}, "cooldown.*False"),
    (RetryBudget, {"limit": True}, "limit.*True"),
    (RetryBudget, {"window": True}, "window.*True"),
    (ErrorBudget, {"window": True}, "window.*True"),
    (ErrorBudget, {"slow_down": True}, "slow_down.*True"),
    (FlowPolicy, {"max_error_rate": True, "disrupted_error_rate": True}, "max_error_rate.*True"),
    (FlowPolicy, {"warm_actions": True}, "warm_actions.*True"),
    (Thresholds, {"streak": True}, "streak.*True"),
    # another type
    (RetryPolicy, {"max_attempts": "3"}, "max_attempts.*str"),
    (RetryPolicy, {"name": 3}, "name.*3"),
    (RetryPolicy, {"retry_on": "TimeoutError"}, "retry_on.*str"),
    (RetryPolicy, {"never": ("Type Error",)}, "never.*'Type Error'"),
    (BreakerPolicy, {"failures": "5"}, "failures.*str"),
    (RetryBudget, {"limit": "10"}, "limit.*str"),
    (ErrorBudget, {"per_type": [("X", 1)]}, "per_type.*list"),
    (ErrorBudget, {"per_type": {3: 1}}, "per_type.*3"),
    (FlowPolicy, {"low_impacts": "low"}, "low_impacts.*str"),
    (FlowPolicy, {"low_impacts": ("low", 3)}, "low_impacts"),
    (Thresholds, {"monitored": "0.7"}, "monitored.*str"),
]


@pytest.mark.parametrize(("policy", "settings", "message"), REFUSED)
def test_a_policy_refuses_a_value_it_cannot_use(
    policy: type[Any], settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        policy(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "x", "quality_loss": True}, "quality_loss.*True"),
        ({"name": "x", "quality_loss": NAN}, "quality_loss.*nan"),
        ({"name": 3, "quality_loss": 0.5}, "name.*3"),
        ({"name": "x", "quality_loss": 0.5, "description": 3}, "description.*3"),
    ],
)
def test_a_workaround_refuses_a_value_it_cannot_use(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Workaround(**settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": 3}, "name.*3"),
        ({"name": "db", "check": 3}, "check.*3"),
        ({"name": "db", "workarounds": Workaround(name="x", quality_loss=0.5)}, "workarounds"),
        ({"name": "db", "workarounds": ("cache",)}, "workarounds"),
        ({"name": "db", "description": 3}, "description.*3"),
    ],
)
def test_a_component_refuses_a_value_it_cannot_use(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Component(**settings)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RetryRule(3, RetryPolicy()), "match must be a str"),  # type: ignore[arg-type]
        (lambda: RetryRule("v1-not hex", RetryPolicy()), "match must be"),
        (lambda: RetryRule("TimeoutError", BreakerPolicy()), "policy must be a RetryPolicy"),  # type: ignore[arg-type]
        (lambda: RetryPolicies(BreakerPolicy()), "default must be a RetryPolicy"),  # type: ignore[arg-type]
        (lambda: RetryPolicies(rules=[RetryPolicy()]), "rules must hold RetryRule"),  # type: ignore[list-item]
        (lambda: RetryPolicies(rules=3), "rules must be an iterable"),  # type: ignore[arg-type]
    ],
)
def test_retry_rules_refuse_what_is_no_rule(build: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build()


def test_a_policy_decoded_from_json_is_checked_too() -> None:
    with pytest.raises(msgspec.ValidationError, match="window"):
        msgspec.json.decode(b'{"window": 50}', type=BreakerPolicy)


def test_the_values_at_the_edges_are_accepted() -> None:
    RetryPolicy(max_attempts=1_000_000)
    BreakerPolicy(failures=1_000_000, failure_rate=1.0, window=RECENT_LIMIT + 1, cooldown=0.0)
    BreakerPolicy(window=5, min_calls=5)
    RetryBudget(limit=RETRY_TIMES_LIMIT)
    RetryBudget(limit=0)
    ErrorBudget(limit=ERRORS_KEPT, per_type={"TimeoutError": ERRORS_KEPT})
    Thresholds(streak=1)
    Workaround(name="x", quality_loss=1)


def test_lists_of_names_are_kept_as_tuples() -> None:
    policy = RetryPolicy(retry_on=["KeyError"], never=[])  # type: ignore[arg-type]
    assert (policy.retry_on, policy.never) == (("KeyError",), ())
    assert hash(RetryPolicies(policy)) == hash(
        RetryPolicies(RetryPolicy(retry_on=("KeyError",), never=()))
    )
    assert FlowPolicy(low_impacts=["low"]).low_impacts == ("low",)  # type: ignore[arg-type]
    ladder = [Workaround(name="cache", quality_loss=0.2)]
    assert Component(name="db", workarounds=ladder).workarounds == tuple(ladder)  # type: ignore[arg-type]


# -- retrying without end ---------------------------------------------------------------


def test_retry_forever_is_refused_with_the_supported_way_in_the_message() -> None:
    with pytest.raises(
        UsageError,
        match=r"max_attempts must be an int in \[1, 1000000\], not inf.*"
        r"to retry without end, give max_attempts=1000000",
    ):
        RetryPolicy(max_attempts=INF)


def test_the_largest_max_attempts_retries_and_records_a_log_that_folds(
    db: str, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=1_000_000, base=0.01, cap=0.01, jitter=Jitter.NONE)
    calls: list[int] = []
    with Engine.open(
        db, session="s", clock=clock, sleep=clock.advance, retries=RetryPolicies(policy)
    ) as engine:

        @engine.step()
        def call() -> str:
            calls.append(1)
            if len(calls) <= 5:
                raise ConnectionError("down")
            return "up"

        @engine.task()
        def job() -> str:
            return call()

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == "up"
        assert not engine.refresh().damaged
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as reopened:
        assert not reopened.projections.damaged
        assert reopened.task_view(task_id).state == "succeeded"


# -- the breaker's window and the budgets' limits fit what the projections count ----------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"window": RECENT_LIMIT + 2}, rf"window must be an int in \[1, {RECENT_LIMIT + 1}\]"),
        ({"window": 50, "min_calls": 30}, "keeps its last 20 outcomes"),
        ({"window": 10, "min_calls": 11}, r"min_calls must be an int in \[1, 10\]"),
    ],
)
def test_a_breaker_window_longer_than_it_can_count_is_refused(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        BreakerPolicy(**settings)


def test_the_longest_breaker_window_opens_on_its_failure_rate(db: str, clock: FakeClock) -> None:
    longest = RECENT_LIMIT + 1
    policy = BreakerPolicy(failures=1000, failure_rate=0.5, window=longest, min_calls=longest)
    calls: list[int] = []
    with Engine.open(
        db,
        session="s",
        clock=clock,
        sleep=clock.advance,
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
        breakers=policy,
    ) as engine:

        @engine.step(breaker="dep")
        def call() -> int:
            calls.append(1)
            if len(calls) % 4:  # three calls in four fail
                raise ConnectionError("down")
            return len(calls)

        @engine.task()
        def job() -> str:
            try:
                return str(call())
            except ConnectionError:
                return "failed"

        for _ in range(longest + 5):
            engine.submit(job)
        engine.run(max_runs=longest)
        breaker = engine.refresh().breakers.get("dep")
        assert breaker.state == "open"
        assert breaker.calls == longest  # it opened on the call that filled the window


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ErrorBudget(limit=ERRORS_KEPT + 1), "limit must be an int in .1, 1000."),
        (lambda: ErrorBudget(limit=1500), "counts its last 1000 failed tries"),
        (lambda: ErrorBudget(per_type={"E": ERRORS_KEPT + 1}), r"per_type\['E'\]"),
        (lambda: RetryBudget(limit=RETRY_TIMES_LIMIT + 1), "counts its last 1000 retries"),
    ],
)
def test_a_budget_larger_than_the_errors_counted_is_refused(build: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build()


# -- the engine's options ------------------------------------------------------------------

WRONG_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"retries": RetryPolicy(max_attempts=5)}, r"retries must be a RetryPolicies.*RetryPolicies\("),
    ({"breakers": {"failures": 3, "cooldown": 10}}, r"breakers must be a BreakerPolicy.*\*\*"),
    ({"budget": {"limit": 3}}, "budget must be an ErrorBudget"),
    ({"retry_budget": 30}, "retry_budget must be a RetryBudget"),
    ({"flow": {"flowing_rate": 1.0}}, "flow must be a FlowPolicy"),
    ({"thresholds": {"immediate": 0.95}}, "thresholds must be a Thresholds"),
    ({"components": [Component(name="db")]}, "components must be a Components"),
    ({"rulebook": "rules.toml"}, "rulebook must be a Rulebook"),
    ({"fixes": {}}, "fixes must be a FixRegistry"),
    ({"lease": INF}, "lease"),
    ({"lease": NAN}, "lease"),
    ({"lease": "300"}, "lease"),
    ({"lease": 0}, "lease must be positive"),
    # Past what a thread can wait for (the heartbeat waits a third of it): at most ten years.
    ({"lease": 1e11}, "lease must be positive and at most"),
    ({"outage_tolerance": 10**400}, "outage_tolerance must be seconds in"),
    ({"outage_tolerance": True}, "outage_tolerance"),
    ({"busy_timeout": 10**400}, "busy_timeout must be"),
    ({"busy_timeout": True}, "busy_timeout must be"),
    ({"payload_limit": 0}, "payload_limit must be a positive int"),
    ({"checkpoint_every": "x"}, "checkpoint_every must be an int >= 0"),
    ({"checkpoint_every": -1}, "checkpoint_every must be an int >= 0"),
    ({"checkpoint_every": None}, "checkpoint_every must be an int >= 0"),
    ({"host": True}, "host must be a printable"),
    ({"host": "a\x00b"}, "host must be a printable"),
    ({"origin": 1}, "origin must be a printable"),
    ({"origin": ""}, "origin must be a printable"),
    ({"codec": True}, "codec must be a Codec"),
    ({"redactor": 1}, "redactor must be a Redactor"),
    ({"synchronous": []}, "synchronous must be"),
    ({"seed": []}, "seed must be an int"),
    ({"sleep": "x"}, "sleep must be a function"),
    ({"clock": 1}, "clock must be a function"),
    ({"on_interruption": 1}, "on_interruption must be a function"),
    ({"healing": 1}, "healing must be True or False"),
    ({"verify_reads": "yes"}, "verify_reads must be True or False"),
    ({"create": None}, "create must be True or False"),
    ({"inline_limit": 1.5}, "inline_limit must be a positive int"),
]


@pytest.mark.parametrize("timeout", [1e11, 10**400, True, 0, -1.0, NAN, INF, "5"])
@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_step_timeout_out_of_range_is_refused_at_registration(
    db: str, timeout: Any, kind: str
) -> None:
    """A plain step's timeout is a thread's wait: one past what it can wait for failed every
    call with an ``OverflowError`` after running the body."""
    with Engine.open(db, session="s") as engine:
        if kind == "plain":

            def body() -> int:
                return 1

        else:

            async def body() -> int:  # type: ignore[misc]
                return 1

        with pytest.raises(UsageError, match="timeout must be positive seconds"):
            engine.step(timeout=timeout)(body)


@pytest.mark.parametrize(("options", "message"), WRONG_OPTIONS)
def test_engine_open_refuses_an_option_of_the_wrong_kind_before_creating_the_log(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    path = tmp_path / "work.db"
    with pytest.raises(UsageError, match=message):
        Engine.open(f"sqlite:///{path}", session="s", **options)
    assert not os.path.exists(path)


@pytest.mark.parametrize(("options", "message"), WRONG_OPTIONS[:3])
def test_engine_refuses_an_option_of_the_wrong_kind(
    db: str, options: dict[str, Any], message: str
) -> None:
    log = open_log(db)
    try:
        with pytest.raises(UsageError, match=message):
            Engine(log, session="s", **options)
    finally:
        log.close()


# -- learning a fix for a signature ----------------------------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        "v1-7e99",
        "vX-not a sig",
        "v1-",
        "v-",
        "v1-0123456789ABCDEF",
        "v1-0123456789abcdeg",
        "x1-0123456789abcdef",
    ],
)
def test_learn_refuses_what_is_not_a_whole_signature_id(db: str, signature: str) -> None:
    with Engine.open(db, session="s") as engine:
        with pytest.raises(UsageError, match="not a whole error signature id"):
            engine.learn(signature, "use-declared-default")
        assert engine.log.read_stream("learning") == []


def test_learn_takes_a_whole_signature_id(db: str) -> None:
    signature = "v1-0123456789abcdef"
    with Engine.open(db, session="s") as engine:
        engine.learn(signature, "use-declared-default")
        assert engine.refresh().errors.learned(signature) == ("use-declared-default",)


def test_serve_refuses_a_stop_that_is_no_event(db: str) -> None:
    """``serve(stop=5)`` failed with an ``AttributeError`` (and a watch thread's traceback)."""
    import asyncio
    import threading

    with Engine.open(db, session="s") as engine:
        with pytest.raises(UsageError, match=r"stop must be a threading\.Event"):
            engine.serve(stop=5, handle_signals=False)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match=r"stop must be an asyncio\.Event"):
            asyncio.run(engine.serve_async(stop=threading.Event(), handle_signals=False))  # type: ignore[arg-type]
