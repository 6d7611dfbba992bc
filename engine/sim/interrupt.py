"""Stopping the simulator on SIGINT (Ctrl-C) and SIGTERM, in the parent and in its worker.

Inside :func:`stop_signals`, the first SIGINT or SIGTERM raises :class:`Interrupted` (a
``KeyboardInterrupt``: nothing that catches ``Exception`` swallows it); later ones are ignored,
as the clean-up the first one started is under way and bounded. :func:`signals_held` defers
them across what must not be cut in two: starting a worker (its ``Popen`` must be known to be
stopped), removing the scratch folder. A worker started there inherits the deferral: a signal
that reaches it while Python starts waits until its own :func:`stop_signals` takes it, rather
than breaking an import with a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["STOP_SIGNALS", "Interrupted", "signals_held", "stop_signals"]

#: The signals that stop a simulation and its worker.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the simulation (or its worker).

    Attributes:
        signal: the signal.
    """

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)

    @property
    def status(self) -> int:
        """The exit status of a command the signal stopped: 128 + its number (130, 143)."""
        return 128 + int(self.signal)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Raise :class:`Interrupted` on the first SIGINT or SIGTERM while inside; ignore later ones.

    Only from the main thread (elsewhere nothing changes: a signal's handler runs in the main
    thread). A signal ignored on entry (``SIG_IGN``: started in the background by a shell, under
    ``nohup``) stays ignored. The signals are unblocked inside (a worker started under
    :func:`signals_held` inherited them blocked); the handlers and the mask are restored on
    exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[signal.Signals] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if received:  # stopping already: let the clean-up end
            return
        received.append(signal.Signals(signum))
        raise Interrupted(signum)

    taken = [s for s in STOP_SIGNALS if signal.getsignal(s) not in (signal.SIG_IGN, None)]
    previous = {s: signal.signal(s, on_signal) for s in taken}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, taken)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM until the block ends.

    They are blocked in this thread: the one the kernel gives them to when it is the only one,
    as in ``onward simulate``'s parent and worker. A process started inside inherits them
    blocked.
    """
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
