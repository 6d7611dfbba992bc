"""The parent's side of ``onward demo``: the worker's log folded read-only as it grows, and the
progress line."""

from __future__ import annotations

from collections import Counter
from typing import IO, Any

from onward.demo.approval import ApprovalFold
from onward.demo.budget import BudgetFold
from onward.demo.degradation import DegradationFold
from onward.demo.healing import HealingFold
from onward.demo.index import DEPENDENCY
from onward.events import EventLog, StepCompleted, StepFailed, TaskSucceeded
from onward.projections import Projections, TaskView
from onward.projections.task import TASK_PREFIX

__all__ = ["SURVEY", "Progress", "Watch"]

#: The survey tasks' name.
SURVEY = "survey"


class Watch:
    """Folds the log read-only, as the worker appends to it.

    Only the run's session counts; earlier runs on the same log still fold into the projections
    (what the engine learned spans sessions). The tasks are the survey's (``survey``); the
    ``publish`` task that follows them is the approval's (``approval``).

    Args:
        log: the log.
        session: the run's session.

    Attributes:
        projections: the log folded so far.
        healing: the session's errors, fixes, retries and breaker moves folded so far.
        degradation: the session's component failures, workarounds and restorations.
        budget: the session's error-budget decisions.
        approval: the session's approval request, its decision and its answer.
        step_outcomes: the session's step outcomes (each try, completed or failed) folded.
        outcomes: those outcomes by step idempotency key (``<task id>:<step index>``).
        files: files read (``read`` steps with a final outcome).
        results: each succeeded survey task's result, by stream.
    """

    def __init__(self, log: EventLog, session: str) -> None:
        self.log = log
        self.session = session
        self.projections = Projections()
        self.healing = HealingFold(session)
        self.degradation = DegradationFold(session)
        self.budget = BudgetFold(session)
        self.approval = ApprovalFold(session)
        self.step_outcomes = 0
        self.outcomes: Counter[str] = Counter()
        self.files = 0
        self.results: dict[str, Any] = {}

    def update(self) -> None:
        """Fold the events appended since the last call."""
        projections = self.projections
        session = self.session
        for r in self.log.read(after=projections.position, page_size=5000):
            projections.apply(r)
            self.healing.apply(r)
            self.degradation.apply(r)
            self.budget.apply(r)
            self.approval.apply(r)
            if r.meta.session != session:
                continue
            event = r.event
            if isinstance(event, StepCompleted | StepFailed):
                self.step_outcomes += 1
                self.outcomes[f"{r.stream[len(TASK_PREFIX) :]}:{event.index}"] += 1
                final = isinstance(event, StepCompleted) or event.final
                if final and event.name == "read":
                    self.files += 1
            elif isinstance(event, TaskSucceeded) and self.task_name(r.stream) == SURVEY:
                self.results[r.stream] = event.result

    @property
    def position(self) -> int:
        """The last position folded."""
        return self.projections.position

    def task_name(self, stream: str) -> str:
        """The name of the task of a stream ("" when it is no task's)."""
        view = self.projections.tasks.view(stream[len(TASK_PREFIX) :])
        return "" if view is None else view.name

    def task_state(self, task_id: str) -> str:
        """A task's state ("" when the log holds no such task)."""
        view = self.projections.tasks.view(task_id)
        return "" if view is None else view.state

    def tasks(self) -> list[TaskView]:
        """The session's survey tasks, in submission order."""
        found = self.projections.tasks.tasks.values()
        mine = (t for t in found if t.session == self.session and t.name == SURVEY)
        return sorted(mine, key=lambda t: t.order)

    def note(self) -> str:
        """What healing is doing now, for the progress line ("" when nothing to say)."""
        errors = sum(self.healing.errors.values())
        note = f", {errors} errors met" if errors else ""
        state = self.projections.breakers.get(DEPENDENCY).state
        if state != "closed":
            note += f", {DEPENDENCY} breaker {state.replace('_', '-')}"
        if self.degradation.level != "full":
            note += f", degraded ({self.degradation.level})"
        if self.approval.waiting() is not None:
            note += ", waiting for an approval"
        return note

    def ended(self) -> int:
        """How many of them have ended."""
        return sum(1 for t in self.tasks() if t.terminal)


class Progress:
    """One updating line on a terminal; a line every 10% otherwise."""

    def __init__(self, tasks: int, files: int, stream: IO[str]) -> None:
        self.tasks = tasks
        self.files = files
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = -1

    def show(self, tasks: int, files: int, note: str, *, final: bool = False) -> None:
        """Show how many tasks and files are done."""
        fraction = files / self.files if self.files else 1.0
        text = f"{fraction:4.0%}  {tasks}/{self.tasks} tasks  {files}/{self.files} files  {note}"
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.stream.write(f"\r[{bar:-<30}] {text}".ljust(100)[:100])
            self.stream.flush()
            return
        decile = int(fraction * 10)
        if decile > self.shown or final:
            self.shown = decile
            self.stream.write(f"  {text}\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        """Print a line (clearing the progress line first on a terminal)."""
        if self.tty:
            self.stream.write("\r" + " " * 100 + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        """End the progress line."""
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
