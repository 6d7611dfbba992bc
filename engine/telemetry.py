"""OpenTelemetry traces and metrics for a running engine (the ``onward[otel]`` extra).

:class:`Telemetry` is an :class:`~onward.runtime.observer.Observer`: pass it to
:meth:`onward.Engine.open` and every task run becomes a span, with a child span for each try of
each step; at each task boundary it records the session's gauges::

    from opentelemetry.sdk.trace import TracerProvider
    from onward import Engine
    from onward.telemetry import Telemetry

    provider = TracerProvider()  # with the exporters of your choice
    engine = Engine.open("sqlite:///work.db", observer=Telemetry(tracer_provider=provider))

It depends on ``opentelemetry-api`` only and never sets a global provider: it uses the providers
it is given, else the global ones the application set (the API's no-op ones when it set none).
Nothing is emitted while the log is replayed (opening, catching up, ``onward replay``) nor for a
step whose recorded outcome a re-run returns without calling it: the hooks are only called for
work done now.

Spans (times are the wall clock's: a span measures real work, the events keep the engine's
clock):

=====================  =========================================================================
``onward.task NAME``   a task run, from its claim to its end; ``onward.task.id``, ``.name``,
                       ``.attempt``, ``.priority``, ``.waited`` (seconds runnable before the
                       claim), ``onward.session``, and at the end ``onward.task.outcome``
                       (status ERROR when it failed)
``onward.step NAME``   one try of a step; ``onward.task.id``, ``onward.step.name``, ``.index``,
                       ``.attempt``, ``.dependency``, ``.action`` (the impact of a judged action),
                       and when it raised: ``onward.error.type``, ``onward.error.signature``,
                       ``onward.decision`` (``fix``, ``wait`` or ``fail``), an ``exception``
                       event and the status ERROR with the error's message
=====================  =========================================================================

A span holds no secret: the error's message, type and traceback pass the redactor as the log's
records do (:func:`onward.events.redaction.redact_for_any_log`: the default patterns and the
user's ``Redactor(extra=...)`` patterns of every log in use; the message is then cut at 4,000
characters, as the log's), and the ``exception`` event is built from them (``exception.type``,
``exception.message``, ``exception.stacktrace``, as OpenTelemetry's semantic conventions name
them), never from the raw exception.

Metrics (attributes in brackets):

=============================  ==================  =============================================
``onward.task.runs``           counter             task runs ended [task, outcome]
``onward.task.wait``           histogram, s        time runnable before a claim [task]
``onward.step.attempts``       counter             tries of steps [step, outcome]: ``ok`` or the
                                                   healer's decision
``onward.step.duration``       histogram, s        a try's wall time [step]
``onward.queue.depth``         gauge               queued tasks at a boundary [session]
``onward.breaker.state``       gauge               0 closed, 1 half-open, 2 open [dependency]
``onward.budget.burn``         gauge               errors in the budget's window / its limit
                                                   [session]
=============================  ==================  =============================================
"""

from __future__ import annotations

import textwrap
import time
import traceback
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from onward.core.run import bounded, error_message
from onward.events import UsageError
from onward.events.redaction import redact_for_any_log
from onward.runtime.observer import Observer, StepStart, TaskStart

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Status, StatusCode
except ImportError as missing:  # pragma: no cover - the extra is installed in development
    raise ImportError(
        "onward.telemetry needs OpenTelemetry's API: pip install 'onward[otel]'"
    ) from missing

if TYPE_CHECKING:
    from onward.judgement.budget import ErrorBudget
    from onward.projections import Projections

__all__ = ["BREAKER_STATES", "Telemetry"]

#: The value of ``onward.breaker.state`` for each breaker state.
BREAKER_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("onward")
    except Exception:
        return "unknown"


def _exception_event(error: BaseException) -> dict[str, str]:
    """The attributes of a span's ``exception`` event (OpenTelemetry's semantic conventions),
    redacted: what ``record_exception`` records, but never the raw text of the exception."""
    return {
        "exception.type": _qualified(error),
        "exception.message": error_message(error, redact_for_any_log),
        "exception.stacktrace": _stacktrace(error),
    }


#: The innermost frames each exception of a span's stack trace keeps, the most characters
#: they take, and the most exceptions of a chain it shows: a collector refuses an event of
#: megabytes (a huge message, a deep recursion).
STACK_FRAMES = 64
STACK_LIMIT = 12_000
STACK_CHAIN = 8

_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def _qualified(error: BaseException) -> str:
    """An exception's type as a traceback names it (its module too, unless a builtin)."""
    kind = type(error)
    module = kind.__module__
    name = kind.__qualname__ if module in (None, "builtins") else f"{module}.{kind.__qualname__}"
    return redact_for_any_log(name)


def _stacktrace(error: BaseException, depth: int = 0) -> str:
    """An exception's stack trace for a span, as ``traceback.format_exception`` lays it out
    (its causes first, a group's members after it, indented), redacted and bounded: each
    exception's innermost frames and bounded message, never its full text."""
    chain: list[tuple[BaseException, str]] = []
    seen: set[int] = set()
    found: BaseException | None = error
    link = ""
    while found is not None and id(found) not in seen and len(chain) < STACK_CHAIN:
        seen.add(id(found))
        chain.append((found, link))
        if found.__cause__ is not None:
            found, link = found.__cause__, _CAUSE
        elif found.__context__ is not None and not found.__suppress_context__:
            found, link = found.__context__, _CONTEXT
        else:
            found = None
    parts: list[str] = []
    for exc, link in reversed(chain):
        frames = traceback.format_tb(exc.__traceback__)
        left = len(frames) - STACK_FRAMES
        if exc.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
        if left > 0:
            parts.append(f"  [{left} outer frames left out]\n")
        parts.append(bounded("".join(frames[-STACK_FRAMES:]), redact_for_any_log, STACK_LIMIT))
        message = error_message(exc, redact_for_any_log)
        parts.append(f"{_qualified(exc)}: {message}\n" if message else f"{_qualified(exc)}\n")
        if isinstance(exc, BaseExceptionGroup) and depth < STACK_CHAIN:
            members = exc.exceptions[:STACK_CHAIN]
            for number, member in enumerate(members, start=1):
                shown = _stacktrace(member, depth + 1)
                parts.append(
                    textwrap.indent(f"+---------------- {number} ----------------\n", "  ")
                )
                parts.append(textwrap.indent(shown, "  | "))
            if len(exc.exceptions) > len(members):
                parts.append(f"  +---- and {len(exc.exceptions) - len(members)} more ----\n")
        parts.append(link)
    return "".join(parts)


class _Step:
    """A step try's span and when it started."""

    __slots__ = ("span", "start", "step")

    def __init__(self, span: Any, step: str) -> None:
        self.span = span
        self.step = step
        self.start = time.perf_counter()


class Telemetry(Observer):
    """Spans and metrics of an engine's work, through OpenTelemetry's API.

    Args:
        tracer_provider: where spans go (the global provider when None: never set here).
        meter_provider: where metrics go (the global provider when None: never set here).

    Raises:
        UsageError: a provider that is not one (it has no ``get_tracer`` / ``get_meter``).
    """

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        tracers = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        meters = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        if not hasattr(tracers, "get_tracer") or not hasattr(meters, "get_meter"):
            raise UsageError(
                "Telemetry needs an OpenTelemetry TracerProvider and MeterProvider, got "
                f"{tracers!r} and {meters!r}"
            )
        version = _version()
        self.tracer = tracers.get_tracer("onward", version)
        meter = meters.get_meter("onward", version)
        self._runs = meter.create_counter("onward.task.runs", description="task runs ended")
        self._wait = meter.create_histogram(
            "onward.task.wait", unit="s", description="time a task was runnable before a claim"
        )
        self._attempts = meter.create_counter(
            "onward.step.attempts", description="tries of steps, by outcome"
        )
        self._duration = meter.create_histogram(
            "onward.step.duration", unit="s", description="wall time of a step's try"
        )
        self._queue = meter.create_gauge(
            "onward.queue.depth", description="queued tasks at a task boundary"
        )
        self._breaker = meter.create_gauge(
            "onward.breaker.state", description="0 closed, 1 half-open, 2 open"
        )
        self._burn = meter.create_gauge(
            "onward.budget.burn", description="errors in the budget's window over its limit"
        )

    # -- task runs -------------------------------------------------------------------------

    def task_started(self, start: TaskStart) -> Any:
        """Open the task run's span; record how long it waited."""
        span = self.tracer.start_span(
            f"onward.task {start.name}",
            attributes={
                "onward.task.id": start.task_id,
                "onward.task.name": start.name,
                "onward.task.attempt": start.attempt,
                "onward.task.priority": start.priority,
                "onward.task.waited": start.waited,
                "onward.session": start.session,
            },
        )
        self._wait.record(start.waited, {"task": start.name})
        return (span, start.name)

    def task_ended(self, token: Any, outcome: str) -> None:
        """Close the task run's span with its outcome; count the run."""
        if token is None:
            return
        span, name = token
        span.set_attribute("onward.task.outcome", outcome)
        if outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, "the task failed"))
        span.end()
        self._runs.add(1, {"task": name, "outcome": outcome})

    # -- steps -----------------------------------------------------------------------------

    def step_started(self, task: Any, start: StepStart) -> Any:
        """Open a step try's span, a child of its task run's."""
        context = trace.set_span_in_context(task[0]) if task is not None else None
        span = self.tracer.start_span(
            f"onward.step {start.step}",
            context=context,
            attributes={
                "onward.task.id": start.task_id,
                "onward.step.name": start.step,
                "onward.step.index": start.index,
                "onward.step.attempt": start.attempt,
                "onward.step.dependency": start.dependency,
                "onward.step.action": start.action,
            },
        )
        return _Step(span, start.step)

    def step_ended(
        self,
        token: Any,
        *,
        error: BaseException | None = None,
        signature: str = "",
        decision: str = "",
    ) -> None:
        """Close a step try's span: its error, signature and the healer's decision."""
        if not isinstance(token, _Step):
            return
        span = token.span
        outcome = decision if error is not None else "ok"
        if error is None and decision:
            # No outcome recorded: its task run ended first (cancelled, lost, handed back).
            span.set_attribute("onward.decision", decision)
            outcome = decision
        elif error is not None:
            kind = redact_for_any_log(type(error).__name__)
            span.set_attribute("onward.error.type", kind)
            span.set_attribute("onward.error.signature", signature)
            span.set_attribute("onward.decision", decision)
            event = _exception_event(error)
            span.add_event("exception", event)
            status = redact_for_any_log(f"{kind}: {event['exception.message']}")
            span.set_status(Status(StatusCode.ERROR, status))
        span.end()
        self._attempts.add(1, {"step": token.step, "outcome": outcome})
        self._duration.record(time.perf_counter() - token.start, {"step": token.step})

    def running(self, token: Any) -> AbstractContextManager[Any] | None:
        """Make the task run's or step try's span current where its code runs: the spans the
        code starts (an HTTP client's, a database driver's) are its children."""
        if isinstance(token, _Step):
            span = token.span
        elif isinstance(token, tuple) and token:
            span = token[0]
        else:
            return None
        return trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    # -- the session at a boundary ---------------------------------------------------------

    def boundary(
        self, session: str, projections: Projections, budget: ErrorBudget, now: float
    ) -> None:
        """Record the queue's depth, each breaker's state and the error budget's burn."""
        depth = sum(1 for _ in projections.tasks.queued(session))
        self._queue.set(depth, {"session": session})
        for name, view in projections.breakers.breakers.items():
            if view.state in BREAKER_STATES:
                self._breaker.set(BREAKER_STATES[view.state], {"dependency": name})
        window = projections.budget.window(session, now, budget.window)
        self._burn.set(window.errors / budget.limit, {"session": session})
