"""The engine's keyword options, defined once: :class:`~onward.Engine` takes
:class:`EngineOptions`, and :meth:`~onward.Engine.open` takes :class:`OpenOptions` (those, and
the options of the log it opens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypedDict

from onward.events import Codec, Redactor
from onward.healing.breaker import BreakerPolicy
from onward.healing.fixes import FixRegistry
from onward.healing.retry import RetryBudget, RetryPolicies
from onward.judgement.budget import ErrorBudget
from onward.judgement.confidence import Thresholds
from onward.judgement.degradation import Components
from onward.judgement.flow import FlowPolicy
from onward.judgement.rulebook import Rulebook
from onward.runtime.interruptions import Interruption
from onward.runtime.observer import Observer

__all__ = ["ENGINE_OPTIONS", "EngineOptions", "OpenOptions"]


class EngineOptions(TypedDict, total=False):
    """The options of an engine, each optional.

    Keys:
        clock: the source of time in seconds since the epoch (the log's clock, ``time.time``
            by default; a fake one in tests).
        sleep: how to wait for a timer (``time.sleep``; on a virtual clock, such as
            :class:`onward.testing.FakeClock`, the clock's own ``sleep``, which moves it).
        lease: seconds a worker's claim on a task lasts without news from it (300).
        checkpoint_every: save a projection checkpoint after this many events (50,000).
        healing: fix, retry and guard failing steps (True; see :mod:`onward.healing.healer`);
            False makes every step failure final at once.
        fixes: the fix registry (the built-in fixes by default).
        retries: the retry policies per error type or signature.
        retry_budget: the retries a session may schedule per window.
        breakers: when circuit breakers open, and for how long.
        seed: the seed of the retry jitter (recorded delays are never recomputed).
        thresholds: the confidence thresholds of actions (see
            :mod:`onward.judgement.confidence`).
        components: the components and their workaround ladders (the nine defaults when
            None; see :mod:`onward.judgement.degradation`).
        rulebook: the decision rules (the built-in ones when None; see
            :mod:`onward.judgement.rulebook`).
        budget: the session's error budget (10 errors per hour when None; see
            :mod:`onward.judgement.budget`).
        flow: when the session's rhythm counts as flowing (see :mod:`onward.judgement.flow`).
        on_interruption: called with each notice or approval request delivered to people
            (logged by default).
        observer: told of each task run, step try and task boundary, for traces and metrics
            (see :mod:`onward.runtime.observer`; :mod:`onward.telemetry` for OpenTelemetry).
        host: the name this worker gives its host (``ONWARD_HOST``, else the machine's host
            name): a peer on the same host takes a dead worker's tasks at once, a peer on
            another host once the dead worker's lease runs out.
        origin: what opens the session, recorded in its ``SessionStarted.config["origin"]``
            when it starts (nothing by default): ``onward simulate`` records
            ``"onward simulate"``, by which it tells a log that holds only simulations.
    """

    clock: Callable[[], float] | None
    sleep: Callable[[float], None]
    lease: float
    checkpoint_every: int
    healing: bool
    fixes: FixRegistry | None
    retries: RetryPolicies | None
    retry_budget: RetryBudget | None
    breakers: BreakerPolicy | None
    seed: int | None
    thresholds: Thresholds | None
    components: Components | None
    rulebook: Rulebook | None
    budget: ErrorBudget | None
    flow: FlowPolicy | None
    on_interruption: Callable[[Interruption], None] | None
    observer: Observer | None
    host: str
    origin: str


class OpenOptions(EngineOptions, total=False):
    """The options of :meth:`onward.Engine.open`: the engine's, and the log's.

    Keys:
        codec: the log's codec (one that knows every event type by default).
        redactor: the secret redactor applied before every append.
        payload_limit: the largest encoded event accepted, in bytes, blobs included (256 MiB
            by default).
        inline_limit: the largest encoded event kept whole in its record (1 MiB by default);
            the large values of a larger one (a step's result, a task's arguments, a
            message) are stored once as blobs in the same database and read back with it.
        synchronous: SQLite's ``PRAGMA synchronous``: "full" (default), "normal" or "extra".
        busy_timeout: seconds an SQLite writer waits for another process's lock.
        create: create the log when missing (True); False raises ``LogNotFound`` instead.
        outage_tolerance: how long, in seconds, the engine's own appends and reads retry
            through transient storage errors (a locked file, a restarting server; 300 by
            default) before they raise ``StorageUnavailable``.
        verify_reads: check each record's checksum whenever it is read for replay or resume
            (True); False trusts the storage.
    """

    codec: Codec
    redactor: Redactor
    payload_limit: int
    inline_limit: int
    synchronous: str
    busy_timeout: float
    create: bool
    outage_tolerance: float
    verify_reads: bool


#: The names of the engine's own options (the rest of :class:`OpenOptions` go to the log).
ENGINE_OPTIONS = EngineOptions.__optional_keys__
