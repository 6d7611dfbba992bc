"""``onward report``: one self-contained HTML page that shows a whole session at a glance.

The page (:func:`render_page`) draws what one pass over the log gathers
(:func:`collect_report`): a timeline of the task runs per worker with their failures, fixes,
retries, waits and crashes marked (idle gaps collapsed), the error budget's burn, the circuit
breakers', degradation level's and flow's states over time, the components worked around, the
approvals and their answers, the decisions with their why, and the error-learning table. It stays
small for long sessions: above a few hundred task runs the timeline is aggregated into bins.

::

    with open_log("sqlite:///work.db", create=False) as log:
        write_report(log, "report.html", session="nightly")
"""

from __future__ import annotations

from pathlib import Path

from onward.events import EventLog
from onward.report.collect import collect_report, pick_session
from onward.report.model import SessionReport
from onward.report.page import SECTIONS, render_page

__all__ = [
    "SECTIONS",
    "SessionReport",
    "collect_report",
    "pick_session",
    "render_page",
    "write_report",
]


def write_report(log: EventLog, path: str | Path, *, session: str | None = None) -> SessionReport:
    """Write a session's report to an HTML file.

    Args:
        log: the log (only read).
        path: the file to write (replaced).
        session: the session (the one whose stream moved last when None).

    Returns:
        What the page shows.

    Raises:
        UsageError: no such session.
        LogNotFound: a log with no session.
        OSError: the file cannot be written.
    """
    report = collect_report(log, session)
    Path(path).write_text(render_page(report), encoding="utf-8")
    return report
