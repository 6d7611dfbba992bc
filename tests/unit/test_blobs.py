"""Large values through the engine and the CLI: step results and task arguments over the inline
limit are stored once as blobs and come back as they ran; verify finds a missing or damaged
blob; the hard limit still refuses. On real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from onward import Engine
from onward.cli.main import main
from onward.events import CorruptRecord, ProblemKind, StepCompleted, open_log
from onward.projections import task_stream
from tests.conftest import POSTGRES_URL, FakeClock

MIB = 1024 * 1024


def big_text(size: int, seed: str = "line") -> str:
    """Text of about ``size`` bytes, as a file a coding agent reads."""
    line = f"{seed}: def handler(request): return respond(request.body, status=200)\n"
    return (line * (size // len(line) + 1))[:size]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'work.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url


class Crash(BaseException):
    """Stands for the process dying in the middle of a step."""


def register(engine: Engine, calls: list[int], crash_at: list[int]) -> Any:
    @engine.step(name="read_file")
    def read_file(i: int) -> str:
        calls.append(i)
        if crash_at and i == crash_at[0]:
            raise Crash
        return big_text(2 * MIB, f"file {i}")

    @engine.task(name="review")
    def review(files: int, notes: str) -> list[int]:
        return [len(read_file(i)) for i in range(files)] + [len(notes)]

    return review


@pytest.mark.usefixtures("both_paths")
def test_a_step_returning_two_mebibytes_completes_and_resumes_without_running_again(
    db: str, clock: FakeClock
) -> None:
    calls: list[int] = []
    crash_at = [2]
    engine = Engine.open(db, session="big", clock=clock, sleep=clock.advance)
    review = register(engine, calls, crash_at)
    notes = big_text(MIB + 1000, "notes")  # an argument over the inline limit too
    task_id = engine.submit(review, 3, notes)
    with pytest.raises(Crash):
        engine.run()
    engine.close()
    assert calls == [0, 1, 2]

    crash_at.clear()
    with Engine.open(db, session="big", clock=clock, sleep=clock.advance) as engine:
        register(engine, calls, crash_at)
        summary = engine.run()
        assert engine.result(task_id) == [2 * MIB, 2 * MIB, 2 * MIB, MIB + 1000]
        assert summary.recovered == 1
        assert summary.steps_replayed == 2
        assert calls == [0, 1, 2, 2]  # only the step in flight ran again
        history = engine.log.read_stream(task_stream(task_id))
        results = [r.event.result for r in history if isinstance(r.event, StepCompleted)]
        assert results == [big_text(2 * MIB, f"file {i}") for i in range(3)]
        assert len(engine.log.blob_digests()) == 4  # three results, one argument
        stored = [row[4] for rows in engine.log.read_rows() for row in rows]
        assert max(len(state) for state in stored) < MIB
        assert engine.log.verify().ok


def test_the_inline_limit_is_an_option_of_the_engine(db: str, clock: FakeClock) -> None:
    with Engine.open(db, session="small", clock=clock, inline_limit=4096) as engine:

        @engine.step(name="fetch")
        def fetch() -> str:
            return big_text(10_000)

        @engine.task(name="job")
        def job() -> int:
            return len(fetch())

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 10_000
        assert len(engine.log.blob_digests()) == 1
        assert engine.log.inline_limit == 4096


def test_a_value_over_the_hard_limit_still_fails_its_task_clearly(
    db: str, clock: FakeClock
) -> None:
    with Engine.open(db, session="huge", clock=clock, payload_limit=3 * MIB) as engine:

        @engine.step(name="fetch")
        def fetch() -> str:
            return big_text(4 * MIB)

        @engine.task(name="job")
        def job() -> int:
            return len(fetch())

        task_id = engine.submit(job)
        engine.run()
        view = engine.task_view(task_id)
        assert view.state == "failed"
        assert "PayloadTooLarge" in view.error
        assert "over the log's limit of 3145728" in view.error
        assert engine.log.blob_digests() == []  # refused before anything was written


def _blob_of(db: str) -> str:
    with open_log(db) as log:
        [digest] = log.blob_digests()
        return digest


def _damage_blob(db: str, digest: str, *, remove: bool) -> None:
    if db.startswith("sqlite:"):
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            if remove:
                conn.execute("DELETE FROM onward_blobs WHERE digest = ?", (digest,))
            else:
                conn.execute(
                    "UPDATE onward_blobs SET data = CAST(replace(CAST(data AS TEXT), 'e', 'E')"
                    " AS BLOB) WHERE digest = ?",
                    (digest,),
                )
        return
    schema = db.split("schema=")[1]
    with psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True) as conn:
        table = f'"{schema}".onward_blobs'
        if remove:
            conn.execute(f"DELETE FROM {table} WHERE digest = %s", (digest,))  # type: ignore[arg-type]
        else:
            conn.execute(
                f"UPDATE {table} SET data = convert_to(replace(convert_from(data, 'UTF8'),"  # type: ignore[arg-type]
                " 'e', 'E'), 'UTF8') WHERE digest = %s",
                (digest,),
            )


def _one_big_step(db: str, clock: FakeClock) -> str:
    with Engine.open(db, session="audit", clock=clock) as engine:

        @engine.step(name="fetch")
        def fetch() -> str:
            return big_text(2 * MIB)

        @engine.task(name="job")
        def job() -> int:
            return len(fetch())

        task_id = engine.submit(job)
        engine.run()
        return task_id


@pytest.mark.parametrize("remove", [True, False], ids=["missing", "damaged"])
def test_verify_reports_a_missing_or_damaged_blob(
    db: str, clock: FakeClock, remove: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = _one_big_step(db, clock)
    assert main(["verify", "--db", db]) == 0
    capsys.readouterr()
    digest = _blob_of(db)
    _damage_blob(db, digest, remove=remove)

    assert main(["verify", "--db", db]) == 1
    out = capsys.readouterr().out
    assert digest in out
    assert ("is missing" if remove else "does not match its digest") in out
    with open_log(db) as log:
        report = log.verify()
        assert not report.ok
        [problem] = report.problems
        assert problem.kind == ProblemKind.BLOB
        assert problem.stream == task_stream(task_id)
        with pytest.raises(CorruptRecord) as info:
            log.read_stream(task_stream(task_id))
        assert info.value.kind == "blob"


@pytest.mark.parametrize("remove", [True, False], ids=["missing", "damaged"])
def test_the_same_value_stored_again_repairs_its_damaged_blob(
    db: str, clock: FakeClock, remove: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new task whose step returns a value whose blob was damaged (or removed) since: its
    record pointed at the damaged blob, so a task that succeeded was born damaged. The good
    bytes the new step brought replace the damaged ones, which repairs the first task too."""
    first = _one_big_step(db, clock)
    _damage_blob(db, _blob_of(db), remove=remove)
    second = _one_big_step(db, clock)
    with Engine.open(db, session="audit", clock=clock) as engine:
        assert engine.result(second) == 2 * MIB
        assert engine.result(first) == 2 * MIB
        assert engine.log.verify().ok


def test_importing_a_sound_export_repairs_a_damaged_blob(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log already holds every record of the export: its blobs are stored again all the
    same, and one damaged since is repaired (it was skipped, and the log stayed damaged)."""
    db = f"sqlite:///{tmp_path / 'work.db'}"
    task_id = _one_big_step(db, clock)
    export = tmp_path / "sound.jsonl"
    assert main(["export", "--db", db, "-o", str(export)]) == 0
    _damage_blob(db, _blob_of(db), remove=False)
    assert main(["verify", "--db", db]) == 1
    assert main(["import", "--db", db, str(export)]) == 0
    capsys.readouterr()
    assert main(["verify", "--db", db]) == 0
    with open_log(db) as log:
        [completed] = [
            r.event
            for r in log.read_stream(task_stream(task_id))
            if isinstance(r.event, StepCompleted)
        ]
        assert completed.result == big_text(2 * MIB)


def test_a_blob_rewritten_as_text_is_reported_as_damaged(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sqlite3 shell's ``||`` makes a BLOB column hold TEXT: damage like any other, not a
    TypeError out of every read."""
    db = f"sqlite:///{tmp_path / 'text.db'}"
    task_id = _one_big_step(db, clock)
    with sqlite3.connect(tmp_path / "text.db") as conn:
        conn.execute(
            "UPDATE onward_blobs SET data = substr(data, 1, 10) || 'y' || substr(data, 12)"
        )
        assert conn.execute("SELECT typeof(data) FROM onward_blobs").fetchone() == ("text",)
    capsys.readouterr()
    assert main(["verify", "--db", db]) == 1
    assert "does not match its digest" in capsys.readouterr().out
    with open_log(db) as log, pytest.raises(CorruptRecord) as info:
        log.read_stream(task_stream(task_id))
    assert info.value.kind == "blob"


def test_onward_show_prints_the_value_as_it_ran(
    db: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = _one_big_step(db, clock)
    capsys.readouterr()
    assert main(["show", "--db", db, task_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    [completed] = [e for e in shown["events"] if e["type"] == "StepCompleted"]
    assert completed["fields"]["result"] == big_text(2 * MIB)
    assert shown["task"]["state"] == "succeeded"


def test_a_log_without_blobs_reads_as_before(tmp_path: Path, clock: FakeClock) -> None:
    """A log an older onward wrote has no blob table: it opens, reads and verifies."""
    db = f"sqlite:///{tmp_path / 'old.db'}"
    with Engine.open(db, session="old", clock=clock) as engine:

        @engine.task(name="job")
        def job() -> int:
            return 1

        engine.submit(job)
        engine.run()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "onward_blobs" not in tables
    with open_log(db, create=False) as log:
        assert log.blob_digests() == []
        assert log.verify().ok
        assert len(list(log.read())) == log.head()


def test_the_stored_record_names_its_blob(tmp_path: Path, clock: FakeClock) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    _one_big_step(db, clock)
    with open_log(db) as log:
        [digest] = log.blob_digests()
        states = [row[4] for rows in log.read_rows() for row in rows]
        [split] = [s for s in states if b'"split":' in s]
        record = msgspec.json.decode(split)
        assert record["split"]["blobs"] == [["result", digest]]
        assert "result" not in record["split"]["event"]
        data = log.blob(digest)
        assert data is not None
        assert msgspec.json.decode(data) == big_text(2 * MIB)


def test_reading_a_log_checks_its_blobs_without_holding_them_all(db: str) -> None:
    """Each page's blobs were read at once to check them: memory grew with the log's blobs
    (660 MB to open a log of 600 MB of them on SQLite, 1.9 GB on PostgreSQL)."""
    import tracemalloc

    from onward.projections import CatchUp

    with open_log(db) as log:
        for i in range(24):  # 96 MiB of blobs, each distinct
            result = big_text(4 * MIB, f"file {i}")
            log.append(
                task_stream(f"t{i}"),
                [StepCompleted(index=0, name="read_file", result=result, duration=0.1)],
                expected_version=0,
            )
        del result
        tracemalloc.start()
        try:
            folded = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert folded.position > 0
    assert peak < 40 * MIB, f"peak {peak / MIB:.0f} MiB"


def test_a_blob_that_would_take_a_read_past_its_bound_is_read_alone(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs are read together while their sizes add up to 16 MiB at most: a large one after
    small ones starts a read of its own (it joined them: 15 MiB and 20 MiB read at once)."""
    with open_log(db) as log:
        sizes = [MIB] * 15 + [20 * MIB, MIB]
        for i, size in enumerate(sizes):
            log.append(
                task_stream(f"t{i}"),
                [StepCompleted(index=0, name="read", result=big_text(size, f"f{i}"), duration=0)],
                expected_version=0,
            )
        reads: list[list[int]] = []
        select = log._select_blobs

        def counted(digests: Any) -> dict[str, bytes]:
            found = select(digests)
            reads.append([len(data) for data in found.values()])
            return found

        monkeypatch.setattr(log, "_select_blobs", counted)
        assert len(log.intact_blobs(log.blob_digests())) == len(sizes)
    assert sum(len(read) for read in reads) == len(sizes)
    assert all(len(read) == 1 or sum(read) <= 16 * MIB for read in reads), reads
    assert len(reads) <= 3, reads


def test_a_damaged_size_column_does_not_keep_a_log_from_opening(
    tmp_path: Path, clock: FakeClock
) -> None:
    """SQLite keeps whatever a row's column is given: a blob's size read as text is no reason
    to fail (the check reads the bytes' own length)."""
    db = f"sqlite:///{tmp_path / 'work.db'}"
    task_id = _one_big_step(db, clock)
    with sqlite3.connect(tmp_path / "work.db") as conn:
        conn.execute("UPDATE onward_blobs SET size = 'n/a'")
    with Engine.open(db, session="audit", clock=clock) as engine:
        assert engine.task_view(task_id).state == "succeeded"
    with open_log(db) as log:
        assert log.verify().ok
