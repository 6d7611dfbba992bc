"""Retry policies: backoff and jitter, which errors retry, rule precedence, adaptive limits and
the retry budget. Pure functions: no clock, no sleep; randomness comes from seeded generators.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import SIGNATURE_VERSION
from onward.events import Jitter, UsageError
from onward.healing.retry import (
    DEFAULT_NEVER,
    DEFAULT_TRANSIENT,
    RetryBudget,
    RetryDecision,
    RetryPolicies,
    RetryPolicy,
    RetryRule,
    adaptive_attempts,
    decide_retry,
)

NOW = 1_700_000_000.0
CONNECTION_RESET_MRO = ["ConnectionError", "OSError", "Exception", "BaseException", "object"]


def rng(seed: int = 7) -> random.Random:
    return random.Random(seed)


# -- delays -------------------------------------------------------------------------------------


def test_no_jitter_is_exponential_and_capped() -> None:
    policy = RetryPolicy(base=1.0, multiplier=2.0, cap=10.0, jitter=Jitter.NONE)
    delays = [policy.delay(n, rng=rng()) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_no_jitter_does_not_draw_from_the_rng() -> None:
    source = rng()
    state = source.getstate()
    RetryPolicy(jitter=Jitter.NONE).delay(3, rng=source)
    assert source.getstate() == state


def test_multiplier_one_is_a_constant_delay() -> None:
    policy = RetryPolicy(base=3.0, multiplier=1.0, jitter=Jitter.NONE)
    assert {policy.delay(n, rng=rng()) for n in range(1, 20)} == {3.0}


def test_a_huge_attempt_number_gives_the_cap_not_an_overflow() -> None:
    policy = RetryPolicy(base=1.0, multiplier=10.0, cap=60.0, jitter=Jitter.NONE)
    assert policy.delay(100_000, rng=rng()) == 60.0


@pytest.mark.parametrize("jitter", list(Jitter))
def test_seeded_rng_gives_reproducible_delays(jitter: Jitter) -> None:
    policy = RetryPolicy(jitter=jitter)
    first = [policy.delay(n, rng=rng(42), previous=2.0) for n in range(1, 8)]
    second = [policy.delay(n, rng=rng(42), previous=2.0) for n in range(1, 8)]
    assert first == second


def test_full_jitter_is_uniform_below_the_exponential_delay() -> None:
    policy = RetryPolicy(base=1.0, cap=100.0, jitter=Jitter.FULL)
    source = rng()
    delays = [policy.delay(4, rng=source) for _ in range(2000)]  # exponential: 8 s
    assert all(0.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 0.5
    assert max(delays) > 7.5
    assert 3.5 < sum(delays) / len(delays) < 4.5


def test_equal_jitter_keeps_at_least_half_the_delay() -> None:
    policy = RetryPolicy(base=1.0, cap=100.0, jitter=Jitter.EQUAL)
    source = rng()
    delays = [policy.delay(4, rng=source) for _ in range(2000)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert min(delays) < 4.5
    assert max(delays) > 7.5


def test_decorrelated_jitter_grows_from_the_previous_delay() -> None:
    policy = RetryPolicy(base=1.0, cap=50.0, jitter=Jitter.DECORRELATED)
    source = rng()
    first = [policy.delay(1, rng=source) for _ in range(500)]
    assert all(1.0 <= d <= 3.0 for d in first)
    later = [policy.delay(5, rng=source, previous=10.0) for _ in range(500)]
    assert all(1.0 <= d <= 30.0 for d in later)
    assert max(later) > 25.0
    capped = [policy.delay(5, rng=source, previous=40.0) for _ in range(500)]
    assert all(1.0 <= d <= 50.0 for d in capped)
    assert capped.count(50.0) > 100


def test_decorrelated_jitter_treats_a_short_previous_delay_as_base() -> None:
    policy = RetryPolicy(base=2.0, jitter=Jitter.DECORRELATED)
    assert policy.delay(3, rng=rng(1), previous=0.0) == policy.delay(3, rng=rng(1))


def test_a_delay_chain_replayed_from_a_seed_is_the_same() -> None:
    policy = RetryPolicy(jitter=Jitter.DECORRELATED)

    def chain(seed: int) -> list[float]:
        source, previous, out = rng(seed), None, []
        for attempt in range(1, 10):
            previous = policy.delay(attempt, rng=source, previous=previous)
            out.append(previous)
        return out

    assert chain(3) == chain(3)
    assert chain(3) != chain(4)


@pytest.mark.parametrize(
    ("attempt", "previous", "message"),
    [
        (0, None, "attempt must be at least 1"),
        (-2, None, "attempt must be at least 1"),
        (1, -1.0, "previous delay"),
        (1, float("nan"), "previous delay"),
        (1, float("inf"), "previous delay"),
    ],
)
def test_delay_refuses_bad_arguments(attempt: int, previous: float | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        RetryPolicy(name="api").delay(attempt, rng=rng(), previous=previous)


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1, not 0"),
        ({"base": 0.0}, "base must be a positive number"),
        ({"base": -1.0}, "base must be a positive number"),
        ({"base": float("nan")}, "base must be a positive number"),
        ({"multiplier": 0.5}, "multiplier must be at least 1, not 0.5"),
        ({"multiplier": float("inf")}, "multiplier must be at least 1"),
        ({"base": 10.0, "cap": 5.0}, r"cap must be at least base \(10.0\)"),
        ({"cap": float("inf")}, "cap must be at least base"),
        ({"jitter": "sometimes"}, "unknown jitter 'sometimes'"),
        ({"retry_on": ("TypeError",)}, "TypeError both in retry_on and never"),
        ({"retry_on": ("builtins.NameError",)}, "builtins.NameError both in retry_on and never"),
    ],
)
def test_policy_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        RetryPolicy(name="api", **fields)
    assert "retry policy 'api'" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_policy_validation_runs_on_decode_too() -> None:
    # msgspec reports a failed __post_init__ as a ValidationError, with our message.
    with pytest.raises(msgspec.ValidationError, match="max_attempts must be at least 1"):
        msgspec.json.decode(b'{"max_attempts": 0}', type=RetryPolicy)


def test_policy_round_trips_through_json() -> None:
    policy = RetryPolicy(name="api", jitter=Jitter.EQUAL, retry_on=("HTTPStatusError",))
    assert msgspec.json.decode(msgspec.json.encode(policy), type=RetryPolicy) == policy


def test_a_jitter_given_as_its_string_value_works() -> None:
    policy = RetryPolicy(jitter="none")  # type: ignore[arg-type]
    assert policy.delay(2, rng=rng()) == 2.0


def test_a_cap_equal_to_base_is_allowed() -> None:
    assert RetryPolicy(base=5.0, cap=5.0, jitter=Jitter.NONE).delay(9, rng=rng()) == 5.0


@pytest.mark.parametrize(("limit", "window"), [(-1, 60.0), (5, 0.0), (5, -1.0), (5, float("nan"))])
def test_budget_validation(limit: int, window: float) -> None:
    with pytest.raises(UsageError, match="retry budget"):
        RetryBudget(limit=limit, window=window)


@pytest.mark.parametrize("match", ["", "not a name", "1Error", "Error.", "v-1"])
def test_rule_validation(match: str) -> None:
    with pytest.raises(UsageError, match="match must be an error type name"):
        RetryRule(match, RetryPolicy())


@pytest.mark.parametrize("written", ["v{next}-3f2a", "v0{own}-3f2a"])
def test_a_rule_for_another_signature_format_is_kept_and_said_to_match_nothing(
    caplog: pytest.LogCaptureFixture, written: str
) -> None:
    """A rule names a signature of another format than this onward computes (written for an
    older onward, before SIGNATURE_VERSION changed, or for a newer one sharing the log; or with
    a version no onward writes, a leading zero): it is kept, but it can match no error here,
    and that is said when the rule is made."""
    other = written.format(next=SIGNATURE_VERSION + 1, own=SIGNATURE_VERSION)
    own = f"v{SIGNATURE_VERSION}-3f2a"
    with caplog.at_level(logging.WARNING, logger="onward"):
        RetryRule(own, RetryPolicy())
        assert caplog.records == []
        policies = RetryPolicies(rules=[RetryRule(other, RetryPolicy(max_attempts=9))])
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert other in record.getMessage()
    assert f"computes v{SIGNATURE_VERSION} signatures" in record.getMessage()
    assert policies.rule_for("TimeoutError", (), own + "0" * 12) is None


# -- which errors retry -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error_type",
    ["TimeoutError", "builtins.TimeoutError", "sqlite3.OperationalError", "ConnectionResetError"],
)
def test_transient_errors_retry(error_type: str) -> None:
    assert RetryPolicy().retries(error_type)


@pytest.mark.parametrize(
    "error_type", ["TypeError", "builtins.SyntaxError", "KeyboardInterrupt", "ValueError"]
)
def test_other_errors_do_not_retry(error_type: str) -> None:
    assert not RetryPolicy().retries(error_type)


def test_memory_errors_are_left_to_a_fix_not_refused_outright() -> None:
    assert "MemoryError" not in DEFAULT_NEVER
    assert RetryPolicy(retry_on=("MemoryError",)).retries("MemoryError")


def test_defaults_do_not_overlap() -> None:
    assert not set(DEFAULT_TRANSIENT) & set(DEFAULT_NEVER)


def test_a_base_class_in_the_mro_makes_a_subclass_transient() -> None:
    assert RetryPolicy().retries("requests.exceptions.ProxyError", ["ConnectionError", "OSError"])


def test_the_nearest_name_in_the_mro_decides() -> None:
    policy = RetryPolicy(never=("OSError",))
    assert policy.retries("ConnectionResetError", CONNECTION_RESET_MRO)
    assert not policy.retries("FileNotFoundError", ["OSError", "Exception"])
    # A never-retried subclass of a transient type.
    assert not RetryPolicy(never=("MyTimeout",)).retries("MyTimeout", ["TimeoutError"])


def test_never_beats_transient_for_the_same_name() -> None:
    assert not RetryPolicy(never=("TimeoutError",)).retries("TimeoutError")


def test_retry_on_adds_types() -> None:
    policy = RetryPolicy(retry_on=("HTTPStatusError",))
    assert policy.retries("httpx.HTTPStatusError")
    assert not RetryPolicy().retries("httpx.HTTPStatusError")


def test_qualified_names_match_only_their_own_module() -> None:
    policy = RetryPolicy(transient=("sqlite3.OperationalError",))
    assert policy.retries("sqlite3.OperationalError")
    assert policy.retries("OperationalError")  # the engine may record bare names
    assert not policy.retries("psycopg.OperationalError")


def test_an_empty_transient_list_retries_only_retry_on() -> None:
    policy = RetryPolicy(transient=(), retry_on=("Flaky",))
    assert not policy.retries("TimeoutError")
    assert policy.retries("Flaky")


# -- rule precedence ----------------------------------------------------------------------------

DEFAULT = RetryPolicy(name="default")
BY_SIGNATURE = RetryPolicy(name="by-signature")
BY_LONGER_SIGNATURE = RetryPolicy(name="by-longer-signature")
BY_TYPE = RetryPolicy(name="by-type")
BY_BASE = RetryPolicy(name="by-base")
BY_FAR_BASE = RetryPolicy(name="by-far-base")

POLICIES = RetryPolicies(
    DEFAULT,
    [
        RetryRule("OSError", BY_FAR_BASE),
        RetryRule("ConnectionError", BY_BASE),
        RetryRule("ConnectionResetError", BY_TYPE),
        RetryRule("v1-ab", BY_SIGNATURE),
        RetryRule("v1-abcd", BY_LONGER_SIGNATURE),
    ],
)


@pytest.mark.parametrize(
    ("error_type", "signature", "expected"),
    [
        ("ConnectionResetError", "v1-abcdef", BY_LONGER_SIGNATURE),
        ("ConnectionResetError", "v1-abzz", BY_SIGNATURE),
        ("ValueError", "v1-ab00", BY_SIGNATURE),
        ("ConnectionResetError", "v1-ffff", BY_TYPE),
        ("builtins.ConnectionResetError", "", BY_TYPE),
        ("ConnectionResetError", "", BY_TYPE),
        ("BrokenPipeError", "", BY_BASE),
        ("FileNotFoundError", "", BY_FAR_BASE),
        ("ValueError", "", DEFAULT),
        ("ValueError", "v2-ab", DEFAULT),
    ],
)
def test_policy_precedence(error_type: str, signature: str, expected: RetryPolicy) -> None:
    mro = {
        "ConnectionResetError": CONNECTION_RESET_MRO,
        "builtins.ConnectionResetError": ["builtins.ConnectionError", "builtins.OSError"],
        "BrokenPipeError": CONNECTION_RESET_MRO,
        "FileNotFoundError": ["OSError", "Exception"],
        "ValueError": ["Exception"],
    }[error_type]
    assert POLICIES.policy_for(error_type, mro, signature) == expected


def test_the_nearest_base_wins_whatever_the_rule_order() -> None:
    reordered = RetryPolicies(DEFAULT, reversed(POLICIES.rules))
    assert reordered.policy_for("BrokenPipeError", CONNECTION_RESET_MRO, "") == BY_BASE


def test_rule_for_names_the_matching_rule() -> None:
    rule = POLICIES.rule_for("BrokenPipeError", CONNECTION_RESET_MRO, "")
    assert rule == RetryRule("ConnectionError", BY_BASE)
    assert not rule.by_signature
    assert POLICIES.rule_for("ValueError", [], "") is None


def test_an_exact_name_beats_a_bare_one_for_the_same_type() -> None:
    qualified = RetryPolicy(name="sqlite")
    bare = RetryPolicy(name="any-operational")
    policies = RetryPolicies(rules=[RetryRule("sqlite3.OperationalError", qualified)]).with_rule(
        "OperationalError", bare
    )
    assert policies.policy_for("sqlite3.OperationalError", [], "") == qualified
    assert policies.policy_for("psycopg.OperationalError", [], "") == bare


def test_with_rule_returns_a_copy_and_replaces_the_same_match() -> None:
    first = RetryPolicies().with_rule("TimeoutError", BY_TYPE)
    second = first.with_rule("TimeoutError", BY_BASE)
    assert first.policy_for("TimeoutError", [], "") == BY_TYPE
    assert second.policy_for("TimeoutError", [], "") == BY_BASE
    assert len(second.rules) == 1
    assert first != second
    assert first == RetryPolicies(rules=[RetryRule("TimeoutError", BY_TYPE)])
    assert hash(first) == hash(RetryPolicies(rules=[RetryRule("TimeoutError", BY_TYPE)]))
    assert "TimeoutError" in repr(first)


def test_the_default_policy_is_the_plain_one() -> None:
    assert RetryPolicies().default == RetryPolicy()


def test_with_rule_validates_the_match() -> None:
    with pytest.raises(UsageError, match="'two words'"):
        RetryPolicies().with_rule("two words", DEFAULT)


# -- adaptive limits ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "successes", "expected"),
    [
        (0, 0, 3),  # no history: the policy as written
        (4, 0, 3),  # still too few observed
        (5, 0, 1),  # rate 1/7: retrying does not work
        (10, 1, 1),  # rate 2/12 = 0.17
        (8, 0, 1),
        (10, 2, 2),  # rate 3/12 = 0.25: ceil(1.5) = 2
        (10, 3, 2),  # rate 4/12 = 0.33: ceil(2.0) = 2
        (10, 4, 3),  # rate 5/12 = 0.42: ceil(2.5) = 3
        (8, 4, 3),  # rate 5/10 = 0.5: the policy as written
        (10, 9, 3),  # rate 10/12 = 0.83
        (8, 8, 5),  # rate 9/10 = 0.9: two more
        (100, 99, 5),
    ],
)
def test_adaptive_rule_table(retries: int, successes: int, expected: int) -> None:
    policy = RetryPolicy(max_attempts=3)
    assert adaptive_attempts(policy, retries=retries, successes=successes) == expected


def test_adaptive_rule_never_lifts_a_policy_without_retries() -> None:
    policy = RetryPolicy(max_attempts=1)
    for retries, successes in [(0, 0), (10, 3), (100, 100)]:
        assert adaptive_attempts(policy, retries=retries, successes=successes) == 1


def test_adaptive_middle_band_keeps_at_least_one_retry_and_at_most_the_policy() -> None:
    two = RetryPolicy(max_attempts=2)
    assert adaptive_attempts(two, retries=10, successes=2) == 2
    ten = RetryPolicy(max_attempts=10)
    assert adaptive_attempts(ten, retries=10, successes=2) == 5  # ceil(20 * 0.25)
    assert adaptive_attempts(ten, retries=10, successes=4) == 9  # ceil(20 * 5/12)


def test_an_error_whose_retries_do_not_work_is_still_probed_every_tenth_time() -> None:
    policy = RetryPolicy(max_attempts=3)
    attempts = [
        adaptive_attempts(policy, retries=10, successes=0, occurrences=n) for n in range(30)
    ]
    assert [n for n, a in enumerate(attempts) if a == 2] == [9, 19, 29]
    assert set(attempts) == {1, 2}
    assert adaptive_attempts(policy, retries=10, successes=0) == 1  # no occurrences: no probe


def test_a_dependency_that_recovers_gets_its_retries_back(tmp_path: Path) -> None:
    """After an outage in which no retry worked, an error is no longer retried; once the
    dependency recovers (it fails once per call, then answers), a probe's retry works, and the
    error is retried again: tasks succeed."""
    from onward import Engine, ErrorBudget
    from onward.testing import FakeClock

    clock = FakeClock()
    down = {"for good": True}
    calls: dict[str, int] = {}
    url = f"sqlite:///{tmp_path / 'log.db'}"
    budget = ErrorBudget(limit=1000, window=60.0)  # the session is not paused meanwhile
    with Engine.open(
        url, session="s", clock=clock, sleep=clock.advance, seed=1, budget=budget
    ) as engine:

        @engine.step(name="fetch")
        def fetch(key: str) -> str:
            calls[key] = calls.get(key, 0) + 1
            if down["for good"] or calls[key] == 1:
                raise ConnectionError("connection refused by the upstream service")
            return key

        @engine.task(name="job")
        def job(key: str) -> str:
            return fetch(key)

        for n in range(3):  # the outage: every retry fails
            engine.submit("job", f"outage-{n}")
            engine.run()
        down["for good"] = False
        ended = []
        for n in range(15):
            task_id = engine.submit("job", f"after-{n}")
            engine.run()
            ended.append(engine.task_view(task_id).state)
    assert "succeeded" in ended[:10]  # the probe
    assert ended[-3:] == ["succeeded"] * 3  # retried again, as the error is retried again


@pytest.mark.parametrize(("retries", "successes"), [(-1, 0), (3, 4), (3, -1)])
def test_adaptive_rule_refuses_an_impossible_history(retries: int, successes: int) -> None:
    with pytest.raises(UsageError, match="successes <= retries"):
        adaptive_attempts(RetryPolicy(), retries=retries, successes=successes)


# -- budget -------------------------------------------------------------------------------------


def test_budget_window_edges() -> None:
    budget = RetryBudget(limit=2, window=60.0)
    assert budget.spent([NOW - 60.0], NOW) == 0  # exactly one window ago: out
    assert budget.spent([NOW - 59.999], NOW) == 1
    assert budget.spent([NOW], NOW) == 1
    assert budget.spent([NOW + 5.0], NOW) == 1  # a clock ahead still counts
    assert budget.allows([NOW - 60.0, NOW - 60.0, NOW - 120.0], NOW)
    assert budget.allows([NOW - 10.0], NOW)
    assert not budget.allows([NOW - 10.0, NOW - 59.0], NOW)
    assert budget.allows([NOW - 10.0, NOW - 59.0], NOW + 1.0)


def test_budget_defaults_and_zero_limit() -> None:
    assert RetryBudget() == RetryBudget(limit=30, window=600.0)
    assert RetryBudget().allows([], NOW)
    assert not RetryBudget(limit=0).allows([], NOW)


# -- decisions ----------------------------------------------------------------------------------


def decide(policies: RetryPolicies | None = None, **overrides: Any) -> RetryDecision:
    arguments: dict[str, Any] = {
        "error_type": "TimeoutError",
        "mro": ["OSError", "Exception"],
        "signature": "v1-0123",
        "attempt": 1,
        "now": NOW,
        "rng": rng(),
        "previous_delay": None,
        "retries": 0,
        "successes": 0,
        "budget": RetryBudget(),
        "recent": [],
    }
    arguments.update(overrides)
    return decide_retry(policies or RetryPolicies(), **arguments)


def test_decide_retries_a_transient_error() -> None:
    decision = decide()
    expected_delay = RetryPolicy().delay(1, rng=rng())
    assert decision.retry
    assert decision.reason == "transient"
    assert decision.delay == expected_delay
    assert decision.due == NOW + expected_delay
    assert decision.attempt == 2
    assert decision.max_attempts == 3
    assert decision.policy == "default"
    assert decision.jitter is Jitter.FULL
    assert decision.inputs == {
        "error_type": "TimeoutError",
        "mro": ["OSError", "Exception"],
        "signature": "v1-0123",
        "rule": "",
        "attempt": 1,
        "policy_max_attempts": 3,
        "retries": 0,
        "successes": 0,
        "previous_delay": None,
        "now": NOW,
        "budget_limit": 30,
        "budget_window": 600.0,
        "budget_spent": 0,
    }


def test_decide_is_reproducible_and_its_inputs_are_plain_json() -> None:
    decision = decide(attempt=2, previous_delay=1.5, recent=[NOW - 1.0])
    assert decision == decide(attempt=2, previous_delay=1.5, recent=[NOW - 1.0])
    encoded = msgspec.json.encode(decision)
    assert msgspec.json.decode(encoded, type=RetryDecision) == decision


def test_decide_refuses_an_error_that_is_not_retryable() -> None:
    decision = decide(error_type="TypeError", mro=["Exception"])
    assert not decision.retry
    assert decision.reason == "not retryable"
    assert decision.delay == 0.0
    assert decision.due == NOW


def test_decide_stops_when_attempts_are_exhausted() -> None:
    assert decide(attempt=2).retry
    decision = decide(attempt=3)
    assert not decision.retry
    assert decision.reason == "attempts exhausted"
    assert decision.attempt == 4
    assert decision.max_attempts == 3


def test_decide_stops_early_when_retries_of_the_error_rarely_succeed() -> None:
    decision = decide(retries=10, successes=0)
    assert not decision.retry
    assert decision.reason == "adaptive limit: retries of this error rarely succeed"
    assert decision.max_attempts == 1


def test_decide_allows_more_attempts_when_retries_nearly_always_succeed() -> None:
    decision = decide(attempt=4, retries=20, successes=20)
    assert decision.retry
    assert decision.max_attempts == 5
    exhausted = decide(attempt=5, retries=20, successes=20)
    assert exhausted.reason == "attempts exhausted"


def test_decide_respects_the_retry_budget() -> None:
    budget = RetryBudget(limit=2, window=60.0)
    decision = decide(budget=budget, recent=[NOW - 1.0, NOW - 2.0])
    assert not decision.retry
    assert decision.reason == "retry budget spent"
    assert decision.inputs["budget_spent"] == 2
    assert decide(budget=budget, recent=[NOW - 1.0, NOW - 60.0]).retry


def test_decide_uses_the_chosen_rule() -> None:
    slow = RetryPolicy(
        name="rate-limit", max_attempts=6, base=5.0, cap=120.0, jitter=Jitter.DECORRELATED
    )
    policies = RetryPolicies().with_rule("v1-01", slow)
    decision = decide(policies, attempt=5, previous_delay=30.0)
    assert decision.retry
    assert decision.policy == "rate-limit"
    assert decision.jitter is Jitter.DECORRELATED
    assert decision.max_attempts == 6
    assert 5.0 <= decision.delay <= 90.0
    assert decision.inputs["rule"] == "v1-01"


def test_decide_does_not_draw_from_the_rng_when_it_refuses() -> None:
    source = rng()
    state = source.getstate()
    decide(error_type="TypeError", rng=source)
    decide(attempt=3, rng=source)
    assert source.getstate() == state


def test_decide_refuses_a_bad_attempt_number() -> None:
    with pytest.raises(UsageError, match="attempt must be at least 1, not 0"):
        decide(attempt=0)
