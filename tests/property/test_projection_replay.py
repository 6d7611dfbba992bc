"""Replay == live == checkpoint + tail, over random sessions of work driven through the Engine.

Each example opens two sessions on one log (``memory://`` or an SQLite file), submits tasks
with random priorities, deadlines and keys, runs them (tasks that succeed, fail, call steps,
report progress, submit subtasks and wait), cancels and reprioritises, and moves the clock.
A checkpoint is taken part-way. Then the live projections of both engines, a full replay, and
checkpoint + tail must all agree; replaying up to a position must agree with replaying a copy
of the log cut at that position; an older schema's checkpoint must be ignored; and none of the
replays may call a task or step function or append anything.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward import Engine, InvalidTransition
from onward.events import Checkpoint, Codec, Context, EventLog, Priority, all_event_types
from onward.events.memory import MemoryLog
from onward.projections import TASK, CatchUp, Projections, TaskView
from tests.conftest import FakeClock

PRIORITIES = [p.value for p in Priority]
KINDS = ("ok", "fails", "step_fails", "recovers", "parent", "watcher", "unencodable")
SESSIONS = ("alpha", "beta")


class Submit(NamedTuple):
    engine: int
    kind: str
    n: int
    priority: str | None
    deadline_in: int | None
    key: str | None


class Run(NamedTuple):
    engine: int
    max_runs: int | None


class Cancel(NamedTuple):
    engine: int
    pick: int


class Reprioritise(NamedTuple):
    engine: int
    pick: int
    priority: str


class Advance(NamedTuple):
    seconds: float


Op = Submit | Run | Cancel | Reprioritise | Advance

_engines = st.integers(0, len(SESSIONS) - 1)
_picks = st.integers(0, 1_000)
_max_runs = st.sampled_from([1, 1, 2, 3, None])  # often leave work behind for later

_submits = st.builds(
    Submit,
    engine=_engines,
    kind=st.sampled_from(KINDS),
    n=st.integers(0, 99),
    priority=st.none() | st.sampled_from(PRIORITIES),
    deadline_in=st.none() | st.integers(0, 120),
    key=st.none() | st.sampled_from(["k1", "k2"]),
)

#: One operation; submits and runs come up more often than steering.
OPS: st.SearchStrategy[Op] = st.one_of(
    _submits,
    _submits,
    _submits,
    st.builds(Run, engine=_engines, max_runs=_max_runs),
    st.builds(Run, engine=_engines, max_runs=_max_runs),
    st.builds(Cancel, engine=_engines, pick=_picks),
    st.builds(Reprioritise, engine=_engines, pick=_picks, priority=st.sampled_from(PRIORITIES)),
    st.builds(Advance, seconds=st.sampled_from([0.0, 0.5, 10.0, 45.0, 200.0])),
)


class Work:
    """Two sessions of work on one log, with every task and step call counted."""

    def __init__(self, url: str, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.keys: dict[tuple[int, str], str] = {}  # (engine, idempotency key) -> task id
        first = Engine.open(url, session=SESSIONS[0], clock=clock, sleep=clock.advance)
        if url == "memory://":  # a second handle on a memory log is the same object
            second = Engine(first.log, session=SESSIONS[1], clock=clock, sleep=clock.advance)
        else:  # a second handle on the same file, as another process would open it
            second = Engine.open(url, session=SESSIONS[1], clock=clock, sleep=clock.advance)
        self.engines = [first, second]
        for engine in self.engines:
            self._register(engine)

    @property
    def log(self) -> EventLog:
        return self.engines[0].log

    def close(self) -> None:
        for engine in self.engines:
            engine.close()

    def _register(self, engine: Engine) -> None:
        calls = self.calls

        @engine.step(name="add")
        def add(a: int, b: int) -> int:
            calls["add"] += 1
            return a + b

        @engine.step(name="flaky")
        def flaky(n: int) -> int:
            calls["flaky"] += 1
            raise ValueError(f"flaky {n}")

        @engine.task(name="ok")
        def ok(n: int) -> int:
            calls["ok"] += 1
            total = add(n, 1)
            engine.progress(0.5, f"half of {n}")
            return add(total, 2)

        @engine.task(name="fails")
        def fails(n: int) -> int:
            calls["fails"] += 1
            add(n, 1)
            raise RuntimeError(f"boom {n}")

        @engine.task(name="step_fails")
        def step_fails(n: int) -> int:
            calls["step_fails"] += 1
            return flaky(n)

        @engine.task(name="recovers")
        def recovers(n: int) -> int:
            calls["recovers"] += 1
            try:
                flaky(n)
            except ValueError:
                engine.progress(0.9, "recovered")
            return n

        @engine.task(name="parent")
        def parent(n: int) -> int:
            calls["parent"] += 1
            children = [
                engine.submit("ok", n),
                engine.submit("fails" if n % 3 == 0 else "ok", n + 1, priority="high"),
            ]
            return sum(engine.wait(children))

        @engine.task(name="watcher")
        def watcher(target: str) -> list[Any]:
            calls["watcher"] += 1
            return engine.wait([target])  # a task of the other session: may wait a long time

        @engine.task(name="unencodable")
        def unencodable(n: int) -> object:
            calls["unencodable"] += 1
            return object()

    def apply(self, op: Op) -> None:
        if isinstance(op, Advance):
            self.clock.advance(op.seconds)
            return
        engine = self.engines[op.engine]
        if isinstance(op, Submit):
            deadline = None if op.deadline_in is None else self.clock() + op.deadline_in
            arg: int | str = op.n
            if op.kind == "watcher":  # watch a task of the other session, or a missing one
                other = SESSIONS[1 - op.engine]
                targets = [t for t in self.in_order(engine) if t.session == other]
                arg = targets[op.n % len(targets)].task_id if targets else "missing"
            head = self.log.head()
            task_id = engine.submit(
                op.kind, arg, priority=op.priority, deadline=deadline, key=op.key
            )
            if op.key is None:
                assert self.log.head() == head + 1
            elif (op.engine, op.key) in self.keys:  # the same key: the first task, no new one
                assert task_id == self.keys[op.engine, op.key]
                assert self.log.head() == head
            else:
                self.keys[op.engine, op.key] = task_id
                assert self.log.head() == head + 1
        elif isinstance(op, Run):
            engine.run(max_runs=op.max_runs)
        elif isinstance(op, Cancel):
            self._steer(engine, op.pick, "TaskCancelled", lambda t: engine.cancel(t, "enough"))
        else:
            priority = op.priority
            self._steer(
                engine,
                op.pick,
                "TaskReprioritised",
                lambda t: engine.reprioritise(t, priority),
            )

    @staticmethod
    def in_order(engine: Engine) -> list[TaskView]:
        """Every task of the log, in submission order (task ids are random; positions not)."""
        return sorted(engine.refresh().tasks.tasks.values(), key=lambda v: v.order)

    def _steer(self, engine: Engine, pick: int, trigger: str, act: Any) -> None:
        """Cancel or reprioritise a task picked by submission order; check the lifecycle."""
        tasks = self.in_order(engine)
        if not tasks:
            return
        task_id = tasks[pick % len(tasks)].task_id
        state = tasks[pick % len(tasks)].state
        head = self.log.head()
        if TASK.allows(state, trigger):
            act(task_id)
            assert self.log.head() == head + 1
        else:
            with pytest.raises(InvalidTransition):
                act(task_id)
            assert self.log.head() == head


@contextmanager
def opened(backend: str, clock: FakeClock) -> Iterator[Work]:
    with tempfile.TemporaryDirectory() as tmp:
        url = (
            "memory://"
            if backend == "memory"
            else f"sqlite:///{Path(tmp) / 'work.db'}?synchronous=normal"
        )
        work = Work(url, clock)
        try:
            yield work
        finally:
            work.close()


def replay(log: EventLog, upto: int | None = None) -> dict[str, Any]:
    """A full replay from the first event, ignoring any checkpoint."""
    return CatchUp(log, checkpoint_every=0, upto=upto).open(use_checkpoint=False).snapshot()


def saved_and_loaded(projections: Projections) -> dict[str, Any]:
    """The projections after a checkpoint's encode and decode (a checkpoint with no tail)."""
    return Projections.decode(projections.encode(), projections.position).snapshot()


def cut(log: EventLog, upto: int) -> MemoryLog:
    """A memory log holding the same events as ``log`` up to position ``upto``."""
    clock = FakeClock()
    copy = MemoryLog(clock=clock)
    for r in log.read(upto=upto):
        clock.now = r.meta.time
        result = copy.append(
            r.stream,
            [r.event],  # type: ignore[list-item]  # no unknown events in these logs
            expected_version=r.version - 1,
            event_ids=[r.meta.event_id],
            context=Context(
                session=r.meta.session,
                causation_id=r.meta.causation_id,
                correlation_id=r.meta.correlation_id,
                actor=r.meta.actor,
            ),
        )
        assert result.positions == [r.position]
    return copy


SESSIONS_OF_WORK = given(
    ops=st.lists(OPS, min_size=10, max_size=40),
    checkpoint_at=st.integers(0, 40),
    upto_fraction=st.floats(0.0, 1.0),
)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@SESSIONS_OF_WORK
def test_live_equals_replay_equals_checkpoint_plus_tail_in_memory(
    ops: list[Op], checkpoint_at: int, upto_fraction: float
) -> None:
    check_session_of_work("memory", ops, checkpoint_at, upto_fraction)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@SESSIONS_OF_WORK
def test_live_equals_replay_equals_checkpoint_plus_tail_on_sqlite(
    ops: list[Op], checkpoint_at: int, upto_fraction: float
) -> None:
    check_session_of_work("sqlite", ops, checkpoint_at, upto_fraction)


def assert_no_wait_outside_waiting(snapshot: dict[str, Any]) -> None:
    """A task that does not wait (claimed, cancelled, failed, retried...) shows no wait."""
    for task in snapshot["tasks"]["tasks"].values():
        if task["state"] != "waiting":
            wait = {k: v for k, v in task.items() if k.startswith("waiting_")}
            assert not any(v for v in wait.values()), (task["task_id"], task["state"], wait)


def check_session_of_work(
    backend: str, ops: list[Op], checkpoint_at: int, upto_fraction: float
) -> None:
    """Run the operations, then hold every way of folding the log equal."""
    with opened(backend, FakeClock()) as work:
        log = work.log
        checkpoint_at = min(checkpoint_at, len(ops))
        middle: dict[str, Any] = {}
        follower = CatchUp(log, checkpoint_every=0)  # folds after every operation
        follower.open()
        for i, op in enumerate([*ops, None]):
            if i == checkpoint_at:
                host = CatchUp(log, checkpoint_every=0)
                host.open(use_checkpoint=False)
                host.checkpoint()
                middle = host.projections.snapshot()
            if op is not None:
                work.apply(op)
                follower.catch_up()
                assert saved_and_loaded(follower.projections) == follower.projections.snapshot()

        head = log.head()
        calls = dict(work.calls)
        full = replay(log)
        assert full["position"] == head
        assert_no_wait_outside_waiting(full)

        # live == replay, for both sessions' engines and a follower that folded step by step
        for engine in work.engines:
            assert engine.refresh().snapshot() == full
        assert follower.projections.snapshot() == full

        # checkpoint + tail == replay, and the checkpoint was used
        tail = CatchUp(log, checkpoint_every=0)
        assert tail.open().snapshot() == full
        assert tail.loaded_checkpoint == middle["position"]

        # the state at a position == replaying the log cut at that position
        assert replay(log, upto=middle["position"]) == middle
        upto = round(upto_fraction * head)
        expected = replay(cut(log, upto))
        assert replay(log, upto=upto) == expected
        at = CatchUp(log, checkpoint_every=0, upto=upto)
        assert at.open().snapshot() == expected  # with the checkpoint when it is not too new
        assert at.loaded_checkpoint == (middle["position"] if middle["position"] <= upto else None)

        # a checkpoint of an older projection schema is ignored: the log is replayed
        log.save_checkpoint(
            Checkpoint(
                name=Projections.NAME,
                schema=Projections.SCHEMA - 1,
                position=head,
                data=Projections().encode(),  # would hide every event if it were loaded
            )
        )
        stale = CatchUp(log, checkpoint_every=0)
        assert stale.open().snapshot() == full
        assert stale.loaded_checkpoint is None

        # replay is free of side effects
        assert work.calls == calls
        assert log.head() == head


def knowing_all_but(forgotten: frozenset[str]) -> Codec:
    """The codec of an onward that does not know these tags (an older one, or a newer one that
    dropped them): it reads their events as unknown."""
    return Codec([t for t in all_event_types() if t.__struct_config__.tag not in forgotten])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OPS, min_size=10, max_size=30),
    checkpoint_fraction=st.floats(0.0, 1.0),
    data=st.data(),
)
def test_checkpoint_plus_tail_equals_replay_when_two_versions_share_the_log(
    ops: list[Op], checkpoint_fraction: float, data: st.DataObject
) -> None:
    """Two versions of onward share a log, each knowing event types the other does not: the
    checkpoint one saved, with the tail, folds for the other exactly as its own replay does."""
    with opened("memory", FakeClock()) as work:
        log = work.log
        for op in ops:
            work.apply(op)
        tags = sorted({r.event.__struct_config__.tag for r in log.read()})  # type: ignore[union-attr]
        versions = st.frozensets(st.sampled_from(tags), max_size=3)
        saver, loader = data.draw(versions, label="saver"), data.draw(versions, label="loader")

        log.codec = knowing_all_but(saver)
        host = CatchUp(log, checkpoint_every=0, upto=round(checkpoint_fraction * log.head()))
        host.open(use_checkpoint=False)
        host.checkpoint()

        log.codec = knowing_all_but(loader)
        loaded = CatchUp(log, checkpoint_every=0)
        assert loaded.open().snapshot() == replay(log)
        if saver == loader and not saver & {"StepCompleted", "StepFailed"}:
            assert loaded.loaded_checkpoint == host.projections.position


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_busy_session_replays_the_same(backend: str) -> None:
    """One fixed, busy session: every kind of task, subtasks, deadlines, steering."""
    clock = FakeClock()
    ops: list[Op] = [
        *(Submit(i % 2, kind, i, None, None, None) for i, kind in enumerate(KINDS)),
        Submit(0, "parent", 3, "critical", 30, "k1"),
        Submit(0, "parent", 4, "low", None, "k1"),  # same key: the same task, nothing queued
        Submit(1, "ok", 5, "low", 5, None),
        Run(0, 2),
        Reprioritise(0, 3, "critical"),
        Cancel(1, 4),
        Advance(10.0),
        Run(1, None),
        Run(0, None),
        Cancel(0, 0),
    ]
    with opened(backend, clock) as work:
        for op in ops:
            work.apply(op)
        log = work.log
        head = log.head()
        calls = dict(work.calls)
        full = replay(log)
        assert_no_wait_outside_waiting(full)
        states = Counter(t["state"] for t in full["tasks"]["tasks"].values())
        assert {"succeeded", "failed", "cancelled", "missed"} <= set(states)
        for engine in work.engines:
            assert engine.refresh().snapshot() == full
        assert work.calls == calls
        assert log.head() == head
