"""``onward demo``: the real thing as a subprocess (with its SIGKILL), and its parts in process."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import Engine, StepCall
from engine.cli import main
from engine.demo import (
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
from engine.survey_healing import Healing, healing
from engine.survey_index import (
    FAULT_RATES,
    QuotaExceeded,
    UseBackupIndex,
    fault_for,
    plan_outage,
)
from engine.survey_plan import Plan
from engine.survey_watch import Watch
from engine.survey_worker import BREAKERS, RETRIES, RETRY_BUDGET, teach
from events import StepCompleted, StepFailed, TaskLeaseExpired, open_log
from projections import CatchUp

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


def test_demo_refuses_to_replace_a_file_that_is_not_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious.db"
    precious.write_text("not a log")
    assert main(["demo", "--db", str(precious), "--limit", "5"]) == 2
    assert "is not a demo log; pass --yes to replace it" in capsys.readouterr().err
    assert precious.read_text() == "not a log"


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
    assert counts["engine.survey_index.IndexUnavailable"] == 5  # the outage: 5 in a row
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
    quota = "engine.survey_index.QuotaExceeded"
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
    for command in ("errors", "breakers", "show"):
        assert f" {command} " in commands


def test_the_same_seed_meets_the_same_errors(
    first_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, first = first_run
    done = demo("--limit", "80", "--db", str(tmp_path / "twin.db"), "--json")
    assert done.returncode == 0, done.stderr
    twin = msgspec.json.decode(done.stdout)
    assert twin["crash"] is not None  # killed and resumed at another moment, same errors
    assert error_counts(twin) == error_counts(first)
    assert twin["indexed"] == first["indexed"]


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
    with open_log(f"sqlite:///{db}") as log:
        assert log.verify().ok
        sessions = CatchUp(log, checkpoint_every=0).open().sessions.sessions
        assert sorted(sessions) == ["demo", "demo-2"]


def test_fresh_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    for _ in range(2):
        done = demo("--limit", "8", "--db", str(db), "--no-crash", "--json")
        assert done.returncode == 0, done.stderr
    assert msgspec.json.decode(done.stdout)["session"] == "demo-2"
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


def run_session(db: Path, plan: Plan, session: str, start: float, seed: int) -> Healing:
    clock = FakeClock(start)
    with Engine.open(
        f"sqlite:///{db}",
        session=session,
        clock=clock,
        sleep=clock.sleep,
        retries=RETRIES,
        retry_budget=RETRY_BUDGET,
        breakers=BREAKERS,
        seed=seed,
    ) as engine:
        service = register(engine, seed=seed)
        for unit in plan.units:
            engine.submit("survey", unit.label, unit.root, unit.files, key=unit.label)
        service.outage = plan_outage(len(engine.tasks()))
        summary = engine.run()
        assert summary.succeeded == len(plan.units)
        teach(engine)
    with open_log(f"sqlite:///{db}") as log:
        watch = Watch(log, session)
        watch.update()
        assert log.verify().ok
        return healing(watch.healing, watch.projections)


def counts(h: Healing) -> dict[str, int]:
    found: Counter[str] = Counter()
    for line in h.signatures:
        found[line.error_type] += line.errors
    return dict(found)


def test_healing_in_process_is_deterministic_and_learns_across_sessions(tmp_path: Path) -> None:
    plan = survey_tree(tmp_path / "lib")
    seed = 3
    faults = Counter(fault_for(seed, u.label).kind for u in plan.units)
    first = run_session(tmp_path / "a.db", plan, "demo", 1_700_000_000.0, seed)
    twin = run_session(tmp_path / "b.db", plan, "demo", 1_700_000_000.0, seed)
    assert counts(first) == counts(twin)
    expected = {
        "UnicodeDecodeError": 1,
        "SyntaxError": 2,  # Python 2, and the fenced code
        "TabError": 1,
        "engine.survey_index.IndexUnavailable": 5,
        "TimeoutError": faults["timeout"],
        "ConnectionResetError": faults["reset"],
        "engine.survey_index.IndexBusy": faults["busy"],
        "engine.survey_index.QuotaExceeded": faults["quota"],
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

    second = run_session(tmp_path / "a.db", plan, "demo-2", 1_700_010_000.0, seed)
    assert second.first_sight is not None
    assert second.first_sight.errors > 0
    assert second.first_sight.fixed == second.first_sight.errors
    assert counts(second) == counts(first)
    if faults["quota"]:
        (quota,) = [s for s in second.signatures if s.error_type.endswith("QuotaExceeded")]
        assert quota.fixes == {"use-backup-index": faults["quota"]}
        assert quota.known


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
