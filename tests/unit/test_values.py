"""Values the log keeps: what is refused before anything is written, what comes back as it
went in, and how a log written by an older version (plain JSON) still replays."""

from __future__ import annotations

import collections
import datetime
import enum
import math
import socket
import sys
import threading
import zoneinfo
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward import Engine, TaskFailedError
from onward.events import (
    MAX_VALUE_DEPTH,
    Context,
    Redactor,
    RetryScheduled,
    StepCompleted,
    TaskClaimed,
    TaskSubmitted,
    UsageError,
    decode_value,
    encode_value,
    open_log,
)
from onward.projections import task_stream
from tests.conftest import FakeClock
from tests.strategies import same_value


class Crash(BaseException):
    """Ends a run as a crash would (no ``except Exception`` catches it)."""


def deep(levels: int) -> list[Any]:
    value: list[Any] = []
    inner = value
    for _ in range(levels - 1):
        nested: list[Any] = []
        inner.append(nested)
        inner = nested
    return value


def looped() -> dict[str, Any]:
    value: dict[str, Any] = {"a": [1]}
    value["a"].append(value)
    return value


class Frozen(msgspec.Struct, frozen=True):
    n: int


REFUSED: list[tuple[str, Any, str]] = [
    ("self-reference", looped(), "at ['a'][1]: it contains itself (a reference cycle)"),
    ("a list in itself", looped()["a"], "at [1]['a']: it contains itself"),
    ("1,000 deep", deep(1000), f"nested deeper than {MAX_VALUE_DEPTH} levels"),
    ("complex", {"z": 1j}, "at ['z']: a value of type complex cannot be stored"),
    ("object", [object()], "at [0]: a value of type object cannot be stored"),
    ("function", {"f": len}, "a value of type builtin_function_or_method cannot be stored"),
    ("lock", threading.Lock(), "cannot be stored"),
    (
        "struct in a set",
        {Frozen(1)},
        " at (a member): a Frozen would read back as an unhashable dict",
    ),
    ("struct in a nested set", [0, {Frozen(1)}], " at [1] (a member): a Frozen would read back"),
    ("struct as a key", {Frozen(1): 1}, "(a key): a Frozen would read back as an unhashable dict"),
    ("lone surrogate", "\ud800", "surrogates not allowed"),
    ("an int of 4,301 digits", 10**4300, "an int of more than 4300 digits"),
    ("a long int in a list", [1, -(10**5000)], "at [1]: an int of more than 4300 digits"),
]


def test_an_int_of_4300_digits_comes_back_and_a_longer_one_is_refused_whatever_the_limit() -> None:
    """JSON text keeps ints up to 4,300 digits, 4,299 with a minus sign (what msgspec reads
    back); a longer one is refused
    by name even when Python's own limit was lifted (it was refused advising to lift it, and
    then failed as msgspec's ``ValidationError``)."""
    longest, negative = 10**4300 - 1, -(10**4299 - 1)
    assert decode_value(encode_value([longest, negative], what="r")) == [longest, negative]
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        for value in (10**4300, {"n": 10**6000}, -(10**4299)):
            with pytest.raises(UsageError, match="an int of more than 4300 digits"):
                encode_value(value, what="r")
    finally:
        sys.set_int_max_str_digits(before)


@pytest.mark.parametrize(
    ("value", "says"), [(v, s) for _, v, s in REFUSED], ids=[k for k, _, _ in REFUSED]
)
def test_a_value_that_cannot_come_back_is_refused_and_says_where(value: Any, says: str) -> None:
    with pytest.raises(UsageError) as info:
        encode_value(value, what="task crawl: argument 0")
    assert str(info.value).startswith("task crawl: argument 0")
    assert says in str(info.value)


def engine_at(path: Path, **options: Any) -> Engine:
    return Engine.open(f"sqlite:///{path}", session="values", clock=FakeClock(), **options)


@pytest.mark.parametrize(
    ("value", "says"), [(v, s) for _, v, s in REFUSED], ids=[k for k, _, _ in REFUSED]
)
def test_submit_refuses_it_before_anything_is_written(
    tmp_path: Path, value: Any, says: str
) -> None:
    with engine_at(tmp_path / "log.db") as engine:

        @engine.task(name="crawl")
        def crawl(target: Any, *, depth: Any = 0) -> None:
            pass

        head = engine.log.head()
        with pytest.raises(UsageError, match="task crawl: argument 0 \\(target\\)") as info:
            engine.submit(crawl, value)
        assert says in str(info.value)
        with pytest.raises(UsageError, match="task crawl: argument 'depth'"):
            engine.submit(crawl, 1, depth=value)
        assert engine.log.head() == head
        assert not isinstance(info.value.__cause__, RecursionError)


def test_a_step_result_that_cannot_come_back_fails_the_task_and_records_no_outcome(
    tmp_path: Path,
) -> None:
    with engine_at(tmp_path / "log.db") as engine:

        @engine.step(name="fetch")
        def fetch() -> Any:
            return {"rows": [1, 2, looped()]}

        @engine.task(name="job")
        def job() -> Any:
            return fetch()

        task_id = engine.submit(job)
        summary = engine.run()
        assert summary.failed == 1
        with pytest.raises(TaskFailedError) as info:
            engine.result(task_id)
        assert info.value.error_type == "UsageError"
        assert info.value.message == (
            f"task {task_id}: the result of step 'fetch' (index 0) at ['rows'][2]['a'][1]: "
            "it contains itself (a reference cycle)"
        )
        events = [r.event for r in engine.log.read_stream(task_stream(task_id))]
        assert not any(isinstance(e, StepCompleted | RetryScheduled) for e in events)


def test_a_task_result_that_cannot_come_back_fails_the_task(tmp_path: Path) -> None:
    with engine_at(tmp_path / "log.db") as engine:

        @engine.task(name="job")
        def job() -> Any:
            return [1, 2j]

        task_id = engine.submit(job)
        assert engine.run().failed == 1
        with pytest.raises(TaskFailedError) as info:
            engine.result(task_id)
        assert info.value.error_type == "UsageError"
        assert f"task {task_id} (job): its result at [1]: a value of type complex" in (
            info.value.message
        )


def run_then_replay(path: Path, make: Any, returns: Any) -> tuple[Any, Any]:
    """What a step's caller got on the first run (stopped after the step) and on the replay."""
    seen: list[Any] = []

    def build(crash: bool) -> Engine:
        engine = engine_at(path, healing=False)

        def make_value() -> Any:
            return make()

        make_value.__annotations__["return"] = returns
        step = engine.step(name="make")(make_value)

        @engine.task(name="job")
        def job() -> None:
            seen.append(step())
            if crash:
                raise Crash

        return engine

    first = build(crash=True)
    first.submit("job", key="one")
    with pytest.raises(Crash):
        first.run()
    first.close()
    with build(crash=False) as second:
        assert second.run().steps_replayed == 1
    return seen[0], seen[1]


WHEN = datetime.datetime(2024, 11, 25, 10, 30, tzinfo=datetime.UTC)


def test_the_reported_tuple_comes_back_as_it_ran(tmp_path: Path) -> None:
    # A step annotated `-> tuple` returned datetime, set and bytes on the first run and str,
    # list and str after a crash.
    first, replay = run_then_replay(tmp_path / "log.db", lambda: (WHEN, {1, 2}, b"\x00\xff"), tuple)
    for got in (first, replay):
        assert got == (WHEN, {1, 2}, b"\x00\xff")
        assert [type(x) for x in got] == [datetime.datetime, set, bytes]


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_nan_and_the_infinities_are_not_null_after_a_crash(tmp_path: Path, number: float) -> None:
    first, replay = run_then_replay(tmp_path / "log.db", lambda: {"score": number}, Any)
    for got in (first, replay):
        assert isinstance(got["score"], float)
        assert math.isnan(got["score"]) if math.isnan(number) else got["score"] == number


def test_int_keys_and_dates_come_back_unannotated(tmp_path: Path) -> None:
    value = {1: datetime.date(2024, 1, 2), 2: frozenset({"a"}), "$ref": "#/x"}
    first, replay = run_then_replay(tmp_path / "log.db", lambda: value, Any)
    assert first == replay == value
    assert [type(k) for k in replay] == [int, int, str]


def test_the_first_run_gets_what_the_replay_gets_whatever_the_annotation(tmp_path: Path) -> None:
    # The annotation says int, the step returns a numeric string: both runs see the string
    # (tests/unit/test_value_types.py: an annotation converts nothing it does not rebuild).
    first, replay = run_then_replay(tmp_path / "log.db", lambda: "42", int)
    assert first == replay == "42"


ODD_OFFSET = datetime.timezone(datetime.timedelta(seconds=-1172, microseconds=5))
WITH_SECONDS: list[tuple[str, Any]] = [
    (
        "Amsterdam 1900 (+00:19:32)",
        datetime.datetime(1900, 6, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Amsterdam")),
    ),
    ("datetime, microseconds", datetime.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=ODD_OFFSET)),
    ("time", datetime.time(12, tzinfo=datetime.timezone(datetime.timedelta(seconds=1172)))),
    ("time, microseconds", datetime.time(1, 2, 3, 4, tzinfo=ODD_OFFSET)),
    (
        "an offset of one microsecond",  # Python's own reading drops it
        datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(microseconds=1))),
    ),
]


@pytest.mark.parametrize("value", [v for _, v in WITH_SECONDS], ids=[k for k, _ in WITH_SECONDS])
def test_a_utc_offset_with_seconds_is_kept_exactly(
    tmp_path: Path, both_paths: str, value: Any
) -> None:
    # msgspec writes RFC 3339, whose offsets are whole minutes: 12:00+00:19:32 came back as
    # 12:00+00:20, another instant.
    first, replay = run_then_replay(tmp_path / "log.db", lambda: [value], Any)
    for got in (first, replay):
        assert same_value(got, [value]), got
    assert same_value(decode_value(encode_value(value, what="v"), type(value)), value)


def test_a_tagged_text_that_is_not_what_onward_writes_reads_as_stored() -> None:
    # An offset with seconds is read only where it has seconds: any other text msgspec does
    # not read is a plain dict of an older version, as before.
    for text in ("2024-01-01T00:00:00+01:00:00", "20240101T000000"):
        assert decode_value({"$datetime": text}) == {"$datetime": text}


def test_a_mutable_result_handed_to_the_caller_is_a_copy(tmp_path: Path) -> None:
    original = [1, 2]
    first, replay = run_then_replay(tmp_path / "log.db", lambda: original, Any)
    assert first == replay == [1, 2]
    assert first is not original


# -- logs written by an older version --------------------------------------------------------


def dead_worker() -> str:
    """A worker of this host whose pid no process can have (above Linux's largest pid)."""
    return f"{socket.gethostname()}/{2**22 + 12345}/1/abcdef"


def test_an_older_log_of_plain_json_still_replays(tmp_path: Path) -> None:
    """An older onward stored tuples as lists, int keys as strings, bytes as base64, objects as
    dicts and enums as their values; a task it left running resumes: its objects and enums
    are rebuilt by the annotations, the rest comes back as the JSON it was stored as (a list,
    a text: they cannot be told from a list or a text the function returned)."""
    path = tmp_path / "old.db"
    clock = FakeClock()
    task_id = "0123456789abcdef"
    worker = dead_worker()
    with open_log(f"sqlite:///{path}", clock=clock) as log:
        log.append(
            task_stream(task_id),
            [
                TaskSubmitted(
                    name="job",
                    args=[[1, 2], {"1": "a"}, {"n": 7}],
                    kwargs={"raw": "AAE=", "level": 3},
                ),
                TaskClaimed(worker=worker, lease_until=clock() + 300),
                StepCompleted(index=0, name="pair", result=[3, 4]),
                StepCompleted(index=1, name="plain", result=[5, 6]),
                StepCompleted(index=2, name="frozen", result={"n": 8}),
            ],
            expected_version=0,
            context=Context(session="values", actor=worker, correlation_id=task_id),
        )
    seen: list[Any] = []
    with engine_at(path) as engine:

        @engine.step(name="pair")
        def pair() -> tuple[int, int]:
            raise AssertionError("replayed, never run")

        @engine.step(name="plain")
        def plain() -> Any:
            raise AssertionError("replayed, never run")

        @engine.step(name="frozen")
        def frozen() -> Frozen:
            raise AssertionError("replayed, never run")

        @engine.task(name="job")
        def job(
            point: tuple[int, int], names: dict[int, str], box: Frozen, *, raw: bytes, level: Level
        ) -> str:
            seen.extend([point, names, box, raw, level, pair(), plain(), frozen()])
            return "done"

        assert engine.run().recovered == 1
        assert engine.result(task_id) == "done"
    assert seen == [[1, 2], {"1": "a"}, Frozen(7), "AAE=", Level.HIGH, [3, 4], [5, 6], Frozen(8)]
    assert [type(x) for x in seen[2:5]] == [Frozen, str, Level]


def test_an_older_plain_dict_that_happens_to_look_tagged_reads_as_stored() -> None:
    assert decode_value({"$bytes": "not base64!"}) == {"$bytes": "not base64!"}
    assert decode_value({"$unknown": 1}) == {"$unknown": 1}
    assert decode_value({"$float": "1.5"}) == {"$float": "1.5"}


def test_a_dict_whose_one_key_starts_with_a_dollar_is_escaped() -> None:
    for value in ({"$bytes": "AAE="}, {"$tuple": [1]}, {"$ref": "#/definitions/x"}):
        ((key, inner),) = value.items()
        assert encode_value(value, what="v") == {"$dict": [[key, inner]]}
        stored = encode_value(value, what="v")
        assert decode_value(stored) == value


def test_an_annotation_rebuilds_only_what_the_log_keeps_as_plain_values() -> None:
    stored = encode_value({"a": 1}, what="v")
    assert decode_value(stored, dict[str, int]) == {"a": 1}
    assert decode_value(stored, list[int]) == {"a": 1}  # not a list: as stored
    assert decode_value(encode_value([1, 2], what="v"), tuple[int, int]) == [1, 2]
    assert decode_value(encode_value((1, 2), what="v"), tuple[int, int]) == (1, 2)
    # A dict is the kept form of a Struct: under `-> Frozen` it is one.
    assert decode_value(encode_value({"n": 1}, what="v"), Frozen) == Frozen(1)


def test_bytes_are_redacted_before_they_are_encoded() -> None:

    token = "ghp_" + "A1b2C3d4" * 5
    stored = encode_value(
        {"body": f"Authorization: token {token}\n".encode()}, what="v", redactor=Redactor()
    )
    assert token not in repr(decode_value(stored))
    assert b"[REDACTED:" in decode_value(stored)["body"]


TOKEN_A = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
TOKEN_B = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"


@pytest.mark.parametrize(
    "value",
    [
        {TOKEN_A: {"owner": "ann"}, TOKEN_B: {"owner": "bo"}},  # plain JSON
        {TOKEN_A: (1,), TOKEN_B: (2,)},  # walked and tagged
        {(TOKEN_A, 1): "a", (TOKEN_B, 1): "b"},  # stored in pairs
        {TOKEN_A, TOKEN_B},
        [frozenset({TOKEN_A, TOKEN_B})],
    ],
    ids=["dict", "tagged dict", "tuple keys", "set", "nested set"],
)
def test_secrets_that_would_merge_entries_once_redacted_are_refused(value: Any) -> None:
    """Two keys (or set members) that differ only by their secrets would come back as one
    once redacted, the other's contents lost: refused, naming neither secret."""
    with pytest.raises(UsageError, match="would come back as one") as info:
        encode_value(value, what="step tokens", redactor=Redactor())
    assert TOKEN_A not in str(info.value)
    assert TOKEN_B not in str(info.value)


def test_a_secret_key_that_merges_with_nothing_is_stored_redacted() -> None:
    stored = encode_value({TOKEN_A: 1, "other": 2}, what="v", redactor=Redactor())
    assert decode_value(stored) == {"[REDACTED:github-token]": 1, "other": 2}
    # A set under a secret's name is replaced whole: nothing merges.
    stored = encode_value({"password": {"Hunter2Xy7", "Other5Pw"}}, what="v", redactor=Redactor())
    assert decode_value(stored) == {"password": "[REDACTED:secret-value]"}


def files_of(db: Path) -> bytes:
    """The bytes of an SQLite log: its database file, write-ahead log and shared memory."""
    return b"".join(
        path.read_bytes()
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        if path.exists()
    )


def test_secret_named_values_of_a_dict_with_other_keys_stay_off_the_disk(tmp_path: Path) -> None:
    # A dict with a key that is no string is stored in pairs, {"$dict": [[key, value], ...]}:
    # its "password" must be redacted as the same member of a plain dict is.
    db = tmp_path / "log.db"
    secrets = ["Tr0ub4dor&3", "correct-horse-battery", "s3cret-pool-pw", "dollar-tok-9"]
    with engine_at(db) as engine:

        @engine.step(name="settings")
        def settings() -> Any:
            return {"password": secrets[0], "api_key": secrets[1], 5432: "port"}

        @engine.task(name="job")
        def job(config: Any) -> Any:
            return [settings(), config]

        argument = {("db", 1): {"pool": {"DB_PASSWORD": secrets[2], 2: "x"}}}
        task_id = engine.submit(job, argument)
        engine.run()
        redacted = "[REDACTED:secret-value]"
        assert engine.result(task_id) == [
            {"password": redacted, "api_key": redacted, 5432: "port"},
            {("db", 1): {"pool": {"DB_PASSWORD": redacted, 2: "x"}}},
        ]
        engine.submit(job, {"$token": secrets[3]})  # one key, starting with "$": in pairs too
        engine.run()
        data = files_of(db)
        assert b'"DB_PASSWORD"' in data  # the search looks where the values are
        assert [s for s in secrets if s.encode() in data] == []
    assert [s for s in secrets if s.encode() in files_of(db)] == []


def test_a_refusal_names_the_place_by_its_keys_with_their_secrets_redacted(
    tmp_path: Path,
) -> None:
    key = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"
    with pytest.raises(UsageError) as info:
        encode_value({key: [object()]}, what="task crawl: argument 0", redactor=Redactor())
    assert str(info.value).startswith(
        "task crawl: argument 0 at ['[REDACTED:openai-key]'][0]: a value of type object"
    )
    with engine_at(tmp_path / "log.db") as engine:

        @engine.task(name="crawl")
        def crawl(clients: Any) -> None:
            pass

        with pytest.raises(UsageError) as info:
            engine.submit(crawl, {"eu": {key: object()}})
        assert key not in str(info.value)
        assert "at ['eu']['[REDACTED:openai-key]']: a value of type object" in str(info.value)


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ([1, "a", {"b": 2.5, "c": None}], [1, "a", {"b": 2.5, "c": None}]),
        ({"level": Level.HIGH}, {"level": 3}),
        (collections.OrderedDict(a=1), {"a": 1}),
        (-0.0, -0.0),
        (2**80, 2**80),
        ([[[[1]]]], [[[[1]]]]),
        ({"a": (1, 2)}, {"a": {"$tuple": [1, 2]}}),
        ([{"$x": 1}], [{"$dict": [["$x", 1]]}]),
    ],
    ids=["plain", "int-enum", "ordered-dict", "minus-zero", "big-int", "nested", "tuple", "dollar"],
)
def test_plain_json_is_stored_as_it_is_and_the_rest_is_tagged(value: Any, stored: Any) -> None:
    assert encode_value(value, what="v") == stored
    assert math.copysign(1, encode_value(-0.0, what="v")) == -1


def test_more_containers_than_the_depth_limit_are_walked_not_refused() -> None:
    wide = [[i] for i in range(500)]  # 501 containers, 2 deep
    assert encode_value(wide, what="v") == wide


class _Code(enum.Enum):
    OK = 1


@pytest.mark.parametrize(
    "value",
    [{_Code.OK, 1}, frozenset({_Code.OK, 1}), {_Code.OK: "member", 1: "value"}],
    ids=["set", "frozenset", "dict"],
)
def test_members_or_keys_that_would_read_back_as_one_are_refused(value: Any) -> None:
    """A plain enum member and its value are two members of a set, or two keys, that read
    back as one: one was lost with no error (a dict's was refused for secrets it did not
    hold)."""
    with pytest.raises(UsageError, match="would read back as one"):
        encode_value(value, what="a step's result")
