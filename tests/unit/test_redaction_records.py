"""The user's own secret patterns (``Engine.open(..., redactor=Redactor(extra=[...]))``) reach
every part of onward's log records: the message, the traceback with its chained causes, and the
stack, though a record does not say which log it concerns."""

from __future__ import annotations

import gc
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, Interruption, Observer
from onward.events import RecordRedactor, Redactor, redacted_logger
from tests.conftest import FakeClock

OWN = "ACME-SECRET-918273"
OWN_PATTERN = r"ACME-SECRET-\d+"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything the ``onward`` loggers write, formatted with tracebacks and stacks."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("onward")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def fail_with_a_cause(message: str) -> None:
    """Raise ``message``, caused by an error whose message holds the secret too."""
    try:
        raise KeyError(f"no entry for {OWN}")
    except KeyError as missing:
        raise RuntimeError(message) from missing


def test_tracebacks_of_an_observer_and_an_on_interruption_that_failed(
    tmp_path: Path, clock: FakeClock, captured: io.StringIO
) -> None:
    class Failing(Observer):
        def task_started(self, start: Any) -> Any:
            fail_with_a_cause(f"metrics backend rejected key {OWN}")

    def on_interruption(interruption: Interruption) -> None:
        fail_with_a_cause(f"pager refused the notice; its token was {OWN}")

    with Engine.open(
        f"sqlite:///{tmp_path / 'a.db'}",
        session="s",
        clock=clock,
        sleep=clock.advance,
        redactor=Redactor(extra=[OWN_PATTERN]),
        observer=Failing(),
        on_interruption=on_interruption,
    ) as engine:

        @engine.task()
        def job() -> int:
            engine.notify(f"deploying with {OWN}")
            return 1

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 1

    output = captured.getvalue()
    assert OWN not in output
    assert "failed in task_started; ignored" in output
    assert "RuntimeError: metrics backend rejected key [REDACTED:custom]" in output
    assert "on_interruption failed for" in output
    assert "RuntimeError: pager refused the notice; its token was [REDACTED:custom]" in output
    # The traceback is kept, its chained cause included.
    assert output.count("Traceback (most recent call last):") == 4
    assert output.count("KeyError: 'no entry for [REDACTED:custom]'") == 2


def test_a_stack_and_a_traceback_on_any_onward_logger(captured: io.StringIO) -> None:
    redactor = Redactor(extra=[OWN_PATTERN])  # a log's, in use while it lives
    logger = redacted_logger("onward.engine.fixes")
    try:
        fail_with_a_cause(f"token {OWN}")
    except RuntimeError:
        logger.warning("lost %s", OWN, exc_info=True)
    logger.warning("where", stack_info=True)  # the stack shows this line: ACME-SECRET-404
    output = captured.getvalue()
    assert "ACME-SECRET-" not in output
    assert "lost [REDACTED:custom]" in output
    assert "RuntimeError: token [REDACTED:custom]" in output
    assert "Stack (most recent call last)" in output
    assert "the stack shows this line: [REDACTED:custom]" in output
    del redactor


def test_the_patterns_of_a_redactor_apply_while_it_lives() -> None:
    from onward.events.redaction import redact_for_any_log

    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "onward.test", logging.INFO, __file__, 1, "badge %s", ("XQZ-77123",), None
        )

    redactor = Redactor(extra=[r"XQZ-\d+"])
    alive = record()
    RecordRedactor().filter(alive)
    assert alive.getMessage() == "badge [REDACTED:custom]"
    assert redact_for_any_log("badge XQZ-77123") == "badge [REDACTED:custom]"
    assert redactor.redact("XQZ-1") == "[REDACTED:custom]"
    del redactor
    gc.collect()
    gone = record()
    RecordRedactor().filter(gone)
    assert gone.getMessage() == "badge XQZ-77123"
