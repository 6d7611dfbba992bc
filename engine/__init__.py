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

It judges what it does alone: a :class:`Rulebook` of decision rules (TOML or Python), actions
run by confidence (``@engine.action(impact=..., check=..., undo=...)``, :class:`Thresholds`),
approvals a human answers from any process (:meth:`Engine.approve`), graceful degradation
(:class:`Components`, :class:`Workaround`, :meth:`Engine.degrade`), an :class:`ErrorBudget` and a
flow monitor (:class:`FlowPolicy`) applied at each task boundary. Every decision is recorded
with its inputs and causes: ``onward why ID`` explains it.
"""

from engine.actions import Judgement
from engine.approvals import Approval
from engine.boundary import Interruption
from engine.breaker import BreakerPolicy
from engine.budget import BudgetVerdict, ErrorBudget
from engine.confidence import Factors, Thresholds
from engine.degradation import Component, Components, Workaround
from engine.engine import Engine
from engine.errors import (
    ActionDenied,
    ApprovalNotFound,
    CheckFailed,
    ComponentUnavailable,
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
from engine.flow import FlowPolicy
from engine.machines import diagram, validate
from engine.retry import RetryBudget, RetryDecision, RetryPolicies, RetryPolicy, RetryRule
from engine.rulebook import Rule, Rulebook, RulebookError, Verdict
from engine.run import StepFailedError
from engine.scheduler import RunSummary
from engine.signature import SIGNATURE_VERSION, ErrorSignature, fingerprint

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
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFound",
    "Thresholds",
    "UnknownFix",
    "Verdict",
    "Workaround",
    "default_registry",
    "diagram",
    "fingerprint",
    "validate",
]
