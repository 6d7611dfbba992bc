"""Bad input to public calls that had no check of their own: each is a clear, typed error at
the call (it was a bare builtin error deep inside, a traceback, or an empty answer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import onward
from onward import Engine
from onward.cli.main import main
from onward.events import UsageError, open_log
from onward.healing.fixes import FixRegistry, FixStats
from onward.judgement.rulebook import Rulebook
from onward.judgement.rules import Rule, RulebookError, verdict


def test_fork_by_an_actor_of_undecodable_bytes_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--by "$(printf 'x\\xff')"``: Python reads the bytes as lone surrogates, which no
    database stores; the fork printed a traceback (UnicodeEncodeError) and exited 1."""
    url = f"sqlite:///{tmp_path / 'work.db'}"
    with Engine.open(url, session="s") as engine:

        @engine.step()
        def fetch(n: int) -> int:
            return n

        @engine.task()
        def crawl(n: int) -> int:
            return fetch(n) + fetch(n)

        task_id = engine.submit(crawl, 1)
        engine.run()
    capsys.readouterr()
    by = b"x\xff\xfe".decode(errors="surrogateescape")
    assert main(["fork", task_id, "--from-step", "1", "--by", by, "--db", url]) == 2
    err = capsys.readouterr().err
    assert "holds a lone surrogate" in err
    assert len(err.strip().splitlines()) == 1
    with Engine.open(url, session="s") as engine:
        assert len(engine.tasks()) == 1  # nothing forked


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"when": "x"}, "when must be a dict"),
        ({"priority": "high"}, "priority must be an int"),
        ({"priority": True}, "priority must be an int"),
        ({"retry": "yes"}, "retry must be True, False or None"),
        ({"fixes": "strip"}, "fixes must be a list"),
        ({"description": 3}, "description must be a str"),
    ],
)
def test_a_rule_of_the_wrong_types_is_refused_where_it_is_built(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(RulebookError, match=message):
        Rule(id="r", scenario="error", choice="fix", **settings)


def test_a_rule_function_of_a_priority_that_is_no_int_is_refused() -> None:
    rulebook = Rulebook()
    with pytest.raises(RulebookError, match="priority must be an int"):
        rulebook.function("r", "error", priority="high")  # type: ignore[arg-type]
    assert rulebook.function("r", "error", priority=3)(lambda facts: None) is not None


def test_an_observer_with_no_hook_is_refused_at_open() -> None:
    with pytest.raises(UsageError, match=r"observer must be an onward\.Observer"):
        Engine.open("memory://", session="s", observer=42)

    class Spans:  # an observer of its own making, with one hook
        def task_started(self, start: object) -> None:
            return None

    Engine.open("memory://", session="s", observer=Spans()).close()


def test_tasks_of_a_state_no_task_has_is_refused_not_an_empty_list() -> None:
    with Engine.open("memory://", session="s") as engine:

        @engine.task()
        def job() -> int:
            return 1

        engine.submit(job)
        assert len(engine.tasks("queued")) == 1
        assert engine.tasks("damaged") == []
        for state in ("Queued", "bogus", ""):
            with pytest.raises(UsageError, match=r"no task state|state must"):
                engine.tasks(state)


def test_the_lifecycle_helpers_refuse_what_they_cannot_use() -> None:
    with pytest.raises(UsageError, match="takes an exception, got str"):
        onward.fingerprint("boom")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no lifecycle 'tasks'"):
        onward.diagram("tasks")
    with pytest.raises(UsageError, match="no lifecycle 'tasks'"):
        onward.validate("tasks", "t1", "queued", "TaskClaimed")
    assert "stateDiagram" in onward.diagram("task")


TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def test_a_refused_name_with_a_secret_in_it_is_shown_redacted(tmp_path: Path) -> None:
    """A name with a lone surrogate is refused; the message showed it whole, secret and all."""
    from onward.events import Context, StepCompleted, open_log

    bad = f"w-{TOKEN}\udcff"
    with open_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        for call in (
            lambda: log.append(
                "task-1",
                [StepCompleted(index=0, name="f")],
                expected_version=None,
                context=Context(actor=bad),
            ),
            lambda: log.append(bad, [StepCompleted(index=0, name="f")], expected_version=None),
        ):
            with pytest.raises(UsageError, match="lone surrogate") as refused:
                call()
            assert TOKEN not in str(refused.value)
            assert "[REDACTED" in str(refused.value)
        with pytest.raises(UsageError, match="actor must be a str"):
            log.append(
                "task-1",
                [StepCompleted(index=0, name="f")],
                expected_version=None,
                context=Context(actor=b"x"),
            )  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="lone surrogate") as refused:
        Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session=bad)
    assert TOKEN not in str(refused.value)
    with Engine.open("memory://", session="s") as engine:
        with pytest.raises(UsageError, match="UTF-8") as refused:
            engine.task(name=bad)(lambda: 1)
        assert TOKEN not in str(refused.value)


def test_an_observer_class_in_place_of_one_is_refused() -> None:
    with pytest.raises(UsageError, match="observer must be"):
        Engine.open("memory://", session="s", observer=onward.Observer)


def test_a_lifecycle_name_that_is_no_str_is_refused() -> None:
    with pytest.raises(UsageError, match="no lifecycle"):
        onward.validate(["task"], "t1", "queued", "TaskClaimed")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: FixRegistry(None), "iterable of fixes"),  # type: ignore[arg-type]
        (lambda: FixRegistry(5), "iterable of fixes"),  # type: ignore[arg-type]
        (lambda: FixStats(attempts=None), "ints"),  # type: ignore[arg-type]
        (lambda: FixStats(attempts=2, successes=1.5), "ints"),  # type: ignore[arg-type]
        (lambda: Rulebook(None), "iterable of rules"),  # type: ignore[arg-type]
        (lambda: verdict("retry", clarity=None), r"clarity must be in \[0, 1\]"),  # type: ignore[arg-type]
    ],
)
def test_fixes_rulebooks_and_verdicts_of_the_wrong_types_are_refused(
    build: Callable[[], object], error: str
) -> None:
    """Each gave a bare TypeError from deep inside."""
    with pytest.raises(UsageError, match=error):
        build()


def test_a_log_path_with_a_lone_surrogate_is_refused(tmp_path: Path) -> None:
    """It gave a bare UnicodeEncodeError from the file check."""
    path = f"{tmp_path}/log\udcff.db"
    with pytest.raises(UsageError, match="lone surrogate"):
        Engine.open(f"sqlite:///{path}", session="s")
    with pytest.raises(UsageError, match="lone surrogate"):
        open_log(f"sqlite:///{path}")


def test_an_empty_task_id_is_refused_as_empty(tmp_path: Path) -> None:
    with (
        Engine.open(f"sqlite:///{tmp_path / 'log.db'}", session="s") as engine,
        pytest.raises(UsageError, match="got an empty str"),
    ):
        engine.result("")
