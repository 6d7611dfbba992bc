"""onward's projections: read models rebuilt as pure folds over the event log.

Replay, live folding and checkpoint + tail run the same code and give the same state.
"""

from onward.projections.host import CatchUp, Projections
from onward.projections.lifecycle import (
    BREAKER,
    SESSION,
    TASK,
    IllegalTransition,
    Lifecycle,
    Transition,
)
from onward.projections.limits import LimitView, limit_stream, permit_key
from onward.projections.schedules import ScheduleView, schedule_stream
from onward.projections.session import SessionProjection, SessionView, session_stream
from onward.projections.task import (
    TaskProjection,
    TaskView,
    inbox_stream,
    standing,
    task_stream,
)
from onward.projections.verification import verify_log

__all__ = [
    "BREAKER",
    "SESSION",
    "TASK",
    "CatchUp",
    "IllegalTransition",
    "Lifecycle",
    "LimitView",
    "Projections",
    "ScheduleView",
    "SessionProjection",
    "SessionView",
    "TaskProjection",
    "TaskView",
    "Transition",
    "inbox_stream",
    "limit_stream",
    "permit_key",
    "schedule_stream",
    "session_stream",
    "standing",
    "task_stream",
    "verify_log",
]
