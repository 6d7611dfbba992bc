"""Queue limits: how many steps calling one dependency run at once, and how many start per
window, across every worker of a log (a model API that allows 4 calls at once and 60 a
minute).

A limit lives in its own stream, ``limit-<name>``, shared by every session and worker of the
log. Declaring it records a :class:`~onward.events.LimitSet` (only when the log's differs); a
step declared ``@engine.step(limit=name)`` takes a permit before it runs, a
:class:`~onward.events.PermitTaken` appended at the stream's expected version, so that two
workers never both take the last one, and gives it back after its outcome
(:class:`~onward.events.PermitReturned`). When none is free the task waits, recorded
(:class:`~onward.events.TaskWaiting` with ``limit``), and its worker goes on with other work: a
permit given back wakes the most urgent waiting task; a full rate window, the moment it frees.

A permit whose worker died is not lost: it counts only until its own ``until`` (a lease after
it was taken), or longer while its task still runs under the worker that took it and that
worker's claim holds (a worker known dead on this host, or whose lease and heartbeats ran out,
holds none). A step taken over from a dead worker takes its permit afresh, so that it counts
while the step runs again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NamedTuple

from onward.events import (
    Context,
    LimitSet,
    PermitReturned,
    PermitTaken,
    TaskWaiting,
    UsageError,
    VersionConflict,
)
from onward.projections import LimitView, Projections, limit_stream, permit_key
from onward.projections.limits import TAKES_KEPT
from onward.runtime.session import SILENCE_GRACE, Session
from onward.runtime.worker import worker_gone

__all__ = ["Limits", "Rate", "parse_rate"]

#: How many times a take looks again after another worker's append.
_TAKE_TRIES = 50
# A window's count has a digit ("30", "1.5", ".5"; never a lone "."), and a count of calls at
# most 18 digits, so that neither reaches float() or int() in a form they refuse.
_RATE = re.compile(
    r"^\s*(\d{1,18})\s*/\s*(\d+\.?\d*|\.\d+)?\s*(second|sec|s|minute|min|m|hour|h)\s*$"
)
_WINDOWS = {
    "second": 1.0,
    "sec": 1.0,
    "s": 1.0,
    "minute": 60.0,
    "min": 60.0,
    "m": 60.0,
    "hour": 3600.0,
    "h": 3600.0,
}


class Rate(NamedTuple):
    """How many permits may be taken per window."""

    calls: int
    window: float


def parse_rate(text: str, *, most: int | None = TAKES_KEPT) -> Rate | None:
    """A rate as ``"60/minute"``, ``"5/second"``, ``"1000/hour"`` or ``"10/30s"``; "" for none.

    Raises:
        UsageError: anything else, a window over an hour, no calls at all, or more than
            ``most`` per window (:data:`~onward.projections.limits.TAKES_KEPT`, 100,000, the
            takes the log keeps to count them; None for a rate the log holds already).
    """
    if not isinstance(text, str):
        raise UsageError(f"a rate is text such as '60/minute', got {text!r}")
    if not text.strip():
        return None
    found = _RATE.match(text)
    if found is None:
        raise UsageError(
            f"a rate is '<calls>/<window>' such as '60/minute', '5/second', '1000/hour' or "
            f"'10/30s', got {text!r}"
        )
    calls, count, unit = int(found[1]), found[2], found[3]
    window = (float(count) if count else 1.0) * _WINDOWS[unit]
    if calls < 1 or not 0 < window <= 3600:
        raise UsageError(f"a rate allows at least 1 call per window of up to an hour: {text!r}")
    if most is not None and calls > most:
        # The log keeps that many takes of a limit to count a window's: more would never wait.
        raise UsageError(f"a rate allows at most {most:,} calls per window: {text!r}")
    return Rate(calls, window)


class _Bounds(NamedTuple):
    concurrency: int | None
    rate: Rate | None


class Limits:
    """The queue limits one engine knows, and the taking and giving back of their permits.

    Args:
        session: the engine's session (its log, projections, clock and lease).
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._declared: dict[str, _Bounds] = {}

    def define(self, name: str, *, concurrency: int | None, rate: str) -> None:
        """Declare a limit, and record it unless the log holds the same (see
        :meth:`onward.Engine.limit`).

        Raises:
            UsageError: a bad name, concurrency or rate, or neither bound.
        """
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"a limit's name must be a non-empty string, got {name!r}")
        self.session.log.redactor.check_name(name, "limit name")
        if concurrency is not None and not (
            isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency >= 1
        ):
            raise UsageError(
                f"limit {name!r}: concurrency must be an int >= 1, got {concurrency!r}"
            )
        parsed = parse_rate(rate)
        if concurrency is None and parsed is None:
            raise UsageError(f"limit {name!r}: give a concurrency, a rate, or both")
        self._declared[name] = _Bounds(concurrency, parsed)
        wanted = LimitSet(name=name, concurrency=concurrency, rate=rate.strip())

        def unless_the_same(projections: Projections) -> tuple[list[LimitSet], int]:
            view = projections.limits.held(name)
            same = view.set and (view.concurrency, view.rate) == (concurrency, wanted.rate)
            return ([] if same else [wanted]), view.version

        self.session.decide_on(limit_stream(name), unless_the_same, f"limit {name!r}")

    def bounds(self, name: str, view: LimitView) -> _Bounds:
        """A limit's bounds: the log's latest declaration, else this engine's.

        Raises:
            UsageError: nothing declares it.
        """
        if view.set:
            return _Bounds(view.concurrency, parse_rate(view.rate, most=None))
        found = self._declared.get(name)
        if found is None:
            raise UsageError(
                f"limit {name!r} is not declared: call engine.limit({name!r}, concurrency=..., "
                "rate=...) where the engine is set up"
            )
        return found

    def take(self, limit: str, task_id: str, index: int, context: Context) -> TaskWaiting | None:
        """Take a permit of ``limit`` for a step: None once taken (or when the step holds one
        already, from an earlier run), else the wait to record (the caller suspends the task).

        Raises:
            UsageError: the limit is not declared.
        """
        session = self.session
        key = permit_key(task_id, index)
        for _ in range(_TAKE_TRIES):
            with session.lock:
                projections = session.catch_up()
                view = projections.limits.held(limit)
                concurrency, rate = self.bounds(limit, view)
                held = view.held.get(key)
                if held is not None and view.runs.get(key) == context.causation_id:
                    return None  # taken by this run already
                # A permit of this step taken by another run, which lost the task since (its
                # worker died, its lease ran out, a person cancelled it and retried the task):
                # this run takes it afresh, so that it counts while this run holds it, and the
                # other run's give-back (once its body ends) leaves it held.
                now = session.clock()
                why, until = "", None
                # Within a lease of an outage of the storage, a holder's silence proves
                # nothing (it could not record its heartbeat either), as for its claims; nor
                # before an append of this worker's own went through since, a grace ago.
                silence_counts = session.log.outage.since_last() >= session.lease
                counted = functools.partial(
                    self.in_use,
                    view,
                    projections,
                    now,
                    asking=session.worker,
                    lease=session.lease,
                    besides=key,
                )
                in_use = counted(
                    silence_counts=silence_counts,
                    proven=functools.partial(session.silence_proven, now=now),
                )
                if concurrency is not None and in_use >= concurrency:
                    why = f"{in_use} of {concurrency} permits in use"
                    until = now + session.lease / 3  # a look again, should a holder die
                    if silence_counts and concurrency > counted():
                        # A holder silent past its lease: a grace after an append of its own.
                        if now >= session.appended_at + SILENCE_GRACE:
                            session.append_own()
                        until = min(until, session.appended_at + SILENCE_GRACE)
                elif rate is not None:
                    # A take stamped further ahead than a lease (a clock that runs ahead) is
                    # not counted: it would hold the limit for as long as that clock is ahead.
                    since, ahead = now - rate.window, now + session.lease
                    if projections.limits.recent(limit, since, ahead) >= rate.calls:
                        first = projections.limits.first_since(limit, since, ahead)
                        why = f"{rate.calls} taken in the last {rate.window:g} s"
                        until = (first if first is not None else now) + rate.window
                if why:
                    return TaskWaiting(
                        reason=f"limit {limit!r}: {why}",
                        until=until,
                        limit=limit,
                        limit_after=view.version,
                    )
                taken = PermitTaken(
                    task_id=task_id,
                    index=index,
                    worker=session.worker,
                    until=now + session.lease,
                    run=context.causation_id,
                )
                try:
                    session.log.append(
                        limit_stream(limit), [taken], expected_version=view.version, context=context
                    )
                except VersionConflict:
                    continue  # another worker took or gave back one: look again
                return None
        # Many workers kept taking first: hand the task back, ready again at once.
        return TaskWaiting(reason=f"limit {limit!r}: busy", until=session.clock(), limit=limit)

    def give_back(self, limit: str, task_id: str, index: int, context: Context) -> None:
        """Give a step's permit back."""
        self.session.log.append(
            limit_stream(limit),
            [
                PermitReturned(
                    task_id=task_id,
                    index=index,
                    worker=self.session.worker,
                    run=context.causation_id,
                )
            ],
            expected_version=None,
            context=context,
        )

    @staticmethod
    def in_use(
        view: LimitView,
        projections: Projections,
        now: float,
        *,
        asking: str = "",
        lease: float = 0.0,
        besides: str = "",
        silence_counts: bool = True,
        proven: Callable[[float], bool] | None = None,
    ) -> int:
        """How many of a limit's permits count: each whose own time has not run out, or whose
        task still runs under the worker that took it while that worker's claim holds (it is
        not known to be dead, and its lease or heartbeat has not run out).

        Args:
            view: the limit.
            projections: the read models (tasks and workers).
            now: the time.
            asking: the worker that asks (tells which workers of its host are dead).
            lease: the lease a task's last news keeps its claim for (as the asking worker
                judges its peers).
            besides: a permit not to count (the step that asks for one again).
            silence_counts: whether a holder's silence past its lease and heartbeat frees
                its permit (False within a lease of an outage of the storage: a permit then
                counts while its task runs under its worker, unless that worker is known dead).
            proven: given until when a silent holder's claim held, whether its silence counts
                (None: it does; see :meth:`onward.runtime.session.Session.silence_proven`).
        """
        return len(
            Limits.counting(
                view,
                projections,
                now,
                asking=asking,
                lease=lease,
                besides=besides,
                silence_counts=silence_counts,
                proven=proven,
            )
        )

    @staticmethod
    def counting(
        view: LimitView,
        projections: Projections,
        now: float,
        *,
        asking: str = "",
        lease: float = 0.0,
        besides: str = "",
        silence_counts: bool = True,
        proven: Callable[[float], bool] | None = None,
    ) -> list[str]:
        """The permits that count (``"task_id:index"``), as :meth:`in_use` counts them; the
        others in ``view.held`` are stale: their worker is gone or their time ran out, and
        they are given back when their task runs again."""
        tasks = projections.tasks.views  # a finished task holds no permit: not decoded
        workers = projections.workers
        found: list[str] = []
        for key, (worker, until) in view.held.items():
            if key == besides:
                continue
            if asking and worker_gone(worker, asking):
                continue  # a dead worker of this host: its permit is free at once
            if until > now:
                found.append(key)
                continue
            task = tasks.get(key.rpartition(":")[0])
            if task is None or task.state != "running" or task.worker != worker:
                continue
            if not silence_counts:
                found.append(key)
                continue
            holds = max(task.lease_until, task.updated_at + lease, workers.holds_until(worker))
            if now <= holds or (proven is not None and not proven(holds)):
                found.append(key)
        return found
