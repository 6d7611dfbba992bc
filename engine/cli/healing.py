"""The self-healing commands: the error-learning DB, the fixes, the circuit breakers.

``onward errors``, ``onward breakers`` and ``onward fixes`` only read, like every command of
:mod:`onward.cli.commands`. ``onward learn`` is the one command that appends: a single
:class:`onward.events.FixLearned` in the stream ``learning``, to a log that exists (it never creates
one).
"""

from __future__ import annotations

import argparse
import getpass
import re
import socket

from onward.cli.breaker_report import (
    BreakersReport,
    breaker_rows,
    breakers_table,
    transitions_table,
)
from onward.cli.commands import fold, open_existing
from onward.cli.error_report import (
    ErrorDetailReport,
    ErrorsReport,
    LearnReport,
    SignatureNotFound,
    error_detail,
    error_detail_lines,
    error_rows,
    errors_table,
    find_signature,
)
from onward.cli.fix_report import FixesReport, check_fix_name, fix_rows, fixes_table
from onward.cli.reports import emit_json
from onward.cli.table import clip, printable
from onward.events import Context, FixLearned, UsageError
from onward.healing.fixes import FixStats
from onward.healing.remedies import default_registry
from onward.projections.errors import ErrorProjection
from onward.runtime.engine import LEARNING_STREAM

__all__ = ["cmd_breakers", "cmd_errors", "cmd_fixes", "cmd_learn"]

#: A whole signature id, as ``onward learn --force`` takes one the log has not seen.
_SIGNATURE_ID = re.compile(r"v[0-9]+-[0-9a-f]{16,}")


def cmd_errors(args: argparse.Namespace) -> int:
    """List the error-learning DB, one row per signature, or show one signature whole."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        if args.signature is not None:
            if args.kind is not None:
                raise UsageError("--kind filters the list; it does not go with a SIGNATURE")
            view = find_signature(projections.errors, args.signature, log.url)
            detail = error_detail(view)
            if args.json:
                emit_json(
                    ErrorDetailReport(log=log.url, position=projections.position, error=detail)
                )
            else:
                print("\n".join(error_detail_lines(detail)))
            return 0
        rows = error_rows(projections.errors, args.kind)
        if args.json:
            emit_json(
                ErrorsReport(
                    log=log.url, position=projections.position, kind=args.kind, errors=rows
                )
            )
        elif not rows:
            print(f"no errors in {log.url}" + (f" of kind {args.kind}" if args.kind else ""))
        else:
            print(errors_table(rows))
    return 0


def _learned_signature(errors: ErrorProjection, wanted: str, url: str, force: bool) -> str:
    """The signature ``onward learn`` records: a known one (by id or unique prefix), or with
    ``force`` a whole id the log has not seen."""
    try:
        return find_signature(errors, wanted, url).signature
    except SignatureNotFound as exc:
        if any(wanted and k.startswith(wanted) for k in errors.signatures):
            raise  # several match: --force does not pick one
        if not force:
            raise SignatureNotFound(
                f"{exc}; pass --force to learn a fix for a signature not seen yet"
            ) from None
    if not _SIGNATURE_ID.fullmatch(wanted):
        raise UsageError(f"{wanted!r} is not a whole error signature id (like v1-0123456789abcdef)")
    return wanted


def _actor() -> str:
    """Who teaches the engine, for the audit: ``onward-cli:user@host``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"onward-cli:{user}@{socket.gethostname()}"


def cmd_learn(args: argparse.Namespace) -> int:
    """Record that a fix worked for an error: one ``FixLearned`` in the stream ``learning``.

    The only command that appends; it never creates a log.
    """
    builtin = check_fix_name(default_registry(), args.fix, custom=args.custom)
    if args.db.lower().startswith("memory:"):
        raise UsageError("a memory:// log is new on every open: there is nothing to learn into")
    with open_existing(args.db) as log:
        log.redactor.check_name(args.fix, "fix name")  # applied by its name, as given
        errors = fold(log).projections.errors
        signature = _learned_signature(errors, args.signature, log.url, args.force)
        view = errors.signatures.get(signature)
        before = errors.learned(signature)
        result = log.append(
            LEARNING_STREAM,
            [FixLearned(fix=args.fix, signature=signature, source="manual", note=args.note)],
            expected_version=None,
            context=Context(actor=_actor()),
        )
        report = LearnReport(
            log=log.url,
            stream=LEARNING_STREAM,
            position=result.positions[0] if result.positions else None,
            signature=signature,
            fix=args.fix,
            source="manual",
            note=log.redactor.redact(args.note),  # as the log holds it
            known_signature=view is not None,
            builtin_fix=builtin,
            already_learned=args.fix in before,
        )
    if args.json:
        emit_json(report)
        return 0
    what = f" ({view.error_type}: {clip(view.message, 80)})" if view and view.error_type else ""
    print(f"learned: {printable(report.fix)} fixes {printable(signature)}{what}")
    print("from now on this error gets this fix first")
    if report.note:
        print(f"why: {printable(report.note)}")
    at = f" at position {report.position}" if report.position is not None else ""
    print(f"(recorded as FixLearned{at} in the stream {LEARNING_STREAM!r} of {report.log})")
    if not report.known_signature:
        print(f"note: {log.url} has not seen {printable(signature)} yet")
    if not builtin:
        fix = printable(report.fix)
        print(f"note: {fix} is not a built-in fix: register it under that name to use it")
    if report.already_learned:
        again = "was already learned for this error; this records it again"
        print(f"note: {printable(report.fix)} {again}")
    record = view.fixes.get(args.fix) if view else None
    if record is not None:
        stats = FixStats(
            attempts=max(record.attempts, record.successes), successes=record.successes
        )
        if stats.demoted:
            print(
                f"note: except that its record against this error ({stats.successes} of "
                f"{stats.attempts} worked) outweighs the lesson: the engine no longer offers it"
            )
    return 0


def cmd_breakers(args: argparse.Namespace) -> int:
    """List each dependency's circuit breaker, then its transitions."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        rows = breaker_rows(projections.breakers)
        if args.json:
            emit_json(BreakersReport(log=log.url, position=projections.position, breakers=rows))
            return 0
    if not rows:
        print(f"no breakers in {log.url}")
        return 0
    print(breakers_table(rows))
    for row in rows:
        print()
        print(f"{printable(row.dependency)}: transitions ({len(row.history)}, oldest first)")
        if row.history:
            print(transitions_table(row.history, indent="  "))
    return 0


def cmd_fixes(args: argparse.Namespace) -> int:
    """List the registered built-in fixes (no log needed)."""
    rows = fix_rows(default_registry())
    if args.json:
        emit_json(FixesReport(fixes=rows))
    else:
        print(fixes_table(rows))
    return 0
