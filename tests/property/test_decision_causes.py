"""Every decision names its cause, earlier in the log, and its chain of causes ends where work
started: over random sessions driven through the real engine on SQLite.

Each example registers steps that succeed, time out a few times (retried), run out of memory
until their batch is small enough (fixed at once), lose their connection once (fixed after a
wait), raise a TypeError (given up), call a dependency behind a circuit breaker, judged actions
of every impact whose checks pass or fail (with or without an undo), and degrade components
whose ladders run out. It submits a random mix of tasks over them, some catching their steps'
failures and going on, maybe runs a few of them and closes the engine, then reopens the session
and runs it to its end: answering each approval request at random, and resuming the session
whenever the error budget pauses it.

Then, over the whole log, every :class:`onward.events.DecisionMade` must have a non-empty
``causation_id`` naming an event at an earlier position, and walking the causes from it must
end, without a cycle, at an event with no cause, a ``TaskSubmitted``, a ``SessionStarted`` or a
``SessionResumed``. The examples are derandomized: a failure prints its example, and running
again finds it again.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from onward import Engine
from onward.events import (
    Append,
    DecisionMade,
    ErrorObserved,
    Event,
    Recorded,
    SessionResumed,
    SessionStarted,
    TaskSubmitted,
)
from onward.events.log import new_event_ids
from onward.events.memory import MemoryLog
from onward.healing.breaker import BreakerPolicy
from onward.judgement.budget import ErrorBudget
from onward.judgement.degradation import Workaround
from tests.conftest import FakeClock

#: How each step of a generated task behaves.
STEP_KINDS = (
    "ok",  # succeeds
    "transient",  # raises TimeoutError ``fails`` times, then succeeds (retries)
    "fixable",  # MemoryError until its batch is halved small enough (a fix, applied again)
    "reconnect",  # ConnectionResetError ``fails`` times (a fix that waits)
    "fatal",  # TypeError, always (given up)
    "guarded",  # TimeoutError ``fails`` times, behind the breaker of "dep"
    "action",  # a judged action: confidence decision, maybe an approval, a check
    "degrade",  # a component fails: a workaround, or a decision to ask
)
IMPACTS = ("low", "medium", "high")
COMPONENTS = ("search", "index")
#: Where a chain of causes may end, besides an event with no cause.
ORIGINS = (TaskSubmitted, SessionStarted, SessionResumed)
#: The events worth counting in the statistics of the examples.
NOTABLE = frozenset(
    {"ApprovalGranted", "ApprovalDenied", "SessionPaused", "BreakerHalfOpened", "ActionUndone"}
)
#: The most rounds of run / answer / resume before the test gives up on finishing.
ROUNDS = 40


class Step(NamedTuple):
    kind: str
    fails: int = 0
    impact: str = "medium"
    passes: bool = True
    undo: bool = False
    component: str = "search"


class Job(NamedTuple):
    steps: list[Step]
    catch: bool  # the task catches its steps' failures and goes on


class Ladder(NamedTuple):
    rungs: int  # workarounds on its ladder (0: its first failure asks at once)
    healthy: bool | None  # its health check's answer (None: no check)


class Session(NamedTuple):
    jobs: list[Job]
    ladders: dict[str, Ladder]
    budget: int | None  # the error budget's limit (None: the default budget)
    degrade_first: str | None  # a component reported failed outside any task, before the run
    stop_after: int | None  # close the engine after this many task runs, then reopen it
    checkpoint_every: int  # events between projection checkpoints (a reopening loads the last)


steps = st.builds(
    Step,
    kind=st.sampled_from(STEP_KINDS),
    fails=st.integers(1, 3),
    impact=st.sampled_from(IMPACTS),
    passes=st.booleans(),
    undo=st.booleans(),
    component=st.sampled_from(COMPONENTS),
)
sessions = st.builds(
    Session,
    jobs=st.lists(
        st.builds(Job, steps=st.lists(steps, min_size=1, max_size=4), catch=st.booleans()),
        min_size=1,
        max_size=5,
    ),
    ladders=st.fixed_dictionaries(
        {
            name: st.builds(
                Ladder, rungs=st.integers(0, 2), healthy=st.sampled_from([None, False, True])
            )
            for name in COMPONENTS
        }
    ),
    budget=st.one_of(st.none(), st.integers(2, 4)),
    degrade_first=st.one_of(st.none(), st.sampled_from(COMPONENTS)),
    stop_after=st.one_of(st.none(), st.integers(1, 3)),
    checkpoint_every=st.sampled_from([7, 50_000]),
)


def register(engine: Engine, session: Session) -> None:
    """The steps, actions, components and the one task that the generated jobs run."""
    calls: Counter[str] = Counter()

    @engine.step(name="work")
    def work(key: str) -> str:
        return key

    @engine.step(name="flaky")
    def flaky(key: str, fails: int) -> str:
        calls[key] += 1
        if calls[key] <= fails:
            raise TimeoutError(f"the server did not answer {key}")
        return key

    @engine.step(name="load")
    def load(key: str, batch_size: int = 64) -> int:
        if batch_size > 8:
            raise MemoryError(f"a batch of {batch_size} does not fit")
        return batch_size

    @engine.step(name="connect")
    def connect(key: str, fails: int) -> str:
        calls[key] += 1
        if calls[key] <= fails:
            raise ConnectionResetError("connection reset by peer")
        return key

    @engine.step(name="compute")
    def compute(key: str) -> int:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    @engine.step(name="call_dep", breaker="dep")
    def call_dep(key: str, fails: int) -> str:
        calls[key] += 1
        if calls[key] <= fails:
            raise TimeoutError("dep did not answer")
        return key

    actions: dict[tuple[str, bool, bool], Any] = {}
    for impact in IMPACTS:
        for passes in (True, False):
            for undo in (True, False):

                def act(key: str) -> str:
                    return key

                outcome = "passes" if passes else "fails"
                actions[impact, passes, undo] = engine.action(
                    name=f"act-{impact}-{outcome}{'-undoable' if undo else ''}",
                    impact=impact,
                    check=(lambda result: True) if passes else (lambda result: False),
                    undo=(lambda result: None) if undo else None,
                )(act)

    for name, ladder in session.ladders.items():
        healthy = ladder.healthy
        engine.component(
            name,
            check=None if healthy is None else (lambda healthy=healthy: healthy),
            workarounds=[
                Workaround(name=f"{name}-rung-{i}", quality_loss=0.1 * (i + 1))
                for i in range(ladder.rungs)
            ],
        )

    def run_step(key: str, step: Step) -> object:
        kind = step.kind
        if kind == "ok":
            return work(key)
        if kind == "transient":
            return flaky(key, step.fails)
        if kind == "fixable":
            return load(key)
        if kind == "reconnect":
            return connect(key, step.fails)
        if kind == "fatal":
            return compute(key)
        if kind == "guarded":
            return call_dep(key, step.fails)
        if kind == "action":
            return actions[step.impact, step.passes, step.undo](key)
        assert kind == "degrade"
        found = engine.degrade(step.component, message=f"{step.component} failed for {key}")
        return None if found is None else found.name

    @engine.task(name="job")
    def job(number: int, plan: list[Step], catch: bool) -> int:
        done = 0
        for index, raw in enumerate(plan):
            step = Step(*raw)
            try:
                run_step(f"{number}/{index}", step)
            except Exception:
                if not catch:
                    raise
            done += 1
        return done


def run_to_the_end(engine: Engine, data: st.DataObject) -> None:
    """Run, answer the approvals at random, resume a paused session; until nothing is left."""
    for _ in range(ROUNDS):
        summary = engine.run()
        if summary.paused:
            engine.resume("the test looked at what paused it")
            continue
        waiting = engine.approvals()
        if not waiting:
            return
        for request in waiting:
            if data.draw(st.booleans(), label=f"approve {request.action}"):
                engine.approve(request.decision_id, by="tester", note="go ahead")
            else:
                engine.deny(request.decision_id, by="tester", note="not now")
    raise AssertionError(f"the session did not finish in {ROUNDS} rounds")


def chain_faults(records: list[Recorded]) -> list[str]:
    """What is wrong with the decisions' causes in a log, one line each (none: all is well)."""
    by_id = {r.meta.event_id: r for r in records}
    faults: list[str] = []
    for r in records:
        decision = r.event
        if not isinstance(decision, DecisionMade):
            continue
        what = f"{decision.kind} decision {r.meta.event_id} at {r.position} ({r.stream})"
        cause = by_id.get(r.meta.causation_id)
        if not r.meta.causation_id:
            faults.append(f"{what} has no cause")
            continue
        if cause is None:
            faults.append(f"{what}: its cause {r.meta.causation_id} is not in the log")
            continue
        if cause.position >= r.position:
            faults.append(f"{what}: its cause is at {cause.position}, not before it")
            continue
        seen = {r.meta.event_id}
        link = cause
        while not isinstance(link.event, ORIGINS) and link.meta.causation_id:
            seen.add(link.meta.event_id)
            following = link.meta.causation_id
            if following in seen:
                faults.append(f"{what}: its chain of causes loops at {following}")
                break
            found = by_id.get(following)
            if found is None:
                faults.append(
                    f"{what}: its chain reaches {type(link.event).__name__} at {link.position}, "
                    f"whose cause {following} is not in the log"
                )
                break
            if found.position >= link.position:
                faults.append(
                    f"{what}: its chain reaches {type(link.event).__name__} at {link.position}, "
                    f"whose cause is at {found.position}, not before it"
                )
                break
            link = found
    return faults


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(session=sessions, data=st.data())
def test_every_decision_has_an_earlier_cause_and_its_chain_ends_where_work_started(
    session: Session, data: st.DataObject
) -> None:
    clock = FakeClock()
    budget = None if session.budget is None else ErrorBudget(limit=session.budget)
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'onward.db'}"

        def open_engine() -> Engine:
            engine = Engine.open(
                db,
                session="prop",
                clock=clock,
                sleep=clock.advance,
                seed=0,
                checkpoint_every=session.checkpoint_every,
                budget=budget,
                breakers=BreakerPolicy(failures=2, cooldown=30.0),
            )
            register(engine, session)
            return engine

        with open_engine() as engine:
            if session.degrade_first is not None:
                engine.degrade(session.degrade_first, message="down before the run")
            for number, job in enumerate(session.jobs):
                engine.submit("job", number, list(job.steps), job.catch)
            if session.stop_after is not None:
                engine.run(max_runs=session.stop_after)
        # Reopened, the session resumes (a SessionResumed) and runs what is left.
        with open_engine() as engine:
            run_to_the_end(engine, data)
            assert all(task.terminal for task in engine.tasks())
            records = list(engine.log.read())
    # What the examples reached (``--hypothesis-show-statistics``).
    for kind in sorted({r.event.kind for r in records if isinstance(r.event, DecisionMade)}):
        event(f"a {kind} decision")
    for reached in sorted({type(r.event).__name__ for r in records} & NOTABLE):
        event(f"{reached} in the log")
    faults = chain_faults(records)
    assert not faults, "\n".join(faults)


def test_the_checker_finds_each_kind_of_fault() -> None:
    """A property that never fails proves nothing: each fault it looks for is found."""
    log = MemoryLog()
    submitted, observed, ok, no_cause, missing, early, odd = new_event_ids(7)
    later, via_missing, via_odd, broken, reversed_ = new_event_ids(5)

    def decide(choice: str) -> DecisionMade:
        return DecisionMade(kind="retry", subject="t", choice=choice)

    def observe() -> ErrorObserved:
        return ErrorObserved(signature="v1-a", error_type="TimeoutError", message="slow")

    def append(stream: str, version: int, events: dict[str, tuple[Event, str]]) -> None:
        log.commit(
            [
                Append(
                    stream=stream,
                    events=[e for e, _ in events.values()],
                    expected_version=version,
                    event_ids=list(events),
                    causes=[c for _, c in events.values()],
                )
            ]
        )

    append(
        "task-t",
        0,
        {
            submitted: (TaskSubmitted(name="job"), ""),
            observed: (observe(), submitted),
            ok: (decide("ok"), observed),
            no_cause: (decide("no cause"), ""),
            missing: (decide("missing"), "f" * 32),  # no such event
            early: (decide("early"), later),  # appended after it
            odd: (observe(), later),  # an error whose cause comes after it
        },
    )
    append("task-u", 0, {later: (TaskSubmitted(name="job"), "")})
    append(
        "task-u",
        1,
        {
            via_missing: (observe(), missing),
            broken: (decide("chain to a missing cause"), via_missing),
            via_odd: (observe(), odd),
            reversed_: (decide("chain to a later cause"), via_odd),
        },
    )
    faults = chain_faults(list(log.read()))
    assert len(faults) == 5, faults
    assert not any(ok in f for f in faults)
    assert f"retry decision {no_cause} at 4 (task-t) has no cause" in faults
    (f,) = [f for f in faults if f.startswith(f"retry decision {missing}")]
    assert f.endswith(f"its cause {'f' * 32} is not in the log")
    (f,) = [f for f in faults if f.startswith(f"retry decision {early}")]
    assert f.endswith("its cause is at 8, not before it")
    (f,) = [f for f in faults if f.startswith(f"retry decision {broken}")]
    assert f.endswith(f"DecisionMade at 5, whose cause {'f' * 32} is not in the log")
    (f,) = [f for f in faults if f.startswith(f"retry decision {reversed_}")]
    assert f.endswith("ErrorObserved at 7, whose cause is at 8, not before it")
