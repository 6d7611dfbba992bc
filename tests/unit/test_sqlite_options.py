"""The SQLite backend's settings: file mode, durability, journal, busy timeout, and bad URLs."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.cli.main import main
from onward.events import (
    BackendError,
    EventLog,
    InvalidURL,
    NotALog,
    OnwardError,
    TaskSubmitted,
    UsageError,
    open_log,
)
from onward.events.sqlite import SQLiteLog


def pragma(log: EventLog, name: str) -> Any:
    assert isinstance(log, SQLiteLog)
    ((value,),) = log._query(f"PRAGMA {name}", ())
    return value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away, so that a file's mode is what its creator asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- the file ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("open_umask")
def test_database_and_its_wal_are_created_with_mode_0600(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with open_log(f"sqlite:///{db}") as log:
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        assert mode(db) == 0o600
        wal = db.with_name("log.db-wal")
        shm = db.with_name("log.db-shm")
        assert wal.exists()
        assert mode(wal) == 0o600
        if shm.exists():
            assert mode(shm) == 0o600
    assert mode(db) == 0o600


@pytest.mark.usefixtures("open_umask")
def test_a_bare_path_is_an_sqlite_file_with_mode_0600(tmp_path: Path) -> None:
    db = tmp_path / "bare.db"
    with open_log(str(db)) as log:
        assert isinstance(log, SQLiteLog)
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
    assert mode(db) == 0o600


def test_relative_and_percent_encoded_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_log("sqlite:///relative.db") as log:
        assert isinstance(log, SQLiteLog)
        assert log.path == str(tmp_path / "relative.db")
    with open_log("sqlite:///with%20space%23and%3Fmarks.db") as log:
        assert isinstance(log, SQLiteLog)
    assert (tmp_path / "relative.db").exists()
    assert (tmp_path / "with space#and?marks.db").exists()


@pytest.mark.parametrize("name", ["run#3.db", "what?.db", "x%41.db", "a b.db"])
def test_a_bare_path_is_taken_literally(tmp_path: Path, name: str) -> None:
    """A file path is not a URL: '#', '?' and '%' in it name the file, they are not syntax."""
    db = tmp_path / name
    with open_log(str(db)) as log:
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm"))) == [
        name
    ]


def test_an_existing_log_is_reopened(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with open_log(f"sqlite:///{db}") as log:
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
    with open_log(f"sqlite:///{db}") as log:
        assert log.stream_version("task-1") == 1
        assert log.verify().ok


# -- durability and concurrency settings ------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "options", "level"),
    [
        ("", {}, 2),
        ("?synchronous=full", {}, 2),
        ("?synchronous=normal", {}, 1),
        ("?synchronous=NORMAL", {}, 1),
        ("?synchronous=extra", {}, 3),
        ("", {"synchronous": "normal"}, 1),
    ],
)
def test_synchronous(tmp_path: Path, query: str, options: dict[str, Any], level: int) -> None:
    with open_log(f"sqlite:///{tmp_path / 'log.db'}{query}", **options) as log:
        assert pragma(log, "synchronous") == level
        # Every connection the log opens gets it, the writer's included.
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        assert pragma(log, "synchronous") == level
        assert log.read_stream("task-1")


def test_journal_mode_is_wal(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    with open_log(f"sqlite:///{db}") as log:
        assert pragma(log, "journal_mode") == "wal"
    with closing(sqlite3.connect(db)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_reads_compile_their_statements_once(tmp_path: Path) -> None:
    # SQLite asks the authorizer about a statement as it compiles it, not as it runs it: a
    # read whose statements were kept prepared asks nothing.
    with open_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        assert isinstance(log, SQLiteLog)
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        assert log.read_stream("task-1")
        compiled: list[tuple[Any, ...]] = []

        def authorize(*action: Any) -> int:
            compiled.append(action)
            return sqlite3.SQLITE_OK

        pool = log._datastore.pool
        connection = pool.get_connection(is_writer=False)
        connection._sqlite_conn.set_authorizer(authorize)
        pool.put_connection(connection)
        log.read_stream("task-1")  # a new authorizer has every statement compiled again
        compiled.clear()
        for _ in range(3):
            assert len(log.read_stream("task-1")) == 1
        assert compiled == []


def test_a_read_runs_its_select_alone(tmp_path: Path) -> None:
    # One SELECT reads one snapshot by itself: no BEGIN and ROLLBACK around it (a history's
    # read before each claim, a page of each catch-up).
    with open_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        assert isinstance(log, SQLiteLog)
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        assert log.read_stream("task-1")
        ran: list[str] = []
        pool = log._datastore.pool
        connection = pool.get_connection(is_writer=False)
        connection._sqlite_conn.set_trace_callback(ran.append)
        pool.put_connection(connection)
        assert len(log.read_stream("task-1")) == 1
        assert [statement.split()[0] for statement in ran] == ["SELECT"]
        connection._sqlite_conn.set_trace_callback(None)


@pytest.mark.parametrize(
    ("query", "milliseconds"),
    [
        ("", 30_000),
        ("?busy_timeout=5", 5_000),
        ("?busy_timeout=2.5", 2_500),
        ("?busy_timeout=2147483.647", 2**31 - 1),  # the longest SQLite takes
    ],
)
def test_busy_timeout(tmp_path: Path, query: str, milliseconds: int) -> None:
    with open_log(f"sqlite:///{tmp_path / 'log.db'}{query}") as log:
        assert pragma(log, "busy_timeout") == milliseconds


def test_options_in_the_url_and_in_keywords_together(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}?synchronous=normal&busy_timeout=7"
    with open_log(url) as log:
        assert (pragma(log, "synchronous"), pragma(log, "busy_timeout")) == (1, 7_000)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?synchronous=bogus", ["synchronous", "bogus"]),
        ("?synchronous=off", ["synchronous", "off"]),
        ("?synchronous=", ["synchronous"]),
        ("?busy_timeout=x", ["busy_timeout"]),
        ("?busy_timeout=", ["busy_timeout"]),
        ("?busy_timeout=0", ["busy_timeout"]),
        ("?busy_timeout=-1", ["busy_timeout"]),
        ("?busy_timeout=nan", ["busy_timeout"]),
        ("?busy_timeout=inf", ["busy_timeout"]),
        ("?journal_mode=delete", ["journal_mode"]),
        ("?cache=shared", ["cache"]),
        ("#fragment", ["fragment"]),
    ],
)
def test_bad_options_are_refused_before_anything_is_created(
    tmp_path: Path, query: str, words: list[str]
) -> None:
    db = tmp_path / "log.db"
    url = f"sqlite:///{db}{query}"
    with pytest.raises(InvalidURL) as info:  # a bad synchronous was a bare UsageError
        open_log(url).close()
    message = str(info.value)
    for word in [*words, url]:  # the URL named too
        assert word in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("?busy_timeout=1e308", ["busy_timeout", "up to 2147483.647"]),
        ("?busy_timeout=1e20", ["busy_timeout", "up to 2147483.647"]),
        ("?busy_timeout=2147483.648", ["busy_timeout", "up to 2147483.647"]),
        ("?synchronous=normal&synchronous=full", ["'synchronous'", "more than once"]),
        ("?busy_timeout=5&busy_timeout=5", ["'busy_timeout'", "more than once"]),
    ],
)
def test_an_out_of_range_or_repeated_option_is_an_invalid_url(
    tmp_path: Path, query: str, words: list[str]
) -> None:
    """A busy_timeout over SQLite's int of milliseconds crashed with an OverflowError; of a
    repeated option, the last one held without a word."""
    url = f"sqlite:///{tmp_path / 'log.db'}{query}"
    with pytest.raises(InvalidURL) as info:
        open_log(url).close()
    for word in words:
        assert word in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_keyword_options_are_usage_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with pytest.raises(UsageError, match="synchronous"):
        open_log(url, synchronous="sometimes")
    with pytest.raises(UsageError, match="busy_timeout"):
        open_log(url, busy_timeout=0)
    with pytest.raises(UsageError, match="busy_timeout"):
        open_log(url, busy_timeout=1e308)
    with pytest.raises(UsageError, match="payload_limit"):
        open_log(url, payload_limit=0)
    # Not a number of bytes: a UsageError, not a TypeError from comparing it.
    with pytest.raises(UsageError, match="inline_limit must be a positive int"):
        open_log(url, inline_limit="1MB")
    with pytest.raises(UsageError, match="payload_limit must be a positive int"):
        Engine.open(url, session="s", payload_limit=None)
    with pytest.raises(TypeError):
        open_log(url, no_such_option=1)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", ["non-empty"]),
        ("sqlite://host/x.db", ["host"]),
        ("sqlite://localhost/tmp/x.db", ["host"]),
        ("redis://localhost:6379/0", ["redis", "memory://", "sqlite:///"]),
        ("mysql://root@localhost/db", ["mysql"]),
        ("file:///tmp/x.db", ["file"]),
        ("postgresql://u@127.0.0.1:abc/x", ["malformed", "its port is not a number"]),
        ("postgresql://u:hunter2@127.0.0.1:99999/x", ["out of range", "u:***@127.0.0.1:99999"]),
        ("postgresql://u@[::1/x?password=hunter2", ["IPv6", "'postgresql://u@[::1/x'"]),
        # A C library stops at a NUL: the host and port after it would be dropped silently.
        ("postgresql://u@127.0.0.1:1/x%00y", ["NUL"]),
        ("postgresql://u%00@127.0.0.1:1/x", ["NUL"]),
        ("sqlite:///x%00.db", ["NUL"]),
        ("sqlite:///x\x00.db", ["NUL"]),
        # urlsplit drops a raw tab, CR or LF without a word: another file, schema or password.
        ("sqlite:///x\ty.db", ["tab, CR or LF", "%09"]),
        ("sqlite:///x\ny.db", ["tab, CR or LF"]),
        ("postgresql://u:hunter2@127.0.0.1:1/x?schema=he\rx", ["tab, CR or LF", "u:***@"]),
    ],
)
def test_unsupported_or_malformed_urls(url: str, words: list[str]) -> None:
    with pytest.raises(InvalidURL) as info:
        open_log(url)
    assert isinstance(info.value, UsageError)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_path_with_a_nul_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot hold a NUL byte"):
        open_log(str(tmp_path / "x\x00.db"))
    assert list(tmp_path.iterdir()) == []


def test_an_sqlite_url_with_a_control_character_creates_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///x<TAB>y.db`` opened ``xy.db``: urlsplit had dropped the tab."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidURL):
        open_log("sqlite:///x\ty.db")
    assert list(tmp_path.iterdir()) == []


def test_a_url_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidURL):
        open_log(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidURL):
        open_log(b"sqlite:///x.db")  # type: ignore[arg-type]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_an_sqlite_url_without_a_file_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match="file path"):
        open_log(url)


def test_a_missing_directory_is_a_backend_error_naming_the_path(tmp_path: Path) -> None:
    db = tmp_path / "no" / "such" / "dir" / "log.db"
    with pytest.raises(BackendError) as info:
        open_log(f"sqlite:///{db}")
    assert str(db) in str(info.value)
    assert isinstance(info.value, OSError)


def test_a_directory_is_not_a_log(tmp_path: Path) -> None:
    with pytest.raises(NotALog, match="is a directory") as info:
        open_log(f"sqlite:///{tmp_path}")
    assert str(tmp_path) in str(info.value)


def test_a_file_that_is_not_a_database_is_not_a_log(tmp_path: Path) -> None:
    db = tmp_path / "notes.txt"
    db.write_bytes(b"not a database, just notes\n" * 200)
    with pytest.raises(OnwardError) as info:
        open_log(f"sqlite:///{db}").close()
    assert isinstance(info.value, NotALog)
    assert str(db) in str(info.value)
    assert db.read_bytes() == b"not a database, just notes\n" * 200


@pytest.mark.parametrize(
    "name", ["pct%41.db", "what?.db", "no#1.db", "two words.db", "tab\there.db", "new\nline.db"]
)
def test_a_file_named_with_url_characters_is_the_file_everywhere(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path holding ``%41``, ``?`` or ``#``: the CLI opened it as a URL (``pct%41.db`` became
    ``pctA.db``, ``?`` and ``#`` were refused) while a worker opened the file as it is, so
    ``onward tasks`` did not see what the workers did. A bare path is now the file everywhere,
    and a log's URL opens that very file again."""
    path = tmp_path / name
    with open_log(str(path)) as log:
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        url = log.url
    with open_log(url, create=False) as again:
        assert again.head() == 1
    assert main(["init", "--db", str(path)]) == 0
    assert main(["verify", "--db", str(path)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == [name]
