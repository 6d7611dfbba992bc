"""The runs of an engine under way, so that closing the engine stops them first.

:meth:`onward.Engine.close` called while :meth:`~onward.Engine.run`, ``serve``, ``run_async``
or ``serve_async`` works stops each as a worker stops on SIGTERM: it claims nothing more, each
running task is handed back at its next step (the steps in flight end and their outcomes are
recorded), and the log closes once they have all returned. Closed under a run instead, the
run failed on the closed log and the outcomes of the steps in flight were lost (their bodies
ran again on the next run).

Called from another thread, ``close()`` waits for the runs to return. Called from a run's own
context (a task's code, a step, an observer's hook, a signal handler that interrupted the
thread that awaits the run), it cannot wait for what waits for it: it asks the runs to stop
and returns, and the last run to return closes the engine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from onward.events import UsageError
from onward.runtime.observer import IN_OBSERVER
from onward.runtime.run import CURRENT_RUN

if TYPE_CHECKING:
    from onward.runtime.scheduler import Scheduler

__all__ = ["Runs"]


class Runs:
    """The engine's runs under way, each with the thread it was started from."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._runs: dict[Scheduler, int] = {}
        # The runs that have said they stop (see :meth:`last_to_stop`).
        self._stopped: set[Scheduler] = set()
        self._closing = False
        # How the engine closes once its last run returns (a close asked for from a run).
        self._close_after: Callable[[], None] | None = None

    @contextlib.contextmanager
    def under_way(self, scheduler: Scheduler) -> Iterator[None]:
        """Count a run as under way while the block runs.

        Raises:
            UsageError: the engine is closed or being closed.
        """
        with self._changed:
            if self._closing:
                raise UsageError("the engine is closed: open it again to run its tasks")
            self._runs[scheduler] = threading.get_ident()
        try:
            yield
        finally:
            close = None
            with self._changed:
                del self._runs[scheduler]
                self._stopped.discard(scheduler)
                if not self._runs:  # the last run: it closes the engine if asked to
                    close, self._close_after = self._close_after, None
                self._changed.notify_all()
            if close is not None:
                close()

    def last_to_stop(self, scheduler: Scheduler) -> bool:
        """Note that ``scheduler``'s run stops, and say whether it is the last of the runs
        under way to do so (of runs that stop together, exactly one is)."""
        with self._changed:
            self._stopped.add(scheduler)
            return self._stopped >= self._runs.keys()

    def stop(self, close: Callable[[], None]) -> None:
        """Stop every run under way, then ``close``: once they have returned, or, asked from
        a run's own context, by the last of them as it returns. No run starts afterwards."""
        with self._changed:
            self._closing = True
            for scheduler in self._runs:
                scheduler.request_stop()
            if self._runs and (
                threading.get_ident() in self._runs.values()
                or CURRENT_RUN.get() is not None
                or IN_OBSERVER.get()
            ):
                self._close_after = close
                return
            while self._runs:
                self._changed.wait()
        close()
