"""onward's engine: durable tasks and steps, policies and the runner, on top of the event log.

::

    from engine import Engine

    engine = Engine.open("sqlite:///work.db", session="nightly")

    @engine.step()
    def fetch(url: str) -> str: ...

    @engine.task(priority="normal")
    def crawl(url: str) -> int:
        return len(fetch(url))

    task_id = engine.submit(crawl, "https://example.org")
    engine.run()
    engine.result(task_id)

When a step raises, the engine heals what it can (:mod:`engine.healing`): it fingerprints the
error (:func:`fingerprint`), applies a fix (:class:`FixRegistry`, built-ins in
:mod:`engine.remedies`), retries by policy (:class:`RetryPolicies`) or gives up, and guards
dependencies with circuit breakers (``@engine.step(breaker="name")``, :class:`BreakerPolicy`).
"""

from engine.breaker import BreakerPolicy
from engine.engine import Engine
from engine.errors import (
    DeadlineMissed,
    InvalidTransition,
    NotFinished,
    NotRegistered,
    StepInterrupted,
    StepMismatch,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFound,
)
from engine.fixes import Fix, FixRegistry, FixStats, Remedy, StepCall, UnknownFix, default_registry
from engine.machines import diagram, validate
from engine.retry import RetryBudget, RetryDecision, RetryPolicies, RetryPolicy, RetryRule
from engine.run import StepFailedError
from engine.scheduler import RunSummary
from engine.signature import SIGNATURE_VERSION, ErrorSignature, fingerprint

__all__ = [
    "SIGNATURE_VERSION",
    "BreakerPolicy",
    "DeadlineMissed",
    "Engine",
    "ErrorSignature",
    "Fix",
    "FixRegistry",
    "FixStats",
    "InvalidTransition",
    "NotFinished",
    "NotRegistered",
    "Remedy",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicies",
    "RetryPolicy",
    "RetryRule",
    "RunSummary",
    "StepCall",
    "StepFailedError",
    "StepInterrupted",
    "StepMismatch",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFound",
    "UnknownFix",
    "default_registry",
    "diagram",
    "fingerprint",
    "validate",
]
