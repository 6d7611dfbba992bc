"""``MODULE:ENGINE`` targets, as ``onward worker`` and ``onward.testing`` load them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from onward import Engine
from onward.events import UsageError
from onward.runtime.target import load_engine, load_registry


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module in the current directory with an engine, a factory and something else."""
    name = f"target_app_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        "from onward import Engine\n"
        "engine = Engine.open('memory://', session='s')\n"
        "def make():\n"
        "    return engine\n"
        "def make_from_settings():\n"
        "    import os\n"
        "    return Engine.open(os.environ['TARGET_APP_DB'], session='s')\n"
        "number = 3\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_an_engine_or_a_function_returning_one_is_loaded(app: str) -> None:
    engine = load_engine(f"{app}:engine")
    assert isinstance(engine, Engine)
    assert load_engine(f"{app}:make") is engine


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        (":number", "is an int, not an onward Engine"),
        (":missing", "has no 'missing'"),
        ("", "expected MODULE:ENGINE"),
    ],
)
def test_a_target_that_is_not_an_engine_is_refused_clearly(
    app: str, suffix: str, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        load_engine(f"{app}{suffix}")


def test_a_module_that_does_not_import_is_named() -> None:
    with pytest.raises(UsageError, match="cannot import 'no_such_module_here'"):
        load_engine("no_such_module_here:engine")


def test_a_module_that_fails_as_it_runs_is_named_with_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_app_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text("settings = {}\ntoken = settings['token']\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        load_engine(f"{name}:engine")
    assert f"importing {name!r} failed: KeyError: 'token'" in str(info.value)
    assert f"{name}.py, line 2" in str(info.value)


def test_a_module_whose_engine_fails_to_open_keeps_the_engines_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onward.events import LogNotFound

    name = f"closed_app_{abs(hash(tmp_path)) % 10**8}"
    missing = tmp_path / "missing.db"
    (tmp_path / f"{name}.py").write_text(
        "from onward import Engine\n"
        f"engine = Engine.open('sqlite:///{missing}', session='s', create=False)\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LogNotFound):
        load_engine(f"{name}:engine")


def test_a_factory_that_fails_is_named_with_where_in_the_users_code(app: str) -> None:
    """A function target that raises (a missing setting) is a one-line error naming the line
    of the application that failed, not of the standard library it called."""
    with pytest.raises(
        UsageError, match=rf"calling {app}:make_from_settings\(\) failed: KeyError"
    ) as e:
        load_engine(f"{app}:make_from_settings")
    assert f"{app}.py, line 7)" in str(e.value)


def test_a_function_that_needs_arguments_is_refused_clearly() -> None:
    with pytest.raises(UsageError, match=r"calling json:loads\(\) failed: TypeError"):
        load_engine("json:loads")


def test_a_secret_in_the_failure_of_a_target_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"leaky_app_{abs(hash(tmp_path)) % 10**8}"
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    (tmp_path / f"{name}.py").write_text(
        f"def make():\n    raise RuntimeError('bad token {token}')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match="REDACTED") as refused:
        load_engine(f"{name}:make")
    assert token not in str(refused.value)


@pytest.fixture
def tasks_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module whose engine (on an SQLite file) has a task and a step that take no
    arguments, each leaving a mark when its body runs; its engine is closed at the end."""
    name = f"tasks_app_{abs(hash(tmp_path)) % 10**8}"
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / f"{name}.py").write_text(
        "from pathlib import Path\n"
        "from onward import Engine\n"
        f"engine = Engine.open('sqlite:///{tmp_path / 'app.db'}', session='s')\n"
        f"MARKS = Path({str(marks)!r})\n"
        "@engine.step()\n"
        "def purge() -> str:\n"
        "    (MARKS / 'step').touch()\n"
        "    return 'purged'\n"
        "@engine.task(name='nightly.triage')\n"
        "def triage() -> None:\n"
        "    (MARKS / 'task').touch()\n"
        "    purge()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marks
    module = sys.modules.pop(name, None)
    if module is not None:
        module.engine.close()


@pytest.mark.parametrize(
    ("attribute", "what"), [("triage", "task 'nightly.triage'"), ("purge", "step 'purge'")]
)
def test_a_task_or_step_named_as_the_target_is_refused_without_running_it(
    tasks_app: tuple[str, Path], attribute: str, what: str
) -> None:
    """``onward worker jobs:triage`` (the task, not the engine) is refused before its body
    runs: a task or a step is no factory of an engine, and its effects outside the log are
    not to be done by a mistyped target."""
    app, marks = tasks_app
    with pytest.raises(UsageError) as refused:
        load_engine(f"{app}:{attribute}")
    assert f"{app}:{attribute} is the {what} of {app}:engine, not an onward Engine" in str(
        refused.value
    )
    assert list(marks.iterdir()) == []  # neither body ran


def test_registrations_are_read_without_opening_any_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module whose engine opens a log that is not there, with a file's options: its
    registrations are read, no file is created, and engines opened afterwards open their
    log as before."""
    name = f"registry_app_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        "from onward import Engine\n"
        "engine = Engine.open('sqlite:///absent.db', session='s', create=False,\n"
        "                     synchronous='normal', busy_timeout=1.0)\n"
        "@engine.task()\n"
        "def scale(n: int) -> int:\n"
        "    return n * 10\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_registry(f"{name}:engine").knows("scale")
    assert not (tmp_path / "absent.db").exists()
    with Engine.open("sqlite:///present.db", session="s") as engine:
        assert engine.log.url.startswith("sqlite:")
    assert (tmp_path / "present.db").exists()
    monkeypatch.delitem(sys.modules, name)
