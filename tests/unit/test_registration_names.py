"""A task's or step's name is taken once: the log knows it by that name alone.

Two functions under one name (two modules' ``cleanup``, a factory's products, two partials)
would leave the tasks and outcomes recorded under it to whichever registered last: the second
is refused. The same function registered again, or its definition run again (a module
reloaded, a notebook's cell run twice), replaces it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, UsageError
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
    assert "task 'report' is defined again (notebook.report)" in caplog.text
    task_id = engine.submit("report")
    engine.run()
    assert engine.result(task_id) == "second"
