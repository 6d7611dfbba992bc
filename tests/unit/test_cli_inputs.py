"""The command line's inputs: the log from ONWARD_DB, JSON as JSON has it, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onward import Engine
from onward.cli.main import main


def test_commands_read_the_log_from_onward_db_when_no_db_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with Engine.open(url, session="nightly") as engine:

        @engine.task()
        def crawl(n: int) -> int:
            return n

        task_id = engine.submit(crawl, 1)
    monkeypatch.chdir(tmp_path)  # no onward.db here
    monkeypatch.setenv("ONWARD_DB", url)
    assert main(["tasks"]) == 0
    assert task_id[:12] in capsys.readouterr().out
    # --db still wins.
    assert main(["tasks", "--db", str(tmp_path / "other.db")]) == 2
    assert "no log at" in capsys.readouterr().err


def _listener(url: str) -> str:
    """A task on a new log at ``url`` that waits for a message on topic "go"; its id."""
    with Engine.open(url, session="s") as engine:

        @engine.task()
        def listen() -> object:
            return engine.recv("go")

        task_id = engine.submit(listen)
        engine.run()
    return task_id


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "[-Infinity]", "1e999", "[1, NaN]", "1" * 5000, f"[-{'9' * 4301}]"]
)
def test_send_refuses_what_json_has_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    task_id = _listener(url)
    assert main(["send", task_id, "go", value, "--db", url]) == 2
    err = capsys.readouterr().err
    assert "must be JSON" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["send", task_id, "go", "1e300", "--db", url]) == 0  # a float holds it


def test_fork_refuses_an_integer_too_long_to_read_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    task_id = _listener(url)
    args = ["fork", task_id, "--from-step", "0", "--args", f"[{'1' * 5000}]", "--db", url]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "an integer of 5,000 digits is longer than 4,300" in err
    assert len(err.strip().splitlines()) == 1


def test_a_postgresql_log_that_cannot_be_opened_is_said_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tasks", "--db", "postgresql://nobody@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the PostgreSQL log" in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_command_with_a_log_of_its_own_does_not_take_onward_db(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onward.cli.main import build_parser

    monkeypatch.setenv("ONWARD_DB", "sqlite:///production.db")
    parser = build_parser()
    assert parser.parse_args(["tasks"]).db == "sqlite:///production.db"
    assert parser.parse_args(["demo"]).db == "onward-demo.db"  # never the user's log


def test_an_error_echoing_the_users_input_shows_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A libpq keyword DSN is no URL: read as a path, and named as missing.
    assert main(["tasks", "--db", "host=db password=pa55w0rdZq9 dbname=work"]) == 2
    err = capsys.readouterr().err
    assert "no log at" in err
    assert "pa55w0rdZq9" not in err
    url = f"sqlite:///{tmp_path / 'work.db'}"
    task_id = _listener(url)
    assert main(["send", task_id, "go", '{"password": "Hunter2Xy7"', "--db", url]) == 2
    err = capsys.readouterr().err
    assert "must be JSON" in err
    assert "Hunter2Xy7" not in err


def test_an_argument_error_echoes_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["tasks", "--state", "password=hunter2xyz"])
    err = capsys.readouterr().err
    assert "invalid choice" in err
    assert "hunter2xyz" not in err


@pytest.mark.parametrize("given", [["--db", ""], ["--db", " "], ["--session", ""], ["ONWARD_DB="]])
def test_a_worker_given_an_empty_log_or_session_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    given: list[str],
) -> None:
    # `--db "$DB"` with DB unset served a new ./onward.db, session "default", for good.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ONWARD_DB", raising=False)
    if given == ["ONWARD_DB="]:
        monkeypatch.setenv("ONWARD_DB", "")
        given = []
    assert main(["worker", "no_such_module:engine", *given]) == 2
    err = capsys.readouterr().err
    assert "must be a non-empty string" in err or "ONWARD_DB is set but empty" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_worker_accounts_for_every_run() -> None:
    from onward.cli.worker import stop_line
    from onward.runtime.scheduler import RunSummary

    # A run whose lease a peer took was in none of the counts the line gave.
    line = stop_line(RunSummary(runs=6, succeeded=1, waiting=2, cancelled=1, missed=1, released=1))
    assert line == (
        "stopped: 6 runs, 1 succeeded, 0 failed, 2 waiting, 1 cancelled or taken by a peer, "
        "1 missed their deadline, 1 handed back, 0 taken over"
    )
    assert stop_line(RunSummary(runs=1, succeeded=1)) == (
        "stopped: 1 runs, 1 succeeded, 0 failed, 0 handed back, 0 taken over"
    )


def test_send_reads_a_message_too_long_for_a_command_line_from_stdin(tmp_path: Path) -> None:
    """A command-line argument holds at most 128 KiB on Linux: a longer message could only be
    sent from Python."""
    url = f"sqlite:///{tmp_path / 'work.db'}"
    task_id = _listener(url)
    message = {"diff": "x" * 300_000, "lines": list(range(1000))}
    command = [sys.executable, "-m", "onward", "send", task_id, "go", "-", "--db", url]
    sent = subprocess.run(
        command, input=json.dumps(message).encode(), capture_output=True, check=False
    )
    assert sent.returncode == 0, sent.stderr
    bad = subprocess.run(command, input=b"\xff\xfe{}", capture_output=True, check=False)
    assert bad.returncode == 2
    assert b"not UTF-8" in bad.stderr
    with Engine.open(url, session="s") as engine:

        @engine.task()
        def listen() -> object:
            return engine.recv("go")

        engine.run()
        assert engine.result(task_id) == message
