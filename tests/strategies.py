"""Hypothesis strategies for onward's events: every event type joins :data:`EVENT_STRATEGIES`.

``tests/unit/test_vocabulary.py`` fails when an event type has no strategy here, so a new event
type is covered by every property test that draws from :func:`any_event`.
"""

from __future__ import annotations

import datetime
import decimal
import math
from typing import Any

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from onward.events.base import Event
from onward.events.breaker import BreakerClosed, BreakerHalfOpened, BreakerOpened
from onward.events.decision import (
    ActionChecked,
    ActionUndone,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    DecisionMade,
    ThresholdsAdjusted,
)
from onward.events.degradation import ComponentFailed, ComponentRestored, WorkaroundApplied
from onward.events.error import ErrorClassified, ErrorObserved
from onward.events.fix import FixAttempted, FixFailed, FixLearned, FixSucceeded
from onward.events.flow import FlowStateChanged, InterruptionDeferred, InterruptionDelivered
from onward.events.kinds import DegradationLevel, ErrorKind, FlowState, Jitter, Priority, Strategy
from onward.events.limit import LimitSet, PermitReturned, PermitTaken
from onward.events.message import MessageReceived, MessageSent, StateSet
from onward.events.retry import RetryScheduled
from onward.events.schedule import ScheduleRemoved, ScheduleSet, ScheduleTicked
from onward.events.session import SessionEnded, SessionPaused, SessionResumed, SessionStarted
from onward.events.step import (
    PatchMarked,
    StepCompleted,
    StepFailed,
    StepStarted,
    StepWithdrawn,
)
from onward.events.task import (
    SubtasksRead,
    TaskCancelled,
    TaskClaimed,
    TaskDeadlineMissed,
    TaskFailed,
    TaskLeaseExpired,
    TaskProgressed,
    TaskQuarantined,
    TaskReleased,
    TaskReprioritised,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    TaskUnregistered,
    TaskWaiting,
)
from onward.events.worker import WorkerClaimExpired, WorkerHeartbeat, WorkerStopped

__all__ = [
    "EVENT_STRATEGIES",
    "any_event",
    "finite_floats",
    "json_values",
    "same_value",
    "stored_values",
]

#: The largest integer a JSON reader in any language is sure to read back exactly.
MAX_SAFE_INT = 2**53


def finite_floats() -> SearchStrategy[float]:
    """Any float but NaN and the infinities (JSON has no spelling for them)."""
    return st.floats(allow_nan=False, allow_infinity=False)


def json_values() -> SearchStrategy[Any]:
    """Plain JSON values, nested: what an ``Any`` field of an event may hold."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
        | finite_floats()
        | st.text()
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
        ),
        max_leaves=12,
    )


def _json_objects() -> SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(), json_values(), max_size=4)


def _score_maps() -> SearchStrategy[dict[str, float]]:
    return st.dictionaries(st.text(), _fractions, max_size=4)


_names = st.text(max_size=30)
_ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)
_texts = st.text()
_times = st.floats(min_value=0.0, max_value=4e9)
_durations = st.floats(min_value=0.0, max_value=1e7)
_fractions = st.floats(min_value=0.0, max_value=1.0)
_counts = st.integers(0, MAX_SAFE_INT)
_attempts = st.integers(1, 1_000)
_indexes = st.integers(0, 10_000)
_type_names = st.sampled_from(
    ["builtins.ValueError", "builtins.TimeoutError", "httpx.ConnectError", "app.QuotaExceeded"]
)
_signatures = st.text(alphabet="0123456789abcdef", max_size=32)

_SESSION: dict[type[Event], SearchStrategy[Event]] = {
    SessionStarted: st.builds(
        SessionStarted,
        name=_names,
        host=_names,
        pid=st.integers(0, 2**22),
        version=_names,
        config=_json_objects(),
    ),
    SessionPaused: st.builds(SessionPaused, reason=_texts),
    SessionResumed: st.builds(SessionResumed, reason=_texts, recovered_tasks=_counts),
    SessionEnded: st.builds(SessionEnded, reason=_texts, tasks_done=_counts, tasks_failed=_counts),
}

_TASK: dict[type[Event], SearchStrategy[Event]] = {
    TaskSubmitted: st.builds(
        TaskSubmitted,
        name=_names,
        args=st.lists(json_values(), max_size=4),
        kwargs=_json_objects(),
        priority=st.sampled_from(Priority),
        deadline=st.none() | _times,
        key=st.none() | _texts,
        parent=st.none() | _ids,
        forked_from=st.none() | _ids,
        inherit_steps=st.integers(min_value=0, max_value=1000),
        schedule=st.none() | _names,
    ),
    TaskReprioritised: st.builds(
        TaskReprioritised, priority=st.sampled_from(Priority), previous=st.sampled_from(Priority)
    ),
    TaskClaimed: st.builds(TaskClaimed, worker=_names, lease_until=_times, attempt=_attempts),
    TaskLeaseExpired: st.builds(TaskLeaseExpired, worker=_names, lease_until=_times),
    TaskReleased: st.builds(TaskReleased, worker=_names, reason=_names),
    WorkerHeartbeat: st.builds(
        WorkerHeartbeat, lease_until=_times, running=st.integers(min_value=0, max_value=512)
    ),
    WorkerStopped: st.builds(
        WorkerStopped, reason=_names, released=st.integers(min_value=0, max_value=512)
    ),
    WorkerClaimExpired: st.builds(
        WorkerClaimExpired, task_id=_names, by=_names, lease_until=_times
    ),
    TaskProgressed: st.builds(TaskProgressed, fraction=_fractions, note=_texts),
    TaskWaiting: st.builds(
        TaskWaiting,
        reason=st.sampled_from(["subtasks", "approval", "retry", "breaker"]) | _texts,
        until=st.none() | _times,
        on=st.lists(_ids, max_size=4),
        topic=_names,
        inbox_after=st.integers(min_value=0, max_value=10**6),
        limit=_names,
        limit_after=st.integers(min_value=0, max_value=10**6),
    ),
    SubtasksRead: st.builds(
        SubtasksRead,
        on=st.lists(_ids, max_size=4),
        versions=st.lists(st.integers(min_value=1, max_value=10**6), max_size=4),
    ),
    TaskDeadlineMissed: st.builds(TaskDeadlineMissed, deadline=_times),
    TaskSucceeded: st.builds(TaskSucceeded, result=json_values()),
    TaskFailed: st.builds(
        TaskFailed, error_type=_type_names, message=_texts, signature=_signatures
    ),
    TaskCancelled: st.builds(TaskCancelled, reason=_texts),
    TaskQuarantined: st.builds(TaskQuarantined, reason=_texts, by=_names, damage=_texts),
}

_STEP: dict[type[Event], SearchStrategy[Event]] = {
    StepStarted: st.builds(
        StepStarted,
        index=_indexes,
        name=_names,
        attempt=_attempts,
        idempotency_key=_texts,
        wake_at=st.none() | _times,
    ),
    StepWithdrawn: st.builds(StepWithdrawn, index=_indexes, name=_names, next_index=_indexes),
    PatchMarked: st.builds(PatchMarked, change_id=_names, index=_indexes),
    MessageSent: st.builds(MessageSent, topic=_names, value=json_values(), sender=_names),
    MessageReceived: st.builds(
        MessageReceived,
        index=_indexes,
        topic=_names,
        inbox_version=st.none() | st.integers(min_value=1, max_value=10**6),
        value=json_values(),
    ),
    StateSet: st.builds(StateSet, key=_names, value=json_values()),
    ScheduleSet: st.builds(
        ScheduleSet,
        name=_names,
        task=_names,
        cron=st.sampled_from(["* * * * *", "*/15 * * * *", "0 3 * * 1-5"]),
        args=st.lists(json_values(), max_size=3),
        kwargs=_json_objects(),
        priority=st.sampled_from(Priority),
        missed=st.sampled_from(["once", "skip"]),
    ),
    ScheduleTicked: st.builds(
        ScheduleTicked, tick=_times, task_id=_names, missed=st.integers(min_value=0, max_value=99)
    ),
    ScheduleRemoved: st.builds(ScheduleRemoved, reason=_texts),
    LimitSet: st.builds(
        LimitSet,
        name=_names,
        concurrency=st.none() | st.integers(min_value=1, max_value=64),
        rate=st.sampled_from(["", "60/minute", "5/second", "1000/hour"]),
    ),
    PermitTaken: st.builds(PermitTaken, task_id=_ids, index=_indexes, worker=_names, until=_times),
    PermitReturned: st.builds(
        PermitReturned, task_id=_ids, index=_indexes, worker=st.sampled_from(["", "w1"])
    ),
    TaskRetried: st.builds(
        TaskRetried,
        by=_names,
        reason=_texts,
        previous=st.sampled_from(["failed", "cancelled", "missed"]),
        deadline=st.none() | _times,
    ),
    TaskUnregistered: st.builds(TaskUnregistered, name=_names, worker=_names),
    StepCompleted: st.builds(
        StepCompleted,
        index=_indexes,
        name=_names,
        result=json_values(),
        duration=_durations,
        attempt=_attempts,
        dependency=_names,
    ),
    StepFailed: st.builds(
        StepFailed,
        index=_indexes,
        name=_names,
        attempt=_attempts,
        error_type=_type_names,
        message=_texts,
        signature=_signatures,
        transient=st.booleans(),
        final=st.booleans(),
        dependency=_names,
        error_class=_names,
        literal=st.booleans(),
        spread=st.booleans(),
        attributes=_json_objects(),
    ),
}

_ERROR: dict[type[Event], SearchStrategy[Event]] = {
    ErrorObserved: st.builds(
        ErrorObserved,
        signature=_signatures,
        error_type=_type_names,
        message=_texts,
        frames=st.lists(_names, max_size=6),
        step_index=st.none() | _indexes,
        causes=st.lists(_type_names, max_size=3),
    ),
    ErrorClassified: st.builds(
        ErrorClassified, signature=_signatures, kind=st.sampled_from(ErrorKind), reason=_texts
    ),
}

_FIX: dict[type[Event], SearchStrategy[Event]] = {
    FixAttempted: st.builds(
        FixAttempted,
        fix=_names,
        signature=_signatures,
        step_index=st.none() | _indexes,
        change=_json_objects(),
        again=st.booleans(),
    ),
    FixSucceeded: st.builds(
        FixSucceeded, fix=_names, signature=_signatures, step_index=st.none() | _indexes
    ),
    FixFailed: st.builds(
        FixFailed,
        fix=_names,
        signature=_signatures,
        step_index=st.none() | _indexes,
        message=_texts,
    ),
    FixLearned: st.builds(
        FixLearned,
        fix=_names,
        signature=_signatures,
        source=st.sampled_from(["manual", "automatic"]),
        note=_texts,
    ),
}

_RETRY: dict[type[Event], SearchStrategy[Event]] = {
    RetryScheduled: st.builds(
        RetryScheduled,
        step_index=_indexes,
        attempt=_attempts,
        delay=_durations,
        due=_times,
        policy=_names,
        jitter=st.sampled_from(Jitter),
        error_type=_type_names,
        signature=_signatures,
    ),
}

_BREAKER: dict[type[Event], SearchStrategy[Event]] = {
    BreakerOpened: st.builds(
        BreakerOpened,
        dependency=_names,
        consecutive_failures=_counts,
        failure_rate=_fractions,
        cooldown_until=_times,
    ),
    BreakerHalfOpened: st.builds(
        BreakerHalfOpened, dependency=_names, trial_calls=st.integers(1, 100)
    ),
    BreakerClosed: st.builds(BreakerClosed, dependency=_names, successes=_counts),
}

_DEGRADATION: dict[type[Event], SearchStrategy[Event]] = {
    ComponentFailed: st.builds(
        ComponentFailed,
        component=_names,
        check=_names,
        message=_texts,
        step_index=st.none() | st.integers(0, 10_000),
    ),
    WorkaroundApplied: st.builds(
        WorkaroundApplied,
        component=_names,
        workaround=_names,
        quality_loss=_fractions,
        level=st.sampled_from(DegradationLevel),
    ),
    ComponentRestored: st.builds(
        ComponentRestored,
        component=_names,
        quality_regained=_fractions,
        level=st.sampled_from(DegradationLevel),
    ),
}

_DECISION: dict[type[Event], SearchStrategy[Event]] = {
    DecisionMade: st.builds(
        DecisionMade,
        kind=st.sampled_from(["retry", "fix", "breaker", "confidence", "budget"]),
        subject=_ids,
        choice=_names,
        rule=_names,
        strategy=st.none() | st.sampled_from(Strategy),
        confidence=st.none() | _fractions,
        factors=_score_maps(),
        inputs=_json_objects(),
        alternatives=st.lists(_names, max_size=4),
        thresholds=_score_maps(),
    ),
    ApprovalRequested: st.builds(
        ApprovalRequested,
        decision_id=_ids,
        subject=_ids,
        question=_texts,
        options=st.lists(_names, max_size=4),
        impact=_texts,
    ),
    ApprovalGranted: st.builds(ApprovalGranted, decision_id=_ids, by=_names, note=_texts),
    ApprovalDenied: st.builds(ApprovalDenied, decision_id=_ids, by=_names, note=_texts),
    ActionChecked: st.builds(
        ActionChecked,
        action=_names,
        step_index=st.integers(0, 1000),
        passed=st.booleans(),
        strategy=st.sampled_from(Strategy),
        decision_id=_ids,
        message=_texts,
    ),
    ActionUndone: st.builds(
        ActionUndone,
        action=_names,
        step_index=st.integers(0, 1000),
        ok=st.booleans(),
        message=_texts,
    ),
    ThresholdsAdjusted: st.builds(
        ThresholdsAdjusted, thresholds=_score_maps(), previous=_score_maps(), reason=_texts
    ),
}

_FLOW: dict[type[Event], SearchStrategy[Event]] = {
    FlowStateChanged: st.builds(
        FlowStateChanged,
        state=st.sampled_from(FlowState),
        previous=st.sampled_from(FlowState),
        actions_per_minute=st.floats(min_value=0.0, max_value=1e6),
        error_rate=_fractions,
    ),
    InterruptionDeferred: st.builds(
        InterruptionDeferred, interruption_id=_ids, kind=_names, summary=_texts
    ),
    InterruptionDelivered: st.builds(
        InterruptionDelivered, interruption_id=_ids, deferred_for=_durations
    ),
}

#: A strategy for each event type, by type.
EVENT_STRATEGIES: dict[type[Event], SearchStrategy[Event]] = {
    **_SESSION,
    **_TASK,
    **_STEP,
    **_ERROR,
    **_FIX,
    **_RETRY,
    **_BREAKER,
    **_DEGRADATION,
    **_DECISION,
    **_FLOW,
}


def any_event() -> SearchStrategy[Event]:
    """An event of any type in :data:`EVENT_STRATEGIES`."""
    return st.one_of(*EVENT_STRATEGIES.values())


# -- values a task may take and a step may return ------------------------------------------


def _hashable_values() -> SearchStrategy[Any]:
    """Values that stay hashable once read back: dict keys and set members."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | finite_floats()
        | st.text(max_size=12)
        | st.binary(max_size=12)
        | st.datetimes(timezones=st.none() | st.just(datetime.UTC))
        | st.dates()
        | st.uuids()
    )
    return st.recursive(
        scalars,
        lambda children: st.tuples(children, children) | st.frozensets(children, max_size=3),
        max_leaves=4,
    )


def stored_values() -> SearchStrategy[Any]:
    """Anything a task may take or a step may return, nested: every type of the table in
    :mod:`onward.events.values` (NaN and the infinities included)."""
    # Any offset Python allows: whole minutes, and seconds and microseconds as local mean
    # times before 1937 have them (Amsterdam's +00:19:32).
    offsets = st.timedeltas(
        min_value=datetime.timedelta(hours=-23), max_value=datetime.timedelta(hours=23)
    ).map(datetime.timezone)
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.binary()
        | st.binary().map(bytearray)
        | st.datetimes(timezones=st.none() | st.just(datetime.UTC) | offsets)
        | st.dates()
        | st.times(timezones=st.none() | st.just(datetime.UTC) | offsets)
        | st.timedeltas()
        | st.uuids()
        | st.decimals()
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.tuples(children)
            | st.lists(children, max_size=3).map(tuple)
            | st.dictionaries(st.text(), children, max_size=4)
            | st.dictionaries(_hashable_values(), children, max_size=3)
            | st.sets(_hashable_values(), max_size=4)
            | st.frozensets(_hashable_values(), max_size=3)
        ),
        max_leaves=14,
    )


def same_value(a: Any, b: Any) -> bool:
    """Whether two values are equal in type and value, all the way down (NaN equals NaN, and
    -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, decimal.Decimal):
        if a.is_nan() or b.is_nan():
            return a.is_nan() and b.is_nan() and a.is_signed() == b.is_signed()
        return a == b and str(a) == str(b)
    if isinstance(a, datetime.datetime | datetime.time):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if list(a) != list(b) or len(a) != len(b):
            return False
        return all(
            same_value(ka, kb) and same_value(a[ka], b[kb]) for ka, kb in zip(a, b, strict=True)
        )
    if isinstance(a, set | frozenset):
        return a == b and all(any(same_value(x, y) for y in b) for x in a)
    return bool(a == b)
