"""The flow monitor: the FLOW lifecycle, the projection that measures a session's rhythm and
holds its deferred interruptions, and the policy that moves its flow state.

Events are built by hand as :class:`onward.events.Recorded`; hypothesis holds replay == folding in
pages == checkpoint + tail, and that every move the monitor proposes is one FLOW allows (and
that the projection accepts).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward import Engine
from onward.events import (
    Context,
    Event,
    FlowState,
    FlowStateChanged,
    InterruptionDeferred,
    InterruptionDelivered,
    Meta,
    Recorded,
    StepCompleted,
    StepFailed,
    TaskSubmitted,
    UsageError,
    open_log,
)
from onward.judgement.flow import FlowMonitor, FlowPolicy
from onward.projections.flow import (
    ACTIONS_KEPT,
    PENDING_KEPT,
    WINDOW,
    Deferred,
    FlowLedger,
    FlowProjection,
    Rhythm,
    flow_trigger,
)
from onward.projections.lifecycle import FLOW, IllegalTransition
from onward.projections.reading import FoldReader
from tests.conftest import FakeClock

T0 = 1_700_000_000.0
IDLE, WARMING, FLOWING, DISRUPTED = (
    FlowState.IDLE,
    FlowState.WARMING,
    FlowState.FLOWING,
    FlowState.DISRUPTED,
)


class History:
    """Events recorded by hand, each at a time given in seconds after ``T0``."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.versions: dict[str, int] = {}

    def add(self, at: float, event: Event, *, session: str = "s", stream: str = "") -> None:
        stream = stream or f"task-{session}"
        version = self.versions[stream] = self.versions.get(stream, 0) + 1
        n = len(self.records) + 1
        meta = Meta(event_id=f"{n:032x}", time=T0 + at, session=session)
        self.records.append(Recorded(stream, version, n, meta, event))

    def act(self, at: float, *, failed: bool = False, session: str = "s") -> None:
        event: Event
        if failed:
            event = StepFailed(index=0, name="call", error_type="E", final=False)
        else:
            event = StepCompleted(index=0, name="call")
        self.add(at, event, session=session)

    def move(self, at: float, state: FlowState, previous: FlowState, *, session: str = "s") -> None:
        event = FlowStateChanged(state=state, previous=previous)
        self.add(at, event, session=session, stream=f"session-{session}")

    def defer(self, at: float, interruption: str, *, session: str = "s") -> None:
        event = InterruptionDeferred(interruption_id=interruption, kind="approval", summary="ok?")
        self.add(at, event, session=session, stream=f"session-{session}")

    def deliver(self, at: float, interruption: str, *, session: str = "s") -> None:
        event = InterruptionDelivered(interruption_id=interruption, deferred_for=1.0)
        self.add(at, event, session=session, stream=f"session-{session}")

    def fold(self) -> FlowProjection:
        flow = FlowProjection()
        for r in self.records:
            flow.apply(r)
        return flow


# -- the lifecycle --------------------------------------------------------------------------


def test_flow_allows_exactly_the_documented_moves() -> None:
    moves = {(source, dest) for (source, _), dest in FLOW.table.items()}
    assert moves == {
        ("idle", "warming"),
        ("warming", "flowing"),
        ("warming", "idle"),
        ("warming", "disrupted"),
        ("flowing", "disrupted"),
        ("flowing", "idle"),
        ("flowing", "warming"),
        ("disrupted", "warming"),
        ("disrupted", "flowing"),
        ("disrupted", "idle"),
    }
    assert FLOW.initial == "idle"
    assert FLOW.states == tuple(FlowState)


def test_each_trigger_names_the_state_it_enters() -> None:
    assert flow_trigger(FlowState.FLOWING) == "to_flowing"
    assert {flow_trigger(state) for state in FlowState} == FLOW.triggers
    for (_, trigger), dest in FLOW.table.items():
        assert trigger == flow_trigger(FlowState(dest))


# -- the projection: rhythm -----------------------------------------------------------------


def test_a_session_without_actions_has_no_rhythm_and_is_idle() -> None:
    flow = FlowProjection()
    assert flow.rhythm("s", T0) == Rhythm()
    assert flow.state("s") is IDLE
    assert flow.since("s") == 0.0
    assert flow.pending("s") == []
    assert flow.snapshot() == {}


def test_the_rhythm_counts_actions_and_failures_in_the_last_minute() -> None:
    history = History()
    history.act(0)  # out: the window is (now - 60, now]
    for at in (10, 20, 30, 40, 50):
        history.act(at)
    history.act(55, failed=True)
    history.act(60, failed=True)
    history.add(58, TaskSubmitted(name="work"))  # not an action
    rhythm = history.fold().rhythm("s", T0 + 60)
    assert rhythm == Rhythm(actions_per_minute=7.0, error_rate=2 / 7, actions=7, failures=2)


def test_lean_step_outcomes_count_like_the_full_ones() -> None:
    clock = FakeClock(T0)
    log = open_log("memory://", clock=clock)
    for i in range(6):
        clock.advance(5)
        event: Event = (
            StepFailed(index=i, name="a", error_type="E")
            if i % 3 == 0
            else StepCompleted(index=i, name="a")
        )
        log.append("task-t", [event], expected_version=None, context=Context(session="s"))
    full, lean = FlowProjection(), FlowProjection()
    for r in log.read():
        full.apply(r)
    for page in FoldReader(log).pages(page_size=4):
        for r in page:
            lean.apply(r)
    assert lean.snapshot() == full.snapshot()
    assert lean.rhythm("s", clock.now) == Rhythm(
        actions_per_minute=6.0, error_rate=2 / 6, actions=6, failures=2
    )


def test_actions_older_than_the_window_are_dropped() -> None:
    history = History()
    history.act(0, failed=True)
    history.act(30)
    history.act(60)  # 0 is now exactly a window old
    picture = history.fold().snapshot()["s"]
    assert picture["actions"] == [T0 + 30, T0 + 60]
    assert picture["failed"] == [False, False]
    history.act(200, failed=True)
    picture = history.fold().snapshot()["s"]
    assert (picture["actions"], picture["failed"], picture["latest"]) == (
        [T0 + 200],
        [True],
        T0 + 200,
    )


@pytest.mark.parametrize("at", [1e19, 1e300])
def test_actions_at_a_time_past_the_windows_precision_are_folded(at: float) -> None:
    """A clock far out (a fake one; a simulated step of 1e19 seconds), where ``time - 60`` is
    ``time`` itself: folding an action there dropped it with the old ones and then read the
    empty window (``IndexError``), one by one and a page at once."""
    history = History()
    history.act(at)
    history.act(at, failed=True)
    assert history.fold().rhythm("s", T0 + at).actions == 0  # nothing older than a window
    flow = FlowProjection()
    flow.fold_actions([("s", T0, False)])
    flow.fold_outcomes(
        [Meta(event_id=f"{i:032x}", time=T0 + at, session="s") for i in range(3)], [1]
    )
    assert flow.rhythm("s", T0 + at).failures == 0


def test_actions_are_kept_per_session() -> None:
    history = History()
    history.act(1, session="a")
    history.act(2, session="a", failed=True)
    history.act(3, session="b")
    flow = history.fold()
    assert flow.rhythm("a", T0 + 10).actions == 2
    assert flow.rhythm("a", T0 + 10).failures == 1
    assert flow.rhythm("b", T0 + 10) == Rhythm(actions_per_minute=1.0, actions=1)


def test_a_session_keeps_a_bounded_number_of_actions() -> None:
    history = History()
    for i in range(ACTIONS_KEPT + 10):
        history.act(i / 1000, failed=i < 10)  # all within one window
    flow = history.fold()
    picture = flow.snapshot()["s"]
    assert len(picture["actions"]) == ACTIONS_KEPT
    assert not any(picture["failed"])  # the ten failures were the oldest
    rhythm = flow.rhythm("s", T0 + 20)
    assert (rhythm.actions, rhythm.failures, rhythm.error_rate) == (ACTIONS_KEPT, 0, 0.0)


def test_an_action_stamped_before_the_latest_one_counts_as_at_the_latest() -> None:
    history = History()
    history.act(100)
    history.act(90, failed=True)  # another worker's clock runs behind
    history.act(40)  # a whole window behind: dropped
    flow = history.fold()
    picture = flow.snapshot()["s"]
    assert (picture["actions"], picture["failed"]) == ([T0 + 100, T0 + 100], [False, True])
    assert flow.rhythm("s", T0 + 100) == Rhythm(
        actions_per_minute=2.0, error_rate=0.5, actions=2, failures=1
    )
    assert flow.rhythm("s", T0 + 99).actions == 0  # a moment before the latest


def test_the_rhythm_trims_both_ends_of_the_window() -> None:
    history = History()
    for at in range(0, 100, 10):
        history.act(at, failed=at % 20 == 0)  # failed at 0, 20, 40, 60, 80
    flow = history.fold()  # kept: 40 .. 90
    assert flow.rhythm("s", T0 + 75) == Rhythm(
        actions_per_minute=4.0, error_rate=0.5, actions=4, failures=2
    )  # 40, 50, 60, 70
    assert flow.rhythm("s", T0 + 140).actions == 1  # 90
    assert flow.rhythm("s", T0 + 150) == Rhythm()
    assert flow.rhythm("s", T0 + 10) == Rhythm()  # before every kept action


# -- the projection: flow state and interruptions -------------------------------------------


def test_flow_state_changes_are_folded_with_their_time() -> None:
    history = History()
    history.move(5, WARMING, IDLE)
    history.move(9, FLOWING, WARMING)
    history.move(7, WARMING, IDLE, session="other")
    flow = history.fold()
    assert (flow.state("s"), flow.since("s")) == (FLOWING, T0 + 9)
    assert (flow.state("other"), flow.since("other")) == (WARMING, T0 + 7)


def test_an_illegal_flow_state_change_raises_with_its_stream_and_version() -> None:
    history = History()
    history.move(1, WARMING, IDLE)
    history.move(2, IDLE, WARMING)
    history.move(3, DISRUPTED, IDLE)  # idle -> disrupted must warm up first
    flow = FlowProjection()
    flow.apply(history.records[0])
    flow.apply(history.records[1])
    with pytest.raises(IllegalTransition) as raised:
        flow.apply(history.records[2])
    error = raised.value
    assert (error.lifecycle, error.stream, error.version) == ("flow", "session-s", 3)
    assert (error.state, error.trigger) == ("idle", "to_disrupted")
    assert "session-s" in str(error)
    assert flow.state("s") is IDLE  # the illegal event changed nothing


def test_a_change_to_the_same_state_is_illegal() -> None:
    history = History()
    history.move(1, IDLE, IDLE)
    with pytest.raises(IllegalTransition):
        history.fold()


def test_deferred_interruptions_wait_in_order_until_delivered() -> None:
    history = History()
    history.defer(1, "i1")
    history.defer(2, "i2")
    history.defer(3, "i3")
    history.deliver(4, "i2")
    history.deliver(5, "unknown")  # never deferred: nothing to release
    history.deliver(6, "i1", session="other")  # another session's interruption
    history.defer(7, "i1")  # deferred again: it moves to the end
    flow = history.fold()
    assert flow.pending("s") == [
        Deferred(interruption_id="i3", kind="approval", summary="ok?", deferred_at=T0 + 3),
        Deferred(interruption_id="i1", kind="approval", summary="ok?", deferred_at=T0 + 7),
    ]
    assert flow.pending("other") == []


def test_a_session_keeps_a_bounded_number_of_pending_interruptions() -> None:
    history = History()
    for i in range(PENDING_KEPT + 3):
        history.defer(i, f"i{i}")
    pending = history.fold().pending("s")
    assert len(pending) == PENDING_KEPT
    assert pending[0].interruption_id == "i3"


# -- the projection: replay, pages, checkpoints ---------------------------------------------


@st.composite
def _histories(draw: st.DrawFn) -> History:
    history = History()
    states = {"s": IDLE, "t": IDLE}
    at = 0.0
    for _ in range(draw(st.integers(0, 80))):
        at += draw(st.sampled_from([0.0, 0.5, 3.0, 20.0, 61.0, -5.0, -70.0]))  # clocks may lag
        session = draw(st.sampled_from(["s", "t"]))
        kind = draw(st.sampled_from(["act", "act", "act", "move", "defer", "deliver"]))
        if kind == "act":
            history.act(at, failed=draw(st.booleans()), session=session)
        elif kind == "move":
            state = draw(st.sampled_from(list(FlowState)))
            if FLOW.allows(states[session], flow_trigger(state)):
                history.move(at, state, states[session], session=session)
                states[session] = state
        elif kind == "defer":
            history.defer(at, draw(st.sampled_from(["a", "b", "c"])), session=session)
        else:
            history.deliver(at, draw(st.sampled_from(["a", "b", "c"])), session=session)
    return history


def _readings(flow: FlowProjection, history: History) -> list[Any]:
    end = history.records[-1].meta.time if history.records else T0
    return [
        (flow.rhythm(s, end), flow.state(s), flow.since(s), flow.pending(s)) for s in ("s", "t")
    ]


@given(history=_histories(), cut=st.integers(0, 80), page=st.integers(1, 9))
@settings(max_examples=60, deadline=None)
def test_replay_equals_pages_equals_checkpoint_and_tail(
    history: History, cut: int, page: int
) -> None:
    replay = history.fold()

    paged = FlowProjection()
    records = history.records
    for start in range(0, len(records), page):
        for r in records[start : start + page]:
            paged.apply(r)

    cut = min(cut, len(records))
    head = FlowProjection()
    for r in records[:cut]:
        head.apply(r)
    saved = msgspec.msgpack.decode(msgspec.msgpack.encode(head.dump()), type=list[FlowLedger])
    resumed = FlowProjection()
    resumed.load(saved)
    assert resumed.snapshot() == head.snapshot()
    for r in records[cut:]:
        resumed.apply(r)

    assert paged.snapshot() == replay.snapshot() == resumed.snapshot()
    assert _readings(paged, history) == _readings(replay, history) == _readings(resumed, history)


@given(history=_histories(), offset=st.floats(-150.0, 150.0))
@settings(max_examples=60, deadline=None)
def test_the_rhythm_counts_what_a_scan_of_the_kept_actions_counts(
    history: History, offset: float
) -> None:
    flow = history.fold()
    for session, picture in flow.snapshot().items():
        now = picture["latest"] + offset
        inside = [
            failed
            for time, failed in zip(picture["actions"], picture["failed"], strict=True)
            if now - WINDOW < time <= now
        ]
        measured = flow.rhythm(session, now)
        assert (measured.actions, measured.failures) == (len(inside), sum(inside))
        assert picture["actions"] == sorted(picture["actions"])


# -- the policy -----------------------------------------------------------------------------


def rhythm(actions: int, failures: int = 0) -> Rhythm:
    """The rhythm of ``actions`` in one minute, ``failures`` of them failed."""
    return Rhythm(
        actions_per_minute=actions * 60.0 / WINDOW,
        error_rate=failures / actions if actions else 0.0,
        actions=actions,
        failures=failures,
    )


@pytest.mark.parametrize(
    ("current", "now", "expected"),
    [
        # no actions: idle, from anywhere
        (IDLE, rhythm(0), IDLE),
        (WARMING, rhythm(0), IDLE),
        (FLOWING, rhythm(0), IDLE),
        (DISRUPTED, rhythm(0), IDLE),
        # idle warms up after warm_actions (3) actions, and never skips warming
        (IDLE, rhythm(2), IDLE),
        (IDLE, rhythm(2, 2), IDLE),
        (IDLE, rhythm(3), WARMING),
        (IDLE, rhythm(20), WARMING),
        (IDLE, rhythm(20, 10), WARMING),
        # warming flows at 5 actions a minute with under 10% errors
        (WARMING, rhythm(4), WARMING),
        (WARMING, rhythm(5), FLOWING),
        (WARMING, rhythm(10, 1), WARMING),  # 10% errors: not under 10%
        (WARMING, rhythm(20, 1), FLOWING),
        (WARMING, rhythm(20, 4), WARMING),  # 20%: neither flowing nor disrupted
        (WARMING, rhythm(4, 1), DISRUPTED),  # 25%
        # flowing is disrupted from 10% errors, and slows down to warming
        (FLOWING, rhythm(30, 2), FLOWING),
        (FLOWING, rhythm(30, 3), DISRUPTED),
        (FLOWING, rhythm(4), WARMING),
        # disrupted recovers straight to flowing, or warms up again
        (DISRUPTED, rhythm(10), FLOWING),
        (DISRUPTED, rhythm(10, 2), WARMING),
        (DISRUPTED, rhythm(2), WARMING),
        (DISRUPTED, rhythm(8, 2), DISRUPTED),
    ],
)
def test_the_flow_table(current: FlowState, now: Rhythm, expected: FlowState) -> None:
    monitor = FlowMonitor()
    assert monitor.next_state(current, now) is expected
    change = monitor.observe(current, now)
    if expected is current:
        assert change is None
    else:
        assert change == FlowStateChanged(
            state=expected,
            previous=current,
            actions_per_minute=now.actions_per_minute,
            error_rate=now.error_rate,
        )


def test_the_thresholds_come_from_the_policy() -> None:
    policy = FlowPolicy(
        flowing_rate=2.0, warm_actions=1, max_error_rate=0.3, disrupted_error_rate=0.5
    )
    monitor = FlowMonitor(policy)
    assert monitor.next_state(IDLE, rhythm(1)) is WARMING
    assert monitor.next_state(WARMING, rhythm(2)) is FLOWING
    assert monitor.next_state(WARMING, rhythm(3, 1)) is WARMING  # 33%: under 50%, not under 30%
    assert monitor.next_state(WARMING, rhythm(4, 2)) is DISRUPTED  # 50%
    assert monitor.next_state(FLOWING, rhythm(10, 2)) is FLOWING  # 20% < 30%
    assert monitor.next_state(FLOWING, rhythm(10, 3)) is DISRUPTED  # 30%


_RHYTHMS = st.integers(0, 40).flatmap(
    lambda actions: st.integers(0, actions).map(lambda failures: rhythm(actions, failures))
)
_POLICIES = st.builds(
    FlowPolicy,
    flowing_rate=st.floats(0.5, 30.0),
    max_error_rate=st.floats(0.01, 0.5),
    disrupted_error_rate=st.floats(0.5, 1.0),
    warm_actions=st.integers(1, 10),
)


@given(policy=_POLICIES, current=st.sampled_from(list(FlowState)), now=_RHYTHMS)
def test_every_move_observed_is_allowed_by_flow(
    policy: FlowPolicy, current: FlowState, now: Rhythm
) -> None:
    change = FlowMonitor(policy).observe(current, now)
    if change is not None:
        assert change.previous is current
        assert change.state is not current
        assert FLOW.allows(current, flow_trigger(change.state))


_PAUSES = st.floats(0.0, 15.0) | st.just(90.0)  # mostly steady work, now and then a break
_FAILED = st.sampled_from([False] * 8 + [True] * 2)


@given(steps=st.lists(st.tuples(_PAUSES, _FAILED), max_size=120))
@settings(deadline=None)
def test_the_projection_accepts_every_move_the_monitor_makes(
    steps: list[tuple[float, bool]],
) -> None:
    monitor = FlowMonitor()
    flow = FlowProjection()
    history = History()
    at = 0.0
    for delay, failed in steps:
        at += delay
        history.act(at, failed=failed)
        flow.apply(history.records[-1])
        change = monitor.observe(flow.state("s"), flow.rhythm("s", T0 + at))
        if change is not None:
            history.add(at, change, stream="session-s")
            flow.apply(history.records[-1])  # raises if FLOW refuses it
            assert flow.state("s") is change.state
    assert history.fold().snapshot() == flow.snapshot()


@pytest.mark.parametrize(
    ("state", "urgent", "impact", "deferred"),
    [
        (FLOWING, False, "", True),  # a notice
        (FLOWING, False, "low", True),
        (FLOWING, False, " Low ", True),
        (FLOWING, False, "none", True),
        (FLOWING, True, "low", False),  # urgent: never held back
        (FLOWING, False, "high", False),
        (FLOWING, False, "deletes the branch", False),  # an impact that is not low
        (WARMING, False, "low", False),  # only the flow is protected
        (IDLE, False, "", False),
        (DISRUPTED, False, "", False),
    ],
)
def test_defers(state: FlowState, urgent: bool, impact: str, deferred: bool) -> None:
    assert FlowMonitor().defers(state, urgent=urgent, impact=impact) is deferred


def test_the_low_impacts_come_from_the_policy() -> None:
    monitor = FlowMonitor(FlowPolicy(low_impacts=("Minor",)))
    assert monitor.defers(FLOWING, urgent=False, impact="minor")
    assert not monitor.defers(FLOWING, urgent=False, impact="")


@pytest.mark.parametrize(
    ("settings_", "field"),
    [
        ({"flowing_rate": 0.0}, "flowing_rate"),
        ({"flowing_rate": float("inf")}, "flowing_rate"),
        ({"max_error_rate": 0.0}, "max_error_rate"),
        ({"max_error_rate": float("nan")}, "max_error_rate"),
        ({"disrupted_error_rate": 1.5}, "disrupted_error_rate"),
        ({"max_error_rate": 0.3, "disrupted_error_rate": 0.2}, "max_error_rate"),
        ({"warm_actions": 0}, "warm_actions"),
    ],
)
def test_a_flow_policy_out_of_range_is_refused(settings_: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=field):
        FlowPolicy(**settings_)


def worker(url: str, clock: FakeClock, step_seconds: float) -> Engine:
    """A worker of session "s" on its own clock, whose task "job" runs four steps, each
    taking ``step_seconds`` of that clock."""
    engine = Engine.open(url, session="s", clock=clock, sleep=clock.advance)

    @engine.step()
    def work(i: int) -> int:
        clock.advance(step_seconds)
        return i

    @engine.task(name="job")
    def job(i: int) -> int:
        return sum(work(i) for _ in range(4))

    return engine


def test_workers_whose_clocks_differ_judge_the_flow_alike(tmp_path: Any) -> None:
    """Two workers of one session, one's clock 2 s ahead of the other's (two machines): the
    one behind saw the other's actions as in its future, judged the session idle and moved
    the flow back, and the two moved it back and forth (1,254 moves for 40 steps). Each now
    judges at the latest of its clock and the last action's time."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    behind, ahead = FakeClock(), FakeClock()
    ahead.advance(2.0)

    with worker(url, behind, 0.1) as slow, worker(url, ahead, 0.1) as fast:
        for i in range(5):
            fast.submit("job", i)
        fast.run()
        slow.submit("job", 99)
        slow.run()
        moves = [
            (r.event.previous, r.event.state)
            for r in slow.log.read()
            if isinstance(r.event, FlowStateChanged)
        ]
    assert moves == [(FlowState.IDLE, FlowState.WARMING), (FlowState.WARMING, FlowState.FLOWING)]


def test_workers_whose_clocks_differ_by_minutes_do_not_move_the_flow_back_and_forth(
    tmp_path: Any,
) -> None:
    """A worker ten minutes ahead moved the flow to idle at its time; the others, judging at
    the last action's, saw their work and moved it back to warming, and so on without end
    (21,175 moves in 100 s with four workers). Each now judges at least at the time the flow
    entered its state too."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    behind, ahead = FakeClock(), FakeClock()
    ahead.advance(600.0)

    with worker(url, behind, 0.5) as slow, worker(url, ahead, 0.5) as fast:
        for i in range(6):
            slow.submit("job", i)
        slow.run()
        ahead.advance(120.0)  # the one ahead sees the session idle by now
        for _ in range(10):  # each serving worker looks at every change the other appends
            for engine in (fast, slow):
                with engine._session.lock:
                    engine.refresh()
                    engine.boundary.follow_flow()
        moves = [r.event for r in slow.log.read() if isinstance(r.event, FlowStateChanged)]
    assert [(m.previous, m.state) for m in moves][2:] == [(FlowState.FLOWING, FlowState.IDLE)]
