"""The breaker projection: each dependency's calls and its breaker's state machine.

Events go through a real memory log (with an injected clock) and are folded from
``log.read()``; a hypothesis property holds replay == checkpoint + tail over random calls and
legal breaker moves.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward.events import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    Context,
    Event,
    EventLog,
    Recorded,
    StepCompleted,
    StepFailed,
    TaskSubmitted,
    UnknownEvent,
    open_log,
)
from onward.projections import BREAKER, IllegalTransition
from onward.projections.breakers import (
    RECENT_LIMIT,
    TRANSITIONS_LIMIT,
    BreakerProjection,
    BreakerTransition,
    BreakerView,
    breaker_stream,
)
from tests.conftest import FakeClock
from tests.strategies import EVENT_STRATEGIES

T0 = FakeClock().now


class Board:
    """A memory log on a fake clock; each append moves the clock one second."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.log: EventLog = open_log("memory://", clock=self.clock)

    def add(self, stream: str, *events: Event, advance: float = 1.0) -> None:
        self.clock.advance(advance)
        self.log.append(stream, list(events), expected_version=None, context=Context(session="s"))

    def call(self, dependency: str, *, ok: bool, task: str = "task-t") -> None:
        event: Event
        if ok:
            event = StepCompleted(index=0, name="call", dependency=dependency)
        else:
            event = StepFailed(
                index=0, name="call", error_type="TimeoutError", final=False, dependency=dependency
            )
        self.add(task, event)

    def fold(self) -> BreakerProjection:
        breakers = BreakerProjection()
        for r in self.log.read():
            breakers.apply(r)
        return breakers


def opened(cooldown_until: float = T0 + 60) -> BreakerOpened:
    return BreakerOpened(
        dependency="db", consecutive_failures=5, failure_rate=1.0, cooldown_until=cooldown_until
    )


DB = breaker_stream("db")


@pytest.fixture
def board() -> Board:
    return Board()


def test_a_dependency_never_seen_reads_as_closed() -> None:
    breakers = BreakerProjection()
    view = breakers.get("db")
    assert view == BreakerView(dependency="db")
    assert (view.state, view.failure_rate, view.recent, view.history) == ("closed", 0.0, (), ())
    assert (view.opened_at, view.cooldown_until, view.last_failure_at) == (0.0, 0.0, 0.0)
    assert breakers.breakers == {}  # get does not store
    assert breakers.snapshot() == {}


def test_breaker_stream() -> None:
    assert breaker_stream("api.openai.com") == "breaker-api.openai.com"


# -- calls ----------------------------------------------------------------------------------


def test_calls_are_counted_per_dependency(board: Board) -> None:
    board.call("db", ok=False)
    board.call("db", ok=False, task="task-u")
    board.call("db", ok=True)
    board.call("db", ok=False)
    board.call("api", ok=True)
    board.add("task-t", StepCompleted(index=1, name="local"))  # no dependency: no breaker
    board.add("task-t", TaskSubmitted(name="work"))  # not a call
    breakers = board.fold()
    assert sorted(breakers.breakers) == ["api", "db"]
    view = breakers.get("db")
    assert (view.calls, view.failures, view.consecutive_failures) == (4, 3, 1)
    assert view.recent == (False, False, True, False)
    assert view.failure_rate == 0.75
    assert view.last_failure_at == T0 + 4
    assert view.state == "closed"
    assert view.version == 0  # no breaker stream yet
    assert breakers.get("api") == BreakerView(dependency="api", calls=1, recent=(True,))


def test_consecutive_failures_count_up_until_a_success(board: Board) -> None:
    for _ in range(5):
        board.call("db", ok=False)
    assert board.fold().get("db").consecutive_failures == 5
    board.call("db", ok=True)
    view = board.fold().get("db")
    assert view.consecutive_failures == 0
    assert view.last_failure_at == T0 + 5  # the last failure is still remembered


def test_recent_outcomes_keep_the_last_twenty(board: Board) -> None:
    for i in range(RECENT_LIMIT + 5):
        board.call("db", ok=i % 5 != 0)  # calls 0, 5, 10, 15, 20 fail
    view = board.fold().get("db")
    assert len(view.recent) == RECENT_LIMIT
    assert view.recent == tuple(i % 5 != 0 for i in range(5, RECENT_LIMIT + 5))
    assert view.failure_rate == 4 / RECENT_LIMIT
    assert (view.calls, view.failures) == (RECENT_LIMIT + 5, 5)


# -- transitions ----------------------------------------------------------------------------


def test_a_breaker_opens_half_opens_and_closes(board: Board) -> None:
    for _ in range(5):
        board.call("db", ok=False)
    board.add(DB, opened(cooldown_until=T0 + 66))
    view = board.fold().get("db")
    assert (view.state, view.version, view.opened_at, view.cooldown_until) == (
        "open",
        1,
        T0 + 6,
        T0 + 66,
    )
    assert view.consecutive_failures == 5  # what opened it stays visible while open
    assert view.history == (BreakerTransition(6, T0 + 6, "new", "open"),)

    board.add(DB, BreakerHalfOpened(dependency="db", trial_calls=3), advance=60.0)
    board.call("db", ok=True)
    board.call("db", ok=False)
    board.call("db", ok=True)
    view = board.fold().get("db")
    assert (view.state, view.trial_calls, view.trial_successes, view.trial_failures) == (
        "half_open",
        3,
        2,
        1,
    )
    assert view.history[-1] == BreakerTransition(7, T0 + 66, "open", "half_open")

    board.add(DB, BreakerClosed(dependency="db", successes=2))
    view = board.fold().get("db")
    assert view.state == "closed"
    assert (view.trial_calls, view.trial_successes, view.trial_failures) == (0, 0, 0)
    assert (view.consecutive_failures, view.recent, view.failure_rate) == (0, (), 0.0)
    assert (view.calls, view.failures) == (8, 6)  # the totals stay
    assert (view.opened_at, view.cooldown_until) == (T0 + 6, T0 + 66)  # the last opening
    assert view.version == 3
    assert [(t.source, t.dest) for t in view.history] == [
        ("new", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_a_failed_trial_opens_it_again(board: Board) -> None:
    board.add(DB, opened(), BreakerHalfOpened(dependency="db"))
    board.call("db", ok=False)
    board.add(DB, opened(cooldown_until=T0 + 200))
    view = board.fold().get("db")
    assert (view.state, view.cooldown_until, view.opened_at) == ("open", T0 + 200, T0 + 3)
    assert (view.trial_calls, view.trial_failures) == (0, 0)
    assert view.history[-1] == BreakerTransition(4, T0 + 3, "half_open", "open")


def test_only_the_trial_tasks_calls_are_its_outcome_and_a_lost_trial_is_taken_over(
    board: Board,
) -> None:
    board.add(DB, opened(), BreakerHalfOpened(dependency="db", trial_task="t"))
    board.call("db", ok=True, task="task-slow")  # begun before it half-opened
    view = board.fold().get("db")
    assert (view.trial_task, view.trial_successes, view.trial_failures) == ("t", 0, 0)
    board.add(DB, BreakerHalfOpened(dependency="db", trial_task="u"), advance=60.0)
    board.call("db", ok=False, task="task-t")  # the lost trial's call: no outcome of u's
    view = board.fold().get("db")
    assert (view.state, view.trial_task, view.half_opened_at) == ("half_open", "u", T0 + 62)
    assert (view.trial_successes, view.trial_failures) == (0, 0)
    board.call("db", ok=True, task="task-u")
    assert board.fold().get("db").trial_successes == 1
    assert [(t.source, t.dest) for t in board.fold().get("db").history][-1] == (
        "half_open",
        "half_open",
    )


def test_history_keeps_the_last_transitions(board: Board) -> None:
    for _ in range(TRANSITIONS_LIMIT):
        board.add(DB, opened(), BreakerClosed(dependency="db"))
    view = board.fold().get("db")
    assert len(view.history) == TRANSITIONS_LIMIT
    assert view.history[0] == BreakerTransition(
        TRANSITIONS_LIMIT + 1, T0 + TRANSITIONS_LIMIT / 2 + 1, "closed", "open"
    )
    assert view.history[-1].position == 2 * TRANSITIONS_LIMIT
    assert view.version == 2 * TRANSITIONS_LIMIT


@pytest.mark.parametrize(
    ("before", "event", "state", "version"),
    [
        ((), BreakerHalfOpened(dependency="db"), "new", 1),
        ((), BreakerClosed(dependency="db"), "new", 1),
        (
            (opened(), BreakerClosed(dependency="db")),
            BreakerHalfOpened(dependency="db"),
            "closed",
            3,
        ),
        ((opened(),), opened(), "open", 2),
        ((opened(),), TaskSubmitted(name="work"), "open", 2),
    ],
)
def test_an_illegal_transition_stops_the_fold(
    board: Board, before: tuple[Event, ...], event: Event, state: str, version: int
) -> None:
    if before:
        board.add(DB, *before)
    board.add(DB, event)
    breakers = BreakerProjection()
    records = list(board.log.read())
    for r in records[:-1]:
        breakers.apply(r)
    seen = msgspec.to_builtins(breakers.get("db"))
    with pytest.raises(IllegalTransition) as caught:
        breakers.apply(records[-1])
    error = caught.value
    assert (error.lifecycle, error.stream, error.version, error.state) == (
        "breaker",
        DB,
        version,
        state,
    )
    assert error.trigger == type(event).__name__
    assert f"'{DB}'" in str(error)
    assert f"version {version}" in str(error)
    assert msgspec.to_builtins(breakers.get("db")) == seen  # nothing changed


def test_after_an_unknown_event_the_state_is_not_judged(board: Board) -> None:
    board.add(DB, opened(), BreakerClosed(dependency="db"))
    records = list(board.log.read())
    newer = msgspec.structs.replace(
        records[1], event=UnknownEvent(type="BreakerForced", data={"dependency": "db"})
    )
    board.add(DB, opened())  # illegal while open...
    late = list(board.log.read())[-1]
    breakers = BreakerProjection()
    for r in (records[0], newer, late):
        breakers.apply(r)
    view = breakers.get("db")
    assert (view.state, view.unknown_events, view.version) == ("open", 1, 3)  # ...not judged


# -- snapshot, checkpoint, replay -----------------------------------------------------------


def test_snapshot_is_plain_with_the_failure_rate(board: Board) -> None:
    board.call("db", ok=False)
    board.add(DB, opened())
    snapshot = board.fold().snapshot()
    msgspec.json.encode(snapshot)  # plain values only
    assert snapshot["db"]["failure_rate"] == 1.0
    assert snapshot["db"]["state"] == "open"
    assert snapshot["db"]["history"] == ([2, T0 + 2, "new", "open"],)


DEPENDENCIES = ("db", "api")


@st.composite
def moves(draw: st.DrawFn) -> tuple[str, Event]:
    """A call (a step outcome, maybe naming a dependency) or a breaker event, random otherwise."""
    kind = draw(
        st.sampled_from(
            [StepCompleted, StepFailed, BreakerOpened, BreakerHalfOpened, BreakerClosed]
        )
    )
    event: Any = draw(EVENT_STRATEGIES[kind])
    dependency = draw(st.sampled_from([*DEPENDENCIES, ""]))
    if kind in (StepCompleted, StepFailed):
        task = draw(st.sampled_from(["task-a", "task-b"]))
        return task, msgspec.structs.replace(event, dependency=dependency)
    return breaker_stream(dependency or "db"), msgspec.structs.replace(
        event, dependency=dependency or "db"
    )


def fold(breakers: BreakerProjection, records: list[Recorded]) -> BreakerProjection:
    for r in records:
        breakers.apply(r)
    return breakers


def reload(breakers: BreakerProjection) -> BreakerProjection:
    views = msgspec.msgpack.decode(msgspec.msgpack.encode(breakers.dump()), type=list[BreakerView])
    loaded = BreakerProjection()
    loaded.load(views)
    return loaded


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(moves(), max_size=60), st.data())
def test_replay_equals_checkpoint_plus_tail(
    entries: list[tuple[str, Event]], data: st.DataObject
) -> None:
    board = Board()
    states = dict.fromkeys(DEPENDENCIES, BREAKER.initial)
    for stream, event in entries:
        if not stream.startswith("task-"):
            dependency = stream.removeprefix("breaker-")
            tag = type(event).__name__
            if not BREAKER.allows(states[dependency], tag):
                continue  # the engine never appends an illegal move (tested above)
            states[dependency] = BREAKER.evolve(states[dependency], tag)
        board.add(stream, event, advance=data.draw(st.sampled_from([0.0, 1.5]), label="advance"))
    records = list(board.log.read())
    whole = fold(BreakerProjection(), records)
    for dependency, state in states.items():
        assert whole.get(dependency).state == ("closed" if state == BREAKER.initial else state)
    cut = data.draw(st.integers(0, len(records)), label="cut")
    resumed = fold(reload(fold(BreakerProjection(), records[:cut])), records[cut:])
    assert resumed.snapshot() == whole.snapshot()
    assert reload(whole).snapshot() == whole.snapshot()
