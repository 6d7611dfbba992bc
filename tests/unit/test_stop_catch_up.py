"""A service or a run that stops catches the views up; when that catch-up fails (the storage
fails just then), the stop still ends as it would, and the failure is logged, not dropped."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from onward import Engine
from onward.events import BackendError
from onward.runtime.scheduler import Scheduler


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_failed_catch_up_as_the_service_stops_is_logged(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stopped = threading.Event()
    caught_up = Scheduler._caught_up

    def storage_fails_once_stopped(self: Scheduler) -> None:
        if stopped.is_set():
            raise BackendError("the storage failed just then")
        caught_up(self)

    monkeypatch.setattr(Scheduler, "_caught_up", storage_fails_once_stopped)
    with Engine.open(f"sqlite:///{tmp_path / 'work.db'}", session="s", lease=300) as engine:
        loop: asyncio.AbstractEventLoop | None = None
        sync_stop, async_stop = threading.Event(), asyncio.Event()

        @engine.task(name="job")
        def job() -> int:
            stopped.set()
            if loop is None:
                sync_stop.set()
            else:
                loop.call_soon_threadsafe(async_stop.set)
            return 1

        engine.submit(job)
        with caplog.at_level(logging.WARNING, logger="onward"):
            if path == "sync":
                engine.serve(workers=1, stop=sync_stop, handle_signals=False)
            else:

                async def serve() -> None:
                    nonlocal loop
                    loop = asyncio.get_running_loop()
                    await engine.serve_async(concurrency=1, stop=async_stop, handle_signals=False)

                asyncio.run(serve())
    said = [r.getMessage() for r in caplog.records if "catching the views up" in r.getMessage()]
    assert said, [r.getMessage() for r in caplog.records]
    assert "the storage failed just then" in said[0]
