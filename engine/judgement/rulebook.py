"""The decision rulebook: what to do in a scenario, as data (TOML) and as Python functions.

A rule names a scenario (``"error"``, ``"task_completed"``, ``"action"``, ...), the facts it
needs (a regular expression per fact, searched in ``str(fact)``; all must match) and a choice::

    [[rules]]
    id = "error.vendor-quota"
    scenario = "error"
    when = { error_type = '^QuotaExceeded$', message = '(?i)daily limit' }
    choice = "pause"
    description = "The vendor's daily quota is spent: wait for tomorrow."

    book = Rulebook.from_toml("rules.toml")
    verdict = book.decide("error", {"error_type": "QuotaExceeded", "message": "Daily limit hit"})
    # Verdict(rule="error.vendor-quota", choice="pause", clarity=0.83, source="file:rules.toml")

Precedence: the rules of a scenario are tried in order and the first that matches wins. The
order is by layer first:

1. Python functions (:meth:`Rulebook.function`); one that returns None does not match;
2. data rules from files (:meth:`Rulebook.load_toml`) and added in code (:meth:`Rulebook.add`,
   the constructor's ``rules``): one layer, since both are data;
3. the built-in rules (:data:`onward.judgement.builtin_rules.BUILTIN_RULES`), unless
   ``builtins=False``.

Within a layer: higher ``priority`` first, then more specific first (more ``when``
conditions), then definition order. A rule replaces any rule with the same id in a lower layer
(a file's ``error.encoding`` replaces the built-in one, whenever either was added); two rules
with the same id in one layer are an error. :meth:`Rulebook.rules` lists the rules in force in
this order.

A fact that is missing from the facts, or None, never matches a condition on it.

The clarity of a data rule's verdict says how specific the rule is: ``min(1, 0.5 + n / 6)``
for ``n`` conditions (0.5 with none, 0.67 with one, 0.83 with two, 1.0 with three or more). A
Python function's verdict carries its own clarity (0.8 when made with :func:`verdict`).

Exceptions::

    OnwardError
    └── UsageError (ValueError)
        └── RulebookError ..... a bad rule or rules file, a duplicate id, a bad verdict
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, Final, TypeVar

import msgspec
import msgspec.structs
import msgspec.toml

from onward.judgement.builtin_rules import BUILTIN_RULES
from onward.judgement.rules import (
    Rule,
    RulebookError,
    RuleFile,
    RuleFunction,
    RuleInfo,
    Verdict,
    check_name,
    check_priority,
    compile_pattern,
    decode_rules,
    read_rules,
    verdict,
)

__all__ = [
    "Rule",
    "RuleFile",
    "RuleFunction",
    "RuleInfo",
    "Rulebook",
    "RulebookError",
    "Verdict",
    "verdict",
]


_PYTHON, _DATA, _BUILTIN = 0, 1, 2
_LAYER_NAMES: Final = {
    _PYTHON: "Python functions",
    _DATA: "rules from files and code",
    _BUILTIN: "built-in rules",
}

_WHOLE_WORDS = re.compile(r"\\b(?:(?P<one>\w+)|\((?:\?:)?(?P<many>\w+(?:\|\w+)*)\))\\b", re.ASCII)
_WORD = re.compile(r"\w+")


F = TypeVar("F", bound=RuleFunction)


# (fact, pattern, words): ``words`` is set when the pattern only asks for whole words.
_Condition = tuple[str, re.Pattern[str], frozenset[str] | None]


@dataclass(frozen=True, slots=True)
class _Entry:
    """A rule ready to match: its patterns compiled, a data rule's verdict made once."""

    id: str
    scenario: str
    layer: int
    priority: int
    order: int
    source: str
    conditions: tuple[_Condition, ...]
    answer: Verdict | None
    function: RuleFunction | None
    rule: Rule | None
    description: str

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.layer, -self.priority, -len(self.conditions), self.order)


def _whole_words(pattern: str) -> frozenset[str] | None:
    """The words of a pattern that asks for one of them as a whole word, else None.

    ``\\bWord\\b`` and ``\\b(One|Other)\\b`` match exactly where the text has a maximal run of
    word characters equal to one of the words: a set lookup that beats scanning the text with
    a pattern that starts with ``\\b`` (the ``exception_types`` of the built-in rules).
    """
    found = _WHOLE_WORDS.fullmatch(pattern)
    if found is None:
        return None
    return frozenset((found["one"] or found["many"]).split("|"))


@lru_cache(maxsize=1024)
def _words(text: str) -> frozenset[str]:
    # Cached: the same few exception_types strings come back with every error of a kind.
    return frozenset(_WORD.findall(text))


def _clarity(conditions: int) -> float:
    return min(1.0, 0.5 + conditions / 6)


@cache
def _builtin_rules() -> tuple[Rule, ...]:
    return tuple(decode_rules(BUILTIN_RULES.encode(), "built-in rules"))


def _data_entry(rule: Rule, layer: int, order: int, source: str) -> _Entry:
    conditions = tuple(
        (fact, compile_pattern(rule.id, fact, p), _whole_words(p)) for fact, p in rule.when.items()
    )
    answer = Verdict(
        rule=rule.id,
        choice=rule.choice,
        fixes=tuple(rule.fixes),
        retry=rule.retry,
        strategy=rule.strategy,
        clarity=_clarity(len(conditions)),
        source=source,
        description=rule.description,
    )
    return _Entry(
        id=rule.id,
        scenario=rule.scenario,
        layer=layer,
        priority=rule.priority,
        order=order,
        source=source,
        conditions=conditions,
        answer=answer,
        function=None,
        rule=rule,
        description=rule.description,
    )


class Rulebook:
    """Rules by scenario, tried in precedence order (see the module docstring).

    Args:
        rules: data rules to add, as :meth:`add` does (source ``"code"``).
        builtins: include the built-in rules.

    Raises:
        RulebookError: two of ``rules`` with the same id.
    """

    __slots__ = ("_by_scenario", "_layers", "_order", "_ordered")

    def __init__(self, rules: Iterable[Rule] = (), *, builtins: bool = True) -> None:
        if isinstance(rules, str | bytes) or not isinstance(rules, Iterable):
            raise RulebookError(
                f"a Rulebook takes an iterable of rules, got {type(rules).__name__}"
            )
        self._layers: dict[int, dict[str, _Entry]] = {_PYTHON: {}, _DATA: {}, _BUILTIN: {}}
        self._order = 0
        self._ordered: tuple[_Entry, ...] = ()
        self._by_scenario: dict[str, tuple[_Entry, ...]] = {}
        if builtins:
            builtin = [
                _data_entry(r, _BUILTIN, self._next_order(), "builtin") for r in _builtin_rules()
            ]
            self._insert(builtin)
        self._add_rules(list(rules), "code")

    @classmethod
    def from_toml(
        cls, source: str | os.PathLike[str] | bytes, *, builtins: bool = True
    ) -> Rulebook:
        """A rulebook with a TOML file's rules (and the built-in ones).

        Args:
            source: a file's path (str or path-like), or the TOML text itself as bytes.
            builtins: include the built-in rules.

        Returns:
            The rulebook.

        Raises:
            RulebookError: see :meth:`load_toml`.
        """
        book = cls(builtins=builtins)
        book.load_toml(source)
        return book

    def load_toml(self, source: str | os.PathLike[str] | bytes) -> None:
        """Add a TOML file's ``[[rules]]`` to the data layer; all of them or, on error, none.

        Args:
            source: a file's path (str or path-like), or the TOML text itself as bytes.

        Raises:
            RulebookError: a missing or unreadable file, invalid TOML, an unknown or missing
                field, a value of the wrong type, a bad rule (see :class:`Rule`), or an id
                that the file or the data layer already has. The message names the file and
                the rule's index (from 1) and id.
        """
        data, where, origin = read_rules(source)
        self._add_rules(decode_rules(data, where), origin, where)

    def add(self, rule: Rule) -> None:
        """Add a data rule made in code to the data layer (the layer of files' rules).

        Args:
            rule: the rule; it replaces a built-in rule with the same id.

        Raises:
            RulebookError: the data layer already has a rule with this id.
        """
        self._add_rules([rule], "code")

    def function(
        self, id: str, scenario: str, *, priority: int = 0, description: str = ""
    ) -> Callable[[F], F]:
        """A decorator that registers a Python rule function, tried before every data rule.

        ::

            @book.function("error.flaky-vendor", "error", priority=5)
            def flaky_vendor(scenario, facts):
                if facts.get("dependency") == "vendor" and facts.get("attempt", 0) < 3:
                    return verdict("retry", retry=True, clarity=0.9)
                return None

        Args:
            id: the rule's id; it replaces a data or built-in rule with the same id.
            scenario: the scenario it answers (lower-case, no whitespace).
            priority: higher first among the Python functions.
            description: why, for ``onward rules`` (and its verdicts without one).

        Returns:
            The decorator; it returns the function unchanged.

        Raises:
            RulebookError: an empty id or bad scenario, or a Python function with this id
                already registered (raised by the decorator).
        """
        check_name("id", id, str(id))
        check_name("scenario", scenario, id)
        if scenario != scenario.lower():
            raise RulebookError(f"rule {id!r}: scenario must be lower case, got {scenario!r}")
        check_priority(priority, id)
        if not isinstance(description, str):
            raise RulebookError(f"rule {id!r}: description must be a str, not {description!r}")

        def register(fn: F) -> F:
            if not callable(fn):
                raise RulebookError(f"rule {id!r}: a rule function must be callable, not {fn!r}")
            self._check_new([id], _PYTHON, f"Python function {id!r}")
            entry = _Entry(
                id=id,
                scenario=scenario,
                layer=_PYTHON,
                priority=priority,
                order=self._next_order(),
                source="python",
                conditions=(),
                answer=None,
                function=fn,
                rule=None,
                description=description,
            )
            self._insert([entry])
            return fn

        return register

    def decide(self, scenario: str, facts: Mapping[str, Any]) -> Verdict | None:
        """The verdict of the first rule of the scenario that matches the facts.

        Args:
            scenario: the scenario (``"error"``, ``"task_completed"``, ``"action"``, ...).
            facts: fact name -> value; a data rule's pattern is searched in ``str(value)``,
                and a fact that is missing or None matches no condition.

        Returns:
            The verdict, or None when no rule matches.

        Raises:
            RulebookError: a Python rule function returned something other than a
                :class:`Verdict` or None. What a rule function raises propagates.
        """
        words_of: dict[str, frozenset[str]] = {}
        for entry in self._by_scenario.get(scenario, ()):
            answer = entry.answer
            if answer is None:
                returned = self._call(entry, scenario, facts)
                if returned is not None:
                    return returned
                continue
            for fact, pattern, words in entry.conditions:
                value = facts.get(fact)
                if value is None:
                    break
                if words is None:
                    if pattern.search(value if type(value) is str else str(value)) is None:
                        break
                    continue
                found = words_of.get(fact)
                if found is None:
                    found = words_of[fact] = _words(str(value))
                if words.isdisjoint(found):
                    break
            else:
                return answer
        return None

    def rules(self) -> list[RuleInfo]:
        """The rules in force, in precedence order (replaced rules left out).

        Returns:
            One :class:`RuleInfo` per rule, the first tried first.
        """
        return [
            RuleInfo(
                precedence=n,
                id=e.id,
                scenario=e.scenario,
                choice="" if e.rule is None else e.rule.choice,
                source=e.source,
                priority=e.priority,
                when={} if e.rule is None else dict(e.rule.when),
                description=e.description,
            )
            for n, e in enumerate(self._ordered, start=1)
        ]

    def __len__(self) -> int:
        return len(self._ordered)

    def __contains__(self, id: object) -> bool:
        return any(id in layer for layer in self._layers.values())

    def __repr__(self) -> str:
        return f"<Rulebook: {len(self)} rules in {len(self._by_scenario)} scenarios>"

    @staticmethod
    def _call(entry: _Entry, scenario: str, facts: Mapping[str, Any]) -> Verdict | None:
        assert entry.function is not None  # an entry without a prepared verdict is a function
        result = entry.function(scenario, facts)
        if result is None:
            return None
        if not isinstance(result, Verdict):
            raise RulebookError(
                f"rule function {entry.id!r} returned {result!r}, not a Verdict or None"
            )
        described = result.description or not entry.description
        if result.rule == entry.id and result.source == "python" and described:
            return result
        return msgspec.structs.replace(
            result,
            rule=entry.id,
            source="python",
            description=result.description or entry.description,
        )

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def _check_new(self, ids: list[str], layer: int, where: str) -> None:
        seen: set[str] = set()
        for id in ids:
            if id in seen:
                raise RulebookError(f"{where}: two rules with the id {id!r}")
            seen.add(id)
            held = self._layers[layer].get(id)
            if held is not None:
                raise RulebookError(
                    f"{where}: the rule id {id!r} is already taken by a rule from "
                    f"{held.source} (among the {_LAYER_NAMES[layer]})"
                )

    def _add_rules(self, rules: list[Rule], source: str, where: str = "") -> None:
        for rule in rules:
            if not isinstance(rule, Rule):
                raise RulebookError(f"a rule must be a Rule, not {rule!r}")
        self._check_new([r.id for r in rules], _DATA, where or "rules added in code")
        self._insert([_data_entry(r, _DATA, self._next_order(), source) for r in rules])

    def _insert(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        for entry in entries:
            self._layers[entry.layer][entry.id] = entry
        seen: set[str] = set()
        ordered = []
        for layer in (_PYTHON, _DATA, _BUILTIN):
            for entry in self._layers[layer].values():
                if entry.id not in seen:
                    seen.add(entry.id)
                    ordered.append(entry)
        ordered.sort(key=lambda e: e.key)
        self._ordered = tuple(ordered)
        by_scenario: dict[str, list[_Entry]] = {}
        for entry in ordered:
            by_scenario.setdefault(entry.scenario, []).append(entry)
        self._by_scenario = {s: tuple(es) for s, es in by_scenario.items()}
