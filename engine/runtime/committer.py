"""Group commit: the outcomes of steps that end together are appended in one transaction.

One durable append costs one fsync; with many tasks in flight, their step outcomes queue up
while the disk syncs. The :class:`Committer`'s writer thread takes every append waiting and
commits them together (:meth:`onward.events.EventLog.commit_groups`): one transaction, each at
its own stream's expected version. A caller continues only once its own append is durable, and a
group that conflicts (another worker moved its stream) fails alone. Appends to the same stream
never share a transaction: the later waits for the next.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from onward.events import Append, AppendResult, BackendError, EventLog

__all__ = ["Committer", "Seen"]

#: The most appends one transaction takes.
MAX_GROUPS = 512
#: The most waiters one turn of their event loop is told its outcome: each wakes a task that
#: runs on until its next await (its next step's start), all in the loop's next turn; the rest
#: are told in the turns after, so that the loop's timers and I/O are seen in between.
TOLD_PER_TURN = 32
#: The most appends one turn of an event loop hands to the writer: the steps whose bodies end
#: in the same turn (many tasks' calls that return together) each make their outcome's
#: append there, and the loop's timers and I/O wait for all of them; past this share, the
#: rest hand theirs over in the turns after, in the order they came.
HANDED_PER_TURN = 32


class Seen(asyncio.Future[AppendResult]):
    """The future of appends handed to the writer, which commits them whatever becomes of
    their caller: it cannot be cancelled. A task cancelled while it awaits one wakes once the
    outcome is known, with the ``CancelledError``; the outcome is in the future then (what
    :func:`asyncio.shield` gives, without the second future and the callbacks that take each
    outcome across to it)."""

    def cancel(self, msg: Any = None) -> bool:
        del msg
        return False


class Turns:
    """Shares the turns of an event loop among the appends its coroutines hand to the writer,
    :data:`HANDED_PER_TURN` a turn (one per loop: :meth:`Committer.turns`)."""

    __slots__ = ("__weakref__", "taken", "waiting")

    def __init__(self) -> None:
        self.taken = 0  # the places taken in this turn
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    def take(self) -> asyncio.Future[None] | None:
        """A place in this turn of the running loop (None), or the future of one in a later
        turn, to await (cancelled, it gives its place up)."""
        loop = asyncio.get_running_loop()
        if self.taken < HANDED_PER_TURN and not self.waiting:
            if not self.taken:  # counted afresh from the loop's next turn
                loop.call_soon(self._next)
            self.taken += 1
            return None
        place = loop.create_future()
        self.waiting.append(place)
        return place

    def _next(self) -> None:
        """A new turn: the places of those that waited longest."""
        self.taken = 0
        waiting = self.waiting
        while waiting and self.taken < HANDED_PER_TURN:
            place = waiting.popleft()
            if not place.done():  # else its caller was cancelled meanwhile
                place.set_result(None)
                self.taken += 1
        if self.taken:
            asyncio.get_running_loop().call_soon(self._next)


class _Request:
    """One caller's appends, and how to tell it: a thread's future, or a coroutine's future on
    its event loop (told in one wake-up of that loop per transaction)."""

    __slots__ = ("appends", "future", "loop", "streams", "waiter")

    def __init__(
        self,
        appends: Sequence[Append],
        loop: asyncio.AbstractEventLoop | None = None,
        waiter: Seen | None = None,
    ) -> None:
        self.appends = appends
        self.streams = [a.stream for a in appends]
        self.future: Future[AppendResult] | None = None if loop is not None else Future()
        self.loop = loop
        self.waiter = waiter


class Committer:
    """Commits the appends of concurrent callers in shared transactions, from a writer thread.

    Args:
        log: the log.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        # Taken to queue a request or to close: nothing is queued after the writer's last look.
        self._open = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._write, name="onward-committer", daemon=True)
        self._thread.start()
        #: How many transactions, and how many appends in them (for the benchmarks).
        self.transactions = 0
        self.appends = 0
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Turns] = (
            weakref.WeakKeyDictionary()
        )

    def turns(self) -> Turns:
        """The turns of the running event loop among its appends (:class:`Turns`)."""
        loop = asyncio.get_running_loop()
        turns = self._turns.get(loop)
        if turns is None:
            turns = self._turns[loop] = Turns()
        return turns

    def commit(self, appends: Sequence[Append]) -> AppendResult:
        """Append atomically, as :meth:`onward.events.EventLog.commit` does, sharing the
        transaction with whatever else waits; returns once durable.

        Raises:
            VersionConflict: a stream is not at its expected version.
            BackendError: the database failed (StorageUnavailable: an outage outlasted the
                tolerance).
        """
        request = _Request(appends)
        self._put(request)
        assert request.future is not None
        return request.future.result()

    def commit_soon(self, appends: Sequence[Append]) -> Seen:
        """:meth:`commit` for a coroutine: hands the appends to the writer thread and returns
        the future of their outcome, on the running loop.

        The writer commits them whatever becomes of their caller, and the future cannot be
        cancelled (:class:`Seen`): a caller cancelled while it awaits it is woken with the
        cancellation once the outcome is known.
        """
        loop = asyncio.get_running_loop()
        waiter = Seen(loop=loop)
        self._put(_Request(appends, loop, waiter))
        return waiter

    def _put(self, request: _Request) -> None:
        """Queue a request for the writer.

        Raises:
            BackendError: the committer is closed (its writer would never answer).
        """
        with self._open:
            if self._closed:
                raise BackendError("append after the run's group committer closed")
            self._queue.put(request)

    def close(self, *, wait: bool = True) -> None:
        """Commit what waits, then stop the writer thread (again: nothing more to do);
        ``wait=False`` returns without waiting for that (a worker that stops at once)."""
        with self._open:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        if wait:
            self._thread.join()

    def _write(self) -> None:
        held: list[_Request] = []  # appends to a stream already in the last transaction
        stopping = False
        while not stopping or held:
            batch: list[_Request] = []
            streams: set[str] = set()
            waiting, held = held, []
            if not waiting:
                first = self._queue.get()
                if first is None:
                    return
                waiting.append(first)
            while len(batch) < MAX_GROUPS:
                if not waiting:
                    try:
                        found = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if found is None:
                        stopping = True
                        break
                    waiting.append(found)
                request = waiting.pop(0)
                if not streams.isdisjoint(request.streams):
                    held.append(request)
                    continue
                batch.append(request)
                streams.update(request.streams)
            held.extend(waiting)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        outcomes: list[AppendResult | BaseException]
        try:
            outcomes = list(self.log.commit_groups([r.appends for r in batch]))
        except BaseException as exc:  # the storage failed for all of them
            outcomes = [exc] * len(batch)
        else:
            self.transactions += 1
            self.appends += len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, object]]] = {}
        for request, outcome in zip(batch, outcomes, strict=True):
            if request.loop is not None:
                by_loop.setdefault(request.loop, []).append((request, outcome))
            elif isinstance(outcome, BaseException):
                assert request.future is not None
                request.future.set_exception(outcome)
            else:
                assert request.future is not None
                request.future.set_result(outcome)
        for loop, told in by_loop.items():  # one wake-up of each loop for the whole transaction
            try:
                loop.call_soon_threadsafe(_tell, told)
            except RuntimeError:  # that loop has closed: nobody waits any more
                continue


def _tell(told: list[tuple[_Request, object]], start: int = 0) -> None:
    """On a coroutine's loop: hand each waiter its outcome, :data:`TOLD_PER_TURN` of them a
    turn of the loop."""
    end = start + TOLD_PER_TURN
    for request, outcome in told[start:end]:
        waiter = request.waiter
        if waiter is None:
            continue
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)  # type: ignore[arg-type]
    if end < len(told):
        asyncio.get_running_loop().call_soon(_tell, told, end)
