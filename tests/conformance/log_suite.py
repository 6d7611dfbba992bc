"""The conformance suite every event-log backend passes.

A backend's test module subclasses :class:`EventLogSuite` and says how to open a fresh log;
the memory backend passes the same tests as the databases, so it is a fake to trust.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any

import pytest

from onward.events import (
    Append,
    Context,
    EventLog,
    PayloadTooLarge,
    StepCompleted,
    TaskProgressed,
    TaskSubmitted,
    UnencodableValue,
    UsageError,
    VersionConflict,
)
from onward.events.codec import LAYOUT
from onward.events.integrity import CHAIN_START, advance_chain
from tests.conftest import FakeClock


def submitted(name: str = "crawl", *args: Any) -> TaskSubmitted:
    return TaskSubmitted(name=name, args=list(args), kwargs={})


def progressed(fraction: float, note: str = "") -> TaskProgressed:
    return TaskProgressed(fraction=fraction, note=note)


class EventLogSuite(ABC):
    """Tests of the :class:`onward.events.EventLog` contract; subclass and implement
    ``make_log``."""

    #: Whether the backend keeps a head record, written with every append.
    tracks_head = True

    @abstractmethod
    def make_log(self, clock: FakeClock, **options: Any) -> EventLog:
        """A fresh, empty log."""

    @pytest.fixture
    def log(self, clock: FakeClock) -> Any:
        log = self.make_log(clock)
        yield log
        log.close()

    # -- appending and reading -------------------------------------------------------------

    def test_empty_log(self, log: EventLog) -> None:
        assert log.head() == 0
        assert list(log.read()) == []
        assert log.read_stream("task-1") == []
        assert log.stream_version("task-1") == 0
        assert log.verify().ok

    def test_append_then_read_back(self, log: EventLog, clock: FakeClock) -> None:
        events = [submitted("crawl", "https://example.org"), progressed(0.5, "half")]
        result = log.append(
            "task-1",
            events,
            expected_version=0,
            context=Context(session="s1", actor="w1", correlation_id="c1", causation_id="x"),
        )
        assert result.versions == {"task-1": 2}
        assert len(result.event_ids) == 2
        recorded = log.read_stream("task-1")
        assert [r.event for r in recorded] == events
        assert [r.version for r in recorded] == [1, 2]
        assert recorded[0].position < recorded[1].position
        assert [r.meta.event_id for r in recorded] == result.event_ids
        meta = recorded[0].meta
        assert (meta.session, meta.actor, meta.correlation_id, meta.causation_id) == (
            "s1",
            "w1",
            "c1",
            "x",
        )
        assert meta.time == clock.now
        assert meta.prev == ""
        assert recorded[1].meta.prev == meta.checksum
        assert log.head() == recorded[1].position
        assert log.stream_version("task-1") == 2

    def test_streams_interleave_in_global_order(self, log: EventLog) -> None:
        log.append("task-a", [submitted("a")], expected_version=0)
        log.append("task-b", [submitted("b")], expected_version=0)
        log.append("task-a", [progressed(1.0)], expected_version=1)
        everything = list(log.read())
        assert [(r.stream, r.version) for r in everything] == [
            ("task-a", 1),
            ("task-b", 1),
            ("task-a", 2),
        ]
        positions = [r.position for r in everything]
        assert positions == sorted(positions)
        assert len(set(positions)) == 3
        assert log.streams() == ["task-a", "task-b"]

    def test_read_after_position_in_small_pages(self, log: EventLog) -> None:
        for i in range(23):
            log.append(f"task-{i % 4}", [progressed(i / 23)], expected_version=None)
        everything = list(log.read())
        assert len(everything) == 23
        assert list(log.read(page_size=5)) == everything
        middle = everything[9].position
        assert list(log.read(after=middle, page_size=4)) == everything[10:]
        assert (
            list(log.read(after=everything[2].position, upto=everything[6].position))
            == (everything[3:7])
        )
        with pytest.raises(UsageError):
            list(log.read(page_size=0))

    def test_read_stream_after_version(self, log: EventLog) -> None:
        log.append("task-1", [progressed(i / 5) for i in range(5)], expected_version=0)
        assert [r.version for r in log.read_stream("task-1", after=3)] == [4, 5]

    def test_streams_read_together_read_as_each_alone(self, log: EventLog) -> None:
        for n in range(3):
            log.append(f"task-{n}", [progressed(i / 5) for i in range(n + 1)], expected_version=0)
        streams = ["task-2", "task-0", "task-none", "task-1", "task-0"]
        read = log.read_streams_on(streams)
        assert list(read) == ["task-2", "task-0", "task-none", "task-1"]
        for stream, tail in read.items():
            assert tail == log.read_stream_on(stream)
        assert read["task-none"] == ([], "", 0)
        assert [r.version for r in read["task-2"].events] == [1, 2, 3]  # type: ignore[union-attr]

    @pytest.mark.parametrize("bound", [-1, -5, True, 1.0, None, "1", 2**63])
    def test_a_read_bound_that_is_not_a_non_negative_int_is_refused(
        self, log: EventLog, bound: Any
    ) -> None:
        """A negative ``after`` read as versions missing from an intact stream (CorruptRecord),
        a bool or float as a number."""
        log.append("task-1", [submitted(), progressed(0.5)], expected_version=0)
        with pytest.raises(UsageError, match="after must be an int"):
            log.read_stream("task-1", after=bound)
        with pytest.raises(UsageError, match="after must be an int"):
            log.stream_rows("task-1", after=bound)
        with pytest.raises(UsageError, match="after must be an int"):
            list(log.read(after=bound))
        with pytest.raises(UsageError, match="after must be an int"):
            list(log.read_rows(after=bound))
        if bound is not None:
            with pytest.raises(UsageError, match="upto must be an int"):
                list(log.read(upto=bound))
            with pytest.raises(UsageError, match="upto must be an int"):
                log.stream_rows("task-1", upto=bound)
        assert [r.version for r in log.read_stream("task-1", after=0)] == [1, 2]
        first = next(iter(log.read())).position  # positions need not start at 1 (PostgreSQL)
        assert [r.version for r in log.read(after=0, upto=first)] == [1]

    def test_any_version_appends_at_the_end(self, log: EventLog) -> None:
        log.append("session-s", [submitted()], expected_version=None)
        log.append("session-s", [progressed(0.1)], expected_version=None)
        assert [r.version for r in log.read_stream("session-s")] == [1, 2]
        assert log.verify().ok

    # -- optimistic concurrency ------------------------------------------------------------

    def test_stale_expected_version_conflicts(self, log: EventLog) -> None:
        log.append("task-1", [submitted()], expected_version=0)
        with pytest.raises(VersionConflict) as info:
            log.append("task-1", [progressed(0.1)], expected_version=0)
        assert info.value.stream == "task-1"
        assert info.value.expected == 0
        assert info.value.actual == 1
        assert "task-1" in str(info.value)
        assert log.stream_version("task-1") == 1

    def test_expected_version_ahead_of_the_stream_conflicts(self, log: EventLog) -> None:
        log.append("task-1", [submitted()], expected_version=0)
        with pytest.raises(VersionConflict) as info:
            log.append("task-1", [progressed(0.1)], expected_version=3)
        assert info.value.actual == 1
        assert log.stream_version("task-1") == 1

    def test_reappending_the_same_event_ids_is_a_no_op(self, log: EventLog) -> None:
        ids = ["a" * 32, "b" * 32]
        first = log.append(
            "task-1", [submitted(), progressed(0.5)], expected_version=0, event_ids=ids
        )
        head = log.head()
        again = log.append(
            "task-1", [submitted(), progressed(0.5)], expected_version=0, event_ids=ids
        )
        assert again.already_recorded
        assert again.event_ids == first.event_ids
        assert again.positions == [r.position for r in log.read_stream("task-1")]
        assert log.head() == head
        assert len(log.read_stream("task-1")) == 2

    def test_each_event_may_name_its_own_cause(self, log: EventLog) -> None:
        first = log.append("task-1", [submitted()], expected_version=0)
        log.commit(
            [
                Append(
                    stream="task-1",
                    events=[progressed(0.1), progressed(0.2)],
                    expected_version=1,
                    context=Context(causation_id="shared"),
                    causes=[first.event_ids[0], "other"],
                )
            ]
        )
        causes = [r.meta.causation_id for r in log.read_stream("task-1")]
        assert causes == ["", first.event_ids[0], "other"]
        with pytest.raises(UsageError):
            log.commit(
                [Append(stream="task-1", events=[submitted()], expected_version=3, causes=[])]
            )

    def test_same_version_with_other_ids_conflicts(self, log: EventLog) -> None:
        log.append("task-1", [submitted()], expected_version=0, event_ids=["a" * 32])
        with pytest.raises(VersionConflict):
            log.append("task-1", [submitted()], expected_version=0, event_ids=["c" * 32])

    def test_commit_to_several_streams_is_all_or_nothing(self, log: EventLog) -> None:
        log.append("task-2", [submitted()], expected_version=0)
        with pytest.raises(VersionConflict) as info:
            log.commit(
                [
                    Append(stream="task-1", events=[submitted()], expected_version=0),
                    Append(stream="task-2", events=[progressed(0.1)], expected_version=0),
                ]
            )
        assert info.value.stream == "task-2"
        assert log.read_stream("task-1") == []
        result = log.commit(
            [
                Append(stream="task-1", events=[submitted()], expected_version=0),
                Append(stream="task-2", events=[progressed(0.1)], expected_version=1),
            ]
        )
        assert result.versions == {"task-1": 1, "task-2": 2}

    def test_concurrent_writers_never_share_a_version(self, log: EventLog) -> None:
        log.append("task-1", [submitted()], expected_version=0)
        wins: list[int] = []
        losses: list[int] = []
        barrier = threading.Barrier(4)

        def writer(n: int) -> None:
            barrier.wait()
            for _ in range(10):
                version = log.stream_version("task-1")
                try:
                    log.append("task-1", [progressed(n / 10)], expected_version=version)
                    wins.append(n)
                except VersionConflict:
                    losses.append(n)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        versions = [r.version for r in log.read_stream("task-1")]
        assert versions == list(range(1, len(wins) + 2))
        assert len(wins) + len(losses) == 40
        assert log.verify().ok

    # -- refusals: nothing is written ------------------------------------------------------

    @pytest.mark.parametrize(
        ("stream", "events", "message"),
        [
            ("task-a\x00b", None, "holds a NUL"),
            ("task-a\ud800", None, "lone surrogate"),
            (b"task-a", None, "non-empty str"),
            ("", None, "non-empty str"),
            ("task-a", "generator", "must be a list of events"),
        ],
        ids=["nul", "surrogate", "bytes", "empty", "generator"],
    )
    def test_a_bad_stream_id_or_events_are_refused_before_writing(
        self, log: EventLog, stream: Any, events: Any, message: str
    ) -> None:
        """Each backend refuses them alike (a NUL was stored by SQLite and refused by
        PostgreSQL as a storage failure; the others raised raw Python errors)."""
        given = (e for e in [submitted()]) if events == "generator" else [submitted()]
        with pytest.raises(UsageError, match=message):
            log.append(stream, given, expected_version=0)  # type: ignore[arg-type]
        assert log.head() == 0

    @pytest.mark.parametrize(
        "time", [float("nan"), float("inf"), "now", 1.7e18, 1e12, -1e11], ids=repr
    )
    def test_a_clock_that_gives_no_time_is_refused_before_writing(
        self, log: EventLog, time: object
    ) -> None:
        """A clock of NaN, a str, nanoseconds or a date past year 9999 wrote records no read
        could decode (their time stored as null), which ``verify`` called sound."""
        log.clock = lambda: time  # type: ignore[assignment,return-value]
        with pytest.raises(UsageError, match="the log's clock gave"):
            log.append("task-0", [submitted()], expected_version=0)
        assert log.head() == 0

    def test_oversized_payload_is_refused_before_writing(self, clock: FakeClock) -> None:
        log = self.make_log(clock, payload_limit=1000)
        try:
            with pytest.raises(PayloadTooLarge) as info:
                log.commit(
                    [
                        Append(stream="task-0", events=[submitted()], expected_version=0),
                        Append(
                            stream="task-1",
                            events=[submitted("x" * 2000)],
                            expected_version=0,
                        ),
                    ]
                )
            assert info.value.limit == 1000
            assert info.value.size > 1000
            assert "task-1" in str(info.value)
            assert log.head() == 0
        finally:
            log.close()

    def test_default_limits_keep_a_mebibyte_inline_and_refuse_over_256(self, log: EventLog) -> None:
        assert log.inline_limit == 1024 * 1024
        assert log.payload_limit == 256 * 1024 * 1024
        log.append("task-1", [submitted("f", "x" * 1_000_000)], expected_version=0)
        assert log.blob_digests() == []  # under the inline limit: kept whole
        log.append("task-2", [submitted("f", "y" * 1_100_000)], expected_version=0)
        assert len(log.blob_digests()) == 1
        [back] = log.read_stream("task-2")
        assert back.event == submitted("f", "y" * 1_100_000)

    # -- blobs: large values beside the log ------------------------------------------------

    def test_an_event_over_the_inline_limit_reads_back_as_appended(self, clock: FakeClock) -> None:
        log = self.make_log(clock, inline_limit=1000)
        try:
            big = TaskSubmitted(name="crawl", args=["x" * 5000, 7], kwargs={"k": "v" * 3000})
            result = StepCompleted(index=0, name="fetch", result={"body": "z" * 4000})
            log.append("task-1", [big, result], expected_version=0)
            log.append("task-1", [progressed(0.5)], expected_version=2)
            assert [r.event for r in log.read_stream("task-1")] == [big, result, progressed(0.5)]
            assert [r.event for r in log.read()] == [big, result, progressed(0.5)]
            assert [r.event for page in log.read_pages() for r in page] == [
                big,
                result,
                progressed(0.5),
            ]
            assert len(log.blob_digests()) == 3  # two fields of one event, one of the other
            stored = [row[4] for rows in log.read_rows() for row in rows]
            assert all(len(state) < 1000 for state in stored)
            assert log.verify().ok
        finally:
            log.close()

    def test_the_same_large_value_is_stored_once(self, clock: FakeClock) -> None:
        log = self.make_log(clock, inline_limit=1000)
        try:
            for i in range(3):
                log.append(f"task-{i}", [submitted("f", "same " * 1000)], expected_version=0)
            assert len(log.blob_digests()) == 1
            assert all(r.event == submitted("f", "same " * 1000) for r in log.read())
        finally:
            log.close()

    def test_many_blobs_are_read_at_once(self, clock: FakeClock) -> None:
        log = self.make_log(clock, inline_limit=1000)
        try:
            for i in range(1_200):
                log.append(f"task-{i}", [submitted("f", f"{i} " * 1000)], expected_version=0)
            digests = log.blob_digests()
            assert len(digests) == 1_200
            unknown = "0" * 64
            found = log.blobs([unknown, *digests, digests[0]])
            assert sorted(found) == sorted(digests)
            assert all(found[d] == log.blob(d) for d in digests[::97])
            assert log.blobs([]) == {}
            assert log.blobs([unknown]) == {}
        finally:
            log.close()

    def test_blobs_are_redacted(self, clock: FakeClock) -> None:
        log = self.make_log(clock, inline_limit=1000)
        try:
            secret = "sk-ant-" + "a1B2c3D4" * 6
            log.append("task-1", [submitted("f", "x" * 3000 + " " + secret)], expected_version=0)
            [digest] = log.blob_digests()
            data = log.blob(digest)
            assert data is not None
            assert secret.encode() not in data
            [back] = log.read_stream("task-1")
            assert secret not in str(back.event)
            assert "x" * 3000 in str(back.event)
        finally:
            log.close()

    def test_reappending_a_split_event_with_its_ids_is_a_no_op(self, clock: FakeClock) -> None:
        log = self.make_log(clock, inline_limit=1000)
        try:
            event = submitted("f", "x" * 3000)
            first = log.append("task-1", [event], expected_version=0, event_ids=["a1"])
            again = log.append("task-1", [event], expected_version=0, event_ids=["a1"])
            assert again.already_recorded
            assert again.event_ids == first.event_ids
            assert [r.event for r in log.read()] == [event]
        finally:
            log.close()

    def test_a_blob_append_that_conflicts_writes_no_record(self, clock: FakeClock) -> None:
        log = self.make_log(clock, inline_limit=1000)
        try:
            log.append("task-1", [submitted()], expected_version=0)
            with pytest.raises(VersionConflict):
                log.append("task-1", [submitted("f", "x" * 3000)], expected_version=0)
            assert [r.event for r in log.read()] == [submitted()]
            assert log.verify().ok
        finally:
            log.close()

    def test_unencodable_value_is_refused(self, log: EventLog) -> None:
        with pytest.raises(UnencodableValue):
            log.append(
                "task-1", [TaskSubmitted(name="f", args=[object()], kwargs={})], expected_version=0
            )
        assert log.head() == 0

    @pytest.mark.parametrize("depth", [900, 5000])
    def test_a_value_nested_deeper_than_a_reader_follows_is_refused(
        self, log: EventLog, depth: int
    ) -> None:
        """Lists nested 5,000 deep raised a bare RecursionError from the encoder; 900 deep
        was written, and every later read of the log (``onward tasks``, ``verify``, ``why``,
        a worker's catch-up) failed with a RecursionError at its record."""
        value: list[Any] = []
        for _ in range(depth):
            value = [value]
        with pytest.raises(UnencodableValue, match="nested"):
            log.append("task-1", [TaskSubmitted(name="f", args=[value])], expected_version=0)
        assert log.head() == 0
        shallow: list[Any] = []
        for _ in range(300):  # as deep as onward's own values go in JSON
            shallow = [shallow]
        log.append("task-1", [TaskSubmitted(name="f", args=[shallow])], expected_version=0)
        assert [r.event for r in log.read()] == [TaskSubmitted(name="f", args=[shallow])]
        assert log.verify().ok

    def test_lists_and_dicts_alternating_deeper_than_a_reader_follows_are_refused(
        self, log: EventLog
    ) -> None:
        """A dict in each list in each dict, 700 deep, was written: each pass of the depth
        check took a pair of lists and then the pair of braces it left bare, two levels at
        once, and a read from a deep stack failed with a RecursionError at its record."""
        value: Any = []
        for level in range(700):
            value = {"k": value} if level % 2 else [value]
        with pytest.raises(UnencodableValue, match="nested"):
            log.append("task-1", [TaskSubmitted(name="f", args=[value])], expected_version=0)
        assert log.head() == 0

    def test_bad_appends_are_usage_errors(self, log: EventLog) -> None:
        with pytest.raises(UsageError):
            log.append("task-1", [], expected_version=0)
        with pytest.raises(UsageError):
            log.append("", [submitted()], expected_version=0)
        with pytest.raises(UsageError):
            log.append("task-1", [submitted()], expected_version=-1)
        with pytest.raises(UsageError):
            log.append("task-1", [submitted()], expected_version=0, event_ids=["a" * 32] * 2)
        with pytest.raises(UsageError):
            log.append("task-1", ["not an event"], expected_version=0)  # type: ignore[list-item]
        with pytest.raises(UsageError):
            log.commit([])
        assert log.head() == 0

    @pytest.mark.parametrize(
        "expected", [True, False, 1.0, 1.5, float("nan"), "1", -1, 2**63, 2**70]
    )
    def test_an_expected_version_that_is_not_an_int_version_is_refused(
        self, log: EventLog, expected: Any
    ) -> None:
        """True was taken as version 1; a float, a huge int failed deep in the backend (a
        TypeError, an OverflowError) or as a misleading VersionConflict. Nothing is written,
        in a commit of several streams either."""
        log.append("task-1", [submitted()], expected_version=0)
        head = log.head()
        with pytest.raises(UsageError, match="expected_version must be None or an int"):
            log.append("task-1", [progressed(0.1)], expected_version=expected)
        with pytest.raises(UsageError, match="expected_version must be None or an int"):
            log.commit(
                [
                    Append(stream="task-2", events=[submitted()], expected_version=0),
                    Append(stream="task-1", events=[progressed(0.1)], expected_version=expected),
                ]
            )
        (refused,) = log.commit_groups(
            [[Append(stream="task-1", events=[progressed(0.1)], expected_version=expected)]]
        )
        assert isinstance(refused, UsageError)
        assert log.head() == head
        assert log.streams() == ["task-1"]
        log.append("task-1", [progressed(0.2)], expected_version=1)
        assert log.stream_version("task-1") == 2

    def test_secrets_are_redacted_before_append(self, log: EventLog) -> None:
        token = "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8"
        log.append(
            "task-1",
            [
                StepCompleted(
                    index=0, name="call", result=f"Authorization: token {token}", duration=0.1
                )
            ],
            expected_version=0,
        )
        (recorded,) = log.read_stream("task-1")
        assert token not in str(recorded.event)
        assert "REDACTED" in str(recorded.event)
        assert log.verify().ok

    def test_closed_log_refuses_calls(self, clock: FakeClock) -> None:
        log = self.make_log(clock)
        log.close()
        with pytest.raises(UsageError):
            log.append("task-1", [submitted()], expected_version=0)
        with pytest.raises(UsageError):
            log.head()
        log.close()  # closing twice is harmless

    # -- integrity -------------------------------------------------------------------------

    def test_verify_counts_a_clean_log(self, log: EventLog) -> None:
        for i in range(12):
            log.append(f"task-{i % 3}", [progressed(i / 12)], expected_version=None)
        report = log.verify()
        assert report.ok
        assert report.events == 12
        assert report.streams == 3
        assert report.head == log.head()
        assert not report.torn_tail

    def test_the_head_record_follows_every_append(self, log: EventLog) -> None:
        log.append("task-1", [submitted(), progressed(0.5)], expected_version=0)
        log.commit(
            [
                Append(stream="task-2", events=[submitted()], expected_version=0),
                Append(stream="task-1", events=[progressed(1.0)], expected_version=2),
            ]
        )
        log.append("task-3", [submitted()], expected_version=None)
        head = log.head_record()
        report = log.verify()
        assert report.ok
        if not self.tracks_head:
            assert head is None
            assert report.head_record.status == "not tracked"
            return
        assert head is not None
        start, end = LAYOUT.checksum
        checksums = [row[4][start:end] for rows in log.read_rows() for row in rows]
        assert (head.base, head.position, head.count) == (0, log.head(), 5)
        assert head.chain == advance_chain(CHAIN_START, checksums)
        assert report.head_record.status == "ok"
        assert (report.head_record.count, report.head_record.found) == (5, 5)

    def test_a_refused_append_leaves_the_head_record_alone(self, log: EventLog) -> None:
        log.append("task-1", [submitted()], expected_version=0)
        before = log.head_record()
        with pytest.raises(VersionConflict):
            log.commit(
                [
                    Append(stream="task-2", events=[submitted()], expected_version=0),
                    Append(stream="task-1", events=[progressed(1.0)], expected_version=0),
                ]
            )
        assert log.head_record() == before
        assert log.verify().ok


class SharedLogSuite(EventLogSuite):
    """Tests for backends that several handles (processes) open at once."""

    @abstractmethod
    def second_handle(self) -> EventLog:
        """Another handle on the same log as ``make_log``'s."""

    def test_conflict_from_another_handle_on_the_same_log(self, log: EventLog) -> None:
        log.append("task-1", [submitted()], expected_version=0)
        log.append("task-1", [progressed(0.2)], expected_version=1)
        # The head cache of this handle says version 2; a second writer moves the stream on.
        other = self.second_handle()
        try:
            other.append("task-1", [progressed(0.3)], expected_version=2)
            with pytest.raises(VersionConflict):
                log.append("task-1", [progressed(0.4)], expected_version=2)
            log.append("task-1", [progressed(0.4)], expected_version=3)
        finally:
            other.close()
        assert [r.version for r in log.read_stream("task-1")] == [1, 2, 3, 4]
        assert log.verify().ok
