"""Retry policies: which errors to retry, how often, and how long to wait first.

This module only decides. It reads no clock and draws from no global random source: the time,
the random generator and the session's history are passed in, and the engine records the
outcome (a :class:`onward.events.RetryScheduled` whose delay is never recomputed on replay)::

    policies = RetryPolicies(RetryPolicy()).with_rule("RateLimitError", RetryPolicy(
        name="rate-limit", max_attempts=6, base=5.0, cap=120.0, jitter=Jitter.DECORRELATED))
    decision = decide_retry(
        policies, error_type="RateLimitError", mro=["APIStatusError", "Exception"],
        signature="v1-3f2a", attempt=1, now=clock(), rng=rng, previous_delay=None,
        retries=0, successes=0, budget=RetryBudget(), recent=[])
    if decision.retry:
        ...  # append RetryScheduled(attempt=decision.attempt, delay=decision.delay, ...)

Error types are matched by name. A bare name (``"TimeoutError"``) matches any module's type
of that name (``"builtins.TimeoutError"``); a qualified name (``"sqlite3.OperationalError"``)
also matches the bare name, but not the same name in another module.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import Any

import msgspec

from onward.core.fields import MOST_SECONDS, finite, seconds, shown, whole
from onward.events import Jitter, UsageError, redacted_logger
from onward.healing.signature import SIGNATURE_VERSION, other_signature_format
from onward.projections.errors import RETRY_TIMES_LIMIT

__all__ = [
    "DEFAULT_NEVER",
    "DEFAULT_TRANSIENT",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicies",
    "RetryPolicy",
    "RetryRule",
    "adaptive_attempts",
    "decide_retry",
]

#: Errors that usually pass on their own. The ``ConnectionError`` family is listed in full for
#: callers that pass no base classes. ``socket.timeout`` is not listed: it is ``TimeoutError``
#: since Python 3.10. ``OperationalError`` covers SQLite's "database is locked"; retry
#: "no such table" by mistake and the attempts run out, or add a signature rule.
DEFAULT_TRANSIENT: tuple[str, ...] = (
    "APIConnectionError",
    "APITimeoutError",
    "BrokenPipeError",
    "ConnectError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "OperationalError",
    "RateLimitError",
    "RemoteProtocolError",
    "TimeoutError",
    "TimeoutException",
)

#: Errors that no retry can cure: the code or the caller is wrong, or someone asked to stop.
#: ``MemoryError`` is not here: a fix (smaller batches) may make the next attempt pass.
DEFAULT_NEVER: tuple[str, ...] = (
    "AssertionError",
    "AttributeError",
    "ImportError",
    "KeyboardInterrupt",
    "ModuleNotFoundError",
    "NameError",
    "NotImplementedError",
    "SyntaxError",
    "SystemExit",
    "TypeError",
)

# A signature id is its format's version and 16 hex digits ("v1-3f2a..."); a rule may name a
# prefix of one. No type name contains a dash.
_SIGNATURE = re.compile(r"v\d+-")
_SIGNATURE_PREFIX = re.compile(r"v\d+-[0-9a-f]*")
_TYPE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

#: The fewest observed retries of a signature before its success rate counts.
_MIN_OBSERVED = 5

logger = redacted_logger("onward.engine")
#: An error whose retries rarely work is still retried once at every this many occurrences
#: (see :func:`adaptive_attempts`).
PROBE_EVERY = 10

# The most attempts a policy may allow. "Retry forever" is a policy that allows this many
# (years of retries at a 5-minute cap): an infinite count could not be recorded.
_MOST_ATTEMPTS = 1_000_000


def _type_names(owner: msgspec.Struct, field: str, where: str) -> None:
    """Check a field of error type names, and store a list of them as a tuple."""
    value = getattr(owner, field)
    if isinstance(value, list):
        value = tuple(value)
        msgspec.structs.force_setattr(owner, field, value)
    if not isinstance(value, tuple):
        raise UsageError(
            f"{where}: {field} must be a tuple of error type names, not {shown(value)}"
        )
    for name in value:
        if not (isinstance(name, str) and _TYPE_NAME.fullmatch(name)):
            raise UsageError(
                f"{where}: {field} must hold error type names (TimeoutError, "
                f"sqlite3.OperationalError), not {name!r}"
                if isinstance(name, str)
                else f"{where}: {field} must hold error type names, not {shown(name)}"
            )


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _same_type(pattern: str, name: str) -> bool:
    """Whether a type-name pattern names this type (see the module docstring)."""
    if pattern == name:
        return True
    if "." in pattern and "." in name:
        return False
    return _short(pattern) == _short(name)


def _names_type(patterns: Iterable[str], name: str) -> bool:
    return any(_same_type(pattern, name) for pattern in patterns)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How one kind of error is retried: how often, after what delay, and whether at all.

    The delay before the next attempt grows exponentially, ``base * multiplier ** (n - 1)``
    after ``n`` failed attempts, up to ``cap``, and is then randomised by ``jitter``.

    Attributes:
        name: the policy's name, recorded with each retry it schedules.
        max_attempts: the most attempts in all, the first included (1: never retry; at
            most 1,000,000, which is how to retry without end: the retry budget still bounds
            a storm).
        base: the first delay, in seconds.
        multiplier: the factor by which the delay grows after each failed attempt.
        cap: the longest delay, in seconds.
        jitter: how the delay is randomised.
        transient: the error type names retried by default (the base classes count too).
        retry_on: more error type names to retry.
        never: error type names never retried, even where a base class is transient.

    Raises:
        UsageError: an empty name; ``max_attempts`` not an int in [1, 1,000,000]; ``base``,
            ``multiplier`` or ``cap`` not a finite number (a bool is none), ``base <= 0``,
            ``multiplier < 1`` or ``cap < base``; an unknown jitter; ``transient``,
            ``retry_on`` or ``never`` not a tuple (or list) of type names; or a type name both
            in ``retry_on`` and ``never``.
    """

    name: str = "default"
    max_attempts: int = 3
    base: float = 1.0
    multiplier: float = 2.0
    cap: float = 300.0
    jitter: Jitter = Jitter.FULL
    transient: tuple[str, ...] = DEFAULT_TRANSIENT
    retry_on: tuple[str, ...] = ()
    never: tuple[str, ...] = DEFAULT_NEVER

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name):
            raise UsageError(f"retry policy: name must be a non-empty str, not {shown(self.name)}")
        where = f"retry policy {self.name!r}"
        most = self.max_attempts
        if not (whole(most) and 1 <= most <= _MOST_ATTEMPTS):
            need = "at least 1" if whole(most) and most < 1 else f"an int in [1, {_MOST_ATTEMPTS}]"
            raise UsageError(
                f"{where}: max_attempts must be {need}, not {shown(most)} (1: never retry; "
                f"to retry without end, give max_attempts={_MOST_ATTEMPTS}: the retry budget "
                "still bounds a storm)"
            )
        if not (seconds(self.base) and self.base > 0):
            raise UsageError(
                f"{where}: base must be a positive number of seconds (at most {MOST_SECONDS}), "
                f"not {shown(self.base)}"
            )
        if not (finite(self.multiplier) and self.multiplier >= 1):
            also = "" if finite(self.multiplier) else " and a finite number"
            raise UsageError(
                f"{where}: multiplier must be at least 1{also}, not {shown(self.multiplier)}"
            )
        if not (seconds(self.cap) and self.cap >= self.base):
            raise UsageError(
                f"{where}: cap must be at least base ({self.base}) and at most {MOST_SECONDS} "
                f"seconds, not {shown(self.cap)}"
            )
        try:
            Jitter(self.jitter)
        except ValueError:
            choices = ", ".join(j.value for j in Jitter)
            raise UsageError(f"{where}: unknown jitter {self.jitter!r} ({choices})") from None
        for field in ("transient", "retry_on", "never"):
            _type_names(self, field, where)
        clash = sorted(p for p in self.retry_on if _names_type(self.never, p))
        if clash:
            raise UsageError(f"{where}: {', '.join(clash)} both in retry_on and never")

    def retries(self, error_type: str, mro: Sequence[str] = ()) -> bool:
        """Whether an error of this type is retried under this policy.

        The type itself is looked up first, then its base classes nearest first: the first
        name found in ``never`` (no), ``retry_on`` or ``transient`` (yes) decides. So
        ``ConnectionResetError`` is retried through ``ConnectionError`` even if ``OSError``
        is in ``never``; within one name, ``never`` beats ``transient``.

        Args:
            error_type: the error's type name, bare or qualified.
            mro: the names of its base classes, nearest first (the type itself may lead).

        Returns:
            True if the error should be retried.
        """
        for name in (error_type, *mro):
            if _names_type(self.never, name):
                return False
            if _names_type(self.retry_on, name) or _names_type(self.transient, name):
                return True
        return False

    def delay(self, attempt: int, *, rng: random.Random, previous: float | None = None) -> float:
        """The backoff before the next attempt, jitter included, after ``attempt`` failed ones.

        The exponential delay is ``d = min(cap, base * multiplier ** (attempt - 1))``; then, by
        ``jitter`` (the formulas of AWS's "Exponential Backoff and Jitter"):

        ============  ======================================================
        none          ``d``
        full          uniform in ``[0, d]``
        equal         ``d / 2`` + uniform in ``[0, d / 2]``
        decorrelated  ``min(cap, uniform in [base, 3 * previous])``
        ============  ======================================================

        Args:
            attempt: how many attempts have failed so far (1 after the first).
            rng: the random source (seed it for reproducible delays; unused by ``none``).
            previous: the delay before the failed attempt, for decorrelated jitter (None or
                below ``base``: ``base``).

        Returns:
            The delay in seconds, within ``[0, cap]``.

        Raises:
            UsageError: ``attempt`` below 1, or ``previous`` negative or not finite.
        """
        if attempt < 1:
            raise UsageError(
                f"retry policy {self.name!r}: attempt must be at least 1, not {attempt}"
            )
        if previous is not None and not (math.isfinite(previous) and previous >= 0):
            raise UsageError(
                f"retry policy {self.name!r}: previous delay must be a finite number of seconds "
                f"at least 0, not {previous}"
            )
        jitter = Jitter(self.jitter)
        if jitter is Jitter.DECORRELATED:
            last = self.base if previous is None else max(self.base, previous)
            return min(self.cap, rng.uniform(self.base, last * 3))
        try:
            exponential = min(self.cap, self.base * self.multiplier ** (attempt - 1))
        except OverflowError:
            exponential = self.cap
        if jitter is Jitter.FULL:
            return min(exponential, rng.uniform(0.0, exponential))
        if jitter is Jitter.EQUAL:
            half = exponential / 2
            return min(exponential, half + rng.uniform(0.0, half))
        return exponential


class RetryRule(msgspec.Struct, frozen=True):
    """Which policy applies to an error type or to an error signature.

    Attributes:
        match: an error type name (bare or qualified), or an error signature id or its
            prefix (``"v1-3f2a"``: it starts with the signature format's version).
        policy: the policy for the errors it matches.

    Raises:
        UsageError: ``match`` is neither a type name nor a signature id (prefix), or
            ``policy`` is no :class:`RetryPolicy`.
    """

    match: str
    policy: RetryPolicy

    def __post_init__(self) -> None:
        if not isinstance(self.match, str):
            raise UsageError(f"retry rule: match must be a str, not {shown(self.match)}")
        if not (_SIGNATURE_PREFIX.fullmatch(self.match) or _TYPE_NAME.fullmatch(self.match)):
            raise UsageError(
                f"retry rule {self.match!r}: match must be an error type name "
                "(TimeoutError, sqlite3.OperationalError) or a signature id or its prefix "
                "(v1- and hex digits)"
            )
        if not isinstance(self.policy, RetryPolicy):
            raise UsageError(
                f"retry rule {self.match!r}: policy must be a RetryPolicy, not {shown(self.policy)}"
            )
        if (version := other_signature_format(self.match)) is not None:
            # Not refused: a rule for the signatures of another onward sharing the log (an
            # upgrade under way) is kept; but here it matches nothing, which must not go unseen.
            logger.warning(
                "retry rule %r names a signature of format v%s, and this onward computes v%d "
                "signatures (SIGNATURE_VERSION): the rule matches no error here",
                self.match,
                version,
                SIGNATURE_VERSION,
            )

    @property
    def by_signature(self) -> bool:
        """True if ``match`` is a signature id (prefix), False if it is a type name."""
        return bool(_SIGNATURE.match(self.match))


class RetryPolicies:
    """A default policy and the rules that choose another one for some errors.

    The policy for an error is, first found: the rule for its signature (the longest
    matching prefix), the rule for its type, the rule for its nearest base class, the
    default. A later rule for the same ``match`` replaces the earlier one.

    Args:
        default: the policy when no rule matches (None: ``RetryPolicy()``).
        rules: the rules, in order.

    Raises:
        UsageError: ``default`` is no :class:`RetryPolicy`, or ``rules`` holds something else
            than :class:`RetryRule`.
    """

    __slots__ = ("_default", "_rules")

    def __init__(self, default: RetryPolicy | None = None, rules: Iterable[RetryRule] = ()) -> None:
        if not (default is None or isinstance(default, RetryPolicy)):
            raise UsageError(
                f"retry policies: default must be a RetryPolicy or None, not {shown(default)}"
            )
        self._default = RetryPolicy() if default is None else default
        self._rules: dict[str, RetryRule] = {}
        if not isinstance(rules, Iterable):
            raise UsageError(f"retry policies: rules must be an iterable, not {shown(rules)}")
        for rule in rules:
            if not isinstance(rule, RetryRule):
                raise UsageError(
                    f"retry policies: rules must hold RetryRule, not {shown(rule)} (add a "
                    "rule for a type or a signature with with_rule(match, policy))"
                )
            # Re-insert, so a replaced rule also moves to the end (the last one added wins).
            self._rules.pop(rule.match, None)
            self._rules[rule.match] = rule

    @property
    def default(self) -> RetryPolicy:
        """The policy when no rule matches."""
        return self._default

    @property
    def rules(self) -> tuple[RetryRule, ...]:
        """The rules, oldest first."""
        return tuple(self._rules.values())

    def with_rule(self, match: str, policy: RetryPolicy) -> RetryPolicies:
        """A copy with one more rule (replacing any rule with the same ``match``).

        Args:
            match: an error type name or a signature id prefix (see :class:`RetryRule`).
            policy: the policy for the errors it matches.

        Returns:
            The new policies; this one is unchanged.

        Raises:
            UsageError: ``match`` is neither a type name nor a signature id.
        """
        return RetryPolicies(self._default, [*self._rules.values(), RetryRule(match, policy)])

    def policy_for(self, error_type: str, mro: Sequence[str], signature: str) -> RetryPolicy:
        """The policy for an error.

        Args:
            error_type: the error's type name, bare or qualified.
            mro: the names of its base classes, nearest first.
            signature: its signature id ("" when not computed).

        Returns:
            The policy of the first rule found (see the class docstring), else the default.
        """
        rule = self.rule_for(error_type, mro, signature)
        return self._default if rule is None else rule.policy

    def rule_for(self, error_type: str, mro: Sequence[str], signature: str) -> RetryRule | None:
        """The rule that chooses the policy for an error, as in :meth:`policy_for`.

        Args:
            error_type: the error's type name, bare or qualified.
            mro: the names of its base classes, nearest first.
            signature: its signature id ("" when not computed).

        Returns:
            The rule, or None when the default policy applies.
        """
        rules = list(self._rules.values())
        if signature:
            by_signature = [r for r in rules if r.by_signature and signature.startswith(r.match)]
            if by_signature:
                return max(by_signature, key=lambda r: len(r.match))
        by_type = [r for r in rules if not r.by_signature]
        for name in (error_type, *mro):
            if (exact := self._rules.get(name)) is not None:
                return exact
            same = [r for r in by_type if _same_type(r.match, name)]
            if same:
                return same[-1]
        return None

    def __repr__(self) -> str:
        return f"RetryPolicies(default={self._default!r}, rules={list(self._rules.values())!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicies):
            return NotImplemented
        return self._default == other._default and self.rules == other.rules

    def __hash__(self) -> int:
        return hash((self._default, self.rules))


def adaptive_attempts(
    policy: RetryPolicy, *, retries: int, successes: int, occurrences: int | None = None
) -> int:
    """The most attempts for an error signature, following how often its retries succeed.

    The rule: with fewer than 5 observed retries, the policy's ``max_attempts`` (call it
    ``m``). From 5 on, the Laplace-smoothed success rate ``r = (successes + 1) / (retries + 2)``
    decides:

    ==================  =====================================  ==========================
    rate                attempts                               because
    ==================  =====================================  ==========================
    r >= 0.9            ``m + 2``                              retrying nearly always works
    0.5 <= r < 0.9      ``m``                                  the policy as written
    0.2 <= r < 0.5      ``min(m, max(2, ceil(2 * m * r)))``    fewer tries, at least one retry
    r < 0.2             1 (2 at every 10th occurrence)         retrying does not work
    ==================  =====================================  ==========================

    Below 0.2, every :data:`PROBE_EVERY`-th occurrence of the error (when ``occurrences`` is
    given) is still retried once, a probe: without it no retry of the error would ever be seen
    again, and a dependency that recovered would stay without retries for good.

    A policy with ``m = 1`` never retries, whatever the history. The result never falls as the
    rate rises. For example, with ``m = 3``: 10 retries and 9 successes (r = 0.83) give 3,
    10 and 3 (r = 0.33) give 2, 10 and 1 (r = 0.17) give 1.

    Args:
        policy: the policy that applies to the signature.
        retries: how many retries of this signature were observed.
        successes: how many of them succeeded.
        occurrences: how many times the error was observed before this one (None: no
            probes).

    Returns:
        The most attempts in all, the first included (at least 1).

    Raises:
        UsageError: ``retries`` negative, or ``successes`` outside ``[0, retries]``.
    """
    if retries < 0 or not 0 <= successes <= retries:
        raise UsageError(
            f"retry history: need 0 <= successes <= retries, got {successes} of {retries}"
        )
    most = policy.max_attempts
    if most == 1 or retries < _MIN_OBSERVED:
        return most
    rate = Fraction(successes + 1, retries + 2)
    if rate >= Fraction(9, 10):
        return most + 2
    if rate >= Fraction(1, 2):
        return most
    if rate >= Fraction(1, 5):
        return min(most, max(2, math.ceil(2 * most * rate)))
    if occurrences is not None and occurrences % PROBE_EVERY == PROBE_EVERY - 1:
        return 2
    return 1


class RetryBudget(msgspec.Struct, frozen=True, kw_only=True):
    """The most retries a session may schedule in a sliding window, against retry storms.

    A retry at time ``t`` counts while ``now - window < t``: one exactly ``window`` seconds ago
    no longer counts. Retries stamped after ``now`` (another worker's clock runs ahead) count.
    A retry whose step then completed counts no more: a retry that worked is no storm, so a
    busy session meeting a passing fault keeps retrying, while retries that fail, or still
    await their outcome, spend the budget. Nor does one whose task ended (cancelled) before
    its outcome.

    Attributes:
        limit: the most retries in one window (0: no retries at all; at most 1000).
        window: the window's length, in seconds.

    Raises:
        UsageError: ``limit`` not an int in [0, 1000] (a session counts its last 1000
            retries: a larger limit could never be spent), or ``window`` not a positive finite
            number.
    """

    limit: int = 30
    window: float = 600.0

    def __post_init__(self) -> None:
        limit = self.limit
        if not (whole(limit) and 0 <= limit <= RETRY_TIMES_LIMIT):
            why = ""
            if (
                isinstance(limit, int | float)
                and not isinstance(limit, bool)
                and limit > RETRY_TIMES_LIMIT
            ):
                why = (
                    f" (a session counts its last {RETRY_TIMES_LIMIT} retries: a larger limit "
                    "could never be spent)"
                )
            raise UsageError(
                f"retry budget: limit must be an int in [0, {RETRY_TIMES_LIMIT}], not "
                f"{shown(limit)}{why}"
            )
        if not (seconds(self.window) and self.window > 0):
            raise UsageError(
                f"retry budget: window must be a positive number of seconds (at most "
                f"{MOST_SECONDS}), not {shown(self.window)}"
            )

    def spent(self, recent: Sequence[float], now: float) -> int:
        """How many retries count against the budget at ``now``.

        Args:
            recent: the times of the session's :class:`onward.events.RetryScheduled` events.
            now: the current time, in seconds since the epoch.

        Returns:
            The number of those inside the window.
        """
        start = now - self.window
        return sum(1 for at in recent if at > start)

    def allows(self, recent: Sequence[float], now: float) -> bool:
        """Whether one more retry fits in the budget at ``now``.

        Args:
            recent: the times of the session's :class:`onward.events.RetryScheduled` events.
            now: the current time, in seconds since the epoch.

        Returns:
            True if fewer than ``limit`` retries are inside the window.
        """
        return self.spent(recent, now) < self.limit


class RetryDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Whether to retry a failed attempt, when, and why.

    Attributes:
        retry: True to run the step again.
        delay: the backoff before it, jitter included, in seconds (0.0 when not retrying).
        due: when the next attempt is due (``now + delay``; ``now`` when not retrying).
        attempt: the number of the next attempt (the failed attempt's number + 1).
        max_attempts: the most attempts for this error, after the adaptive rule.
        policy: the name of the policy that decided.
        jitter: how the delay was randomised.
        reason: "transient", "not retryable", "attempts exhausted", "retry budget spent" or
            "adaptive limit: retries of this error rarely succeed".
        inputs: what the decision read, as plain JSON values, for the audit.
    """

    retry: bool
    delay: float
    due: float
    attempt: int
    max_attempts: int
    policy: str
    jitter: Jitter
    reason: str
    inputs: dict[str, Any]


def decide_retry(
    policies: RetryPolicies,
    *,
    error_type: str,
    mro: Sequence[str],
    signature: str,
    attempt: int,
    now: float,
    rng: random.Random,
    previous_delay: float | None,
    retries: int,
    successes: int,
    budget: RetryBudget,
    recent: Sequence[float],
    occurrences: int | None = None,
    forced: str = "",
) -> RetryDecision:
    """Decide whether a failed attempt is retried, and after what delay.

    In order: the policy for the error (:meth:`RetryPolicies.policy_for`); whether it retries
    the error at all; the attempts left under :func:`adaptive_attempts`; the session's retry
    budget; then the delay (the only step that draws from ``rng``).

    Args:
        policies: the policies to choose from.
        error_type: the error's type name, bare or qualified.
        mro: the names of its base classes, nearest first.
        signature: its signature id ("" when not computed).
        attempt: the number of the attempt that failed (1 for the first).
        now: the current time, in seconds since the epoch (from the injected clock).
        rng: the random source for the jitter.
        previous_delay: the delay before the failed attempt (None for the first).
        retries: how many retries of this signature were observed before.
        successes: how many of them succeeded.
        budget: the session's retry budget.
        recent: the times of the session's :class:`onward.events.RetryScheduled` events.
        occurrences: how many times the error was observed before (None: no probes; see
            :func:`adaptive_attempts`).
        forced: the rule that forces a retry of an error the policy does not retry ("": none):
            the policy's attempts, adaptive limit, budget and delays still hold.

    Returns:
        The decision; record it, and its delay, rather than deciding again on replay.

    Raises:
        UsageError: ``attempt`` below 1, or a history out of range (see
            :func:`adaptive_attempts`).
    """
    if attempt < 1:
        raise UsageError(f"retry of {error_type}: attempt must be at least 1, not {attempt}")
    rule = policies.rule_for(error_type, mro, signature)
    policy = policies.default if rule is None else rule.policy
    limit = adaptive_attempts(policy, retries=retries, successes=successes, occurrences=occurrences)
    spent = budget.spent(recent, now)
    inputs: dict[str, Any] = {
        "error_type": error_type,
        "mro": list(mro),
        "signature": signature,
        "rule": "" if rule is None else rule.match,
        "attempt": attempt,
        "policy_max_attempts": policy.max_attempts,
        "retries": retries,
        "successes": successes,
        "previous_delay": previous_delay,
        "now": now,
        "budget_limit": budget.limit,
        "budget_window": budget.window,
        "budget_spent": spent,
    }

    if occurrences is not None:
        inputs["occurrences"] = occurrences

    def refuse(reason: str) -> RetryDecision:
        return RetryDecision(
            retry=False,
            delay=0.0,
            due=now,
            attempt=attempt + 1,
            max_attempts=limit,
            policy=policy.name,
            jitter=Jitter(policy.jitter),
            reason=reason,
            inputs=inputs,
        )

    if forced:
        inputs["forced_by_rule"] = forced
    elif not policy.retries(error_type, mro):
        return refuse("not retryable")
    if attempt >= limit:
        if attempt < policy.max_attempts:
            return refuse("adaptive limit: retries of this error rarely succeed")
        return refuse("attempts exhausted")
    if spent >= budget.limit:
        return refuse("retry budget spent")
    delay = policy.delay(attempt, rng=rng, previous=previous_delay)
    return RetryDecision(
        retry=True,
        delay=delay,
        due=now + delay,
        attempt=attempt + 1,
        max_attempts=limit,
        policy=policy.name,
        jitter=Jitter(policy.jitter),
        reason=f"rule {forced} forces a retry" if forced else "transient",
        inputs=inputs,
    )
