"""replay_check, replay_task and the tests `onward to-test` writes go on past every wait that
the history went past: a wait for subtasks (answered with their recorded ends), a durable
sleep, a receive, an approval; and say so where a wait stops them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from onward import Engine, TaskFailedError
from onward.events import open_log
from onward.projections import task_stream
from onward.testing import (
    FakeClock,
    encode_history,
    open_engine,
    regression_test,
    replay_check,
    replay_recorded,
    replay_task,
)


def register_parent(engine: Engine, variant: str = "same") -> None:
    """A parent that waits for a subtask, then calls steps and returns what they give."""

    @engine.step()
    def fetch() -> int:
        return 1

    @engine.step()
    def store() -> int:
        return 2

    @engine.step()
    def other() -> int:
        return 3

    @engine.task(name="kid")
    def kid(n: int) -> int:
        return n * 10

    @engine.task(name="sibling")
    def sibling(n: int) -> int:
        return n * 10

    @engine.task(name="parent")
    def parent() -> str:
        if variant == "arguments":
            submitted = engine.submit(kid, 5)
        elif variant == "another task":
            submitted = engine.submit(sibling, 4)
        else:
            submitted = engine.submit(kid, 4)
        (got,) = engine.wait([submitted])
        x = fetch()
        if variant == "renamed":
            return f"{got}/{x}/{other()}"
        if variant == "more":
            store()
        if variant == "result":
            return f"{got}+{x}+{store()}"
        return f"{got}/{x}/{store()}"


@pytest.fixture
def parent_log(tmp_path: Path) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'parent.db'}"
    with open_engine(url, session="night") as engine:
        register_parent(engine)
        task_id = engine.submit("parent")
        engine.run()
        assert engine.result(task_id) == "40/1/2"
    return url, task_id


def test_a_task_is_replayed_past_its_wait_for_subtasks(parent_log: tuple[str, str]) -> None:
    url, _ = parent_log
    with open_engine(session="night") as engine:
        register_parent(engine)
        before = engine.log.head()
        check = replay_check(url, engine)
        assert engine.log.head() == before  # no subtask submitted, no wait recorded
    assert check.ok, check.explain()
    assert (check.checked, check.steps) == (2, 2)  # both steps after the wait
    assert (check.skipped, check.partial) == ((), ())


@pytest.mark.parametrize(
    ("variant", "kind", "index"),
    [
        ("renamed", "step", 1),
        ("more", "unrecorded", 2),
        ("result", "result", None),
        ("arguments", "submit", None),  # the same subtask id: the wait answered as recorded
        ("another task", "submit", None),
    ],
)
def test_a_change_after_the_wait_for_subtasks_is_reported(
    parent_log: tuple[str, str], variant: str, kind: str, index: int | None
) -> None:
    url, task_id = parent_log
    with open_engine(session="night") as engine, open_log(url, create=False) as log:
        register_parent(engine, variant)
        by_check = replay_check(url, engine)
        source = regression_test(log, task_id, "app:engine")  # what `onward to-test` writes
        embedded: dict[str, Any] = {}
        exec(compile(source, "test_parent.py", "exec"), embedded)
        by_test = replay_recorded(
            engine,
            embedded["HISTORY"],
            task_id=task_id,
            session="night",
            subtasks=embedded["SUBTASKS"],
        )
    for check in (by_check, by_test):
        assert [(d.task_id, d.kind, d.index) for d in check.divergences] == [
            (task_id, kind, index)
        ], check.explain()


def test_replay_task_reads_the_subtasks_from_the_engines_log(
    parent_log: tuple[str, str],
) -> None:
    url, task_id = parent_log
    with open_engine(url, session="night") as engine:
        register_parent(engine, "result")
        check = replay_task(engine, engine.log.read_stream(task_stream(task_id)))
    assert [d.kind for d in check.divergences] == ["result"]
    assert "the code returns '40+1+2'" in check.explain()


def test_a_history_that_goes_on_past_a_wait_without_the_subtasks_ends_is_skipped(
    parent_log: tuple[str, str],
) -> None:
    """A test written before `onward to-test` embedded the subtasks' ends: the code after
    the wait cannot be replayed, and the task is not counted as checked."""
    url, task_id = parent_log
    with open_log(url, create=False) as log:
        history = encode_history(log.read_stream(task_stream(task_id)))
    with open_engine(session="night") as engine:
        register_parent(engine, "result")
        check = replay_recorded(engine, history, task_id=task_id, session="night")
    assert check.checked == 0
    (why,) = check.skipped
    assert why.startswith(f"task {task_id}: its history goes on past its wait for subtask(s)")
    assert "the code after the wait was not replayed" in why


def test_a_task_that_still_waits_for_subtasks_is_said_to_be_checked_in_part(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'waits.db'}"
    with open_engine(url, session="night") as engine:
        register_parent(engine)

        @engine.task(name="listener")
        def listener() -> str:
            return str(engine.recv("never"))

        @engine.task(name="waiter")
        def waiter() -> str:
            (heard,) = engine.wait([engine.submit(listener)])
            return str(heard)

        task_id = engine.submit(waiter)
        engine.run()
        assert engine.task_view(task_id).state == "waiting"
        check = replay_check(url, engine)
    assert check.ok, check.explain()
    assert check.checked == 2
    (note,) = check.partial
    assert note.startswith(f"task {task_id}: replayed up to its wait for subtask(s) ")
    assert "where its history ends" in note
    assert f"checked in part: {note}" in check.explain()


def register_failing_kid(engine: Engine, variant: str = "same") -> None:
    @engine.task(name="breaks")
    def breaks() -> int:
        raise ValueError("no luck")

    @engine.task(name="careful")
    def careful() -> str:
        try:
            engine.wait([engine.submit(breaks)])
        except TaskFailedError as exc:
            return "handled" if variant == "same" else f"handled {exc.error_type}"
        return "unreached"


def test_a_subtask_that_failed_fails_the_replayed_wait_as_recorded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'failing.db'}"
    with open_engine(url, session="night", backoff=False) as engine:
        register_failing_kid(engine)
        task_id = engine.submit("careful")
        engine.run()
        assert engine.result(task_id) == "handled"
    with open_engine(session="night") as engine:
        register_failing_kid(engine)
        assert replay_check(url, engine).ok
    with open_engine(session="night") as engine:
        register_failing_kid(engine, "changed")
        (divergence,) = replay_check(url, engine).divergences
    assert divergence.found.endswith("returns 'handled ValueError'")


def register_big(engine: Engine, variant: str = "same") -> None:
    """A task that sleeps, receives a message, waits for subtasks, degrades, asks a person and
    takes a patch, with a change after each of those waits."""

    @engine.step()
    def fetch(u: str) -> str:
        return f"<{u}>"

    @engine.action(impact="high")
    def publish(u: str) -> str:
        return f"pub:{u}"

    @engine.task(name="kid")
    def kid(i: int) -> int:
        return i + 1

    @engine.task(name="big")
    def big(u: str) -> str:
        page = fetch(u)
        engine.sleep(3600)
        if variant == "after_sleep":
            fetch(u)
        heard = engine.recv("go")
        if variant == "after_recv":
            fetch(u)
        kids = engine.wait([engine.submit(kid, i) for i in range(2)])
        way = None if variant == "no_degrade" else engine.degrade("network", message="down")
        done = f"pub:{u}" if variant == "no_publish" else publish(u)
        if variant == "after_approval":
            fetch(u)
        if engine.patched("v2"):
            page += "!"
        return f"{page}|{heard}|{kids}|{way.name if way else None}|{done}"


@pytest.mark.parametrize(
    ("variant", "kind"),
    [
        ("after_sleep", "step"),
        ("after_recv", "step"),
        ("no_degrade", "result"),
        ("no_publish", "fewer"),
        ("after_approval", "unrecorded"),
    ],
)
def test_a_change_after_any_wait_the_history_went_past_is_reported(
    tmp_path: Path, variant: str, kind: str
) -> None:
    url = f"sqlite:///{tmp_path / 'big.db'}"
    with open_engine(url, clock=FakeClock(), session="night") as engine:
        register_big(engine)
        task_id = engine.submit("big", "x")
        engine.send(task_id, "go", "hello")
        engine.run()  # the sleep on the fake clock, the message, the subtasks; then it asks
        (asked,) = engine.approvals()
        engine.approve(asked.decision_id, note="fine")
        engine.run()
        assert engine.result(task_id) == "<x>!|hello|[1, 2]|offline_mirror|pub:x"
    with open_engine(session="night") as engine:
        register_big(engine)
        same = replay_check(url, engine)
    with open_engine(session="night") as engine:
        register_big(engine, variant)
        changed = replay_check(url, engine)
    assert same.ok, same.explain()
    assert (same.checked, same.skipped, same.partial) == (3, (), ())
    assert [(d.task_id, d.kind) for d in changed.divergences] == [(task_id, kind)]


def test_a_subtask_submitted_where_the_history_holds_a_step_is_a_divergence(
    parent_log: tuple[str, str],
) -> None:
    """Code that now calls a step before it submits its subtask makes another subtask (its id
    follows the last durable call) than the recorded run did: the log holds no such
    submission although the history went on past that place, so the code parts from it
    there, which the check reports rather than skipping the task as one whose subtasks' ends
    are missing."""
    url, task_id = parent_log

    def register(engine: Engine) -> None:
        @engine.step()
        def fetch() -> int:
            return 1

        @engine.step()
        def store() -> int:
            return 2

        @engine.task(name="kid")
        def kid(n: int) -> int:
            return n * 10

        @engine.task(name="parent")
        def parent() -> str:
            x = fetch()
            (got,) = engine.wait([engine.submit(kid, 4)])
            return f"{got}/{x}/{store()}"

    with open_engine(session="night") as engine:
        register(engine)
        check = replay_check(url, engine)
    assert [(d.task_id, d.kind) for d in check.divergences] == [(task_id, "submit")], (
        check.explain()
    )
    assert check.skipped == ()
    with open_engine(url, session="night") as engine:
        register(engine)
        direct = replay_task(engine, engine.log.read_stream(task_stream(task_id)))
    assert [d.kind for d in direct.divergences] == ["submit"], direct.explain()
