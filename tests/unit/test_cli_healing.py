"""The self-healing commands (``errors``, ``learn``, ``breakers``, ``fixes``) over a real log:
steps that raise real errors, healed by a fix, by retries, and stopped by a breaker."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine
from onward.cli.main import main
from onward.events import FixLearned, open_log
from onward.healing.remedies import default_registry
from onward.projections import CatchUp
from onward.runtime.engine import LEARNING_STREAM
from tests.conftest import FakeClock

START = "2023-11-14T22:13:20Z"  # FakeClock's start, 1_700_000_000
COOLED = "2023-11-14T22:14:20Z"  # START + BreakerPolicy().cooldown (60 s)
DECODE = "decode-with-detected-encoding"


class Healed(msgspec.Struct):
    """The log the tests read, and the signatures in it."""

    db: str
    head: int
    encoding: str  # UnicodeDecodeError, fixed by DECODE (1 occurrence)
    timeout: str  # TimeoutError, retried twice, then the step succeeded (2 occurrences)
    api: str  # RuntimeError of the "api" dependency, 5 tasks failed (5 occurrences)


def build(db: Path) -> Healed:
    clock = FakeClock()
    export = db.parent / "export.csv"
    export.write_bytes("name;price\ncafé;3€\n".encode("cp1252"))
    tries = {"ping": 0}
    with Engine.open(f"sqlite:///{db}", session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.step(name="read_export")
        def read_export(path: str, encoding: str = "utf-8") -> str:
            with open(path, encoding=encoding) as f:
                return f.read()

        @engine.step(name="ping")
        def ping() -> str:
            tries["ping"] += 1
            if tries["ping"] <= 2:
                raise TimeoutError("the server did not answer in 5 s")
            return "pong"

        @engine.step(name="call_api", breaker="api")
        def call_api(item: int) -> None:
            raise RuntimeError(f"the api answered 503 for item {item}")

        @engine.task(name="load")
        def load(path: str) -> int:
            return len(read_export(path, encoding="utf-8"))

        @engine.task(name="poll")
        def poll() -> str:
            return str(ping())

        @engine.task(name="sync")
        def sync(item: int) -> None:
            call_api(item)

        engine.submit(load, str(export))
        engine.submit(poll)
        for item in range(5):
            engine.submit(sync, item)
        engine.run()
        head = engine.log.head()
    with open_log(f"sqlite:///{db}", create=False) as log:
        host = CatchUp(log, checkpoint_every=0)
        host.open()
        views = host.projections.errors.signatures.values()
    by_type = {v.error_type: v.signature for v in views}
    return Healed(
        db=str(db),
        head=head,
        encoding=by_type["UnicodeDecodeError"],
        timeout=by_type["TimeoutError"],
        api=by_type["RuntimeError"],
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Healed:
    return build(tmp_path_factory.mktemp("healed") / "work.db")


@pytest.fixture
def healed(built: Healed, tmp_path: Path) -> Healed:
    """A copy of the built log, for a test that may append to it."""
    db = tmp_path / "work.db"
    shutil.copy(built.db, db)
    return msgspec.structs.replace(built, db=str(db))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    status, out, err = run(capsys, *argv, "--json")
    assert status == 0, err
    return msgspec.json.decode(out)


def head_of(db: str) -> int:
    with open_log(f"sqlite:///{db}", create=False) as log:
        return log.head()


def learned_events(db: str) -> list[FixLearned]:
    with open_log(f"sqlite:///{db}", create=False) as log:
        events = [r.event for r in log.read_stream(LEARNING_STREAM)]
    learned = [e for e in events if isinstance(e, FixLearned)]
    assert learned == events
    return learned


# -- errors ------------------------------------------------------------------------------------


def test_errors_human(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "errors", "--db", healed.db)
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "SIGNATURE", "TYPE", "SEEN", "LAST", "SEEN", "KIND", "BEST", "FIX", "RATE", "RETRIES",
        "LEARNED", "MESSAGE",
    ]  # fmt: skip
    # most occurrences first
    assert [r.split()[0] for r in rows] == [healed.api, healed.timeout, healed.encoding]
    api, timeout, encoding = (r.split() for r in rows)
    assert api[:9] == [healed.api, "RuntimeError", "5", START, "unknown", "-", "-", "0/0", "-"]
    assert " ".join(api[9:]) == "the api answered <n> for item <n>"
    assert timeout[1:8] == ["TimeoutError", "2", timeout[3], "transient", "-", "-", "1/2"]
    assert encoding[1:8] == ["UnicodeDecodeError", "1", START, "unknown", DECODE, "67%", "0/0"]
    # aligned: every row has its KIND column at the header's offset
    offset = header.index("KIND")
    assert [r[offset:].split()[0] for r in rows] == ["unknown", "transient", "unknown"]


def test_errors_json(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "errors", "--db", healed.db)
    assert list(report) == ["log", "position", "kind", "errors"]
    assert (report["position"], report["kind"]) == (healed.head, None)
    api, timeout, encoding = report["errors"]
    assert list(api) == [
        "signature", "error_type", "message", "occurrences", "first_seen", "last_seen", "kind",
        "best_fix", "best_fix_rate", "retries", "retry_successes", "learned",
    ]  # fmt: skip
    assert (api["signature"], api["occurrences"], api["first_seen"]) == (healed.api, 5, START)
    assert (api["best_fix"], api["best_fix_rate"], api["learned"]) == (None, 0.0, [])
    assert (timeout["kind"], timeout["retries"], timeout["retry_successes"]) == ("transient", 2, 1)
    assert encoding["best_fix"] == DECODE
    assert encoding["best_fix_rate"] == 0.6667  # (1 + 1) / (1 + 2)


def test_errors_by_kind(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "errors", "--kind", "transient", "--db", healed.db)
    assert report["kind"] == "transient"
    assert [e["signature"] for e in report["errors"]] == [healed.timeout]
    status, out, _ = run(capsys, "errors", "--kind", "systemic", "--db", healed.db)
    assert status == 0
    assert out == f"no errors in sqlite:///{healed.db} of kind systemic\n"
    with pytest.raises(SystemExit) as exc:
        main(["errors", "--kind", "sometimes", "--db", healed.db])
    assert exc.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_one_error_human(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "errors", healed.encoding[:8], "--db", healed.db)
    assert status == 0
    lines = out.splitlines()
    fields = {line[:13].strip(): line[13:] for line in lines[:13]}
    assert list(fields) == [
        "signature", "type", "message", "frames", "causes", "occurrences", "first seen",
        "last seen", "sessions", "kind", "best fix", "learned", "retries",
    ]  # fmt: skip
    assert fields["signature"] == healed.encoding
    assert fields["type"] == "UnicodeDecodeError"
    assert "codec can't decode byte <addr>" in fields["message"]
    assert fields["frames"] == "tests.unit.test_cli_healing:build.<locals>.read_export"
    assert (fields["causes"], fields["occurrences"]) == ("-", "1")
    assert fields["first seen"] == fields["last seen"] == START
    assert fields["sessions"] == "s"
    assert fields["best fix"] == f"{DECODE} (67%)"
    assert (fields["learned"], fields["retries"]) == ("-", "0 of 0 worked (rate 50%)")
    fixes = lines.index("fixes (1, rates smoothed: (successes + 1) / (tries + 2)):")
    assert lines[fixes + 1].split() == [
        "FIX", "ATTEMPTS", "SUCCESSES", "FAILURES", "RATE", "LEARNED",
    ]  # fmt: skip
    assert lines[fixes + 2].split() == [DECODE, "1", "1", "0", "67%"]
    history = lines.index("history (4, oldest first; the last 50 are kept):")
    assert [line.split(maxsplit=2)[2] for line in lines[history + 2 :]] == [
        f"observed in task {lines[history + 2].split()[-3]} step 0",
        "classified unknown (first seen)",
        f"fix {DECODE} attempted",
        f"fix {DECODE} succeeded",
    ]


def test_one_error_json(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "errors", healed.timeout, "--db", healed.db)
    assert list(report) == ["log", "position", "error"]
    error = report["error"]
    assert list(error) == [
        "signature", "error_type", "message", "frames", "causes", "occurrences", "first_seen",
        "last_seen", "sessions", "kind", "classification", "classification_reason", "best_fix",
        "best_fix_rate", "fixes", "learned", "retries", "retry_successes", "retry_rate",
        "history",
    ]  # fmt: skip
    assert error["signature"] == healed.timeout
    assert (error["error_type"], error["message"]) == (
        "TimeoutError",
        "the server did not answer in <n> s",
    )
    assert error["frames"] == ["tests.unit.test_cli_healing:build.<locals>.ping"]
    assert (error["occurrences"], error["sessions"], error["kind"]) == (2, ["s"], "transient")
    assert (error["retries"], error["retry_successes"], error["retry_rate"]) == (2, 1, 0.5)
    assert error["fixes"] == []
    assert list(error["history"][0]) == ["position", "time", "what"]
    assert error["history"][-1]["what"].startswith("retry succeeded in task ")
    encoding = run_json(capsys, "errors", healed.encoding, "--db", healed.db)["error"]
    assert encoding["fixes"] == [
        {"fix": DECODE, "attempts": 1, "successes": 1, "failures": 0, "rate": 0.6667,
         "learned": False},
    ]  # fmt: skip


def test_kind_does_not_go_with_a_signature(
    healed: Healed, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "errors", healed.api, "--kind", "unknown", "--db", healed.db)
    assert (status, out) == (2, "")
    assert "--kind filters the list" in err


def test_an_unknown_signature_exits_2(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "errors", "v1-nope", "--db", healed.db)
    assert (status, out) == (2, "")
    assert f"onward errors: no error signature 'v1-nope' in sqlite:///{healed.db}" in err
    status, out, err = run(capsys, "errors", "v1-", "--db", healed.db)
    assert (status, out) == (2, "")
    assert "3 error signatures in" in err
    assert "start with 'v1-'" in err


# -- breakers ----------------------------------------------------------------------------------


def test_breakers_human(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "breakers", "--db", healed.db)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "DEPENDENCY", "STATE", "CONSECUTIVE", "FAIL", "RATE", "RECENT", "CALLS", "OPENED", "AT",
        "COOL-DOWN", "UNTIL",
    ]  # fmt: skip
    assert lines[1].split() == ["api", "open", "5", "100%", "5", "5/5", START, COOLED]
    assert lines[2:5] == ["", "api: transitions (1, oldest first)", lines[4]]
    assert lines[4].split() == ["POS", "TIME", "FROM", "TO"]
    position, when, source, dest = lines[5].split()
    assert (when, source, dest) == ("2023-11-14T22:13:20.000Z", "new", "open")
    assert 0 < int(position) <= healed.head


def test_breakers_json(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "breakers", "--db", healed.db)
    assert list(report) == ["log", "position", "breakers"]
    (api,) = report["breakers"]
    assert list(api) == [
        "dependency", "state", "consecutive_failures", "failure_rate", "recent_calls", "calls",
        "failures", "last_failure_at", "opened_at", "cooldown_until", "trial_calls",
        "trial_successes", "trial_failures", "history",
    ]  # fmt: skip
    assert (api["dependency"], api["state"], api["consecutive_failures"]) == ("api", "open", 5)
    assert (api["failure_rate"], api["recent_calls"], api["calls"], api["failures"]) == (
        1.0,
        5,
        5,
        5,
    )
    assert (api["opened_at"], api["cooldown_until"]) == (START, COOLED)
    (move,) = api["history"]
    assert list(move) == ["source", "dest", "time", "position"]
    assert (move["source"], move["dest"], move["time"]) == ("new", "open", START)


def test_no_breakers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "empty.db"
    open_log(f"sqlite:///{db}").close()
    status, out, _ = run(capsys, "breakers", "--db", str(db))
    assert (status, out) == (0, f"no breakers in sqlite:///{db}\n")
    status, out, _ = run(capsys, "errors", "--db", str(db))
    assert (status, out) == (0, f"no errors in sqlite:///{db}\n")
    assert run_json(capsys, "breakers", "--db", str(db))["breakers"] == []


# -- fixes -------------------------------------------------------------------------------------


def test_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no log is read, and none is made
    names = list(default_registry().names)
    status, out, _ = run(capsys, "fixes")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["FIX", "WHAT", "IT", "IS", "FOR"]
    assert [r.split()[0] for r in rows] == names
    assert rows[0].split(maxsplit=1)[1] == (
        "Text that is not in the encoding it was read with (a cp1252 export read as UTF-8)."
    )
    report = run_json(capsys, "fixes")
    assert list(report) == ["fixes"]
    assert [f["name"] for f in report["fixes"]] == names
    assert all(list(f) == ["name", "summary"] and f["summary"] for f in report["fixes"])
    assert list(tmp_path.iterdir()) == []


# -- learn -------------------------------------------------------------------------------------


def test_learn_appends_one_fix_learned(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(
        capsys, "learn", healed.api[:8], "halve-batch-size", "--note", "pages of 50", "--db",
        healed.db,
    )  # fmt: skip
    assert status == 0, err
    assert head_of(healed.db) == healed.head + 1
    (event,) = learned_events(healed.db)
    assert (event.fix, event.signature, event.source, event.note) == (
        "halve-batch-size",
        healed.api,
        "manual",
        "pages of 50",
    )
    assert out.splitlines() == [
        f"learned: halve-batch-size fixes {healed.api} "
        "(RuntimeError: the api answered <n> for item <n>)",
        "from now on this error gets this fix first",
        "why: pages of 50",
        f"(recorded as FixLearned at position {healed.head + 1} in the stream 'learning' of "
        f"sqlite:///{healed.db})",
    ]
    error = run_json(capsys, "errors", healed.api, "--db", healed.db)["error"]
    assert error["learned"] == ["halve-batch-size"]
    assert error["fixes"] == [
        {"fix": "halve-batch-size", "attempts": 0, "successes": 0, "failures": 0, "rate": 0.5,
         "learned": True},
    ]  # fmt: skip
    assert error["history"][-1]["what"] == "learned halve-batch-size (manual)"
    _, out, _ = run(capsys, "errors", healed.api, "--db", healed.db)
    assert "learned      halve-batch-size" in out.splitlines()
    _, out, _ = run(capsys, "errors", "--db", healed.db)
    assert out.splitlines()[1].split()[8] == "halve-batch-size"


def test_learn_json_and_again(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    first = run_json(capsys, "learn", healed.encoding, DECODE, "--db", healed.db)
    assert first == {
        "log": f"sqlite:///{healed.db}",
        "stream": "learning",
        "position": healed.head + 1,
        "signature": healed.encoding,
        "fix": DECODE,
        "source": "manual",
        "note": "",
        "known_signature": True,
        "builtin_fix": True,
        "already_learned": False,
    }
    status, out, _ = run(capsys, "learn", healed.encoding, DECODE, "--db", healed.db)
    assert status == 0
    assert f"note: {DECODE} was already learned for this error; this records it again" in out
    assert len(learned_events(healed.db)) == 2
    assert run_json(capsys, "errors", healed.encoding, "--db", healed.db)["error"]["learned"] == [
        DECODE
    ]


@pytest.mark.parametrize("form", ["path", "url"])
def test_learn_on_a_missing_log_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    missing = tmp_path / "missing.db"
    db = str(missing) if form == "path" else f"sqlite:///{missing}"
    status, out, err = run(capsys, "learn", "v1-0123456789abcdef", DECODE, "--force", "--db", db)
    assert (status, out) == (2, "")
    assert f"onward learn: no log at {missing}" in err
    assert list(tmp_path.iterdir()) == []


def test_learn_an_unknown_fix_exits_2(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "learn", healed.api, "turn-it-off-and-on", "--db", healed.db)
    assert (status, out) == (2, "")
    assert "onward learn: no built-in fix is named 'turn-it-off-and-on'" in err
    assert all(name in err for name in default_registry().names)
    assert "--custom" in err
    assert head_of(healed.db) == healed.head


def test_learn_a_custom_fix(healed: Healed, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "learn", healed.api, "turn-it-off-and-on", "--custom", "--db", healed.db
    )
    assert status == 0
    assert "note: turn-it-off-and-on is not a built-in fix" in out
    (event,) = learned_events(healed.db)
    assert event.fix == "turn-it-off-and-on"
    status, _, err = run(capsys, "learn", healed.api, "two words", "--custom", "--db", healed.db)
    assert status == 2
    assert "a fix name has no spaces" in err
    secret = "fix-sk-live-4eC39HqLyjWDarjtT1zdp7dc"  # it would be stored redacted, never to match
    status, _, err = run(capsys, "learn", healed.api, secret, "--custom", "--db", healed.db)
    assert status == 2
    assert "looks like a secret" in err
    assert "4eC39HqLyjWDarjtT1zdp7dc" not in err
    assert len(learned_events(healed.db)) == 1


def test_learn_an_unknown_signature_needs_force(
    healed: Healed, capsys: pytest.CaptureFixture[str]
) -> None:
    new = "v1-0123456789abcdef"
    status, out, err = run(capsys, "learn", new, DECODE, "--db", healed.db)
    assert (status, out) == (2, "")
    assert f"no error signature {new!r}" in err
    assert "pass --force" in err
    assert head_of(healed.db) == healed.head
    # --force takes a whole id only, and never picks one of several known signatures
    for wanted in ("v1-0123", "oops", "v1-"):
        status, _, err = run(capsys, "learn", wanted, DECODE, "--force", "--db", healed.db)
        assert status == 2, wanted
    assert head_of(healed.db) == healed.head
    report = run_json(capsys, "learn", new, DECODE, "--force", "--db", healed.db)
    assert (report["signature"], report["known_signature"]) == (new, False)
    error = run_json(capsys, "errors", new, "--db", healed.db)["error"]
    assert (error["occurrences"], error["learned"]) == (0, [DECODE])


def test_learn_into_memory_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        capsys, "learn", "v1-0123456789abcdef", DECODE, "--force", "--db", "memory://"
    )
    assert status == 2
    assert "memory://" in err


def test_the_read_commands_append_nothing(
    healed: Healed, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["errors"], ["errors", healed.api], ["breakers"]):
        for extra in ([], ["--json"]):
            status, _, _ = run(capsys, *argv, *extra, "--db", healed.db)
            assert status == 0
    assert head_of(healed.db) == healed.head


def test_learn_shows_its_note_as_the_log_holds_it(
    healed: Healed, capsys: pytest.CaptureFixture[str]
) -> None:
    """A note holding a token is stored redacted: the command said (and printed in JSON) the
    token itself as the note it recorded."""
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    note = f"fixed with token {token}"
    shown = run_json(capsys, "learn", healed.encoding, DECODE, "--db", healed.db, "--note", note)
    assert token not in json.dumps(shown)
    assert shown["note"].startswith("fixed with token [REDACTED")
    status, out, _ = run(
        capsys, "learn", healed.encoding, DECODE, "--db", healed.db, "--note", note
    )
    assert status == 0
    assert token not in out
    assert [e.note for e in learned_events(healed.db)] == [shown["note"], shown["note"]]
