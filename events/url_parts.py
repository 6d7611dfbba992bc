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
        InvalidURL: a port that is not a number from 0 to 65535, an unclosed IPv6 address, a
            NUL (raw or ``%00``) anywhere: a C library stops reading at a NUL, so the rest
            of the URL (a host, a port) would be dropped without a word; or a raw tab, CR or
            LF, which urlsplit drops without a word.
    """
    if "\x00" in unquote(url):
        raise InvalidURL(f"a log URL cannot hold a NUL byte (%00): {_masked(url)!r}")
    if any(c in url for c in "\t\r\n"):
        # urlsplit drops them without a word: another file, schema or password would be used.
        raise InvalidURL(
            f"a log URL cannot hold a raw tab, CR or LF (percent-encode them: %09, %0D, %0A): "
            f"{_masked(url)!r}"
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises here, not when connecting
    except ValueError as exc:
        # urllib's words quote the port's text: a password's, when it holds a / ? or #.
        said = str(exc)
        why = (
            said
            if "port" not in said.lower()
            else "its port is out of range 0-65535"
            if "out of range" in said
            else "its port is not a number (a password that holds / ? # or @ must be "
            "percent-encoded)"
        )
        raise InvalidURL(f"malformed log URL {_masked(url)!r}: {why}") from None
    return parts


def hide_password(rest: str) -> str:
    """What follows a URL's ``scheme://``, with its user's password hidden (``user:***@``).

    The password ends at the last ``@`` of the authority, which ends at the first ``/``, ``?``
    or ``#``. A password that holds one of those unencoded (the URL is malformed) cuts the
    authority short, leaving no ``@`` in it: then everything from the first ``:`` to the last
    ``@`` is hidden (more than the password, when an ``@`` comes later in the query; never
    less).
    """
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, host = rest[:end].rpartition("@")
    if at:
        if ":" not in userinfo:
            return rest
        return f"{userinfo.partition(':')[0]}:***@{host}{rest[end:]}"
    colon, last_at = rest.find(":"), rest.rfind("@")
    if 0 <= colon < last_at and colon <= end:
        return f"{rest[:colon]}:***{rest[last_at:]}"
    return rest


def _masked(url: str) -> str:
    """The URL without its query (where secrets may be) and with its password hidden, for a
    message about a URL that may not split."""
    scheme, sep, rest = url.partition("://")
    rest = hide_password(rest).partition("#")[0].partition("?")[0]
    return f"{scheme}{sep}{rest}"
