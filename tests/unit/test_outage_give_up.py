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


def test_reads_that_answer_do_not_end_the_outage_of_appends_that_keep_failing() -> None:
    """A writer's lock holds every append back while reads of the WAL still answer: each read
    ended "the outage", so an append's outage began again at every read, and a worker past its
    tolerance never stopped (still stuck 130 s past a 4 s tolerance). Each call counts its own
    outage from its first failure."""
    now = [0.0]
    outages: list[Outage] = []

    def pause(seconds: float) -> None:
        now[0] += seconds
        outages[0].call("read after position 43", lambda: [])  # a read between tries answers

    outage = Outage("sqlite:///log.db", tolerance=4, sleep=pause, clock=lambda: now[0])
    outages.append(outage)

    def append() -> None:
        now[0] += 1.5  # each try waits out the busy timeout, then fails
        locked()

    with pytest.raises(StorageUnavailable, match="tolerance is 4 s"):
        outage.call("append of 1 groups", append)
    assert now[0] <= 1.5 + 4 + 1.5  # its first failure, its tolerance, at most one more try
