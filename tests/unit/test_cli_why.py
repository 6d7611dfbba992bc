"""``onward why``: a decision whole and its chain of causes, over real logs: one where a step
timed out twice (two retries decided) and another raised a TypeError (given up); one where an
action asked for approval (approved, denied, left waiting); one whose error budget paused the
session."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from pathlib import Path

import msgspec
import pytest

from onward import Engine
from onward.cli.audit import WhyReport
from onward.cli.main import main
from onward.events import DecisionMade, StepFailed, TaskSubmitted, open_log
from onward.judgement.budget import ErrorBudget
from tests.conftest import FakeClock


class Decided(msgspec.Struct):
    """The log the tests read, and the decisions in it."""

    db: str
    flaky: str  # the task whose step timed out twice, then succeeded
    broken: str  # the task whose step raised a TypeError
    retries: list[tuple[str, int]]  # (decision id, position), in log order
    give_up: tuple[str, int]
    completed: list[tuple[str, int]]  # the rulebook's word on what follows a completed task


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
    retries: list[tuple[str, int]] = []
    give_up: list[tuple[str, int]] = []
    completed: list[tuple[str, int]] = []
    with open_log(f"sqlite:///{db}", create=False) as log:
        for r in log.read():
            if isinstance(r.event, TaskSubmitted):
                tasks[r.event.name] = r.stream.removeprefix("task-")
            if isinstance(r.event, DecisionMade):
                at = (r.meta.event_id, r.position)
                kinds = {"retry": retries, "give_up": give_up, "task_completed": completed}
                kinds[r.event.kind].append(at)
    assert len(retries) == 2
    assert len(give_up) == 1
    assert len(completed) <= 1  # only the flaky task completes
    return Decided(
        db=str(db),
        flaky=tasks["flaky"],
        broken=tasks["broken"],
        retries=retries,
        give_up=give_up[0],
        completed=completed,
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
    assert [(d.decision_id, d.position) for d in report.decisions] == [
        *decided.retries,
        *decided.completed,
    ]
    status, out, _ = run(capsys, "why", decided.broken, "--db", decided.db)
    assert status == 0
    assert f"1 decision(s) for task {decided.broken}" in out
    assert decided.give_up[0] in out


def test_a_position_takes_the_last_decision_at_or_before_it(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    decisions = sorted([*decided.retries, decided.give_up, *decided.completed], key=lambda d: d[1])
    for (decision_id, at), (_, following) in itertools.pairwise(decisions):
        for position in (at, following - 1):
            report = why_json(capsys, decided.db, f"@{position}")
            assert (report.matched, report.target) == ("position", str(at))
            assert [d.decision_id for d in report.decisions] == [decision_id]
    last = why_json(capsys, decided.db, "@999999")
    assert last.decisions[0].decision_id == decisions[-1][0]
    status, _, err = run(capsys, "why", "@1", "--db", decided.db)
    assert status == 2
    assert "no decision at or before position 1" in err


def test_digits_that_also_start_an_id_are_not_taken_for_a_position(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bare digits were read as a position even where they start a task's id (``why 1002``
    explained a breaker's decision of another task): refused, naming both readings; ``@N``
    is a position. A digit Python's int() refuses (``²``) is no position, not a ValueError."""
    with open_log(decided.db) as log:
        records = list(log.read())
    ids = [r.meta.event_id for r in records if isinstance(r.event, DecisionMade)]
    ids += [r.stream.removeprefix("task-") for r in records if r.stream.startswith("task-")]
    starts = [i[: len(i) - len(i.lstrip("0123456789"))] for i in ids]
    last = max(r.position for r in records)
    # Digits that start an id and could be a position too (past the last position, they
    # cannot: of dozens of hex ids, none starting with a digit has a chance of about 0).
    digits = max(
        (s[:k] for s in starts for k in range(1, len(s) + 1) if int(s[:k]) <= last),
        key=len,
        default="",
    )
    assert digits, ids
    status, _, err = run(capsys, "why", digits, "--db", decided.db)
    assert status == 2
    assert f"{digits!r} is a position and the start of" in err
    assert f"@{digits} for the position" in err
    status, _, err = run(capsys, "why", "²", "--db", decided.db)
    assert status == 2
    assert "no decision, task or position '²'" in err


@pytest.mark.parametrize("quarantined", [False, True], ids=["damaged", "quarantined"])
def test_a_damaged_record_of_another_task_does_not_stop_why(
    decided: Decided, tmp_path: Path, capsys: pytest.CaptureFixture[str], quarantined: bool
) -> None:
    db = tmp_path / "damaged.db"
    db.write_bytes(Path(decided.db).read_bytes())
    with contextlib.closing(sqlite3.connect(db)) as raw, raw:
        raw.execute(
            "UPDATE stored_events SET state = x'00ff00'"
            " WHERE originator_id = ? AND originator_version = 1",
            (f"task-{decided.broken}",),
        )
    if quarantined:
        assert run(capsys, "quarantine", decided.broken, "--db", str(db))[0] == 0
    report = why_json(capsys, str(db), decided.flaky)
    assert [(d.decision_id, d.position) for d in report.decisions] == [
        *decided.retries,
        *decided.completed,
    ]
    assert report.damage == ""  # nothing skipped could belong to the healthy task
    status, out, err = run(capsys, "why", decided.broken, "--db", str(db))
    assert status == 0, err
    assert "note: 1 damaged record(s) skipped that may belong here" in out
    assert f"stream 'task-{decided.broken}'" in out
    assert decided.give_up[0] in out


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


class Judged(msgspec.Struct):
    """A log where an action asked three times: approved, denied, left waiting; and asked once
    more under the thresholds the denial raised."""

    db: str
    approved: str  # decision ids
    denied: str
    waiting: str
    after_denial: str
    raised: dict[str, float]  # the thresholds the denial put in force


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Judged:
    db = tmp_path_factory.mktemp("why-judged") / "onward.db"
    clock = FakeClock()
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.action(name="deploy", impact="high", check=lambda result: result == "live")
        def deploy() -> str:
            return "live"

        @engine.task(name="ship")
        def ship() -> str:
            return str(deploy())

        for _ in range(3):
            engine.submit(ship)
        engine.run()
        approved, denied, waiting = (a.decision_id for a in engine.approvals())
        clock.advance(60)
        engine.approve(approved, by="alice", note="the change window is open")
        clock.advance(60)
        engine.deny(denied, by="bob")
        engine.run()
        engine.submit(ship)
        engine.run()
        after_denial = engine.approvals()[-1].decision_id
        raised = dict(engine.judge.thresholds(engine.refresh()).as_dict())
    assert raised != {"immediate": 0.9, "monitored": 0.7, "reversible": 0.5}
    return Judged(
        db=str(db),
        approved=approved,
        denied=denied,
        waiting=waiting,
        after_denial=after_denial,
        raised=raised,
    )


def test_a_confidence_decision_shows_its_score_and_how_a_person_answered(
    judged: Judged, capsys: pytest.CaptureFixture[str]
) -> None:
    [row] = why_json(capsys, judged.db, judged.approved).decisions
    assert row.confidence is not None
    status, out, err = run(capsys, "why", judged.approved, "--db", judged.db)
    assert status == 0, err
    assert "kind          confidence" in out
    assert "choice        ask deploy" in out
    assert f"rule          {row.rule}\n" in out
    assert "strategy      ask" in out
    assert f"confidence    {row.confidence:.2f}\n" in out
    factors = ", ".join(f"{k}={v:g}" for k, v in row.factors.items())
    assert f"factors       {factors}\n" in out
    assert "thresholds    immediate=0.9, monitored=0.7, reversible=0.5\n" in out
    assert "alternatives  immediate, monitored, reversible" in out
    question = f"run action 'deploy' (impact high, confidence {row.confidence:.2f})?"
    assert f"asked         {question} (at 2023-11-14T22:13:20.000Z, position " in out
    answer = next(line for line in out.splitlines() if line.startswith("  answer"))
    assert answer.startswith("  answer        approved by alice (through ")  # the engine
    assert " at 2023-11-14T22:14:20.000Z (position " in answer  # a minute after it was asked
    assert answer.endswith('): "the change window is open"')
    chain = out[out.index("chain of causes") :]
    assert chain.index("TaskClaimed") < chain.index("TaskSubmitted")


def test_a_confidence_decision_as_json(judged: Judged, capsys: pytest.CaptureFixture[str]) -> None:
    [row] = why_json(capsys, judged.db, judged.approved).decisions
    assert (row.kind, row.strategy, row.rule) == (
        "confidence",
        "ask",
        "action.destructive-high-impact",
    )
    assert row.confidence == pytest.approx(0.39, abs=0.005)
    assert set(row.factors) == {"history", "clarity", "reversibility", "impact", "approvals"}
    assert row.thresholds == {"immediate": 0.9, "monitored": 0.7, "reversible": 0.5}
    assert row.inputs["impact"] == "high"
    assert row.alternatives == ["immediate", "monitored", "reversible"]
    approval = row.approval
    assert approval is not None
    assert (approval.answer, approval.by, approval.note) == (
        "approved",
        "alice",
        "the change window is open",
    )
    assert approval.impact == "high"
    assert approval.requested_at is not None
    assert approval.answered_at is not None
    assert (approval.answered_at - approval.requested_at).total_seconds() == 60
    assert approval.request_position is not None
    assert approval.answer_position is not None
    assert row.position < approval.request_position < approval.answer_position
    assert approval.actor  # the engine that appended the answer
    assert [c.type for c in row.causes] == ["TaskClaimed", "TaskSubmitted"]


def test_a_denial_and_a_request_still_waiting(
    judged: Judged, capsys: pytest.CaptureFixture[str]
) -> None:
    [row] = why_json(capsys, judged.db, judged.denied).decisions
    assert row.approval is not None
    assert (row.approval.answer, row.approval.by, row.approval.note) == ("denied", "bob", "")
    status, out, _ = run(capsys, "why", judged.denied, "--db", judged.db)
    assert status == 0
    answer = next(line for line in out.splitlines() if line.startswith("  answer"))
    assert answer.startswith("  answer        denied by bob (through ")
    assert answer.endswith(", with no note")

    [row] = why_json(capsys, judged.db, judged.waiting).decisions
    assert row.approval is not None
    assert (row.approval.answer, row.approval.answered_at, row.approval.answer_id) == ("", None, "")
    status, out, _ = run(capsys, "why", judged.waiting, "--db", judged.db)
    assert status == 0
    assert f"answer        none yet: `onward approve {judged.waiting}`" in out


def test_a_confidence_decision_shows_the_thresholds_in_force_then(
    judged: Judged, capsys: pytest.CaptureFixture[str]
) -> None:
    [row] = why_json(capsys, judged.db, judged.after_denial).decisions
    assert row.thresholds == judged.raised  # the denial raised them before this decision
    assert row.inputs["denied"] == 1
    status, out, _ = run(capsys, "why", judged.after_denial, "--db", judged.db)
    assert status == 0
    shown = ", ".join(f"{k}={v:g}" for k, v in judged.raised.items())
    assert f"thresholds    {shown}" in out


def test_decisions_without_a_score_say_so(
    decided: Decided, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "why", decided.retries[0][0], "--db", decided.db)
    assert status == 0
    assert "  rule          error." in out  # the rulebook's rule for timeouts
    for name in ("strategy", "confidence", "factors"):
        assert f"  {name.ljust(12)}  -\n" in out
    assert "  thresholds    max_attempts=" in out  # the retry policy's limit in force
    assert "\n  answer " not in out
    assert "\n  asked " not in out
    [row] = why_json(capsys, decided.db, decided.retries[0][0]).decisions
    assert row.approval is None


class Paused(msgspec.Struct):
    """A log whose session the error budget paused."""

    db: str
    decision: str
    position: int
    failed: list[int]  # the positions of the failed tries


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Paused:
    db = tmp_path_factory.mktemp("why-budget") / "onward.db"
    clock = FakeClock()
    with Engine.open(
        f"sqlite:///{db}",
        session="s",
        clock=clock,
        sleep=clock.advance,
        budget=ErrorBudget(limit=2),
    ) as engine:

        @engine.step(name="fetch")
        def fetch() -> str:
            raise TimeoutError("the server did not answer in 5 s")

        @engine.task(name="pull")
        def pull() -> str:
            return str(fetch())

        engine.submit(pull)
        summary = engine.run()
    assert summary.paused
    pauses, failed = [], []
    with open_log(f"sqlite:///{db}", create=False) as log:
        for r in log.read():
            if isinstance(r.event, DecisionMade) and r.event.kind == "budget":
                pauses.append((r.event.choice, r.meta.event_id, r.position))
            if isinstance(r.event, StepFailed):
                failed.append(r.position)
    # Spent while retries were left: transient noise; then the step failed for good after
    # its retries: systemic, and the session paused.
    assert [choice for choice, _, _ in pauses] == ["continue", "pause"]
    _, decision, position = pauses[-1]
    return Paused(
        db=str(db),
        decision=decision,
        position=position,
        failed=[p for p in failed if p < position],
    )


def test_a_budget_decision_shows_its_thresholds_and_verdict(
    paused: Paused, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "why", paused.decision, "--db", paused.db)
    assert status == 0, err
    assert "kind          budget" in out
    assert "choice        pause" in out
    assert "subject       s" in out
    assert f"position      {paused.position} in stream session-s" in out
    assert "rule          budget.systemic" in out
    assert "thresholds    limit=2, window=3600" in out
    assert "alternatives  continue, slow_down" in out
    inputs = out[out.index("inputs (") : out.index("chain of causes")]
    spent = len(paused.failed)
    assert f"reason           {spent} errors of 2 in the last 3600 s" in inputs
    assert f"spent            {spent}\n" in inputs
    assert "remaining        0\n" in inputs
    assert 'systemic         ["v1-' in inputs
    chain = out[out.index("chain of causes") :]
    assert chain.index("StepFailed") < chain.index("TaskClaimed") < chain.index("TaskSubmitted")
    assert f"attempt={spent} error_type=TimeoutError" in chain


def test_a_budget_decision_as_json(paused: Paused, capsys: pytest.CaptureFixture[str]) -> None:
    report = why_json(capsys, paused.db, f"@{paused.position}")
    [row] = report.decisions
    assert (row.decision_id, row.kind, row.choice) == (paused.decision, "budget", "pause")
    assert (row.strategy, row.confidence, row.factors) == (None, None, {})
    assert row.thresholds == {"limit": 2.0, "window": 3600.0}
    assert row.inputs["spent"] == len(paused.failed)
    assert row.inputs["limit"] == 2
    assert row.inputs["remaining"] == 0
    assert len(row.inputs["systemic"]) == 1
    assert row.inputs["reason"].endswith(": pause.")
    assert row.approval is None
    assert row.causes[0].type == "StepFailed"
    assert row.causes[0].position == paused.failed[-1]  # caused by the last failed try
    assert row.causes[-1].type == "TaskSubmitted"
    assert row.chain_end == "root"


def test_a_task_id_of_digits_alone_is_taken_for_the_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random id may be all digits (about 1 in 1,800): whole, or past the log's last position,
    it is no position; it was refused as ambiguous."""
    import onward.runtime.tasks as tasks_module

    digits = bytes.fromhex("5967054290381761")
    monkeypatch.setattr(tasks_module.os, "urandom", lambda n: digits[:n])
    db = tmp_path / "onward.db"
    clock = FakeClock()
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.step()
        def parse() -> None:
            raise TypeError("no")

        @engine.task()
        def broken() -> None:
            parse()

        task_id = engine.submit(broken)
        engine.run()
    monkeypatch.undo()
    assert task_id == "5967054290381761"
    for query in (task_id, task_id[:10]):
        report = why_json(capsys, str(db), query)
        assert (report.matched, report.target) == ("task", task_id)
