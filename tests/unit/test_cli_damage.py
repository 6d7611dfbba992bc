"""Every command that reads a damaged SQLite log says so in one line, with what to do: rebuild
the index where the records still read whole, restore the backup where they do not, and run
``onward verify`` (``damage_told``, shared by the commands)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from onward.cli import main
from onward.events import open_log
from tests.unit.test_report import (
    copy_log,
    damage_a_records_page,
    damage_the_stream_index,
    record_session,
)


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("damage") / "night.db"
    record_session(f"sqlite:///{path}")
    return path


def a_task(path: Path) -> str:
    """The id of a task of the log."""
    with open_log(f"sqlite:///{path}", create=False) as log:
        return next(r.stream for r in log.read() if r.stream.startswith("task-"))[len("task-") :]


def said_in_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """What the command said on the standard error: one line, exit status 2."""
    assert main(args) == 2
    said = capsys.readouterr()
    (line,) = said.err.splitlines()
    return line


#: The read commands, {task} for a task's id, {out} for a file to write.
READS = [
    ["sessions"],
    ["tasks"],
    ["tasks", "--session", "night"],
    ["show", "{task}"],
    ["errors"],
    ["why", "{task}"],
    ["export", "-o", "{out}"],
    ["replay", "--to", "100000"],
    ["breakers"],
    ["approvals"],
    ["to-test", "{task}"],
    ["get", "{task}", "key"],
    ["report", "--json"],
]


def typed(command: list[str], task: str, out: Path) -> list[str]:
    """The command as it is typed."""
    return [word.format(task=task, out=out) for word in command]


@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_damaged_records_page_is_told_with_the_backup_and_verify(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """The records themselves no longer all read: every read command says so in one line,
    and points to the log's backup and to ``onward verify``, not to REINDEX."""
    path = tmp_path / "damaged.db"
    copy_log(night, path)
    task = a_task(path)
    damage_the_stream_index(path)
    damage_a_records_page(path)
    line = said_in_one_line([*typed(command, task, tmp_path / "out"), "--db", str(path)], capsys)
    assert "database is damaged" in line
    assert "backup" in line
    assert f"onward verify --db {path}" in line
    assert "REINDEX" not in line


#: The commands that read a task's stream by its index.
BY_STREAM = [
    ["show", "{task}"],
    ["to-test", "{task}"],
    ["get", "{task}", "key"],
    ["report", "-o", "{out}"],
]


@pytest.mark.parametrize("command", BY_STREAM, ids=" ".join)
def test_a_damaged_index_is_told_with_its_rebuild_and_verify(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Only the index of the streams is damaged: the line says the records read whole, how
    to rebuild the index from them (a dump into a new file where REINDEX fails too), and
    points to ``onward verify``."""
    path = tmp_path / "damaged.db"
    copy_log(night, path)
    task = a_task(path)
    damage_the_stream_index(path)
    line = said_in_one_line([*typed(command, task, tmp_path / "out"), "--db", str(path)], capsys)
    assert "database is damaged" in line
    assert "records read whole" in line
    assert "REINDEX" in line
    assert ".dump" in line
    assert f"onward verify --db {path}" in line


def test_verify_on_malformed_index_pages_advises_what_rebuilds_them(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The index's pages no longer read: REINDEX fails on them too, so verify's advice does
    not stop at it, and the dump into a new file that it names gives a log that verifies."""
    path = tmp_path / "damaged.db"
    copy_log(night, path)
    damage_the_stream_index(path)
    assert main(["verify", "--db", str(path)]) == 1
    (where, *_details) = capsys.readouterr().out.splitlines()
    assert where.startswith("DAMAGED: ")
    assert "REINDEX" in where
    assert "malformed" in where
    assert ".dump | sqlite3 NEW.db" in where
    assert "backup" in where
    with contextlib.closing(sqlite3.connect(path)) as raw, pytest.raises(sqlite3.DatabaseError):
        raw.execute("REINDEX")
    if shutil.which("sqlite3") is None:
        return
    rebuilt = tmp_path / "NEW.db"
    dump = subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, check=True)
    subprocess.run(["sqlite3", str(rebuilt)], input=dump.stdout, check=True)
    rebuilt.chmod(0o600)
    assert main(["verify", "--db", str(rebuilt)]) == 0


def truncate_the_file(path: Path) -> None:
    """Cut the file short, in the middle of its pages: it no longer opens as a log."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


#: Damage whose records no longer all read: a page of them overwritten, the file cut short.
LOST_RECORDS = {"records page": damage_a_records_page, "truncated file": truncate_the_file}


@pytest.mark.parametrize("damage", LOST_RECORDS.values(), ids=LOST_RECORDS.keys())
def test_verify_advises_the_backup_where_the_records_no_longer_read(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object
) -> None:
    """verify met a database whose records do not all read: it said that alone, with no
    advice; it now says what the other commands say of that damage (the backup), and its
    JSON report holds that advice too."""
    path = tmp_path / "damaged.db"
    copy_log(night, path)
    assert callable(damage)
    damage(path)
    told = said_in_one_line(["tasks", "--db", str(path)], capsys)
    advice = told.removeprefix("onward tasks: ").removesuffix(
        f"; `onward verify --db {path}` says more"
    )
    assert "restore the log from its backup" in advice
    assert main(["verify", "--db", str(path)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line == f"DAMAGED: {advice}"
    assert main(["verify", "--db", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["ok"]
    assert advice == f"{report['damaged']}; {report['advice']}"
