"""Secrets written with escapes: a JSON or Python ``\\uXXXX`` (an error message that quotes a
JSON body, ``{"key": "\\u0041KIA..."}``), JSON's escaped slash (``\\/``, as PHP writes base64),
and a URL's percent-encoding (``?options=-c%20app.password%3D...``). The patterns read the text
as it is written, where an escape cuts a token or hides the ``=`` after a secret's name: the
text is also read with its escapes decoded, and a secret found there is replaced where it is
written, escapes and all."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from onward import Engine
from onward.events import Redactor
from tests.conftest import FakeClock
from tests.secrets_corpus import AWS_KEY_ID, AWS_SECRET, GITHUB_PAT

REDACTOR = Redactor()


def _u(text: str) -> str:
    """Every character of ``text`` as ``\\uXXXX``."""
    return "".join(f"\\u{ord(c):04x}" for c in text)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f'upstream said {{"key_id": "\\u0041{AWS_KEY_ID[1:]}"}}', AWS_KEY_ID[1:]),
        (f'body: {{"error": "bad {_u("ghp_")}{GITHUB_PAT[4:]}"}}', GITHUB_PAT[4:]),
        ('{"pass\\u0077ord": "hunter2secret"}', "hunter2secret"),
        ("config: password\\u003dhunter2secret", "hunter2secret"),
        (
            '{"aws_secret_access_key":"' + AWS_SECRET.replace("/", "\\/") + '"}',
            AWS_SECRET.replace("/", "\\/"),
        ),
        (
            "connecting to postgresql://u@db/app?options=-c%20app.password%3Dhunter2secret",
            "hunter2",
        ),
        ("GET /login?user=bob&pass%77ord=hunter2secret HTTP/1.1", "hunter2"),
        ("redirect to /cb?next=%2Fhome%3Ftoken%3Dhunter2secret42", "hunter2"),
    ],
)
def test_a_secret_behind_escapes_is_redacted(text: str, secret: str) -> None:
    redacted = REDACTOR.redact(text)
    assert secret not in redacted
    assert "[REDACTED:" in redacted
    assert REDACTOR.redact(redacted) == redacted
    stored = REDACTOR.redact_json(msgspec.json.encode({"message": text}))
    assert secret.encode() not in stored
    assert msgspec.json.decode(stored) == {"message": redacted}


def test_only_the_secret_goes_and_its_name_stays() -> None:
    text = "postgresql://u@db/app?options=-c%20app.password%3Dhunter2secret&sslmode=disable"
    assert REDACTOR.redact(text) == (
        "postgresql://u@db/app?options=-c%20app.password%3D[REDACTED:secret-value]&sslmode=disable"
    )


@pytest.mark.parametrize(
    "text",
    [
        "GET /search?q=caf%C3%A9%20au%20lait&page=2",
        'the JSON said {"name": "caf\\u00e9", "count": 3}',
        "path C:\\users\\ana\\u0041pp escaped",
        "see https://example.com/a%2Fb%2Fc?x=1%3D1",
        "https:\\/\\/example.com\\/docs\\/index.html",
    ],
)
def test_escapes_without_a_secret_are_kept(text: str) -> None:
    assert REDACTOR.redact(text) == text


def test_a_tasks_error_quoting_an_escaped_secret_is_stored_redacted(tmp_path: Path) -> None:
    """An error message that quotes a JSON body with the key escaped reaches the log redacted."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = Engine.open(url, session="escapes", clock=FakeClock())

    @engine.task()
    def call() -> None:
        raise RuntimeError(f'403 from API: {{"key": "\\u0041{AWS_KEY_ID[1:]}"}}')

    engine.submit(call)
    engine.run()
    engine.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert AWS_KEY_ID[1:].encode() not in data
    assert b"403 from API" in data
