"""``open_log``: one entry point for every backend, chosen by URL."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qsl, unquote

from onward.events.exceptions import InvalidURL
from onward.events.log import EventLog
from onward.events.url_parts import split_log_url

__all__ = ["open_log"]


def open_log(url: str, **options: Any) -> EventLog:
    """Open (creating if needed) the event log at ``url``.

    Args:
        url: ``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
            (query options ``synchronous=full|normal|extra`` and ``busy_timeout=SECONDS``,
            each at most once, the timeout up to about 24.8 days: SQLite's limit);
            ``postgresql://user:password@host:port/dbname`` (query options ``schema`` and
            ``table``; needs the ``postgres`` extra). A bare file path is taken as SQLite.
        **options: ``codec``, ``redactor``, ``clock``, ``payload_limit``, ``inline_limit``,
            ``verify_reads``
            (check each record's checksum whenever it is read for replay or resume; True by
            default); for SQLite also
            ``synchronous``, ``busy_timeout`` and ``create`` (False: raise
            :class:`LogNotFound` rather than create a missing log, as read-only tools want).

    Returns:
        The log; close it, or use it as a context manager.

    Raises:
        InvalidURL: the URL names no supported backend, is malformed, or has an unknown,
            repeated or out-of-range option.
        LogNotFound: ``create=False`` and there is no log there.
        NotALog: the path holds something else than a log (a directory, an empty, text or
            unknown file, another SQLite database); nothing was changed.
        LogDamaged: the log's file is truncated, or its records are not onward's.
        BackendError: the database cannot be opened.
    """
    if not isinstance(url, str) or not url:
        raise InvalidURL(f"a log URL must be a non-empty string, got {url!r}")
    scheme, sep, rest = url.partition("://")
    if not sep:  # a bare file path, taken literally (no URL quoting, query or fragment)
        from onward.events.sqlite import SQLiteLog

        return SQLiteLog(url, **options)
    scheme = scheme.lower()
    if scheme == "memory":
        from onward.events.memory import MemoryLog

        if rest:
            raise InvalidURL(f"memory:// takes no host, path or options: {url!r}")
        return MemoryLog(**options)
    if scheme == "sqlite":
        from onward.events.sqlite import MAX_BUSY_TIMEOUT, SQLiteLog

        parts = split_log_url(url)
        if parts.netloc:
            raise InvalidURL(f"an SQLite URL has no host: {url!r} (use sqlite:///path)")
        if parts.fragment:
            raise InvalidURL(f"an SQLite URL has no #fragment: {url!r} (quote '#' as %23)")
        path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query: dict[str, str] = {}
        for key, value in pairs:
            if key not in ("synchronous", "busy_timeout"):
                raise InvalidURL(f"unknown SQLite option {key!r} in {url!r}")
            if key in query:  # which one would hold is a guess: refuse both
                raise InvalidURL(f"SQLite option {key!r} is given more than once in {url!r}")
            query[key] = value
        if "synchronous" in query:
            level = query["synchronous"].lower()
            if level not in ("full", "normal", "extra"):
                raise InvalidURL(f"synchronous must be full, normal or extra in {url!r}")
            options.setdefault("synchronous", level)
        if "busy_timeout" in query:
            try:
                seconds = float(query["busy_timeout"])
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and 0 < seconds <= MAX_BUSY_TIMEOUT):
                raise InvalidURL(
                    f"busy_timeout must be a positive number of seconds up to "
                    f"{MAX_BUSY_TIMEOUT} in {url!r}"
                )
            options.setdefault("busy_timeout", seconds)
        return SQLiteLog(path, **options)
    if scheme in ("postgresql", "postgres"):
        try:
            from onward.events.postgres import PostgresLog
        except ImportError as exc:  # psycopg is in the "postgres" extra
            raise InvalidURL(
                "PostgreSQL logs need the postgres extra: pip install 'onward[postgres]'"
            ) from exc
        return PostgresLog(url, **options)
    raise InvalidURL(
        f"unsupported log URL scheme {scheme!r}: use memory://, sqlite:///PATH or postgresql://"
    )
