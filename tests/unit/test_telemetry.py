"""onward.telemetry: spans per task run and step try, metrics, no global provider, nothing on
replay (checked with the OpenTelemetry SDK's in-memory exporter and reader)."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from onward import Engine, Observer, UsageError
from onward.projections import CatchUp
from onward.telemetry import Telemetry
from tests.conftest import FakeClock


class Sink:
    """A tracer and a meter provider of the SDK, with in-memory exporters (never global)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])

    def telemetry(self) -> Telemetry:
        return Telemetry(tracer_provider=self.tracers, meter_provider=self.meters)

    def metrics(self) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


def open_engine(url: str, sink: Sink, clock: FakeClock) -> Engine:
    return Engine.open(
        url, session="s", clock=clock, sleep=clock.advance, observer=sink.telemetry()
    )


def test_a_task_run_and_each_try_of_its_steps_are_spans(tmp_path: Path, clock: FakeClock) -> None:
    sink = Sink()
    with open_engine(f"sqlite:///{tmp_path / 'a.db'}", sink, clock) as engine:

        @engine.step()
        def fetch(n: int) -> int:
            return n + 1

        @engine.step(hints={"defaults": {"region": "eu"}})
        def connect(config: dict[str, str]) -> str:
            return config["region"]  # KeyError first: the declared default fixes it

        @engine.task()
        def job() -> str:
            return f"{fetch(1)} {connect({})}"

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == "2 eu"

    spans = {
        (s.name, s.attributes.get("onward.step.attempt")): s
        for s in sink.spans.get_finished_spans()
    }
    assert set(spans) == {
        ("onward.task job", None),
        ("onward.step fetch", 1),
        ("onward.step connect", 1),
        ("onward.step connect", 2),
    }
    task = spans[("onward.task job", None)]
    assert task.attributes["onward.task.id"] == task_id
    assert task.attributes["onward.task.outcome"] == "succeeded"
    assert task.attributes["onward.task.attempt"] == 1
    failed = spans[("onward.step connect", 1)]
    assert failed.attributes["onward.error.type"] == "KeyError"
    assert failed.attributes["onward.decision"] == "fix"
    assert str(failed.attributes["onward.error.signature"]).startswith("v")
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.events[0].name == "exception"
    for key in (("onward.step fetch", 1), ("onward.step connect", 2)):
        step = spans[key]
        assert step.parent is not None
        assert step.parent.span_id == task.context.span_id
        assert step.context.trace_id == task.context.trace_id
        assert "onward.error.type" not in step.attributes

    found = sink.metrics()
    runs = {tuple(sorted(p.attributes.items())): p.value for p in found["onward.task.runs"]}
    assert runs == {(("outcome", "succeeded"), ("task", "job")): 1}
    attempts = {tuple(sorted(p.attributes.items())): p.value for p in found["onward.step.attempts"]}
    assert attempts == {
        (("outcome", "ok"), ("step", "fetch")): 1,
        (("outcome", "fix"), ("step", "connect")): 1,
        (("outcome", "ok"), ("step", "connect")): 1,
    }
    assert [p.count for p in found["onward.task.wait"]] == [1]
    assert sum(p.count for p in found["onward.step.duration"]) == 3
    # The boundary after the task: the queue is empty, one error in the budget's window of 10.
    assert [p.value for p in found["onward.queue.depth"]] == [0]
    assert [p.value for p in found["onward.budget.burn"]] == [pytest.approx(0.1)]


def test_breaker_state_is_a_gauge(clock: FakeClock) -> None:
    sink = Sink()
    from onward import BreakerPolicy, RetryPolicies, RetryPolicy

    with Engine.open(
        "memory://",
        session="s",
        clock=clock,
        sleep=clock.advance,
        observer=sink.telemetry(),
        breakers=BreakerPolicy(failures=1, cooldown=60.0),
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
    ) as engine:

        @engine.step(breaker="search")
        def search() -> str:
            raise ValueError("search is down")

        @engine.task()
        def job() -> str:
            return search()

        engine.submit(job)
        engine.run()
    states = {p.attributes["dependency"]: p.value for p in sink.metrics()["onward.breaker.state"]}
    assert states == {"search": 2}


def test_nothing_is_emitted_on_replay_nor_for_a_replayed_step(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    calls: list[str] = []

    def register(engine: Engine) -> Any:
        @engine.step()
        def first() -> str:
            calls.append("first")
            return "a"

        @engine.step()
        def second() -> str:
            calls.append("second")
            return "b"

        @engine.task()
        def job() -> str:
            done = first()
            engine.sleep(60)  # the run ends here; the next one replays `first`
            return done + second()

        return job

    earlier = Sink()
    with open_engine(url, earlier, clock) as engine:
        task_id = engine.submit(register(engine))
        engine.run(max_runs=1)
    assert [s.name for s in earlier.spans.get_finished_spans()] == [
        "onward.step first",
        "onward.task job",
    ]

    later = Sink()
    with open_engine(url, later, clock) as engine:  # opening folds the whole log
        register(engine)
        assert later.spans.get_finished_spans() == ()
        assert later.metrics() == {}
        CatchUp(engine.log).open()  # `onward replay`'s fold
        assert later.spans.get_finished_spans() == ()
        clock.advance(61)
        engine.run()
        assert engine.result(task_id) == "ab"
    assert calls == ["first", "second"]
    names = [s.name for s in later.spans.get_finished_spans()]
    assert names == ["onward.step second", "onward.task job"]


def test_no_global_provider_is_set(clock: FakeClock) -> None:
    before = (trace.get_tracer_provider(), metrics.get_meter_provider())
    sink = Sink()
    with open_engine("memory://", sink, clock) as engine:

        @engine.task()
        def job() -> int:
            return 1

        engine.submit(job)
        engine.run()
    assert (trace.get_tracer_provider(), metrics.get_meter_provider()) == before
    assert sink.spans.get_finished_spans()


def test_the_global_providers_are_used_when_none_is_given() -> None:
    telemetry = Telemetry()  # the API's no-op providers here: nothing set, nothing fails
    assert telemetry.tracer is not None


def test_a_provider_that_is_not_one_is_refused() -> None:
    with pytest.raises(UsageError, match="TracerProvider"):
        Telemetry(tracer_provider=object())


def test_an_observer_that_raises_does_not_stop_the_engine(clock: FakeClock) -> None:
    class Broken(Observer):
        def step_started(self, task: Any, start: Any) -> Any:
            raise RuntimeError("broken observer")

    with Engine.open(
        "memory://", session="s", clock=clock, sleep=clock.advance, observer=Broken()
    ) as engine:

        @engine.step()
        def one() -> int:
            return 1

        @engine.task()
        def job() -> int:
            return one()

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 1


def test_an_observer_with_some_of_the_hooks_is_told_through_them_and_nothing_is_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An object with some of the hooks is an observer (the engine takes it): the hooks it
    lacks are not called, not failures logged at every task and step."""

    class Ends:
        def __init__(self) -> None:
            self.ended: list[str] = []

        def task_ended(self, token: Any, outcome: str) -> None:
            self.ended.append(outcome)

    ends = Ends()
    with Engine.open(
        "memory://", session="s", clock=clock, sleep=clock.advance, observer=ends
    ) as engine:

        @engine.step()
        def one() -> int:
            return 1

        @engine.task()
        def job() -> int:
            return one()

        engine.submit(job)
        with caplog.at_level("WARNING", logger="onward"):
            engine.run()
    assert ends.ended == ["succeeded"]
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("onward")]


def test_an_observer_whose_hook_cannot_be_looked_up_does_not_stop_the_engine(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook whose lookup raises (a property over an exporter shut down meanwhile) is an
    observer's failure like any other: logged and dropped, not raised into the run."""

    class Forwards:
        def __init__(self) -> None:
            self.exporting = True

        def task_started(self, start: Any) -> None:
            return None

        @property
        def task_ended(self) -> Any:
            if not self.exporting:
                raise RuntimeError("exporter shut down")
            return lambda token, outcome: None

    forwards = Forwards()
    with Engine.open(
        "memory://", session="s", clock=clock, sleep=clock.advance, observer=forwards
    ) as engine:

        @engine.task()
        def job() -> int:
            return 1

        task_id = engine.submit(job)
        forwards.exporting = False
        with caplog.at_level("WARNING", logger="onward"):
            engine.run()
        assert engine.result(task_id) == 1
    assert any("failed in task_ended" in r.getMessage() for r in caplog.records)


def test_an_observer_whose_running_hook_cannot_be_looked_up_does_not_stop_the_engine(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The ``running`` hook too: its lookup failing is the observer's failure, logged and
    dropped, and the task's code and its steps run as they would."""

    class Forwards:
        def __init__(self) -> None:
            self.exporting = True

        def task_started(self, start: Any) -> None:
            return None

        @property
        def running(self) -> Any:
            if not self.exporting:
                raise RuntimeError("exporter shut down")
            return lambda token: None

    forwards = Forwards()
    with Engine.open(
        "memory://", session="s", clock=clock, sleep=clock.advance, observer=forwards
    ) as engine:

        @engine.step()
        def fetch() -> int:
            return 1

        @engine.task()
        def job() -> int:
            return fetch()

        task_id = engine.submit(job)
        forwards.exporting = False
        with caplog.at_level("WARNING", logger="onward"):
            engine.run()
        assert engine.result(task_id) == 1
    assert any("failed in running" in r.getMessage() for r in caplog.records)


def test_no_secret_reaches_a_span_neither_a_default_nor_one_of_the_users(
    tmp_path: Path, clock: FakeClock
) -> None:
    from onward import RetryPolicies, RetryPolicy
    from onward.events import Redactor

    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    own = "ACME-SECRET-918273"
    sink = Sink()
    with Engine.open(
        f"sqlite:///{tmp_path / 'a.db'}",
        session="s",
        clock=clock,
        sleep=clock.advance,
        observer=sink.telemetry(),
        redactor=Redactor(extra=[r"ACME-SECRET-\d+"]),
        retries=RetryPolicies(RetryPolicy(max_attempts=1)),
    ) as engine:

        @engine.step()
        def call() -> str:
            try:
                raise KeyError(f"the vault had no {own}")
            except KeyError as missing:
                raise RuntimeError(
                    f"request failed: Authorization: token {token} password=hunter2hunter2 "
                    f"key {own}"
                ) from missing

        @engine.task()
        def job() -> str:
            return call()

        engine.submit(job)
        engine.run()

    (step,) = [s for s in sink.spans.get_finished_spans() if s.name == "onward.step call"]
    shown = repr(
        [
            (
                s.status.description,
                dict(s.attributes),
                [(e.name, dict(e.attributes)) for e in s.events],
            )
            for s in sink.spans.get_finished_spans()
        ]
    )
    for secret in (token, "hunter2hunter2", own):
        assert secret not in shown
    assert step.status.status_code == trace.StatusCode.ERROR
    assert step.status.description == (
        "RuntimeError: request failed: Authorization: token [REDACTED:github-token] "
        "password=[REDACTED:secret-value] key [REDACTED:custom]"
    )
    assert step.attributes["onward.error.type"] == "RuntimeError"
    (event,) = step.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == step.status.description.split(": ", 1)[1]
    stacktrace = str(event.attributes["exception.stacktrace"])
    assert stacktrace.startswith("Traceback (most recent call last):")
    assert "KeyError: 'the vault had no [REDACTED:custom]'" in stacktrace  # the chained cause
    assert "RuntimeError: request failed: Authorization: token [REDACTED:github-token]" in (
        stacktrace
    )


@pytest.mark.parametrize("taken", ["cancelled", "lost"])
def test_a_run_whose_task_is_taken_ends_its_spans_saying_how(
    tmp_path: Path, clock: FakeClock, taken: str
) -> None:
    """Its step's outcome cannot be recorded: the task was cancelled, or its lease ran out and
    a peer took it. The step span never ended, and a lost lease read ``cancelled``."""
    sink, url = Sink(), f"sqlite:///{tmp_path / 'a.db'}"
    peer = Engine.open(url, session="s", clock=clock, sleep=clock.advance, lease=5.0)
    calls: list[str] = []
    with open_engine(url, sink, clock) as engine:
        for each in (engine, peer):

            @each.step(name="fetch")
            def fetch(n: int) -> int:
                calls.append("fetch")
                if len(calls) == 1:  # the first try, while the task is taken from it
                    if taken == "cancelled":
                        peer.cancel(task_id)
                    else:
                        clock.advance(3600.0)  # its lease and heartbeats long run out
                        assert peer.run().succeeded == 1
                return n + 1

            @each.task(name="job")
            def job() -> int:
                return fetch(1)

        task_id = engine.submit("job")
        summary = engine.run()
        assert summary.cancelled == 1
    peer.close()
    spans = {s.name: s for s in sink.spans.get_finished_spans()}
    assert set(spans) == {"onward.task job", "onward.step fetch"}
    assert spans["onward.task job"].attributes["onward.task.outcome"] == taken
    step = spans["onward.step fetch"]
    assert step.attributes["onward.decision"] == taken
    assert step.status.status_code == trace.StatusCode.UNSET
    attempts = {
        tuple(sorted(p.attributes.items())): p.value for p in sink.metrics()["onward.step.attempts"]
    }
    assert attempts == {(("outcome", taken), ("step", "fetch")): 1}


def _raise_chained() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise RuntimeError("the lookup failed") from exc


def _recurse(depth: int) -> None:
    if depth == 0:
        raise ValueError("x" * 2_000_000)  # a huge message, a deep stack
    _recurse_again(depth - 1)


def _recurse_again(depth: int) -> None:
    _recurse(depth)  # frames that differ from the last: none are folded into "repeated"


def test_a_span_stack_trace_reads_as_pythons_and_stays_bounded() -> None:
    """A 2 MB message gave a 2 MB ``exception.stacktrace`` (collectors refuse such events)."""
    from onward.telemetry import STACK_FRAMES, _exception_event

    try:
        _raise_chained()
    except RuntimeError as exc:
        plain = exc
    assert _exception_event(plain)["exception.stacktrace"] == "".join(
        traceback.format_exception(plain)
    )
    try:
        _recurse(200)
    except ValueError as exc:
        huge = exc
    stack = _exception_event(huge)["exception.stacktrace"]
    assert len(stack) < 20_000
    assert f"[{2 * 200 + 2 - STACK_FRAMES} outer frames left out]" in stack
    assert stack.endswith("... [truncated]\n")
    assert 'raise ValueError("x" * 2_000_000)' in stack  # the innermost frame is kept


@pytest.mark.parametrize("path", ["run", "run with 2 workers", "run_async"])
def test_the_codes_own_spans_nest_under_its_step_and_task_spans(
    tmp_path: Path, clock: FakeClock, path: str
) -> None:
    """What an HTTP client or a database driver traces in a step is the step's child; in the
    task's code, the task run's. No span was made current: they had another parent, or none."""
    sink = Sink()
    tracer = sink.tracers.get_tracer("the application")
    with open_engine(f"sqlite:///{tmp_path / 'a.db'}", sink, clock) as engine:

        @engine.step()
        def fetch(n: int) -> int:
            with tracer.start_as_current_span("http get"):
                return n + 1

        @engine.step()
        async def fetch_async(n: int) -> int:
            with tracer.start_as_current_span("http get"):
                return n + 1

        @engine.task()
        def job(n: int) -> int:
            with tracer.start_as_current_span("plan"):
                pass
            return fetch(n)

        @engine.task()
        async def job_async(n: int) -> int:
            with tracer.start_as_current_span("plan"):
                pass
            return await fetch_async(n) + await fetch(n)

        with tracer.start_as_current_span("the caller") as caller:
            if path == "run_async":
                ids = [engine.submit(job_async, n) for n in range(3)]
                asyncio.run(engine.run_async(concurrency=3))
            else:
                ids = [engine.submit(job, n) for n in range(3)]
                engine.run(workers=2 if "2" in path else 1)
        assert all(engine.result(i) is not None for i in ids)

    spans = sink.spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    # The task runs are the caller's children, on every path (not with 2 workers' threads).
    tasks = [s for s in spans if s.name.startswith("onward.task")]
    assert len(tasks) == 3
    assert all(s.parent is not None and s.parent.span_id == caller.context.span_id for s in tasks)
    mine = [s for s in spans if not s.name.startswith("onward.") and s.name != "the caller"]
    assert len(mine) == 3 * (3 if path == "run_async" else 2)
    for span in mine:
        assert span.parent is not None
        parent = by_id[span.parent.span_id]
        wanted = "onward.task" if span.name == "plan" else "onward.step"
        assert parent.name.startswith(wanted), (span.name, parent.name)
        task_id = parent.attributes["onward.task.id"]
        assert task_id in ids


def test_a_span_stack_trace_shows_an_exception_groups_members() -> None:
    from onward.telemetry import _exception_event

    def fail(message: str) -> None:
        raise ValueError(message)

    errors: list[Exception] = []
    for message in ("first member", "second member"):
        try:
            fail(message)
        except ValueError as exc:
            errors.append(exc)
    try:
        raise ExceptionGroup("two failed", errors)
    except ExceptionGroup as exc:
        stack = _exception_event(exc)["exception.stacktrace"]
    assert "ExceptionGroup: two failed (2 sub-exceptions)" in stack
    for message in ("first member", "second member"):
        assert f"  | ValueError: {message}" in stack
    assert stack.count("raise ValueError(message)") == 2


def test_an_observer_of_its_own_making_without_the_running_hook_is_not_warned_of(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    ended: list[str] = []

    class Counting:  # not an Observer subclass: only the hooks it wants
        def task_ended(self, token: Any, outcome: str) -> None:
            ended.append(outcome)

        def __getattr__(self, name: str) -> Any:
            if name == "running":
                raise AttributeError(name)
            return lambda *args, **kwargs: None

    engine = Engine.open(
        f"sqlite:///{tmp_path / 'a.db'}",
        session="s",
        clock=clock,
        sleep=clock.advance,
        observer=Counting(),  # type: ignore[arg-type]
    )
    with engine:

        @engine.step()
        def fetch() -> int:
            return 1

        @engine.task()
        def job() -> int:
            return fetch()

        engine.submit(job)
        engine.run()
    assert ended == ["succeeded"]
    assert not [r for r in caplog.records if "failed in running" in r.getMessage()]
