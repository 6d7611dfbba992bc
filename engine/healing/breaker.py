"""Circuit breakers: one per dependency, each an explicit state machine on its own stream.

A step declared ``@engine.step(breaker="search-api")`` is guarded by the breaker of that
dependency: closed; open after ``failures`` consecutive failures or a failure rate; half-open
once the cool-down has passed, when one trial call decides whether it closes or opens again.
While it is open the step is not called: its task waits durably for the half-open moment
instead of burning retries. Every transition is a :class:`onward.events.DecisionMade` on the task's
stream, appended atomically with the transition on the breaker's stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from onward.core.batch import Batch
from onward.core.definitions import StepDef
from onward.core.fields import MOST_SECONDS, finite, seconds, shown, whole
from onward.core.run import RunningTask
from onward.events import (
    Append,
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    DecisionMade,
    TaskWaiting,
    UsageError,
)
from onward.projections import Projections
from onward.projections.breakers import RECENT_LIMIT, BreakerView, breaker_stream

__all__ = ["BreakerPolicy", "Breakers"]

# The longest window a breaker can measure its failure rate over: the last outcomes its
# projection keeps, and the call that just failed.
_LONGEST_WINDOW = RECENT_LIMIT + 1
# The most consecutive failures a policy may wait for (a count the log records as a float).
_MOST_FAILURES = 1_000_000

#: The states in which a breaker lets every call through: closed, and damaged (a breaker whose
#: stream's history cannot be trusted guards nothing). Half-open lets its trial call through.
_LETS_CALLS_THROUGH = frozenset({"closed", "damaged"})
#: How a waiting task's reason names its breaker's state.
_SHOWN = {"open": "open", "half_open": "half-open, its trial call under way"}


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """When a circuit breaker opens and how long it stays open.

    Attributes:
        failures: consecutive failures that open it, at least 1 (at most 1,000,000).
        failure_rate: or a failure rate over the last ``window`` calls (with at least
            ``min_calls`` of them) that opens it, in (0, 1].
        window: the calls the failure rate is measured over, at most 21 (a breaker keeps its
            last 20 outcomes, and counts the call that just failed).
        min_calls: the calls needed before the rate counts, at most ``window``.
        cooldown: seconds it stays open before a trial call is let through (half-open).

    Raises:
        UsageError: ``failures``, ``window`` or ``min_calls`` not an int in its range (a bool
            is none), ``failure_rate`` not a number in (0, 1], or ``cooldown`` not a finite
            number of seconds >= 0. The message names the field and the value.
    """

    failures: int = 5
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        counts = (
            ("failures", self.failures, _MOST_FAILURES, ""),
            (
                "window",
                self.window,
                _LONGEST_WINDOW,
                f" (a breaker keeps its last {RECENT_LIMIT} outcomes and counts the call that "
                "just failed: a longer window could not be measured)",
            ),
            ("min_calls", self.min_calls, self.window, " (at most window: no more calls count)"),
        )
        for field, value, most, why in counts:
            if not (whole(value) and 1 <= value <= most):
                raise UsageError(
                    f"breaker policy: {field} must be an int in [1, {most}], not "
                    f"{shown(value)}{why if whole(value) and value > most else ''}"
                )
        if not (finite(self.failure_rate) and 0 < self.failure_rate <= 1):
            raise UsageError(
                f"breaker policy: failure_rate must be a number in (0, 1], not "
                f"{shown(self.failure_rate)}"
            )
        if not seconds(self.cooldown):
            raise UsageError(
                f"breaker policy: cooldown must be a number of seconds in [0, {MOST_SECONDS}], "
                f"not {shown(self.cooldown)}"
            )


class Breakers:
    """Decides the breakers' transitions and records them.

    Args:
        policy: when a breaker opens and for how long.
        projections: returns the engine's projections (caught up first when called with True).
        clock: the engine's clock.
    """

    def __init__(
        self,
        policy: BreakerPolicy,
        projections: Callable[[bool], Projections],
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self._projections = projections
        self.clock = clock

    def before_call(
        self, run: RunningTask, step: StepDef, index: int, *, opened: bool = False
    ) -> Batch | None:
        """Check the step's breaker: None to call it, or the wait to record (the decision and
        the task's ``TaskWaiting``; the caller records it once the task's other steps under
        way have recorded their outcomes).

        An open breaker whose cool-down has passed turns half-open here, and this call is its
        trial; so it does again when another task's trial had no outcome within a cool-down. A
        closed breaker whose folded failures reach its thresholds (calls that failed at once
        each decided on a count without the others) opens here, and the call waits (``opened``:
        it was just opened here, not again).
        """
        dependency = step.breaker
        if not dependency:
            return None
        view = self._projections(False).breakers.get(dependency)
        # Another worker thread may fold a transition while this one reads the view: read the
        # version first, so that a transition appended at it is refused if the state moved.
        version = view.version
        now = self.clock()
        if view.state == "half_open":
            until = self._trial_under_way(run, view, now)
            if until is not None:
                return self._wait(run, step, index, view, until)
            if self._trial_decided(run, view):
                return None
            # Another task's trial had no outcome within a cool-down (its worker is gone, or
            # its call is slow): this call takes it over, and the others go on waiting for one
            # outcome rather than all calling the dependency at once.
        elif view.state == "closed" and not opened and self._past_threshold(view):
            # Calls that failed at once (other tasks, other workers) each decided on a count
            # without the others: the failures folded since show the breaker should be open.
            # It opens now, before this call, and the call waits for the cool-down.
            self._open_late(run, view, version)
            return self.before_call(run, step, index, opened=True)
        elif view.state in _LETS_CALLS_THROUGH:
            return None
        elif now < view.cooldown_until:
            return self._wait(run, step, index, view, view.cooldown_until)
        inputs: dict[str, Any] = {"dependency": dependency, "cooldown_until": view.cooldown_until}
        if view.state == "half_open":
            inputs["lost_trial"] = view.trial_task
            inputs["half_opened_at"] = view.half_opened_at
        decision = DecisionMade(
            kind="breaker",
            subject=run.task_id,
            choice="half-open",
            inputs=inputs,
            alternatives=["stay open"],
        )
        batch = run.new_batch()
        decision_id = batch.add(decision)
        batch.also.append(
            Append(
                stream=breaker_stream(dependency),
                events=[
                    BreakerHalfOpened(dependency=dependency, trial_calls=1, trial_task=run.task_id)
                ],
                expected_version=version,
                context=run.context,
                causes=[decision_id],
            )
        )
        run.commit(batch)
        # Fold the transition: this call is the trial, unless another task's call moved the
        # breaker first (the commit then went without the transition): it is checked again,
        # as the breaker is now (that trial under way, failed and open again, or closed).
        view = self._projections(True).breakers.get(dependency)
        if view.state == "half_open" and view.trial_task == run.task_id:
            return None
        return self.before_call(run, step, index)

    def _past_threshold(self, view: BreakerView) -> bool:
        """Whether the failures folded into a closed breaker's view are enough to open it: its
        last call failed, and the failures (with those that came at once) reach a threshold
        that call's own look did not see (a breaker holding events of a newer onward is not
        judged)."""
        if view.unknown_events or not view.recent or view.recent[-1]:
            return False
        policy = self.policy
        recent = view.recent[-policy.window :]
        return view.consecutive_failures >= policy.failures or (
            len(recent) >= policy.min_calls
            and recent.count(False) / len(recent) >= policy.failure_rate
        )

    def _open_late(self, run: RunningTask, view: BreakerView, version: int) -> None:
        """Open a closed breaker past its threshold at a call (see :meth:`before_call`): the
        decision goes to the task's stream, the transition to the breaker's at ``version``
        (refused, and dropped, when another task moved the breaker first)."""
        recent = view.recent[-self.policy.window :]
        rate = recent.count(False) / len(recent) if recent else 0.0
        batch = run.new_batch()
        self._opening(
            run,
            batch,
            view,
            version,
            view.state,
            view.consecutive_failures,
            rate,
            # It answers the last of the failures (of this task or another): `onward why`
            # follows it there.
            view.last_failure_id or None,
            late=True,
        )
        run.commit(batch)
        self._projections(True)

    def _trial_under_way(self, run: RunningTask, view: BreakerView, now: float) -> float | None:
        """Until when a call to a half-open breaker waits for another task's trial call to
        decide (None: the trial has its outcome, is this task's own, or had none within a
        cool-down since the breaker half-opened).
        """
        if self._trial_decided(run, view):
            return None
        until = view.half_opened_at + self.policy.cooldown
        return until if now < until else None

    @staticmethod
    def _trial_decided(run: RunningTask, view: BreakerView) -> bool:
        """Whether a half-open breaker's trial has its outcome, or is ``run``'s own."""
        decided = view.trial_successes + view.trial_failures >= view.trial_calls
        return decided or view.trial_task == run.task_id

    def _wait(
        self, run: RunningTask, step: StepDef, index: int, view: BreakerView, until: float
    ) -> Batch:
        """The wait for its step's breaker until ``until``, to record."""
        dependency = view.dependency
        decision = DecisionMade(
            kind="breaker",
            subject=run.task_id,
            choice="wait",
            inputs={
                "dependency": dependency,
                "state": view.state,
                "cooldown_until": until,
                "step": step.name,
                "step_index": index,
            },
            alternatives=["call anyway"],
        )
        batch = run.new_batch()
        decision_id = batch.add(decision)
        batch.add(
            TaskWaiting(
                reason=f"breaker {dependency} {_SHOWN[view.state]}", until=until, breaker=dependency
            ),
            decision_id,
        )
        return batch

    def on_success(self, run: RunningTask, step: StepDef, batch: Batch, completed_id: str) -> None:
        """Close the step's breaker when this success was its half-open trial (a call that
        began before it half-opened, while another task's trial has no outcome, does not)."""
        dependency = step.breaker
        if not dependency:
            return
        view = self._projections(False).breakers.get(dependency)
        version = view.version  # before the state: see before_call
        if view.state != "half_open":
            return
        if not self._trial_decided(run, view):
            # Another task's call is the trial, and this one was not let through as one: it
            # began before the breaker half-opened, so its success tells nothing of now (nor
            # once the trial outlived a cool-down: the next call takes that over).
            return
        decision_id = batch.add(
            DecisionMade(
                kind="breaker",
                subject=run.task_id,
                choice="close",
                inputs={"dependency": dependency, "trial": "succeeded"},
                alternatives=["stay half-open"],
            ),
            completed_id,
        )
        batch.also.append(
            Append(
                stream=breaker_stream(dependency),
                events=[BreakerClosed(dependency=dependency, successes=1)],
                expected_version=version,
                context=run.context,
                causes=[decision_id],
            )
        )

    def on_failure(
        self,
        run: RunningTask,
        step: StepDef,
        projections: Projections,
        batch: Batch,
        failed_id: str,
    ) -> None:
        dependency = step.breaker
        if not dependency:
            return
        view = projections.breakers.get(dependency)
        version = view.version  # before the state: see before_call
        state = view.state
        if state == "damaged":
            return  # its history cannot be trusted: it guards nothing, and never moves
        policy = self.policy
        consecutive = view.consecutive_failures + 1
        recent = (*view.recent, False)[-policy.window :]
        rate = recent.count(False) / len(recent)
        # A call that is not the trial (it began before the breaker half-opened, while another
        # task's trial has no outcome, however long) tells nothing of now: its failure does not
        # open it again.
        trial_failed = state == "half_open" and self._trial_decided(run, view)
        opens = trial_failed or (
            state == "closed"
            and (
                consecutive >= policy.failures
                or (len(recent) >= policy.min_calls and rate >= policy.failure_rate)
            )
        )
        if opens:
            self._opening(run, batch, view, version, state, consecutive, rate, failed_id)

    def _opening(
        self,
        run: RunningTask,
        batch: Batch,
        view: BreakerView,
        version: int,
        state: str,
        consecutive: int,
        rate: float,
        cause: str | None,
        *,
        late: bool = False,
    ) -> None:
        """Add to ``batch`` the decision to open ``view``'s breaker, read in ``state`` (caused
        by ``cause``), and its transition, appended at the breaker stream's ``version``
        (refused, and the decision dropped with it, when another task moved the breaker
        first). ``late``: opened at a call, for failures that ended at once (see
        :meth:`before_call`)."""
        policy = self.policy
        inputs: dict[str, Any] = {
            "dependency": view.dependency,
            "state": state,
            "consecutive_failures": consecutive,
            "failure_rate": round(rate, 3),
            "threshold_failures": policy.failures,
            "threshold_rate": policy.failure_rate,
            "cooldown": policy.cooldown,
        }
        if late:
            inputs["late"] = "failures that ended at once, none seeing the others"
        decision_id = batch.add(
            DecisionMade(
                kind="breaker",
                subject=run.task_id,
                choice="open",
                inputs=inputs,
                alternatives=["stay closed"],
                thresholds={
                    "failures": float(policy.failures),
                    "failure_rate": policy.failure_rate,
                    "cooldown": policy.cooldown,
                },
            ),
            cause,
        )
        batch.also.append(
            Append(
                stream=breaker_stream(view.dependency),
                events=[
                    BreakerOpened(
                        dependency=view.dependency,
                        consecutive_failures=consecutive,
                        failure_rate=rate,
                        cooldown_until=self.clock() + policy.cooldown,
                    )
                ],
                expected_version=version,
                context=run.context,
                causes=[decision_id],
            )
        )
