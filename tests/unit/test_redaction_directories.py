"""``PWD`` and ``OLDPWD``: the shell's working directories, in every environment dump (``env``
in a failed job's output, ``os.environ`` in a config dump or an error), are no passwords; a
password under ``PWD`` (an ODBC connection string's, ``UID=sa;PWD=...``) still is one."""

from __future__ import annotations

import msgspec
import pytest

from onward.events import Redactor

REDACTOR = Redactor()


@pytest.mark.parametrize(
    "text",
    [
        "PWD=/home/ana/projects/etl\nHOME=/home/ana\nSHELL=/bin/bash",
        "OLDPWD=/home/ana PWD=/home/ana/etl",
        "environ({'HOME': '/root', 'PWD': '/app', 'OLDPWD': '/'})",
        "cwd: PWD=/Users/ana/src/site",
        "PWD=~/work/etl",
        "PWD=/",
        "set PWD=C:\\Users\\ana\\etl",
        "PWD=/usr/src/app",
    ],
)
def test_a_working_directory_is_kept(text: str) -> None:
    assert REDACTOR.redact(text) == text


@pytest.mark.parametrize(
    "document",
    [{"PWD": "/home/ana/etl"}, {"env": {"OLDPWD": "/srv/app", "PWD": "/srv/app/jobs"}}],
)
def test_a_working_directory_member_is_kept(document: object) -> None:
    data = msgspec.json.encode(document)
    assert REDACTOR.redact_json(data) == data


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Driver={ODBC Driver 18};Server=db;UID=sa;PWD=S3cr3t!pass;", "S3cr3t"),
        ("Server=db;UID=sa;PWD=/S3cr3t;Encrypt=yes", "S3cr3t"),
        ("PWD=hunter2secret", "hunter2secret"),
        ("pwd: /hunter2", "hunter2"),
    ],
)
def test_a_password_under_pwd_is_redacted(text: str, secret: str) -> None:
    assert secret not in REDACTOR.redact(text)


def test_a_password_member_under_pwd_is_redacted() -> None:
    redacted = REDACTOR.redact_json(msgspec.json.encode({"PWD": "S3cr3t!pass"}))
    assert b"S3cr3t" not in redacted
