"""A process killed (``kill -9``) after its task gave a notice: the resumed task gives it no more.

The child runs a task that notifies and then calls a step that blocks; ``on_interruption``
writes each notice to a journal (fsync'ed) and the step tells the parent it began. The parent
kills the child with SIGKILL, reopens the session and runs the task again: its code notifies
again, and the notice, recorded as given, is not delivered a second time.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from onward import Engine, Interruption
from tests.conftest import FakeClock
from tests.crash._child import killed_once_it_says

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent(
    """
    import os
    import sys
    import time
    from pathlib import Path

    from onward import Engine
    from tests.crash.test_kill_notice import define

    db, journal, kind = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def heard(notice) -> None:
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{notice.interruption_id} {notice.summary}\\n".encode())
        os.fsync(fd)
        os.close(fd)

    def rebuilding() -> None:
        print("rebuilding", flush=True)  # the notice was given: the parent kills us now
        time.sleep(600)

    engine = Engine.open(f"sqlite:///{db}", session="nightly", on_interruption=heard)
    define(engine, kind, rebuilding)
    engine.submit("index", key="index")
    engine.run()
    """
)


def define(engine: Engine, kind: str, rebuilding: Callable[[], None] = lambda: None) -> None:
    """The task: it gives a notice, then calls its step (whose body calls ``rebuilding``)."""

    @engine.step()
    def rebuild() -> str:
        rebuilding()
        return "rebuilt"

    if kind == "plain":

        @engine.task(name="index")
        def index() -> str:
            engine.notify("the index rebuild began", urgent=True)
            return rebuild()

    else:

        @engine.task(name="index")
        async def index_async() -> str:
            await engine.notify("the index rebuild began", urgent=True)
            return await rebuild()


@pytest.mark.parametrize("kind", ["plain", "async"])
def test_a_notice_given_before_a_kill_is_not_given_again_on_resume(
    tmp_path: Path, kind: str
) -> None:
    db, journal = tmp_path / "work.db", tmp_path / "journal"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with killed_once_it_says(script, db, journal, kind, says="rebuilding\n"):
        pass  # the step began, after the notice
    (given,) = journal.read_text().splitlines()
    notice_id, _, summary = given.partition(" ")
    assert summary == "the index rebuild began"

    heard: list[Interruption] = []
    clock = FakeClock(time.time() + 3600.0)  # the dead worker's lease has run out
    with Engine.open(
        f"sqlite:///{db}",
        session="nightly",
        clock=clock,
        sleep=clock.advance,
        on_interruption=heard.append,
    ) as engine:
        define(engine, kind)
        (task,) = engine.tasks()
        assert engine.run().succeeded == 1
        assert engine.result(task.task_id) == "rebuilt"
        delivered = [
            r.event.interruption_id  # type: ignore[union-attr]
            for r in engine.log.read()
            if type(r.event).__name__ == "InterruptionDelivered"
        ]
    assert heard == []  # given once, by the killed process
    assert delivered == [notice_id]
