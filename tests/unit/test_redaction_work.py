"""The work a redaction does on adversarial texts: long runs of what secrets are made of (a
repeated key id's prefix, ``sk-``, ``eyJ``, closing brackets after a password) cost their
length, not its square, nor a scan of the whole text per token they hold."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from onward.events import Redactor
from onward.events.redaction import DEFAULT_PATTERNS

REDACTOR = Redactor()


def _whole_scans(redact: Callable[[], object]) -> int:
    """How many times a regex searched a text from a position on (``search``, ``finditer``,
    ``findall``, ``sub``: each reads to the text's end when nothing matches) while ``redact``
    ran; a ``match`` at one place is not counted."""
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), re.Pattern):
            calls += arg.__name__ in {"search", "finditer", "findall", "sub"}

    sys.setprofile(profile)
    try:
        redact()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("unit", ["AKIA", "AKIA0123456789ABCDEF", "AIza" + "B" * 35])
def test_a_run_of_glued_tokens_is_redacted_whole_in_a_few_scans(unit: str) -> None:
    """Each token glued to the one before was found only once the one before was replaced, one
    scan of the whole text by every pattern per token, up to a limit of passes (64 tokens)
    that left the rest in the clear: "AKIA" * 50,000 took 19 s and was not idempotent."""
    short, long = unit * 100, unit * 1000
    redacted = REDACTOR.redact(long)
    assert "AKIA" not in redacted.replace("[REDACTED:", "")
    assert "AIza" not in redacted
    assert REDACTOR.redact(redacted) == redacted
    scans = _whole_scans(lambda: REDACTOR.redact(long + " "))
    assert scans == _whole_scans(lambda: REDACTOR.redact(short + " "))
    assert scans <= 6 * len(DEFAULT_PATTERNS)


def _unbounded_lookaheads(regex: str) -> list[str]:
    """The lookaheads of a regex that may read to the end of a text (an unbounded width)."""
    import re._constants as constants
    import re._parser as parser

    found: list[str] = []

    def walk(items: Any) -> None:
        for op, av in items:
            if op in (constants.ASSERT, constants.ASSERT_NOT):
                direction, sub = av
                if direction == 1 and sub.getwidth()[1] >= constants.MAXREPEAT:
                    found.append(str(sub))
                walk(sub)
            elif op in (constants.BRANCH,):
                for branch in av[1]:
                    walk(branch)
            elif op in (
                constants.MAX_REPEAT,
                constants.MIN_REPEAT,
                constants.POSSESSIVE_REPEAT,
            ):
                walk(av[2])
            elif op is constants.SUBPATTERN:
                walk(av[-1])
            elif op is constants.ATOMIC_GROUP:
                walk(av)
            elif op is constants.GROUPREF_EXISTS:
                walk(av[1])
                if av[2] is not None:
                    walk(av[2])

    walk(parser.parse(regex))
    return found


@pytest.mark.parametrize("name", ["openai-key", "jwt", "secret-value"])
def test_the_patterns_that_read_a_whole_run_per_candidate_no_longer_do(name: str) -> None:
    """Every "sk-" in a run of them looked ahead to the run's end for a digit ("sk-" * 20,000
    took 31 s), every "eyJ" for a dot ("eyJ_" * 20,000: 3 s), and every character of a
    password's value for the end of the brackets after it ("password=a" and 20,000 ")": 14 s):
    the square of the run's length. Now the run is taken once and judged as a whole."""
    (pattern,) = (p for p in DEFAULT_PATTERNS if p.name == name)
    assert _unbounded_lookaheads(pattern.regex) == [] or name == "secret-value"
    if name == "secret-value":  # only the look after an "&" (it stops at the next one)
        assert len(set(_unbounded_lookaheads(pattern.regex))) == 1
    if name == "jwt":
        assert "{4,}+" in pattern.regex


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("sk-" * 2000, True),
        ("key sk-" + "a" * 30 + " done", True),
        ("key sk-" + "a" * 300 + "7 done", False),
        ("sk-" * 2000 + "7", False),
        ("eyJ_" * 2000, True),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature-x1", False),
        ("eyJ_" * 50 + "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.x", False),
        ("password=a" + ")" * 2000 + "b", False),
        ("password=hunter2)) next", False),
    ],
)
def test_runs_are_judged_as_before(text: str, kept: bool) -> None:
    """The verdicts of the patterns rewritten to read a run once are those they gave before."""
    assert (REDACTOR.redact(text) == text) is kept


def test_a_password_before_a_run_of_brackets_keeps_the_brackets() -> None:
    redacted = REDACTOR.redact("f(password=hunter2))")
    assert redacted == "f(password=[REDACTED:secret-value]))"
    redacted = REDACTOR.redact("password=a" + ")" * 2000 + "b")
    assert redacted == "password=[REDACTED:secret-value]"
