"""``onward demo``: the real thing as a subprocess (with its SIGKILL), and its parts in process."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from engine.cli import main
from engine.demo import (
    FileError,
    FileFacts,
    FileOutcome,
    Shape,
    build_plan,
    parse_file,
    read_file,
    summarise,
)
from events import StepCompleted, StepFailed, open_log
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
        assert any(t.attempt == 2 for t in tasks)  # the one in flight, claimed again
        files = 0
        for task in tasks:
            outcomes: Counter[int] = Counter()
            completed: Counter[int] = Counter()
            for r in log.read_stream(f"task-{task.task_id}"):
                if isinstance(r.event, StepCompleted | StepFailed):
                    outcomes[r.event.index] += 1
                if isinstance(r.event, StepCompleted):
                    completed[r.event.index] += 1
                    files += r.event.name == "read"
                elif isinstance(r.event, StepFailed):
                    files += r.event.name == "read"
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
