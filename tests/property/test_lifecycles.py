"""Each lifecycle as a state machine: random triggers through ``onward.core.machines.transition``.

A trigger the lifecycle allows in the current state appends exactly one event and moves the
state per the table; any other raises :class:`onward.InvalidTransition` and appends nothing.
Folding the stream with :meth:`Lifecycle.evolve` always gives the model's state, the
projections (for tasks and sessions) agree, and a task never leaves a terminal state. An
illegal event that reaches the log anyway marks its stream damaged, naming it and the
:class:`IllegalTransition`, while every other stream folds on.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from onward import InvalidTransition, diagram, validate
from onward.core.machines import LIFECYCLES, transition
from onward.events import (
    Context,
    Event,
    EventLog,
    FlowState,
    FlowStateChanged,
    SessionEnded,
    SessionPaused,
    SessionResumed,
    SessionStarted,
    StepCompleted,
    StepFailed,
    TaskClaimed,
    TaskFailed,
    TaskProgressed,
    TaskSubmitted,
    TaskSucceeded,
    UsageError,
    all_event_types,
)
from onward.events.memory import MemoryLog
from onward.projections import BREAKER, SESSION, TASK, CatchUp, IllegalTransition, Lifecycle
from onward.projections.lifecycle import FLOW
from tests.conftest import FakeClock
from tests.strategies import EVENT_STRATEGIES

#: Every event type by its tag.
TYPES: dict[str, type[Event]] = {
    tag: cls
    for cls in all_event_types()
    # onward's own vocabulary only: other test modules define event types of their own
    if cls.__module__.startswith("onward.events.")
    and isinstance(tag := cls.__struct_config__.tag, str)
}
TAGS = sorted(TYPES)
#: The triggers that put an ended task back in the queue (``Engine.retry``).
REOPENING = frozenset({"TaskRetried"})
SUBJECTS = ("a", "b", "c")
MACHINE_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def event_for(tag: str) -> st.SearchStrategy[Event]:
    """A valid event instance of the type stored under ``tag``."""
    return EVENT_STRATEGIES[TYPES[tag]]


class LifecycleMachine(RuleBasedStateMachine):
    """Drives one lifecycle over a few subjects (streams) of a memory log."""

    lifecycle: ClassVar[Lifecycle]
    prefix: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.log: EventLog = MemoryLog(clock=self.clock)
        self.host = CatchUp(self.log, checkpoint_every=0)
        self.host.open()
        initial = self.lifecycle.initial
        self.states = dict.fromkeys(SUBJECTS, initial)
        self.versions = dict.fromkeys(SUBJECTS, 0)
        self.ended: dict[str, str] = {}  # subject -> the terminal state it reached
        self.appended = 0

    def teardown(self) -> None:
        self.log.close()

    def stream(self, subject: str) -> str:
        return self.prefix + subject

    # -- rules -----------------------------------------------------------------------------

    def fire(self, subject: str, event: Event) -> None:
        if isinstance(event, FlowStateChanged):
            # The session's flow has a lifecycle of its own (FLOW), which the flow projection
            # holds every move to: keep the moves legal there, whatever this lifecycle does.
            current = self.host.projections.flow.state("s")
            legal = sorted(t.dest for t in FLOW.transitions if current in t.sources and t.dest)
            state = event.state if event.state in legal else FlowState(legal[0])
            event = msgspec.structs.replace(event, state=state, previous=current)
        lifecycle = self.lifecycle
        tag = type(event).__struct_config__.tag
        assert isinstance(tag, str)
        state = self.states[subject]
        head = self.log.head()
        self.clock.advance(1.0)
        args = (self.log, lifecycle.name, subject, self.stream(subject), state)
        context = Context(session="s", actor="machine")
        if lifecycle.allows(state, tag):
            result = transition(*args, self.versions[subject], event, context)
            assert result.versions == {self.stream(subject): self.versions[subject] + 1}
            assert self.log.head() == head + 1
            self.states[subject] = lifecycle.table[(state, tag)]
            self.versions[subject] += 1
            self.appended += 1
            tally(f"reached {self.states[subject]}")
            if tag in REOPENING:
                self.ended.pop(subject, None)  # a retry is the only way out of an end
            if self.states[subject] in lifecycle.terminal:
                self.ended.setdefault(subject, self.states[subject])
        else:
            with pytest.raises(InvalidTransition) as raised:
                transition(*args, self.versions[subject], event, context)
            assert raised.value.state == state
            assert raised.value.trigger == tag
            assert raised.value.subject == subject
            assert self.log.head() == head
            tally("refused a trigger")
        self.host.catch_up()

    @rule(subject=st.sampled_from(SUBJECTS), tag=st.sampled_from(TAGS), data=st.data())
    def fire_any_event(self, subject: str, tag: str, data: st.DataObject) -> None:
        """Any event type at all: mostly illegal for this lifecycle."""
        self.fire(subject, data.draw(event_for(tag), label=tag))

    @rule(subject=st.sampled_from(SUBJECTS), data=st.data())
    def fire_own_trigger(self, subject: str, data: st.DataObject) -> None:
        """One of the lifecycle's triggers, allowed in the current state or not."""
        tag = data.draw(st.sampled_from(sorted(self.lifecycle.triggers)), label="trigger")
        self.fire(subject, data.draw(event_for(tag), label=tag))

    @rule(subject=st.sampled_from(SUBJECTS), data=st.data())
    def fire_allowed_trigger(self, subject: str, data: st.DataObject) -> None:
        """A trigger the current state allows (to reach deep into the lifecycle)."""
        state = self.states[subject]
        allowed = sorted(t for t in self.lifecycle.triggers if self.lifecycle.allows(state, t))
        if not allowed:  # a terminal state: nothing may happen any more
            assert state in self.lifecycle.terminal or not self.lifecycle.terminal
            return
        tag = data.draw(st.sampled_from(allowed), label="allowed")
        self.fire(subject, data.draw(event_for(tag), label=tag))

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def folding_the_stream_gives_the_model_state(self) -> None:
        for subject in SUBJECTS:
            stream = self.stream(subject)
            state = self.lifecycle.initial
            history = self.log.read_stream(stream)
            for r in history:
                tag = r.event.__struct_config__.tag
                assert isinstance(tag, str)
                state = self.lifecycle.evolve(state, tag, stream=stream, version=r.version)
            assert state == self.states[subject]
            assert len(history) == self.versions[subject]

    @invariant()
    def terminal_states_are_left_only_by_a_retry(self) -> None:
        for subject, terminal in self.ended.items():
            assert self.states[subject] == terminal

    @invariant()
    def only_allowed_triggers_were_appended(self) -> None:
        assert self.log.head() == self.appended

    @invariant()
    def the_projection_agrees(self) -> None:
        projections = self.host.projections
        views: dict[str, Any]
        if self.lifecycle is TASK:
            views = projections.tasks.tasks
        elif self.lifecycle is SESSION:
            views = projections.sessions.sessions
        else:
            return  # no projection folds breaker streams yet
        for subject in SUBJECTS:
            view = views.get(subject)
            if self.states[subject] == self.lifecycle.initial:
                assert view is None
            else:
                assert view is not None
                assert view.state == self.states[subject]
                assert view.version == self.versions[subject]


class TaskLifecycle(LifecycleMachine):
    lifecycle = TASK
    prefix = "task-"


class SessionLifecycle(LifecycleMachine):
    lifecycle = SESSION
    prefix = "session-"


class BreakerLifecycle(LifecycleMachine):
    lifecycle = BREAKER
    prefix = "breaker-"


TestTaskLifecycle = TaskLifecycle.TestCase
TestTaskLifecycle.settings = MACHINE_SETTINGS
TestSessionLifecycle = SessionLifecycle.TestCase
TestSessionLifecycle.settings = MACHINE_SETTINGS
TestBreakerLifecycle = BreakerLifecycle.TestCase
TestBreakerLifecycle.settings = MACHINE_SETTINGS


# -- the table, the shared Machine and the diagram agree --------------------------------------


@pytest.mark.parametrize("name", sorted(LIFECYCLES))
def test_validate_agrees_with_the_table(name: str) -> None:
    """The ``transitions`` Machine and the evolve table allow exactly the same pairs."""
    lifecycle = LIFECYCLES[name]
    for state in (lifecycle.initial, *lifecycle.states):
        for tag in TAGS:
            if lifecycle.allows(state, tag):
                validate(name, "x", state, tag)
            else:
                with pytest.raises(InvalidTransition):
                    validate(name, "x", state, tag)


def test_task_terminal_states_allow_nothing_but_a_retry() -> None:
    """Nothing leaves an end but a retry; a cancelled task takes the success of the step that
    was under way when it was cancelled."""
    assert TASK.terminal == {"succeeded", "failed", "cancelled", "missed", "quarantined"}
    for state in TASK.terminal:
        allowed = [t for t in TASK.triggers if TASK.allows(state, t)]
        retriable = state in ("failed", "cancelled", "missed")
        late = ["StepCompleted"] if state == "cancelled" else []
        assert sorted(allowed) == sorted(late + (["TaskRetried"] if retriable else [])), state
        assert all(TASK.table[(state, t)] == state for t in late)


@pytest.mark.parametrize("name", sorted(LIFECYCLES))
def test_diagram_is_mermaid_with_every_state(name: str) -> None:
    text = diagram(name)
    assert "stateDiagram" in text
    for state in LIFECYCLES[name].states:
        assert state in text


def test_task_diagram() -> None:
    text = diagram("task")
    assert "stateDiagram" in text
    states = ("queued", "running", "waiting", "succeeded", "failed", "cancelled", "missed")
    for state in (*states, "quarantined"):
        assert state in text


def test_diagram_of_an_unknown_lifecycle() -> None:
    with pytest.raises(UsageError, match="no lifecycle 'nope'"):
        diagram("nope")


# -- an illegal event in the log marks its stream damaged ---------------------------------------


def submitted() -> TaskSubmitted:
    return TaskSubmitted(name="crawl", args=[], kwargs={})


def started() -> SessionStarted:
    return SessionStarted(name="s", host="h", pid=1, version="0")


def test_evolve_names_stream_version_state_and_trigger() -> None:
    with pytest.raises(IllegalTransition) as raised:
        TASK.evolve("succeeded", "TaskClaimed", stream="task-7", version=4)
    error = raised.value
    assert (error.lifecycle, error.stream, error.version) == ("task", "task-7", 4)
    assert (error.state, error.trigger) == ("succeeded", "TaskClaimed")
    for part in ("task-7", "version 4", "succeeded", "TaskClaimed"):
        assert part in str(error)


CORRUPT_HISTORIES: list[tuple[str, list[Event], str]] = [
    # stream, its events (the last one is illegal), the state it was in
    ("task-x", [submitted(), TaskSucceeded(result=1)], "queued"),
    ("task-x", [TaskClaimed(worker="w", lease_until=1.0)], "new"),
    ("task-x", [StepCompleted(index=0, name="s", result=None, duration=0.0)], "new"),
    (
        "task-x",
        [
            submitted(),
            TaskClaimed(worker="w", lease_until=1.0),
            TaskSucceeded(result=1),
            TaskProgressed(fraction=0.5),
        ],
        "succeeded",
    ),
    ("task-x", [submitted(), submitted()], "queued"),
    ("task-x", [submitted(), StepCompleted(index=0, name="s", duration=0.0)], "queued"),
    (
        "task-x",
        [
            submitted(),
            TaskClaimed(worker="w", lease_until=1.0),
            TaskFailed(error_type="E"),
            StepFailed(index=0, name="s", error_type="E"),
        ],
        "failed",
    ),
    ("session-s", [started(), SessionEnded(reason="done"), SessionPaused(reason="")], "ended"),
    ("session-s", [SessionResumed(reason="")], "new"),
    ("session-s", [started(), started()], "active"),
]


@pytest.mark.parametrize(("stream", "history", "state"), CORRUPT_HISTORIES)
def test_an_illegal_event_in_the_log_marks_its_stream_damaged(
    stream: str, history: list[Event], state: str
) -> None:
    with MemoryLog(clock=FakeClock()) as log:
        log.append("task-ok", [submitted()], expected_version=0)  # a healthy stream around it
        for version, event in enumerate(history):  # straight to the log: no validation
            log.append(stream, [event], expected_version=version)
        log.append("task-ok", [TaskClaimed(worker="w", lease_until=1.0)], expected_version=1)
        projections = CatchUp(log, checkpoint_every=0).open()
        assert projections.position == log.head()
    damage = projections.damaged[stream]
    trigger = type(history[-1]).__struct_config__.tag
    assert (damage.stream, damage.version, damage.kind) == (stream, len(history), "illegal")
    for part in (repr(stream), f"version {len(history)}", repr(state), str(trigger)):
        assert part in damage.reason
    assert projections.tasks.tasks["ok"].state == "running"  # the healthy stream folds on
    assert list(projections.damaged) == [stream]
    if stream.startswith("task-"):
        view = projections.tasks.tasks["x"]
        assert view.state == "damaged"
        assert trigger in view.damage
    else:
        assert projections.sessions.sessions["s"].state == "damaged"


def test_an_illegal_event_after_a_checkpoint_marks_its_stream_damaged() -> None:
    with MemoryLog(clock=FakeClock()) as log:
        log.append("task-x", [submitted()], expected_version=0)
        host = CatchUp(log, checkpoint_every=0)
        host.open()
        host.checkpoint()
        log.append("task-x", [TaskSucceeded(result=1)], expected_version=1)
        log.append("task-x", [TaskProgressed(fraction=0.5)], expected_version=2)
        resumed = CatchUp(log, checkpoint_every=0)
        projections = resumed.open()
        assert resumed.loaded_checkpoint == 1
    assert projections.tasks.tasks["x"].state == "damaged"
    assert projections.damaged["task-x"].version == 2  # the first bad record, not the later
    assert re.search(r"'task-x'.*version 2", projections.tasks.tasks["x"].damage)
    with pytest.raises(IllegalTransition):  # the lifecycle itself still refuses it
        TASK.evolve("queued", "TaskSucceeded")
