"""``onward export`` and ``onward import`` facing damage: a damaged log is not exported (nor
laundered into a clean copy), a good export file is not lost to a failed one, a bad file creates
no log, an edited file is refused, a damaged target is said to be damaged, and an import goes in
commits that a PostgreSQL log takes, finished by running it again after a crash between them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from onward import Engine
from onward.cli.main import main
from onward.events import (
    CorruptRecord,
    InvalidArchive,
    LogDamaged,
    export_log,
    import_log,
    open_log,
)
from onward.events import archive as archive_module
from onward.events import postgres as postgres_module
from tests.conftest import FakeClock
from tests.unit.test_transfer import export, import_, records_of, unfinished


class Crash(BaseException):
    """Stands for the process dying between two commits of an import."""


def remove(db: Path, stream: str, version: int) -> None:
    """Delete one record behind onward's back, as a bad copy or a hand edit would."""
    with sqlite3.connect(db) as connection:
        gone = connection.execute(
            "DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            (stream, version),
        ).rowcount
    assert gone == 1


def versions_of(url: str, stream: str) -> list[int]:
    with open_log(url) as log:
        return [row[2] for row in log.stream_rows(stream)]


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def source(tmp_path: Path, clock: FakeClock) -> tuple[Path, str]:
    """A log whose one task crashed in its fourth step, and that task's stream."""
    db = tmp_path / "a.db"
    task_id, _calls = unfinished(f"sqlite:///{db}", clock)
    return db, f"task-{task_id}"


# -- export refuses a damaged log -------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "said"),
    [
        pytest.param("first", "versions 1..1 are missing", id="first-record"),
        pytest.param("middle", "versions 2..2 are missing", id="middle-record"),
        pytest.param("last", "is missing", id="last-record"),
    ],
)
def test_export_refuses_a_log_a_record_was_removed_from(
    tmp_path: Path,
    source: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    which: str,
    said: str,
) -> None:
    """A stream that does not start at version 1, one with a gap, and one whose last record is
    gone (only the log's head record shows it) are all refused: the export would otherwise
    import into a log that verifies clean."""
    db, stream = source
    versions = versions_of(f"sqlite:///{db}", stream)
    remove(db, stream, {"first": 1, "middle": 2, "last": versions[-1]}[which])
    assert main(["verify", "--db", str(db)]) == 1
    capsys.readouterr()

    out = tmp_path / "out.jsonl"
    before = files_in(tmp_path)
    assert main(["export", "--db", str(db), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert "not exported" in err
    if which != "last":
        assert f"(stream {stream!r}, version {2 if which == 'first' else 3}," in err
    assert files_in(tmp_path) == before  # no file, no temporary left behind

    lines: list[bytes] = []
    with open_log(f"sqlite:///{db}") as log, pytest.raises(LogDamaged) as info:
        export_log(log, lines.append)
    if which != "last":
        assert isinstance(info.value, CorruptRecord)
        assert (info.value.stream, info.value.kind) == (stream, "gap")
    # What went to a stream before the refusal is refused by an import (it has no end line).
    assert not any(line.startswith(b'{"line":"end"') for line in lines)
    with open_log("memory://") as target, pytest.raises(InvalidArchive):
        import_log(target, lines)


def test_a_session_export_of_a_damaged_log_is_refused_too(source: tuple[Path, str]) -> None:
    db, stream = source
    remove(db, stream, 2)
    with open_log(f"sqlite:///{db}") as log, pytest.raises(CorruptRecord, match="missing"):
        export_log(log, lambda _line: None, session="move")


# -- export -o keeps a good file when it fails --------------------------------------------------


def test_a_failed_export_leaves_the_file_it_would_have_replaced(
    tmp_path: Path, source: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, stream = source
    out = tmp_path / "nightly.jsonl"
    export(str(db), out)
    good = out.read_bytes()
    with sqlite3.connect(db) as connection:
        connection.execute(
            "UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), 'review',"
            " 'reviex') AS BLOB) WHERE originator_id = ? AND originator_version = 1",
            (stream,),
        )
    before = files_in(tmp_path)

    assert main(["export", "--db", str(db), "-o", str(out)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert out.read_bytes() == good
    assert files_in(tmp_path) == before


def test_an_export_replaces_a_file_keeping_its_mode_and_creates_one_0600(
    tmp_path: Path, source: tuple[Path, str]
) -> None:
    db, _stream = source
    new = tmp_path / "new.jsonl"
    export(str(db), new)
    assert new.stat().st_mode & 0o777 == 0o600  # it holds what the log holds
    shared = tmp_path / "shared.jsonl"
    shared.write_bytes(b"an older export\n")
    shared.chmod(0o640)
    export(str(db), shared)
    assert shared.stat().st_mode & 0o777 == 0o640
    assert shared.read_bytes() == new.read_bytes()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(shared)
    export(str(db), link)
    assert link.is_symlink()  # the file it names is replaced, not the link


# -- import of a bad file creates nothing --------------------------------------------------------


def test_import_of_a_bad_file_creates_no_sqlite_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "not_an_export.csv"
    bad.write_bytes(b"a,b,c\n1,2,3\n")
    target = tmp_path / "typo.db"
    status, said = import_(str(target), bad, capsys)
    assert status == 2
    assert "line 1: not a line of an export" in said
    assert not target.exists()
    assert files_in(tmp_path) == ["not_an_export.csv"]


@pytest.mark.postgres
def test_import_of_a_bad_file_creates_no_postgres_tables(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "not_an_export.csv"
    bad.write_bytes(b"a,b,c\n1,2,3\n")
    status, _said = import_(postgres_url, bad, capsys)
    assert status == 2
    base, schema = postgres_url.split("?schema=")
    with psycopg.connect(base) as connection:
        found = connection.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    assert found == (0,)


# -- an edited file is refused -------------------------------------------------------------------


def _records(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if b'"line":"record"' in line]


def _without_a_streams_last_record(lines: list[bytes], stream: str) -> list[bytes]:
    """Remove the last record line of ``stream`` and lower the end line's count to match."""
    last = max(i for i in _records(lines) if json.loads(lines[i])["stream"] == stream)
    end = json.loads(lines[-1])
    end["records"] -= 1
    kept = [line for i, line in enumerate(lines[:-1]) if i != last]
    return [*kept, json.dumps(end, separators=(",", ":")).encode() + b"\n"]


def _as_version_1(lines: list[bytes]) -> list[bytes]:
    """The file as an onward before the end line's digest wrote it."""
    header = json.loads(lines[0])
    header["version"] = 1
    end = json.loads(lines[-1])
    del end["digest"]
    return [
        json.dumps(header, separators=(",", ":")).encode() + b"\n",
        *lines[1:-1],
        json.dumps(end, separators=(",", ":")).encode() + b"\n",
    ]


def test_an_export_with_a_streams_last_record_removed_and_the_count_lowered_is_refused(
    tmp_path: Path, source: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, stream = source
    good = tmp_path / "good.jsonl"
    export(str(db), good)
    lines = good.read_bytes().splitlines(keepends=True)
    edited = tmp_path / "edited.jsonl"
    edited.write_bytes(b"".join(_without_a_streams_last_record(lines, stream)))

    target = tmp_path / "b.db"
    status, said = import_(str(target), edited, capsys)
    assert status == 2
    end = len(lines) - 1
    assert f"line {end}: the end line's digest does not match the lines before it" in said
    assert not target.exists()


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        pytest.param(
            lambda ls: [*ls[:-1], ls[-1].replace(b',"digest"', b',"digestx"')],
            "the end line has no digest",
            id="digest-removed",
        ),
        pytest.param(
            lambda ls: [ls[0].replace(b'"source":"', b'"source":"x'), *ls[1:]],
            "digest does not match",
            id="header-changed",
        ),
        pytest.param(
            lambda ls: [*ls[:-2], ls[-2].replace(b'"position":', b'"position":1', 1), ls[-1]],
            "digest does not match",
            id="position-changed",
        ),
    ],
)
def test_an_edited_version_2_file_is_refused(
    tmp_path: Path,
    source: tuple[Path, str],
    edit: Callable[[list[bytes]], list[bytes]],
    said: str,
) -> None:
    db, _stream = source
    good = tmp_path / "good.jsonl"
    export(str(db), good)
    lines = edit(good.read_bytes().splitlines(keepends=True))
    with open_log("memory://") as target, pytest.raises(InvalidArchive, match=said):
        import_log(target, lines)


def test_a_version_1_file_without_a_digest_still_imports(
    tmp_path: Path, source: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _stream = source
    good = tmp_path / "good.jsonl"
    export(str(db), good)
    old = tmp_path / "old.jsonl"
    old.write_bytes(b"".join(_as_version_1(good.read_bytes().splitlines(keepends=True))))
    target = f"sqlite:///{tmp_path / 'b.db'}"
    status, said = import_(target, old, capsys)
    assert status == 0, said
    assert records_of(target) == records_of(f"sqlite:///{db}")


def test_an_export_whose_lines_were_re_formatted_is_refused_for_its_text_not_a_missing_checksum(
    tmp_path: Path, source: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _stream = source
    good = tmp_path / "good.jsonl"
    export(str(db), good)
    # The same content, written back by a tool with its own spacing (``json.dumps``'s).
    again = [
        json.dumps(json.loads(line)).encode() + b"\n" for line in good.read_bytes().splitlines()
    ]
    assert json.loads(again[1])["record"]["meta"]["checksum"]  # the checksum is there
    formatted = tmp_path / "formatted.jsonl"
    formatted.write_bytes(b"".join(again))
    target = tmp_path / "b.db"
    status, said = import_(str(target), formatted, capsys)
    assert status == 2
    assert "line 2: " in said
    assert "record's text is not as exported (re-formatted?): its checksum does not match" in said
    assert "has no checksum" not in said
    assert not target.exists()


# -- a damaged target ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["first", "middle"])
def test_import_into_a_target_whose_copy_of_a_stream_misses_versions_says_it_is_damaged(
    tmp_path: Path, source: tuple[Path, str], capsys: pytest.CaptureFixture[str], which: str
) -> None:
    db, stream = source
    file = tmp_path / "all.jsonl"
    export(str(db), file)
    target = tmp_path / "b.db"
    assert import_(str(target), file, capsys)[0] == 0
    gone = 1 if which == "first" else 2
    remove(target, stream, gone)
    last = versions_of(f"sqlite:///{db}", stream)[-1]
    with open_log(f"sqlite:///{target}") as log:
        head = log.head()

    status, said = import_(str(target), file, capsys)
    assert status == 2
    assert f"stream {stream!r} of sqlite:///{target} holds version {last} but not {gone}" in said
    assert "Traceback" not in said
    with open_log(f"sqlite:///{target}") as log:
        assert log.head() == head
        with file.open("rb") as lines, pytest.raises(LogDamaged, match=stream):
            import_log(log, lines)


# -- commits of an import ------------------------------------------------------------------------


def _crashing_after(log: Any, commits: int) -> None:
    """Make ``log`` die, as its process would, before its import's commit after ``commits``."""
    insert = log.insert_records
    done: list[int] = []

    def insert_records(records: Any, blobs: dict[str, bytes]) -> list[int]:
        if len(done) == commits:
            raise Crash
        done.append(len(records))
        positions: list[int] = insert(records, blobs)
        return positions

    log.insert_records = insert_records


@pytest.fixture
def busy(source: tuple[Path, str], clock: FakeClock) -> str:
    """The source with three more tasks of three steps each: some 30 records, two blobs."""
    url = f"sqlite:///{source[0]}"
    with Engine.open(url, session="more", clock=clock) as engine:

        @engine.step(name="add")
        def add(i: int) -> int:
            return i + 1

        @engine.task(name="total")
        def total(n: int) -> int:
            return sum(add(i) for i in range(n))

        for _ in range(3):
            engine.submit(total, 3)
        engine.run()
    return url


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_an_import_cut_between_its_commits_is_finished_by_running_it_again(
    tmp_path: Path,
    busy: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    monkeypatch.setattr(archive_module, "_COMMIT_ROWS", 5)
    file = tmp_path / "all.jsonl"
    export(busy, file)
    everything = records_of(busy)
    assert len(everything) > 20
    target = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'b.db'}"
    )

    with open_log(target) as log, file.open("rb") as lines:
        _crashing_after(log, 2)
        with pytest.raises(Crash):
            import_log(log, lines)
    assert records_of(target) == everything[:10]  # the two commits before the crash
    with open_log(target) as log:
        assert log.verify().ok

    with open_log(target) as log, file.open("rb") as lines:
        summary = import_log(log, lines)
        assert (summary.skipped, summary.imported) == (10, len(everything) - 10)
        assert log.verify().ok
        assert len(log.blob_digests()) == 2
    assert records_of(target) == everything


@pytest.mark.postgres
def test_a_file_over_what_a_postgres_commit_takes_imports_in_several(
    tmp_path: Path, busy: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file holds more records than one PostgreSQL commit takes (2**20 as built; 8 here,
    with the import's commits of 5)."""
    file = tmp_path / "all.jsonl"
    export(busy, file)
    everything = records_of(busy)
    monkeypatch.setattr(archive_module, "_COMMIT_ROWS", 5)
    with open_log(postgres_url) as log, file.open("rb") as lines, monkeypatch.context() as m:
        m.setattr(postgres_module, "ROWS_PER_COMMIT", 8)  # read at each commit
        summary = import_log(log, lines)
        assert summary.imported == len(everything) > 8
    with open_log(postgres_url) as log:
        positions = [row[0] for rows in log.read_rows() for row in rows]
        assert log.verify().ok
    # A position's high bits number its commit (onward.events.postgres).
    assert len({p >> 20 for p in positions}) == -(-len(everything) // 5)
    assert records_of(postgres_url) == everything


@pytest.mark.parametrize("after", ["\n", "\r\n\n", "\n  \n"])
def test_blank_lines_after_the_end_line_are_skipped_as_elsewhere(
    source: tuple[Path, str], tmp_path: Path, after: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An editor or ``echo >>`` leaves a newline after the end line: skipped, as blank lines
    within the file are (it was "a line after the end line")."""
    db, _stream = source
    out = tmp_path / "a.jsonl"
    export(f"sqlite:///{db}", out)
    with out.open("a", newline="") as file:
        file.write(after)
    target = f"sqlite:///{tmp_path / 'b.db'}"
    status, said = import_(target, out, capsys)
    assert status == 0, said
    assert records_of(target) == records_of(f"sqlite:///{db}")
