"""``onward demo``: the real thing as a subprocess (with its SIGKILL), and its parts in process."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from onward import Engine, ErrorBudget, StepCall
from onward.cli.main import main
from onward.demo.command import (
    DEFAULT_SEED,
    FileError,
    FileFacts,
    FileOutcome,
    Shape,
    add_arguments,
    build_plan,
    parse_file,
    parse_source,
    read_file,
    register,
    run_demo,
    summarise,
)
from onward.demo.healing import Healing, healing
from onward.demo.index import (
    DEPENDENCY,
    FAULT_RATES,
    REPAIR_TASKS,
    QuotaExceeded,
    UseBackupIndex,
    fault_for,
    plan_outage,
)
from onward.demo.plan import Plan
from onward.demo.publish import SurveyTotals, totals_path
from onward.demo.tasks import BACKUP_STEP, submit, teach
from onward.demo.watch import Watch
from onward.demo.worker import (
    BREAKERS,
    BUDGET,
    RESUME_REASON,
    RETRIES,
    RETRY_BUDGET,
    YES_BY,
    run_survey,
    spawn_worker,
    wait_for,
)
from onward.events import (
    ActionChecked,
    ApprovalGranted,
    ApprovalRequested,
    BreakerHalfOpened,
    ComponentFailed,
    ComponentRestored,
    DecisionMade,
    Recorded,
    SessionResumed,
    StepCompleted,
    StepFailed,
    TaskClaimed,
    TaskLeaseExpired,
    TaskSubmitted,
    WorkaroundApplied,
    open_log,
)
from onward.projections import CatchUp

ONWARD = str(Path(sys.executable).parent / "onward")


def demo(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONWARD, "demo", *argv], capture_output=True, text=True, check=False, timeout=300
    )


def test_demo_crashes_resumes_and_leaves_a_clean_log(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    done = demo("--limit", "60", "--db", str(db))
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert "killed with SIGKILL at position" in out
    assert "KILLED the worker" in done.stderr
    assert "resuming: a new worker" in done.stderr
    assert "1 task recovered" in out
    assert "re-run (at most one per task in flight)" in out
    assert "from restart to the first resumed step" in out
    assert "verify       ok:" in out
    for command in ("sessions", "tasks", "show", "replay --to", "verify"):
        assert f" {command} " in out
    assert f"--db {db}" in out
    # The output ends with a link to the session's page, and how to write it again.
    page = tmp_path / "x-demo-report.html"
    tail = out.rstrip().splitlines()[-2:]
    assert tail[0] == f"  file://{page}"
    assert tail[1].endswith(f"report --db {db} --session demo -o x-demo-report.html)")
    assert page.read_text().startswith("<!doctype html>")

    with open_log(f"sqlite:///{db}") as log:
        assert log.verify().ok
        projections = CatchUp(log, checkpoint_every=0).open()
        session = projections.sessions.sessions["demo"]
        assert session.openings == 2  # started, then resumed after the kill
        tasks = list(projections.tasks.tasks.values())
        assert tasks
        assert all(t.state == "succeeded" for t in tasks)
        # The one in flight: its lease expired (the worker was dead) and it was claimed again.
        expired = [
            t
            for t in tasks
            for r in log.read_stream(f"task-{t.task_id}")
            if isinstance(r.event, TaskLeaseExpired)
        ]
        assert len(expired) == 1
        assert expired[0].attempt >= 2
        files = 0
        for task in tasks:
            # Each step's outcome once: completed, or failed for good (the failed tries that a
            # fix or a retry followed are not outcomes).
            outcomes: Counter[int] = Counter()
            completed: Counter[int] = Counter()
            for r in log.read_stream(f"task-{task.task_id}"):
                event = r.event
                if isinstance(event, StepCompleted) or (
                    isinstance(event, StepFailed) and event.final
                ):
                    outcomes[event.index] += 1
                    files += event.name == "read"
                if isinstance(event, StepCompleted):
                    completed[event.index] += 1
            assert all(n == 1 for n in completed.values()), task.task_id
            assert all(n == 1 for n in outcomes.values()), task.task_id
            assert sorted(outcomes) == list(range(len(outcomes)))  # no gaps either
        assert files == 60
        records = list(log.read())
    degraded_then_restored(records, "demo")
    budget_decided(records, "demo")
    granted = approved_by_another_process(records, "demo")
    assert granted.by.startswith("onward-cli:")  # `onward approve`, run by the parent
    assert "ASKED: publish the survey's totals" in done.stderr
    assert "APPROVED from a second process" in done.stderr
    # The report ends with `onward why` on the approval's decision.
    why = out[out.index("why did the engine ask?") :]
    assert f"decision {granted.decision_id}" in why
    assert "kind          confidence" in why
    assert "rule          action.destructive-high-impact" in why
    assert "answer        approved by onward-cli:" in why
    assert "chain of causes" in why
    assert Path(totals_path(str(db))).exists()


def session_records(records: list[Recorded], session: str) -> list[Recorded]:
    return [r for r in records if r.meta.session == session]


def degraded_then_restored(records: list[Recorded], session: str) -> None:
    """The index service was reported down, the backup index stood in, and its health check
    restored it at a task boundary."""
    mine = session_records(records, session)
    failed = [r for r in mine if isinstance(r.event, ComponentFailed)]
    applied = [r for r in mine if isinstance(r.event, WorkaroundApplied)]
    restored = [r for r in mine if isinstance(r.event, ComponentRestored)]
    assert failed
    assert applied
    assert restored
    assert {r.event.component for r in failed} == {"index-service"}
    assert applied[0].event.workaround == "backup-index"
    assert applied[0].event.level.value == "minor"
    assert failed[0].position < applied[0].position < restored[0].position
    assert restored[0].stream == f"session-{session}"  # at a task boundary
    assert restored[-1].event.level.value == "full"
    assert len(restored) == len(applied)
    filed = [r for r in mine if isinstance(r.event, StepCompleted) and r.event.name == BACKUP_STEP]
    assert filed  # the task that reported it down filed with the backup index, at least
    assert all(applied[0].position < r.position < restored[-1].position for r in filed)


def budget_decided(
    records: list[Recorded], session: str, budget: ErrorBudget = BUDGET
) -> list[DecisionMade]:
    """The error budget recorded at least one decision, in the session's stream."""
    mine = session_records(records, session)
    failed = sum(isinstance(r.event, StepFailed) for r in mine)
    assert failed >= budget.limit  # enough failed tries for the budget to speak
    decisions = [
        r.event for r in mine if isinstance(r.event, DecisionMade) and r.event.kind == "budget"
    ]
    assert decisions
    assert all(d.choice in ("continue", "slow_down", "pause") for d in decisions)
    assert all(d.inputs["limit"] == budget.limit for d in decisions)
    return decisions


def approved_by_another_process(records: list[Recorded], session: str) -> ApprovalGranted:
    """The publish task asked (forced by the rule on a high-impact publish), a process other
    than the worker approved, and the action then ran and its check held."""
    mine = session_records(records, session)
    (asked,) = [r for r in mine if isinstance(r.event, ApprovalRequested)]
    decision = next(r.event for r in mine if r.meta.event_id == asked.event.decision_id)
    assert isinstance(decision, DecisionMade)
    assert (decision.kind, decision.rule) == ("confidence", "action.destructive-high-impact")
    assert decision.strategy is not None
    assert decision.strategy.value == "ask"
    (answer,) = [r for r in mine if isinstance(r.event, ApprovalGranted)]
    workers = {r.event.worker for r in mine if isinstance(r.event, TaskClaimed)}
    assert asked.meta.actor in workers
    assert answer.meta.actor not in workers  # appended by another process
    assert answer.event.by
    assert answer.event.by not in workers
    (checked,) = [r for r in mine if isinstance(r.event, ActionChecked)]
    assert checked.event.passed
    assert checked.position > answer.position
    return answer.event


def test_demo_without_a_crash_as_json(tmp_path: Path) -> None:
    db = tmp_path / "quiet.db"
    done = demo("--limit", "12", "--db", str(db), "--no-crash", "--json", "--workers", "2")
    assert done.returncode == 0, done.stderr
    report = msgspec.json.decode(done.stdout)
    assert report["crash"] is None
    assert report["files"] == 12
    assert report["tasks"] == report["tasks_succeeded"] > 0
    assert report["tasks_unfinished"] == 0
    assert report["verify"]["ok"] is True
    assert report["step_executions"] == report["steps"]  # nothing ran twice
    assert report["commands"][0].endswith(f"sessions --db {db}")
    assert "KILLED" not in done.stderr
    page = Path(report["page"])
    assert page.name == "quiet-demo-report.html"
    assert '<section id="timeline">' in page.read_text()
    approval = report["approval"]
    assert (approval["answer"], approval["task_state"], approval["checked"]) == (
        "approved",
        "succeeded",
        True,
    )
    assert approval["actor"] != approval["asked_by"]
    assert approval["answered_from"]["status"] == 0
    why = report["why"]
    assert why["decision_id"] == approval["decision_id"]
    (decision,) = why["report"]["decisions"]  # the `onward why --json` object
    assert (decision["kind"], decision["strategy"]) == ("confidence", "ask")
    assert decision["approval"]["answer"] == "approved"
    assert decision["causes"][-1]["type"] == "TaskSubmitted"
    degradation = report["degradation"]
    assert degradation["restorations"] == degradation["failures"]  # back to full at the end
    assert degradation["level"] == "full"
    published = msgspec.json.decode(Path(approval["published"]).read_bytes(), type=SurveyTotals)
    assert (published.files, published.tasks) == (12, report["tasks"])


def test_demo_refuses_to_replace_a_file_that_is_not_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious.db"
    precious.write_text("not a log")
    assert main(["demo", "--db", str(precious), "--limit", "5"]) == 2
    assert "is not a demo log; pass --yes to replace it" in capsys.readouterr().err
    assert precious.read_text() == "not a log"


@pytest.mark.parametrize("where", ["", "-wal"])
@pytest.mark.parametrize("yes", [[], ["--yes"]], ids=["asked", "yes"])
def test_demo_never_replaces_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, yes: list[str]
) -> None:
    """A directory at the log's path (or at its WAL file's) is refused, --yes or not, and
    nothing in it is removed."""
    folder = tmp_path / f"work.db{where}"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert main(["demo", "--db", str(tmp_path / "work.db"), "--limit", "5", *yes]) == 2
    err = capsys.readouterr().err
    assert f"onward demo: {folder} is a directory, not a log file" in err
    assert (folder / "keep.txt").read_text() == "mine"


def test_demo_needs_an_existing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--db", str(tmp_path / "nope" / "x.db")]) == 2
    assert "no directory" in capsys.readouterr().err


# -- healing: a second run on the same log, and the seed ------------------------------------


def error_counts(report: dict[str, Any]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for line in report["healing"]["signatures"]:
        counts[line["error_type"]] += line["errors"]
    return dict(counts)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    db = tmp_path_factory.mktemp("again") / "learning.db"
    done = demo("--limit", "80", "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    report: dict[str, Any] = msgspec.json.decode(done.stdout)
    return db, report


def test_first_run_meets_real_and_injected_errors_and_learns(
    first_run: tuple[Path, dict[str, Any]],
) -> None:
    _, report = first_run
    assert (report["session"], report["run"], report["seed"]) == ("demo", 1, DEFAULT_SEED)
    assert report["tasks_unfinished"] == 0
    assert report["verify"]["ok"] is True
    h = report["healing"]
    counts = error_counts(report)
    assert counts["onward.demo.index.IndexUnavailable"] == 5  # the outage: 5 in a row
    assert h["fixes"]
    assert all(f["successes"] == f["attempts"] for f in h["fixes"])
    assert h["retries"] >= 5
    assert h["first_sight"] is None  # nothing to know on a new log
    (breaker,) = h["breakers"]
    assert breaker["dependency"] == "index-service"
    states = [m["state"] for m in breaker["moves"]]
    assert states[:2] == ["open", "half_open"]
    assert states[-1] == "closed"
    assert breaker["held"] > 0  # tasks waited for the half-open moment
    quota = "onward.demo.index.QuotaExceeded"
    given_up = sum(s["given_up"] for s in h["signatures"] if s["error_type"] == quota)
    assert given_up == counts.get(quota, 0) == report["indexed"].get("", 0)
    if given_up:
        (lesson,) = h["learned"]
        assert (lesson["error_type"], lesson["fix"]) == (quota, "use-backup-index")
        (command,) = report["learned_commands"]
        assert command.endswith(
            f"learn {lesson['signature']} use-backup-index --custom --db {report['db']}"
        )
    commands = " ".join(report["commands"])
    for command in ("errors", "breakers", "show", "approvals", "why"):
        assert f" {command} " in commands
    degradation = report["degradation"]
    assert degradation["failures"] >= 1
    assert [m["level"] for m in degradation["moves"]][:2] == ["minor", "full"]
    assert degradation["workarounds"] == {"backup-index": degradation["failures"]}
    assert 1 <= degradation["filed"] <= report["indexed"]["backup"]
    budget = report["budget"]
    assert (budget["limit"], budget["window"]) == (BUDGET.limit, BUDGET.window)
    assert budget["decisions"]
    approval = report["approval"]
    assert (approval["answer"], approval["rule"]) == ("approved", "action.destructive-high-impact")
    assert approval["by"].startswith("onward-cli:")


# The errors the index service raises; the others (a file's) do not depend on it.
INDEX_ERRORS = {
    "IndexUnavailable",
    "IndexBusy",
    "QuotaExceeded",
    "TimeoutError",
    "ConnectionResetError",
}


def first_index_answers(db: Path) -> dict[str, str]:
    """Each survey's first answer from the running index service, by label: the error type
    its first call that the outage did not refuse met ("" for none)."""
    labels: dict[str, str] = {}
    answers: dict[str, str] = {}
    for r in open_log(str(db)).read():
        event = r.event
        if isinstance(event, TaskSubmitted) and event.name == "survey":
            labels[r.stream] = event.args[0]
        elif isinstance(event, StepCompleted | StepFailed) and event.dependency == DEPENDENCY:
            error = event.error_type.rpartition(".")[2] if isinstance(event, StepFailed) else ""
            if error != "IndexUnavailable":
                answers.setdefault(labels[r.stream], error)
    return answers


def test_the_same_seed_meets_the_same_errors(
    first_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    # Each task's own faults are drawn from the seed and its label; which tasks call while
    # the outage lasts (and so file with the backup index instead) depends on how soon the
    # retries come due, which is the wall clock's (the module's docstring says so).
    db, first = first_run
    twin_db = tmp_path / "twin.db"
    done = demo("--limit", "80", "--db", str(twin_db), "--json")
    assert done.returncode == 0, done.stderr
    twin = msgspec.json.decode(done.stdout)
    assert twin["crash"] is not None  # killed and resumed at another moment, same errors
    assert {k: v for k, v in error_counts(twin).items() if k not in INDEX_ERRORS} == {
        k: v for k, v in error_counts(first).items() if k not in INDEX_ERRORS
    }
    assert sum(twin["indexed"].values()) == sum(first["indexed"].values())
    ours, theirs = first_index_answers(db), first_index_answers(twin_db)
    both = ours.keys() & theirs.keys()
    assert len(both) >= len(ours) // 2
    assert {label: ours[label] for label in both} == {label: theirs[label] for label in both}
    assert any(ours[label] for label in both)  # some met a fault of their own


def test_a_second_run_fixes_on_first_sight_what_the_first_fixed(
    first_run: tuple[Path, dict[str, Any]],
) -> None:
    db, first = first_run
    done = demo("--limit", "80", "--db", str(db))
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert "run 2 on this log: session 'demo-2'" in out
    assert "run 2 on this log: what earlier runs learned applies" in done.stderr
    found = re.search(
        r"fixed on first sight: (\d+) of (\d+) errors? whose signature was fixed before", out
    )
    assert found is not None, out
    fixed, errors = int(found[1]), int(found[2])
    assert errors > 0
    assert fixed == errors
    assert "verify       ok:" in out
    if first["healing"]["learned"]:
        assert "-> use-backup-index, in an earlier run (session 'demo')" in out
        assert "; 0 given up" in out  # every task's totals filed, some with the backup index
    # The engine is surer of the action now (it ran, its check held, a person approved it),
    # but the rule still asks before anything is published.
    asked = re.search(r"publish-totals \(impact high\) asked at [\d.]+ s: confidence ([\d.]+)", out)
    assert asked is not None, out
    assert float(asked[1]) > first["approval"]["confidence"]
    with open_log(f"sqlite:///{db}") as log:
        assert log.verify().ok
        sessions = CatchUp(log, checkpoint_every=0).open().sessions.sessions
        assert sorted(sessions) == ["demo", "demo-2"]


def test_fresh_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    for _ in range(2):
        done = demo("--limit", "8", "--db", str(db), "--no-crash", "--json", "--yes")
        assert done.returncode == 0, done.stderr
    report = msgspec.json.decode(done.stdout)
    assert report["session"] == "demo-2"
    # --yes: the worker approved the publication itself, at once.
    approval = report["approval"]
    assert approval["by"].startswith(YES_BY)
    assert approval["actor"] == approval["asked_by"]
    assert approval["answered_from"] is None
    assert approval["task_state"] == "succeeded"
    assert "ASKED" not in done.stderr
    parser = argparse.ArgumentParser()
    parser.add_argument("--db")
    add_arguments(parser)
    args = parser.parse_args(["--db", str(db), "--fresh", "--seed", "3"])
    assert (args.fresh, args.seed) == (True, 3)
    assert run_demo(db=str(db), limit=8, crash=False, fresh=True, seed=3, out=None) == 0
    with open_log(f"sqlite:///{db}") as log:
        assert [s for s in log.streams() if s.startswith("session-")] == ["session-demo"]


# -- healing in process: a fake clock, no sleeping --------------------------------------------


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def survey_tree(root: Path) -> Plan:
    """12 packages of small files, and files real code bases hold: latin-1, Python 2, tabs and
    spaces mixed, code in Markdown fences."""
    for i in range(12):
        for j in range(3):
            path = root / f"pkg{i:02d}" / f"m{j}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"import os\n\ndef f{j}():\n    return {i}\n")
    (root / "pkg00" / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = '\xe9t\xe9'\n")
    (root / "pkg01" / "old.py").write_bytes(b"print 'python 2'\n")
    (root / "pkg02" / "tabs.py").write_bytes(b"if True:\n\tx = 1\n        y = 2\n")
    (root / "pkg03" / "fenced.py").write_text("Here it is:\n```python\ndef g():\n    pass\n```\n")
    return build_plan(None, roots=[("lib", str(root))])


class SessionRun(NamedTuple):
    healing: Healing
    watch: Watch
    records: list[Recorded]
    degraded: set[str]  # the tasks that filed with the backup index while it was down


def run_session(
    db: Path,
    plan: Plan,
    session: str,
    start: float,
    seed: int,
    *,
    publish: bool = False,
    budget: ErrorBudget = BUDGET,
) -> SessionRun:
    """A worker's session in process, on a fake clock: the survey, and with ``publish`` the
    last task, approved by the worker itself (``--yes``)."""
    clock = FakeClock(start)
    with Engine.open(
        f"sqlite:///{db}",
        session=session,
        clock=clock,
        sleep=clock.sleep,
        retries=RETRIES,
        retry_budget=RETRY_BUDGET,
        breakers=BREAKERS,
        budget=budget,
        seed=seed,
    ) as engine:
        target = totals_path(str(db)) if publish else None
        service = register(engine, seed=seed, publish_to=target)
        if publish:
            submit(engine, plan)
        else:
            for unit in plan.units:
                engine.submit("survey", unit.label, unit.root, unit.files, key=unit.label)
        service.outage = plan_outage(len(plan.units))
        summary = run_survey(engine, yes=True)
        assert summary.succeeded == len(plan.units) + publish
        teach(engine)
    with open_log(f"sqlite:///{db}") as log:
        watch = Watch(log, session)
        watch.update()
        assert log.verify().ok
        records = list(log.read())
    degraded = {
        r.event.result["label"]
        for r in session_records(records, session)
        if isinstance(r.event, StepCompleted) and r.event.name == BACKUP_STEP
    }
    return SessionRun(healing(watch.healing, watch.projections), watch, records, degraded)


def counts(h: Healing) -> dict[str, int]:
    found: Counter[str] = Counter()
    for line in h.signatures:
        found[line.error_type] += line.errors
    return dict(found)


def test_healing_in_process_is_deterministic_and_learns_across_sessions(tmp_path: Path) -> None:
    plan = survey_tree(tmp_path / "lib")
    seed = 3
    run = run_session(tmp_path / "a.db", plan, "demo", 1_700_000_000.0, seed)
    twin = run_session(tmp_path / "b.db", plan, "demo", 1_700_000_000.0, seed)
    first = run.healing
    assert counts(first) == counts(twin.healing)
    assert run.degraded == twin.degraded
    # The tasks filed with the backup index during the outage never called the primary one.
    faults = Counter(
        fault_for(seed, u.label).kind for u in plan.units if u.label not in run.degraded
    )
    expected = {
        "UnicodeDecodeError": 1,
        "SyntaxError": 2,  # Python 2, and the fenced code
        "TabError": 1,
        "onward.demo.index.IndexUnavailable": 5,
        "TimeoutError": faults["timeout"],
        "ConnectionResetError": faults["reset"],
        "onward.demo.index.IndexBusy": faults["busy"],
        "onward.demo.index.QuotaExceeded": faults["quota"],
    }
    assert counts(first) == {k: n for k, n in expected.items() if n}
    fixed = {fix for line in first.signatures for fix in line.fixes}
    assert {
        "decode-with-detected-encoding",
        "normalise-indentation",
        "strip-markdown-fences",
    } <= fixed
    assert first.healed_files == 3  # the Python 2 file stays an error
    assert [m.state for m in first.breakers[0].moves][-1] == "closed"
    assert first.first_sight is None
    assert len(first.learned) == (1 if faults["quota"] else 0)

    again = run_session(tmp_path / "a.db", plan, "demo-2", 1_700_010_000.0, seed)
    second = again.healing
    assert again.degraded == run.degraded  # the same outage, in a new session
    assert second.first_sight is not None
    assert second.first_sight.errors > 0
    assert second.first_sight.fixed == second.first_sight.errors
    assert counts(second) == counts(first)
    if faults["quota"]:
        (quota,) = [s for s in second.signatures if s.error_type.endswith("QuotaExceeded")]
        assert quota.fixes == {"use-backup-index": faults["quota"]}
        assert quota.known


def test_the_outage_degrades_and_the_health_check_restores_in_process(tmp_path: Path) -> None:
    plan = survey_tree(tmp_path / "lib")
    tight = ErrorBudget(limit=5, window=30.0, slow_down=0.05, rising=3.0)
    run = run_session(
        tmp_path / "o.db", plan, "demo", 1_700_000_000.0, 3, publish=True, budget=tight
    )
    degraded_then_restored(run.records, "demo")
    # On a fake clock the repair (REPAIR_TASKS tasks) ends the outage long before the
    # breaker's cool-down: the health check restores the service, then the trial call closes
    # the breaker.
    assert len(run.degraded) == REPAIR_TASKS
    positions = {
        type(r.event).__name__: r.position
        for r in reversed(run.records)
        if isinstance(r.event, ComponentRestored | BreakerHalfOpened)
    }
    assert positions["ComponentRestored"] < positions["BreakerHalfOpened"]
    story = run.watch.degradation.story()
    assert [m.level for m in story.moves] == ["minor", "full"]
    assert (story.failures, story.filed, story.restorations) == (1, REPAIR_TASKS, 1)
    assert story.workarounds == {"backup-index": 1}
    assert story.quality_loss == 0.1
    # The errors came at once (on a fake clock, no time passed in the session): no trend,
    # and none recurred after its remedies: spent on transient noise, and recorded so.
    decisions = budget_decided(run.records, "demo", tight)
    assert (decisions[0].choice, decisions[0].rule) == ("continue", "budget.transient-noise")
    budget = run.watch.budget.story(tight)
    assert [d.rule for d in budget.decisions] == [d.rule for d in decisions]
    # --yes: the worker approved the publication itself, and published.
    request = run.watch.approval.request
    assert request is not None
    approval = run.watch.approval.story(run.watch.task_state(request.subject), None)
    assert approval is not None
    assert approval.by.startswith(YES_BY)
    assert approval.actor == approval.asked_by
    assert (approval.answer, approval.checked, approval.task_state) == (
        "approved",
        True,
        "succeeded",
    )
    published = msgspec.json.decode(Path(approval.published).read_bytes(), type=SurveyTotals)
    assert published.tasks == len(plan.units)
    assert published.indexed["backup"] >= REPAIR_TASKS


def test_a_paused_session_is_resumed_as_a_person_would(tmp_path: Path) -> None:
    from onward.demo.worker import MAX_RESUMES, run_survey
    from onward.healing.retry import RetryPolicies, RetryPolicy

    clock = FakeClock(1_700_000_000.0)
    # A budget of 1, and a step whose error its retries never cure: systemic, so it pauses.
    with Engine.open(
        f"sqlite:///{tmp_path / 'p.db'}",
        session="demo",
        clock=clock,
        sleep=clock.sleep,
        retries=RetryPolicies(RetryPolicy(max_attempts=2, base=0.1)),
        budget=ErrorBudget(limit=1, window=30.0, slow_down=0.05),
    ) as engine:

        @engine.step()
        def file_totals(n: int) -> None:
            raise TimeoutError("the index service did not answer")

        @engine.task()
        def survey(n: int) -> None:
            file_totals(n)

        for n in range(2 * MAX_RESUMES):
            engine.submit(survey, n)
        summary = run_survey(engine, yes=True)
        records = list(engine.log.read())
    decisions = [
        r.event for r in records if isinstance(r.event, DecisionMade) and r.event.kind == "budget"
    ]
    paused = [d for d in decisions if d.choice == "pause"]
    assert paused
    assert all(d.rule == "budget.systemic" for d in paused)
    resumed = [r.event for r in records if isinstance(r.event, SessionResumed)]
    assert [e.reason for e in resumed] == [RESUME_REASON] * len(resumed)
    assert 1 <= len(resumed) <= MAX_RESUMES + 1
    assert summary.failed >= 1  # the worker went on after each pause


def test_a_crash_while_the_approval_waits_leaves_it_waiting(tmp_path: Path) -> None:
    plan = survey_tree(tmp_path / "lib")
    db = tmp_path / "wait.db"
    journal = str(tmp_path / "steps.journal")
    child = spawn_worker(str(db), 1, journal, plan=plan, hold=None)
    try:
        assert wait_for(child, "ready") is not None
        with open_log(f"sqlite:///{db}") as log:
            watch = Watch(log, "demo")
            deadline = time.monotonic() + 120
            while (decision_id := watch.approval.waiting()) is None:
                assert child.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.1)
                watch.update()
        os.kill(child.pid, signal.SIGKILL)  # while the worker waits for the answer
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    listed = subprocess.run(
        [ONWARD, "approvals", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (request,) = json.loads(listed.stdout)["approvals"]  # still waiting, for any process
    assert request["decision_id"] == decision_id
    child = spawn_worker(str(db), 1, journal, plan=None, hold=None)  # resumes the session
    try:
        assert wait_for(child, "ready") is not None
        approved = subprocess.run(
            [ONWARD, "approve", decision_id, "--db", str(db), "--by", "a test"],
            check=False,
            capture_output=True,
            text=True,
        )
        assert approved.returncode == 0, approved.stderr
        assert wait_for(child, "done") is not None
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stdout is not None
        child.stdout.close()
    with open_log(f"sqlite:///{db}") as log:
        records = list(log.read())
    assert approved_by_another_process(records, "demo").by == "a test"
    published = msgspec.json.decode(Path(totals_path(str(db))).read_bytes(), type=SurveyTotals)
    assert published.tasks == len(plan.units)


def test_faults_come_from_the_seed_and_the_task() -> None:
    labels = [f"lib/pkg{i}" for i in range(2000)]
    drawn = [fault_for(7, label) for label in labels]
    assert drawn == [fault_for(7, label) for label in labels]
    assert drawn != [fault_for(8, label) for label in labels]
    kinds = Counter(f.kind for f in drawn)
    for kind, rate in FAULT_RATES:
        assert abs(kinds[kind] / len(labels) - rate) < 0.02, kind
    assert all(f.latency > 1.0 for f in drawn if f.kind == "timeout")
    assert plan_outage(9) is None
    assert plan_outage(10) is not None


def test_use_backup_index_applies_only_where_learned() -> None:
    fix = UseBackupIndex()
    call = StepCall(step="summarise", arguments={"label": "x", "index": "primary"})
    error = QuotaExceeded("quota exceeded")
    assert not fix.matches(error, call)
    remedy = fix.apply(error, call)
    assert remedy is not None
    assert remedy.call.arguments == {"label": "x", "index": "backup"}
    assert remedy.change == {"index": ["primary", "backup"]}
    assert fix.apply(error, remedy.call) is None  # already on the backup


# -- the parts ---------------------------------------------------------------------------------


def test_read_file(tmp_path: Path) -> None:
    good = tmp_path / "good.py"
    good.write_bytes(b"import os\n\ndef f():\n    return 1")
    facts = read_file(str(good))
    assert (facts.size, facts.lines) == (32, 4)
    assert len(facts.sha256) == 64
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# -*- coding: latin-1 -*-\nname = '\xe9'\n")
    with pytest.raises(UnicodeDecodeError):
        read_file(str(latin))
    assert read_file(str(latin), "cp1252").encoding == "cp1252"  # what the fix changes


def test_parse_source_takes_the_text() -> None:
    assert parse_source("import a\nclass K: ...\n", "k.py") == Shape(0, 1, 1)
    with pytest.raises(TabError):
        parse_source("if True:\n\tx = 1\n        y = 2\n", "tabs.py")


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (b"print 'python 2'\n", SyntaxError),
        (b"x = 1\x00\n", (SyntaxError, ValueError)),  # ValueError before Python 3.11.4
        (b"a" + b".b" * 100_000 + b"\n", RecursionError),
    ],
    ids=["syntax", "null-byte", "deep"],
)
def test_parse_file_raises_what_real_files_raise(
    tmp_path: Path, source: bytes, error: type[Exception] | tuple[type[Exception], ...]
) -> None:
    bad = tmp_path / "bad.py"
    bad.write_bytes(source)
    with pytest.raises(error):
        parse_file(str(bad))


def test_parse_file_counts_nested_definitions(tmp_path: Path) -> None:
    source = tmp_path / "shape.py"
    source.write_text(
        "import a\nfrom b import c\n"
        "class K:\n    def m(self):\n        import d\n        async def inner(): ...\n"
        "if a:\n    def f(): ...\nelse:\n    class L: ...\n"
        "try:\n    import e\nexcept ImportError:\n    def g(): ...\nfinally:\n    pass\n"
        "match a:\n    case 1:\n        def h(): ...\n"
        "x = lambda: 0\n"
    )
    assert parse_file(str(source)) == Shape(functions=5, classes=2, imports=4)


def test_summarise() -> None:
    error = FileError(path="b.py", step="parse", kind="SyntaxError", message="bad")
    totals = summarise(
        "stdlib/x",
        [
            FileOutcome("a.py", FileFacts(10, 2, "0" * 64), Shape(1, 2, 3)),
            FileOutcome("b.py", FileFacts(5, 1, "1" * 64), error=error),
            FileOutcome("c.py", error=FileError("c.py", "read", "UnicodeDecodeError", "no")),
        ],
    )
    assert (totals.files, totals.parsed, totals.bytes, totals.lines) == (3, 1, 15, 3)
    assert (totals.functions, totals.classes, totals.imports) == (1, 2, 3)
    assert [e.kind for e in totals.errors] == ["SyntaxError", "UnicodeDecodeError"]


def make_tree(root: Path, files: list[str]) -> None:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")


def test_build_plan_groups_by_package_and_splits_big_ones(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    make_tree(
        lib,
        ["os.py", "re.py", "notes.txt", "email/__init__.py", "email/parser.py"]
        + [f"big/m{i}.py" for i in range(5)]
        + [f"big/sub/s{i}.py" for i in range(3)]
        + ["big/sub/deeper/d.py", "__pycache__/os.cpython-311.py", "site-packages/p.py"],
    )
    site = tmp_path / "site"
    make_tree(site, ["six.py", "pkg/a.py"])
    plan = build_plan(None, roots=[("stdlib", str(lib)), ("site", str(site))], max_files=4)
    assert plan.found == plan.selected == 15
    groups = {u.label: u.files for u in plan.units}
    assert list(groups) == [
        "stdlib/*.py",
        "stdlib/big/*.py (1 of 2)",
        "stdlib/big/*.py (2 of 2)",
        "stdlib/big/sub",
        "stdlib/email",
        "site/*.py",
        "site/pkg",
    ]
    assert groups["stdlib/*.py"] == ["os.py", "re.py"]
    assert groups["stdlib/big/sub"] == [
        "big/sub/deeper/d.py", "big/sub/s0.py", "big/sub/s1.py", "big/sub/s2.py",
    ]  # fmt: skip
    assert sum(len(f) for f in groups.values()) == 15
    assert {u.root for u in plan.units} == {str(lib), str(site)}
    assert plan.roots == [("stdlib", str(lib), 13), ("site", str(site), 2)]


def test_build_plan_limit_spreads_over_every_root(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    make_tree(lib, [f"p{i}/m{j}.py" for i in range(10) for j in range(10)])
    site = tmp_path / "site"
    make_tree(site, [f"q{i}.py" for i in range(100)])
    plan = build_plan(20, roots=[("stdlib", str(lib)), ("site", str(site))])
    assert (plan.found, plan.selected) == (200, 20)
    assert [n for _, _, n in plan.roots] == [10, 10]
    assert len([u for u in plan.units if u.label.startswith("stdlib/p")]) == 10
