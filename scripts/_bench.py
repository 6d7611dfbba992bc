"""What every benchmark in ``scripts/`` shares: the command line, fresh files, the floors that
more than one of them measures, and the output.

A benchmark declares a :class:`Benchmark`: its counts, a ``measure`` function that returns one
JSON-able dict of figures, the :class:`Figure` lines of its table and its :class:`Target` list.
The harness runs ``measure`` on fresh files, checks the targets, adds ``targets``, ``floors``
and ``environment`` to the dict, and prints it as one JSON object (``--json``) or as a table,
one line a figure::

    figure   value   floor   floor value   ratio   target   met

Every figure stands beside a floor measured in the same run (a raw sqlite3 commit, a raw read
and decode of the same rows, a bare call), and a target is checked on the ratio to that floor
where one exists: these machines run 2-3x faster or slower from one day to the next, and a ratio
measured within one run holds across them. A figure without a meaningful floor (a share, peak
memory, an open with no raw counterpart) keeps an absolute target, marked as such.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Where a figure sits in a benchmark's result: a top-level key, or ``details.KEY``.
Key = str


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the result)."""
    print(message, file=sys.stderr, flush=True)


class Files:
    """Fresh, numbered SQLite file names in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._n = 0

    def new(self, label: str) -> Path:
        """A new file name (any file left under it from an earlier run is removed)."""
        self._n += 1
        path = self.directory / f"{self._n:02d}-{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path

    def folder(self, label: str) -> Path:
        """A new, empty directory."""
        self._n += 1
        path = self.directory / f"{self._n:02d}-{label}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


class FakeClock:
    """An injected clock that moves only when told to; its ``sleep`` advances it.

    Things that happen "meanwhile" (another connection committing) are registered with
    :meth:`meanwhile` and happen at the next sleep.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self._pending: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def meanwhile(self, action: Callable[[], None]) -> None:
        self._pending.append(action)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        pending, self._pending = self._pending, []
        for action in pending:
            action()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The value at quantile ``q`` of values already sorted (the nearest rank)."""
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` to three decimals; None when either is missing or ``b`` is 0."""
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def version(package: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return None


# -- what more than one benchmark measures ---------------------------------------------------


def step_task(
    url: str,
    steps: int,
    *,
    warmup: int = 50,
    step: Mapping[str, Any] | None = None,
    check: Callable[[Any], object] | None = None,
    **options: Any,
) -> tuple[float, list[float]]:
    """One durable step of a trivial function, timed: ``Engine.open(url, **options)``,
    ``@engine.step(**step) def f(i): return i + 1``, a warm-up task of ``warmup`` steps, then
    one task of ``steps`` steps; ``check(engine)`` after it, while the engine is open.

    Returns:
        Seconds per step (the second task's ``run()`` / steps), and the intervals between
        consecutive steps' returns (for a median that ignores bursts of other I/O).
    """
    from onward import Engine

    stamps: list[float] = []
    with Engine.open(url, session="bench", **options) as engine:

        @engine.step(**(step or {}))
        def f(i: int) -> int:
            return i + 1

        @engine.task()
        def job(n: int) -> int:
            total = 0
            for i in range(n):
                total = f(i)
                stamps.append(time.perf_counter())
            return total

        engine.submit(job, warmup)
        engine.run()
        task_id = engine.submit(job, steps)
        stamps.clear()
        t0 = time.perf_counter()
        summary = engine.run()
        elapsed = time.perf_counter() - t0
        if summary.steps_run != steps or engine.result(task_id) != steps:
            raise SystemExit(f"the step task on {url} did not run {steps} steps: {summary}")
        if check is not None:
            check(engine)
    return elapsed / steps, [b - a for a, b in itertools.pairwise(stamps)]


_STORED_ROWS = (
    "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
    " WHERE rowid>? ORDER BY rowid LIMIT ?"
)


def raw_read(
    path: Path, work: Callable[[list[Any]], object], page: int = 1000
) -> tuple[float, float]:
    """The floor of reading an onward log: plain sqlite3, a page of stored rows at a time
    (``rowid, stream, version, topic, state``), ``work`` on each page.

    Returns:
        Wall seconds and CPU seconds (of this process) for every row of the file.
    """
    db = sqlite3.connect(path)
    try:
        execute = db.execute
        c0, t0 = time.process_time(), time.perf_counter()
        after = 0
        while rows := execute(_STORED_ROWS, (after, page)).fetchall():
            work(rows)
            after = rows[-1][0]
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        db.close()


def decode_rows() -> Callable[[list[Any]], None]:
    """msgspec's decode of each row's stored state into the envelope (``meta`` and the event,
    a tagged union of every event type of ``onward.events``): the decode floor of a read."""
    from typing import Union

    import msgspec

    from onward.events import Meta, all_event_types

    types = tuple(t for t in all_event_types() if isinstance(t.__struct_config__.tag, str))
    envelope = msgspec.defstruct("Envelope", [("meta", Meta), ("event", Union[types])])  # noqa: UP007
    decode = msgspec.json.Decoder(envelope).decode

    def work(rows: list[Any]) -> None:
        for row in rows:
            decode(row[4])

    return work


# -- figures, floors and targets -------------------------------------------------------------


def value_at(result: Mapping[str, Any], key: Key) -> Any:
    """The value at ``key`` (``details.KEY`` looks under ``details``); None when missing."""
    where: Any = result
    for part in key.split("."):
        if not isinstance(where, Mapping) or part not in where:
            return None
        where = where[part]
    return where


def _name(key: Key) -> str:
    return key.rpartition(".")[2]


def _number(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Figure:
    """One line of a benchmark's table: a figure beside its floor.

    Attributes:
        label: what the figure is, for the table.
        key: where it is in the result.
        unit: ``"us"``, ``"ms"``, ``"s"``, ``"eps"`` (events per second), ``"MB"``, ``"times"`` or
            ``"share"``.
        floor: where its floor is in the result ("" when it has none).
        floor_label: what the floor is, for the table.
        why: for a figure without a floor: why (in the floor's column).
    """

    label: str
    key: Key
    unit: str
    floor: Key = ""
    floor_label: str = ""
    why: str = ""


@dataclass(frozen=True)
class Target:
    """A target: ``figure OP factor x of`` (on the ratio to a floor or to another figure), or
    ``figure OP factor`` (absolute) when ``of`` is empty.

    Attributes:
        key: its name under ``targets`` in the JSON.
        figure: where the figure is in the result.
        op: ``"<="``, ``">="`` or ``">"``.
        factor: the bound of the ratio, or of the figure itself when absolute.
        of: where the floor (or the other figure) is in the result.
        was: the absolute bound the target had before it became a ratio: checked too, for
            the record (``absolute_meets``), but ``meets`` is the ratio's.
        why: for an absolute target: why it has no floor.
    """

    key: str
    figure: Key
    op: str
    factor: float
    of: Key = ""
    was: float | None = None
    why: str = ""

    @property
    def rule(self) -> str:
        """The rule as the JSON and the table print it."""
        if not self.of:
            return f"{_name(self.figure)} {self.op} {_number(self.factor)}"
        times = "" if self.factor == 1 else f"{_number(self.factor)} x "
        return f"{_name(self.figure)} {self.op} {times}{_name(self.of)}"

    def check(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """Whether the result meets the target (None when a figure is missing), and why."""
        figure = value_at(result, self.figure)
        other = value_at(result, self.of) if self.of else 1
        value = None if figure is None or other is None or other == 0 else figure / other
        verdict: dict[str, Any] = {
            "rule": self.rule,
            "meets": None if value is None else _holds(value, self.op, self.factor),
            "kind": "ratio" if self.of else "absolute",
            "value": None if value is None else round(value, 4),
        }
        if self.was is not None:
            verdict["absolute_rule"] = f"{_name(self.figure)} {self.op} {_number(self.was)}"
            verdict["absolute_meets"] = (
                None if figure is None else _holds(figure, self.op, self.was)
            )
        if self.why:
            verdict["why_absolute"] = self.why
        return verdict


def _holds(value: float, op: str, bound: float) -> bool:
    if op == "<=":
        return value <= bound
    if op == ">=":
        return value >= bound
    if op == ">":
        return value > bound
    raise ValueError(f"unknown comparison {op!r}")


def floors(figures: Sequence[Figure], result: Mapping[str, Any]) -> dict[str, Any]:
    """Each figure's floor and its ratio to it (a figure's first line names its floor)."""
    found: dict[str, Any] = {}
    for figure in figures:
        name = _name(figure.key)
        if name in found:
            continue
        if figure.floor:
            found[name] = {
                "floor": _name(figure.floor),
                "ratio": ratio(value_at(result, figure.key), value_at(result, figure.floor)),
            }
        else:
            found[name] = {"floor": None, "why": figure.why}
    return found


# -- the environment -------------------------------------------------------------------------


def filesystem_of(directory: Path) -> str:
    """The file system type that holds ``directory`` (from /proc/mounts; "" if unknown)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(directory.resolve())
    best, kind = "", ""
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, parts[2]
    return kind


def pressure() -> dict[str, float]:
    """The share of the last 10 s in which some task waited for CPU or I/O (Linux PSI)."""
    found: dict[str, float] = {}
    for kind in ("cpu", "io"):
        try:
            first = Path(f"/proc/pressure/{kind}").read_text().split()
        except OSError:
            continue
        for item in first[1:]:
            if item.startswith("avg10="):
                found[f"{kind}_some_avg10"] = float(item[len("avg10=") :])
                break
    return found


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor()


class _Conditions:
    """What the machine was doing when a run started; :meth:`end` adds how it ended."""

    def __init__(self, directory: Path, packages: Sequence[str]) -> None:
        self.started = time.perf_counter()
        self.found: dict[str, Any] = {
            "python": platform.python_version(),
            "sqlite_version": sqlite3.sqlite_version,
            "filesystem": filesystem_of(directory),
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            **{package.replace("-", "_"): version(package) for package in packages},
            "load_average_at_start": _load(),
            "pressure_at_start": pressure(),
        }

    def end(self) -> dict[str, Any]:
        return {
            **self.found,
            "load_average_at_end": _load(),
            "pressure_at_end": pressure(),
            "elapsed_s": round(time.perf_counter() - self.started, 1),
        }


def environment_line(env: Mapping[str, Any], packages: Sequence[str]) -> str:
    """The environment in one line: Python, SQLite, file system, CPUs, date, load, peers."""
    peers = "".join(f", {p} {env.get(p.replace('-', '_'))}" for p in packages)
    return (
        f"Python {env['python']}, SQLite {env['sqlite_version']}, "
        f"{env['filesystem'] or 'unknown'} file system, {env['cpus']} CPUs ({env['cpu_model']}), "
        f"{env['date']}; load {env['load_average_at_start']} -> {env['load_average_at_end']}"
        f"{peers}; {env['elapsed_s']} s"
    )


# -- the table -------------------------------------------------------------------------------


def show(value: Any, unit: str) -> str:
    """A figure with its unit, for the table."""
    if value is None:
        return "n/a"
    if unit == "eps":
        return f"{value:,.0f}/s"
    if unit == "share":
        return f"{value:.1%}"
    if unit == "times":
        return f"{value:,.1f}x"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit == "s":
        return f"{value:.3g} s"
    size = abs(value)
    digits = 3 if size < 1 else 2 if size < 10 else 1 if size < 1000 else 0
    return f"{value:,.{digits}f} {'µs' if unit == 'us' else unit}"


def show_ratio(value: float | None) -> str:
    """A ratio for the table: to three decimals (as the JSON has it) below 10."""
    if value is None:
        return "n/a"
    digits = 3 if value < 10 else 2 if value < 100 else 1 if value < 1000 else 0
    return f"{value:,.{digits}f}"


def _target_cells(
    figure: Figure, target: Target | None, verdict: Mapping[str, Any], unit: str
) -> tuple[str, str]:
    if target is None:
        return "", ""
    if not target.of:
        rule = f"{target.op} {show(target.factor, unit)} (absolute)"
    elif target.figure == figure.key and target.of == figure.floor:
        rule = f"{target.op} {_number(target.factor)}x floor"
    else:
        rule = target.rule
    met = {True: "met", False: "MISSED", None: "n/a"}[verdict["meets"]]
    if target.was is not None:
        rule += f" (was {target.op} {show(target.was, unit)})"
        met += {True: "; abs. met", False: "; abs. missed", None: ""}[verdict["absolute_meets"]]
    return rule, met


def _line_of(target: Target, figures: Sequence[Figure], placed: Mapping[int, Target]) -> int:
    """The line a target stands on (see :func:`figure_lines`)."""
    free = [(i, f) for i, f in enumerate(figures) if i not in placed]
    for i, f in free:
        if f.key == target.figure and f.floor == target.of:
            return i
    for i, f in free:
        if f.key == target.figure:
            return i
    for i, f in free:
        if f.key == target.of:
            return i
    raise ValueError(f"target {target.key} has no line in the table")


def figure_lines(
    figures: Sequence[Figure], targets: Sequence[Target], result: Mapping[str, Any]
) -> list[str]:
    """The figures, one line each: name, value, floor, its value, ratio, target, met.

    A target stands on the line of its figure and floor, else on its figure's first line, else
    on the line whose figure is the one it compares with.
    """
    placed: dict[int, Target] = {}
    for target in targets:
        placed[_line_of(target, figures, placed)] = target
    rows = [("figure", "value", "floor", "floor value", "ratio", "target", "")]
    for i, figure in enumerate(figures):
        value = value_at(result, figure.key)
        if figure.floor:
            floor_value = value_at(result, figure.floor)
            cells = (figure.floor_label, show(floor_value, figure.unit))
            shown_ratio = show_ratio(ratio(value, floor_value))
        else:
            cells, shown_ratio = (f"({figure.why})" if figure.why else "", ""), ""
        target = placed.get(i)
        verdict = result["targets"][target.key] if target else {}
        rows.append(
            (
                figure.label,
                show(value, figure.unit),
                *cells,
                shown_ratio,
                *_target_cells(figure, target, verdict, figure.unit),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(7)]
    right = {1, 3, 4}
    lines = [
        "  ".join(
            cell.rjust(widths[c]) if c in right else cell.ljust(widths[c])
            for c, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(
        "(ratio = figure / floor, both measured in this run; a target 'Nx floor' is checked on"
        " that ratio, an absolute one on the figure)"
    )
    return lines


# -- the benchmark ---------------------------------------------------------------------------


#: What a benchmark measures: a directory for its files, its counts and the parsed command
#: line in; its figures out, as one JSON-able dict (``details``, ``notes``, ``counts`` and any
#: other key it likes).
Measure = Callable[[Path, dict[str, int], argparse.Namespace], dict[str, Any]]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark script: what it measures and how its results read.

    Attributes:
        doc: the script's docstring (its first line describes the command).
        full: the counts of a full run.
        quick: the counts of a ``--quick`` run.
        measure: measures, returns the figures.
        figures: the lines of the table.
        targets: the targets, checked on the figures.
        details: more lines for the table after the figures (breakdowns, counts).
        packages: peers whose versions the environment records.
        flat_environment: environment values also kept at the top level of the JSON, under
            their historical names (top-level key -> environment key).
        arguments: adds the benchmark's own options to the command line.
    """

    doc: str | None
    full: Mapping[str, int]
    quick: Mapping[str, int]
    measure: Measure
    figures: Sequence[Figure]
    targets: Sequence[Target]
    details: Callable[[dict[str, Any]], list[str]] = lambda result: []
    packages: Sequence[str] = ()
    flat_environment: Mapping[str, str] = field(default_factory=dict)
    arguments: Callable[[argparse.ArgumentParser], None] | None = None

    def parser(self) -> argparse.ArgumentParser:
        """The options: ``--json``, ``--quick``, ``--db-dir`` and the benchmark's own."""
        result = argparse.ArgumentParser(description=(self.doc or "").splitlines()[0])
        result.add_argument("--json", action="store_true", help="print one JSON object")
        result.add_argument("--quick", action="store_true", help="smaller counts, a quick look")
        result.add_argument("--db-dir", type=Path, help="leave the SQLite files in this directory")
        if self.arguments is not None:
            self.arguments(result)
        return result

    def main(self, argv: list[str] | None = None) -> int:
        """Measure in ``--db-dir`` (kept) or a temporary directory (removed), then print."""
        args = self.parser().parse_args(argv)
        counts = dict(self.quick if args.quick else self.full)
        sys.path.insert(0, str(ROOT))
        if args.db_dir is not None:
            args.db_dir.mkdir(parents=True, exist_ok=True)
            result = self.run(args.db_dir, counts, args)
        else:
            prefix = f"onward-{Path(sys.argv[0]).stem.replace('_', '-')}-"
            directory = Path(tempfile.mkdtemp(prefix=prefix))
            try:
                result = self.run(directory, counts, args)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        print(json.dumps(result, indent=2) if args.json else self.table(result))
        return 0

    def run(
        self, directory: Path, counts: dict[str, int], args: argparse.Namespace
    ) -> dict[str, Any]:
        """The figures, then ``targets`` and ``floors`` after them, and the environment."""
        conditions = _Conditions(directory, self.packages)
        measured = self.measure(directory, counts, args)
        environment = conditions.end()
        tail = ("details", "notes", "counts")
        result = {k: v for k, v in measured.items() if k not in tail}
        result["targets"] = {target.key: target.check(measured) for target in self.targets}
        result["floors"] = floors(self.figures, measured)
        result.update({k: measured[k] for k in tail if k in measured})
        for key, source in self.flat_environment.items():
            result[key] = environment[source]
        result["environment"] = environment
        return result

    def table(self, result: dict[str, Any]) -> str:
        """The result for people: the figures, the details, the notes, the environment."""
        lines = figure_lines(self.figures, self.targets, result)
        targets = result["targets"].values()
        missed = [key for key, t in result["targets"].items() if t["meets"] is False]
        judged = sum(t["meets"] is not None for t in targets)
        lines.append(
            f"targets: {judged - len(missed)} of {judged} met"
            + (f"; missed: {', '.join(missed)}" if missed else "")
        )
        details = self.details(result)
        if details:
            lines += ["", *details]
        lines += [f"note: {note}" for note in result.get("notes", ())]
        lines += ["", environment_line(result["environment"], self.packages)]
        return "\n".join(lines)
