"""The error budget: the projection that counts a session's errors and remedies, and the policy.

Events are built by hand as :class:`onward.events.Recorded`; hypothesis holds replay == folding in
pages == checkpoint + tail, and that the budget never pauses a session for errors that no
remedy was attempted for (transient noise).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events import (
    Context,
    DecisionMade,
    Event,
    FixAttempted,
    Meta,
    Recorded,
    RetryScheduled,
    SessionStarted,
    StepCompleted,
    StepFailed,
    TaskSubmitted,
    UsageError,
    open_log,
)
from onward.judgement.budget import BudgetVerdict, ErrorBudget, assess, verdict_inputs
from onward.projections.budget import (
    ERRORS_KEPT,
    SIGNATURES_KEPT,
    BudgetLedger,
    BudgetProjection,
    BudgetWindow,
    FailedTry,
)
from onward.projections.reading import FoldReader
from tests.conftest import FakeClock

T0 = 1_700_000_000.0
HOUR = 3600.0


class History:
    """Events recorded by hand, each at a time given in seconds after ``T0``."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []

    def add(self, at: float, event: Event, *, session: str = "s", stream: str = "task-t") -> None:
        n = len(self.records) + 1
        meta = Meta(event_id=f"{n:032x}", time=T0 + at, session=session)
        self.records.append(Recorded(stream, n, n, meta, event))

    def fail(
        self, at: float, signature: str = "v1-a", *, error_type: str = "E", session: str = "s"
    ) -> None:
        event = StepFailed(index=0, name="call", error_type=error_type, signature=signature)
        self.add(at, event, session=session)

    def retry(self, at: float, signature: str = "v1-a", *, session: str = "s") -> None:
        event = RetryScheduled(
            step_index=0, attempt=2, delay=1.0, due=T0 + at + 1, signature=signature
        )
        self.add(at, event, session=session)

    def fix(self, at: float, signature: str = "v1-a", *, session: str = "s") -> None:
        event = FixAttempted(fix="smaller-batch", signature=signature, step_index=0)
        self.add(at, event, session=session)

    def decide(self, at: float, choice: str, *, kind: str = "budget", session: str = "s") -> None:
        self.add(at, DecisionMade(kind=kind, subject=session, choice=choice), session=session)

    def fold(self) -> BudgetProjection:
        budget = BudgetProjection()
        for r in self.records:
            budget.apply(r)
        return budget


def window(
    budget: BudgetProjection, now: float, span: float = HOUR, session: str = "s"
) -> BudgetWindow:
    return budget.window(session, T0 + now, span)


# -- the projection: counting -----------------------------------------------------------


def test_a_session_without_errors_has_an_empty_window() -> None:
    budget = BudgetProjection()
    assert window(budget, 0) == BudgetWindow()
    assert budget.last_choice("s") == ""
    assert budget.snapshot() == {}
    assert budget.dump() == []


def test_the_window_is_open_at_its_start_and_closed_at_now() -> None:
    history = History()
    for at in (0, 1, 1800, 3599, 3600, 3601):
        history.fail(at)
    budget = history.fold()
    # (3600 - 3600, 3600]: the error at 0 is out, the one at 3600 in, the one after now out.
    assert window(budget, 3600).errors == 4
    assert window(budget, 3601).errors == 4  # the error at 1 left the window
    assert window(budget, 7201).errors == 0


def test_the_window_splits_in_halves_for_the_trend() -> None:
    history = History()
    for at in (10, 1800, 1801, 3000, 3600):
        history.fail(at)
    result = window(history.fold(), 3600)
    # The halves are (0, 1800] and (1800, 3600].
    assert (result.first_half, result.second_half, result.errors) == (2, 3, 5)


def test_the_window_counts_types_and_distinct_signatures() -> None:
    history = History()
    history.fail(1, "v1-a", error_type="TimeoutError")
    history.fail(2, "v1-a", error_type="TimeoutError")
    history.fail(3, "v1-b", error_type="sqlite3.OperationalError")
    history.fail(4, "", error_type="ValueError")  # no signature: counted, but no diversity
    history.add(5, StepCompleted(index=0, name="call"))  # a success spends nothing
    history.add(6, TaskSubmitted(name="work"))
    result = window(history.fold(), 10)
    assert result.errors == 4
    assert result.by_type == {"TimeoutError": 2, "sqlite3.OperationalError": 1, "ValueError": 1}
    assert result.signatures == 2
    assert result.systemic == ()


def test_every_try_counts_final_or_not() -> None:
    history = History()
    history.add(1, StepFailed(index=0, name="a", error_type="E", final=False))
    history.add(2, StepFailed(index=0, name="a", attempt=2, error_type="E", final=True))
    assert window(history.fold(), 10).errors == 2


def test_sessions_have_budgets_of_their_own() -> None:
    history = History()
    history.fail(1, session="a")
    history.fail(2, session="a")
    history.fail(3, session="b")
    budget = history.fold()
    assert window(budget, 10, session="a").errors == 2
    assert window(budget, 10, session="b").errors == 1
    assert window(budget, 10, session="c").errors == 0


def test_a_session_keeps_its_last_errors_only() -> None:
    history = History()
    for i in range(ERRORS_KEPT + 5):
        history.fail(i, f"v1-{i}")
    budget = history.fold()
    (ledger,) = budget.dump()
    assert len(ledger.errors) == ERRORS_KEPT
    assert ledger.errors[0] == FailedTry(T0 + 5, "E", "v1-5")
    assert window(budget, ERRORS_KEPT + 10, span=10 * HOUR).errors == ERRORS_KEPT


def test_a_failure_stamped_before_the_latest_one_counts_as_at_the_latest() -> None:
    history = History()
    history.fail(100, "v1-a")
    history.fail(40, "v1-b")  # another worker's clock runs behind
    budget = history.fold()
    assert [failed.time for failed in budget.dump()[0].errors] == [T0 + 100, T0 + 100]
    assert window(budget, 100, span=10).errors == 2
    assert window(budget, 99, span=100).errors == 0


@pytest.mark.parametrize("span", [0.0, -1.0, float("inf"), float("nan")])
def test_the_window_span_must_be_positive_and_finite(span: float) -> None:
    with pytest.raises(UsageError, match="span"):
        BudgetProjection().window("s", T0, span)


def test_lean_step_outcomes_fold_like_the_full_ones() -> None:
    clock = FakeClock(T0)
    log = open_log("memory://", clock=clock)
    for i, signature in enumerate(("v1-a", "v1-b", "v1-a")):
        clock.advance(1)
        log.append(
            "task-t",
            [
                StepFailed(
                    index=int(i == 1), name="call", error_type="TimeoutError", signature=signature
                )
            ],
            expected_version=None,
            context=Context(session="s"),
        )
        if i == 0:
            clock.advance(1)
            log.append(
                "task-t",
                [RetryScheduled(step_index=0, attempt=2, delay=1.0, due=T0, signature="v1-a")],
                expected_version=None,
                context=Context(session="s"),
            )
    full, lean = BudgetProjection(), BudgetProjection()
    for r in log.read():
        full.apply(r)
    for page in FoldReader(log).pages(page_size=2):
        for r in page:
            lean.apply(r)
    assert lean.snapshot() == full.snapshot()
    assert window(lean, 10).systemic == ("v1-a",)


# -- the projection: remedies and systemic signatures -----------------------------------


@pytest.mark.parametrize("remedy", ["retry", "fix"])
def test_a_signature_failing_again_after_a_remedy_is_systemic(remedy: str) -> None:
    history = History()
    history.fail(1, "v1-a")
    getattr(history, remedy)(2, "v1-a")
    history.fail(3, "v1-b")  # another signature: the remedy was not for it
    assert window(history.fold(), 10).systemic == ()
    history.fail(4, "v1-a")
    budget = history.fold()
    assert window(budget, 10).systemic == ("v1-a",)
    assert budget.snapshot()["s"]["systemic"] == [("v1-a", T0 + 4)]


def test_the_trend_compares_halves_of_the_sessions_life_not_of_the_window() -> None:
    history = History()
    history.add(0, SessionStarted(name="s"), stream="session-s")
    for at in (50, 51, 52, 53):  # a burst in the session's first minute
        history.fail(at)
    budget = history.fold()
    early = budget.window("s", T0 + 60, HOUR)
    assert (early.first_half, early.second_half) == (0, 4)  # halves of its 60 s: rising
    later = budget.window("s", T0 + 600, HOUR)
    assert (later.first_half, later.second_half) == (4, 0)  # 10 min on, the burst is old
    fixed = BudgetProjection()
    for r in history.records[1:]:  # without its start: the halves of the whole window
        fixed.apply(r)
    assert fixed.window("s", T0 + 600, HOUR).second_half == 4


@pytest.mark.parametrize("remedy", ["retry", "fix"])
def test_a_signature_whose_remedy_worked_is_noise_not_systemic(remedy: str) -> None:
    history = History()
    history.fail(1, "v1-a")
    getattr(history, remedy)(2, "v1-a")
    history.fail(3, "v1-a")  # failed again after the remedy: systemic for now
    assert window(history.fold(), 10).systemic == ("v1-a",)
    getattr(history, remedy)(4, "v1-a")
    history.add(5, StepCompleted(index=0, name="call"))  # the remedy worked this time
    assert window(history.fold(), 10).systemic == ()
    history.fail(6, "v1-a")  # a flaky service: it fails again, and retries absorb it
    getattr(history, remedy)(7, "v1-a")
    history.fail(8, "v1-a")
    assert window(history.fold(), 10).systemic == ()
    history.add(9, StepCompleted(index=1, name="other"))  # another step: no cure of anything
    assert history.fold().snapshot()["s"]["cured"] == [("v1-a", True)]


def test_a_signature_recurring_without_a_remedy_is_not_systemic() -> None:
    history = History()
    for at in range(1, 20):
        history.fail(at, "v1-a")
    assert window(history.fold(), 30).systemic == ()


def test_a_remedy_in_another_session_does_not_count() -> None:
    history = History()
    history.fail(1, "v1-a", session="a")
    history.retry(2, "v1-a", session="b")
    history.fail(3, "v1-a", session="a")
    assert window(history.fold(), 10, session="a").systemic == ()


def test_a_remedy_without_a_signature_is_matched_to_nothing() -> None:
    history = History()
    history.fail(1, "")
    history.retry(2, "")
    history.fail(3, "")
    budget = history.fold()
    assert window(budget, 10).systemic == ()
    assert budget.snapshot()["s"]["remedied"] == []


def test_a_systemic_signature_counts_in_windows_that_hold_its_recurrence() -> None:
    history = History()
    history.fail(0, "v1-a")
    history.fix(1, "v1-a")
    history.fail(100, "v1-a")  # systemic from here on
    history.fail(5000, "v1-a")  # no remedy since, but the signature is systemic already
    budget = history.fold()
    assert window(budget, 50, span=60).systemic == ()  # only its first failure: not yet systemic
    assert window(budget, 150, span=60).systemic == ("v1-a",)
    assert window(budget, 4000, span=60).systemic == ()  # no failure of it in the window
    assert window(budget, 5000, span=60).systemic == ("v1-a",)


def test_a_session_keeps_marks_for_its_last_signatures_only() -> None:
    history = History()
    history.fail(0, "v1-first")
    history.retry(1, "v1-first")
    for i in range(SIGNATURES_KEPT):
        history.retry(2 + i, f"v1-{i}")
    history.fail(5000, "v1-first")  # its remedy mark was evicted
    budget = history.fold()
    ledger = budget.snapshot()["s"]
    assert len(ledger["remedied"]) == SIGNATURES_KEPT
    assert ledger["systemic"] == []


def test_the_last_budget_decision_is_remembered() -> None:
    history = History()
    history.decide(1, "slow_down")
    history.decide(2, "pause")
    history.decide(3, "retry", kind="retry")  # another kind of decision
    history.decide(4, "continue", session="other")
    budget = history.fold()
    assert budget.last_choice("s") == "pause"
    assert window(budget, 10).last_choice == "pause"
    assert budget.last_choice("other") == "continue"


# -- the projection: replay, pages, checkpoints -----------------------------------------

_SIGNATURES = st.sampled_from(["v1-a", "v1-b", "v1-c", ""])
_SESSIONS = st.sampled_from(["s", "t"])


@st.composite
def _histories(draw: st.DrawFn) -> History:
    history = History()
    at = 0.0
    for _ in range(draw(st.integers(0, 60))):
        at += draw(st.sampled_from([0.0, 1.0, 30.0, 700.0, 2000.0, -40.0]))  # clocks may lag
        session = draw(_SESSIONS)
        signature = draw(_SIGNATURES)
        kind = draw(st.sampled_from(["fail", "fail", "retry", "fix", "decide", "ok"]))
        if kind == "fail":
            error_type = draw(st.sampled_from(["TimeoutError", "KeyError"]))
            history.fail(at, signature, error_type=error_type, session=session)
        elif kind == "retry":
            history.retry(at, signature, session=session)
        elif kind == "fix":
            history.fix(at, signature, session=session)
        elif kind == "decide":
            history.decide(at, draw(st.sampled_from(["continue", "slow_down", "pause"])))
        else:
            history.add(at, StepCompleted(index=0, name="call"), session=session)
    return history


def _windows(budget: BudgetProjection, history: History) -> list[BudgetWindow]:
    end = history.records[-1].meta.time - T0 if history.records else 0.0
    return [window(budget, end, span, s) for s in ("s", "t") for span in (60.0, HOUR)]


@given(history=_histories(), cut=st.integers(0, 60), page=st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_replay_equals_pages_equals_checkpoint_and_tail(
    history: History, cut: int, page: int
) -> None:
    replay = history.fold()

    paged = BudgetProjection()
    records = history.records
    for start in range(0, len(records), page):
        for r in records[start : start + page]:
            paged.apply(r)

    cut = min(cut, len(records))
    head = BudgetProjection()
    for r in records[:cut]:
        head.apply(r)
    saved = msgspec.msgpack.decode(msgspec.msgpack.encode(head.dump()), type=list[BudgetLedger])
    resumed = BudgetProjection()
    resumed.load(saved)
    assert resumed.snapshot() == head.snapshot()
    for r in records[cut:]:
        resumed.apply(r)

    assert paged.snapshot() == replay.snapshot() == resumed.snapshot()
    assert _windows(paged, history) == _windows(replay, history) == _windows(resumed, history)


@given(history=_histories(), offset=st.floats(-4000.0, 4000.0), span=st.sampled_from([60.0, HOUR]))
@settings(max_examples=60, deadline=None)
def test_a_window_counts_what_a_scan_of_the_kept_errors_counts(
    history: History, offset: float, span: float
) -> None:
    budget = history.fold()
    for ledger in budget.dump():
        now = (ledger.errors[-1].time if ledger.errors else T0) + offset
        inside = [f for f in ledger.errors if now - span < f.time <= now]
        counted = budget.window(ledger.session, now, span)
        assert counted.errors == len(inside)
        assert counted.first_half == sum(f.time <= now - span / 2 for f in inside)
        assert counted.signatures == len({f.signature for f in inside} - {""})
        assert sum(counted.by_type.values()) == len(inside)
        assert set(counted.systemic) <= {f.signature for f in inside}
        assert [f.time for f in ledger.errors] == sorted(f.time for f in ledger.errors)


# -- the policy: validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"window": 0.0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"per_type": {"TimeoutError": 0}}, "per_type"),
        ({"per_type": {"": 3}}, "per_type"),
        ({"slow_down": -1.0}, "slow_down"),
        ({"slow_down": float("nan")}, "slow_down"),
        ({"rising": 0.5}, "rising"),
    ],
)
def test_an_error_budget_out_of_range_is_refused(settings_: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=field):
        ErrorBudget(**settings_)


def test_an_error_budget_is_checked_when_decoded_too() -> None:
    with pytest.raises(msgspec.ValidationError, match="limit"):
        msgspec.json.decode(b'{"limit": 0}', type=ErrorBudget)


# -- the policy: assess -----------------------------------------------------------------


def test_within_budget_continues() -> None:
    verdict = assess(ErrorBudget(limit=5), BudgetWindow(errors=4, first_half=1, second_half=3))
    assert (verdict.choice, verdict.rule) == ("continue", "budget.within")
    assert (verdict.spent, verdict.limit, verdict.remaining) == (4, 5, 1)
    assert verdict.rising  # rising, but within budget: nothing changes
    assert verdict.delay == 0.0
    assert "4 errors of 5" in verdict.reason


def test_no_errors_have_no_trend() -> None:
    verdict = assess(ErrorBudget(), BudgetWindow())
    assert (verdict.choice, verdict.trend, verdict.rising, verdict.remaining) == (
        "continue",
        0.0,
        False,
        10,
    )


def test_a_spent_budget_with_a_systemic_signature_pauses() -> None:
    spent = BudgetWindow(errors=10, first_half=5, second_half=5, signatures=2, systemic=("v1-a",))
    verdict = assess(ErrorBudget(limit=10), spent)
    assert (verdict.choice, verdict.rule) == ("pause", "budget.systemic")
    assert verdict.systemic == ("v1-a",)
    assert verdict.remaining == 0
    assert "v1-a" in verdict.reason


def test_a_systemic_signature_within_budget_does_not_pause() -> None:
    verdict = assess(ErrorBudget(limit=10), BudgetWindow(errors=3, systemic=("v1-a",)))
    assert verdict.choice == "continue"


def test_a_spent_budget_burning_faster_slows_down() -> None:
    spent = BudgetWindow(errors=12, first_half=4, second_half=8)
    verdict = assess(ErrorBudget(limit=10, slow_down=45.0), spent)
    assert (verdict.choice, verdict.rule) == ("slow_down", "budget.rising")
    assert (verdict.trend, verdict.rising, verdict.delay) == (2.0, True, 45.0)
    assert "45 s" in verdict.reason


def test_the_rising_threshold_is_strict() -> None:
    spent = BudgetWindow(errors=15, first_half=6, second_half=9)  # exactly 1.5 times
    verdict = assess(ErrorBudget(limit=10, rising=1.5), spent)
    assert (verdict.trend, verdict.rising, verdict.choice) == (1.5, False, "continue")
    assert verdict.rule == "budget.transient-noise"


def test_an_empty_older_half_keeps_the_trend_finite() -> None:
    verdict = assess(ErrorBudget(limit=2), BudgetWindow(errors=3, second_half=3))
    assert (verdict.trend, verdict.rising, verdict.choice) == (3.0, True, "slow_down")
    one = assess(ErrorBudget(limit=1), BudgetWindow(errors=1, second_half=1))
    assert (one.trend, one.rising, one.choice) == (1.0, False, "continue")  # fewer than 2


def test_a_spent_budget_of_transient_noise_continues() -> None:
    spent = BudgetWindow(errors=20, first_half=10, second_half=10, signatures=7)
    verdict = assess(ErrorBudget(limit=10), spent)
    assert (verdict.choice, verdict.rule) == ("continue", "budget.transient-noise")
    assert (verdict.diversity, verdict.trend, verdict.remaining) == (7, 1.0, 0)
    assert "transient noise" in verdict.reason


def test_a_spent_per_type_budget_spends_the_budget() -> None:
    budget = ErrorBudget(limit=100, per_type={"OperationalError": 2, "KeyError": 5})
    errors = BudgetWindow(
        errors=3,
        by_type={"sqlite3.OperationalError": 1, "OperationalError": 1, "KeyError": 1},
        first_half=1,
        second_half=2,
        systemic=("v1-a",),
    )
    verdict = assess(budget, errors)
    assert verdict.exhausted_types == ("OperationalError",)  # bare: any module's counts
    assert (verdict.choice, verdict.rule, verdict.remaining) == ("pause", "budget.systemic", 97)
    assert "OperationalError" in verdict.reason


def test_a_qualified_per_type_budget_counts_its_module_only() -> None:
    budget = ErrorBudget(per_type={"sqlite3.OperationalError": 2})
    other = BudgetWindow(errors=2, by_type={"psycopg.OperationalError": 2})
    assert assess(budget, other).exhausted_types == ()
    bare = BudgetWindow(errors=2, by_type={"OperationalError": 1, "sqlite3.OperationalError": 1})
    assert assess(budget, bare).exhausted_types == ("sqlite3.OperationalError",)


def test_verdict_inputs_are_plain_json_for_a_decision() -> None:
    verdict = assess(
        ErrorBudget(limit=2, per_type={"E": 1}),
        BudgetWindow(errors=3, by_type={"E": 3}, second_half=3, systemic=("v1-a",)),
    )
    inputs = verdict_inputs(verdict)
    assert "choice" not in inputs
    assert "rule" not in inputs
    assert inputs["exhausted_types"] == ["E"]
    assert inputs["systemic"] == ["v1-a"]
    assert inputs["reason"] == verdict.reason
    decision = DecisionMade(
        kind="budget", subject="s", choice=verdict.choice, rule=verdict.rule, inputs=inputs
    )
    decoded = msgspec.json.decode(msgspec.json.encode(decision), type=DecisionMade)
    assert decoded.inputs == inputs
    rebuilt = msgspec.convert(
        {**inputs, "choice": verdict.choice, "rule": verdict.rule}, BudgetVerdict
    )
    assert rebuilt == verdict


# -- the policy over folded histories ---------------------------------------------------


@st.composite
def _noise(draw: st.DrawFn) -> History:
    """A history of errors and successes in one session, with no fix or retry attempted."""
    history = History()
    at = 0.0
    for _ in range(draw(st.integers(0, 80))):
        at += draw(st.floats(0.0, 300.0))
        if draw(st.booleans()):
            signature = draw(st.sampled_from(["v1-a", "v1-b", "v1-c", ""]))
            error_type = draw(st.sampled_from(["TimeoutError", "KeyError", "OSError"]))
            history.fail(at, signature, error_type=error_type)
        else:
            history.add(at, StepCompleted(index=0, name="call"))
    return history


_BUDGETS = st.builds(
    ErrorBudget,
    limit=st.integers(1, 20),
    window=st.sampled_from([60.0, 600.0, HOUR]),
    per_type=st.dictionaries(st.sampled_from(["TimeoutError", "KeyError"]), st.integers(1, 5)),
    rising=st.floats(1.0, 4.0),
)


@given(history=_noise(), budget=_BUDGETS, later=st.floats(0.0, 600.0))
@settings(max_examples=100, deadline=None)
def test_the_budget_never_pauses_for_transient_noise(
    history: History, budget: ErrorBudget, later: float
) -> None:
    end = history.records[-1].meta.time - T0 if history.records else 0.0
    errors = window(history.fold(), end + later, budget.window)
    verdict = assess(budget, errors)
    assert verdict.choice != "pause"
    assert verdict.systemic == ()
    spent = errors.errors >= budget.limit or verdict.exhausted_types
    if not spent:
        assert verdict.rule == "budget.within"
    elif verdict.rising:
        assert (verdict.choice, verdict.delay) == ("slow_down", budget.slow_down)
    else:
        assert (verdict.choice, verdict.rule) == ("continue", "budget.transient-noise")
    assert verdict.remaining == max(budget.limit - errors.errors, 0)


def test_the_streams_under_a_remedy_narrow_at_a_checkpoint_to_the_open_trials() -> None:
    """A serving worker added a stream for each task ever retried or fixed, and never let one
    go: a checkpoint keeps those whose trial is still open, as loading it would."""
    history = History()
    for task in ("task-a", "task-b"):
        history.add(
            1, StepFailed(index=0, name="call", error_type="E", signature="v1-a"), stream=task
        )
        history.add(
            2,
            RetryScheduled(step_index=0, attempt=2, delay=1.0, due=T0 + 3, signature="v1-a"),
            stream=task,
        )
    history.add(3, StepCompleted(index=0, name="call", result=1, duration=0.1), stream="task-a")
    budget = history.fold()
    assert budget.trial_streams == {"task-a", "task-b"}
    saved = budget.dump()
    assert budget.trial_streams == {"task-b"}
    reloaded = BudgetProjection()
    reloaded.load(saved)
    assert reloaded.trial_streams == budget.trial_streams
