"""Schedules: a task submitted at the ticks of a cron expression, at most once per tick (ticks
found due together once), on the real engine and a real SQLite file, with an injected
clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward import Engine, UsageError
from onward.events import Context, Priority, ScheduleSet, ScheduleTicked, TaskSubmitted
from onward.projections import schedule_stream
from tests.conftest import FakeClock

#: A whole hour (ticks of */15 fall on its quarters).
HOUR = 1_700_000_000.0 - 1_700_000_000.0 % 3600


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def hour_clock() -> FakeClock:
    return FakeClock(HOUR)


def open_engine(db: str, clock: FakeClock, **options: object) -> Engine:
    return Engine.open(
        db, session="cron", clock=clock, sleep=clock.advance, healing=False, **options
    )


def register(engine: Engine, ran: list[tuple[float, str]], clock: FakeClock) -> None:
    @engine.task(name="report")
    def report(kind: str = "daily") -> str:
        ran.append((clock(), kind))
        return kind


def test_a_schedule_submits_its_task_at_each_tick_and_only_then(
    db: str, hour_clock: FakeClock
) -> None:
    ran: list[tuple[float, str]] = []
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        assert engine.schedule("report", cron="*/15 * * * *", args=["hourly"]) == "report"
        engine.run()
        assert ran == []  # the hour's first tick is the moment it was set: not after it
        hour_clock.advance(14 * 60)
        engine.run()
        assert ran == []
        hour_clock.advance(60)
        summary = engine.run()
        assert summary.scheduled == 1
        assert ran == [(HOUR + 900, "hourly")]
        engine.run()
        assert len(ran) == 1  # the same tick never runs twice
        hour_clock.advance(15 * 60)
        engine.run()
        assert [t for t, _ in ran] == [HOUR + 900, HOUR + 1800]
        (view,) = engine.schedules()
        assert (view.runs, view.skipped, view.last_tick) == (2, 0, HOUR + 1800)
        submitted = [
            r.event
            for r in engine.log.read()
            if isinstance(r.event, TaskSubmitted) and r.event.schedule == "report"
        ]
        assert len(submitted) == 2


def test_declaring_the_same_schedule_again_records_nothing_and_a_change_is_recorded(
    db: str, hour_clock: FakeClock
) -> None:
    ran: list[tuple[float, str]] = []
    for _ in range(3):  # three starts of the same code
        with open_engine(db, hour_clock) as engine:
            register(engine, ran, hour_clock)
            engine.schedule("report", cron="0 * * * *")
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        engine.schedule("report", cron="30 * * * *", kwargs={"kind": "half"})
        sets = [r.event for r in engine.log.read() if isinstance(r.event, ScheduleSet)]
        assert [s.cron for s in sets] == ["0 * * * *", "30 * * * *"]
        hour_clock.advance(30 * 60)
        engine.run()
        assert ran == [(HOUR + 1800, "half")]
        assert engine.unschedule("report", reason="no longer needed")
        assert not engine.unschedule("report")
        hour_clock.advance(3600)
        engine.run()
        assert len(ran) == 1
        assert engine.schedules()[0].removed


def test_ticks_missed_in_an_outage_run_once_or_are_skipped_as_declared(
    db: str, hour_clock: FakeClock
) -> None:
    ran: list[tuple[float, str]] = []
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        engine.schedule("report", cron="*/15 * * * *", name="catch-up", args=["once"])
        engine.schedule(
            "report", cron="*/15 * * * *", name="latest-only", args=["skip"], missed="skip"
        )
        hour_clock.advance(3 * 3600 + 5 * 60)  # no worker for three hours
        engine.run()
        assert ran == [(HOUR + 3 * 3600 + 300, "once")]  # one run for the twelve ticks
        views = {v.name: v for v in engine.schedules()}
        assert (views["catch-up"].runs, views["catch-up"].skipped) == (1, 11)
        assert (views["latest-only"].runs, views["latest-only"].skipped) == (0, 12)
        hour_clock.advance(10 * 60 + 30)  # the next tick, 30 s late: on time for both
        engine.run()
        assert sorted(kind for _, kind in ran[1:]) == ["once", "skip"]
        ticked = [r.event for r in engine.log.read() if isinstance(r.event, ScheduleTicked)]
        assert [t.task_id == "" for t in ticked].count(True) == 1  # the one skip, recorded


def test_ticks_missed_in_an_outage_still_run_once_when_the_schedule_comes_back_changed(
    db: str, hour_clock: FakeClock
) -> None:
    """Workers down for three hours come back declaring the same cron with other arguments:
    the twelve missed ticks ran nothing and were not even counted as missed. A new cron counts
    its ticks from its declaration."""
    ran: list[tuple[float, str]] = []
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        engine.schedule("report", cron="*/15 * * * *", name="catch-up", args=["v1"])
        engine.schedule("report", cron="*/15 * * * *", name="recron", args=["v1"])
        hour_clock.advance(3 * 3600 + 5 * 60)  # no worker for three hours
        engine.schedule("report", cron="*/15 * * * *", name="catch-up", args=["v2"])
        engine.schedule("report", cron="*/20 * * * *", name="recron", args=["v2"])
        engine.run()
        assert ran == [(HOUR + 3 * 3600 + 300, "v2")]  # one run for the twelve, as declared now
        views = {v.name: v for v in engine.schedules()}
        assert (views["catch-up"].runs, views["catch-up"].skipped) == (1, 11)
        assert (views["recron"].runs, views["recron"].skipped) == (0, 0)


@pytest.mark.parametrize("looker", ["the busy worker", "another worker"])
@pytest.mark.parametrize(
    ("start", "runs"),
    [(10 * 60, 1), (17 * 60, 0)],
    ids=["run-began-before-the-tick", "no-worker-at-the-tick"],
)
def test_a_skip_tick_due_while_a_worker_was_busy_runs_late(
    db: str, hour_clock: FakeClock, looker: str, start: int, runs: int
) -> None:
    """The "skip" policy leaves only the ticks that came due while no worker of the session
    ran: one due while a worker was busy with a ten-minute step (its next look at the
    schedules is the step's end, or another worker's look meanwhile) runs, late."""
    ran: list[tuple[float, str]] = []
    with (
        open_engine(db, hour_clock, lease=3600) as engine,
        open_engine(db, hour_clock) as other,
    ):
        register(engine, ran, hour_clock)
        register(other, ran, hour_clock)

        @engine.step()
        def work() -> None:
            hour_clock.advance(600)  # past the tick at HOUR + 15 minutes
            if looker == "another worker":
                other.run(max_runs=0)  # a task boundary of its own: due ticks fire

        @engine.task(name="long")
        def long() -> None:
            work()

        engine.schedule("report", cron="*/15 * * * *", args=["busy"], missed="skip")
        hour_clock.advance(start)
        engine.submit(long)
        engine.run()
        (view,) = engine.schedules()
        assert (view.runs, view.skipped, view.last_tick) == (runs, 1 - runs, HOUR + 900)
        assert [kind for _, kind in ran] == ["busy"] * runs


@pytest.mark.parametrize("missed", ["once", "skip"])
def test_ticks_due_while_a_worker_was_busy_run_once_for_the_latest(
    db: str, hour_clock: FakeClock, missed: str
) -> None:
    """A worker busy for an hour with a ``*/15`` schedule (four ticks come due) runs the task
    once when it is free, for the latest tick, late, and records the three before it as
    missed (ticks found due together are coalesced, whatever the policy: no burst of runs
    after a long task)."""
    ran: list[tuple[float, str]] = []
    with open_engine(db, hour_clock, lease=7200) as engine:
        register(engine, ran, hour_clock)

        @engine.step()
        def work() -> None:
            hour_clock.advance(3600 + 60)

        @engine.task(name="long")
        def long() -> None:
            work()

        engine.schedule("report", cron="*/15 * * * *", args=["busy"], missed=missed)
        engine.submit(long)
        engine.run()
        (ticked,) = [r.event for r in engine.log.read() if isinstance(r.event, ScheduleTicked)]
        assert (ticked.tick, ticked.missed, bool(ticked.task_id)) == (HOUR + 3600, 3, True)
        assert ran == [(HOUR + 3660, "busy")]


def test_a_task_declared_with_a_schedule_is_scheduled(db: str, hour_clock: FakeClock) -> None:
    ticks: list[float] = []
    with open_engine(db, hour_clock) as engine:

        @engine.task(name="sweep", schedule="0 * * * *")
        def sweep() -> None:
            ticks.append(hour_clock())

        hour_clock.advance(2 * 3600)
        engine.run()
        assert ticks == [HOUR + 7200]


def test_a_scheduled_task_renamed_with_an_alias_runs_once_per_tick(
    db: str, hour_clock: FakeClock
) -> None:
    """The schedule its old name declared is retired with the rename: the alias would still
    fire it beside the new one, two tasks a tick."""
    with open_engine(db, hour_clock) as engine:

        @engine.task(name="old.sweep", schedule="0 * * * *")
        def old_sweep() -> str:
            return "old"

        hour_clock.advance(3600)
        engine.run()
        assert [t.name for t in engine.tasks()] == ["old.sweep"]
    with open_engine(db, hour_clock) as engine:

        @engine.task(name="new.sweep", aliases=["old.sweep"], schedule="0 * * * *")
        def new_sweep() -> str:
            return "new"

        hour_clock.advance(3600)
        engine.run()
        ticked = engine.tasks()[1:]
        assert [(t.name, engine.result(t.task_id)) for t in ticked] == [("new.sweep", "new")]
        by_name = {s.name: s.removed for s in engine.schedules()}
        assert by_name == {"new.sweep": False, "old.sweep": True}


def test_bad_schedules_are_refused_with_nothing_recorded(db: str, hour_clock: FakeClock) -> None:
    with open_engine(db, hour_clock) as engine:
        register(engine, [], hour_clock)
        before = engine.log.head()
        with pytest.raises(UsageError, match="cron expression"):
            engine.schedule("report", cron="every day")
        with pytest.raises(UsageError, match="cron expression"):
            engine.schedule("report", cron="61 * * * *")
        with pytest.raises(UsageError, match="never fires"):  # day 1 is never a 2nd Monday
            engine.schedule("report", cron="0 0 */40 * MON#2")
        with pytest.raises(UsageError, match="missed must be one of once, skip"):
            engine.schedule("report", cron="* * * * *", missed="all")
        with pytest.raises(UsageError, match="report"):
            engine.schedule("report", cron="* * * * *", args=[1, 2, 3])
        with pytest.raises(UsageError, match="non-empty"):
            engine.schedule("report", cron="* * * * *", name="")
        with pytest.raises(UsageError, match=r"not registered|no task"):
            engine.schedule("nothing", cron="* * * * *")
        assert engine.log.head() == before


def test_a_worker_without_the_task_leaves_its_ticks_to_one_that_has_it(
    db: str, hour_clock: FakeClock
) -> None:
    ran: list[tuple[float, str]] = []
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        engine.schedule("report", cron="*/15 * * * *")
    with open_engine(db, hour_clock) as other:  # other code: no "report" here
        hour_clock.advance(15 * 60)
        assert other.run().scheduled == 0
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        engine.run()
        assert [t for t, _ in ran] == [HOUR + 900]


def _look(engine: Engine, together: threading.Barrier) -> None:
    together.wait()
    engine.run(max_runs=0)  # a task boundary: due ticks fire


def test_workers_of_one_file_closed_leave_no_connection_open(tmp_path: Path) -> None:
    """Three workers that looked for due ticks together (each appending and reading the head
    record others moved), then closed: their connections are closed, so SQLite removes the
    -wal and -shm files at once. A writer's cursor left holding its last statement kept its
    connection open until a garbage collection, and a next log on a reused name met the
    old one's records."""
    clock = FakeClock(HOUR)
    engines = [open_engine(f"sqlite:///{tmp_path / 'work.db'}", clock) for _ in range(3)]
    for engine in engines:
        register(engine, [], clock)
        engine.schedule("report", cron="*/5 * * * *")
    for seconds, who in [(600, (0, 1, 2)), (300, (1,)), (900, (0, 2))]:
        clock.advance(seconds)
        together = threading.Barrier(len(who))
        threads = [threading.Thread(target=_look, args=(engines[i], together)) for i in who]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for engine in engines:
        engine.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work.db"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    moves=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1300),
            st.sets(st.integers(min_value=0, max_value=2), min_size=1),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_several_workers_fire_each_tick_exactly_once(
    tmp_path: Path, moves: list[tuple[int, set[int]]]
) -> None:
    """Three workers of one session, each with its own connection to one SQLite file, look
    for due ticks at the same moment (threads released together) while time moves on by any
    steps: each tick submits exactly one task, and no tick is lost (with the "once" policy, a
    late look covers the ticks it missed)."""
    clock = FakeClock(HOUR)
    url = f"sqlite:///{tmp_path / f'{len(list(tmp_path.iterdir()))}.db'}"
    engines = [open_engine(url, clock) for _ in range(3)]
    try:
        for engine in engines:
            register(engine, [], clock)
            engine.schedule("report", cron="*/5 * * * *")
        for seconds, who in moves:
            clock.advance(seconds)
            together = threading.Barrier(len(who))
            threads = [threading.Thread(target=_look, args=(engines[i], together)) for i in who]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        engines[0].run(max_runs=0)
        records = list(engines[0].log.read())
        ticked = [r.event for r in records if isinstance(r.event, ScheduleTicked)]
        submitted = {
            r.stream.removeprefix("task-") for r in records if isinstance(r.event, TaskSubmitted)
        }
        ticks = [t.tick for t in ticked]
        assert len(set(ticks)) == len(ticks)  # no tick handled twice
        assert {t.task_id for t in ticked} == submitted  # one task per handled tick
        due = int((clock() - HOUR) // 300)
        assert sum(t.missed + 1 for t in ticked) == due  # every due tick covered, once
    finally:
        for engine in engines:
            engine.close()


def open_session(db: str, clock: FakeClock, session: str) -> Engine:
    return Engine.open(db, session=session, clock=clock, sleep=clock.advance, healing=False)


def schedule_sets(engine: Engine) -> list[tuple[str, str, str]]:
    """Every ``ScheduleSet`` of the log: (stream, session, schedule)."""
    return [
        (r.stream, r.meta.session, r.event.name)
        for r in engine.log.read()
        if isinstance(r.event, ScheduleSet)
    ]


def test_a_schedule_stream_keeps_plain_names_and_encodes_colons_and_percents() -> None:
    assert schedule_stream("s", "nightly") == "schedule-s:nightly"  # as earlier onwards wrote
    assert schedule_stream("a", "b:c") == "schedule-a:b%3Ac"
    assert schedule_stream("a:b", "c") == "schedule-a%3Ab:c"
    assert schedule_stream("a", "b%3Ac") == "schedule-a:b%253Ac"


@given(
    session=st.text(":%3Aab", min_size=1),
    name=st.text(":%3Aab", min_size=1),
    cut=st.integers(min_value=0),
)
def test_two_schedules_never_share_a_stream(session: str, name: str, cut: int) -> None:
    """Not two (session, name) pairs that join alike (cut at another ``:``), nor a pair and
    one with a part's ``:`` already written as ``%3A``."""
    joined = f"{session}:{name}"
    colons = [i for i, c in enumerate(joined) if c == ":"]
    at = colons[cut % len(colons)]
    others = {
        (joined[:at], joined[at + 1 :]),
        (session.replace(":", "%3A"), name),
        (session, name.replace(":", "%3A")),
    } - {(session, name)}
    for other in others:
        assert schedule_stream(*other) != schedule_stream(session, name), other


def test_two_sessions_whose_names_join_alike_keep_their_own_schedules(
    db: str, hour_clock: FakeClock
) -> None:
    """Session "a" with schedule "b:c" and session "a:b" with schedule "c", declared alike:
    each is recorded on a stream of its own and ticks for its own session."""
    ran: dict[str, list[tuple[float, str]]] = {"a": [], "a:b": []}
    engines = {session: open_session(db, hour_clock, session) for session in ran}
    try:
        for (session, engine), name in zip(engines.items(), ("b:c", "c"), strict=True):
            register(engine, ran[session], hour_clock)
            assert engine.schedule("report", cron="*/15 * * * *", name=name) == name
        assert schedule_sets(engines["a"]) == [
            ("schedule-a:b%3Ac", "a", "b:c"),
            ("schedule-a%3Ab:c", "a:b", "c"),
        ]
        hour_clock.advance(15 * 60)
        for engine in engines.values():
            assert engine.run().scheduled == 1
        assert ran == {"a": [(HOUR + 900, "daily")], "a:b": [(HOUR + 900, "daily")]}
        listed = {s: [(v.name, v.runs) for v in e.schedules()] for s, e in engines.items()}
        assert listed == {"a": [("b:c", 1)], "a:b": [("c", 1)]}
    finally:
        for engine in engines.values():
            engine.close()


def recorded_earlier(name: str, cron: str) -> ScheduleSet:
    """A schedule of task "report" as an earlier onward recorded it."""
    return ScheduleSet(
        name=name,
        task="report",
        cron=cron,
        args=[],
        kwargs={},
        priority=Priority.NORMAL,
        missed="once",
    )


def test_a_recorded_cron_that_never_fires_holds_nothing_back(
    db: str, hour_clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cron no date matches, recorded before such crons were refused, never fires: the
    session's other work runs, and ``onward schedules`` lists it with no next tick."""
    from onward.cli.main import main

    ran: list[tuple[float, str]] = []
    with open_engine(db, hour_clock) as engine:
        register(engine, ran, hour_clock)
        engine.log.append(
            schedule_stream(engine.session, "never"),
            [recorded_earlier("never", "0 0 */40 * MON#2")],
            expected_version=0,
            context=Context(session=engine.session),
        )
        task_id = engine.submit("report", "now")
        hour_clock.advance(3600)
        assert engine.run().scheduled == 0
        assert engine.result(task_id) == "now"
    assert main(["schedules", "--db", db.removeprefix("sqlite:///")]) == 0
    assert "never" in capsys.readouterr().out


def test_a_stream_an_earlier_onward_shared_between_two_sessions_serves_both(
    db: str, hour_clock: FakeClock
) -> None:
    """An earlier onward joined the names as given: session "a"'s schedule "b:c" and session
    "a:b"'s "c" were both recorded on ``schedule-a:b:c``. Each keeps its schedule there, its
    ticks folded apart by session; declaring it again alike records nothing."""
    legacy = "schedule-a:b:c"
    ran: dict[str, list[tuple[float, str]]] = {"a": [], "a:b": []}
    engines = {session: open_session(db, hour_clock, session) for session in ran}
    try:
        for version, (session, name) in enumerate((("a", "b:c"), ("a:b", "c"))):
            earlier = recorded_earlier(name, "*/15 * * * *")
            engines[session].log.append(
                legacy, [earlier], expected_version=version, context=Context(session=session)
            )
        for (session, engine), name in zip(engines.items(), ("b:c", "c"), strict=True):
            register(engine, ran[session], hour_clock)
            engine.schedule("report", cron="*/15 * * * *", name=name)
        assert [stream for stream, _, _ in schedule_sets(engines["a"])] == [legacy, legacy]
        for _ in range(2):  # two quarters
            hour_clock.advance(15 * 60)
            for engine in engines.values():
                assert engine.run().scheduled == 1
        assert ran["a"] == ran["a:b"] == [(HOUR + 900, "daily"), (HOUR + 1800, "daily")]
        for session, name in (("a", "b:c"), ("a:b", "c")):
            (view,) = engines[session].schedules()
            assert (view.name, view.stream, view.runs) == (name, legacy, 2)
        assert engines["a"].unschedule("b:c")
        hour_clock.advance(15 * 60)
        assert [e.run().scheduled for e in engines.values()] == [0, 1]
    finally:
        for engine in engines.values():
            engine.close()


def test_a_new_name_encoded_onto_an_earlier_schedules_stream_is_refused(
    db: str, hour_clock: FakeClock
) -> None:
    """An earlier onward recorded schedule "b%3Ac" on ``schedule-s:b%3Ac``, the stream that
    "b:c" is now encoded to: the session cannot declare "b:c" there too."""
    with open_session(db, hour_clock, "s") as engine:
        register(engine, [], hour_clock)
        earlier = recorded_earlier("b%3Ac", "0 * * * *")
        engine.log.append(
            "schedule-s:b%3Ac", [earlier], expected_version=0, context=Context(session="s")
        )
        before = engine.log.head()
        with pytest.raises(UsageError, match=r"schedule-s:b%3Ac.*'b%3Ac'.*earlier onward"):
            engine.schedule("report", cron="0 * * * *", name="b:c")
        assert engine.log.head() == before
        assert engine.schedule("report", cron="0 * * * *", name="b%3Ac") == "b%3Ac"
        assert engine.log.head() == before  # the earlier one, declared alike: nothing new


def test_a_new_schedule_on_a_stream_an_earlier_onward_gave_another_session_is_recorded(
    db: str, hour_clock: FakeClock
) -> None:
    """An earlier onward recorded session "x%3Ay"'s schedule "z" on ``schedule-x%3Ay:z``, the
    stream session "x:y"'s "z" is now encoded to: both are recorded there, and both tick."""
    ran: dict[str, list[tuple[float, str]]] = {"x%3Ay": [], "x:y": []}
    engines = {session: open_session(db, hour_clock, session) for session in ran}
    try:
        earlier = recorded_earlier("z", "*/15 * * * *")
        engines["x%3Ay"].log.append(
            "schedule-x%3Ay:z", [earlier], expected_version=0, context=Context(session="x%3Ay")
        )
        for session, engine in engines.items():
            register(engine, ran[session], hour_clock)
            engine.schedule("report", cron="*/15 * * * *", name="z")
        assert schedule_sets(engines["x:y"]) == [
            ("schedule-x%3Ay:z", "x%3Ay", "z"),
            ("schedule-x%3Ay:z", "x:y", "z"),
        ]
        hour_clock.advance(15 * 60)
        assert [e.run().scheduled for e in engines.values()] == [1, 1]
        assert ran["x%3Ay"] == ran["x:y"] == [(HOUR + 900, "daily")]
    finally:
        for engine in engines.values():
            engine.close()
