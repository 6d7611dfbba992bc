"""Secret redaction: every secret of the corpus goes, ordinary text stays, JSON stays valid."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from onward import events
from onward.events._labels import stands_for_a_secret
from onward.events.exceptions import UsageError
from onward.events.redaction import DEFAULT_PATTERNS, Redactor, SecretPattern
from tests.secrets_corpus import GITHUB_PAT, NOT_SECRETS, SECRETS_CORPUS

REDACTOR = Redactor()
MARKER = re.compile(r"\[REDACTED:[a-z0-9-]+\]")


def redact_message(message: str, redactor: Redactor = REDACTOR) -> str:
    """The message as an event holding it is stored: encoded, redacted, decoded."""
    stored = redactor.redact_json(msgspec.json.encode({"message": message}))
    decoded = msgspec.json.decode(stored)
    assert isinstance(decoded, dict)
    assert list(decoded) == ["message"]
    assert isinstance(decoded["message"], str)
    return decoded["message"]


def corpus_id(case: tuple[str, list[str]]) -> str:
    return case[0].split(":")[0][:40]


# The public surface.


def test_public_names() -> None:
    assert events.redaction.__all__ == sorted(events.redaction.__all__)
    assert set(events.redaction.__all__) == {
        "DEFAULT_PATTERNS",
        "RecordRedactor",
        "Redactor",
        "SecretPattern",
        "redact_for_any_log",
        "redacted_logger",
    }
    for name in events.redaction.__all__:
        assert getattr(events.redaction, name) is not None
    assert Redactor.__doc__
    assert SecretPattern.__doc__
    for method in (Redactor.redact, Redactor.redact_json, Redactor.with_patterns):
        assert method.__doc__
        assert "Returns:" in method.__doc__


def test_default_patterns_are_named_uniquely_and_compile() -> None:
    names = [p.name for p in DEFAULT_PATTERNS]
    assert len(names) == len(set(names))
    for pattern in DEFAULT_PATTERNS:
        assert re.fullmatch(r"[a-z0-9-]+", pattern.name)
        re.compile(pattern.regex)
    assert Redactor().patterns == DEFAULT_PATTERNS


def test_secret_pattern_is_frozen() -> None:
    pattern = SecretPattern("x", "x")
    with pytest.raises(AttributeError):
        pattern.name = "y"  # type: ignore[misc]
    assert pattern.group == 0


# The corpus: every secret goes, in text and in JSON.


@pytest.mark.parametrize(("message", "secrets"), SECRETS_CORPUS, ids=corpus_id)
def test_corpus_secrets_are_redacted(message: str, secrets: list[str]) -> None:
    redacted = REDACTOR.redact(message)
    assert redacted != message
    assert MARKER.search(redacted)
    for secret in secrets:
        assert secret in message  # the corpus is consistent
        assert secret not in redacted


@pytest.mark.parametrize(("message", "secrets"), SECRETS_CORPUS, ids=corpus_id)
def test_corpus_secrets_are_redacted_in_json(message: str, secrets: list[str]) -> None:
    encoded = msgspec.json.encode({"message": message})
    stored = REDACTOR.redact_json(encoded)
    for secret in secrets:
        assert secret.encode() not in stored
        assert msgspec.json.encode(secret)[1:-1] not in stored  # nor its escaped form
    assert redact_message(message) == REDACTOR.redact(message)


@pytest.mark.parametrize(("message", "secrets"), SECRETS_CORPUS, ids=corpus_id)
def test_corpus_redaction_is_idempotent(message: str, secrets: list[str]) -> None:
    once = REDACTOR.redact(message)
    assert REDACTOR.redact(once) == once
    stored = REDACTOR.redact_json(msgspec.json.encode({"message": message}))
    assert REDACTOR.redact_json(stored) == stored


@pytest.mark.parametrize("line", NOT_SECRETS)
def test_ordinary_lines_are_untouched(line: str) -> None:
    assert REDACTOR.redact(line) == line
    encoded = msgspec.json.encode({"message": line})
    assert REDACTOR.redact_json(encoded) == encoded


# What exactly is kept and what goes.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=[REDACTED:secret-value]"),
        ("PASSWORD: hunter2, retries: 3", "PASSWORD: [REDACTED:secret-value], retries: 3"),
        ("DB_PASSWORD='two words'", "DB_PASSWORD='[REDACTED:secret-value]'"),
        ('{"api_key": "abc123"}', '{"api_key": "[REDACTED:secret-value]"}'),
        ("x-api-key: abc123", "x-api-key: [REDACTED:secret-value]"),
        ("client_secret => abc123", "client_secret => [REDACTED:secret-value]"),
        ("?access_token=abc123&page=2", "?access_token=[REDACTED:secret-value]&page=2"),
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer [REDACTED:bearer-token]"),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [REDACTED:basic-auth]"),
        ("Authorization: opaque-123", "Authorization: [REDACTED:secret-value]"),
        (
            "postgres://app:s3cr3t@db:5432/x and https://alice@example.com",
            "postgres://app:[REDACTED:url-password]@db:5432/x and https://alice@example.com",
        ),
        ("redis://:pw@cache:6379", "redis://:[REDACTED:url-password]@cache:6379"),
        ("amqp://u:p@ss@mq/vhost", "amqp://u:[REDACTED:url-password]@mq/vhost"),
        # A URL's user that is a key (a Sentry DSN's, a token as the user); not a user's name.
        (
            "https://abc123def456@o123.ingest.sentry.io/42",
            "https://[REDACTED:url-key]@o123.ingest.sentry.io/42",
        ),
        (
            "SENTRY_DSN=https://e3b0c44298fc1c149afbf4c8996fb924@o1.ingest.sentry.io/5",
            "SENTRY_DSN=https://[REDACTED:url-key]@o1.ingest.sentry.io/5",
        ),
        (
            "clone https://Qw7eRtyUiOPaSdfGhJkLzX@git.example.com/a.git",
            "clone https://[REDACTED:url-key]@git.example.com/a.git",
        ),
        (
            "ssh://deploy@host https://build-agent-01@ci.example.com https://john.doe@h",
            "ssh://deploy@host https://build-agent-01@ci.example.com https://john.doe@h",
        ),
        (
            "https://user2024admin@h https://FabrikamFiber@dev.azure.com/FabrikamFiber/p",
            "https://user2024admin@h https://FabrikamFiber@dev.azure.com/FabrikamFiber/p",
        ),
        (
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\nnext line",
            "[REDACTED:private-key]\nnext line",
        ),
        ("truncated: -----BEGIN PRIVATE KEY-----\nMIIEvg", "truncated: [REDACTED:private-key]"),
        (
            '{\\"user\\": \\"bob\\", \\"password\\": \\"pw\\"}',
            '{\\"user\\": \\"bob\\", \\"password\\": \\"[REDACTED:secret-value]\\"}',
        ),
        ("password: None", "password: None"),
        ("password reset succeeded", "password reset succeeded"),
        ("SMTP_PASS=Tr0ub4dor&3", "SMTP_PASS=[REDACTED:secret-value]"),
        ("?user=bob&pass=pw&page=2", "?user=bob&pass=[REDACTED:secret-value]&page=2"),
        ("dbPass: hunter2", "dbPass: [REDACTED:secret-value]"),
        # pw as a name's last word (ROOT_PW, admin-pw, dbPw; pwd anywhere); not pw alone.
        ("ROOT_PW=Hunter2pw", "ROOT_PW=[REDACTED:secret-value]"),
        (
            "DB_PW: hunter2, MYSQL_PWD=s3cr3t",
            "DB_PW: [REDACTED:secret-value], MYSQL_PWD=[REDACTED:secret-value]",
        ),
        ("{'admin-pw': 'x9y'}", "{'admin-pw': '[REDACTED:secret-value]'}"),
        ("dbPw=x9y", "dbPw=[REDACTED:secret-value]"),
        (
            "pw=1 DB_PWNED=3 HTTPW=2 cpw: x https://example.pw:8443/",
            "pw=1 DB_PWNED=3 HTTPW=2 cpw: x https://example.pw:8443/",
        ),
        ("mysql -uroot -phunter2 db", "mysql -uroot -p[REDACTED:cli-password] db"),
        ("sshpass -p hunter2 ssh h", "sshpass -p [REDACTED:cli-password] ssh h"),
        ("['sshpass', '-p', 'pw', 'ssh']", "['sshpass', '-p', '[REDACTED:cli-password]', 'ssh']"),
        ("tool --db-password hunter2 -v", "tool --db-password [REDACTED:cli-password] -v"),
        ("curl -u ops:hunter2 https://h", "curl -u ops:[REDACTED:cli-password] https://h"),
        # The pair quoted, as a shell line most often gives it.
        ('curl -u "ops:hunter2" https://h', 'curl -u "ops:[REDACTED:cli-password]" https://h'),
        ("curl --user 'ops:hunter2' h", "curl --user 'ops:[REDACTED:cli-password]' h"),
        (
            "psql --password -h db; mysql -u root -p db",
            "psql --password -h db; mysql -u root -p db",
        ),
        ("['mysql', '-p', 'db'] --password-stdin", "['mysql', '-p', 'db'] --password-stdin"),
        # A credential given to an option after a gap, as --password's is.
        (
            "docker login -u me -p Hunter2pw r.io",
            "docker login -u me -p [REDACTED:cli-password] r.io",
        ),
        ("docker login -pHunter2pw", "docker login -p[REDACTED:cli-password]"),
        (
            "['docker', 'login', '-u', 'me', '-p', 'pw9', 'r.io']",
            "['docker', 'login', '-u', 'me', '-p', '[REDACTED:cli-password]', 'r.io']",
        ),
        (
            "gh auth login --with-token T0kVal",
            "gh auth login --with-token [REDACTED:cli-password]",
        ),
        (
            "tool --token T0k --api-key K3y --access-token A7c -v",
            "tool --token [REDACTED:cli-password] --api-key [REDACTED:cli-password]"
            " --access-token [REDACTED:cli-password] -v",
        ),
        (
            "tool --secret S3c --client-secret C1s --client_secret C2s",
            "tool --secret [REDACTED:cli-password] --client-secret [REDACTED:cli-password]"
            " --client_secret [REDACTED:cli-password]",
        ),
        ("['cmd', '--token', 'T0k']", "['cmd', '--token', '[REDACTED:cli-password]']"),
        ("curl -sSuops:Pw9 https://h", "curl -sSuops:[REDACTED:cli-password] https://h"),
        ("curl -uops:Pw9 https://h", "curl -uops:[REDACTED:cli-password] https://h"),
        # What stands for a credential, names a file or a secret, or asks for one, stays.
        (
            "tool --token ${TOKEN} --api-key $API_KEY --password $DB_PASSWORD",
            "tool --token ${TOKEN} --api-key $API_KEY --password $DB_PASSWORD",
        ),
        (
            "tool --token-file /run/t --secret-name db-pw --token --verbose",
            "tool --token-file /run/t --secret-name db-pw --token --verbose",
        ),
        (
            "docker login --password-stdin r.io; docker run -p 80:80 img",
            "docker login --password-stdin r.io; docker run -p 80:80 img",
        ),
        ("curl --url https://h -o out -sS", "curl --url https://h -o out -sS"),
        # A negated option takes no value: what follows it is an argument (pg_dump's -w).
        ("pg_dump --no-password mydb > db.sql", "pg_dump --no-password mydb > db.sql"),
        ("['pg_dump', '--no-password', 'mydb']", "['pg_dump', '--no-password', 'mydb']"),
        ("tool --no-token repo --without_api_key x", "tool --no-token repo --without_api_key x"),
        # A redirection is no password: the credential comes from the file.
        (
            "gh auth login --with-token < ~/gh.txt; tool --token >out.log",
            "gh auth login --with-token < ~/gh.txt; tool --token >out.log",
        ),
        ("{'cfg': 'token:\\n  abc123'}", "{'cfg': 'token:\\n  [REDACTED:secret-value]'}"),
        # A cookie header's value is a credential, all its cookies whatever their names.
        (
            "Cookie: sessionid=abc123; csrftoken=xyz789; _ga=GA1.2.3",
            "Cookie: [REDACTED:cookie]",
        ),
        ("Set-Cookie: session=Zx9Qw8; Path=/; HttpOnly", "Set-Cookie: [REDACTED:cookie]"),
        (
            "b'GET / HTTP/1.1\\r\\nCookie: sid=abc123; a=b\\r\\nHost: h'",
            "b'GET / HTTP/1.1\\r\\nCookie: [REDACTED:cookie]\\r\\nHost: h'",
        ),
        ("{'Cookie': 'sid=abc123; a=b'}", "{'Cookie': '[REDACTED:secret-value]'}"),
        ("SESSION_COOKIE=abc123", "SESSION_COOKIE=[REDACTED:secret-value]"),
        ("Cookie: ${COOKIE}", "Cookie: ${COOKIE}"),
        (
            "cookie_name=sessionid cookies: 3 cookiecutter: gh:x/y",
            "cookie_name=sessionid cookies: 3 cookiecutter: gh:x/y",
        ),
        # What stands for a secret stays; what only looks like it goes.
        ("password: ${DB_PASSWORD}", "password: ${DB_PASSWORD}"),
        ("password=$DB_PASSWORD", "password=$DB_PASSWORD"),
        ("password=$S3CR3T", "password=[REDACTED:secret-value]"),
        ('password="!@#%^&*()"', 'password="[REDACTED:secret-value]"'),
        ("password: ****", "password: ****"),
        ("password=password", "password=[REDACTED:secret-value]"),
        ("password=$ecret9", "password=[REDACTED:secret-value]"),
        ("password=${DB_PASSWORD}x", "password=[REDACTED:secret-value]"),
        ("password=abc(def", "password=[REDACTED:secret-value]"),
        ("auth: basic", "auth: basic"),
        ("password: basic", "password: [REDACTED:secret-value]"),
        ("PASS: test_x, pass=hunter2", "PASS: test_x, pass=[REDACTED:secret-value]"),
        # A quoted value after pass: is no test's status (a Node.js object as it prints).
        (
            "{ user: 'me', pass: 'hunter2' }",
            "{ user: 'me', pass: '[REDACTED:secret-value]' }",
        ),
        ('pass: "hunter2"', 'pass: "[REDACTED:secret-value]"'),
        (
            "cache_key=Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b",
            "cache_key=Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b",
        ),
        (
            "cache_key: Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b",
            "cache_key: Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b",
        ),
        ("cache: Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b", "cache: [REDACTED:random-token]"),
        ("key=Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b", "key=[REDACTED:labelled-credential]"),
        # Code cannot be told from a password: an INI file's, a config's, a default's.
        ("DB_PASSWORD=P4ss(w0rd)", "DB_PASSWORD=[REDACTED:secret-value])"),
        ("PASSWORD=my.secret.token", "PASSWORD=[REDACTED:secret-value]"),
        ("password: my_secret_password", "password: [REDACTED:secret-value]"),
        ("password = my_secret_password", "password = [REDACTED:secret-value]"),
        ("password = Summer(2024)", "password = [REDACTED:secret-value])"),
        ("password=SUPER_SECRET", "password=[REDACTED:secret-value]"),
        ("DB_PASSWORD=${DB_PASSWORD:-hunter2x}", "DB_PASSWORD=[REDACTED:secret-value]}"),
    ],
)
def test_redacts_only_the_secret(text: str, expected: str) -> None:
    assert REDACTOR.redact(text) == expected


def test_pem_key_with_escaped_newlines_is_redacted_whole_and_json_stays_valid() -> None:
    body = "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naGVsbG8="
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n"
    encoded = msgspec.json.encode({"error": f'bad key "{key}" in config', "attempt": 2})
    assert b"\\n" in encoded  # the newlines are JSON escapes in the stored bytes
    stored = REDACTOR.redact_json(encoded)
    assert msgspec.json.decode(stored) == {
        "error": 'bad key "[REDACTED:private-key]\n" in config',
        "attempt": 2,
    }
    assert b"MIIE" not in stored
    assert b"END RSA" not in stored


def test_json_members_named_like_secrets_are_redacted_whole() -> None:
    data = msgspec.json.encode(
        {
            "password": "hunter2",
            "settings": {"Client-Secret": "Bearer abc", "api_key": "", "auth": "true"},
            "token": 42,
            "tokens": "not a secret",
            "note": "no secret here",
            "$api_key": "staple",
        }
    )
    assert msgspec.json.decode(REDACTOR.redact_json(data)) == {
        "password": "[REDACTED:secret-value]",
        "settings": {"Client-Secret": "[REDACTED:secret-value]", "api_key": "", "auth": "true"},
        "token": 42,
        "tokens": "not a secret",
        "note": "no secret here",
        "$api_key": "[REDACTED:secret-value]",
    }


def test_json_members_that_stand_for_a_secret_are_kept() -> None:
    """A member under a secret's name whose value is a reference, a mask or, under an auth-like
    name, a scheme's name is no secret, as it is not in a text; a password named *_PASS is."""
    data = msgspec.json.encode(
        {
            "auth": "basic",
            "proxy_auth": "Bearer",
            "password": "${DB_PASSWORD}",
            "token": "{{ secrets.token }}",
            "secret": "****",
            "DB_PASS": "letmein123",
            "smtpPass": "basic",
            "bypass": "letmein123",
            "settings": {"$dict": [["auth", "none"], ["REDIS_PASS", "hunter2"], [1, "x"]]},
        }
    )
    assert msgspec.json.decode(REDACTOR.redact_json(data)) == {
        "auth": "basic",
        "proxy_auth": "Bearer",
        "password": "${DB_PASSWORD}",
        "token": "{{ secrets.token }}",
        "secret": "****",
        "DB_PASS": "[REDACTED:secret-value]",
        "smtpPass": "[REDACTED:secret-value]",
        "bypass": "letmein123",
        "settings": {
            "$dict": [["auth", "none"], ["REDIS_PASS", "[REDACTED:secret-value]"], [1, "x"]]
        },
    }


def test_json_members_that_label_a_credential_are_redacted_when_it_reads_as_one() -> None:
    """As ``SIGNING_KEY=...`` and ``credentials: ...`` in a text are: the shape of a config or
    of ``os.environ`` handed to a step. A name that only ends in "key" (an id's, a digest's: a
    cache key, an idempotency key, an object key) keeps its value, random or not, and so does
    a value that reads as a word under a credential's name."""
    token = "q8Zr2LmX9vTn4KpW7sYc3DfBx1Hg5Jk0"
    digest = "0b997afc1232058c8bc77fe8b3692f02"
    kept = dict.fromkeys(
        ("key", "keys", "cache_key", "idempotency_key", "object_key", "monkey", "sacred"), digest
    )
    data = msgspec.json.encode(
        {
            "credentials": token,
            "SIGNING_KEY": token[::-1],
            "env": {"ENCRYPTION_KEY": token.upper(), "sort_key": "name", "session_key": "abc"},
            "ids": kept,
            "as_text": f"credentials: {token}",
        }
    )
    named = (
        "STRIPE_KEY",
        "jwtSigningKey",
        "serviceAccountKey",
        "dbCredentials",
        "api-key",
        "creds",
    )
    found = msgspec.json.decode(
        REDACTOR.redact_json(msgspec.json.encode(dict.fromkeys(named, token)))
    )
    assert {name for name, value in found.items() if value == token} == set()
    stored = REDACTOR.redact_json(data)
    assert msgspec.json.decode(stored) == {
        "credentials": "[REDACTED:labelled-credential]",
        "SIGNING_KEY": "[REDACTED:labelled-credential]",
        "env": {
            "ENCRYPTION_KEY": "[REDACTED:labelled-credential]",
            "sort_key": "name",
            "session_key": "abc",
        },
        "ids": kept,
        "as_text": "credentials: [REDACTED:labelled-credential]",
    }
    assert token.upper().encode() not in stored
    assert token[::-1].encode() not in stored
    # A dict stored in pairs (a key that is no str beside them): the same rule.
    paired = msgspec.json.encode(
        {"$dict": [["SIGNING_KEY", token], ["cache_key", digest], [1, "shard one"]]}
    )
    assert msgspec.json.decode(REDACTOR.redact_json(paired)) == {
        "$dict": [
            ["SIGNING_KEY", "[REDACTED:labelled-credential]"],
            ["cache_key", digest],
            [1, "shard one"],
        ]
    }


def test_redact_json_keeps_the_bytes_around_a_secret() -> None:
    data = b'{"a": 1.50, "b":"caf\\u00e9", "m": "token=abc123 ok"}'
    assert REDACTOR.redact_json(data) == (
        b'{"a": 1.50, "b":"caf\\u00e9", "m": "token=[REDACTED:secret-value] ok"}'
    )


def test_redact_json_returns_the_same_bytes_without_secret() -> None:
    data = msgspec.json.encode({"type": "StepCompleted", "index": 3, "result": "200 OK"})
    assert REDACTOR.redact_json(data) is data


def test_redact_json_returns_a_document_without_strings_unscanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A step's result is most often a number: its stored form holds no string to redact.
    scans: list[bytes] = []
    quick_scan = events.redaction.might_hold_a_secret
    monkeypatch.setattr(
        events.redaction, "might_hold_a_secret", lambda d: scans.append(d) or quick_scan(d)
    )
    redactor = Redactor(extra=[r"\d{4}"])
    for data in (b"2000", b"[1,2.5,true,null,-3e-05]", b"{}"):
        assert REDACTOR.redact_json(data) is data
        assert redactor.redact_json(data) is data
    assert scans == []
    assert redactor.redact_json(b'["2000"]') == b'["[REDACTED:custom]"]'
    assert REDACTOR.redact_json(b'["2000"]') == b'["2000"]'
    assert scans == [b'["2000"]']


def test_secret_named_keys_of_a_dict_stored_in_pairs_are_redacted_at_any_depth() -> None:
    # {"password": ..., 5432: "port"} has a key that is no string: it is stored in pairs
    # (onward.events.values), where "password" is no member name.
    kept = {"$dict": [["$dict", [["password", "a list, not a pair"]]]]}  # a dict keyed "$dict"
    data = msgspec.json.encode(
        {
            "type": "StepCompleted",
            "result": [
                {"$dict": [["password", "Tr0ub4dor&3"], ["api_key", "horse"], [5432, "port"]]},
                {"$tuple": [{"db": {"$dict": [["DB_PASSWORD", "battery"], [1, {"x": 2}]]}}]},
                {"$dict": [["token", 42], ["auth", "true"], ["tokens", "many"], [["auth"], "x"]]},
                {"$dict": [["$token", "staple"]]},  # a dict whose one key starts with "$"
                [["password", "in a list, not in a dict"]],
                kept,
            ],
        }
    )
    stored = REDACTOR.redact_json(data)
    redacted = b'"[REDACTED:secret-value]"'
    expected = data
    for secret in (b"Tr0ub4dor&3", b"horse", b"battery", b"staple"):
        assert secret not in stored
        expected = expected.replace(b'"' + secret + b'"', redacted)
    assert stored == expected
    assert REDACTOR.redact_json(stored) == stored
    # Patterns without the member rule leave the pairs as they leave the members.
    only_tokens = Redactor([p for p in DEFAULT_PATTERNS if p.name != "secret-value"])
    assert only_tokens.redact_json(data) == data


def test_the_quick_scan_catches_a_dict_stored_in_pairs() -> None:
    might_hold_a_secret = events.redaction.might_hold_a_secret
    assert might_hold_a_secret(b'{"result":{"$dict":[["password","hunter2"],[1,"x"]]}}')
    assert not might_hold_a_secret(b'{"result":{"dict":[["password","hunter2"],[1,"x"]]}}')


def test_redact_json_refuses_a_broken_string_it_must_rewrite() -> None:
    with pytest.raises(UsageError, match="byte 1"):
        REDACTOR.redact_json(b'["token=abc \\q"]')


# Patterns of one's own.


def test_user_pattern_as_a_string() -> None:
    redactor = Redactor(extra=[r"ACME-[0-9]{8}"])
    message = "ticket ACME-12345678 failed; password=pw1"
    assert redactor.redact(message) == (
        "ticket [REDACTED:custom] failed; password=[REDACTED:secret-value]"
    )
    assert redact_message(message, redactor) == redactor.redact(message)
    assert REDACTOR.redact("ticket ACME-12345678") == "ticket ACME-12345678"


def test_user_pattern_with_a_group() -> None:
    pattern = SecretPattern("employee-pin", r"\bpin (?P<pin>\d{4,6})\b", group="pin")
    redactor = REDACTOR.with_patterns(pattern)
    assert redactor.patterns == (*DEFAULT_PATTERNS, pattern)
    assert REDACTOR.patterns == DEFAULT_PATTERNS  # unchanged
    assert redactor.redact("wrong pin 4711 for badge 99") == (
        "wrong pin [REDACTED:employee-pin] for badge 99"
    )
    assert redact_message('said "pin 123456"', redactor) == 'said "pin [REDACTED:employee-pin]"'


def test_only_the_chosen_patterns_apply() -> None:
    github = next(p for p in DEFAULT_PATTERNS if p.name == "github-token")
    redactor = Redactor([github], extra=[r"(?i)internal-[a-z]+"])
    token = "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8"
    message = f"password=pw {token} INTERNAL-alpha"
    assert redactor.redact(message) == ("password=pw [REDACTED:github-token] [REDACTED:custom]")
    assert redact_message(message, redactor) == redactor.redact(message)
    nothing = Redactor(())
    assert nothing.redact(message) == message
    assert nothing.redact_json(b'{"password": "pw"}') == b'{"password": "pw"}'


@pytest.mark.parametrize(
    "pattern",
    [
        SecretPattern("broken", "(unclosed"),
        SecretPattern("nogroup", "a(b)", group=2),
        SecretPattern("noname", "a(b)", group="value"),
    ],
)
def test_bad_patterns_are_refused(pattern: SecretPattern) -> None:
    with pytest.raises(UsageError, match=pattern.name):
        Redactor(extra=[pattern])


# Properties.

FRAGMENTS = [
    *("password", "Password", "passwd", "pwd", "passphrase", "secret", "token", "auth"),
    *("Authorization", "api_key", "API-KEY", "private_key", "access_token", "db_"),
    *("=", ":", "=>", ": ", " = ", " ", "  ", "\t", "\n", "\r\n", "\u2028", "\x1c", "\xa0"),
    *('"', "'", "\\", "\\n", '\\"', "\\'", ",", ";", "&", ")", "]", "[REDACTED:jwt]", "[REDACTED:"),
    *("Bearer ", "bearer\t", "Basic ", "://", "postgres://u:", "@", "@host", "/", "true", "None"),
    *("-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----", "PRIVATE KEY"),
    *("eyJ", "eyJhbGciOiJIUzI1NiJ9.", "sk-", "sk-ant-", "ghp_", "github_pat_", "glpat-"),
    *("xoxb-", "sk_live_", "rk_test_", "AKIA", "AIza", "hf_", "aws_secret_access_key="),
    *("abcdefghij", "ABCDEFGHIJ0123456789", "Zx9_-", "a1B2c3D4e5f6G7h8i9J0", "é", "日本"),
    # Escapes that may hide a secret's characters: decoded before the patterns read them too.
    *("\\u0041", "\\u0070assword", "%3D", "pass%77ord", "%41KIA", "\\/", "%", "\\u00"),
    # Whole tokens, to be glued to one another.
    *("AKIA0123456789ABCDEF", "ghp_" + "a1B2c3D4e5" * 4, "sk-abc123def456ghi789jkl0"),
]
SECRETISH = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=14).map(
    "".join
)
TEXTS = st.one_of(st.text(), SECRETISH)


@given(TEXTS)
def test_redact_json_always_gives_valid_json_agreeing_with_redact(text: str) -> None:
    stored = REDACTOR.redact_json(msgspec.json.encode(text))
    decoded = msgspec.json.decode(stored)
    assert isinstance(decoded, str)
    assert decoded == REDACTOR.redact(text)


@given(TEXTS)
def test_redaction_is_idempotent(text: str) -> None:
    once = REDACTOR.redact(text)
    assert REDACTOR.redact(once) == once
    stored = REDACTOR.redact_json(msgspec.json.encode({"message": text}))
    assert REDACTOR.redact_json(stored) == stored


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("password=ghp_" + "a1B2c3D4e5" * 4 + ",token: hunter2hunter2", "hunter2hunter2"),
        ("api_key=sk_live_" + "Ab3dEf6hIj9kLm2n" + ",password: s3cr3t-pw", "s3cr3t-pw"),
    ],
)
def test_a_secret_named_after_a_token_in_another_secrets_value_is_hidden(
    text: str, secret: str
) -> None:
    """What each pattern finds once the ones before it replaced theirs is hidden too: the
    token replaced first leaves the next secret's name to be read ("password=<token>,token:
    xyz"), which a value running on to the next space took in when every pattern read only
    the text as it came."""
    redacted = REDACTOR.redact(text)
    assert secret not in redacted
    assert REDACTOR.redact(redacted) == redacted


OWN = Redactor(extra=[r"ZZSECRET-\d{6}"])


@given(SECRETISH, SECRETISH)
@example("token ghp_" + "a1B2c3D4e5" * 4, "")
def test_a_secret_of_ones_own_pattern_glued_to_any_text_is_hidden(before: str, after: str) -> None:
    """Every pattern looks at the text as it came: a built-in token's greedy match that takes
    in the start of one's own secret glued to it ("ghp_...ZZSECRET-482913") no longer leaves
    the rest of it in the clear."""
    assume("482913" not in before + after)
    assert "482913" not in OWN.redact(before + "ZZSECRET-482913" + after)


NAMES = st.one_of(
    st.sampled_from(
        [
            "password",
            "api_key",
            "Auth",
            "note",
            "message",
            "tokens",
            "x-api-key",
            "$token",
            "DB_PASS",
            "bypass",
            "ROOT_PW",
            "pw",
        ]
    ),
    st.text(max_size=8),
)
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), TEXTS
)


def _in_pairs(pairs: list[list[Any]]) -> dict[str, Any]:
    """A dict stored in pairs (onward.events.values): {"$dict": [[key, value], ...]}."""
    return {"$dict": pairs}


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(NAMES, inner, max_size=4),
        st.lists(st.lists(st.one_of(NAMES, inner), min_size=2, max_size=2), max_size=4).map(
            _in_pairs
        ),
    )


DOCUMENTS = st.recursive(LEAVES, _nested, max_leaves=12)
SECRET_NAME = re.compile(
    r"(?i)[A-Za-z0-9_.$-]*(?:password|passwd|passphrase|pwd|secret|token|auth|authorization|cookie"
    r"|(?:api|private|secret|access)[_-]?key)"
    # pass, alone or as a name's last word (DB_PASS, dbPass; not bypass, COMPASS).
    r"|(?:[A-Za-z0-9_.$-]*(?:[_.$-]|(?-i:[a-z0-9](?=P))))?(?i:pass)"
    # pw, as a name's last word only (DB_PW, dbPw; not pw).
    r"|[A-Za-z0-9_.$-]*(?:[_-]|(?-i:[a-z0-9](?=P)))(?i:pw)"
)


def secret_string(name: str, value: str) -> bool:
    """Whether a string under a secret's name is one (not null's spelling, a reference, an
    auth scheme's name...: the rule stands_for_a_secret tests on its own)."""
    return not stands_for_a_secret(name, value) and not value.startswith("[REDACTED:")


def replaced_whole(name: str, value: Any) -> bool:
    """Whether a list under a secret's name is replaced whole: one of strings (each a secret)
    or bytes, however deep."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag in ("$bytes", "$bytearray"):
            return True
        if tag in ("$tuple", "$set", "$frozenset"):
            value = inner
    if isinstance(value, str):
        return secret_string(name, value)
    return isinstance(value, list) and bool(value) and all(replaced_whole(name, v) for v in value)


def check_redacted(original: Any, stored: Any, name: str | None = None) -> None:
    """``stored`` has the shape of ``original``, with each string redacted, and each list or
    dict under a secret's name replaced whole."""
    if name is not None and SECRET_NAME.fullmatch(name) and replaced_whole(name, original):
        assert stored == "[REDACTED:secret-value]"
        return
    pairs = original.get("$dict") if isinstance(original, dict) and len(original) == 1 else None
    if isinstance(pairs, list):  # a dict stored in pairs: the first of a pair names the second
        assert isinstance(stored, dict)
        assert list(stored) == ["$dict"]
        assert len(stored["$dict"]) == len(pairs)
        for pair, stored_pair in zip(pairs, stored["$dict"], strict=True):
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
                assert isinstance(stored_pair, list)
                check_redacted(pair[0], stored_pair[0])
                check_redacted(pair[1], stored_pair[1], pair[0])
            else:
                check_redacted(pair, stored_pair)
    elif isinstance(original, dict):
        assert isinstance(stored, dict)
        assert list(stored) == list(original)  # no name here holds a secret
        for (key, value), stored_value in zip(original.items(), stored.values(), strict=True):
            check_redacted(value, stored_value, key)
    elif isinstance(original, list):
        assert isinstance(stored, list)
        assert len(stored) == len(original)
        for value, stored_value in zip(original, stored, strict=True):
            check_redacted(value, stored_value)
    elif isinstance(original, str):
        assert isinstance(stored, str)
        named = name is not None and SECRET_NAME.fullmatch(name) and secret_string(name, original)
        assert stored == ("[REDACTED:secret-value]" if named else REDACTOR.redact(original))
    else:
        assert stored == original


@settings(max_examples=200)
@given(DOCUMENTS)
def test_redact_json_keeps_the_structure(document: Any) -> None:
    stored = REDACTOR.redact_json(msgspec.json.encode(document))
    check_redacted(document, msgspec.json.decode(stored))
    assert REDACTOR.redact_json(stored) == stored


def test_the_keyword_check_lets_every_secret_of_the_corpus_through() -> None:
    might_hold_a_secret = events.redaction.might_hold_a_secret
    for message, _secrets in SECRETS_CORPUS:
        assert might_hold_a_secret(msgspec.json.encode({"message": message})), message
    assert not might_hold_a_secret(b'{"type":"StepCompleted","index":3,"result":{"status":200}}')


@pytest.mark.parametrize(
    "name",
    [
        *("password", "passwd", "pwd", "db_pw", "passphrase", "cookie", "pass", "secret"),
        *("token", "authorization", "auth", "apikey", "api_key", "private-key", "secretkey"),
        "access_key",
    ],
)
def test_the_quick_scan_fires_on_every_secret_name_however_it_is_closed(name: str) -> None:
    # Its first look takes a name's last two letters at once: every name passes it, in any
    # case, before a quote, an escaped quote, the JSON of an escaped quote, or the separator.
    might_hold_a_secret = events.redaction.might_hold_a_secret
    for shown in (name, name.upper(), name.title()):
        for close in ('":', '\\":', '\\\\\\":', "':", "\\':", "=", ":", '"='):
            assert might_hold_a_secret(f'{{"x":"{shown}{close} v"}}'.encode()), (shown, close)
        assert might_hold_a_secret(msgspec.json.encode({shown: "v"})), shown


def _counting(redactor: Redactor) -> list[int]:
    """Count the pattern scans a redactor makes from now on (each pattern's pass over a text)."""
    scans = [0]

    def counted(find: Any) -> Any:
        def scan(text: str, found: list[Any]) -> None:
            scans[0] += 1
            find(text, found)

        return scan

    redactor._all = tuple(counted(r) for r in redactor._all)  # type: ignore[misc]
    redactor._unhinted = tuple(counted(r) for r in redactor._unhinted)  # type: ignore[misc]
    return scans


def test_a_long_text_the_redactor_returned_is_not_scanned_again() -> None:
    """A long text a redactor returned is remembered (by length and hash): met again, as when
    a value redacted as it is encoded comes back inside its event, it is returned at once. A
    text of the same length that differs, or the text before redaction, is scanned as ever."""
    redactor = Redactor()
    scans = _counting(redactor)
    prose = ("token_count = compute_the_total(items)  # a long identifier: a hint\n" * 200)[:8000]
    assert redactor.redact(prose) == prose
    first = scans[0]
    assert first > 0
    assert redactor.redact(prose) == prose
    assert scans[0] == first  # remembered
    secret = prose[: -len(GITHUB_PAT) - 2] + "\n" + GITHUB_PAT + "\n"
    assert len(secret) == len(prose)
    redacted = redactor.redact(secret)
    assert GITHUB_PAT not in redacted
    assert "[REDACTED:github-token]" in redacted
    assert scans[0] > first
    again = scans[0]
    assert redactor.redact(redacted) == redacted  # its output is remembered
    assert scans[0] == again
    assert GITHUB_PAT not in redactor.redact(secret)  # its input is not
    assert scans[0] > again


def test_short_texts_are_not_remembered() -> None:
    redactor = Redactor()
    scans = _counting(redactor)
    text = "a short text with an_identifier_long_enough_to_hint"
    redactor.redact(text)
    first = scans[0]
    redactor.redact(text)
    assert scans[0] == 2 * first


@pytest.mark.parametrize("before", ["v2", "id1", "x", "build7"])
def test_github_and_gitlab_tokens_glued_to_a_letter_or_digit_are_hidden(before: str) -> None:
    """As gitleaks finds them: their prefixes are no identifier's end by chance."""
    github = "ghp_" + "7CKAe2VJvfG13GelOAqtpSkjPgqquGlMYGsg"
    gitlab = "glpat-" + "Xy9Zw8Vu7Ts6Rq5Po4Nm"
    for token in (github, gitlab):
        redacted = Redactor().redact(before + token)
        assert token[6:] not in redacted
        assert redacted.startswith(before)


def test_a_long_line_that_names_a_command_often_is_redacted_in_linear_time() -> None:
    # Each "mysql" (or "curl") looked through the rest of its line for a -p (-u) that gives a
    # password: a line of 100,000 characters with none took minutes. A hang shows as a
    # timeout of a process of its own.
    code = (
        "from onward.events import Redactor; "
        "print(Redactor().redact('mysql ' * 16_000 + 'curl ' * 16_000 + '-p -u x'), end='')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.endswith("curl -p -u x")
    assert REDACTOR.redact("mysql " + "-v " * 60 + "-phunter2") == (
        "mysql " + "-v " * 60 + "-p[REDACTED:cli-password]"
    )


def _digit_sets(pattern: str | bytes) -> list[frozenset[int]]:
    """The digits each literal and character class of a regex holds (those that hold any),
    and an empty set for each backreference: it matches what its group took, "1" and not "2"."""
    from re import _constants as c  # type: ignore[attr-defined]
    from re import _parser  # type: ignore[attr-defined]

    digits = frozenset(b"0123456789")
    found: list[frozenset[int]] = []
    pending: list[Any] = [_parser.parse(pattern)]
    while pending:
        for op, av in pending.pop():
            chars: set[int] = set()
            if op in (c.LITERAL, c.NOT_LITERAL):
                chars = {av}
            elif op is c.IN:
                for item, arg in av:
                    if item is c.LITERAL:
                        chars.add(arg)
                    elif item is c.RANGE:
                        chars.update(range(arg[0], arg[1] + 1))
                    elif item is c.CATEGORY:
                        chars.update(digits)  # \w, \d, \s and their negations: all or none
            elif op is c.BRANCH:
                pending.extend(av[1])
            elif op is c.SUBPATTERN:
                pending.append(av[3])
            elif op in (c.ASSERT, c.ASSERT_NOT):
                pending.append(av[1])
            elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                pending.append(av[2])
            elif op is c.ATOMIC_GROUP:
                pending.append(av)
            elif op is c.GROUPREF_EXISTS:
                pending.extend(branch for branch in av[1:] if branch is not None)
            elif op is c.GROUPREF:
                found.append(frozenset())
            if chars & digits:
                found.append(frozenset(chars & digits))
    return found


def test_the_quick_scan_treats_every_digit_alike() -> None:
    # An event of the shape of one found clean (the same but for its digits) is passed without
    # a scan: only sound while no hint tells one digit from another.
    redaction = events.redaction
    digits = frozenset(b"0123456789")
    sets = _digit_sets(redaction._HINT_BYTES.pattern)
    assert sets, "the hints look at digits"
    assert all(found == digits for found in sets)
    assert {redaction._RUN_TABLE[d] for d in digits} == {ord("a")}
    # ... nor the looks that say whether a run may be part of a secret.
    assert all(found == digits for found in _digit_sets(redaction._VENDOR_PREFIXES.pattern))
    assert {redaction._CASE_RUN_TABLE[d] for d in digits} == {ord("a")}
    assert {redaction._SHAPE_TABLE[d] for d in digits} == {ord("0")}
    assert _digit_sets(rb"[0-7]x") == [frozenset(b"01234567")]  # the check sees a partial set
    # ... in a conditional's branches too, and a backreference, which tells "11" from "12"
    # whatever the class of what it repeats.
    assert _digit_sets(rb"(?:(x)|y)(?(1)[0-7]|z)") == [frozenset(b"01234567")]
    assert _digit_sets(rb"(?:(x)|y)(?(1)z|[0-7])") == [frozenset(b"01234567")]
    assert frozenset() in _digit_sets(rb"(\w)\1")


def test_an_event_of_a_clean_shape_is_passed_and_one_that_is_not_is_scanned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scans: list[bytes] = []
    quick_scan = events.redaction.might_hold_a_secret
    monkeypatch.setattr(
        events.redaction, "might_hold_a_secret", lambda d: scans.append(d) or quick_scan(d)
    )
    monkeypatch.setattr(events.redaction, "_clean_shapes", set())
    redactor = Redactor()

    def event(index: int, message: str) -> bytes:
        return msgspec.json.encode({"type": "StepFailed", "index": index, "message": message})

    first = event(1, "timed out after 30 s")
    assert redactor.redact_json_many([first, event(2, "timed out after 31 s")]) == [
        first,
        event(2, "timed out after 31 s"),
    ]
    assert scans == [first]  # the second has the first's shape
    leaked = event(3, f"timed out: {GITHUB_PAT}")
    assert GITHUB_PAT.encode() not in redactor.redact_json_many([leaked])[0]
    assert GITHUB_PAT.encode() not in redactor.redact_json(leaked)
    assert scans.count(leaked) == 2  # a shape that hints is not remembered


def test_the_end_decisions_of_tasks_share_one_shape_whatever_their_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A task's end decision names the task: its id (hex) is left out of the quick scan when it
    # is the append's own, so the decisions of a run are scanned once, not once a task.
    scans: list[bytes] = []
    quick_scan = events.redaction.might_hold_a_secret
    monkeypatch.setattr(
        events.redaction, "might_hold_a_secret", lambda d: scans.append(d) or quick_scan(d)
    )
    monkeypatch.setattr(events.redaction, "_clean_shapes", set())
    redactor = Redactor()

    def decision(task_id: str, **more: str) -> bytes:
        return msgspec.json.encode(
            {"type": "DecisionMade", "subject": task_id, "why": "Continue with the next task."}
            | more
        )

    for task_id in ("6bfedcd0b563f9d8", "0c8b7752ec3a8c5b", "e594bfeb8a7f31c2"):
        assert redactor.redact_json_many([decision(task_id)], own_id=task_id) == [decision(task_id)]
    assert len(scans) == 1
    # The rest of the document is scanned still, and a secret's name redacts the id too.
    leaked = decision("d6458a06a5106b8f", message=f"failed: {GITHUB_PAT}")
    assert GITHUB_PAT.encode() not in redactor.redact_json_many([leaked], "d6458a06a5106b8f")[0]
    named = decision("d6458a06a5106b8f", password="d6458a06a5106b8f")
    assert b'"password":"[REDACTED:' in redactor.redact_json_many([named], "d6458a06a5106b8f")[0]
    # An id of another form is scanned as any value is.
    scans.clear()
    assert redactor.redact_json_many([decision("Task-7")], own_id="Task-7") == [decision("Task-7")]
    assert len(scans) == 1


def test_no_default_pattern_redacts_an_id_of_the_engines_form() -> None:
    # Up to 23 lowercase hex digits: no run of token characters, and of the hint's branches
    # (each starts at a character of its own) only "b" is a hex digit, whose branch asks for
    # "earer" or "asic" after it: letters that are no hex digits.
    from onward.events import redaction

    branches = re._parser.parse(redaction._HINT_TEXT.pattern)  # type: ignore[attr-defined]
    ((kind, (_, alternatives)),) = branches
    assert kind is re._constants.BRANCH  # type: ignore[attr-defined]
    firsts = set()
    for alternative in alternatives:
        op, char = alternative[0]
        assert op is re._constants.LITERAL  # type: ignore[attr-defined]
        firsts.add(chr(char))
    assert firsts & set("0123456789abcdef") == {"b"}
    for rest in itertools.product("0123456789abcdef", repeat=4):
        assert redaction._HINT_TEXT.search("b" + "".join(rest)) is None
    assert redaction._OWN_ID.fullmatch("0" * 23)
    assert not redaction._OWN_ID.fullmatch("0" * 24)
    assert redaction._RUN_TEXT.search("0" * 23) is None


@given(st.text(alphabet="0123456789abcdef", min_size=1, max_size=23))
def test_an_id_of_the_engines_form_is_left_as_it_is(own_id: str) -> None:
    assert Redactor().redact(own_id) == own_id


@pytest.mark.parametrize(
    ("token", "name"),
    [
        ("pscale_tkn_a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.", "planetscale-token"),
        ("tfp_" + ".".join(["abcdefghij"] * 5) + "abcde", "typeform-token"),
        ("abc1Q~" + "abcdefghijklm~nopqrstuvwxyz.0123", "azure-ad-client-secret"),
    ],
)
def test_a_vendors_token_that_dots_or_tildes_cut_into_short_runs_is_hidden_in_an_event(
    token: str, name: str
) -> None:
    # Their characters include "." or "~": no run of token characters is long enough for
    # the run hint, so they need hints of their own.
    redactor = Redactor()
    event = msgspec.json.encode({"type": "StepFailed", "message": f"login with {token} failed"})
    assert token not in redactor.redact(f"with {token} here")
    for stored in (redactor.redact_json(event), redactor.redact_json_many([event])[0]):
        assert token.encode() not in stored
        assert f"[REDACTED:{name}]".encode() in stored


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "KeyError: ('api_key', 'k3y-Abc123x')",
            "KeyError: ('api_key', '[REDACTED:secret-value]')",
        ),
        ('["access_token", "t0k-Q7wE"]', '["access_token", "[REDACTED:secret-value]"]'),
        (
            "[('X-Auth', 'Zx9-Qw8Er'), ('Accept', '*/*')]",
            "[('X-Auth', '[REDACTED:secret-value]'), ('Accept', '*/*')]",
        ),
        # A list of names, an option of a command's arguments, a scheme: no pair of a secret.
        ("missing fields: ('password', 'email')", "missing fields: ('password', 'email')"),
        ("['pg_dump', '--no-password', 'mydb']", "['pg_dump', '--no-password', 'mydb']"),
        ("('auth', 'basic')", "('auth', 'basic')"),
    ],
)
def test_a_pair_of_a_secrets_name_and_its_value_in_a_text(text: str, expected: str) -> None:
    assert REDACTOR.redact(text) == expected
    assert REDACTOR.redact_json(msgspec.json.encode(text)) == msgspec.json.encode(expected)


@pytest.mark.parametrize(
    "text",
    [
        # A pair in double quotes, the JSON of a list in a message: "\"" is escaped in the log.
        'body: ["password", "hunter2"]',
        'headers: [["Accept", "*/*"], ["Authorization", "s3cr3t"]]',
        # ... and the same pair in a text that was itself escaped once (a JSON text quoted
        # in a message, the repr of a string holding both quotes): escaped twice in the log.
        'body: "[\\"password\\", \\"hunter2\\"]"',
        "seen (\\'pwd\\', \\'hunter2\\')",
        "seen (\\'password\", \"hunter2\\')",
    ],
)
def test_a_pair_in_a_message_wakes_the_full_scan(text: str) -> None:
    event = msgspec.json.encode({"type": "TaskFailed", "message": text, "attempt": 1})
    for stored in (REDACTOR.redact_json(event), REDACTOR.redact_json_many([event])[0]):
        assert b"hunter2" not in stored, stored
        assert b"s3cr3t" not in stored, stored
        assert b"[REDACTED:secret-value]" in stored


@pytest.mark.parametrize(
    "text",
    [
        # Letters that match an ASCII one when case is ignored: U+212A KELVIN SIGN is "k",
        # U+017F LATIN SMALL LETTER LONG S is "s", U+0130 and U+0131 are "i"; the rules
        # ignore case as Python does, so the quick scan must not miss them in the UTF-8 bytes.
        "api\u212aey: hunter2",
        "pa\u017f\u017fword=hunter2",
        "signing_\u212aey=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
        "https://acct.blob.core.windows.net/c?\u017fig=" + "9f86d081884c7d659a2feaa0" * 2,
        "Author\u0131zation: hunter2",
    ],
)
def test_a_name_spelt_with_a_letter_that_folds_to_ascii_wakes_the_full_scan(text: str) -> None:
    event = msgspec.json.encode({"type": "TaskFailed", "message": text, "attempt": 1})
    assert REDACTOR.redact(text) != text, "the rules find it"
    for stored in (REDACTOR.redact_json(event), REDACTOR.redact_json_many([event])[0]):
        assert b"[REDACTED:" in stored, stored
