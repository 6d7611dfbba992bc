"""The waiting tasks' indexes pick what a look at every waiting task would pick.

A claim looks only at the tasks whose timers have passed and at those waiting for subtasks
(:meth:`onward.projections.task.TaskProjection.ready_waiting`), a permit wakes one of the
tasks waiting for its limit, a closed breaker those waiting for it: never every task parked
on a message or an answer; a look at a session's running tasks, or at its unregistered ones
whose function a worker has, reads an index of them.
Whatever the events, the order they come in, the clock (set back
too) and the checkpoints taken between them, each answer is the one a look at every waiting
task gives.
"""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from onward.events import (
    ApprovalGranted,
    Event,
    MessageSent,
    Meta,
    Priority,
    ProblemKind,
    Recorded,
    StreamDamage,
    TaskCancelled,
    TaskClaimed,
    TaskFailed,
    TaskReprioritised,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    TaskUnregistered,
    TaskWaiting,
    UnknownEvent,
)
from onward.projections import TaskView
from onward.projections.task import TaskProjection

TASKS = [f"t{i}" for i in range(8)]
SESSIONS = ("a", "b")
LIMITS = ("", "", "pool")
BREAKERS = ("", "", "index")
TOPICS = ("", "", "go")
NAMES = ("job", "mail")


def waits_until(view: TaskView, now: float) -> bool:
    return view.waiting_until is not None and view.waiting_until > now


class WaitingTasks(RuleBasedStateMachine):
    """Tasks submitted, claimed, waiting on timers, messages, answers, permits, breakers and
    subtasks, ended and retried, under a clock that moves both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks = TaskProjection()
        self.position = 0
        self.now = 1000.0

    # -- folding -----------------------------------------------------------------------------

    def fold(self, stream: str, version: int, event: Event, session: str = "a") -> None:
        self.position += 1
        meta = Meta(event_id=f"e{self.position}", time=self.now, session=session)
        record = Recorded(stream, version, self.position, meta, event)
        if stream.startswith("inbox-"):
            self.tasks.apply_inbox(record)
        else:
            self.tasks.apply(record)

    def view(self, task_id: str) -> TaskView | None:
        return self.tasks.view(task_id)

    def task_event(self, task_id: str, event: Event) -> None:
        view = self.view(task_id)
        assert view is not None
        self.fold(f"task-{task_id}", view.version + 1, event, view.session)

    def in_state(self, *states: str) -> list[str]:
        return [t for t in TASKS if (v := self.view(t)) is not None and v.state in states]

    # -- rules -------------------------------------------------------------------------------

    @rule(
        task_id=st.sampled_from(TASKS),
        session=st.sampled_from(SESSIONS),
        priority=st.sampled_from(["critical", "high", "normal", "low"]),
        name=st.sampled_from(NAMES),
    )
    def submit(self, task_id: str, session: str, priority: str, name: str) -> None:
        if self.view(task_id) is None:
            event = TaskSubmitted(name=name, args=[], priority=priority)  # type: ignore[arg-type]
            self.fold(f"task-{task_id}", 1, event, session)

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        ready = self.in_state("queued", "waiting", "unregistered")
        if ready:
            task_id = data.draw(st.sampled_from(ready))
            self.task_event(task_id, TaskClaimed(worker="w", lease_until=2e9, attempt=1))

    @rule(
        data=st.data(),
        until=st.one_of(st.none(), st.floats(-5, 30).map(lambda d: 1000.0 + d)),
        topic=st.sampled_from(TOPICS),
        limit=st.sampled_from(LIMITS),
        breaker=st.sampled_from(BREAKERS),
        subtasks=st.lists(st.sampled_from(TASKS), max_size=3, unique=True),
    )
    def wait(
        self,
        data: st.DataObject,
        until: float | None,
        topic: str,
        limit: str,
        breaker: str,
        subtasks: list[str],
    ) -> None:
        running = self.in_state("running")
        if running:
            task_id = data.draw(st.sampled_from(running))
            on = [t for t in subtasks if t != task_id and self.view(t) is not None]
            waiting = TaskWaiting(
                reason="test", until=until, on=on, topic=topic, limit=limit, breaker=breaker
            )
            self.task_event(task_id, waiting)

    @rule(data=st.data(), priority=st.sampled_from(["critical", "high", "normal", "low"]))
    def reprioritise(self, data: st.DataObject, priority: str) -> None:
        waiting = self.in_state("queued", "waiting", "unregistered")
        if waiting:
            task_id = data.draw(st.sampled_from(waiting))
            view = self.view(task_id)
            assert view is not None
            event = TaskReprioritised(priority=Priority(priority), previous=Priority(view.priority))
            self.task_event(task_id, event)

    @rule(task_id=st.sampled_from(TASKS), topic=st.sampled_from(["go", "other"]))
    def send(self, task_id: str, topic: str) -> None:
        view = self.view(task_id)
        if view is not None:
            self.fold(f"inbox-{task_id}", view.inbox_version + 1, MessageSent(topic=topic))

    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        waiting = self.in_state("waiting")
        if waiting:
            self.task_event(data.draw(st.sampled_from(waiting)), ApprovalGranted(decision_id="d"))

    @rule(limit=st.sampled_from(["pool", "other"]))
    def permit_returned(self, limit: str) -> None:
        asleep = [
            v
            for t in self.in_state("waiting")
            if (v := self.view(t)) is not None
            and v.waiting_limit == limit
            and (v.waiting_until is None or v.waiting_until > self.now)
        ]
        chosen = min(asleep, key=lambda v: v.queue_key()) if asleep else None
        before = {t: v.waiting_until for t in TASKS if (v := self.view(t)) is not None}
        self.tasks.wake(limit, self.now)
        after = {t: v.waiting_until for t in TASKS if (v := self.view(t)) is not None}
        woken = {t for t in before if before[t] != after[t]}
        assert woken == ({chosen.task_id} if chosen is not None else set())
        if chosen is not None:
            assert after[chosen.task_id] == self.now

    @rule(breaker=st.sampled_from(["index", "other"]))
    def breaker_closed(self, breaker: str) -> None:
        expected = {
            t
            for t in self.in_state("waiting")
            if (v := self.view(t)) is not None
            and v.waiting_breaker == breaker
            and (v.waiting_until is None or v.waiting_until > self.now)
        }
        self.tasks.wake_breaker(breaker, self.now)
        for task_id in expected:
            view = self.view(task_id)
            assert view is not None
            assert view.waiting_until == self.now

    @rule(data=st.data(), how=st.sampled_from(["succeeded", "failed", "cancelled"]))
    def end(self, data: st.DataObject, how: str) -> None:
        candidates = self.in_state("running") if how != "cancelled" else self.in_state("waiting")
        if candidates:
            task_id = data.draw(st.sampled_from(candidates))
            event: Event = (
                TaskSucceeded(result=1)
                if how == "succeeded"
                else TaskFailed(error_type="E", message="m")
                if how == "failed"
                else TaskCancelled()
            )
            self.task_event(task_id, event)

    @precondition(lambda self: bool(self.in_state("failed", "cancelled")))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        self.task_event(
            data.draw(st.sampled_from(self.in_state("failed", "cancelled"))), TaskRetried()
        )

    @rule(data=st.data())
    def unregister(self, data: st.DataObject) -> None:
        ready = self.in_state("queued", "waiting")
        if ready:
            task_id = data.draw(st.sampled_from(ready))
            view = self.view(task_id)
            assert view is not None
            self.task_event(task_id, TaskUnregistered(name=view.name, worker="w"))

    @rule(task_id=st.sampled_from(TASKS))
    def damage(self, task_id: str) -> None:
        view = self.view(task_id)
        if view is not None and not view.terminal:
            stream = f"task-{task_id}"
            reason = "a record that does not decode"
            damage = StreamDamage(
                stream=stream,
                version=view.version + 1,
                position=0,
                kind=ProblemKind.CORRUPT,
                reason=reason,
            )
            self.tasks.damage(task_id, damage)

    @rule(step=st.floats(-10, 20))
    def tick(self, step: float) -> None:
        self.now += step

    @rule()
    def checkpoint(self) -> None:
        active, finished = self.tasks.dump()
        loaded = TaskProjection()
        loaded.load(dict(active), finished)
        self.tasks = loaded

    # -- what a look at every waiting task gives -------------------------------------------

    def ended(self, view: TaskView) -> bool:
        return all((c := self.view(t)) is not None and c.terminal for t in view.waiting_on)

    def expected_ready(self, session: str) -> TaskView | None:
        ready = [
            v
            for t in self.in_state("waiting")
            if (v := self.view(t)) is not None
            and v.session == session
            and not v.unknown_events
            and not waits_until(v, self.now)
            and (self.ended(v) if v.waiting_on else v.waiting_until is not None)
        ]
        return min(ready, key=lambda v: v.queue_key()) if ready else None

    def expected_timer(self, session: str) -> float | None:
        timers = [
            v.waiting_until
            for t in self.in_state("waiting")
            if (v := self.view(t)) is not None
            and v.session == session
            and v.waiting_until is not None
            and not v.unknown_events
        ]
        return min(timers) if timers else None

    @invariant()
    def a_claim_finds_what_a_look_at_every_waiting_task_finds(self) -> None:
        for session in SESSIONS:
            found = self.tasks.ready_waiting(session, self.now, self.ended)
            expected = self.expected_ready(session)
            assert (found and found.task_id) == (expected and expected.task_id)

    @invariant()
    def the_next_timer_is_the_first_of_the_waiting_tasks(self) -> None:
        for session in SESSIONS:
            assert self.tasks.next_timer(session) == self.expected_timer(session)

    @invariant()
    def the_waiting_set_is_the_waiting_state(self) -> None:
        assert self.tasks.waiting == set(self.in_state("waiting"))
        sessions = {v.session for t in self.in_state("waiting") if (v := self.view(t)) is not None}
        for session in SESSIONS:
            assert self.tasks.waits_in(session) == (session in sessions)

    @invariant()
    def a_task_that_does_not_wait_shows_no_wait(self) -> None:
        for view in self.tasks.views.values():
            if view.state != "waiting":
                shown = (view.waiting_reason, view.waiting_until, view.waiting_on)
                assert shown == ("", None, ())
                assert (view.waiting_topic, view.waiting_limit, view.waiting_breaker) == (
                    "",
                    "",
                    "",
                )

    @invariant()
    def a_task_registered_again_is_the_first_unregistered_of_a_known_name(self) -> None:
        for session in SESSIONS:
            for known in ((), ("job",), ("mail",), NAMES):
                found = self.tasks.registered_again(session, known.__contains__)
                candidates = [
                    v
                    for t in self.in_state("unregistered")
                    if (v := self.tasks.views[t]).session == session and v.name in known
                ]
                expected = min(candidates, key=lambda v: v.queue_key()) if candidates else None
                assert (found and found.task_id) == (expected and expected.task_id)

    @invariant()
    def the_running_tasks_are_those_in_the_running_state(self) -> None:
        for session in SESSIONS:
            found = {v.task_id for v in self.tasks.running_in(session)}
            running = {
                t for t in self.in_state("running") if self.tasks.views[t].session == session
            }
            assert found == running
        assert sum(map(len, self.tasks._running_in.values())) == len(self.in_state("running"))

    @invariant()
    def no_timer_index_grows_past_its_bound(self) -> None:
        for heap in self.tasks._timers.values():
            assert len(heap) <= 65 + 4 * len(TASKS)
            assert all(not math.isnan(key) for key, _ in heap)
        for session, ranked in self.tasks._ranked.items():
            assert len(ranked) <= 65 + 4 * len(self.tasks._due.get(session, ()))


WaitingTasks.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_waiting_index = WaitingTasks.TestCase


def due_tasks(count: int) -> WaitingTasks:
    """``count`` tasks of session ``a``, each claimed and waiting until 1001, the clock at
    1002: all due at once."""
    machine = WaitingTasks()
    for task_id in TASKS[:count]:
        machine.fold(f"task-{task_id}", 1, TaskSubmitted(name="job", args=[]))
        machine.task_event(task_id, TaskClaimed(worker="w", lease_until=2e9, attempt=1))
        machine.task_event(task_id, TaskWaiting(reason="test", until=1001.0))
    machine.now = 1002.0
    return machine


def test_a_due_task_given_a_higher_priority_is_claimed_first() -> None:
    machine = due_tasks(3)
    first = machine.tasks.ready_waiting("a", machine.now, machine.ended)
    assert first is not None
    assert first.task_id == "t0"
    machine.task_event("t2", TaskReprioritised(priority=Priority.HIGH, previous=Priority.NORMAL))
    first = machine.tasks.ready_waiting("a", machine.now, machine.ended)
    assert first is not None
    assert first.task_id == "t2"
    machine.task_event("t2", TaskReprioritised(priority=Priority.LOW, previous=Priority.HIGH))
    first = machine.tasks.ready_waiting("a", machine.now, machine.ended)
    assert first is not None
    assert first.task_id == "t0"


def test_due_tasks_are_claimed_in_queue_order_one_after_another() -> None:
    machine = due_tasks(8)
    machine.task_event(
        "t5", TaskReprioritised(priority=Priority.CRITICAL, previous=Priority.NORMAL)
    )
    claimed = []
    while (view := machine.tasks.ready_waiting("a", machine.now, machine.ended)) is not None:
        claimed.append(view.task_id)
        machine.task_event(view.task_id, TaskClaimed(worker="w", lease_until=2e9, attempt=1))
    assert claimed == ["t5", "t0", "t1", "t2", "t3", "t4", "t6", "t7"]


def test_the_due_index_stays_bounded_under_reprioritising_and_newer_events() -> None:
    """A due task reprioritised again and again while no worker claims it (a paused session),
    and due tasks that end after a newer onward's event (no candidates here), leave no more
    than a bounded number of entries behind."""
    tasks = TaskProjection()
    position = 0

    def fold(task_id: str, version: int, event: Event) -> None:
        nonlocal position
        position += 1
        meta = Meta(event_id=f"e{position}", time=1000.0, session="a")
        tasks.apply(Recorded(f"task-{task_id}", version, position, meta, event))

    def parked(task_id: str, until: float | None) -> None:
        fold(task_id, 1, TaskSubmitted(name="job", args=[]))
        fold(task_id, 2, TaskClaimed(worker="w", lease_until=2e9, attempt=1))
        fold(task_id, 3, TaskWaiting(reason="test", until=until))

    parked("due", 999.0)
    parked("parked", None)  # the session keeps a waiting task throughout
    levels = [Priority.HIGH, Priority.NORMAL]
    for version in range(4, 2004):
        found = tasks.ready_waiting("a", 1001.0, lambda view: True)
        assert found is not None
        assert found.task_id == "due"
        new, old = levels[version % 2], levels[(version + 1) % 2]
        fold("due", version, TaskReprioritised(priority=new, previous=old))
    assert len(tasks._ranked["a"]) <= 64 + 4 * len(tasks._due["a"])
    for n in range(1000):
        parked(f"newer{n}", 999.0)
        fold(f"newer{n}", 4, UnknownEvent(type="TaskAnnotatedV9", data={}))
        tasks.ready_waiting("a", 1001.0, lambda view: True)
        fold(f"newer{n}", 5, TaskClaimed(worker="newer", lease_until=2e9, attempt=2))
        fold(f"newer{n}", 6, TaskSucceeded(result=1))
    assert len(tasks._due["a"]) <= 64 + 2 * 2 + 1
    assert tasks.next_timer("a") == 999.0
    assert set(tasks._due["a"]) == {"due"}
