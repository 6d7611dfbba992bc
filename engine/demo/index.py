"""The index service the survey files its totals with: a flaky tool, seeded (part of
``onward demo``).

It stands in, in process, for a remote search index, and fails the way such services do:

- **faults on a task's first call**, drawn from ``(seed, task label)``: a ``TimeoutError``
  (it answers after the step's ``timeout``; ``lengthen-timeout`` doubles it), a
  ``ConnectionResetError`` (``reconnect-after-dropped-connection`` calls again after a wait), an
  :class:`IndexBusy` (no fix: the retry policy calls again), or a :class:`QuotaExceeded` from the
  primary index, which no built-in fix knows: the survey gives it up until someone teaches the
  engine :class:`UseBackupIndex` (``onward learn SIGNATURE use-backup-index``);
- **an outage** (:class:`Outage`): the service is down when the survey starts
  (:class:`IndexUnavailable` on every call) until the circuit breaker of the ``index-service``
  dependency has opened and, either, half-opened once, or :data:`REPAIR_TASKS` tasks of the
  session have ended since the worker reported the service down (``engine.degrade``: the
  operators' repair, measured in the session's own work). It is then back: its health check
  (:meth:`IndexService.up`) passes, and the breaker closes at its trial call (at once, unless
  the trial call meets that task's own fault). Meanwhile the tasks go on reading and parsing;
  those that reach ``summarise`` before the breaker opens wait there for the half-open moment,
  and those that come after file with the :data:`WORKAROUNDS` while the service is down.

A task's own fault is a function of the seed and its label, and the outage's course a function
of what the session's log records (the calls made, the breaker's moves), never of a random
stream: a worker killed with SIGKILL and resumed meets the same faults, and two runs with one
seed meet the same faults in each task that calls the running service. Which tasks call while
the outage lasts (and so file with the backup index, never meeting their own fault) is the
wall clock's: a retry that comes due before the next task's call counts towards the breaker in
its place, as it would against a real service. The backup index never fails.
"""

from __future__ import annotations

import errno
import hashlib
import threading
from collections import Counter
from typing import Any

import msgspec

from onward.events import (
    BreakerHalfOpened,
    ComponentFailed,
    EventLog,
    FixAttempted,
    FixFailed,
    FixSucceeded,
    StepCompleted,
    StepFailed,
    TaskFailed,
    TaskSucceeded,
)
from onward.healing.fixes import Remedy, StepCall
from onward.judgement.degradation import Workaround

__all__ = [
    "BACKUP",
    "DEFAULT_SEED",
    "DEPENDENCY",
    "FAULT_RATES",
    "OUTAGE_AT",
    "OUTAGE_MIN_TASKS",
    "REPAIR_TASKS",
    "WORKAROUNDS",
    "Fault",
    "IndexBusy",
    "IndexService",
    "IndexUnavailable",
    "Outage",
    "QuotaExceeded",
    "UseBackupIndex",
    "fault_for",
    "plan_outage",
]

#: The dependency the ``summarise`` step declares (``@engine.step(breaker=...)``).
DEPENDENCY = "index-service"
#: The seed of the faults when none is given.
DEFAULT_SEED = 7
#: Each fault's share of the tasks' first calls (the rest succeed).
FAULT_RATES: tuple[tuple[str, float], ...] = (
    ("timeout", 0.06),
    ("reset", 0.06),
    ("busy", 0.05),
    ("quota", 0.04),
)
#: The outage starts once this share of the session's tasks have called the service.
OUTAGE_AT = 0.0
#: Sessions with fewer tasks have no outage (it would be most of their run).
OUTAGE_MIN_TASKS = 10
#: The outage ends once this many of the session's tasks have ended since the service was
#: reported down (unless the breaker half-opened first).
REPAIR_TASKS = 3
#: What the survey files with while the index service is down: the backup index.
BACKUP = Workaround(
    name="backup-index",
    quality_loss=0.1,
    description="file the totals with the backup index, rebuilt nightly: searchable, ranked "
    "a day late",
)
#: The index service's ladder of workarounds (``engine.component``).
WORKAROUNDS = (BACKUP,)


class QuotaExceeded(Exception):
    """The primary index refused a document: the tenant's quota for the minute is spent.

    No built-in fix knows it, and it is not transient: the step gives up, until the engine has
    learned :class:`UseBackupIndex` for its signature.
    """


class IndexBusy(ConnectionError):
    """The index service is overloaded for a moment: call again shortly (a retry)."""


class IndexUnavailable(ConnectionError):
    """The index service is down (an outage): its breaker opens after a few of these."""


class Fault(msgspec.Struct, frozen=True):
    """What a task's first call to the index meets.

    Attributes:
        kind: "timeout", "reset", "busy", "quota", or "" (none).
        latency: the seconds the service takes to answer (over 1 s for a timeout).
    """

    kind: str
    latency: float


def fault_for(seed: int, label: str) -> Fault:
    """The fault a task's first call meets, from the seed and the task's label alone."""
    digest = hashlib.blake2b(f"{seed}\x00{label}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest[:4], "big") / 2**32
    spread = int.from_bytes(digest[4:], "big") / 2**32
    bound = 0.0
    for kind, rate in FAULT_RATES:
        bound += rate
        if draw < bound:
            return Fault(kind, round(1.0 + spread * 0.9 if kind == "timeout" else 0.1 + spread, 3))
    return Fault("", round(0.05 + spread * 0.5, 3))


class Outage(msgspec.Struct, frozen=True):
    """When the index service goes down, counted in the session's recorded calls to it.

    It goes down at the first call after ``after`` calls that follows a success (so that the
    breaker counts the outage's failures alone) while no fix waits to run its step again (so
    that no fix is judged by the outage: a fix's step would meet the outage if it ran again
    before the breaker opens). The first call of a session meets both.

    Attributes:
        after: the recorded calls before it may start.
    """

    after: int = 0


def plan_outage(tasks: int) -> Outage | None:
    """The outage of a session of ``tasks`` tasks (None: too few tasks for one)."""
    if tasks < OUTAGE_MIN_TASKS:
        return None
    return Outage(after=round(OUTAGE_AT * tasks))


class IndexService:
    """The index, in process; its state is folded from the session's log at each call.

    Args:
        log: the session's log (read only).
        session: the session whose calls count.
        seed: the seed of the faults.
        outage: when the service goes down (None: never); settable until the first call.
    """

    def __init__(self, log: EventLog, *, session: str, seed: int, outage: Outage | None) -> None:
        self.log = log
        self.session = session
        self.seed = seed
        self.outage = outage
        self._lock = threading.Lock()
        self._position = 0
        self.calls = 0
        self.last_ok = True
        self.outage_failures = 0
        self.half_opens = 0
        self.reported_down = False
        self.ended_since_report = 0
        # Per task stream: the recorded calls that were not refused by the outage.
        self._served: Counter[str] = Counter()
        # Fixes whose step has not run again yet: (stream, step index).
        self._fixes_waiting: set[tuple[str, int]] = set()

    def publish(self, label: str, *, stream: str, timeout: float, index: str) -> None:
        """File a task's totals with an index.

        Args:
            label: the task's label (its faults are drawn from it).
            stream: the task's stream.
            timeout: how long to wait for an answer, in seconds.
            index: "primary" or "backup".

        Raises:
            IndexUnavailable: the service is down.
            TimeoutError, ConnectionResetError, IndexBusy, QuotaExceeded: the task's fault.
        """
        if index == "backup":
            return
        with self._lock:
            self._catch_up()
            if self._down():
                raise IndexUnavailable("503 Service Unavailable: the index service is down")
            first = self._served[stream] == 0
        fault = fault_for(self.seed, label)
        if not first:
            return
        if fault.kind == "timeout" and fault.latency > timeout:
            raise TimeoutError(f"the index service did not answer within {timeout:g} s")
        if fault.kind == "reset":
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        if fault.kind == "busy":
            raise IndexBusy("the index service is busy: no worker free, try again later")
        if fault.kind == "quota" and index == "primary":
            raise QuotaExceeded(
                "quota exceeded on the primary index: 500 documents per minute for tenant "
                "'onward-demo'"
            )

    def up(self) -> bool:
        """The service's health check (``GET /health``): False while the outage lasts.

        It is no call: the outage's calls and faults do not count it.
        """
        with self._lock:
            self._catch_up()
            return not (self.outage_failures and not self._over())

    def _over(self) -> bool:
        return self.half_opens > 0 or self.ended_since_report >= REPAIR_TASKS

    def _down(self) -> bool:
        outage = self.outage
        if outage is None:
            return False
        if self.outage_failures:
            return not self._over()
        return self.calls >= outage.after and self.last_ok and not self._fixes_waiting

    def _catch_up(self) -> None:
        for r in self.log.read(after=self._position, page_size=2000):
            self._position = r.position
            if r.meta.session == self.session:
                self._fold(r.stream, r.event)

    def _fold(self, stream: str, event: Any) -> None:
        if isinstance(event, StepCompleted | StepFailed):
            if event.dependency != DEPENDENCY:
                return
            self.calls += 1
            self.last_ok = isinstance(event, StepCompleted)
            if isinstance(event, StepFailed) and event.error_type.endswith(
                IndexUnavailable.__name__
            ):
                self.outage_failures += 1
            else:
                self._served[stream] += 1
        elif isinstance(event, BreakerHalfOpened):
            if event.dependency == DEPENDENCY and self.outage_failures:
                self.half_opens += 1
        elif isinstance(event, ComponentFailed):
            if event.component == DEPENDENCY and self.outage_failures:
                self.reported_down = True
        elif isinstance(event, TaskSucceeded | TaskFailed):
            if self.reported_down:
                self.ended_since_report += 1
        elif isinstance(event, FixAttempted) and event.step_index is not None:
            self._fixes_waiting.add((stream, event.step_index))
        elif isinstance(event, FixSucceeded | FixFailed) and event.step_index is not None:
            self._fixes_waiting.discard((stream, event.step_index))


class UseBackupIndex:
    """A fix the demo knows but does not offer: file with the backup index instead.

    Its :meth:`matches` says no to every error, so the engine applies it only to the error
    signatures it has learned it for (``engine.learn(signature, "use-backup-index")``).
    """

    name = "use-backup-index"

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return False

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        if call.arguments.get("index") != "primary":
            return None
        return Remedy(
            call=call.with_arguments(index="backup"), change={"index": ["primary", "backup"]}
        )
