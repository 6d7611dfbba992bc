"""A caught step failure's plain attributes (an HTTP error's status) read the same live and when
the task runs again from its history, on real SQLite files."""

from __future__ import annotations

import enum
import math
import urllib.error
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine, RetryPolicies, RetryPolicy
from onward.core.failure_attributes import (
    MAX_ATTRIBUTES,
    SENSITIVE_WORDS,
    TEXT_LIMIT,
    RecordedObject,
    plain_attributes,
)
from onward.core.failures import replayed_error
from onward.core.run import error_message
from onward.events import StepFailed
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")


class Status(enum.IntEnum):
    NOT_FOUND = 404


class Response:
    """Shaped as an HTTP client's response: its status a plain attribute, more behind it."""

    def __init__(self, status_code: int, url: str) -> None:
        self.status_code = status_code
        self.url = url
        self.reason: str | None = None
        self.headers = {"content-type": "text/plain"}
        self._body = b"not found"

    @property
    def reason_phrase(self) -> str:
        return "Not Found"


class StatusError(Exception):
    """Shaped as httpx's ``HTTPStatusError``: made only with its request and response."""

    def __init__(self, message: str, *, request: object, response: Response) -> None:
        super().__init__(message)
        self._request = request
        self.response = response

    @property
    def request(self) -> object:
        if self._request is None:
            raise RuntimeError("the request is not set")
        return self._request


class ClientError(OSError):
    """Shaped as requests' ``HTTPError``: its response a keyword that defaults to None."""

    def __init__(self, *args: object, response: Response | None = None) -> None:
        super().__init__(*args)
        self.response = response


class Throttled(Exception):
    """An application's error with a few plain attributes, one an enum member, one NaN."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status = Status.NOT_FOUND
        self.retry_after = math.nan
        self.permanent = False
        self.detail = "x" * (2 * TEXT_LIMIT)


def raised(kind: str) -> Exception:
    url = "https://api.example.com/x"
    if kind == "urllib":
        return urllib.error.HTTPError(url, 404, "Not Found", {}, None)  # type: ignore[arg-type]
    if kind == "status":
        return StatusError("404 Not Found", request=object(), response=Response(404, url))
    if kind == "client":
        return ClientError("404 Client Error", response=Response(404, url))
    return Throttled("slow down")


def read(exc: Exception) -> list[Any]:
    """What a task reads of a caught HTTP error."""
    seen: list[Any] = [
        getattr(exc, "code", None),
        hasattr(exc, "code"),
        getattr(exc, "reason", None),
    ]
    response = getattr(exc, "response", None)
    if response is not None:
        seen += [response.status_code, response.url]
    if isinstance(exc, Throttled):
        seen += [exc.status == 404, math.isnan(exc.retry_after), exc.permanent]
    return seen


@pytest.mark.parametrize("retries", [None, RetryPolicies(RetryPolicy(max_attempts=1))])
def test_a_caught_http_error_keeps_its_status_after_a_durable_wait(
    tmp_path: Path, clock: FakeClock, retries: RetryPolicies | None
) -> None:
    """A task catches an HTTP error, waits durably (its code runs again from its history),
    then reads the status: urllib's rebuilt HTTPError raised KeyError('file') from
    ``getattr(e, "code", None)``, an error whose response is a keyword came back without
    it: the task failed only after the wait."""
    seen: dict[str, list[list[Any]]] = {}
    options: dict[str, Any] = {} if retries is None else {"retries": retries}
    db = f"sqlite:///{tmp_path / 'work.db'}"
    with Engine.open(db, session="s", clock=clock, sleep=clock.advance, **options) as engine:

        @engine.step()
        def fetch(kind: str) -> str:
            raise raised(kind)

        @engine.task()
        def get(kind: str) -> str:
            try:
                return fetch(kind)
            except Exception as exc:
                seen.setdefault(kind, []).append(read(exc))
                engine.sleep(10)
                return f"{read(exc)[0]} {getattr(exc, 'response', None) is not None}"

        ids = {kind: engine.submit(get, kind) for kind in ("urllib", "status", "client", "other")}
        engine.run()
        results = {kind: engine.result(task_id) for kind, task_id in ids.items()}
        failed = [
            r.event for r in engine.log.read() if isinstance(r.event, StepFailed) and r.event.final
        ]
    assert results == {
        "urllib": "404 False",
        "status": "None True",
        "client": "None True",
        "other": "None False",
    }
    for kind, (live, replayed) in seen.items():
        assert replayed == live, kind
    assert seen["urllib"][0] == [404, True, "Not Found"]
    assert seen["status"][0] == [None, False, None, 404, "https://api.example.com/x"]
    assert seen["other"][0] == [None, False, None, True, True, False]
    assert len(failed) == 4
    assert failed[0].attributes["code"] == 404


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
    kept = replayed_error(
        "HTTPError", "urllib.error:HTTPError", str(http), attributes=plain_attributes(http)
    )
    assert isinstance(kept, urllib.error.HTTPError)
    assert (kept.code, kept.reason, kept.url, kept.getcode()) == (503, "Unavailable", http.url, 503)
    assert repr(kept) == repr(http)
    status = StatusError("502", request=None, response=Response(502, "u"))
    again = replayed_error("StatusError", f"{__name__}:StatusError", "502")
    assert isinstance(again, StatusError)
    assert getattr(again, "request", "none") == "none"  # live: RuntimeError, request not set
    with pytest.raises(RuntimeError):
        status.request


def test_only_plain_values_of_an_instance_dict_are_kept_bounded_and_redacted() -> None:
    """Names starting with ``_``, containers, properties (whose code is never run) and what
    lies deeper than one object are left out; texts are redacted and cut; at most
    MAX_ATTRIBUTES values; an enum member and a subclass of int as their base value."""
    runs: list[str] = []

    class Inner:
        def __init__(self) -> None:
            self.deep = Response(500, "deep")
            self.level = 2

    class Costly(Response):
        @property
        def content(self) -> bytes:
            runs.append("content")
            return b""

    class Many(Exception):
        def __init__(self) -> None:
            super().__init__("many")
            self._private = 1
            self.items = [1, 2]
            self.note = "password=hunter2"
            self.code = Status.NOT_FOUND
            self.inner = Inner()
            self.response = Costly(418, "u")
            for i in range(2 * MAX_ATTRIBUTES):
                setattr(self, f"a{i}", i)

    stored = plain_attributes(Many())
    assert "_private" not in stored
    assert "items" not in stored
    assert "hunter2" not in stored["note"]
    assert stored["note"].startswith("password=[REDACTED:")
    assert stored["code"] == 404
    assert type(stored["code"]) is int
    assert "inner" not in stored  # its values come after the exception's own: none left
    count = sum(len(v) if isinstance(v, dict) else 1 for v in stored.values())
    assert count == MAX_ATTRIBUTES
    assert plain_attributes(Many.__new__(Many)) == {}  # no __init__ ran: its dict is empty
    nested = Exception("x")
    nested.inner = Inner()  # type: ignore[attr-defined]
    nested.response = Costly(418, "u")  # type: ignore[attr-defined]
    nested.detail = "x" * (2 * TEXT_LIMIT)  # type: ignore[attr-defined]
    assert plain_attributes(nested) == {
        "detail": "x" * TEXT_LIMIT + "... [truncated]",
        "inner": {"level": 2},
        "response": {"status_code": 418, "url": "u", "reason": None},
    }
    assert runs == []  # no property was read


def test_an_attribute_whose_name_may_hold_a_credential_is_not_recorded() -> None:
    """A credential's text alone does not say it is one (``zq8Lx2pVn4``): its name does, so an
    attribute so named is left out, whatever its value, and so in an object it holds."""

    class Session:
        def __init__(self) -> None:
            self.session_cookie = "sid=abcdef123456"
            self.status_code = 401

    class Denied(Exception):
        def __init__(self) -> None:
            super().__init__("denied")
            self.credentials = "zq8Lx2pVn4"
            self.db_pw = "hunter2xyz"
            self.apiKey = "k"
            self.private_key = "-----"
            self.token = "t"
            self.dbpassword = "hunter2x"
            self.secretkey = "hunter2x"
            self.userpass = "bob:hunter2x"
            self.passcode = "493021"
            self.api_version = "v2"
            self.reason = "Unauthorized"
            self.session = Session()
            self.response = Session()

    stored = plain_attributes(Denied())
    assert stored == {
        "api_version": "v2",
        "reason": "Unauthorized",
        "response": {"status_code": 401},
    }
    assert {"pw", "key"} <= SENSITIVE_WORDS


def test_a_record_written_before_attributes_were_kept_reads_as_before() -> None:
    """A StepFailed record of an older onward holds no ``attributes``: it decodes with none,
    and its replay is the exception its message makes."""
    event = StepFailed(
        index=0,
        name="fetch",
        error_type="HTTPError",
        message="HTTP Error 404: Not Found",
        error_class="urllib.error:HTTPError",
    )
    older = msgspec.json.decode(msgspec.json.encode(event))
    del older["attributes"]
    read = msgspec.json.decode(msgspec.json.encode(older), type=StepFailed)
    assert read == event
    assert read.attributes == {}
    replayed = replayed_error(read.error_type, read.error_class, read.message)
    assert isinstance(replayed, urllib.error.HTTPError)
    assert getattr(replayed, "code", None) is None


def test_an_object_attribute_comes_back_as_its_recorded_values() -> None:
    """A response comes back as a RecordedObject: its plain values, a clear AttributeError
    for anything else."""
    error = ClientError("404 Client Error", response=Response(404, "https://a.example/x"))
    again = replayed_error(
        "ClientError", f"{__name__}:ClientError", str(error), attributes=plain_attributes(error)
    )
    assert isinstance(again, ClientError)
    response = again.response
    assert isinstance(response, RecordedObject)
    assert (response.status_code, response.url, response.reason) == (404, error.response.url, None)
    with pytest.raises(AttributeError, match="status_code, url, reason"):
        response.json()
    assert not hasattr(response, "reason_phrase")  # a property: not kept
    assert repr(response).startswith("RecordedObject(status_code=404, ")


class Unprintable(Exception):
    """An application's error whose ``__str__`` raises."""

    def __str__(self) -> str:
        raise ValueError("no text")


def test_a_failure_whose_str_raises_is_recorded_and_replayed_as_its_class_name() -> None:
    """Its record's message is its class name (a broken ``__str__`` must not hide the
    failure); a replay's ``str(e)`` gives that, where the first run's raises (the README
    says so: the first run's exception is the one raised)."""
    error = Unprintable("x")
    message = error_message(error)
    assert message == "Unprintable"
    again = replayed_error("Unprintable", f"{__name__}:Unprintable", message)
    assert isinstance(again, Unprintable)
    assert str(again) == "Unprintable"


def test_a_credential_name_run_together_with_another_word_keeps_its_value_out_of_the_log(
    tmp_path: Path, clock: FakeClock
) -> None:
    """``db_pw`` and ``signing_key`` are kept out, and so are they written as one word
    (``dbpw``, ``rootpw``, ``signingkey``, ``DBPW``): the log's redaction does not know these
    names either, and their values would have reached the file."""

    class Refused(Exception):
        def __init__(self) -> None:
            super().__init__("refused")
            self.dbpw = "hunter2dbpw"
            self.rootpw = "hunter2rootpw"
            self.DBPW = "hunter2DBPW"
            self.signingkey = "hunter2signing"
            self.userpin = "hunter2pin"
            self.status_code = 403

    path = tmp_path / "work.db"
    with Engine.open(f"sqlite:///{path}", session="s", clock=clock) as engine:

        @engine.step()
        def connect() -> None:
            raise Refused()

        @engine.task()
        def job() -> int:
            try:
                connect()
            except Refused as exc:
                return exc.status_code
            return 0

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 403
        failed = [r.event for r in engine.log.read() if isinstance(r.event, StepFailed)]
    assert failed[-1].attributes == {"status_code": 403}
    for name in ("dbpw", "rootpw", "DBPW", "signing", "pin"):
        for file in tmp_path.iterdir():
            assert f"hunter2{name}".encode() not in file.read_bytes(), file
