"""Events of queue limits: how many calls of a dependency run at once, and how many a window
takes, across every worker of a log, stored in ``limit-<name>``.

A limit is declared (:class:`LimitSet`) by the code that uses it. A step declared
``@engine.step(limit="model-api")`` takes a permit before it runs
(:class:`PermitTaken`, an append at the limit stream's expected version, so that workers never
both take the last one) and returns it after (:class:`PermitReturned`). A permit whose worker
is gone runs out once its task is no longer running under that worker (its lease was taken
over), or at its ``until``, whichever is later.
"""

from __future__ import annotations

from typing import ClassVar

from onward.events.base import Event

__all__ = ["LimitSet", "PermitReturned", "PermitTaken"]


class LimitSet(Event, frozen=True, kw_only=True):
    """A queue limit was declared (or changed): every worker of the log holds to the latest.

    Attributes:
        name: the limit's name (the dependency it guards: ``"model-api"``).
        concurrency: how many steps under it may run at once (None: no bound).
        rate: how many may start per window, as ``"60/minute"`` ("" for no bound).
    """

    family: ClassVar[str] = "limit"

    name: str
    concurrency: int | None = None
    rate: str = ""


class PermitTaken(Event, frozen=True, kw_only=True):
    """A step took a permit of a limit.

    Attributes:
        task_id: the task.
        index: the step's index.
        worker: the worker running it.
        until: when the permit runs out unless its worker still beats, in seconds since the
            epoch.
        run: the run of the task that took it (the id of its claim; "" in logs written
            before runs were named).
    """

    family: ClassVar[str] = "limit"

    task_id: str
    index: int
    worker: str
    until: float
    run: str = ""


class PermitReturned(Event, frozen=True, kw_only=True):
    """A step gave its permit back (it ended, failed or was handed back).

    Attributes:
        task_id: the task.
        index: the step's index.
        worker: the worker that gives it back: a permit taken since by another worker (the
            step was taken over) stays that worker's ("" gives back whoever holds it).
        run: the run that gives it back: a permit taken since by another run of the same
            worker (the task was cancelled and retried while the step ran) stays that run's
            ("" gives back the worker's).
    """

    family: ClassVar[str] = "limit"

    task_id: str
    index: int
    worker: str = ""
    run: str = ""
