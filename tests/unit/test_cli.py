"""The ``onward`` command line, over a small known log built with the engine on a real file."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine, RetryPolicies, RetryPolicy
from onward.cli.main import main
from onward.events import TaskSubmitted, TaskSucceeded, open_log
from onward.projections import inbox_stream, task_stream
from tests.conftest import FakeClock

START = "2023-11-14T22:13:20Z"  # FakeClock's start, 1_700_000_000


class Known(msgspec.Struct):
    """The log the tests read, and what is known about it."""

    db: str
    crawl_a: str
    boom: str
    crawl_c: str
    other: str
    submitted: int  # the head once the three nightly tasks were submitted
    head: int


@pytest.fixture
def known(tmp_path: Path, clock: FakeClock) -> Known:
    """Session nightly: crawl a (succeeds, 2 steps), boom (high, fails), crawl c (low, queued);
    session other: one queued task. Nightly is reopened once."""
    db = str(tmp_path / "work.db")
    url = f"sqlite:///{db}"
    with Engine.open(url, session="nightly", clock=clock, sleep=clock.advance) as engine:

        @engine.step(name="fetch")
        def fetch(url: str) -> int:
            clock.advance(1)
            return len(url)

        @engine.task(name="crawl")
        def crawl(url: str) -> int:
            return int(fetch(url)) + int(fetch(url + "/about"))

        @engine.task(name="boom")
        def boom() -> None:
            raise ValueError("bad input in boom")

        crawl_a = engine.submit(crawl, "https://a.example", key="a")
        clock.advance(1)
        boom_id = engine.submit(boom, priority="high")
        clock.advance(1)
        crawl_c = engine.submit(crawl, "https://c.example", priority="low")
        submitted = engine.log.head()
        engine.run(max_runs=2)
    clock.advance(60)
    with Engine.open(url, session="nightly", clock=clock):
        pass
    with Engine.open(url, session="other", clock=clock) as engine:

        @engine.task(name="later")
        def later() -> None: ...

        other = engine.submit(later)
        head = engine.log.head()
    return Known(
        db=db,
        crawl_a=crawl_a,
        boom=boom_id,
        crawl_c=crawl_c,
        other=other,
        submitted=submitted,
        head=head,
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return msgspec.json.decode(out)


def head_of(db: str) -> int:
    with open_log(f"sqlite:///{db}") as log:
        return log.head()


# -- sessions ----------------------------------------------------------------------------------


def test_sessions_human(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "sessions", "--db", known.db)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "SESSION", "STATE", "STARTED", "UPDATED", "OPENINGS", "FLOW", "LEVEL", "ERRORS/H",
        "ASKING", "TASKS", "BY", "STATE",
    ]  # fmt: skip
    nightly = next(line for line in lines if line.startswith("nightly"))
    assert nightly.split()[:5] == ["nightly", "active", START, nightly.split()[3], "2"]
    assert nightly.split()[6:10] == ["full", "0", "0", "3"]  # level, errors, asking, tasks
    assert "queued 1, succeeded 1, failed 1" in nightly
    assert any(line.startswith("other ") for line in lines)
    # columns are aligned: every row has its STATE column at the header's offset
    offset = lines[0].index("STATE")
    assert all(line[offset:].startswith("active") for line in lines[1:])


def test_sessions_json(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "sessions", "--db", known.db)
    assert list(report) == ["log", "position", "sessions"]
    assert report["position"] == known.head
    nightly, other = report["sessions"]
    assert list(nightly) == [
        "name", "state", "started", "updated", "openings", "host", "pid", "tasks", "flow",
        "degradation", "quality_lost", "errors_last_hour", "approvals_waiting", "damage",
    ]  # fmt: skip
    assert nightly["degradation"] == "full"
    assert nightly["approvals_waiting"] == 0
    assert (nightly["name"], nightly["state"], nightly["openings"]) == ("nightly", "active", 1 + 1)
    assert nightly["started"] == START
    assert nightly["tasks"] == {
        "queued": 1, "running": 0, "waiting": 0, "unregistered": 0, "succeeded": 1,
        "failed": 1, "cancelled": 0, "missed": 0, "quarantined": 0,
    }  # fmt: skip
    assert other["name"] == "other"
    assert other["tasks"]["queued"] == 1


# -- tasks -------------------------------------------------------------------------------------


def test_tasks_human_in_submission_order(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "tasks", "--db", known.db)
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "TASK", "SESSION", "NAME", "KEY", "STATE", "PRIORITY", "ATTEMPT", "STEPS", "PROGRESS",
        "ERROR",
    ]  # fmt: skip
    assert [r.split()[0] for r in rows] == [known.crawl_a, known.boom, known.crawl_c, known.other]
    assert rows[0].split()[1:9] == [
        "nightly", "crawl", "a", "succeeded", "normal", "1", "2", "100%",
    ]  # fmt: skip
    assert rows[1].split()[1:9] == ["nightly", "boom", "-", "failed", "high", "1", "0", "0%"]
    assert "ValueError: bad input in boom" in rows[1]
    assert rows[2].split()[1:9] == ["nightly", "crawl", "-", "queued", "low", "0", "0", "0%"]
    # the columns line up with the header
    offset = header.index("STATE")
    assert [r[offset:].split()[0] for r in rows] == ["succeeded", "failed", "queued", "queued"]


def test_tasks_filters(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "tasks", "--db", known.db, "--session", "other")
    assert [t["task_id"] for t in report["tasks"]] == [known.other]
    # queued tasks come in queue order: other's normal task before nightly's low one
    report = run_json(capsys, "tasks", "--db", known.db, "--state", "queued")
    assert [t["task_id"] for t in report["tasks"]] == [known.other, known.crawl_c]
    report = run_json(capsys, "tasks", "--db", known.db, "--state", "running")
    assert report["tasks"] == []
    status, out, _ = run(capsys, "tasks", "--db", known.db, "--state", "running")
    assert (status, out) == (0, f"no tasks in sqlite:///{known.db} that match\n")
    status, out, _ = run(capsys, "tasks", "--db", known.db, "--session", "")  # said "no tasks"
    assert (status, out) == (0, f"no tasks in sqlite:///{known.db} that match\n")


def test_tasks_json(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "tasks", "--db", known.db)
    assert list(report) == ["log", "position", "tasks"]
    first = report["tasks"][0]
    assert first == {
        "task_id": known.crawl_a,
        "session": "nightly",
        "name": "crawl",
        "key": "a",
        "state": "succeeded",
        "priority": "normal",
        "attempt": 1,
        "steps": 2,
        "progress": 1.0,
        "error": "",
        "submitted": START,
        "position": first["position"],
        "damage": "",
        "unknown_events": 0,
    }
    assert report["tasks"][1]["error"] == "ValueError: bad input in boom"


def test_unknown_state_is_a_usage_error(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tasks", "--db", known.db, "--state", "sleeping"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# -- show --------------------------------------------------------------------------------------


def test_show_human(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "show", known.crawl_a, "--db", known.db)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"task {known.crawl_a}  crawl  (succeeded)")
    header = lines[2].split()
    assert header == ["POS", "VER", "TIME", "TYPE", "DETAILS"]
    timeline = lines[3:9]
    assert [line.split()[3] for line in timeline] == [
        "TaskSubmitted", "TaskClaimed", "StepCompleted", "StepCompleted", "DecisionMade",
        "TaskSucceeded",
    ]  # fmt: skip
    assert [int(line.split()[1]) for line in timeline] == [1, 2, 3, 4, 5, 6]
    assert timeline[0].split()[2] == "2023-11-14T22:13:20.000Z"
    assert 'args=["https://a.example"]' in timeline[0]
    assert "key=a" in timeline[0]
    assert "index=1 name=fetch result=23 duration=1000.0ms" in timeline[3]
    assert "kind=task_completed" in timeline[4]
    assert "rule=task.next" in timeline[4]
    assert "result=40" in timeline[5]
    view = dict(line.split(None, 1) for line in lines[10:] if line.strip())
    assert view["state"] == "succeeded"
    assert view["steps"] == "2"
    assert view["progress"] == "100%"
    assert view["submitted_at"] == "2023-11-14T22:13:20.000Z"


def test_show_json_and_prefix(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "show", known.boom[:6], "--db", known.db)
    assert list(report) == ["log", "task", "view", "events", "damage", "messages", "inbox_damage"]
    assert (report["messages"], report["inbox_damage"]) == ([], "")
    assert report["task"]["task_id"] == known.boom
    assert report["view"]["state"] == "failed"
    assert report["view"]["error"] == "ValueError: bad input in boom"
    events = report["events"]
    assert [e["type"] for e in events] == ["TaskSubmitted", "TaskClaimed", "TaskFailed"]
    assert list(events[0]) == ["position", "version", "time", "type", "actor", "fields"]
    assert [e["version"] for e in events] == [1, 2, 3]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)
    assert events[2]["fields"]["error_type"] == "ValueError"
    assert events[0]["fields"]["priority"] == "high"


def test_show_lists_the_messages_sent_to_the_task_read_or_not(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "work.db")
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock) as engine:

        @engine.task(name="review")
        def review() -> Any:
            return engine.recv("verdict")

        task_id = engine.submit(review)
        engine.run()
        engine.send(task_id, "note", "never read", sender="bob")
        engine.send(task_id, "verdict", {"ok": True}, sender="alice")
        engine.run()
    status, out, _ = run(capsys, "show", task_id, "--db", db)
    assert status == 0
    messages = out.split("messages sent to it (2; read as it calls recv()):\n", 1)[1]
    rows = messages.splitlines()[1:3]
    assert [row.split()[3] for row in rows] == ["MessageSent", "MessageSent"]
    assert "topic=note value=never read sender=bob" in rows[0]
    assert 'topic=verdict value={"ok":true} sender=alice' in rows[1]
    report = run_json(capsys, "show", task_id, "--db", db)
    assert [m["fields"]["topic"] for m in report["messages"]] == ["note", "verdict"]
    assert [m["version"] for m in report["messages"]] == [1, 2]
    assert report["view"]["inbox_version"] == 2
    received = [e for e in report["events"] if e["type"] == "MessageReceived"]
    assert [e["fields"]["topic"] for e in received] == ["verdict"]
    with sqlite3.connect(db) as conn:  # a time no date can show, as a foreign writer's
        where = "WHERE originator_id = ? AND originator_version = 2"
        ((state,),) = conn.execute(
            f"SELECT state FROM stored_events {where}", (inbox_stream(task_id),)
        )
        state = re.sub(rb'"time":[0-9.e+]+', b'"time":1e300', state)
        conn.execute(f"UPDATE stored_events SET state = ? {where}", (state, inbox_stream(task_id)))
    conn.close()
    report = run_json(capsys, "show", task_id, "--db", db)
    assert report["messages"][1]["time"] == "1e+300s after 1970 (no date)"
    assert "checksum" in report["inbox_damage"]
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = 1",
            (b'{"meta":{"checksum":"' + b"0" * 32 + b'",', inbox_stream(task_id)),
        )
    conn.close()
    status, out, err = run(capsys, "show", task_id, "--db", db)
    assert (status, err) == (0, "")
    assert "DAMAGED inbox, shown unchecked: " in out
    report = run_json(capsys, "show", task_id, "--db", db)
    assert "checksum" in report["inbox_damage"]


def test_show_a_time_past_the_year_9999(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deadline that ends after the year 9999 (accepted: a finite number of seconds; a sleep
    of more than ten years is refused) shows as its seconds; ``onward show`` raised
    ``ValueError: year 10000 is out of range`` (or an ``OverflowError``)."""
    url = f"sqlite:///{tmp_path / 'far.db'}"
    with Engine.open(url, session="far", clock=clock, sleep=clock.advance) as engine:

        @engine.task(name="nap")
        def nap() -> None:
            engine.sleep(3e8)

        late = engine.submit("nap", deadline=253_402_300_800.0)
        never = engine.submit("nap", deadline=1e300)
        engine.run(max_runs=2)  # both asleep
    for task_id, shown in ((late, "2.53402e+11s after 1970"), (never, "1e+300s after 1970")):
        status, out, err = run(capsys, "show", task_id, "--db", url)
        assert (status, err) == (0, "")
        assert shown in out


def test_show_unknown_task_exits_2(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "show", "no-such-task", "--db", known.db)
    assert status == 2
    assert out == ""
    assert "no task 'no-such-task'" in err


# -- replay ------------------------------------------------------------------------------------


def test_replay_to_an_earlier_position(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "replay", "--to", str(known.submitted), "--db", known.db)
    assert list(report) == [
        "log", "requested", "position", "head", "time", "checkpoint", "counts", "queue",
        "tasks", "sessions",
    ]  # fmt: skip
    assert (report["requested"], report["position"]) == (known.submitted, known.submitted)
    assert report["head"] == known.head
    assert report["counts"]["queued"] == 3
    assert report["counts"]["succeeded"] == 0
    # the queue: high first, then normal, then low, each with its submission position
    assert [(q["rank"], q["task_id"], q["priority"]) for q in report["queue"]] == [
        (1, known.boom, "high"),
        (2, known.crawl_a, "normal"),
        (3, known.crawl_c, "low"),
    ]
    assert all(q["position"] > 0 for q in report["queue"])
    assert {t["task_id"]: t["state"] for t in report["tasks"]} == {
        known.crawl_a: "queued",
        known.boom: "queued",
        known.crawl_c: "queued",
    }
    assert [s["openings"] for s in report["sessions"]] == [1]

    now = run_json(capsys, "replay", "--to", str(known.head), "--db", known.db)
    assert now["counts"]["succeeded"] == 1
    assert [q["task_id"] for q in now["queue"]] == [known.other, known.crawl_c]


def test_replay_human(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "replay", "--to", str(known.submitted), "--db", known.db)
    assert status == 0
    assert f"replayed to position {known.submitted} (2023-11-14T22:13:22.000Z)" in out
    assert f"the log's head is {known.head}" in out
    assert "tasks by state: queued 3" in out
    queue = out.split("queue (3, first runs next):\n")[1].split("\n\n")[0].splitlines()
    assert queue[0].split() == ["#", "TASK", "SESSION", "NAME", "PRIORITY", "SUBMITTED", "AT"]
    assert [line.split()[:2] for line in queue[1:]] == [
        ["1", known.boom],
        ["2", known.crawl_a],
        ["3", known.crawl_c],
    ]


def test_replay_to_zero_and_past_the_head(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    empty = run_json(capsys, "replay", "--to", "0", "--db", known.db, "--no-checkpoint")
    assert (empty["position"], empty["time"], empty["tasks"]) == (0, None, [])
    beyond = run_json(capsys, "replay", "--to", str(known.head + 100), "--db", known.db)
    assert beyond["position"] == known.head
    for to in ("-1", str(2**63)):
        status, _, err = run(capsys, "replay", "--to", to, "--db", known.db)
        assert status == 2
        assert f"--to must be a position from 0 to 2**63 - 1, got {to}" in err


# -- verify and diagram ------------------------------------------------------------------------


def test_verify(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "verify", "--db", known.db)
    assert status == 0
    assert out.splitlines() == [
        f"ok: {known.head} events in 6 streams, head {known.head}",
        f"head record: ok ({known.head} records after position 0 match the head record's count "
        "and hash chain)",
    ]
    report = run_json(capsys, "verify", "--db", known.db)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["head_record"]["status"] == "ok"
    assert report["damaged_streams"] == []


def test_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "diagram", "task")
    assert status == 0
    assert "stateDiagram-v2" in out
    assert "queued --> running: TaskClaimed" in out
    report = run_json(capsys, "diagram", "breaker")
    assert list(report) == ["lifecycle", "mermaid"]
    assert report["lifecycle"] == "breaker"
    assert "closed --> open: BreakerOpened" in report["mermaid"]


# -- errors, and reading never writes ----------------------------------------------------------

READ_COMMANDS = [
    ["sessions"],
    ["tasks"],
    ["show", "abc"],
    ["replay", "--to", "3"],
    ["errors"],
    ["errors", "v1-0123"],
    ["breakers"],
    ["verify"],
]


#: The commands that append to a log that exists, and never create one.
APPENDING_COMMANDS = [
    ["learn", "v1-0123456789abcdef", "lengthen-timeout", "--force"],
    ["quarantine", "abc"],
]


def schema_tables(url: str) -> list[str]:
    """The tables in the schema a PostgreSQL log URL names."""
    import psycopg

    base, _, query = url.partition("?")
    schema = query.removeprefix("schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.mark.parametrize("command", READ_COMMANDS + APPENDING_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("form", ["path", "url", "postgres"])
def test_missing_log_exits_2_and_creates_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
    command: list[str],
    form: str,
) -> None:
    missing = tmp_path / "missing.db"
    db = {"path": str(missing), "url": f"sqlite:///{missing}"}.get(form, "")
    if form == "postgres":
        db = str(request.getfixturevalue("postgres_url"))
    status, out, err = run(capsys, *command, "--db", db)
    assert status == 2
    assert out == ""
    assert f"onward {command[0]}: no log at {db if form == 'postgres' else missing}" in err
    assert list(tmp_path.iterdir()) == []
    if form == "postgres":
        assert schema_tables(db) == []


def test_a_file_that_is_not_a_log_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    text = tmp_path / "notes.db"
    text.write_text("hello")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    before = foreign.read_bytes()
    for path, why in [
        (empty, "is an empty file (0 bytes)"),
        (text, "is a text file"),
        (foreign, "is an SQLite database without an onward log (its tables: t)"),
    ]:
        status, _, err = run(capsys, "tasks", "--db", str(path))
        assert status == 2
        assert f"onward tasks: {path} {why}" in err
    assert empty.stat().st_size == 0
    assert text.read_text() == "hello"
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "foreign.db", "notes.db"]


def test_read_commands_append_nothing(known: Known, capsys: pytest.CaptureFixture[str]) -> None:
    for command in READ_COMMANDS[:-1]:
        run(capsys, *command, "--db", known.db)
    run(capsys, "show", known.crawl_a, "--db", known.db)
    assert head_of(known.db) == known.head
    report = run_json(capsys, "sessions", "--db", known.db)
    assert report["sessions"][0]["openings"] == 2


def test_a_log_with_an_impossible_history_shows_its_task_damaged(
    known: Known, capsys: pytest.CaptureFixture[str]
) -> None:
    # A queued task cannot succeed without being claimed: the fold marks its stream damaged,
    # and every other task and session reads as before.
    with open_log(f"sqlite:///{known.db}") as log:
        log.append(task_stream(known.crawl_c), [TaskSucceeded(result=1)], expected_version=1)
    why = "TaskSucceeded is not allowed in state 'queued'"
    report = run_json(capsys, "tasks", "--db", known.db)
    states = {t["task_id"]: (t["state"], t["damage"]) for t in report["tasks"]}
    assert states[known.crawl_c][0] == "damaged"
    assert why in states[known.crawl_c][1]
    assert states[known.crawl_a] == ("succeeded", "")
    status, out, _ = run(capsys, "tasks", "--db", known.db)
    assert status == 0
    assert f"  {known.crawl_c}: illegal at version 2" in out
    for command in (["sessions"], ["show", known.crawl_a], ["replay", "--to", "999"]):
        status, out, err = run(capsys, *command, "--db", known.db)
        assert (status, err) == (0, ""), command
    status, out, _ = run(capsys, "show", known.crawl_c, "--db", known.db)
    assert status == 0
    assert "DAMAGED: its history cannot be trusted: illegal at version 2" in out
    assert "TaskSucceeded" in out  # its events, as stored
    status, out, _ = run(capsys, "verify", "--db", known.db)
    assert status == 1
    assert out.startswith("DAMAGED: 1 problem: intact records that their lifecycle does not allow")
    assert f"stream 'task-{known.crawl_c}', version 2: illegal: task lifecycle: {why}" in out
    assert f"  task-{known.crawl_c}: illegal at version 2" in out


def test_a_record_that_does_not_decode_shows_its_task_damaged(
    known: Known, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(known.db) as conn:
        conn.execute(
            "UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = 2",
            (b'{"meta":{"checksum":"' + b"0" * 32 + b'",', task_stream(known.crawl_a)),
        )
    conn.close()
    report = run_json(capsys, "tasks", "--db", known.db)
    (crawl_a,) = [t for t in report["tasks"] if t["task_id"] == known.crawl_a]
    assert crawl_a["state"] == "damaged"
    assert "corrupt at version 2" in crawl_a["damage"]
    assert "checksum mismatch" in crawl_a["damage"]
    assert {t["state"] for t in report["tasks"] if t["task_id"] != known.crawl_a} != {"damaged"}
    status, out, err = run(capsys, "show", known.crawl_a, "--db", known.db)
    assert (status, err) == (0, "")
    assert "DAMAGED" in out
    status, out, _ = run(capsys, "verify", "--db", known.db)
    assert status == 1
    assert out.startswith("DAMAGED: 1 problem: damage in the middle of the log")


# -- printing: text from the log, an output that cannot be written -----------------------------

#: A session name that would add a row, and a task name that would drive the terminal.
FAKE_ROW_SESSION = "real\nfake  paused"
ESCAPING_NAME = "evil\x1b[31mRED\x1b[0m\u202e\a"


@pytest.mark.parametrize(
    ("command", "shown", "exact"),
    [
        ("sessions", "real\\nfake  paused", {"name": FAKE_ROW_SESSION}),
        (
            "tasks",
            "real\\nfake  paused  evil\\x1b[31mRED\\x1b[0m\\u202e\\x07",
            {"session": FAKE_ROW_SESSION, "name": ESCAPING_NAME},
        ),
    ],
    ids=["sessions", "tasks"],
)
def test_control_characters_from_the_log_are_escaped_in_tables(
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    command: str,
    shown: str,
    exact: dict[str, str],
) -> None:
    db = str(tmp_path / "work.db")
    with Engine.open(f"sqlite:///{db}", session=FAKE_ROW_SESSION, clock=clock) as engine:

        @engine.task(name=ESCAPING_NAME)
        def evil() -> int:
            return 1

        engine.submit(evil)
        engine.run()
    status, out, _ = run(capsys, command, "--db", db)
    assert status == 0
    assert len(out.splitlines()) == 2  # the header and one row
    assert shown in out
    assert not any(c in out for c in "\x1b\u202e\a")
    row = run_json(capsys, command, "--db", db)[command][0]
    assert {key: row[key] for key in exact} == exact  # JSON keeps them as they are


def test_control_characters_from_the_log_are_escaped_in_show_why_and_quarantine(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The names in what ``onward show``, ``why`` and ``quarantine`` print line by line are
    escaped as in tables."""
    db = str(tmp_path / "work.db")
    with Engine.open(f"sqlite:///{db}", session=FAKE_ROW_SESSION, clock=clock) as engine:

        @engine.task(name=ESCAPING_NAME)
        def evil() -> int:
            return 1

        task_id = engine.submit(evil)
        engine.run()  # its success's decision has the name among its inputs
        queued = engine.submit(evil)
    for command in (["show", task_id], ["why", task_id], ["quarantine", queued]):
        status, out, _ = run(capsys, *command, "--db", db)
        assert status == 0, out
        assert "evil\\x1b[31mRED" in out
        assert not any(c in out for c in "\x1b\u202e\a")


def test_control_characters_from_the_log_are_escaped_in_breakers_errors_and_verify(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breaker's dependency, an error's type, message, causes and sessions, and a damaged
    stream's id are printed escaped, as in tables."""
    db = str(tmp_path / "work.db")
    once = RetryPolicies(RetryPolicy(max_attempts=1))
    with Engine.open(f"sqlite:///{db}", session=ESCAPING_NAME, clock=clock, retries=once) as engine:

        @engine.step(breaker=ESCAPING_NAME)
        def call() -> None:
            try:
                raise ValueError(f"cause {ESCAPING_NAME}")
            except ValueError as cause:
                raise RuntimeError(f"refused {ESCAPING_NAME}") from cause

        @engine.task()
        def calls() -> None:
            call()

        engine.submit(calls)
        engine.run()
    with open_log(f"sqlite:///{db}") as log:  # a stream no lifecycle allows, named to escape
        damaged = [TaskSubmitted(name="x", args=[])]
        log.append(f"session-other-{ESCAPING_NAME}", damaged, expected_version=0)
    (error,) = run_json(capsys, "errors", "--db", db)["errors"]
    for command in (["breakers"], ["errors", error["signature"]], ["verify"]):
        status, out, _ = run(capsys, *command, "--db", db)
        assert status == (1 if command == ["verify"] else 0), out
        assert "evil\\x1b[31mRED" in out, command
        assert not any(c in out for c in "\x1b\u202e\a"), command


def test_control_characters_from_the_log_are_escaped_in_error_messages(
    tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """An error message that quotes the log (who answered an approval) is printed escaped."""
    db = str(tmp_path / "work.db")
    with Engine.open(f"sqlite:///{db}", clock=clock) as engine:

        @engine.action(impact="high")
        def publish() -> None:
            pass

        @engine.task()
        def release() -> None:
            publish()

        engine.submit(release)
        engine.run()
    (request,) = run_json(capsys, "approvals", "--db", db)["approvals"]
    status, _, _ = run(capsys, "deny", request["decision_id"], "--by", ESCAPING_NAME, "--db", db)
    assert status == 0
    status, _, err = run(capsys, "deny", request["decision_id"], "--db", db)
    assert status == 2
    assert "already denied by evil\\x1b[31mRED" in err
    assert not any(c in err for c in "\x1b\u202e\a")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("buffering", [1, -1], ids=["while-printing", "at-the-end"])
@pytest.mark.parametrize(
    "command", [["sessions"], ["tasks", "--json"], ["verify"]], ids=lambda c: c[0]
)
def test_a_full_disk_on_the_output_is_one_line(
    known: Known,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    buffering: int,
) -> None:
    """Output that cannot be written (line-buffered: as it is printed; block-buffered: at the
    last flush) exits 2 with one line, not a traceback, and never reads as damage (1)."""
    with open("/dev/full", "w", buffering=buffering, encoding="utf-8") as full:
        monkeypatch.setattr(sys, "stdout", full)
        status = main([*command, "--db", known.db])
        monkeypatch.undo()
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"onward {command[0]}: cannot write the ")
    assert err.endswith("output: No space left on device\n")
    assert err.count("\n") == 1


def test_the_onward_script(known: Known) -> None:
    script = Path(sys.executable).parent / "onward"
    done = subprocess.run(
        [str(script), "tasks", "--db", known.db, "--json"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = msgspec.json.decode(done.stdout)
    assert [t["state"] for t in report["tasks"]] == ["succeeded", "failed", "queued", "queued"]
    missing = subprocess.run(
        [str(script), "sessions", "--db", known.db + ".nope"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "no log at" in missing.stderr


def test_a_closed_standard_output_is_written_to_nowhere(known: Known, tmp_path: Path) -> None:
    """Started with its output closed (``>&-``), every command printed a traceback and exited
    1, an appending one after its append. Its output goes nowhere; it exits as it would."""
    script = Path(sys.executable).parent / "onward"
    for argv in (["tasks"], ["tasks", "--json"], ["export"]):
        done = subprocess.run(
            [str(script), *argv, "--db", known.db],
            stdout=None,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=60,
            preexec_fn=lambda: os.close(1),
        )
        assert done.returncode == 0, (argv, done.stderr)
        assert "Traceback" not in done.stderr


def test_tasks_says_which_tasks_a_newer_onward_wrote_to_and_lists_them_under_their_state(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A queued task holding an event of a newer onward keeps its state but leaves the queue:
    `onward tasks` says so, and `--state queued` lists it too (after the queue), as the listing
    without a filter shows it queued."""
    from onward.events import Event

    class FromTheFuture(Event, frozen=True, kw_only=True, tag="FromTheFuture"):
        """An event type a newer onward might write."""

        detail: str = ""

    db = tmp_path / "newer.db"
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock) as engine:

        @engine.task(name="job")
        def job(label: str) -> str:
            return label

        tainted = engine.submit("job", "tainted")
        other = engine.submit("job", "other")
    with open_log(f"sqlite:///{db}") as writer:
        writer.codec.register(FromTheFuture)
        writer.append(task_stream(tainted), [FromTheFuture(detail="x")], expected_version=1)

    def tasks(*argv: str) -> str:
        # Another process, which does not know the newer type.
        done = subprocess.run(
            [sys.executable, "-m", "onward", "tasks", "--db", str(db), *argv],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    listed = tasks()
    assert re.search(rf"^{tainted}\s+s\s+job\s+queued", listed, re.MULTILINE), listed
    assert "1 task(s) hold events of types this onward does not know" in listed, listed
    assert f"  {tainted}: 1 event(s)" in listed, listed
    queued = tasks("--state", "queued")
    assert queued.index(other) < queued.index(tainted), queued
    assert "does not resume them" in queued, queued
    rows = msgspec.json.decode(tasks("--json"))["tasks"]
    assert {r["task_id"]: r["unknown_events"] for r in rows} == {tainted: 1, other: 0}
