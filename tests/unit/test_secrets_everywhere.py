"""No secret leaves a real engine by any route: what it stores, what it logs, what it hands to
the application.

One session runs tasks that fail with every message of :mod:`tests.secrets_corpus` (in the
exception, in the arguments, in an idempotency key), one whose message holds a token just
where the 4,000-character limit cuts it, one that takes and returns ``bytes`` holding
credentials, notices that carry secrets (inside a task and outside), and an
``on_interruption`` that fails with a secret in its traceback. Then the raw bytes of the
SQLite file, its ``-wal`` and ``-shm`` (while open and after close), a ``pg_dump`` of the same
session run on PostgreSQL, the captured log output of every ``onward`` logger and what the
application was handed are searched for each secret, in every spelling it could take there
(raw, JSON-escaped, base64 of bytes, hex of PostgreSQL's ``bytea``).
"""

from __future__ import annotations

import base64
import importlib
import io
import logging
import pkgutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine, Interruption, TaskFailedError
from onward.events import RecordRedactor, UsageError, redacted_logger
from tests.conftest import FakeClock
from tests.secrets_corpus import BEARER, GITHUB_PAT, SECRETS_CORPUS, STRIPE_LIVE

ALL_SECRETS = [secret for _, secrets in SECRETS_CORPUS for secret in secrets]
CUT_TOKEN = "ghp_" + "Q7w" * 12  # 40 characters, straddling the 4,000-character limit
KEY_SECRET = "sk-" + "k3Y" * 12
NOTICE_SECRET = "xoxb-" + "1234567890-" + "n0T1cE" * 5
OUTSIDE_SECRET = "hf_" + "oUtS1de" * 5
PAGER_SECRET = "glpat-" + "pAg3r" * 5
SESSION_SECRET = "github_pat_" + "S3ss10n" * 4
BYTES_SECRET = "AKIA" + "BYTES0123456789A"
ARGUMENT_BYTES_SECRET = "npm_" + "aRgByt3s" * 4 + "ABCD"
CANARY = "canary-4f1d-not-a-secret"

EXTRA = [
    CUT_TOKEN,
    CUT_TOKEN[:14],  # not even the part before the limit
    KEY_SECRET,
    NOTICE_SECRET,
    OUTSIDE_SECRET,
    PAGER_SECRET,
    SESSION_SECRET,
    BYTES_SECRET,
    ARGUMENT_BYTES_SECRET,
    BEARER,
    STRIPE_LIVE,
]
SECRETS = [*ALL_SECRETS, *EXTRA]


def spellings(secret: str) -> list[bytes]:
    """Every way ``secret`` could be written in a stored record or a dump of one."""
    raw = secret.encode()
    found = [raw, msgspec.json.encode(secret)[1:-1], secret.encode("unicode_escape")]
    # Base64 of bytes holding the secret, at each of the three alignments (the middle of the
    # encoding, which does not depend on the neighbouring bytes).
    for shift in range(3):
        encoded = base64.b64encode(b"\x00" * shift + raw)
        middle = encoded[4:-4]
        if len(middle) >= 8:
            found.append(middle)
    found += [form.hex().encode() for form in list(found)]  # PostgreSQL's bytea, as dumped
    return list(dict.fromkeys(found))


def leaks(sources: dict[str, bytes], secrets: list[str] = SECRETS) -> list[str]:
    """Where each secret is found, short enough to read in a failure."""
    return [
        f"{secret[:14]!r}... in {where}"
        for secret in secrets
        for form in spellings(secret)
        for where, data in sources.items()
        if form in data
    ]


def sqlite_files(db: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            found[path.name] = path.read_bytes()
    return found


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything the ``onward`` loggers write, formatted with tracebacks and stacks."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("onward")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class LeakySession:
    """The session of the module docstring, on one log URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clock = FakeClock()
        self.handed: list[Interruption] = []
        self.refusal = ""

    def on_interruption(self, interruption: Interruption) -> None:
        self.handed.append(interruption)
        raise RuntimeError(f"pager webhook failed with token {PAGER_SECRET}")

    def run(self) -> Engine:
        engine = Engine.open(
            self.url,
            session="leaks",
            clock=self.clock,
            sleep=self.clock.advance,
            on_interruption=self.on_interruption,
        )

        @engine.step(name="call_api")
        def call_api(message: str) -> None:
            raise RuntimeError(message)

        @engine.task(name="fail_with")
        def fail_with(message: str, *, context: dict[str, Any]) -> None:
            call_api(message)

        @engine.step(name="download")
        def download() -> bytes:
            head = f"GET /v1 HTTP/1.1\r\nAuthorization: Bearer {BEARER}\r\nX-Key: {BYTES_SECRET}"
            return head.encode()

        @engine.task(name="fetch")
        def fetch(body: bytes) -> dict[str, Any]:
            engine.notify(f"fetch is slow; using {NOTICE_SECRET}", urgent=True)
            return {"raw": download(), "note": CANARY, "stripe": f"key {STRIPE_LIVE}"}

        @engine.task(name="cut")
        def cut() -> None:
            raise ValueError("x" * 3990 + " " + CUT_TOKEN + " and more")

        for message, _secrets in SECRETS_CORPUS:
            engine.submit(fail_with, message, context={"log": message, "n": 1})
        engine.submit(
            fetch, f"payload token={ARGUMENT_BYTES_SECRET}".encode(), key=f"fetch {KEY_SECRET}"
        )
        engine.submit(cut)
        engine.notify(f"maintenance window; {OUTSIDE_SECRET}", urgent=True)
        with pytest.raises(UsageError) as refused:
            Engine.open(self.url, session=f"nightly {SESSION_SECRET}", clock=self.clock)
        self.refusal = str(refused.value)
        engine.run()
        return engine


def check_what_was_said(session: LeakySession, engine: Engine, log_output: str) -> None:
    """The log output, the notices handed over and the refusal hold no secret, and are there."""
    spoken = {
        "log output": log_output.encode(),
        "notices handed over": msgspec.json.encode(session.handed),
        "the refusal of the session name": session.refusal.encode(),
    }
    assert leaks(spoken) == []
    assert " failed: RuntimeError" in log_output
    assert "on_interruption failed" in log_output
    assert "Traceback" in log_output  # the callback's traceback, redacted
    assert "[REDACTED:gitlab-token]" in log_output
    assert len(session.handed) == 2
    assert all("[REDACTED:" in i.summary for i in session.handed)
    assert "holds what looks like a secret" in session.refusal
    cut = next(t for t in engine.tasks() if t.name == "cut")
    with pytest.raises(TaskFailedError) as failed:
        engine.result(cut.task_id)
    message = str(failed.value)
    assert "[REDACT" in message
    assert CUT_TOKEN[:6] not in message


def test_no_secret_reaches_the_sqlite_files_or_the_log_output(
    tmp_path: Path, captured: io.StringIO
) -> None:
    db = tmp_path / "leaks.db"
    session = LeakySession(f"sqlite:///{db}")
    engine = session.run()
    try:
        open_files = sqlite_files(db)
        assert open_files.get("leaks.db-wal"), "the WAL should hold the appended pages"
        assert leaks(open_files) == []
        assert any(CANARY.encode() in data for data in open_files.values())
        check_what_was_said(session, engine, captured.getvalue())
    finally:
        engine.close()
    closed = sqlite_files(db)
    assert CANARY.encode() in closed["leaks.db"]
    assert leaks(closed) == []


@pytest.mark.postgres
def test_no_secret_reaches_a_dump_of_the_postgres_log(
    postgres_url: str, captured: io.StringIO
) -> None:
    session = LeakySession(postgres_url)
    engine = session.run()
    try:
        check_what_was_said(session, engine, captured.getvalue())
    finally:
        engine.close()
    base, _, query = postgres_url.partition("?")
    schema = query.removeprefix("schema=")
    dump = subprocess.run(
        ["pg_dump", "--data-only", f"--schema={schema}", base],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    assert CANARY.encode().hex().encode() in dump or CANARY.encode() in dump
    assert leaks({"pg_dump": dump}) == []


# -- the log records themselves ------------------------------------------------------------


def test_every_onward_logger_redacts_its_records() -> None:
    import onward
    from onward import events, projections

    loggers = {}
    infos = [
        *pkgutil.walk_packages(onward.__path__, "onward."),
        *pkgutil.walk_packages(events.__path__, "onward.events."),
        *pkgutil.walk_packages(projections.__path__, "onward.projections."),
    ]
    for info in infos:
        if info.name.endswith("__main__"):
            continue  # runs a program when imported
        module = importlib.import_module(info.name)
        logger = getattr(module, "logger", None)
        if isinstance(logger, logging.Logger):
            loggers[info.name] = logger
    assert {"onward.runtime.scheduler", "onward.events.log"} <= set(loggers)
    for name, logger in loggers.items():
        assert any(isinstance(f, RecordRedactor) for f in logger.filters), name


def test_a_record_with_a_secret_in_its_arguments_traceback_and_stack(
    captured: io.StringIO,
) -> None:
    logger = redacted_logger("onward.engine")
    try:
        raise ConnectionError(f"redis://:{GITHUB_PAT}@cache:6379 refused")
    except ConnectionError:
        logger.exception("lost %s", f"Authorization: Bearer {BEARER}", stack_info=True)
    logger.info("plain %d", 3)
    output = captured.getvalue()
    assert leaks({"log": output.encode()}, [GITHUB_PAT, BEARER]) == []
    assert "lost Authorization: Bearer [REDACTED:bearer-token]" in output
    assert "ConnectionError: redis://:[REDACTED:github-token]@cache:6379 refused" in output
    assert "Stack (most recent call last)" in output
    assert "plain 3" in output
