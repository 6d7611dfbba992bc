"""Damage done to a PostgreSQL log behind onward's back is caught where the data is used and
contained to its stream, as on SQLite; the PostgreSQL backend keeps no head record (yet), and
``verify`` says so instead of failing.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from onward.events import CorruptRecord, TaskClaimed, TaskSubmitted, open_log
from onward.projections import CatchUp, verify_log
from tests.conftest import POSTGRES_URL, FakeClock

pytestmark = pytest.mark.postgres


def events_table(url: str, kind: str = "events") -> str:
    schema = parse_qs(urlsplit(url).query)["schema"][0]
    with psycopg.connect(POSTGRES_URL.split("?")[0]) as conn:
        (name,) = conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = %s AND table_name LIKE %s",
            (schema, f"%{kind}"),
        ).fetchone() or ("",)
    assert name, f"no {kind} table in schema {schema}"
    return f'"{schema}"."{name}"'


def test_a_tampered_record_is_refused_and_contained(postgres_url: str, clock: FakeClock) -> None:
    with open_log(postgres_url, clock=clock) as log:
        for task in ("a", "b"):
            log.append(f"task-{task}", [TaskSubmitted(name="job")], expected_version=0)
        log.append("task-a", [TaskClaimed(worker="w", lease_until=2e9)], expected_version=1)
        (victim,) = [r for r in log.read_stream("task-a") if r.version == 2]
        report = log.verify()
        assert report.ok
        assert report.head_record.status == "not tracked"
        assert log.head_record() is None
    table = events_table(postgres_url)
    with psycopg.connect(POSTGRES_URL.split("?")[0]) as conn:
        (state,) = conn.execute(
            f"SELECT state FROM {table} WHERE notification_id = %s", (victim.position,)
        ).fetchone()
        conn.execute(
            f"UPDATE {table} SET state = %s WHERE notification_id = %s",
            (bytes(state).replace(b'"w"', b'"x"'), victim.position),
        )

    with open_log(postgres_url) as log:
        with pytest.raises(CorruptRecord) as caught:
            log.read_stream("task-a")
        assert (caught.value.stream, caught.value.version, caught.value.position) == (
            "task-a",
            2,
            victim.position,
        )
        with pytest.raises(CorruptRecord):
            list(log.read())
        projections = CatchUp(log, checkpoint_every=0).open()
        assert projections.tasks.tasks["a"].state == "damaged"
        assert projections.tasks.tasks["b"].state == "queued"
        report = verify_log(log)
    assert not report.ok
    assert [(d.stream, d.version, d.kind) for d in report.damaged_streams] == [
        ("task-a", 2, "corrupt")
    ]
    assert report.head_record.status == "not tracked"


@pytest.mark.parametrize(
    "edit",
    [
        "SET topic = jsonb_set(topic::jsonb, '{1}', to_jsonb((topic::jsonb->>1)::bigint - 1))",
        "SET state = NULL",
    ],
    ids=["earlier-position", "null-state"],
)
def test_a_checkpoint_changed_since_it_was_saved_is_ignored(
    postgres_url: str, clock: FakeClock, edit: str
) -> None:
    with open_log(postgres_url, clock=clock) as log:
        for task in ("a", "b", "c"):
            log.append(f"task-{task}", [TaskSubmitted(name="job")], expected_version=0)
            log.append(
                f"task-{task}", [TaskClaimed(worker="w", lease_until=2e9)], expected_version=1
            )
        host = CatchUp(log, checkpoint_every=0)
        replayed = host.open().snapshot()
        host.checkpoint()
        assert log.load_checkpoint("core") is not None
    with psycopg.connect(POSTGRES_URL.split("?")[0]) as conn:
        conn.execute(f"UPDATE {events_table(postgres_url, 'checkpoints')} {edit}")
    with open_log(postgres_url) as log:
        assert log.load_checkpoint("core") is None
        again = CatchUp(log, checkpoint_every=0)
        assert again.open().snapshot() == replayed
        assert again.loaded_checkpoint is None


def test_a_checkpoint_of_another_log_is_ignored(postgres_url: str, clock: FakeClock) -> None:
    """A checkpoint row copied from another log (of another schema), sealed as onward saved
    it, at a position this log holds too: it is ignored and the log folded."""
    other_url = postgres_url.replace("?schema=", "?schema=dmg_other_")
    try:
        with open_log(other_url, clock=clock) as other:
            for task in ("x", "y", "z"):
                other.append(f"task-{task}", [TaskSubmitted(name="job")], expected_version=0)
            host = CatchUp(other, checkpoint_every=0)
            host.open()
            host.checkpoint()
        with open_log(postgres_url, clock=clock) as log:
            for task in ("a", "b", "c", "d"):
                log.append(f"task-{task}", [TaskSubmitted(name="job")], expected_version=0)
            replayed = CatchUp(log, checkpoint_every=0).open().snapshot()
        mine = events_table(postgres_url, "checkpoints")
        theirs = events_table(other_url, "checkpoints")
        with psycopg.connect(POSTGRES_URL.split("?")[0]) as conn:
            conn.execute(f"INSERT INTO {mine} SELECT * FROM {theirs}")
        with open_log(postgres_url) as log:
            assert log.load_checkpoint("core") is None
            again = CatchUp(log, checkpoint_every=0)
            assert again.open().snapshot() == replayed
            assert again.loaded_checkpoint is None
    finally:
        schema = parse_qs(urlsplit(other_url).query)["schema"][0]
        with psycopg.connect(POSTGRES_URL.split("?")[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
