"""A child process of a crash test, killed with SIGKILL once it says it reached its moment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

#: The repository's top folder: a child script imports ``onward`` and ``tests`` from there.
TOP = Path(__file__).parents[2]


@contextlib.contextmanager
def killed_once_it_says(script: Path, *args: object, says: str) -> Iterator[None]:
    """Run ``script`` with ``args`` in a new interpreter, wait until its first line of
    standard output is ``says`` (its moment: a step under way, a wait recorded), let the block
    look at it, then kill it with SIGKILL and wait for it; killed whatever happens."""
    child = subprocess.Popen(
        [sys.executable, str(script), *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(TOP)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == says  # blocks until the child is there
        yield
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
