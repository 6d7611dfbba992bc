"""The pytest plugin of ``onward.testing`` (entry point ``pytest11``): engines on a fake clock.

Fixtures:

``onward_clock``
    a :class:`~onward.testing.FakeClock`; the engines below use it for time and for sleeping.
``onward_engine``
    an :class:`~onward.Engine` on ``memory://``, session ``test``, on ``onward_clock``.
``onward_sqlite_engine``
    the same on a real SQLite file in the test's temporary directory.

The marker ``@pytest.mark.onward(**options)`` passes options to both engines' open:
``backoff=False`` for the no-back-off mode, ``session=...``, and any option of
:meth:`onward.Engine.open`. A ``clock=`` or ``sleep=`` given there replaces the fake clock's
(``onward_clock`` is then not the engine's clock, or no longer moved by its waits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from onward.events import UsageError
from onward.events.sqlite import sqlite_url
from onward.runtime.engine import Engine
from onward.testing.clock import FakeClock
from onward.testing.engines import open_engine

__all__ = ["onward_clock", "onward_engine", "onward_sqlite_engine", "pytest_configure"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``onward`` marker."""
    config.addinivalue_line(
        "markers",
        "onward(**options): options of the onward_engine and onward_sqlite_engine fixtures "
        "(backoff=False: retries due at once; any option of Engine.open)",
    )


def _options(request: pytest.FixtureRequest, clock: FakeClock) -> dict[str, Any]:
    """The markers' options, on ``clock`` unless they name a clock of their own: a module's
    or a class's marker, then the test's own, the closest winning where they name the same
    option.

    Raises:
        UsageError: a marker given an option without its name.
    """
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("onward"))):
        if marker.args:
            raise UsageError(
                "@pytest.mark.onward takes the options of Engine.open by name "
                f"(backoff=False), got {marker.args!r} without one"
            )
        if "url" in marker.kwargs:
            raise UsageError(
                "@pytest.mark.onward takes no url: onward_engine is on memory:// and "
                "onward_sqlite_engine on a temporary file (call onward.testing.open_engine(url) "
                "for another log)"
            )
        options.update(marker.kwargs)
    if options.get("clock") is None:
        options["clock"] = clock
    return options


@pytest.fixture
def onward_clock() -> FakeClock:
    """A fake clock that the engine's timers and back-offs move (no test sleeps)."""
    return FakeClock()


@pytest.fixture
def onward_engine(request: pytest.FixtureRequest, onward_clock: FakeClock) -> Iterator[Engine]:
    """An engine on ``memory://`` and the fake clock, closed after the test."""
    with open_engine("memory://", **_options(request, onward_clock)) as engine:
        yield engine


@pytest.fixture
def onward_sqlite_engine(
    request: pytest.FixtureRequest, onward_clock: FakeClock, tmp_path: Path
) -> Iterator[Engine]:
    """An engine on a real SQLite file in the test's temporary directory, on the fake clock."""
    url = sqlite_url(str(tmp_path / "onward-test.db"))
    with open_engine(url, **_options(request, onward_clock)) as engine:
        yield engine
