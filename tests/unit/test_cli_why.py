"""``onward why``: a decision whole and its chain of causes, over a real log where a step timed
out twice (two retries decided) and another raised a TypeError (given up)."""

from __future__ import annotations

import itertools
from pathlib import Path

import msgspec
import pytest

from engine import Engine
from engine.audit import WhyReport
from engine.cli import main
from events import DecisionMade, TaskSubmitted, open_log
from tests.conftest import FakeClock


class Decided(msgspec.Struct):
    """The log the tests read, and the decisions in it."""

    db: str
    flaky: str  # the task whose step timed out twice, then succeeded
    broken: str  # the task whose step raised a TypeError
    retries: list[tuple[str, int]]  # (decision id, position), in log order
    give_up: tuple[str, int]


@pytest.fixture(scope="module")
def decided(tmp_path_factory: pytest.TempPathFactory) -> Decided:
    db = tmp_path_factory.mktemp("why") / "onward.db"
    clock = FakeClock()
    tries = {"fetch": 0}
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.step(name="fetch")
        def fetch() -> str:
            tries["fetch"] += 1
            if tries["fetch"] <= 2:
                raise TimeoutError("the server did not answer in 5 s")
            return "ok"

        @engine.step(name="parse")
        def parse() -> int:
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

        @engine.task(name="flaky")
        def flaky() -> str:
            return str(fetch())

        @engine.task(name="broken")
        def broken() -> int:
            return int(parse())

        engine.submit(flaky)
        engine.submit(broken)
        engine.run()
    tasks: dict[str, str] = {}
    retries, give_up = [], []
    with open_log(f"sqlite:///{db}", create=False) as log:
        for r in log.read():
            if isinstance(r.event, TaskSubmitted):
                tasks[r.event.name] = r.stream.removeprefix("task-")
            if isinstance(r.event, DecisionMade):
                at = (r.meta.event_id, r.position)
                {"retry": retries, "give_up": give_up}[r.event.kind].append(at)
    assert len(retries) == 2
    assert len(give_up) == 1
    return Decided(
        db=str(db),
        flaky=tasks["flaky"],
        broken=tasks["broken"],
        retries=retries,
        give_up=give_up[0],
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def why_json(capsys: pytest.CaptureFixture[str], db: str, query: str) -> WhyReport:
    status, out, err = run(capsys, "why", query, "--db", db, "--json")
    assert status == 0, err
    return msgspec.json.decode(out, type=WhyReport)


def test_a_retry_decision_and_its_chain_of_causes(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    decision_id, position = decided.retries[0]
    status, out, err = run(capsys, "why", decision_id, "--db", decided.db)
    assert status == 0, err
    assert f"decision {decision_id}" in out
    assert "kind          retry" in out
    assert "choice        retry in " in out
    assert f"position      {position} in stream task-{decided.flaky}" in out
    assert "time          2023-11-14T22:13:20" in out
    assert "alternatives  give up" in out
    assert "error_type         TimeoutError" in out  # an input, one a line
    chain = out[out.index("chain of causes") :]
    assert chain.index("ErrorObserved") < chain.index("StepFailed") < chain.index("TaskClaimed")
    assert "message=the server did not answer in 5 s" in chain
    assert "name=fetch index=0 attempt=1 error_type=TimeoutError" in chain
    assert "worker=" in chain
    assert "the chain ends at" in chain


def test_a_give_up_decision(decided: Decided, capsys: pytest.CaptureFixture[str]) -> None:
    decision_id, _ = decided.give_up
    status, out, _ = run(capsys, "why", decision_id, "--db", decided.db)
    assert status == 0
    assert "kind          give_up" in out
    assert "choice        fail the step" in out
    assert "TypeError" in out


def test_json_has_the_decision_and_its_chain(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    decision_id, position = decided.retries[1]
    report = why_json(capsys, decided.db, decision_id)
    assert (report.matched, report.target) == ("decision", decision_id)
    [row] = report.decisions
    assert (row.decision_id, row.position, row.kind) == (decision_id, position, "retry")
    assert row.subject == decided.flaky
    assert row.inputs["attempt"] == 2
    assert row.alternatives == ["give up"]
    types = [c.type for c in row.causes]
    assert types[:3] == ["ErrorObserved", "StepFailed", "TaskClaimed"]
    assert types[-1] == "TaskSubmitted"  # every chain ends where its task started
    assert row.causes[0].fields["error_type"] == "TimeoutError"
    assert row.causes[1].fields["attempt"] == 2
    assert "worker" in row.causes[2].fields
    assert row.chain_end in ("root", "missing")
    positions = [c.position for c in row.causes]
    assert positions == sorted(positions, reverse=True)


def test_a_task_lists_all_its_decisions_in_order(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    report = why_json(capsys, decided.db, decided.flaky)
    assert (report.matched, report.target) == ("task", decided.flaky)
    assert [(d.decision_id, d.position) for d in report.decisions] == decided.retries
    status, out, _ = run(capsys, "why", decided.broken, "--db", decided.db)
    assert status == 0
    assert f"1 decision(s) for task {decided.broken}" in out
    assert decided.give_up[0] in out


def test_a_position_takes_the_last_decision_at_or_before_it(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    decisions = sorted([*decided.retries, decided.give_up], key=lambda d: d[1])
    for (decision_id, at), (_, following) in itertools.pairwise(decisions):
        for position in (at, following - 1):
            report = why_json(capsys, decided.db, str(position))
            assert (report.matched, report.target) == ("position", str(at))
            assert [d.decision_id for d in report.decisions] == [decision_id]
    last = why_json(capsys, decided.db, "999999")
    assert last.decisions[0].decision_id == decisions[-1][0]
    status, _, err = run(capsys, "why", "1", "--db", decided.db)
    assert status == 2
    assert "no decision at or before position 1" in err


def test_a_unique_prefix_works(decided: Decided, capsys: pytest.CaptureFixture[str]) -> None:
    decision_id, _ = decided.give_up
    report = why_json(capsys, decided.db, decision_id[:12])
    assert [d.decision_id for d in report.decisions] == [decision_id]


def test_an_unknown_id_exits_2(decided: Decided, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "why", "no-such-thing", "--db", decided.db)
    assert status == 2
    assert out == ""
    assert "onward why: no decision, task or position 'no-such-thing'" in err


def test_a_missing_log_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    status, out, err = run(capsys, "why", "abc", "--db", str(missing))
    assert status == 2
    assert out == ""
    assert f"onward why: no log at {missing}" in err
    assert list(tmp_path.iterdir()) == []
