"""The runs of an engine under way, so that closing the engine stops them first.

:meth:`onward.Engine.close` called while :meth:`~onward.Engine.run`, ``serve``, ``run_async``
or ``serve_async`` works in another thread (or on another event loop) stops each as a worker
stops on SIGTERM: it claims nothing more, each running task is handed back at its next step
(the steps in flight end and their outcomes are recorded), and the log closes once they have
all returned. Closed under a run instead, the run failed on the closed log and the outcomes
of the steps in flight were lost (their bodies ran again on the next run).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from onward.events import UsageError
from onward.runtime.run import CURRENT_RUN

if TYPE_CHECKING:
    from onward.runtime.scheduler import Scheduler

__all__ = ["Runs"]


class Runs:
    """The engine's runs under way, each with the thread it was started from."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._runs: dict[Scheduler, int] = {}
        self._closing = False

    @contextlib.contextmanager
    def under_way(self, scheduler: Scheduler) -> Iterator[None]:
        """Count a run as under way while the block runs.

        Raises:
            UsageError: the engine is being closed.
        """
        with self._changed:
            if self._closing:
                raise UsageError("the engine is being closed: open it again to run its tasks")
            self._runs[scheduler] = threading.get_ident()
        try:
            yield
        finally:
            with self._changed:
                del self._runs[scheduler]
                self._changed.notify_all()

    def stop(self) -> None:
        """Stop every run under way and wait for each to return; no run starts afterwards.

        Raises:
            UsageError: called from a run's own thread or event loop, or from a task's code
                or a step (the run could never return while it waits).
        """
        with self._changed:
            here = threading.get_ident()
            if self._runs and (CURRENT_RUN.get() is not None or here in self._runs.values()):
                raise UsageError(
                    "close() was called from the engine's own run (a task, a step, an "
                    "observer, or the event loop that awaits run_async/serve_async): it would "
                    "wait for itself. Close the engine once the run has returned (set serve's "
                    "stop event to end a service)"
                )
            self._closing = True
            for scheduler in self._runs:
                scheduler.request_stop()
            while self._runs:
                self._changed.wait()
