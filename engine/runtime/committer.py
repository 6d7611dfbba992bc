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
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from onward.events import Append, AppendResult, EventLog, OnwardError

__all__ = ["Committer"]

#: The most appends one transaction takes.
MAX_GROUPS = 512


class _Request:
    __slots__ = ("appends", "future", "streams")

    def __init__(self, appends: Sequence[Append]) -> None:
        self.appends = appends
        self.streams = frozenset(a.stream for a in appends)
        self.future: Future[AppendResult] = Future()


class Committer:
    """Commits the appends of concurrent callers in shared transactions, from a writer thread.

    Args:
        log: the log.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="onward-committer", daemon=True)
        self._thread.start()
        #: How many transactions, and how many appends in them (for the benchmarks).
        self.transactions = 0
        self.appends = 0

    def commit(self, appends: Sequence[Append]) -> AppendResult:
        """Append atomically, as :meth:`onward.events.EventLog.commit` does, sharing the
        transaction with whatever else waits; returns once durable.

        Raises:
            VersionConflict: a stream is not at its expected version.
            BackendError: the database failed (StorageUnavailable: an outage outlasted the
                tolerance).
        """
        request = _Request(appends)
        self._queue.put(request)
        return request.future.result()

    async def commit_async(self, appends: Sequence[Append]) -> AppendResult:
        """:meth:`commit` for a coroutine: awaits the shared transaction."""
        request = _Request(appends)
        self._queue.put(request)
        return await asyncio.wrap_future(request.future)

    def close(self) -> None:
        """Commit what waits, then stop the writer thread."""
        self._queue.put(None)
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
                if streams & request.streams:
                    held.append(request)
                    continue
                batch.append(request)
                streams |= request.streams
            held.extend(waiting)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        try:
            results = self.log.commit_groups([r.appends for r in batch])
        except BaseException as exc:  # the storage failed for all of them
            for request in batch:
                request.future.set_exception(exc)
            return
        self.transactions += 1
        self.appends += len(batch)
        for request, result in zip(batch, results, strict=True):
            if isinstance(result, OnwardError):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)
