"""A worker killed but not yet reaped (a zombie) is recognised as gone at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from onward import Engine

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from onward import Engine

    engine = Engine.open(f"sqlite:///{sys.argv[1]}", session="zombie")

    @engine.step()
    def work(i: int) -> int:
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return i

    @engine.task(name="job")
    def job() -> int:
        return sum(work(i) for i in range(4))

    engine.submit(job, key="only")
    engine.run()
    """
)


def test_a_zombie_worker_loses_its_lease_at_once(tmp_path: Path) -> None:
    db = tmp_path / "work.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)])
    # Wait for it to die WITHOUT reaping it: it stays a zombie while we resume.
    waited = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert waited is not None
    assert waited.si_status == signal.SIGKILL
    try:
        with Engine.open(f"sqlite:///{db}", session="zombie") as engine:

            @engine.step()
            def work(i: int) -> int:
                return i

            @engine.task(name="job")
            def job() -> int:
                return sum(work(i) for i in range(4))

            summary = engine.run()
            assert summary.recovered == 1
            assert summary.succeeded == 1
            assert summary.steps_replayed == 2
    finally:
        child.wait()
