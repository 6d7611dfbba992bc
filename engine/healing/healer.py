"""Self-healing: what the engine decides when a step raises, and when a breaker is open.

For each failure of a step the :class:`Healer` fingerprints the error, then decides, in order:

1. **fix** — the first candidate of the fix registry for this error (fixes learned for its
   signature first, then the fixes the matching rule of the rulebook prefers, then matching
   ones by success rate; fixes already tried on this step are skipped); the step runs again at
   once with the remedied arguments;
2. **retry** — when the retry policy for the error allows another attempt (adaptive limit,
   retry budget), the task waits durably until the recorded due time, then runs the step again;
3. **give up** — the failure is the step's outcome and the exception reaches the task.

The rulebook (:mod:`onward.judgement.rulebook`, scenario ``"error"``) is asked first: the rule that
matches names the fixes to prefer and may rule out a retry (retrying a missing import does not
help) or any remedy (``give_up``). Each choice is a :class:`onward.events.DecisionMade` with the
rule's id, its inputs (signature, attempts, policy, success rates) and the alternatives, caused by
the :class:`onward.events.ErrorObserved` it answers;
the consequences (``FixAttempted``, ``RetryScheduled`` + ``TaskWaiting``, breaker transitions)
are appended in the same atomic commit. A rule function that raises does not erase the error it
was asked about: the step's failure is recorded as its outcome (given up, the breaker told), then
the rule's exception propagates to the task.

Circuit breakers (:mod:`onward.healing.breaker`) guard the steps declared with
``@engine.step(breaker="name")``; the healer asks them before a call and tells them each
outcome.
"""

from __future__ import annotations

import inspect
import random
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from onward.core.batch import Batch
from onward.core.definitions import StepDef
from onward.core.failure_attributes import plain_attributes
from onward.core.failures import (
    exception_class,
    literal_argument,
    replayed_error,
    spread_arguments,
)
from onward.core.fields import MOST_SECONDS, seconds, shown
from onward.core.run import MustWait, RunningTask, error_message
from onward.events import (
    DecisionMade,
    ErrorClassified,
    ErrorKind,
    ErrorObserved,
    FixAttempted,
    FixFailed,
    FixSucceeded,
    RetryScheduled,
    StepFailed,
    TaskWaiting,
    redacted_logger,
)
from onward.healing.breaker import BreakerPolicy, Breakers
from onward.healing.fixes import Fix, FixRegistry, FixStats, Remedy, StepCall
from onward.healing.remedies import default_registry
from onward.healing.retry import RetryBudget, RetryDecision, RetryPolicies, decide_retry
from onward.healing.signature import ErrorSignature, fingerprint
from onward.judgement.rulebook import Rulebook, Verdict
from onward.projections import Projections

__all__ = [
    "FixChain",
    "Healer",
    "Outcome",
    "bind_call",
    "call_with",
]

logger = redacted_logger("onward.engine.fixes")


#: The fixes one run applied to a step, in order: each with the failure it answered and when it
#: was recorded.
FixChain = list[tuple[StepFailed, FixAttempted, float]]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the healer decided about one failure.

    Attributes:
        action: "fix" (run again now with ``call``), "wait" (the task waits until ``until``:
            a retry, a fix that waits, an open breaker) or "fail" (the failure is final).
        call: the remedied call, for "fix".
        fix: the fix applied, for "fix".
        until: when the task may run again, for "wait" (or the step, after a fix's delay).
        signature: the error's signature.
        index: the step's index.
    """

    action: str
    call: StepCall | None = None
    fix: str = ""
    until: float = 0.0
    signature: str = ""
    index: int = 0


class _Failure(msgspec.Struct, frozen=True, kw_only=True):
    """One failed call, as :meth:`Healer.on_failure` assesses it before it decides."""

    run: RunningTask
    step: StepDef
    index: int
    attempt: int
    exc: Exception
    signature: ErrorSignature
    occurrences: int  # of this signature before this one
    verdict: Verdict | None
    retry: RetryDecision
    transient: bool  # retryable under its policy, whatever the rule says
    tried: set[str]  # the fixes tried on this step (updated as one is applied)
    now: float
    projections: Projections
    rule_error: Exception | None = None  # what the rulebook raised (it propagates, once recorded)

    @property
    def sig(self) -> str:
        """The signature's id."""
        return self.signature.id

    @property
    def rule(self) -> str:
        """The id of the rule that matched ("" for none)."""
        return self.verdict.rule if self.verdict is not None else ""


#: How many times one fix may be applied to one step within one attempt (while it makes
#: progress: each application must change the call).
MAX_APPLICATIONS = 8


def _mro(exc: BaseException) -> list[str]:
    """The names of an exception's base classes, nearest first (qualified outside builtins)."""
    return [
        c.__name__ if c.__module__ == "builtins" else f"{c.__module__}.{c.__qualname__}"
        for c in type(exc).__mro__[1:]
        if c is not object
    ]


class Healer:
    """Decides fixes, retries and breaker transitions, and records them as events.

    Args:
        fixes: the fix registry (the built-in fixes by default).
        retries: the retry policies.
        budget: the session's retry budget.
        breakers: the breaker policy.
        seed: the seed of the jitter's random source (recorded delays are never recomputed).
        projections: returns the engine's projections (caught up with the log first when
            called with True).
        clock: the engine's clock.
        rulebook: the rules asked about each error (none when None).
    """

    def __init__(
        self,
        *,
        fixes: FixRegistry | None = None,
        retries: RetryPolicies | None = None,
        budget: RetryBudget | None = None,
        breakers: BreakerPolicy | None = None,
        seed: int | None = None,
        projections: Callable[[bool], Projections],
        clock: Callable[[], float],
        rulebook: Rulebook | None = None,
    ) -> None:
        self.rulebook = rulebook
        self.fixes = fixes if fixes is not None else default_registry()
        self.retries = retries or RetryPolicies()
        self.budget = budget or RetryBudget()
        self.breaker = Breakers(breakers or BreakerPolicy(), projections, clock)
        self.rng = random.Random(seed)
        self._projections = projections
        self.clock = clock
        # Failures are decided one at a time in a process, each on the log as the ones before
        # left it: calls failing at once would otherwise each spend the retry budget, and count
        # a breaker's failures, without the others.
        self._deciding = threading.Lock()

    def before_call(self, run: RunningTask, step: StepDef, index: int) -> Batch | None:
        """Check the step's breaker: None to call it, or the wait to record (see
        :meth:`onward.healing.breaker.Breakers.before_call`)."""
        return self.breaker.before_call(run, step, index)

    def resume_fix(
        self,
        run: RunningTask,
        step: StepDef,
        index: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        chain: FixChain,
    ) -> StepCall | None:
        """The call of a fix in flight that changed the step's call, when that call was not made
        by the run that decided it: the process died during the fix's delay, or a gathered
        sibling made the task wait before the changed call started.

        The fix is asked again, for the recorded error (rebuilt from its type and message) and
        the step's own call; its answer counts only when it describes the change recorded in
        ``FixAttempted``. What is left of its delay is waited durably first.

        Args:
            run: the task's run.
            step: the step.
            index: its index.
            args: its positional arguments.
            kwargs: its keyword arguments.
            chain: the fixes the run that applied the fix in flight had applied to the step.

        Returns:
            The fix's call, or None (not such a fix, or it does not answer as it did): the
            step's own call is made, and settles the fix, as after any other fix in flight.

        Raises:
            MustWait: some of the delay is left: the task waits durably until it ends.
        """
        if len(chain) != 1:  # its call was the remedy of an earlier fix's: not rebuilt
            return None
        failed, attempted, recorded = chain[0]
        if attempted.fix not in self.fixes:
            return None
        fix = self.fixes.get(attempted.fix)
        error = replayed_error(
            failed.error_type,
            failed.error_class,
            failed.message,
            literal=failed.literal,
            spread=failed.spread,
            attributes=failed.attributes,
        )
        call = bind_call(step, args, kwargs, failed.attempt)
        try:
            remedy = fix.apply(error, call) if fix.matches(error, call) else None
        except Exception:  # a fix that breaks is a fix that does not apply
            return None
        if remedy is None or remedy.call == call:
            return None  # nothing was lost: the step's own call settles the fix
        if msgspec.to_builtins(remedy.change) != msgspec.to_builtins(attempted.change):
            return None  # it answers otherwise now: its recorded call cannot be told
        until = recorded + remedy.delay
        if self.clock() < until:
            raise MustWait([TaskWaiting(reason=f"fix {fix.name} of step {index}", until=until)])
        return remedy.call

    # -- after a success -------------------------------------------------------------------

    def on_success(
        self,
        run: RunningTask,
        step: StepDef,
        batch: Batch,
        completed_id: str,
        outcome: Outcome | None,
    ) -> None:
        """Add to a step's success what it settles: the fix that worked, a closed breaker."""
        if outcome is not None and outcome.fix:
            batch.add(
                FixSucceeded(
                    fix=outcome.fix, signature=outcome.signature, step_index=outcome.index
                ),
                completed_id,
            )
        self.breaker.on_success(run, step, batch, completed_id)

    # -- after a failure -------------------------------------------------------------------

    def on_failure(
        self,
        run: RunningTask,
        step: StepDef,
        index: int,
        attempt: int,
        call: StepCall,
        exc: Exception,
        fix_in_flight: str,
        fix_signature: str = "",
    ) -> Outcome:
        """Decide what to do about a failed call, and record it (one atomic append): the
        failure and the error observed, the fix in flight that failed, the breaker's move, and
        the decision with its consequences.

        The failures of one process are decided one after the other, each on the log caught
        up with those before it (the retry budget and the breakers count them all; across
        worker processes a breaker past its thresholds opens at its next call, see
        :meth:`onward.healing.breaker.Breakers.before_call`)."""
        with self._deciding:
            return self._decide(run, step, index, attempt, call, exc, fix_in_flight, fix_signature)

    def _decide(
        self,
        run: RunningTask,
        step: StepDef,
        index: int,
        attempt: int,
        call: StepCall,
        exc: Exception,
        fix_in_flight: str,
        fix_signature: str,
    ) -> Outcome:
        """:meth:`on_failure`, under its lock."""
        failure = self._assess(run, step, index, attempt, exc, fix_in_flight)
        if failure.rule_error is None:
            remedy, fix, candidates, again = self._choose_fix(failure, call, fix_in_flight)
        else:
            remedy, fix, candidates, again = None, None, [], None
        batch = Batch(run.context.causation_id)
        failed_id, observed_id = self._record_failure(
            batch, failure, final=remedy is None and not failure.retry.retry
        )
        if fix_in_flight and again is None:
            batch.add(
                FixFailed(
                    fix=fix_in_flight,
                    signature=fix_signature or failure.sig,  # the error the fix answered
                    step_index=index,
                    message=error_message(exc, run.redact),
                ),
                failed_id,
            )
        self.breaker.on_failure(run, step, failure.projections, batch, failed_id)
        if failure.rule_error is not None:
            # The step's failure is recorded as its outcome first, then the rule's error goes
            # on to the task (a broken rule must not erase the error it was asked about).
            self._give_up(failure, batch, observed_id)
            raise failure.rule_error
        if remedy is not None and fix is not None:
            # Applied again, the fix still answers the error it was first applied to, whatever
            # the step raised since: one outcome settles the run of applications, for that one.
            answers = (fix_signature or failure.sig) if again is not None else failure.sig
            return self._apply_fix(
                failure,
                batch,
                observed_id,
                remedy,
                fix,
                candidates,
                call,
                answers,
                again=again is not None,
            )
        if failure.retry.retry:
            return self._schedule_retry(failure, batch, observed_id)
        return self._give_up(failure, batch, observed_id)

    def _assess(
        self,
        run: RunningTask,
        step: StepDef,
        index: int,
        attempt: int,
        exc: Exception,
        fix_in_flight: str,
    ) -> _Failure:
        """What the failure is and what the rules and the retry policy say of it."""
        projections = self._projections(True)
        # Its texts are stored (ErrorObserved) and shown: redacted before they are normalised.
        signature = fingerprint(exc, redact=run.redact)
        now = self.clock()
        tried = run.fixes_tried.setdefault(index, set())
        if fix_in_flight:
            tried.add(fix_in_flight)
        rule_error: Exception | None = None
        try:
            verdict = self._rule(exc, signature, step, attempt)
        except Exception as raised:
            verdict, rule_error = None, raised
        retry = self._retry(run, signature, exc, attempt, index, now, projections)
        transient = retry.retry
        if (
            verdict is not None
            and not retry.retry
            and retry.reason == "not retryable"
            and (verdict.retry is True or (verdict.retry is None and verdict.choice == "retry"))
        ):  # the rule retries what the policy does not
            retry = self._retry(
                run, signature, exc, attempt, index, now, projections, forced=verdict.rule
            )
        if rule_error is not None:
            reason = f"the rulebook raised {type(rule_error).__name__}"
            if message := error_message(rule_error, run.redact):
                reason += f": {message}"
            retry = msgspec.structs.replace(retry, retry=False, delay=0.0, due=now, reason=reason)
        elif retry.retry and not run.awaited(index):
            retry = msgspec.structs.replace(
                retry,
                retry=False,
                delay=0.0,
                due=now,
                reason="nothing awaits it any more (its task ended, or gave the call up)",
            )
        elif (
            verdict is not None
            and retry.retry
            and (verdict.retry is False or verdict.choice == "give_up")
        ):
            retry = msgspec.structs.replace(
                retry, retry=False, delay=0.0, due=now, reason=f"rule {verdict.rule}"
            )
        return _Failure(
            run=run,
            step=step,
            index=index,
            attempt=attempt,
            exc=exc,
            signature=signature,
            occurrences=projections.errors.get(signature.id).occurrences,
            verdict=verdict,
            retry=retry,
            transient=transient,
            tried=tried,
            now=now,
            projections=projections,
            rule_error=rule_error,
        )

    def _choose_fix(
        self, failure: _Failure, call: StepCall, fix_in_flight: str
    ) -> tuple[Remedy | None, Fix | None, list[Fix], Remedy | None]:
        """The fix to apply (the one in flight again, while it makes progress, or the best
        candidate), its remedy, the candidates, and the remedy when it is the fix in flight."""
        verdict = failure.verdict
        if verdict is not None and verdict.choice == "give_up":
            # The rule says no remedy helps: fail the step (and the fix in flight with it).
            return None, None, [], None
        again = self._again(failure.exc, call, fix_in_flight, failure.run, failure.index)
        if again is not None:
            return again, self.fixes.get(fix_in_flight), [], again
        preferred = verdict.fixes if verdict is not None else ()
        remedy, fix, candidates = self._remedy(
            failure.exc, call, failure.sig, failure.tried, failure.projections, preferred
        )
        return remedy, fix, candidates, None

    @staticmethod
    def _record_failure(batch: Batch, failure: _Failure, *, final: bool) -> tuple[str, str]:
        """The step's failure, the error observed and, the first time, its classification."""
        signature, sig = failure.signature, failure.sig
        message = error_message(failure.exc, failure.run.redact)
        failed_id = batch.add(
            StepFailed(
                index=failure.index,
                name=failure.step.name,
                attempt=failure.attempt,
                error_type=signature.error_type,
                message=message,
                signature=sig,
                transient=failure.transient,
                final=final,
                dependency=failure.step.breaker,
                error_class=exception_class(failure.exc),
                literal=literal_argument(failure.exc, message),
                spread=spread_arguments(failure.exc, message),
                attributes=plain_attributes(failure.exc, failure.run.redact),
            ),
        )
        observed_id = batch.add(
            ErrorObserved(
                signature=sig,
                error_type=signature.error_type,
                message=signature.message,
                frames=list(signature.frames),
                step_index=failure.index,
                causes=list(signature.causes),
            ),
            failed_id,
        )
        if not failure.occurrences:
            kind = ErrorKind.TRANSIENT if failure.transient else ErrorKind.UNKNOWN
            batch.add(
                ErrorClassified(
                    signature=sig,
                    kind=kind,
                    reason="retryable under its policy" if failure.transient else "first seen",
                ),
                observed_id,
            )
        return failed_id, observed_id

    @staticmethod
    def _inputs(failure: _Failure) -> dict[str, Any]:
        """What a decision about this failure was taken on, for the audit."""
        errors = failure.projections.errors
        sig = failure.sig
        inputs: dict[str, Any] = {
            "signature": sig,
            "error_type": failure.signature.error_type,
            "step": failure.step.name,
            "step_index": failure.index,
            "attempt": failure.attempt,
            "fixes_tried": sorted(failure.tried),
            "fix_success_rates": {
                name: round(s.rate, 3) for name, s in errors.fix_stats(sig).items()
            },
            "learned": list(errors.learned(sig)),
            "retry": failure.retry.inputs,
            "retry_policy": failure.retry.policy,
            "occurrences": failure.occurrences,
        }
        if failure.verdict is not None:
            inputs["rule_choice"] = failure.verdict.choice
            inputs["rule_fixes"] = list(failure.verdict.fixes)
        return inputs

    def _apply_fix(
        self,
        failure: _Failure,
        batch: Batch,
        observed_id: str,
        remedy: Remedy,
        fix: Fix,
        candidates: list[Fix],
        call: StepCall,
        sig: str,
        *,
        again: bool,
    ) -> Outcome:
        """Decide on a fix: the step runs again now with the remedied call, or, for the same
        call after a wait (a lock, a dropped connection), when the task runs again. ``sig`` is
        the signature of the error the fix answers (the first one, when it is applied again)."""
        run, index, now = failure.run, failure.index, failure.now
        decision_id = batch.add(
            DecisionMade(
                kind="fix",
                subject=run.task_id,
                choice=fix.name,
                rule=failure.rule,
                inputs=self._inputs(failure),
                alternatives=[c.name for c in candidates if c is not fix]
                + (["retry"] if failure.retry.retry else [])
                + ["give up"],
            ),
            observed_id,
        )
        attempted_id = batch.add(
            FixAttempted(
                fix=fix.name, signature=sig, step_index=index, change=remedy.change, again=again
            ),
            decision_id,
        )
        run.fix_applications[index] = run.fix_applications.get(index, 0) + 1 if again else 1
        failure.tried.add(fix.name)
        if remedy.delay > 0 and remedy.call == call:
            # The same call after a wait: wait durably, as for a retry; the step runs again
            # when the task does, and settles the fix.
            until = now + remedy.delay
            batch.add(
                TaskWaiting(reason=f"fix {fix.name} of step {index}", until=until), attempted_id
            )
            run.commit(batch)
            return Outcome(action="wait", fix=fix.name, until=until, signature=sig, index=index)
        run.commit(batch)
        return Outcome(
            action="fix",
            call=remedy.call,
            fix=fix.name,
            until=now + remedy.delay,
            signature=sig,
            index=index,
        )

    def _schedule_retry(self, failure: _Failure, batch: Batch, observed_id: str) -> Outcome:
        """Decide on a retry: the task waits durably until its recorded due time."""
        run, index, retry = failure.run, failure.index, failure.retry
        decision_id = batch.add(
            DecisionMade(
                kind="retry",
                subject=run.task_id,
                rule=failure.rule,
                choice=f"retry in {retry.delay:.3f} s",
                inputs=self._inputs(failure),
                alternatives=["give up"],
                thresholds={"max_attempts": float(retry.max_attempts)},
            ),
            observed_id,
        )
        batch.add(
            RetryScheduled(
                step_index=index,
                attempt=retry.attempt,
                delay=retry.delay,
                due=retry.due,
                policy=retry.policy,
                jitter=retry.jitter,
                error_type=failure.signature.error_type,
                signature=failure.sig,
            ),
            decision_id,
        )
        batch.add(TaskWaiting(reason=f"retry of step {index}", until=retry.due), decision_id)
        run.commit(batch)
        run.last_delay[index] = retry.delay
        return Outcome(action="wait", until=retry.due, signature=failure.sig, index=index)

    def _give_up(self, failure: _Failure, batch: Batch, observed_id: str) -> Outcome:
        """Decide to give up: the failure is the step's outcome."""
        batch.add(
            DecisionMade(
                kind="give_up",
                subject=failure.run.task_id,
                rule=failure.rule,
                choice="fail the step",
                inputs={**self._inputs(failure), "reason": failure.retry.reason},
                alternatives=[],
            ),
            observed_id,
        )
        failure.run.commit(batch)
        return Outcome(action="fail", signature=failure.sig, index=failure.index)

    def _rule(
        self, exc: Exception, signature: ErrorSignature, step: StepDef, attempt: int
    ) -> Verdict | None:
        """The rulebook's verdict on this error (None without a rulebook or a matching rule)."""
        if self.rulebook is None:
            return None
        facts = {
            "error_type": signature.error_type,
            "exception_types": " ".join(
                [type(exc).__name__, *(n.rsplit(".", 1)[-1] for n in _mro(exc))]
            ),
            "message": signature.message,
            "signature": signature.id,
            "step": step.name,
            "attempt": attempt,
        }
        return self.rulebook.decide("error", facts)

    def _retry(
        self,
        run: RunningTask,
        signature: ErrorSignature,
        exc: Exception,
        attempt: int,
        index: int,
        now: float,
        projections: Projections,
        forced: str = "",
    ) -> RetryDecision:
        seen = projections.errors.get(signature.id)
        session = run.context.session
        return decide_retry(
            self.retries,
            error_type=signature.error_type,
            mro=_mro(exc),
            signature=signature.id,
            attempt=attempt,
            now=now,
            rng=self.rng,
            previous_delay=run.last_delay.get(index),
            # Only the retries whose outcome is known judge whether retrying works: a burst of
            # one error across many tasks leaves many retries pending, none failed yet.
            retries=seen.retries - projections.errors.unresolved_retries(signature.id),
            successes=seen.retry_successes,
            occurrences=seen.occurrences,
            budget=self.budget,
            recent=projections.errors.recent_retries(session, now - self.budget.window),
            forced=forced,
        )

    def _again(
        self, exc: Exception, call: StepCall, fix_in_flight: str, run: RunningTask, index: int
    ) -> Remedy | None:
        """The fix in flight once more, when it still changes the call (a batch halved again),
        at most :data:`MAX_APPLICATIONS` times per step."""
        if not fix_in_flight or fix_in_flight not in self.fixes:
            return None
        if run.fix_applications.get(index, 0) >= MAX_APPLICATIONS:
            return None
        fix = self.fixes.get(fix_in_flight)
        try:
            matches = fix.matches(exc, call)
        except Exception:  # a fix that breaks is a fix that does not apply
            return None
        remedy = _applied(fix, exc, call) if matches else None
        if remedy is None or remedy.delay > 0 or remedy.call == call:
            return None
        return remedy

    def _remedy(
        self,
        exc: Exception,
        call: StepCall,
        signature: str,
        tried: set[str],
        projections: Projections,
        preferred: tuple[str, ...] = (),
    ) -> tuple[Remedy | None, Fix | None, list[Fix]]:
        errors = projections.errors
        stats = {
            name: FixStats(attempts=r.attempts, successes=r.successes)
            for name, r in errors.fix_stats(signature).items()
        }
        learned = errors.learned(signature)
        candidates = [
            fix
            for fix in self.fixes.candidates(
                exc, call, signature=signature, stats=stats, learned=learned
            )
            if fix.name not in tried
        ]
        if preferred:
            # Learned fixes stay first; then the rule's preferred ones, in its order.
            rank = {name: i for i, name in enumerate(preferred)}
            candidates.sort(
                key=lambda f: (
                    0 if f.name in learned else 1 if f.name in rank else 2,
                    rank.get(f.name, 0),
                )
            )
        for fix in candidates:
            remedy = _applied(fix, exc, call)
            if remedy is not None:
                return remedy, fix, candidates
        return None, None, candidates


def _applied(fix: Fix, exc: Exception, call: StepCall) -> Remedy | None:
    """The remedy a fix gives for this failure; None when it does not apply, or gives what
    the engine cannot use (it raised, returned something other than a :class:`Remedy`, a call
    of another step or with arguments that are not a dict, or not the step's (a name it does
    not take, one left out), a delay that is not a number of seconds in [0, ten years], or a
    change that is not a dict that can be recorded):
    such a fix is skipped, said in the log, and the step's failure is recorded as it is."""
    try:
        remedy = fix.apply(exc, call)
    except Exception:
        logger.warning("fix %s: apply() raised; skipped", fix.name, exc_info=True)
        return None
    if remedy is None:
        return None
    why = ""
    if not isinstance(remedy, Remedy):
        why = f"returned a {type(remedy).__name__}, not a Remedy"
    elif not isinstance(remedy.call, StepCall):
        why = f"gave a call of type {type(remedy.call).__name__}, not a StepCall"
    elif remedy.call.step != call.step or not isinstance(remedy.call.arguments, dict):
        why = "gave a call of another step, or arguments that are not a dict"
    elif remedy.call.arguments.keys() != call.arguments.keys():
        unknown = sorted(map(str, remedy.call.arguments.keys() - call.arguments.keys()))
        missing = sorted(call.arguments.keys() - remedy.call.arguments.keys())
        why = (
            f"gave a call with arguments the step does not take ({', '.join(unknown) or '-'}) "
            f"or without some it does ({', '.join(missing) or '-'}): use call.with_arguments()"
        )
    elif not (isinstance(remedy.change, dict) and all(isinstance(k, str) for k in remedy.change)):
        why = f"gave a change of type {type(remedy.change).__name__}, not a dict with str keys"
    elif not seconds(remedy.delay):
        why = f"gave a delay of {shown(remedy.delay)}, not seconds in [0, {MOST_SECONDS}]"
    else:
        try:
            msgspec.json.encode(remedy.change)
        except (TypeError, ValueError, OverflowError) as exc_change:
            why = f"gave a change that cannot be recorded ({type(exc_change).__name__})"
    if why:
        logger.warning("fix %s: apply() %s; skipped", fix.name, why)
        return None
    return remedy


def bind_call(
    step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any], attempt: int
) -> StepCall:
    """The call as fixes see it: the step's arguments by name, defaults applied."""
    try:
        bound = inspect.signature(step.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
    except TypeError:
        arguments = {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    return StepCall(step=step.name, arguments=arguments, hints=dict(step.hints), attempt=attempt)


def call_with(step: StepDef, call: StepCall) -> Any:
    """Call the step's function with a (remedied) call's arguments."""
    signature = inspect.signature(step.fn)
    bound = inspect.BoundArguments(signature, call.arguments)  # type: ignore[arg-type,unused-ignore]
    return step.fn(*bound.args, **bound.kwargs)
