"""The message normaliser reads every message as the first implementation of signature v1 did.

The error-learning database keys fixes by signature id, and the id hashes the normalised
message: a normaliser that read one message otherwise would orphan the fixes learned for it.
The reference below is a verbatim copy of ``normalise_message`` as signature v1 shipped it
(eight ``re.sub`` passes in order); the optimised normaliser must agree with it on any text, in
particular on texts built from the values it replaces (numbers, hex ids, addresses, uuids,
paths, URLs, timestamps, quoted strings), their edges and the placeholders themselves.
"""

from __future__ import annotations

import re
import string

from hypothesis import example, given, settings
from hypothesis import strategies as st

from onward.healing.signature import normalise_message

# --- the reference: signature v1's normaliser, as first released (do not edit) ---------------

_MAX_MESSAGE = 300
_MAX_READ = 8192
_QUOTED = re.compile(r"""(?<![\w>'"])(?:'(?:(?!<str>)[^'])*'|"(?:(?!<str>)[^"])*")(?![\w<'"])""")
_URL = re.compile(r"(?<![\w>])[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]}]")
_PATH = re.compile(
    r"""
    (?<![\w>/\\.~\-])
    (?:
        [A-Za-z]:[\\/][^\s'"<>|]*[^\s'"<>|.,;:!?)\]}]     # C:\x or C:/x
      | \\\\[^\s'"<>|]*[^\s'"<>|.,;:!?)\]}]               # \\server\share
      | ~[\w.\-]*/[^\s'"<>]*[^\s'"<>.,;:!?)\]}]           # ~/x, ~user/x
      | \.{1,2}/[^\s'"<>]*[^\s'"<>.,;:!?)\]}]             # ./x, ../x
      | /[^\s'"<>]*[^\s'"<>.,;:!?)\]}]                    # /a/b
      | [\w.\-]+(?:/[\w.\-]+){2,}                         # a/b/c
      | [\w.\-]+/[\w\-]+\.[A-Za-z]\w*                     # a/b.py
    )
    (?![\w</\\])
    """,
    re.VERBOSE,
)
_TIME = re.compile(
    r"(?<![\w>])\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
    r"(?![\w<])"
)
_UUID = re.compile(
    r"(?<![\w>])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(?![\w<])"
)
_ADDRESS = re.compile(r"(?<![\w>])0[xX][0-9a-fA-F]+(?![\w<])")
_HEX = re.compile(r"(?<![\w>])(?=[0-9]*[a-fA-F])(?![0-9]+[eE][-+][0-9])[0-9a-fA-F]{8,}(?![\w<])")
_NUMBER = re.compile(r"(?:(?<![\w>.])[-+])?(?<!\w)\d+(?:\.\d+)*(?:[eE][-+]?\d+)?")

_SUBSTITUTIONS: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    (_QUOTED, "<str>", ("'", '"')),
    (_URL, "<url>", ("://",)),
    (_PATH, "<path>", ("/", "\\")),
    (_TIME, "<time>", ("-",)),
    (_UUID, "<uuid>", ("-",)),
    (_ADDRESS, "<addr>", ("0x", "0X")),
    (_HEX, "<hex>", ()),
    (_NUMBER, "<n>", ()),
)


def reference_normalise(text: str) -> str:
    """signature v1's ``normalise_message``, verbatim."""
    text = " ".join(text[:_MAX_READ].split())
    for pattern, placeholder, triggers in _SUBSTITUTIONS:
        if not triggers or any(t in text for t in triggers):
            text = pattern.sub(placeholder, text)
    return _reference_cut(text) if len(text) > _MAX_MESSAGE else text


_SAFE_ENDS = frozenset(",;:!?)]}>")
_CUT = "<cut>"


def _reference_cut(text: str) -> str:
    end = max(text.rfind(" ", 0, _MAX_MESSAGE + 1), 0)
    for i in range(_MAX_MESSAGE, end, -1):
        if text[i - 1] in _SAFE_ENDS:
            end = i
            break
    if end > 0:
        return text[:end]
    return text[: _MAX_MESSAGE - len(_CUT)] + _CUT


# --- generated messages ------------------------------------------------------------------------

_HEXDIGITS = "0123456789abcdefABCDEF"
_WORD = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=8)
_SEGMENT = st.text(string.ascii_letters + string.digits + "_.-", min_size=1, max_size=8)

VALUES = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers(min_value=0, max_value=2**80).map(hex),
    st.integers(min_value=0, max_value=2**80).map(lambda n: hex(n).upper()),
    st.text(_HEXDIGITS, min_size=1, max_size=40),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat(sep=" ")),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.dates().map(lambda d: d.isoformat()),
    st.lists(_SEGMENT, min_size=1, max_size=5).map(lambda s: "/" + "/".join(s)),
    st.lists(_SEGMENT, min_size=1, max_size=5).map(lambda s: "~/" + "/".join(s)),
    st.lists(_SEGMENT, min_size=1, max_size=5).map(lambda s: "./" + "/".join(s)),
    st.lists(_SEGMENT, min_size=2, max_size=5).map("/".join),
    st.lists(_SEGMENT, min_size=1, max_size=5).map(lambda s: "C:\\" + "\\".join(s)),
    st.lists(_SEGMENT, min_size=1, max_size=5).map(lambda s: "\\\\" + "\\".join(s)),
    st.tuples(st.sampled_from(["http", "https", "s3", "postgresql+psycopg"]), _SEGMENT).map(
        lambda t: f"{t[0]}://{t[1]}"
    ),
    st.text(max_size=20).map(repr),
    st.text(max_size=20).map(lambda s: f'"{s}"'),
    st.text(max_size=20).map(lambda s: f"'{s}'"),
    _WORD,
)

# Characters and pieces the patterns turn on, so that their edges meet often.
PIECES = st.sampled_from(
    [
        *"0123456789abcdefgxXTZeE-+.,:;/\\'\" <>~_@?=()[]{}|!\n\t",
        *["0x", "://", "2024-01-02", "12:30:00", "+02:00", "deadbeef", "0000000000000002e+16"],
        *["3f2a1b4c-1234-4abc-9def-0123456789ab", "C:\\", "C:/", "../", "./", "~/", "\\\\"],
        *["<n>", "<str>", "<path>", "<hex>", "<uuid>", "<url>", "<time>", "<addr>", "<cut>"],
        *["e+", "e-", "1.5", "٣", "é", "\u00a0", "\u2003"],
    ]
)

# Short texts over the characters the patterns look at around a value: every neighbour meets
# every other (a sign after a dot, a quote after a placeholder, a slash before a date).
DENSE = st.text("019aefxX-+.,:;>< /\\'\"~_TZe()", max_size=14)

MESSAGES = st.one_of(
    DENSE,
    st.text(),
    st.lists(PIECES, max_size=120).map("".join),
    st.lists(st.one_of(VALUES, PIECES), max_size=40).map("".join),
    st.lists(st.one_of(VALUES, _WORD), max_size=30).map(" ".join),
    st.lists(st.one_of(VALUES, PIECES, _WORD), min_size=40, max_size=200).map("".join),
)


ORDER_REJECTED = (
    "order 4711 for customer 00000000-0000-0000-0000-000002394029 rejected at "
    "/srv/data/orders/2024/4711.json: expected 3 fields, got 2 (after 1.5 s, attempt 2 of 5)"
)


@settings(max_examples=1000)
@given(MESSAGES)
@example(ORDER_REJECTED)
@example("'utf-8' codec can't decode byte 0x92 in position 17: invalid start byte")
@example("x" * 9000)
@example("a," * 200)
@example("(" * 400)
@example(")" + "x" * 400)
@example("1.-5 and x.+2")
def test_the_normaliser_reads_messages_as_signature_v1_did(text: str) -> None:
    assert normalise_message(text) == reference_normalise(text)


@given(MESSAGES)
def test_a_message_normalised_again_reads_as_the_first_time(text: str) -> None:
    # the second time may come from a cache: it must not differ from the first
    first = normalise_message(text)
    assert normalise_message(text) == first == reference_normalise(text)
    assert normalise_message(str(text + " ")[:-1]) == first  # an equal string, not the same one


class Anything(str):
    """A string that equals every string and hashes alike: a cache keyed by it would mix them."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


@given(st.lists(MESSAGES, min_size=2, max_size=5))
def test_a_str_subclass_is_read_for_its_own_text(texts: list[str]) -> None:
    for text in texts:
        assert normalise_message(Anything(text)) == reference_normalise(text)
        assert normalise_message(text) == reference_normalise(text)
