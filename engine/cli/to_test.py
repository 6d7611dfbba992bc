"""``onward to-test --db URL TASK --engine MODULE:ENGINE``: a recorded task as a regression test.

Prints a pytest module (``> test_task.py``) that embeds the task's history and replays it
against the code registered on ``MODULE:ENGINE`` (:mod:`onward.testing.regression`); with
``--json``, an object that holds the module as ``source`` beside the task's ``task_id``,
``name`` and ``session`` and the ``engine``. Reads the log only.
"""

from __future__ import annotations

import argparse
import sys

from onward.cli.commands import fold, open_existing
from onward.cli.reports import emit_json
from onward.cli.timeline import find_task
from onward.testing import regression_test

__all__ = ["add_to_test_arguments", "cmd_to_test"]


def add_to_test_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``onward to-test``."""
    parser.add_argument("task", metavar="TASK", help="the task id (or a unique prefix of it)")
    parser.add_argument(
        "--engine",
        default="app:engine",
        metavar="MODULE:ENGINE",
        help="where the task is registered, as for `onward worker` (default app:engine)",
    )


def cmd_to_test(args: argparse.Namespace) -> int:
    """Print the regression test of one recorded task (as JSON with --json)."""
    with open_existing(args.db) as log:
        view = find_task(fold(log).projections, args.task, log.url)
        source = regression_test(log, view.task_id, args.engine)
    if args.json:
        emit_json(
            {
                "task_id": view.task_id,
                "name": view.name,
                "session": view.session,
                "engine": args.engine,
                "source": source,
            }
        )
        return 0
    sys.stdout.write(source)
    return 0
