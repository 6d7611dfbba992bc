"""``verify`` finds damage done to an SQLite log behind its back, and says where.

Each test builds a real log file (5 streams x 6 events, interleaved), closes it, damages the
file through a raw sqlite3 connection, and checks the report: which stream, version and
position, what kind of damage, and whether it is a torn tail or damage in the middle. A
removed record also leaves its position empty in the range the log's head record covers
(``missing``, without a stream: the record is gone), and a record added behind onward's back
makes the log hold more records than the head record counts (``head``).

Layout of the log: stream ``stream-i`` (i = 0..4) has versions 1..6, and version ``v`` of
stream ``i`` sits at position ``(v - 1) * 5 + i + 1``; positions 1..30 are all used.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from onward.events import (
    Codec,
    Event,
    Meta,
    ProblemKind,
    TaskProgressed,
    TaskSubmitted,
    VerifyReport,
    all_event_types,
    open_log,
)
from onward.projections.reading import FoldReader
from tests.conftest import FakeClock

STREAMS = 5
VERSIONS = 6
LAST = STREAMS * VERSIONS

Where = tuple[ProblemKind, str, int, int]


def stream(i: int) -> str:
    return f"stream-{i}"


def position(i: int, version: int) -> int:
    """The global position of version ``version`` of ``stream(i)`` in the built log."""
    return (version - 1) * STREAMS + i + 1


@pytest.fixture
def db(tmp_path: Path, clock: FakeClock) -> Path:
    """A closed SQLite log of 5 interleaved streams of 6 events each."""
    path = tmp_path / "log.db"
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        for version in range(1, VERSIONS + 1):
            for i in range(STREAMS):
                event = (
                    TaskSubmitted(name=f"job-{i}", args=[i])
                    if version == 1
                    else TaskProgressed(fraction=version / VERSIONS, note=f"{stream(i)} v{version}")
                )
                result = log.append(stream(i), [event], expected_version=version - 1)
                assert result.positions == [position(i, version)]
                clock.advance(1.0)
        assert log.verify().ok
    return path


@pytest.fixture
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A raw sqlite3 connection on the closed log, committed and closed after the test body."""
    with closing(sqlite3.connect(db)) as connection:
        yield connection


def execute(connection: sqlite3.Connection, sql: str, *params: object) -> None:
    with connection:
        connection.execute(sql, params)


def row(connection: sqlite3.Connection, pos: int) -> tuple[str, int, str, bytes]:
    found = connection.execute(
        "SELECT originator_id, originator_version, topic, state FROM stored_events WHERE rowid=?",
        (pos,),
    ).fetchone()
    assert found is not None, f"no row at position {pos}"
    return found[0], found[1], found[2], bytes(found[3])


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    """``data`` with one bit flipped."""
    return data[:index] + bytes([data[index] ^ (1 << bit)]) + data[index + 1 :]


def flip_text(text: str, index: int, bit: int) -> str:
    flipped = flip(text.encode(), index, bit).decode()
    assert flipped != text
    return flipped


def verify(db: Path) -> VerifyReport:
    with open_log(f"sqlite:///{db}") as log:
        return log.verify()


def where(report: VerifyReport) -> list[Where]:
    return [(p.kind, p.stream, p.version, p.position) for p in report.problems]


def assert_damaged(report: VerifyReport, expected: list[Where], *, torn_tail: bool) -> None:
    assert not report.ok
    assert where(report) == expected, "\n".join(str(p) for p in report.problems)
    assert report.torn_tail is torn_tail
    for problem in report.problems:
        text = str(problem)
        assert f"position {problem.position}" in text
        if problem.stream:
            assert repr(problem.stream) in text
            assert f"version {problem.version}" in text


def test_the_untouched_log_verifies(db: Path) -> None:
    report = verify(db)
    assert report.ok
    assert report.problems == []
    assert (report.events, report.streams, report.head) == (LAST, STREAMS, LAST)
    assert not report.torn_tail


# -- a flipped bit in each column ------------------------------------------------------------


def test_flipped_bit_in_the_stream_id(db: Path, raw: sqlite3.Connection) -> None:
    pos = position(2, 3)
    # "stream-2" -> "Stream-2": a stream id no other row has, so the primary key still holds.
    damaged = flip_text(stream(2), 0, 5)
    execute(raw, "UPDATE stored_events SET originator_id=? WHERE rowid=?", damaged, pos)
    raw.close()
    assert_damaged(
        verify(db),
        [
            (ProblemKind.CORRUPT, damaged, 3, pos),
            # stream-2 itself now lacks version 3: its version 4 follows a gap.
            (ProblemKind.GAP, stream(2), 4, position(2, 4)),
        ],
        torn_tail=False,
    )


def test_flipped_bit_in_the_version(db: Path, raw: sqlite3.Connection) -> None:
    pos = position(2, 3)
    execute(raw, "UPDATE stored_events SET originator_version=? WHERE rowid=?", 3 ^ 4, pos)
    raw.close()
    # Only the record at position 13 is damaged. The records after it (versions 4..6 of the
    # same stream) are intact and in their place: a corrupt record's version is not to be
    # trusted as the stream's new head.
    assert_damaged(verify(db), [(ProblemKind.CORRUPT, stream(2), 7, pos)], torn_tail=False)


@pytest.mark.parametrize("version", ["x", b"\x03", 3.5])
def test_a_version_that_is_not_a_whole_number(
    db: Path, raw: sqlite3.Connection, version: object
) -> None:
    """A version column holding text, a blob or a fraction is reported, not raised on, by
    ``verify`` and by the fold reader (which marks only its stream damaged)."""
    pos = position(2, 3)
    execute(raw, "UPDATE stored_events SET originator_version=? WHERE rowid=?", version, pos)
    raw.close()
    report = verify(db)
    assert [(p.kind, p.position) for p in report.problems if p.position == pos] == [
        (ProblemKind.CORRUPT, pos)
    ]
    with open_log(f"sqlite:///{db}") as log:
        pages = list(FoldReader(log).pages())
    damage = [page for page in pages if not isinstance(page, list)]
    assert [(d.stream, d.position) for d in damage] == [(stream(2), pos)]
    folded = sum(len(page) for page in pages if isinstance(page, list))
    assert folded == LAST - 1


@pytest.mark.parametrize("column", ["originator_id", "topic"])
def test_text_that_is_not_utf8_damages_its_record_not_the_log(
    db: Path, raw: sqlite3.Connection, column: str
) -> None:
    """A byte that is not UTF-8 in a record's stream or tag column (sqlite3 cannot decode it)
    is reported as that record's damage; the rest of the log still reads and folds."""
    pos = position(2, 3)
    execute(
        raw,
        f"UPDATE stored_events SET {column}=CAST({column} || x'ff' AS TEXT) WHERE rowid=?",
        pos,
    )
    raw.close()
    report = verify(db)
    assert [(p.kind, p.position) for p in report.problems if p.position == pos] == [
        (ProblemKind.CORRUPT, pos)
    ]
    assert "checksum mismatch" in report.problems[0].detail
    with open_log(f"sqlite:///{db}") as log:
        pages = list(FoldReader(log).pages())
        assert len(log.read_stream(stream(1))) == VERSIONS
    folded = [r.stream for page in pages if isinstance(page, list) for r in page]
    for i in (0, 1, 3, 4):
        assert folded.count(stream(i)) == VERSIONS


def test_flipped_bit_in_the_topic(db: Path, raw: sqlite3.Connection) -> None:
    pos = position(1, 4)
    _, _, topic, _ = row(raw, pos)
    assert topic == "TaskProgressed"
    execute(raw, "UPDATE stored_events SET topic=? WHERE rowid=?", flip_text(topic, 0, 5), pos)
    raw.close()
    assert_damaged(verify(db), [(ProblemKind.CORRUPT, stream(1), 4, pos)], torn_tail=False)


@pytest.mark.parametrize(
    ("marker", "part"),
    [
        (b'"checksum":"', "the checksum itself"),
        (b'"prev":"', "the envelope's link to the previous event"),
        (b'"event_id":"', "the envelope's event id"),
        (b'"time":', "the envelope's time"),
        (b'"note":"', "the event"),
        (b'"fraction":', "the event"),
    ],
)
def test_flipped_bit_in_the_state(
    db: Path, raw: sqlite3.Connection, marker: bytes, part: str
) -> None:
    pos = position(3, 2)
    _, _, _, state = row(raw, pos)
    index = state.index(marker) + len(marker) + 1
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", flip(state, index), pos)
    raw.close()
    report = verify(db)
    assert_damaged(report, [(ProblemKind.CORRUPT, stream(3), 2, pos)], torn_tail=False)
    assert "checksum mismatch" in report.problems[0].detail, part


@pytest.mark.parametrize("keep", [0, 10, 40, 60, -1])
def test_truncated_state(db: Path, raw: sqlite3.Connection, keep: int) -> None:
    pos = position(4, 3)
    _, _, _, state = row(raw, pos)
    truncated = state[:keep]
    assert len(truncated) < len(state)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", truncated, pos)
    raw.close()
    assert_damaged(verify(db), [(ProblemKind.CORRUPT, stream(4), 3, pos)], torn_tail=False)


@pytest.mark.parametrize("value", [b"", None], ids=["empty", "null"])
def test_emptied_state(db: Path, raw: sqlite3.Connection, value: bytes | None) -> None:
    pos = position(4, 3)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", value, pos)
    raw.close()
    assert_damaged(verify(db), [(ProblemKind.CORRUPT, stream(4), 3, pos)], torn_tail=False)


# -- deleted, duplicated, swapped and rewritten rows -----------------------------------------


def test_deleted_row_in_the_middle_of_a_stream(db: Path, raw: sqlite3.Connection) -> None:
    execute(raw, "DELETE FROM stored_events WHERE rowid=?", position(2, 3))
    raw.close()
    report = verify(db)
    assert_damaged(
        report,
        [
            (ProblemKind.MISSING, "", 0, position(2, 3)),
            (ProblemKind.GAP, stream(2), 4, position(2, 4)),
        ],
        torn_tail=False,
    )
    assert f"position {position(2, 3)} is missing" in report.problems[0].detail
    assert "3..3" in report.problems[1].detail
    assert report.head_record.status == "damaged"


def test_deleted_first_row_of_a_stream(db: Path, raw: sqlite3.Connection) -> None:
    execute(raw, "DELETE FROM stored_events WHERE rowid=?", position(1, 1))
    raw.close()
    report = verify(db)
    assert_damaged(
        report,
        [
            (ProblemKind.MISSING, "", 0, position(1, 1)),
            (ProblemKind.GAP, stream(1), 2, position(1, 2)),
        ],
        torn_tail=False,
    )
    assert "1..1" in report.problems[1].detail


def test_deleted_rows_of_several_streams(db: Path, raw: sqlite3.Connection) -> None:
    gone = (position(2, 2), position(3, 2), position(3, 3), position(4, 3))
    execute(raw, "DELETE FROM stored_events WHERE rowid IN (?, ?, ?, ?)", *gone)
    raw.close()
    report = verify(db)
    assert_damaged(
        report,
        [
            (ProblemKind.MISSING, "", 0, position(2, 2)),  # positions 8..9
            (ProblemKind.GAP, stream(2), 3, position(2, 3)),
            (ProblemKind.MISSING, "", 0, position(3, 3)),  # positions 14..15
            (ProblemKind.GAP, stream(3), 4, position(3, 4)),
            (ProblemKind.GAP, stream(4), 4, position(4, 4)),
        ],
        torn_tail=False,
    )
    gaps = [p.detail.split()[1] for p in report.problems if p.kind is ProblemKind.GAP]
    assert gaps == ["2..2", "2..3", "3..3"]
    assert "positions 8..9 are missing" in report.problems[0].detail


def insert_copy(
    connection: sqlite3.Connection, source: int, stream_id: str, version: int, pos: int
) -> None:
    _, _, topic, state = row(connection, source)
    execute(
        connection,
        "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state)"
        " VALUES (?, ?, ?, ?, ?)",
        pos,
        stream_id,
        version,
        topic,
        state,
    )


def append_after_damage(db: Path) -> None:
    """Append one more intact event, so that the damage lies in the middle of the log."""
    with open_log(f"sqlite:///{db}") as log:
        log.append(stream(0), [TaskProgressed(fraction=1.0)], expected_version=VERSIONS)


def test_duplicated_row_at_another_version_of_its_stream(db: Path, raw: sqlite3.Connection) -> None:
    insert_copy(raw, position(2, 3), stream(2), VERSIONS + 1, LAST + 1)
    raw.close()
    append_after_damage(db)
    assert_damaged(
        verify(db),
        [
            (ProblemKind.CORRUPT, stream(2), VERSIONS + 1, LAST + 1),
            (ProblemKind.HEAD, "", 0, LAST + 2),  # one record more than the head counts
        ],
        torn_tail=False,
    )


def test_duplicated_row_under_another_stream(db: Path, raw: sqlite3.Connection) -> None:
    insert_copy(raw, position(2, 3), "stream-copy", 3, LAST + 1)
    insert_copy(raw, position(2, 4), stream(1), VERSIONS + 1, LAST + 2)
    raw.close()
    append_after_damage(db)
    assert_damaged(
        verify(db),
        [
            (ProblemKind.CORRUPT, "stream-copy", 3, LAST + 1),
            (ProblemKind.CORRUPT, stream(1), VERSIONS + 1, LAST + 2),
            (ProblemKind.HEAD, "", 0, LAST + 3),
        ],
        torn_tail=False,
    )


def test_duplicated_row_at_the_end_of_the_log_is_not_a_torn_tail(
    db: Path, raw: sqlite3.Connection
) -> None:
    # The head record says the log ended at position 30: a record after it was not written by
    # onward (a torn write cannot add one either: the head commits with the records).
    insert_copy(raw, position(2, 3), stream(2), VERSIONS + 1, LAST + 1)
    raw.close()
    report = verify(db)
    assert_damaged(
        report,
        [
            (ProblemKind.CORRUPT, stream(2), VERSIONS + 1, LAST + 1),
            (ProblemKind.HEAD, "", 0, LAST + 1),
        ],
        torn_tail=False,
    )
    assert "not appended by onward" in report.problems[1].detail
    assert report.head_record.status == "ok"  # the head covers positions 1..30, all intact


def test_states_swapped_between_streams(db: Path, raw: sqlite3.Connection) -> None:
    a, b = position(1, 2), position(3, 4)
    state_a, state_b = row(raw, a)[3], row(raw, b)[3]
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state_b, a)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state_a, b)
    raw.close()
    assert_damaged(
        verify(db),
        [(ProblemKind.CORRUPT, stream(1), 2, a), (ProblemKind.CORRUPT, stream(3), 4, b)],
        torn_tail=False,
    )


def test_states_swapped_within_a_stream(db: Path, raw: sqlite3.Connection) -> None:
    a, b = position(2, 2), position(2, 4)
    state_a, state_b = row(raw, a)[3], row(raw, b)[3]
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state_b, a)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state_a, b)
    raw.close()
    assert_damaged(
        verify(db),
        [(ProblemKind.CORRUPT, stream(2), 2, a), (ProblemKind.CORRUPT, stream(2), 4, b)],
        torn_tail=False,
    )


def swap_positions(connection: sqlite3.Connection, a: int, b: int) -> None:
    with connection:
        connection.execute("UPDATE stored_events SET rowid=? WHERE rowid=?", (-1, a))
        connection.execute("UPDATE stored_events SET rowid=? WHERE rowid=?", (a, b))
        connection.execute("UPDATE stored_events SET rowid=? WHERE rowid=?", (b, -1))


def test_rowids_swapped_within_a_stream(db: Path, raw: sqlite3.Connection) -> None:
    a, b = position(2, 3), position(2, 4)
    swap_positions(raw, a, b)
    raw.close()
    report = verify(db)
    assert_damaged(
        report,
        [
            # version 4 now comes first, straight after version 2 ...
            (ProblemKind.GAP, stream(2), 4, a),
            # ... and version 3 after it.
            (ProblemKind.ORDER, stream(2), 3, b),
        ],
        torn_tail=False,
    )


def test_rowids_swapped_at_the_end_of_the_log(db: Path, raw: sqlite3.Connection) -> None:
    # Version 6 of stream-4 moves before version 6 of stream-3, and version 5 of stream-4
    # to the very end: the last record is out of order, the one before it is a gap.
    swap_positions(raw, position(4, 5), position(4, 6))
    raw.close()
    report = verify(db)
    assert_damaged(
        report,
        [
            (ProblemKind.GAP, stream(4), 6, position(4, 5)),
            (ProblemKind.ORDER, stream(4), 5, position(4, 6)),
        ],
        torn_tail=False,
    )


def reseal(connection: sqlite3.Connection, pos: int, *, note: str, prev: str | None = None) -> None:
    """Replace the record at ``pos`` with a different event, sealed with a valid checksum."""
    stream_id, version, topic, state = row(connection, pos)
    codec = Codec()
    old = codec.decode(stream_id, version, pos, topic, state)
    meta = Meta(
        checksum=Codec.placeholder(),
        prev=old.meta.prev if prev is None else prev,
        event_id=old.meta.event_id,
        time=old.meta.time,
    )
    event_json = codec.encode_event(TaskProgressed(fraction=0.0, note=note))
    sealed = Codec.seal(stream_id, version, topic, codec.encode_meta(meta), event_json)
    assert Codec.check(stream_id, version, topic, sealed) is None
    execute(connection, "UPDATE stored_events SET state=? WHERE rowid=?", sealed, pos)


def test_rewritten_record_with_a_valid_checksum_breaks_the_next_link(
    db: Path, raw: sqlite3.Connection
) -> None:
    reseal(raw, position(2, 3), note="forged")
    raw.close()
    report = verify(db)
    assert_damaged(report, [(ProblemKind.CHAIN, stream(2), 4, position(2, 4))], torn_tail=False)


def test_rewritten_record_with_a_wrong_link(db: Path, raw: sqlite3.Connection) -> None:
    reseal(raw, position(2, 3), note="forged", prev="f" * 32)
    raw.close()
    assert_damaged(
        verify(db),
        [
            (ProblemKind.CHAIN, stream(2), 3, position(2, 3)),
            (ProblemKind.CHAIN, stream(2), 4, position(2, 4)),
        ],
        torn_tail=False,
    )


# -- torn tail or damage in the middle -------------------------------------------------------


def test_truncated_last_record_is_a_torn_tail(db: Path, raw: sqlite3.Connection) -> None:
    _, _, _, state = row(raw, LAST)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state[:50], LAST)
    raw.close()
    assert_damaged(verify(db), [(ProblemKind.CORRUPT, stream(4), 6, LAST)], torn_tail=True)


def test_last_records_of_several_streams_damaged_is_a_torn_tail(
    db: Path, raw: sqlite3.Connection
) -> None:
    for pos in (LAST - 2, LAST - 1, LAST):
        _, _, _, state = row(raw, pos)
        execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", flip(state, 100), pos)
    raw.close()
    assert_damaged(
        verify(db),
        [
            (ProblemKind.CORRUPT, stream(2), 6, LAST - 2),
            (ProblemKind.CORRUPT, stream(3), 6, LAST - 1),
            (ProblemKind.CORRUPT, stream(4), 6, LAST),
        ],
        torn_tail=True,
    )


def test_damage_to_a_stream_end_in_the_middle_of_the_log_is_not_a_torn_tail(
    db: Path, raw: sqlite3.Connection
) -> None:
    # The last event of stream-0 is not the last event of the log: intact records follow it.
    pos = position(0, VERSIONS)
    _, _, _, state = row(raw, pos)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state[:50], pos)
    raw.close()
    assert_damaged(verify(db), [(ProblemKind.CORRUPT, stream(0), 6, pos)], torn_tail=False)


def test_damage_at_the_end_and_in_the_middle_is_not_a_torn_tail(
    db: Path, raw: sqlite3.Connection
) -> None:
    for pos in (position(1, 2), LAST):
        _, _, _, state = row(raw, pos)
        execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state[:50], pos)
    raw.close()
    assert_damaged(
        verify(db),
        [
            (ProblemKind.CORRUPT, stream(1), 2, position(1, 2)),
            (ProblemKind.CORRUPT, stream(4), 6, LAST),
        ],
        torn_tail=False,
    )


# -- the command line ------------------------------------------------------------------------


def onward(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("onward")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "onward"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_verify_exits_0_on_a_clean_log(db: Path) -> None:
    done = onward("verify", "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert f"{LAST} events in {STREAMS} streams" in done.stdout
    assert done.stderr == ""


def test_cli_verify_accepts_a_url(db: Path) -> None:
    done = onward("verify", "--db", f"sqlite:///{db}")
    assert done.returncode == 0, done.stderr


def test_cli_verify_exits_1_on_damage_and_says_where(db: Path, raw: sqlite3.Connection) -> None:
    pos = position(2, 3)
    _, _, _, state = row(raw, pos)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", flip(state, 80), pos)
    raw.close()
    done = onward("verify", "--db", str(db))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DAMAGED" in done.stdout
    assert "middle" in done.stdout
    assert f"position {pos}" in done.stdout
    assert "'stream-2'" in done.stdout
    assert "version 3" in done.stdout


def test_cli_verify_reports_a_torn_tail(db: Path, raw: sqlite3.Connection) -> None:
    _, _, _, state = row(raw, LAST)
    execute(raw, "UPDATE stored_events SET state=? WHERE rowid=?", state[:30], LAST)
    raw.close()
    done = onward("verify", "--db", str(db))
    assert done.returncode == 1
    assert "torn tail" in done.stdout
    assert f"position {LAST}" in done.stdout


TORN = "a torn tail (a write cut short at the end of the log)"
GONE = "the newest records are gone (from the end of the log)"
MIDDLE = "damage in the middle of the log"


@pytest.mark.parametrize(
    ("damage", "places"),
    [
        (f"DELETE FROM stored_events WHERE rowid = {LAST}", [GONE]),
        (f"DELETE FROM stored_events WHERE rowid >= {LAST - 2}", [GONE]),
        (f"UPDATE stored_events SET state = substr(state, 1, 30) WHERE rowid = {LAST}", [TORN]),
        (f"DELETE FROM stored_events WHERE rowid = {position(2, 3)}", [MIDDLE]),
        (f"DELETE FROM stored_events WHERE rowid IN ({position(2, 3)}, {LAST})", [GONE, MIDDLE]),
    ],
    ids=["newest-gone", "newest-three-gone", "torn", "middle", "middle-and-newest-gone"],
)
def test_cli_verify_says_where_the_damage_is_as_its_details_do(
    db: Path, raw: sqlite3.Connection, damage: str, places: list[str]
) -> None:
    execute(raw, damage)
    raw.close()
    report = verify(db)
    assert report.where() == places
    done = onward("verify", "--db", str(db))
    assert done.returncode == 1
    count = len(report.problems)
    summary = f"DAMAGED: {count} problem{'s' if count != 1 else ''}: {'; '.join(places)}"
    assert done.stdout.splitlines()[0] == summary


def test_cli_verify_json(db: Path, raw: sqlite3.Connection) -> None:
    clean = onward("verify", "--db", str(db), "--json")
    assert clean.returncode == 0, clean.stderr
    report = json.loads(clean.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert (report["events"], report["streams"], report["head"]) == (LAST, STREAMS, LAST)

    execute(raw, "DELETE FROM stored_events WHERE rowid=?", position(2, 3))
    raw.close()
    damaged = onward("verify", "--db", str(db), "--json")
    assert damaged.returncode == 1, damaged.stderr
    report = json.loads(damaged.stdout)
    assert report["ok"] is False
    assert report["torn_tail"] is False
    missing, problem = report["problems"]
    assert (missing["kind"], missing["position"]) == ("missing", position(2, 3))
    assert problem["kind"] == "gap"
    assert (problem["stream"], problem["version"], problem["position"]) == (
        stream(2),
        4,
        position(2, 4),
    )


# -- damage to the database's own structure ----------------------------------------------------


def test_a_damaged_index_is_found_though_every_record_checks_out(
    db: Path, raw: sqlite3.Connection
) -> None:
    """The records were intact and verify said ok, while SQLite's index of (stream, version)
    no longer named stream-2: every read of that stream came back empty (a resumed task's
    history, an import's "already there")."""
    (index_page,) = raw.execute(
        "SELECT rootpage FROM sqlite_master WHERE name='sqlite_autoindex_stored_events_1'"
    ).fetchone()
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    raw.close()
    data = bytearray(db.read_bytes())
    page = slice((index_page - 1) * page_size, index_page * page_size)
    named = bytes(data[page]).replace(b"stream-2", b"stream-r")  # in the index only
    assert named != bytes(data[page])
    data[page] = named
    db.write_bytes(bytes(data))
    with open_log(f"sqlite:///{db}") as log:
        assert log.read_stream(stream(2)) == []  # what the engine and an import would see
    report = verify(db)
    assert not report.ok
    assert {p.kind for p in report.problems} == {ProblemKind.STORAGE}
    assert {(p.stream, p.version, p.position) for p in report.problems} >= {
        (stream(2), version, position(2, version)) for version in range(1, VERSIONS + 1)
    }
    assert any("REINDEX" in place for place in report.where())
    done = onward("verify", "--db", str(db))
    assert done.returncode == 1, done.stderr
    assert "missing from index" in done.stdout
    with closing(sqlite3.connect(db)) as repair:
        repair.execute("REINDEX")
    assert verify(db).ok
    with open_log(f"sqlite:///{db}") as log:
        assert len(log.read_stream(stream(2))) == VERSIONS


def test_a_damaged_index_of_another_table_is_blamed_on_no_stream(tmp_path: Path) -> None:
    """A row of the blobs' table missing from its index was named by its rowid as if it were
    a record's position: an intact stream was listed as damaged."""
    path = tmp_path / "blobs.db"
    with open_log(f"sqlite:///{path}", inline_limit=1000) as log:
        log.append("task-innocent", [TaskProgressed(fraction=0.1)], expected_version=0)
        log.append("task-big", [TaskProgressed(fraction=0.2, note="q" * 5000)], expected_version=0)
    with closing(sqlite3.connect(path)) as raw:
        (index_page,) = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE name='sqlite_autoindex_onward_blobs_1'"
        ).fetchone()
        (page_size,) = raw.execute("PRAGMA page_size").fetchone()
        (digest,) = raw.execute("SELECT digest FROM onward_blobs").fetchone()
    data = bytearray(path.read_bytes())
    page = slice((index_page - 1) * page_size, index_page * page_size)
    other = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    data[page] = bytes(data[page]).replace(digest.encode(), other.encode())
    path.write_bytes(bytes(data))
    report = verify(path)
    storage = [p for p in report.problems if p.kind is ProblemKind.STORAGE]
    assert storage
    assert all((p.stream, p.position) == ("", 0) for p in storage)
    assert "onward_blobs" in storage[0].detail
    assert "task-innocent" not in {d.stream for d in report.damaged_streams}


def test_cli_verify_on_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    path = tmp_path / "not-a-log.db"
    path.write_bytes(b"this is not an SQLite database" * 100)
    done = onward("verify", "--db", str(path))
    assert done.returncode not in (0, 1)
    assert str(path) in done.stderr
    assert "Traceback" not in done.stderr


class _Unbounded:
    """A bound every time passes: NaN, which the log stores as null, slips past the check on
    what a clock gives (as it did before there was one)."""

    def __le__(self, other: object) -> bool:
        return True

    def __gt__(self, other: object) -> bool:
        return True


def test_a_record_that_does_not_decode_is_damage_that_verify_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its checksum holds (it was written as it is), but no read can decode it: ``onward
    sessions`` called its session damaged and sent the reader to ``onward verify``, which said
    ok."""
    from onward.cli.main import main
    from onward.projections import verify_log

    db = tmp_path / "nan.db"
    with open_log(f"sqlite:///{db}") as log, monkeypatch.context() as patched:
        patched.setattr("onward.events.log._FIRST", _Unbounded())
        patched.setattr("onward.events.log._LAST", _Unbounded())
        log.clock = lambda: float("nan")
        log.append("task-a", [TaskSubmitted(name="job", args=[])], expected_version=0)
    with open_log(f"sqlite:///{db}") as log:
        assert log.verify().ok  # each record's own check holds
        report = verify_log(log)
    assert not report.ok
    assert [(p.stream, p.version) for p in report.problems] == [("task-a", 1)]
    assert "does not decode" in report.problems[0].detail
    assert main(["verify", "--db", str(db)]) == 1


# -- events of a newer onward ----------------------------------------------------------------


def test_events_of_a_newer_onward_are_named_not_damage(db: Path, raw: sqlite3.Connection) -> None:
    """``verify`` says which event types it does not know: intact records, so ok, but a
    person reading an ok log written by a newer onward learns that some of it is not folded."""

    class FromTheFuture(Event, frozen=True, kw_only=True, tag="FromTheFuture.v1"):
        """An event type a newer onward might write."""

        detail: str = ""

    with open_log(f"sqlite:///{db}") as writer:
        writer.codec.register(FromTheFuture)
        writer.append(stream(0), [FromTheFuture(detail="x")], expected_version=VERSIONS)
        writer.append(stream(1), [FromTheFuture(detail="y")], expected_version=VERSIONS)
    # A flipped bit in a known record's topic makes a tag no onward knows: that record is
    # damage, and its tag is not named as a newer onward's.
    _, _, topic, _ = row(raw, position(2, 3))
    flipped = flip_text(topic, 0, 1)
    execute(raw, "UPDATE stored_events SET topic=? WHERE rowid=?", flipped, position(2, 3))
    # This process knows the class it defined: read as an onward without it, by tag.
    known = [t for t in all_event_types() if t.__struct_config__.tag != "FromTheFuture.v1"]

    def verify_older() -> VerifyReport:
        with open_log(f"sqlite:///{db}", codec=Codec(types=known)) as log:
            return log.verify()

    report = verify_older()
    assert where(report) == [(ProblemKind.CORRUPT, stream(2), 3, position(2, 3))]
    assert report.unknown_types == ["FromTheFuture.v1"]

    execute(raw, "UPDATE stored_events SET topic=? WHERE rowid=?", topic, position(2, 3))
    report = verify_older()
    assert report.ok
    assert report.unknown_types == ["FromTheFuture.v1"]
    assert verify(db).unknown_types == []  # this process's own codec knows it
    cli = [sys.executable, "-m", "onward", "verify", "--db", str(db)]
    done = subprocess.run(cli, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok: {LAST + 2} events")
    note = "event types this onward does not know (a newer onward wrote them): FromTheFuture.v1"
    assert note in done.stdout
    done = subprocess.run([*cli, "--json"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["unknown_types"] == ["FromTheFuture.v1"]

    # An upcaster reading the old tag makes it known.
    codec = Codec(types=known)
    assert not codec.knows("FromTheFuture.v1")
    codec.register_upcaster("FromTheFuture.v1", lambda data: ("TaskProgressed", data))
    assert codec.knows("FromTheFuture.v1")
    assert codec.knows("TaskProgressed")


def test_a_log_of_known_events_names_no_unknown_type(db: Path) -> None:
    assert verify(db).unknown_types == []
