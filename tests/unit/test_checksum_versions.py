"""Records carry an xxh3-128 checksum; records an older onward wrote carry blake2b-128, and both
pass every check: replay, reads, ``verify``. Damage to either kind is still found.

An older log is made from a new one as an onward before xxh3 would have written it: each
record's checksum is blake2b over its stream, version, tag and body, its ``prev`` names its
predecessor's blake2b checksum, and the head record's chain links those checksums.
"""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import xxhash

from onward.events import Recorded, TaskProgressed, TaskSubmitted, open_log
from onward.events.codec import LAYOUT, Codec, legacy_checksum, record_checksum, tag_seed
from onward.events.integrity import CHAIN_START, advance_chain, check_decoded, check_rows
from onward.projections import CatchUp
from onward.projections.reading import FoldReader
from tests.conftest import FakeClock

START, END = LAYOUT.checksum
PREV_START, PREV_END = LAYOUT.prev


def write(path: Path, clock: FakeClock, streams: range, first_version: int) -> None:
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        for i in streams:
            for version in range(first_version, first_version + 3):
                event = (
                    TaskSubmitted(name=f"job-{i}", args=[i])
                    if version == 1
                    else TaskProgressed(fraction=version / 10, note=f"stream-{i} v{version}")
                )
                log.append(f"stream-{i}", [event], expected_version=version - 1)
                clock.advance(1.0)


def rows(path: Path) -> list[tuple[int, str, int, str, bytes]]:
    with closing(sqlite3.connect(path)) as raw:
        return raw.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events"
            " ORDER BY rowid"
        ).fetchall()


def to_legacy(path: Path) -> None:
    """Rewrite a closed log's records and head as an onward before xxh3 wrote them."""
    last: dict[str, str] = {}
    checksums: list[bytes] = []
    with closing(sqlite3.connect(path)) as raw, raw:
        for position, stream, version, topic, state in rows(path):
            body = state[END:]
            if body.startswith(LAYOUT.prev_prefix):
                offset = PREV_START - END
                body = (
                    body[:offset] + last[stream].encode() + body[offset + PREV_END - PREV_START :]
                )
            checksum = legacy_checksum(stream, version, topic, body)
            last[stream] = checksum
            checksums.append(checksum.encode())
            raw.execute(
                "UPDATE stored_events SET state=? WHERE rowid=?",
                (state[:START] + checksum.encode() + body, position),
            )
        (base,) = raw.execute("SELECT base FROM onward_head").fetchone()
        assert base == 0
        raw.execute("UPDATE onward_head SET chain=?", (advance_chain(CHAIN_START, checksums),))


@pytest.fixture
def legacy_log(tmp_path: Path, clock: FakeClock) -> Path:
    """A log of 4 streams x 3 events sealed with blake2b, as an older onward wrote it."""
    path = tmp_path / "log.db"
    write(path, clock, range(4), 1)
    to_legacy(path)
    return path


def test_new_records_carry_xxh3_seeded_with_stream_tag_and_version(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "log.db"
    write(path, clock, range(2), 1)
    for _p, stream, version, topic, state in rows(path):
        seed = (
            xxhash.xxh3_64_intdigest(stream.encode())
            ^ xxhash.xxh3_64_intdigest(topic.encode(), 1)
            ^ (version * 0x9E3779B97F4A7C15 % 2**64)
        )
        assert state[START:END].decode() == xxhash.xxh3_128_hexdigest(state[END:], seed)
        assert state[START:END].decode() == record_checksum(stream, version, topic, state[END:])
        assert state[START:END].decode() != legacy_checksum(stream, version, topic, state[END:])
        for other in (
            record_checksum(stream + "x", version, topic, state[END:]),
            record_checksum(stream, version + 1, topic, state[END:]),
            record_checksum(stream, version, topic + "x", state[END:]),
            record_checksum(topic, version, stream, state[END:]),  # the two trading places
        ):
            assert other != state[START:END].decode()


def test_an_append_of_several_types_seals_each_with_its_own_tag(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "log.db"
    mixed = [TaskSubmitted(name="job", args=[1]), TaskProgressed(fraction=0.5, note="half")] * 2
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        log.append("stream-a", mixed, expected_version=0)
        log.append("stream-b", mixed[::-1], expected_version=0)
        log.append("stream-a", mixed[1:], expected_version=4)
    found = rows(path)
    assert [(r[1], r[2], r[3]) for r in found[:2]] == [
        ("stream-a", 1, "TaskSubmitted"),
        ("stream-a", 2, "TaskProgressed"),
    ]
    for _p, stream, version, topic, state in found:
        assert state[START:END].decode() == record_checksum(stream, version, topic, state[END:])
    assert check_rows(found) == []


def test_the_head_chain_links_each_checksum_with_blake2b_128() -> None:
    checksums = [b"%032x" % i for i in range(5)]
    link = bytes.fromhex(CHAIN_START)
    for checksum in checksums:
        link = hashlib.blake2b(link + checksum, digest_size=16).digest()
    assert advance_chain(CHAIN_START, checksums) == link.hex()
    assert advance_chain(advance_chain(CHAIN_START, checksums[:2]), checksums[2:]) == link.hex()
    assert advance_chain(CHAIN_START, []) == CHAIN_START


def test_an_older_log_reads_replays_and_verifies(legacy_log: Path, clock: FakeClock) -> None:
    stored = rows(legacy_log)
    for _p, stream, version, topic, state in stored:
        assert state[START:END].decode() == legacy_checksum(stream, version, topic, state[END:])
        assert Codec.check(stream, version, topic, state) is None
    assert check_rows(stored) == []
    with open_log(f"sqlite:///{legacy_log}", clock=clock) as log:
        assert log.verify().ok
        assert [len(log.read_stream(f"stream-{i}")) for i in range(4)] == [3, 3, 3, 3]
        projections = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
        assert projections.position == len(stored)
        assert not projections.damaged


def test_newer_appends_continue_an_older_log(legacy_log: Path, clock: FakeClock) -> None:
    write(legacy_log, clock, range(4), 4)  # versions 4..6 of the same streams, now xxh3
    write(legacy_log, clock, range(4, 6), 1)  # and new streams
    stored = rows(legacy_log)
    assert len(stored) == 4 * 6 + 2 * 3
    assert check_rows(stored) == []
    with open_log(f"sqlite:///{legacy_log}", clock=clock) as log:
        report = log.verify()
        assert report.ok, report.problems
        projections = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
        assert projections.position == len(stored)
        assert not projections.damaged


@pytest.mark.parametrize("older", [True, False], ids=["blake2b record", "xxh3 record"])
def test_a_flipped_byte_is_found_in_either_kind(
    tmp_path: Path, clock: FakeClock, older: bool
) -> None:
    path = tmp_path / "log.db"
    write(path, clock, range(3), 1)
    if older:
        to_legacy(path)
    position, stream, version, _topic, state = rows(path)[4]
    damaged = state.replace(b"v2", b"v7") if b"v2" in state else state[:-3] + b"9}}"
    assert damaged != state
    with closing(sqlite3.connect(path)) as raw, raw:
        raw.execute("UPDATE stored_events SET state=? WHERE rowid=?", (damaged, position))
    bad = check_rows(rows(path))
    assert [index for index, _why in bad] == [4]
    assert "checksum mismatch" in bad[0][1]
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        report = log.verify()
        assert not report.ok
        assert [(p.stream, p.version, p.position) for p in report.problems][:1] == [
            (stream, version, position)
        ]


@pytest.mark.parametrize("older", [True, False], ids=["blake2b records", "xxh3 records"])
def test_decoded_pages_are_checked_and_the_fold_reads_each_page_once(
    tmp_path: Path, clock: FakeClock, older: bool
) -> None:
    """A decoded page checks with the tags of the types it decoded: an intact page of either
    kind passes; a flipped byte, or a record moved to another stream, fails it. The fold
    reader reads each page once, with its tag column, and checks it as every reader does
    (a rewritten tag column is damage too)."""
    path = tmp_path / "log.db"
    write(path, clock, range(3), 1)
    if older:
        to_legacy(path)
    states = [(p, s, v, st) for p, s, v, _t, st in rows(path)]
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        reader = FoldReader(log)
        records = [
            Recorded(s, v, p, (both := reader._decode(st)).meta, both.event)
            for p, s, v, st in states
        ]
        seeds = {type(r.event): tag_seed(type(r.event).__struct_config__.tag) for r in records}
        assert check_decoded(states, records, seeds)
        p, s, v, st = states[4]
        flipped = st.replace(b"v2", b"v7") if b"v2" in st else st[:-3] + b"9}}"
        for damaged in ((p, s, v, flipped), (p, "stream-9", v, st), (p, s, v + 1, st)):
            changed = [*states[:4], damaged, *states[5:]]
            assert not check_decoded(changed, records, seeds)
        # Each page is read once.
        again: list[int] = []
        read_rows = log.read_rows
        log.read_rows = lambda **kw: again.append(1) or read_rows(**kw)  # type: ignore[method-assign]
        pages = [page for page in reader.pages(page_size=4) if isinstance(page, list)]
        assert sum(len(page) for page in pages) == len(states)
        assert 1 <= len(again) <= len(pages)  # no page is read twice
