"""A caught step failure read the same live and when the task runs again from its history."""

from __future__ import annotations

import urllib.error

import pytest

from onward.core.failures import replayed_error


class StatusError(Exception):
    """Shaped as httpx's ``HTTPStatusError``: made only with its request and response."""

    def __init__(self, message: str, *, request: object, response: object) -> None:
        super().__init__(message)
        self._request = request
        self.response = response

    @property
    def request(self) -> object:
        if self._request is None:
            raise RuntimeError("the request is not set")
        return self._request


def test_a_rebuilt_exception_answers_getattr_and_hasattr_without_raising() -> None:
    """An exception rebuilt without its constructor (its class takes other arguments than
    its message) answers ``getattr(e, name, None)`` and ``hasattr`` for what its
    ``__getattr__`` or a property would have read of the state its constructor sets."""
    http = urllib.error.HTTPError("https://a.example/x", 503, "Unavailable", {}, None)  # type: ignore[arg-type]
    bare = replayed_error("HTTPError", "urllib.error:HTTPError", str(http))
    assert isinstance(bare, urllib.error.HTTPError)
    assert str(bare) == "HTTP Error 503: Unavailable"
    assert getattr(bare, "code", None) is None
    assert not hasattr(bare, "headers")
    assert repr(bare) == "HTTPError('HTTP Error 503: Unavailable')"
    with pytest.raises(AttributeError, match="'code'"):
        bare.code
    status = StatusError("502", request=None, response=None)
    again = replayed_error("StatusError", f"{__name__}:StatusError", "502")
    assert isinstance(again, StatusError)
    assert getattr(again, "request", "none") == "none"  # live: RuntimeError, request not set
    with pytest.raises(RuntimeError):
        status.request
