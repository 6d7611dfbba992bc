"""Events of a worker: a process that runs a session's tasks, stored in ``worker-<worker id>``.

A worker says it is alive while it runs tasks (:class:`WorkerHeartbeat`), so that a step longer
than the lease of its claim is not taken over by a peer while its worker lives; a worker that
stops says so (:class:`WorkerStopped`) after it handed its tasks back.
"""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event

__all__ = ["WorkerHeartbeat", "WorkerStopped"]


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
