"""onward's event vocabulary and the event log.

Everything onward does is an event appended to one log; everything it knows is rebuilt from
that log. This package holds the vocabulary (frozen msgspec Structs, one module per domain
noun), the envelope, the codec, and the log with its backends::

    from onward.events import open_log, TaskSubmitted

    with open_log("sqlite:///work.db") as log:
        log.append("task-1", [TaskSubmitted(name="crawl", args=["https://example.org"],
                                            kwargs={})], expected_version=0)
        for recorded in log.read():
            print(recorded.position, recorded.stream, recorded.event)
"""

from onward.events.archive import (
    ExportFile,
    ExportSummary,
    ImportSummary,
    export_log,
    import_log,
    read_export,
)
from onward.events.base import Event, Meta, Recorded, UnknownEvent
from onward.events.blobs import DEFAULT_INLINE_LIMIT, DEFAULT_PAYLOAD_LIMIT, blob_digest
from onward.events.breaker import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
)
from onward.events.codec import MAX_EVENT_DEPTH, Codec, Upcaster, all_event_types
from onward.events.decision import (
    ActionChecked,
    ActionUndone,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    DecisionMade,
    ThresholdsAdjusted,
)
from onward.events.degradation import (
    ComponentFailed,
    ComponentRestored,
    WorkaroundApplied,
)
from onward.events.error import (
    ErrorClassified,
    ErrorObserved,
)
from onward.events.exceptions import (
    BackendError,
    ConflictError,
    CorruptRecord,
    ImportConflict,
    InvalidArchive,
    InvalidURL,
    LogDamaged,
    LogNotFound,
    NotALog,
    OnwardError,
    PayloadTooLarge,
    StorageUnavailable,
    UnencodableValue,
    UnknownEventType,
    UsageError,
    VersionConflict,
)
from onward.events.fix import (
    FixAttempted,
    FixFailed,
    FixLearned,
    FixSucceeded,
)
from onward.events.flow import (
    FlowStateChanged,
    InterruptionDeferred,
    InterruptionDelivered,
)
from onward.events.integrity import (
    HeadCheck,
    LogHead,
    Problem,
    ProblemKind,
    StreamDamage,
    VerifyReport,
)
from onward.events.kinds import (
    BreakerState,
    DegradationLevel,
    ErrorKind,
    FlowState,
    Jitter,
    Priority,
    Strategy,
)
from onward.events.limit import LimitSet, PermitReturned, PermitTaken
from onward.events.log import (
    Append,
    AppendResult,
    Checkpoint,
    Clock,
    Context,
    EventLog,
    StreamTail,
    new_event_id,
)
from onward.events.message import MessageReceived, MessageSent, StateSet
from onward.events.redaction import RecordRedactor, Redactor, SecretPattern, redacted_logger
from onward.events.retry import (
    RetryScheduled,
)
from onward.events.schedule import ScheduleRemoved, ScheduleSet, ScheduleTicked
from onward.events.session import (
    SessionEnded,
    SessionPaused,
    SessionResumed,
    SessionStarted,
)
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
from onward.events.url import open_log
from onward.events.values import MAX_VALUE_DEPTH, decode_value, encode_value
from onward.events.watch import Watch
from onward.events.worker import WorkerClaimExpired, WorkerHeartbeat, WorkerStopped

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DEFAULT_PAYLOAD_LIMIT",
    "MAX_EVENT_DEPTH",
    "MAX_VALUE_DEPTH",
    "ActionChecked",
    "ActionUndone",
    "Append",
    "AppendResult",
    "ApprovalDenied",
    "ApprovalGranted",
    "ApprovalRequested",
    "BackendError",
    "BreakerClosed",
    "BreakerHalfOpened",
    "BreakerOpened",
    "BreakerState",
    "Checkpoint",
    "Clock",
    "Codec",
    "ComponentFailed",
    "ComponentRestored",
    "ConflictError",
    "Context",
    "CorruptRecord",
    "DecisionMade",
    "DegradationLevel",
    "ErrorClassified",
    "ErrorKind",
    "ErrorObserved",
    "Event",
    "EventLog",
    "ExportFile",
    "ExportSummary",
    "FixAttempted",
    "FixFailed",
    "FixLearned",
    "FixSucceeded",
    "FlowState",
    "FlowStateChanged",
    "HeadCheck",
    "ImportConflict",
    "ImportSummary",
    "InterruptionDeferred",
    "InterruptionDelivered",
    "InvalidArchive",
    "InvalidURL",
    "Jitter",
    "LimitSet",
    "LogDamaged",
    "LogHead",
    "LogNotFound",
    "MessageReceived",
    "MessageSent",
    "Meta",
    "NotALog",
    "OnwardError",
    "PatchMarked",
    "PayloadTooLarge",
    "PermitReturned",
    "PermitTaken",
    "Priority",
    "Problem",
    "ProblemKind",
    "RecordRedactor",
    "Recorded",
    "Redactor",
    "RetryScheduled",
    "ScheduleRemoved",
    "ScheduleSet",
    "ScheduleTicked",
    "SecretPattern",
    "SessionEnded",
    "SessionPaused",
    "SessionResumed",
    "SessionStarted",
    "StateSet",
    "StepCompleted",
    "StepFailed",
    "StepStarted",
    "StepWithdrawn",
    "StorageUnavailable",
    "Strategy",
    "StreamDamage",
    "StreamTail",
    "SubtasksRead",
    "TaskCancelled",
    "TaskClaimed",
    "TaskDeadlineMissed",
    "TaskFailed",
    "TaskLeaseExpired",
    "TaskProgressed",
    "TaskQuarantined",
    "TaskReleased",
    "TaskReprioritised",
    "TaskRetried",
    "TaskSubmitted",
    "TaskSucceeded",
    "TaskUnregistered",
    "TaskWaiting",
    "ThresholdsAdjusted",
    "UnencodableValue",
    "UnknownEvent",
    "UnknownEventType",
    "Upcaster",
    "UsageError",
    "VerifyReport",
    "VersionConflict",
    "Watch",
    "WorkaroundApplied",
    "WorkerClaimExpired",
    "WorkerHeartbeat",
    "WorkerStopped",
    "all_event_types",
    "blob_digest",
    "decode_value",
    "encode_value",
    "export_log",
    "import_log",
    "new_event_id",
    "open_log",
    "read_export",
    "redacted_logger",
]
