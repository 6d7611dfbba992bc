"""What a running engine tells an observer: the hooks that traces and metrics hang on.

An :class:`Observer` is told when a task run starts and ends, when a step's function is called
and what came of it (the healer's decision included), and what the session looks like at each
task boundary. :mod:`onward.telemetry` turns these into OpenTelemetry spans and metrics; a test
or a simulation may count them.

The hooks are called only for work done now: a step whose outcome is replayed from the log, and
every fold of the projections (opening, catching up, ``onward replay``), tell the observer
nothing. An observer must be quick and must not raise: it runs on the engine's own path (an
exception it raises is logged and dropped).

::

    class Counting(Observer):
        def __init__(self) -> None:
            self.steps = 0

        def step_ended(self, token, *, error=None, signature="", decision="") -> None:
            self.steps += 1

    engine = Engine.open("memory://", observer=Counting())
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from onward.events import Recorded, TaskClaimed, TaskWaiting, redacted_logger

if TYPE_CHECKING:
    from onward.judgement.budget import ErrorBudget
    from onward.projections import Projections, TaskView

__all__ = [
    "IN_OBSERVER",
    "OBSERVER_HOOKS",
    "Observer",
    "StepStart",
    "TaskStart",
    "notify",
    "observing",
]

# Its records carry the traceback of what an observer raised, which may hold a secret.
logger = redacted_logger("onward.engine")


class TaskStart:
    """A task run that starts: what an observer may record about it.

    Attributes:
        task_id: the task.
        name: its registered name.
        session: its session.
        attempt: how many times it has been claimed, this claim included.
        priority: its priority.
        waited: seconds it was runnable before this claim (since its submission, the end of
            its last timer, or the answer it waited for).
        now: the claim's time.
    """

    __slots__ = ("attempt", "name", "now", "priority", "session", "task_id", "waited")

    def __init__(
        self,
        task_id: str,
        name: str,
        session: str,
        attempt: int,
        priority: str,
        waited: float,
        now: float,
    ) -> None:
        self.task_id = task_id
        self.name = name
        self.session = session
        self.attempt = attempt
        self.priority = priority
        self.waited = waited
        self.now = now

    @classmethod
    def of(cls, view: TaskView, history: Sequence[Recorded], now: float) -> TaskStart:
        """The start of a run, from the task's view and its history read before the claim."""
        claims = sum(isinstance(r.event, TaskClaimed) for r in history)
        last = history[-1] if history else None
        runnable = now
        if last is not None:
            runnable = last.meta.time
            if isinstance(last.event, TaskWaiting) and last.event.until is not None:
                runnable = last.event.until
        return cls(
            view.task_id,
            view.name,
            view.session,
            claims + 1,
            str(view.priority),
            max(0.0, now - runnable),
            now,
        )


class StepStart:
    """A step's function about to be called (a try: after a fix, the step is tried again).

    Attributes:
        task_id: its task.
        step: the step's registered name.
        index: its index in the task.
        attempt: which try of the step this is, from 1.
        dependency: the dependency its breaker guards ("" for none).
        action: its impact when it is a judged action ("" for a plain step).
    """

    __slots__ = ("action", "attempt", "dependency", "index", "step", "task_id")

    def __init__(
        self, task_id: str, step: str, index: int, attempt: int, dependency: str, action: str
    ) -> None:
        self.task_id = task_id
        self.step = step
        self.index = index
        self.attempt = attempt
        self.dependency = dependency
        self.action = action


class Observer:
    """Hooks a running engine calls; each does nothing here: override those you need.

    Pass one to :meth:`onward.Engine.open` (``observer=``). A token returned by a ``*_started``
    hook is handed back to the matching ``*_ended`` one (and a task run's token to its steps'
    :meth:`step_started`), so that an observer may keep what it started (a span) without
    shared state.
    """

    def task_started(self, start: TaskStart) -> Any:
        """A task run starts (just claimed). Returns a token for :meth:`task_ended`."""
        return None

    def task_ended(self, token: Any, outcome: str) -> None:
        """A task run ended: ``succeeded``, ``failed``, ``waiting`` (for a timer, subtasks or
        an answer), ``cancelled``, ``lost`` (its lease ran out and a peer took the task, or it
        was quarantined or ended elsewhere while it ran), ``released`` (handed back) or
        ``missed``."""

    def step_started(self, task: Any, start: StepStart) -> Any:
        """A step's function is about to be called; ``task`` is its run's token. Returns a
        token for :meth:`step_ended`."""
        return None

    def step_ended(
        self,
        token: Any,
        *,
        error: BaseException | None = None,
        signature: str = "",
        decision: str = "",
    ) -> None:
        """A try of a step ended: it returned (``error`` None; its outcome is durable), or it
        raised and the healer decided (``decision``: ``fix``, ``wait`` or ``fail``; ``signature``
        is the error's), or its task run ended before any outcome of it was recorded
        (``error`` None, ``decision`` the run's outcome: ``cancelled``, ``lost``,
        ``released``...)."""

    def running(self, token: Any) -> AbstractContextManager[Any] | None:
        """The code of a task run or of a step's try (``token``: what :meth:`task_started` or
        :meth:`step_started` returned) is about to run in this thread or coroutine: a context
        to run it in (entered before it, exited after it, where it runs), or None. A tracer
        makes its span current there, so that the code's own spans nest under it."""
        return None

    def boundary(
        self, session: str, projections: Projections, budget: ErrorBudget, now: float
    ) -> None:
        """A task boundary was crossed: the session's state, for gauges (queue depth, breaker
        states, the error budget's burn)."""


#: The hooks an observer may have (an object with none of them is no observer).
OBSERVER_HOOKS = tuple(name for name in vars(Observer) if not name.startswith("_"))

#: Whether the current thread or coroutine runs an observer's hook: its calls are the
#: observer's, made for work done now (never on a replay), not the task's own code.
IN_OBSERVER: ContextVar[bool] = ContextVar("onward_in_observer", default=False)


def observing(observer: Observer | None, token: Any) -> AbstractContextManager[None]:
    """Run what follows in the context the observer gives for a task run's or step try's code
    (:meth:`Observer.running`); what the context raises as it is entered or exited is logged
    and dropped, as any hook's, and the code's own errors pass through it unchanged."""
    # An Observer that keeps the base hook gives no context: nothing to look up or enter.
    # Any other (an override, an object of its own making) is asked through notify(), where
    # a hook missing is None and a lookup that fails is the observer's failure, logged.
    if observer is None or _keeps_base_running(type(observer)):
        return _NO_CONTEXT
    return _observing(observer, token)


def _keeps_base_running(kind: type) -> bool:
    """Whether an observer's class is an :class:`Observer` whose ``running`` is the base's."""
    return issubclass(kind, Observer) and getattr(kind, "running", None) is Observer.running


_NO_CONTEXT = contextlib.nullcontext()


@contextlib.contextmanager
def _observing(observer: Observer, token: Any) -> Iterator[None]:
    scope = notify(observer, "running", token)
    if scope is None:
        yield
        return
    try:
        scope.__enter__()
    except Exception:
        logger.warning("observer %r failed in running; ignored", observer, exc_info=True)
        yield
        return
    try:
        yield
    finally:
        try:
            scope.__exit__(None, None, None)
        except Exception:
            logger.warning("observer %r failed in running; ignored", observer, exc_info=True)


def notify(observer: Observer | None, hook: str, *args: Any, **kwargs: Any) -> Any:
    """Call one hook of an observer (None: nothing), logging and dropping what it raises.

    Returns:
        What the hook returned (None when it raised, with no observer, or when the observer,
        an object of its own making with some of the hooks, lacks this one).
    """
    if observer is None:
        return None
    token = IN_OBSERVER.set(True)
    try:
        # Looked up here, in the hook's try: a lookup that fails otherwise than by the hook's
        # absence (a property over an exporter shut down) is the observer's failure too.
        call = getattr(observer, hook, None)
        if call is None:
            return None
        return call(*args, **kwargs)
    except Exception:
        logger.warning("observer %r failed in %s; ignored", observer, hook, exc_info=True)
        return None
    finally:
        IN_OBSERVER.reset(token)
