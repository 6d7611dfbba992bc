"""Properties of retry policies: delays stay in ``[0, cap]`` for every jitter and seed, the
adaptive limit never falls as the success rate rises, and the budget counts a sliding window.
Randomness comes from a seed that hypothesis draws (and prints on failure); nothing sleeps.
"""

from __future__ import annotations

import random
from fractions import Fraction

from hypothesis import assume, given
from hypothesis import strategies as st

from onward.events import Jitter
from onward.healing.retry import (
    RetryBudget,
    RetryPolicies,
    RetryPolicy,
    adaptive_attempts,
    decide_retry,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)
attempts = st.integers(min_value=1, max_value=10_000)
times = st.floats(min_value=0.0, max_value=2e9, allow_nan=False)
jitters = st.sampled_from(Jitter)
previous_delays = st.none() | st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@st.composite
def policies(draw: st.DrawFn, jitter: st.SearchStrategy[Jitter] = jitters) -> RetryPolicy:
    base = draw(st.floats(min_value=1e-3, max_value=1e3, allow_nan=False))
    return RetryPolicy(
        max_attempts=draw(st.integers(min_value=1, max_value=20)),
        base=base,
        multiplier=draw(st.floats(min_value=1.0, max_value=10.0, allow_nan=False)),
        cap=base * draw(st.floats(min_value=1.0, max_value=1e4, allow_nan=False)),
        jitter=draw(jitter),
    )


@given(policies(), attempts, seeds, previous_delays)
def test_every_delay_is_within_zero_and_the_cap(
    policy: RetryPolicy, attempt: int, seed: int, previous: float | None
) -> None:
    delay = policy.delay(attempt, rng=random.Random(seed), previous=previous)
    assert 0.0 <= delay <= policy.cap


@given(policies(st.sampled_from([Jitter.FULL, Jitter.EQUAL, Jitter.NONE])), attempts, seeds)
def test_exponential_jitters_stay_below_the_exponential_delay(
    policy: RetryPolicy, attempt: int, seed: int
) -> None:
    plain = RetryPolicy(
        base=policy.base, multiplier=policy.multiplier, cap=policy.cap, jitter=Jitter.NONE
    ).delay(attempt, rng=random.Random(0))
    delay = policy.delay(attempt, rng=random.Random(seed))
    assert delay <= plain
    if policy.jitter is Jitter.EQUAL:
        assert delay >= plain / 2


@given(policies(st.just(Jitter.NONE)), st.integers(min_value=1, max_value=200))
def test_no_jitter_never_shrinks_and_grows_by_the_multiplier(
    policy: RetryPolicy, attempt: int
) -> None:
    source = random.Random(0)
    now, then = policy.delay(attempt, rng=source), policy.delay(attempt + 1, rng=source)
    assert now <= then
    if then < policy.cap:
        assert then == policy.base * policy.multiplier**attempt


@given(policies(st.just(Jitter.DECORRELATED)), attempts, seeds, previous_delays)
def test_decorrelated_delays_are_at_least_base(
    policy: RetryPolicy, attempt: int, seed: int, previous: float | None
) -> None:
    delay = policy.delay(attempt, rng=random.Random(seed), previous=previous)
    assert delay >= policy.base
    last = policy.base if previous is None else max(policy.base, previous)
    assert delay <= 3 * last


@given(policies(), attempts, seeds, previous_delays)
def test_the_same_seed_gives_the_same_delay(
    policy: RetryPolicy, attempt: int, seed: int, previous: float | None
) -> None:
    first = policy.delay(attempt, rng=random.Random(seed), previous=previous)
    assert first == policy.delay(attempt, rng=random.Random(seed), previous=previous)


history = st.integers(min_value=0, max_value=500).flatmap(
    lambda retries: st.tuples(st.just(retries), st.integers(min_value=0, max_value=retries))
)


@given(st.integers(min_value=1, max_value=30), history, history)
def test_adaptive_attempts_are_monotone_in_the_rate(
    most: int, first: tuple[int, int], second: tuple[int, int]
) -> None:
    policy = RetryPolicy(max_attempts=most)
    (r1, s1), (r2, s2) = sorted(
        [first, second], key=lambda h: Fraction(h[1] + 1, h[0] + 2)
    )  # lower smoothed rate first
    assume(r1 >= 5 and r2 >= 5)
    low = adaptive_attempts(policy, retries=r1, successes=s1)
    high = adaptive_attempts(policy, retries=r2, successes=s2)
    assert low <= high


@given(st.integers(min_value=1, max_value=30), history)
def test_adaptive_attempts_stay_within_one_and_two_more(most: int, seen: tuple[int, int]) -> None:
    retries, successes = seen
    attempts = adaptive_attempts(
        RetryPolicy(max_attempts=most), retries=retries, successes=successes
    )
    assert 1 <= attempts <= most + 2
    if retries < 5:
        assert attempts == most


@given(st.integers(min_value=1, max_value=30), st.integers(min_value=5, max_value=500))
def test_more_successes_never_lower_the_limit(most: int, retries: int) -> None:
    policy = RetryPolicy(max_attempts=most)
    limits = [adaptive_attempts(policy, retries=retries, successes=s) for s in range(retries + 1)]
    assert limits == sorted(limits)


@given(
    st.integers(min_value=0, max_value=20),
    st.floats(min_value=1e-3, max_value=1e5, allow_nan=False),
    st.lists(times, max_size=40),
    times,
)
def test_budget_counts_exactly_the_events_inside_the_window(
    limit: int, window: float, recent: list[float], now: float
) -> None:
    budget = RetryBudget(limit=limit, window=window)
    spent = budget.spent(recent, now)
    assert spent == len([t for t in recent if now - window < t])
    assert budget.allows(recent, now) == (spent < limit)
    # Time passing only frees budget, for the same history.
    assert budget.spent(recent, now + window) <= spent


@given(
    policies(),
    st.sampled_from(["TimeoutError", "TypeError", "ValueError", "ConnectionResetError"]),
    st.integers(min_value=1, max_value=25),
    times,
    seeds,
    previous_delays,
    history,
    st.lists(times, max_size=10),
)
def test_decide_retry_is_consistent(
    policy: RetryPolicy,
    error_type: str,
    attempt: int,
    now: float,
    seed: int,
    previous: float | None,
    seen: tuple[int, int],
    recent: list[float],
) -> None:
    budget = RetryBudget(limit=5, window=300.0)
    decision = decide_retry(
        RetryPolicies(policy),
        error_type=error_type,
        mro=["Exception"],
        signature="",
        attempt=attempt,
        now=now,
        rng=random.Random(seed),
        previous_delay=previous,
        retries=seen[0],
        successes=seen[1],
        budget=budget,
        recent=recent,
    )
    assert decision.attempt == attempt + 1
    assert 0.0 <= decision.delay <= policy.cap
    assert decision.due == now + decision.delay
    if decision.retry:
        assert decision.reason == "transient"
        assert policy.retries(error_type, ["Exception"])
        assert decision.attempt <= decision.max_attempts
        assert budget.allows(recent, now)
    else:
        assert decision.delay == 0.0
        assert decision.reason in {
            "not retryable",
            "attempts exhausted",
            "retry budget spent",
            "adaptive limit: retries of this error rarely succeed",
        }
