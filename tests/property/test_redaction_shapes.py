"""The redactor's quick scan of an encoded event, and the shapes of events it remembers as
clean, never let through a secret that the exact rules would redact.

An event whose shape (its bytes with every digit made "0") matches one found clean is passed
without a scan; these properties hold that a secret of the corpus, embedded in any text of any
event, is still redacted when events of its shape went by clean before it, and that the quick
scan, remembered or not, says "clean" only of what the exact rules leave as it is.
"""

from __future__ import annotations

import re

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from onward.events import redaction
from onward.events.redaction import Redactor
from tests.secrets_corpus import NOT_SECRETS, SECRETS_CORPUS

_DIGITS = re.compile("[0-9]")

# Text around a secret: ordinary words and the characters the hints look at.
_CHARACTERS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :=_-@$\"'\\/.,{}[]\n\té\u2028"
)
_AROUND = st.text(alphabet=st.sampled_from(_CHARACTERS), max_size=40)
_CASES = st.sampled_from(SECRETS_CORPUS)


def _event(message: str, index: int) -> bytes:
    return msgspec.json.encode(
        {"type": "StepFailed", "index": index, "name": "fetch", "message": message}
    )


def _fresh_digits(text: str, digit: str) -> str:
    return _DIGITS.sub(digit, text)


@given(case=_CASES, before=_AROUND, after=_AROUND, index=st.integers(0, 10**6))
def test_a_secret_is_redacted_after_events_of_its_shape_went_by_clean(
    case: tuple[str, list[str]], before: str, after: str, index: int
) -> None:
    message, secrets = case
    redactor = Redactor()
    clean = f"{before}{after}"
    if redactor.redact(clean) == clean:
        # Events of the shape of the clean text (other digits), remembered as clean.
        for digit in "0123456789":
            event = _event(_fresh_digits(clean, digit), index)
            assert redactor.redact_json_many([event]) == [event]
    # (Apart from the text around it: a token glued to more token characters is no token.)
    leaked = _event(f"{before} {message} {after}", index)
    for stored in (redactor.redact_json_many([leaked])[0], redactor.redact_json(leaked)):
        text = msgspec.json.decode(stored)["message"]
        for secret in secrets:
            assert secret not in text, (secret, text)


@given(case=_CASES, before=_AROUND, after=_AROUND, digit=st.sampled_from("0123456789"))
def test_events_that_differ_in_digits_get_the_same_scan(
    case: tuple[str, list[str]], before: str, after: str, digit: str
) -> None:
    message, _secrets = case
    for text in (f"{before}{after}", f"{before} {message} {after}"):
        event = _event(text, 7)
        other = _event(_fresh_digits(text, digit), 7)
        assert redaction.might_hold_a_secret(event) == redaction.might_hold_a_secret(other)


@given(
    text=st.one_of(
        _AROUND,
        st.builds(lambda b, c, a: f"{b} {c[0]} {a}", _AROUND, _CASES, _AROUND),
        st.sampled_from(NOT_SECRETS),
    ),
    remembered=st.booleans(),
)
def test_the_quick_scan_says_clean_only_of_what_the_exact_rules_leave(
    text: str, remembered: bool
) -> None:
    redactor = Redactor()
    event = _event(text, 3)
    scan = redaction._document_might_hold_a_secret if remembered else redaction.might_hold_a_secret
    if not scan(event):
        # The exact rules, with no quick scan: every pattern over the text as it is.
        found: list[tuple[int, int, str]] = []
        for find in redactor._all:
            find(text, found)
        assert found == [], (text, found)
        assert redactor.redact_json_many([event]) == [event]


_MEMBER_NAMES = st.sampled_from(
    ["subject", "task", "api_key", "signing_key", "password", "token", "cache_key", "parent"]
)
_OWN_IDS = st.text(alphabet=st.sampled_from("0123456789abcdef"), min_size=1, max_size=32)


@given(
    name=_MEMBER_NAMES,
    own=_OWN_IDS,
    other=st.one_of(_AROUND, st.builds(lambda c, a: f"{c[0]} {a}", _CASES, _AROUND)),
)
def test_an_id_stored_as_given_left_out_of_the_scan_changes_no_redaction(
    name: str, own: str, other: str
) -> None:
    # A member whose value is the append's own id (a task's, named by its end decision) is
    # left out of the quick scan; what the log stores is what a full scan would have made of
    # it, under a secret's name or a credential's label too, beside a secret or not.
    event = msgspec.json.encode({"type": "DecisionMade", name: own, "message": other})
    redactor = Redactor()
    assert redactor.redact_json_many([event], own_id=own) == Redactor().redact_json_many([event])
    if redactor.redact(other) == other and name in ("subject", "task", "parent"):
        # Events that differ only by that id fall in one remembered shape, clean.
        assert redactor.redact_json_many([event], own_id=own) == [event]
