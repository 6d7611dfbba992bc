"""Plot the benchmarks' targets: how much of each target's allowance a run used.

Reads the JSON objects the benchmarks print (``scripts/bench_*.py --json > FILE``), one file
per benchmark and run, and draws one horizontal bar per target and run: for a ``<=`` target,
the figure over its bound (a step's time over 1.3 x the raw commit's); for a ``>=`` target, the
bound over the figure (0.5 x the floor's rate over the replay's rate). Below 1 the target holds;
the scale is logarithmic, so 0.5 and 2 sit as far from the line. Runs given in order are told
apart by their shade, so two runs at different times of day show side by side::

    .venv/bin/python scripts/bench_tasks.py --json > /tmp/run1/tasks.json
    ...
    .venv/bin/python scripts/plot_bench.py /tmp/run1/*.json /tmp/run2/*.json \\
        --out scripts/performance.png

It needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any


def used(verdict: dict[str, Any]) -> float | None:
    """The share of a target's allowance a figure used (<= 1: the target holds)."""
    value = verdict.get("value")
    rule = str(verdict.get("rule", ""))
    if not isinstance(value, int | float) or value <= 0 or not math.isfinite(value):
        return None
    op = ">=" if " >= " in rule else ">" if " > " in rule else "<="
    bound = bound_of(rule, op)
    if bound is None or bound <= 0:
        return None
    return value / bound if op == "<=" else bound / value


def bound_of(rule: str, op: str) -> float | None:
    """The number a rule compares with: ``step_us <= 1.3 x raw_commit_us`` gives 1.3;
    ``replay_eps >= raw_read_decode_eps`` gives 1."""
    right = rule.split(f" {op} ", 1)[-1]
    first = right.split(" x ", 1)[0] if " x " in right else right
    try:
        return float(first.replace(",", ""))
    except ValueError:
        return 1.0  # a bare figure: the factor is one


def load(paths: list[Path]) -> list[tuple[str, int, str, float, bool]]:
    """(benchmark, run, target, share used, holds) for every target of every file; a file's
    run is the count of earlier files of the same benchmark."""
    rows: list[tuple[str, int, str, float, bool]] = []
    seen: dict[str, int] = {}
    for path in paths:
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"plot_bench: cannot read {path}: {exc}") from None
        bench = str(result.get("benchmark") or path.stem)
        run = seen.get(bench, 0)
        seen[bench] = run + 1
        for key, verdict in sorted((result.get("targets") or {}).items()):
            share = used(verdict)
            if share is not None:
                rows.append((bench, run, key, share, bool(verdict.get("meets"))))
    return rows


def plot(rows: list[tuple[str, int, str, float, bool]], out: Path, title: str) -> None:
    """Draw the bars and save them as a PNG."""
    import matplotlib  # the bench extra's: the rest of this script runs without it

    matplotlib.use("Agg")  # no screen: draw to a file
    import matplotlib.pyplot as plt

    labels = sorted({(bench, key) for bench, _run, key, _share, _ok in rows})
    runs = 1 + max(run for _b, run, _k, _s, _o in rows)
    height = 0.8 / runs
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) * max(1, runs / 1.5) + 1.4))
    for bench, run, key, share, ok in rows:
        y = labels.index((bench, key)) + run * height
        colour = ("#2e7d32", "#66bb6a")[run % 2] if ok else ("#c62828", "#ef5350")[run % 2]
        ax.barh(y, share, height=height * 0.9, color=colour)
        ax.text(share * 1.04, y, f"{share:.2f}", va="center", fontsize=7)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks([i + height * (runs - 1) / 2 for i in range(len(labels))])
    ax.set_yticklabels([f"{bench}: {key}" for bench, key in labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of the target's allowance used (below 1: the target holds)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="the benchmarks' JSON outputs")
    parser.add_argument("--out", type=Path, default=Path("scripts/performance.png"))
    parser.add_argument("--title", default="onward's performance targets, runs side by side")
    args = parser.parse_args(argv)
    rows = load(args.files)
    if not rows:
        print("plot_bench: no targets in those files", file=sys.stderr)
        return 1
    plot(rows, args.out, args.title)
    print(f"{args.out}: {len(rows)} bars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
