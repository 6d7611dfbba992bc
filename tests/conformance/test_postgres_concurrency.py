"""The PostgreSQL log under concurrency: writers that never wait for each other, positions that
follow the writing transactions, a horizon that readers never pass, notifications for waking
appends only, transient errors the log rides out, and logs of the earlier recorder."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresFactory

from onward import Engine
from onward.events import (
    Append,
    AppendResult,
    EventLog,
    Recorded,
    StepCompleted,
    StorageUnavailable,
    TaskFailed,
    TaskSubmitted,
    TaskSucceeded,
    UsageError,
    open_log,
)
from onward.events import postgres as backend
from onward.projections import task_stream

pytestmark = pytest.mark.postgres

WRITERS = 4
APPENDS = 150

#: A writer process: appends to streams of its own at expected versions, to shared streams at
#: whatever version they are, and to both in one commit; prints how many events it appended.
WRITER = """
import sys

from onward.events import Append, StepCompleted, TaskSubmitted, VersionConflict, open_log

url, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
appended = 0
versions = {}
with open_log(url) as log:
    for i in range(count):
        own = f"own-{name}-{i % 7}"
        shared = f"shared-{i % 3}"
        event = StepCompleted(index=i, name=name, result=i, duration=0.0, attempt=1)
        if i % 5 == 0:  # one commit to an own stream and a shared one, all or nothing
            appends = [
                Append(stream=own, events=[event, event], expected_version=versions.get(own, 0)),
                Append(stream=shared, events=[TaskSubmitted(name=name, args=[i], kwargs={})],
                       expected_version=None),
            ]
            log.commit(appends)
            versions[own] = versions.get(own, 0) + 2
            appended += 3
        elif i % 2 == 0:
            log.append(shared, [event], expected_version=None)
            appended += 1
        else:
            log.append(own, [event], expected_version=versions.get(own, 0))
            versions[own] = versions.get(own, 0) + 1
            appended += 1
print(appended)
"""


@pytest.fixture
def log(postgres_url: str) -> Iterator[EventLog]:
    with open_log(postgres_url) as opened:
        yield opened


def server(url: str) -> str:
    """The URL of the database, without the log's schema."""
    return url.partition("?")[0]


def table(url: str) -> str:
    schema = url.split("schema=")[1]
    return f'"{schema}"."onward_events"'


def test_a_tail_reader_sees_every_commit_of_concurrent_writers_once_in_order(
    postgres_url: str, tmp_path: Path, log: EventLog
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), postgres_url, f"w{n}", str(APPENDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    tail: list[Recorded] = []
    position = 0
    while True:
        running = any(w.poll() is None for w in writers)
        for r in log.read(after=position, page_size=50):
            tail.append(r)
            position = r.position
        if not running:
            break  # one more read after every writer ended: the last pass above
    results = [w.communicate() for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in results]
    total = sum(int(out) for out, _ in results)

    positions = [r.position for r in tail]
    assert positions == sorted(set(positions))  # each once, in order
    assert len(tail) == total
    seen: dict[str, int] = defaultdict(int)
    for r in tail:  # each stream's versions in log order: 1, 2, 3, ...
        assert r.version == seen[r.stream] + 1, (r.stream, r.version, seen[r.stream])
        seen[r.stream] = r.version
    final = [(r.position, r.stream, r.version, r.meta.event_id) for r in log.read()]
    assert final == [(r.position, r.stream, r.version, r.meta.event_id) for r in tail]
    assert log.head() == positions[-1]
    assert log.verify().ok


def test_a_record_that_commits_late_is_read_in_its_place(postgres_url: str, log: EventLog) -> None:
    log.append(
        "first",
        [StepCompleted(index=0, name="a", result=0, duration=0.0, attempt=1)],
        expected_version=0,
    )
    with open_log("memory://") as memory:  # a record of stream "late", as onward encodes it
        memory.append(
            "late",
            [StepCompleted(index=0, name="c", result=0, duration=0.0, attempt=1)],
            expected_version=0,
        )
        topic, state = next(iter(memory.read_rows()))[0][3:5]
    slow = psycopg.connect(server(postgres_url), autocommit=False)
    try:
        # A transaction that got its id first and commits last.
        slow.execute(
            f"INSERT INTO {table(postgres_url)} (notification_id, originator_id,"
            " originator_version, topic, state) VALUES"
            " (pg_current_xact_id()::text::bigint * %s + 1, 'late', 1, %s, %s)",
            (backend.ROWS_PER_COMMIT, topic, state),
        )
        later = log.append(
            "later",
            [StepCompleted(index=0, name="b", result=0, duration=0.0, attempt=1)],
            expected_version=0,
        ).positions[0]
        with open_log(postgres_url) as reader:
            before = [r.stream for r in reader.read()]
            assert before == ["first"]  # "later" committed, but the horizon holds it back
            assert reader.head() < later
            slow.commit()
            after = [r.stream for r in reader.read()]
            assert after == ["first", "late", "later"]
            assert reader.head() == later
    finally:
        slow.close()


def test_a_handle_reads_its_own_appends_once_older_transactions_end(
    postgres_url: str, log: EventLog
) -> None:
    slow = psycopg.connect(server(postgres_url), autocommit=False)
    found: list[list[str]] = []
    try:
        slow.execute("SELECT pg_current_xact_id()")  # holds the horizon back
        log.append("mine", [TaskSubmitted(name="job", args=[], kwargs={})], expected_version=0)
        reading = threading.Thread(target=lambda: found.append([r.stream for r in log.read()]))
        reading.start()
        slow.commit()
        reading.join(timeout=60)
    finally:
        slow.close()
    assert found == [["mine"]]


def test_a_horizon_held_back_too_long_is_a_transient_error_naming_the_transaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "HORIZON_PATIENCE", 0.05)
    slow = psycopg.connect(server(postgres_url), autocommit=False)
    try:
        slow.execute("SELECT pg_current_xact_id()")
        with open_log(postgres_url, outage_tolerance=0) as log:
            log.append("mine", [TaskSubmitted(name="job", args=[], kwargs={})], expected_version=0)
            with pytest.raises(StorageUnavailable, match=f"pid {slow.info.backend_pid}"):
                log.head()
    finally:
        slow.close()


def test_waking_appends_notify_the_channel_and_quiet_ones_do_not(
    postgres_url: str, log: EventLog
) -> None:
    assert isinstance(log, backend.PostgresLog)
    listener = psycopg.connect(server(postgres_url), autocommit=True)
    try:
        listener.execute(f'LISTEN "{log.channel}"')
        quiet = log.append(
            "task-1",
            [StepCompleted(index=0, name="a", result=0, duration=0.0, attempt=1)],
            expected_version=0,
        ).positions[0]
        waking = log.append(
            "task-2", [TaskSubmitted(name="job", args=[], kwargs={})], expected_version=0
        ).positions[0]
        heard: list[int] = []
        for note in listener.notifies(timeout=30):
            heard.append(int(note.payload))
            if heard[-1] == waking >> 20:
                break
        # Notifications arrive in commit order: the quiet append's would have come first.
        assert heard == [waking >> 20]
        assert quiet >> 20 != waking >> 20
    finally:
        listener.close()


def heard_until_marker(listener: psycopg.Connection[Any], log: EventLog) -> set[int]:
    """The transactions heard on the log's channel, up to a waking marker appended now (their
    notifications arrive in commit order)."""
    marker = log.append(
        "marker", [TaskSubmitted(name="marker", args=[], kwargs={})], expected_version=None
    ).positions[0]
    heard: set[int] = set()
    for note in listener.notifies(timeout=30):
        heard.add(int(note.payload))
        if int(note.payload) == marker >> 20:
            break
    heard.discard(marker >> 20)
    return heard


def test_a_quiet_append_that_says_it_wakes_notifies_the_channel(
    postgres_url: str, log: EventLog
) -> None:
    assert isinstance(log, backend.PostgresLog)
    listener = psycopg.connect(server(postgres_url), autocommit=True)
    step = StepCompleted(index=0, name="a", result=0, duration=0.0, attempt=1)
    try:
        listener.execute(f'LISTEN "{log.channel}"')
        quiet = log.append("task-1", [step], expected_version=0).positions[0]
        woken = log.append("task-2", [step], expected_version=0, wakes=True).positions[0]
        results = log.commit_groups(
            [
                [Append(stream="task-3", events=[step], expected_version=0, wakes=True)],
                [Append(stream="task-4", events=[step], expected_version=0)],
            ]
        )
        assert isinstance(results[0], AppendResult)
        grouped = results[0].positions
        assert heard_until_marker(listener, log) == {woken >> 20, grouped[0] >> 20}
        assert quiet >> 20 not in {woken >> 20, grouped[0] >> 20}
    finally:
        listener.close()


def test_the_end_of_a_subtask_notifies_the_channel_and_a_top_level_tasks_does_not(
    postgres_url: str, both_paths: str
) -> None:
    """The end of a subtask makes its waiting parent runnable: idle workers must hear of it
    (the worker that ended it may die before it runs the parent), though the end of a task
    is quiet otherwise. A subtask abandoned from outside (no worker ends it) too."""
    listener = psycopg.connect(server(postgres_url), autocommit=True)
    try:
        with Engine.open(postgres_url, session="subtask-ends") as engine:
            assert isinstance(engine.log, backend.PostgresLog)
            listener.execute(f'LISTEN "{engine.log.channel}"')

            @engine.task(name="child")
            def child() -> int:
                return 1

            @engine.task(name="gone")
            def gone() -> int:
                return 2

            @engine.task(name="parent")
            def parent() -> int:
                return sum(engine.wait([engine.submit(child), engine.submit(gone)]))

            top = engine.submit(parent)
            engine.run(max_runs=2)  # the parent waits; its first subtask ends
            del engine.registry.tasks["gone"]  # the next deploy dropped it
            engine.run(max_runs=1)  # the second waits, unregistered
            (dropped,) = [t.task_id for t in engine.tasks() if t.state == "unregistered"]
            engine.abandon(dropped, by="ana", reason="gone")
            engine.run()  # the parent fails: what it waited for was abandoned
            assert engine.task_view(top).state == "failed"
            ends = {
                r.stream: r.position >> 20
                for r in engine.log.read()
                if isinstance(r.event, TaskSucceeded | TaskFailed)
            }
            heard = heard_until_marker(listener, engine.log)
        assert len(ends) == 3
        top_end = ends.pop(task_stream(top))
        assert set(ends.values()) <= heard
        assert top_end not in heard
    finally:
        listener.close()


def test_a_watch_wakes_for_another_handles_submission(postgres_url: str, log: EventLog) -> None:
    watch = log.watch()
    try:
        with open_log(postgres_url) as other:
            other.append(
                "task-1", [TaskSubmitted(name="job", args=[], kwargs={})], expected_version=0
            )
        assert watch.wait(30)
        assert [r.stream for r in log.read()] == ["task-1"]
    finally:
        watch.close()


def test_every_event_type_is_quiet_or_waking_on_purpose() -> None:
    from onward.events import all_event_types

    # onward's own types (tests may define event types of their own)
    tags = {
        t.__struct_config__.tag for t in all_event_types() if t.__module__.startswith("onward.")
    }
    assert tags >= backend.QUIET_TOPICS
    assert tags - backend.QUIET_TOPICS == {
        "ApprovalDenied",
        "ApprovalGranted",
        "BreakerClosed",
        "LimitSet",
        "MessageSent",
        "PermitReturned",
        "ScheduleRemoved",
        "ScheduleSet",
        "SessionEnded",
        "SessionPaused",
        "SessionResumed",
        "SessionStarted",
        "TaskCancelled",
        "TaskDeadlineMissed",
        "TaskLeaseExpired",
        "TaskQuarantined",
        "TaskReleased",
        "TaskReprioritised",
        "TaskRetried",
        "TaskSubmitted",
        "TaskUnregistered",
        "TaskWaiting",
        "WorkerStopped",
    }


def test_a_commit_of_too_many_records_is_refused(
    log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "ROWS_PER_COMMIT", 3)
    event = StepCompleted(index=0, name="a", result=0, duration=0.0, attempt=1)
    with pytest.raises(UsageError, match="fewer than 3"):
        log.append("task-1", [event, event, event], expected_version=0)
    log.append("task-1", [event, event], expected_version=0)
    assert [r.version for r in log.read()] == [1, 2]


def test_a_lost_connection_is_a_transient_error_and_the_next_append_reconnects(
    postgres_url: str,
) -> None:
    event = StepCompleted(index=0, name="a", result=0, duration=0.0, attempt=1)
    with open_log(postgres_url, outage_tolerance=0) as log:
        log.append("task-1", [event], expected_version=0)
        assert isinstance(log, backend.PostgresLog)
        pids = [c.info.backend_pid for c, _cursor in log._connections._idle]
        with psycopg.connect(server(postgres_url), autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StorageUnavailable):
            log.append("task-1", [event], expected_version=1)
        log.append("task-1", [event], expected_version=1)
        assert [r.version for r in log.read_stream("task-1")] == [1, 2]
    with open_log(postgres_url) as log:  # with a tolerance, the same loss passes unseen
        assert isinstance(log, backend.PostgresLog)
        log.append("task-1", [event], expected_version=2)
        with psycopg.connect(server(postgres_url), autocommit=True) as admin:
            for connection, _cursor in log._connections._idle:
                admin.execute("SELECT pg_terminate_backend(%s)", (connection.info.backend_pid,))
        log.append("task-1", [event], expected_version=3)
        assert [r.version for r in log.read_stream("task-1")] == [1, 2, 3, 4]


def earlier_recorder(url: str) -> Any:
    """eventsourcing's PostgreSQL recorder, as onward used it before (tables, sequence)."""
    base, _, query = url.partition("?")
    schema = query.split("schema=")[1]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    factory = PostgresFactory.construct(
        {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": base.rsplit("/", 1)[1],
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "5432",
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_SCHEMA": schema,
            "ORIGINATOR_ID_TYPE": "text",
            "CREATE_TABLE": "true",
        }
    )
    factory.env.name = "onward"
    return factory, factory.application_recorder()


def test_a_log_of_the_earlier_recorder_opens_reads_and_grows(postgres_url: str) -> None:
    with open_log("memory://") as memory:  # records encoded as onward writes them
        memory.append(
            "task-1", [TaskSubmitted(name="job", args=[1], kwargs={})], expected_version=0
        )
        memory.commit(
            [
                Append(
                    stream="task-2",
                    events=[TaskSubmitted(name="job", args=[2], kwargs={})],
                    expected_version=0,
                ),
                Append(
                    stream="task-1",
                    events=[StepCompleted(index=0, name="s", result=1, duration=0.0, attempt=1)],
                    expected_version=1,
                ),
            ]
        )
        rows = [row for page in memory.read_rows() for row in page]
    factory, old = earlier_recorder(postgres_url)
    try:
        for _p, stream, version, topic, state in rows:
            old.insert_events([StoredEvent(stream, version, topic, state)])
        with open_log(postgres_url, create=False) as log:
            assert [(r.position, r.stream, r.version) for r in log.read()] == [
                (1, "task-1", 1),
                (2, "task-2", 1),
                (3, "task-1", 2),
            ]
        with open_log(postgres_url) as log:  # created=True: the sequence is retired
            new = log.append(
                "task-2",
                [StepCompleted(index=0, name="s", result=2, duration=0.0, attempt=1)],
                expected_version=1,
            ).positions[0]
            assert new > 3
            assert [(r.stream, r.version) for r in log.read()] == [
                ("task-1", 1),
                ("task-2", 1),
                ("task-1", 2),
                ("task-2", 2),
            ]
            assert log.head() == new
            assert log.verify().ok
            with pytest.raises(PersistenceError, match="numbers its records by transaction"):
                old.insert_events([StoredEvent("task-3", 1, rows[0][3], rows[0][4])])
    finally:
        factory.close()


@pytest.mark.parametrize("runner", ["run", "run_async"])
def test_a_run_waiting_for_a_timer_rides_out_its_watch_losing_its_connection(
    postgres_url: str, runner: str
) -> None:
    """``run()`` waits in real time for a durable sleep, listening for the log's changes; the
    listening connection is terminated once (a server restart, a failover, an idle-connection
    reaper): the run watches again and goes on (it raised BackendError, and a process with
    no other worker stopped)."""
    schema = postgres_url.split("schema=")[1]
    terminated: list[int] = []

    def terminate_the_listener() -> None:
        with psycopg.connect(server(postgres_url), autocommit=True) as admin:
            for _ in range(2000):
                found = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%' AND "
                    "query LIKE %s",
                    (f"%{schema}%",),
                ).fetchall()
                if found:
                    for (pid,) in found:
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        terminated.append(pid)
                    return
                threading.Event().wait(0.005)  # a look at the server's sessions, not a timer

    with Engine.open(postgres_url, session="nightly") as engine:

        @engine.step()
        def before() -> int:
            return 1

        @engine.task()
        def nightly() -> int:
            value = before()
            engine.sleep(1.5)  # the run waits for this timer, listening
            return value + 1

        task_id = engine.submit(nightly)
        killer = threading.Thread(target=terminate_the_listener)
        killer.start()
        if runner == "run":
            engine.run()
        else:
            asyncio.run(engine.run_async())
        killer.join()
        assert terminated
        assert engine.result(task_id) == 2
