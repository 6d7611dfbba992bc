"""The parent's side of ``onward demo``: the worker's log folded read-only as it grows, and the
progress line."""

from __future__ import annotations

from typing import IO, Any

from engine.survey_worker import SESSION
from events import EventLog, StepCompleted, StepFailed, TaskSucceeded
from projections import Projections, TaskView

__all__ = ["Progress", "Watch"]


class Watch:
    """Folds the log read-only, as the worker appends to it.

    Attributes:
        projections: the log folded so far.
        step_outcomes: step outcomes (completed or failed) folded.
        files: files read (``read`` step outcomes).
        results: each succeeded task's result, by stream.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.projections = Projections()
        self.step_outcomes = 0
        self.files = 0
        self.results: dict[str, Any] = {}

    def update(self) -> None:
        """Fold the events appended since the last call."""
        projections = self.projections
        for r in self.log.read(after=projections.position, page_size=5000):
            projections.apply(r)
            event = r.event
            if isinstance(event, StepCompleted | StepFailed):
                self.step_outcomes += 1
                if event.name == "read":
                    self.files += 1
            elif isinstance(event, TaskSucceeded):
                self.results[r.stream] = event.result

    @property
    def position(self) -> int:
        """The last position folded."""
        return self.projections.position

    def tasks(self) -> list[TaskView]:
        """The demo session's tasks, in submission order."""
        found = self.projections.tasks.tasks.values()
        return sorted((t for t in found if t.session == SESSION), key=lambda t: t.order)

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
