"""The codec: every event round-trips, unknown tags are tolerated, old shapes are upcast.

The upcasting example is the worked one of the compatibility rules: an old shape of
``TaskSubmitted`` (tag ``TaskSubmitted.v0``) is stored in ``tests/fixtures/`` as it was written,
sealed into a real SQLite log, and read back as the current ``TaskSubmitted`` once an upcaster is
registered; without one it reads as an :class:`onward.events.UnknownEvent`.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward.events import (
    Codec,
    CorruptRecord,
    Event,
    LogDamaged,
    Meta,
    Priority,
    Redactor,
    StepCompleted,
    TaskProgressed,
    TaskSubmitted,
    UnencodableValue,
    UnknownEvent,
    UsageError,
    all_event_types,
    open_log,
)
from onward.events import log as log_module
from onward.events.codec import checksum_of, prev_of
from onward.events.log import new_event_id, new_event_ids
from onward.projections import CatchUp
from tests.conftest import FakeClock
from tests.strategies import EVENT_STRATEGIES, any_event

FIXTURES = Path(__file__).parent.parent / "fixtures"

#: The event types onward itself defines (tests define more, which must not leak in here).
STANDARD = [t for t in all_event_types() if t.__module__.startswith("onward.events.")]

#: The log redacts secrets; random text could look like one, so round-trips use no patterns.
NO_REDACTION = Redactor(patterns=())


class ParcelDispatched(Event, frozen=True, kw_only=True):
    """An event type that only a newer onward knows (defined here, unknown to STANDARD)."""

    carrier: str
    parcels: list[int]
    insured: bool = False


def tag_of(cls: type[Event]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def seal(
    codec: Codec,
    stream: str,
    version: int,
    topic: str,
    event_json: bytes,
    *,
    prev: str = "",
    **meta: Any,
) -> bytes:
    """A stored state built exactly as ``EventLog._encode`` builds one."""
    envelope = Meta(
        checksum=Codec.placeholder(),
        prev=prev,
        event_id=meta.pop("event_id", "ab" * 16),
        time=meta.pop("time", 1_700_000_000.5),
        **meta,
    )
    return Codec.seal(stream, version, topic, codec.encode_meta(envelope), event_json)


def insert_row(db: Path, stream: str, version: int, topic: str, state: bytes | None) -> int:
    """Insert one record with a raw sqlite3 connection; return its position."""
    with closing(sqlite3.connect(db)) as connection, connection:
        cursor = connection.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state)"
            " VALUES (?, ?, ?, ?)",
            (stream, version, topic, state),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid


# -- round trips ------------------------------------------------------------------------------


def test_the_codec_knows_every_event_type() -> None:
    assert Codec().tags >= {tag_of(t) for t in STANDARD}
    assert {tag_of(t) for t in STANDARD} == {tag_of(t) for t in EVENT_STRATEGIES}
    assert Codec(types=STANDARD).tags == {tag_of(t) for t in STANDARD}


CODEC = Codec(types=STANDARD)


@settings(max_examples=300, deadline=None)
@given(
    event=any_event(),
    stream=st.text(min_size=1, max_size=40),
    version=st.integers(1, 2**53),
    position=st.integers(1, 2**53),
    prev=st.sampled_from(["", "0123456789abcdef" * 2]),
)
def test_every_event_round_trips_through_the_codec(
    event: Event, stream: str, version: int, position: int, prev: str
) -> None:
    topic = tag_of(type(event))
    state = seal(CODEC, stream, version, topic, CODEC.encode_event(event), prev=prev)
    assert Codec.check(stream, version, topic, state) is None
    assert prev_of(state) == prev
    recorded = CODEC.decode(stream, version, position, topic, state)
    assert type(recorded.event) is type(event)
    assert recorded.event == event
    assert (recorded.stream, recorded.version, recorded.position) == (stream, version, position)
    assert recorded.meta.checksum == checksum_of(state)
    assert recorded.meta.prev == prev
    # Encoding what was decoded gives the same bytes: nothing is lost or reordered.
    assert CODEC.encode_event(recorded.event) == CODEC.encode_event(event)


@pytest.mark.parametrize("cls", list(EVENT_STRATEGIES), ids=lambda cls: cls.__name__)
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_each_event_type_round_trips_through_a_memory_log(
    cls: type[Event], data: st.DataObject, clock: FakeClock
) -> None:
    events = data.draw(st.lists(EVENT_STRATEGIES[cls], min_size=1, max_size=3))
    with open_log("memory://", clock=clock, redactor=NO_REDACTION) as log:
        result = log.append("stream-1", events, expected_version=0)
        back = log.read_stream("stream-1")
        assert [r.event for r in back] == events
        assert [type(r.event) for r in back] == [cls] * len(events)
        assert [r.meta.event_id for r in back] == result.event_ids
        assert [r.event for r in log.read()] == events
        assert log.verify().ok


@settings(max_examples=40, deadline=None)
@given(events=st.lists(any_event(), min_size=1, max_size=20))
def test_mixed_events_round_trip_through_a_memory_log(events: list[Event]) -> None:
    with open_log("memory://", redactor=NO_REDACTION) as log:
        for i, event in enumerate(events):
            log.append(f"stream-{i % 3}", [event], expected_version=None)
        assert [r.event for r in log.read()] == events


@settings(max_examples=10, deadline=None)
@given(events=st.lists(any_event(), min_size=1, max_size=40))
def test_events_round_trip_through_an_sqlite_file(events: list[Event]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{Path(directory) / 'log.db'}"
        with open_log(url, redactor=NO_REDACTION) as log:
            for i, event in enumerate(events):
                log.append(f"stream-{i % 7}", [event], expected_version=None)
        with open_log(url, redactor=NO_REDACTION) as log:
            assert [r.event for r in log.read()] == events
            assert log.verify().ok


# -- unknown tags -----------------------------------------------------------------------------


def test_unknown_tag_decodes_as_unknown_event(tmp_path: Path, clock: FakeClock) -> None:
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    newer = Codec(types=[*STANDARD, ParcelDispatched])
    parcel = ParcelDispatched(carrier="ups", parcels=[3, 1, 4], insured=True)
    with open_log(url, clock=clock, codec=newer) as log:
        log.append("order-9", [TaskProgressed(fraction=0.5), parcel], expected_version=0)
        assert log.read_stream("order-9")[1].event == parcel

    older = Codec(types=STANDARD)
    assert "ParcelDispatched" not in older.tags
    with open_log(url, codec=older) as log:
        first, second = log.read_stream("order-9")
        assert first.event == TaskProgressed(fraction=0.5)
        assert second.event == UnknownEvent(
            type="ParcelDispatched", data={"carrier": "ups", "parcels": [3, 1, 4], "insured": True}
        )
        assert [r.event for r in log.read()] == [first.event, second.event]
        assert log.verify().ok
        # The older log can still append after the unknown event: the chain stays whole.
        log.append("order-9", [TaskProgressed(fraction=1.0)], expected_version=2)
        third = log.read_stream("order-9", after=2)[0]
        assert third.meta.prev == second.meta.checksum
        assert log.verify().ok


def test_unknown_tag_in_a_memory_log() -> None:
    newer = Codec(types=[*STANDARD, ParcelDispatched])
    with open_log("memory://", codec=newer) as log:
        log.append("order-1", [ParcelDispatched(carrier="dhl", parcels=[])], expected_version=0)
        log.codec = Codec(types=STANDARD)
        (recorded,) = log.read_stream("order-1")
        assert recorded.event == UnknownEvent(
            type="ParcelDispatched", data={"carrier": "dhl", "parcels": [], "insured": False}
        )
        assert log.verify().ok


# -- upcasting an old shape -------------------------------------------------------------------

V0_PRIORITIES = {p.rank: p for p in Priority}


def upcast_v0(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """TaskSubmitted.v0 -> TaskSubmitted: ``function`` became ``name``, priority a string."""
    fields = {k: v for k, v in data.items() if k not in ("type", "function", "priority")}
    fields["name"] = data["function"]
    fields["priority"] = V0_PRIORITIES[data["priority"]].value
    return "TaskSubmitted", fields


def load_fixture() -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads((FIXTURES / "task_submitted_v0.json").read_text())
    return fixture


@pytest.fixture
def legacy_db(tmp_path: Path, clock: FakeClock) -> Path:
    """A log created by open_log, holding the old record (sealed) and a newer event after it."""
    fixture = load_fixture()
    db = tmp_path / "legacy.db"
    with open_log(f"sqlite:///{db}", clock=clock):
        pass
    state = seal(
        Codec(),
        fixture["stream"],
        fixture["version"],
        fixture["topic"],
        msgspec.json.encode(fixture["event"]),
        **fixture["meta"],
    )
    assert insert_row(db, fixture["stream"], fixture["version"], fixture["topic"], state) == 1
    with open_log(f"sqlite:///{db}", clock=clock) as log:
        log.append(
            fixture["stream"], [TaskProgressed(fraction=0.25)], expected_version=fixture["version"]
        )
    return db


def test_old_shape_reads_as_the_current_type_through_an_upcaster(legacy_db: Path) -> None:
    fixture = load_fixture()
    with open_log(f"sqlite:///{legacy_db}") as log:
        log.codec.register_upcaster("TaskSubmitted.v0", upcast_v0)
        first, second = log.read_stream(fixture["stream"])
        assert first.event == msgspec.convert(
            {"type": "TaskSubmitted", **fixture["expected"]}, TaskSubmitted
        )
        assert isinstance(first.event, TaskSubmitted)
        assert first.event.name == "crawl"
        assert first.event.priority is Priority.HIGH
        assert first.meta.session == fixture["meta"]["session"]
        assert first.meta.event_id == fixture["meta"]["event_id"]
        assert (first.stream, first.version, first.position) == (fixture["stream"], 1, 1)
        assert second.event == TaskProgressed(fraction=0.25)
        assert second.meta.prev == first.meta.checksum
        assert [r.event for r in log.read()] == [first.event, second.event]
        assert log.verify().ok


def test_old_shape_without_an_upcaster_reads_as_unknown_event(legacy_db: Path) -> None:
    fixture = load_fixture()
    with open_log(f"sqlite:///{legacy_db}") as log:
        first, second = log.read_stream(fixture["stream"])
        expected = {k: v for k, v in fixture["event"].items() if k != "type"}
        assert first.event == UnknownEvent(type="TaskSubmitted.v0", data=expected)
        assert isinstance(second.event, TaskProgressed)
        assert log.verify().ok


def test_upcasters_chain(legacy_db: Path) -> None:
    """v0 -> v1 (priority became a string) -> current (function renamed to name)."""

    def v0_to_v1(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "TaskSubmitted.v1", {**data, "priority": V0_PRIORITIES[data["priority"]].value}

    def v1_to_current(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        fields = {k: v for k, v in data.items() if k != "function"}
        return "TaskSubmitted", {**fields, "name": data["function"]}

    with open_log(f"sqlite:///{legacy_db}") as log:
        log.codec.register_upcaster("TaskSubmitted.v1", v1_to_current)
        log.codec.register_upcaster("TaskSubmitted.v0", v0_to_v1)
        event = log.read_stream(load_fixture()["stream"])[0].event
        assert isinstance(event, TaskSubmitted)
        assert (event.name, event.priority) == ("crawl", Priority.HIGH)


def test_upcaster_giving_fields_that_do_not_fit_is_a_corrupt_record(legacy_db: Path) -> None:
    def wrong(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "TaskSubmitted", {"name": 42}

    with open_log(f"sqlite:///{legacy_db}") as log:
        log.codec.register_upcaster("TaskSubmitted.v0", wrong)
        with pytest.raises(CorruptRecord) as info:
            log.read_stream("task-legacy-1")
        assert (info.value.stream, info.value.version, info.value.position) == (
            "task-legacy-1",
            1,
            1,
        )


def _reads_only_v1(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """An upcaster written for a later old shape than the fixture's (``function`` had become
    ``name`` by then): it fails on the fixture's record."""
    return "TaskSubmitted", {**data, "name": data["name"], "type": "TaskSubmitted"}


def _not_a_pair(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return data  # type: ignore[return-value]  # a mistake: the tag is missing


@pytest.mark.parametrize("upcaster", [_reads_only_v1, _not_a_pair])
def test_an_upcaster_that_fails_on_a_record_makes_only_its_stream_damaged(
    legacy_db: Path, clock: FakeClock, upcaster: Any
) -> None:
    """An upcaster meets an old record it was not written for: the record does not decode (a
    typed error naming where), and the rest of the log still opens and folds."""
    with open_log(f"sqlite:///{legacy_db}", clock=clock) as log:
        log.append("task-other", [TaskSubmitted(name="index")], expected_version=0)
        log.codec.register_upcaster("TaskSubmitted.v0", upcaster)
        with pytest.raises(CorruptRecord, match=r"TaskSubmitted\.v0") as info:
            log.read_stream("task-legacy-1")
        assert (info.value.stream, info.value.version, info.value.position) == (
            "task-legacy-1",
            1,
            1,
        )
        assert upcaster.__name__ in str(info.value)
        projections = CatchUp(log, checkpoint_every=0).open()
        assert set(projections.damaged) == {"task-legacy-1"}
        assert projections.tasks.tasks["other"].state == "queued"
        assert projections.position == log.head()


@pytest.mark.parametrize("error", [MemoryError, KeyboardInterrupt])
def test_an_upcaster_that_runs_short_of_memory_or_is_interrupted_damages_nothing(
    legacy_db: Path, clock: FakeClock, error: type[BaseException]
) -> None:
    """What stops an upcaster from outside (the process short of memory, an interrupt) is no
    fault of the record: it goes up as it is, and no fold marks the stream damaged."""

    def stopped(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        raise error

    with open_log(f"sqlite:///{legacy_db}", clock=clock) as log:
        log.codec.register_upcaster("TaskSubmitted.v0", stopped)
        with pytest.raises(error):
            log.read_stream("task-legacy-1")
        with pytest.raises(error):
            CatchUp(log, checkpoint_every=0).open()


def test_a_checkpoint_that_holds_a_record_an_upcaster_failed_on_is_left_once_it_reads(
    legacy_db: Path, clock: FakeClock
) -> None:
    """A checkpoint saved while an upcaster failed on a record holds its stream as damaged.
    The same code takes it again; once the upcaster is fixed, the record reads, and the
    checkpoint is left for a replay that folds the task as the fixed code reads it."""
    with open_log(f"sqlite:///{legacy_db}", clock=clock) as log:
        log.codec.register_upcaster("TaskSubmitted.v0", _reads_only_v1)
        host = CatchUp(log, checkpoint_every=0)
        assert set(host.open(use_checkpoint=False).damaged) == {"task-legacy-1"}
        host.checkpoint()
        again = CatchUp(log, checkpoint_every=0)
        assert again.open().snapshot() == host.projections.snapshot()
        assert again.loaded_checkpoint == log.head()
    with open_log(f"sqlite:///{legacy_db}", clock=clock) as log:
        log.codec.register_upcaster("TaskSubmitted.v0", upcast_v0)
        fixed = CatchUp(log, checkpoint_every=0)
        projections = fixed.open()
        assert fixed.loaded_checkpoint is None
        assert projections.tasks.tasks["legacy-1"].name == "crawl"  # its submission folded
        assert projections.snapshot() == CatchUp(log).open(use_checkpoint=False).snapshot()


def test_a_checkpoint_folded_through_an_upcaster_is_left_by_an_onward_without_it(
    legacy_db: Path, clock: FakeClock
) -> None:
    """An onward read an old record through an upcaster and saved a checkpoint; one without
    that upcaster (the command line, which has none of the application's) reads the record
    as unknown: it folds the log again rather than take the task as the other read it."""
    url = f"sqlite:///{legacy_db}"
    with open_log(url, clock=clock) as log:
        log.codec.register_upcaster("TaskSubmitted.v0", upcast_v0)
        host = CatchUp(log, checkpoint_every=0)
        assert host.open(use_checkpoint=False).tasks.tasks["legacy-1"].name == "crawl"
        host.checkpoint()
        again = CatchUp(log, checkpoint_every=0)
        assert again.open().snapshot() == host.projections.snapshot()
        assert again.loaded_checkpoint == log.head()
    with open_log(url, clock=clock) as log:
        without = CatchUp(log, checkpoint_every=0)
        projections = without.open()
        assert without.loaded_checkpoint is None
        assert projections.tasks.tasks["legacy-1"].unknown_events == 1
        assert projections.snapshot() == CatchUp(log).open(use_checkpoint=False).snapshot()


def test_a_checkpoint_of_an_onward_that_registers_its_upcaster_after_opening_is_taken(
    legacy_db: Path, clock: FakeClock
) -> None:
    """An application that registers its upcaster only after it opened (its fold read the old
    record as unknown, a read afterwards through the upcaster) saves a checkpoint that it
    takes again the next time it opens the same way: not a replay at every open."""
    url = f"sqlite:///{legacy_db}"
    for _ in range(2):
        with open_log(url, clock=clock) as log:
            host = CatchUp(log, checkpoint_every=0)
            host.open()
            log.codec.register_upcaster("TaskSubmitted.v0", upcast_v0)
            assert log.read_stream("task-legacy-1")[0].event.name == "crawl"  # type: ignore[union-attr]
            host.catch_up()
            host.checkpoint()
    with open_log(url, clock=clock) as log:
        again = CatchUp(log, checkpoint_every=0)
        assert again.open().tasks.tasks["legacy-1"].unknown_events == 1
        assert again.loaded_checkpoint == log.head()


# -- corrupt records --------------------------------------------------------------------------


@pytest.fixture
def damaged_db(tmp_path: Path, clock: FakeClock) -> Path:
    db = tmp_path / "damaged.db"
    with open_log(f"sqlite:///{db}", clock=clock) as log:
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        log.append("task-2", [TaskSubmitted(name="index")], expected_version=0)
    return db


@pytest.mark.parametrize(
    ("state", "topic"),
    [
        (b"this is not JSON", "TaskProgressed"),
        (None, "TaskProgressed"),
        (b"", "TaskProgressed"),
        (b"\xff\xfe\x00garbage", "TaskProgressed"),
        (b'{"meta": {"checksum": "x"}, "event": {}}', "TaskProgressed"),
        (b'{"event": {"type": "TaskProgressed", "fraction": 0.5}}', "TaskProgressed"),
        (
            b'{"meta":{"event_id":"a","time":1.0},"event":{"type":"TaskProgressed"}}',
            "TaskProgressed",
        ),
        (
            b'{"meta":{"event_id":"a","time":1.0},"event":{"type":"TaskSubmitted","name":7}}',
            "TaskSubmitted",
        ),
        (b'{"meta":{"event_id":"a","time":1.0},"event":[1, 2]}', "SomethingNewer"),
    ],
    ids=[
        "not-json",
        "null",
        "empty",
        "binary",
        "bad-meta",
        "no-meta",
        "missing-field",
        "wrong-field-type",
        "unknown-tag-not-an-object",
    ],
)
def test_a_record_that_does_not_decode_is_a_corrupt_record(
    damaged_db: Path, state: bytes | None, topic: str
) -> None:
    position = insert_row(damaged_db, "task-1", 2, topic, state)
    assert position == 3
    with open_log(f"sqlite:///{damaged_db}") as log:
        with pytest.raises(CorruptRecord) as info:
            log.read_stream("task-1")
        error = info.value
        assert isinstance(error, LogDamaged)
        assert (error.stream, error.version, error.position) == ("task-1", 2, 3)
        assert "'task-1'" in str(error)
        assert "version 2" in str(error)
        assert "position 3" in str(error)

        with pytest.raises(CorruptRecord) as info:
            list(log.read())
        assert (info.value.stream, info.value.version, info.value.position) == ("task-1", 2, 3)

        # The records before it still read, and the other streams are untouched.
        assert [r.event for r in log.read(upto=2)] == [
            TaskSubmitted(name="crawl"),
            TaskSubmitted(name="index"),
        ]
        assert len(log.read_stream("task-2")) == 1
        report = log.verify()
        assert not report.ok
        problem, foreign = report.problems
        assert (problem.stream, problem.version, problem.position) == ("task-1", 2, 3)
        # The row was written behind onward's back: the head record ends before it.
        assert (foreign.kind, foreign.position) == ("head", 3)
        assert not report.torn_tail


def test_decode_names_the_record() -> None:
    with pytest.raises(CorruptRecord) as info:
        CODEC.decode("task-7", 4, 99, "TaskProgressed", b"{not json")
    assert (info.value.stream, info.value.version, info.value.position) == ("task-7", 4, 99)


class _Note(Event, frozen=True, kw_only=True):
    """A user's own event type: typed fields beside values of any type, nested."""

    title: str
    tags: list[str] = msgspec.field(default_factory=list)
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    maybe: Any | None = None
    pairs: tuple[Any, ...] = ()


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
@pytest.mark.parametrize(
    "bad",
    [
        TaskSubmitted(name=123),  # type: ignore[arg-type]
        TaskSubmitted(name="crawl", args="not a list"),  # type: ignore[arg-type]
        StepCompleted(index="3", name="fetch"),  # type: ignore[arg-type]
        StepCompleted(index=True, name="fetch"),
        _Note(title="t", tags=[1, 2]),  # type: ignore[list-item]
        _Note(title=None),  # type: ignore[arg-type]
    ],
    ids=["name-int", "args-str", "index-str", "index-bool", "nested-list", "none"],
)
def test_an_event_with_a_field_of_another_type_is_refused_and_the_log_reads_on(
    url: str, bad: Event, tmp_path: Path
) -> None:
    """msgspec checks types when it decodes, not when an event is built: such an event was
    written, and then every read of the log failed at its record (CorruptRecord)."""
    url = f"sqlite:///{tmp_path / 'log.db'}" if url == "sqlite" else url
    with open_log(url) as log:
        log.append("task-1", [TaskSubmitted(name="crawl")], expected_version=0)
        with pytest.raises(UnencodableValue, match="would not read back as itself"):
            log.append("task-1", [StepCompleted(index=0, name="fetch"), bad], expected_version=1)
        log.append(
            "task-1",
            [_Note(title="ok", extra={"any": [1, "x", None]}, maybe=3)],
            expected_version=1,
        )
        assert [type(r.event).__name__ for r in log.read()] == ["TaskSubmitted", "_Note"]
        assert log.verify().ok


def test_values_of_any_type_in_an_event_are_not_checked_against_a_shape() -> None:
    log_values = [1, "x", None, [1, [2]], {"a": {"b": 1.5}}, True]
    with open_log("memory://") as log:
        for version, value in enumerate(log_values):
            log.append(
                "task-1",
                [_Note(title="v", extra={"v": value}, maybe=value, pairs=(value, value))],
                expected_version=version,
            )
        assert [r.event.maybe for r in log.read()] == log_values  # type: ignore[union-attr]


def test_an_event_type_that_every_read_would_fail_on_is_refused_with_why() -> None:
    """A type of yours named as one of onward's took its place in the codec, and with it
    every log failed to open (a bare TypeError about a union's tags); one stored as an array
    made every codec fail to build."""
    import gc

    def define(**config: Any) -> type[Event]:
        class StepCompleted(Event, frozen=True, kw_only=True, **config):  # type: ignore[misc]
            note: str = ""

        return StepCompleted

    mine = define(tag="myapp.StepCompleted")
    assert Codec(types=[*all_event_types()]).types["myapp.StepCompleted"] is mine
    clash = define()
    with pytest.raises(UsageError, match="takes the tag 'StepCompleted' of onward's"):
        Codec()
    with pytest.raises(UsageError, match="takes the tag 'StepCompleted' of onward's"):
        Codec(types=[t for t in all_event_types() if t is not clash]).register(clash)
    del clash
    gc.collect()
    arrays = define(tag="myapp.Array", array_like=True)
    with pytest.raises(UsageError, match="array_like=True is not supported"):
        Codec()
    del arrays, mine
    gc.collect()
    assert Codec().types["StepCompleted"] is StepCompleted


class _Keyed(Event, frozen=True, kw_only=True):
    """Values of any type where msgspec builds them: a dict's keys, a set's members."""

    by_key: dict[Any, Any] = msgspec.field(default_factory=dict)
    maybe: dict[Any, int] | None = None
    members: frozenset[Any] = frozenset()
    nested: list[dict[str, Any]] = msgspec.field(default_factory=list)


class _Pair(Event, frozen=True, kw_only=True):
    """An event that checks its own values."""

    items: list[int] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.items) > 2:
            raise ValueError("at most 2 items")


def test_the_shape_check_takes_what_the_class_takes_and_refuses_what_it_refuses() -> None:
    """Any as a dict's key or a set's member was made Raw, which msgspec cannot decode there:
    a valid event was refused. An event whose __post_init__ refuses its values (changed after
    it was built) passed the shape, and every read then failed at it."""
    keyed = _Keyed(by_key={"k": 1, "j": [2]}, maybe={"a": 1}, members=frozenset({1, "x"}))
    pair = _Pair(items=[1, 2])
    pair.items.append(3)  # a list field is changed in place: no __post_init__ runs
    with open_log("memory://") as log:
        log.append("s", [keyed, _Keyed(nested=[{"x": [1]}])], expected_version=0)
        with pytest.raises(UnencodableValue, match="at most 2 items"):
            log.append("s", [pair], expected_version=2)
        assert next(r.event for r in log.read()) == keyed


def test_event_ids_are_32_lowercase_hex_digits_leading_zeros_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Bits whose first byte is zero (seeded to give some): an id keeps its leading zeros.
    ids = random.Random(7)
    monkeypatch.setattr(log_module, "_IDS", ids)
    made = [new_event_id() for _ in range(300)] + new_event_ids(300) + new_event_ids(1)
    assert all(re.fullmatch("[0-9a-f]{32}", made_id) for made_id in made)
    assert any(made_id.startswith("00") for made_id in made)
    ids.seed(7)
    assert made == [f"{ids.getrandbits(128):032x}" for _ in range(601)]
