"""The worker projection: which workers are alive, from their streams ``worker-<worker id>``.

A worker that runs tasks appends a :class:`onward.events.WorkerHeartbeat` now and then; its
claims hold until the heartbeat's ``lease_until`` (or the claim's own lease, whichever is later).
A peer that expires one of its claims appends :class:`onward.events.WorkerClaimExpired` to the
stream at the version it read (:attr:`WorkerView.version`), which fences it against a heartbeat
it had not read yet.
"""

from __future__ import annotations

from typing import Any

import msgspec

from onward.events import Recorded, WorkerClaimExpired, WorkerHeartbeat, WorkerStopped

__all__ = ["WORKER_PREFIX", "WorkerProjection", "WorkerView", "worker_stream"]

#: Every worker's stream is ``worker-<worker id>``.
WORKER_PREFIX = "worker-"


def worker_stream(worker: str) -> str:
    """The stream of a worker."""
    return WORKER_PREFIX + worker


class WorkerView(msgspec.Struct, kw_only=True, gc=False):
    """What the log says about one worker.

    Attributes:
        worker: its id (``host/pid/start/nonce``).
        lease_until: until when its claims hold, by its last heartbeat.
        seen_at: the time of its last event.
        running: how many tasks it ran at its last heartbeat.
        stopped: it said it stopped.
        version: its stream's version (a peer expiring one of its claims appends at it).
    """

    worker: str
    lease_until: float = 0.0
    seen_at: float = 0.0
    running: int = 0
    stopped: bool = False
    version: int = 0


class WorkerProjection:
    """Folds worker streams into :class:`WorkerView` objects."""

    #: The event types this projection folds.
    event_types = frozenset({WorkerHeartbeat, WorkerStopped, WorkerClaimExpired})

    def __init__(self) -> None:
        self.workers: dict[str, WorkerView] = {}

    def apply(self, r: Recorded) -> None:
        """Fold one event of a worker stream. One of another type (an unknown event, from a
        newer onward) only moves the stream's version: a peer's note appends after it."""
        event = r.event
        worker = r.stream[len(WORKER_PREFIX) :]
        view = self.workers.get(worker)
        if view is None:
            view = self.workers[worker] = WorkerView(worker=worker)
        view.version = r.version
        if not isinstance(event, WorkerHeartbeat | WorkerStopped):
            return  # a peer's word about the worker, or an unknown event: not news from it
        view.seen_at = r.meta.time
        if isinstance(event, WorkerHeartbeat):
            view.lease_until = max(view.lease_until, event.lease_until)
            view.running = event.running
            view.stopped = False
        else:
            view.stopped = True
            view.running = 0

    def holds_until(self, worker: str) -> float:
        """Until when a worker's heartbeats keep its claims (0.0 for a worker never heard of,
        or one that stopped)."""
        view = self.workers.get(worker)
        if view is None or view.stopped:
            return 0.0
        return view.lease_until

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every worker."""
        return {k: msgspec.structs.asdict(v) for k, v in sorted(self.workers.items())}

    def dump(self) -> list[WorkerView]:
        """Every worker view, for a checkpoint."""
        return list(self.workers.values())

    def load(self, views: list[WorkerView]) -> None:
        """Restore from a checkpoint's worker views."""
        self.workers = {v.worker: v for v in views}
