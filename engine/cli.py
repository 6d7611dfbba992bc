"""The ``onward`` command line: read, check and replay any log without the user's code.

Every command takes ``--db`` (a file path or a log URL); most take ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import msgspec

from events import EventLog, OnwardError, open_log

__all__ = ["main"]

DEFAULT_DB = "onward.db"


def _open(db: str) -> EventLog:
    return open_log(db if "://" in db else f"sqlite:///{db}")


def _emit_json(value: object) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every checksum and hash chain; exit 1 on damage."""
    with _open(args.db) as log:
        report = log.verify()
    if args.json:
        _emit_json(report)
    elif report.ok:
        print(f"ok: {report.events} events in {report.streams} streams, head {report.head}")
    else:
        where = "a torn tail (the end of the log)" if report.torn_tail else "the middle of the log"
        print(f"DAMAGED: {len(report.problems)} damaged records in {where}")
        for problem in report.problems:
            print(f"  {problem}")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``onward`` command."""
    parser = argparse.ArgumentParser(
        prog="onward",
        description="Inspect, verify and replay onward event logs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--db", default=DEFAULT_DB, help=f"log file or URL (default {DEFAULT_DB})")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=handler)
        return p

    command("verify", cmd_verify, "check every checksum and hash chain; exit 1 on damage")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``onward`` command; returns its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except OnwardError as exc:
        print(f"onward {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    raise SystemExit(main())
