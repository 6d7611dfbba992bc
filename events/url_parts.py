"""A log URL split into its parts: :func:`split_log_url`, which refuses a malformed one with
:class:`InvalidURL` before any backend reads it (``urlsplit`` alone raises a bare
``ValueError`` for some, and lets a NUL through)."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from onward.events.exceptions import InvalidURL

__all__ = ["split_log_url"]


def split_log_url(url: str) -> SplitResult:
    """Split a log URL into its parts, refusing one that is malformed.

    Args:
        url: a ``sqlite://`` or ``postgresql://`` URL.

    Returns:
        Its parts; ``port`` can be read without raising.

    Raises:
        InvalidURL: a port that is not a number from 0 to 65535, an unclosed IPv6 address, or
            a NUL (raw or ``%00``) anywhere: a C library stops reading at a NUL, so the rest
            of the URL (a host, a port) would be dropped without a word.
    """
    if "\x00" in unquote(url):
        raise InvalidURL(f"a log URL cannot hold a NUL byte (%00): {_masked(url)!r}")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises here, not when connecting
    except ValueError as exc:
        raise InvalidURL(f"malformed log URL {_masked(url)!r}: {exc}") from None
    return parts


def _masked(url: str) -> str:
    """The URL without its query (where secrets may be) and with its password hidden, for a
    message about a URL that may not split."""
    scheme, sep, rest = url.partition("://")
    rest = rest.partition("#")[0].partition("?")[0]
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    return f"{scheme}{sep}{netloc}{slash}{path}"
