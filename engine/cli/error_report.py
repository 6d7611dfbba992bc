"""The error-learning DB as ``onward errors`` and ``onward learn`` print it.

``onward errors`` lists one row per error signature, most occurrences first; ``onward errors
SIGNATURE`` shows one signature whole: its occurrences, every fix tried against it with its
record, the fixes learned for it, its retries and its history. ``onward learn`` answers with a
:class:`LearnReport`.

The rows are read from :class:`onward.projections.errors.ErrorProjection`; the JSON keys are stable
(fields are added at the end of a Struct or not at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from onward.cli.reports import moment
from onward.cli.table import clip, iso, printable, table
from onward.core.errors import SignatureNotFound
from onward.projections.errors import HISTORY_LIMIT, ErrorProjection, FixRecord, SignatureView

__all__ = [
    "KINDS",
    "ErrorDetail",
    "ErrorDetailReport",
    "ErrorRow",
    "ErrorsReport",
    "FixRecordRow",
    "HistoryRow",
    "LearnReport",
    "SignatureNotFound",
    "error_detail",
    "error_detail_lines",
    "error_rows",
    "errors_table",
    "find_signature",
]

#: The kinds ``onward errors --kind`` filters on (see :attr:`SignatureView.kind`).
KINDS = ("transient", "systemic", "unknown")


class ErrorRow(msgspec.Struct, frozen=True, kw_only=True):
    """One error signature, as ``onward errors --json`` prints it.

    Rates are Laplace-smoothed, ``(successes + 1) / (tries + 2)``, as the engine ranks by them.
    """

    signature: str
    error_type: str
    message: str
    occurrences: int
    first_seen: datetime | None
    last_seen: datetime | None
    kind: str
    best_fix: str | None
    best_fix_rate: float
    retries: int
    retry_successes: int
    learned: list[str]


class ErrorsReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward errors --json``."""

    log: str
    position: int
    kind: str | None
    errors: list[ErrorRow]


class FixRecordRow(msgspec.Struct, frozen=True, kw_only=True):
    """How one fix fared against one signature (``rate`` smoothed, as :class:`ErrorRow`)."""

    fix: str
    attempts: int
    successes: int
    failures: int
    rate: float
    learned: bool


class HistoryRow(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a signature's history."""

    position: int
    time: datetime
    what: str


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One signature, whole."""

    signature: str
    error_type: str
    message: str
    frames: list[str]
    causes: list[str]
    occurrences: int
    first_seen: datetime | None
    last_seen: datetime | None
    sessions: list[str]
    kind: str
    classification: str
    classification_reason: str
    best_fix: str | None
    best_fix_rate: float
    fixes: list[FixRecordRow]
    learned: list[str]
    retries: int
    retry_successes: int
    retry_rate: float
    history: list[HistoryRow]


class ErrorDetailReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward errors SIGNATURE --json``."""

    log: str
    position: int
    error: ErrorDetail


class LearnReport(msgspec.Struct, frozen=True, kw_only=True):
    """``onward learn SIGNATURE FIX --json``: what was appended, and where.

    Attributes:
        known_signature: whether the error DB had seen the signature (False with ``--force``).
        builtin_fix: whether the fix is a registered built-in (False with ``--custom``).
        already_learned: whether the fix was learned for the signature before this.
    """

    log: str
    stream: str
    position: int | None
    signature: str
    fix: str
    source: str
    note: str
    known_signature: bool
    builtin_fix: bool
    already_learned: bool


_ERROR_HEADERS = (
    "SIGNATURE", "TYPE", "SEEN", "LAST SEEN", "KIND", "BEST FIX", "RATE", "RETRIES", "LEARNED",
    "MESSAGE",
)  # fmt: skip


_UNTRIED = round(FixRecord().rate, 4)


def _when(t: float) -> datetime | None:
    return moment(t) if t else None


def find_signature(errors: ErrorProjection, wanted: str, url: str) -> SignatureView:
    """A signature by its id or a unique prefix of it.

    Raises:
        SignatureNotFound: no signature, or several, match.
    """
    signatures = errors.signatures
    if wanted in signatures:
        return signatures[wanted]
    found = [v for k, v in signatures.items() if wanted and k.startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if found:
        ids = ", ".join(sorted(v.signature for v in found)[:5])
        raise SignatureNotFound(
            f"{len(found)} error signatures in {url} start with {wanted!r}: {ids}"
        )
    raise SignatureNotFound(
        f"no error signature {wanted!r} in {url} ({len(signatures)} known; `onward errors` lists "
        "them)"
    )


def error_rows(errors: ErrorProjection, kind: str | None = None) -> list[ErrorRow]:
    """Every signature's row (only those of ``kind`` when given), most occurrences first, then
    the most recently seen, then by id."""
    views = [v for v in errors.signatures.values() if kind is None or v.kind == kind]
    views.sort(key=lambda v: (-v.occurrences, -v.last_seen, v.signature))
    return [
        ErrorRow(
            signature=v.signature,
            error_type=v.error_type,
            message=v.message,
            occurrences=v.occurrences,
            first_seen=_when(v.first_seen),
            last_seen=_when(v.last_seen),
            kind=v.kind,
            best_fix=v.best_fix,
            best_fix_rate=round(v.best_fix_rate, 4),
            retries=v.retries,
            retry_successes=v.retry_successes,
            learned=list(v.learned),
        )
        for v in views
    ]


def error_detail(view: SignatureView) -> ErrorDetail:
    """A signature, whole: its fixes by smoothed rate (best first), its history oldest first."""
    records = sorted(view.fixes.items(), key=lambda item: (-item[1].rate, item[0]))
    # A fix learned but never tried has no record: list it too, so every fix it knows shows.
    untried = [name for name in view.learned if name not in view.fixes]
    fixes = [
        FixRecordRow(
            fix=name,
            attempts=record.attempts,
            successes=record.successes,
            failures=record.failures,
            rate=round(record.rate, 4),
            learned=name in view.learned,
        )
        for name, record in records
    ]
    fixes += [
        FixRecordRow(fix=name, attempts=0, successes=0, failures=0, rate=_UNTRIED, learned=True)
        for name in untried
    ]
    return ErrorDetail(
        signature=view.signature,
        error_type=view.error_type,
        message=view.message,
        frames=list(view.frames),
        causes=list(view.causes),
        occurrences=view.occurrences,
        first_seen=_when(view.first_seen),
        last_seen=_when(view.last_seen),
        sessions=list(view.sessions),
        kind=view.kind,
        classification=view.classification,
        classification_reason=view.classification_reason,
        best_fix=view.best_fix,
        best_fix_rate=round(view.best_fix_rate, 4),
        fixes=fixes,
        learned=list(view.learned),
        retries=view.retries,
        retry_successes=view.retry_successes,
        retry_rate=round(view.retry_rate, 4),
        history=[
            HistoryRow(position=h.position, time=moment(h.time), what=h.what) for h in view.history
        ],
    )


def _time(value: datetime | None) -> str:
    return "-" if value is None else iso(value.timestamp())


def _percent(rate: float) -> str:
    return f"{rate:.0%}"


def errors_table(rows: Sequence[ErrorRow], *, indent: str = "") -> str:
    """Signatures as a table: RETRIES is ``worked/scheduled``, RATE the best fix's."""
    return table(
        _ERROR_HEADERS,
        [
            [
                r.signature,
                clip(r.error_type, 32),
                r.occurrences,
                _time(r.last_seen),
                r.kind,
                r.best_fix or "-",
                _percent(r.best_fix_rate) if r.best_fix else "-",
                f"{r.retry_successes}/{r.retries}",
                clip(", ".join(r.learned), 40) or "-",
                clip(r.message, 48),
            ]
            for r in rows
        ],
        indent=indent,
    )


def error_detail_lines(detail: ErrorDetail) -> list[str]:
    """A signature for people: its fields one a line, then its fixes and its history as tables."""
    verdict = f"classified {detail.classification}" if detail.classification else "never classified"
    if detail.classification_reason:
        verdict += f": {detail.classification_reason}"
    best = "-"
    if detail.best_fix:
        best = f"{detail.best_fix} ({_percent(detail.best_fix_rate)})"
    fields: list[tuple[str, Sequence[str] | str]] = [
        ("signature", detail.signature),
        ("type", detail.error_type or "-"),
        ("message", detail.message or "-"),
        ("frames", detail.frames or "-"),
        ("causes", detail.causes or "-"),
        ("occurrences", str(detail.occurrences)),
        ("first seen", _time(detail.first_seen)),
        ("last seen", _time(detail.last_seen)),
        ("sessions", ", ".join(detail.sessions) or "-"),
        ("kind", f"{detail.kind} ({verdict})"),
        ("best fix", best),
        ("learned", ", ".join(detail.learned) or "-"),
        (
            "retries",
            f"{detail.retry_successes} of {detail.retries} worked "
            f"(rate {_percent(detail.retry_rate)})",
        ),
    ]
    width = max(len(name) for name, _ in fields)
    lines = []
    for name, value in fields:
        values = [value] if isinstance(value, str) else list(value)
        # Each value on its own line, as the log holds it but printable: a message or a type
        # name holding an escape sequence must not drive the terminal.
        lines.append(f"{name.ljust(width)}  {printable(values[0])}")
        lines += [f"{''.ljust(width)}  {printable(more)}" for more in values[1:]]
    lines += ["", f"fixes ({len(detail.fixes)}, rates smoothed: (successes + 1) / (tries + 2)):"]
    if detail.fixes:
        rows = [
            [
                f.fix,
                f.attempts,
                f.successes,
                f.failures,
                _percent(f.rate),
                "yes" if f.learned else "",
            ]
            for f in detail.fixes
        ]
        headers = ["FIX", "ATTEMPTS", "SUCCESSES", "FAILURES", "RATE", "LEARNED"]
        lines.append(table(headers, rows, indent="  "))
    else:
        lines.append("  none tried or learned")
    lines += [
        "",
        f"history ({len(detail.history)}, oldest first; the last {HISTORY_LIMIT} are kept):",
    ]
    if detail.history:
        rows = [
            [h.position, iso(h.time.timestamp(), "milliseconds"), h.what] for h in detail.history
        ]
        lines.append(table(["POS", "TIME", "WHAT"], rows, indent="  "))
    return lines
