"""What healing did in one demo run: the parent's read-only fold of the session's errors, fixes,
retries, breaker moves and lessons (part of ``onward demo``).

:class:`HealingFold` reads every event of the log in order (the parent's :class:`Watch` feeds
it), keeps what belongs to one session, and remembers from the events before it which error
signatures had been fixed already (a fix succeeded, or a person taught one). :func:`healing`
then puts it together with the engine's own projections (signature kinds and fix success rates
across sessions, from :mod:`onward.projections.errors`) into a :class:`Healing`.

"Fixed on first sight": an error of this run whose signature had been fixed before, and whose
first fix, chosen at once, made its step succeed (no retry, no second fix).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from onward.events import (
    BreakerClosed,
    BreakerHalfOpened,
    BreakerOpened,
    DecisionMade,
    ErrorObserved,
    FixAttempted,
    FixLearned,
    FixSucceeded,
    Recorded,
    RetryScheduled,
    StepCompleted,
    StepFailed,
)
from onward.projections import Projections
from onward.projections.task import TASK_PREFIX

__all__ = [
    "BreakerMove",
    "BreakerStory",
    "FirstSight",
    "FixLine",
    "Healing",
    "HealingFold",
    "Lesson",
    "SignatureLine",
    "healing",
]


class SignatureLine(msgspec.Struct, frozen=True, kw_only=True):
    """One error signature met in the run.

    Attributes:
        signature: its id.
        error_type: the exception's type (qualified outside builtins).
        message: its normalised message.
        kind: "transient", "systemic" or "unknown", as the error-learning DB judges it now.
        step: the step that raised it.
        errors: how often it was observed in the run.
        fixed: how many of those a fix cured.
        fixes: the fixes that cured it, by name, with how often.
        retried: how many of those a retry cured.
        given_up: how many of those were the step's final outcome.
        known: whether a fix had cured it (or was taught for it) before the run.
    """

    signature: str
    error_type: str
    message: str
    kind: str
    step: str
    errors: int
    fixed: int
    fixes: dict[str, int]
    retried: int
    given_up: int
    known: bool


class FixLine(msgspec.Struct, frozen=True, kw_only=True):
    """How one fix fared: in this run, and across every run of the log.

    Attributes:
        fix: its name.
        attempts: how often it was applied in this run.
        successes: how often its step then succeeded.
        attempts_all: how often it was applied in every run (the error-learning DB).
        successes_all: how often its step then succeeded.
        rate: its smoothed success rate in every run, ``(successes + 1) / (attempts + 2)``, as
            the engine ranks fixes.
    """

    fix: str
    attempts: int
    successes: int
    attempts_all: int
    successes_all: int
    rate: float


class BreakerMove(msgspec.Struct, frozen=True, kw_only=True):
    """A breaker's transition.

    Attributes:
        at: seconds since the run began.
        state: the state it entered ("open", "half_open", "closed").
        why: what moved it.
    """

    at: float
    state: str
    why: str


class BreakerStory(msgspec.Struct, frozen=True, kw_only=True):
    """One dependency's breaker in the run.

    Attributes:
        dependency: the dependency.
        calls: the calls made to it (step tries).
        failures: how many of them failed.
        held: the times a task waited for the half-open moment instead of calling.
        moves: its transitions, in order.
        state: its state at the end of the run.
    """

    dependency: str
    calls: int
    failures: int
    held: int
    moves: list[BreakerMove]
    state: str


class Lesson(msgspec.Struct, frozen=True, kw_only=True):
    """A fix taught for a signature (``engine.learn``, ``onward learn``).

    Attributes:
        signature: the error signature.
        error_type: its type ("" when the log never observed it).
        fix: the fix's name.
        session: the session it was taught in.
        note: why.
    """

    signature: str
    error_type: str
    fix: str
    session: str
    note: str


class FirstSight(msgspec.Struct, frozen=True, kw_only=True):
    """The errors of this run whose signature an earlier run had fixed (or been taught).

    Attributes:
        errors: how many there were.
        fixed: how many the first fix cured at once.
        signatures: how many signatures they had.
    """

    errors: int
    fixed: int
    signatures: int


class Healing(msgspec.Struct, frozen=True, kw_only=True):
    """What healing did in a run.

    Attributes:
        errors: the errors observed in the run.
        kinds: the errors by the kind of their signature.
        signatures: each signature met, most frequent first.
        fixes: each fix applied in the run.
        retries: the retries scheduled.
        retries_succeeded: those whose step then succeeded.
        breakers: each breaker that moved or was called in the run.
        healed_files: files whose ``read`` or ``parse`` a fix cured.
        learned: the fixes taught in this run.
        learned_before: the fixes taught in earlier runs.
        first_sight: the errors that earlier runs had fixed (None on a log's first run).
        healed_task: the task with the most healing to show (None when nothing was healed).
    """

    errors: int
    kinds: dict[str, int]
    signatures: list[SignatureLine]
    fixes: list[FixLine]
    retries: int
    retries_succeeded: int
    breakers: list[BreakerStory]
    healed_files: int
    learned: list[Lesson]
    learned_before: list[Lesson]
    first_sight: FirstSight | None
    healed_task: str | None


class _Occurrence:
    """One observed error, and whether its first fix cured it."""

    __slots__ = ("fix", "fixed", "known", "signature")

    def __init__(self, signature: str, known: bool) -> None:
        self.signature = signature
        self.known = known
        self.fix = ""
        self.fixed = False


class _Breaker:
    __slots__ = ("calls", "failures", "held", "last_error", "moves", "state")

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.held = 0
        self.last_error = ""
        self.moves: list[BreakerMove] = []
        self.state = "closed"


_Key = tuple[str, int]  # (stream, step index)


class HealingFold:
    """Folds the healing facts of one session (feed it every record of the log, in order).

    Args:
        session: the session of the run.
    """

    def __init__(self, session: str) -> None:
        self.session = session
        self.started: float | None = None
        self.earlier = False  # whether other sessions wrote to the log before this one
        self.known: set[str] = set()  # signatures fixed or taught before the session
        self.lessons: list[Lesson] = []
        self.types: dict[str, str] = {}  # signature -> error type, from every session
        self.errors: Counter[str] = Counter()
        self.messages: dict[str, str] = {}
        self.steps: dict[str, str] = {}  # signature -> the step that raised it
        self.fixed: Counter[str] = Counter()
        self.fixed_by: dict[str, Counter[str]] = {}
        self.retried: Counter[str] = Counter()
        self.given_up: Counter[str] = Counter()
        self.fix_attempts: Counter[str] = Counter()
        self.fix_successes: Counter[str] = Counter()
        self.retries = 0
        self.retry_successes = 0
        self.healed_files = 0
        self.breakers: dict[str, _Breaker] = {}
        self.occurrences: list[_Occurrence] = []
        self.healing_by_task: Counter[str] = Counter()
        self._open: dict[_Key, _Occurrence] = {}
        self._step_names: dict[_Key, str] = {}
        self._retrying: dict[_Key, str] = {}

    def apply(self, r: Recorded) -> None:
        """Fold one record."""
        event = r.event
        if isinstance(event, ErrorObserved):
            self.types[event.signature] = event.error_type
        if r.meta.session != self.session:
            if self.started is None:
                self.earlier = self.earlier or bool(r.meta.session)
                if isinstance(event, FixSucceeded):
                    self.known.add(event.signature)
                elif isinstance(event, FixLearned):
                    self.known.add(event.signature)
                    self.lessons.append(self._lesson(r, event))
            return
        if self.started is None:
            self.started = r.meta.time
        self._fold(r, event)

    def _lesson(self, r: Recorded, event: FixLearned) -> Lesson:
        return Lesson(
            signature=event.signature,
            error_type=self.types.get(event.signature, ""),
            fix=event.fix,
            session=r.meta.session,
            note=event.note,
        )

    def _fold(self, r: Recorded, event: Any) -> None:
        stream = r.stream
        if isinstance(event, StepFailed):
            key = (stream, event.index)
            self._step_names[key] = event.name
            self._retrying.pop(key, None)
            if event.final and event.signature:
                self.given_up[event.signature] += 1
            if event.dependency:
                breaker = self._breaker(event.dependency)
                breaker.calls += 1
                breaker.failures += 1
                breaker.last_error = event.error_type.rpartition(".")[2]
        elif isinstance(event, StepCompleted):
            key = (stream, event.index)
            signature = self._retrying.pop(key, None)
            if signature is not None:
                self.retry_successes += 1
                self.retried[signature] += 1
                self.healing_by_task[stream] += 1
            if event.dependency:
                self._breaker(event.dependency).calls += 1
        elif isinstance(event, ErrorObserved):
            signature = event.signature
            self.errors[signature] += 1
            self.messages[signature] = event.message
            index = -1 if event.step_index is None else event.step_index
            self.steps.setdefault(signature, self._step_names.get((stream, index), ""))
            seen = _Occurrence(signature, signature in self.known)
            self.occurrences.append(seen)
            self._open[(stream, index)] = seen
        elif isinstance(event, FixAttempted):
            self.fix_attempts[event.fix] += 1
            occurrence = self._open.get((stream, _index(event.step_index)))
            if occurrence is not None and not occurrence.fix:
                occurrence.fix = event.fix
        elif isinstance(event, FixSucceeded):
            key = (stream, _index(event.step_index))
            self.fix_successes[event.fix] += 1
            self.fixed[event.signature] += 1
            self.fixed_by.setdefault(event.signature, Counter())[event.fix] += 1
            self.healing_by_task[stream] += 2
            if self._step_names.get(key) in ("read", "parse"):
                self.healed_files += 1
            occurrence = self._open.pop(key, None)
            if occurrence is not None and occurrence.fix == event.fix:
                occurrence.fixed = True
        elif isinstance(event, RetryScheduled):
            self.retries += 1
            self._retrying[(stream, event.step_index)] = event.signature
        elif isinstance(event, DecisionMade):
            if event.kind == "breaker" and event.choice == "wait":
                dependency = str(event.inputs.get("dependency", ""))
                self._breaker(dependency).held += 1
                self.healing_by_task[stream] += 1
        elif isinstance(event, BreakerOpened | BreakerHalfOpened | BreakerClosed):
            self._move(r, event)
        elif isinstance(event, FixLearned):
            self.lessons.append(self._lesson(r, event))

    def _breaker(self, dependency: str) -> _Breaker:
        breaker = self.breakers.get(dependency)
        if breaker is None:
            breaker = self.breakers[dependency] = _Breaker()
        return breaker

    def _move(self, r: Recorded, event: BreakerOpened | BreakerHalfOpened | BreakerClosed) -> None:
        breaker = self._breaker(event.dependency)
        at = round(r.meta.time - (self.started or r.meta.time), 2)
        if isinstance(event, BreakerOpened):
            state = "open"
            why = (
                f"the trial call failed: {breaker.last_error}"
                if breaker.state == "half_open"
                else f"{event.consecutive_failures} failures in a row: {breaker.last_error}"
            )
        elif isinstance(event, BreakerHalfOpened):
            state, why = "half_open", "cool-down over: one trial call"
        else:
            state, why = "closed", "the trial call succeeded"
        breaker.state = state
        breaker.moves.append(BreakerMove(at=at, state=state, why=why))


def _index(step_index: int | None) -> int:
    return -1 if step_index is None else step_index


def healing(fold: HealingFold, projections: Projections) -> Healing:
    """The run's healing, from the session's fold and the engine's projections (both folded to
    the end of the log)."""
    errors = projections.errors
    kinds: Counter[str] = Counter()
    lines: list[SignatureLine] = []
    for signature, count in fold.errors.most_common():
        view = errors.get(signature)
        kinds[view.kind] += count
        lines.append(
            SignatureLine(
                signature=signature,
                error_type=fold.types.get(signature, view.error_type),
                message=fold.messages.get(signature, ""),
                kind=view.kind,
                step=fold.steps.get(signature, ""),
                errors=count,
                fixed=fold.fixed[signature],
                fixes=dict(fold.fixed_by.get(signature, Counter()).most_common()),
                retried=fold.retried[signature],
                given_up=fold.given_up[signature],
                known=signature in fold.known,
            )
        )
    every: dict[str, tuple[int, int]] = {}
    for view in errors.signatures.values():
        for name, record in view.fixes.items():
            attempts, successes = every.get(name, (0, 0))
            every[name] = (
                attempts + max(record.attempts, record.successes + record.failures),
                successes + record.successes,
            )
    fixes = []
    for name, attempts in fold.fix_attempts.most_common():
        attempts_all, successes_all = every.get(name, (attempts, fold.fix_successes[name]))
        fixes.append(
            FixLine(
                fix=name,
                attempts=attempts,
                successes=fold.fix_successes[name],
                attempts_all=attempts_all,
                successes_all=successes_all,
                rate=round((successes_all + 1) / (attempts_all + 2), 3),
            )
        )
    breakers = [
        BreakerStory(
            dependency=name,
            calls=b.calls,
            failures=b.failures,
            held=b.held,
            moves=b.moves,
            state=b.state,
        )
        for name, b in sorted(fold.breakers.items())
    ]
    known = [o for o in fold.occurrences if o.known]
    first_sight = None
    if fold.earlier:
        first_sight = FirstSight(
            errors=len(known),
            fixed=sum(1 for o in known if o.fixed),
            signatures=len({o.signature for o in known}),
        )
    top = fold.healing_by_task.most_common(1)  # task streams: fixes, retries, breaker waits
    return Healing(
        errors=sum(fold.errors.values()),
        kinds=dict(kinds.most_common()),
        signatures=lines,
        fixes=fixes,
        retries=fold.retries,
        retries_succeeded=fold.retry_successes,
        breakers=breakers,
        healed_files=fold.healed_files,
        learned=[lesson for lesson in fold.lessons if lesson.session == fold.session],
        learned_before=[lesson for lesson in fold.lessons if lesson.session != fold.session],
        first_sight=first_sight,
        healed_task=top[0][0].removeprefix(TASK_PREFIX) if top else None,
    )
