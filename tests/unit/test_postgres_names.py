"""A PostgreSQL log under names PostgreSQL reads otherwise when they are not quoted, and under
a role that may not do everything, on the real server."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from onward import Engine
from onward.events import open_log
from tests.conftest import POSTGRES_URL, FakeClock

pytestmark = pytest.mark.postgres

BASE = POSTGRES_URL.split("?")[0]


@pytest.fixture
def schema_named() -> Iterator[list[str]]:
    """Schemas to make, each dropped afterwards."""
    made: list[str] = []
    yield made
    with psycopg.connect(BASE, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def run_two_tasks(url: str, clock: FakeClock, **options: object) -> int:
    with Engine.open(url, session="names", clock=clock, sleep=clock.advance, **options) as engine:

        @engine.step()
        def double(i: int) -> int:
            return 2 * i

        @engine.task()
        def job(i: int) -> int:
            return double(i) + double(i + 1)

        for i in range(2):
            engine.submit(job, i)
        return engine.run().succeeded


@pytest.mark.parametrize(
    "make", [lambda tag: f"MySchema_{tag}", lambda tag: "é" * 24 + f"_{tag}"], ids=["case", "utf8"]
)
def test_a_schema_with_capitals_or_letters_of_two_bytes_is_created_found_and_woken(
    schema_named: list[str], clock: FakeClock, make: object
) -> None:
    """A schema name with capitals was created quoted and looked up unquoted (``myschema``:
    "does not exist" at every open); one of 55 bytes in 31 characters made a notification
    channel over PostgreSQL's 63 bytes (every waking append failed)."""
    assert callable(make)
    schema = make(uuid.uuid4().hex[:6])
    schema_named.append(schema)
    url = f"{BASE}?schema={schema}"
    assert run_two_tasks(url, clock) == 2
    with open_log(url, create=False) as log:  # found as it was created
        assert log.verify().ok
        assert log.head() > 0
    assert run_two_tasks(url, clock) == 2  # opened again, not created again


def test_a_role_that_may_not_delete_checkpoints_runs_its_tasks(
    schema_named: list[str], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An append-only role (SELECT and INSERT on the tables, as an operator grants a worker)
    cannot remove old checkpoints: the run went on failing with ``BackendError`` at the
    first checkpoint; a checkpoint only saves time, so it is kept with a warning."""
    schema = "onward_test_" + uuid.uuid4().hex[:12]
    role = "onward_append_" + uuid.uuid4().hex[:8]
    schema_named.append(schema)
    url = f"{BASE}?schema={schema}"
    open_log(url).close()  # the tables, made by the owner
    with psycopg.connect(BASE, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
            conn.execute(f'GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
            as_role = url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
            assert as_role != url
            with caplog.at_level(logging.WARNING):
                assert run_two_tasks(as_role, clock, checkpoint_every=5) == 2
            assert "the older ones were not removed" in caplog.text
            assert "permission denied" in caplog.text
        finally:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


def test_a_table_prefix_with_capitals_is_taken_as_written_as_the_schema_is(
    schema_named: list[str], clock: FakeClock
) -> None:
    """``?schema=`` kept its capitals while ``?table=`` was lower-cased: both are now taken as
    written (quoted identifiers)."""
    schema = "onward_test_" + uuid.uuid4().hex[:12]
    schema_named.append(schema)
    url = f"{BASE}?schema={schema}&table=Nightly"
    assert run_two_tasks(url, clock) == 2
    with psycopg.connect(BASE, autocommit=True) as conn:
        found = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
            " ORDER BY table_name",
            (schema,),
        ).fetchall()
    assert [name for (name,) in found] == ["Nightly_blobs", "Nightly_checkpoints", "Nightly_events"]
    with open_log(f"{BASE}?schema={schema}&table=nightly") as other:
        assert other.head() == 0  # another log: the names differ as written


def test_a_log_made_under_the_lower_cased_prefix_is_opened_not_made_again(
    schema_named: list[str], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A log an earlier onward made for ``?table=Nightly`` lives in ``nightly_events``: the
    same URL opens it (with a warning), instead of making a new empty log beside it."""
    schema = "onward_test_" + uuid.uuid4().hex[:12]
    schema_named.append(schema)
    assert run_two_tasks(f"{BASE}?schema={schema}&table=nightly", clock) == 2
    with caplog.at_level(logging.WARNING, logger="onward"):
        log = open_log(f"{BASE}?schema={schema}&table=Nightly")
    with log:
        assert log.head() > 0
        assert log.verify().ok
    assert any("lower-cased name 'nightly'" in r.getMessage() for r in caplog.records)
