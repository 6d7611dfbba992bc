"""A file whose name ends in a secret's name (``/etc/passwd``, ``/run/secrets/db_password``),
named in an error message (``cat: /etc/passwd: No such file or directory``), is a path, not
the name of a pair: the message after it is kept, and so is an error's signature. A secret
after a secret's name is redacted still, a path's name too when a value follows it rather
than a message (``/prod/db/password: hunter2``, grep's ``/run/secrets/token:hunter2``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec
import pytest

from onward import fingerprint
from onward.cli.main import main
from onward.events import Redactor

REDACTOR = Redactor()


@pytest.mark.parametrize(
    "text",
    [
        "cat: /etc/passwd: No such file or directory",
        "open /run/secrets/db_password: no such file or directory",
        "/run/secrets/db_password: Permission denied",
        "[Errno 2] No such file or directory: '/app/secrets/token'",
        "[Errno 13] Permission denied: '/home/ana/.pgpass'",
        "[Errno 2] No such file or directory: 'token.json'",
        "cannot read ~/.git-credentials: permission denied",
        "tail: cannot open '/var/log/auth.log' for reading: Permission denied",
        "head: cannot open '/run/secrets/api_key': Permission denied",
        "'/run/secrets/token': No such file or directory",
        "~/.config/gh/token: Is a directory",
        "onward rules: rules file /etc/passwd: not valid TOML",
        "C:\\secrets\\token: Access is denied",
    ],
)
def test_a_path_ending_in_a_secrets_name_is_kept(text: str) -> None:
    assert REDACTOR.redact(text) == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password: hunter2", "hunter2"),
        ("DB_PASSWORD=hunter2", "hunter2"),
        ("passwd=hunter2", "hunter2"),
        ("/etc/passwd password=hunter2", "hunter2"),
        ("cat: /etc/passwd: No such file; password: hunter2", "hunter2"),
        # A value, not a message, after a path: an SSM parameter's, grep's file:line.
        ("/prod/db/password: hunter2", "hunter2"),
        ("/prod/db/password=Summer", "Summer"),
        ("/prod/db/password: Summer\n", "Summer"),
        ("/run/secrets/db_password:hunter2 and more", "hunter2"),
        ("{'/run/secrets/token': 'hunter2 x'}", "hunter2 x"),
        # No path: a name after a word and a slash, or an escape before it.
        ("user/password: admin hunter2", "admin"),
        ("login:\\npassword: hunter2 now", "hunter2"),
    ],
)
def test_a_secret_after_a_secrets_name_is_redacted(text: str, secret: str) -> None:
    assert secret not in REDACTOR.redact(text)


def test_a_missing_files_message_is_kept_in_an_event() -> None:
    data = msgspec.json.encode({"error": "cat: /etc/passwd: No such file or directory"})
    assert REDACTOR.redact_json(data) == data


def test_a_missing_secret_files_signature_is_that_of_its_message(tmp_path: Path) -> None:
    # A command's error, as a step raises it from what the command wrote on stderr.
    ran = subprocess.run(
        ["cat", str(tmp_path / "db_password")], capture_output=True, text=True, check=False
    )
    assert ran.returncode != 0
    try:
        raise RuntimeError(ran.stderr.strip())
    except RuntimeError as exc:
        raised = exc
    redacted = fingerprint(raised, redact=REDACTOR.redact)
    assert redacted.message == fingerprint(raised).message
    assert "REDACTED" not in redacted.message


def test_the_rules_command_names_a_missing_file_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "secrets" / "db_password"
    assert main(["rules", "--rules", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}: no such file" in err, err
