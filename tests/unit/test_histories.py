"""A worker keeps the histories of the tasks it claimed and reads only what came since.

A task that waits (a durable sleep, a message not yet sent, a retry's back-off) is claimed
again with its whole history; read whole each time, ``W`` waits read ``W`` histories growing
to ``W`` steps. These tests hold what the kept histories must never do: hand a run a history
the log no longer holds, or one whose new records were not checked.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from onward import Engine
from onward.events import (
    Append,
    CorruptRecord,
    EventLog,
    StepCompleted,
    TaskSubmitted,
    VersionConflict,
    open_log,
)
from onward.projections import task_stream
from onward.runtime.histories import Histories
from tests.conftest import FakeClock

STREAM = task_stream("0123456789abcdef")


def steps(first: int, count: int) -> list[StepCompleted]:
    return [StepCompleted(index=i, name="fetch", result=i) for i in range(first, first + count)]


@pytest.fixture
def log(tmp_path: Path, clock: FakeClock) -> EventLog:
    opened = open_log(f"sqlite:///{tmp_path / 'kept.db'}", clock=clock)
    opened.append(STREAM, [TaskSubmitted(name="crawl"), *steps(0, 2)], expected_version=0)
    return opened


def raw(log: EventLog, sql: str, *params: object) -> None:
    with closing(sqlite3.connect(log.url.removeprefix("sqlite:///"))) as db, db:
        db.execute(sql, params)


def test_a_second_read_reads_only_what_came_since(log: EventLog) -> None:
    histories = Histories(log)
    first = histories.read(STREAM)
    log.append(STREAM, steps(2, 2), expected_version=3)
    second = histories.read(STREAM)
    assert second == log.read_stream(STREAM)
    assert [r.version for r in second] == [1, 2, 3, 4, 5]
    assert all(kept is again for kept, again in zip(first, second[:3], strict=True))
    second.clear()  # the caller's own list
    assert len(histories.read(STREAM)) == 5


def test_a_tail_removed_and_written_again_is_read_whole(log: EventLog) -> None:
    histories = Histories(log)
    log.append(STREAM, steps(2, 1), expected_version=3)
    assert len(histories.read(STREAM)) == 4
    raw(log, "DELETE FROM stored_events WHERE originator_id = ? AND originator_version > 2", STREAM)
    with open_log(log.url, clock=FakeClock()) as other:  # another writer, after the removal
        other.append(
            STREAM,
            [StepCompleted(index=1, name="fetch", result="again"), *steps(2, 2)],
            expected_version=2,
        )
    read = histories.read(STREAM)
    assert read == log.read_stream(STREAM)
    assert [r.event for r in read][2] == StepCompleted(index=1, name="fetch", result="again")


def test_a_damaged_record_after_the_kept_ones_is_refused(log: EventLog) -> None:
    histories = Histories(log)
    histories.read(STREAM)
    log.append(STREAM, steps(2, 1), expected_version=3)
    raw(
        log,
        "UPDATE stored_events SET state = replace(state, X'32', X'33')"
        " WHERE originator_id = ? AND originator_version = 4",
        STREAM,
    )
    with pytest.raises(CorruptRecord) as damage:
        histories.read(STREAM)
    assert damage.value.version == 4


def test_histories_keep_at_most_their_limit(log: EventLog) -> None:
    other = task_stream("fedcba9876543210")
    log.append(other, [TaskSubmitted(name="crawl"), *steps(0, 2)], expected_version=0)
    size = sum(len(state) for *_, state in log.stream_rows(STREAM))
    histories = Histories(log, limit=size * 3 // 2)
    first = histories.read(STREAM)
    histories.read(other)  # the two are over the limit: the least recently read goes
    again = histories.read(STREAM)
    assert again == first
    assert again[0] is not first[0]
    kept = histories.read(STREAM)
    assert kept[0] is again[0]


def test_a_task_that_sleeps_many_times_runs_once_through_on_two_workers(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Two engines take turns at one task that sleeps: each claim after the other's runs
    reads what the other appended, and no step runs twice."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    bodies: list[int] = []

    def open_worker() -> Engine:
        engine = Engine.open(url, session="turns", clock=clock, sleep=clock.advance)

        @engine.step()
        def check(i: int) -> int:
            bodies.append(i)
            return i * i

        @engine.task()
        def poll(n: int) -> int:
            total = 0
            for i in range(n):
                total += check(i)
                engine.sleep(60)
            return total

        return engine

    first, second = open_worker(), open_worker()
    task_id = first.submit("poll", 12)
    turn = 0
    while first.task_view(task_id).state != "succeeded":
        engine = (first, second)[turn % 2]
        engine.run(max_runs=1)
        turn += 1
    assert first.result(task_id) == sum(i * i for i in range(12))
    assert bodies == list(range(12))
    assert turn > 12
    last = (first, second)[(turn - 1) % 2]
    assert not last._session.histories._kept  # the one that ended it keeps it no more
    first.close()
    second.close()


def test_a_history_is_sized_with_the_blobs_its_records_were_joined_with(
    tmp_path: Path, clock: FakeClock
) -> None:
    with open_log(f"sqlite:///{tmp_path / 'large.db'}", clock=clock, inline_limit=4096) as log:
        large = StepCompleted(index=0, name="fetch", result="x" * 100_000)
        log.append(STREAM, [TaskSubmitted(name="crawl"), large], expected_version=0)
        stored = sum(len(state) for *_, state in log.stream_rows(STREAM))
        assert stored < 10_000  # the result is a blob beside the record
        histories = Histories(log, limit=50_000)
        first = histories.read(STREAM)
        assert first[1].event == large
        assert histories.read(STREAM)[0] is not first[0]  # 100,000 bytes: not kept
        assert Histories(log, limit=200_000).read(STREAM) == first


def test_an_append_after_a_read_to_the_end_reads_nothing_more(log: EventLog) -> None:
    # A claim follows the read of its task's history: the head the read ended on is the one
    # the claim's append follows, not read again (another worker wrote the stream).
    with open_log(log.url, clock=FakeClock()) as reader:
        selects: list[tuple[str, int, int | None]] = []
        select = reader._select_stream  # type: ignore[attr-defined]

        def counted(stream: str, after: int, upto: int | None) -> object:
            selects.append((stream, after, upto))
            return select(stream, after, upto)

        reader._select_stream = counted  # type: ignore[attr-defined]
        history = Histories(reader).read(STREAM)
        assert [r.version for r in history] == [1, 2, 3]
        reader.append(STREAM, steps(2, 1), expected_version=3)
        assert selects == [(STREAM, 0, None)]
        # Its link is the read record's: the stream verifies whole.
        assert [r.version for r in log.read_stream(STREAM, verify=True)] == [1, 2, 3, 4]


def test_a_head_read_is_stale_once_another_worker_appended(log: EventLog) -> None:
    with open_log(log.url, clock=FakeClock()) as reader:
        Histories(reader).read(STREAM)
        log.append(STREAM, steps(2, 1), expected_version=3)  # another worker, meanwhile
        with pytest.raises(VersionConflict):
            reader.append(STREAM, steps(2, 1), expected_version=3)
        reader.append(STREAM, steps(3, 1), expected_version=4)
        assert [r.version for r in log.read_stream(STREAM, verify=True)] == [1, 2, 3, 4, 5]


def test_many_histories_read_together_are_what_each_read_alone_is(log: EventLog) -> None:
    """A worker claiming many tasks reads their histories in one query: each as read alone,
    a kept one read only from where it ended, an empty stream empty."""
    other, empty = task_stream("fedcba9876543210"), task_stream("00000000000000ff")
    log.append(other, [TaskSubmitted(name="crawl")], expected_version=0)
    histories = Histories(log)
    histories.read(STREAM)  # kept
    log.append(STREAM, steps(2, 1), expected_version=3)
    read = histories.read_many([STREAM, other, empty])
    assert read == {
        STREAM: log.read_stream(STREAM),
        other: log.read_stream(other),
        empty: [],
    }
    assert histories.read(other)[0] is read[other][0]  # kept as read() keeps it


def test_a_damaged_history_read_with_others_is_refused_alone(log: EventLog) -> None:
    other = task_stream("fedcba9876543210")
    log.append(other, [TaskSubmitted(name="crawl"), *steps(0, 1)], expected_version=0)
    raw(
        log,
        "UPDATE stored_events SET state = replace(state, X'32', X'33')"
        " WHERE originator_id = ? AND originator_version = 2",
        STREAM,
    )
    read = Histories(log).read_many([STREAM, other])
    damage = read[STREAM]
    assert isinstance(damage, CorruptRecord)
    assert (damage.stream, damage.version) == (STREAM, 2)
    assert read[other] == log.read_stream(other)


def test_more_histories_than_one_query_takes_are_read_in_parts(log: EventLog) -> None:
    streams = [task_stream(f"{n:016x}") for n in range(1, 1202)]
    log.commit(
        [
            Append(stream=s, events=[TaskSubmitted(name="crawl")], expected_version=0)
            for s in streams
        ]
    )
    read = Histories(log).read_many(streams)
    assert list(read) == streams
    assert all(
        isinstance(found, list) and [r.stream for r in found] == [s] for s, found in read.items()
    )
