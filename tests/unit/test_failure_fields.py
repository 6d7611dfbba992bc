"""A caught step failure reads the same live and when its task runs again from its history:
the literal arguments of an exception whose constructor takes other arguments too, and the
fields of Python's own exceptions (a decode error's position, a missing module's name), on
real SQLite files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from onward import Engine
from onward.core.failure_attributes import plain_attributes
from onward.core.failures import replayed_error
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")


class Rejected(Exception):
    """An application's error made with a code and a keyword its constructor requires."""

    def __init__(self, code: int, *, detail: str) -> None:
        super().__init__(code)
        self.detail = detail


class Throttled(Exception):
    """An application's error with two literal arguments and a keyword it requires."""

    def __init__(self, message: str, seconds: int, *, source: str) -> None:
        super().__init__(message, seconds)
        self.source = source


def failure(kind: str) -> BaseException:
    """The failure a step of ``kind`` raises."""
    if kind == "rejected":
        return Rejected(404, detail="no such page")
    if kind == "throttled":
        return Throttled("slow down", 30, source="api")
    if kind == "decode":
        try:
            b"ok \xff".decode("utf-8")
        except UnicodeDecodeError as exc:
            return exc
    if kind == "encode":
        try:
            "ok \u20ac".encode("ascii")
        except UnicodeEncodeError as exc:
            return exc
    if kind == "module":
        return ModuleNotFoundError("No module named 'yaml'", name="yaml")
    if kind == "syntax":
        try:
            compile("x = (", "plan.py", "exec")
        except SyntaxError as exc:
            return exc
    raise AssertionError(kind)


def read(exc: BaseException) -> tuple[Any, ...]:
    """What a task reads of a caught failure (of Python's own, their fields: the arguments a
    decode error was made with hold the bytes it met, which its record does not keep)."""
    seen: tuple[Any, ...] = (type(exc).__name__, str(exc))
    if isinstance(exc, (Rejected, Throttled)):
        seen += (exc.args,)
    if isinstance(exc, UnicodeError):
        seen += (exc.encoding, exc.start, exc.end, exc.reason)  # type: ignore[attr-defined]
    if isinstance(exc, ImportError):
        seen += (exc.name,)
    if isinstance(exc, SyntaxError):
        seen += (exc.msg, exc.filename, exc.lineno)
    return seen


KINDS = ["rejected", "throttled", "decode", "encode", "module", "syntax"]


def test_a_caught_failure_reads_the_same_after_a_durable_wait(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A task catches a step's failure, waits durably (its code runs again from its history)
    and reads it again: ``Rejected(404, detail=...)`` came back with ``'404'`` for its
    argument, a ``UnicodeDecodeError`` with no encoding and a position of 0, a
    ``ModuleNotFoundError`` without the module's name."""
    seen: dict[str, list[tuple[Any, ...]]] = {}
    db = f"sqlite:///{tmp_path / 'work.db'}"
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance) as engine:

        @engine.step()
        def act(kind: str) -> None:
            raise failure(kind)

        @engine.task()
        def work(kind: str) -> str:
            try:
                act(kind)
            except Exception as exc:
                seen.setdefault(kind, []).append(read(exc))
            engine.sleep(10)
            return kind

        ids = [engine.submit(work, kind) for kind in KINDS]
        engine.run()
        assert [engine.result(task_id) for task_id in ids] == KINDS
    for kind in KINDS:
        live, replayed = seen[kind]
        assert replayed == live, kind
    assert seen["rejected"][0][2] == (404,)
    assert seen["decode"][0][2:] == ("utf-8", 3, 4, "invalid start byte")
    assert seen["module"][0][2] == "yaml"


def test_the_fields_of_pythons_own_exceptions_are_kept_as_plain_values() -> None:
    """The fields a builtin exception keeps in its slots, not its ``__dict__``, are recorded
    as its plain attributes: a text's or a number's, never its bytes nor an object."""
    decode = failure("decode")
    assert plain_attributes(decode) == {
        "encoding": "utf-8",
        "start": 3,
        "end": 4,
        "reason": "invalid start byte",
    }
    missing = plain_attributes(AttributeError("no x", name="x", obj=object()))
    assert missing == {"name": "x"}
    assert plain_attributes(ValueError("plain")) == {}


def test_a_field_that_would_change_the_recorded_message_is_not_given_back() -> None:
    """A rebuilt exception reads as its record's message, whatever fields the record kept."""
    message = "invalid syntax (plan.py, line 1)"
    rebuilt = replayed_error(
        "SyntaxError", "", message, attributes={"filename": "other.py", "lineno": 7}
    )
    assert str(rebuilt) == message
