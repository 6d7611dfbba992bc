"""The registry's choice of fixes is the same, for any error and call, whether or not it asks only
the fixes whose ``error_types`` are along the error's chain.

The reference below asks every fix, as the registry did before it kept the fixes worth asking
for each chain of types. The errors are those the built-in fixes are meant for, their subclasses,
neighbours and others, chained by ``__cause__`` or ``__context__``; the calls carry the arguments
and hints the fixes look for, or not.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
from collections.abc import Collection, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from onward.healing.fixes import Fix, FixRegistry, FixStats, StepCall
from onward.healing.remedies import builtin_fixes, default_registry

FIXES = builtin_fixes()
NAMES = [fix.name for fix in FIXES]


def reference_candidates(
    fixes: tuple[Fix, ...],
    error: BaseException,
    call: StepCall,
    stats: Mapping[str, FixStats],
    learned: Collection[str],
) -> list[str]:
    """Learned, then matching fixes, each group by rate, demoted ones left out: every fix asked."""
    first: list[tuple[float, int, str]] = []
    then: list[tuple[float, int, str]] = []
    for order, fix in enumerate(fixes):
        record = stats.get(fix.name, FixStats())
        if record.demoted:
            continue
        if fix.name in learned:
            first.append((-record.rate, order, fix.name))
        elif fix.matches(error, call):
            then.append((-record.rate, order, fix.name))
    return [name for _, _, name in sorted(first) + sorted(then)]


class ReadTimeout(Exception):
    """A timeout known by its name alone, as httpx's is."""


PATHS = ["/nonexistent/onward-index/out.txt", "relative/missing/report.csv", "/tmp"]


def _errors() -> list[st.SearchStrategy[BaseException]]:
    undecodable = st.builds(
        UnicodeDecodeError,
        st.sampled_from(["utf-8", "ascii"]),
        st.binary(min_size=1, max_size=8),
        st.just(0),
        st.just(1),
        st.just("invalid start byte"),
    )
    unencodable = st.builds(
        UnicodeEncodeError,
        st.just("ascii"),
        st.text(min_size=1),
        st.just(0),
        st.just(1),
        st.just("x"),
    )
    with_file = st.sampled_from(
        [FileNotFoundError, PermissionError, IsADirectoryError, OSError]
    ).flatmap(lambda kind: st.sampled_from(PATHS).map(lambda p: kind(2, "No such file", p)))
    syntax = st.sampled_from([SyntaxError, IndentationError, TabError]).map(lambda k: k("bad"))
    return [
        undecodable,
        unencodable,
        with_file,
        syntax,
        st.sampled_from(["database is locked", "no such table: t"]).map(sqlite3.OperationalError),
        st.sampled_from(
            [
                ConnectionResetError,
                ConnectionRefusedError,
                ConnectionAbortedError,
                BrokenPipeError,
                ConnectionError,
                TimeoutError,
                ReadTimeout,
                MemoryError,
                ValueError,
                RuntimeError,
            ]
        ).map(lambda kind: kind("x")),
        st.just(http.client.RemoteDisconnected("gone")),
        st.just(subprocess.TimeoutExpired("cmd", 5)),
        st.just(json.JSONDecodeError("Expecting value", 'noise {"a": 1} noise', 0)),
        st.sampled_from(["timeout", "retries", 3]).map(KeyError),
        st.sampled_from(["ujson", "yaml", ""]).map(lambda m: ModuleNotFoundError(m, name=m)),
    ]


KINDS_OF_ERRORS = _errors()
# each kind as often as any other
ONE_ERROR = st.integers(0, len(KINDS_OF_ERRORS) - 1).flatmap(lambda i: KINDS_OF_ERRORS[i])


@st.composite
def errors(draw: st.DrawFn) -> BaseException:
    """An error, and maybe a chain of causes (explicit or implicit) behind it."""
    error = draw(ONE_ERROR)
    link = error
    for _ in range(draw(st.integers(0, 2))):
        behind = draw(ONE_ERROR)
        if draw(st.booleans()):
            link.__cause__ = behind
        else:
            link.__context__ = behind
        link = behind
    return error


# Each parameter with the value its fix looks for, so that errors and calls meet often.
TYPICAL: dict[str, Any] = {
    "path": PATHS[0],
    "output": PATHS[1],
    "encoding": "ascii",
    "errors": "strict",
    "timeout": 5.0,
    "batch_size": 8,
    "text": 'noise {"a": 1} noise',
    "code": "```python\nx = 1\n```",
    "source": "\tx = 1\n  y = 2\n",
    "module": "ujson",
    "config": {"host": "db"},
}
OTHER_VALUES = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(["utf-8", "latin-1", "replace", "yaml", "x = 1"]),
    st.integers(0, 2),
    st.floats(0, 400),
    st.none(),
)


@st.composite
def arguments(draw: st.DrawFn) -> dict[str, Any]:
    """Each parameter most often with its typical value, else another, else absent."""
    chosen: dict[str, Any] = {}
    for key, typical in TYPICAL.items():
        way = draw(st.sampled_from(["typical", "typical", "other", "absent"]))
        if way != "absent":
            chosen[key] = typical if way == "typical" else draw(OTHER_VALUES)
    return chosen


TYPICAL_HINTS: dict[str, Any] = {
    "fallback_dir": "/nonexistent/onward-fallback",
    "timeout_cap": 60.0,
    "alternatives": {"ujson": "json"},
    "defaults": {"timeout": 30, "retries": 3},
}


@st.composite
def hints(draw: st.DrawFn) -> dict[str, Any]:
    """Each hint most often as its fix wants it, else absent."""
    return {key: value for key, value in TYPICAL_HINTS.items() if draw(st.integers(0, 3))}


CALLS = st.builds(StepCall, step=st.just("step"), arguments=arguments(), hints=hints())
STATS = st.dictionaries(
    st.sampled_from(NAMES),
    st.integers(0, 8).flatmap(lambda a: st.integers(0, a).map(lambda s: FixStats(a, s))),
    max_size=5,
)
LEARNED = st.lists(st.sampled_from([*NAMES, "gone"]), max_size=3).map(tuple)


@settings(max_examples=400)
@given(errors(), CALLS, STATS, LEARNED)
def test_asking_only_the_fixes_worth_asking_chooses_as_asking_all(
    error: BaseException, call: StepCall, stats: dict[str, FixStats], learned: tuple[str, ...]
) -> None:
    registry = default_registry()
    chosen = registry.candidates(error, call, signature="s", stats=stats, learned=learned)
    expected = reference_candidates(FIXES, error, call, stats, learned)

    assert [fix.name for fix in chosen] == expected
    # and again, from what the registry kept for this chain of types
    again = registry.candidates(error, call, signature="s", stats=stats, learned=learned)
    assert [fix.name for fix in again] == expected


def test_the_reference_can_tell_fixes_apart() -> None:
    error: Any = FileNotFoundError(2, "No such file", PATHS[0])
    call = StepCall(step="step", arguments={"path": PATHS[0], "timeout": 5.0})
    assert reference_candidates(FIXES, error, call, {}, ()) == ["create-missing-parent-directory"]
    registry: FixRegistry = default_registry()
    assert [
        f.name for f in registry.candidates(error, call, signature="s", stats={}, learned=())
    ] == ["create-missing-parent-directory"]
