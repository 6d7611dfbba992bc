"""The routes by which a secret could slip past redaction, one by one: names that are stored as
given, messages cut to a limit, log records, tokens glued to identifiers, credentials that
only their shape or their randomness gives away."""

from __future__ import annotations

import array
import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from onward import Engine, fingerprint
from onward.core.run import MESSAGE_LIMIT, bounded, error_message
from onward.events import (
    Context,
    RecordRedactor,
    Redactor,
    SecretPattern,
    TaskSubmitted,
    UsageError,
    open_log,
)
from onward.events.redaction import might_hold_a_secret, reads_random, shannon_entropy
from tests.conftest import FakeClock
from tests.secrets_corpus import (
    ANTHROPIC,
    AWS_KEY_ID,
    BEARER,
    GITHUB_PAT,
    GOOGLE,
    NPM,
    OPENAI,
    SENDGRID,
    SLACK_BOT,
    STRIPE_LIVE,
    UNLABELLED,
)

REDACTOR = Redactor()

# -- names are refused, not redacted ---------------------------------------------------------


def test_a_session_name_holding_a_secret_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with pytest.raises(UsageError) as info:
        Engine.open(url, session=f"deploy {GITHUB_PAT}", clock=FakeClock())
    assert GITHUB_PAT not in str(info.value)
    assert "session name 'deploy [REDACTED:github-token]' holds what looks like a secret" in (
        str(info.value)
    )
    with open_log(url) as log:
        assert log.head() == 0


@pytest.mark.parametrize("what", ["task", "step", "action", "breaker", "component"])
def test_other_names_holding_a_secret_are_refused(tmp_path: Path, what: str) -> None:
    secret_name = f"sync_{NPM}"
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s", clock=FakeClock()) as e:
        register: dict[str, Callable[[], object]] = {
            "task": lambda: e.task(name=secret_name)(lambda: None),
            "step": lambda: e.step(name=secret_name)(lambda: None),
            "action": lambda: e.action(name=secret_name)(lambda: None),
            "breaker": lambda: e.step(name="call", breaker=secret_name)(lambda: None),
            "component": lambda: e.component(secret_name),
        }
        with pytest.raises(UsageError, match="holds what looks like a secret") as info:
            register[what]()
        assert NPM not in str(info.value)
        assert secret_name not in e.registry.tasks
        assert secret_name not in e.registry.steps


def test_the_log_refuses_a_stream_id_session_or_actor_holding_a_secret(tmp_path: Path) -> None:
    with open_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        for stream, context in [
            (f"task-{SENDGRID}", Context()),
            ("task-1", Context(session=f"s-{SENDGRID}")),
            ("task-1", Context(actor=f"worker {SENDGRID}")),
        ]:
            with pytest.raises(UsageError, match="holds what looks like a secret") as info:
                log.append(stream, [TaskSubmitted(name="t")], expected_version=0, context=context)
            assert SENDGRID not in str(info.value)
        assert log.head() == 0
        log.append("task-1", [TaskSubmitted(name="t")], expected_version=0)
        assert log.head() == 1


def test_check_name_remembers_clean_names_and_ignores_empty_ones() -> None:
    redactor = Redactor()
    redactor.check_name("", "session name")
    redactor.check_name("nightly", "session name")
    redactor.check_name("nightly", "session name")
    with pytest.raises(UsageError):
        redactor.check_name(f"x {GITHUB_PAT}", "stream id")


_NAMED = ("stream id", "session name", "actor")


def test_check_names_refuses_a_secret_beside_names_found_clean() -> None:
    redactor = Redactor()
    shaped = "ghp_" + "a" * 36  # a clean name of the token's length, remembered
    redactor.check_names((f"task-{shaped[::-1]}", "nightly", "vm/1/2"), _NAMED)
    redactor.check_names((f"task-{shaped[::-1]}", "nightly", "vm/1/2"), _NAMED)
    redactor.check_names(("task-1", "", ""), _NAMED)  # empty names hold nothing
    for names, what in [
        ((f"task-{GITHUB_PAT}", "nightly", "vm/1/2"), "stream id"),
        ((f"task-{shaped[::-1]}", f"deploy {GITHUB_PAT}", "vm/1/2"), "session name"),
        (("task-1", "nightly", f"vm {GITHUB_PAT}"), "actor"),
    ]:
        with pytest.raises(UsageError, match=f"^{what} .*holds what looks like a secret") as info:
            redactor.check_names(names, _NAMED)
        assert GITHUB_PAT not in str(info.value)
    for odd in (["task-1"], 7, None):  # unhashable, or hashable but not a str
        with pytest.raises(UsageError, match=r"^session name must be a str"):
            redactor.check_names(("task-1", odd, "vm/1/2"), _NAMED)  # type: ignore[arg-type]


def test_names_found_clean_by_a_log_s_redactor_are_checked_again_by_its_next_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/log.db"
    context = Context(session="acme-nightly", actor="vm/1/2")
    with open_log(url) as log:
        log.append("task-acme-7", [TaskSubmitted(name="t")], expected_version=0, context=context)
        log.redactor = log.redactor.with_patterns(r"acme-\w+")
        for stream, ctx in [
            ("task-acme-7", Context(actor="vm/1/2")),
            ("task-2", context),
        ]:
            with pytest.raises(UsageError, match="holds what looks like a secret"):
                log.append(stream, [TaskSubmitted(name="t")], expected_version=None, context=ctx)
        assert log.head() == 1


# -- messages are redacted before they are cut ------------------------------------------------


def test_a_token_cut_by_the_limit_is_redacted_first() -> None:
    text = "x" * (MESSAGE_LIMIT - 10) + " " + GITHUB_PAT + " tail"
    cut = bounded(text)
    assert GITHUB_PAT[:8] not in cut
    assert cut.startswith("x" * (MESSAGE_LIMIT - 10) + " [REDACTED")
    assert cut.endswith("... [truncated]")
    assert len(cut) == MESSAGE_LIMIT + len("... [truncated]")


def test_error_message_uses_the_redactor_it_is_given() -> None:
    employee = SecretPattern("employee-id", r"EMP-\d{6}")
    exc = RuntimeError("y" * (MESSAGE_LIMIT - 8) + " EMP-493817")
    assert "EMP-49" in error_message(exc)  # the default patterns do not know it ...
    assert "EMP-49" not in error_message(exc, Redactor().with_patterns(employee).redact)


def test_a_huge_message_is_read_only_so_far() -> None:
    text = "z" * (50 * MESSAGE_LIMIT) + GITHUB_PAT
    assert bounded(text) == "z" * MESSAGE_LIMIT + "... [truncated]"


def test_a_token_cut_where_reading_stops_leaves_nothing_when_redaction_shrinks_the_rest() -> None:
    """Read only so far (four limits), the text was cut through a token; a long bearer token
    before it shrank to its tag, which brought the token's first part (too short for any
    pattern) into what is recorded."""
    reading = 4 * MESSAGE_LIMIT
    bearer = "request failed: Authorization: Bearer eyJ" + "a1B2c3D4" * 1990
    head = bearer + " then " + "n" * (reading - len(bearer) - len(" then ") - 14)
    text = head + " " + GITHUB_PAT + " and more"  # 13 of its characters before the cut
    assert text[reading - 13 : reading] == GITHUB_PAT[:13]
    cut = bounded(text)
    assert GITHUB_PAT[:6] not in cut
    assert cut.startswith("request failed: Authorization: Bearer [REDACTED")
    assert cut.endswith("nnn ... [truncated]")
    assert cut.endswith("... [truncated]")
    signature = fingerprint(RuntimeError(text), redact=REDACTOR.redact)
    assert GITHUB_PAT[:6] not in signature.message


def test_a_long_run_without_spaces_through_the_cut_keeps_its_start() -> None:
    """Minified JSON past where reading stops: the text read gives up only the end of the run
    the cut goes through (where a token could be cut), not the whole body."""
    body = "{" + ",".join(f'"k{i}":"{"v" * 20}"' for i in range(1000)) + "}"
    text = "upstream returned 502: " + body
    assert bounded(text) == text[:MESSAGE_LIMIT] + "... [truncated]"
    error = RuntimeError(text)
    assert fingerprint(error, redact=REDACTOR.redact).message == fingerprint(error).message


# -- log records -------------------------------------------------------------------------------


def make_record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("onward.test", logging.INFO, __file__, 1, msg, args, None)


def test_a_record_is_redacted_in_place() -> None:
    record = make_record("failed: %s (%d tries)", f"token={GITHUB_PAT}", 3)
    assert RecordRedactor().filter(record) is True
    assert record.getMessage() == "failed: token=[REDACTED:github-token] (3 tries)"
    assert record.args is None


def test_a_record_whose_format_is_broken_is_kept_as_it_is() -> None:
    record = make_record("%d items", "not a number")
    assert RecordRedactor().filter(record) is True
    assert record.msg == "%d items"


def test_a_record_redactor_with_patterns_of_ones_own() -> None:
    record = make_record("badge EMP-493817 denied")
    RecordRedactor(Redactor(extra=[r"EMP-\d{6}"])).filter(record)
    assert record.getMessage() == "badge [REDACTED:custom] denied"


# -- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"key_{GITHUB_PAT}",
        f"API_TOKEN_{GITHUB_PAT}_v2",
        f"id-{NPM}",
        f"x_{SENDGRID}",
        f"config.{GITHUB_PAT}",
    ],
)
def test_a_token_glued_to_an_identifier_is_found(text: str) -> None:
    assert "[REDACTED:" in REDACTOR.redact(text)
    for token in (GITHUB_PAT, NPM, SENDGRID):
        assert token not in REDACTOR.redact(text)


@pytest.mark.parametrize(
    "token",
    [GITHUB_PAT, OPENAI, ANTHROPIC, AWS_KEY_ID, SLACK_BOT, STRIPE_LIVE, GOOGLE, NPM, SENDGRID],
)
@pytest.mark.parametrize("control", ["\n", "\t", "\r", "\x1b", "\u2028", "\x0c"])
@pytest.mark.parametrize("written", [repr, json.dumps], ids=["repr", "json"])
def test_a_token_after_an_escaped_control_character_is_found(
    token: str, control: str, written: Callable[[str], str]
) -> None:
    # repr() and JSON write a line break as backslash-n: the "n" is not part of the token.
    text = written(f"header{control}{token}")
    assert "\\" in text
    assert token not in REDACTOR.redact(text)
    assert token not in REDACTOR.redact(f"KeyError({text})")


@pytest.mark.parametrize("before", ["q=%0A", "q=%09", "\\033", "\\0"])
def test_a_token_after_a_url_encoded_or_octal_control_character_is_found(before: str) -> None:
    for token in (GITHUB_PAT, OPENAI, SLACK_BOT):
        assert token not in REDACTOR.redact(before + token)


@pytest.mark.parametrize(
    "path",
    [
        r"C:\projects\ask-gpt-assistant-v2-2024",
        r"E:\vms\vsk-0123456789abcdefghijklmn",
    ],
)
def test_a_windows_path_is_no_escape_before_a_token(path: str) -> None:
    """``\\a`` and ``\\v`` are no escapes that ``repr()`` or JSON write: a directory's first
    letter before a token's prefix is part of a longer word."""
    assert REDACTOR.redact(path) == path


def test_a_bearer_token_after_an_escaped_line_break_is_found() -> None:
    text = repr(f"GET /v1\nAuthorization: Bearer {BEARER}")
    assert BEARER not in REDACTOR.redact(text)
    assert BEARER not in REDACTOR.redact(repr(f"sent\nBearer {BEARER}"))


@pytest.mark.parametrize(
    "text",
    [
        "brisk_test_" + "a" * 16,  # a longer word that happens to contain a prefix
        "risk-assessment-for-the-second-quarter-of-2024",
        "desk-0123456789abcdefghij",
    ],
)
def test_a_prefix_inside_a_word_is_not_a_token(text: str) -> None:
    assert REDACTOR.redact(text) == text


def test_a_random_token_is_found_in_text_but_kept_when_it_is_the_whole_value() -> None:
    assert REDACTOR.redact(f"expected {UNLABELLED} here") == (
        "expected [REDACTED:random-token] here"
    )
    assert REDACTOR.redact(UNLABELLED) == UNLABELLED  # an id, a cursor: data, not a leak


def test_entropy_and_randomness() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == 2.0
    assert reads_random("aB3xQ9mZ2kL7pW4nR8tY1vC6")
    assert not reads_random("getUserAccountSettingsForTenant2")
    assert not reads_random("1")


def test_a_pattern_with_an_entropy_threshold_keeps_plain_matches() -> None:
    pattern = SecretPattern("order-key", r"order=(?P<v>\S+)", group="v", entropy=3.0)
    redactor = Redactor([pattern])
    assert redactor.redact("order=aaaaaaaaaaaa") == "order=aaaaaaaaaaaa"
    assert redactor.redact("order=k3Jx9Qa2Lm8Z") == "order=[REDACTED:order-key]"
    with pytest.raises(UsageError, match="entropy"):
        Redactor([SecretPattern("bad", "x", entropy=-1.0)])


@pytest.mark.parametrize(
    "text",
    [
        "x" * 200_000,
        "aB3" * 70_000,
        "key=" + "aB3dE5" * 30_000,
        "password=" * 20_000,
        "AKIA" * 50_000,
        "a_" * 100_000,
        "docker login -u x " * 10_000,
        "--no-x_" * 30_000,
    ],
    ids=[
        "one-letter",
        "mixed",
        "labelled",
        "labels",
        "prefixes",
        "underscores",
        "logins",
        "options",
    ],
)
def test_long_texts_of_token_characters_are_redacted_without_backtracking(text: str) -> None:
    # No timing is asserted: a pattern that scanned from every position would take minutes.
    REDACTOR.redact(text)
    REDACTOR.redact_json(b'{"m": "' + text.encode() + b'"}')


def test_the_quick_scan_passes_typical_events_and_catches_runs() -> None:
    assert not might_hold_a_secret(b'{"type":"StepCompleted","index":3,"name":"fetch"}')
    assert not might_hold_a_secret(b'{"type":"TaskClaimed","worker":"host/12/34/ab"}')
    assert might_hold_a_secret(b'{"m":"' + NPM.encode() + b'"}')
    assert might_hold_a_secret(b'{"m":"' + b"Z" * 24 + b'"}')


# -- a secret's value written as a Python literal, or of another type than a string --------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("login refused for {'user': 'bob', 'password': b'Hunter2Xy7'}", "Hunter2Xy7"),
        ("connect(password=bytearray(b'Zq9pw4Lx'), host='db')", "Zq9pw4Lx"),
        ("{'password': ['Hunter2Xy7', 'Other5Pw']}", "Other5Pw"),
        ("api_key=('Zx9Qw8Er7', 1) then", "Zx9Qw8Er7"),
        ('password: rb"Hunter2Xy7"', "Hunter2Xy7"),
    ],
)
def test_a_secret_written_as_a_python_literal_is_redacted_whole(text: str, secret: str) -> None:
    """Only the literal's first character (the ``b`` of ``b'...'``, a bracket) was taken for
    the value."""
    redacted = REDACTOR.redact(text)
    assert secret not in redacted
    assert "[REDACTED:" in redacted
    assert REDACTOR.redact(redacted) == redacted


@pytest.mark.parametrize(
    "value",
    [
        {"user": "bob", "password": b"Hunter2Xy7"},
        {"api_key": ["Zx9Qw8Er7"]},
        {"db": {"password": ("Hunter2Xy7",)}},
        {5432: "port", "password": ["Hunter2Xy7"]},
    ],
)
def test_a_value_under_a_secrets_name_is_replaced_whatever_its_type(
    tmp_path: Path, value: object
) -> None:
    """bytes were stored as base64, lists, tuples and dicts as they were."""
    db = tmp_path / "log.db"
    with Engine.open(f"sqlite:///{db}", session="s", clock=FakeClock()) as engine:

        @engine.task()
        def configure(config: object) -> object:
            return config

        task_id = engine.submit(configure, value)
        engine.run()
        result = engine.result(task_id)
    assert "[REDACTED:secret-value]" in repr(result)
    raw = db.read_bytes()
    for secret in (b"Hunter2Xy7", b"Zx9Qw8Er7", b"SHVudGVyMlh5Nw"):  # the last: its base64
        assert secret not in raw


def test_ordinary_values_under_names_like_a_secrets_keep_their_type() -> None:
    """A nested config, an empty list, numbers and dates are not secrets: only strings, bytes
    and lists of them are replaced."""
    for value in (
        {"auth": {"enabled": False, "methods": []}},
        {"oauth": {"provider": "github"}},
        {"auth": []},
        {"token": [1, 2]},
        {"last_auth": {"$datetime": "2024-11-25T10:00:00Z"}},
    ):
        document = msgspec.json.encode(value)
        assert REDACTOR.redact_json(document) == document


def test_binary_bytes_and_field_lists_come_back_as_they_were(tmp_path: Path) -> None:
    """What a looser redaction damaged: bytes whose every other byte is a zero (16-bit samples,
    read as UTF-16 text, held "random tokens"), and lists of field names read as a secret's
    name and its value."""
    draw = random.Random(7)
    samples = bytes(array.array("H", [draw.randrange(48, 123) for _ in range(4000)]))
    message = 'missing required fields: (\'password\', \'email\'); header "id","password","email"'
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s", clock=FakeClock()) as e:

        @e.task()
        def echo(data: bytes, text: str) -> tuple[bytes, str]:
            return data, text

        task_id = e.submit(echo, samples, message)
        e.run()
        assert e.result(task_id) == (samples, message)
