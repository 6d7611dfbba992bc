"""What every benchmark in ``scripts/`` shares: progress lines, fresh files, the command line.

Each benchmark measures into a directory of SQLite files and returns one JSON-able dict; it
prints the dict as JSON with ``--json`` and as a table otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


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


def target_lines(targets: dict[str, Any], width: int) -> list[str]:
    """The targets block of a benchmark's table: one line per target, met or not."""
    lines = ["targets:"]
    for key, target in targets.items():
        mark = {True: "meets", False: "MISSES", None: "n/a"}[target["meets"]]
        lines.append(f"  {mark:<7}{key:<{width}}{target['rule']}")
    return lines


def parser(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--json``, ``--quick`` and ``--db-dir``."""
    result = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    result.add_argument("--json", action="store_true", help="print one JSON object")
    result.add_argument("--quick", action="store_true", help=quick_help)
    result.add_argument("--db-dir", type=Path, help="leave the SQLite files in this directory")
    return result


def run(
    args: argparse.Namespace,
    prefix: str,
    measure: Callable[[Path], dict[str, Any]],
    table: Callable[[dict[str, Any]], str],
) -> int:
    """Measure in ``--db-dir`` (kept) or a temporary directory (removed), then print."""
    sys.path.insert(0, str(ROOT))
    if args.db_dir is not None:
        args.db_dir.mkdir(parents=True, exist_ok=True)
        result = measure(args.db_dir)
    else:
        directory = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            result = measure(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0
