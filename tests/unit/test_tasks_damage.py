"""``onward tasks`` and the engine's task views see the damage that ``onward verify`` and
``onward show`` see: a blob that no longer matches its digest, and a record whose tag column was
rewritten (its checksum fails). The fold used to miss both: it hashed no blob of a step's
result, and it checked each checksum with the type the record's bytes name instead of its tag
column. On real SQLite files, damaged with sqlite3 behind onward's back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from onward import Engine
from onward.cli.main import main
from onward.core.errors import InvalidTransition, StreamDamaged, TaskQuarantinedError
from onward.events import LogDamaged, ProblemKind, open_log
from onward.projections import CatchUp, task_stream
from onward.projections.reading import FoldReader
from tests.conftest import FakeClock

INLINE_LIMIT = 1024  # a step's result over this is stored as a blob
BIG = "x" * 4096


class Log(msgspec.Struct):
    """Session s: ``waiting`` (one step, then waits for a message), ``done`` (one small step,
    succeeded), ``healthy`` (the same, succeeded). Only a log built for blob damage holds a
    blob (the waiting task's step result): a page with a split record used to be checked with
    its tag column, so a rewritten tag column would be found in it."""

    path: Path
    waiting: str
    done: str
    healthy: str


def _open(path: Path, clock: FakeClock) -> Engine:
    engine = Engine.open(
        f"sqlite:///{path}",
        session="s",
        clock=clock,
        sleep=clock.advance,
        inline_limit=INLINE_LIMIT,
    )

    @engine.step(name="fetch")
    def fetch(big: bool) -> str:
        return BIG if big else "small"

    @engine.task(name="waits")
    def waits(big: bool) -> int:
        value = fetch(big)
        engine.recv("go")
        return len(value)

    @engine.task(name="quick")
    def quick() -> int:
        return len(fetch(False))

    return engine


@pytest.fixture(params=["blob", "topic"])
def how(request: pytest.FixtureRequest) -> str:
    """The damage done: a blob's byte changed, or a record's tag column rewritten."""
    return str(request.param)


@pytest.fixture
def log(tmp_path: Path, clock: FakeClock, how: str) -> Log:
    path = tmp_path / "work.db"
    with _open(path, clock) as engine:
        waiting = engine.submit("waits", how == "blob")
        done = engine.submit("quick")
        healthy = engine.submit("quick")
        engine.run()
        assert [engine.task_view(t).state for t in (waiting, done, healthy)] == [
            "waiting",
            "succeeded",
            "succeeded",
        ]
        assert len(engine.log.blob_digests()) == (how == "blob")
    return Log(path=path, waiting=waiting, done=done, healthy=healthy)


def _sql(path: Path, sql: str, *params: object) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        assert db.execute(sql, params).rowcount == 1


def _damage_blob(log: Log) -> str:
    """Change one byte of the only blob (the waiting task's step result): its task."""
    _sql(
        log.path, "UPDATE onward_blobs SET data = substr(data, 1, 100) || 'y' || substr(data, 102)"
    )
    return log.waiting


def _rewrite_topic(log: Log) -> str:
    """Rewrite the tag column of the finished task's StepCompleted: its task."""
    _sql(
        log.path,
        "UPDATE stored_events SET topic = 'Bogus' WHERE originator_id = ? AND topic = ?",
        task_stream(log.done),
        "StepCompleted",
    )
    return log.done


DAMAGE = {"blob": (_damage_blob, ProblemKind.BLOB), "topic": (_rewrite_topic, ProblemKind.CORRUPT)}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(list(args))
    return status, capsys.readouterr().out


def test_onward_tasks_lists_the_damaged_task_as_verify_and_show_see_it(
    log: Log, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    damage, kind = DAMAGE[how]
    task = damage(log)
    status, out = cli(capsys, "verify", "--db", str(log.path), "--json")
    assert status == 1
    [found] = json.loads(out)["damaged_streams"]
    assert (found["stream"], found["kind"]) == (task_stream(task), kind)

    status, out = cli(capsys, "show", task, "--db", str(log.path))
    assert status == 0
    assert "DAMAGED" in out

    status, out = cli(capsys, "tasks", "--db", str(log.path))
    assert status == 0
    ids = {log.waiting, log.done, log.healthy}
    lines = {line.split()[0]: line for line in out.splitlines() if line[:16] in ids}
    assert " damaged " in lines[task]
    assert f"{kind} at version {found['version']}" in lines[task]
    others = ids - {task}
    assert all(" damaged " not in lines[other] for other in others)
    assert "1 damaged task(s), never run until set aside:" in out
    assert f"  {task}: {kind} at version {found['version']}" in out

    status, out = cli(capsys, "tasks", "--db", str(log.path), "--json")
    rows = {row["task_id"]: row for row in json.loads(out)["tasks"]}
    assert rows[task]["state"] == "damaged"
    where, why = rows[task]["damage"].split(": ", 1)
    assert where == f"{kind} at version {found['version']} (position {found['position']})"
    assert found["reason"].startswith(why)
    assert {t: rows[t]["state"] for t in others} == {
        t: "waiting" if t == log.waiting else "succeeded" for t in others
    }


def test_the_engine_contains_the_damage_to_its_task(log: Log, clock: FakeClock, how: str) -> None:
    """Engine.open shows the task damaged, result() raises StreamDamaged (a LogDamaged) saying
    why, a run leaves it alone, and the other tasks, new ones and the records stay as they
    were; quarantining it sets it aside."""
    damage, kind = DAMAGE[how]
    task = damage(log)
    with _open(log.path, clock) as engine:
        head = engine.log.head()
        views = {v.task_id: v for v in engine.tasks()}
        assert views[task].state == "damaged"
        assert f"{kind} at version" in views[task].damage
        with pytest.raises(StreamDamaged) as info:
            engine.result(task)
        assert isinstance(info.value, LogDamaged)
        assert task in str(info.value)
        assert "onward quarantine" in str(info.value)
        assert engine.result(log.healthy) == len("small")
        new = engine.submit("quick")
        if task == log.waiting:  # it would never read it
            with pytest.raises(InvalidTransition, match="is damaged"):
                engine.send(log.waiting, "go")
        else:
            engine.send(log.waiting, "go")
        summary = engine.run()
        assert engine.result(new) == len("small")
        if task == log.done:  # the waiting task, intact, ran to its end
            assert engine.result(log.waiting) == len("small")
            assert summary.succeeded == 2
        else:
            assert summary.succeeded == 1
            assert engine.task_view(task).state == "damaged"
        assert engine.log.head() > head  # appended after, nothing rewritten
        engine.quarantine(task, reason="damaged by a test")
        with pytest.raises(TaskQuarantinedError):
            engine.result(task)


def test_the_fold_marks_the_record_as_verify_reports_it(log: Log, how: str) -> None:
    """The projections' damage is verify's: the same stream, record, kind and reason."""
    damage, _kind = DAMAGE[how]
    task = damage(log)
    with open_log(f"sqlite:///{log.path}") as opened:
        [problem] = opened.verify().damaged_streams
        projections = CatchUp(opened, checkpoint_every=0).open(use_checkpoint=False)
    marked = projections.damaged[task_stream(task)]
    assert (marked.stream, marked.version, marked.position, marked.kind) == (
        problem.stream,
        problem.version,
        problem.position,
        problem.kind,
    )
    assert problem.reason.startswith(marked.reason)
    assert list(projections.damaged) == [task_stream(task)]


def _fold_counting_blob_reads(
    path: Path, *, verify_reads: bool, page_size: int = 5
) -> tuple[list[list[str]], list[str]]:
    """The digests of each read of blobs a fold's reader made, and the streams it folded."""
    reads: list[list[str]] = []
    with open_log(f"sqlite:///{path}", verify_reads=verify_reads) as opened:
        select_blobs = opened._select_blobs

        def counted(digests: Sequence[str]) -> dict[str, bytes]:
            reads.append(list(digests))
            return select_blobs(digests)

        opened._select_blobs = counted  # type: ignore[method-assign]
        pages = list(FoldReader(opened).pages(page_size=page_size))
    assert all(isinstance(page, list) for page in pages)
    return reads, [r.stream for page in pages if isinstance(page, list) for r in page]


def test_a_blob_referenced_many_times_is_hashed_once_per_fold(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Steps that return the same large value share one blob: a fold reads and hashes it once,
    and a log opened with ``verify_reads=False`` not at all; every record is folded."""
    path = tmp_path / "work.db"
    with _open(path, clock) as engine:
        tasks = [engine.submit("waits", True) for _ in range(3)]
        engine.run()
        assert len(engine.log.blob_digests()) == 1
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT originator_id FROM stored_events ORDER BY rowid")
        stored = [stream for (stream,) in rows]
    assert {task_stream(t) for t in tasks} <= set(stored)
    reads, folded = _fold_counting_blob_reads(path, verify_reads=True)
    assert (len(reads), sum(map(len, reads)), folded) == (1, 1, stored)
    assert _fold_counting_blob_reads(path, verify_reads=False) == ([], stored)


def test_a_fold_reads_the_blobs_of_a_page_at_once(tmp_path: Path, clock: FakeClock) -> None:
    """Many step results stored as blobs: the fold reads a page's blobs in one query (it read
    one record's at a time: 4x slower on 5,000 tasks), each blob once, and folds every
    record."""
    path = tmp_path / "work.db"
    with _open(path, clock) as engine:

        @engine.step(name="own")
        def own(i: int) -> str:
            return f"{i}:" + BIG

        @engine.task(name="many")
        def many(n: int) -> int:
            return sum(len(own(i)) for i in range(n))

        engine.submit("many", 12)
        engine.run()
        digests = set(engine.log.blob_digests())
        assert len(digests) == 12
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT originator_id FROM stored_events ORDER BY rowid")
        stored = [stream for (stream,) in rows]
    reads, folded = _fold_counting_blob_reads(path, verify_reads=True, page_size=100)
    assert folded == stored
    assert len(reads) == 1
    assert sorted(reads[0]) == sorted(digests)


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["waits", "times-out"])
def test_a_task_whose_inbox_is_damaged_is_damaged_not_failed_nor_left_waiting(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], timeout: float | None
) -> None:
    """A large message (a blob) sent to a waiting task, its blob removed since: the task is
    damaged, with why, as one whose own stream is, and a quarantine sets it aside. It was left
    waiting for good with nothing said (``onward tasks``: waiting), or, its wait timed out,
    recorded as failed with the log's CorruptRecord as its error (a fact of the log)."""
    path = tmp_path / "work.db"

    def register(engine: Engine) -> None:
        @engine.task(name="listen")
        def listen() -> object:
            got = engine.recv("go", timeout=timeout)
            return None if got is None else len(got)

        @engine.task(name="other")
        def other() -> int:
            return 1

    with _open(path, clock) as engine:
        register(engine)
        listener = engine.submit("listen")
        engine.run(max_runs=1)
        assert engine.task_view(listener).state == "waiting"
        engine.send(listener, "go", BIG)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM onward_blobs")
    with _open(path, clock) as engine:
        register(engine)
        clock.advance(120.0)
        other = engine.submit("other")
        summary = engine.run()
        assert (summary.succeeded, summary.failed) == (1, 0)
        assert engine.result(other) == 1
        view = engine.task_view(listener)
        assert view.state == "damaged"
        assert f"inbox-{listener}" in (view.damage or "")
        with pytest.raises(StreamDamaged):
            engine.result(listener)
        engine.quarantine(listener, reason="its message is lost")
        with pytest.raises(TaskQuarantinedError):
            engine.result(listener)
    capsys.readouterr()
    assert main(["tasks", "--db", str(path)]) == 0
    assert "waiting" not in capsys.readouterr().out


def test_a_run_that_reads_a_damaged_inbox_does_not_record_a_failure(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The message's blob is removed after the worker folded it: the run's read finds the
    damage. The task is marked damaged and handed back, never failed for it."""
    path = tmp_path / "work.db"
    with _open(path, clock) as engine:

        @engine.task(name="listen")
        def listen() -> object:
            return len(engine.recv("go", timeout=60.0) or "")

        listener = engine.submit("listen")
        engine.run(max_runs=1)
        engine.send(listener, "go", BIG)
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("DELETE FROM onward_blobs")
        summary = engine.run()
        assert summary.failed == 0
        assert engine.task_view(listener).state == "damaged"
        with pytest.raises(StreamDamaged):
            engine.result(listener)
    with _open(path, clock) as engine:
        assert engine.task_view(listener).state == "damaged"


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_a_damaged_inbox_is_marked_and_saved_under_the_sessions_lock(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, runner: str
) -> None:
    """The mark of a task whose inbox reads back damaged, and the checkpoint that saves it, are
    made from the run's end (a worker thread of its own), where a round may fold a page into
    the same projections meanwhile: under the session's lock, or the checkpoint could hold a
    page folded in part at the position before it (its first events folded twice from it)."""
    unlocked: list[str] = []
    save = CatchUp.checkpoint

    def watched(self: CatchUp) -> None:
        if not engine._session.lock._is_owned():  # type: ignore[attr-defined]
            unlocked.append(threading.current_thread().name)
        save(self)

    monkeypatch.setattr(CatchUp, "checkpoint", watched)
    log_path = tmp_path / "work.db"
    with _open(log_path, clock) as engine:

        @engine.task(name="listen")
        def listen() -> object:
            return len(engine.recv("go", timeout=60.0) or "")

        @engine.task(name="listen_async")
        async def listen_async() -> object:
            return len(await engine.recv("go", timeout=60.0) or "")

        listener = engine.submit("listen" if runner == "sync" else "listen_async")
        engine.run(max_runs=1) if runner == "sync" else asyncio.run(engine.run_async(max_runs=1))
        engine.send(listener, "go", BIG)
        with closing(sqlite3.connect(log_path)) as db, db:
            db.execute("DELETE FROM onward_blobs")
        summary = engine.run() if runner == "sync" else asyncio.run(engine.run_async())
        assert summary.failed == 0
        assert engine.task_view(listener).state == "damaged"
    assert unlocked == []


def _forkable(engine: Engine) -> None:
    @engine.step(name="plan")
    def plan(goal: str) -> str:
        return f"plan for {goal}"

    @engine.step(name="act")
    def act(plan: str, style: str) -> str:
        return f"{plan}, done {style}"

    @engine.task(name="job")
    def job(goal: str, style: str) -> str:
        return act(plan(goal), style)


def test_a_fork_whose_origin_is_damaged_is_damaged_and_the_run_goes_on(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], both_paths: str
) -> None:
    """A fork takes its first steps' outcomes from its origin's history: that history
    damaged, the fork cannot be trusted either. It is marked damaged with why, never claimed,
    as a task whose own history is damaged, and the run goes on with the others, now and
    after a replay from scratch. Its begin used to raise the origin's CorruptRecord out of
    every run, the fork left running under the worker, claimed again at each restart."""
    path = tmp_path / "work.db"
    with _open(path, clock) as engine:
        _forkable(engine)
        origin = engine.submit("job", "ship", "carefully")
        engine.run()
        fork = engine.fork(origin, from_step=1, args=["ship", "boldly"])
    # The origin's first step's outcome, its tag column rewritten: its checksum fails.
    _sql(
        path,
        "UPDATE stored_events SET topic = 'Bogus' WHERE originator_id = ? AND topic = ? "
        "AND originator_version = (SELECT min(originator_version) FROM stored_events "
        "WHERE originator_id = ? AND topic = ?)",
        task_stream(origin),
        "StepCompleted",
        task_stream(origin),
        "StepCompleted",
    )
    for fresh in (False, True):
        if fresh:  # no checkpoint: the projections are folded from the log's start
            with closing(sqlite3.connect(path)) as db, db:
                db.execute("DELETE FROM stored_checkpoints")
        with _open(path, clock) as engine:
            _forkable(engine)
            other = engine.submit("quick")
            summary = engine.run()
            assert (summary.succeeded, summary.failed) == (1, 0)
            assert engine.result(other) == len("small")
            view = engine.task_view(fork)
            assert view.state == "damaged"
            assert not view.worker  # never claimed
            assert task_stream(origin) in (view.damage or "")
            with pytest.raises(StreamDamaged):
                engine.result(fork)
        capsys.readouterr()
        assert main(["tasks", "--db", str(path)]) == 0
        out = capsys.readouterr().out
        assert "2 damaged task(s), never run until set aside:" in out
        assert f"  {fork}: " in out


def test_a_fork_runs_when_its_origins_damage_lies_after_the_fork(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A fork takes its origin's records up to the version it was forked at, no further: a
    record its origin wrote after the fork, damaged, is no part of the fork's history. The
    origin is damaged; the fork runs as any healthy task."""
    path = tmp_path / "work.db"
    with _open(path, clock) as engine:
        origin = engine.submit("waits", False)
        engine.run()
        fork = engine.fork(origin, from_step=1)
        engine.send(origin, "go", None)
        engine.run()
        assert engine.result(origin) == len("small")
    # The origin's end, written after the fork was made, its tag column rewritten.
    _sql(
        path,
        "UPDATE stored_events SET topic = 'Bogus' WHERE originator_id = ? AND topic = ?",
        task_stream(origin),
        "TaskSucceeded",
    )
    with _open(path, clock) as engine:
        engine.send(fork, "go", None)
        summary = engine.run()
        assert engine.task_view(fork).state == "succeeded"
        assert engine.result(fork) == len("small")
        assert summary.failed == 0


def test_a_message_for_a_damaged_task_is_refused_as_for_a_quarantined_one(
    log: Log, clock: FakeClock, how: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A damaged task is never run until it is set aside: a message sent to it from outside
    was accepted, and would wait unread, where one to a quarantined task is refused. It is
    refused the same way, saying why and what to do, and nothing is appended."""
    damage, _kind = DAMAGE[how]
    task = damage(log)
    with open_log(f"sqlite:///{log.path}", create=False) as opened:
        head = opened.head()
    status = main(["send", task, "go", '"now"', "--db", str(log.path)])
    said = capsys.readouterr()
    assert (status, said.out) == (2, "")
    (line,) = said.err.splitlines()
    assert f"task {task!r} is damaged: send is not allowed" in line
    assert f"onward quarantine {task}" in line
    with open_log(f"sqlite:///{log.path}", create=False) as opened:
        assert opened.head() == head
    with _open(log.path, clock) as engine:
        opened_at = engine.log.head()
        with pytest.raises(InvalidTransition, match="is damaged: send is not allowed"):
            engine.send(task, "go", "now")
        assert engine.log.head() == opened_at
        engine.quarantine(task, reason="damaged by a test")
        with pytest.raises(InvalidTransition, match="is quarantined: send is not allowed"):
            engine.send(task, "go", "now")
