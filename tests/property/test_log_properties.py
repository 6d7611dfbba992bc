"""Random interleavings of appends against a model: the log's contract holds for any history.

A hypothesis state machine appends to new and existing streams, at the right version, at a
stale one (which must raise :class:`VersionConflict` and append nothing), after whatever is
there, in multi-stream commits (all or nothing), and retries earlier appends with the same event
ids (a no-op). After every step the log agrees with a plain model; at the end every stream's
versions are gap-free, positions strictly increase in :meth:`read`, every stream reads back as the
model says and :meth:`verify` finds nothing wrong.

The SQLite machine writes through two handles on one file, so each handle's cache of stream
heads goes stale behind its back.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from onward.events import (
    Append,
    EventLog,
    Recorded,
    TaskProgressed,
    VersionConflict,
    open_log,
)
from tests.conftest import FakeClock

SETTINGS = settings(max_examples=50, stateful_step_count=30, deadline=None)


class Past:
    """An append that succeeded: enough to send it again."""

    def __init__(self, appends: list[Append]) -> None:
        self.appends = appends


class LogMachine(RuleBasedStateMachine):
    """Drives one log (through one or more handles) and a model of what it must hold."""

    def open_handles(self, clock: FakeClock) -> list[EventLog]:
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.handles = self.open_handles(self.clock)
        self.model: dict[str, list[str]] = {}  # stream -> event ids, in version order
        self.positions: dict[str, int] = {}  # event id -> position returned by the append
        self.past: list[Past] = []
        self.counter = 0

    # -- helpers ---------------------------------------------------------------------------

    def events(self, count: int) -> tuple[list[TaskProgressed], list[str]]:
        events, ids = [], []
        for _ in range(count):
            self.counter += 1
            ids.append(f"{self.counter:032x}")
            events.append(TaskProgressed(fraction=0.5, note=f"event {self.counter}"))
            self.clock.advance(0.25)
        return events, ids

    def total(self) -> int:
        return sum(len(ids) for ids in self.model.values())

    def new_stream(self) -> str:
        return f"stream-{len(self.model)}"

    def handle(self, data: st.DataObject) -> EventLog:
        return data.draw(st.sampled_from(self.handles), label="handle")

    def existing(self, data: st.DataObject, *, at_least: int = 1) -> list[str]:
        streams = sorted(self.model)
        return data.draw(
            st.lists(st.sampled_from(streams), min_size=at_least, max_size=3, unique=True),
            label="streams",
        )

    def commit(self, log: EventLog, appends: list[Append]) -> None:
        """Commit appends that must succeed, and update the model."""
        result = log.commit(appends)
        assert not result.already_recorded
        ids = result.event_ids
        assert len(ids) == sum(len(a.events) for a in appends)
        given: list[list[str]] = []
        for a in appends:
            mine, ids = ids[: len(a.events)], ids[len(a.events) :]
            if a.event_ids is not None:
                assert mine == list(a.event_ids)
            given.append(mine)
        ids = result.event_ids
        if result.positions:
            assert len(result.positions) == len(ids)
            assert result.positions == sorted(result.positions)
            assert min(result.positions) > max(self.positions.values(), default=0)
            self.positions.update(zip(ids, result.positions, strict=True))
        resolved = []
        for a, mine in zip(appends, given, strict=True):
            before = len(self.model.get(a.stream, []))
            if a.expected_version is not None:
                assert a.expected_version == before
            self.model.setdefault(a.stream, []).extend(mine)
            assert result.versions[a.stream] == len(self.model[a.stream])
            resolved.append(
                Append(
                    stream=a.stream,
                    events=a.events,
                    expected_version=before,
                    event_ids=mine,
                )
            )
        self.past.append(Past(resolved))

    def refuse(self, log: EventLog, appends: list[Append], stale: str) -> None:
        """Commit appends one of which is stale: a VersionConflict, and nothing written."""
        head = log.head()
        with pytest.raises(VersionConflict) as info:
            log.commit(appends)
        assert info.value.stream == stale
        (expected,) = [a.expected_version for a in appends if a.stream == stale]
        assert info.value.expected == expected
        assert info.value.actual == len(self.model.get(stale, []))
        assert log.head() == head
        for a in appends:
            assert log.stream_version(a.stream) == len(self.model.get(a.stream, []))

    # -- rules -----------------------------------------------------------------------------

    @initialize(data=st.data(), count=st.integers(1, 3))
    def start_with_one_stream(self, data: st.DataObject, count: int) -> None:
        self.append_to_a_new_stream(data, count)

    @rule(data=st.data(), count=st.integers(1, 3))
    def append_to_a_new_stream(self, data: st.DataObject, count: int) -> None:
        events, ids = self.events(count)
        stream = self.new_stream()
        self.commit(
            self.handle(data),
            [Append(stream=stream, events=events, expected_version=0, event_ids=ids)],
        )

    @precondition(lambda self: self.model)
    @rule(data=st.data(), count=st.integers(1, 3))
    def append_at_the_right_version(self, data: st.DataObject, count: int) -> None:
        stream = data.draw(st.sampled_from(sorted(self.model)))
        events, ids = self.events(count)
        self.commit(
            self.handle(data),
            [
                Append(
                    stream=stream,
                    events=events,
                    expected_version=len(self.model[stream]),
                    event_ids=ids,
                )
            ],
        )

    @precondition(lambda self: self.model)
    @rule(data=st.data(), count=st.integers(1, 3))
    def append_after_whatever_is_there(self, data: st.DataObject, count: int) -> None:
        stream = data.draw(st.sampled_from(sorted(self.model)))
        events, _ = self.events(count)
        self.commit(
            self.handle(data),
            [Append(stream=stream, events=events, expected_version=None)],
        )

    @precondition(lambda self: self.model)
    @rule(data=st.data(), count=st.integers(1, 3))
    def append_at_a_stale_version(self, data: st.DataObject, count: int) -> None:
        stream = data.draw(st.sampled_from(sorted(self.model)))
        version = len(self.model[stream])
        stale = data.draw(
            st.integers(0, version - 1) | st.integers(version + 1, version + 3), label="stale"
        )
        events, ids = self.events(count)
        self.refuse(
            self.handle(data),
            [Append(stream=stream, events=events, expected_version=stale, event_ids=ids)],
            stream,
        )

    @precondition(lambda self: self.model)
    @rule(data=st.data(), new=st.booleans())
    def commit_to_several_streams(self, data: st.DataObject, new: bool) -> None:
        streams = self.existing(data)
        appends = []
        for stream in streams:
            events, ids = self.events(data.draw(st.integers(1, 2)))
            any_version = data.draw(st.booleans(), label=f"{stream} at any version")
            expected = None if any_version else len(self.model[stream])
            appends.append(
                Append(
                    stream=stream,
                    events=events,
                    expected_version=expected,
                    event_ids=None if expected is None else ids,
                )
            )
        if new:
            events, ids = self.events(1)
            appends.append(
                Append(stream=self.new_stream(), events=events, expected_version=0, event_ids=ids)
            )
        self.commit(self.handle(data), data.draw(st.permutations(appends)))

    @precondition(lambda self: len(self.model) >= 2)
    @rule(data=st.data())
    def commit_with_one_stale_stream_writes_nothing(self, data: st.DataObject) -> None:
        streams = self.existing(data, at_least=2)
        stale = data.draw(st.sampled_from(streams), label="stale stream")
        appends = []
        for stream in streams:
            events, ids = self.events(1)
            version = len(self.model[stream])
            expected = version if stream != stale else data.draw(st.integers(0, version - 1))
            appends.append(
                Append(
                    stream=stream,
                    events=events,
                    expected_version=expected,
                    event_ids=None if expected is None else ids,
                )
            )
        self.refuse(self.handle(data), appends, stale)

    @precondition(lambda self: self.past)
    @rule(data=st.data())
    def retrying_an_earlier_append_is_a_no_op(self, data: st.DataObject) -> None:
        past = data.draw(st.sampled_from(self.past), label="past append")
        log = self.handle(data)
        head = log.head()
        result = log.commit(past.appends)
        assert result.already_recorded
        assert result.event_ids == [i for a in past.appends for i in (a.event_ids or [])]
        if result.positions:
            assert result.positions == [self.positions[i] for i in result.event_ids]
        assert log.head() == head

    @rule()
    def check_everything(self) -> None:
        for log in self.handles:
            self.check(log)

    # -- what must always hold -------------------------------------------------------------

    @invariant()
    def head_counts_every_event(self) -> None:
        for log in self.handles:
            assert log.head() >= self.total()
            assert len(log.streams()) == len(self.model)

    def check(self, log: EventLog) -> None:
        everything = list(log.read(page_size=7))
        assert len(everything) == self.total()
        positions = [r.position for r in everything]
        assert all(a < b for a, b in itertools.pairwise(positions))
        assert log.head() == (positions[-1] if positions else 0)
        seen: dict[str, list[Recorded]] = {}
        for recorded in everything:
            seen.setdefault(recorded.stream, []).append(recorded)
        assert set(seen) == set(self.model)
        for stream, ids in self.model.items():
            in_order = seen[stream]
            assert [r.version for r in in_order] == list(range(1, len(ids) + 1))
            assert [r.meta.event_id for r in in_order] == ids
            back = log.read_stream(stream)
            assert back == in_order
            assert log.stream_version(stream) == len(ids)
            for previous, current in itertools.pairwise(back):
                assert current.meta.prev == previous.meta.checksum
        for recorded in everything:
            if recorded.meta.event_id in self.positions:
                assert recorded.position == self.positions[recorded.meta.event_id]
        assert log.streams() == sorted(self.model, key=lambda s: seen[s][0].position)
        report = log.verify()
        assert report.ok, report.problems
        assert report.events == self.total()

    def teardown(self) -> None:
        try:
            for log in self.handles:
                self.check(log)
        finally:
            for log in self.handles:
                log.close()


class MemoryLogMachine(LogMachine):
    def open_handles(self, clock: FakeClock) -> list[EventLog]:
        return [open_log("memory://", clock=clock)]


class SQLiteLogMachine(LogMachine):
    def open_handles(self, clock: FakeClock) -> list[EventLog]:
        self.directory = tempfile.mkdtemp(prefix="onward-property-")
        url = f"sqlite:///{Path(self.directory) / 'log.db'}?synchronous=normal"
        return [open_log(url, clock=clock), open_log(url, clock=clock)]

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


TestMemoryLogProperties = MemoryLogMachine.TestCase
TestMemoryLogProperties.settings = SETTINGS
TestSQLiteLogProperties = SQLiteLogMachine.TestCase
TestSQLiteLogProperties.settings = SETTINGS
