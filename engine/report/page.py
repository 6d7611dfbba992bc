"""The report as one self-contained HTML page: inline CSS and SVG, no script, no network.

Every chart is drawn here as SVG on the report's time axis (:class:`onward.report.axis.Axis`),
every hover text is an SVG ``<title>``; the page loads nothing (its Content-Security-Policy
forbids it) and runs no script, so it opens the same from a file, an e-mail or a CI artefact.
"""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

from onward.core.display import readable
from onward.report.axis import Axis
from onward.report.model import (
    BINS,
    ApprovalRow,
    Band,
    ComponentRow,
    Lane,
    SessionReport,
)

__all__ = ["SECTIONS", "render_page"]

#: The page's sections: their ids and headings, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("timeline", "Timeline"),
    ("budget", "Error budget"),
    ("breakers", "Circuit breakers"),
    ("degradation", "Degradation and workarounds"),
    ("flow", "Flow"),
    ("approvals", "Approvals"),
    ("decisions", "Decisions"),
    ("errors", "Error learning"),
)

_WIDTH = 1000
_LABEL = 150
_PLOT = _WIDTH - _LABEL - 10

_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "waiting": "#90a4ae",
    "crashed": "#6d1b1b",
    "released": "#7b1fa2",
    "running": "#1565c0",
    "cancelled": "#757575",
    "quarantined": "#5d4037",
    "damaged": "#212121",
    "missed": "#ef6c00",
    "taken": "#455a64",
    "closed": "#66bb6a",
    "half_open": "#ffb300",
    "open": "#e53935",
    "idle": "#cfd8dc",
    "warming": "#ffe082",
    "flowing": "#81c784",
    "disrupted": "#ef9a9a",
    "full": "#81c784",
    "minor": "#dce775",
    "moderate": "#ffb74d",
    "severe": "#e57373",
    "minimal": "#b71c1c",
}

_MARKS = {
    "failure": ("#c62828", "failed try"),
    "fix": ("#2e7d32", "fix applied"),
    "retry": ("#ef6c00", "retry scheduled"),
    "wait": ("#607d8b", "wait"),
    "crash": ("#000000", "worker crashed"),
    "approval": ("#1565c0", "approval asked"),
}

_CSS = """
:root { --ink: #1d232a; --muted: #5f6b76; --line: #d9dee3; --bg: #fafbfc; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: var(--bg); }
header { padding: 18px 28px 8px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 20px; }
header p { margin: 0; color: var(--muted); }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
  padding: 6px 28px; }
nav a { margin-right: 14px; color: #1565c0; text-decoration: none; font-size: 13px; }
main { padding: 8px 28px 40px; max-width: 1280px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  margin: 16px 0; padding: 12px 16px; }
section h2 { font-size: 16px; margin: 0 0 8px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0 0; }
.card { background: var(--bg); border: 1px solid var(--line); border-radius: 6px;
  padding: 6px 12px; min-width: 110px; }
.card b { display: block; font-size: 18px; }
.card span { color: var(--muted); font-size: 12px; }
svg { width: 100%; height: auto; display: block; }
svg text { font: 11px system-ui, sans-serif; fill: var(--ink); }
svg .muted { fill: var(--muted); }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.legend { color: var(--muted); font-size: 12px; margin: 6px 0 0; }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px;
  border-radius: 2px; vertical-align: -1px; }
.note { color: var(--muted); font-size: 12px; }
details { border-bottom: 1px solid var(--line); padding: 3px 0; }
details summary { cursor: pointer; }
details pre { background: var(--bg); padding: 6px; overflow-x: auto; font-size: 12px;
  margin: 4px 0; }
.empty { color: var(--muted); font-style: italic; }
"""


def _e(text: object) -> str:
    # A bidirectional override cannot reorder what is read; joiners, tabs and line breaks
    # (a <pre> needs them) are kept.
    return html.escape(readable(str(text)), quote=True)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _utc(time: float) -> str:
    moment = datetime.datetime.fromtimestamp(time, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class _Page:
    """Draws one report."""

    def __init__(self, report: SessionReport) -> None:
        self.r = report
        self.axis = Axis([tuple(p) for p in report.axis])  # type: ignore[misc]

    def x(self, time: float) -> float:
        return _LABEL + self.axis.x(time) * _PLOT

    def at(self, time: float) -> str:
        return f"+{_span(time - self.r.start)} ({_utc(time)})"

    # -- pieces ----------------------------------------------------------------------------

    def ticks(self, top: float, bottom: float) -> str:
        parts = []
        for i in range(9):
            share = i / 8
            x = _LABEL + share * _PLOT
            label = "+" + _span(self.axis.time(share) - self.r.start)
            anchor = "end" if i == 8 else "middle"
            parts.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#eceff1"/>'
                f'<text x="{x:.1f}" y="{bottom + 12}" text-anchor="{anchor}" class="muted">'
                f"{_e(label)}</text>"
            )
        for start, end, x0, x1 in self.axis.collapsed():
            a, b = _LABEL + x0 * _PLOT, _LABEL + x1 * _PLOT
            parts.append(
                f'<rect x="{a:.1f}" y="{top}" width="{max(1.0, b - a):.1f}" '
                f'height="{bottom - top}" fill="url(#gap)"><title>idle for {_span(end - start)}'
                f" ({_e(_utc(start))} to {_e(_utc(end))}): collapsed</title></rect>"
            )
        return "".join(parts)

    def svg(self, height: float, body: str) -> str:
        return (
            f'<svg viewBox="0 0 {_WIDTH} {height:.0f}" role="img">'
            '<defs><pattern id="gap" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="3" height="6" fill="#eceff1"/>'
            "</pattern></defs>"
            f"{body}</svg>"
        )

    def legend(self, items: Iterable[tuple[str, str]]) -> str:
        return (
            '<p class="legend">'
            + "".join(f'<i style="background:{c}"></i>{_e(label)}' for c, label in items)
            + "</p>"
        )

    def bands_row(self, y: float, label: str, bands: Sequence[Band], height: float = 16) -> str:
        parts = [f'<text x="4" y="{y + height - 4}">{_e(_clip(label, 24))}</text>']
        for band in bands:
            x0, x1 = self.x(band.start), self.x(band.end)
            colour = _COLOURS.get(band.state, "#b0bec5")
            note = f": {band.note}" if band.note else ""
            parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(0.8, x1 - x0):.1f}" height="{height}" '
                f'fill="{colour}"><title>{_e(band.state)} from {_e(self.at(band.start))} for '
                f"{_span(band.end - band.start)}{_e(note)}</title></rect>"
            )
        return "".join(parts)

    # -- sections --------------------------------------------------------------------------

    def header(self) -> str:
        r, t = self.r, self.r.totals
        tasks = ", ".join(f"{n} {state}" for state, n in t.tasks.items()) or "none"
        others = [s for s in r.sessions if s != r.session]
        cards = [
            (f"{_span(r.end - r.start)}", "session span"),
            (f"{t.events:,}", "events"),
            (f"{sum(t.tasks.values()):,}", "tasks"),
            (f"{t.runs:,}", "task runs"),
            (f"{t.steps:,}", "step outcomes"),
            (f"{t.step_failures:,}", "failed tries"),
            (f"{t.fixes_succeeded:,}/{t.fixes:,}", "fixes that worked"),
            (f"{t.retries:,}", "retries"),
            (f"{sum(t.decisions.values()):,}", "decisions"),
            (f"{t.approvals:,}", "approvals asked"),
            (f"{t.lease_expiries:,}", "tasks taken back after a crash"),
        ]
        return (
            f"<header><h1>onward report: session {_e(r.session)}</h1>"
            f"<p>{_e(r.log)} · {_e(_utc(r.start))} to {_e(_utc(r.end))} · tasks: {_e(tasks)}"
            + (f" · other sessions in this log: {_e(', '.join(others))}" if others else "")
            + "</p>"
            + self.damage()
            + "<div class='cards'>"
            + "".join(
                f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards
            )
            + "</div></header>"
        )

    def damage(self) -> str:
        """A note naming the damaged streams, whose records from the first bad one on the
        report leaves out ("" when there are none)."""
        damaged = self.r.damaged
        if not damaged:
            return ""
        shown = "".join(f"<li>{_e(_clip(d, 200))}</li>" for d in damaged[:10])
        more = f"<li>and {len(damaged) - 10} more</li>" if len(damaged) > 10 else ""
        return (
            f"<p class='note'>{len(damaged)} damaged stream(s): their records from the first "
            "bad one on are left out of this report (<code>onward verify</code> says more):</p>"
            f"<ul class='note'>{shown}{more}</ul>"
        )

    def timeline(self) -> str:
        r = self.r
        lane_height, top = 26, 6
        bottom = top + lane_height * len(r.lanes)
        parts = [self.ticks(top, bottom)]
        for i, lane in enumerate(r.lanes):
            y = top + i * lane_height
            parts.append(
                f'<text x="4" y="{y + 16}"><title>{_e(lane.worker)}</title>'
                f"{_e(_clip(lane.label, 24))}</text>"
            )
            parts.append(self.runs(lane, y) if r.drawn == "runs" else self.bins(lane, y))
        if r.drawn == "runs":
            for mark in r.marks:
                y = top + mark.lane * lane_height
                colour, what = _MARKS.get(mark.kind, ("#000", mark.kind))
                x = self.x(mark.time)
                shape = (
                    f'<path d="M{x - 4:.1f},{y + 1} L{x + 4:.1f},{y + 9} M{x + 4:.1f},{y + 1} '
                    f'L{x - 4:.1f},{y + 9}" stroke="{colour}" stroke-width="2"/>'
                    if mark.kind == "crash"
                    else f'<rect x="{x - 1.5:.1f}" y="{y}" width="3" height="7" fill="{colour}"/>'
                )
                parts.append(
                    f"<g>{shape}<title>{_e(what)} at {_e(self.at(mark.time))}: "
                    f"{_e(mark.what)}</title></g>"
                )
        how = (
            "each bar is one task run (hover for its task, steps and outcome)"
            if r.drawn == "runs"
            else f"{r.totals.runs:,} task runs, aggregated: shade = share of time busy in each of "
            f"{BINS} columns, ticks = how many of each mark"
        )
        legend = self.legend(
            [(_COLOURS[k], k) for k in ("succeeded", "waiting", "failed", "crashed", "running")]
            + [(c, label) for c, label in _MARKS.values()]
            + [("#eceff1", "idle gap, collapsed")]
        )
        return (
            self.svg(bottom + 18, "".join(parts))
            + legend
            + f'<p class="note">Lanes per worker; {_e(how)}.</p>'
        )

    def runs(self, lane: Lane, y: float) -> str:
        parts = []
        for bar in lane.runs:
            x0, x1 = self.x(bar.start), self.x(bar.end)
            colour = _COLOURS.get(bar.outcome, "#90a4ae")
            parts.append(
                f'<rect x="{x0:.1f}" y="{y + 9}" width="{max(1.0, x1 - x0):.1f}" height="12" '
                f'rx="2" fill="{colour}"><title>{_e(bar.name)} ({_e(bar.task_id)}): '
                f"{bar.steps} step(s), {_e(bar.outcome)}, {_span(bar.end - bar.start)} from "
                f"{_e(self.at(bar.start))}</title></rect>"
            )
        return "".join(parts)

    def bins(self, lane: Lane, y: float) -> str:
        parts = []
        width = _PLOT / BINS
        for b, busy in enumerate(lane.busy):
            if busy <= 0:
                continue
            x = _LABEL + b * width
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 9}" width="{width + 0.3:.2f}" height="12" '
                f'fill="#1565c0" fill-opacity="{0.15 + 0.85 * busy:.2f}">'
                f"<title>{busy:.0%} busy</title></rect>"
            )
        for kind, counts in lane.marks.items():
            colour, what = _MARKS.get(kind, ("#000", kind))
            for b, n in enumerate(counts):
                if not n:
                    continue
                x = _LABEL + (b + 0.5) * width
                tall = min(8.0, 2.0 + n.bit_length())
                parts.append(
                    f'<rect x="{x - 1:.1f}" y="{y + 8 - tall:.1f}" width="2" height="{tall:.1f}" '
                    f'fill="{colour}"><title>{n} x {_e(what)}</title></rect>'
                )
        return "".join(parts)

    def budget(self) -> str:
        r = self.r
        top, height = 6, 110
        peak = max([1.2, *r.burn])
        step = _PLOT / BINS

        def y(value: float) -> float:
            return top + height - value / peak * height

        points = " ".join(f"{_LABEL + (b + 1) * step:.1f},{y(v):.1f}" for b, v in enumerate(r.burn))
        parts = [
            self.ticks(top, top + height),
            f'<line x1="{_LABEL}" y1="{y(1.0):.1f}" x2="{_LABEL + _PLOT}" y2="{y(1.0):.1f}" '
            'stroke="#c62828" stroke-dasharray="4 3"/>',
            f'<text x="4" y="{y(1.0) + 4:.1f}">{_e(self.limit_label())}</text>',
            f'<text x="4" y="{y(0):.1f}" class="muted">0</text>',
            f'<polyline points="{points}" fill="none" stroke="#1565c0" stroke-width="1.5"/>',
        ]
        for time, choice, rule in r.budget_moves:
            colour = {"pause": "#c62828", "slow_down": "#ef6c00"}.get(choice, "#2e7d32")
            parts.append(
                f'<circle cx="{self.x(time):.1f}" cy="{top + 4}" r="4" fill="{colour}">'
                f"<title>{_e(choice)} ({_e(rule)}) at {_e(self.at(time))}</title></circle>"
            )
        worst = max(r.burn, default=0.0)
        if not r.budget_recorded:
            limit = (
                f"the default budget's limit of {r.budget_limit}, assumed: this log does not "
                "record the session's budget (an earlier onward wrote it)"
            )
        elif len(r.budget_settings) > 1:
            limit = "the budget's limit in force then: " + ", ".join(
                f"{n} per {_span(w)} from {self.at(t)}" for t, n, w in r.budget_settings
            )
        else:
            limit = f"the budget's limit of {r.budget_limit}"
        return (
            self.svg(top + height + 18, "".join(parts))
            + f'<p class="note">Failed tries in the last {_span(r.budget_window)} over '
            f"{_e(limit)} (peak {worst:.0%}); dots: the budget's decisions "
            f"({len(r.budget_moves)}).</p>"
        )

    def limit_label(self) -> str:
        r = self.r
        if not r.budget_recorded:
            return f"limit ({r.budget_limit}?)"
        if len(r.budget_settings) > 1:
            return "limit"
        return f"limit ({r.budget_limit})"

    def breakers(self) -> str:
        r = self.r
        if not r.breakers:
            return '<p class="empty">No circuit breaker moved in this session.</p>'
        top = 6
        parts = [self.ticks(top, top + 22 * len(r.breakers))]
        for i, (name, bands) in enumerate(r.breakers.items()):
            parts.append(self.bands_row(top + i * 22 + 3, name, bands))
        return self.svg(top + 22 * len(r.breakers) + 18, "".join(parts)) + self.legend(
            (_COLOURS[s], s.replace("_", "-")) for s in ("closed", "half_open", "open")
        )

    def degradation(self) -> str:
        r = self.r
        svg = self.svg(
            46, self.ticks(4, 26) + self.bands_row(7, "level", r.degradation)
        ) + self.legend(
            (_COLOURS[s], s) for s in ("full", "minor", "moderate", "severe", "minimal")
        )
        if not r.components:
            return svg + '<p class="empty">No component failed in this session.</p>'
        rows = "".join(
            f"<tr><td>{_e(c.component)}</td><td>{_e(self.at(c.failed_at))}</td>"
            f"<td>{_e(_clip(c.message, 80))}</td>"
            f"<td>{_e(c.workaround or ('asked a person' if c.asked else 'none'))}</td>"
            f'<td class="num">{c.quality_loss:.0%}</td>'
            f"<td>{_e(_restored_after(c))}</td></tr>"
            for c in r.components
        )
        worked = sum(1 for c in r.components if c.workaround)
        return (
            svg + f'<p class="note">{worked} of {len(r.components)} component failures worked '
            "around.</p><table><tr><th>component</th><th>failed</th><th>how</th>"
            '<th>workaround</th><th class="num">quality lost</th><th>restored after</th></tr>'
            + rows
            + "</table>"
        )

    def flow(self) -> str:
        return self.svg(
            46, self.ticks(4, 26) + self.bands_row(7, "flow", self.r.flow)
        ) + self.legend((_COLOURS[s], s) for s in ("idle", "warming", "flowing", "disrupted"))

    def approvals(self) -> str:
        r = self.r
        if not r.approvals:
            return '<p class="empty">Nothing was asked of a person in this session.</p>'
        rows = "".join(
            f"<tr><td>{_e(self.at(a.asked_at))}</td><td>{_e(_clip(a.question, 90))}</td>"
            f"<td>{_e(a.impact)}</td><td>{_e(_answer(a))}</td><td>{_e(a.by)}</td>"
            f"<td>{_e(_clip(a.note, 60))}</td><td>{_e(_after(a))}</td>"
            f"<td><code>{_e(a.decision_id[:12])}</code></td></tr>"
            for a in r.approvals
        )
        return (
            f'<p class="note">{r.totals.approvals} request(s); the latest {len(r.approvals)} '
            "listed.</p><table><tr><th>asked</th><th>question</th><th>impact</th><th>answer</th>"
            "<th>by</th><th>note</th><th>after</th><th>decision</th></tr>" + rows + "</table>"
        )

    def decisions(self) -> str:
        r = self.r
        if not r.decision_counts:
            return '<p class="empty">No decision was recorded in this session.</p>'
        counts = "".join(
            f"<tr><td>{_e(c.kind)}</td><td><code>{_e(c.rule or '-')}</code></td>"
            f'<td>{_e(_clip(c.choice, 60))}</td><td class="num">{c.count:,}</td></tr>'
            for c in r.decision_counts[:60]
        )
        details = "".join(self.decision(d) for d in r.decisions)
        total = sum(c.count for c in r.decision_counts)
        return (
            f'<p class="note">{total:,} decisions by kind, rule and choice; below, the latest '
            f"{len(r.decisions)} whole (<code>onward why ID</code> explains any of them with "
            "its chain of causes).</p><table><tr><th>kind</th><th>rule</th><th>choice</th>"
            '<th class="num">count</th></tr>'
            + counts
            + "</table><h3>Latest decisions</h3>"
            + details
        )

    def decision(self, d: Any) -> str:
        why: dict[str, Any] = {}
        if d.factors:
            why["factors"] = d.factors
        if d.confidence is not None:
            why["confidence"] = d.confidence
        if d.strategy:
            why["strategy"] = d.strategy
        why["alternatives"] = d.alternatives
        why["inputs"] = d.inputs
        text = json.dumps(why, indent=1, default=str, sort_keys=True)
        return (
            f"<details><summary>{_e(self.at(d.time))} · <b>{_e(d.kind)}</b> → "
            f"{_e(_clip(d.choice, 60))} · rule <code>{_e(d.rule or '-')}</code> · "
            f"<code>{_e(d.decision_id[:12])}</code></summary>"
            f"<pre>{_e(_clip(text, 4000))}</pre></details>"
        )

    def errors(self) -> str:
        r = self.r
        if not r.signatures:
            return '<p class="empty">No error was observed.</p>'
        rows = []
        for s in r.signatures:
            fixes = ", ".join(f"{n} {ok}/{tried}" for n, (tried, ok) in s.fixes.items()) or "-"
            retries = f"{s.retry_successes}/{s.retries}" if s.retries else "-"
            rows.append(
                f"<tr><td><code title='{_e(s.signature)}'>{_e(s.signature[:14])}</code></td>"
                f"<td>{_e(s.error_type)}</td><td>{_e(_clip(s.message, 70))}</td>"
                f"<td>{_e(s.kind)}</td><td class='num'>{s.in_session:,}</td>"
                f"<td class='num'>{s.occurrences:,}</td><td>{_e(fixes)}</td>"
                f"<td>{_e(', '.join(s.learned) or '-')}</td><td class='num'>{_e(retries)}</td>"
                f"<td>{_e(s.best_fix or '-')}</td></tr>"
            )
        return (
            '<p class="note">The error-learning DB (it spans sessions), most frequent in this '
            "session first; fixes and retries as worked/tried.</p><table><tr><th>signature</th>"
            "<th>type</th><th>message</th><th>kind</th><th class='num'>here</th>"
            "<th class='num'>all</th><th>fixes</th><th>learned</th><th class='num'>retries</th>"
            "<th>best fix</th></tr>" + "".join(rows) + "</table>"
        )

    def page(self) -> str:
        r = self.r
        bodies = {
            "timeline": self.timeline,
            "budget": self.budget,
            "breakers": self.breakers,
            "degradation": self.degradation,
            "flow": self.flow,
            "approvals": self.approvals,
            "decisions": self.decisions,
            "errors": self.errors,
        }
        nav = "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title in SECTIONS)
        sections = "".join(
            f'<section id="{key}"><h2>{_e(title)}</h2>{bodies[key]()}</section>'
            for key, title in SECTIONS
        )
        return (
            "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>onward report: session {_e(r.session)}</title><style>{_CSS}</style>"
            f"</head><body>{self.header()}<nav>{nav}</nav><main>{sections}"
            f'<p class="note">Written by <code>onward report</code> from {_e(r.log)}: '
            "one file, nothing loaded from anywhere.</p></main></body></html>\n"
        )


def _restored_after(c: ComponentRow) -> str:
    return "not yet" if c.restored_at is None else _span(c.restored_at - c.failed_at)


def _answer(a: ApprovalRow) -> str:
    if a.answer:
        return a.answer
    if a.lapsed:
        return f"lapsed (task {a.lapsed})"
    return "waiting"


def _after(a: ApprovalRow) -> str:
    """How long after the request it was answered, or lapsed."""
    if a.answered_at is not None:
        return _span(a.answered_at - a.asked_at)
    if a.lapsed_at is not None:
        return _span(a.lapsed_at - a.asked_at)
    return ""


def render_page(report: SessionReport) -> str:
    """The report as one self-contained HTML page.

    Args:
        report: what :func:`onward.report.collect_report` gathered.

    Returns:
        The page's HTML.
    """
    return _Page(report).page()
