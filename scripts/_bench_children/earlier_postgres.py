"""The PostgreSQL log as onward wrote it before its own recorder, for
``scripts/bench_workers.py`` to measure beside the new one (not a public entry point).

It is ``onward/events/postgres.py`` as it was: eventsourcing's ``PostgresApplicationRecorder``,
which takes a table lock per append (and notifies every append), positions from a sequence,
and the default watch (polling the head). Use it on a schema of its own.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)
from psycopg import sql

from onward.events.exceptions import BackendError, InvalidURL, LogNotFound
from onward.events.log import EventLog, StoredRow

__all__ = ["EarlierPostgresLog"]


class EarlierPostgresLog(EventLog):
    """An event log in PostgreSQL (``postgresql://user:password@host:port/dbname?schema=s``).

    Args:
        url: the connection URL; ``schema`` (default ``public``) and ``table`` (the table
            prefix, default ``onward``) may be given as query parameters.
        create: create the schema and tables when missing; with False, a database without
            this log raises :class:`LogNotFound` and nothing is created.
        **options: passed to :class:`onward.events.EventLog`.

    Raises:
        InvalidURL: the URL does not name a database.
        LogNotFound: ``create=False`` and the log's table does not exist.
        BackendError: the server cannot be reached.
    """

    def __init__(self, url: str, *, create: bool = True, **options: Any) -> None:
        parts = urlsplit(url)
        params = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise InvalidURL(f"PostgreSQL URL names no database: {_safe(url)}")
        self.schema = params.get("schema", "public")
        prefix = params.get("table", "onward")
        if not (self.schema.isidentifier() and prefix.isidentifier()):
            raise InvalidURL(f"schema and table must be plain identifiers: {_safe(url)}")
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "POSTGRES_SCHEMA": self.schema,
            "POSTGRES_CONNECT_TIMEOUT": params.get("connect_timeout", "10"),
            "ORIGINATOR_ID_TYPE": "text",
            "CREATE_TABLE": "true" if create else "false",
        }
        try:
            creation = _creation_lock(env, f"{self.schema}.{prefix}") if create else None
        except Exception as exc:
            raise BackendError(f"cannot open the PostgreSQL log {_safe(url)}: {exc}") from exc
        try:
            factory = PostgresFactory.construct(env)
            factory.env.name = prefix
            datastore = factory.datastore
            if not create:
                with datastore.transaction(commit=False) as c:
                    c.execute(
                        "SELECT to_regclass(%s) AS found", (f"{self.schema}.{prefix}_events",)
                    )
                    row = c.fetchone()
                if row is None or row["found"] is None:
                    datastore.close()
                    raise LogNotFound(f"no log at {_safe(url)} (no table {prefix}_events)")
            elif self.schema != "public":
                with datastore.transaction(commit=True) as c:
                    c.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(self.schema)
                        )
                    )
            recorder = factory.application_recorder()
            checkpoints = factory.aggregate_recorder("checkpoints")
            assert isinstance(recorder, PostgresApplicationRecorder)
            assert isinstance(checkpoints, PostgresAggregateRecorder)
        except LogNotFound:
            raise
        except Exception as exc:
            raise BackendError(f"cannot open the PostgreSQL log {_safe(url)}: {exc}") from exc
        finally:
            if creation is not None:
                creation.close()  # the session's advisory lock goes with it
        self._datastore = datastore
        self._table = sql.Identifier(self.schema, recorder.events_table_name)
        self._checkpoint_table = sql.Identifier(self.schema, checkpoints.events_table_name)
        super().__init__(recorder, checkpoints, url=_safe(url), **options)

    def _query(self, query: sql.Composed, params: tuple[Any, ...]) -> list[Any]:
        with self._datastore.transaction(commit=False) as c:
            c.execute(query, params, prepare=True)
            return list(c.fetchall())

    def _select_stream(self, stream: str, after: int, upto: int | None) -> list[StoredRow]:
        query = sql.SQL(
            "SELECT notification_id, originator_id, originator_version, topic, state FROM {}"
            " WHERE originator_id=%s AND originator_version>%s AND originator_version<=%s"
            " ORDER BY originator_version"
        ).format(self._table)
        rows = self._query(query, (stream, after, upto if upto is not None else 2**62))
        return [
            (
                r["notification_id"],
                r["originator_id"],
                r["originator_version"],
                r["topic"],
                bytes(r["state"]),
            )
            for r in rows
        ]

    def _select_streams(self) -> list[str]:
        query = sql.SQL(
            "SELECT originator_id FROM {} GROUP BY originator_id ORDER BY MIN(notification_id)"
        ).format(self._table)
        return [r["originator_id"] for r in self._query(query, ())]

    def _select_stream_head(self, stream: str) -> StoredEvent | None:
        found = super()._select_stream_head(stream)
        if found is None:
            return None
        return StoredEvent(
            found.originator_id, found.originator_version, found.topic, bytes(found.state)
        )

    def _prune_checkpoints(self, name: str, below: int) -> None:
        query = sql.SQL("DELETE FROM {} WHERE originator_id=%s AND originator_version<%s").format(
            self._checkpoint_table
        )
        with self._datastore.transaction(commit=True) as c:
            c.execute(query, (name, below))

    def _close_backend(self) -> None:
        self._datastore.close()


def _creation_lock(env: dict[str, str], name: str) -> psycopg.Connection[Any]:
    """A connection holding the advisory lock of one log's creation: processes that open a
    new log at once create its schema and tables one after the other (PostgreSQL's ``IF NOT
    EXISTS`` does not hold between concurrent creators)."""
    connection = psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]),
        autocommit=True,
    )
    key = int.from_bytes(hashlib.blake2b(f"onward:{name}".encode(), digest_size=8).digest())
    connection.execute("SELECT pg_advisory_lock(%s)", (key - 2**63,))
    return connection


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
