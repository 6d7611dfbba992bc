"""``onward rules``: the decision rules in force, in precedence order (no log needed).

::

    onward rules                                  the built-in rules
    onward rules --rules mine.toml --rules team.toml --scenario error
    onward rules --json                           a list of objects, one per rule

A rules file that cannot be used raises :class:`onward.judgement.rulebook.RulebookError`, which the
CLI prints as ``onward rules: <message>`` with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from onward.cli.reports import emit_json
from onward.cli.table import clip, printable, table
from onward.judgement.rulebook import Rulebook, RuleInfo

__all__ = ["add_rules_arguments", "cmd_rules", "rules_table"]


def add_rules_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``onward rules`` options to its parser.

    Args:
        parser: the command's parser (it adds ``--json`` itself).
    """
    parser.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="FILE",
        help="a TOML file of your own rules; they replace built-in rules of the same id "
        "(repeatable)",
    )
    parser.add_argument("--scenario", metavar="S", help="only the rules of this scenario")


def _conditions(when: dict[str, str]) -> str:
    return "; ".join(f"{fact} ~ {pattern}" for fact, pattern in when.items()) or "-"


def rules_table(rows: Sequence[RuleInfo], *, indent: str = "") -> str:
    """Rules as a table, in the order given.

    Args:
        rows: the rules, as :meth:`onward.judgement.rulebook.Rulebook.rules` lists them.
        indent: put before every line.

    Returns:
        The table, its header first.
    """
    return table(
        ["#", "ID", "SCENARIO", "WHEN", "CHOICE", "SOURCE"],
        [
            [
                r.precedence,
                r.id,
                r.scenario,
                clip(_conditions(r.when), 70),
                r.choice or "(python)",
                r.source,
            ]
            for r in rows
        ],
        indent=indent,
    )


def cmd_rules(args: argparse.Namespace) -> int:
    """Print the rules in force in precedence order: the built-in ones and ``--rules`` files'.

    Args:
        args: ``rules`` (a list of TOML file paths), ``scenario`` (None: every scenario) and
            ``json``.

    Returns:
        0.

    Raises:
        RulebookError: a rules file is missing, is not valid TOML or holds a bad rule.
    """
    book = Rulebook()
    for path in args.rules or ():
        book.load_toml(path)
    every = book.rules()
    rows = [r for r in every if args.scenario in (None, r.scenario)]
    if args.json:
        emit_json(rows)
    else:
        print(rules_table(rows))
        if not rows and args.scenario is not None:
            scenarios = ", ".join(sorted({r.scenario for r in every})) or "none"
            print(
                f"no rule in force for scenario {printable(repr(args.scenario))} "
                f"(the scenarios of the rules in force: {scenarios})",
                file=sys.stderr,
            )
    return 0
