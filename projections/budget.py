"""The error-budget projection: each session's failed tries and the remedies tried against them.

The engine's error budget (:mod:`onward.judgement.budget`) judges a sliding window of a session's
errors; this projection folds what it judges, per session (``r.meta.session``):

- every failed try (:class:`onward.events.StepFailed`, full or lean, final or not): its time, error
  type and signature, the last :data:`ERRORS_KEPT` of them;
- the remedies: :class:`onward.events.FixAttempted` and :class:`onward.events.RetryScheduled` name
  the signature they answer and the step they answer it on. When that step fails again with the
  same signature for good (its failure is final: the fixes and retries it was allowed are
  spent), the remedies did not help: the signature is **systemic** (it recurs after fixes and
  retries), unless a remedy of it has worked in the session (a step it was tried on then
  completed). A step that fails once more with retries left is not judged yet. A signature
  whose remedies work is noise that fixes and retries absorb (a flaky service), and it stops
  being systemic from then on. Another task meeting the same error meanwhile is not a
  recurrence: only the step under the remedy judges it. A session remembers, for its last
  :data:`SIGNATURES_KEPT` signatures, whether a remedy was attempted since each last failed,
  which remedies worked, which steps await a remedy's outcome, and when each systemic
  signature first recurred;
- its budget decisions (:class:`onward.events.DecisionMade` of kind ``"budget"``): the last one's
  choice, so that the engine records a decision only when the verdict changes;
- its start (:class:`onward.events.SessionStarted`) and its resumption after a budget pause
  (:class:`onward.events.SessionResumed`): a person looked at what paused it, so the window starts
  afresh (its errors and systemic marks are dropped). The trend compares the two halves of
  the part of the window the session has lived (since its start or that resumption): a burst
  of errors in a session's first minutes is not a rising burn rate for want of an older half.

The id of the session's last failed try is kept too: a budget decision names it as its cause.

Failures without a signature count against the budget, but no remedy is matched to them and
they add nothing to the diversity of signatures. A failure stamped earlier than the session's
latest one (by a worker whose clock runs behind) counts as at the latest one: the failures
stay in time order, so a window reads only its own from the newest back.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from onward.events import (
    DecisionMade,
    FixAttempted,
    Recorded,
    RetryScheduled,
    SessionResumed,
    SessionStarted,
    UsageError,
)
from onward.projections.reading import FOLDED_STEP_OUTCOMES

__all__ = [
    "BUDGET_KIND",
    "ERRORS_KEPT",
    "SIGNATURES_KEPT",
    "BudgetLedger",
    "BudgetProjection",
    "BudgetWindow",
    "FailedTry",
]

#: The failed tries each session keeps (the last ones).
ERRORS_KEPT = 1000
#: The signatures each session keeps remedy and systemic marks for (the last ones).
SIGNATURES_KEPT = 1000
#: The ``kind`` of the :class:`onward.events.DecisionMade` events that record a budget verdict.
BUDGET_KIND = "budget"

_FAILURE_TYPES = frozenset(
    kind for kind in FOLDED_STEP_OUTCOMES if kind.__struct_config__.tag == "StepFailed"
)
_SUCCESS_TYPES = FOLDED_STEP_OUTCOMES - _FAILURE_TYPES


class FailedTry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One failed try of a step, as the budget counts it.

    Attributes:
        time: when it failed.
        error_type: the exception's type name.
        signature: its error signature ("" when not computed).
    """

    time: float
    error_type: str
    signature: str


class BudgetWindow(msgspec.Struct, frozen=True, kw_only=True):
    """A session's errors in one window ``(now - span, now]``, as :meth:`BudgetProjection.window`
    counts them.

    Attributes:
        errors: the failed tries in the window.
        by_type: those failed tries by error type name.
        signatures: how many distinct signatures they have (the diversity; "" not counted).
        first_half: the failed tries in the older half of the part of the window the session
            has lived (``lived`` = ``min(span, now - since)``): ``(now - span, now - lived/2]``.
        second_half: the failed tries in its newer half, ``(now - lived/2, now]``.
        systemic: the systemic signatures that failed in the window since they became
            systemic, sorted.
        last_choice: the choice of the session's last budget decision ("" before any).
        last_rule: the rule of the session's last budget decision ("" before any).
    """

    errors: int = 0
    by_type: dict[str, int] = msgspec.field(default_factory=dict)
    signatures: int = 0
    first_half: int = 0
    second_half: int = 0
    systemic: tuple[str, ...] = ()
    last_choice: str = ""
    last_rule: str = ""


class BudgetLedger(msgspec.Struct, kw_only=True, gc=False):
    """One session's budget state, as a checkpoint stores it.

    Attributes:
        session: the session's name.
        errors: its last :data:`ERRORS_KEPT` failed tries, oldest first.
        remedied: per signature, whether a remedy was attempted since it last failed (the
            least recently touched first).
        cured: the signatures a remedy worked for (the step it was tried on completed).
        trials: per step under a remedy (``stream#index``), the signature the remedy answers.
        last_error: the event id of its last failed try ("" before any).
        since: when it started, or resumed after a budget pause (0.0 when not seen).
        systemic: per systemic signature, when it first failed again after a remedy (the
            oldest first).
        last_choice: the choice of its last budget decision ("" before any).
        last_rule: the rule of its last budget decision ("" before any).
    """

    session: str
    errors: tuple[FailedTry, ...] = ()
    remedied: dict[str, bool] = msgspec.field(default_factory=dict)
    systemic: dict[str, float] = msgspec.field(default_factory=dict)
    last_choice: str = ""
    last_rule: str = ""
    cured: dict[str, bool] = msgspec.field(default_factory=dict)
    trials: dict[str, str] = msgspec.field(default_factory=dict)
    last_error: str = ""
    since: float = 0.0


class _Ledger:
    """One session's budget state while folding."""

    __slots__ = (
        "cured",
        "errors",
        "last_choice",
        "last_error",
        "last_rule",
        "remedied",
        "since",
        "systemic",
        "trials",
    )

    def __init__(self) -> None:
        self.errors: deque[FailedTry] = deque(maxlen=ERRORS_KEPT)
        self.remedied: dict[str, bool] = {}
        self.systemic: dict[str, float] = {}
        self.cured: dict[str, bool] = {}
        self.trials: dict[str, str] = {}
        self.last_choice = ""
        self.last_rule = ""
        self.last_error = ""
        self.since = 0.0


def _mark(marks: dict[str, Any], key: str, value: Any) -> None:
    """Set ``marks[key]`` as the most recent entry, evicting the least recent past the cap."""
    marks.pop(key, None)
    marks[key] = value
    if len(marks) > SIGNATURES_KEPT:
        del marks[next(iter(marks))]


class BudgetProjection:
    """Folds failed tries, remedies and budget decisions into one ledger per session."""

    name = "budget"

    def __init__(self) -> None:
        self._ledgers: dict[str, _Ledger] = {}
        #: The streams with a step under a remedy (a superset): only their successes matter
        #: to this projection, so the host sends it no other.
        self.trial_streams: set[str] = set()
        self._fold: dict[type[Any], Callable[[Recorded, Any], None]] = {
            FixAttempted: self._remedy,
            RetryScheduled: self._remedy,
            DecisionMade: self._decision,
            SessionResumed: self._resumed,
            SessionStarted: self._started,
        }
        for kind in _FAILURE_TYPES:  # the full events and the lean ones alike
            self._fold[kind] = self._failure
        for kind in _SUCCESS_TYPES:
            self._fold[kind] = self._success

    @functools.cached_property
    def event_types(self) -> frozenset[type[Any]]:
        """The event types this projection reads (a fold may skip the others)."""
        return frozenset(self._fold)

    # -- folding ---------------------------------------------------------------------------

    def apply(self, r: Recorded) -> None:
        """Fold one event, of any stream; events the budget does not read are skipped."""
        fold = self._fold.get(type(r.event))
        if fold is not None:
            fold(r, r.event)

    def _ledger(self, session: str) -> _Ledger:
        ledger = self._ledgers.get(session)
        if ledger is None:
            ledger = self._ledgers[session] = _Ledger()
        return ledger

    def _failure(self, r: Recorded, event: Any) -> None:
        ledger = self._ledger(r.meta.session)
        time = r.meta.time
        errors = ledger.errors
        if errors and time < errors[-1].time:
            time = errors[-1].time
        signature: str = event.signature
        errors.append(FailedTry(time, event.error_type, signature))
        ledger.last_error = r.meta.event_id
        if not signature:
            return
        trial = ledger.trials.get(f"{r.stream}#{event.index}") if ledger.trials else None
        if (
            trial == signature
            and event.final
            and signature not in ledger.systemic
            and signature not in ledger.cured
        ):
            _mark(ledger.systemic, signature, time)
        _mark(ledger.remedied, signature, False)

    def _success(self, r: Recorded, event: Any) -> None:
        ledger = self._ledgers.get(r.meta.session)
        if ledger is None or not ledger.trials:
            return
        signature = ledger.trials.pop(f"{r.stream}#{event.index}", None)
        if signature is not None:  # the remedy worked: this signature is noise, not systemic
            _mark(ledger.cured, signature, True)
            ledger.systemic.pop(signature, None)

    def _remedy(self, r: Recorded, event: FixAttempted | RetryScheduled) -> None:
        if event.signature:
            ledger = self._ledger(r.meta.session)
            _mark(ledger.remedied, event.signature, True)
            if event.step_index is not None:
                _mark(ledger.trials, f"{r.stream}#{event.step_index}", event.signature)
                self.trial_streams.add(r.stream)

    def _decision(self, r: Recorded, event: DecisionMade) -> None:
        if event.kind == BUDGET_KIND:
            ledger = self._ledger(r.meta.session)
            ledger.last_choice = event.choice
            ledger.last_rule = event.rule

    def _started(self, r: Recorded, event: SessionStarted) -> None:
        self._ledger(r.meta.session).since = r.meta.time

    def _resumed(self, r: Recorded, event: SessionResumed) -> None:
        ledger = self._ledgers.get(r.meta.session)
        if ledger is not None and ledger.last_choice == "pause":
            ledger.errors.clear()
            ledger.systemic.clear()
            ledger.last_choice = ledger.last_rule = ""
            ledger.since = r.meta.time

    def last_error(self, session: str) -> str:
        """The event id of the session's last failed try ("" before any)."""
        ledger = self._ledgers.get(session)
        return "" if ledger is None else ledger.last_error

    # -- reading ---------------------------------------------------------------------------

    def latest(self, session: str) -> float:
        """The time of a session's latest error (0.0 for none): a worker whose clock runs
        behind a peer's judges the budget from there, not from before the peer's errors."""
        ledger = self._ledgers.get(session)
        return ledger.errors[-1].time if ledger is not None and ledger.errors else 0.0

    def window(self, session: str, now: float, span: float) -> BudgetWindow:
        """Count a session's errors in the window ``(now - span, now]``.

        Args:
            session: the session's name.
            now: the window's end, in seconds since the epoch (from the engine's clock).
            span: the window's length, in seconds.

        Returns:
            The window's counts (all zero for a session with no errors).

        Raises:
            UsageError: ``span`` is not a positive finite number.
        """
        if not (math.isfinite(span) and span > 0):
            raise UsageError(
                f"budget window: span must be a positive number of seconds, not {span}"
            )
        ledger = self._ledgers.get(session)
        if ledger is None:
            return BudgetWindow()
        start = now - span
        # The halves of the part of the window the session has lived: the trend needs both.
        lived = min(span, max(0.0, now - ledger.since)) if ledger.since else span
        middle = now - lived / 2
        systemic_since = ledger.systemic
        by_type: dict[str, int] = {}
        signatures: set[str] = set()
        systemic: set[str] = set()
        errors = first_half = 0
        for failed in reversed(ledger.errors):
            time = failed.time
            if time > now:
                continue
            if time <= start:
                break
            errors += 1
            if time <= middle:
                first_half += 1
            by_type[failed.error_type] = by_type.get(failed.error_type, 0) + 1
            signature = failed.signature
            if signature:
                signatures.add(signature)
                since = systemic_since.get(signature)
                if since is not None and time >= since:
                    systemic.add(signature)
        return BudgetWindow(
            errors=errors,
            by_type=by_type,
            signatures=len(signatures),
            first_half=first_half,
            second_half=errors - first_half,
            systemic=tuple(sorted(systemic)),
            last_choice=ledger.last_choice,
            last_rule=ledger.last_rule,
        )

    def last_choice(self, session: str) -> str:
        """The choice of the session's last budget decision ("" before any)."""
        ledger = self._ledgers.get(session)
        return "" if ledger is None else ledger.last_choice

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every session's ledger (order of marks included)."""
        return {
            session: {
                "errors": [msgspec.to_builtins(failed) for failed in ledger.errors],
                "remedied": list(ledger.remedied.items()),
                "systemic": list(ledger.systemic.items()),
                "cured": list(ledger.cured.items()),
                "trials": list(ledger.trials.items()),
                "last_choice": ledger.last_choice,
                "last_rule": ledger.last_rule,
                "last_error": ledger.last_error,
                "since": ledger.since,
            }
            for session, ledger in sorted(self._ledgers.items())
        }

    def dump(self) -> list[BudgetLedger]:
        """Every session's ledger, for a checkpoint (the streams under a remedy are narrowed
        to those whose trials are still open, as a load of it would: the set only grew)."""
        self.trial_streams.intersection_update(
            {key.rpartition("#")[0] for ledger in self._ledgers.values() for key in ledger.trials}
        )
        return [
            BudgetLedger(
                session=session,
                errors=tuple(ledger.errors),
                remedied=dict(ledger.remedied),
                systemic=dict(ledger.systemic),
                last_choice=ledger.last_choice,
                last_rule=ledger.last_rule,
                cured=dict(ledger.cured),
                trials=dict(ledger.trials),
                last_error=ledger.last_error,
                since=ledger.since,
            )
            for session, ledger in self._ledgers.items()
        ]

    def load(self, saved: list[BudgetLedger]) -> None:
        """Restore from a checkpoint's ledgers."""
        self._ledgers = {}
        self.trial_streams = set()
        for entry in saved:
            ledger = self._ledgers[entry.session] = _Ledger()
            ledger.errors.extend(entry.errors)
            ledger.remedied = dict(entry.remedied)
            ledger.systemic = dict(entry.systemic)
            ledger.cured = dict(entry.cured)
            ledger.trials = dict(entry.trials)
            ledger.last_choice = entry.last_choice
            ledger.last_rule = entry.last_rule
            ledger.since = entry.since
            self.trial_streams.update(key.rpartition("#")[0] for key in entry.trials)
            ledger.last_error = entry.last_error
