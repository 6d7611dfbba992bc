"""Error signatures for any values: one failure reads one way, and its id never depends on the run.

A message template filled with any number, uuid, path, URL, timestamp, hex id or quoted value
normalises to one text for all values of a kind, and the same failure raised from one function
at any such value has one id, while another function gives another. Normalising twice changes
nothing. The id is computed from the fingerprint's parts alone: a process with another
``PYTHONHASHSEED`` computes the same ids.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.healing.signature import fingerprint, normalise_message

ROOT = Path(__file__).parents[2]

TEMPLATES = [
    "{}",
    "failed: {}",
    "cannot open {} for writing",
    "timeout after {} while waiting",
    "{} not found (attempt 2)",
    "got {}, expected a value",
    "key {}: rejected by server",
]

# Path segments start and end with a letter or digit: a trailing mark reads as the sentence's.
_SEGMENT = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9_.\-]{0,10}[A-Za-z0-9])?", fullmatch=True)
_SEGMENTS = st.lists(_SEGMENT, min_size=1, max_size=5)
_HEX = "0123456789abcdef"

VALUES: dict[str, st.SearchStrategy[str]] = {
    "int": st.integers().map(str),
    "float": st.floats(allow_nan=False, allow_infinity=False).map(repr),
    "uuid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    "address": st.integers(min_value=0, max_value=2**64).map(hex),
    # a hex id holds a letter: a run of decimal digits is a number
    "hex": st.tuples(
        st.text(_HEX, min_size=7, max_size=40), st.sampled_from("abcdef"), st.integers(0, 40)
    ).map(lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]),
    "posix path": _SEGMENTS.map(lambda s: "/" + "/".join(s)),
    "home path": _SEGMENTS.map(lambda s: "~/" + "/".join(s)),
    "relative path": st.lists(_SEGMENT, min_size=3, max_size=5).map("/".join),
    "windows path": _SEGMENTS.map(lambda s: "C:\\" + "\\".join(s)),
    "url": st.tuples(
        st.sampled_from(["http", "https", "postgresql", "s3"]), _SEGMENT, _SEGMENTS
    ).map(lambda t: f"{t[0]}://{t[1]}/{'/'.join(t[2])}"),
    "time": st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda d: d.isoformat()),
    "date": st.dates().map(lambda d: d.isoformat()),
    "single-quoted": st.text().filter(lambda s: "'" not in s and "<str>" not in s).map(repr),
    "double-quoted": st.text()
    .filter(lambda s: '"' not in s and "<str>" not in s)
    .map(lambda s: f'"{s}"'),
}


def build(module: str, source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": module}
    exec(compile(textwrap.dedent(source), module.replace(".", "/") + ".py", "exec"), namespace)
    return namespace


RAISERS = build(
    "shop.orders",
    """
    def load(message):
        raise ValueError(message)

    def save(message):
        raise ValueError(message)
    """,
)


def catch(fn: Callable[[str], object], message: str) -> BaseException:
    try:
        fn(message)
    except ValueError as exc:
        return exc
    raise AssertionError("nothing raised")


@st.composite
def two_of_a_kind(draw: st.DrawFn) -> tuple[str, str, str]:
    """A template and two values of one kind."""
    kind = draw(st.sampled_from(sorted(VALUES)))
    return draw(st.sampled_from(TEMPLATES)), draw(VALUES[kind]), draw(VALUES[kind])


@given(two_of_a_kind())
def test_values_of_a_kind_normalise_alike(case: tuple[str, str, str]) -> None:
    template, one, other = case
    assert normalise_message(template.format(one)) == normalise_message(template.format(other))


@given(two_of_a_kind())
def test_one_call_site_one_id_another_call_site_another(case: tuple[str, str, str]) -> None:
    template, one, other = case
    load, save = RAISERS["load"], RAISERS["save"]
    first = fingerprint(catch(load, template.format(one)), app_modules=["shop"])
    assert first.id == fingerprint(catch(load, template.format(other)), app_modules=["shop"]).id
    assert first.id != fingerprint(catch(save, template.format(one)), app_modules=["shop"]).id


@given(st.text() | two_of_a_kind().map(lambda c: c[0].format(c[1])))
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalise_message(text)
    assert normalise_message(once) == once
    assert len(once) <= 300


# Characters and pieces the patterns turn on, so that their edges meet often.
_TRICKY = st.lists(
    st.sampled_from(
        [
            *"0123456789abcdefgxXTZ-+.:/\\'\" <>~_@?=()[]|,;!\n",
            *["0x", "://", "2024-01-02", "3f2a1b4c-1234-4abc-9def-0123456789ab", "deadbeef"],
            *["C:\\", "../", "<n>", "<str>", "e+", "e-"],
        ]
    ),
    max_size=120,
).map("".join)


@settings(max_examples=500)
@given(_TRICKY)
def test_normalising_twice_changes_nothing_at_the_edges(text: str) -> None:
    once = normalise_message(text)
    assert normalise_message(once) == once


def ids_of(messages: list[str]) -> list[str]:
    """The ids of a chained failure raised with each message (run here and in other processes)."""
    namespace: dict[str, Any] = {"__name__": "golden.app"}
    source = (
        "def fail(message):\n"
        "    try:\n"
        "        {}[message]\n"
        "    except KeyError as exc:\n"
        "        raise ValueError(message) from exc\n"
    )
    exec(compile(source, "golden/app.py", "exec"), namespace)
    ids = []
    for message in messages:
        try:
            namespace["fail"](message)
        except ValueError as exc:
            ids.append(fingerprint(exc, app_modules=["golden"]).id)
    return ids


SCRIPT = f"""
import json, sys
from typing import Any
from onward.healing.signature import fingerprint
{textwrap.dedent(inspect.getsource(ids_of))}
for line in sys.stdin:
    print(json.dumps(ids_of(json.loads(line))), flush=True)
"""


class IdsProcess:
    """A process of its own (its own hash seed) that fingerprints each list of messages it is
    sent, one JSON line each: one start-up serves every example."""

    def __init__(self, hashseed: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
        )

    def ids(self, messages: list[str]) -> list[str]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(messages) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the fingerprinting process ended (exit code {self.process.wait()})"
        ids: list[str] = json.loads(line)
        return ids

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0
        self.process.stdout.close()


@pytest.fixture(scope="module")
def processes() -> Iterator[list[IdsProcess]]:
    """Three processes, hash seeds 0, 4242 and random."""
    started = [IdsProcess(seed) for seed in ("0", "4242", "random")]
    try:
        yield started
    finally:
        for process in started:
            process.close()


@settings(max_examples=3, deadline=None)
@given(st.lists(st.text() | two_of_a_kind().map(lambda c: c[0].format(c[1])), max_size=20))
def test_ids_do_not_depend_on_the_process(processes: list[IdsProcess], messages: list[str]) -> None:
    first, *others = processes
    one = first.ids(messages)
    assert len(one) == len(messages)
    assert one == ids_of(messages)
    for other in others:
        assert one == other.ids(messages)
