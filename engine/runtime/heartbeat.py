"""A worker's heartbeat: while it runs tasks, it says it is alive, so that its claims hold.

A claim on a task lasts ``lease`` seconds without news from its worker. A step may take longer
(a build, a long model call): while the worker runs tasks, its :class:`Heartbeat` appends a
:class:`onward.events.WorkerHeartbeat` to the worker's own stream every third of a lease, so a
peer never takes over a task whose worker lives. One append per worker per interval, however
many tasks it runs. A worker that is killed or paused stops beating, and a peer takes its tasks
once the last beat's lease runs out; a paused worker that wakes up cannot append over a peer's
claim (the task stream's expected version fences it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from onward.events import OnwardError, WorkerHeartbeat, WorkerStopped, redacted_logger
from onward.projections.workers import worker_stream
from onward.runtime.session import Session

__all__ = ["Heartbeat"]

logger = redacted_logger("onward.engine")


class Heartbeat:
    """Beats for a worker while it runs tasks, in a thread of its own.

    Args:
        session: the session (its log, clock, lease and worker id).
        running: how many tasks the worker runs now (no beat while it runs none).
    """

    def __init__(self, session: Session, running: Callable[[], int]) -> None:
        self.session = session
        self.running = running
        self.interval = session.lease / 3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating (in a daemon thread)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._beat_until_stopped, name="onward-heartbeat", daemon=True
            )
            self._thread.start()

    def beat(self) -> bool:
        """Append one heartbeat now, if the worker runs tasks.

        Returns:
            Whether a heartbeat was appended.
        """
        running = self.running()
        if not running:
            return False
        session = self.session
        at = session.clock()
        lease_until = at + session.lease
        session.log.append(
            worker_stream(session.worker),
            [WorkerHeartbeat(lease_until=lease_until, running=running)],
            expected_version=None,
            context=session.context,
        )
        # Judged by when the append returned: one that rode out an outage may have landed
        # after the last beat's lease ran out, and a peer may have taken a task meanwhile.
        session.renewed(session.clock(), lease_until)
        return True

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except OnwardError as exc:  # the storage is down: the next beat tries again
                logger.warning("worker %s: heartbeat failed: %s", self.session.worker, exc)

    def stop(
        self, *, reason: str = "", released: int = 0, said: bool = False, wait: bool = True
    ) -> None:
        """Stop beating; with ``said``, append that the worker stopped.

        Args:
            reason: why the worker stops.
            released: how many running tasks it handed back.
            said: append a :class:`onward.events.WorkerStopped`.
            wait: wait for a beat under way (False: the worker stops at once).
        """
        self._stop.set()
        if self._thread is not None and wait:
            self._thread.join()
            self._thread = None
        if said:
            session = self.session
            session.log.append(
                worker_stream(session.worker),
                [WorkerStopped(reason=reason, released=released)],
                expected_version=None,
                context=session.context,
            )
