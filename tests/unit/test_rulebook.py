"""The decision rulebook: built-in rules met by real exceptions, precedence across and within
layers, overrides, every bad input's error, and ``onward rules``.

A hypothesis property checks :meth:`Rulebook.decide` against a plain reading of the rules:
the first rule of :meth:`Rulebook.rules` whose every pattern ``re.search``-es its fact.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import re
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.cli.rules import add_rules_arguments, cmd_rules
from onward.events import OnwardError, Strategy, UsageError
from onward.healing.remedies import default_registry
from onward.judgement.builtin_rules import BUILTIN_RULES
from onward.judgement.rulebook import (
    Rule,
    Rulebook,
    RulebookError,
    RuleFile,
    RuleFunction,
    RuleInfo,
    Verdict,
    verdict,
)


def error_facts(exc: BaseException, *, step: str = "load", attempt: int = 1) -> dict[str, Any]:
    """The facts of scenario "error" for an exception, as the engine gathers them."""
    kinds = [k.__name__ for k in type(exc).__mro__ if k is not object]
    return {
        "error_type": type(exc).__name__,
        "exception_types": " ".join(kinds),
        "message": str(exc),
        "signature": "v1-0123abcd",
        "step": step,
        "attempt": attempt,
    }


def raised(action: Callable[[], object]) -> BaseException:
    """The exception that ``action`` raises."""
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError(f"{action} raised nothing")


def locked_database(tmp_path: Path) -> BaseException:
    """A real "database is locked": another connection holds the write lock."""
    path = tmp_path / "lock.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    waiter = sqlite3.connect(path, timeout=0)
    try:
        return raised(lambda: waiter.execute("INSERT INTO t VALUES (1)"))
    finally:
        waiter.close()
        holder.close()


def write_rules(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the built-in rules --------------------------------------------------------------------


def _assertion() -> None:
    total = 2 + 2
    assert total == 5, "arithmetic"


def _decode() -> object:
    return b"caf\xe9".decode("utf-8")


def _encode() -> object:
    return "3\u20ac".encode("ascii")


def _json() -> object:
    return json.loads('Sure! Here it is: {"a": 1}')


ERRORS: dict[str, tuple[Callable[[], object] | BaseException, str, str, bool | None]] = {
    # name: (the error, or what raises it; its rule; the first fix; retry)
    "decode": (_decode, "error.encoding", "decode-with-detected-encoding", None),
    "encode": (_encode, "error.encoding", "decode-with-detected-encoding", None),
    "module": (
        lambda: importlib.import_module("onward_no_such_module"),
        "error.missing-import",
        "use-alternative-module",
        False,
    ),
    "memory": (MemoryError(), "error.memory", "halve-batch-size", False),
    "timeout": (TimeoutError("timed out"), "error.timeout", "lengthen-timeout", None),
    "reset": (
        ConnectionResetError(104, "Connection reset by peer"),
        "error.connection-dropped",
        "reconnect-after-dropped-connection",
        None,
    ),
    "json": (_json, "error.malformed-json", "extract-json-from-noise", None),
    "tab": (
        lambda: compile("if x:\n\tpass\n        pass\n", "<generated>", "exec"),
        "error.indentation",
        "normalise-indentation",
        False,
    ),
    "fences": (
        lambda: compile("```python\nx = 1\n```\n", "<generated>", "exec"),
        "error.syntax",
        "strip-markdown-fences",
        False,
    ),
    "key": (
        lambda: dict[str, str]()["api_url"],
        "error.missing-key",
        "use-declared-default",
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_builtin_rule_for_a_real_error(name: str) -> None:
    error, rule, fix, retry = ERRORS[name]
    exc = error if isinstance(error, BaseException) else raised(error)
    found = Rulebook().decide("error", error_facts(exc))
    assert found is not None
    assert (found.rule, found.choice, found.fixes[0], found.retry) == (rule, "fix", fix, retry)
    assert found.source == "builtin"
    assert found.clarity == pytest.approx(0.5 + 1 / 6)


def test_encoding_rule_offers_both_fixes_in_order() -> None:
    found = Rulebook().decide("error", error_facts(raised(_encode)))
    assert found is not None
    assert found.fixes == ("decode-with-detected-encoding", "encode-output-with-replacement")


def test_database_lock_needs_the_message_too(tmp_path: Path) -> None:
    book = Rulebook()
    lock = locked_database(tmp_path)
    assert type(lock) is sqlite3.OperationalError
    found = book.decide("error", error_facts(lock))
    assert found is not None
    assert (found.rule, found.fixes) == ("error.db-lock", ("wait-for-database-lock",))
    assert found.clarity == pytest.approx(0.5 + 2 / 6)
    for message in ("Deadlock found when trying to get lock", "could not obtain lock on row"):
        assert book.decide("error", error_facts(sqlite3.OperationalError(message))) == found
    assert book.decide("error", error_facts(sqlite3.OperationalError("no such table: t"))) is None


def test_path_errors(tmp_path: Path) -> None:
    book = Rulebook()
    missing = raised(lambda: (tmp_path / "no" / "out.csv").open("w"))
    for exc in (missing, PermissionError(13, "Permission denied"), IsADirectoryError(21, "dir")):
        found = book.decide("error", error_facts(exc))
        assert found is not None
        assert found.rule == "error.path"
        assert found.fixes == ("create-missing-parent-directory", "write-to-fallback-location")
        assert found.retry is False
    # An OSError that is not about a path has no rule.
    assert book.decide("error", error_facts(OSError(28, "No space left on device"))) is None


def test_failing_test_asks_a_human() -> None:
    book = Rulebook()
    found = book.decide("error", error_facts(raised(_assertion)))
    assert found is not None
    assert (found.rule, found.choice, found.retry, found.strategy) == (
        "error.failing-test",
        "give_up",
        False,
        Strategy.ASK,
    )
    for step in ("run_tests", "test", "tests.unit", "pre-test-check"):
        by_step = book.decide("error", error_facts(RuntimeError("exit 1"), step=step))
        assert by_step is not None, step
        assert (by_step.rule, by_step.strategy) == ("error.test-step", Strategy.ASK)
    for step in ("contest", "attest_signature", "testing", "load"):
        assert book.decide("error", error_facts(RuntimeError("x"), step=step)) is None, step


def test_an_errors_own_rule_beats_the_test_step_rule() -> None:
    found = Rulebook().decide("error", error_facts(raised(_decode), step="run_tests"))
    assert found is not None
    assert found.rule == "error.encoding"


def test_a_subclass_matches_and_a_lookalike_does_not() -> None:
    class CsvDecodeError(UnicodeDecodeError):
        pass

    class MyUnicodeErrorish(ValueError):
        pass

    book = Rulebook()
    sub = book.decide("error", error_facts(CsvDecodeError("utf-8", b"\xff", 0, 1, "bad")))
    assert sub is not None
    assert sub.rule == "error.encoding"
    assert book.decide("error", error_facts(MyUnicodeErrorish("x"))) is None


@pytest.mark.parametrize(
    ("facts", "choice"),
    [
        ({"task": "t-2", "parent": "t-1", "queued": 0}, "wake_parent"),
        ({"task": "t-2", "parent": "t-1", "queued": 4}, "wake_parent"),
        ({"task": "t-2", "parent": "", "queued": 0}, "end_run"),
        ({"task": "t-2", "parent": None, "queued": 0}, "end_run"),
        ({"task": "t-2", "parent": "", "queued": 3}, "next_task"),
        ({"task": "t-2", "parent": "", "queued": 10}, "next_task"),
        ({"task": "t-2"}, "next_task"),
    ],
)
def test_task_completed(facts: dict[str, Any], choice: str) -> None:
    found = Rulebook().decide("task_completed", facts)
    assert found is not None
    assert found.choice == choice


@pytest.mark.parametrize(
    ("action", "impact", "asks"),
    [
        ("delete_branch", "high", True),
        ("DROP TABLE users", "high", True),
        ("deploy-production", "HIGH", True),
        ("git_push", "high", True),
        ("delete_branch", "medium", False),
        ("read_file", "high", False),
        ("migrate", "low", False),
    ],
)
def test_destructive_high_impact_actions_ask(action: str, impact: str, asks: bool) -> None:
    found = Rulebook().decide("action", {"action": action, "impact": impact})
    if asks:
        assert found is not None
        assert (found.rule, found.strategy) == ("action.destructive-high-impact", Strategy.ASK)
    else:
        assert found is None


def test_every_builtin_fix_is_registered() -> None:
    registry = default_registry()
    rules = msgspec.toml.decode(BUILTIN_RULES.encode(), type=RuleFile).rules
    named = {fix for rule in rules for fix in rule.fixes}
    assert named
    assert sorted(name for name in named if name not in registry) == []


def test_unknown_scenario_and_missing_facts_decide_nothing() -> None:
    book = Rulebook()
    assert book.decide("no-such-scenario", {"x": 1}) is None
    assert book.decide("error", {}) is None
    assert book.decide("error", {"exception_types": None, "error_type": "MemoryError"}) is None


# --- precedence ----------------------------------------------------------------------------


def test_layers_python_then_files_then_builtins(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
        [[rules]]
        id = "mine.memory"
        scenario = "error"
        when = { exception_types = 'MemoryError' }
        choice = "pause"
        """,
    )
    book = Rulebook.from_toml(path)
    facts = error_facts(MemoryError())
    found = book.decide("error", facts)
    assert found is not None
    assert (found.rule, found.source) == ("mine.memory", f"file:{path}")

    calls: list[str] = []

    @book.function("py.memory", "error", description="the memory broker")
    def broker(scenario: str, facts: Mapping[str, Any]) -> Verdict | None:
        calls.append(scenario)
        if facts.get("attempt") == 1:
            return verdict("retry", retry=True)
        return None

    first = book.decide("error", facts)
    assert first == Verdict(
        rule="py.memory",
        choice="retry",
        retry=True,
        clarity=0.8,
        source="python",
        description="the memory broker",
    )
    # A function returning None does not match: the file rule answers.
    later = book.decide("error", {**facts, "attempt": 2})
    assert later is not None
    assert later.rule == "mine.memory"
    assert calls == ["error", "error"]
    assert [r.id for r in book.rules()][:2] == ["py.memory", "mine.memory"]
    assert book.rules()[-1].id == "error.test-step"


def test_within_a_layer_priority_then_specificity_then_order() -> None:
    book = Rulebook(builtins=False)
    book.add(Rule(id="first-plain", scenario="s", when={"a": "x"}, choice="1"))
    book.add(Rule(id="second-plain", scenario="s", when={"a": "x"}, choice="2"))
    book.add(Rule(id="specific", scenario="s", when={"a": "x", "b": "y"}, choice="3"))
    book.add(Rule(id="urgent", scenario="s", when={"a": "x"}, choice="4", priority=1))
    book.add(Rule(id="fallback", scenario="s", choice="5", priority=-1))
    assert [r.id for r in book.rules()] == [
        "urgent",
        "specific",
        "first-plain",
        "second-plain",
        "fallback",
    ]
    assert [r.precedence for r in book.rules()] == [1, 2, 3, 4, 5]

    def chosen(facts: dict[str, Any]) -> str | None:
        found = book.decide("s", facts)
        return None if found is None else found.choice

    assert chosen({"a": "x", "b": "y"}) == "4"
    assert chosen({"b": "y"}) == "5"

    equal = Rulebook(
        [
            Rule(id="plain", scenario="s", when={"a": "x"}, choice="plain"),
            Rule(id="specific", scenario="s", when={"a": "x", "b": "y"}, choice="specific"),
            Rule(id="plain-too", scenario="s", when={"a": "x"}, choice="plain-too"),
        ],
        builtins=False,
    )
    both = equal.decide("s", {"a": "x", "b": "y"})
    assert both is not None
    assert both.rule == "specific"
    assert equal.decide("s", {"a": "x", "b": "n"}) == Verdict(
        rule="plain", choice="plain", clarity=0.5 + 1 / 6, source="code"
    )


def test_python_functions_order_by_priority_then_definition() -> None:
    book = Rulebook(builtins=False)
    for name, priority in (("a", 0), ("b", 2), ("c", 0)):
        book.function(name, "s", priority=priority)(
            lambda scenario, facts, name=name: verdict(name, clarity=0.3)
        )
    assert [r.id for r in book.rules()] == ["b", "a", "c"]
    found = book.decide("s", {})
    assert found is not None
    assert (found.rule, found.choice, found.clarity) == ("b", "b", 0.3)
    assert book.rules()[0].choice == ""


def test_clarity_grows_with_conditions() -> None:
    book = Rulebook(builtins=False)
    facts = {f"f{i}": "v" for i in range(5)}
    clarity = []
    for n in range(5):
        when = {f"f{i}": "v" for i in range(n)}
        book.add(Rule(id=f"r{n}", scenario=f"s{n}", when=when, choice="c"))
        found = book.decide(f"s{n}", facts)
        assert found is not None
        clarity.append(found.clarity)
    assert clarity == pytest.approx([0.5, 4 / 6, 5 / 6, 1.0, 1.0])


def test_facts_are_searched_as_strings() -> None:
    book = Rulebook(builtins=False)
    book.add(Rule(id="third", scenario="s", when={"attempt": "^3$", "ok": "^False$"}, choice="c"))
    assert book.decide("s", {"attempt": 3, "ok": False}) is not None
    assert book.decide("s", {"attempt": 13, "ok": False}) is None
    assert book.decide("s", {"attempt": 3}) is None


# --- overrides and duplicate ids -----------------------------------------------------------


def test_a_file_rule_replaces_the_builtin_of_the_same_id(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
        [[rules]]
        id = "error.encoding"
        scenario = "error"
        when = { error_type = '^UnicodeDecodeError$' }
        choice = "ask"
        strategy = "ask"
        """,
    )
    plain = Rulebook()
    book = Rulebook.from_toml(path)
    assert len(book) == len(plain)
    assert "error.encoding" in book
    [info] = [r for r in book.rules() if r.id == "error.encoding"]
    assert (info.source, info.choice) == (f"file:{path}", "ask")
    found = book.decide("error", error_facts(raised(_decode)))
    assert found is not None
    assert (found.choice, found.strategy, found.source) == ("ask", Strategy.ASK, f"file:{path}")
    # The built-in rule is gone, not just outranked: an encode error no longer matches.
    assert book.decide("error", error_facts(raised(_encode))) is None


def test_a_function_replaces_a_data_rule_whatever_the_order() -> None:
    book = Rulebook()
    book.function("error.memory", "error")(lambda scenario, facts: None)
    book.add(Rule(id="error.memory", scenario="error", choice="from-code"))
    assert [r.source for r in book.rules() if r.id == "error.memory"] == ["python"]
    assert book.decide("error", error_facts(MemoryError())) is None


def test_duplicate_ids_in_one_layer(tmp_path: Path) -> None:
    rule = '[[rules]]\nid = "mine.x"\nscenario = "error"\nchoice = "a"\n'
    with pytest.raises(RulebookError, match=r"rules\.toml: two rules with the id 'mine\.x'"):
        Rulebook.from_toml(write_rules(tmp_path, rule + rule))

    book = Rulebook.from_toml(write_rules(tmp_path, rule, "a.toml"))
    size = len(book)
    with pytest.raises(
        RulebookError, match=r"b\.toml: the rule id 'mine\.x' is already taken"
    ) as e:
        book.load_toml(write_rules(tmp_path, rule, "b.toml"))
    assert "a.toml" in str(e.value)
    assert isinstance(e.value, UsageError)
    assert len(book) == size
    with pytest.raises(RulebookError, match=r"rules added in code: .*'mine\.x'"):
        book.add(Rule(id="mine.x", scenario="error", choice="c"))
    with pytest.raises(RulebookError, match="two rules with the id 'r'"):
        Rulebook([Rule(id="r", scenario="s", choice="c")] * 2)

    book.function("py.x", "error")(lambda scenario, facts: None)
    with pytest.raises(RulebookError, match=r"Python function 'py\.x'"):
        book.function("py.x", "error")(lambda scenario, facts: None)
    assert len(book) == size + 1


def test_a_failed_file_adds_nothing(tmp_path: Path) -> None:
    book = Rulebook()
    size = len(book)
    bad = write_rules(
        tmp_path,
        """
        [[rules]]
        id = "fine"
        scenario = "error"
        choice = "c"
        [[rules]]
        id = "error.memory"
        scenario = "error"
        choice = "c"
        [[rules]]
        id = "fine"
        scenario = "error"
        choice = "c"
        """,
    )
    with pytest.raises(RulebookError):
        book.load_toml(bad)
    assert len(book) == size
    assert "fine" not in book


# --- bad input -----------------------------------------------------------------------------


def rule_text(**fields: str) -> str:
    """A [[rules]] table: id, scenario and choice, overridden or extended by ``fields``."""
    values = {"id": '"mine.one"', "scenario": '"error"', "choice": '"fix"', **fields}
    return "[[rules]]\n" + "".join(f"{k} = {v}\n" for k, v in values.items() if v)


GOOD = '[[rules]]\nid = "mine.zero"\nscenario = "error"\nchoice = "fix"\n\n'

BAD_FILES: dict[str, tuple[str, str]] = {
    # name: (the TOML, a regular expression its message matches after the file's path)
    "syntax": ('[[rules]\nid = "x"\n', r"not valid TOML: Expected '\]\]'"),
    # the TOML parser recursed out of the stack (a RecursionError and 3,000 lines of trace)
    "nested too deep": (
        "x = " + "[" * 5000 + "]" * 5000 + "\n",
        r"not valid TOML: nested too deep",
    ),
    "unknown field": (
        GOOD + rule_text(choise='"fix"'),
        r"rule 2 \('mine\.one'\): Object contains unknown field `choise`",
    ),
    "unknown top-level": ('[[rule]]\nid = "x"\n', r"Object contains unknown field `rule`$"),
    "missing field": (
        GOOD + rule_text(choice=""),
        r"rule 2 \('mine\.one'\): Object missing required field `choice`$",
    ),
    "wrong type": (
        GOOD + rule_text(priority='"high"'),
        r"rule 2 \('mine\.one'\) at priority: Expected `int`, got `str`",
    ),
    "bad strategy": (
        rule_text(strategy='"maybe"'),
        r"rule 1 \('mine\.one'\) at strategy: Invalid enum",
    ),
    "bad regex": (
        rule_text(when="{ message = 'locked(' }"),
        r"rule 1 \('mine\.one'\): fact 'message': invalid regular expression "
        r"'locked\(': missing \)",
    ),
    "pattern not a string": (
        rule_text(when="{ attempt = 3 }"),
        r"rule 1 \('mine\.one'\) at when\.attempt: Expected `str`, got `int` "
        r"\(the pattern for fact 'attempt'\)",
    ),
    "empty id": (rule_text(id='""'), r"rule 1: id must be a non-empty word, got ''$"),
    "empty scenario": (rule_text(scenario='""'), r"rule 1 \('mine\.one'\): .*scenario must be"),
    "upper-case scenario": (
        rule_text(scenario='"Error"'),
        r"rule 1 \('mine\.one'\): scenario must be lower case",
    ),
    "rules not a list": ("rules = 3\n", r"Expected `array`, got `int` \(at rules\)"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_says_where(tmp_path: Path, name: str) -> None:
    text, message = BAD_FILES[name]
    path = write_rules(tmp_path, text)
    with pytest.raises(RulebookError, match=re.escape(f"rules file {path}: ") + message) as e:
        Rulebook.from_toml(path)
    # A typed error of onward's, with no third-party exception chained to it.
    assert isinstance(e.value, OnwardError)
    assert isinstance(e.value, ValueError)
    assert e.value.__cause__ is None
    assert e.value.__suppress_context__


def test_bad_bytes_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RulebookError, match=r"^rules TOML: not valid TOML"):
        Rulebook.from_toml(b"[[rules]\n")
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(
        RulebookError, match=rf"^rules file {re.escape(str(missing))}: no such file$"
    ):
        Rulebook.from_toml(missing)
    with pytest.raises(RulebookError, match=r"pass TOML text as bytes"):
        Rulebook.from_toml('[[rules]]\nid = "x"\n')
    with pytest.raises(RulebookError, match="cannot read it"):
        Rulebook.from_toml(tmp_path)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin.toml"
    path.write_bytes('[[rules]]\ndescription = "caf\u00e9"\n'.encode("latin-1"))
    with pytest.raises(RulebookError, match=rf"rules file {re.escape(str(path))}: not valid TOML"):
        Rulebook.from_toml(path)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": ""}, r"rule '': id must be a non-empty word"),
        ({"id": "two words"}, r"id must be a non-empty word"),
        ({"scenario": ""}, r"rule 'r': scenario must be a non-empty word"),
        ({"choice": ""}, r"rule 'r': choice must be"),
        ({"when": {"message": "("}}, r"rule 'r': fact 'message': invalid regular expression '\('"),
        ({"when": {"attempt": 3}}, r"rule 'r': the pattern for fact 'attempt' must be a string"),
        ({"fixes": [""]}, r"rule 'r': a fix name must be"),
        ({"strategy": "maybe"}, r"rule 'r': unknown strategy 'maybe'"),
    ],
)
def test_bad_rule_in_code(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"id": "r", "scenario": "s", "choice": "c", **fields}
    with pytest.raises(RulebookError, match=message):
        Rule(**values)


def test_a_strategy_given_as_text_becomes_the_enum() -> None:
    rule = Rule(id="r", scenario="s", choice="c", strategy="ask")  # type: ignore[arg-type]
    assert rule.strategy is Strategy.ASK


def test_bad_python_rules() -> None:
    book = Rulebook(builtins=False)
    with pytest.raises(RulebookError, match="id must be"):
        book.function("", "s")
    with pytest.raises(RulebookError, match="lower case"):
        book.function("f", "Error")
    book.function("f", "s")(lambda scenario, facts: {"choice": "fix"})  # type: ignore[type-var]
    with pytest.raises(RulebookError, match=r"rule function 'f' returned \{'choice': 'fix'\}"):
        book.decide("s", {})
    with pytest.raises(RulebookError, match=r"clarity must be in \[0, 1\], not 1.5"):
        verdict("fix", clarity=1.5)


# --- the property: decide is the first match in rules() order ------------------------------

FACTS = ("kind", "step", "n")
PATTERNS = (
    r"\bFoo\b",
    r"\b(Foo|Bar)\b",
    r"\b(?:Bar)\b",
    "Foo",
    "^Bar$",
    r"\d",
    r"(?i)foo",
    r"^$",
    ".",
    r"Foo\b",
    r"\bFoo|Bar\b",
    r"\b(Foo)|(Bar)\b",
)
VALUES = st.one_of(
    st.none(),
    st.integers(-3, 30),
    st.sampled_from(
        ["Foo", "Bar", "Foo Bar", "xFoo", "Foo_1", "Foo.Bar", "\u00e9Foo", "foo", "", "Baz 7"]
    ),
    st.text(alphabet="FoBar _.\u00e9x1", max_size=8),
)

SAMPLES = [
    "Foo",
    "Bar",
    "Foo Bar",
    "Foo.Bar",
    "Foo-Bar",
    "Foo\nBar",
    "(Foo)",
    "xFoo",
    "Foo_1",
    "FooBar",
    "\u00e9Foo",
    "Foo\u00e9",
    "foo",
    "",
    7,
    0,
    None,
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_condition_matches_as_re_search_does(pattern: str) -> None:
    # Whole-word patterns take a faster path than re.search: it must agree on every text.
    book = Rulebook([Rule(id="r", scenario="s", when={"f": pattern}, choice="c")], builtins=False)
    for value in SAMPLES:
        expected = value is not None and re.search(pattern, str(value)) is not None
        assert (book.decide("s", {"f": value}) is not None) is expected, value


data_rules = st.tuples(
    st.booleans(),  # from a file (else added in code)
    st.sampled_from(["error", "action"]),
    st.dictionaries(st.sampled_from(FACTS), st.sampled_from(PATTERNS), max_size=3),
    st.integers(-1, 1),
)
python_rules = st.tuples(
    st.sampled_from(["error", "action"]),
    st.sampled_from(FACTS),
    VALUES,
    st.integers(-1, 1),
    st.booleans(),  # takes the id of the data rule with its index (replacing it)
)


def first_match(
    book: Rulebook, functions: dict[str, tuple[str, Any]], scenario: str, facts: dict[str, Any]
) -> str | None:
    """The reference: walk rules() in order, re.search every pattern in str(fact)."""
    missing = object()
    for info in book.rules():
        if info.scenario != scenario:
            continue
        if info.source == "python":
            fact, value = functions[info.id]
            if facts.get(fact, missing) == value:
                return info.id
        elif all(
            facts.get(fact) is not None and re.search(pattern, str(facts[fact]))
            for fact, pattern in info.when.items()
        ):
            return info.id
    return None


def python_rule(fact: str, value: Any) -> RuleFunction:
    """A Python rule that matches when ``fact`` equals ``value``."""
    missing = object()

    def rule(scenario: str, facts: Mapping[str, Any]) -> Verdict | None:
        return verdict("python") if facts.get(fact, missing) == value else None

    return rule


@settings(max_examples=300, deadline=None)
@given(
    st.lists(data_rules, max_size=12),
    st.lists(python_rules, max_size=3),
    st.sampled_from(["error", "action"]),
    st.dictionaries(st.sampled_from(FACTS), VALUES),
)
def test_decide_is_the_first_match_in_rules_order(
    rules: list[tuple[bool, str, dict[str, str], int]],
    pythons: list[tuple[str, str, Any, int, bool]],
    scenario: str,
    facts: dict[str, Any],
) -> None:
    book = Rulebook(builtins=False)
    toml = ""
    for n, (from_file, rule_scenario, when, priority) in enumerate(rules):
        rule = Rule(
            id=f"rule-{n}", scenario=rule_scenario, when=when, choice="c", priority=priority
        )
        if from_file:
            toml += f"[[rules]]\nid = 'rule-{n}'\nscenario = '{rule_scenario}'\nchoice = 'c'\n"
            toml += f"priority = {priority}\n"
            toml += "".join(f"when.{fact} = {json.dumps(p)}\n" for fact, p in when.items())
        else:
            book.add(rule)
    book.load_toml(toml.encode())
    functions: dict[str, tuple[str, Any]] = {}
    for n, (rule_scenario, fact, value, priority, replaces) in enumerate(pythons):
        name = f"rule-{n}" if replaces else f"py-{n}"
        book.function(name, rule_scenario, priority=priority)(python_rule(fact, value))
        functions[name] = (fact, value)

    found = book.decide(scenario, facts)
    assert (None if found is None else found.rule) == first_match(book, functions, scenario, facts)
    infos = book.rules()
    assert len({i.id for i in infos}) == len(infos) == len(book)
    assert [i.precedence for i in infos] == list(range(1, len(infos) + 1))
    assert all(i.source == "python" for i in infos if i.id in functions)


# --- onward rules --------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="onward rules")
    parser.add_argument("--json", action="store_true")
    add_rules_arguments(parser)
    return parser.parse_args(argv)


def test_rules_command_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_rules(parse()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["#", "ID", "SCENARIO", "WHEN", "CHOICE", "SOURCE"]
    ids = [line.split()[1] for line in lines[1:]]
    assert ids == [r.id for r in Rulebook().rules()]
    [memory] = [line for line in lines if " error.memory " in line]
    assert r"exception_types ~ \bMemoryError\b" in memory
    assert memory.split()[-2:] == ["fix", "builtin"]
    [nxt] = [line for line in lines if " task.next " in line]
    assert " - " in nxt


def test_rules_command_names_the_scenarios_when_none_matches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cmd_rules(parse("--scenario", "task_complete")) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["#  ID  SCENARIO  WHEN  CHOICE  SOURCE"]
    assert err == (
        "no rule in force for scenario 'task_complete' (the scenarios of the rules in force: "
        "action, error, task_completed)\n"
    )


def test_rules_command_with_a_file_and_a_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_rules(
        tmp_path,
        '[[rules]]\nid = "task.next"\nscenario = "task_completed"\n'
        'choice = "pause"\npriority = 5\n',
    )
    assert cmd_rules(parse("--rules", str(path), "--scenario", "task_completed")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines[1:]] == [
        "task.next",
        "task.has-parent",
        "task.queue-empty",
    ]
    assert lines[1].split()[-2:] == ["pause", f"file:{path}"]
    assert lines[1].split()[0] == "1"


def test_rules_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_rules(parse("--json", "--scenario", "action")) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    assert [row["id"] for row in rows] == ["action.destructive-high-impact"]
    assert msgspec.convert(rows[0], RuleInfo).when == {
        "action": "(?i)delete|drop|remove|deploy|publish|push|migrate",
        "impact": "(?i)^high$",
    }
    assert set(rows[0]) == {
        "precedence",
        "id",
        "scenario",
        "choice",
        "source",
        "priority",
        "when",
        "description",
    }


def test_rules_command_bad_file_raises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_rules(tmp_path, "[[rules]]\nid = 3\n")
    with pytest.raises(RulebookError, match=re.escape(str(path))):
        cmd_rules(parse("--rules", str(path)))
    assert capsys.readouterr().out == ""


def test_an_error_rule_whose_choice_the_engine_does_not_act_on_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``choice = "give-up"`` (for ``give_up``) was taken in silence: the step was retried as
    if no rule matched, and ``onward why`` credited the retries to the rule."""
    with caplog.at_level(logging.WARNING, logger="onward.judgement"):
        Rule(id="mine.timeout", scenario="error", choice="give-up")
        Rule(id="mine.ok", scenario="error", choice="give_up")
        Rule(id="mine.own", scenario="deploys", choice="give-up")  # a scenario of the user's
        Rule(id="mine.fixes", scenario="error", choice="mend", fixes=["strip-markdown-fences"])
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "rule 'mine.timeout': the engine acts on no choice 'give-up' in scenario 'error' (it "
        "acts on fix, retry, give_up): the rule is recorded when it matches, and the retry "
        "policy decides"
    ]
