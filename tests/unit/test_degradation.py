"""Graceful degradation: the component registry, the plans, and the level projection.

Plans are appended as hand-built :class:`onward.events.Recorded` (or through a memory log, for the
paged reads) and folded; hypothesis walks random failures and restorations over the default
ladders.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events import (
    ComponentFailed,
    ComponentRestored,
    Context,
    DecisionMade,
    DegradationLevel,
    Event,
    Meta,
    Recorded,
    StepFailed,
    Strategy,
    UsageError,
    WorkaroundApplied,
    open_log,
)
from onward.judgement.degradation import (
    DEFAULT_COMPONENTS,
    EXHAUSTED_ALTERNATIVES,
    Component,
    Components,
    Workaround,
    passing_checks,
    plan_failure,
    plan_restorations,
    plan_restore,
)
from onward.projections.degradation import (
    DECISION_KIND,
    EXHAUSTED_CHOICE,
    EXHAUSTED_LOSS,
    ComponentState,
    ComponentView,
    DegradationProjection,
    DegradationView,
    SessionDegradation,
    combine_losses,
    level_for,
)
from onward.projections.reading import FoldReader
from tests.conftest import FakeClock

T0 = FakeClock().now
LEVELS = list(DegradationLevel)  # best first
DEFAULT_NAMES = (
    "tests",
    "database",
    "external_api",
    "linting",
    "build",
    "imports",
    "file_io",
    "network",
    "compilation",
)


class Board:
    """A projection fed hand-built records; each append moves the clock one second."""

    def __init__(self, session: str = "s") -> None:
        self.session = session
        self.records: list[Recorded] = []
        self.projection = DegradationProjection()
        self.time = T0

    def add(self, events: list[Event], *, session: str | None = None) -> None:
        for event in events:
            self.time += 1.0
            position = len(self.records) + 1
            meta = Meta(
                event_id=f"{position:032x}",
                time=self.time,
                session=self.session if session is None else session,
            )
            r = Recorded("session-" + meta.session, position, position, meta, event)
            self.records.append(r)
            self.projection.apply(r)

    def view(self, session: str | None = None) -> DegradationView:
        return self.projection.view(self.session if session is None else session)

    def fail(self, components: Components, name: str, **kwargs: str) -> list[Event]:
        planned = plan_failure(components, self.view(), name, **kwargs)
        self.add(planned)
        return planned


def fold(records: list[Recorded], projection: DegradationProjection | None = None) -> Any:
    projection = projection or DegradationProjection()
    for r in records:
        projection.apply(r)
    return projection


def reload(projection: DegradationProjection) -> DegradationProjection:
    data = msgspec.msgpack.encode(projection.dump())
    loaded = DegradationProjection()
    loaded.load(msgspec.msgpack.decode(data, type=list[SessionDegradation]))
    return loaded


def rank(level: DegradationLevel) -> int:
    return LEVELS.index(level)


# -- levels ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lost", "level"),
    [
        (0.0, DegradationLevel.FULL),
        (1e-9, DegradationLevel.MINOR),
        (0.15, DegradationLevel.MINOR),
        (0.150000001, DegradationLevel.MODERATE),
        (0.35, DegradationLevel.MODERATE),
        (0.350000001, DegradationLevel.SEVERE),
        (0.6, DegradationLevel.SEVERE),
        (0.600000001, DegradationLevel.MINIMAL),
        (1.0, DegradationLevel.MINIMAL),
    ],
)
def test_level_boundaries(lost: float, level: DegradationLevel) -> None:
    assert level_for(lost) is level


def test_losses_combine_as_shares_of_what_is_left() -> None:
    assert combine_losses([]) == 0.0
    assert combine_losses([0.15]) == 0.15  # not 0.15000000000000002
    assert level_for(combine_losses([0.15])) is DegradationLevel.MINOR
    assert combine_losses([0.2, 0.2]) == 0.36
    assert combine_losses([0.5, 0.5, 1.0]) == 1.0
    assert combine_losses([0.1, 0.3, 0.25]) == combine_losses([0.25, 0.1, 0.3])


# -- the registry ---------------------------------------------------------------------------


def test_the_nine_default_components_have_ordered_ladders_and_no_check() -> None:
    components = Components()
    assert components.names() == DEFAULT_NAMES
    assert len(components) == 9
    assert [c.name for c in components] == list(DEFAULT_NAMES)
    for component in components:
        assert component.check is None
        assert 2 <= len(component.workarounds) <= 3
        losses = [w.quality_loss for w in component.workarounds]
        assert losses == sorted(losses)
        assert all(w.description for w in component.workarounds)
    tests = components.get("tests").workarounds
    assert [(w.quality_loss, w.description) for w in tests] == [
        (0.15, "run only the tests affected by the change"),
        (0.4, "check that the code parses; run no test"),
    ]
    assert Components(defaults=False).names() == ()


def test_registering_a_check_keeps_the_default_ladder() -> None:
    components = Components()
    before = components.get("database")
    registered = components.register("database", check=lambda: True)
    assert registered.check is not None
    assert registered.workarounds == before.workarounds
    assert registered.description == before.description
    assert components.get("database") is registered
    # a later update without a check keeps the check
    again = components.register("database", description="postgres")
    assert again.check is registered.check
    assert again.description == "postgres"


def test_registering_a_new_component_and_refusing_to_replace() -> None:
    components = Components(defaults=False)
    ladder = [Workaround(name="cache", quality_loss=0.1), Workaround(name="skip", quality_loss=1)]
    search = components.register("search", workarounds=ladder, description="the index")
    assert "search" in components
    assert "tests" not in components
    assert search == Component(name="search", workarounds=tuple(ladder), description="the index")
    with pytest.raises(UsageError, match=r"'search' is registered already"):
        components.register("search", workarounds=ladder, replace=False)


def test_an_unknown_component_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown component 'gpu' \(known: build, compilation"):
        Components().get("gpu")
    with pytest.raises(UsageError, match=r"known: none"):
        plan_failure(Components(defaults=False), DegradationView(), "gpu")


@pytest.mark.parametrize("loss", [0, 0.0, -0.1, 1.01, math.nan, math.inf])
def test_a_workaround_loses_a_share_in_0_1(loss: float) -> None:
    with pytest.raises(UsageError, match=r"workaround 'w': quality_loss must be in \(0, 1\]"):
        Workaround(name="w", quality_loss=loss)


def test_invalid_components_name_the_component() -> None:
    with pytest.raises(UsageError, match="a component needs a name"):
        Components().register("")
    with pytest.raises(UsageError, match="a workaround needs a name"):
        Workaround(name="", quality_loss=0.1)
    twice = [Workaround(name="w", quality_loss=0.1), Workaround(name="w", quality_loss=0.2)]
    with pytest.raises(UsageError, match=r"component 'gpu': two workarounds named 'w'"):
        Components().register("gpu", workarounds=twice)
    upward = [Workaround(name="a", quality_loss=0.3), Workaround(name="b", quality_loss=0.1)]
    with pytest.raises(UsageError, match=r"component 'gpu': workaround 'b' loses 0.1, less"):
        Components().register("gpu", workarounds=upward)
    # a workaround cannot be made invalid after it was built
    with pytest.raises(UsageError, match=r"workaround 'w': quality_loss must be in"):
        msgspec.structs.replace(Workaround(name="w", quality_loss=0.1), quality_loss=2.0)


@pytest.mark.parametrize("name", [["search"], {"name": "search"}, 3, None])
def test_a_component_name_that_is_no_str_is_refused_as_usage(name: object) -> None:
    """A name that cannot key the registry (a list, a dict) is refused with a UsageError, as
    an empty one is, not a TypeError from the registry's dict."""
    with pytest.raises(UsageError, match="a component needs a name"):
        Components().register(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("ladder", [3, None, 0.5, "cache"])
def test_a_ladder_that_is_no_sequence_of_workarounds_is_refused_as_usage(ladder: object) -> None:
    """A ladder that is not iterable (a number, None) or a str is refused with a UsageError
    naming the component, for a new component and an update alike."""
    for components in (Components(defaults=False), Components()):
        with pytest.raises(UsageError, match=r"component 'tests': workarounds must be a tuple"):
            components.register("tests", workarounds=ladder)  # type: ignore[arg-type]


# -- failures and ladders -------------------------------------------------------------------


def test_a_ladder_is_walked_rung_by_rung() -> None:
    components, board = Components(), Board()
    first = board.fail(components, "tests", message="pytest crashed", check="pytest")
    assert first == [
        ComponentFailed(component="tests", check="pytest", message="pytest crashed"),
        WorkaroundApplied(
            component="tests",
            workaround="affected_tests_only",
            quality_loss=0.15,
            level=DegradationLevel.MINOR,
            rung=1,
        ),
    ]
    view = board.view()
    assert (view.level, view.quality_lost) == (DegradationLevel.MINOR, 0.15)
    assert view.components == (
        ComponentView(
            name="tests",
            state=ComponentState.DEGRADED,
            workaround="affected_tests_only",
            quality_loss=0.15,
            since=T0 + 2,
            rung=1,
            failures=1,
            last_failed_at=T0 + 1,
        ),
    )

    second = board.fail(components, "tests")
    assert second[1] == WorkaroundApplied(
        component="tests",
        workaround="syntax_check_only",
        quality_loss=0.4,
        level=DegradationLevel.SEVERE,
        rung=2,
    )
    tests = board.projection.component("s", "tests")
    assert tests is not None
    assert (tests.workaround, tests.rung, tests.failures) == ("syntax_check_only", 2, 2)
    assert (board.view().level, board.view().quality_lost) == (DegradationLevel.SEVERE, 0.4)

    # another component: the losses combine
    board.fail(components, "linting")
    view = board.view()
    assert view.quality_lost == round(1 - 0.6 * 0.98, 9)
    assert view.level is DegradationLevel.SEVERE
    assert [c.name for c in view.components] == ["linting", "tests"]  # sorted by name


def test_reports_decided_on_the_same_state_take_the_same_rung_once() -> None:
    """Tasks of two processes report one failure at the same moment: both plan the first
    rung; it is folded once, and the next report takes the second. A plan of an earlier state
    folded late changes nothing, and nor does one after the ladder ran out."""
    components, board = Components(), Board()
    seen = board.view()
    one = plan_failure(components, seen, "tests")
    other = plan_failure(components, seen, "tests")  # decided on the same state
    board.add(one)
    board.add(other)
    tests = board.projection.component("s", "tests")
    assert tests is not None
    assert (tests.workaround, tests.rung, tests.failures) == ("affected_tests_only", 1, 2)
    second = board.fail(components, "tests")
    assert second[1].rung == 2  # type: ignore[attr-defined]
    board.add(one)  # late: the state moved past its rung
    tests = board.projection.component("s", "tests")
    assert tests is not None
    assert (tests.workaround, tests.rung) == ("syntax_check_only", 2)
    assert fold(board.records).view("s") == board.view()


def test_an_earlier_onwards_workaround_moves_one_rung_down() -> None:
    board = Board()
    event = WorkaroundApplied(
        component="tests", workaround="w", quality_loss=0.1, level=DegradationLevel.MINOR
    )
    board.add([event])
    board.add([event])
    tests = board.projection.component("s", "tests")
    assert tests is not None
    assert tests.rung == 2


def test_an_exhausted_ladder_pauses_the_task_and_asks() -> None:
    components, board = Components(), Board()
    board.fail(components, "network")  # offline mirror, 0.2
    board.fail(components, "network")  # work offline, 0.5
    board.fail(components, "linting")  # 0.02
    failed, decision = board.fail(components, "network", message="no route")
    assert failed == ComponentFailed(component="network", message="no route")
    expected_lost = round(1 - 0.5 * 0.98, 9)
    assert decision == DecisionMade(
        kind=DECISION_KIND,
        subject="network",
        choice=EXHAUSTED_CHOICE,
        strategy=Strategy.ASK,
        inputs={
            "component": "network",
            "rung": 2,
            "workarounds_tried": ["offline_mirror", "work_offline"],
            "quality_lost": expected_lost,
            "level": "severe",
        },
        alternatives=list(EXHAUSTED_ALTERNATIVES),
    )
    network = board.projection.component("s", "network")
    assert network is not None
    assert network.state is ComponentState.EXHAUSTED
    assert (network.workaround, network.quality_loss, network.rung) == ("work_offline", 0.5, 2)
    assert board.view().quality_lost == expected_lost
    # it stays exhausted: another failure asks again, the loss does not grow
    _, again = board.fail(components, "network")
    assert isinstance(again, DecisionMade)
    assert again.inputs["quality_lost"] == expected_lost
    assert board.view().quality_lost == expected_lost


def test_an_exhausted_component_counts_at_least_the_declared_loss() -> None:
    components = Components(defaults=False)
    components.register("small", workarounds=[Workaround(name="w", quality_loss=0.1)])
    components.register("big", workarounds=[Workaround(name="w", quality_loss=0.9)])
    components.register("bare")
    board = Board()
    for name in ("small", "small", "big", "big", "bare"):
        board.fail(components, name)
    losses = {c.name: c.quality_loss for c in board.view().components}
    assert losses == {"bare": EXHAUSTED_LOSS, "big": 0.9, "small": EXHAUSTED_LOSS}
    assert all(c.state is ComponentState.EXHAUSTED for c in board.view().components)
    assert board.view().level is DegradationLevel.MINIMAL


# -- restorations ---------------------------------------------------------------------------


class Check:
    def __init__(self, result: Any = True, error: Exception | None = None) -> None:
        self.result, self.error, self.calls = result, error, 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[no-any-return]


def test_only_a_passing_check_restores() -> None:
    components, board = Components(), Board()
    checks = {
        "tests": Check(True),
        "database": Check(False),
        "network": Check(error=ConnectionError("still down")),
        "build": Check(None),  # a check that forgot to return
        "linting": Check(True),  # healthy: not called
    }
    for name, check in checks.items():
        components.register(name, check=check)
    for name in ("tests", "database", "network", "build", "file_io"):  # file_io: no check
        board.fail(components, name)
    board.fail(components, "network")
    board.fail(components, "network")  # exhausted
    checks["network"].error = None  # now passes
    checks["database"].result = True
    before = board.view()
    planned = plan_restorations(components, before)
    losses = {c.name: c.quality_loss for c in before.components}
    assert planned == [
        ComponentRestored(
            component="database",
            quality_regained=0.2,
            level=level_for(combine_losses([losses["tests"], losses["network"], 0.1, 0.1])),
        ),
        ComponentRestored(
            component="network",
            quality_regained=EXHAUSTED_LOSS,
            level=level_for(combine_losses([losses["tests"], 0.1, 0.1])),
        ),
        ComponentRestored(
            component="tests",
            quality_regained=0.15,
            level=level_for(combine_losses([0.1, 0.1])),
        ),
    ]
    calls = {name: check.calls for name, check in checks.items()}
    assert calls == {"tests": 1, "database": 1, "network": 1, "build": 1, "linting": 0}
    # The checks called first (without a lock), the plan taken on what they said: the same.
    passed = passing_checks(components, before)
    assert {c.name for c in passed} == {"database", "network", "tests"}
    assert plan_restorations(components, before, passed=passed) == planned
    assert {name: check.calls for name, check in checks.items()}["tests"] == 2  # not 3
    board.add(planned)
    view = board.view()
    assert view.quality_lost == combine_losses([0.1, 0.1])  # build and file_io
    assert view.level is planned[-1].level  # type: ignore[attr-defined]
    states = {c.name: (c.state, c.rung, c.workaround) for c in view.components}
    assert states["network"] == (ComponentState.HEALTHY, 0, "")
    assert states["build"] == (ComponentState.DEGRADED, 1, "incremental_build")
    # a restored component starts its ladder again
    assert board.fail(components, "network")[1] == WorkaroundApplied(
        component="network",
        workaround="offline_mirror",
        quality_loss=0.2,
        level=DegradationLevel.SEVERE,  # 1 - 0.9 * 0.9 * 0.8 = 0.352, with build and file_io
        rung=1,
    )


def test_a_raising_check_is_not_propagated() -> None:
    components, board = Components(), Board()
    components.register("tests", check=Check(error=RuntimeError("boom")))
    board.fail(components, "tests")
    assert plan_restorations(components, board.view()) == []


def test_an_explicit_restoration_needs_no_check() -> None:
    components, board = Components(), Board()
    board.fail(components, "file_io")
    assert plan_restorations(components, board.view()) == []
    planned = plan_restore(components, board.view(), "file_io")
    assert planned == [
        ComponentRestored(component="file_io", quality_regained=0.1, level=DegradationLevel.FULL)
    ]
    board.add(planned)
    assert board.view().quality_lost == 0.0
    assert board.view().level is DegradationLevel.FULL
    # nothing to restore: healthy, or never failed
    assert plan_restore(components, board.view(), "file_io") == []
    assert plan_restore(components, board.view(), "network") == []
    with pytest.raises(UsageError, match="unknown component 'gpu'"):
        plan_restore(components, board.view(), "gpu")


def test_restoring_what_is_not_degraded_changes_nothing() -> None:
    board = Board()
    restored = ComponentRestored(component="tests", level=DegradationLevel.FULL)
    board.add([restored])  # a session never seen
    assert board.projection.sessions == {}
    board.add([ComponentFailed(component="tests")])
    before = board.projection.snapshot()
    board.add([restored])  # failed, but never degraded
    assert board.projection.snapshot() == before
    tests = board.projection.component("s", "tests")
    assert tests is not None
    assert (tests.state, tests.failures, tests.since) == (ComponentState.HEALTHY, 1, 0.0)


# -- the projection -------------------------------------------------------------------------


def test_an_unseen_session_is_full() -> None:
    projection = DegradationProjection()
    assert projection.view("nobody") == DegradationView()
    assert projection.view("nobody").level is DegradationLevel.FULL
    assert projection.component("nobody", "tests") is None
    assert projection.snapshot() == {}


def test_other_events_and_other_decisions_are_ignored() -> None:
    board = Board()
    board.add(
        [
            StepFailed(index=0, name="x", error_type="E"),
            DecisionMade(kind="retry", subject="tests", choice=EXHAUSTED_CHOICE),
            DecisionMade(kind=DECISION_KIND, subject="tests", choice="something else"),
        ]
    )
    assert board.projection.sessions == {}
    assert StepFailed not in DegradationProjection.event_types


def test_sessions_are_kept_apart() -> None:
    components, board = Components(), Board()
    board.add(plan_failure(components, board.view("a"), "tests"), session="a")
    board.add(plan_failure(components, board.view("b"), "network"), session="b")
    assert board.view("a").quality_lost == 0.15
    assert board.view("b").quality_lost == 0.2
    assert sorted(board.projection.snapshot()) == ["a", "b"]
    assert board.projection.component("a", "network") is None


def test_fold_equals_pages_equals_checkpoint_plus_tail() -> None:
    clock = FakeClock()
    log = open_log("memory://", clock=clock)
    components = Components()
    components.register("database", check=lambda: True)
    live = DegradationProjection()

    def append(session: str, events: list[Event]) -> None:
        clock.advance(1.0)
        log.append(
            "session-" + session, events, expected_version=None, context=Context(session=session)
        )
        for r in log.read(after=live_position[0]):
            live.apply(r)
            live_position[0] = r.position

    live_position = [0]
    for session, name in [("a", "tests"), ("b", "database"), ("a", "tests"), ("a", "tests")]:
        append(session, plan_failure(components, live.view(session), name))
        append(session, [StepFailed(index=0, name="step", error_type="E", final=False)])
    append("b", plan_restorations(components, live.view("b")))
    append("a", plan_restore(components, live.view("a"), "tests"))
    append("a", plan_failure(components, live.view("a"), "database"))

    records = list(log.read())
    whole = fold(records).snapshot()
    assert whole == live.snapshot()
    assert whole["a"]["level"] == "moderate"
    assert whole["b"]["quality_lost"] == 0.0
    paged = DegradationProjection()
    for page in log.read_pages(page_size=3):
        fold(page, paged)
    assert paged.snapshot() == whole
    lean = DegradationProjection()
    for page in FoldReader(log).pages(page_size=4):
        fold(page, lean)
    assert lean.snapshot() == whole
    for cut in range(len(records) + 1):
        assert fold(records[cut:], reload(fold(records[:cut]))).snapshot() == whole


# -- properties -----------------------------------------------------------------------------

_names = st.sampled_from(DEFAULT_NAMES)


@settings(max_examples=60, deadline=None)
@given(st.lists(_names, max_size=30))
def test_failures_only_lower_the_level_and_restoring_all_returns_to_full(
    failures: list[str],
) -> None:
    components, board = Components(), Board()
    lost, level = 0.0, DegradationLevel.FULL
    for name in failures:
        planned = board.fail(components, name)
        view = board.view()
        assert view.quality_lost >= lost
        assert rank(view.level) >= rank(level)
        assert view.level is level_for(view.quality_lost)
        last = planned[-1]
        if isinstance(last, WorkaroundApplied):
            assert last.level is view.level  # the plan foresaw the fold
        else:
            assert isinstance(last, DecisionMade)
            assert last.inputs["quality_lost"] == view.quality_lost
        lost, level = view.quality_lost, view.level
    for name in sorted(set(failures)):
        planned = plan_restore(components, board.view(), name)
        assert len(planned) == 1
        board.add(planned)
        assert planned[0].level is board.view().level  # type: ignore[attr-defined]
    view = board.view()
    assert (view.level, view.quality_lost) == (DegradationLevel.FULL, 0.0)
    assert all(c.state is ComponentState.HEALTHY and c.rung == 0 for c in view.components)


_steps = st.tuples(
    st.sampled_from(["fail", "restore", "noise"]), _names, st.sampled_from(["a", "b"])
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_steps, max_size=40), st.data())
def test_replay_equals_checkpoint_plus_tail(
    steps: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    components, board = Components(), Board()
    for action, name, session in steps:
        view = board.view(session)
        if action == "fail":
            board.add(plan_failure(components, view, name), session=session)
        elif action == "restore":
            board.add(plan_restore(components, view, name), session=session)
        else:
            board.add(
                [ComponentRestored(component=name, level=DegradationLevel.FULL)], session=session
            )
    whole = fold(board.records).snapshot()
    assert whole == board.projection.snapshot()
    cut = data.draw(st.integers(0, len(board.records)), label="cut")
    assert fold(board.records[cut:], reload(fold(board.records[:cut]))).snapshot() == whole
    assert reload(board.projection).snapshot() == whole


def test_default_components_are_the_registry_defaults() -> None:
    assert tuple(c.name for c in DEFAULT_COMPONENTS) == DEFAULT_NAMES
