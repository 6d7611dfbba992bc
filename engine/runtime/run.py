"""One run of a task: the durable-step core shared by every way of calling a step.

A :class:`TaskRun` holds what the log recorded for the task (its step outcomes), the stream
version its next append expects, and the step index counter. :meth:`TaskRun.protocol` is the
durable step, written once as a generator that yields its effects (call the step's function,
a storage call, a pause, a commit; :data:`Effect`) and is sent their results:
:meth:`TaskRun.call` drives it in the caller's thread (:func:`drive`), and
:meth:`TaskRun.call_async` on the event loop (:func:`drive_async`; storage calls and plain
functions run in worker threads). The steps of an ``async def`` task may be under way at
once: :class:`InFlight` orders what they record (every outcome of a body that ran before the
task's wait or end).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import functools
import hashlib
import inspect
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import msgspec

from onward.core.batch import Batch
from onward.core.definitions import Judgement, StepDef
from onward.core.errors import (
    ActionDenied,
    CheckFailed,
    StepInterrupted,
    StepMismatch,
)
from onward.core.failure_attributes import plain_attributes
from onward.core.failures import (
    exception_class,
    literal_argument,
    read_as_recorded,
    replayed_error,
    spread_arguments,
)
from onward.core.run import LeaseLost, MustWait, StorageLost, Suspended, error_message
from onward.events import (
    Append,
    AppendResult,
    ApprovalDenied,
    ApprovalGranted,
    ApprovalRequested,
    BackendError,
    ComponentFailed,
    Context,
    DecisionMade,
    Event,
    EventLog,
    FixAttempted,
    FixFailed,
    FixSucceeded,
    InterruptionDeferred,
    InterruptionDelivered,
    MessageReceived,
    MessageSent,
    PatchMarked,
    PayloadTooLarge,
    Recorded,
    RetryScheduled,
    StepCompleted,
    StepFailed,
    StepStarted,
    StepWithdrawn,
    Strategy,
    SubtasksRead,
    TaskCancelled,
    TaskClaimed,
    TaskDeadlineMissed,
    TaskFailed,
    TaskLeaseExpired,
    TaskQuarantined,
    TaskReleased,
    TaskRetried,
    TaskSucceeded,
    TaskWaiting,
    UsageError,
    VersionConflict,
    WorkaroundApplied,
    decode_value,
    encode_value,
    redacted_logger,
)
from onward.healing.fixes import StepCall
from onward.healing.healer import FixChain, Healer, Outcome, bind_call, call_with
from onward.judgement.actions import Judge, Ruling
from onward.runtime.committer import Committer, Seen, Turns
from onward.runtime.limits import Limits
from onward.runtime.observer import Observer, StepStart, notify, observing
from onward.runtime.session import Tenure

T = TypeVar("T")

__all__ = [
    "CURRENT_RUN",
    "CURRENT_STEP",
    "SLEEP_STEP",
    "Admit",
    "Blocking",
    "Commit",
    "Effect",
    "InFlight",
    "Invoke",
    "Pause",
    "Publishing",
    "Released",
    "Replayed",
    "Settle",
    "Store",
    "SubtaskEnds",
    "TaskRun",
    "delegate",
    "derived_id",
    "drive",
    "drive_async",
    "on_event_loop",
    "running_task",
]

#: How a step failure raised as ``asyncio.CancelledError`` by its body is recorded.
_CANCELLED_CLASS = exception_class(asyncio.CancelledError())

#: The name a durable sleep (``engine.sleep``) is recorded under in its task's steps.
SLEEP_STEP = "onward.sleep"
#: The name a receive (``engine.recv``) goes by in a step mismatch.
RECEIVE_STEP = "onward.recv"

#: The task run of the current thread or coroutine (None outside a task).
logger = redacted_logger("onward.engine")

CURRENT_RUN: ContextVar[TaskRun | None] = ContextVar("onward_current_run", default=None)
#: The index of the step whose function runs in the current thread or coroutine (None between
#: steps).
CURRENT_STEP: ContextVar[int | None] = ContextVar("onward_current_step", default=None)
#: The last durable call (a step, a sleep, a receive, a notice) of the chain of a task's code
#: that runs here, with the token of its run (:meth:`TaskRun.notice_id`): the coroutines of an
#: ``async def`` task that run at once (``asyncio.gather``) each see their own, since each runs
#: in a copy of its caller's context.
#: A step's, sleep's or receive's index stands for "call <index>" (made into text only when a
#: chained id is asked for, not on every step).
_LAST_CALL: ContextVar[tuple[object, str | int] | None] = ContextVar(
    "onward_last_call", default=None
)
# Set where the engine carries out a task's calls in another thread (a storage call, a
# policy, an observer's hook, off an ``async def`` task's event loop): calls made there are
# the engine's own, not a thread the task's code started.
_DELEGATED: ContextVar[bool] = ContextVar("onward_delegated", default=False)


def enter_task_code(run: TaskRun) -> tuple[Token[Any], ...]:
    """Make ``run`` the task run of the code about to run here, outside any step's body or
    thread of task code (a task run from inside another engine's step, or in a copy of its
    caller's context, is a task of its own): the tokens for :func:`leave_task_code`."""
    return CURRENT_RUN.set(run), CURRENT_STEP.set(None), _DELEGATED.set(False)


def leave_task_code(tokens: tuple[Token[Any], ...]) -> None:
    """Undo :func:`enter_task_code`."""
    run, step, delegated = tokens
    _DELEGATED.reset(delegated)
    CURRENT_STEP.reset(step)
    CURRENT_RUN.reset(run)


def running_task(what: str) -> TaskRun | None:
    """The task run whose code (or step body) calls: None outside a task.

    Raises:
        UsageError: the call comes from a thread the task's own code started with its
            context (``asyncio.to_thread``, ``contextvars.copy_context().run``): such calls
            reach the engine in an order that changes from one run to the next, so a replay
            could not hand each its recorded outcome.
    """
    run = CURRENT_RUN.get()
    if (
        run is None
        or run.thread == threading.get_ident()
        or CURRENT_STEP.get() is not None
        or _DELEGATED.get()
    ):
        return run
    raise UsageError(
        f"{what} was called from a thread that the code of task {run.task_id} started "
        "(asyncio.to_thread, contextvars.copy_context().run): calls from there reach the "
        "engine in an order that changes from run to run, so a replay could not give each "
        "its recorded outcome. Call it from the task's own code: an async def task awaits a "
        "plain step directly (it runs in a thread of its own; gather several to run them at "
        "once); a plain task calls its steps in turn, or submits subtasks"
    )


#: Each event loop's turns for the healer's decisions (see :class:`Deciding`).
_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def _in_turn(call: Coroutine[Any, Any, T]) -> T:
    """Await ``call`` in its turn among the decisions of this event loop's tasks."""
    loop = asyncio.get_running_loop()
    turn = _TURNS.get(loop)
    if turn is None:
        turn = _TURNS[loop] = asyncio.Lock()
    try:
        async with turn:
            return await call
    finally:
        call.close()  # never started when the wait for the turn was cancelled


def _noting(into: list[T], fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, its result also kept in ``into``: the caller may have given up waiting
    for it meanwhile (a cancellation), and still needs to know what it did."""
    result = fn(*args)
    into.append(result)
    return result


def _delegated(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` as a call the engine carries out for a task (in a copied context)."""
    _DELEGATED.set(True)
    return fn(*args)


async def delegate(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, as a call the engine carries out for the task whose
    coroutine awaits it (what it calls of the engine is the engine's own, not a thread the
    task's code started)."""
    return await asyncio.to_thread(_delegated, fn, *args)


# The effects are frozen msgspec Structs: a step builds several, which msgspec does in C (a
# frozen dataclass's __init__ sets each field through object.__setattr__, several times slower).
class Invoke(msgspec.Struct, frozen=True):
    """Call the step's function (with the remedied call after a fix)."""

    step: StepDef
    index: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    remedied: StepCall | None
    #: Who is told of the try, and its token: the body runs in the context it gives.
    observer: Observer | None = None
    observed: Any = None


@dataclass(frozen=True)
class SubtaskEnds:
    """What a wait for subtasks read: each one's stream version whose end it read, whether
    all succeeded, and their results or the error of the first that did not succeed."""

    versions: list[int]
    succeeded: bool
    results: list[Any]
    error: BaseException | None = None


#: How many times an append is made again after answers to approvals came in before it.
_ANSWERS_ABSORBED = 10
#: The longest a fix's delay waits at once before it looks whether the worker stops.
PAUSE_SLICE = 0.25


def _waits_for_approval(event: Event) -> bool:
    return type(event) is TaskWaiting and event.reason.startswith("approval")


def _unstarted(call: Coroutine[Any, Any, Any]) -> bool:
    """Whether a coroutine was never started (nor closed)."""
    return inspect.getcoroutinestate(call) == inspect.CORO_CREATED


class CancelledBeforeBody(asyncio.CancelledError):
    """A step's call cancelled before its body began (a plain step of an ``async def`` task
    that no thread had taken up yet): an at-most-once step's recorded start is withdrawn."""


class CancelledBeforeAppend(asyncio.CancelledError):
    """A commit cancelled while it waited for its turn to append (another step of the task
    appended): nothing of it was appended."""


class BodyGate:
    """Who comes first, a step's body in its thread or its caller's cancellation: exactly one
    of :meth:`enter` and :meth:`close` returns True, so a body that began is never taken for
    one that did not."""

    __slots__ = ("_lock", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = ""

    def enter(self) -> bool:
        """The body is about to begin: False if its caller already gave up on it."""
        with self._lock:
            if self._state:
                return False
            self._state = "entered"
            return True

    def close(self) -> bool:
        """The caller gives up: True if the body had not begun (it never will now)."""
        with self._lock:
            if self._state:
                return False
            self._state = "closed"
            return True


class Blocking:
    """A call that appends or reads the log (or runs a policy that does): in place on the
    synchronous path, in a worker thread on the asynchronous one."""

    __slots__ = ("args", "fn")

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn = fn
        self.args = args


class Deciding(Blocking):
    """The healer's decision on a failure: on the asynchronous path, the decisions of one
    event loop's tasks take turns there before each goes to a worker thread, so that failures
    waiting for their turn (the healer decides one at a time) hold none of those threads."""

    __slots__ = ()


class Publishing(Blocking):
    """A call that tells the world from inside a task (a notice delivered to people) and
    records nothing in the task's history: a replay check skips it."""

    __slots__ = ()


class Pause(msgspec.Struct, frozen=True):
    """Wait this many seconds (a fix's delay)."""

    seconds: float


class Commit(msgspec.Struct, frozen=True):
    """Record a batch: a step's outcome (the task's caller continues once it is durable), a
    task's end."""

    batch: Batch


class Settle(msgspec.Struct, frozen=True):
    """Wait until the task's other step bodies under way have their outcomes recorded (an
    ``async def`` task's gathered steps), then decide whether the task waits: no other body
    starts until :meth:`InFlight.decided`. Nothing to do on the synchronous path, which runs
    one step at a time.

    Attributes:
        failing: the index of a step whose body raised, to decide on its failure: it also
            waits for its turn among the steps whose failures are to record (-1: none).
    """

    failing: int = -1


class Admit(msgspec.Struct, frozen=True):
    """Wait, before a step's body starts, until no other step of the task is deciding whether
    the task waits (nothing to do on the synchronous path)."""


class Store(msgspec.Struct, frozen=True):
    """Append to the log in one transaction (shared with other tasks' through the group
    committer, when there is one)."""

    appends: list[Append]


#: What the step protocol asks its driver to do.
Effect = Invoke | Blocking | Pause | Commit | Store | Settle | Admit


#: The text or bytes in a value past which storing it (its redaction above all: a few MB a
#: second for text made of token characters) is taken off the event loop.
_WEIGHTY_BYTES = 1 << 16
#: The items of containers looked at before a value counts as weighty anyway.
_WEIGHTY_ITEMS = 256
_LIGHT = frozenset({int, float, bool, type(None)})
_TEXTS = frozenset({str, bytes, bytearray})
_CONTAINERS = frozenset({list, tuple, set, frozenset})


def _weighty(value: Any) -> bool:
    """Whether storing ``value`` may take long enough to block an event loop: more than
    64 KiB of text or bytes in it, more than a few hundred items, or an object of another
    type (a dataclass, a struct: not looked into)."""
    if type(value) in _LIGHT:  # most results
        return False
    pending = [value]
    size = items = 0
    while pending:
        v = pending.pop()
        kind = type(v)
        if kind in _LIGHT:
            continue
        if kind in _TEXTS:
            size += len(v)
            if size > _WEIGHTY_BYTES:
                return True
            continue
        if kind is dict:
            items += len(v)
            pending.extend(v.keys())
            pending.extend(v.values())
        elif kind in _CONTAINERS:
            items += len(v)
            pending.extend(v)
        else:
            return True
        if items > _WEIGHTY_ITEMS:
            return True
    return False


def drive(protocol: Generator[Effect, Any, T], carry_out: Callable[[Effect], Any]) -> T:
    """Run the step protocol synchronously: carry out each effect, send back its result (or
    throw its exception in)."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = protocol.send(result) if error is None else protocol.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except RuntimeError as exc:
            if (stopped := _stop_iteration(exc)) is None:
                raise
            raise stopped from None
        try:
            result, error = carry_out(effect), None
        except BaseException as exc:
            result, error = None, exc


async def drive_async(
    protocol: Generator[Effect, Any, T], carry_out: Callable[[Effect], Awaitable[Any]]
) -> T:
    """Run the step protocol on the event loop: await each effect."""
    result: Any = None
    error: BaseException | None = None
    while True:
        try:
            effect = protocol.send(result) if error is None else protocol.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except RuntimeError as exc:
            if (stopped := _stop_iteration(exc)) is None:
                raise
            raise stopped from None
        try:
            result, error = await carry_out(effect), None
        except _Stopped as exc:
            result, error = None, exc.stop
        except BaseException as exc:
            result, error = None, exc


class _Stopped(Exception):
    """A plain step's ``StopIteration``, carried out of its thread: an asyncio future refuses
    one (it stays pending, and its caller waits for ever), and a coroutine makes a
    ``RuntimeError`` of one; the protocol gets it back as the step raised it.

    Attributes:
        stop: what the body raised.
    """

    def __init__(self, stop: StopIteration) -> None:
        super().__init__(stop)
        self.stop = stop


def _stop_iteration(error: RuntimeError) -> StopIteration | None:
    """The step's own ``StopIteration``, where Python turned it into this ``RuntimeError`` as
    it left the protocol's generator (PEP 479); None for any other error."""
    cause = error.__cause__
    if isinstance(cause, StopIteration) and str(error) == "generator raised StopIteration":
        return cause
    return None


def call_with_timeout(step: StepDef, effect: Invoke) -> Any:
    """Call a plain step's function in a thread of its own, and give up waiting after its
    timeout: a Python thread cannot be stopped, so the body goes on in the background and its
    late result is ignored (an ``async def`` step is cancelled instead).

    Raises:
        TimeoutError: it did not return in time (a failure like any other: healed, retried,
            recorded).
    """
    assert step.timeout is not None
    box: dict[str, Any] = {}
    done = threading.Event()
    context = contextvars.copy_context()

    def body() -> None:
        try:
            if effect.remedied is None:
                box["value"] = context.run(step.fn, *effect.args, **effect.kwargs)
            else:
                box["value"] = context.run(call_with, step, effect.remedied)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=body, name=f"onward-step-{step.name}", daemon=True).start()
    if not done.wait(step.timeout):
        raise _timed_out(step)
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _await_step(effect: Invoke) -> Any:
    """Await an ``async def`` step's coroutine, within its timeout: cancelled when the time
    runs out, and timed out all the same if it returns late (it blocked the loop meanwhile).

    Raises:
        TimeoutError: it did not return in time (as on the synchronous path).
        asyncio.CancelledError: the task is being cancelled; an error the step raises
            meanwhile (a ``finally`` that fails as it unwinds) is the cancellation's doing, not
            a failure to heal.
    """
    if effect.observer is None:
        return await _await_body(effect)
    with observing(effect.observer, effect.observed):
        return await _await_body(effect)


async def _await_body(effect: Invoke) -> Any:
    """:func:`_await_step`, in the observer's context."""
    step = effect.step
    try:
        if step.timeout is None:
            return await _call_body(effect)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + step.timeout
        scope = asyncio.timeout_at(deadline)
        try:
            async with scope:
                result = await _call_body(effect)
        except TimeoutError:
            if scope.expired():
                raise _timed_out(step) from None
            raise  # the step's own
        if loop.time() > deadline:  # the loop was blocked: the timeout could not fire
            raise _timed_out(step)
        return result
    except Exception as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError(f"step {step.name!r} was cancelled") from exc
        raise


def _timed_out(step: StepDef) -> TimeoutError:
    """What a step that outlived its timeout fails with, on either path."""
    assert step.timeout is not None
    return TimeoutError(
        f"step {step.name!r} did not return within its timeout of {step.timeout:g} s"
    )


async def _acquire(lock: threading.Lock) -> None:
    """Take a thread lock from the event loop without blocking it: a worker thread waits for
    it. Cancelled meanwhile, the caller goes without it, and the lock the worker thread takes
    late is given back."""
    if lock.acquire(blocking=False):
        return
    taking = asyncio.get_running_loop().run_in_executor(None, lock.acquire)
    try:
        await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(lambda _: lock.release())
        raise


def _called(what: str | StepDef) -> str:
    """What a durable call is, for a message: a step by its name, else as given."""
    return what if isinstance(what, str) else f"step {what.name!r}"


def on_event_loop() -> bool:
    """Whether the caller runs on an event loop (an ``async def`` task's steps are awaited)."""
    # The loop or None, where get_running_loop() raises: an exception on every step of a
    # plain task costs more than the rest of this check.
    return asyncio._get_running_loop() is not None


def _call_step(effect: Invoke) -> Any:
    """A plain step's function with its (or the remedied) arguments, with its timeout, in the
    observer's context."""
    if effect.observer is None:
        return _call_body(effect)
    with observing(effect.observer, effect.observed):
        return _call_body(effect)


def _call_body(effect: Invoke) -> Any:
    """The step's function with its (or the remedied) arguments; on the synchronous path,
    with its timeout."""
    step = effect.step
    if step.timeout is not None and not step.is_async:
        return call_with_timeout(step, effect)
    if effect.remedied is None:
        return step.fn(*effect.args, **effect.kwargs)
    return call_with(step, effect.remedied)


class Released(BaseException):
    """Unwinds a task whose worker is stopping, at a step boundary: the task is handed back."""


class OwnCancellation(BaseException):
    """A step's body raised ``asyncio.CancelledError`` itself, while nothing cancelled it: its
    outcome, recorded as a failure (a replay raises it again), not a cancellation.

    Attributes:
        error: what the body raised.
    """

    def __init__(self, error: asyncio.CancelledError) -> None:
        super().__init__(error)
        self.error = error


def _own(exc: asyncio.CancelledError) -> BaseException:
    """A ``CancelledError`` out of a step's call, as the protocol takes it: the step's own
    (:class:`OwnCancellation`) unless its task is being cancelled."""
    task = asyncio.current_task()
    if isinstance(exc, CancelledBeforeBody) or (task is not None and task.cancelling()):
        return exc
    return OwnCancellation(exc)


class _Signal:
    """Coroutines of one loop that wait until a condition holds, woken when it may."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    async def until(self, holds: Callable[[], bool]) -> None:
        while not holds():
            if self._event is None or self._event.is_set():
                self._event = asyncio.Event()  # shared by every coroutine waiting meanwhile
            await self._event.wait()

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()


class InFlight:
    """The step calls of one run under way at once (an ``async def`` task's gathered steps).

    A step whose body ran has an outcome to record, and a task that waits (a retry, a sleep,
    a message, a permit) or ends may record nothing after that. So before a step records that
    the task waits, it lets the other bodies under way record their outcomes (:meth:`settle`),
    and no body starts while it decides (:meth:`admit`) nor once the wait is recorded; the
    steps that settle decide one after the other, in the order they came; a failure not yet
    recorded holds any wait decided meanwhile (:meth:`hold`), which the last failure to be
    recorded records; and the scheduler records the task's end only once every step call it
    started has returned (:meth:`calls_ended`). Without this a sibling's completed body was
    thrown away, to run again when the task woke, or its outcome followed the task's end.

    Everything here runs on the event loop's thread.
    """

    def __init__(self) -> None:
        #: Step indices whose body runs, or ran and waits for its outcome to be recorded.
        self.bodies: set[int] = set()
        #: Step indices whose body raised and whose failure is not recorded yet: a wait
        #: decided meanwhile is held until they are recorded.
        self.failing: set[int] = set()
        #: A wait decided while failures were still to record (a task's stream holds nothing
        #: after its wait): recorded after them.
        self.held: Batch | None = None
        #: The steps that settle take turns to decide (and record), in the order they came:
        #: the index of the step whose body raised that has the turn, else -1.
        self.turn = -1
        self._tickets = 0
        self._waiting_turns: set[int] = set()  # the tickets not served yet, and the holder's
        self._holder: int | None = None
        self._turn_free = _Signal()
        self.calls = 0
        #: The run's end is recorded: nothing more may be (a step, a sleep, an append).
        self.ended = False
        #: The task's code has returned or raised: the steps it left under way record their
        #: outcomes, and the task waits for nothing more.
        self.returned = False
        #: Steps deciding (after :meth:`settle`) whether the task waits: no body starts.
        self.deciding = 0
        #: Steps that decided the task waits and let the bodies under way record their
        #: outcomes first (:meth:`settle`): their wait is pending.
        self.pending_waits = 0
        self._wait_pending = _Signal()
        self._no_bodies = _Signal()
        self._no_deciding = _Signal()
        self._no_calls = _Signal()
        #: Plain steps' bodies whose callers were cancelled while they ran in their threads,
        #: which nothing can stop, by step index: seen to their end before the task is
        #: handed back.
        self.abandoned: dict[int, asyncio.Future[Any]] = {}
        #: How to record the result of an abandoned body that returns, by step index, with
        #: where the task's code was when it was abandoned (:meth:`mark`; see
        #: :meth:`TaskRun.abandoned_results`).
        self.unrecorded: dict[
            int, tuple[tuple[int, int], StepDef, Callable[[Any, Batch], str]]
        ] = {}
        #: The run's appends that recorded no step's outcome (a sleep, a message taken, a
        #: subtask...): the task's code went on.
        self.went_on = 0

    @staticmethod
    def mark(run: TaskRun) -> tuple[int, int]:
        """Where the task's code is: the next step index it takes, and how many of its
        appends recorded no step's outcome. Once either moved, its code went on (past a
        timeout around a step it gave up on); the outcomes of steps already under way, a
        sibling's, do not move it."""
        return run.index, run.in_flight.went_on

    def body_started(self, index: int) -> bool:
        """A step's body is about to start; whether it is tracked (only while step calls run
        at once)."""
        if not self.calls:
            return False  # the synchronous path: one step at a time
        self.bodies.add(index)
        return True

    def body_settled(self, index: int, tracked: bool) -> None:
        """A step's body ended with its outcome recorded, or with none to keep."""
        if tracked:
            self.bodies.discard(index)
            if not self.bodies:
                self._no_bodies.wake()

    def body_failed(self, index: int, tracked: bool) -> None:
        """A step's body raised: its failure is to record before any wait of the task."""
        if tracked:
            self.failing.add(index)
            self.body_settled(index, tracked)

    async def settle(self, failing: int = -1) -> None:
        """Wait until no step body is under way without its outcome, then for the turn to
        decide whether the task waits (:meth:`decided` ends it): the steps that settle decide
        and record one after the other. ``failing``: the index of a step whose body raised,
        which decides on its failure."""
        if failing < 0 and self.bodies:
            # A step whose body raised does not wait for the others: one of them may wait for
            # the task to see that error. Its wait, if it decides one, is held meanwhile.
            self.pending_waits += 1
            self._wait_pending.wake()
            try:
                await self._no_bodies.until(lambda: not self.bodies)
            finally:
                self.pending_waits -= 1
        ticket = self._tickets
        self._tickets += 1
        self._waiting_turns.add(ticket)
        self.deciding += 1
        try:
            await self._turn_free.until(
                lambda: self._holder is None and min(self._waiting_turns) == ticket
            )
        except BaseException:
            self._waiting_turns.discard(ticket)
            self._turn_free.wake()
            self._decided()
            raise
        self._holder, self.turn = ticket, failing

    async def until_a_wait_pends(self) -> None:
        """Wait until a step has decided that the task waits and lets the bodies under way
        record their outcomes first (:meth:`settle`): a body under way then knows that the
        task's wait comes after its own outcome (a sibling's failure included), without
        guessing at how long the other step takes to decide."""
        await self._wait_pending.until(lambda: self.pending_waits > 0)

    def decided(self) -> None:
        """A step that settled has decided (and recorded a wait, or not): the next one takes
        its turn, and bodies may start once none is left to decide."""
        if self._holder is not None:
            self._waiting_turns.discard(self._holder)
            self._holder, self.turn = None, -1
            self._turn_free.wake()
        self._decided()

    def _decided(self) -> None:
        if self.deciding:
            self.deciding -= 1
            if not self.deciding:
                self._no_deciding.wake()

    def failure_recorded(self, index: int) -> None:
        """A failure is recorded (or will never be: its decision raised)."""
        self.failing.discard(index)

    def quiet(self) -> bool:
        """Whether no outcome is left to record: no body under way, no failure pending (a
        wait held meanwhile may be recorded now)."""
        return not self.bodies and not self.failing

    def hold(self, batch: Batch) -> Batch:
        """What of a batch may be appended now: while other outcomes are still to record
        (bodies under way, failures other than the deciding step's), its wait (the
        ``TaskWaiting`` and what follows it) is held for after them (the first held wait is
        the task's: a run that wakes early waits again for what is not due); once the task's
        code has returned, it is dropped (the task waits for nothing more: its end
        follows)."""
        others_failing = self.failing and self.failing != {self.turn}
        if not others_failing and not self.bodies and not self.returned:
            return batch
        kinds = list(map(type, batch.events))
        if TaskWaiting not in kinds:  # a step's outcome, most often
            return batch
        at = kinds.index(TaskWaiting)
        now, later = batch.split(at)
        if self.held is None and not self.returned:
            self.held = later
        return now

    async def admit(self) -> None:
        """Wait until no step is deciding whether the task waits."""
        await self._no_deciding.until(lambda: not self.deciding)

    def task_left(self, error: BaseException | None = None) -> None:
        """The task's code returned, or raised ``error`` (a ``CancelledError`` of its own
        included): unless that is the engine's signal (the task waits, is handed back or was
        taken), the task waits for nothing more, and the steps it left under way only record
        their outcomes."""
        if error is None or isinstance(error, Exception | asyncio.CancelledError):
            self.returned = True

    def call_started(self) -> None:
        """A step call begins.

        Raises:
            UsageError: the task's end is recorded (a step called by a coroutine the task
                created with ``asyncio.create_task`` and left running).
        """
        if self.ended:
            raise self.after_end("a step")
        self.calls += 1

    def call_ended(self) -> None:
        self.calls -= 1
        if not self.calls:
            self._no_calls.wake()

    async def calls_ended(self) -> None:
        """Wait until every step call of the run has returned: the steps a task started and
        left (a gather left on a sibling's error, a task created and not awaited) end before
        the task's end is recorded."""
        await asyncio.sleep(0)  # a step task created just before the return takes its turn
        await self._no_calls.until(lambda: not self.calls)

    def returned_before(self, index: int, result: Any) -> None:
        """A step's body returned ``result``, and its caller was cancelled before its outcome
        was appended: kept as an abandoned body's that returned."""
        returned: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        returned.set_result(result)
        self.abandoned[index] = returned

    async def abandoned_ended(self) -> None:
        """Wait until the plain steps' bodies the run gave up on have returned: handed back
        while one still ran, its task was taken by another worker that ran the same body
        beside it.

        Raises:
            asyncio.CancelledError: the run was cancelled again meanwhile: it waits no longer
                (as a second signal stops a worker at once), and hands nothing back.
        """
        for running in list(self.abandoned.values()):
            if not running.done():
                await asyncio.wait([running])

    @staticmethod
    def after_end(what: str) -> UsageError:
        """The error of a call made after the run's end (by a coroutine the task created and
        left running): nothing may be recorded past a task's end."""
        return UsageError(
            f"{what} was called after its task ended: await what a task starts (a coroutine "
            "created with asyncio.create_task and left running past the task's return is not "
            "recorded)"
        )


#: The records that end a run (after them its task's code may record nothing).
_RUN_ENDS = frozenset({TaskSucceeded, TaskFailed, TaskReleased})


class Replayed(msgspec.Struct, frozen=True):
    """A step outcome found in the log."""

    name: str
    completed: bool
    result: Any = None
    error_type: str = ""
    message: str = ""
    error_class: str = ""
    literal: bool = False
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
    spread: bool = False

    @classmethod
    def failed(cls, event: StepFailed) -> Replayed:
        """A step failure's outcome, as its record holds it."""
        return cls(
            event.name,
            False,
            None,
            event.error_type,
            event.message,
            event.error_class,
            event.literal,
            event.attributes,
            event.spread,
        )


def _version(record: Recorded) -> int:
    return record.version


def receive_name(topic: str) -> str:
    """What a receive of ``topic`` is called in a step mismatch: ``onward.recv('topic')``."""
    return f"{RECEIVE_STEP}({topic!r})"


def derived_id(*parts: str, size: int = 8) -> str:
    """A stable id of ``2 * size`` hex digits from parts (subtask and keyed task ids)."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=size).hexdigest()


def submission_id(task_id: str) -> str:
    """The event id of a task's ``TaskSubmitted`` (stable, so a re-submission is a no-op)."""
    return derived_id(task_id, "submitted", size=16)


class _Try:
    """A try of a step the observer was told of: its token, and whether it was told how the
    try ended."""

    __slots__ = ("ended", "token")

    def __init__(self, token: Any) -> None:
        self.token = token
        self.ended = False


class TaskRun:
    """The state of one run of one task.

    Args:
        log: the log to record outcomes in.
        task_id: the task.
        stream: its stream.
        history: its stream's events, read when the run started.
        context: the envelope fields for its appends.
        clock: the engine's clock.
        healer: heals failing steps (None: a failure is final at once).
        sleep: how to wait for a fix's delay.
        judge: judges actions (None: actions run as plain steps).
        stopping: set when the worker stops: the run hands its task back before its next
            step.
        committer: shares transactions with other tasks' appends (None: its own).
        inherited: for a fork, the records of its origin's that give its first steps their
            outcomes (:func:`onward.runtime.forks.inherited_records`).
        limits: the queue limits whose permits its limited steps take (None: no step is
            limited).
    """

    def __init__(
        self,
        log: EventLog,
        task_id: str,
        stream: str,
        history: list[Recorded],
        context: Context,
        clock: Any,
        *,
        healer: Healer | None = None,
        sleep: Callable[[float], None] | None = None,
        judge: Judge | None = None,
        stopping: threading.Event | None = None,
        committer: Committer | None = None,
        inherited: Sequence[Recorded] = (),
        limits: Limits | None = None,
        step_threads: Executor | None = None,
        tenure: Tenure | None = None,
    ) -> None:
        self.log = log
        #: How long the worker's claim holds by its clock (None: not known): past it, a step
        #: looks whether the task was taken before its body runs.
        self.tenure = tenure
        #: The thread the task's code runs on (set as it starts): steps and other durable
        #: calls come from there (:func:`running_task`).
        self.thread = threading.get_ident()
        self.limits = limits
        #: Where a plain step of an ``async def`` task runs (None: the loop's default
        #: executor, which storage calls share).
        self.step_threads = step_threads
        self.healer = healer
        self.judge = judge
        self.stopping = stopping
        self.committer = committer
        # Steps of an async task may run at once: their appends take turns at the version.
        self._appending = threading.Lock()
        # The loop's side of those turns: its callers queue here, and one at a time waits for
        # the thread lock in a worker thread (each held a thread: a gather of many appends
        # held them all, and the one appending had none left to append with).
        self._loop_turns = asyncio.Lock()
        # A cancellation that came while an append handed to the log was awaited: raised once
        # the run has taken the append's outcome in (guarded by the append lock).
        self._interrupted: asyncio.CancelledError | None = None
        # The turns of the loop's appends to the committer (taken at the run's first).
        self._turns: Turns | None = None
        self.sleep = sleep
        self.task_id = task_id
        self.stream = stream
        self.context = context
        self.clock = clock
        self.version = history[-1].version if history else 0
        # The reads of subtasks earlier runs recorded, each with its place in the history,
        # and where the current attempt begins (:meth:`subtasks_ended`).
        self.subtask_reads: list[tuple[int, SubtasksRead]] = [
            (i, r.event) for i, r in enumerate(history) if type(r.event) is SubtasksRead
        ]
        self._attempt_at = next(
            (
                i + 1
                for i in range(len(history) - 1, -1, -1)
                if type(history[i].event) is TaskRetried
            ),
            0,
        )
        self._history = history
        #: A replay check's run (onward.testing), which reads its history and appends nothing.
        self.replaying = False
        # This run recorded that the task waits: it ends here, whatever the task's code does
        # with the signal (a bare ``except:`` around a step catches it).
        self.waiting = False
        # The worker stopped this run at a step: the task is handed back, whatever its code
        # does with the signal (``asyncio.gather(..., return_exceptions=True)`` returns it).
        self.released = False
        # Step indices whose queue-limit permit this run holds.
        self.permits: set[int] = set()
        # Step indices whose caller gave the call up while its failure waited to be recorded.
        self.given_up: set[int] = set()
        # The step calls of an ``async def`` task that are under way at once.
        self.in_flight = InFlight()
        self.outcomes: dict[int, Replayed] = {}
        self.started: dict[int, str] = {}
        #: The at-most-once steps whose start was withdrawn (cancelled before their body
        #: began), each with the index the task's next step would have taken then.
        self.withdrawn: dict[int, int] = {}
        #: What an ``async def`` task's code was handed to await (``engine.sleep(...)``), as
        #: the call it wrote: one never awaited by the task's end did nothing.
        self.handed: list[tuple[str, Coroutine[Any, Any, Any]]] = []
        self._handed_limit = 64
        # Messages this task took (or gave up waiting for), by the step index of the receive.
        self.received: dict[int, MessageReceived] = {}
        # Of the messages taken: the inbox versions, and the last one of each topic (a receive
        # looks only past it), kept as they are taken (see :meth:`_took`).
        self._taken_versions: set[int] = set()
        self._last_taken: dict[str, int] = {}
        # The task's inbox as far as this run has read it, in version order.
        self.inbox: list[Recorded] = []
        # The inbox versions that receives under way are recording as taken.
        self.taking: set[int] = set()
        # Durable sleeps begun before this run: when each ends, by step index.
        self.wakes: dict[int, float] = {}
        # Failed tries per step index (a fix or a retry followed the non-final ones).
        self.failures: dict[int, int] = {}
        # Failed tries per step index in the whole history, a retried task's before its retry
        # too, and this run's: which try of a step's body reports a failure (``degrade``).
        self.tries: dict[int, int] = {}
        # Per step index: the fixes already tried, the fix whose outcome is still to be
        # recorded (fix, signature), and the delay before its last retry.
        self.fixes_tried: dict[int, set[str]] = {}
        self.fix_in_flight: dict[int, tuple[str, str]] = {}
        self.fix_applications: dict[int, int] = {}
        self.last_delay: dict[int, float] = {}
        self.retry_due: dict[int, float] = {}  # per step index, when its retry is due
        # Per step index, the fixes applied by the run (claim) that applied the latest one, in
        # order, each with the failure it answered and when: a fix whose delay a crash cut
        # short is asked again for its call from them. None: that run began with a fix in
        # flight, so its calls may not have started from the step's own arguments.
        self.fix_chains: dict[int, FixChain | None] = {}
        segment: dict[int, FixChain | None] = {}
        failed: dict[int, StepFailed] = {}
        # Judged actions: the recorded confidence decision per step index, and the answers to
        # approval requests by decision id (granted, note).
        self.rulings: dict[int, Ruling] = {}
        self.answers: dict[str, tuple[bool, str]] = {}
        # The requests this run found unanswered (its task is to wait for them).
        self.awaiting_answers: set[str] = set()
        # The failures this task's own code reported, per component, in order: (component,
        # the workaround applied, or the id of the decision to ask when none was left); a
        # re-run reads them back. Those its steps' bodies reported, by step index, try and
        # component (see :meth:`degradation_slot`).
        self.degradations: dict[str, list[tuple[str, str, str]]] = {}
        self.step_degradations: dict[tuple[int, int, str], list[tuple[str, str, str]]] = {}
        # How many failures of each component the task's own code reported in this run.
        self.degrade_calls: dict[str, int] = {}
        degraded: list[tuple[str, str, str]] = []  # where the last reported failure went
        # Change ids whose new code path this task took (``patched``).
        self.patches: set[str] = set()
        # The notices this task gave (``notify``): deferred or delivered, by interruption id.
        self.notices: set[str] = set()
        # The highest step index the history records anything at (see :meth:`_patch_mark`).
        self._reach: int | None = None
        for r in inherited:  # a fork's first steps: its origin's outcomes (never run again)
            event = r.event
            if isinstance(event, StepCompleted):
                self.outcomes[event.index] = Replayed(event.name, True, event.result)
            elif isinstance(event, StepFailed):
                self.outcomes[event.index] = Replayed.failed(event)
            elif isinstance(event, MessageReceived):
                # The message as the origin took it, from the origin's inbox: no place in the
                # fork's own inbox is used up.
                self._took(msgspec.structs.replace(event, inbox_version=None))
            elif isinstance(event, PatchMarked):
                # The origin took the new path before a step the fork inherits: so does it.
                self.patches.add(event.change_id)
        taken = set(self.outcomes)  # the fork's: kept through a retry of the fork
        # Told of each try of a step that runs now (never of a replayed one), and the token of
        # this run that its hooks handed back.
        self.observer: Observer | None = None
        self.observed: Any = None
        # The tries the observer was told of that have not ended (see :meth:`end_tries`).
        self._tries: set[_Try] = set()
        previous: object = None
        # The task's last end was a failure as interrupted (StepInterrupted): a person who
        # retries it has checked the step's effect, so its start no longer holds it back.
        interrupted = False
        for r in history:
            event, follows = r.event, previous
            previous = r.event
            if isinstance(event, StepCompleted):
                self.outcomes[event.index] = Replayed(event.name, True, event.result)
            elif isinstance(event, TaskFailed):
                interrupted = event.error_type == StepInterrupted.__name__
            elif isinstance(event, TaskRetried):
                if interrupted:  # a sleep's or a receive's start is its wait's, not a body's
                    waits = (SLEEP_STEP, RECEIVE_STEP)
                    for index, name in list(self.started.items()):
                        if index not in self.outcomes and name not in waits:
                            del self.started[index]
                interrupted = False
                # A new attempt: the steps that failed for good run again, healed afresh (their
                # retries and fixes are counted within this attempt; the history keeps the rest).
                # (A fork's first steps keep what its origin recorded.)
                retried = [i for i, o in self.outcomes.items() if not o.completed]
                for index in [i for i in retried if i not in taken]:
                    del self.outcomes[index]
                    # Its action is judged again (a refused approval is asked again, and
                    # raises the thresholds once, when refused again); one approved keeps it.
                    ruling = self.rulings.get(index)
                    if ruling is not None and not self.answers.get(ruling.decision_id, (0,))[0]:
                        del self.rulings[index]
                self.failures.clear()
                self.fixes_tried.clear()
                self.fix_applications.clear()
                self.last_delay.clear()
                self.retry_due.clear()
                self.fix_chains.clear()
                segment = {}
            elif isinstance(event, TaskClaimed):
                segment = dict.fromkeys(self.fix_in_flight)
            elif isinstance(event, PatchMarked):
                self.patches.add(event.change_id)
            elif isinstance(event, InterruptionDeferred | InterruptionDelivered):
                self.notices.add(event.interruption_id)
            elif isinstance(event, MessageReceived):
                self._took(event)
            elif isinstance(event, StepFailed):
                self.started.pop(event.index, None)  # that try ended: the next one may start
                failed[event.index] = event
                self.failures[event.index] = self.failures.get(event.index, 0) + 1
                self.tries[event.index] = self.tries.get(event.index, 0) + 1
                if event.final:
                    self.outcomes[event.index] = Replayed.failed(event)
            elif isinstance(event, StepStarted):
                self.started[event.index] = event.name
                self.withdrawn.pop(event.index, None)  # started again
                if event.wake_at is not None:
                    self.wakes[event.index] = event.wake_at
            elif isinstance(event, StepWithdrawn):
                self.started.pop(event.index, None)  # its body never began
                self.withdrawn[event.index] = event.next_index
                # Or its failure was recorded as its caller gave it up: the code never saw it.
                failure = self.outcomes.get(event.index)
                if failure is not None and not failure.completed:
                    del self.outcomes[event.index]
            elif isinstance(event, FixAttempted) and event.step_index is not None:
                self.fixes_tried.setdefault(event.step_index, set()).add(event.fix)
                self.fix_in_flight[event.step_index] = (event.fix, event.signature)
                applied = self.fix_applications.get(event.step_index, 0)
                self.fix_applications[event.step_index] = applied + 1 if event.again else 1
                chain = segment.setdefault(event.step_index, [])
                answered = failed.get(event.step_index)
                if chain is not None and answered is not None:
                    chain.append((answered, event, r.meta.time))
                self.fix_chains[event.step_index] = chain
            elif isinstance(event, FixSucceeded | FixFailed) and event.step_index is not None:
                self.fix_in_flight.pop(event.step_index, None)
            elif (
                isinstance(event, TaskWaiting)
                and isinstance(follows, FixAttempted)
                and event.reason == f"fix {follows.fix} of step {follows.step_index}"
            ):
                # The fix's own wait is in the log, and its call is the step's own: nothing is
                # lost. (Another step's wait may follow it too: a gathered sibling's.)
                if follows.step_index is not None:
                    self.fix_chains[follows.step_index] = None
            elif isinstance(event, RetryScheduled):
                self.last_delay[event.step_index] = event.delay
                self.retry_due[event.step_index] = event.due
            elif isinstance(event, ComponentFailed):
                degraded = self.degradations_of(event.step_index, event.component)
                degraded.append((event.component, "", ""))
            elif isinstance(event, WorkaroundApplied) and degraded:
                degraded[-1] = (event.component, event.workaround, "")
            elif isinstance(event, DecisionMade) and event.kind == "degradation":
                if degraded:
                    degraded[-1] = (event.subject, "", r.meta.event_id)
            elif isinstance(event, DecisionMade):
                step_index = event.inputs.get("step_index")
                if event.kind == "confidence" and event.strategy and isinstance(step_index, int):
                    self.rulings[step_index] = Ruling(
                        decision_id=r.meta.event_id, strategy=event.strategy
                    )
            elif isinstance(event, ApprovalGranted | ApprovalDenied):
                self.answers[event.decision_id] = (isinstance(event, ApprovalGranted), event.note)
        self.index = 0
        #: How many subtasks and messages of each kind the task's body made, and how many
        #: notices after each of its durable calls (:meth:`notice_id`).
        self.made: dict[str, int] = {}
        #: Per step index, how many subtasks, messages and notices its body's current attempt
        #: made.
        self.made_in_step: dict[int, dict[str, int]] = {}
        # Marks this run's calls in the chains of its code (see ``_LAST_CALL``).
        self._chain_token = object()
        self.steps_run = 0
        self.steps_replayed = 0

    def made_id(self, kind: str, size: int = 8) -> str:
        """A stable id for the next subtask (``kind="child"``), message (``"message"``) or
        notice (``"notice"``) the running code makes, numbered in the order they come.

        In a step's body, the n-th of its kind in that step's attempt (a replay does not run a
        completed step's body, so its subtasks and messages must not shift the numbering of
        the task body's): the id they take there. In the task's body, the n-th of its kind in
        the run: the id an earlier onward gave them there, looked for so that a task begun by
        it makes nothing twice (they take :meth:`chained_id` now).
        """
        index = CURRENT_STEP.get()
        if index is None:
            self.made[kind] = count = self.made.get(kind, 0) + 1
            return derived_id(self.task_id, kind, str(count), size=size)
        made = self.made_in_step.setdefault(index, {})
        made[kind] = count = made.get(kind, 0) + 1
        return derived_id(self.task_id, "step", str(index), kind, str(count), size=size)

    def notice_id(self) -> str:
        """A stable id for the next notice the running code gives: the same on a re-run, so
        that giving it again is a no-op (see :meth:`chained_id`)."""
        return self.chained_id("notice", size=16)

    def chained_id(self, kind: str, size: int = 8) -> str:
        """A stable id for the next thing of ``kind`` (a notice, a subtask) the running code
        makes: the same on a re-run, so that making it again is a no-op.

        In a step's body, the n-th of its kind in that step's attempt (see :meth:`made_id`).
        In the task's own code, the n-th of its kind made after the last durable call (a
        step, a sleep, a receive, a notice, a subtask) of the chain of code that makes it: the
        coroutines of an ``async def`` task gathered at once make theirs as their steps end,
        in an order that a re-run, whose completed steps return at once, does not keep;
        numbered in the order they came (:meth:`made_id`), a re-run gave one coroutine's
        notice or subtask another's id.
        """
        if CURRENT_STEP.get() is not None:
            return self.made_id(kind, size=size)
        last = _LAST_CALL.get()
        if last is None or last[0] is not self._chain_token:
            after = "start"
        elif type(last[1]) is int:
            after = f"call {last[1]}"  # a step's, sleep's or receive's index
        else:
            after = str(last[1])
        key = f"{kind} after {after}"
        self.made[key] = count = self.made.get(key, 0) + 1
        made = derived_id(self.task_id, kind, after, str(count), size=size)
        _LAST_CALL.set((self._chain_token, f"{kind} {made}"))
        return made

    def degradation_slot(self, component: str) -> tuple[int | None, int]:
        """Where the running code's next ``degrade`` call of ``component`` stands: the step
        whose body makes it (None: the task's own code), and how many calls of that component
        that code made before it (in a step's body, in its current attempt). A re-run numbers
        them the same, though it does not run the bodies of the steps that completed, and
        though the coroutines of an ``async def`` task gathered at once report as their steps
        end, in an order that a re-run, whose completed steps return at once, does not keep."""
        index = CURRENT_STEP.get()
        if index is None:
            seen = self.degrade_calls.get(component, 0)
            self.degrade_calls[component] = seen + 1
            return None, seen
        made = self.made_in_step.setdefault(index, {})
        key = f"degrade {component}"
        seen = made.get(key, 0)
        made[key] = seen + 1
        return index, seen

    def degradations_of(self, index: int | None, component: str) -> list[tuple[str, str, str]]:
        """The failures of ``component`` reported by the task's own code (``index`` None) or
        by the body of step ``index`` in its current try, in order (see
        :attr:`degradations`): a next try that reports a failure again is given the next
        workaround, not the last try's."""
        if index is None:
            return self.degradations.setdefault(component, [])
        key = (index, self.tries.get(index, 0), component)
        return self.step_degradations.setdefault(key, [])

    # -- appending -------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """A text with its secrets replaced, by the log's redactor."""
        return self.log.redactor.redact(text)

    def record(self, events: list[Event]) -> None:
        """Append events to the task's stream at the version this run expects.

        Raises:
            LeaseLost: another process cancelled the task or took its lease meanwhile.
            StorageLost: the log could not record them.
        """
        batch = self.new_batch()
        for event in events:
            batch.add(event)
        self.commit(batch)

    def new_batch(self) -> Batch:
        """An empty batch whose events are caused by this run's claim unless they say."""
        return Batch(self.context.causation_id)

    def commit(self, batch: Batch) -> None:
        """Append a batch atomically: its events to the task's stream, and its other appends
        (breaker transitions). If another worker moved a breaker meanwhile, the batch is
        appended without that transition.

        Raises:
            LeaseLost: another process cancelled the task or took its lease meanwhile.
            StorageLost: the log could not record it.
        """
        with self._appending:
            drive(self._committing(batch), self.effect)

    def awaited(self, index: int) -> bool:
        """Whether the task's code may still take step ``index``'s outcome: not once it has
        returned or raised (:attr:`InFlight.returned`), nor once the step's caller gave the
        call up (cancelled it: a timeout, a TaskGroup's error) while the task is not about to
        wait anyway (then it calls the step again when it runs again)."""
        if self.in_flight.returned:
            return False
        if index in self.given_up:
            return self.waiting or self.in_flight.held is not None
        return True

    def record_held(self) -> None:
        """Record the wait held while failures were still to record (:meth:`InFlight.hold`),
        unless the task already waits.

        Raises:
            LeaseLost, StorageLost: as for :meth:`commit`.
        """
        held, self.in_flight.held = self.in_flight.held, None
        if held is not None and not self.waiting and not self.in_flight.returned:
            with self._appending:
                drive(self._committing(held, as_is=True), self.effect)

    def end_after_wait(self, end: Event, wakes: bool = False) -> None:
        """Record the task's end though this run recorded that it waits: its code ended on its
        own error meanwhile (a TaskGroup whose step failed for good while another step's retry
        made the task wait), so the task ends as its code did.

        Raises:
            LeaseLost, StorageLost: as for :meth:`commit`.
        """
        batch = self.new_batch()
        batch.add(end)
        batch.wakes = wakes
        with self._appending:
            drive(self._committing(batch, as_is=True, after_wait=True), self.effect)

    async def record_async(self, events: list[Event]) -> None:
        """:meth:`record` from the event loop (an ``async def`` task): the loop waits neither
        for the disk nor for the appends of the task's other steps."""
        batch = self.new_batch()
        for event in events:
            batch.add(event)
        await self.commit_async(batch)

    async def commit_async(self, batch: Batch) -> None:
        """:meth:`commit` from the event loop: the loop never waits for the disk.

        Cancelled while it waits for its turn (another step of the task appends), nothing is
        appended. Once handed to the log the append is seen through: cancelled meanwhile, the
        caller waits for its outcome, so that the run's version matches the log, and then the
        cancellation goes on.
        """
        if self.committer is not None:
            # Many tasks' steps that end in one turn of the loop hand their appends over a
            # share a turn, so that the loop's timers and I/O are seen in between.
            if self._turns is None:
                self._turns = self.committer.turns()
            place = self._turns.take()
            if place is not None:
                try:
                    await place
                except asyncio.CancelledError as exc:
                    raise CancelledBeforeAppend(*exc.args) from None
        # No other step of the task waits for its turn, nor appends: the turn is taken at once.
        if self._loop_turns.locked() or not self._appending.acquire(blocking=False):
            try:
                async with self._loop_turns:
                    await _acquire(self._appending)
            except asyncio.CancelledError as exc:
                raise CancelledBeforeAppend(*exc.args) from None
        try:
            await drive_async(self._committing(batch), self.effect_async)
        finally:
            interrupted, self._interrupted = self._interrupted, None
            self._appending.release()
        if interrupted is not None:
            raise interrupted

    def _committing(
        self, batch: Batch, *, as_is: bool = False, after_wait: bool = False
    ) -> Generator[Effect, Any, None]:
        """The append of a batch at the run's version, once for both paths (the caller holds
        the run's append lock). ``as_is``: no wait in it is held (:meth:`InFlight.hold`);
        ``after_wait``: appended even though the run recorded that its task waits (the
        task's end, which supersedes that wait)."""
        if self.waiting and not after_wait:  # the task's code caught the signal to wait
            raise Suspended()
        if self.in_flight.ended:
            raise self.in_flight.after_end("an append")
        for event in batch.events:
            if type(event) is ApprovalRequested:  # the task is to wait for its answer
                self.awaiting_answers.add(event.decision_id)
        if not as_is:
            batch = self.in_flight.hold(batch)
        if not batch.events:
            return  # only a wait, held for after the failures still to record
        if self.awaiting_answers and self.awaiting_answers & self.answers.keys():
            batch.events[:] = self._answered_waits(batch.events)
        cause = self.context.causation_id
        # The ids the batch handed out are the events' own: a later event may name one (an
        # action's check names the decision that ruled it, appended in an earlier batch).
        own = Append(
            stream=self.stream,
            events=batch.events,
            expected_version=self.version,
            event_ids=batch.ids,
            context=self.context,
            causes=None if batch.causes.count(cause) == len(batch.causes) else batch.causes,
            wakes=batch.wakes,
        )
        try:
            for tries_left in range(_ANSWERS_ABSORBED, -1, -1):
                try:
                    yield Store([own, *batch.also])
                    break
                except VersionConflict as clash:
                    if clash.stream == self.stream or not batch.also:
                        answered = yield Blocking(self._explain_conflict, batch)
                        if not answered or not tries_left:
                            raise
                        # A person answered an approval meanwhile: the run takes the answer
                        # in and appends after it.
                        own = msgspec.structs.replace(
                            own,
                            events=self._answered_waits(own.events),
                            expected_version=self.version,
                        )
                        continue
                    # Another worker moved a breaker first: the transition is not this run's
                    # to make, nor the decision that made it.
                    own = _without_decisions_of(own, batch.also, cause)
                    if own.events:  # (nothing else, when the decision was all there was)
                        yield Store([own])
                    break
        except BackendError as exc:
            raise StorageLost(exc) from exc
        self.version += len(own.events)
        outcome = False  # of a step
        for event in batch.events:
            kind = type(event)
            if kind is StepCompleted or kind is StepFailed:
                outcome = True
            elif kind is TaskWaiting:
                self.waiting = True
            elif kind in _RUN_ENDS:
                self.in_flight.ended = True
        if not outcome:
            self.in_flight.went_on += 1

    def _answered_waits(self, events: Sequence[Event]) -> list[Event]:
        """``events`` with each wait for an approval ending at once when a request this run
        found unanswered has been answered since (a person answered as the run went on): the
        task runs again to act on the answer, instead of waiting for one already given."""
        if not self.awaiting_answers & self.answers.keys():
            return list(events)
        now = self.clock()
        return [
            msgspec.structs.replace(e, until=now) if _waits_for_approval(e) else e for e in events
        ]

    def _explain_conflict(self, batch: Batch | None = None) -> bool:
        """Raise :class:`LeaseLost` when what another process appended since this run's
        version took the task from it (a cancellation, an expired lease, any end it did not
        record). Return True when all of it is answers to approvals (a person answered a
        request while the task ran): the run takes them in, its version moves past them, and
        the append is made again. Else return False, and the conflict is raised as it is.

        A cancellation followed by nothing but the successes of this run's other steps under
        way still takes the outcomes of the steps the run saw through to their end
        (``StepCompleted`` in ``batch``): the task stopped at its next step, and a retry
        replays them instead of running their bodies again."""
        after = list(self.log.read_stream(self.stream, after=self.version))
        self._raise_if_taken(after, batch)
        if not after or not all(
            isinstance(r.event, ApprovalGranted | ApprovalDenied) for r in after
        ):
            return False
        for r in after:
            answer = r.event
            assert isinstance(answer, ApprovalGranted | ApprovalDenied)
            self.answers[answer.decision_id] = (isinstance(answer, ApprovalGranted), answer.note)
        self.version = after[-1].version
        return True

    def _raise_if_taken(self, after: list[Recorded], batch: Batch | None = None) -> None:
        """Raise :class:`LeaseLost` when what another process appended after this run's
        version (``after``) took the task from it (see :meth:`_explain_conflict`).

        Raises:
            LeaseLost: the task was cancelled, taken, quarantined or ended meanwhile.
        """
        for i, r in enumerate(after):
            event = r.event
            if isinstance(event, TaskCancelled):
                late = after[i + 1 :]
                if batch is not None and all(type(x.event) is StepCompleted for x in late):
                    self._record_after_cancel(batch, after[-1].version)
                raise LeaseLost(self.task_id, "cancelled while running", cancelled=True) from None
            if isinstance(event, TaskLeaseExpired):
                raise LeaseLost(self.task_id, "its lease expired and was taken") from None
            if isinstance(event, TaskQuarantined):
                raise LeaseLost(self.task_id, "quarantined while running") from None
            if isinstance(event, TaskSucceeded | TaskFailed | TaskDeadlineMissed):
                raise LeaseLost(
                    self.task_id, f"ended from outside while running ({type(event).__name__})"
                ) from None

    def _held(self) -> Generator[Effect, Any, None]:
        """Before a step's body: where the claim may have lapsed, look whether the task was
        taken over meanwhile (:meth:`_check_held`).

        Raises:
            LeaseLost: it was; the step's body does not run here.
        """
        if self.tenure is not None and self.tenure.lapsed():
            yield from self._still_held()

    def _still_held(self) -> Generator[Effect, Any, None]:
        """:meth:`_held` once the claim may have lapsed: look.

        Raises:
            LeaseLost: the task was taken over; the step's body does not run here.
        """
        try:
            yield Blocking(self._check_held)
        except LeaseLost:
            self.steps_run -= 1  # its body does not run here
            raise

    def _check_held(self) -> None:
        """Before a step's body runs past the worker's lease (its process was paused, its
        heartbeats failed): a peer may have taken the task over and run this step already.

        Raises:
            LeaseLost: the task was taken, cancelled or ended meanwhile.
        """
        try:
            # Read past the version as it stands (a step of the task appending meanwhile adds
            # its own records, which take nothing); nothing of the run changes here.
            self._raise_if_taken(list(self.log.read_stream(self.stream, after=self.version)))
        except BackendError as exc:
            raise StorageLost(exc) from exc
        if self.tenure is not None:
            self.tenure.checked()

    def _record_after_cancel(self, batch: Batch, version: int) -> None:
        """Append the step successes of ``batch`` after the cancellation at ``version``; a
        task retried (or changed) meanwhile keeps its stream as it is."""
        kept = [i for i, event in enumerate(batch.events) if type(event) is StepCompleted]
        if not kept:
            return
        outcomes = Append(
            stream=self.stream,
            events=[batch.events[i] for i in kept],
            expected_version=version,
            event_ids=[batch.ids[i] for i in kept],
            context=self.context,
            causes=[batch.causes[i] for i in kept],
        )
        with contextlib.suppress(VersionConflict):
            self.log.commit([outcomes])

    # -- the step protocol -----------------------------------------------------------------

    def idempotency_key(self, index: int) -> str:
        """The idempotency key of a step: task id and step index."""
        return f"{self.task_id}:{index}"

    def hand(self, what: str, call: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
        """``call``, handed to the task's code to await (``what``, as it wrote it), kept to
        check at the task's end that it was (:meth:`check_awaited`)."""
        if len(self.handed) >= self._handed_limit:  # most are awaited at once: drop those
            self.handed = [h for h in self.handed if _unstarted(h[1])]
            self._handed_limit = max(64, 2 * len(self.handed))  # (a gather of thousands)
        self.handed.append((what, call))
        return call

    def check_awaited(self) -> None:
        """Raise when the task's code ends with a call it was handed never awaited.

        Raises:
            UsageError: a step, ``engine.sleep(...)``, ``recv``, ``set_state``,
                ``progress``, ``wait``, ``degrade``, ``notify`` or ``patched`` called without
                ``await`` in an ``async def`` task: it did nothing (closed now, so Python does
                not warn of it too).
        """
        never = [what for what, call in self.handed if _unstarted(call)]
        for _, call in self.handed:
            if _unstarted(call):
                call.close()
        self.handed.clear()
        if never:
            raise UsageError(
                f"task {self.task_id}: {never[0]} was never awaited, so it did nothing"
                f"{f' (nor {len(never) - 1} more like it)' if len(never) > 1 else ''}: in an "
                f"async def task, write `await {never[0]}`"
            )

    def _take_index(self, what: str | StepDef) -> int:
        """The next index in the task's sequence, for a step or a durable call (a sleep, a
        receive).

        Raises:
            Suspended: this run already recorded that its task waits (its code caught the
                signal and went on): nothing more is recorded.
            UsageError: called inside a step's body, which is one unit: its outcome is recorded
                as a whole, and a replay does not run it.
        """
        if self.waiting or self.in_flight.held is not None:
            raise Suspended()
        if self.in_flight.ended:
            raise self.in_flight.after_end(_called(what))
        inside = CURRENT_STEP.get()
        if inside is not None:
            called = _called(what)
            raise UsageError(
                f"task {self.task_id}: {called} is called inside the body of step {inside}, which "
                "runs as one unit (a replay returns its recorded outcome without running it): "
                "call it from the task, between steps"
            )
        index = self.index
        self.index += 1
        _LAST_CALL.set((self._chain_token, index))
        return index

    def begin_step(self, step: StepDef) -> tuple[int, Replayed | None]:
        """Start the next step: its index, and its recorded outcome if it has one.

        Raises:
            StepMismatch: the log records another step at this index.
            StepInterrupted: an at-most-once step that was in flight when its worker died.
            Released: the worker is stopping: the task is handed back before this step runs.
        """
        index = self._take_index(step)  # its name made into a message only for an error
        recorded = self.outcomes.get(index)
        if recorded is not None:
            if not step.answers_to(recorded.name):
                raise StepMismatch(self.task_id, index, recorded.name, step.name)
            self.steps_replayed += 1
            return index, recorded
        if self.received:
            self._check_not_received(index, step.name)
        started = self.started.get(index)
        if started is not None and not step.answers_to(started):
            raise StepMismatch(self.task_id, index, started, step.name)
        if self.released or (self.stopping is not None and self.stopping.is_set()):
            self.released = True
            raise Released()
        if step.at_most_once and started is not None:
            raise StepInterrupted(self.task_id, index, step.name)
        after = self.withdrawn.get(index)
        if after is not None and self._recorded_from(after):
            # Cancelled before its body began, and the task's code went on past that (it
            # caught the cancellation): it meets the cancellation again, as it did.
            raise asyncio.CancelledError(f"step {step.name!r} was cancelled")
        self.steps_run += 1
        return index, None

    def _recorded_from(self, index: int) -> bool:
        """Whether the history holds a step, a sleep or a receive at ``index`` or past it."""
        recorded = (*self.outcomes, *self.received, *self.started, *self.failures)
        return any(i >= index for i in recorded)

    def record_start(self, step: StepDef, index: int) -> None:
        """Record that an at-most-once step's body starts (a re-run then refuses to run it
        again): right before the body, once nothing can stop it first (its permit, its breaker,
        another step's decision that the task waits)."""
        self.record(
            [StepStarted(index=index, name=step.name, idempotency_key=self.idempotency_key(index))]
        )
        self.started[index] = step.name

    def _withdraw_start(self, step: StepDef, index: int) -> Generator[Effect, Any, None]:
        """Record that an at-most-once step's recorded start stands for nothing: it was
        cancelled before its body began, so the next run may run it. Best effort: when this
        cannot be recorded (the storage fails, the lease is lost), the next run refuses the
        step as interrupted, as it would without it."""
        if index not in self.started:
            return  # its start was not recorded
        if self.in_flight.ended:  # the task was handed back (or ended) first
            logger.info(
                "task %s: step %r (index %d) was cancelled before its body began, after its "
                "task was handed back: the next run refuses it as interrupted",
                self.task_id,
                step.name,
                index,
            )
            return
        if (
            yield from self._withdrawn(
                step,
                index,
                "was cancelled before its body began; the next run refuses it as interrupted",
            )
        ):
            self.started.pop(index, None)

    def _withdrawn(self, step: StepDef, index: int, why: str) -> Generator[Effect, Any, bool]:
        """Record :class:`StepWithdrawn` for a step (best effort): whether it was recorded;
        if not, a warning says that the step ``why``."""
        try:
            withdrawn = StepWithdrawn(index=index, name=step.name, next_index=self.index)
            yield Blocking(self.record, [withdrawn])
        except Exception:
            logger.warning(
                "task %s: could not record that step %r (index %d) %s",
                self.task_id,
                step.name,
                index,
                why,
                exc_info=True,
            )
            return False
        return True

    def _unseen(self, index: int, outcome: Outcome | None) -> bool:
        """Whether a step's failure was recorded as its outcome though its caller gave the
        call up (:attr:`given_up`) before it was told, while the task goes on (neither waits,
        nor ended, nor is handed back): its code went on without it, and so must a replay."""
        if outcome is not None and outcome.action in ("fix", "wait"):
            return False  # not its outcome: the step runs again
        if self.released or (self.stopping is not None and self.stopping.is_set()):
            return False  # handed back: its next run goes on from the outcome
        return not self.awaited(index) and not self.in_flight.returned

    def _withdraw_failure(self, step: StepDef, index: int) -> Generator[Effect, Any, None]:
        """Record that a step's failure, recorded as its outcome, is not one: its caller gave
        the call up meanwhile (:meth:`_unseen`). A replay meets the cancellation there again
        where the task's code went on past it, else runs the step. Best effort: when this
        cannot be recorded, a replay raises the failure."""
        yield from self._withdrawn(
            step,
            index,
            "was given up on as its failure was recorded; a replay raises that failure",
        )

    def stored_result(self, step: StepDef, index: int, result: Any) -> Any:
        """A step's result as the log will hold it (see :func:`onward.events.encode_value`).

        Raises:
            UsageError: the result cannot be stored so as to come back as it is.
        """
        return encode_value(
            result,
            # The text only when a message needs it: it would cost more than a plain result.
            what=lambda: f"task {self.task_id}: the result of step {step.name!r} (index {index})",
            redactor=self.log.redactor,
        )

    def subtasks_ended(
        self, ids: list[str], read: Callable[[list[str], list[int] | None], SubtaskEnds | None]
    ) -> list[Any] | None:
        """The results of subtasks the task waits for, once all have ended (else None), as
        ``read`` (the engine's) tells: at the versions of their streams an earlier run of the
        task read (:class:`~onward.events.SubtasksRead`), else as the log has them now. A
        wait that reads an end without success records what it read first, so that a
        subtask retried since does not change the way the task's code went.

        Raises:
            TaskFailedError, TaskCancelledError, DeadlineMissed: a subtask did not succeed.
        """
        recorded = self._recorded_read(ids)
        ends = read(ids, None if recorded is None else list(recorded.versions))
        if ends is None:
            return None
        if recorded is None and not ends.succeeded:
            self.record([SubtasksRead(on=list(ids), versions=ends.versions)])
        if ends.error is not None:
            raise ends.error
        return ends.results

    def _kept_after(self, at: int) -> bool:
        """Whether a record of the same attempt after place ``at`` of the history is an
        outcome a retry keeps: a completed step or a message taken (a failed step runs
        again in the next attempt)."""
        for r in self._history[at + 1 :]:
            event = r.event
            if type(event) is TaskRetried:
                return False  # what a later attempt recorded went on from its own read
            if type(event) is StepCompleted or type(event) is MessageReceived:
                return True
        return False

    def _recorded_read(self, ids: list[str]) -> SubtasksRead | None:
        """The first read of these subtasks an earlier run recorded that this run has not
        used yet (a task may wait for the same ones twice), and that still binds the task:
        one of this attempt, or of an earlier one whose steps recorded after it a retry kept.
        """
        while True:
            found = next(
                (i for i, (_, read) in enumerate(self.subtask_reads) if read.on == ids), None
            )
            if found is None:
                return None
            at, read = self.subtask_reads.pop(found)
            if at >= self._attempt_at or self._kept_after(at):
                return read
            # An earlier attempt's read that nothing kept binds: the next one may.

    def fail_step(self, step: StepDef, index: int, exc: BaseException) -> None:
        """Record a step's failure."""
        message = error_message(exc, self.redact)
        self.record(
            [
                StepFailed(
                    index=index,
                    name=step.name,
                    error_type=type(exc).__name__,
                    message=message,
                    error_class=exception_class(exc),
                    literal=literal_argument(exc, message),
                    spread=spread_arguments(exc, message),
                    attributes=plain_attributes(exc, self.redact),
                )
            ]
        )

    @staticmethod
    def replay(step: StepDef, recorded: Replayed) -> Any:
        """The recorded outcome again: the result (as the step's return type), or its error."""
        if recorded.completed:
            return decode_value(recorded.result, step.returns)
        if recorded.error_type == "ActionDenied":
            raise ActionDenied.as_recorded(recorded.name, recorded.message)
        if recorded.error_class == _CANCELLED_CLASS:  # a body's own CancelledError
            raise asyncio.CancelledError(*([recorded.message] if recorded.message else []))
        raise replayed_error(
            recorded.error_type,
            recorded.error_class,
            recorded.message,
            literal=recorded.literal,
            spread=recorded.spread,
            attributes=recorded.attributes,
        )

    def call(self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a step durably (the synchronous path): drive :meth:`protocol` in this thread.

        Raises:
            Suspended: the task now waits (a retry's due time, an open breaker).
            UsageError: an ``async def`` step called from a synchronous task.
        """
        if step.is_async:
            raise UsageError(
                f"step {step.name!r} is async def, but task {self.task_id} runs synchronously: "
                "make the task async def and await the step, or make the step a plain def"
            )
        return drive(self.protocol(step, args, kwargs), self.effect)

    async def call_async(self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call a step durably (the asynchronous path): drive :meth:`protocol` on the event
        loop, awaiting an ``async def`` step, and running a plain one and every storage call in
        a worker thread, so that the loop never blocks.

        Raises:
            Suspended: the task now waits (a retry's due time, an open breaker).
        """
        self.in_flight.call_started()
        try:
            return await drive_async(self.protocol(step, args, kwargs), self.effect_async)
        finally:
            self.in_flight.call_ended()

    def protocol(
        self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Generator[Effect, Any, Any]:
        """The durable step, once for both paths: it yields what must be done (call the step's
        function, a storage call, a pause, the commit of its outcome) and is sent the results.

        Without a healer a failure is the step's outcome. With one, a failure may be fixed (the
        step runs again at once with remedied arguments), retried (the task waits durably and
        the step runs again when the task re-runs) or given up. A step under a queue limit
        takes a permit first (or the task waits for one) and gives it back after its outcome.
        """
        index, recorded = self.begin_step(step)  # in memory only
        if recorded is not None:
            return self.replay(step, recorded)
        if self.tenure is not None and self.tenure.lapsed():  # else no generator to make
            yield from self._still_held()
        judgement = step.judgement if self.judge is not None else None
        ruling = None
        if judgement is not None:
            try:
                ruling = yield Blocking(self._ruling, step, index, judgement)
            except MustWait as waits:
                yield from self._record_wait(waits.wait, waits.then)
        if not step.limit:
            if ruling is not None:  # judged (it may have waited for a person): looked at again
                yield from self._held()
            return (yield from self._attempts(step, index, args, kwargs, ruling))
        try:
            # Inside: a caller that gives up (a timeout) while the permit is being taken
            # gets the cancellation once that is done, and the permit is given back.
            while (waiting := (yield Blocking(self._take_permit, step, index))) is not None:
                if self.in_flight.bodies:
                    # Steps of this task under way (one may hold the permit): they record their
                    # outcomes first, then the permit is asked for again.
                    yield Settle()
                    self.in_flight.decided()
                    continue
                self.steps_run -= 1  # it did not run: it waits for a permit
                yield from self._record_wait([waiting])
            # The permit's take may have waited on others (the process paused meanwhile).
            yield from self._held()
            result = yield from self._attempts(step, index, args, kwargs, ruling)
        except GeneratorExit:
            raise
        except BaseException as exc:
            if not isinstance(exc, StorageLost):
                yield Blocking(self._give_back, step, index)
            raise
        yield Blocking(self._give_back, step, index)
        return result

    def _take_permit(self, step: StepDef, index: int) -> TaskWaiting | None:
        """Take a permit of the step's queue limit: None once taken, else the wait for one
        (to record; the worker is free meanwhile).

        Raises:
            UsageError: the limit is not declared (or there are no limits here).
        """
        if self.limits is None:
            raise UsageError(f"step {step.name!r} takes limit {step.limit!r}, but none is known")
        try:
            waiting = self.limits.take(step.limit, self.task_id, index, self.context)
        except BackendError as exc:
            raise StorageLost(exc) from exc
        if waiting is None:
            self.permits.add(index)
        return waiting

    def _give_back(self, step: StepDef, index: int) -> None:
        """Give the step's permit back, if it holds one (should that fail, it runs out with
        the task's claim)."""
        assert self.limits is not None
        if index not in self.permits:
            return
        self.permits.discard(index)
        try:
            self.limits.give_back(step.limit, self.task_id, index, self.context)
        except BackendError:
            logger.warning(
                "task %s: the permit of limit %r for step %d could not be given back; it runs "
                "out with the task's claim",
                self.task_id,
                step.limit,
                index,
            )

    def _attempts(
        self,
        step: StepDef,
        index: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ruling: Ruling | None,
    ) -> Generator[Effect, Any, Any]:
        """The tries of a step that has no recorded outcome, until one is recorded (or the
        task waits)."""
        judgement = step.judgement if self.judge is not None else None
        healer = self.healer
        attempt = self.failures.get(index, 0) + 1
        remedied: StepCall | None = None
        outcome: Outcome | None = None
        due = self.retry_due.get(index)
        if due is not None and self.clock() < due:
            # Woken before its retry is due (a gathered sibling's earlier one): wait again.
            self.steps_run -= 1
            yield from self._record_wait([TaskWaiting(reason=f"retry of step {index}", until=due)])
        if index in self.fix_in_flight:  # a fix that waited before this run: settle it now
            fix, signature = self.fix_in_flight[index]
            outcome = Outcome(action="wait", fix=fix, signature=signature, index=index)
            chain = self.fix_chains.get(index)
            if healer is not None and chain:  # its changed call, when a crash cut its delay
                try:
                    remedied = yield Blocking(
                        healer.resume_fix, self, step, index, args, kwargs, chain
                    )
                except MustWait as waits:
                    yield from self._record_wait(waits.wait, waits.then)
        while True:
            guarded = healer is not None and step.breaker
            if guarded:  # its breaker is open: the task waits
                assert healer is not None
                wait = yield Blocking(healer.before_call, self, step, index)
                if wait is not None:
                    yield from self._record_wait(wait)
            started = self.clock()
            observed = None if self.observer is None else self._observe(step, index, attempt)
            if self.in_flight.deciding:  # another step decides whether the task waits
                yield Admit()
            if self.waiting or self.in_flight.held is not None:
                raise Suspended()  # another step of the task recorded (or holds) a wait
            tracked = self.in_flight.body_started(index)
            if step.at_most_once and index not in self.started:
                try:
                    yield Blocking(self.record_start, step, index)
                except BaseException as exc:
                    self.in_flight.body_settled(index, tracked)
                    if isinstance(exc, asyncio.CancelledError):  # before its body began
                        yield from self._withdraw_start(step, index)
                    raise
            try:
                result = yield Invoke(
                    step,
                    index,
                    args,
                    kwargs,
                    remedied,
                    self.observer,
                    None if observed is None else observed.token,
                )
                if ruling is not None:
                    assert judgement is not None
                    yield Blocking(self._check, step, index, judgement, ruling, result)
            except Exception as exc:
                # Its body ended: its failure is recorded before any wait of the task (the
                # steps whose bodies raised at once decide one after the other). An
                # at-most-once step's next try records its own start.
                self.in_flight.body_failed(index, tracked)
                self.started.pop(index, None)
                if ruling is not None and not isinstance(exc, CheckFailed):
                    yield Blocking(
                        self._action_failed, step, index, ruling, error_message(exc, self.redact)
                    )
                # Recorded even when its caller gives up on it meanwhile (a TaskGroup cancels
                # its other tasks at the first error): the cancellation comes after.
                cancelled = yield Settle(failing=index)  # the healer may record a wait
                if cancelled:
                    self.given_up.add(index)
                decided: list[Outcome | None] = []  # what was recorded, kept through a cancel
                try:
                    try:
                        if healer is None:
                            yield Blocking(_noting, decided, self.fail_step, step, index, exc)
                        else:
                            call = remedied or bind_call(step, args, kwargs, attempt)
                            fix = outcome.fix if outcome is not None else ""
                            fix_signature = outcome.signature if outcome is not None else ""
                            outcome = yield Deciding(
                                _noting,
                                decided,
                                healer.on_failure,
                                *(self, step, index, attempt, call, exc, fix, fix_signature),
                            )
                    except asyncio.CancelledError:
                        if not decided:
                            raise  # nothing recorded
                        # Its caller gave it up while its failure was being recorded (a
                        # TaskGroup sibling's error, a timeout): the code never saw it.
                        cancelled = True
                        self.given_up.add(index)
                    if cancelled and self._unseen(index, decided[0]):
                        yield from self._withdraw_failure(step, index)
                    self.in_flight.failure_recorded(index)
                    if self.in_flight.held is not None and self.in_flight.quiet():
                        yield Blocking(self.record_held)  # the last outcome: now the wait
                finally:
                    self.in_flight.failure_recorded(index)
                    self.in_flight.decided()
                if cancelled:
                    raise asyncio.CancelledError(f"step {step.name!r} was cancelled") from exc
                if healer is None:
                    self._observed(observed, exc, decision="fail")
                    read_as_recorded(exc, error_message(exc, self.redact))
                    raise
                assert outcome is not None
                self._observed(observed, exc, outcome.signature, outcome.action)
                attempt += 1
                self.tries[index] = self.tries.get(index, 0) + 1
                if outcome.action == "fix":
                    assert outcome.call is not None
                    remedied = outcome.call
                    wait = outcome.until - self.clock()
                    if wait > 0 and self.sleep is not None:
                        yield Pause(wait)
                        if self.stopping is not None and self.stopping.is_set():
                            # Its wait was cut short: handed back, the next run waits the
                            # rest of the delay, then makes the fix's call.
                            self.released = True
                            raise Released() from None
                    continue
                if outcome.action == "wait":
                    raise Suspended() from None
                # The task catches what a replay will raise: the message as recorded.
                read_as_recorded(exc, error_message(exc, self.redact))
                raise
            except BaseException as exc:
                self.in_flight.body_settled(index, tracked)
                if isinstance(exc, CancelledBeforeBody):
                    yield from self._withdraw_start(step, index)
                elif isinstance(exc, OwnCancellation):
                    # Its body raised CancelledError itself: its outcome, as any failure's (a
                    # re-run would run the body again), and the task's code gets it as it came.
                    self.started.pop(index, None)
                    yield Blocking(self.fail_step, step, index, exc.error)
                    raise exc.error from None
                elif index in self.in_flight.abandoned and ruling is None:
                    # A plain body runs on in its thread: if the task is handed back with
                    # nothing recorded since (the run was cancelled), what it returns is kept.
                    self.in_flight.unrecorded[index] = (
                        InFlight.mark(self),
                        step,
                        functools.partial(self._completed, step, index, started, attempt, outcome),
                    )
                raise
            try:
                refused: UsageError | None = None
                try:
                    # Its redaction may take long: off the event loop (a number never does).
                    if type(result) not in _LIGHT and _weighty(result):
                        try:
                            stored = yield Blocking(self.stored_result, step, index, result)
                        except asyncio.CancelledError:
                            if ruling is None:
                                self._returned_unrecorded(
                                    step, index, started, attempt, outcome, result
                                )
                            raise
                    else:
                        stored = self.stored_result(step, index, result)
                except UsageError as exc:
                    refused = exc
                else:
                    # The caller gets what a replay will get: the result as recorded, decoded
                    # again.
                    result = decode_value(stored, step.returns)
                    batch = Batch(self.context.causation_id)
                    completed_id = self._completed(
                        step, index, started, attempt, outcome, stored, batch
                    )
                    if ruling is not None and self.judge is not None:
                        self.judge.outcome(
                            self, step, index, ruling, batch, passed=True, cause=completed_id
                        )
                    try:
                        yield Commit(batch)
                    except PayloadTooLarge as exc:
                        refused = exc  # its record is over the log's payload limit
                    except CancelledBeforeAppend:
                        # Its caller was cancelled while its outcome waited for its turn to
                        # append (another step's was appending).
                        if ruling is None:
                            self._returned_unrecorded(
                                step, index, started, attempt, outcome, result
                            )
                        raise
                if refused is not None:
                    # Its body returned what cannot be stored (a lock, a generator, a result
                    # over the payload limit): the refusal is the step's recorded outcome, so
                    # that no re-run calls the body again; the code's own mistake, not its
                    # dependency's failure to heal.
                    message = error_message(refused, self.redact)
                    self.started.pop(index, None)
                    if ruling is not None:
                        yield Blocking(self._action_failed, step, index, ruling, message)
                    yield Blocking(self.fail_step, step, index, refused)
                    self._observed(observed, refused, decision="fail")
                    read_as_recorded(refused, message)
                    raise refused
            finally:
                self.in_flight.body_settled(index, tracked)
            if self.in_flight.held is not None and self.in_flight.quiet():
                yield Blocking(self.record_held)  # the last outcome: now the task's wait
            if observed is not None:
                self._observed(observed)
            return result

    def _completed(
        self,
        step: StepDef,
        index: int,
        started: float,
        attempt: int,
        outcome: Outcome | None,
        stored: Any,
        batch: Batch,
    ) -> str:
        """Add a step's success to a batch (its stored result) with what it settles (the fix
        that worked, a closed breaker); returns the id of its ``StepCompleted``."""
        completed_id = batch.add(
            StepCompleted(
                index=index,
                name=step.name,
                result=stored,
                duration=self.clock() - started,
                attempt=attempt,
                dependency=step.breaker,
            )
        )
        if self.healer is not None:
            self.healer.on_success(self, step, batch, completed_id, outcome)
        return completed_id

    def _returned_unrecorded(
        self,
        step: StepDef,
        index: int,
        started: float,
        attempt: int,
        outcome: Outcome | None,
        result: Any,
    ) -> None:
        """Keep what a step's body returned, its caller cancelled before its outcome was
        appended, to record as its task is handed back, as an abandoned body's result is."""
        self.in_flight.returned_before(index, result)
        complete = functools.partial(self._completed, step, index, started, attempt, outcome)
        self.in_flight.unrecorded[index] = (InFlight.mark(self), step, complete)

    def abandoned_results(self) -> Batch:
        """The successes of the plain steps' bodies that the run gave up on and that returned
        a storable result, to record as the task is handed back (its run cancelled while they
        ran), so that they do not run again: only while the run has recorded nothing since it
        gave each up but the outcomes of steps already under way (the task's code may have
        taken another way, past a timeout around the step: such a call runs again; see
        :meth:`InFlight.mark`). Call once their bodies have ended."""
        batch = self.new_batch()
        for index in sorted(self.in_flight.unrecorded):
            mark, step, complete = self.in_flight.unrecorded[index]
            running = self.in_flight.abandoned.get(index)
            if mark != InFlight.mark(self) or running is None or not running.done():
                continue
            if running.cancelled() or running.exception() is not None:
                continue
            try:
                stored = self.stored_result(step, index, running.result())
            except UsageError:
                continue  # its next call fails the same way, and is recorded then
            complete(stored, batch)
        self.in_flight.unrecorded.clear()
        return batch

    def _record_wait(
        self, wait: list[Event] | Batch, then: Callable[[], None] | None = None
    ) -> Generator[Effect, Any, NoReturn]:
        """Record that the task waits (its events, or a batch of them with their causes), once
        the other step bodies under way have their outcomes recorded (no body starts
        meanwhile), then do ``then`` (tell a person they are asked), and unwind the task.

        Raises:
            Suspended: always: the task now waits.
        """
        yield Settle()
        try:
            if isinstance(wait, Batch):
                yield Blocking(self.commit, wait)
            else:
                yield Blocking(self.record, wait)
        finally:
            self.in_flight.decided()
        if then is not None:
            yield Blocking(then)
        raise Suspended()

    async def wait_async(
        self, wait: list[Event] | Batch, then: Callable[[], None] | None = None
    ) -> None:
        """Record that the task waits, from the event loop outside the step protocol (the
        task's ``await engine.wait(ids)``, a component with no workaround left), as the
        protocol does: once the other step bodies under way have their outcomes recorded;
        the caller then unwinds the task with :class:`Suspended`. Called inside a step's body,
        that body ends here with no outcome, and does not wait for itself.
        """
        own = CURRENT_STEP.get()
        if own is not None:
            self.in_flight.body_settled(own, own in self.in_flight.bodies)
        await self.in_flight.settle()
        try:
            if isinstance(wait, Batch):
                await self.commit_async(wait)
            else:
                await self.record_async(wait)
        finally:
            self.in_flight.decided()
        if then is not None:
            await delegate(then)

    def _observe(self, step: StepDef, index: int, attempt: int) -> _Try | None:
        """Tell the observer that a try of a step starts (None without one)."""
        if self.observer is None:
            return None
        action = step.judgement.impact if step.judgement is not None else ""
        start = StepStart(self.task_id, step.name, index, attempt, step.breaker, action)
        tried = _Try(notify(self.observer, "step_started", self.observed, start))
        self._tries.add(tried)
        return tried

    def _observed(
        self,
        tried: _Try | None,
        error: BaseException | None = None,
        signature: str = "",
        decision: str = "",
    ) -> None:
        """Tell the observer how a try of a step ended (once)."""
        if self.observer is None or tried is None or tried.ended:
            return
        tried.ended = True
        self._tries.discard(tried)
        notify(
            self.observer,
            "step_ended",
            tried.token,
            error=error,
            signature=signature,
            decision=decision,
        )

    def end_tries(self, outcome: str) -> None:
        """Tell the observer of the tries that ended with no outcome recorded as the run
        ended with ``outcome`` (cancelled, its claim lost, the worker stopped...)."""
        for tried in list(self._tries):
            self._observed(tried, decision=outcome)

    def sleeping(self, seconds: float) -> Generator[Effect, Any, None]:
        """A durable sleep, once for both paths: the first run records when it ends and the
        task waits (the worker is free meanwhile); the run after that time records that it
        ended and goes on. It takes a step's place in the task's sequence."""
        index = self._take_index("sleep()")
        recorded = self.outcomes.get(index)
        if recorded is not None:
            if recorded.name != SLEEP_STEP:
                raise StepMismatch(self.task_id, index, recorded.name, SLEEP_STEP)
            self.steps_replayed += 1
            return
        self._check_not_received(index, SLEEP_STEP)
        started = self.started.get(index)
        if started is not None and started != SLEEP_STEP:
            raise StepMismatch(self.task_id, index, started, SLEEP_STEP)
        now = self.clock()
        wake_at = self.wakes.get(index)
        if wake_at is None:
            wake_at = now + seconds
            sleep = StepStarted(
                index=index,
                name=SLEEP_STEP,
                idempotency_key=self.idempotency_key(index),
                wake_at=wake_at,
            )
            waiting = TaskWaiting(reason=f"sleep of {seconds:g} s", until=wake_at)
            yield from self._record_wait([sleep, waiting])
        if now < wake_at:  # run again before the time (a person's nudge): wait again
            yield from self._record_wait([TaskWaiting(reason="sleep", until=wake_at)])
        self.steps_run += 1
        done = StepCompleted(index=index, name=SLEEP_STEP, result=None, duration=now - wake_at)
        yield Blocking(self.record, [done])

    def patched(self, change_id: str) -> bool:
        """Whether this run takes the new code path of a change (see
        :meth:`onward.Engine.patched`): yes when the task took it before, no when the task's
        history runs on past this point without it (an older history, replaying), else yes,
        and that is recorded."""
        mark = self._patch_mark(change_id)
        if isinstance(mark, bool):
            return mark
        self.record([mark])
        self.patches.add(change_id)
        return True

    async def patched_async(self, change_id: str) -> bool:
        """:meth:`patched` from the event loop (an ``async def`` task): the loop waits
        neither for the disk nor for the appends of the task's other steps."""
        mark = self._patch_mark(change_id)
        if isinstance(mark, bool):
            return mark
        self.patches.add(change_id)  # taken at once: a concurrent call does not mark it again
        try:
            await self.record_async([mark])
        except BaseException:
            self.patches.discard(change_id)
            raise
        return True

    def _patch_mark(self, change_id: str) -> bool | PatchMarked:
        """Which path a change takes without recording anything (True, False), or the mark
        to record before the new path is taken."""
        if change_id in self.patches:
            return True
        if self._reach is None:
            # Anything recorded after this first look has an index below the run's next one,
            # so the history's reach is looked for once.
            self._reach = max((*self.outcomes, *self.received, *self.started), default=-1)
        if self.index <= self._reach:
            return False  # replaying a history recorded before the change
        return PatchMarked(change_id=change_id, index=self.index)

    def _took(self, received: MessageReceived) -> None:
        """Keep a message taken (or a receive that gave up) at its step index."""
        self.received[received.index] = received
        version = received.inbox_version
        if version is not None:
            self._taken_versions.add(version)
            if version > self._last_taken.get(received.topic, 0):
                self._last_taken[received.topic] = version

    def _check_not_received(self, index: int, name: str) -> None:
        """Refuse a step or a sleep where the log records a message taken.

        Raises:
            StepMismatch: the log holds a receive at this index.
        """
        taken = self.received.get(index)
        if taken is not None:
            raise StepMismatch(self.task_id, index, receive_name(taken.topic), name)

    def receiving(
        self, topic: str, timeout: float | None, inbox: Callable[[int], list[Recorded]]
    ) -> Generator[Effect, Any, Any]:
        """A durable receive, once for both paths: the next message of ``topic`` the task has
        not taken, recorded as taken at this step index (a re-run gets the same one); with none
        yet, the task waits (for the message, or until ``timeout``), then returns None.

        The run keeps the inbox as far as it has read it, and reads only what came since; a
        topic's messages are taken in the order they came, so only those after the last one of
        ``topic`` taken are looked at (a long conversation is not read again at each receive).

        Args:
            topic: the messages' topic.
            timeout: seconds to wait (None: for ever).
            inbox: reads the task's inbox stream after a version.
        """
        index = self._take_index("recv()")
        taken = self.received.get(index)
        if taken is not None:
            if taken.topic != topic:
                raise StepMismatch(
                    self.task_id, index, receive_name(taken.topic), receive_name(topic)
                )
            self.steps_replayed += 1
            return decode_value(taken.value)
        other = self.outcomes.get(index)
        if other is not None:
            raise StepMismatch(self.task_id, index, other.name, receive_name(topic))
        began = self.started.get(index)
        if began is not None and began != RECEIVE_STEP:
            raise StepMismatch(self.task_id, index, began, receive_name(topic))
        after = self._last_taken.get(topic, 0)
        known = self.inbox
        fresh: list[Recorded] = yield Blocking(inbox, known[-1].version if known else 0)
        read = known[-1].version if known else 0  # another receive may have read meanwhile
        known += (r for r in fresh if r.version > read)
        first = bisect.bisect_right(known, after, key=_version)
        now = self.clock()
        # Taken, or being taken by a receive under way beside this one (gathered receives of
        # one topic): known only now, after the read, during which the others went on. Read
        # in place: a slice of the inbox from ``first`` on would copy all the messages not
        # taken yet at each receive (a task taking N messages sent at once: N * N / 2).
        taking, used = self.taking, self._taken_versions
        end = len(known)
        for place in range(first, end):
            r = known[place]
            message = r.event
            if (
                r.version not in used
                and r.version not in taking
                and isinstance(message, MessageSent)
            ):
                if message.topic != topic:
                    continue
                got = MessageReceived(
                    index=index, topic=topic, inbox_version=r.version, value=message.value
                )
                taking.add(r.version)
                try:
                    yield Blocking(self.record, [got])
                    self._took(got)
                finally:
                    taking.discard(r.version)
                self.steps_run += 1
                return decode_value(got.value)
        deadline = self.wakes.get(index)
        if deadline is not None and now >= deadline:  # the wait is over: nothing came
            gave_up = MessageReceived(index=index, topic=topic)
            yield Blocking(self.record, [gave_up])
            self._took(gave_up)
            return None
        seen = known[end - 1].version if end > first else after
        waits: list[Event] = []
        if began is None:  # the first time: when the wait ends, for every later run
            deadline = None if timeout is None else now + timeout
            waits.append(
                StepStarted(
                    index=index,
                    name=RECEIVE_STEP,
                    idempotency_key=self.idempotency_key(index),
                    wake_at=deadline,
                )
            )
            self.started[index] = RECEIVE_STEP
        waits.append(
            TaskWaiting(reason=f"message {topic!r}", until=deadline, topic=topic, inbox_after=seen)
        )
        yield from self._record_wait(waits)

    # -- carrying out the protocol's effects ----------------------------------------------

    def effect(self, effect: Effect) -> Any:
        """Carry out one effect in this thread (the synchronous path)."""
        if type(effect) is Commit:  # a step's outcome (then its append, a Store)
            self.commit(effect.batch)
            return None
        if isinstance(effect, Store):
            if self.committer is not None:
                return self.committer.commit(effect.appends)
            return self.log.commit(effect.appends)
        if isinstance(effect, Invoke):
            self.made_in_step.pop(effect.index, None)  # an attempt makes its own afresh
            token = CURRENT_STEP.set(effect.index)
            step = effect.step
            meter = None if step.timeout is None else self._clock_meter()
            try:
                if meter is None:
                    return _call_step(effect)
                with meter as moved:
                    result = _call_step(effect)
                return self._in_time(step, moved(), result)
            except asyncio.CancelledError as exc:  # nothing cancels a step on this path
                raise OwnCancellation(exc) from None
            finally:
                CURRENT_STEP.reset(token)
        if isinstance(effect, Blocking):
            return effect.fn(*effect.args)
        if isinstance(effect, Pause):
            assert self.sleep is not None
            if self.sleep is not time.sleep or self.stopping is None:
                self.sleep(effect.seconds)  # an injected clock's sleep: instant
                return None
            # A worker stopping ends the wait: the task is handed back before its next step,
            # and its next run waits what is left of the delay (recorded with the fix).
            deadline = time.monotonic() + effect.seconds
            while (left := deadline - time.monotonic()) > 0:
                if self.stopping.wait(min(left, PAUSE_SLICE)):
                    break
            return None
        assert isinstance(effect, Settle | Admit)
        return False  # one step at a time: nothing else is under way

    def _clock_meter(self) -> AbstractContextManager[Callable[[], float]] | None:
        """What counts the seconds a step body moves the engine's clock, if the clock can
        (a test's ``FakeClock.metered``: its time moves only when told to), else None: a real
        clock's timeout is waited for in real time (:func:`call_with_timeout`,
        :func:`_await_body`)."""
        metered = getattr(self.clock, "metered", None)
        return metered() if callable(metered) else None

    def _in_time(self, step: StepDef, moved: float, result: Any) -> Any:
        """A step's result, unless its body moved the virtual clock by its timeout or more (a
        test's simulated slow call): then it timed out, as a body that returns late in real
        time does, and its result is ignored.

        Raises:
            TimeoutError: the body spent its timeout on the clock before it returned.
        """
        assert step.timeout is not None
        if moved >= step.timeout:
            raise _timed_out(step)
        return result

    async def effect_async(self, effect: Effect) -> Any:
        """Carry out one effect without blocking the event loop (the asynchronous path)."""
        if type(effect) is Store:  # with Commit and Invoke, each step's: looked at first
            return await self._store_async(effect)
        if type(effect) is Commit:
            await self.commit_async(effect.batch)
            return None
        if type(effect) is Invoke:
            self.made_in_step.pop(effect.index, None)  # an attempt makes its own afresh
            token = CURRENT_STEP.set(effect.index)
            step = effect.step
            # Entered and left by hand: a with block would cost every step, timed or not.
            meter = None if step.timeout is None else self._clock_meter()
            moved = None if meter is None else meter.__enter__()
            try:
                if step.is_async:
                    try:
                        if effect.observer is None:  # one coroutine fewer: nobody observes
                            result = await _await_body(effect)
                        else:
                            result = await _await_step(effect)
                    except asyncio.CancelledError as exc:
                        raise _own(exc) from None
                else:
                    context = contextvars.copy_context()  # the step sees its run and index
                    gate = BodyGate()

                    def body() -> Any:
                        if not gate.enter():
                            return None  # cancelled before a thread took it up: never run
                        try:
                            return context.run(_call_step, effect)
                        except StopIteration as exc:
                            raise _Stopped(exc) from None

                    running = asyncio.get_running_loop().run_in_executor(self.step_threads, body)
                    try:
                        result = await asyncio.shield(running)
                    except asyncio.CancelledError as exc:
                        if gate.close():  # its body never began, and now never will
                            raise CancelledBeforeBody(*exc.args) from None
                        self.in_flight.abandoned[effect.index] = running  # runs on in its thread
                        raise _own(exc) from None
                return result if moved is None else self._in_time(step, moved(), result)
            finally:
                if meter is not None:
                    meter.__exit__(None, None, None)
                CURRENT_STEP.reset(token)
        if isinstance(effect, Blocking):
            context = contextvars.copy_context()
            in_thread = asyncio.to_thread(context.run, _delegated, effect.fn, *effect.args)
            call = asyncio.ensure_future(
                _in_turn(in_thread) if isinstance(effect, Deciding) else in_thread
            )
            try:
                return await asyncio.shield(call)
            except asyncio.CancelledError:
                # Given up on (a timeout around the step): the call goes on in its thread. Its
                # outcome is waited for first, so that the protocol unwinds from what it did (a
                # permit taken, a wait recorded), then the cancellation goes on.
                if not call.cancelled():
                    with contextlib.suppress(BaseException):
                        await call
                raise
        if isinstance(effect, Pause):
            if self.sleep is None or self.sleep is time.sleep:
                # As on the synchronous path, a worker stopping ends the wait.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + effect.seconds
                while (left := deadline - loop.time()) > 0:
                    if self.stopping is not None and self.stopping.is_set():
                        break
                    await asyncio.sleep(min(left, PAUSE_SLICE))
            else:
                self.sleep(effect.seconds)  # an injected clock's sleep: instant
            return None
        if isinstance(effect, Settle):
            if effect.failing < 0:
                await self.in_flight.settle()
                return False
            # A step whose body raised records its failure even if its caller gives up on it
            # meanwhile (each cancellation is taken once): whether it did is returned, for the
            # protocol to raise it afterwards.
            cancelled = False
            while True:
                try:
                    await self.in_flight.settle(effect.failing)
                except asyncio.CancelledError:
                    cancelled = True
                    continue
                return cancelled
        assert isinstance(effect, Admit)
        await self.in_flight.admit()
        return None

    async def _store_async(self, effect: Store) -> AppendResult:
        """Hand an append to the log off the loop, and await its outcome through any
        cancellation: that is kept for :meth:`commit_async` to raise once the run has taken
        the outcome in."""
        pending: asyncio.Future[AppendResult]
        if self.committer is not None:
            # The committer's future cannot be cancelled, and wakes its caller with the
            # cancellation once the outcome is known; any other is shielded.
            pending = self.committer.commit_soon(effect.appends)
            unstoppable = type(pending) is Seen
        else:
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(None, self.log.commit, effect.appends)
            unstoppable = False
        while True:
            try:
                return await (pending if unstoppable else asyncio.shield(pending))
            except asyncio.CancelledError as exc:
                if pending.cancelled():  # its loop is closing: no outcome will come
                    raise
                self._interrupted = exc

    # -- judged actions --------------------------------------------------------------------

    def _ruling(self, step: StepDef, index: int, judgement: Judgement) -> Ruling:
        """The action's confidence decision: recorded before, or taken now.

        Raises:
            MustWait: it waits for a human's answer (the wait, to record).
            ActionDenied: a human refused it (the step's final failure is recorded).
        """
        assert self.judge is not None
        ruling = self.rulings.get(index)
        if ruling is None:
            ruling = self.judge.decide(self, step, index, judgement)
            self.rulings[index] = ruling
        if ruling.strategy != Strategy.ASK:
            return ruling
        answer = self.answers.get(ruling.decision_id)
        if answer is None:  # run again before anyone answered: wait again
            self.awaiting_answers.add(ruling.decision_id)
            raise MustWait([TaskWaiting(reason=f"approval of {step.name}")])
        granted, note = answer
        if granted:
            return ruling
        # The task sees what a replay will see: the message as recorded (redacted, bounded).
        message = error_message(ActionDenied(step.name, note), self.redact)
        denied = ActionDenied.as_recorded(step.name, message)
        batch = self.new_batch()
        batch.add(
            StepFailed(index=index, name=step.name, error_type="ActionDenied", message=message),
            ruling.decision_id,
        )
        self.judge.denied(self, step, ruling, batch)
        self.commit(batch)
        self.outcomes[index] = Replayed(step.name, False, None, "ActionDenied", message)
        raise denied

    def _check(
        self, step: StepDef, index: int, judgement: Judgement, ruling: Ruling, result: Any
    ) -> None:
        """Run the action's check when its strategy asks for one; undo and raise on failure.

        Raises:
            CheckFailed: the check did not hold (its outcome is recorded).
        """
        if judgement.check is None or ruling.strategy == Strategy.IMMEDIATE:
            return
        assert self.judge is not None
        held, reason = self.judge.verdict(judgement, result)
        if held:
            return
        batch = self.new_batch()
        cause = None
        if ruling.strategy != Strategy.MONITORED and judgement.can_undo:
            undone = self.judge.undo(judgement, result, step, index)
            cause = batch.add(undone, ruling.decision_id)
            if not undone.ok:  # the effect stays: the failure says so, not only the log
                reason = f"{reason}; undoing it failed: {undone.message}"
        self.judge.outcome(
            self, step, index, ruling, batch, passed=False, message=reason, cause=cause
        )
        self.commit(batch)
        raise CheckFailed(step.name, reason)

    def _action_failed(self, step: StepDef, index: int, ruling: Ruling, message: str) -> None:
        """Record that a judged action raised (its history counts the failure)."""
        assert self.judge is not None
        batch = self.new_batch()
        self.judge.outcome(
            self, step, index, ruling, batch, passed=False, message=message, adapt=False
        )
        self.commit(batch)


def _without_decisions_of(own: Append, refused: Sequence[Append], cause: str) -> Append:
    """``own`` without the decisions that caused the ``refused`` appends (breaker transitions
    another worker's move made stale), unless another of its events names one as its cause."""
    dropped = {c for a in refused for c in (a.causes or ())}
    ids = own.event_ids or []
    if not dropped or len(ids) != len(own.events):
        return own
    causes = own.causes if own.causes is not None else [cause] * len(own.events)
    kept = [i for i, event_id in enumerate(ids) if event_id not in dropped]
    if len(kept) == len(ids) or any(causes[i] in dropped for i in kept):
        return own
    return msgspec.structs.replace(
        own,
        events=[own.events[i] for i in kept],
        event_ids=[ids[i] for i in kept],
        causes=None if own.causes is None else [own.causes[i] for i in kept],
    )
