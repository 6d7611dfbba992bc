"""The error-learning DB: occurrences, fixes, retries, the kind rule, bounded histories.

Events go through a real memory log (with an injected clock) and are folded from
``log.read()``; a hypothesis property holds replay == checkpoint + tail, and the lean reads of
:class:`onward.projections.reading.FoldReader` fold to the same DB as the full events.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward.events import (
    Context,
    ErrorClassified,
    ErrorKind,
    ErrorObserved,
    Event,
    EventLog,
    FixAttempted,
    FixFailed,
    FixLearned,
    FixSucceeded,
    RetryScheduled,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskCancelled,
    TaskClaimed,
    TaskFailed,
    TaskQuarantined,
    TaskSubmitted,
    TaskSucceeded,
    open_log,
)
from onward.projections.errors import (
    HISTORY_LIMIT,
    RETRY_TIMES_LIMIT,
    SESSIONS_LIMIT,
    ErrorProjection,
    ErrorsState,
    FixRecord,
    HistoryEntry,
    PendingRetry,
    SignatureView,
)
from onward.projections.reading import FOLDED_STEP_OUTCOMES, FoldReader
from tests.conftest import FakeClock
from tests.strategies import EVENT_STRATEGIES

T0 = FakeClock().now


class Board:
    """A memory log on a fake clock; each append moves the clock one second."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.log: EventLog = open_log("memory://", clock=self.clock)

    def add(self, stream: str, *events: Event, session: str = "s", advance: float = 1.0) -> None:
        self.clock.advance(advance)
        self.log.append(
            stream, list(events), expected_version=None, context=Context(session=session)
        )

    def fold(self) -> ErrorProjection:
        errors = ErrorProjection()
        for r in self.log.read():
            errors.apply(r)
        return errors


def observed(sig: str = "sig", step: int | None = 0, message: str = "boom") -> ErrorObserved:
    return ErrorObserved(
        signature=sig,
        error_type="builtins.ValueError",
        message=message,
        frames=["app.jobs:run", "app.jobs:parse"],
        step_index=step,
        causes=["builtins.KeyError"],
    )


def retry(sig: str = "sig", step: int = 0, attempt: int = 2, delay: float = 2.3) -> RetryScheduled:
    return RetryScheduled(
        step_index=step,
        attempt=attempt,
        delay=delay,
        due=T0 + 100,
        policy="default",
        error_type="builtins.TimeoutError",
        signature=sig,
    )


def failed(step: int = 0, attempt: int = 1, final: bool = False) -> StepFailed:
    return StepFailed(
        index=step, name="call", attempt=attempt, error_type="TimeoutError", final=final
    )


def completed(step: int = 0, attempt: int = 2) -> StepCompleted:
    return StepCompleted(index=step, name="call", attempt=attempt)


def unresolved(errors: ErrorProjection) -> list[tuple[str, int, str, int]]:
    """The pending retries, without when they were scheduled."""
    return [(p.stream, p.step_index, p.signature, p.attempt) for p in errors.pending()]


@pytest.fixture
def board() -> Board:
    return Board()


# -- occurrences ----------------------------------------------------------------------------


def test_an_unknown_signature_reads_as_empty() -> None:
    errors = ErrorProjection()
    view = errors.get("nope")
    assert view == SignatureView(signature="nope")
    assert "nope" not in errors.signatures
    assert view.kind == "unknown"
    assert view.best_fix is None
    assert view.best_fix_rate == 0.0
    assert view.retry_rate == 0.5
    assert errors.fix_stats("nope") == {}
    assert errors.learned("nope") == ()
    assert errors.recent_retries("s", 0.0) == []
    assert errors.pending() == []


def test_observations_are_counted_with_the_latest_details(board: Board) -> None:
    board.add("task-t1", observed(step=2, message="first"), session="beta")
    board.add(
        "session-alpha",
        ErrorObserved(
            signature="sig",
            error_type="builtins.TypeError",
            message="second",
            frames=["app.main:loop"],
            causes=[],
        ),
        session="alpha",
        advance=5.0,
    )
    board.add("task-t2", observed(message="third"), session="beta")
    board.add("task-t3", observed("other"))
    errors = board.fold()
    view = errors.get("sig")
    assert view.occurrences == 3
    assert view.first_seen == T0 + 1
    assert view.last_seen == T0 + 7
    assert view.error_type == "builtins.ValueError"
    assert view.message == "third"
    assert view.frames == ("app.jobs:run", "app.jobs:parse")
    assert view.causes == ("builtins.KeyError",)
    assert view.sessions == ("alpha", "beta")
    assert view.history == (
        HistoryEntry(1, T0 + 1, "observed in task t1 step 2"),
        HistoryEntry(2, T0 + 6, "observed in session alpha"),
        HistoryEntry(3, T0 + 7, "observed in task t2 step 0"),
    )
    assert sorted(errors.signatures) == ["other", "sig"]
    assert errors.get("other").occurrences == 1


def test_an_observation_outside_task_and_session_streams_names_its_stream(board: Board) -> None:
    board.add("elsewhere", observed(step=None), session="")
    view = board.fold().get("sig")
    assert view.history[0].what == "observed in stream elsewhere"
    assert view.sessions == ()  # no session to remember


def test_sessions_are_sorted_and_bounded(board: Board) -> None:
    names = [f"s{i:02d}" for i in range(SESSIONS_LIMIT + 5)]
    for name in reversed(names):  # the last names come first
        board.add("task-t", observed(), session=name)
    board.add("task-t", observed(), session=names[0])  # not remembered: the set is full
    view = board.fold().get("sig")
    assert view.occurrences == SESSIONS_LIMIT + 6
    assert view.sessions == tuple(sorted(names[5:]))
    assert len(view.sessions) == SESSIONS_LIMIT


def test_history_keeps_the_last_entries(board: Board) -> None:
    for i in range(HISTORY_LIMIT + 10):
        board.add("task-t", observed(step=i))
    view = board.fold().get("sig")
    assert len(view.history) == HISTORY_LIMIT
    assert view.history[0] == HistoryEntry(11, T0 + 11, "observed in task t step 10")
    assert view.history[-1].what == f"observed in task t step {HISTORY_LIMIT + 9}"
    assert [e.position for e in view.history] == list(range(11, HISTORY_LIMIT + 11))


def test_classification_is_the_engines_latest(board: Board) -> None:
    board.add("task-t", ErrorClassified(signature="sig", kind=ErrorKind.SYSTEMIC, reason="rule 3"))
    assert board.fold().get("sig").kind == "systemic"
    board.add("task-t", ErrorClassified(signature="sig", kind=ErrorKind.TRANSIENT))
    view = board.fold().get("sig")
    assert view.classification == "transient"
    assert view.classification_reason == ""
    assert view.kind == "transient"
    assert view.occurrences == 0  # classified, never observed
    assert view.first_seen == view.last_seen == 0.0
    assert [e.what for e in view.history] == [
        "classified systemic (rule 3)",
        "classified transient",
    ]


# -- fixes ----------------------------------------------------------------------------------


def test_fixes_are_counted_per_signature(board: Board) -> None:
    board.add(
        "task-t",
        FixAttempted(fix="raise-timeout", signature="sig", step_index=1, change={"t": 30}),
        FixSucceeded(fix="raise-timeout", signature="sig", step_index=1),
        FixAttempted(fix="retry-smaller", signature="sig"),
        FixFailed(fix="retry-smaller", signature="sig", message="again"),
        FixAttempted(fix="raise-timeout", signature="other"),
    )
    errors = board.fold()
    assert errors.fix_stats("sig") == {
        "raise-timeout": FixRecord(attempts=1, successes=1, failures=0),
        "retry-smaller": FixRecord(attempts=1, successes=0, failures=1),
    }
    assert errors.fix_stats("other") == {"raise-timeout": FixRecord(attempts=1)}
    view = errors.get("sig")
    assert view.best_fix == "raise-timeout"
    assert view.best_fix_rate == pytest.approx(2 / 3)
    assert [e.what for e in view.history] == [
        "fix raise-timeout attempted",
        "fix raise-timeout succeeded",
        "fix retry-smaller attempted",
        "fix retry-smaller failed",
    ]
    assert errors.get("other").best_fix is None  # no success yet
    # fix_stats is a copy: changing it changes nothing in the DB
    errors.fix_stats("sig").clear()
    assert len(errors.fix_stats("sig")) == 2


def test_fix_rate_is_laplace_smoothed() -> None:
    assert FixRecord().rate == 0.5
    assert FixRecord(attempts=4, successes=3, failures=1).rate == pytest.approx(4 / 6)
    assert FixRecord(attempts=2, successes=0, failures=2).rate == pytest.approx(1 / 4)
    # an outcome without a recorded attempt still counts as a trial: the rate stays below 1
    assert FixRecord(attempts=0, successes=2).rate == pytest.approx(3 / 4)


def test_best_fix_is_the_highest_rate_then_the_most_successes() -> None:
    view = SignatureView(
        signature="sig",
        fixes={
            "a": FixRecord(attempts=1, successes=1),  # 2/3
            "b": FixRecord(attempts=4, successes=3, failures=1),  # 4/6 = 2/3, more successes
            "c": FixRecord(attempts=9, successes=1, failures=8),  # 2/11
            "d": FixRecord(attempts=0),  # no success: never the best, whatever its rate
        },
    )
    assert view.best_fix == "b"
    assert view.best_fix_rate == pytest.approx(2 / 3)
    view.fixes["e"] = FixRecord(attempts=5, successes=5)  # 6/7
    assert view.best_fix == "e"
    view.fixes["f"] = FixRecord(attempts=5, successes=5)  # the same: the first name wins
    assert view.best_fix == "e"
    view.fixes = {"d": FixRecord(attempts=3, failures=3)}
    assert view.best_fix is None
    assert view.best_fix_rate == 0.0


def test_learned_fixes_keep_their_order_without_repeats(board: Board) -> None:
    board.add(
        "session-s",
        FixLearned(fix="b", signature="sig", source="manual", note="by hand"),
        FixLearned(fix="a", signature="sig", source="automatic"),
        FixLearned(fix="b", signature="sig"),
    )
    errors = board.fold()
    assert errors.learned("sig") == ("b", "a")
    assert errors.get("sig").learned == ("b", "a")
    assert errors.fix_stats("sig") == {}  # learning is not trying
    assert [e.what for e in errors.get("sig").history] == [
        "learned b (manual)",
        "learned a (automatic)",
        "learned b (manual)",
    ]


# -- retries --------------------------------------------------------------------------------


def test_a_retry_that_completes_is_a_retry_success(board: Board) -> None:
    # as the engine records it: the failed try, its error, the retry; then the next try
    board.add("task-t", failed(attempt=1), observed(), retry(delay=2.34))
    errors = board.fold()
    view = errors.get("sig")
    assert (view.retries, view.retry_successes) == (1, 0)
    assert unresolved(errors) == [("task-t", 0, "sig", 2)]
    board.add("task-other", completed())  # another task's step 0: not this retry
    board.add("task-t", completed(step=1))  # another step of this task: not this retry
    assert board.fold().get("sig").retry_successes == 0
    board.add("task-t", StepStarted(index=0, name="call", attempt=2), completed())
    errors = board.fold()
    view = errors.get("sig")
    assert (view.retries, view.retry_successes) == (1, 1)
    assert view.retry_rate == pytest.approx(2 / 3)
    assert errors.pending() == []
    assert [e.what for e in view.history] == [
        "observed in task t step 0",
        "retry scheduled in 2.3 s (task t step 0, attempt 2)",
        "retry succeeded in task t step 0",
    ]
    board.add("task-t", completed())  # a second completion is no second success
    assert board.fold().get("sig").retry_successes == 1


def test_a_retry_that_fails_is_dropped_until_the_next_one(board: Board) -> None:
    board.add("task-t", retry(attempt=2))
    board.add("task-t", failed(attempt=2))
    errors = board.fold()
    assert errors.pending() == []
    board.add("task-t", completed(attempt=3))  # no retry pending: not a retry success
    assert board.fold().get("sig").retry_successes == 0
    board.add("task-t", failed(attempt=3), retry(attempt=4))
    board.add("task-t", completed(attempt=4))
    view = board.fold().get("sig")
    assert (view.retries, view.retry_successes) == (2, 1)


def test_the_failure_recorded_after_its_retry_keeps_it_pending(board: Board) -> None:
    board.add("task-t", retry(attempt=2), failed(attempt=1))
    assert unresolved(board.fold()) == [("task-t", 0, "sig", 2)]
    board.add("task-t", completed(attempt=2))
    assert board.fold().get("sig").retry_successes == 1


@pytest.mark.parametrize(
    "end",
    [
        TaskSucceeded(),
        TaskFailed(error_type="ValueError"),
        TaskCancelled(reason="stop"),
    ],
)
def test_a_task_that_ends_drops_its_pending_retries(board: Board, end: Event) -> None:
    board.add("task-t", retry(step=0), retry(step=1))
    board.add("task-u", retry(step=0))
    assert len(board.fold().pending()) == 3
    board.add("task-t", end)
    errors = board.fold()
    assert unresolved(errors) == [("task-u", 0, "sig", 2)]
    assert errors.get("sig").retries == 3
    assert errors.recent_retries("s", 0.0) == [T0 + 2]  # those that never ran spend nothing


def test_a_retry_without_a_signature_counts_only_for_the_budget(board: Board) -> None:
    board.add("task-t", retry(sig=""))
    errors = board.fold()
    assert errors.signatures == {}
    assert errors.pending() == [PendingRetry("task-t", 0, "", 2, "s", 1)]
    assert errors.recent_retries("s", 0.0) == [T0 + 1]
    board.add("task-t", completed())  # it worked: it spends no more of the budget
    errors = board.fold()
    assert errors.signatures == {}
    assert (errors.pending(), errors.recent_retries("s", 0.0)) == ([], [])


def test_a_retry_spends_the_budget_until_its_step_completes(board: Board) -> None:
    board.add("task-a", retry(step=0), retry(step=1))  # two retries in one task
    board.add("task-b", retry())
    board.add("task-b", failed(attempt=2))  # b's retry failed: it stays spent
    board.add("task-a", completed(step=1))  # a's second retry worked
    errors = board.fold()
    assert errors.recent_retries("s", 0.0) == [T0 + 1, T0 + 2]
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(errors.dump()), type=ErrorsState)
    reloaded = ErrorProjection()
    reloaded.load(state)  # a checkpoint keeps when each pending retry spent
    board.add("task-a", completed(step=0))
    reloaded.apply(next(iter(board.log.read(after=board.log.head() - 1))))
    assert reloaded.recent_retries("s", 0.0) == [T0 + 2] == board.fold().recent_retries("s", 0.0)


def test_recent_retries_per_session(board: Board) -> None:
    board.add("task-a", retry(), session="alpha")
    board.add("task-b", retry(), session="beta", advance=10.0)
    board.add("task-a", retry(), session="alpha", advance=10.0)
    errors = board.fold()
    assert errors.recent_retries("alpha", 0.0) == [T0 + 1, T0 + 21]
    assert errors.recent_retries("alpha", T0 + 21) == [T0 + 21]  # at or after since
    assert errors.recent_retries("alpha", T0 + 21.5) == []
    assert errors.recent_retries("beta", 0.0) == [T0 + 11]
    assert errors.recent_retries("gamma", 0.0) == []


def test_recent_retries_keep_the_last_thousand(board: Board) -> None:
    for _ in range(RETRY_TIMES_LIMIT + 5):
        board.add("task-a", retry(), session="alpha")
    errors = board.fold()
    times = errors.recent_retries("alpha", 0.0)
    assert len(times) == RETRY_TIMES_LIMIT
    assert times[0] == T0 + 6
    assert times[-1] == T0 + RETRY_TIMES_LIMIT + 5
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(errors.dump()), type=ErrorsState)
    reloaded = ErrorProjection()
    reloaded.load(state)
    board.add("task-a", retry(), session="alpha")
    reloaded.apply(next(iter(board.log.read(after=board.log.head() - 1))))
    times = reloaded.recent_retries("alpha", 0.0)
    assert len(times) == RETRY_TIMES_LIMIT  # the bound survives a checkpoint
    assert times[0] == T0 + 7


# -- the kind rule --------------------------------------------------------------------------


def kind_of(**fields: Any) -> str:
    return SignatureView(signature="sig", **fields).kind


def test_kind_is_unknown_without_evidence() -> None:
    assert kind_of() == "unknown"
    assert kind_of(occurrences=10) == "unknown"
    assert kind_of(classification="unknown") == "unknown"


def test_kind_is_systemic_when_fixes_and_retries_failed() -> None:
    failed_fix = {"f": FixRecord(attempts=2, failures=2)}
    assert kind_of(occurrences=3, retries=2, fixes=failed_fix) == "systemic"
    assert kind_of(occurrences=3, retries=2) == "systemic"  # no fix tried: none succeeded
    # found systemic since the engine said transient: the rule wins
    assert kind_of(occurrences=3, retries=2, classification="transient") == "systemic"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"occurrences": 2, "retries": 2}, "too few occurrences"),
        ({"occurrences": 3, "retries": 1}, "too few retries"),
        ({"occurrences": 3, "retries": 3, "retry_successes": 1}, "a retry worked"),
        (
            {"occurrences": 3, "retries": 2, "fixes": {"f": FixRecord(attempts=1, successes=1)}},
            "a fix worked",
        ),
    ],
)
def test_kind_is_not_systemic_without_every_condition(fields: dict[str, Any], why: str) -> None:
    assert kind_of(**fields) == "unknown", why
    assert kind_of(**fields, classification="systemic") == "systemic", why


def test_kind_is_transient_when_retries_usually_work() -> None:
    assert kind_of(retries=2, retry_successes=1) == "transient"  # (1+1)/(2+2) = 0.5
    assert kind_of(retries=2, retry_successes=1, classification="systemic") == "transient"
    assert kind_of(retries=4, retry_successes=1, classification="systemic") == "systemic"  # 1/3
    assert kind_of(retries=1, retry_successes=1) == "unknown"  # too few retries to say
    assert kind_of(retries=1, retry_successes=1, classification="transient") == "transient"


def test_kind_from_the_log(board: Board) -> None:
    board.add("task-t", ErrorClassified(signature="sig", kind=ErrorKind.TRANSIENT, reason="type"))
    for attempt in (2, 3, 4):
        board.add("task-t", failed(attempt=attempt - 1), observed(), retry(attempt=attempt))
    assert board.fold().get("sig").kind == "systemic"  # 3 occurrences, 3 retries, none worked
    board.add(
        "task-t", FixAttempted(fix="f", signature="sig"), FixSucceeded(fix="f", signature="sig")
    )
    view = board.fold().get("sig")
    assert view.kind == "transient"  # not systemic any more: the engine's verdict stands
    assert view.best_fix == "f"


# -- snapshot, checkpoint, replay -----------------------------------------------------------


def test_snapshot_is_plain_and_holds_the_verdicts(board: Board) -> None:
    board.add("task-t", observed(), retry(), FixAttempted(fix="f", signature="sig"))
    snapshot = board.fold().snapshot()
    msgspec.json.encode(snapshot)  # plain values only
    sig = snapshot["signatures"]["sig"]
    assert sig["occurrences"] == 1
    assert sig["fixes"] == {"f": {"attempts": 1, "successes": 0, "failures": 0}}
    assert (sig["kind"], sig["best_fix"], sig["best_fix_rate"]) == ("unknown", None, 0.0)
    assert sig["retry_rate"] == pytest.approx(1 / 3)
    assert sig["frames"] == ("app.jobs:run", "app.jobs:parse")
    assert snapshot["pending"] == [["task-t", 0, "sig", 2, "s", 2]]
    assert snapshot["retry_times"] == {"s": [T0 + 1]}


#: The events this DB reads, and some it skips (a task's lifecycle).
ERROR_TYPES = (
    ErrorObserved,
    ErrorClassified,
    FixAttempted,
    FixSucceeded,
    FixFailed,
    FixLearned,
    RetryScheduled,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskSubmitted,
    TaskClaimed,
    TaskSucceeded,
    TaskFailed,
    TaskCancelled,
)
RETRY_TYPES = (RetryScheduled, StepCompleted, StepFailed)
#: A few values for the fields that link events, so that random events meet.
LINKS: dict[str, st.SearchStrategy[Any]] = {
    "signature": st.sampled_from(["", "s1", "s2", "s3"]),
    "fix": st.sampled_from(["f1", "f2", "f3"]),
    "index": st.integers(0, 1),
    "step_index": st.integers(0, 1),
    "attempt": st.integers(1, 4),
}


@st.composite
def linked_events(draw: st.DrawFn) -> tuple[str, str, float, Event]:
    """A random event of :data:`ERROR_TYPES`, its stream, session and clock advance."""
    kind = draw(st.sampled_from(ERROR_TYPES + RETRY_TYPES * 3))  # retries meet their outcomes
    event = draw(EVENT_STRATEGIES[kind])
    links = {
        name: draw(values)
        for name, values in LINKS.items()
        # a step index stays None when it is: the event is then about the task as a whole
        if name in event.__struct_fields__ and getattr(event, name) is not None
    }
    if links:
        event = msgspec.structs.replace(event, **links)
    stream = draw(st.sampled_from(["task-a", "task-a", "task-b", "session-x"]))
    session = draw(st.sampled_from(["x", "y", ""]))
    advance = draw(st.sampled_from([0.0, 0.5, 3.0]))
    return stream, session, advance, event


#: Whether FoldReader's lean step outcomes carry the try's number.
LEAN_ATTEMPTS = all(
    "attempt" in kind.__struct_fields__
    for kind in FOLDED_STEP_OUTCOMES
    if kind not in (StepCompleted, StepFailed)
)


def fold(errors: ErrorProjection, records: Any) -> ErrorProjection:
    for r in records:
        errors.apply(r)
    return errors


def reload(errors: ErrorProjection) -> ErrorProjection:
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(errors.dump()), type=ErrorsState)
    loaded = ErrorProjection()
    loaded.load(state)
    return loaded


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(linked_events(), max_size=40), st.data())
def test_replay_equals_checkpoint_plus_tail(
    entries: list[tuple[str, str, float, Event]], data: st.DataObject
) -> None:
    board = Board()
    for stream, session, advance, event in entries:
        board.add(stream, event, session=session, advance=advance)
    records = list(board.log.read())
    whole = fold(ErrorProjection(), records).snapshot()
    cut = data.draw(st.integers(0, len(records)), label="cut")
    first = fold(ErrorProjection(), records[:cut])
    assert fold(reload(first), records[cut:]).snapshot() == whole
    assert reload(fold(ErrorProjection(), records)).snapshot() == whole
    # FoldReader's lean step outcomes fold the same (read as if their attempt were unknown
    # while they do not carry it)
    lean = ErrorProjection()
    for page in FoldReader(board.log).pages():
        fold(lean, page)
    if not LEAN_ATTEMPTS:
        records = [
            msgspec.structs.replace(r, event=msgspec.structs.replace(r.event, attempt=10**6))
            if isinstance(r.event, StepFailed)
            else r
            for r in records
        ]
    assert lean.snapshot() == fold(ErrorProjection(), records).snapshot()


def test_a_refund_of_an_evicted_retry_leaves_the_others_counted(board: Board) -> None:
    """A retry pushed out of the session's last thousand, then refunded, took away another
    retry of the same time (a clock that stood still, or one behind): failed retries counted
    one short, and one retry too many got through the budget."""
    board.add("task-a", retry(), advance=0.0)  # pending while the others fail
    for _ in range(RETRY_TIMES_LIMIT):
        board.add("task-b", retry(), advance=0.0)
        board.add("task-b", failed(attempt=2), advance=0.0)
    assert len(board.fold().recent_retries("s", 0.0)) == RETRY_TIMES_LIMIT
    board.add("task-a", completed(), advance=0.0)  # a's retry, no longer kept, worked
    assert len(board.fold().recent_retries("s", 0.0)) == RETRY_TIMES_LIMIT


def test_a_retry_is_refunded_to_the_session_it_spent(board: Board) -> None:
    """A task's retry ended by another session's engine (it cancelled the task) was refunded
    to that session: the retry kept spending its own session's budget, and the other's lost
    one of its own retries of the same time."""
    board.add("task-a", retry(), session="alpha", advance=0.0)
    board.add("task-b", retry(), session="beta", advance=0.0)
    board.add("task-a", TaskCancelled(reason="stop"), session="beta", advance=0.0)
    errors = board.fold()
    assert errors.recent_retries("alpha", 0.0) == []
    assert errors.recent_retries("beta", 0.0) == [T0]


def test_a_quarantined_task_drops_its_pending_retries(board: Board) -> None:
    """A quarantined task never runs again: its retry was kept pending for good (counted as
    unresolved against its signature's retries, spending the budget as if it might run)."""
    board.add("task-t", retry())
    board.add("task-t", TaskQuarantined(reason="poison", by="ops"))
    errors = board.fold()
    assert (errors.pending(), errors.unresolved_retries("sig")) == ([], 0)
    assert errors.recent_retries("s", 0.0) == []
