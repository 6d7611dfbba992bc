"""Judged actions: the steps whose way of running follows the engine's confidence in them.

``@engine.action(impact=..., check=..., undo=...)`` registers a step with a
:class:`Judgement`. Before its first run in a task the :class:`Judge` scores it
(:mod:`onward.judgement.confidence`), records a :class:`onward.events.DecisionMade` of kind
``"confidence"`` (factors, score, thresholds, alternatives, the rule that matched), and carries out
the strategy:

- immediate: run it;
- monitored: run it, then its check; a failed check raises :class:`onward.core.errors.CheckFailed`
  into the step's usual failure handling (fix, retry, give up);
- reversible: as monitored, but run its ``undo`` first when the check fails
  (:class:`onward.events.ActionUndone`);
- ask: record :class:`onward.events.ApprovalRequested` and park the task (``TaskWaiting`` with no
  timer) in the same append. ``onward approve`` / :meth:`onward.Engine.approve` answers it from
  any process; the task then runs again, replays its completed steps and runs the action
  (checked, and undone on a failed check when it can be); a refusal fails the step with
  :class:`onward.core.errors.ActionDenied`.

The decision is taken once per step of a task: a re-run reads it back from the log. Each checked
run is an :class:`onward.events.ActionChecked`, the action's history for its next score; the
thresholds adapt to those outcomes (:meth:`onward.judgement.confidence.Thresholds.adapt`), each
adjustment a :class:`onward.events.ThresholdsAdjusted` in the same append.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import msgspec

from onward.core.batch import Batch
from onward.core.definitions import Judgement, StepDef
from onward.core.run import MustWait, RunningTask, bounded
from onward.events import (
    ActionChecked,
    ActionUndone,
    ApprovalRequested,
    DecisionMade,
    InterruptionDeferred,
    Strategy,
    TaskWaiting,
    ThresholdsAdjusted,
)
from onward.judgement.confidence import Factors, Thresholds, score
from onward.judgement.rulebook import Rulebook
from onward.projections import Projections

__all__ = ["Judge", "Ruling"]

#: The strategies passed over, for each strategy chosen (iterating an enum is slow).
_ALTERNATIVES: dict[Strategy, list[str]] = {
    chosen: [s.value for s in Strategy if s != chosen] for chosen in Strategy
}


class Ruling(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded confidence decision, as a task run reads it back.

    Attributes:
        decision_id: the :class:`onward.events.DecisionMade` id.
        strategy: the strategy chosen.
    """

    decision_id: str
    strategy: Strategy


class Judge:
    """Scores actions, records the decisions and their outcomes, and adapts the thresholds.

    Args:
        thresholds: the settings (the thresholds recorded in the log take precedence).
        rulebook: the rules of scenario "action" (their clarity, or a forced strategy).
        projections: returns the engine's projections (caught up first when called with True).
        defers: whether an approval request of this impact, urgent or not, is deferred now
            (the flow monitor); given the session.
        asked: told of each approval request not deferred (its decision id, its question
            and the session), once it is recorded.
    """

    def __init__(
        self,
        *,
        thresholds: Thresholds | None = None,
        rulebook: Rulebook | None = None,
        projections: Callable[[bool], Projections],
        defers: Callable[[str, str, bool], bool] | None = None,
        asked: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.settings = thresholds or Thresholds()
        self._asked = asked
        self.rulebook = rulebook
        self._projections = projections
        self._defers = defers

    def thresholds(self, projections: Projections) -> Thresholds:
        """The thresholds in force: the last recorded adjustment over the settings."""
        return self.settings.with_values(projections.decisions.thresholds)

    def decide(self, run: RunningTask, step: StepDef, index: int, judgement: Judgement) -> Ruling:
        """Score an action and record the decision (one atomic append; when a person is asked,
        the step protocol appends it with the task's wait).

        Raises:
            MustWait: the strategy is to ask; the task waits for the answer (the question and
                the wait, to record).
        """
        projections = self._projections(True)
        record = projections.decisions.action(step.name)
        clarity = 0.5
        rule = ""
        forced: Strategy | None = None
        if self.rulebook is not None:
            verdict = self.rulebook.decide(
                "action", {"action": step.name, "impact": judgement.impact}
            )
            if verdict is not None:
                clarity, rule, forced = verdict.clarity, verdict.rule, verdict.strategy
        factors = Factors.of(
            runs=record.runs,
            passed=record.passed,
            clarity=clarity,
            reversible=judgement.can_undo,
            impact=judgement.impact,
            granted=record.granted,
            denied=record.denied,
        )
        confidence = score(factors)
        thresholds = self.thresholds(projections)
        strategy = forced or thresholds.strategy(confidence)
        note = ""
        if strategy == Strategy.REVERSIBLE and not judgement.can_undo:
            strategy, note = Strategy.ASK, "reversible, but it declares no undo"
        inputs: dict[str, Any] = {
            "action": step.name,
            "step_index": index,
            "impact": judgement.impact,
            "runs": record.runs,
            "passed": record.passed,
            "granted": record.granted,
            "denied": record.denied,
            "has_check": judgement.check is not None,
            "has_undo": judgement.can_undo,
        }
        if forced is not None:
            inputs["forced_by_rule"] = rule
        if note:
            inputs["note"] = note
        batch = run.new_batch()
        decision_id = batch.add(
            DecisionMade(
                kind="confidence",
                subject=run.task_id,
                choice=f"{strategy.value} {step.name}",
                rule=rule,
                strategy=strategy,
                confidence=confidence,
                factors=factors.as_dict(),
                inputs=inputs,
                alternatives=_ALTERNATIVES[strategy],
                thresholds=thresholds.as_dict(),
            )
        )
        if strategy != Strategy.ASK:
            run.commit(batch)
            return Ruling(decision_id=decision_id, strategy=strategy)
        question = judgement.question or (
            f"run action {step.name!r} (impact {judgement.impact}, confidence {confidence:.2f})?"
        )
        requested = batch.add(
            ApprovalRequested(
                decision_id=decision_id,
                subject=run.task_id,
                question=question,
                options=["approve", "deny"],
                impact=judgement.impact,
            ),
            decision_id,
        )
        session = run.context.session
        deferred = self._defers is not None and self._defers(
            session, judgement.impact, judgement.urgent
        )
        if deferred:
            batch.add(
                InterruptionDeferred(
                    interruption_id=decision_id, kind="approval", summary=question
                ),
                requested,
            )
        batch.add(TaskWaiting(reason=f"approval of {step.name}"), requested)
        asked = self._asked
        if deferred or asked is None:
            raise MustWait(batch)
        raise MustWait(batch, then=lambda: asked(decision_id, question, session))

    def outcome(
        self,
        run: RunningTask,
        step: StepDef,
        index: int,
        ruling: Ruling,
        batch: Batch,
        *,
        passed: bool,
        message: str = "",
        cause: str | None = None,
        adapt: bool = True,
    ) -> None:
        """Add an action's checked outcome to a batch, and the thresholds' adjustment if any.

        Args:
            passed: it succeeded and its check held.
            message: why it did not pass.
            cause: the event that led to the outcome (the decision by default).
            adapt: let the outcome adjust the thresholds (a check's verdict does; an
                exception the action raised is left to the healer, and does not).
        """
        checked = batch.add(
            ActionChecked(
                action=step.name,
                step_index=index,
                passed=passed,
                strategy=ruling.strategy,
                decision_id=ruling.decision_id,
                message=message,
            ),
            cause or ruling.decision_id,
        )
        if not adapt:
            return
        projections = self._projections(False)
        decisions = projections.decisions
        alone = ruling.strategy != Strategy.ASK
        streak = decisions.streak + 1 if passed else 0
        current = self.thresholds(projections)
        adjusted = current.adapt(failed=not passed and alone, streak=streak)
        if adjusted is None:
            return
        reason = (
            f"the check of {step.name!r} failed under {ruling.strategy.value}: more caution"
            if not passed
            else f"{streak} checked actions passed in a row: less caution"
        )
        batch.add(
            ThresholdsAdjusted(
                thresholds=adjusted.as_dict(), previous=current.as_dict(), reason=reason
            ),
            checked,
        )

    def denied(self, run: RunningTask, step: StepDef, ruling: Ruling, batch: Batch) -> None:
        """A refused approval makes the engine more cautious: raise the thresholds."""
        projections = self._projections(False)
        current = self.thresholds(projections)
        adjusted = current.adapt(failed=True, streak=0)
        if adjusted is not None:
            batch.add(
                ThresholdsAdjusted(
                    thresholds=adjusted.as_dict(),
                    previous=current.as_dict(),
                    reason=f"a human denied {step.name!r}: more caution",
                ),
                ruling.decision_id,
            )

    @staticmethod
    def verdict(judgement: Judgement, result: Any) -> tuple[bool, str]:
        """Run an action's check on its result.

        Returns:
            Whether it held, and why not. A check that raises, or hands back an awaitable
            (a plain function returning a coroutine, which the engine does not await), did not
            hold.
        """
        assert judgement.check is not None
        try:
            said = judgement.check(result)
            if _unawaited(said):
                return False, _UNAWAITED.format(what="check")
            if bool(said):
                return True, ""
        except Exception as exc:
            return False, f"the check raised {type(exc).__name__}: {exc}"
        return False, "the check returned False"

    @staticmethod
    def undo(judgement: Judgement, result: Any, step: StepDef, index: int) -> ActionUndone:
        """Run an action's compensation; never raises (its failure is recorded)."""
        if judgement.undo is None:
            return ActionUndone(
                action=step.name, step_index=index, ok=True, message="nothing to undo"
            )
        try:
            said = judgement.undo(result)
        except Exception as exc:
            return ActionUndone(
                action=step.name,
                step_index=index,
                ok=False,
                message=bounded(f"{type(exc).__name__}: {exc}", limit=2000),
            )
        if _unawaited(said):
            return ActionUndone(
                action=step.name, step_index=index, ok=False, message=_UNAWAITED.format(what="undo")
            )
        return ActionUndone(
            action=step.name,
            step_index=index,
            ok=True,
            message="" if said is None else bounded(str(said), limit=2000),
        )


#: Why a check or undo that handed back an awaitable did nothing.
_UNAWAITED = (
    "the {what} returned an awaitable, which the engine does not await (it calls a check or "
    "an undo as a plain function): give a plain def"
)


def _unawaited(said: object) -> bool:
    """Whether a check or undo handed back an awaitable; a coroutine is closed unrun (no
    "never awaited" warning on top of the recorded failure)."""
    if not inspect.isawaitable(said):
        return False
    if inspect.iscoroutine(said):
        said.close()
    return True
