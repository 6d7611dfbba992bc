"""Decision rules: their shape, a verdict, and the TOML files that hold them.

A data rule (:class:`Rule`) names a scenario, the facts it needs (a regular expression per fact)
and a choice; a file of them is TOML with one ``[[rules]]`` table per rule (:class:`RuleFile`),
decoded with msgspec, every mistake reported as a :class:`RulebookError` that says where (the
file, the rule's index and id, the fact and its pattern). A Python rule (:class:`RuleFunction`)
returns a :class:`Verdict`, made with :func:`verdict`. :class:`onward.judgement.rulebook.Rulebook`
holds them in precedence order and matches them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import msgspec
import msgspec.structs
import msgspec.toml

from onward.core.fields import finite
from onward.events import Strategy, UsageError, redacted_logger

__all__ = [
    "Rule",
    "RuleFile",
    "RuleFunction",
    "RuleInfo",
    "RulebookError",
    "Verdict",
    "check_name",
    "check_priority",
    "compile_pattern",
    "decode_rules",
    "read_rules",
    "verdict",
]

#: The clarity of a Python function's verdict made with :func:`verdict` by default.
FUNCTION_CLARITY: Final = 0.8
#: The choices the engine acts on in its own scenarios; another choice there is only recorded.
ACTED_ON: Final = {"error": ("fix", "retry", "give_up")}

logger = redacted_logger("onward.judgement")

# msgspec's validation messages end with where the bad value is: " - at `$.rules[2].when[...]`".
_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>.*)`$", re.DOTALL)
_RULE_PATH = re.compile(r"^\.rules\[(?P<index>\d+)\](?P<rest>.*)$")


class RulebookError(UsageError):
    """A rule or a rules file that cannot be used; nothing was added.

    The message says where: the file, the rule's index and id, the fact and its pattern.
    """


def compile_pattern(rule: str, fact: str, pattern: object) -> re.Pattern[str]:
    """A rule's pattern for a fact, compiled.

    Raises:
        RulebookError: not a string, or not a valid regular expression.
    """
    if not isinstance(pattern, str):
        raise RulebookError(
            f"rule {rule!r}: the pattern for fact {fact!r} must be a string, not {pattern!r}"
        )
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RulebookError(
            f"rule {rule!r}: fact {fact!r}: invalid regular expression {pattern!r}: {exc}"
        ) from None


def check_name(what: str, value: object, rule: str) -> None:
    """Check that a rule's id or scenario is a non-empty word.

    Raises:
        RulebookError: it is not.
    """
    if not isinstance(value, str) or not value or value != "".join(value.split()):
        raise RulebookError(f"rule {rule!r}: {what} must be a non-empty word, got {value!r}")


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One data rule: in this scenario, when these facts match, make this choice.

    Attributes:
        id: the rule's name, unique in its layer (``"error.encoding"``); no whitespace.
        scenario: the scenario it answers (lower-case, no whitespace: ``"error"``).
        when: fact name -> regular expression searched in ``str(fact)``; all must match.
        choice: what to do: ``"fix"``, ``"retry"``, ``"give_up"``, ``"ask"``, ...
        fixes: preferred fixes by registered name, in order (scenario ``"error"``).
        retry: force a plain retry of the same call on (True) or off (False); None: the
            retry policy decides.
        strategy: force a confidence strategy (``"ask"`` for a dangerous action).
        priority: higher first within its layer.
        description: why, for people reading ``onward rules``.

    Raises:
        RulebookError: an empty id, scenario, choice or fix name, a scenario not in lower
            case, a fact pattern that is not a string or not a valid regular expression, or
            an unknown strategy.
    """

    id: str
    scenario: str
    when: dict[str, str] = {}
    choice: str
    fixes: list[str] = []
    retry: bool | None = None
    strategy: Strategy | None = None
    priority: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        check_name("id", self.id, str(self.id))
        check_name("scenario", self.scenario, self.id)
        if self.scenario != self.scenario.lower():
            raise RulebookError(
                f"rule {self.id!r}: scenario must be lower case, got {self.scenario!r}"
            )
        check_name("choice", self.choice, self.id)
        acted_on = ACTED_ON.get(self.scenario)
        if (
            acted_on is not None
            and self.choice not in acted_on
            and self.retry is None
            and not self.fixes
        ):
            # A typo ("give-up") leaves the step to the retry policy, as if no rule matched.
            logger.warning(
                "rule %r: the engine acts on no choice %r in scenario %r (it acts on %s): "
                "the rule is recorded when it matches, and the retry policy decides",
                self.id,
                self.choice,
                self.scenario,
                ", ".join(acted_on),
            )
        if not isinstance(self.fixes, list | tuple):
            raise RulebookError(
                f"rule {self.id!r}: fixes must be a list of names, not {self.fixes!r}"
            )
        for fix in self.fixes:
            check_name("a fix name", fix, self.id)
        if not isinstance(self.when, dict):
            raise RulebookError(
                f"rule {self.id!r}: when must be a dict of fact names to patterns, "
                f"not {self.when!r}"
            )
        check_priority(self.priority, self.id)
        if self.retry is not None and not isinstance(self.retry, bool):
            raise RulebookError(
                f"rule {self.id!r}: retry must be True, False or None, not {self.retry!r}"
            )
        if not isinstance(self.description, str):
            raise RulebookError(
                f"rule {self.id!r}: description must be a str, not {self.description!r}"
            )
        for fact, pattern in self.when.items():
            if not isinstance(fact, str) or not fact:
                raise RulebookError(f"rule {self.id!r}: a fact name must be a string, not {fact!r}")
            compile_pattern(self.id, fact, pattern)
        if self.strategy is not None and not isinstance(self.strategy, Strategy):
            # Built in code with a plain string: store the enum, as decoding would.
            try:
                strategy = Strategy(self.strategy)
            except ValueError:
                choices = ", ".join(s.value for s in Strategy)
                raise RulebookError(
                    f"rule {self.id!r}: unknown strategy {self.strategy!r} ({choices})"
                ) from None
            msgspec.structs.force_setattr(self, "strategy", strategy)


def check_priority(priority: object, rule: str) -> None:
    """Refuse a rule's priority that is not an int (a bool neither).

    Raises:
        RulebookError: it is not.
    """
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise RulebookError(f"rule {rule!r}: priority must be an int, not {priority!r}")


class RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    """A TOML rules file: its ``[[rules]]`` tables (none: an empty file).

    Attributes:
        rules: the rules, in definition order.
    """

    rules: list[Rule] = []


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What the rulebook decided, and which rule decided it.

    Attributes:
        rule: the id of the rule that matched.
        choice: what to do (see :class:`Rule`).
        fixes: preferred fixes by registered name, in order.
        retry: force a plain retry on or off; None: the retry policy decides.
        strategy: the confidence strategy to force; None: the usual one.
        clarity: how specific the rule is, in [0, 1] (see the module docstring).
        source: where the rule came from: ``"python"``, ``"file:<path>"``, ``"toml"`` (TOML
            given as bytes), ``"code"`` (added in code) or ``"builtin"``.
        description: the rule's description.

    Raises:
        RulebookError: ``clarity`` outside [0, 1].
    """

    rule: str
    choice: str
    fixes: tuple[str, ...] = ()
    retry: bool | None = None
    strategy: Strategy | None = None
    clarity: float
    source: str
    description: str = ""

    def __post_init__(self) -> None:
        if not (finite(self.clarity) and 0.0 <= self.clarity <= 1.0):
            raise RulebookError(
                f"verdict of rule {self.rule!r}: clarity must be in [0, 1], not {self.clarity}"
            )


def verdict(
    choice: str,
    *,
    fixes: Iterable[str] = (),
    retry: bool | None = None,
    strategy: Strategy | None = None,
    clarity: float = FUNCTION_CLARITY,
    description: str = "",
) -> Verdict:
    """A verdict for a Python rule function to return; the rulebook fills in its id and source.

    Args:
        choice: what to do.
        fixes: preferred fixes by registered name, in order.
        retry: force a plain retry on or off; None: the retry policy decides.
        strategy: the confidence strategy to force.
        clarity: how sure the function is, in [0, 1].
        description: why (empty: the description the function was registered with).

    Returns:
        The verdict.

    Raises:
        RulebookError: ``clarity`` outside [0, 1].
    """
    return Verdict(
        rule="",
        choice=choice,
        fixes=tuple(fixes),
        retry=retry,
        strategy=strategy,
        clarity=clarity,
        source="python",
        description=description,
    )


class RuleFunction(Protocol):
    """A rule written in Python: a verdict for the facts, or None when it does not apply.

    An exception it raises propagates out of :meth:`Rulebook.decide`.
    """

    def __call__(self, scenario: str, facts: Mapping[str, Any], /) -> Verdict | None: ...


class RuleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One rule in force, as :meth:`Rulebook.rules` and ``onward rules`` list it.

    Attributes:
        precedence: its place in the precedence order, 1 for the rule tried first.
        id: the rule's id.
        scenario: the scenario it answers.
        choice: its choice ("" for a Python function: its verdict says).
        source: ``"python"``, ``"file:<path>"``, ``"toml"``, ``"code"`` or ``"builtin"``.
        priority: its priority within its layer.
        when: its conditions, fact name -> pattern (none for a Python function).
        description: its description.
    """

    precedence: int
    id: str
    scenario: str
    choice: str
    source: str
    priority: int
    when: dict[str, str]
    description: str


def _explain(exc: msgspec.ValidationError, data: bytes, where: str) -> str:
    """msgspec's message, with the rule's index (from 1) and id where it names one."""
    cause = exc.__cause__ or exc.__context__
    found = _AT.match(str(exc))
    if found is None:
        return f"{where}: {exc}"
    message, path = found["message"], found["path"]
    if isinstance(cause, RulebookError):
        message = str(cause)
    rule = _RULE_PATH.match(path)
    if rule is None:
        return f"{where}: {message} (at {path.lstrip('.') or 'the top level'})"
    index = int(rule["index"])
    try:
        raw: Any = msgspec.toml.decode(data)["rules"][index]
    except (msgspec.DecodeError, UnicodeDecodeError, LookupError, TypeError):
        raw = None  # only to name the rule: the typed decode already said what is wrong
    name = ""
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        # The rule's own check names it too: say it once.
        message = message.removeprefix(f"rule {raw['id']!r}: ")
        name = f" ({raw['id']!r})" if raw["id"] else ""
    rest = rule["rest"]
    if rest.startswith(".when[") and isinstance(raw, dict) and isinstance(raw.get("when"), dict):
        bad = [fact for fact, pattern in raw["when"].items() if not isinstance(pattern, str)]
        if bad:
            rest = f".when.{bad[0]}"
            message = f"{message} (the pattern for fact {bad[0]!r})"
    at = f" at {rest.lstrip('.')}" if rest and not isinstance(cause, RulebookError) else ""
    return f"{where}: rule {index + 1}{name}{at}: {message}"


def decode_rules(data: bytes, where: str) -> list[Rule]:
    try:
        return msgspec.toml.decode(data, type=RuleFile).rules
    except msgspec.ValidationError as exc:
        raise RulebookError(_explain(exc, data, where)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise RulebookError(f"{where}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested thousands deep: no rule file's shape
        raise RulebookError(f"{where}: not valid TOML: nested too deep to read") from None


def read_rules(source: str | os.PathLike[str] | bytes) -> tuple[bytes, str, str]:
    """The TOML, the place named in errors, and the rules' source."""
    if isinstance(source, bytes):
        return source, "rules TOML", "toml"
    path = os.fspath(source)
    try:
        with open(path, "rb") as file:
            return file.read(), f"rules file {path}", f"file:{path}"
    except FileNotFoundError:
        hint = " (pass TOML text as bytes)" if "\n" in path else ""
        raise RulebookError(f"rules file {path}: no such file{hint}") from None
    except OSError as exc:
        raise RulebookError(f"rules file {path}: cannot read it: {exc.strerror}") from None
