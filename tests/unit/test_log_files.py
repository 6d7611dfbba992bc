"""What is at an SQLite log's path: a clear answer for every kind of bad file, nothing changed.

Each bad file is opened through every door (``open_log`` with and without ``create``,
``Engine.open`` and the CLI); each must say what it found, name the path, and leave the
directory exactly as it was: the same names, sizes, modification times and bytes.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from onward import Engine
from onward.cli.main import main
from onward.events import (
    BackendError,
    LogDamaged,
    NotALog,
    OnwardError,
    TaskSubmitted,
    UsageError,
    open_log,
    sqlite_file,
)
from onward.events.sqlite_file import check_log_file


def snapshot(directory: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry of ``directory``: its mode, size, modification time and a digest."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for entry in sorted(directory.iterdir()):
        info = entry.lstat()
        digest = hashlib.sha256(entry.read_bytes()).hexdigest() if entry.is_file() else ""
        found[entry.name] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return found


def a_log(path: Path, events: int = 300) -> bytes:
    """The bytes of a closed onward log of a few hundred events."""
    with open_log(f"sqlite:///{path}") as log:
        for n in range(events):
            log.append(f"task-{n}", [TaskSubmitted(name="x" * 200)], expected_version=0)
    data = path.read_bytes()
    path.unlink()
    return data


def make_directory(path: Path) -> None:
    path.mkdir()


def make_empty(path: Path) -> None:
    path.touch()


def make_text(path: Path) -> None:
    path.write_text("# notes\nthe log lives somewhere else\n")


def make_random(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 40)


def make_foreign(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, total REAL)")
        conn.commit()


def make_foreign_wal(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE orders (id INTEGER, total REAL)")
        conn.commit()


def make_blank_sqlite(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version=7")
        conn.commit()


def make_truncated(path: Path) -> None:
    data = a_log(path)
    path.write_bytes(data[: len(data) // 2])


def make_torn(path: Path) -> None:
    data = a_log(path)
    path.write_bytes(data[: len(data) // 2 + 100])


def make_stub(path: Path) -> None:
    data = a_log(path)
    path.write_bytes(data[:60])


def make_name_not_utf8(path: Path) -> None:
    """A flipped byte in a table's name in the schema (page 1): not UTF-8 any more."""
    data = bytearray(a_log(path))
    at = data.index(b"checkpoints", 0, 4096)
    data[at] = 0x8D
    path.write_bytes(bytes(data))


BAD_FILES: list[tuple[str, Callable[[Path], None], type[OnwardError], str]] = [
    ("directory", make_directory, NotALog, "is a directory"),
    ("empty", make_empty, NotALog, "is an empty file (0 bytes)"),
    ("text", make_text, NotALog, "is a text file"),
    ("random", make_random, NotALog, "is not an SQLite database"),
    ("foreign", make_foreign, NotALog, "without an onward log (its tables: orders)"),
    ("foreign-wal", make_foreign_wal, NotALog, "without an onward log (its tables: orders)"),
    ("blank-sqlite", make_blank_sqlite, NotALog, "without an onward log (it has no tables)"),
    ("truncated", make_truncated, LogDamaged, "damaged SQLite database: truncated ("),
    ("torn", make_torn, LogDamaged, "is not a whole number of 4096-byte pages"),
    ("stub", make_stub, LogDamaged, "damaged SQLite database: truncated to 60 bytes"),
    ("name-not-utf8", make_name_not_utf8, LogDamaged, "damaged SQLite database: 'utf-8' codec"),
]


@pytest.fixture(params=BAD_FILES, ids=[b[0] for b in BAD_FILES])
def bad(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, type[OnwardError], str]:
    _kind, make, error, says = request.param
    path = tmp_path / "work.db"
    make(path)
    return path, error, says


@pytest.mark.parametrize("create", [True, False])
def test_open_log_says_what_it_found_and_changes_nothing(
    bad: tuple[Path, type[OnwardError], str], create: bool
) -> None:
    path, error, says = bad
    before = snapshot(path.parent)
    with pytest.raises(error) as info:
        open_log(f"sqlite:///{path}", create=create)
    assert says in str(info.value)
    assert str(path) in str(info.value)
    assert snapshot(path.parent) == before


def test_engine_open_says_what_it_found_and_changes_nothing(
    bad: tuple[Path, type[OnwardError], str],
) -> None:
    path, error, says = bad
    before = snapshot(path.parent)
    with pytest.raises(error) as info:
        Engine.open(f"sqlite:///{path}", session="s")
    assert says in str(info.value)
    assert str(path) in str(info.value)
    assert snapshot(path.parent) == before


def test_a_bare_path_is_checked_the_same_way(
    bad: tuple[Path, type[OnwardError], str],
) -> None:
    path, error, says = bad
    with pytest.raises(error, match=re.escape(says)):
        open_log(str(path))


@pytest.mark.parametrize("command", [["tasks"], ["sessions"], ["verify"]], ids=lambda c: c[0])
def test_the_cli_says_what_it_found_and_changes_nothing(
    bad: tuple[Path, type[OnwardError], str],
    command: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, error, says = bad
    before = snapshot(path.parent)
    if command == ["verify"] and error is LogDamaged:  # damage found: verify's exit 1
        assert main([*command, "--db", str(path)]) == 1
        out, err = capsys.readouterr()
        assert (out.startswith(f"DAMAGED: {path} "), err) == (True, "")
        assert says in out
    else:
        assert main([*command, "--db", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == ""
        assert f"onward {command[0]}: {path} " in err
        assert says in err
        assert "no log at" not in err
    assert snapshot(path.parent) == before


def make_overwritten(path: Path) -> None:
    """A whole file with one of its b-tree pages overwritten (a bad sector, a stray write)."""
    data = bytearray(a_log(path))
    data[4096 + 8 : 4096 + 16] = b"\xde\xad\xbe\xef" * 2
    path.write_bytes(bytes(data))


def test_a_malformed_database_is_log_damaged_from_every_door(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its header and size are right: SQLite finds the damage when it reads the pages."""
    path = tmp_path / "work.db"
    make_overwritten(path)
    with pytest.raises(LogDamaged, match="the database is damaged"):
        Engine.open(f"sqlite:///{path}", session="s")
    with open_log(f"sqlite:///{path}", create=False) as log, pytest.raises(LogDamaged):
        list(log.read())
    assert main(["verify", "--db", str(path)]) == 1
    assert capsys.readouterr().out.startswith("DAMAGED: ")
    # --json keeps the report's shape (a monitor reads `problems` exactly when it is damaged)
    assert main(["verify", "--db", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report.keys() >= {"ok", "events", "problems", "torn_tail", "head_record", "damaged"}
    assert report["ok"] is False
    (problem,) = report["problems"]
    assert problem["kind"] == "storage"
    assert "malformed" in problem["detail"]
    assert "malformed" in report["damaged"]
    assert main(["tasks", "--db", str(path)]) == 2
    assert "the database is damaged (database disk image is malformed)" in capsys.readouterr().err


def test_a_not_a_log_error_names_what_it_found(tmp_path: Path) -> None:
    make_text(tmp_path / "notes.db")
    with pytest.raises(NotALog) as info:
        open_log(str(tmp_path / "notes.db"))
    assert info.value.found == "a text file"
    assert info.value.path == str(tmp_path / "notes.db")
    assert isinstance(info.value, ValueError)


def test_a_missing_file_is_still_log_not_found_for_read_only_tools(tmp_path: Path) -> None:
    assert main(["tasks", "--db", str(tmp_path / "missing.db")]) == 2
    assert list(tmp_path.iterdir()) == []


# -- new logs ------------------------------------------------------------------------------


def test_a_new_log_is_whole_at_once_with_mode_0600_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    with open_log(f"sqlite:///{path}") as log:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        log.append("task-1", [TaskSubmitted(name="t")], expected_version=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db"]
    with open_log(f"sqlite:///{path}", create=False) as log:
        assert log.head() == 1


def test_processes_creating_one_log_at_once_share_it(tmp_path: Path) -> None:
    path = tmp_path / "raced.db"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_and_append(n: int) -> None:
        try:
            start.wait()
            with open_log(f"sqlite:///{path}") as log:
                log.append(f"task-{n}", [TaskSubmitted(name="t")], expected_version=0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_append, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_log(f"sqlite:///{path}", create=False) as log:
        assert sorted(log.streams()) == sorted(f"task-{n}" for n in range(8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raced.db"]


# -- permissions ---------------------------------------------------------------------------


def test_a_log_others_may_read_gets_a_warning_and_keeps_its_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.db"
    with open_log(f"sqlite:///{path}") as log:
        log.append("task-1", [TaskSubmitted(name="t")], expected_version=0)
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="onward.events"), open_log(str(path)) as log:
        assert log.head() == 1
    (record,) = [r for r in caplog.records if "mode" in r.getMessage()]
    assert f"{path} has mode 0644" in record.getMessage()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_wal_and_shm_of_an_open_log_are_checked_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "shared.db"
    with open_log(f"sqlite:///{path}") as writer:
        writer.append("task-1", [TaskSubmitted(name="t")], expected_version=0)
        for suffix in ("", "-wal", "-shm"):
            os.chmod(f"{path}{suffix}", 0o660)
        with caplog.at_level(logging.WARNING, logger="onward.events"), open_log(str(path)):
            pass
    warned = sorted(r.getMessage().split(" has mode")[0] for r in caplog.records)
    assert warned == [str(path), f"{path}-shm", f"{path}-wal"]


def test_a_log_file_with_two_hard_links_gets_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two writers that open one file by two paths (a hard link) keep two write-ahead
    journals and damage the log: opening it says so, naming the file; one path alone does
    not."""
    path = tmp_path / "work.db"
    with open_log(str(path)) as log:
        log.append("task-1", [TaskSubmitted(name="t")], expected_version=0)
    with caplog.at_level(logging.WARNING, logger="onward.events"), open_log(str(path)):
        pass
    assert not [r for r in caplog.records if "hard links" in r.getMessage()]
    os.link(path, tmp_path / "other.db")
    with caplog.at_level(logging.WARNING, logger="onward.events"), open_log(str(path)) as log:
        assert log.head() == 1
    (record,) = [r for r in caplog.records if "hard links" in r.getMessage()]
    assert record.getMessage().startswith(f"{path} has 2 hard links: open the log by one path")


def test_a_private_log_gets_no_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "private.db"
    with open_log(f"sqlite:///{path}") as log:
        log.append("task-1", [TaskSubmitted(name="t")], expected_version=0)
    with caplog.at_level(logging.WARNING, logger="onward.events"), open_log(str(path)):
        pass
    assert [r for r in caplog.records if "mode" in r.getMessage()] == []


def test_a_log_in_a_folder_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    """SQLite writes beside a log (its -wal and -shm) even to read it: a log on a read-only
    place failed with "unable to open database file" alone. The error says why. (The folder
    is made immutable: root, as the tests run here, writes through any mode bits.)"""
    folder = tmp_path / "backup"
    folder.mkdir()
    a_log_file = folder / "work.db"
    a_log_file.write_bytes(a_log(tmp_path / "source.db"))
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    try:
        with pytest.raises(BackendError, match=f"its folder {folder} is not writable"):
            open_log(f"sqlite:///{a_log_file}", create=False)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


# -- a log file this process holds open ------------------------------------------------------


def holds(path: Path) -> int:
    """How many logs (and watches) of this process hold the file open."""
    info = path.stat()
    return sqlite_file._HOLDS.count.get((info.st_dev, info.st_ino), 0)


def test_a_log_holds_its_file_while_any_of_its_connections_is_open(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    first = open_log(f"sqlite:///{path}")
    second = open_log(f"sqlite:///{path}")
    watch = first.watch()
    assert holds(path) == 3
    assert check_log_file(str(path))  # answered without a descriptor of its own
    second.close()
    second.close()  # again: released once
    assert holds(path) == 2
    first.close()
    assert holds(path) == 1  # the watch's connection is still open
    watch.close()
    watch.close()
    assert holds(path) == 0
    with pytest.raises(UsageError):
        open_log(f"sqlite:///{path}", payload_limit=-1)
    assert holds(path) == 0  # an open that failed lets go of it
    dropped = open_log(f"sqlite:///{path}")
    assert holds(path) == 1
    del dropped  # never closed: collected
    gc.collect()
    assert holds(path) == 0


def test_a_forked_child_is_refused_the_log_its_parent_holds(tmp_path: Path) -> None:
    """SQLite's lock bookkeeping is copied by fork(): a child's connections believed they held
    locks they never took, and the parent's close deleted the journal the child wrote to (its
    committed appends lost, verify ok). The child gets a clear error instead."""
    path = tmp_path / "forked.db"
    with open_log(f"sqlite:///{path}") as log:
        log.append("task-parent", [TaskSubmitted(name="x")], expected_version=0)
        pid = os.fork()
        if pid == 0:  # the child: exit status 0 only when both doors refuse
            refused = 0
            try:
                open_log(f"sqlite:///{path}")
            except UsageError as exc:
                refused += "fork" in str(exc)
            try:
                log.append("task-child", [TaskSubmitted(name="y")], expected_version=0)
            except UsageError as exc:
                refused += "fork" in str(exc)
            os._exit(0 if refused == 2 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        log.append("task-after", [TaskSubmitted(name="z")], expected_version=0)
    with open_log(f"sqlite:///{path}") as log:
        assert sorted(r.stream for r in log.read()) == ["task-after", "task-parent"]
        assert log.verify().ok


def test_a_closed_log_opens_no_connection_again(tmp_path: Path) -> None:
    """An append that passed the open check as another thread closed the log reconnected:
    it landed after close() returned, on a connection nobody closed. A read racing the close
    met the pool's own error."""
    path = tmp_path / "closed.db"
    log = open_log(f"sqlite:///{path}")
    writer = log._writer  # type: ignore[attr-defined]
    log.close()
    with pytest.raises(UsageError, match="is closed"):
        writer.insert_events([])
    reading = open_log(f"sqlite:///{path}")
    reading._datastore.pool.close()  # type: ignore[attr-defined]  # as close() does meanwhile
    with pytest.raises(UsageError, match="is closed"):
        reading.read_stream("task-x")
    reading.close()


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "a-file"])
def test_a_path_that_ends_in_a_slash_names_a_directory_and_creates_nothing(
    tmp_path: Path, exists: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sqlite:///logs/`` names a directory: it made a log file named ``logs`` (or opened
    the file of that name), where the system would refuse to open ``logs/`` as a file."""
    if exists:
        a_log(tmp_path / "logs")
    before = snapshot(tmp_path)
    named = f"{tmp_path / 'logs'}/"
    for door in (
        lambda: open_log(f"sqlite:///{named}"),
        lambda: Engine.open(f"sqlite:///{named}", session="s"),
        lambda: open_log(named),
    ):
        with pytest.raises(NotALog, match=r"ends in '/'.*name a file in it") as info:
            door()
        assert info.value.path == named
    for command in (["tasks"], ["init"], ["simulate", "--hours", "0.01"]):
        assert main([*command, "--db", named]) == 2
        assert "ends in '/'" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
