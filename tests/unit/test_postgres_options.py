"""A PostgreSQL log URL's query options: onward's own (``schema``, ``table``,
``connect_timeout``, ``call_timeout``) and libpq's connection parameters, passed to the
connection as they are; an option neither knows is refused; a password is masked wherever the
URL is shown."""

from __future__ import annotations

import os

import psycopg
import pytest

from onward.events import BackendError, InvalidURL, SessionStarted, open_log
from onward.events.postgres import PostgresLog, _safe

pytestmark = pytest.mark.postgres

#: A port nothing listens on: opening fails after the options are read.
NOBODY = "postgresql://postgres@127.0.0.1:1/test"


def show(log: object, setting: str) -> str:
    assert isinstance(log, PostgresLog)
    ((value,),) = log._connections.fetch(f"SHOW {setting}".encode(), ())
    return str(value)


def test_libpq_parameters_reach_the_connection(postgres_url: str) -> None:
    url = f"{postgres_url}&application_name=nightly-worker&options=-c%20statement_timeout%3D4321"
    with open_log(url) as log:
        assert show(log, "application_name") == "nightly-worker"
        assert show(log, "statement_timeout") == "4321ms"


def test_sslmode_is_not_dropped(postgres_url: str) -> None:
    # Refused whether or not the server speaks SSL: no such root certificate to verify it by.
    url = f"{postgres_url}&sslmode=verify-full&sslrootcert=/nonexistent/root.crt"
    with pytest.raises(BackendError, match=r"SSL|root certificate"):
        open_log(url)


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("bogus_option=1", "'bogus_option'"),
        ("schema=s&sslmod=require&x=1", "'sslmod', 'x'"),
        ("sslmode", "'sslmode' has no value"),
    ],
)
def test_an_unknown_option_is_refused_by_name(query: str, named: str) -> None:
    with pytest.raises(InvalidURL, match=named):
        open_log(f"{NOBODY}?{query}")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"{NOBODY}?password=hunter2secret", f"{NOBODY}?password=***"),
        (
            "postgresql://postgres:hunter2secret@127.0.0.1:1/test?schema=s",
            "postgresql://postgres:***@127.0.0.1:1/test?schema=s",
        ),
        (
            "postgresql://u:hunter2%40secret:x@127.0.0.1:1/test?sslpassword=hunter2secret&sslsni=0",
            "postgresql://u:***@127.0.0.1:1/test?sslpassword=***&sslsni=0",
        ),
        ("postgresql://u:hunter2secret@[::1/x?pass%77ord=hunter2secret", None),
        # A password that holds / # or ? unencoded: the URL is malformed, the password hidden.
        *(
            (
                f"postgresql://u:hunter2{c}secret@127.0.0.1:1/test",
                "postgresql://u:***@127.0.0.1:1/test",
            )
            for c in "/#?"
        ),
        # An option of another case, or misspelt, is unknown: refused, its value not shown.
        (
            f"{NOBODY}?PASSWORD=hunter2secret&sslmode=disable",
            f"{NOBODY}?PASSWORD=***&sslmode=disable",
        ),
        (f"{NOBODY}?passwrd=hunter2secret", f"{NOBODY}?passwrd=***"),
        # A known option whose value, percent-decoded, holds a secret: libpq's options (a
        # server setting given on connecting), an application name that carries a token.
        (
            f"{NOBODY}?options=-c%20app.password%3Dhunter2secret&sslmode=disable",
            f"{NOBODY}?options=***&sslmode=disable",
        ),
        (
            f"{NOBODY}?options=-c%20app.token%3D%22hunter2secret%22",
            f"{NOBODY}?options=***",
        ),
        (
            f"{NOBODY}?application_name=ci%20ghp_hunter2" + "a1B2c3D4e5" * 3 + "&connect_timeout=1",
            f"{NOBODY}?application_name=***&connect_timeout=1",
        ),
    ],
)
def test_a_password_is_masked_wherever_it_is(url: str, shown: str | None) -> None:
    masked = _safe(url)
    assert "hunter2" not in masked
    if shown is not None:
        assert masked == shown
        with pytest.raises((BackendError, InvalidURL)) as refused:
            open_log(url)
        assert "hunter2" not in str(refused.value)
        assert shown in str(refused.value)


def test_a_password_in_the_query_is_used_and_never_shown(postgres_url: str) -> None:
    with open_log(f"{postgres_url}&password=hunter2secret") as log:
        assert isinstance(log, PostgresLog)
        with log._connections.connect() as connection:
            assert connection.info.password == "hunter2secret"
        assert "hunter2" not in log.url
        assert "hunter2" not in repr(log)
        assert log.url.endswith("&password=***")


def test_a_secret_percent_encoded_in_the_options_is_used_and_never_shown(
    postgres_url: str,
) -> None:
    """A secret given in libpq's ``options`` reaches the server, and is neither in the log's
    URL nor in its repr, nor in what the redactor leaves of the URL (a message that quotes
    it, a log line)."""
    url = f"{postgres_url}&options=-c%20onward_test.password%3Dhunter2secret"
    with open_log(url) as log:
        assert show(log, "onward_test.password") == "hunter2secret"
        assert "hunter2" not in log.url
        assert "hunter2" not in repr(log)
        assert "hunter2" not in log.redactor.redact(f"cannot connect to {url}")


def _socket_options(log: object) -> tuple[int, int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_USER_TIMEOUT of a log's connection's
    socket, as the kernel has them."""
    import socket

    assert isinstance(log, PostgresLog)
    with log._connections.connect() as connection:
        sock = socket.socket(fileno=os.dup(connection.pgconn.socket))
        try:
            return (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            )
        finally:
            sock.close()


def test_a_cut_connection_fails_in_half_a_minute_not_at_the_kernels_give_up(
    postgres_url: str,
) -> None:
    """Keepalive probes and a TCP user timeout on every connection: a network split fails the
    call in flight (which the outage tolerance then counts) instead of hanging for 15 minutes
    or more. A URL's own settings replace them."""
    with open_log(postgres_url) as log:
        keepalive, idle, interval, user_timeout = _socket_options(log)
    assert keepalive != 0
    assert (idle, interval, user_timeout) == (10, 5, 30_000)
    with open_log(f"{postgres_url}&keepalives_idle=60&tcp_user_timeout=90000") as log:
        assert _socket_options(log)[1:] == (60, 5, 90_000)


def test_a_service_file_says_where_to_connect(
    postgres_url: str, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service names the server, the port, the user and the database; onward's defaults
    # (127.0.0.1:5432 as postgres) must not override it: here its port is the only right one.
    services = os.path.join(tmp_path, "pg_service.conf")
    with open(services, "w") as f:
        f.write("[nightly]\nhost=127.0.0.1\nport=5432\nuser=postgres\ndbname=test\n")
    monkeypatch.setenv("PGSERVICEFILE", services)
    schema = postgres_url.partition("?")[2]
    with open_log(f"postgresql://?service=nightly&{schema}") as log:
        assert show(log, "port") == "5432"
    # The same service on a port nobody listens on: the service's port is the one used.
    with open(services, "w") as f:
        f.write("[nightly]\nhost=127.0.0.1\nport=1\nuser=postgres\ndbname=test\n")
    with pytest.raises(BackendError, match="port 1"):
        open_log(f"postgresql:///test?service=nightly&{schema}&connect_timeout=2")


def test_libpq_environment_says_what_the_url_does_not(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = postgres_url.partition("?")[2]
    monkeypatch.setenv("PGPORT", "1")  # nobody listens there: the URL's port wins over it
    with open_log(f"postgresql://postgres@127.0.0.1:5432/test?{schema}") as log:
        assert show(log, "port") == "5432"
    with pytest.raises(BackendError, match="port 1"):
        open_log(f"postgresql://postgres@127.0.0.1/test?{schema}&connect_timeout=2")
    monkeypatch.setenv("PGPORT", "5432")
    monkeypatch.setenv("PGDATABASE", "test")
    with open_log(f"postgresql://postgres@127.0.0.1?{schema}") as log:  # no database named
        assert show(log, "port") == "5432"


def test_a_url_without_a_database_or_a_service_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(InvalidURL, match="names no database"):
        open_log("postgresql://postgres@127.0.0.1:1")


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        (f"schema=s{'x' * 63}", "schema 'sx"),  # 64 bytes
        (f"schema={'ü' * 32}", "schema 'ü"),  # 32 characters, 64 bytes
        (f"table={'ü' * 26}", "table prefix 'ü"),  # 26 characters, 52 bytes
    ],
)
def test_a_name_postgresql_would_cut_short_is_refused(query: str, refused: str) -> None:
    """PostgreSQL cuts names past 63 bytes without a word, so two such URLs that differ only
    past the cut opened one log: refused, counted in bytes, before any connection."""
    with pytest.raises(InvalidURL, match=refused):
        PostgresLog(f"postgresql://127.0.0.1:1/test?{query}")


def test_the_longest_names_postgresql_keeps_whole_are_taken(postgres_url: str) -> None:
    """A schema of 63 bytes and a table prefix of 51 bytes (non-ASCII) are used as given."""
    base = postgres_url.split("?", maxsplit=1)[0]
    schema = f"s{os.getpid()}_"
    schema += "ü" * ((63 - len(schema)) // 2)
    prefix = "ü" * 25 + "a"  # 51 bytes
    log = PostgresLog(f"{base}?schema={schema}&table={prefix}")
    try:
        log.append("session-a", [SessionStarted(name="a")], expected_version=0)
        assert [type(r.event) for r in log.read_stream("session-a")] == [SessionStarted]
        assert log.schema == schema
        with psycopg.connect(base) as conn:
            tables = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        assert {t for (t,) in tables} == {
            f"{prefix}_events",
            f"{prefix}_checkpoints",
            f"{prefix}_blobs",
        }
    finally:
        log.close()
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_an_option_given_twice_is_refused() -> None:
    """``?schema=a&schema=b`` opened schema b, silently (SQLite's options refuse it)."""
    with pytest.raises(InvalidURL, match="'schema' is given more than once") as refused:
        PostgresLog("postgresql://u:hunter2@127.0.0.1:1/test?schema=a&schema=b")
    assert "hunter2" not in str(refused.value)


class Attempts:
    """An opening that fails with the given messages, one per try, then succeeds."""

    def __init__(self, *said: str) -> None:
        self.said = list(said)
        self.tries = 0

    def __call__(self) -> None:
        self.tries += 1
        if self.said:
            raise psycopg.OperationalError(self.said.pop(0))


SHUTTING_DOWN = (
    'connection to server at "db", port 5432 failed: FATAL: the database system is shutting down'
)
REFUSED = 'connection to server at "db", port 5432 failed: Connection refused'


def through(attempts: Attempts, tolerance: float) -> list[float]:
    from onward.events.postgres import _through_a_restart

    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    _through_a_restart(
        attempts, "postgresql://db/test", tolerance, sleep=sleep, clock=lambda: now[0]
    )
    return pauses


def test_an_opening_waits_for_a_restarting_server_then_through_its_refusals() -> None:
    attempts = Attempts(SHUTTING_DOWN, SHUTTING_DOWN, REFUSED, REFUSED, REFUSED)
    pauses = through(attempts, 60)
    assert attempts.tries == 6
    assert pauses == sorted(pauses)
    assert len(pauses) == 5


def test_a_refusal_never_preceded_by_a_restart_fails_at_once() -> None:
    attempts = Attempts(REFUSED)
    with pytest.raises(psycopg.OperationalError, match="refused"):
        through(attempts, 60)
    assert attempts.tries == 1


def test_a_restart_longer_than_the_tolerance_fails_the_opening() -> None:
    attempts = Attempts(SHUTTING_DOWN, *[REFUSED] * 1000)
    with pytest.raises(psycopg.OperationalError, match="refused"):
        through(attempts, 10)
    assert 5 < attempts.tries < 1000
    zero = Attempts(SHUTTING_DOWN)
    with pytest.raises(psycopg.OperationalError, match="shutting down"):
        through(zero, 0)  # no tolerance: no wait


def test_a_standby_that_takes_no_connections_for_good_fails_the_opening_at_once() -> None:
    """57P03 says "the database system is ..." for a restart and for a standby with
    hot_standby off alike: only the restart's words are waited for."""
    standby = (
        'connection to server at "db", port 5432 failed: FATAL: the database system is not '
        "accepting connections DETAIL: Hot standby mode is disabled."
    )
    attempts = Attempts(standby, standby)
    with pytest.raises(psycopg.OperationalError, match="Hot standby"):
        through(attempts, 60)
    assert attempts.tries == 1
    for restarting in ("starting up", "in recovery mode", "not yet accepting connections"):
        said = f'connection to server at "db" failed: FATAL: the database system is {restarting}'
        attempts = Attempts(said)
        through(attempts, 60)
        assert attempts.tries == 2


def test_a_statement_unanswered_within_the_call_timeout_loses_its_connection(
    postgres_url: str,
) -> None:
    from eventsourcing.persistence import OperationalError

    with open_log(f"{postgres_url}&call_timeout=0.5") as log:
        assert isinstance(log, PostgresLog)
        with pytest.raises(OperationalError, match=r"no reply .* within 0\.5 s \(call_timeout\)"):
            log._connections.fetch(b"SELECT pg_sleep(3)", ())
        assert log._connections.fetch(b"SELECT 1", ()) == [(1,)]  # a new connection


def test_no_call_timeout_by_zero(postgres_url: str) -> None:
    with open_log(f"{postgres_url}&call_timeout=0") as log:
        assert isinstance(log, PostgresLog)
        assert log._connections.fetch(b"SELECT pg_sleep(0.2)", ()) == [("",)]


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_bad_call_timeout_is_refused(value: str) -> None:
    with pytest.raises(InvalidURL, match="call_timeout"):
        open_log(f"{NOBODY}?call_timeout={value}")


#: PostgreSQL's own schemas: its catalog, its TOAST and temporary tables, the SQL standard's views.
SYSTEM_SCHEMAS = ["information_schema", "pg_catalog", "pg_toast", "pg_temp", "pg_temp_3", "pg_x"]


@pytest.mark.parametrize("schema", SYSTEM_SCHEMAS)
def test_a_system_schema_is_refused_before_any_connection(schema: str) -> None:
    """``?schema=information_schema`` (or any ``pg_`` schema) was taken: onward's tables were
    created among PostgreSQL's own. Refused in one line, naming the schema, before connecting."""
    with pytest.raises(
        InvalidURL, match=f"schema '{schema}' is one of PostgreSQL's own"
    ) as refused:
        PostgresLog(f"postgresql://127.0.0.1:1/test?schema={schema}")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("schema", ["PG_catalog", "Information_Schema", "pgx", "my_pg_catalog"])
def test_a_schema_that_only_looks_like_a_system_one_is_taken(schema: str) -> None:
    """Names are taken as written (quoted): ``PG_catalog`` is not PostgreSQL's own."""
    with pytest.raises(BackendError):  # nobody listens there: refused only when connecting
        PostgresLog(f"postgresql://127.0.0.1:1/test?schema={schema}&connect_timeout=1")


def test_a_system_schema_gets_no_table_on_the_server(postgres_url: str) -> None:
    """Refused on a live server too: no table of onward's appears in a system schema."""
    base = postgres_url.split("?", maxsplit=1)[0]
    for schema in ("information_schema", "pg_catalog"):
        with pytest.raises(InvalidURL, match="one of PostgreSQL's own"):
            open_log(f"{base}?schema={schema}")
    with psycopg.connect(base) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables"
            " WHERE (schemaname = 'information_schema' OR schemaname LIKE 'pg\\_%')"
            " AND tablename LIKE 'onward\\_%'"
        ).fetchall()
    assert tables == []
