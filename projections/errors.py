"""The error-learning DB: what each error signature did, and what helped against it.

Per signature: its occurrences, first and last seen, the fixes tried with their successes and
failures, the best fix and its success rate, how retries of it fared, and whether it looks
transient or systemic. It spans sessions, and like every projection it is rebuilt from the log
(replay == live).

It folds events by type, from any stream (task streams and session streams alike):

- :class:`onward.events.ErrorObserved`: an occurrence (time, session, type, message, frames).
- :class:`onward.events.ErrorClassified`: the engine's verdict on the signature.
- :class:`onward.events.FixAttempted`, :class:`onward.events.FixSucceeded`,
  :class:`onward.events.FixFailed`: a fix's attempts and outcomes;
  :class:`onward.events.FixLearned`: a fix known for the signature.
- :class:`onward.events.RetryScheduled`: a retry of the signature, pending until the step's next
  outcome in the same stream: a :class:`onward.events.StepCompleted` makes it a retry success, a
  :class:`onward.events.StepFailed` of the retried try drops it. The times of every retry are also
  kept per session, for the engine's retry budget (:meth:`ErrorProjection.recent_retries`),
  until the retried step completes or its task ends first: a retry that worked, or whose task
  was cancelled before its outcome, spends none of it.

Step outcomes are read by their ``index`` (and ``attempt`` when they carry it), so the lean
step-outcome types of :class:`onward.projections.reading.FoldReader` fold the same as the full
events.

Every history is bounded: a signature keeps its last :data:`HISTORY_LIMIT` entries and its
first :data:`SESSIONS_LIMIT` sessions; a session keeps the times of its last
:data:`RETRY_TIMES_LIMIT` retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from onward.events import (
    ErrorClassified,
    ErrorObserved,
    FixAttempted,
    FixFailed,
    FixLearned,
    FixSucceeded,
    Recorded,
    RetryScheduled,
    TaskCancelled,
    TaskDeadlineMissed,
    TaskFailed,
    TaskQuarantined,
    TaskSucceeded,
)
from onward.projections.reading import FOLDED_STEP_OUTCOMES
from onward.projections.session import SESSION_PREFIX
from onward.projections.task import TASK_PREFIX

__all__ = [
    "HISTORY_LIMIT",
    "RETRY_TIMES_LIMIT",
    "SESSIONS_LIMIT",
    "ErrorProjection",
    "ErrorsState",
    "FixRecord",
    "HistoryEntry",
    "PendingRetry",
    "SignatureView",
]

#: The entries of history each signature keeps (the last ones).
HISTORY_LIMIT = 50
#: The sessions each signature remembers (the first ones seen).
SESSIONS_LIMIT = 20
#: The retry times each session keeps (the last ones), for the retry budget.
RETRY_TIMES_LIMIT = 1000


class FixRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """How one fix fared against one signature.

    Attributes:
        attempts: how many times it was applied.
        successes: how many of those the work then succeeded.
        failures: how many of those the work failed again.
    """

    attempts: int = 0
    successes: int = 0
    failures: int = 0

    @property
    def rate(self) -> float:
        """The Laplace-smoothed success rate ``(successes + 1) / (attempts + 2)``.

        ``attempts`` counts at least every recorded outcome, so the rate stays in (0, 1) even
        when an outcome has no recorded attempt.
        """
        trials = max(self.attempts, self.successes + self.failures)
        return (self.successes + 1) / (trials + 2)


class HistoryEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One thing that happened to a signature.

    Attributes:
        position: the event's position in the log.
        time: the event's time.
        what: what happened, for people ("observed in task t1 step 2", "fix F attempted",
            "fix F succeeded", "retry scheduled in 2.3 s", "learned F", ...).
    """

    position: int
    time: float
    what: str


class SignatureView(msgspec.Struct, kw_only=True):
    """What the log says about one error signature, across sessions.

    Attributes:
        signature: the signature.
        error_type: the qualified type name of its latest occurrence ("" before any).
        message: the message of its latest occurrence.
        frames: the in-app frames of its latest occurrence, outermost first.
        causes: the cause chain of its latest occurrence, nearest first.
        occurrences: how many times it was observed.
        first_seen: the time of its first occurrence (0.0 before any).
        last_seen: the time of its latest occurrence (0.0 before any).
        sessions: the sessions it was observed in, sorted (the first :data:`SESSIONS_LIMIT`).
        classification: the engine's latest verdict ("transient", "systemic", "unknown"; ""
            when never classified).
        classification_reason: what that verdict rests on.
        fixes: each fix tried or resolved against it, by name.
        learned: the fixes learned for it, in the order learned.
        retries: how many retries of it were scheduled.
        retry_successes: how many of those retried steps then completed.
        history: its last :data:`HISTORY_LIMIT` entries, oldest first.
    """

    signature: str
    error_type: str = ""
    message: str = ""
    frames: tuple[str, ...] = ()
    causes: tuple[str, ...] = ()
    occurrences: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    sessions: tuple[str, ...] = ()
    classification: str = ""
    classification_reason: str = ""
    fixes: dict[str, FixRecord] = msgspec.field(default_factory=dict)
    learned: tuple[str, ...] = ()
    retries: int = 0
    retry_successes: int = 0
    history: tuple[HistoryEntry, ...] = ()

    @property
    def best_fix(self) -> str | None:
        """The fix with the highest smoothed success rate (:attr:`FixRecord.rate`) among those
        that succeeded at least once; ties go to the most successes, then to the first name.

        None when no fix has succeeded yet.
        """
        best: tuple[float, int, str] | None = None
        for name, record in self.fixes.items():
            if record.successes < 1:
                continue
            # Highest rate, then most successes, then the smallest name (a stable order).
            key = (-record.rate, -record.successes, name)
            if best is None or key < best:
                best = key
        return None if best is None else best[2]

    @property
    def best_fix_rate(self) -> float:
        """The smoothed success rate of :attr:`best_fix` (0.0 when there is none)."""
        best = self.best_fix
        return 0.0 if best is None else self.fixes[best].rate

    @property
    def retry_rate(self) -> float:
        """The Laplace-smoothed share of retries that worked:
        ``(retry_successes + 1) / (retries + 2)`` (0.5 before any retry)."""
        return (self.retry_successes + 1) / (self.retries + 2)

    @property
    def kind(self) -> str:
        """Whether the error looks "transient", "systemic" or "unknown", by this rule:

        1. "systemic" if it recurs although fixes and retries failed: at least 3
           occurrences, no fix ever succeeded, and at least 2 retries none of which worked;
        2. else "transient" if retries of it usually work (at least 2 retries and a
           :attr:`retry_rate` of 0.5 or more), or the engine classified it transient (rule 1,
           evaluated on the current history, takes precedence over that verdict);
        3. else the engine's latest classification, if any;
        4. else "unknown".
        """
        fixed = any(record.successes for record in self.fixes.values())
        if self.occurrences >= 3 and not fixed and self.retries >= 2 and self.retry_successes == 0:
            return "systemic"
        if (self.retries >= 2 and self.retry_rate >= 0.5) or self.classification == "transient":
            return "transient"
        return self.classification or "unknown"


class PendingRetry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A retry scheduled and not yet resolved, as a checkpoint holds it.

    Attributes:
        stream: the task stream of the retried step.
        step_index: the retried step.
        signature: the error signature that was retried ("" when not computed).
        attempt: the number of the coming try.
        session: the session whose retry budget it spends.
        position: the position of its :class:`onward.events.RetryScheduled` (what its refund
            takes out of the session's retry times: another retry of the same time stays).
    """

    stream: str
    step_index: int
    signature: str
    attempt: int
    session: str = ""
    position: int = 0


class ErrorsState(msgspec.Struct, array_like=True):
    """The error-learning DB as a checkpoint holds it (see :meth:`ErrorProjection.dump`).

    Attributes:
        signatures: every signature's view.
        pending: the retries awaiting their step's outcome.
        retry_times: per session, the positions and times of its last retries, oldest first.
    """

    signatures: list[SignatureView]
    pending: list[PendingRetry]
    retry_times: dict[str, list[tuple[int, float]]]


def _where(stream: str) -> str:
    """A stream, for people: "task t1", "session nightly", or the stream itself."""
    if stream.startswith(TASK_PREFIX):
        return "task " + stream[len(TASK_PREFIX) :]
    if stream.startswith(SESSION_PREFIX):
        return "session " + stream[len(SESSION_PREFIX) :]
    return "stream " + stream


class ErrorProjection:
    """Folds errors, fixes and retries into one :class:`SignatureView` per signature.

    Attributes:
        signatures: every signature's view, by signature.
    """

    name = "errors"

    def __init__(self) -> None:
        self.signatures: dict[str, SignatureView] = {}
        # stream -> step index -> (signature, coming attempt, session, position)
        self._pending: dict[str, dict[int, tuple[str, int, str, int]]] = {}
        # session -> the position of each of its last retries -> its time, oldest first: a
        # refund takes out its own retry (never another of the same time), or none once the
        # bound let it go
        self._retry_times: dict[str, dict[int, float]] = {}
        self._fold: dict[type[Any], Callable[[Recorded, Any], None]] = {
            ErrorObserved: self._observed,
            ErrorClassified: self._classified,
            FixAttempted: self._fix_attempted,
            FixSucceeded: self._fix_succeeded,
            FixFailed: self._fix_failed,
            FixLearned: self._fix_learned,
            RetryScheduled: self._retry_scheduled,
            TaskSucceeded: self._task_ended,
            TaskFailed: self._task_ended,
            TaskCancelled: self._task_ended,
            TaskDeadlineMissed: self._task_ended,
            TaskQuarantined: self._task_ended,
        }
        for kind in FOLDED_STEP_OUTCOMES:  # the full events and the lean ones alike
            tag = kind.__struct_config__.tag
            self._fold[kind] = self._step_completed if tag == "StepCompleted" else self._step_failed

    # -- folding ---------------------------------------------------------------------------

    def awaits(self, stream: str) -> bool:
        """Whether a retry in this stream waits for its outcome (folds may skip its steps else)."""
        return stream in self._pending

    @property
    def awaiting(self) -> Mapping[str, object]:
        """The streams with a retry waiting for its outcome (``stream in awaiting`` is
        :meth:`awaits`, for a fold's inner loop)."""
        return self._pending

    @property
    def event_types(self) -> frozenset[type[Any]]:
        """The event types this DB reads (a fold may skip the others)."""
        return frozenset(self._fold)

    def apply(self, r: Recorded) -> None:
        """Fold one event, of any stream; events this DB does not read are skipped."""
        fold = self._fold.get(type(r.event))
        if fold is not None:
            fold(r, r.event)

    def _view(self, signature: str) -> SignatureView:
        view = self.signatures.get(signature)
        if view is None:
            view = self.signatures[signature] = SignatureView(signature=signature)
        return view

    @staticmethod
    def _note(view: SignatureView, r: Recorded, what: str) -> None:
        entry = HistoryEntry(r.position, r.meta.time, what)
        history = view.history
        if len(history) >= HISTORY_LIMIT:
            history = history[len(history) - HISTORY_LIMIT + 1 :]
        view.history = (*history, entry)

    def _observed(self, r: Recorded, event: ErrorObserved) -> None:
        view = self._view(event.signature)
        time = r.meta.time
        if not view.occurrences:
            view.first_seen = time
        view.occurrences += 1
        view.last_seen = time
        view.error_type = event.error_type
        view.message = event.message
        view.frames = tuple(event.frames)
        view.causes = tuple(event.causes)
        session = r.meta.session
        if session and session not in view.sessions and len(view.sessions) < SESSIONS_LIMIT:
            view.sessions = tuple(sorted((*view.sessions, session)))
        step = "" if event.step_index is None else f" step {event.step_index}"
        self._note(view, r, f"observed in {_where(r.stream)}{step}")

    def _classified(self, r: Recorded, event: ErrorClassified) -> None:
        view = self._view(event.signature)
        view.classification = event.kind.value
        view.classification_reason = event.reason
        why = f" ({event.reason})" if event.reason else ""
        self._note(view, r, f"classified {event.kind.value}{why}")

    def _fix(self, r: Recorded, signature: str, fix: str, outcome: str) -> None:
        view = self._view(signature)
        record = view.fixes.get(fix, FixRecord())
        if outcome == "attempted":
            record = msgspec.structs.replace(record, attempts=record.attempts + 1)
        elif outcome == "succeeded":
            record = msgspec.structs.replace(record, successes=record.successes + 1)
        else:
            record = msgspec.structs.replace(record, failures=record.failures + 1)
        view.fixes[fix] = record
        self._note(view, r, f"fix {fix} {outcome}")

    def _fix_attempted(self, r: Recorded, event: FixAttempted) -> None:
        if event.again:  # one more application within one attempt: noted, not counted
            self._note(self._view(event.signature), r, f"fix {event.fix} applied again")
            return
        self._fix(r, event.signature, event.fix, "attempted")

    def _fix_succeeded(self, r: Recorded, event: FixSucceeded) -> None:
        self._fix(r, event.signature, event.fix, "succeeded")

    def _fix_failed(self, r: Recorded, event: FixFailed) -> None:
        self._fix(r, event.signature, event.fix, "failed")

    def _fix_learned(self, r: Recorded, event: FixLearned) -> None:
        view = self._view(event.signature)
        if event.fix not in view.learned:
            view.learned = (*view.learned, event.fix)
        self._note(view, r, f"learned {event.fix} ({event.source})")

    def _retry_scheduled(self, r: Recorded, event: RetryScheduled) -> None:
        session = r.meta.session
        times = self._retry_times.get(session)
        if times is None:
            times = self._retry_times[session] = {}
        times[r.position] = r.meta.time
        if len(times) > RETRY_TIMES_LIMIT:
            del times[next(iter(times))]
        self._pending.setdefault(r.stream, {})[event.step_index] = (
            event.signature,
            event.attempt,
            session,
            r.position,
        )
        if not event.signature:  # not computed: it counts against the budget, nothing else
            return
        view = self._view(event.signature)
        view.retries += 1
        self._note(
            view,
            r,
            f"retry scheduled in {event.delay:.1f} s ({_where(r.stream)} step "
            f"{event.step_index}, attempt {event.attempt})",
        )

    def _step_completed(self, r: Recorded, event: Any) -> None:
        steps = self._pending.get(r.stream)
        if steps is None:  # the common case: no retry awaits an outcome in this stream
            return
        pending = steps.pop(event.index, None)
        if not steps:
            del self._pending[r.stream]
        if pending is None:
            return
        signature, _, session, position = pending
        # A retry that worked was no storm: it no longer spends the session's retry budget.
        self._refund(session, position)
        if not signature:
            return
        view = self._view(signature)
        view.retry_successes += 1
        self._note(view, r, f"retry succeeded in {_where(r.stream)} step {event.index}")

    def _step_failed(self, r: Recorded, event: Any) -> None:
        steps = self._pending.get(r.stream)
        if steps is None:
            return
        pending = steps.get(event.index)
        if pending is None:
            return
        attempt = getattr(event, "attempt", None)
        if attempt is not None and attempt < pending[1]:
            return  # the failure that led to the retry, recorded after it: still pending
        del steps[event.index]
        if not steps:
            del self._pending[r.stream]

    def _task_ended(self, r: Recorded, event: Any) -> None:
        # A task that ended runs none of its steps again: its retries will never resolve, and
        # spend no more retry budget (mostly they never ran; one cancelled as its try ran is
        # refunded too). The session that spent them is refunded, whichever ended the task.
        for _, _, session, position in self._pending.pop(r.stream, {}).values():
            self._refund(session, position)

    def _refund(self, session: str, position: int) -> None:
        """The retry scheduled at ``position`` no longer spends the session's retry budget."""
        times = self._retry_times.get(session)
        if times is not None:
            times.pop(position, None)

    # -- reading ---------------------------------------------------------------------------

    def get(self, signature: str) -> SignatureView:
        """The view of a signature (an empty one, not stored, when it was never seen)."""
        view = self.signatures.get(signature)
        return SignatureView(signature=signature) if view is None else view

    def fix_stats(self, signature: str) -> dict[str, FixRecord]:
        """How each fix fared against a signature, by fix name (empty when none was tried)."""
        view = self.signatures.get(signature)
        return {} if view is None else dict(view.fixes)

    def learned(self, signature: str) -> tuple[str, ...]:
        """The fixes learned for a signature, in the order learned."""
        view = self.signatures.get(signature)
        return () if view is None else view.learned

    def recent_retries(self, session: str, since: float) -> list[float]:
        """The times of a session's retries at or after ``since``, oldest first, but for those
        whose step completed since, or whose task ended before their outcome (a retry that
        worked, or whose task was cancelled, spends no retry budget).

        Only the session's last :data:`RETRY_TIMES_LIMIT` retries are kept.
        """
        times = self._retry_times.get(session)
        return [] if times is None else [t for t in times.values() if t >= since]

    def unresolved_retries(self, signature: str) -> int:
        """How many retries of a signature still await their step's outcome."""
        return sum(
            1 for steps in self._pending.values() for sig, *_ in steps.values() if sig == signature
        )

    def pending(self) -> list[PendingRetry]:
        """The retries whose step has no outcome yet, by stream and step."""
        return [
            PendingRetry(stream, index, signature, attempt, session, position)
            for stream, steps in sorted(self._pending.items())
            for index, (signature, attempt, session, position) in sorted(steps.items())
        ]

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every signature (with its derived verdicts), the
        pending retries and the retry times."""
        signatures: dict[str, Any] = {}
        for key, view in sorted(self.signatures.items()):
            plain = msgspec.to_builtins(view)
            plain["fixes"] = dict(sorted(plain["fixes"].items()))
            plain["best_fix"] = view.best_fix
            plain["best_fix_rate"] = view.best_fix_rate
            plain["retry_rate"] = view.retry_rate
            plain["kind"] = view.kind
            signatures[key] = plain
        return {
            "signatures": signatures,
            "pending": msgspec.to_builtins(self.pending()),
            "retry_times": {k: list(v.values()) for k, v in sorted(self._retry_times.items())},
        }

    def dump(self) -> ErrorsState:
        """The whole DB, for a checkpoint (msgspec-encodable)."""
        return ErrorsState(
            signatures=list(self.signatures.values()),
            pending=self.pending(),
            retry_times={k: list(v.items()) for k, v in self._retry_times.items()},
        )

    def load(self, state: ErrorsState) -> None:
        """Restore from a checkpoint's :meth:`dump`."""
        self.signatures = {v.signature: v for v in state.signatures}
        self._pending = {}
        for p in state.pending:
            self._pending.setdefault(p.stream, {})[p.step_index] = (
                p.signature,
                p.attempt,
                p.session,
                p.position,
            )
        self._retry_times = {k: dict(v) for k, v in state.retry_times.items()}
