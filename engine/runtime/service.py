"""The worker service: serve a session's tasks until stopped, and stop gracefully on a signal.

:func:`serve` runs :meth:`~onward.runtime.scheduler.Scheduler.serve` and, from the main thread,
turns the first SIGTERM or SIGINT into a graceful stop (claim nothing more; each running task
is handed back at its next step, so a peer takes it at once) and a second one into an
immediate one (``KeyboardInterrupt``: the tasks still running are taken over by a peer once
their lease runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from onward.events import UsageError, redacted_logger
from onward.runtime.scheduler import RunSummary, Scheduler

__all__ = ["serve", "serve_async"]

logger = redacted_logger("onward.engine.service")  # its stops are shown by `onward worker`

#: The signals that stop a worker.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_signals() -> list[signal.Signals]:
    """The signals a worker stops on: SIGTERM and SIGINT, and SIGHUP (its terminal closed, an
    SSH session ended) where nothing else took it: not when it is ignored (``nohup``) or the
    application handles it."""
    found = list(STOP_SIGNALS)
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is signal.SIG_DFL:
        found.append(hangup)
    return found


def serve(
    scheduler: Scheduler,
    *,
    workers: int,
    stop: threading.Event | None,
    handle_signals: bool,
) -> RunSummary:
    """Serve until ``stop`` is set (or a signal stops it).

    Args:
        scheduler: the session's scheduler.
        workers: how many tasks may run at once.
        stop: set to stop (a new event when None).
        handle_signals: stop on SIGTERM and SIGINT (only from the main thread).

    Returns:
        What it did.
    """
    if stop is not None and not isinstance(stop, threading.Event):
        raise UsageError(f"serve(): stop must be a threading.Event or None, got {stop!r}")
    stop = stop if stop is not None else threading.Event()
    reasons: list[str] = []

    def serving() -> RunSummary:
        return scheduler.serve(
            workers=workers,
            stop=stop,
            reason=lambda: reasons[0] if reasons else "stopped by the application",
        )

    if not (handle_signals and threading.current_thread() is threading.main_thread()):
        return serving()
    # The service runs in a thread of its own, so that the main thread takes the signals at
    # once: a storage call can hold a thread in C for seconds (SQLite's busy timeout), and a
    # signal's Python handler runs only once the main thread is back in Python.
    outcome: list[RunSummary | BaseException] = []

    def work() -> None:
        try:
            outcome.append(serving())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work, name="onward-serve", daemon=True)
    with _signals(stop, reasons, scheduler):
        worker.start()
        while worker.is_alive():
            worker.join(0.25)
    (ended,) = outcome
    if isinstance(ended, BaseException):
        raise ended
    return ended


async def serve_async(
    scheduler: Scheduler,
    *,
    concurrency: int,
    stop: asyncio.Event | None,
    handle_signals: bool,
) -> RunSummary:
    """Serve on the running event loop until ``stop`` is set (or a signal stops it).

    Args:
        scheduler: the session's scheduler.
        concurrency: how many tasks may run at once.
        stop: set to stop (a new event when None).
        handle_signals: stop on SIGTERM, SIGINT and SIGHUP (as :func:`serve`; when the loop
            runs in the main thread): the first gracefully, a second at once (the serving
            task is cancelled).

    Returns:
        What it did.
    """
    if stop is not None and not isinstance(stop, asyncio.Event):
        raise UsageError(f"serve_async(): stop must be an asyncio.Event or None, got {stop!r}")
    stop = stop if stop is not None else asyncio.Event()
    reasons: list[str] = []
    loop = asyncio.get_running_loop()
    serving = asyncio.current_task()
    installed: list[signal.Signals] = []

    def on_signal(signum: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("%s again: stopping at once", signum.name)
            scheduler.stop_at_once()
            if serving is not None:
                serving.cancel()
            return
        logger.info("%s: stopping once the steps in flight end", signum.name)
        reasons.append(signum.name)
        stop.set()

    if handle_signals and threading.current_thread() is threading.main_thread():
        for s in stop_signals():
            loop.add_signal_handler(s, on_signal, s)
            installed.append(s)
    try:
        return await scheduler.serve_async(
            concurrency=concurrency,
            stop=stop,
            reason=lambda: reasons[0] if reasons else "stopped by the application",
        )
    finally:
        for s in installed:
            loop.remove_signal_handler(s)


@contextlib.contextmanager
def _signals(stop: threading.Event, reasons: list[str], scheduler: Scheduler) -> Iterator[None]:
    """SIGTERM and SIGINT (and SIGHUP, see :func:`stop_signals`) stop the worker gracefully;
    a second signal stops it at once: the service's storage calls give up, and
    ``KeyboardInterrupt`` reaches the caller without waiting for the service's thread."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            logger.warning("%s again: stopping at once", name)
            scheduler.stop_at_once()
            raise KeyboardInterrupt(name)
        logger.info("%s: stopping once the steps in flight end", name)
        reasons.append(name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in stop_signals()}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
