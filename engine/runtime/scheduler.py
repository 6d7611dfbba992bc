"""The run loop: claims runnable tasks, runs them (in threads when asked), waits for timers.

It decides nothing by mutating state: each claim, lease expiry and missed deadline is an
append at the task stream's expected version, and it reads the queue back from the
projections after each.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import msgspec

from onward.core.definitions import TaskDef
from onward.core.machines import transition
from onward.core.run import LeaseLost, Suspended, error_message
from onward.events import (
    Context,
    DecisionMade,
    Event,
    TaskClaimed,
    TaskDeadlineMissed,
    TaskFailed,
    TaskLeaseExpired,
    TaskSubmitted,
    TaskSucceeded,
    UnencodableValue,
    UsageError,
    VersionConflict,
    decode_value,
    encode_value,
    redacted_logger,
)
from onward.healing.healer import Healer
from onward.judgement.actions import Judge
from onward.judgement.rulebook import Rulebook
from onward.projections import TaskView, task_stream
from onward.runtime.boundary import Boundary
from onward.runtime.degradations import Degradations
from onward.runtime.registry import Registry
from onward.runtime.run import CURRENT_RUN, TaskRun, submission_id
from onward.runtime.session import Session
from onward.runtime.worker import worker_gone

__all__ = ["RunSummary", "Scheduler"]

logger = redacted_logger("onward.engine")

#: Seconds between two looks for a human's answer while ``await_approvals`` lasts.
APPROVAL_POLL = 0.5


class RunSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What one call of :meth:`Engine.run` did.

    Attributes:
        runs: task runs started (a resumed task counts once per run).
        succeeded: tasks that succeeded.
        failed: tasks that failed.
        waiting: runs that ended waiting (for subtasks or a timer).
        cancelled: runs stopped because the task was cancelled or its lease taken.
        missed: tasks that missed their deadline.
        recovered: tasks taken back from a dead worker.
        steps_run: steps executed.
        steps_replayed: steps whose recorded outcome was returned without running them.
        elapsed: seconds spent (by the engine's clock).
        paused: the session is paused (its error budget paused it, or it was paused before):
            no task was started after that; :meth:`Engine.resume` resumes it.
    """

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    waiting: int = 0
    cancelled: int = 0
    missed: int = 0
    recovered: int = 0
    steps_run: int = 0
    steps_replayed: int = 0
    elapsed: float = 0.0
    paused: bool = False


class Scheduler:
    """One :meth:`onward.Engine.run`: the loop and the task runs it starts.

    Args:
        session: the session whose tasks to run.
        registry: the registered tasks and steps.
        boundary: the policies applied between task runs.
        degradations: the components (restored before the first task).
        rulebook: the rules (what follows a completed task).
        healer: heals failing steps (None: failures are final at once).
        judge: judges actions (None: actions run as plain steps).
    """

    def __init__(
        self,
        session: Session,
        *,
        registry: Registry,
        boundary: Boundary,
        degradations: Degradations,
        rulebook: Rulebook,
        healer: Healer | None,
        judge: Judge | None,
    ) -> None:
        self.session = session
        self.registry = registry
        self.boundary = boundary
        self.degradations = degradations
        self.rulebook = rulebook
        self.healer = healer
        self.judge = judge

    def run(
        self, *, workers: int = 1, max_runs: int | None = None, await_approvals: float = 0.0
    ) -> RunSummary:
        """Run this session's tasks until none is runnable.

        Tasks waiting on a timer are waited for (with the engine's ``sleep``); tasks waiting
        for other sessions' work end the run, and so do tasks waiting for a human unless
        ``await_approvals`` says how long to look for answers.

        Args:
            workers: how many tasks may run at once (threads of this process).
            max_runs: stop after starting this many task runs.
            await_approvals: seconds to keep looking for answers while only approvals are left.

        Returns:
            What the run did.
        """
        if workers < 1:
            raise UsageError(f"workers must be at least 1, got {workers}")
        if not await_approvals >= 0:
            raise UsageError(f"await_approvals must be seconds >= 0, got {await_approvals}")
        patience_until: float | None = None
        paused = False
        ran_one = False
        self.session.check_open()
        started = self.session.clock()
        tally: dict[str, int] = dict.fromkeys(
            (
                "runs",
                "succeeded",
                "failed",
                "waiting",
                "cancelled",
                "missed",
                "recovered",
                "steps_run",
                "steps_replayed",
            ),
            0,
        )
        pool = ThreadPoolExecutor(workers, thread_name_prefix="onward") if workers > 1 else None
        in_flight: dict[Future[tuple[str, TaskRun | None]], str] = {}
        try:
            with self.session.lock:
                self.session.host.catch_up()
                session = self.session.host.projections.sessions.sessions.get(self.session.name)
                if session is not None and session.state == "paused":
                    return RunSummary(paused=True)
                tally["recovered"] += self._recover_leases()
            while True:
                with self.session.lock:
                    self.session.host.catch_up()
                    tally["missed"] += self._mark_missed()
                    if tally["runs"]:
                        # A task boundary: components, flow, deferred interruptions, budget.
                        verdict = self.boundary.cross()
                        if verdict.choice == "pause":
                            paused = True
                            break
                        if verdict.choice == "slow_down" and self._claimable():
                            self.session.sleep(verdict.delay)
                            self.session.host.catch_up()
                    else:
                        self.degradations.restore_all()
                    while len(in_flight) < workers and (
                        max_runs is None or tally["runs"] < max_runs
                    ):
                        claimed = self._claim_next()
                        if claimed is None:
                            break
                        tally["runs"] += 1
                        if pool is None:
                            self._tally(tally, self._execute(*claimed))
                            self.session.host.catch_up()
                            ran_one = True
                            break  # back to the top: a task boundary
                        in_flight[pool.submit(self._execute, *claimed)] = claimed[0].task_id
                if ran_one:
                    ran_one = False
                    continue
                if in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        del in_flight[future]
                        self._tally(tally, future.result())
                    continue
                if max_runs is not None and tally["runs"] >= max_runs:
                    break
                due = self._next_timer()
                if due is None:
                    if self._claimable():
                        continue
                    now = self.session.clock()
                    if await_approvals and self._awaiting_approval():
                        # Only humans can move the session on: look for their answers (an
                        # approval from another process lands in the log) until patience ends.
                        if patience_until is None:
                            patience_until = now + await_approvals
                        if now < patience_until:
                            self.session.sleep(min(APPROVAL_POLL, patience_until - now))
                            continue
                    break
                patience_until = None
                self.session.sleep(max(0.0, due - self.session.clock()))
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return RunSummary(elapsed=self.session.clock() - started, paused=paused, **tally)

    def _awaiting_approval(self) -> bool:
        return bool(self.session.host.projections.decisions.waiting(self.session.name))

    @staticmethod
    def _tally(tally: dict[str, int], outcome: tuple[str, TaskRun | None]) -> None:
        kind, run = outcome
        tally[kind] += 1
        if run is not None:
            tally["steps_run"] += run.steps_run
            tally["steps_replayed"] += run.steps_replayed

    def _claimable(self) -> bool:
        tasks = self.session.host.projections.tasks
        return tasks.next_queued(self.session.name) is not None or self._ready_waiting() is not None

    def _ready_waiting(self) -> TaskView | None:
        tasks = self.session.host.projections.tasks
        now = self.session.clock()
        ready: list[TaskView] = []
        for task_id in tasks.waiting:
            view = tasks.tasks[task_id]
            if view.session != self.session.name:
                continue
            if view.waiting_until is not None and view.waiting_until > now:
                continue
            if view.waiting_on:
                if not all(
                    (child := tasks.tasks.get(c)) is not None and child.terminal
                    for c in view.waiting_on
                ):
                    continue
            elif view.waiting_until is None:
                continue  # waits for a human or another process
            ready.append(view)
        return min(ready, key=lambda v: v.queue_key()) if ready else None

    def _next_timer(self) -> float | None:
        tasks = self.session.host.projections.tasks
        timers = [
            v.waiting_until
            for t in tasks.waiting
            if (v := tasks.tasks[t]).session == self.session.name and v.waiting_until is not None
        ]
        return min(timers) if timers else None

    def _claim_next(self) -> tuple[TaskView, TaskClaimed, str] | None:
        """Claim the most urgent runnable task: an append at its stream's expected version."""
        tasks = self.session.host.projections.tasks
        for _ in range(100):
            view = self._ready_waiting() or tasks.next_queued(self.session.name)
            if view is None:
                return None
            now = self.session.clock()
            claim = TaskClaimed(
                worker=self.session.worker,
                lease_until=now + self.session.lease,
                attempt=view.attempt + 1,
            )
            try:
                result = transition(
                    self.session.log,
                    "task",
                    view.task_id,
                    task_stream(view.task_id),
                    view.state,
                    view.version,
                    claim,
                    Context(
                        session=self.session.name,
                        actor=self.session.worker,
                        # The claim answers the task's submission: a decision's chain of
                        # causes ends at the TaskSubmitted that started it.
                        causation_id=submission_id(view.task_id),
                        correlation_id=view.task_id,
                    ),
                )
            except VersionConflict:
                self.session.host.catch_up()  # another worker got there first: look again
                continue
            self.session.host.catch_up()
            return view, claim, result.event_ids[0]
        return None

    def _execute(
        self, view: TaskView, claim: TaskClaimed, claim_id: str
    ) -> tuple[str, TaskRun | None]:
        """Run one claimed task to its end, a wait, or a lost lease."""
        task_id = view.task_id
        stream = task_stream(task_id)
        history = self.session.log.read_stream(stream)
        submitted = history[0].event
        assert isinstance(submitted, TaskSubmitted)
        context = Context(
            session=self.session.name,
            actor=self.session.worker,
            causation_id=claim_id,
            correlation_id=history[0].meta.correlation_id or task_id,
        )
        run = TaskRun(
            self.session.log,
            task_id,
            stream,
            history,
            context,
            self.session.clock,
            healer=self.healer,
            sleep=self.session.sleep,
            judge=self.judge,
        )
        try:
            definition: TaskDef = self.registry.task(submitted.name)
        except UsageError as exc:
            run.record(
                [TaskFailed(error_type="NotRegistered", message=error_message(exc, run.redact))]
            )
            return "failed", run
        # The arguments as recorded, converted to the parameters' annotations: every run of
        # the task, the first included, gets the same values.
        positional, named = definition.argument_types(len(submitted.args), submitted.kwargs)
        args = [decode_value(a, t) for a, t in zip(submitted.args, positional, strict=True)]
        kwargs = {k: decode_value(v, named[k]) for k, v in submitted.kwargs.items()}
        token = CURRENT_RUN.set(run)
        try:
            try:
                result = definition.fn(*args, **kwargs)
            finally:
                CURRENT_RUN.reset(token)
        except Suspended:
            return "waiting", run
        except LeaseLost as lost:
            logger.info("%s", lost)
            return "cancelled", run
        except Exception as exc:
            # Redacted (and cut) once, for the log line as for the record.
            message = error_message(exc, run.redact)
            logger.info("task %s failed: %s: %s", task_id, type(exc).__name__, message)
            return self._finish(run, TaskFailed(error_type=type(exc).__name__, message=message))
        try:
            stored = encode_value(
                result,
                what=f"task {task_id} ({definition.name}): its result",
                redactor=self.session.log.redactor,
            )
        except UsageError as exc:
            logger.info("task %s failed: %s", task_id, exc)
            return self._finish(
                run, TaskFailed(error_type="UsageError", message=error_message(exc))
            )
        try:
            return self._finish(run, TaskSucceeded(result=stored), self._next(view))
        except UnencodableValue as exc:
            return self._finish(
                run,
                TaskFailed(error_type="UnencodableValue", message=error_message(exc, run.redact)),
            )

    def _next(self, view: TaskView) -> list[Event]:
        """The rulebook's decision on what follows a task that completes (scenario
        ``task_completed``), recorded with the task's success."""
        tasks = self.session.projections.tasks
        session = self.session.name
        queued = tasks.next_queued(session) is not None or any(
            tasks.tasks[t].session == session for t in tasks.waiting
        )
        facts = {"task": view.name, "parent": view.parent or "", "queued": int(queued)}
        verdict = self.rulebook.decide("task_completed", facts)
        if verdict is None:
            return []
        return [
            DecisionMade(
                kind="task_completed",
                subject=view.task_id,
                choice=verdict.choice,
                rule=verdict.rule,
                inputs={**facts, "why": verdict.description},
            )
        ]

    @staticmethod
    def _finish(
        run: TaskRun, event: TaskSucceeded | TaskFailed, before: Sequence[Event] = ()
    ) -> tuple[str, TaskRun | None]:
        try:
            run.record([*before, event])
        except LeaseLost as lost:
            logger.info("%s", lost)
            return "cancelled", run
        return ("succeeded" if isinstance(event, TaskSucceeded) else "failed"), run

    def _recover_leases(self) -> int:
        """Expire the leases of running tasks whose worker is gone.

        A worker on this host whose process is dead (or an earlier engine of this process)
        is known to be gone at once; others are gone when their lease ran out.
        """
        now = self.session.clock()
        recovered = 0
        for view in list(self.session.tasks()):
            if view.state != "running":
                continue
            gone = now > max(view.lease_until, view.updated_at + self.session.lease)
            gone = gone or worker_gone(view.worker, self.session.worker)
            if not gone:
                continue
            try:
                self.session.log.append(
                    task_stream(view.task_id),
                    [TaskLeaseExpired(worker=view.worker, lease_until=view.lease_until)],
                    expected_version=view.version,
                    context=self.session.context,
                )
                recovered += 1
            except VersionConflict:
                continue
        if recovered:
            self.session.host.catch_up()
        return recovered

    def _mark_missed(self) -> int:
        missed = 0
        for view in self.session.host.projections.tasks.overdue(self.session.clock()):
            if view.session != self.session.name or view.deadline is None:
                continue
            try:
                self.session.log.append(
                    task_stream(view.task_id),
                    [TaskDeadlineMissed(deadline=view.deadline)],
                    expected_version=view.version,
                    context=self.session.context,
                )
                missed += 1
            except VersionConflict:
                continue
        if missed:
            self.session.host.catch_up()
        return missed
