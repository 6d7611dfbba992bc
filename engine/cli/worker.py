"""``onward worker`` and ``onward init``: run a worker service, and create a log ahead of them.

``onward worker MODULE:ENGINE --db URL --workers N`` imports the application's module (where its
tasks and steps are registered on an engine), then serves that engine's session until SIGTERM
or SIGINT. The module opens its engine as usual; ``Engine.open()`` without a URL takes the log
from ``ONWARD_DB`` and the session from ``ONWARD_SESSION``, which this command sets from
``--db`` and ``--session``. ``ENGINE`` names the engine, or a function that returns one.

``onward init --db URL`` creates the log's tables, so that workers may open it with
``create=False`` (a missing log is then an error, not a new empty log).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from urllib.parse import unquote

from onward.cli.reports import emit_json
from onward.events import UsageError, open_log
from onward.runtime.scheduler import RunSummary
from onward.runtime.target import load_engine

__all__ = ["add_worker_arguments", "cmd_init", "cmd_worker", "load_engine", "same_log"]


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``onward worker``."""
    parser.add_argument(
        "target",
        metavar="MODULE:ENGINE",
        help="the module where your tasks are registered, and its engine (or a function that "
        "returns one), e.g. myapp.jobs:engine",
    )
    parser.add_argument("--session", help="the session to serve (sets ONWARD_SESSION)")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="tasks run at once (default 1)"
    )


def same_log(url: str, other: str) -> bool:
    """Whether two log URLs (or SQLite file paths) name the same log."""

    def canonical(text: str) -> str:
        if "://" not in text:
            return "sqlite:///" + str(Path(text).resolve())
        scheme, _, rest = text.partition("://")
        if scheme.lower() == "sqlite":
            path = unquote(rest.split("?", 1)[0])
            return "sqlite:///" + str(Path(path[1:] if path.startswith("/") else path).resolve())
        netloc, _, tail = rest.partition("/")
        netloc = netloc.rsplit("@", 1)[-1]  # no user or password
        return f"{scheme.lower()}://{netloc}/{tail}"

    return canonical(url) == canonical(other)


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve a session's tasks until SIGTERM or SIGINT."""
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    # Given empty (an unset shell variable), not left out: refused, as every command does,
    # never a log of the default's at the working directory.
    if args.db is not None and not args.db.strip():
        raise UsageError(f"a log URL must be a non-empty string, got {args.db!r}")
    if args.db is None and "ONWARD_DB" in os.environ and not os.environ["ONWARD_DB"].strip():
        raise UsageError("ONWARD_DB is set but empty: give the log (--db URL or ONWARD_DB)")
    if args.session is not None and not args.session.strip():
        raise UsageError(f"a session name must be a non-empty string, got {args.session!r}")
    if args.db:
        os.environ["ONWARD_DB"] = args.db
    if args.session:
        os.environ["ONWARD_SESSION"] = args.session
    engine = load_engine(args.target)
    try:
        if args.db and not same_log(engine.log.url, args.db):
            raise UsageError(
                f"{args.target} opened {engine.log.url}, but --db says {args.db}: open the "
                "engine without a URL (Engine.open() reads ONWARD_DB) or pass the same log"
            )
        if args.session and engine.session != args.session:
            raise UsageError(
                f"{args.target} opened session {engine.session!r}, but --session says "
                f"{args.session!r}: open it without a session (Engine.open() reads "
                "ONWARD_SESSION) or pass the same one"
            )
        print(
            f"onward worker {engine.worker}: serving session {engine.session!r} of "
            f"{engine.log.url} with {args.workers} worker(s); SIGTERM or Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        # The operator sees how the service takes its stop signals (the first: graceful).
        stops = logging.StreamHandler(sys.stderr)
        stops.setFormatter(logging.Formatter("onward worker: %(message)s"))
        stops.setLevel(logging.INFO)
        service = logging.getLogger("onward.engine.service")
        service.addHandler(stops)
        if service.getEffectiveLevel() > logging.INFO:
            service.setLevel(logging.INFO)
        try:
            summary = engine.serve(workers=args.workers)
        except KeyboardInterrupt as stopped:
            # A second signal: stop at once, without waiting for the steps in flight (their
            # tasks are taken over when their lease runs out; nothing committed is lost). The
            # exit status says which signal, as a shell's does: 128 + its number.
            print("onward worker: stopped at once", file=sys.stderr, flush=True)
            os._exit(_signal_status(stopped))
    finally:
        engine.close()
    if args.json:
        emit_json(summary)
    else:
        print(stop_line(summary))
    return 0


def _signal_status(stopped: KeyboardInterrupt) -> int:
    """128 + the number of the signal that stopped the worker at once (130 for Ctrl-C)."""
    name = stopped.args[0] if stopped.args else ""
    number = getattr(signal, name, signal.SIGINT) if isinstance(name, str) else signal.SIGINT
    return 128 + int(number)


def stop_line(summary: RunSummary) -> str:
    """What a stopped worker says it did: every run accounted for (those that ended waiting,
    cancelled, taken by a peer or past their deadline said when there are any)."""
    ended = [
        f"{count} {what}"
        for count, what in (
            (summary.waiting, "waiting"),
            (summary.cancelled, "cancelled or taken by a peer"),
            (summary.missed, "missed their deadline"),
        )
        if count
    ]
    return (
        f"stopped: {summary.runs} runs, {summary.succeeded} succeeded, {summary.failed} "
        f"failed, {', '.join([*ended, ''])}{summary.released} handed back, "
        f"{summary.recovered} taken over"
    )


def cmd_init(args: argparse.Namespace) -> int:
    """Create the log's tables (nothing is appended); safe to run again."""
    with open_log(args.db) as log:  # a bare path is a file path, as it is
        url, head = log.url, log.head()
    if args.json:
        emit_json({"log": url, "head": head})
    else:
        print(f"ready: {url} (head {head})")
    return 0
