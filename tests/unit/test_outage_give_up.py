"""``Outage.give_up``: the storage calls riding out an outage stop retrying at once (a worker
stopping at once), and the calls made afterwards ride out outages as before."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from onward.events import StorageUnavailable
from onward.events.outage import Outage


def locked() -> None:
    raise sqlite3.OperationalError("database is locked")


def test_a_call_riding_out_an_outage_gives_up_when_asked() -> None:
    outage = Outage("sqlite:///log.db", tolerance=3600)
    tries = threading.Semaphore(0)
    raised: list[BaseException] = []

    def attempt() -> None:
        tries.release()
        locked()

    def call() -> None:
        try:
            outage.call("append to 'task-1'", attempt)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert tries.acquire(timeout=10)
    assert tries.acquire(timeout=10)  # it is retrying
    outage.give_up()
    thread.join(timeout=10)  # pausing between tries, it gives up at once (pauses grow to 2 s)
    assert not thread.is_alive()
    (error,) = raised
    assert isinstance(error, StorageUnavailable)
    assert "given up as the worker stops at once" in str(error)


def test_calls_made_after_a_give_up_ride_out_outages_again() -> None:
    slept: list[float] = []
    outage = Outage("sqlite:///log.db", tolerance=10, sleep=slept.append)
    outage.give_up()
    answers = iter([locked, locked, lambda: "appended"])

    def attempt() -> object:
        return next(answers)()

    assert outage.call("append to 'task-1'", attempt) == "appended"
    assert len(slept) == 2
    with pytest.raises(StorageUnavailable, match="tolerance"):
        Outage("sqlite:///log.db", tolerance=0).call("read", locked)
