"""The survey's plan: which ``.py`` files, grouped into tasks (part of ``onward demo``).

The files are those of the running Python's standard library and site-packages (code this
project did not write): one task per package or directory, big ones split by subdirectory and
long lists in chunks. ``--limit`` takes files evenly across all of them, and always a few of
the files the standard library keeps broken on purpose (test data that is not UTF-8 or not
Python 3), so that a short survey meets real errors whatever else is installed.
"""

from __future__ import annotations

import math
import os
import sysconfig
from collections.abc import Sequence

import msgspec

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_FILES_PER_TASK",
    "Plan",
    "Unit",
    "build_plan",
    "default_roots",
    "find_sources",
]

#: Files surveyed by default: every file of a usual install, about a minute on 2 cores.
DEFAULT_LIMIT = 6000
#: A package with more files than this is split by subdirectory (and long lists in chunks).
MAX_FILES_PER_TASK = 150

_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages"})
#: Source files the standard library keeps broken on purpose (its own test data), those a
#: ``--limit`` sample takes first: Python 2, not UTF-8, a bad coding cookie.
BROKEN_ON_PURPOSE = (
    "lib2to3/tests/data/py2_test_grammar.py",
    "test/encoded_modules/module_koi8_r.py",
    "test/tokenizedata/badsyntax_pep3120.py",
    "lib2to3/tests/data/different_encoding.py",
    "test/encoded_modules/module_iso_8859_1.py",
    "test/tokenizedata/bad_coding2.py",
)
#: One file in this many of a ``--limit`` sample is one of those.
BROKEN_SHARE = 20


class Unit(msgspec.Struct, frozen=True):
    """One task's work: files (relative, ``/``-separated) under a root."""

    label: str
    root: str
    files: list[str]


class Plan(msgspec.Struct, frozen=True):
    """The demo's work.

    Attributes:
        units: the tasks, in submission order.
        found: the ``.py`` files found.
        selected: the files surveyed (``found``, or ``--limit`` of them spread evenly).
        roots: each root's label, path and the files surveyed in it.
    """

    units: list[Unit]
    found: int
    selected: int
    roots: list[tuple[str, str, int]]


def default_roots() -> list[tuple[str, str]]:
    """The running Python's standard library and site-packages, as ``(label, path)``."""
    paths = sysconfig.get_paths()
    roots = [("stdlib", paths["stdlib"])]
    if os.path.realpath(paths["purelib"]) != os.path.realpath(paths["stdlib"]):
        roots.append(("site-packages", paths["purelib"]))
    return roots


def find_sources(root: str) -> list[str]:
    """Every ``.py`` file under ``root``, relative and ``/``-separated, sorted.

    Caches, hidden directories and nested ``site-packages`` are skipped.
    """
    found: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        rel = os.path.relpath(directory, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.extend(prefix + f for f in files if f.endswith(".py"))
    return sorted(found)


def _chunks(label: str, files: list[str], size: int) -> list[tuple[str, list[str]]]:
    if len(files) <= size:
        return [(label, files)]
    count = math.ceil(len(files) / size)
    step = math.ceil(len(files) / count)
    return [
        (f"{label} ({i + 1} of {count})", files[i * step : (i + 1) * step]) for i in range(count)
    ]


def _split(label: str, prefix: str, files: list[str], size: int) -> list[tuple[str, list[str]]]:
    """A directory's files as one group, or split by subdirectory when there are too many."""
    if len(files) <= size:
        return [(label, files)]
    direct = [f for f in files if "/" not in f[len(prefix) :]]
    subdirs: dict[str, list[str]] = {}
    for f in files:
        head, sep, _ = f[len(prefix) :].partition("/")
        if sep:
            subdirs.setdefault(head, []).append(f)
    groups = _chunks(f"{label}/*.py", direct, size) if direct else []
    for name, members in sorted(subdirs.items()):
        groups.extend(_split(f"{label}/{name}", f"{prefix}{name}/", members, size))
    return groups


def build_plan(
    limit: int | None = DEFAULT_LIMIT,
    *,
    roots: Sequence[tuple[str, str]] | None = None,
    max_files: int = MAX_FILES_PER_TASK,
) -> Plan:
    """Find the ``.py`` files and group them into tasks.

    Args:
        limit: survey at most this many files, taken evenly across all of them (None or 0:
            every file).
        roots: ``(label, path)`` pairs (the stdlib and site-packages by default).
        max_files: split a package with more files than this by subdirectory.
    """
    roots = default_roots() if roots is None else roots
    everything = [(label, path, rel) for label, path in roots for rel in find_sources(path)]
    chosen = everything
    if limit and limit < len(everything):
        where = {(label, rel): i for i, (label, _, rel) in enumerate(everything)}
        broken = [where[key] for rel in BROKEN_ON_PURPOSE if (key := ("stdlib", rel)) in where]
        picked = set(broken[: limit // BROKEN_SHARE])
        rest = limit - len(picked)
        picked.update(i * len(everything) // rest for i in range(rest))
        chosen = [everything[i] for i in sorted(picked)]
    units: list[Unit] = []
    counts: list[tuple[str, str, int]] = []
    for label, path in roots:
        files = [rel for root_label, _, rel in chosen if root_label == label]
        counts.append((label, path, len(files)))
        direct = [f for f in files if "/" not in f]
        groups = _chunks(f"{label}/*.py", direct, max_files) if direct else []
        packages: dict[str, list[str]] = {}
        for f in files:
            head, sep, _ = f.partition("/")
            if sep:
                packages.setdefault(head, []).append(f)
        for name, members in sorted(packages.items()):
            groups.extend(_split(f"{label}/{name}", f"{name}/", members, max_files))
        units.extend(Unit(label=g, root=path, files=members) for g, members in groups)
    return Plan(units=units, found=len(everything), selected=len(chosen), roots=counts)
