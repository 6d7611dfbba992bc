"""Shared streams under concurrency: several workers (threads and processes) on one session,
the flow monitor moving, the budget judging, interruptions deferred and delivered, components
degraded and restored, tasks retried. Afterwards the log always folds from scratch, verifies,
and no shared decision was appended twice.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward import Engine, ErrorBudget, FlowPolicy, RetryPolicies, RetryPolicy
from onward.events import (
    DecisionMade,
    EventLog,
    FlowStateChanged,
    InterruptionDelivered,
    open_log,
)
from onward.projections import CatchUp

SESSION = "shared"


def open_worker(url: str) -> Engine:
    engine = Engine.open(
        url,
        session=SESSION,
        lease=30.0,
        retries=RetryPolicies(RetryPolicy(max_attempts=3, base=0.001, cap=0.002)),
        budget=ErrorBudget(limit=3, window=60.0, slow_down=0.001),
        flow=FlowPolicy(flowing_rate=1.0, warm_actions=1),
    )

    @engine.step(name="shared.work")
    def work(task: int, index: int, fail: bool) -> int:
        if fail and engine.task_view(engine.idempotency_key().split(":")[0]).attempt < 2:
            raise ConnectionResetError(f"task {task} step {index}: peer reset")
        return task * index

    @engine.task(name="shared.job")
    def job(task: int, fails: list[int]) -> int:
        total = 0
        for index in range(3):
            total += work(task, index, index in fails)
        if task % 4 == 0:
            engine.notify(f"task {task} halfway")
        return total

    return engine


def check_folds(log: EventLog) -> None:
    """The log folds from its first event, verifies, and holds no decision appended twice."""
    assert log.verify().ok
    host = CatchUp(log, checkpoint_every=0)
    host.open(use_checkpoint=False)  # raises on any lifecycle the log breaks
    session = [r.event for r in log.read_stream(f"session-{SESSION}")]
    moves = [e for e in session if isinstance(e, FlowStateChanged)]
    for before, after in itertools.pairwise(moves):
        assert after.previous == before.state, (before, after)
    budget = [e.rule for e in session if isinstance(e, DecisionMade) and e.kind == "budget"]
    for before, after in itertools.pairwise(budget):
        assert before != after, budget  # a verdict is recorded only when its rule changes
    delivered = Counter(e.interruption_id for e in session if isinstance(e, InterruptionDelivered))
    assert set(delivered.values()) <= {1}, delivered  # no interruption handed over twice


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    workers=st.integers(min_value=2, max_value=4),
    tasks=st.lists(
        st.lists(st.integers(min_value=0, max_value=2), max_size=2), min_size=4, max_size=14
    ),
    chores=st.lists(st.sampled_from(["notify", "degrade", "restore", "resume"]), max_size=6),
)
def test_threads_sharing_a_session_leave_a_log_that_folds(
    tmp_path_factory: object, workers: int, tasks: list[list[int]], chores: list[str]
) -> None:
    path = tmp_path_factory.mktemp("shared") / "log.db"  # type: ignore[attr-defined]
    url = f"sqlite:///{path}"
    engines = [open_worker(url) for _ in range(workers)]  # each opens (or resumes) the session
    for number, fails in enumerate(tasks):
        engines[0].submit("shared.job", number, sorted(set(fails)), key=str(number))
    errors: list[BaseException] = []

    def serve(engine: Engine, index: int) -> None:
        try:
            for chore in chores[index::workers]:
                if chore == "notify":
                    engine.notify(f"worker {index} says hello")
                elif chore == "degrade":
                    engine.degrade("network", message="unreachable")
                elif chore == "restore":
                    engine.restore("network")
                else:
                    engine.resume("a person resumed it")
            for _ in range(3):
                engine.run()
                engine.resume("a person resumed it")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(e, i)) for i, e in enumerate(engines)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.close()
    assert not errors, errors
    with open_log(url) as log:
        check_folds(log)


PROCESS = """
import sys
sys.path.insert(0, {tests!r})
from tests.property.test_shared_streams import open_worker

engine = open_worker(sys.argv[1])
for _ in range(4):
    engine.notify("a process says hello")
    engine.run()
    engine.resume("a person resumed it")
engine.close()
"""


def test_processes_sharing_a_session_leave_a_log_that_folds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_worker(url) as engine:
        for number in range(60):
            engine.submit("shared.job", number, [number % 3] if number % 2 else [], key=str(number))
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(PROCESS.format(tests=str(Path(__file__).parents[2]))))
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    for process in processes:
        _out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    with open_log(url) as log:
        check_folds(log)
        states = CatchUp(log, checkpoint_every=0).open().tasks.tasks.values()
    assert {t.state for t in states} == {"succeeded"}
