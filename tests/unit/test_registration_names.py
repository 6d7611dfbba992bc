"""A task's or step's name is taken once: the log knows it by that name alone.

Two functions under one name (two modules' ``cleanup``, a factory's products, two partials)
would leave the tasks and outcomes recorded under it to whichever registered last: the second
is refused. The same function registered again, or its definition run again (a module
reloaded, a notebook's cell run twice), replaces it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, NotRegistered, UsageError
from tests.conftest import FakeClock


@pytest.fixture
def engine(tmp_path: Path, clock: FakeClock) -> Iterator[Engine]:
    with Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="names", clock=clock) as opened:
        yield opened


def billing() -> Callable[[], str]:
    def cleanup() -> str:
        return "billing"

    return cleanup


def cache() -> Callable[[], str]:
    def cleanup() -> str:
        return "cache"

    return cleanup


def make(kind: str) -> Callable[[], str]:
    def job() -> str:
        return kind

    return job


@pytest.mark.parametrize("kind", ["task", "step", "action"])
def test_two_functions_of_one_default_name_are_refused(engine: Engine, kind: str) -> None:
    register = {"task": engine.task, "step": engine.step, "action": engine.action}[kind]
    first = register()(billing())
    with pytest.raises(UsageError) as refused:
        register()(cache())
    message = str(refused.value)
    assert "name 'cleanup' is taken by " in message
    assert "test_registration_names.billing.<locals>.cleanup" in message
    assert "test_registration_names.cache.<locals>.cleanup" in message
    assert "name=" in message
    if kind == "task":
        task_id = engine.submit(first)  # the first keeps its name, and runs its own body
        engine.run()
        assert engine.result(task_id) == "billing"


def test_a_factorys_functions_each_need_a_name(engine: Engine) -> None:
    engine.task()(make("daily"))
    with pytest.raises(UsageError, match=r"another function made by the same code .*make"):
        engine.task()(make("weekly"))
    engine.task(name="weekly")(make("weekly"))
    daily, weekly = engine.submit("job"), engine.submit("weekly")
    engine.run()
    assert (engine.result(daily), engine.result(weekly)) == ("daily", "weekly")


def test_two_partials_of_one_function_under_one_name_are_refused(engine: Engine) -> None:
    def scale(factor: int, n: int) -> int:
        return factor * n

    engine.step(name="scale")(functools.partial(scale, 2))
    with pytest.raises(UsageError, match="another callable of the same function"):
        engine.step(name="scale")(functools.partial(scale, 3))


def test_the_same_function_registered_again_keeps_its_name(engine: Engine) -> None:
    job = make("once")
    engine.task()(job)
    engine.task(priority="high")(job)  # new options for the same function
    engine.step()(job)  # a step may share a task's name: another kind
    task_id = engine.submit("job")
    assert engine.task_view(task_id).priority == "high"


CELL = """
def report() -> str:
    return VERSION
"""


def test_a_definition_run_again_replaces_it_with_a_warning(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A notebook's cell run twice, or a module reloaded: the same module and qualified name,
    compiled anew."""
    defined: list[Any] = []
    for version in ("first", "second"):
        namespace: dict[str, Any] = {"__name__": "notebook", "VERSION": version}
        exec(compile(CELL, "<cell>", "exec"), namespace)
        defined.append(namespace["report"])
    engine.task()(defined[0])
    with caplog.at_level(logging.WARNING, logger="onward"):
        engine.task()(defined[1])
    assert "task 'report' is registered again, to notebook.report: it replaces" in caplog.text
    task_id = engine.submit("report")
    engine.run()
    assert engine.result(task_id) == "second"


def test_an_alias_is_a_name_taken_too(engine: Engine) -> None:
    @engine.task(name="send_invoice", aliases=["invoice"])
    def send_invoice() -> str:
        return "sent"

    def invoice() -> str:
        return "another body"

    with pytest.raises(UsageError, match="'invoice' is a former name of task 'send_invoice'"):
        engine.task()(invoice)

    def legacy() -> str:
        return "legacy"

    with pytest.raises(UsageError, match="its alias 'invoice' is taken by task 'send_invoice'"):
        engine.task(name="other", aliases=["invoice"])(legacy)
    engine.task()(legacy)
    with pytest.raises(UsageError, match="its alias 'legacy' is taken by task 'legacy'"):
        engine.task(name="newer", aliases=["legacy"])(make("newer"))
    task_id = engine.submit("invoice")
    engine.run()
    assert engine.result(task_id) == "sent"


def test_a_step_alias_is_a_name_taken_too(engine: Engine) -> None:
    """A step's alias says whose outcomes are recorded under a former name: an alias that is
    another step's name would hand one step's recorded result to the other."""

    @engine.step()
    def fetch() -> str:
        return "fetched"

    def load() -> str:
        return "loaded"

    with pytest.raises(UsageError, match="its alias 'fetch' is taken by step 'fetch'"):
        engine.step(name="load", aliases=["fetch"])(load)
    engine.step(name="load", aliases=["read"])(load)
    with pytest.raises(UsageError, match="'read' is a former name of step 'load'"):
        engine.step(name="read")(make("read"))
    with pytest.raises(UsageError, match="its alias 'read' is taken by step 'load'"):
        engine.step(name="parse", aliases=["read"])(make("parse"))
    with pytest.raises(UsageError, match="an alias must be another, non-empty name"):
        engine.step(name="parse", aliases=["parse"])(make("parse"))


def test_a_step_renamed_with_its_old_name_as_an_alias_replaces_it(engine: Engine) -> None:
    defined = []
    for body in ("'v1'", "'v2'"):
        namespace: dict[str, Any] = {"__name__": "billing"}
        exec(compile(f"def total() -> str:\n    return {body}\n", "billing.py", "exec"), namespace)
        defined.append(namespace["total"])
    engine.step()(defined[0])
    engine.step(name="sum_up", aliases=["total"])(defined[1])  # the cell edited, run again
    assert "total" not in engine.registry.steps
    assert engine.registry.step_aliases == {"total": "sum_up"}


class Service:
    def handle(self) -> str:
        return "handled"

    @classmethod
    def build(cls) -> str:
        return "built"


def test_a_method_registered_again_is_the_same_callable(engine: Engine) -> None:
    service = Service()
    engine.task()(service.handle)
    engine.task()(service.handle)  # bound anew: equal, not the same object
    engine.task()(Service.build)
    engine.task()(Service.build)
    with pytest.raises(UsageError, match=r"name 'Service\.handle' is taken by .*Service\.h"):
        engine.task(name="Service.handle")(make("another body"))


MODULE = """
import functools

import wrapping
from onward import Engine

engine: Engine = wrapping.ENGINE


@engine.task()
@wrapping.logged
def nightly() -> str:
    return VERSION


@engine.task(name="report")
class Report(str):
    def __new__(cls) -> "Report":
        return str.__new__(cls, VERSION)


@engine.task()
@functools.lru_cache(maxsize=None)
def cached() -> str:
    return VERSION


engine.step(name="send")(functools.partial(wrapping.send, "ops"))
"""

WRAPPING = """
import functools

ENGINE = None


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


def send(to, text=""):
    return to
"""


def test_a_module_reloaded_registers_its_tasks_again(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library's decorator, a class, an ``lru_cache``, a partial of a library function:
    the module's definitions run again replace their registrations."""
    (tmp_path / "wrapping.py").write_text(WRAPPING)
    (tmp_path / "jobs_reloaded.py").write_text("VERSION = 'first'\n" + MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import wrapping  # type: ignore[import-not-found]

    monkeypatch.setattr(wrapping, "ENGINE", engine)
    jobs = importlib.import_module("jobs_reloaded")
    (tmp_path / "jobs_reloaded.py").write_text("VERSION = 'second'\n" + MODULE)
    importlib.invalidate_caches()
    importlib.reload(jobs)
    ids = [engine.submit(name) for name in ("nightly", "report", "cached")]
    engine.run()
    assert [engine.result(i) for i in ids] == ["second"] * 3
    monkeypatch.delitem(sys.modules, "jobs_reloaded")
    monkeypatch.delitem(sys.modules, "wrapping")


def test_a_module_run_as_main_and_imported_is_one_definition(
    engine: Engine, tmp_path: Path
) -> None:
    source = "def nightly() -> str:\n    return 'ran'\n"
    path = tmp_path / "jobs_main.py"
    path.write_text(source)
    defined = []
    for module in ("__main__", "jobs_main"):
        namespace: dict[str, Any] = {"__name__": module}
        exec(compile(source, str(path), "exec"), namespace)
        defined.append(namespace["nightly"])
    engine.task()(defined[0])
    engine.task()(defined[1])  # the same file and line: one definition, run twice
    task_id = engine.submit("nightly")
    engine.run()
    assert engine.result(task_id) == "ran"


def scaled(factor: int, n: int) -> int:
    return factor * n


def test_partials_of_one_function_are_one_callable_only_when_they_bind_the_same(
    engine: Engine,
) -> None:
    engine.step(name="double")(functools.partial(scaled, 2))
    engine.step(name="double")(functools.partial(scaled, 2))  # a module reloaded: made anew
    with pytest.raises(UsageError, match="binding other arguments or another object"):
        engine.step(name="double")(functools.partial(scaled, 3))


def test_two_lambdas_of_one_module_are_two_functions(engine: Engine) -> None:
    engine.task(name="double")(lambda n: n * 2)
    with pytest.raises(UsageError, match="name 'double' is taken by "):
        engine.task(name="double")(lambda n: n + 1000)


def test_a_step_registered_again_through_its_wrapper_takes_the_new_options(engine: Engine) -> None:
    def fetch() -> str:
        return "fetched"

    wrapper = engine.step(name="fetch")(fetch)
    engine.step(name="fetch", timeout=5)(wrapper)  # the durable wrapper: the same function
    assert engine.registry.steps["fetch"].timeout == 5.0


class Uploader:
    def __init__(self, region: str) -> None:
        self.region = region

    def upload(self) -> str:
        return f"uploaded to {self.region}"


def test_two_objects_methods_under_one_name_are_refused(engine: Engine) -> None:
    europe, america = Uploader("eu"), Uploader("us")
    engine.task()(europe.upload)
    with pytest.raises(UsageError, match="binding other arguments or another object"):
        engine.task()(america.upload)
    task_id = engine.submit("Uploader.upload")
    engine.run()
    assert engine.result(task_id) == "uploaded to eu"


def test_an_objects_method_registered_as_a_task_is_submitted_by_the_method(
    engine: Engine,
) -> None:
    # Each attribute access binds the method anew: the registered one is equal, not the same.
    europe, america, service = Uploader("eu"), Uploader("us"), Service()
    engine.task()(europe.upload)
    engine.task()(Service.build)
    task_ids = [engine.submit(europe.upload), engine.submit(Service.build)]
    engine.run()
    assert [engine.result(task_id) for task_id in task_ids] == ["uploaded to eu", "built"]
    for unregistered in (america.upload, service.handle):
        with pytest.raises(NotRegistered, match="is not registered as a task"):
            engine.submit(unregistered)


def test_a_method_decorated_in_its_class_is_not_submitted_through_an_object(
    engine: Engine,
) -> None:
    class Crawler:
        @engine.task()
        def crawl(self, path: str) -> str:
            return path

    with pytest.raises(NotRegistered) as refused:
        engine.submit(Crawler().crawl, "/a")
    message = str(refused.value)
    assert "Crawler.crawl is registered as its class's function" in message
    assert "engine.task()(obj.crawl)" in message
    assert "decorate it" not in message


def test_a_task_renamed_with_its_old_name_as_an_alias_replaces_it(engine: Engine) -> None:
    defined = []
    for body in ("'v1'", "'v2'"):
        namespace: dict[str, Any] = {"__name__": "billing"}
        exec(compile(f"def send() -> str:\n    return {body}\n", "billing.py", "exec"), namespace)
        defined.append(namespace["send"])
    engine.task()(defined[0])
    queued = engine.submit("send")
    engine.task(name="send_invoice", aliases=["send"])(defined[1])  # the cell edited, run again
    engine.run()
    assert engine.result(queued) == "v2"
    assert "send" not in engine.registry.tasks
