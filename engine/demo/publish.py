"""The survey's last task: publish its totals, once a person approves (part of ``onward demo``).

Once every survey task has ended, the ``publish`` task (low priority, submitted with the plan)
adds up their totals and runs the action ``publish-totals``: it writes them, as JSON, to a file
next to the log (:func:`totals_path`). The action declares impact "high", a check that reads
the file back and an undo that removes it; the built-in rule ``action.destructive-high-impact``
makes the engine ask before it publishes anything. The task then waits durably for the answer:
``onward approve ID`` from any process (the demo's parent runs it), or the worker itself with
``--yes``. A crash meanwhile changes nothing: the request and the wait are in the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from onward.demo.survey import Totals
from onward.runtime.engine import Engine

__all__ = [
    "ACTION",
    "TASK",
    "Published",
    "SurveyTotals",
    "add_up",
    "register_publish",
    "totals_path",
]

#: The task that publishes the totals.
TASK = "publish"
#: The action it runs (its name is one the rule ``action.destructive-high-impact`` matches).
ACTION = "publish-totals"


class SurveyTotals(msgspec.Struct, frozen=True, kw_only=True):
    """What ``publish-totals`` publishes: the survey's totals over every task.

    Attributes:
        session: the session that surveyed.
        tasks: the survey's tasks.
        indexed: the tasks whose totals each index holds ("" for none).
        errors: the files that kept an error, by the error's type.
    """

    session: str
    tasks: int
    files: int
    parsed: int
    bytes: int
    lines: int
    functions: int
    classes: int
    imports: int
    indexed: dict[str, int]
    errors: dict[str, int]


class Published(msgspec.Struct, frozen=True, kw_only=True):
    """Where ``publish-totals`` wrote the totals, and what: the file's sha256 and size."""

    path: str
    sha256: str
    size: int


def totals_path(db: str) -> str:
    """The file the totals are published to: ``<log file without .db>-totals.json``."""
    stem, ext = os.path.splitext(db)
    return f"{stem if ext == '.db' else db}-totals.json"


def add_up(session: str, totals: Sequence[Totals]) -> SurveyTotals:
    """The survey's totals over its tasks' totals."""
    errors: Counter[str] = Counter(e.kind for t in totals for e in t.errors)
    return SurveyTotals(
        session=session,
        tasks=len(totals),
        files=sum(t.files for t in totals),
        parsed=sum(t.parsed for t in totals),
        bytes=sum(t.bytes for t in totals),
        lines=sum(t.lines for t in totals),
        functions=sum(t.functions for t in totals),
        classes=sum(t.classes for t in totals),
        imports=sum(t.imports for t in totals),
        indexed=dict(Counter(t.index for t in totals).most_common()),
        errors=dict(errors.most_common()),
    )


def _read_back(result: Published) -> bool:
    """The action's check: the file holds what was written, and it decodes."""
    with open(result.path, "rb") as f:
        data = f.read()
    msgspec.json.decode(data, type=SurveyTotals)
    return hashlib.sha256(data).hexdigest() == result.sha256


def _remove(result: Published) -> str:
    """The action's undo: remove the file."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(result.path)
    return f"removed {result.path}"


def register_publish(engine: Engine, path: str, effect: Callable[[], None]) -> None:
    """Register the ``publish`` task and its action ``publish-totals``.

    Submit it last, with the survey tasks' ids: ``engine.submit("publish", ids)``.

    Args:
        engine: the engine.
        path: the file to publish the totals to.
        effect: called as the action starts (the demo's journal of step executions).
    """

    @engine.action(
        name=ACTION,
        impact="high",
        check=_read_back,
        undo=_remove,
        question=f"publish the survey's totals to {path}?",
    )
    def publish_totals(path: str, totals: SurveyTotals) -> Published:
        effect()
        data = msgspec.json.format(msgspec.json.encode(totals)) + b"\n"
        partial = f"{path}.partial"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
        return Published(path=path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    @engine.task(name=TASK, priority="low")
    def publish(survey: list[str]) -> Published:
        # Parks until every survey task has ended (a durable wait), then gets their results.
        results: list[Any] = engine.wait(survey)
        totals = msgspec.convert(results, list[Totals])
        return publish_totals(path, add_up(engine.session, totals))
