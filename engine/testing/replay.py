"""Replaying recorded tasks against the registered code, to find non-determinism.

A task is deterministic as onward needs it when, given its recorded step outcomes, its function
calls the same steps in the same order and comes to the same end. :func:`replay_task` runs a
task's function once over its recorded history: every step returns (or raises) its recorded
outcome, and nothing runs or is appended. A step the log does not record at that index, a step
of another name, a different result or a different error is a :class:`Divergence`.
:func:`replay_check` does it for every task of a log; :func:`replay_recorded` for a history
embedded in a test (``onward to-test`` writes such tests).

A task that has not ended may stop where its history stops (that is not a divergence); nor may
one retried after its end that has not ended again. What the code publishes as it runs
(``engine.set_state``, ``engine.progress``, a deferred notice, a patch mark) is no outcome: it is
neither appended nor compared. A subtask the code submits is not appended (its id is returned
as on the recorded run). Its wait for subtasks (``engine.wait``) returns what the recorded run
read there: the subtasks' results (or the error of one that did not succeed) as their own
histories held them when the task went on past the wait. Where the task had not gone on (it
still waits there at the end of its history), the replay stops at the wait and says so
(``partial``); where its history goes on but the subtasks' ends are not at hand (a log without
them, a test written without them), the task is skipped with why. A task's result is compared
as the engine records it (a tuple stays a tuple, a set's members in any order, NaN is NaN
wherever it is, a ``Decimal`` NaN too).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import decimal
import math
import os
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, Union

import msgspec

from onward.core.batch import Batch
from onward.core.definitions import StepDef
from onward.core.errors import StepMismatch, TaskNotFound
from onward.core.run import Suspended
from onward.events import (
    Context,
    Event,
    EventLog,
    MessageReceived,
    Meta,
    PatchMarked,
    Recorded,
    StepCompleted,
    StepFailed,
    StepStarted,
    TaskFailed,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    TaskWaiting,
    UsageError,
    all_event_types,
    decode_value,
    encode_value,
    open_log,
)
from onward.projections import CatchUp, inbox_stream, task_stream
from onward.runtime.engine import Engine
from onward.runtime.forks import inherited_records, recorded_outcomes
from onward.runtime.registry import Registry
from onward.runtime.run import (
    CURRENT_RUN,
    Admit,
    Blocking,
    Commit,
    Effect,
    Invoke,
    Publishing,
    Settle,
    SubtaskEnds,
    TaskRun,
    receive_name,
)
from onward.runtime.target import load_engine
from onward.runtime.tasks import append_message, append_submission, message_version
from onward.testing._subtasks import ended_as_recorded, pinned_key, subtask_ends

__all__ = [
    "Divergence",
    "ReplayCheck",
    "decode_history",
    "encode_history",
    "load_engine",
    "replay_check",
    "replay_recorded",
    "replay_task",
]


class Divergence(msgspec.Struct, frozen=True, kw_only=True):
    """Where the code and a task's recorded history part.

    Attributes:
        task_id: the task.
        name: its registered name.
        kind: ``step`` (another step at an index), ``submit`` (another subtask, or other
            arguments, where the history submitted one), ``unrecorded`` (a step, a sleep or a
            receive the history does not hold, in a task that ended), ``fewer`` (the code
            ended before the recorded steps did), ``result`` (another result), ``error``
            (another error, or an error where the task succeeded, or none where it failed).
        index: the step index concerned (None for the task's end).
        expected: what the log records.
        found: what the code did.
    """

    task_id: str
    name: str
    kind: str
    index: int | None
    expected: str
    found: str

    def __str__(self) -> str:
        at = f" at step {self.index}" if self.index is not None else ""
        return (
            f"task {self.task_id} ({self.name}){at}: {self.kind}: the log records "
            f"{self.expected}, the code {self.found}"
        )


class ReplayCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What replaying tasks against the code found.

    Attributes:
        checked: the tasks replayed.
        steps: the recorded step outcomes the code called for, in all.
        divergences: where the code and the log part (empty: deterministic).
        skipped: tasks not replayed, each with why (not registered here, never run).
        cut_short: of the skipped tasks, those whose history no replay can follow to its
            end: the code gave up on a call before it had an outcome (a timeout around a
            step of an ``async def`` task), so how it went on from there is not in the log.
        partial: of the checked tasks, those replayed only up to a wait for subtasks that
            had not all ended where their history ends (the task still waited there), each
            with where: the code after that wait is not checked.
        unregistered: of the skipped tasks, those whose name the engine does not register.
    """

    checked: int = 0
    steps: int = 0
    divergences: tuple[Divergence, ...] = ()
    skipped: tuple[str, ...] = ()
    cut_short: int = 0
    partial: tuple[str, ...] = ()
    unregistered: int = 0

    @property
    def ok(self) -> bool:
        """Whether no divergence was found, and the code knew one task at least: where it
        replayed none because it registers none of them (a rename without an alias, the wrong
        engine), nothing is proven."""
        return not self.divergences and not (self.checked == 0 and self.unregistered)

    def explain(self) -> str:
        """The check for people: one line, then each divergence, each skipped task and each
        task checked only in part."""
        if self.divergences:
            verdict = f"{len(self.divergences)} divergence(s)"
        elif self.ok:
            verdict = "deterministic"
        else:
            verdict = "nothing replayed: none of the tasks is registered on this engine"
        lines = [f"{self.checked} task(s) replayed over {self.steps} recorded step(s): {verdict}"]
        lines += [f"  {d}" for d in self.divergences]
        lines += [f"  skipped: {s}" for s in self.skipped]
        lines += [f"  checked in part: {p}" for p in self.partial]
        return "\n".join(lines)


#: What a step, a sleep or a receive appends: the outcomes (and waits) a history holds.
_CALLS = (StepStarted, StepCompleted, StepFailed, MessageReceived, TaskWaiting)


class _Resubmitted(BaseException):
    """The code submits another subtask than the history records at that place (a
    BaseException, as :class:`_Unrecorded` is)."""

    def __init__(self, recorded: str, current: str) -> None:
        super().__init__(recorded, current)
        self.recorded = recorded
        self.current = current


def _submitted(event: TaskSubmitted) -> tuple[str, Any, Any]:
    """A submission's task name, arguments and keyword arguments, decoded."""
    return event.name, decode_value(event.args), decode_value(event.kwargs)


def _submission(name: str, args: Any, kwargs: Any) -> str:
    """A subtask's submission as a divergence shows it: ``name(args, kwargs)``."""
    given = [_clip(a) for a in args] + [f"{k}={_clip(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(given)})"


class _Unrecorded(BaseException):
    """The code reached a step, a sleep or a receive that the history does not hold.

    A BaseException, so that a task's own ``except Exception`` does not swallow it.
    """

    def __init__(self, name: str, index: int) -> None:
        super().__init__(name, index)
        self.name = name
        self.index = index


class _ReplayRun(TaskRun):
    """A task run that only reads its history: every effect that would run a step, a sleep or
    a receive stops the replay instead, what the code publishes (a state, its progress) is
    dropped, a subtask is not submitted, and a wait for subtasks that the replay cannot answer
    (:mod:`onward.testing._subtasks`) ends it as the recorded run was suspended there."""

    def __init__(
        self,
        log: EventLog,
        task_id: str,
        history: list[Recorded],
        context: Context,
        clock: Callable[[], float],
        inherited: Sequence[Recorded] | None = None,
        *,
        subtasks: Mapping[str, Sequence[Recorded]],
        registry: Registry,
    ) -> None:
        submitted = history[0].event
        assert isinstance(submitted, TaskSubmitted)
        if inherited is None:  # a fork's origin, from the log
            inherited = inherited_records(log, submitted)
        super().__init__(
            log, task_id, task_stream(task_id), history, context, clock, inherited=inherited
        )
        #: The step indices the history (and, for a fork, its origin) gives an outcome.
        self.recorded = set(recorded_outcomes([*inherited, *history]))
        #: The replay reached a wait for subtasks it cannot answer: it ends there, whatever
        #: the task's code does with the signal (a bare ``except:`` catches it).
        self.waited = False
        #: The subtasks of that wait, and the index of the call after it.
        self.waited_for: tuple[str, ...] = ()
        self.waited_at = 0
        #: The subtasks' ends as the recorded run read them (see :func:`subtask_ends`).
        self.subtasks = subtasks
        self.registry = registry
        self.replaying = True
        #: Whether the history's current attempt ended: its code went no further than it
        #: records, so a change it did not mark was not taken (``engine.patched``).
        self.ended = False
        for r in history:
            if isinstance(r.event, TaskSucceeded | TaskFailed):
                self.ended = True
            elif isinstance(r.event, TaskRetried):
                self.ended = False

    def _patch_mark(self, change_id: str) -> bool | PatchMarked:
        mark = super()._patch_mark(change_id)
        if isinstance(mark, PatchMarked) and self.ended:
            return False  # the recorded run ended without taking the new path
        return mark

    def subtasks_ended(
        self, ids: list[str], read: Callable[[list[str], list[int] | None], SubtaskEnds | None]
    ) -> list[Any] | None:
        """A wait for subtasks, answered from the ends the recorded run read (never from the
        log as it is now): at the versions a recorded read of them gives (matched to the
        waits in order, as a worker's run matches them), else as they ended."""
        recorded = self._recorded_read(ids)
        if recorded is not None:
            pinned = {
                child: self.subtasks.get(pinned_key(child, version), ())
                for child, version in zip(ids, recorded.versions, strict=False)
            }
            return ended_as_recorded(ids, pinned, self.registry)
        return ended_as_recorded(ids, self.subtasks, self.registry)

    def _wait(self, on: Sequence[str]) -> NoReturn:
        if not self.waited:
            self.waited, self.waited_for, self.waited_at = True, tuple(on), self.index
        raise Suspended()

    def _stop(self, effect: Effect) -> Any:
        if isinstance(effect, Invoke):
            raise _Unrecorded(effect.step.name, self.index - 1)
        if isinstance(effect, Commit):
            self._append(effect.batch.events)
            return None
        if isinstance(effect, Settle | Admit):
            return None  # nothing runs at once in a replay
        if isinstance(effect, Publishing):
            return None  # a notice delivered to people: a replay tells nobody
        if not isinstance(effect, Blocking):
            raise _Unrecorded("a durable call", self.index - 1)
        if effect.fn == self.record:  # a sleep's or a receive's outcome, or its wait
            self._append(effect.args[0])
            return None
        if effect.fn is _no_messages:
            return []
        if effect.fn is append_submission:
            # A subtask: never appended (its wait is answered from its end); one the history
            # holds under that id as another task, or with other arguments, is another call.
            _log, task_id, event, _context = effect.args
            self._check_submission(task_id, event)
            return None
        if effect.fn is append_message:
            # A message the task sent: never sent again. Its place in the inbox when it is
            # there (0 for one sent by an onward that did not number messages yet).
            _log, task_id, _event, _context, message_id, numbered = effect.args
            inbox = self.log.read_stream(inbox_stream(task_id))
            sent = message_version(inbox, message_id)
            if sent is None and numbered is not None:
                sent = message_version(inbox, numbered)
            return 0 if sent is None else sent
        # A step's permit, breaker or ruling, before the step runs: the step is not recorded.
        step = next((a for a in effect.args if isinstance(a, StepDef)), None)
        raise _Unrecorded("a durable call" if step is None else step.name, self.index - 1)

    def _check_submission(self, task_id: str, event: TaskSubmitted) -> None:
        """Stop where the code submits, under a subtask id the history made, another task than
        the one recorded there (another name, other arguments).

        Raises:
            _Resubmitted: it does.
        """
        ends = self.subtasks.get(task_id)
        records = ends if ends is not None else self.log.read_stream(task_stream(task_id))
        recorded = records[0].event if records else None
        if not records and self._went_on_past():
            # The log holds the task's history and every subtask its runs submitted: this
            # one it never made, although the recorded run went on past this place.
            raise _Resubmitted("no subtask here", _submission(*_submitted(event)))
        if not isinstance(recorded, TaskSubmitted):
            return  # not in the log (a submission the recorded run had not reached)
        before = _submitted(recorded)
        now = _submitted(event)
        if not _same(before, now):
            raise _Resubmitted(_submission(*before), _submission(*now))

    def _went_on_past(self) -> bool:
        """Whether the recorded run went on past the code's place, in a log that holds the
        task's history (``replay_check``'s, or the engine's own): the history's attempt
        ended, or records a call at this index or after it. (A test ``onward to-test``
        wrote holds its history alone, not in the log it replays on: not known there.)"""
        if not self.ended and max([*self.recorded, *self.started], default=-1) < self.index:
            return False
        return bool(self.log.read_stream(self.stream))

    def _append(self, events: Sequence[Event]) -> None:
        """Stop where the code would append an outcome the history does not hold, and drop
        what it publishes (a state, its progress, a notice): a replay appends nothing."""
        for event in events:
            if isinstance(event, TaskWaiting) and event.reason == "subtasks":
                self._wait(event.on)
        if any(isinstance(e, _CALLS) for e in events):
            raise _Unrecorded(self._called(events), self.index - 1)

    def _called(self, events: Sequence[Event]) -> str:
        """The call that appends these outcomes, named as a step mismatch names it (the step,
        ``onward.sleep``, ``onward.recv('topic')``)."""
        for event in events:
            if isinstance(event, MessageReceived) or (
                isinstance(event, TaskWaiting) and event.topic
            ):
                return receive_name(event.topic)
        for event in events:
            if isinstance(event, StepStarted | StepCompleted | StepFailed):
                return event.name
        begun = self.started.get(self.index - 1)  # a wait again, for a call begun before
        if begun is not None:
            return begun
        waits = [e.reason for e in events if isinstance(e, TaskWaiting)]
        return f"a wait ({waits[0]})" if waits else "a durable call"

    def effect(self, effect: Effect) -> Any:
        return self._stop(effect)

    async def effect_async(self, effect: Effect) -> Any:
        return self._stop(effect)

    def receiving(
        self, topic: str, timeout: float | None, inbox: Callable[[int], list[Recorded]]
    ) -> Generator[Effect, Any, Any]:
        # A message the history does not record as taken was not taken: the replay reads no
        # inbox (the engine's log need not be the history's), and stops where it would take one.
        return super().receiving(topic, timeout, _no_messages)

    def record(self, events: list[Event]) -> None:
        self._append(events)

    async def record_async(self, events: list[Event]) -> None:
        self._append(events)

    def commit(self, batch: Batch) -> None:
        self._append(batch.events)

    async def commit_async(self, batch: Batch) -> None:
        self._append(batch.events)


def _no_messages(_after: int) -> list[Recorded]:
    """A replay's inbox: empty."""
    return []


def _same(a: Any, b: Any) -> bool:
    """Whether two values read back from the log are the same: of the same types throughout,
    every NaN (a float's, a ``Decimal``'s, quiet or signalling) the same as NaN wherever it is
    (as the log records it), a set's members and a dict's keys in any order; a float's sign, a
    ``Decimal``'s digits and an aware time's offset as the log records them. Never raises."""
    if type(a) is not type(b):
        return False
    if _is_nan(a) or _is_nan(b):
        return _is_nan(a) and _is_nan(b)
    if type(a) is list or type(a) is tuple:
        return len(a) == len(b) and all(map(_same, a, b))
    if type(a) is set or type(a) is frozenset:
        return Counter(map(_member, a)) == Counter(map(_member, b))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        theirs: dict[Any, list[Any]] = {}
        for key, value in b.items():  # NaN keys are many keys: each is matched once
            theirs.setdefault(_member(key), []).append(value)
        for key, value in a.items():
            values = theirs.get(_member(key))
            if not values or not _same(value, values.pop(0)):
                return False
        return True
    if type(a) is float:  # -0.0 is recorded as itself
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is decimal.Decimal:  # 1.10 is recorded as itself, not as 1.1
        return bool(a.as_tuple() == b.as_tuple())
    if type(a) is datetime.datetime or type(a) is datetime.time:  # an aware one keeps its offset
        return bool(a == b and a.utcoffset() == b.utcoffset())
    try:
        return bool(a == b)
    except Exception:  # a type whose comparison raises: not known to be the same
        return False


#: What every NaN among set members and dict keys stands as (see :func:`_member`).
_NAN = object()


def _is_nan(value: Any) -> bool:
    return (type(value) is float and math.isnan(value)) or (
        type(value) is decimal.Decimal and value.is_nan()
    )


def _member(value: Any) -> Any:
    """A set member or a dict key as :func:`_same` compares it, hashable: with its type (1,
    1.0 and True differ), every NaN the same, a tuple's and a frozenset's members alike."""
    if _is_nan(value):
        return (type(value), _NAN)
    if type(value) is tuple:
        return (tuple, tuple(map(_member, value)))
    if type(value) is frozenset:
        return (frozenset, frozenset(Counter(map(_member, value)).items()))
    return (type(value), value)


def _run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run an ``async def`` task's coroutine to its end on an event loop of its own."""
    return _off_the_loop(lambda: asyncio.run(coroutine))


def _run_plain(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Run a plain task's function, as a worker runs it: on an event loop's thread its steps
    would return awaitables."""
    return _off_the_loop(lambda: fn(*args, **kwargs))


def _off_the_loop(call: Callable[[], Any]) -> Any:
    """``call()`` in this thread, or in another (in this context: the replay's run) when this
    one runs an event loop already (an async test, a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return call()

    def in_its_thread() -> Any:
        run = CURRENT_RUN.get()
        if run is not None:
            run.thread = threading.get_ident()  # the task's code runs here: its steps too
        return call()

    context = contextvars.copy_context()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="onward-replay") as pool:
        return pool.submit(context.run, in_its_thread).result()


def _clip(value: Any, width: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def replay_task(
    engine: Engine,
    history: Sequence[Recorded],
    inherited: Sequence[Recorded] | None = None,
    *,
    subtasks: Mapping[str, Sequence[Recorded]] | None = None,
    log: EventLog | None = None,
) -> ReplayCheck:
    """Replay one task's recorded history against the code registered on ``engine``.

    Args:
        engine: the engine the task's function and steps are registered on (its log is never
            written).
        history: the task's stream, in version order (its ``TaskSubmitted`` first).
        inherited: for a fork, the records of its origin that give its first steps their
            outcomes (:func:`onward.runtime.forks.inherited_records`); None: read from
            ``engine``'s log.
        subtasks: the subtasks whose ends its waits (``engine.wait``) return, each as its
            ``TaskSubmitted`` and its end (``TaskSucceeded``, ``TaskFailed``...) as they
            were when the task went on past its wait for it; None: read from ``engine``'s log.
        log: the log that holds the history, read for what the history refers to (a fork's
            origin, the subtasks it submitted, the messages it sent); None: ``engine``'s.

    Returns:
        The check of that one task.

    Raises:
        UsageError: ``engine`` is not an :class:`~onward.Engine`, or the history does not
            start with a task's submission.
    """
    _check_engine(engine)
    if not history or not isinstance(history[0].event, TaskSubmitted):
        raise UsageError("a task's history starts with its TaskSubmitted")
    submitted = history[0].event
    task_id = history[0].stream.removeprefix("task-")
    if not engine.registry.knows(submitted.name):  # under its name, or a former one
        return ReplayCheck(
            skipped=(f"task {task_id}: {submitted.name!r} is not registered",), unregistered=1
        )
    definition = engine.registry.task(submitted.name)
    end: TaskSucceeded | TaskFailed | None = None
    for r in history:
        if isinstance(r.event, TaskSucceeded | TaskFailed):
            end = r.event
        elif isinstance(r.event, TaskRetried):  # a new attempt: the end before it is undone
            end = None
    log = engine.log if log is None else log
    if subtasks is None:
        try:
            children = engine.task_view(task_id).children
        except TaskNotFound:
            children = ()
        subtasks = subtask_ends(log, history, children)
    run = _ReplayRun(
        log,
        task_id,
        list(history),
        Context(session=history[0].meta.session, actor="replay-check", correlation_id=task_id),
        lambda: history[-1].meta.time,
        inherited,
        subtasks=subtasks,
        registry=engine.registry,
    )
    recorded = run.recorded
    found: list[Divergence] = []

    redact = engine.log.redactor.redact

    def diverged(kind: str, index: int | None, expected: str, got: str) -> None:
        # What the code did now (an error it raised, a value it returned) has not passed the
        # redactor as the log's side has: a test's output is a route out like any other.
        found.append(
            Divergence(
                task_id=task_id,
                name=submitted.name,
                kind=kind,
                index=index,
                expected=redact(expected),
                found=redact(got),
            )
        )

    run.thread = threading.get_ident()
    token = CURRENT_RUN.set(run)
    result: Any = None
    error: BaseException | None = None
    try:
        args, kwargs = definition.arguments(submitted.args, submitted.kwargs)  # as a worker's
        if definition.is_async:
            result = _run_coroutine(definition.fn(*args, **kwargs))
            run.check_awaited()  # as a worker checks it: a call left unawaited fails it
        else:
            result = _run_plain(definition.fn, args, kwargs)
    except BaseException as exc:
        error = _signal(exc)
        if not isinstance(error, Exception | _Unrecorded | _Resubmitted | Suspended):
            raise  # the process is interrupted (KeyboardInterrupt...): not the task's doing
    finally:
        CURRENT_RUN.reset(token)
    if run.waited:
        return _stopped_at_wait(run, task_id, end, subtasks)
    if isinstance(error, _Unrecorded):
        stop = error
        if stop.index < max(recorded, default=-1):
            # Nothing here, yet later calls have outcomes: this call was cut off before its
            # outcome (a timeout or a cancel around it in an async task, which leaves nothing
            # in the log). How the code went on depends on when that happened: not replayed.
            why = (
                f"task {task_id}: its call at step {stop.index} ({stop.name!r}) was cancelled "
                "before it had an outcome (a timeout around it?): a replay cannot tell how the "
                "code went on from there"
            )
            return ReplayCheck(steps=run.steps_replayed, skipped=(why,), cut_short=1)
        if end is not None:
            diverged("unrecorded", stop.index, "no outcome here", f"calls {stop.name!r}")
        return ReplayCheck(checked=1, steps=run.steps_replayed, divergences=tuple(found))
    if isinstance(error, StepMismatch):
        diverged("step", error.index, repr(error.recorded), f"calls {error.current!r}")
        return ReplayCheck(checked=1, steps=run.steps_replayed, divergences=tuple(found))
    if isinstance(error, _Resubmitted):
        diverged("submit", None, error.recorded, f"submits {error.current}")
        return ReplayCheck(checked=1, steps=run.steps_replayed, divergences=tuple(found))
    if end is None or isinstance(error, Suspended):
        return ReplayCheck(checked=1, steps=run.steps_replayed)
    if run.index <= max(recorded, default=-1):
        diverged(
            "fewer",
            run.index,
            f"{max(recorded) + 1} steps",
            f"ends after {run.index}",
        )
    if error is None:
        # Compared as the engine records a task's result, and read back as it is read.
        try:
            result = decode_value(
                encode_value(
                    result,
                    what=f"task {task_id} ({submitted.name}): its result",
                    redactor=engine.log.redactor,
                )
            )
        except UsageError as exc:  # the engine records such a task as failed with it
            error = exc
    if isinstance(end, TaskSucceeded):
        recorded_result = decode_value(end.result)
        if error is not None:
            diverged("error", None, f"a result {_clip(recorded_result)}", f"raises {error!r}")
        elif not _same(result, recorded_result):
            diverged("result", None, _clip(recorded_result), f"returns {_clip(result)}")
    elif error is None:
        diverged("error", None, f"{end.error_type}: {end.message}", f"returns {_clip(result)}")
    elif type(error).__name__ != end.error_type.rpartition(".")[2]:
        diverged("error", None, f"{end.error_type}: {end.message}", f"raises {error!r}")
    return ReplayCheck(checked=1, steps=run.steps_replayed, divergences=tuple(found))


def _signal(error: BaseException) -> BaseException:
    """What ended a replayed run: ``error``, or for a group of errors (an ``asyncio.TaskGroup``'s,
    nested or not) that holds the replay's own signal, that signal: the earliest call the
    history holds no outcome for, else a step mismatch, else a wait. As a worker takes the
    engine's signal out of such a group, the replay takes its own: the code's other branches
    raised on a path that the history no longer vouches for."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    unrecorded = [e for e in _leaves(error.subgroup(_Unrecorded)) if isinstance(e, _Unrecorded)]
    if unrecorded:
        return min(unrecorded, key=lambda stop: stop.index)
    for kind in (StepMismatch, _Resubmitted, Suspended):
        found = _leaves(error.subgroup(kind))
        if found:
            return found[0]
    return error


def _leaves(group: BaseExceptionGroup[BaseException] | None) -> list[BaseException]:
    """The errors of a group and of the groups in it, in order."""
    if group is None:
        return []
    found: list[BaseException] = []
    for error in group.exceptions:
        found += _leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return found


def _stopped_at_wait(
    run: _ReplayRun,
    task_id: str,
    end: TaskSucceeded | TaskFailed | None,
    subtasks: Mapping[str, Sequence[Recorded]],
) -> ReplayCheck:
    """The check of a task whose replay stopped at a wait for subtasks without their ends:
    checked in part where its history ends in that wait (the task still waited there), and
    skipped where its history goes on past it (the code after it was not replayed)."""
    missing = [t for t in run.waited_for if t not in subtasks] or list(run.waited_for)
    where = f"its wait for subtask(s) {', '.join(missing)} (before step {run.waited_at})"
    if end is not None or max([*run.recorded, *run.started], default=-1) >= run.waited_at:
        why = (
            f"task {task_id}: its history goes on past {where}, but their ends from before "
            "it went on are not at hand (not in the log, or not in a test `onward to-test` "
            "wrote before it embedded them: write it again): the code after the wait was "
            "not replayed"
        )
        return ReplayCheck(steps=run.steps_replayed, skipped=(why,))
    note = (
        f"task {task_id}: replayed up to {where}, where its history ends: the code after "
        "the wait was not replayed"
    )
    return ReplayCheck(checked=1, steps=run.steps_replayed, partial=(note,))


def _merge(checks: Iterable[ReplayCheck]) -> ReplayCheck:
    checked = steps = cut_short = unregistered = 0
    divergences: list[Divergence] = []
    skipped: list[str] = []
    partial: list[str] = []
    for check in checks:
        checked += check.checked
        steps += check.steps
        divergences += check.divergences
        skipped += check.skipped
        cut_short += check.cut_short
        unregistered += check.unregistered
        partial += check.partial
    return ReplayCheck(
        checked=checked,
        steps=steps,
        divergences=tuple(divergences),
        skipped=tuple(skipped),
        cut_short=cut_short,
        partial=tuple(partial),
        unregistered=unregistered,
    )


def replay_check(log: EventLog | str, engine: Engine, *, session: str | None = None) -> ReplayCheck:
    """Replay every task of a log (or of one session) against the code registered on
    ``engine``, and report where they part.

    Args:
        log: the log, or its URL (opened read-only: a missing log is an error).
        engine: where the tasks' functions and steps are registered.
        session: only this session's tasks.

    Returns:
        The check; ``check.ok`` when the code replays every task it registers as recorded,
        and registers one at least where the log holds any.

    Raises:
        LogNotFound: no log at that URL.
        UsageError: ``log`` is neither an event log nor a URL, or ``engine`` is not an
            :class:`~onward.Engine`.
    """
    _check_engine(engine)
    if not isinstance(log, (str, EventLog)):
        raise UsageError(
            f"replay_check: the log is an EventLog or its URL (a str), got a {type(log).__name__}"
        )
    owned = isinstance(log, str)
    opened = open_log(log, create=False) if isinstance(log, str) else log
    try:
        tasks = sorted(
            CatchUp(opened, checkpoint_every=0).open().tasks.tasks.values(),
            key=lambda v: v.order,
        )
        checks = []
        for view in tasks:
            if (session is not None and view.session != session) or view.state == "damaged":
                continue
            history = opened.read_stream(task_stream(view.task_id))
            ends = subtask_ends(opened, history, view.children)
            checks.append(replay_task(engine, history, subtasks=ends, log=opened))
    finally:
        if owned:
            opened.close()
    return _merge(checks)


def _check_engine(engine: object) -> None:
    """Refuse what is not an engine (its registry holds the code replayed).

    Raises:
        UsageError: it is not one.
    """
    if not isinstance(engine, Engine):
        raise UsageError(
            "the code is replayed through an Engine its tasks and steps are registered on, "
            f"got a {type(engine).__name__}"
        )


# -- histories embedded in tests -------------------------------------------------------------

_EVENTS: Any = Union[  # noqa: UP007 - a union built from a tuple of types
    tuple(t for t in all_event_types() if isinstance(t.__struct_config__.tag, str))
]


class _Entry(msgspec.Struct, array_like=True, frozen=True):
    event_id: str
    time: float
    event: _EVENTS


def encode_history(history: Sequence[Recorded]) -> str:
    """A task's history as text to embed in a test: one JSON array a line (event id, time,
    event)."""
    return "\n".join(
        msgspec.json.encode(_Entry(r.meta.event_id, r.meta.time, r.event)).decode()
        for r in history
        if isinstance(r.event, Event)
    )


def decode_history(text: str, *, task_id: str, session: str = "") -> list[Recorded]:
    """The history :func:`encode_history` wrote.

    Raises:
        UsageError: text that is not such a history.
    """
    stream = task_stream(task_id)
    history: list[Recorded] = []
    # Only "\n" ends a record: JSON keeps U+2028, U+2029 and U+0085 in a string as they are,
    # and ``str.splitlines`` would cut the record there.
    lines = (x.rstrip("\r") for x in text.split("\n"))
    for version, line in enumerate((x for x in lines if x.strip()), start=1):
        try:
            entry = msgspec.json.decode(line, type=_Entry)
        except msgspec.DecodeError as exc:
            raise UsageError(f"line {version} of the recorded history: {exc}") from exc
        meta = Meta(event_id=entry.event_id, time=entry.time, session=session)
        history.append(Recorded(stream, version, version, meta, entry.event))
    return history


def replay_recorded(
    engine: Engine | str,
    history: str,
    *,
    task_id: str,
    session: str = "",
    inherited: str | None = None,
    subtasks: Mapping[str, str] | None = None,
) -> ReplayCheck:
    """Replay a history embedded in a test (as ``onward to-test`` writes them).

    When ``engine`` is a ``MODULE:ENGINE`` target and ``ONWARD_DB`` is not set, ``ONWARD_DB`` is
    ``memory://`` while it is imported, so that a module that opens its engine without a URL
    opens it in memory (the replay never writes to it); it is unset again afterwards.

    Args:
        engine: the engine the task is registered on, or where to import it from.
        history: the text :func:`encode_history` wrote.
        task_id: the task's id.
        session: its session.
        inherited: for a fork, the text :func:`encode_history` wrote of the origin's records
            it takes its first steps from (None: read from ``engine``'s log).
        subtasks: per subtask whose end its waits return, the text :func:`encode_history`
            wrote of its ``TaskSubmitted`` and its end (None: none; a wait the history went
            on past is then not replayed, and the task is skipped with why).

    Returns:
        The check of that task.

    Raises:
        UsageError: a target that does not import, or a history that does not decode.
    """
    if isinstance(engine, str):
        unset = "ONWARD_DB" not in os.environ
        if unset:  # for the import only: the tests that run next see the environment as it was
            os.environ["ONWARD_DB"] = "memory://"
        try:
            engine = load_engine(engine)
        finally:
            if unset:
                os.environ.pop("ONWARD_DB", None)
    taken = None
    if inherited is not None:
        taken = decode_history(inherited, task_id=task_id, session=session)
    ends = {
        child: decode_history(text, task_id=child, session=session)
        for child, text in (subtasks or {}).items()
    }
    recorded = decode_history(history, task_id=task_id, session=session)
    return replay_task(engine, recorded, taken, subtasks=ends)
