"""``onward report --db URL [--session S] -o report.html``: a session as one HTML page.

Reads the log only (it is never created): see :mod:`onward.report`. With ``--json`` it prints
the page's data instead of writing the page; ``-o -`` writes the page (or the JSON) to the
standard output. The page is never written over the log it reads nor over any SQLite database
(:func:`onward.cli.commands.check_output`).
"""

from __future__ import annotations

import argparse
import os
import sys

from onward.cli.commands import check_output, open_existing, replacing_output
from onward.cli.reports import emit_json, json_text
from onward.cli.table import printable
from onward.report import SessionReport, collect_report, render_page

__all__ = ["add_report_arguments", "cmd_report"]


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``onward report``."""
    parser.add_argument(
        "--session",
        help="the session (default: the one updated last, as `onward sessions` shows it)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="FILE",
        help="the page to write, - for the standard output (default onward-report.html; with "
        "--json, the JSON, else printed)",
    )


def cmd_report(args: argparse.Namespace) -> int:
    """Write (or with --json print) a session's report."""
    output = args.output if args.output is not None or args.json else "onward-report.html"
    with open_existing(args.db) as log:
        if output is not None and output != "-":
            check_output(output, log)
        report = collect_report(log, args.session)
    chosen = _chosen(report) if args.session is None else ""
    if output is None:
        emit_json(report)
        if chosen:
            print(chosen, file=sys.stderr)
        return 0
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write((json_text(report) if args.json else render_page(report)).encode())
        sys.stdout.buffer.flush()
        print(
            f"report of session {report.session!r} written to the standard output", file=sys.stderr
        )
        if chosen:
            print(chosen, file=sys.stderr)
        return 0
    # Written beside it, then renamed over it: a report cut short (a full disk, a signal)
    # leaves the one before whole.
    # Written to the standard output (-o /dev/stdout), the page is followed by no line of ours.
    said = sys.stderr if _is_stdout(output) else sys.stdout
    with replacing_output(output) as out:
        out.write((json_text(report) if args.json else render_page(report)).encode())
    if args.json:
        print(
            f"report of session {report.session!r} written to {os.path.abspath(output)}",
            file=said,
        )
    else:
        path = os.path.abspath(output)
        events = report.totals.events
        print(
            f"report of session {report.session!r} ({events:,} event{'' if events == 1 else 's'})"
            " written to "
            f"{path}\nopen file://{path} in a browser",
            file=said,
        )
    if chosen:
        print(chosen, file=said)
    return 0


def _chosen(report: SessionReport) -> str:
    """Why a report asked for no session is of this one, which others there are and how to
    pick one: "" where the log holds only this one."""
    others = [name for name in report.sessions if name != report.session]
    if not others:
        return ""
    listed = ", ".join(printable(name) for name in others)
    return (
        f"session {printable(report.session)!r} is the one updated last (UPDATED in `onward "
        f"sessions`) of the log's {len(report.sessions)} sessions; the others: {listed}; "
        "--session NAME reports another"
    )


def _is_stdout(path: str) -> bool:
    """Whether ``path`` names the file the standard output writes to."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # no such file yet; a standard output that is no file
        return False
