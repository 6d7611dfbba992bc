"""The run hint of the redactor's quick scan: a run of token characters (an id, a digest, a
worker's id) lets an event through untouched unless it may be part of a secret, and the event
then comes out exactly as the full scan (every rule over every string) would leave it.

The full scan is the redactor with its quick scans forced to say "might": whatever the narrow
hint lets through, the full scan must leave as it is.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st

from onward.events import redaction
from onward.events.redaction import Redactor
from onward.events.tokens import VENDOR_TOKENS
from tests.secrets_corpus import NOT_SECRETS, SECRETS_CORPUS


@contextmanager
def _full_scan() -> Iterator[None]:
    """Every quick scan says "might": each string of an event goes through every rule."""
    saved = (
        redaction.might_hold_a_secret,
        redaction._document_might_hold_a_secret,
        redaction._hinted_text,
    )
    redaction.might_hold_a_secret = lambda data: True
    redaction._document_might_hold_a_secret = lambda data: True
    redaction._hinted_text = lambda text: True
    try:
        yield
    finally:
        (
            redaction.might_hold_a_secret,
            redaction._document_might_hold_a_secret,
            redaction._hinted_text,
        ) = saved


def _fully_redacted(event: bytes) -> bytes:
    with _full_scan():
        return Redactor().redact_json(event)


# What a look behind of a vendor's prefix asks to find before it, to make one up.
_BEFORE = {"Q~": "ab1", "AA": "12345678:", r"\.atlasv1\.": "abcdefghijklmn"}


def _vendor_shape(name: str, prefix: str, rest: str) -> st.SearchStrategy[str]:
    bare = re.sub(r"\(\?<=[^)]*\)", "", prefix)
    return st.from_regex(f"(?:{bare})(?:{rest})", fullmatch=True).map(
        lambda token: _BEFORE.get(bare, "") + token
    )


_HEX = "0123456789abcdef"
_ALNUM = string.ascii_letters + string.digits
_IDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.text(_HEX, min_size=24, max_size=80),
    st.builds(
        lambda host, pid, start, nonce: f"{host}/{pid}/{start}/{nonce}",
        st.from_regex(r"[a-z][a-z0-9-]{0,40}", fullmatch=True),
        st.integers(1, 4_000_000),
        st.integers(1, 10**12),
        st.text(_HEX, min_size=6, max_size=6),
    ),
    st.builds(lambda u: f"task-{u.hex[:16]}", st.uuids()),
)
_TOKENS = st.one_of(
    st.text(_ALNUM, min_size=20, max_size=140),
    st.text(_ALNUM + "+/_-=%", min_size=20, max_size=140),
    st.text(string.ascii_lowercase + string.digits + "-_/", min_size=20, max_size=80),
    st.one_of(*(_vendor_shape(*shape) for shape in VENDOR_TOKENS)),
)
_LABELS = st.sampled_from(
    [
        "signing_key",
        "ENCRYPTION_KEY",
        "cache_key",
        "idempotency_key",
        "credentials",
        "dbCreds",
        "AccountKey",
        "?sig",
        "&SIG",
        "worker",
        "lease",
        "password",
    ]
)
_GAPS = st.sampled_from([" ", "/", "=", ": ", "\n", '"', "'", "-", "_", ".", "~", "@", "\t", ""])
_PARTS = st.one_of(
    _IDS,
    _TOKENS,
    st.builds(lambda label, gap, value: f"{label}{gap}{value}", _LABELS, _GAPS, _IDS | _TOKENS),
    st.sampled_from([message for message, _ in SECRETS_CORPUS]),
    st.sampled_from(NOT_SECRETS),
    st.text(max_size=20),
)
_TEXTS = st.lists(st.tuples(_PARTS, _GAPS), min_size=1, max_size=4).map(
    lambda parts: "".join(part + gap for part, gap in parts)
)
_MEMBERS = st.sampled_from(["worker", "message", "subject", "signing_key", "password", "key"])


def _event(member: str, text: str, pairs: bool) -> bytes:
    if pairs:  # a dict stored in pairs (onward.events.values)
        return msgspec.json.encode(
            {"type": "DecisionMade", "inputs": {"$dict": [[member, text], ["attempt", 1]]}}
        )
    return msgspec.json.encode({"type": "TaskClaimed", member: text, "attempt": 1})


@given(text=_TEXTS, member=_MEMBERS, pairs=st.booleans())
def test_an_event_the_quick_scan_passes_is_one_the_full_scan_leaves(
    text: str, member: str, pairs: bool
) -> None:
    event = _event(member, text, pairs)
    full = _fully_redacted(event)
    assert Redactor().redact_json(event) == full
    assert Redactor().redact_json_many([event]) == [full]
    if not redaction.might_hold_a_secret(event):
        assert full == event, (text, full)
        # ... and no rule finds anything in the text itself.
        found: list[tuple[int, int, str]] = []
        for find in Redactor()._all:
            find(text, found)
        assert found == [], (text, found)


@given(
    shape=st.sampled_from(VENDOR_TOKENS).flatmap(lambda shape: _vendor_shape(*shape)),
    before=_IDS | st.sampled_from(["", " ", "\n"]),
    after=_IDS | st.sampled_from(["", " ", "."]),
)
def test_a_vendors_token_beside_ids_is_redacted_as_the_full_scan_redacts_it(
    shape: str, before: str, after: str
) -> None:
    text = f"{before} {shape} {after}"
    event = _event("message", text, pairs=False)
    assert Redactor().redact_json(event) == _fully_redacted(event)


def test_ids_alone_do_not_wake_the_full_scan() -> None:
    """The point of the narrow hint: a worker's id, a UUID, a digest are data."""
    for text in (
        "build-agent-prod-01/4021337/118273645/8c9ab7",
        str(uuid.UUID(int=0x3F2C9A1B7D4E4B1A9C3E8F7A6B5C4D3E)),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "task-34830a7bfc77eb6c waits for 3f2c9a1b-7d4e-4b1a-9c3e-8f7a6b5c4d3e",
    ):
        assert not redaction.might_hold_a_secret(_event("worker", text, pairs=False)), text


def test_a_run_beside_a_label_a_prefix_or_in_mixed_case_still_wakes_it() -> None:
    for text in (
        "signing_key=9f86d081884c7d659a2feaa0c55ad015",  # a labelled credential, lower hex
        "AccountKey=" + "a" * 44,
        "token rubygems_" + "0" * 48,  # a vendor's prefix, its token all digits
        "hvs." + "a1" * 50,
        "id 8fJ2kQ9zLmN4pR7sT1vW3xY5aB6cD0eF",  # a random token has an upper-case letter
    ):
        assert redaction.might_hold_a_secret(_event("message", text, pairs=False)), text


# A secret's name, a separator and a value, written as messages write them: assigned, as a
# pair (a tuple's repr, a JSON list), quoted in a text escaped once more; names spelt with a
# letter the rules take for an ASCII one; values in lower case, short, or shaped as ids.
_NAMES = st.sampled_from(
    [
        *("password", "passwd", "pwd", "secret", "token", "auth", "Authorization", "api_key"),
        *("x-api-key", "private_key", "access_key", "Cookie", "DB_PASS", "ROOT_PW", "signing_key"),
        *("credentials", "dbCreds", "AccountKey", "?sig", "pa\u017f\u017fword", "api\u212aey"),
    ]
)
_SEPARATORS = st.sampled_from(
    ["=", ": ", " = ", "\t=", "=>", ":=", "', '", '", "', "\\', \\'", '\\", \\"', ":\n  ", "='"]
)
_WRAPS = st.sampled_from(
    [("", ""), ("('", "')"), ('["', '"]'), ('[\\"', '\\"]'), ("(\\'", "\\')"), ('{"', '"}')]
)
_VALUES = st.one_of(
    st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=60),
    st.text(string.ascii_lowercase + string.digits + "-_./~+=%", min_size=6, max_size=60),
    _IDS,
    _TOKENS,
)


@st.composite
def _named_values(draw: st.DrawFn) -> str:
    before, after = draw(_WRAPS)
    return f"{before}{draw(_NAMES)}{draw(_SEPARATORS)}{draw(_VALUES)}{after}"


@example(texts=['["password", "hunter2"]'], gap="", member="message", pairs=False, escaped=False)
@example(texts=['["token", "hunter2"]'], gap="", member="message", pairs=True, escaped=True)
@example(texts=["api\u212aey: hunter2"], gap="", member="message", pairs=False, escaped=False)
@given(
    texts=st.lists(_named_values(), min_size=1, max_size=2),
    gap=_GAPS,
    member=_MEMBERS,
    pairs=st.booleans(),
    escaped=st.booleans(),
)
def test_a_named_value_the_quick_scan_passes_is_one_the_full_scan_leaves(
    texts: list[str], gap: str, member: str, pairs: bool, escaped: bool
) -> None:
    text = gap.join(texts)
    if escaped:  # a JSON text quoted in a message: its quotes and backslashes escaped once more
        text = msgspec.json.encode(text).decode()[1:-1]
    event = _event(member, text, pairs)
    full = _fully_redacted(event)
    assert Redactor().redact_json(event) == full, (text, full)
    assert Redactor().redact_json_many([event]) == [full]
