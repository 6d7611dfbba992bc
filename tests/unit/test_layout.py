"""One import root: onward takes no generic top-level name from the applications that use it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]

#: An application whose own folder holds modules named like onward's repository folders.
APPLICATION = {
    "events.py": """
        from dataclasses import dataclass

        @dataclass
        class Strategy:  # the name a clash would have shadowed
            name: str
        """,
    "engine.py": """
        def horsepower() -> int:
            return 300
        """,
    "projections.py": """
        def forecast() -> str:
            return "sunny"
        """,
    "app.py": """
        import engine
        import events
        import projections
        from onward import Engine
        from onward.events import Strategy as OnwardStrategy

        work = Engine.open("sqlite:///app.db", session="app")

        @work.step()
        def measure() -> int:
            return engine.horsepower()

        @work.task()
        def report() -> str:
            return f"{measure()} {projections.forecast()} {events.Strategy('mine').name}"

        task_id = work.submit(report)
        work.run()
        print(work.result(task_id), OnwardStrategy.ASK.value, sep="|")
        print(engine.__file__, events.__file__, sep="|")
        work.close()
        """,
}


def test_an_application_with_its_own_events_engine_and_projections_uses_onward(
    tmp_path: Path,
) -> None:
    for name, source in APPLICATION.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    result, ask = first.split("|")
    engine_file, events_file = second.split("|")
    assert (result, ask) == ("300 sunny mine", "ask")
    assert Path(engine_file) == tmp_path / "engine.py"
    assert Path(events_file) == tmp_path / "events.py"


def test_python_dash_m_onward_is_the_command_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "onward", "diagram", "task"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("---\ntask lifecycle\n---\nstateDiagram-v2")


def test_the_wheel_installs_only_onward_at_the_top_level(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("onward-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"onward"}
    for module in ("events", "projections", "runtime", "healing", "judgement", "cli", "demo"):
        assert f"onward/{module}/__init__.py" in names, module
    assert "onward/py.typed" in names
    # Every module of the three folders is in the wheel, under onward (a sub-package missing
    # from pyproject's list installs as nothing, while an editable install still finds it).
    expected = {
        f"onward/{prefix}{path.relative_to(ROOT / folder).as_posix()}"
        for folder, prefix in (
            ("engine", ""),
            ("events", "events/"),
            ("projections", "projections/"),
        )
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected - set(names) == set()
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(entry_points).decode()
    assert "onward = onward.cli:main" in text
    assert "demo = onward.demo.command:register_command" in text
