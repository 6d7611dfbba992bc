"""``onward export`` and ``onward import``: move a log, or one session of it, to another log.

``onward export --db URL [--session S] > session.jsonl`` writes every record with its envelope,
one JSON object per line, blobs inline in base64 (see :mod:`onward.events.archive`); a damaged
log is refused. ``-o -`` is the standard output too. With ``-o FILE`` it writes a new file
beside FILE and renames it over FILE only when the export succeeded: a refused export leaves
FILE as it was. FILE may not be the log itself, nor any SQLite database
(:func:`onward.cli.commands.check_output`).
``onward import --db URL session.jsonl`` checks the whole file, then loads it into the log at
``--db`` (created when missing, of any backend, once the file is found good): importing a file
twice imports it once. ``-`` reads the export from the standard input
(``onward export --db A | onward import --db B -``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from onward.cli.commands import check_output, open_existing, replacing_output
from onward.cli.reports import emit_json
from onward.events import UsageError, export_log, import_log, open_log
from onward.events.archive import read_export

__all__ = ["add_transfer_commands", "cmd_export", "cmd_import"]


def cmd_export(args: argparse.Namespace) -> int:
    """Write the log's records (or one session's streams) as JSON lines to stdout or a file."""
    if args.db.lower().startswith("memory:"):
        raise UsageError("a memory:// log is new on every open: there is nothing to export")
    with open_existing(args.db) as log:
        if args.output is not None and args.output != "-":
            check_output(args.output, log)
            with replacing_output(args.output) as out:
                summary = export_log(log, out.write, session=args.session)
        else:
            summary = export_log(log, sys.stdout.buffer.write, session=args.session)
            sys.stdout.buffer.flush()
    what = f"session {args.session!r}" if args.session else "the whole log"
    print(
        f"exported {what}: {summary.records} records in {summary.streams} streams, "
        f"{summary.blobs} blobs",
        file=sys.stderr,
    )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Check an export file whole, then load the records the log does not hold yet."""
    if args.db.lower().startswith("memory:"):
        raise UsageError(
            "a memory:// log is new on every open: what was imported into it would be gone "
            "when the command ends"
        )
    if args.file == "-":
        export = read_export(sys.stdin.buffer)  # checked whole, as a file is
    else:
        path = Path(args.file)
        if path.is_dir():
            raise UsageError(f"{path} is a directory, not an export file: name the file in it")
        if not path.is_file():
            raise UsageError(f"no export file at {path}")
        with path.open("rb") as lines:
            export = read_export(lines)  # a bad file is refused before the log is opened
    url = args.db  # a bare path is a file path, as it is (no URL decoding)
    with open_log(url) as log:
        summary = import_log(log, export)
        where = log.url
    if args.json:
        emit_json(summary)
        return 0
    print(
        f"imported {summary.imported} records into {where} ({summary.skipped} already there), "
        f"{summary.streams} streams, {summary.blobs} blobs"
    )
    return 0


def add_transfer_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``export`` and ``import`` with the parser's ``command`` helper."""
    export = command(
        "export",
        cmd_export,
        "write every record with its envelope as JSON lines (blobs inline, base64), for "
        "onward import into another log",
    )
    export.add_argument("--session", help="only the streams that have an event of this session")
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE instead of standard output (- for the standard output)",
    )
    import_ = command(
        "import",
        cmd_import,
        "load an export into the log at --db (created when missing, any backend): every line "
        "checked first, nothing written for a bad file, nothing twice when run again",
    )
    import_.add_argument(
        "file", metavar="FILE", help="the export (JSON lines); - reads the standard input"
    )
