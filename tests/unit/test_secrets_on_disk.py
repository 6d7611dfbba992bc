"""No secret reaches the disk: the raw bytes of an SQLite log's files never hold one.

Events carrying every message of :mod:`tests.secrets_corpus` are appended to a real SQLite
log; then the database file, its write-ahead log and its shared-memory index are read as bytes,
while the log is still open (the WAL then holds the new pages) and again after it is closed
(the WAL has been folded into the database). A canary string that is not a secret is appended
with them and must be found: it shows the search looks where the events are.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine, RetryPolicies, RetryPolicy
from onward.cli.main import main
from onward.events import (
    Append,
    ErrorObserved,
    Event,
    EventLog,
    Redactor,
    SecretPattern,
    StepCompleted,
    StepFailed,
    TaskFailed,
    TaskSubmitted,
    open_log,
)
from tests.conftest import FakeClock
from tests.secrets_corpus import NOT_SECRETS, SECRETS_CORPUS

CANARY = "canary-7f3a9c-not-a-secret"


def forms(secret: str) -> list[bytes]:
    """The ways a secret could be spelled in the stored bytes: raw, and JSON-escaped."""
    raw = secret.encode()
    escaped = msgspec.json.encode(secret)[1:-1]
    ascii_escaped = secret.encode("unicode_escape")
    return list(dict.fromkeys([raw, escaped, ascii_escaped]))


def carriers(message: str) -> list[Event]:
    """Every place an agent's error text ends up in an event."""
    return [
        StepFailed(
            index=0, name="call_api", attempt=1, error_type="httpx.HTTPStatusError", message=message
        ),
        ErrorObserved(
            signature="0" * 32,
            error_type="builtins.RuntimeError",
            message=message,
            frames=["agent.tools:call"],
        ),
        TaskSubmitted(name="retry_request", args=[message], kwargs={"context": {"log": message}}),
        TaskFailed(error_type="builtins.RuntimeError", message=message, signature=""),
        StepCompleted(index=1, name="fetch", result={"stderr": message, "lines": [message]}),
    ]


def files_of(db: Path) -> dict[str, bytes]:
    """The bytes of the database file and of its -wal and -shm files, those that exist."""
    found: dict[str, bytes] = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            found[path.name] = path.read_bytes()
    return found


def leaks(files: dict[str, bytes], secrets: list[str]) -> list[str]:
    """Where each secret is found, in a form short enough to read in a failure."""
    found: list[str] = []
    for secret in secrets:
        for form in forms(secret):
            for name, data in files.items():
                if form in data:
                    found.append(f"{secret[:16]!r}... ({len(secret)} chars) in {name}")
    return found


ALL_SECRETS = [secret for _, secrets in SECRETS_CORPUS for secret in secrets]


@pytest.fixture(params=["", "?synchronous=normal"], ids=["full", "normal"])
def log_path(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "secrets.db"
    return f"sqlite:///{path}{request.param}", path


def append_corpus(log: EventLog) -> None:
    for n, (message, _secrets) in enumerate(SECRETS_CORPUS):
        log.append(f"task-{n}", carriers(message), expected_version=0)
    log.commit(
        [
            Append(
                stream=f"task-{len(SECRETS_CORPUS) + n}",
                events=carriers(message),
                expected_version=0,
            )
            for n, (message, _secrets) in enumerate(SECRETS_CORPUS)
        ]
    )
    log.append("task-canary", [TaskSubmitted(name=CANARY)], expected_version=0)


def test_corpus_is_not_empty() -> None:
    assert len(SECRETS_CORPUS) >= 30
    assert all(secrets for _, secrets in SECRETS_CORPUS)


def test_no_secret_on_disk_while_the_log_is_open_and_after(
    log_path: tuple[str, Path], clock: FakeClock
) -> None:
    url, db = log_path
    log = open_log(url, clock=clock)
    try:
        append_corpus(log)
        open_files = files_of(db)
        assert open_files.get(db.name + "-wal"), "the WAL should hold the appended pages"
        assert any(CANARY.encode() in data for data in open_files.values())
        assert leaks(open_files, ALL_SECRETS) == []

        # What is read back is redacted too, and says so.
        for n, (message, secrets) in enumerate(SECRETS_CORPUS):
            for recorded in log.read_stream(f"task-{n}"):
                text = msgspec.json.encode(recorded.event).decode()
                assert "[REDACTED:" in text, message[:60]
                for secret in secrets:
                    assert secret not in text
        assert log.verify().ok
    finally:
        log.close()

    closed_files = files_of(db)
    assert CANARY.encode() in closed_files[db.name]
    assert leaks(closed_files, ALL_SECRETS) == []


def test_lines_that_are_not_secrets_reach_the_disk_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    with open_log(f"sqlite:///{db}") as log:
        for n, line in enumerate(NOT_SECRETS):
            log.append(
                f"task-{n}",
                [StepFailed(index=0, name="s", error_type="E", message=line)],
                expected_version=0,
            )
        for n, line in enumerate(NOT_SECRETS):
            (recorded,) = log.read_stream(f"task-{n}")
            assert isinstance(recorded.event, StepFailed)
            assert recorded.event.message == line
    data = files_of(db)[db.name]
    for line in NOT_SECRETS:
        assert msgspec.json.encode(line)[1:-1] in data, line


EMPLOYEE_ID = "EMP-" + "493817"
INTERNAL_HOST = "vault-7.corp.internal"


@pytest.mark.parametrize(
    "redactor",
    [
        Redactor().with_patterns(
            SecretPattern("employee-id", r"EMP-\d{6}"),
            SecretPattern("internal-host", r"(?P<host>[a-z0-9-]+\.corp\.internal)", group="host"),
        ),
        Redactor(extra=[r"EMP-\d{6}", r"[a-z0-9-]+\.corp\.internal"]),
    ],
    ids=["with_patterns", "extra"],
)
def test_user_added_patterns_keep_their_matches_off_the_disk(
    tmp_path: Path, clock: FakeClock, redactor: Redactor
) -> None:
    db = tmp_path / "custom.db"
    message = f"access denied for {EMPLOYEE_ID} at https://{INTERNAL_HOST}/v1/secret/data/app"
    token = SECRETS_CORPUS[0][1][0]
    log = open_log(f"sqlite:///{db}", clock=clock, redactor=redactor)
    try:
        log.append("task-1", carriers(message), expected_version=0)
        log.append("task-2", carriers(f"{message}; {SECRETS_CORPUS[0][0]}"), expected_version=0)
        assert leaks(files_of(db), [EMPLOYEE_ID, INTERNAL_HOST, token]) == []
        (first, *_) = log.read_stream("task-1")
        assert isinstance(first.event, StepFailed)
        assert EMPLOYEE_ID not in first.event.message
        assert "[REDACTED:" in first.event.message
        assert "access denied for" in first.event.message
    finally:
        log.close()
    assert leaks(files_of(db), [EMPLOYEE_ID, INTERNAL_HOST, token]) == []


def test_the_default_redactor_does_not_know_the_user_patterns(tmp_path: Path) -> None:
    # The control for the test above: without the user's patterns the text reaches the disk,
    # so the search for it would have found it.
    db = tmp_path / "default.db"
    with open_log(f"sqlite:///{db}") as log:
        log.append(
            "task-1",
            [StepFailed(index=0, name="s", error_type="E", message=f"denied for {EMPLOYEE_ID}")],
            expected_version=0,
        )
    assert EMPLOYEE_ID.encode() in files_of(db)[db.name]


def fragments(secret: str, size: int = 10) -> list[bytes]:
    """Every run of ``size`` characters of ``secret``: what would be left of it once some of
    its characters became placeholders (``sk-live-<n>eC39...``)."""
    return [secret[i : i + size].encode() for i in range(len(secret) - size + 1)]


def test_no_part_of_a_secret_reaches_the_error_records_or_what_onward_errors_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The error records keep the normalised message and causes, whose digits are placeholders:
    # normalised before it was redacted, a token no longer reads as one and most of it stays.
    db = tmp_path / "errors.db"
    key = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"
    cause_token = "xoxb-1234567890-1234567890123-AbCdEfGhIjKl"
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    with Engine.open(f"sqlite:///{db}", session="s", clock=FakeClock(), retries=retries) as engine:

        @engine.step()
        def call_api() -> None:
            try:
                raise ConnectionError(f"handshake refused for {cause_token}")
            except ConnectionError as exc:
                raise RuntimeError(f"401 from the API, token {key} rejected") from exc

        @engine.task()
        def job() -> None:
            call_api()

        engine.submit(job)
        engine.run()
        sig = next(iter(engine.projections.errors.signatures))

    assert main(["errors", "--db", str(db), "--json"]) == 0
    assert main(["errors", sig, "--db", str(db), "--json"]) == 0
    assert main(["errors", sig, "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    places = {**files_of(db), "onward errors": shown.encode()}
    found = [
        f"{fragment!r} in {name}"
        for secret in (key, cause_token)
        for fragment in fragments(secret)
        for name, data in places.items()
        if fragment in data
    ]
    assert found == []
    assert "[REDACTED:openai-key]" in shown
    assert "[REDACTED:slack-token]" in shown


def test_a_secret_on_the_line_after_its_name_in_a_repr_stays_off_the_disk(tmp_path: Path) -> None:
    # An exception given a dict (or several arguments) shows their repr, where a YAML text's
    # line break is the escape "\n": the value is past it and its indent, not the escape.
    db = tmp_path / "yaml.db"
    password = "Yaml-" + "Pw44q9"
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    with Engine.open(f"sqlite:///{db}", session="s", clock=FakeClock(), retries=retries) as engine:

        @engine.step()
        def load() -> None:
            raise ValueError({"config": f"db:\n  password:\n    {password}\n"})

        @engine.task()
        def job() -> str:
            try:
                load()
            except ValueError as exc:
                return str(exc)
            return ""

        task_id = engine.submit(job)
        engine.run()
        shown = engine.result(task_id)

    assert "password:\\n    [REDACTED:secret-value]" in shown
    assert leaks(files_of(db), [password]) == []


def test_a_password_on_a_failed_commands_line_stays_off_the_disk(tmp_path: Path) -> None:
    # subprocess.CalledProcessError shows the command as the repr of its list, where a gap
    # between two arguments is "', '"; and a --password option gives its value after a gap.
    db = tmp_path / "command.db"
    passwords = ["Opt-" + "Pw1x7k", "Ssh-" + "Pw2x7k", "Curl-" + "Pw3x7k"]
    commands = [
        [sys.executable, "-c", "raise SystemExit(3)", "--password", passwords[0]],
        ["sshpass", "-p", passwords[1], "ssh", "backup.internal"],
        ["curl", "-sS", "-u", f"ops:{passwords[2]}", "https://backup.internal"],
    ]
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    with Engine.open(f"sqlite:///{db}", session="s", clock=FakeClock(), retries=retries) as engine:

        @engine.step()
        def run(n: int) -> None:
            if n == 0:
                subprocess.run(commands[0], check=True)
            raise subprocess.CalledProcessError(1, commands[n])

        @engine.task()
        def job(n: int) -> str:
            try:
                run(n)
            except subprocess.CalledProcessError as exc:
                return str(exc)
            return ""

        task_ids = [engine.submit(job, n) for n in range(len(commands))]
        engine.run()
        shown = [engine.result(task_id) for task_id in task_ids]

    assert all("[REDACTED:cli-password]" in text for text in shown), shown
    assert leaks(files_of(db), passwords) == []


def test_headers_given_as_name_and_value_tuples_stay_off_the_disk(tmp_path: Path) -> None:
    # urllib's header_items(), http.client's getheaders() and os.environ.items() give a
    # list of (name, value) tuples: each is a pair, as a dict's member is.
    db = tmp_path / "headers.db"
    secrets = ["k3y-" + "Abc123x", "tok-" + "9xyzQ7"]
    with Engine.open(f"sqlite:///{db}", session="s", clock=FakeClock()) as engine:

        @engine.step()
        def request_headers() -> list[tuple[str, str]]:
            headers = {"X-Api-Key": secrets[0], "Authorization": secrets[1], "Accept": "*/*"}
            return urllib.request.Request("https://api.example", headers=headers).header_items()

        @engine.task()
        def job() -> list[tuple[str, str]]:
            return request_headers()

        task_id = engine.submit(job)
        engine.run()
        headers = engine.result(task_id)

    assert dict(headers) == {
        "X-api-key": "[REDACTED:secret-value]",
        "Authorization": "[REDACTED:secret-value]",
        "Accept": "*/*",
    }
    assert leaks(files_of(db), secrets) == []


def kept_by_steps(db: Path, outputs: list[Any]) -> list[Any]:
    """Each output through a real engine on an SQLite log: a step returns it and another
    raises it (in an exception's message); what each task gave back, the returned value and
    the message."""
    retries = RetryPolicies(RetryPolicy(max_attempts=1))
    with Engine.open(f"sqlite:///{db}", session="s", clock=FakeClock(), retries=retries) as engine:

        @engine.step()
        def give(n: int) -> Any:
            return outputs[n]

        @engine.step()
        def fail(n: int) -> None:
            raise RuntimeError(outputs[n])

        @engine.task()
        def job(n: int) -> list[Any]:
            try:
                fail(n)
            except RuntimeError as exc:
                return [give(n), str(exc)]
            return []

        task_ids = [engine.submit(job, n) for n in range(len(outputs))]
        engine.run()
        return [engine.result(task_id) for task_id in task_ids]


def test_cookie_headers_stay_off_the_disk(tmp_path: Path) -> None:
    # A cookie header's value is a credential as a whole: a session's id, a CSRF token, a
    # signed session, whatever the cookies are named.
    db = tmp_path / "cookies.db"
    secrets = ["sEss10n-" + "a8Fk29dk", "gh-sess-" + "Q7wErT9y", "s1gned-" + "Zx9Qw8Er"]
    shown = kept_by_steps(
        db,
        [
            f"GET /v1 HTTP/1.1\r\nCookie: sessionid={secrets[0]}; _gh_sess={secrets[1]}\r\n",
            f"HTTP/1.1 200 OK\nSet-Cookie: session={secrets[2]}; Path=/; HttpOnly\n",
            {"Cookie": f"sessionid={secrets[0]}", "Set-Cookie": f"user_session={secrets[1]}"},
        ],
    )
    assert all("[REDACTED:" in repr(pair) for pair in shown), shown
    assert leaks(files_of(db), secrets) == []


def test_credentials_given_to_a_commands_options_stay_off_the_disk(tmp_path: Path) -> None:
    # As --password's: after a gap on a shell line, or in the repr of the argument list
    # that subprocess.CalledProcessError shows.
    db = tmp_path / "options.db"
    secrets = ["dOck3r-" + "Pw1x7k", "gh0-" + "T0k3nx7k", "ap1-" + "K3yx7k", "cUrl-" + "Pw4x7k"]
    shown = kept_by_steps(
        db,
        [
            f"+ docker login -u ci -p {secrets[0]} registry.example.com",
            str(
                subprocess.CalledProcessError(
                    1, ["gh", "auth", "login", "--with-token", secrets[1]]
                )
            ),
            str(subprocess.CalledProcessError(2, ["tool", "--api-key", secrets[2], "sync"])),
            f"+ curl -sSuops:{secrets[3]} https://backup.internal",
        ],
    )
    assert all("[REDACTED:cli-password]" in repr(pair) for pair in shown), shown
    assert leaks(files_of(db), secrets) == []


def test_passwords_named_pw_stay_off_the_disk(tmp_path: Path) -> None:
    # ROOT_PW, DB_PW: an environment's or a config's password, as a text and as a dict.
    db = tmp_path / "pw.db"
    secrets = ["r00t-" + "Pw1x7k", "db-" + "Pw2x7k", "my-" + "Pwd3x7k"]
    shown = kept_by_steps(
        db,
        [
            f"container exited: env ROOT_PW={secrets[0]} DB_PW={secrets[1]} MYSQL_PWD={secrets[2]}",
            {"ROOT_PW": secrets[0], "DB_PW": secrets[1], "MYSQL_PWD": secrets[2], "port": 3306},
        ],
    )
    assert shown[1][0] == {
        "ROOT_PW": "[REDACTED:secret-value]",
        "DB_PW": "[REDACTED:secret-value]",
        "MYSQL_PWD": "[REDACTED:secret-value]",
        "port": 3306,
    }
    assert leaks(files_of(db), secrets) == []


def test_keys_given_as_a_urls_user_stay_off_the_disk(tmp_path: Path) -> None:
    # A Sentry DSN's key, a token given as the user of a git remote: a URL's user with no
    # password that reads as a key. A user's name (deploy, git) stays.
    db = tmp_path / "dsn.db"
    secrets = ["9f86d081884c7d659a2feaa0c55ad015", "1c149afbf4c8996fb92427ae41e4649b934ca495"]
    dsn = f"https://{secrets[0]}@o4504.ingest.sentry.io/4504"
    shown = kept_by_steps(
        db,
        [
            f"sentry_sdk: cannot send event to {dsn} (timed out); ssh://deploy@backup.internal ok",
            f"fatal: unable to access 'https://{secrets[1]}@github.com/acme/agents.git/': 403",
            {"dsn": dsn, "remote": "git@github.com:acme/agents.git"},
        ],
    )
    assert "ssh://deploy@backup.internal" in shown[0][0]
    assert shown[2][0]["remote"] == "git@github.com:acme/agents.git"
    assert all("[REDACTED:url-key]" in repr(pair) for pair in shown), shown
    assert leaks(files_of(db), secrets) == []


def test_name_and_value_pairs_in_an_error_message_stay_off_the_disk(tmp_path: Path) -> None:
    # The text of a pair as Python (a tuple's repr: KeyError(("api_key", ...)), a message that
    # shows header_items() or os.environ.items()) or JSON writes it: the value after a
    # secret's name, as in "password=..." and {'password': ...}.
    db = tmp_path / "pairs.db"
    secrets = ["k3y-" + "Abc123x", "pAss-" + "9xyzQ7", "t0k-" + "Q7wErT9y", "s1gn-" + "Zx9Qw8Er"]
    headers = {"X-Api-Key": secrets[0], "Accept": "*/*"}
    shown = kept_by_steps(
        db,
        [
            urllib.request.Request("https://api.example", headers=headers).header_items(),
            ("DB_PASSWORD", secrets[1]),
            f'rejected: ["access_token", "{secrets[2]}"]',
            [("SIGNING_KEY", "hM4kZ9qW2xR7tY5uV8bN3cL6pJ1sD0fG")],
        ],
    )
    assert all("[REDACTED:" in message for _, message in shown), shown
    assert leaks(files_of(db), [*secrets, "hM4kZ9qW2xR7tY5uV8bN3cL6pJ1sD0fG"]) == []
    assert "'Accept', '*/*'" in shown[0][1]
