"""How text read from a log is shown: any character may be in it (a task's name, an error's
message), so each control, format (bidirectional overrides and isolates, direction marks), lone
surrogate or line-separator character is escaped as in a Python string. A line break cannot add
a row to a table, an escape sequence cannot drive a terminal, and a bidirectional override
cannot reorder what a reader sees. The HTML report escapes less (:func:`readable`): the
bidirectional controls, but not the joiners that emoji and many scripts are written with."""

from __future__ import annotations

import unicodedata

__all__ = ["printable", "printable_json", "readable"]

# Control, format (bidirectional overrides), lone surrogate and line or paragraph separator
# characters.
_UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
# The same but format characters, which a page shows as they are (but _BIDI).
_SHOWN_ESCAPED = _UNPRINTABLE - {"Cf"}
# What may reorder or hide text on a page: the bidirectional controls (the Arabic letter mark,
# the direction marks, embeddings, overrides and isolates).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable(text: str) -> str:
    """``text`` with each control, format or line-separator character escaped as in a Python
    string (``\\n``, ``\\x1b``, ``\\u202e``): safe to print on one line of a terminal."""
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _UNPRINTABLE else c
        for c in text
    )


def readable(text: str) -> str:
    """``text`` with each bidirectional control, control character (but tab and line break),
    lone surrogate or line-separator character escaped as :func:`printable` does: safe to
    show on a page, where no escape sequence drives anything. The other format characters are
    part of the text and kept: the joiners of emoji sequences and of Persian or Indic words,
    soft hyphens, the tags of subdivision flags."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if c in _BIDI or (c not in "\t\n" and unicodedata.category(c) in _SHOWN_ESCAPED)
        else c
        for c in text
    )


def printable_json(text: str) -> str:
    """JSON ``text`` with each control, format or line-separator character that JSON leaves as
    it is (DEL, C1 controls, bidirectional overrides, U+2028) written as its ``\\uXXXX``
    escape: the same JSON, safe to print. Line breaks outside strings are kept."""
    if all(c.isprintable() or c == "\n" for c in text):
        return text
    out: list[str] = []
    for c in text:
        if c != "\n" and unicodedata.category(c) in _UNPRINTABLE:
            code = ord(c)
            if code > 0xFFFF:  # a surrogate pair, as JSON writes one
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(c)
    return "".join(out)
