"""onward: durable tasks and steps, self-healing and judgement, on an event-sourced log.

This package is the public API; its rooms are :mod:`onward.runtime` (the engine facade and the
runner), :mod:`onward.healing` and :mod:`onward.judgement` (the policies), :mod:`onward.core`
(what they share), :mod:`onward.cli` (the ``onward`` command), over :mod:`onward.projections`
(the read models) and :mod:`onward.events` (the log).

::

    from onward import Engine

    engine = Engine.open("sqlite:///work.db", session="nightly")

    @engine.step()
    def fetch(url: str) -> str: ...

    @engine.task(priority="normal")
    def crawl(url: str) -> int:
        return len(fetch(url))

    task_id = engine.submit(crawl, "https://example.org")
    engine.run()
    engine.result(task_id)

When a step raises, the engine heals what it can (:mod:`onward.healing.healer`): it fingerprints the
error (:func:`fingerprint`), applies a fix (:class:`FixRegistry`, built-ins in
:mod:`onward.healing.remedies`), retries by policy (:class:`RetryPolicies`) or gives up, and guards
dependencies with circuit breakers (``@engine.step(breaker="name")``, :class:`BreakerPolicy`).

It judges what it does alone: a :class:`Rulebook` of decision rules (TOML or Python), actions
run by confidence (``@engine.action(impact=..., check=..., undo=...)``, :class:`Thresholds`),
approvals a human answers from any process (:meth:`Engine.approve`), graceful degradation
(:class:`Components`, :class:`Workaround`, :meth:`Engine.degrade`), an :class:`ErrorBudget` and a
flow monitor (:class:`FlowPolicy`) applied at each task boundary. Every decision is recorded
with its inputs and causes: ``onward why ID`` explains it.
"""

from onward.core.definitions import Judgement
from onward.core.errors import (
    ActionDenied,
    ApprovalNotFound,
    CheckFailed,
    ComponentUnavailable,
    DeadlineMissed,
    InvalidTransition,
    NotFinished,
    NotRegistered,
    StepFailedError,
    StepInterrupted,
    StepMismatch,
    StreamDamaged,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TaskNotFound,
    TaskQuarantinedError,
)
from onward.core.machines import diagram, validate
from onward.events import OnwardError, StorageUnavailable, UsageError
from onward.healing.breaker import BreakerPolicy
from onward.healing.fixes import (
    Fix,
    FixRegistry,
    FixStats,
    Remedy,
    StepCall,
    UnknownFix,
)
from onward.healing.remedies import default_registry
from onward.healing.retry import RetryBudget, RetryDecision, RetryPolicies, RetryPolicy, RetryRule
from onward.healing.signature import SIGNATURE_VERSION, ErrorSignature, fingerprint
from onward.judgement.approvals import Approval
from onward.judgement.budget import BudgetVerdict, ErrorBudget
from onward.judgement.confidence import Factors, Thresholds
from onward.judgement.degradation import Component, Components, Workaround
from onward.judgement.flow import FlowPolicy
from onward.judgement.rulebook import Rule, Rulebook, RulebookError, Verdict
from onward.runtime.engine import Engine
from onward.runtime.interruptions import Interruption
from onward.runtime.options import EngineOptions, OpenOptions
from onward.runtime.scheduler import RunSummary

__all__ = [
    "SIGNATURE_VERSION",
    "ActionDenied",
    "Approval",
    "ApprovalNotFound",
    "BreakerPolicy",
    "BudgetVerdict",
    "CheckFailed",
    "Component",
    "ComponentUnavailable",
    "Components",
    "DeadlineMissed",
    "Engine",
    "EngineOptions",
    "ErrorBudget",
    "ErrorSignature",
    "Factors",
    "Fix",
    "FixRegistry",
    "FixStats",
    "FlowPolicy",
    "Interruption",
    "InvalidTransition",
    "Judgement",
    "NotFinished",
    "NotRegistered",
    "OnwardError",
    "OpenOptions",
    "Remedy",
    "RetryBudget",
    "RetryDecision",
    "RetryPolicies",
    "RetryPolicy",
    "RetryRule",
    "Rule",
    "Rulebook",
    "RulebookError",
    "RunSummary",
    "StepCall",
    "StepFailedError",
    "StepInterrupted",
    "StepMismatch",
    "StorageUnavailable",
    "StreamDamaged",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFound",
    "TaskQuarantinedError",
    "Thresholds",
    "UnknownFix",
    "UsageError",
    "Verdict",
    "Workaround",
    "default_registry",
    "diagram",
    "fingerprint",
    "validate",
]
