"""A worker process for the crash tests of steering (``test_kill_steering.py``).

``python tests/crash/_steering.py PLAN.json`` opens the engine on the plan's log, with a clock
of its own that stands still at the plan's ``start``, defines the tasks of :func:`define`,
declares what the plan asks (a schedule, moved past its first tick), submits the plan's tasks
and serves the session (on an event loop with the plan's ``async``). It tells the parent where
it stands by lines on its stdout, each flushed:

- ``idle``: the serving loop has nothing to run and waits (for a timer, a message, a peer);
- ``in WHAT``: the step body ``WHAT`` named by the plan's ``hold`` runs (it wrote its side
  effect) and blocks there until the process is killed;
- ``tick before`` / ``tick after``: with the plan's ``tick``, the commit of a schedule's tick
  is about to be attempted / has returned, and the process blocks there.

The parent kills it with SIGKILL at one of those moments. Every step body appends one line
``WHAT PID`` to the *side-effect* file (one write, fsync'ed), so the parent counts which bodies
ran, and in which process.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

SESSION = "steer"
#: Where every engine's clock starts (2023-11-14 22:13:20 UTC: the next quarter hour is 100 s
#: later).
START = 1_700_000_000.0
#: The first tick of :data:`CRON` after :data:`START`.
FIRST_TICK = START + 100.0
CRON = "*/15 * * * *"
#: The length of a sleep of the ``sleeper`` task.
NAP = 3600.0
#: Short leases: a permit of a dead worker counts at most this long.
LEASE = 30.0
LIMIT = "api"


class Clock:
    """A clock that moves only when told to (the engines' time: tests never sleep)."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def append_line(path: Path, line: str) -> None:
    """Append one line with one write and fsync it (read back after a SIGKILL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def define(
    engine: Any,
    side: Path,
    *,
    hold: str | None = None,
    say: Callable[[str], None] = lambda line: None,
    seen: Callable[[str], None] = lambda what: None,
) -> None:
    """Register the tasks of the crash tests and declare their queue limit.

    Args:
        engine: the engine.
        side: the side-effect file (each step body appends ``WHAT PID``).
        hold: the step body that blocks, once it wrote its line, until the process dies.
        say: tells the parent a line.
        seen: called at the start of each step body with its ``WHAT`` (a test looks around).
    """
    broken = side.parent / "broken"
    engine.limit(LIMIT, concurrency=1)

    def effect(what: str) -> str:
        seen(what)
        append_line(side, f"{what} {os.getpid()}\n")
        if what == hold:
            say(f"in {what}")
            threading.Event().wait()  # until the kill
        return what

    @engine.step(name="note")
    def note(what: str) -> str:
        return effect(what)

    @engine.step(name="shaky")
    def shaky(what: str) -> str:
        effect(what)
        if broken.exists():
            raise RuntimeError("the service is down")
        return what

    @engine.step(name="call", limit=LIMIT)
    def call(what: str) -> str:
        return effect(what)

    @engine.task(name="sleeper")
    def sleeper() -> list[str]:
        first = note("before-sleep")
        engine.sleep(NAP)
        return [first, note("after-sleep")]

    @engine.task(name="listener")
    def listener() -> str:
        note("before-recv")
        message = engine.recv("go")
        return note(f"use-{message}")

    @engine.task(name="patient")
    def patient() -> str:
        note("before-recv")
        message = engine.recv("go", timeout=NAP)
        return note(f"use-{message}")

    @engine.task(name="sleeper-async")
    async def sleeper_async() -> list[str]:
        first = await note("before-sleep")
        await engine.sleep(NAP)
        return [first, await note("after-sleep")]

    @engine.task(name="listener-async")
    async def listener_async() -> str:
        await note("before-recv")
        message = await engine.recv("go")
        return str(await note(f"use-{message}"))

    @engine.task(name="ticked")
    def ticked() -> str:
        return note("tick-work")

    @engine.task(name="flaky")
    def flaky() -> list[str]:
        return [note("a"), shaky("b"), note("c")]

    @engine.task(name="planner")
    def planner(goal: str, style: str) -> list[str]:
        return [note(f"plan-{goal}"), note(f"act-{style}"), note(f"finish-{style}")]

    @engine.task(name="limited")
    def limited(who: str) -> str:
        return call(f"call-{who}")

    @engine.step(name="post")
    def post(to: str, value: str) -> str:
        engine.send(to, "go", value)  # inside a step's body: once per attempt of the step
        return effect(f"post-{value}")

    @engine.task(name="courier")
    def courier(to: str) -> str:
        engine.send(to, "go", "first")  # in the task's body
        post(to, "mid")
        note("after-send")
        engine.send(to, "go", "last")
        return "sent"

    @engine.task(name="child")
    def child(label: str) -> str:
        return label

    @engine.step(name="spawn")
    def spawn(label: str) -> str:
        task_id = str(engine.submit("child", label))  # a subtask submitted in a step's body
        effect(f"spawn-{label}")
        return task_id

    @engine.task(name="spawner")
    def spawner() -> list[str]:
        first = spawn("one")
        note("after-spawn")
        return [first, str(engine.submit("child", "two"))]


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _block_at_ticks(log: Any, when: str) -> None:
    """Make the log block (to be killed) just before or just after it commits a tick."""
    original = log._insert

    def insert(records: list[Any], wakes: bool = False) -> list[int]:
        ticking = any("ScheduleTicked" in r.topic for r in records)
        if ticking and when == "before":
            _say("tick before")
            threading.Event().wait()
        positions = original(records, wakes)
        if ticking and when == "after":
            _say("tick after")
            threading.Event().wait()
        return positions  # type: ignore[no-any-return]

    log._insert = insert


def _say_when_idle() -> None:
    """Say ``idle`` each time the serving loop waits with nothing to run."""
    from onward.runtime.scheduler import Scheduler

    original = Scheduler._idle_for

    def idle_for(self: Scheduler, *, idle: bool) -> float:
        seconds = original(self, idle=idle)
        if idle and not self.running():
            _say("idle")
        return seconds

    Scheduler._idle_for = idle_for  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    """Open, define, declare, submit and serve as the plan says (until killed)."""
    from onward import Engine

    plan = json.loads(Path(argv[1]).read_text())
    folder = Path(plan["dir"])
    clock = Clock(plan.get("start", START))
    engine = Engine.open(
        plan["url"],
        session=plan.get("session", SESSION),
        clock=clock,
        lease=LEASE,
        healing=False,
    )
    if plan.get("tick"):
        _block_at_ticks(engine.log, plan["tick"])
    define(engine, folder / "side-effects.txt", hold=plan.get("hold"), say=_say)
    if plan.get("schedule"):
        engine.schedule("ticked", cron=CRON)
        clock.now = FIRST_TICK + 5.0  # the first tick is due
    for name, args, key in plan.get("submit", []):
        engine.submit(name, *args, key=key)
    _say_when_idle()
    if plan.get("async"):
        asyncio.run(engine.serve_async(handle_signals=False))
    else:
        engine.serve(handle_signals=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
