"""Events of a worker: a process that runs a session's tasks, stored in ``worker-<worker id>``.

A worker says it is alive while it runs tasks (:class:`WorkerHeartbeat`), so that a step longer
than the lease of its claim is not taken over by a peer while its worker lives; a worker that
stops says so (:class:`WorkerStopped`) after it handed its tasks back. A peer that finds it
silent past its lease and takes a claim of it over says so on its stream
(:class:`WorkerClaimExpired`), in the same commit and at the version it read: a heartbeat it had
not read yet makes that commit fail, so a live worker's claim is never taken on stale news.
"""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event

__all__ = ["WorkerClaimExpired", "WorkerHeartbeat", "WorkerStopped"]


class WorkerHeartbeat(Event, frozen=True, kw_only=True):
    """The worker is alive: its claims hold until ``lease_until`` at least.

    Attributes:
        lease_until: until when its claims hold without further news, in seconds since the
            epoch.
        running: how many tasks it is running.
    """

    family: ClassVar[str] = "worker"

    lease_until: float
    running: int = 0


class WorkerStopped(Event, frozen=True, kw_only=True):
    """The worker stopped (its tasks were handed back first).

    Attributes:
        reason: why ("SIGTERM", "stopped by the application", ...).
        released: how many running tasks it handed back.
    """

    family: ClassVar[str] = "worker"

    reason: str = ""
    released: int = 0


class WorkerClaimExpired(Event, frozen=True, kw_only=True):
    """A peer found the worker silent past its lease and expired its claim on a task.

    Appended to the silent worker's stream in the commit of the task's
    :class:`onward.events.TaskLeaseExpired`, at the stream's version the peer read: a heartbeat
    of the worker that the peer had not read makes the whole commit fail.

    Attributes:
        task_id: the task whose claim expired.
        by: the worker that expired it.
        lease_until: until when the worker's last heartbeat the peer read held its claims.
    """

    family: ClassVar[str] = "worker"

    task_id: str
    by: str
    lease_until: float = 0.0
