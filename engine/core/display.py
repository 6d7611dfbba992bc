"""How text read from a log is shown: any character may be in it (a task's name, an error's
message), so each control, format (bidirectional overrides and isolates, direction marks), lone
surrogate or line-separator character is escaped as in a Python string. A line break cannot add
a row to a table, an escape sequence cannot drive a terminal, and a bidirectional override
cannot reorder what a reader sees (in a terminal as in the HTML report)."""

from __future__ import annotations

import unicodedata

__all__ = ["printable", "printable_json"]

# Control, format (bidirectional overrides), lone surrogate and line or paragraph separator
# characters.
_UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))


def printable(text: str) -> str:
    """``text`` with each control, format or line-separator character escaped as in a Python
    string (``\\n``, ``\\x1b``, ``\\u202e``): safe to print on one line of a terminal."""
    if text.isprintable():
        return text
    return "".join(
        c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in _UNPRINTABLE else c
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
