"""Steering from the command line (``onward retry``, ``fork``, ``abandon``, ``send``, ``get``,
``schedules``, ``limits``), and schedules, limits and messages, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from onward import Engine, TaskCancelledError, TaskFailedError
from onward.cli.main import main
from onward.events import DecisionMade, MessageSent, TaskRetried, open_log
from tests.conftest import FakeClock

HOUR = 1_700_000_000.0 - 1_700_000_000.0 % 3600


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return str(request.getfixturevalue("postgres_url"))


def open_engine(url: str, clock: FakeClock) -> Engine:
    return Engine.open(url, session="cli", clock=clock, sleep=clock.advance, healing=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_retry_fork_send_and_get_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock(HOUR)
    ran: Counter[str] = Counter()
    broken = {"yes": True}

    def register(engine: Engine) -> None:
        @engine.step(name="fetch")
        def fetch(n: int) -> int:
            ran["fetch"] += 1
            return n

        @engine.step(name="parse")
        def parse(n: int) -> int:
            ran["parse"] += 1
            if broken["yes"]:
                raise ValueError("broken parser")
            return n * 10

        @engine.task(name="job")
        def job(n: int) -> int:
            return parse(fetch(n))

        @engine.task(name="chat")
        def chat() -> object:
            engine.set_state("stage", {"waiting": ("answer", 1)})
            return engine.recv("answer")

    with open_engine(url, clock) as engine:
        register(engine)
        failed = engine.submit("job", 4)
        talker = engine.submit("chat")
        engine.run()
        assert engine.task_view(failed).state == "failed"
    broken["yes"] = False
    status, out, _ = cli(
        capsys, "retry", failed[:8], "--db", url, "--reason", "fixed", "--by", "ana"
    )
    assert status == 0
    assert "retried" in out
    status, out, _ = cli(
        capsys, "fork", failed, "--db", url, "--from-step", "1", "--args", "[5]", "--json"
    )
    assert status == 0
    fork = json.loads(out)["fork"]
    status, out, _ = cli(capsys, "get", talker, "stage", "--db", url, "--json")
    assert json.loads(out)["value"] == {"waiting": {"$tuple": ["answer", 1]}}
    status, out, _ = cli(capsys, "send", talker, "answer", '{"ok": [1, 2]}', "--db", url)
    assert status == 0
    assert "it waits for this topic" in out
    with open_engine(url, clock) as engine:
        register(engine)
        engine.run()
        assert engine.result(failed) == 40
        assert engine.result(fork) == 40  # fetch's outcome taken from the origin (n=4)
        assert engine.result(talker) == {"ok": [1, 2]}
        assert ran == {"fetch": 1, "parse": 3}
        retried = [
            r.event
            for r in engine.log.read_stream(f"task-{failed}")
            if isinstance(r.event, TaskRetried)
        ]
        assert [(r.by, r.reason) for r in retried] == [("ana", "fixed")]
        decisions = [
            r.event
            for r in engine.log.read_stream("session-cli")
            if isinstance(r.event, DecisionMade) and r.event.kind == "task_retried"
        ]
        assert decisions[0].inputs["by"] == "ana"
        (sent,) = [r.event for r in engine.log.read_stream(f"inbox-{talker}")]
        assert isinstance(sent, MessageSent)
        assert sent.sender.startswith("onward-cli:")


#: JSON far deeper than Python's parser recurses.
DEEP = "[" * 50_000 + "]" * 50_000


def test_bad_steering_input_is_refused_clearly(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock(HOUR)
    with open_engine(url, clock) as engine:

        @engine.task(name="done")
        def done() -> int:
            return 1

        task_id = engine.submit("done")
        engine.run()
        head = engine.log.head()
    cases = [
        (("retry", task_id), "only a failed, cancelled or missed task can be retried"),
        (("send", task_id, "topic", "{not json"), "must be JSON"),
        (("send", task_id, "topic", DEEP), "the message is nested deeper than 100 levels"),
        (
            ("fork", task_id, "--from-step", "0", "--args", DEEP),
            "--args is nested deeper than 100 levels",
        ),
        (
            ("fork", task_id, "--from-step", "0", "--kwargs", DEEP),
            "--kwargs is nested deeper than 100 levels",
        ),
        (
            ("fork", task_id, "--from-step", "0", "--args", '{"a": 1}'),
            "--args must be a JSON array",
        ),
        (("fork", task_id, "--from-step", "2"), "no recorded outcome"),
        (("get", task_id, "nothing"), "published nothing under 'nothing'"),
        (("abandon", task_id), "can be abandoned"),
        (("cancel", task_id), "is succeeded: TaskCancelled is not allowed"),
        (("reprioritise", task_id, "high"), "is succeeded: TaskReprioritised is not allowed"),
        (
            ("reprioritise", task_id, "urgent"),
            "unknown priority 'urgent': use one of critical, high, normal, low",
        ),
        (("retry", "ffffffffffff"), "no task"),
    ]
    for argv, message in cases:
        status, _, err = cli(capsys, *argv, "--db", url)
        assert status == 2, argv
        assert message in err, (argv, err)
    with Engine.open(url, session="cli", clock=clock) as engine:
        after = [type(r.event).__name__ for r in engine.log.read(after=head)]
        assert after == ["SessionResumed"]  # only the reopening: the refusals appended nothing


def test_schedules_and_limits_are_listed(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock(HOUR)
    with open_engine(url, clock) as engine:
        engine.limit("model-api", concurrency=1)

        @engine.step(limit="model-api")
        def ask(n: int) -> int:
            return n

        @engine.task(name="nightly", schedule="0 3 * * *")
        def nightly() -> None:
            return None

        @engine.task(name="job")
        def job(n: int) -> int:
            return ask(n)

        engine.submit("job", 1)
        clock.advance(86_400)
        engine.run()
    status, out, _ = cli(capsys, "schedules", "--db", url)
    assert status == 0
    assert "nightly" in out
    assert "0 3 * * *" in out
    rows = json.loads(cli(capsys, "schedules", "--db", url, "--json")[1])["schedules"]
    assert [(r["name"], r["runs"], r["missed"]) for r in rows] == [("nightly", 1, "once")]
    assert rows[0]["next_tick"].endswith("03:00:00+00:00")
    limits = json.loads(cli(capsys, "limits", "--db", url, "--json")[1])["limits"]
    assert [(r["name"], r["concurrency"], r["taken"], r["in_use"]) for r in limits] == [
        ("model-api", 1, 1, 0)
    ]


def test_a_task_is_cancelled_and_reprioritised_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """From a shell, as from Python: a queued task runs first once made critical, a queued one
    cancelled never runs, and a running one cancelled stops at its next step."""
    clock = FakeClock(HOUR)
    ran: list[str] = []

    def register(engine: Engine) -> None:
        @engine.step(name="note")
        def note(what: str) -> str:
            ran.append(what)
            if what == "first of long":  # an operator cancels it while this step runs
                status, out, err = cli(capsys, "cancel", ids["long"], "--db", url)
                assert status == 0, err
                assert "was running" in out
            return what

        @engine.task(name="job")
        def job(name: str) -> None:
            note(f"first of {name}")
            note(f"second of {name}")

    ids: dict[str, str] = {}
    with open_engine(url, clock) as engine:
        register(engine)
        for name in ("long", "later", "dropped", "urgent"):
            ids[name] = engine.submit("job", name)
    status, out, err = cli(capsys, "reprioritise", ids["urgent"], "critical", "--db", url)
    assert (status, err) == (0, "")
    assert "normal to critical" in out
    status, out, _ = cli(
        capsys, "cancel", ids["dropped"], "--db", url, "--reason", "not needed", "--json"
    )
    assert status == 0
    assert json.loads(out)["cancelled"]["state"] == "cancelled"
    with open_engine(url, clock) as engine:
        register(engine)
        engine.run()
        assert ran == [
            "first of urgent",
            "second of urgent",
            "first of long",  # cancelled while it ran: its second step never runs
            "first of later",
            "second of later",
        ]
        for name in ("long", "dropped"):
            assert engine.task_view(ids[name]).state == "cancelled"
            with pytest.raises(TaskCancelledError):
                engine.result(ids[name])


def test_an_unregistered_task_is_listed_and_abandoned_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock(HOUR)
    with open_engine(url, clock) as engine:

        @engine.task(name="old.name")
        def old() -> None: ...

        task_id = engine.submit("old.name")
        engine.registry.tasks.clear()
        engine.run()
    status, out, _ = cli(capsys, "tasks", "--db", url, "--state", "unregistered")
    assert task_id in out
    status, out, _ = cli(capsys, "abandon", task_id, "--db", url, "--reason", "gone")
    assert status == 0
    with open_engine(url, clock) as engine, pytest.raises(TaskFailedError, match="Abandoned"):
        engine.result(task_id)


def test_get_prints_json_even_for_a_nan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON has no NaN nor infinity: a published NaN prints as the log keeps it, tagged, with
    or without --json, so that `onward get ... | jq` reads it (it printed as null, as None
    does)."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with open_engine(url, FakeClock(HOUR)) as engine:

        @engine.task(name="measure")
        def measure() -> None:
            engine.set_state("scores", {"mean": float("nan"), "top": float("inf"), "n": 3})

        task_id = engine.submit("measure")
        engine.run()
    status, out, _ = cli(capsys, "get", task_id, "scores", "--db", url)
    assert status == 0
    assert json.loads(out) == {"mean": {"$float": "nan"}, "top": {"$float": "inf"}, "n": 3}


def test_get_prints_a_value_with_keys_json_has_no_text_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A published dict keyed by ints, tuples or None, and one whose only key starts with $,
    print as JSON with and without --json (they raised a TypeError, or the value was decoded
    twice: ``{"$tuple": [1, 2]}`` printed as ``[1, 2]``), as the log keeps them (tagged); and
    one format whatever the sibling keys (int keys printed as text beside plain ones, tagged
    beside a tuple key; a tuple printed as a list, bytes as the text of their base64)."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    values: dict[str, object] = {
        "ints": {1: "a"},
        "tuples": {(1, 2): "a"},
        "nothing": {None: "a"},
        "dollar": {"$tuple": [1, 2]},
        "mixed": {"pair": (1, 2), "raw": b"\x00\x01", "text": "AAE="},
    }
    with open_engine(url, FakeClock(HOUR)) as engine:

        @engine.task(name="publish")
        def publish() -> None:
            for key, value in values.items():
                engine.set_state(key, value)

        task_id = engine.submit("publish")
        engine.run()
    expected = {
        "ints": {"$dict": [[1, "a"]]},
        "tuples": {"$dict": [[{"$tuple": [1, 2]}, "a"]]},
        "nothing": {"$dict": [[None, "a"]]},
        "dollar": {"$dict": [["$tuple", [1, 2]]]},
        "mixed": {"pair": {"$tuple": [1, 2]}, "raw": {"$bytes": "AAE="}, "text": "AAE="},
    }
    for key, shown in expected.items():
        status, out, _ = cli(capsys, "get", task_id, key, "--db", url)
        assert (status, json.loads(out)) == (0, shown)
        status, out, _ = cli(capsys, "get", task_id, key, "--db", url, "--json")
        assert (status, json.loads(out)["value"]) == (0, shown)


def test_get_prints_a_text_that_would_drive_the_terminal_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A published text holding a bidirectional override (U+202E), a C1 control sequence
    introducer (U+009B) or DEL printed them as they are: JSON escapes only the characters
    below U+0020, so they reached the reader's terminal. They print as JSON escapes, and the
    JSON still reads back as the value."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    text = "ok \u202eevil \x9b2J \x7f \u2028 \U000e0041 café"
    with open_engine(url, FakeClock(HOUR)) as engine:

        @engine.task(name="publish")
        def publish() -> None:
            engine.set_state("note", {text: [text]})

        task_id = engine.submit("publish")
        engine.run()
    status, out, _ = cli(capsys, "get", task_id, "note", "--db", url)
    assert status == 0
    assert all(line.isprintable() for line in out.split("\n"))
    assert all(c not in out for c in "\u202e\x9b\x7f\u2028\U000e0041")
    assert "café" in out
    assert json.loads(out) == {text: [text]}


FORK_APP = """
import os

from onward import Engine

engine = Engine.open(os.environ["ONWARD_FORK_APP_DB"], session="cli", healing=False)


@engine.task()
def scale(n: int, factor: int = 10) -> int:
    return n * factor
"""


def test_fork_refuses_arguments_its_tasks_signature_does_not_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--engine MODULE:ENGINE`` the task's signature is known: a fork given more (or
    fewer) positional arguments than it takes is refused in one line, and no fork is
    appended; arguments that fit are forked as before."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    (tmp_path / "fork_signature_app.py").write_text(FORK_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ONWARD_FORK_APP_DB", url)
    monkeypatch.delitem(sys.modules, "fork_signature_app", raising=False)
    with open_engine(url, FakeClock(HOUR)) as engine:

        @engine.task()
        def scale(n: int, factor: int = 10) -> int:
            return n * factor

        task_id = engine.submit(scale, 4)
        engine.run()

    def forks() -> int:
        with open_engine(url, FakeClock(HOUR)) as engine:
            return sum(1 for t in engine.tasks() if t.forked_from == task_id)

    for wrong in ("[1, 2, 3]", "[]"):
        status, out, err = cli(
            capsys,
            "fork",
            task_id,
            "--db",
            url,
            "--from-step",
            "0",
            "--args",
            wrong,
            "--engine",
            "fork_signature_app:engine",
        )
        assert (status, out) == (2, "")
        (line,) = err.splitlines()
        assert line.startswith(f"onward fork: fork of {task_id}: ")
        assert "argument" in line
        assert forks() == 0
    status, out, _err = cli(
        capsys,
        "fork",
        task_id,
        "--db",
        url,
        "--from-step",
        "0",
        "--args",
        "[5, 3]",
        "--engine",
        "fork_signature_app:engine",
        "--json",
    )
    assert status == 0
    assert forks() == 1
    monkeypatch.delitem(sys.modules, "fork_signature_app", raising=False)


OPENING_APP = """
import os

from onward import Engine

engine = Engine.open(os.environ["ONWARD_FORK_APP_DB"], session="elsewhere", healing=False)
default = Engine.open(healing=False)  # ONWARD_DB, as a worker's module may
elsewhere = Engine.open("sqlite:///not-here.db", session="cli")


@engine.task()
def scale(n: int, factor: int = 10) -> int:
    return n * factor
"""


def test_fork_reads_the_engines_registrations_without_opening_its_log(tmp_path: Path) -> None:
    """``fork --engine`` imported the module, whose engines opened as they do in a worker:
    on the log being forked, each appended its session's opening (a ``SessionStarted`` of a
    session nobody runs there), and another log was created. Only the fork is appended now,
    and no file is created; run as a user runs it, in a process of its own."""
    db = tmp_path / "log.db"
    url = f"sqlite:///{db}"
    (tmp_path / "opening_app.py").write_text(OPENING_APP)
    with open_engine(url, FakeClock(HOUR)) as engine:

        @engine.task()
        def scale(n: int, factor: int = 10) -> int:
            return n * factor

        task_id = engine.submit(scale, 4)
        engine.run()
        head = engine.log.head()
    env = {**os.environ, "ONWARD_FORK_APP_DB": url, "ONWARD_DB": url}
    env.pop("ONWARD_SESSION", None)
    command = [sys.executable, "-m", "onward", "fork", task_id, "--db", url, "--from-step", "0"]
    command += ["--args", "[5]", "--engine", "opening_app:engine", "--json"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    fork = json.loads(done.stdout)["fork"]
    with open_log(url, create=False) as log:
        appended = [(r.stream, type(r.event).__name__) for r in log.read(after=head)]
    assert appended == [(f"task-{fork}", "TaskSubmitted")]
    assert not (tmp_path / "not-here.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["log.db"]
