"""``onward export`` and ``onward import``: a log or a session moved to another log (of another
backend too), checked whole before anything is written, imported once however often it runs,
and resumed there."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.cli.main import main
from onward.events import (
    ImportConflict,
    InvalidArchive,
    TaskSubmitted,
    UsageError,
    export_log,
    import_log,
    open_log,
)
from onward.events.log import EventLog
from tests.conftest import FakeClock

MIB = 1024 * 1024


class Crash(BaseException):
    """Stands for the process dying in the middle of a step."""


def big_text(size: int, seed: str) -> str:
    line = f"{seed}: a line of a file the agent reads, with some code in it = 1\n"
    return (line * (size // len(line) + 1))[:size]


#: Values over this are stored as blobs in the tests that move small logs (the move to
#: PostgreSQL uses the default, 1 MiB, and 2 MiB results).
SMALL_INLINE = 16 * 1024


def register(engine: Engine, calls: list[int], crash_at: list[int]) -> Any:
    big = 2 * MIB if engine.log.inline_limit == MIB else 4 * SMALL_INLINE

    @engine.step(name="read_file")
    def read_file(i: int) -> str:
        calls.append(i)
        if crash_at and i == crash_at[0]:
            raise Crash
        return big_text(big if i % 2 == 0 else 100, f"file {i}")

    @engine.task(name="review")
    def review(files: int) -> list[int]:
        return [len(read_file(i)) for i in range(files)]

    return review


def unfinished(
    db: str, clock: FakeClock, session: str = "move", inline_limit: int = SMALL_INLINE
) -> tuple[str, list[int]]:
    """A session whose one task crashed in its fourth step (two with large results done)."""
    calls: list[int] = []
    engine = Engine.open(
        db, session=session, clock=clock, sleep=clock.advance, inline_limit=inline_limit
    )
    review = register(engine, calls, [3])
    task_id = engine.submit(review, 5)
    with pytest.raises(Crash):
        engine.run()
    engine.close()
    assert calls == [0, 1, 2, 3]
    return task_id, calls


def export(db: str, out: Path, *extra: str) -> None:
    assert main(["export", "--db", db, "-o", str(out), *extra]) == 0


def import_(db: str, file: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    status = main(["import", "--db", db, str(file)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def records_of(db: str) -> list[tuple[str, int, str, Any]]:
    with open_log(db) as log:
        return [(r.stream, r.version, r.meta.event_id, r.event) for r in log.read()]


@pytest.mark.postgres
def test_a_session_moves_from_sqlite_to_postgres_and_resumes_there(
    tmp_path: Path, clock: FakeClock, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"sqlite:///{tmp_path / 'laptop.db'}"
    task_id, calls = unfinished(source, clock, inline_limit=MIB)
    file = tmp_path / "move.jsonl"
    export(source, file, "--session", "move")

    status, said = import_(postgres_url, file, capsys)
    assert status == 0, said
    assert records_of(postgres_url) == records_of(source)
    again, said = import_(postgres_url, file, capsys)
    assert again == 0, said
    assert "imported 0 records" in said
    assert records_of(postgres_url) == records_of(source)  # nothing twice

    calls.clear()
    with Engine.open(postgres_url, session="move", clock=clock, sleep=clock.advance) as engine:
        register(engine, calls, [])
        summary = engine.run()
        assert summary.recovered == 1
        assert summary.steps_replayed == 3
        assert calls == [3, 4]  # the step in flight and the one after: nothing completed re-ran
        assert engine.result(task_id) == [2 * MIB, 100, 2 * MIB, 100, 2 * MIB]
        assert engine.log.verify().ok
    assert main(["verify", "--db", postgres_url]) == 0


def test_export_and_import_between_sqlite_files_keep_every_record(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    unfinished(source, clock)
    file = tmp_path / "all.jsonl"
    export(source, file)
    lines = [json.loads(line) for line in file.read_text().splitlines()]
    assert lines[0]["line"] == "header"
    assert lines[0]["source"] == source
    assert lines[0]["version"] == 2
    digest = hashlib.blake2b(file.read_bytes().rpartition(b'{"line":"end"')[0], digest_size=16)
    assert lines[-1] == {
        "line": "end",
        "records": len(records_of(source)),
        "blobs": 2,
        "digest": digest.hexdigest(),  # of every line before it
    }
    assert [x["line"] for x in lines].count("blob") == 2
    # Each blob comes before the first record that needs it.
    first_blob = [x["line"] for x in lines].index("blob")
    first_split = next(i for i, x in enumerate(lines) if "split" in x.get("record", {}))
    assert first_blob < first_split

    status, said = import_(target, file, capsys)
    assert status == 0, said
    assert records_of(target) == records_of(source)
    with open_log(target) as log:
        assert log.verify().ok
        assert len(log.blob_digests()) == 2
    assert import_(target, file, capsys)[0] == 0
    assert records_of(target) == records_of(source)


def test_a_later_export_imports_only_what_is_new(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    _task_id, calls = unfinished(source, clock)
    export(source, tmp_path / "first.jsonl")
    assert import_(target, tmp_path / "first.jsonl", capsys)[0] == 0
    with Engine.open(
        source, session="move", clock=clock, sleep=clock.advance, inline_limit=SMALL_INLINE
    ) as engine:
        register(engine, calls, [])
        engine.run()
    export(source, tmp_path / "second.jsonl")
    with open_log(target) as log:
        before = log.head()
    status, said = import_(target, tmp_path / "second.jsonl", capsys)
    assert status == 0, said
    assert records_of(target) == records_of(source)
    with open_log(target) as log:
        assert log.head() > before
        assert log.verify().ok


def test_a_session_export_holds_only_that_sessions_streams(
    tmp_path: Path, clock: FakeClock
) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    unfinished(source, clock, session="one")
    with Engine.open(source, session="two", clock=clock) as engine:

        @engine.task(name="other")
        def other() -> int:
            return 2

        other_id = engine.submit(other)
        engine.run()
    export(source, tmp_path / "one.jsonl", "--session", "one")
    text = (tmp_path / "one.jsonl").read_text()
    assert other_id not in text
    assert '"session":"one"' in text


def test_a_session_export_holds_its_tasks_inboxes_whoever_sent_to_them(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A message sent from another session's engine or task is recorded with that session: the
    inbox of a task of the exported session was left out, and the task imported there waited
    for it for good."""
    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    with Engine.open(source, session="b", clock=clock, sleep=clock.advance) as waiting:

        @waiting.task(name="waiter")
        def waiter() -> int:
            return int(waiting.recv("answer", timeout=3600.0))

        waiter_id = waiting.submit(waiter)
        waiting.run(max_runs=1)  # it waits for the message
    with Engine.open(source, session="a", clock=clock) as sending:
        sending.send(waiter_id, "answer", 42)
    export(source, tmp_path / "b.jsonl", "--session", "b")
    assert f"inbox-{waiter_id}" in (tmp_path / "b.jsonl").read_text()
    with open_log(target) as log:
        import_log(log, (tmp_path / "b.jsonl").read_bytes().splitlines(keepends=True))
    with Engine.open(target, session="b", clock=clock, sleep=clock.advance) as moved:

        @moved.task(name="waiter")
        def waiter_again() -> int:
            return int(moved.recv("answer", timeout=3600.0))

        moved.run()
        assert moved.result(waiter_id) == 42


def test_export_of_an_unknown_session_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    unfinished(source, clock)
    with open_log(source) as log, pytest.raises(UsageError, match="no event of session"):
        export_log(log, lambda _line: None, session="nope")


#: A record line nested far deeper than any record onward writes.
DEEP_RECORD = (
    b'{"line":"record","position":1,"stream":"s","version":1,"type":"x","record":'
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}\n"
)


def _lines(file: Path) -> list[bytes]:
    return file.read_bytes().splitlines(keepends=True)


def _spoil_record(lines: list[bytes]) -> list[bytes]:
    """Change one character inside the event of the second record line."""
    index = [i for i, line in enumerate(lines) if b'"line":"record"' in line][1]
    lines[index] = lines[index].replace(b'"name":"review"', b'"name":"reviex"', 1)
    return lines


def _spoil_blob(lines: list[bytes]) -> list[bytes]:
    index = next(i for i, line in enumerate(lines) if b'"line":"blob"' in line)
    blob = json.loads(lines[index])
    data = base64.b64decode(blob["data"]).replace(b"file", b"fiLe", 1)
    blob["data"] = base64.b64encode(data).decode()
    lines[index] = json.dumps(blob, separators=(",", ":")).encode() + b"\n"
    return lines


def _drop_record(lines: list[bytes]) -> list[bytes]:
    index = [i for i, line in enumerate(lines) if b'"line":"record"' in line][-2]
    return lines[:index] + lines[index + 1 :]


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        pytest.param(lambda ls: [*ls[:3], b"{not json\n", *ls[3:]], "line 4", id="malformed"),
        pytest.param(lambda ls: ls[:-1], "truncated", id="no-end-line"),
        pytest.param(lambda ls: [*ls[:-2], ls[-2][:40]], "not a line", id="cut-mid-line"),
        pytest.param(_spoil_record, "checksum mismatch", id="tampered-record"),
        pytest.param(_spoil_blob, "does not match its digest", id="tampered-blob"),
        pytest.param(_drop_record, "does not follow", id="removed-record"),
        pytest.param(lambda ls: ls[1:], "not an onward export", id="no-header"),
        pytest.param(lambda ls: [b'{"line":"end","records":0,"blobs":0}\n'], "line 1", id="other"),
        pytest.param(
            lambda ls: [*ls[:2], DEEP_RECORD, *ls[2:]],
            "line 3: not a line of an export (nested deeper than",
            id="nested-too-deep",
        ),
    ],
)
def test_a_bad_file_is_refused_with_nothing_imported(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    spoil: Any,
    said: str,
) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    unfinished(source, clock)
    export(source, tmp_path / "good.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(spoil(_lines(tmp_path / "good.jsonl"))))

    status, message = import_(target, bad, capsys)
    assert status == 2
    assert said in message
    with open_log(target) as log:
        assert log.head() == 0
        assert log.blob_digests() == []
        with bad.open("rb") as lines, pytest.raises(InvalidArchive) as info:
            import_log(log, lines)
        assert info.value.line >= 1
        assert log.head() == 0


def test_a_target_with_another_history_of_a_stream_is_refused(
    tmp_path: Path, clock: FakeClock
) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    unfinished(source, clock)
    file = tmp_path / "all.jsonl"
    export(source, file)
    with open_log(source) as log:
        stream = next(iter(log.streams()))
    with open_log(f"sqlite:///{tmp_path / 'b.db'}") as target:
        target.append(stream, [TaskSubmitted(name="other", args=[], kwargs={})], expected_version=0)
        head = target.head()
        with file.open("rb") as lines, pytest.raises(ImportConflict, match=stream):
            import_log(target, lines)
        assert target.head() == head


def test_import_into_a_memory_log_is_refused(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A memory:// log is gone when the command ends: ``onward import`` refuses it (as
    ``export`` does) rather than say it imported what it then throws away."""
    source = f"sqlite:///{tmp_path / 'a.db'}"
    unfinished(source, clock)
    export(source, tmp_path / "all.jsonl")
    status, message = import_("memory://", tmp_path / "all.jsonl", capsys)
    assert status == 2
    assert message == (
        "onward import: a memory:// log is new on every open: what was imported into it would "
        "be gone when the command ends\n"
    )


def test_import_of_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, message = import_(f"sqlite:///{tmp_path / 'a.db'}", tmp_path, capsys)
    assert status == 2
    assert message == (
        f"onward import: {tmp_path} is a directory, not an export file: name the file in it\n"
    )
    assert not (tmp_path / "a.db").exists()


def test_import_into_a_memory_log_checks_the_chains(tmp_path: Path, clock: FakeClock) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    unfinished(source, clock)
    file = tmp_path / "all.jsonl"
    export(source, file)
    with open_log("memory://") as target, file.open("rb") as lines:
        summary = import_log(target, lines)
        assert summary.imported == summary.records == len(records_of(source))
        assert summary.blobs == 2
        assert [(r.stream, r.version, r.meta.event_id, r.event) for r in target.read()] == (
            records_of(source)
        )
        assert target.verify().ok


@pytest.mark.parametrize("command", ["export", "report"])
@pytest.mark.parametrize(
    "where",
    [
        "missing/dir/out",
        ".",
        pytest.param(
            "/dev/full",
            marks=pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full"),
        ),
    ],
)
def test_an_output_file_that_cannot_be_written_is_a_clear_error(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], command: str, where: str
) -> None:
    """``onward export --output`` and ``onward report --output`` naming a file in a missing
    directory, a directory, or a file on a full disk, exit 2 with a sentence that names it,
    and write nothing."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    output = tmp_path / where
    before = sorted(tmp_path.rglob("*"))
    assert main([command, "--db", str(source), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"onward {command}: cannot write {output}: " in err
    assert "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("command", ["export", "report"])
@pytest.mark.parametrize(
    ("where", "said"),
    [
        ("a.db", "it is the log at --db"),
        ("link.db", "it is the log at --db"),
        ("a.db-wal", "it is the wal file of the log at --db"),
        ("b.db", "it holds an SQLite database"),
        ("plain.sqlite", "it holds an SQLite database"),
    ],
)
def test_an_output_file_that_is_a_log_is_refused(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    command: str,
    where: str,
    said: str,
) -> None:
    """``onward export -o`` and ``onward report -o`` never write over the log they read (its
    path, a link to it, its -wal file) nor over any other SQLite database: exit 2, a sentence
    that names the file, and every file as it was."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    unfinished(f"sqlite:///{tmp_path / 'b.db'}", clock, session="other")
    (tmp_path / "link.db").symlink_to(source)
    with closing(sqlite3.connect(tmp_path / "plain.sqlite")) as raw, raw:
        raw.execute("CREATE TABLE t (x)")
    files = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    records = {db: records_of(f"sqlite:///{tmp_path / db}") for db in ("a.db", "b.db")}
    output = tmp_path / where
    assert main([command, "--db", str(source), "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert f"onward {command}: refusing to write over {output}: {said}" in err
    assert "Traceback" not in err
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    assert {db: records_of(f"sqlite:///{tmp_path / db}") for db in records} == records


@pytest.mark.parametrize("command", ["export", "report"])
def test_an_output_file_with_no_name_is_refused_as_such(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``-o ''`` said "cannot write : Is a directory" (the empty path read as the current one)."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    assert main([command, "--db", str(source), "--output", ""]) == 2
    assert "the output file has no name" in capsys.readouterr().err


def test_an_import_commits_its_blobs_a_bounded_amount_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every blob of up to 100,000 records went in one insert: over 1 GiB of them, PostgreSQL
    refused the message and the import was retried as an outage for five minutes, in vain.
    (The bound is made small here: 10 MiB for 20 MiB of blobs.)"""
    from onward.events import StepCompleted, archive

    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    with open_log(source) as log:
        for i in range(5):
            value = big_text(4 * 2**20, f"file {i}")
            event = StepCompleted(index=0, name="read_file", result=value, duration=0.1)
            log.append(f"task-t{i}", [event], expected_version=0)
    file = tmp_path / "all.jsonl"
    export(source, file)
    monkeypatch.setattr(archive, "_COMMIT_BLOB_BYTES", 10 * 2**20)
    inserts: list[int] = []
    real = EventLog.insert_records

    def counted(self: EventLog, records: Any, blobs: dict[str, bytes]) -> Any:
        inserts.append(sum(len(b) for b in blobs.values()))
        return real(self, records, blobs)

    monkeypatch.setattr(EventLog, "insert_records", counted)
    status, said = import_(target, file, capsys)
    assert status == 0, said
    assert len(inserts) == 3, inserts
    assert max(inserts) <= 10 * 2**20 + 4 * 2**20, inserts
    assert records_of(target) == records_of(source)
    with open_log(target) as log:
        assert log.verify().ok


@pytest.mark.parametrize("command", ["export", "report"])
def test_an_output_to_dev_stdout_that_is_a_pipe_is_written_there(
    tmp_path: Path, clock: FakeClock, command: str
) -> None:
    """``onward export -o /dev/stdout | gzip`` exited 2 ("cannot write /dev/stdout: No such
    file or directory"): the path was resolved to the pipe's name under /proc, which no file
    has, before it was found not to be a regular file."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    done = subprocess.run(
        [sys.executable, "-m", "onward", command, "--db", str(source), "-o", "/dev/stdout"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    if command == "export":
        assert len(done.stdout.splitlines()) >= len(records_of(f"sqlite:///{source}"))
    else:
        assert done.stdout.startswith(b"<!doctype html>")


REPORT = [sys.executable, "-m", "onward", "report"]


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_a_report_to_dev_stdout_is_followed_by_no_line_of_its_own(
    tmp_path: Path, clock: FakeClock, json_flag: list[str]
) -> None:
    """``onward report --json -o /dev/stdout | jq`` read the JSON and then "report of session
    ... written to /dev/stdout": the confirmation went to the standard output after it."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    done = subprocess.run(
        [*REPORT, "--db", str(source), "-o", "/dev/stdout", *json_flag],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"written to" not in done.stdout
    assert b"written to" in done.stderr
    if json_flag:
        assert json.loads(done.stdout)["session"] == "move"
    else:
        assert done.stdout.rstrip().endswith(b"</html>")


@pytest.mark.parametrize("command", ["export", "report"])
def test_an_output_to_dev_stdout_appended_to_a_file_keeps_what_the_file_held(
    tmp_path: Path, clock: FakeClock, command: str
) -> None:
    """``onward report -o /dev/stdout >> pages.html``: the standard output, a file opened to
    append, was taken for a file to replace (a new one renamed over its name), and what it
    held before was lost."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    pages = tmp_path / "pages.html"
    pages.write_bytes(b"kept\n")
    with open(pages, "ab") as appended:
        done = subprocess.run(
            [sys.executable, "-m", "onward", command, "--db", str(source), "-o", "/dev/stdout"],
            stdout=appended,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    written = pages.read_bytes()
    assert written.startswith(b"kept\n")
    assert len(written) > len(b"kept\n")


@pytest.mark.parametrize(
    ("command", "extra", "starts"),
    [
        ("export", [], b'{"'),
        ("report", [], b"<!doctype html>"),
        ("report", ["--json"], b'{\n  "'),
    ],
)
def test_output_dash_is_the_standard_output(
    tmp_path: Path,
    clock: FakeClock,
    capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    extra: list[str],
    starts: bytes,
) -> None:
    """``-o -`` writes what ``-o FILE`` would to the standard output, as ``onward send -``
    reads the standard input: no file named ``-``."""
    source = tmp_path / "a.db"
    unfinished(f"sqlite:///{source}", clock)
    file = tmp_path / "out"
    assert main([command, "--db", str(source), *extra, "-o", str(file)]) == 0
    capsysbinary.readouterr()
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main([command, "--db", str(source), *extra, "-o", "-"]) == 0
    captured = capsysbinary.readouterr()
    assert sorted(tmp_path.rglob("*")) == before
    assert captured.out.startswith(starts)
    if command == "export":  # the same records, in the same order
        assert captured.out == file.read_bytes()
    else:
        assert len(captured.out) == len(file.read_bytes())
    assert b"written to" not in captured.out


def test_import_dash_reads_the_standard_input(tmp_path: Path, clock: FakeClock) -> None:
    """``onward export ... | onward import --db B -``, as Unix tools take ``-``."""
    source = f"sqlite:///{tmp_path / 'a.db'}"
    target = f"sqlite:///{tmp_path / 'b.db'}"
    unfinished(source, clock)
    file = tmp_path / "all.jsonl"
    export(source, file)
    with file.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "onward", "import", "--db", target, "-"],
            stdin=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert records_of(target) == records_of(source)


def test_an_import_that_loses_a_race_for_a_version_says_to_run_it_again(tmp_path: Path) -> None:
    # Another writer took a version between the import's check and its commit: the commit
    # inserts nothing, and the error says that running the import again finishes it.
    with open_log(f"sqlite:///{tmp_path / 'raced.db'}") as log:
        log.append("task-a", [TaskSubmitted(name="t", args=[], kwargs={})], expected_version=0)
        ((_p, stream, version, topic, state),) = list(log.stream_rows("task-a"))
        head = log.head()
        with pytest.raises(ImportConflict, match="run the import again"):
            log.insert_records([(stream, version, topic, state)], {})
        assert log.head() == head
