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
"""

from engine.engine import Engine, RunSummary
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
from engine.machines import diagram, validate
from engine.run import StepFailedError

__all__ = [
    "DeadlineMissed",
    "Engine",
    "InvalidTransition",
    "NotFinished",
    "NotRegistered",
    "RunSummary",
    "StepFailedError",
    "StepInterrupted",
    "StepMismatch",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFound",
    "diagram",
    "validate",
]
