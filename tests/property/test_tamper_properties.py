"""Any single record removed, or any single bit flipped in any column of any record, of a real
SQLite log is reported by ``verify`` (and the fold never takes the damaged record as intact).

The log is built once with the engine (two sessions, tasks that succeed, fail and wait, step
outcomes); each example damages a fresh copy of the file through a raw sqlite3 connection.
"""

from __future__ import annotations

import itertools
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from onward import Engine
from onward.events import open_log
from onward.projections import CatchUp, verify_log
from tests.conftest import FakeClock

COLUMNS = ("originator_id", "originator_version", "topic", "state")
_copies = itertools.count()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A closed log file and its number of records."""
    directory = tmp_path_factory.mktemp("tamper")
    path = directory / "template.db"
    clock = FakeClock()
    for session in ("nightly", "weekly"):
        with Engine.open(
            f"sqlite:///{path}", session=session, clock=clock, sleep=clock.advance
        ) as engine:

            @engine.step(name="fetch")
            def fetch(i: int) -> int:
                return i * 2

            @engine.task(name="job")
            def job(n: int) -> int:
                if n < 0:
                    raise ValueError("negative")
                return sum(fetch(i) for i in range(n))

            for n in (3, -1, 2):
                engine.submit(job, n)
            engine.run()
    assert not Path(f"{path}-wal").exists()
    with closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM stored_events").fetchone()
    return path, int(count)


def fresh_copy(template: Path) -> Path:
    copy = template.parent / f"copy-{next(_copies)}.db"
    shutil.copyfile(template, copy)
    return copy


def assert_caught(path: Path) -> None:
    with open_log(f"sqlite:///{path}") as log:
        report = verify_log(log)
        assert not report.ok
        assert report.problems
        assert not log.verify().ok  # the records alone already show it
        CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)  # the fold never raises


SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(data=st.data())
def test_any_single_record_removed_is_reported(
    template: tuple[Path, int], data: st.DataObject
) -> None:
    path, count = template
    copy = fresh_copy(path)
    position = data.draw(st.integers(1, count), label="position")
    with closing(sqlite3.connect(copy)) as db, db:
        db.execute("DELETE FROM stored_events WHERE rowid = ?", (position,))
    assert_caught(copy)
    copy.unlink()


@SETTINGS
@given(data=st.data())
def test_any_single_bit_flipped_is_reported(
    template: tuple[Path, int], data: st.DataObject
) -> None:
    path, count = template
    copy = fresh_copy(path)
    position = data.draw(st.integers(1, count), label="position")
    column = data.draw(st.sampled_from(COLUMNS), label="column")
    with closing(sqlite3.connect(copy)) as db:
        (value,) = db.execute(
            f"SELECT {column} FROM stored_events WHERE rowid = ?", (position,)
        ).fetchone()
        if isinstance(value, int):
            bit = data.draw(st.integers(0, 20), label="bit")
            damaged: object = value ^ (1 << bit)
        else:
            raw = value.encode() if isinstance(value, str) else bytes(value)
            index = data.draw(st.integers(0, len(raw) - 1), label="byte")
            bit = data.draw(st.integers(0, 7), label="bit")
            flipped = raw[:index] + bytes([raw[index] ^ (1 << bit)]) + raw[index + 1 :]
            if isinstance(value, str):
                try:
                    damaged = flipped.decode()
                except UnicodeDecodeError:
                    damaged = flipped  # stored as a blob: still a damaged column
            else:
                damaged = flipped
        try:
            with db:
                db.execute(
                    f"UPDATE stored_events SET {column} = ? WHERE rowid = ?", (damaged, position)
                )
        except sqlite3.IntegrityError:
            assume(False)  # it became another record's stream and version: not one flip
    assert_caught(copy)
    copy.unlink()
