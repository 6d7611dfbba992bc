"""Child processes of ``scripts/bench_tasks.py`` for onward (not a public entry point).

Modes (one JSON object on stdout when the mode ends normally):

* ``crash PATH STEPS KILL_AT``: open the engine on ``sqlite:///PATH`` (session ``resume``),
  submit one task of STEPS durable steps and run it; the step at index KILL_AT sends SIGKILL to
  its own process, so this mode never ends normally.
* ``resume PATH STAMP``: open the engine again, register the same functions and call
  ``run()``; the first step that really executes (not replayed from the log) writes
  ``time.time()`` to STAMP.
* ``open PATH``: time ``open_log`` and a fresh ``CatchUp(log).open()`` (checkpoint + tail).
* ``rss PATH``: ``Engine.open`` on the log (fold included), then report peak RSS: ``VmHWM``
  from ``/proc/self/status`` (the peak of this process's own memory), and ``getrusage``'s
  ``ru_maxrss``, which on Linux also counts the parent's RSS at ``fork`` (so it is only an
  upper bound when the parent is big).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onward import Engine


def _vm_hwm_mb() -> float | None:
    """This process's peak RSS from /proc (Linux), or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _task_engine(
    path: str, mode: str, kill_at: int, stamp: str
) -> tuple[Engine, Callable[[int], int]]:
    from onward import Engine

    engine = Engine.open(f"sqlite:///{path}", session="resume")
    stamped = False

    @engine.step()
    def work(i: int) -> int:
        nonlocal stamped
        if mode == "resume" and not stamped:
            stamped = True
            with open(stamp, "w") as out:
                out.write(repr(time.time()))
        if mode == "crash" and i == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return i + 1

    @engine.task()
    def job(n: int) -> int:
        total = 0
        for i in range(n):
            total = work(i)
        return total

    return engine, job


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "crash":
        path, steps, kill_at = argv[1], int(argv[2]), int(argv[3])
        engine, job = _task_engine(path, mode, kill_at, "")
        engine.submit(job, steps, key="job")
        engine.run()
        print(json.dumps({"error": f"step {kill_at} did not kill the process"}))
        return 1
    if mode == "resume":
        path, stamp = argv[1], argv[2]
        engine, _ = _task_engine(path, mode, -1, stamp)
        summary = engine.run()
        print(
            json.dumps(
                {
                    "steps_run": summary.steps_run,
                    "steps_replayed": summary.steps_replayed,
                    "recovered": summary.recovered,
                    "succeeded": summary.succeeded,
                }
            )
        )
        engine.close()
        return 0
    if mode == "open":
        from onward.events import open_log
        from onward.projections import CatchUp

        t0 = time.perf_counter()
        log = open_log(f"sqlite:///{argv[1]}")
        t1 = time.perf_counter()
        host = CatchUp(log)
        projections = host.open()
        t2 = time.perf_counter()
        print(
            json.dumps(
                {
                    "open_log_s": t1 - t0,
                    "catch_up_open_s": t2 - t1,
                    "checkpoint_position": host.loaded_checkpoint,
                    "position": projections.position,
                    "tasks": len(projections.tasks.tasks),
                }
            )
        )
        log.close()
        return 0
    if mode == "rss":
        from onward import Engine

        before = _vm_hwm_mb()
        t0 = time.perf_counter()
        engine = Engine.open(f"sqlite:///{argv[1]}", session="bench")
        elapsed = time.perf_counter() - t0
        peak = _vm_hwm_mb()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        queued = sum(1 for t in engine.projections.tasks.tasks.values() if t.state == "queued")
        engine.close()
        print(
            json.dumps(
                {
                    "peak_rss_mb": maxrss if peak is None else peak,
                    "ru_maxrss_mb": maxrss,
                    "peak_rss_before_open_mb": before,
                    "open_s": elapsed,
                    "queued": queued,
                }
            )
        )
        return 0
    print(json.dumps({"error": f"unknown mode {mode!r}"}))
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
