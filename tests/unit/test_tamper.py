"""Damage done to a real SQLite log behind onward's back is caught where the data is used, and
contained: the damaged task (or session, or breaker) is refused with a clear state and message,
while every other task and session opens and runs; ``onward verify`` reports it; a person sets a
damaged task aside with ``onward quarantine`` and its session goes on.

Each test builds its log with the engine, closes it, damages the file through a raw sqlite3
connection (or appends through the public ``EventLog.append``, which knows no lifecycle), and
opens it again.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, StreamDamaged, TaskQuarantinedError
from onward.cli.main import main
from onward.events import (
    BreakerHalfOpened,
    CorruptRecord,
    StepCompleted,
    TaskSubmitted,
    TaskSucceeded,
    open_log,
)
from onward.projections import CatchUp, session_stream, task_stream, verify_log
from tests.conftest import FakeClock


class Crash(BaseException):
    """Stands for the process dying in the middle of a step: nothing after it is recorded."""


def open_engine(path: Path, clock: FakeClock, session: str = "nightly") -> Engine:
    return Engine.open(f"sqlite:///{path}", session=session, clock=clock, sleep=clock.advance)


def rows(path: Path, stream: str) -> list[tuple[int, int, str, bytes]]:
    """``(position, version, topic, state)`` of each record of a stream, read raw."""
    with closing(sqlite3.connect(path)) as db:
        found = db.execute(
            "SELECT rowid, originator_version, topic, state FROM stored_events"
            " WHERE originator_id = ? ORDER BY originator_version",
            (stream,),
        ).fetchall()
    return [(p, v, t, bytes(s)) for p, v, t, s in found]


def raw(path: Path, sql: str, *params: object) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(sql, params)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


# -- a stored step result edited, valid JSON ---------------------------------------------------


class Ledger:
    """Session nightly: ``total`` (left running after a crash, its first step's result 100
    recorded) and ``other`` (queued); session weekly: ``report`` (queued)."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.path = path
        self.clock = clock
        self.seen: list[int] = []  # what ``total`` computed with the first step's result
        self.ran: list[str] = []
        self.crash = True

    def register(self, engine: Engine) -> None:
        @engine.step(name="price")
        def price() -> int:
            return 100

        @engine.step(name="charge")
        def charge(amount: int) -> int:
            self.seen.append(amount)
            if self.crash:
                raise Crash
            return amount

        @engine.task(name="total")
        def total() -> int:
            return int(charge(price()))

        @engine.task(name="other")
        def other() -> str:
            self.ran.append("other")
            return "done"

        @engine.task(name="report")
        def report() -> str:
            self.ran.append("report")
            return "reported"

    def build(self, *, checkpoint: bool) -> tuple[str, str, str]:
        with open_engine(self.path, self.clock, "weekly") as weekly:
            self.register(weekly)
            report = weekly.submit("report")
        engine = open_engine(self.path, self.clock)
        self.register(engine)
        total = engine.submit("total")
        with pytest.raises(Crash):
            engine.run(max_runs=1)
        other = engine.submit("other", priority="low")
        if checkpoint:
            engine.checkpoint()  # reopening then never folds the record edited below again
        engine.close()
        self.crash = False
        return total, other, report


@pytest.mark.parametrize("checkpoint", [False, True], ids=["replayed", "from-a-checkpoint"])
def test_an_edited_step_result_is_refused_and_the_rest_runs(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], checkpoint: bool
) -> None:
    ledger = Ledger(tmp_path / "work.db", clock)
    total, other, report = ledger.build(checkpoint=checkpoint)
    assert ledger.seen == [100]
    ((position, version, _topic, state),) = [
        r for r in rows(ledger.path, task_stream(total)) if r[2] == "StepCompleted"
    ]
    assert b'"result":100' in state
    raw(
        ledger.path,
        "UPDATE stored_events SET state = ? WHERE rowid = ?",
        state.replace(b'"result":100', b'"result":999'),  # still valid JSON, checksum stale
        position,
    )

    with open_engine(ledger.path, clock) as engine:  # opens: the damage is one task's
        ledger.register(engine)
        summary = engine.run()
        assert (summary.succeeded, ledger.ran) == (1, ["other"])
        assert engine.result(other) == "done"
        assert ledger.seen == [100]  # 999 was never used: the task did not run again
        view = engine.task_view(total)
        assert view.state == "damaged"
        assert f"version {version} (position {position})" in view.damage
        assert "checksum mismatch" in view.damage
        with pytest.raises(StreamDamaged) as refused:
            engine.result(total)
        assert refused.value.damage.stream == task_stream(total)
        assert (refused.value.damage.version, refused.value.damage.position) == (
            version,
            position,
        )
        assert f"onward quarantine {total}" in str(refused.value)
        assert engine.run().runs == 0  # never claimed, however often asked

    with open_engine(ledger.path, clock, "weekly") as weekly:  # another session: untouched
        ledger.register(weekly)
        weekly.run()
        assert weekly.result(report) == "reported"

    with open_log(f"sqlite:///{ledger.path}") as log:
        with pytest.raises(CorruptRecord) as caught:
            log.read_stream(task_stream(total))
        assert (caught.value.stream, caught.value.version, caught.value.position) == (
            task_stream(total),
            version,
            position,
        )
        report_ = verify_log(log)
    assert not report_.ok
    assert [(d.stream, d.version, d.position, d.kind) for d in report_.damaged_streams] == [
        (task_stream(total), version, position, "corrupt")
    ]

    status, out, _ = cli(capsys, "tasks", "--db", str(ledger.path))
    assert status == 0
    assert f"  {total}: corrupt at version {version} (position {position})" in out
    status, out, _ = cli(capsys, "quarantine", total[:8], "--db", str(ledger.path), "--reason", "x")
    assert status == 0, out
    assert f"quarantined: task {total}" in out
    with open_engine(ledger.path, clock) as engine:
        ledger.register(engine)
        assert engine.task_view(total).state == "quarantined"
        with pytest.raises(TaskQuarantinedError, match="x"):
            engine.result(total)


def test_a_damaged_row_in_the_middle_blocks_no_session(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "work.db"
    ran: list[str] = []

    def register(engine: Engine) -> None:
        @engine.task(name="job")
        def job(label: str) -> str:
            ran.append(label)
            return label

    ids: dict[str, list[str]] = {}
    for session in ("a", "b", "c"):
        with open_engine(path, clock, session) as engine:
            register(engine)
            ids[session] = [engine.submit("job", f"{session}{i}") for i in range(2)]
    victim = ids["b"][0]
    ((position, _, _, state),) = rows(path, task_stream(victim))  # its submission: the session
    flipped = state[:60] + bytes([state[60] ^ 1]) + state[61:]  # of the record is lost with it
    raw(path, "UPDATE stored_events SET state = ? WHERE rowid = ?", flipped, position)

    for session in ("a", "b", "c"):
        with open_engine(path, clock, session) as engine:
            register(engine)
            engine.run()
    assert sorted(ran) == ["a0", "a1", "b1", "c0", "c1"]
    status, out, _ = cli(capsys, "tasks", "--db", str(path), "--json")
    assert status == 0
    states = {t["task_id"]: t["state"] for t in json.loads(out)["tasks"]}
    assert states[victim] == "damaged"
    assert sorted(states.values()) == ["damaged"] + ["succeeded"] * 5


@pytest.mark.parametrize("which", ["a step", "the claim"])
def test_a_record_removed_from_the_middle_of_a_task_stream_damages_that_task(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    """The fold sees the gap (the listing, the queue), not only ``verify``: the task is not
    shown as it ended, nor run again, and its stream gets nothing more."""
    path = tmp_path / "work.db"
    ran: list[str] = []

    def register(engine: Engine) -> None:
        @engine.step(name="fetch")
        def fetch(label: str) -> str:
            ran.append(label)
            return label

        @engine.task(name="job")
        def job(label: str) -> str:
            return fetch(label) + fetch(label)

    with open_engine(path, clock) as engine:
        register(engine)
        victim, other = engine.submit("job", "v"), engine.submit("job", "o")
        engine.run()
    records = rows(path, task_stream(victim))
    topic = "StepCompleted" if which == "a step" else "TaskClaimed"
    position, version = next((p, v) for p, v, t, _ in records if t == topic)
    raw(path, "DELETE FROM stored_events WHERE rowid = ?", position)
    if which == "the claim":  # and its end: the task looks unfinished
        raw(path, "DELETE FROM stored_events WHERE rowid = ?", records[-1][0])

    _, out, _ = cli(capsys, "tasks", "--db", str(path), "--json")
    states = {t["task_id"]: t["state"] for t in json.loads(out)["tasks"]}
    assert states == {victim: "damaged", other: "succeeded"}
    with open_engine(path, clock) as engine:
        register(engine)
        assert engine.run().runs == 0
        view = engine.task_view(victim)
        assert view.damage.startswith(f"gap at version {version + 1}")
        assert f"version {version} of its stream is missing" in view.damage
        with pytest.raises(StreamDamaged):
            engine.result(victim)
    assert ran == ["v", "v", "o", "o"]
    assert len(rows(path, task_stream(victim))) == len(records) - (2 if which == "the claim" else 1)


# -- removed records: verify sees them ---------------------------------------------------------


@pytest.fixture
def finished(tmp_path: Path, clock: FakeClock) -> tuple[Path, list[str]]:
    """A log of one session whose five tasks all succeeded."""
    path = tmp_path / "work.db"
    with open_engine(path, clock) as engine:

        @engine.task(name="job")
        def job(i: int) -> int:
            return i

        ids = [engine.submit("job", i) for i in range(5)]
        engine.run()
    return path, ids


def verify_cli(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, Any]]:
    status, out, _ = cli(capsys, "verify", "--db", str(path), "--json")
    return status, json.loads(out)


def test_verify_sees_the_newest_rows_removed(
    finished: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = finished
    status, report = verify_cli(capsys, path)
    assert (status, report["ok"], report["head_record"]["status"]) == (0, True, "ok")
    head = report["head"]
    raw(path, "DELETE FROM stored_events WHERE rowid > ?", head - 5)
    status, report = verify_cli(capsys, path)
    assert (status, report["ok"], report["torn_tail"]) == (1, False, False)
    (problem,) = report["problems"]
    assert (problem["kind"], problem["position"]) == ("missing", head - 4)
    assert f"positions {head - 4}..{head} are missing" in problem["detail"]
    assert report["head_record"]["status"] == "damaged"


def test_verify_sees_a_stream_s_last_event_removed(
    finished: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = finished
    last = rows(path, task_stream(ids[1]))[-1]
    assert last[2] == "TaskSucceeded"
    raw(path, "DELETE FROM stored_events WHERE rowid = ?", last[0])
    status, report = verify_cli(capsys, path)
    assert status == 1
    (problem,) = report["problems"]
    assert (problem["kind"], problem["position"]) == ("missing", last[0])
    status, out, _ = cli(capsys, "verify", "--db", str(path))
    assert f"position {last[0]}: missing: position {last[0]} is missing" in out
    assert "head record: damaged" in out


def test_verify_sees_a_whole_stream_removed(
    finished: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = finished
    gone = [r[0] for r in rows(path, task_stream(ids[2]))]
    raw(path, "DELETE FROM stored_events WHERE originator_id = ?", task_stream(ids[2]))
    status, report = verify_cli(capsys, path)
    assert status == 1
    missing = [p["position"] for p in report["problems"] if p["kind"] == "missing"]
    assert missing
    assert set(missing) <= set(gone)
    assert report["head_record"]["found"] == report["head_record"]["count"] - len(gone)


def test_verify_sees_removed_rows_even_when_appends_reuse_their_positions(
    finished: tuple[Path, list[str]], clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path, ids = finished
    last = rows(path, task_stream(ids[4]))[-1][0]
    raw(path, "DELETE FROM stored_events WHERE rowid > ?", last - 3)
    with open_log(f"sqlite:///{path}", clock=clock) as log:  # an append takes them again
        log.append("task-late", [TaskSubmitted(name="late")], expected_version=0)
    status, report = verify_cli(capsys, path)
    assert status == 1
    assert [p["kind"] for p in report["problems"]] == ["head"]
    assert "fewer than" in report["problems"][0]["detail"]


def test_the_head_record_removed_is_damage(
    finished: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = finished
    raw(path, "DELETE FROM onward_head")
    status, report = verify_cli(capsys, path)
    assert status == 1
    assert report["head_record"]["status"] == "damaged"
    assert "head record is gone" in report["problems"][0]["detail"]


def test_the_next_append_after_the_head_record_was_removed_says_so(
    finished: tuple[Path, list[str]], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Tracking starts again after it (as after a damaged one), but not silently: what verify
    reported until then is in the log of the process that appended."""
    path, _ = finished
    raw(path, "DELETE FROM onward_head")
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        before = log.head()
        log.append("task-late", [TaskSubmitted(name="late")], expected_version=0)
        head = log.head_record()
    assert head is not None
    assert head.base == before
    assert "the head record of" in caplog.text
    assert "is gone: it starts again after this append" in caplog.text


def test_a_new_log_starts_its_head_record_without_a_word(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with open_log(f"sqlite:///{tmp_path / 'new.db'}", clock=clock) as log:
        log.append("task-first", [TaskSubmitted(name="first")], expected_version=0)
        assert log.verify().ok
    assert "head record" not in caplog.text


def tracking_restarts_at_the_next_append(path: Path, clock: FakeClock, before: int) -> None:
    """The next append's head record counts from the records already in the log."""
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        log.append("task-late", [TaskSubmitted(name="late")], expected_version=0)
        head = log.head_record()
    assert head is not None
    assert (head.base, head.position, head.count) == (before, before + 1, 1)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE onward_head SET count = 'abc'",
        "UPDATE onward_head SET position = x'01'",
        "UPDATE onward_head SET chain = CAST(x'ff' AS TEXT)",
        "UPDATE onward_head SET chain = 'not a hash chain at all, not hex!'",
    ],
)
def test_a_head_record_onward_never_wrote_is_damage_and_appends_go_on(
    finished: tuple[Path, list[str]],
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    change: str,
) -> None:
    """A head record holding what onward never writes (text for a number, bytes that are not
    UTF-8, a chain that is not hex) is reported as damaged, not raised on; the next append
    starts tracking again after the records already there, as after a removed head record."""
    path, _ = finished
    raw(path, change)
    status, report = verify_cli(capsys, path)
    assert (status, report["head_record"]["status"]) == (1, "damaged")
    assert "head record is damaged" in report["problems"][0]["detail"]
    before = report["head"]
    tracking_restarts_at_the_next_append(path, clock, before)
    status, report = verify_cli(capsys, path)
    assert (status, report["head_record"]["status"]) == (0, "ok")


def test_a_writer_that_stays_open_advances_the_head_record_others_moved_or_damaged(
    finished: tuple[Path, list[str]], clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writer advances the head record it left without reading it again: one that another
    writer moved since, or that was damaged since, is read and advanced (or restarted) as a
    fresh writer would."""
    path, _ = finished
    url = f"sqlite:///{path}"
    with open_log(url, clock=clock) as mine, open_log(url, clock=clock) as other:
        for n in range(3):  # the two take turns: each finds the other's appends
            mine.append(f"task-mine-{n}", [TaskSubmitted(name="m")], expected_version=0)
            other.append(f"task-other-{n}", [TaskSubmitted(name="o")], expected_version=0)
            mine.append(f"task-again-{n}", [TaskSubmitted(name="m")], expected_version=0)
        status, report = verify_cli(capsys, path)
        assert (status, report["head_record"]["status"]) == (0, "ok")
        assert report["head_record"]["found"] == report["head_record"]["count"]
        raw(path, "UPDATE onward_head SET chain = 'not a hash chain at all, not hex!'")
        before = mine.head()
        mine.append("task-late", [TaskSubmitted(name="late")], expected_version=0)
        head = mine.head_record()
    assert head is not None
    assert (head.base, head.position, head.count) == (before, before + 1, 1)
    status, report = verify_cli(capsys, path)
    assert (status, report["head_record"]["status"]) == (0, "ok")


def test_a_new_log_says_its_head_record_comes_with_its_first_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.db"
    status, _, _ = cli(capsys, "init", "--db", str(path))
    assert status == 0
    status, report = verify_cli(capsys, path)
    assert (status, report["ok"], report["head_record"]["status"]) == (0, True, "not tracked")
    assert report["head_record"]["detail"] == (
        "this log holds no record yet: its head record comes with the first"
    )


def test_a_log_without_a_head_record_is_not_tracked_until_its_next_append(
    finished: tuple[Path, list[str]], clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log an older onward wrote has no head table: verify says so, and does not fail; the
    first append of a newer onward starts tracking after the records already there."""
    path, _ = finished
    raw(path, "DROP TABLE onward_head")
    status, report = verify_cli(capsys, path)
    assert (status, report["ok"], report["head_record"]["status"]) == (0, True, "not tracked")
    status, out, _ = cli(capsys, "verify", "--db", str(path))
    assert "head record: not tracked (this log keeps no head record" in out
    before = report["head"]
    tracking_restarts_at_the_next_append(path, clock, before)
    status, report = verify_cli(capsys, path)
    assert (status, report["head_record"]["status"], report["head_record"]["base"]) == (
        0,
        "ok",
        before,
    )


# -- an illegal event through the public append ------------------------------------------------


def test_an_illegal_event_damages_only_its_task_and_quarantine_lets_the_session_go_on(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "work.db"
    outcomes: list[str] = []

    def register(engine: Engine) -> None:
        @engine.task(name="leaf")
        def leaf(i: int) -> int:
            return i

        @engine.task(name="parent")
        def parent() -> str:
            child = engine.submit("leaf", 7)
            try:
                engine.wait([child])
            except TaskQuarantinedError as exc:
                outcomes.append(str(exc))
                return "went on without its child"
            return "child done"

    with open_engine(path, clock) as engine:
        register(engine)
        done = engine.submit("leaf", 1)
        engine.run()
        assert engine.result(done) == 1
        parent = engine.submit("parent", priority="high")
        later = engine.submit("leaf", 2, priority="low")
        engine.run(max_runs=1)  # the parent submits its child and waits for it
        assert engine.task_view(parent).state == "waiting"
        (child,) = engine.task_view(parent).waiting_on
    with open_log(f"sqlite:///{path}", clock=clock) as log:  # no lifecycle at this level
        log.append(
            task_stream(done),
            [StepCompleted(index=0, name="late", result=1, duration=0.0)],
            expected_version=log.stream_version(task_stream(done)),
        )
        log.append(task_stream(child), [TaskSucceeded(result=7)], expected_version=1)

    with open_engine(path, clock) as engine:  # opens: only two tasks are damaged
        register(engine)
        summary = engine.run()
        assert summary.succeeded == 1  # the later leaf
        assert engine.result(later) == 2
        for task, was in ((done, "succeeded"), (child, "queued")):
            view = engine.task_view(task)
            assert view.state == "damaged"
            assert f"is not allowed in state '{was}'" in view.damage
        assert engine.task_view(parent).state == "waiting"  # for a child that cannot end

    with open_log(f"sqlite:///{path}") as log:
        report = verify_log(log)
    assert not report.ok
    assert [(p.kind, p.stream) for p in report.problems] == [
        ("illegal", task_stream(done)),
        ("illegal", task_stream(child)),
    ]
    status, out, _ = cli(capsys, "verify", "--db", str(path))
    assert status == 1
    assert "StepCompleted is not allowed in state 'succeeded'" in out

    with open_engine(path, clock) as engine:
        register(engine)
        view = engine.quarantine(child, reason="illegal history")
        assert (view.state, view.error) == ("quarantined", "quarantined: illegal history")
        summary = engine.run()
        assert engine.result(parent) == "went on without its child"
        assert outcomes == [f"task {child} was quarantined: illegal history"]
        with pytest.raises(StreamDamaged):
            engine.result(done)
    with open_log(f"sqlite:///{path}") as log:
        report = verify_log(log)
    assert report.quarantined == [task_stream(child)]


# -- a damaged session, a damaged breaker --------------------------------------------------------


def test_a_damaged_session_refuses_to_open_and_the_others_open(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "work.db"
    for session in ("nightly", "weekly"):
        with open_engine(path, clock, session):
            pass
    (position, version, _, state), *_ = rows(path, session_stream("weekly"))
    raw(path, "UPDATE stored_events SET state = ? WHERE rowid = ?", state[:-9] + b"}}", position)
    with pytest.raises(StreamDamaged) as refused:
        open_engine(path, clock, "weekly")
    assert refused.value.subject == "session"
    assert f"session weekly: its history cannot be trusted: corrupt at version {version}" in str(
        refused.value
    )
    with open_engine(path, clock) as engine:
        assert engine.projections.sessions.sessions["weekly"].state == "damaged"
        assert engine.projections.sessions.sessions["nightly"].state == "active"


def test_a_damaged_breaker_guards_nothing_and_steps_still_run(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "work.db"
    with open_log(f"sqlite:///{path}", clock=clock) as log:  # a half-open breaker never opened
        log.append(
            "breaker-search",
            [BreakerHalfOpened(dependency="search", trial_calls=1)],
            expected_version=0,
        )
    with open_engine(path, clock) as engine:
        calls: list[str] = []

        @engine.step(breaker="search")
        def search(q: str) -> str:
            calls.append(q)
            return q.upper()

        @engine.task()
        def find(q: str) -> str:
            return search(q)

        task = engine.submit(find, "x")
        engine.run()
        assert engine.result(task) == "X"
        view = engine.projections.breakers.get("search")
        assert view.state == "damaged"
        assert "BreakerHalfOpened is not allowed in state 'new'" in view.damage
        assert engine.log.stream_version("breaker-search") == 1  # nothing appended to it


# -- the fold itself -----------------------------------------------------------------------------


def test_the_projections_keep_the_damage_in_a_checkpoint(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "work.db"
    with open_engine(path, clock) as engine:

        @engine.task(name="job")
        def job() -> None:
            return None

        victim = engine.submit("job")
        engine.submit("job")
    ((position, _, _, state),) = rows(path, task_stream(victim))
    raw(path, "UPDATE stored_events SET state = ? WHERE rowid = ?", state + b" ", position)
    with open_log(f"sqlite:///{path}") as log:
        replayed = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
        assert replayed.position == log.head()
        assert replayed.tasks.tasks[victim].state == "damaged"
        host = CatchUp(log, checkpoint_every=0)
        host.open(use_checkpoint=False)
        host.checkpoint()
        reopened = CatchUp(log)
        again = reopened.open()
        assert again.snapshot() == replayed.snapshot()
        assert list(again.damaged) == [task_stream(victim)]
        # The record still fails its checksum: the checkpoint is taken, not folded again.
        assert reopened.loaded_checkpoint == log.head()


def test_opening_a_log_whose_newest_records_were_removed_says_so(
    finished: tuple[Path, list[str]], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path, _ = finished
    with open_log(f"sqlite:///{path}") as log:
        head = log.head()
    raw(path, "DELETE FROM stored_events WHERE rowid > ?", head - 2)
    with caplog.at_level("ERROR", logger="onward.engine"), open_engine(path, clock):
        pass
    assert f"ends at position {head - 2} but its head record says {head}" in caplog.text


def test_reads_can_trust_the_storage(tmp_path: Path, clock: FakeClock) -> None:
    """``verify_reads=False`` (a benchmark's baseline, or storage trusted by other means) decodes
    without checking: the edited value then reads back as stored."""
    path = tmp_path / "work.db"
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        log.append("task-1", [TaskSubmitted(name="job", args=[100])], expected_version=0)
    ((position, _, _, state),) = rows(path, "task-1")
    raw(
        path,
        "UPDATE stored_events SET state = ? WHERE rowid = ?",
        state.replace(b"[100]", b"[999]"),
        position,
    )
    with open_log(f"sqlite:///{path}") as log, pytest.raises(CorruptRecord):
        log.read_stream("task-1")
    with open_log(f"sqlite:///{path}", verify_reads=False) as log:
        (recorded,) = log.read_stream("task-1")
        assert recorded.event == TaskSubmitted(name="job", args=[999])
        assert [r.event for r in log.read()] == [recorded.event]
        assert not log.verify().ok  # verify always checks
    with Engine.open(f"sqlite:///{path}", session="s", clock=clock, verify_reads=False) as engine:
        assert engine.log.verify_reads is False


def test_a_record_that_does_not_decode_is_contained_even_unchecked(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "work.db"
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        for task in ("a", "b", "c"):
            log.append(f"task-{task}", [TaskSubmitted(name="job")], expected_version=0)
    ((position, _, _, state),) = rows(path, "task-b")
    raw(path, "UPDATE stored_events SET state = ? WHERE rowid = ?", state[:40], position)
    for verify in (True, False):
        with open_log(f"sqlite:///{path}", verify_reads=verify) as log:
            projections = CatchUp(log, checkpoint_every=0).open()
            assert projections.position == log.head()
            states = {k: v.state for k, v in projections.tasks.tasks.items()}
            assert states == {"a": "queued", "b": "damaged", "c": "queued"}, verify


# -- a checkpoint changed behind onward's back ---------------------------------------------------


def edit_header(path: Path, edit: Any) -> None:
    """Rewrite the checkpoint's header ``[schema, position, seal]`` with ``edit(header)``."""
    with closing(sqlite3.connect(path)) as db:
        ((topic,),) = db.execute("SELECT topic FROM stored_checkpoints").fetchall()
    raw(path, "UPDATE stored_checkpoints SET topic = ?", edit(json.loads(topic)))


#: Checkpoints that are not as onward saved them: each is ignored, and the log folded instead.
CHECKPOINT_EDITS: dict[str, Any] = {
    "null-state": lambda p: raw(p, "UPDATE stored_checkpoints SET state = NULL"),
    "text-state": lambda p: raw(p, "UPDATE stored_checkpoints SET state = 'garbage'"),
    "earlier-position": lambda p: edit_header(p, lambda h: json.dumps([h[0], h[1] - 10, *h[2:]])),
    "later-position": lambda p: edit_header(p, lambda h: json.dumps([h[0], h[1] + 1, *h[2:]])),
    "unsealed": lambda p: edit_header(p, lambda h: json.dumps(h[:2])),
    "null-header": lambda p: raw(p, "UPDATE stored_checkpoints SET topic = NULL"),
}


def test_a_checkpoint_of_another_log_is_ignored(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint row copied from another log, sealed as onward saved it, at a position this
    log holds too: its projections are not this log's, so it is ignored and the log folded (it
    was loaded: this log's first tasks were unknown, and its later ones read as damaged)."""

    def fill(url: str, first: int, count: int) -> list[str]:
        with Engine.open(url, session="s", clock=clock) as engine:

            @engine.task(name="job")
            def job(n: int) -> int:
                return n

            ids = [engine.submit(job, first + n) for n in range(count)]
            engine.run()
            engine.checkpoint()
            return ids

    other, path = tmp_path / "other.db", tmp_path / "work.db"
    fill(f"sqlite:///{other}", 0, 3)
    mine = fill(f"sqlite:///{path}", 100, 6)
    with closing(sqlite3.connect(other)) as db:
        (row,) = db.execute("SELECT * FROM stored_checkpoints").fetchall()
    raw(path, "DELETE FROM stored_checkpoints")
    raw(path, "INSERT INTO stored_checkpoints VALUES (?, ?, ?, ?)", *row)
    url = f"sqlite:///{path}"
    with open_log(url) as log:
        assert 0 < json.loads(row[2])[1] < log.head()
        replayed = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False).snapshot()
        with caplog.at_level("INFO", logger="onward.events"):
            assert log.load_checkpoint("core") is None
        assert "of another log; ignored" in caplog.text
        host = CatchUp(log, checkpoint_every=0)
        assert host.open().snapshot() == replayed
        assert host.loaded_checkpoint is None
    with Engine.open(url, session="s", clock=clock) as engine:
        assert [engine.task_view(t).state for t in mine] == ["succeeded"] * 6


@pytest.mark.parametrize("edit", CHECKPOINT_EDITS)
def test_a_checkpoint_changed_since_it_was_saved_is_ignored(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    edit: str,
) -> None:
    path = tmp_path / "work.db"
    url = f"sqlite:///{path}"
    with Engine.open(url, session="s", clock=clock, checkpoint_every=20) as engine:

        @engine.step(name="double")
        def double(n: int) -> int:
            return 2 * n

        @engine.task(name="job")
        def job(n: int) -> int:
            return double(n) + double(n + 1)

        for n in range(10):
            engine.submit(job, n)
        engine.run()
        queued = {engine.submit(job, 100 + n) for n in range(3)}
    with open_log(url) as log:
        saved = log.load_checkpoint("core")
        assert saved is not None
        assert 0 < saved.position < log.head()
        replayed = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False).snapshot()
    CHECKPOINT_EDITS[edit](path)
    with open_log(url) as log, caplog.at_level("INFO", logger="onward.events"):
        assert log.load_checkpoint("core") is None
        assert "checkpoint core" in caplog.text
        assert "ignored" in caplog.text
        host = CatchUp(log, checkpoint_every=0)
        assert host.open().snapshot() == replayed
        assert host.loaded_checkpoint is None
    status, out, err = cli(capsys, "tasks", "--db", str(path))
    assert status == 0, err
    assert "damaged" not in out
    with Engine.open(url, session="s", clock=clock) as engine:

        @engine.task(name="job")
        def again(n: int) -> int:
            return n

        engine.run()
        assert {engine.result(t) for t in queued} == {100, 101, 102}


@pytest.mark.parametrize("checkpoint", [False, True], ids=["replayed", "from-a-checkpoint"])
def test_a_damaged_task_quarantined_spends_no_retry_budget_with_its_pending_retry(
    tmp_path: Path, clock: FakeClock, checkpoint: bool
) -> None:
    """A task waiting for its retry, whose history is then damaged, is quarantined (what a
    damaged task is for): it never runs again, and its retry no longer awaits an outcome nor
    spends the session's retry budget, as any ended task's does (the quarantine was folded
    into the task alone, its stream's one event still read, not into the error DB)."""
    path = tmp_path / "work.db"

    def register(engine: Engine) -> None:
        @engine.step(name="fetch")
        def fetch() -> str:
            raise TimeoutError("upstream timed out")

        @engine.task(name="job")
        def job() -> str:
            return fetch()

    with open_engine(path, clock) as engine:
        register(engine)
        task = engine.submit("job")
        engine.run(max_runs=1)
        assert engine.task_view(task).state == "waiting"  # for its retry
        assert len(engine.refresh().errors.recent_retries("nightly", 0.0)) == 1
    with open_log(f"sqlite:///{path}", clock=clock) as log:  # no lifecycle at this level
        log.append(
            task_stream(task),
            [TaskSucceeded(result="never")],
            expected_version=log.stream_version(task_stream(task)),
        )
    with open_engine(path, clock) as engine:
        register(engine)
        assert engine.task_view(task).state == "damaged"
        engine.quarantine(task, reason="illegal history")
        if checkpoint:
            engine.checkpoint()
    with open_engine(path, clock) as engine:
        errors = engine.refresh().errors
        assert (errors.pending(), errors.recent_retries("nightly", 0.0)) == ([], [])
