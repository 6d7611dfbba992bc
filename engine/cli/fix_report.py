"""The built-in fixes as ``onward fixes`` prints them, and the check of a fix name that
``onward learn`` records.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import msgspec

from onward.cli.table import table
from onward.events import UsageError
from onward.healing.fixes import FixRegistry, UnknownFix

__all__ = ["FixRow", "FixesReport", "check_fix_name", "fix_rows", "fixes_table"]


class FixRow(msgspec.Struct, frozen=True, kw_only=True):
    """One registered fix: its stable name and the first line of its docstring."""

    name: str
    summary: str


class FixesReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward fixes --json``."""

    fixes: list[FixRow]


def fix_rows(registry: FixRegistry) -> list[FixRow]:
    """The registry's fixes, in registration order (the order ties are broken in)."""
    rows = []
    for fix in registry:
        doc = inspect.getdoc(fix) or ""
        rows.append(FixRow(name=fix.name, summary=doc.strip().partition("\n")[0]))
    return rows


def fixes_table(rows: Sequence[FixRow], *, indent: str = "") -> str:
    """Fixes as a table."""
    return table(["FIX", "WHAT IT IS FOR"], [[r.name, r.summary] for r in rows], indent=indent)


def check_fix_name(registry: FixRegistry, name: str, *, custom: bool) -> bool:
    """Check a fix name before it is learned.

    Args:
        registry: the registered fixes.
        name: the fix's name.
        custom: accept a name that is not registered (a fix of the user's own), as long as it
            could be registered (not empty, no whitespace).

    Returns:
        Whether ``name`` is registered.

    Raises:
        UsageError: an unregistered name without ``custom`` (the message lists the registered
            ones), or a name that no fix could have.
    """
    if name in registry:
        return True
    if not custom:
        try:
            registry.get(name)
        except UnknownFix as exc:
            known = ", ".join(exc.known) or "none"
            raise UsageError(
                f"no built-in fix is named {name!r}; the built-in fixes: {known} "
                "(`onward fixes` says what each is for); pass --custom to learn a fix of your own"
            ) from exc
    if not name or name != "".join(name.split()):
        raise UsageError(f"a fix name has no spaces and is not empty, got {name!r}")
    return False
