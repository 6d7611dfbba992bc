"""What an annotation does to a value read back from the log: it rebuilds objects, enums and
subclasses of scalars, converts nothing else, and is read one annotation at a time.

Each engine test runs a task on a fresh SQLite file, on the synchronous and the asynchronous
path (``async def`` functions there): the first run ends right after the step (a
``BaseException`` that no ``except Exception`` catches, as a crash would end it), a new engine
on the same file replays the step from the log and finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import functools
import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import msgspec
import pytest

from onward import BreakerPolicy, Engine, RetryPolicies, RetryPolicy, TaskFailedError
from onward.events import StepCompleted, StepFailed, UsageError, decode_value, encode_value
from onward.projections import task_stream
from tests.conftest import FakeClock
from tests.strategies import same_value

if TYPE_CHECKING:
    from http.client import HTTPConnection  # for the type checker only: never resolves


class Crash(BaseException):
    """Ends the first run after its step, as a crash would."""


def engine_at(path: Path, **options: Any) -> Engine:
    return Engine.open(
        f"sqlite:///{path}", session="types", clock=FakeClock(), healing=False, **options
    )


def runs(
    path: Path, make: Any, annotation: Any, kind: str, argument: Any = None
) -> tuple[list[tuple[Any, Any]], Any]:
    """Submit a task given ``argument`` (``make()`` when None) whose step returns ``make()``,
    both annotated ``annotation``; crash its first run after the step; finish it on a new
    engine.

    Returns:
        What the task was given and what its step handed it, on the first run and on the
        replay; and the task's result as ``engine.result`` reads it.
    """
    seen: list[tuple[Any, Any]] = []

    def build(crash: bool) -> Engine:
        engine = engine_at(path)
        if kind == "async":

            async def produce_async() -> Any:
                return make()

            produce: Any = produce_async
        else:

            def produce_sync() -> Any:
                return make()

            produce = produce_sync
        produce.__annotations__["return"] = annotation
        step = engine.step(name="produce")(produce)

        def taken(arg: Any, got: Any) -> Any:
            seen.append((arg, got))
            if crash:
                raise Crash
            return got

        if kind == "async":

            async def job_async(arg: Any) -> Any:
                return taken(arg, await step())

            job: Any = job_async
        else:

            def job_sync(arg: Any) -> Any:
                return taken(arg, step())

            job = job_sync
        job.__annotations__["arg"] = annotation
        job.__annotations__["return"] = annotation
        engine.task(name="job")(job)
        return engine

    first = build(crash=True)
    task_id = first.submit("job", make() if argument is None else argument)
    with pytest.raises(Crash):
        first.run()
    first.close()
    with build(crash=False) as second:
        summary = second.run()
        assert (summary.steps_replayed, summary.succeeded) == (1, 1), summary
        result = second.result(task_id)
    return seen, result


# -- a value that does not match its annotation ------------------------------------------------

MISMATCHED: list[tuple[str, Any, Any]] = [
    ("text under bytes", "abcd", bytes),  # was base64-decoded: b'i\xb7\x1d'
    ("text under bool", "false", bool),  # was False
    ("big int under float", 2**70 + 1, float),  # lost its last digits
    ("text under int", "3", int),
    ("list under tuple", [1, 2], tuple[int, int]),
    ("text under a date", "2024-11-25", datetime.date),
    ("text-keyed dict under int keys", {"1": "a"}, dict[int, str]),
]


@pytest.mark.parametrize(
    ("value", "annotation"),
    [(v, a) for _, v, a in MISMATCHED],
    ids=[k for k, _, _ in MISMATCHED],
)
def test_a_value_that_does_not_match_its_annotation_comes_back_as_returned(
    tmp_path: Path, both_paths: str, value: Any, annotation: Any
) -> None:
    seen, result = runs(tmp_path / "log.db", lambda: value, annotation, both_paths)
    assert len(seen) == 2
    for arg, got in seen:
        assert same_value(got, value), got
        assert same_value(arg, value), arg
    assert same_value(result, value)


# -- subclasses and enums -----------------------------------------------------------------------


class UserId(str):
    def shard(self) -> int:
        return sum(map(ord, self)) % 16


class Celsius(float):
    def to_fahrenheit(self) -> float:
        return self * 9 / 5 + 32


class Count(int):
    pass


class Blob(bytes):
    pass


class Buffer(bytearray):
    pass


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


REBUILT: list[tuple[str, Any, Any]] = [
    ("str subclass", UserId("user-ann"), UserId),
    ("float subclass", Celsius(21.5), Celsius),
    ("int subclass", Count(3), Count),
    ("bytes subclass", Blob(b"\x00\xff"), Blob),
    ("bytearray subclass", Buffer(b"\x01"), Buffer),
    ("optional", UserId("user-bo"), UserId | None),
]


@pytest.mark.parametrize(
    ("value", "annotation"), [(v, a) for _, v, a in REBUILT], ids=[k for k, _, _ in REBUILT]
)
def test_an_annotated_subclass_or_enum_comes_back_as_its_class(
    tmp_path: Path, both_paths: str, value: Any, annotation: Any
) -> None:
    seen, result = runs(tmp_path / "log.db", lambda: value, annotation, both_paths)
    for got in [result] + [x for pair in seen for x in pair]:
        assert type(got) is type(value)
        assert got == value


def test_subclasses_inside_containers_come_back_as_their_class() -> None:
    value = {"ids": [UserId("a"), UserId("b")], "by_colour": {Colour.RED: Celsius(1.5)}}
    stored = encode_value(value, what="v")
    assert decode_value(stored) == {"ids": ["a", "b"], "by_colour": {"red": 1.5}}
    got = decode_value(stored, dict[str, list[UserId] | dict[Colour, Celsius]])
    assert got == value
    assert [type(x) for x in got["ids"]] == [UserId, UserId]
    assert [(type(k), type(v)) for k, v in got["by_colour"].items()] == [(Colour, Celsius)]


def test_an_unannotated_subclass_comes_back_as_its_base(tmp_path: Path, both_paths: str) -> None:
    seen, _ = runs(tmp_path / "log.db", lambda: UserId("user-ann"), Any, both_paths)
    for arg, got in seen:
        assert type(arg) is str
        assert type(got) is str


# -- objects -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tags:
    tags: Any
    pair: Any


class TagsStruct(msgspec.Struct):
    tags: Any
    frozen: Any


@pytest.mark.parametrize(
    ("make", "plain"),
    [
        (lambda: Tags(tags={"a", "b"}, pair=(1, 2)), {"tags": {"a", "b"}, "pair": (1, 2)}),
        (lambda: TagsStruct({"a"}, frozenset({1})), {"tags": {"a"}, "frozen": frozenset({1})}),
    ],
    ids=["dataclass", "struct"],
)
def test_a_set_in_an_object_stays_a_set(
    tmp_path: Path, both_paths: str, make: Any, plain: dict[str, Any]
) -> None:
    # Annotated, it came back as its class holding lists; unannotated, a dict of lists.
    value = make()
    seen, result = runs(tmp_path / "log.db", make, type(value), both_paths)
    for got in [result] + [x for pair in seen for x in pair]:
        assert type(got) is type(value)
        assert same_value({k: getattr(got, k) for k in plain}, plain)
    seen, result = runs(tmp_path / "plain.db", make, Any, both_paths)
    for got in [result] + [x for pair in seen for x in pair]:
        assert same_value(got, plain)


class Renamed(msgspec.Struct, rename="camel", omit_defaults=True):
    user_name: str
    given_tags: frozenset[str] = frozenset()
    score: int = 0


class Tagged(msgspec.Struct, tag=True):
    when: Any
    ids: set[int]


class Row(msgspec.Struct, array_like=True):
    id: int
    name: str
    flags: tuple[bool, ...] = ()


class Shape(msgspec.Struct, tag="square", tag_field="kind"):
    side: float


class Circle(msgspec.Struct, tag="circle", tag_field="kind"):
    radius: float


OBJECTS: list[tuple[str, Any, Any, Any]] = [
    (
        "renamed, defaults left out",
        Renamed("ann", score=3),
        Renamed,
        {"userName": "ann", "score": 3},
    ),
    (
        "renamed, a set",
        Renamed("bo", frozenset({"x"})),
        Renamed,
        {"userName": "bo", "givenTags": frozenset({"x"})},
    ),
    (
        "tagged",
        Tagged(when=[1], ids={1, 2}),
        Tagged,
        {"type": "Tagged", "when": [1], "ids": {1, 2}},
    ),
    ("array-like", Row(1, "a", (True,)), Row, [1, "a", (True,)]),
    ("tagged union", Circle(2.0), Shape | Circle, {"kind": "circle", "radius": 2.0}),
    ("list of objects", [Row(1, "a"), Row(2, "b")], list[Row], [[1, "a", ()], [2, "b", ()]]),
    ("enum", Colour.BLUE, Colour, "blue"),
]


@pytest.mark.parametrize(
    ("value", "annotation", "plain"),
    [(v, a, p) for _, v, a, p in OBJECTS],
    ids=[k for k, _, _, _ in OBJECTS],
)
def test_an_object_is_kept_as_msgspec_lays_it_out_its_contents_exactly(
    value: Any, annotation: Any, plain: Any
) -> None:
    # A set in a field came back a list (msgspec.to_builtins made it one).
    stored = encode_value(value, what="v")
    assert same_value(decode_value(stored), plain)
    got = decode_value(stored, annotation)
    assert got == value
    assert type(got) is type(value)


# -- __post_init__ -------------------------------------------------------------------------------


@dataclasses.dataclass
class Attempt:
    url: str
    attempts: int = 0

    def __post_init__(self) -> None:
        self.attempts += 1  # counts constructions


def test_a_dataclass_comes_back_without_its_post_init_running_again(
    tmp_path: Path, both_paths: str
) -> None:
    seen, result = runs(
        tmp_path / "log.db", lambda: Attempt("https://example.org"), Attempt, both_paths
    )
    for got in [result] + [x for pair in seen for x in pair]:
        assert got == Attempt("https://example.org")  # attempts == 1, as it was returned
        assert got.attempts == 1


@dataclasses.dataclass
class Login:
    user: str
    password: dataclasses.InitVar[str] = ""

    def __post_init__(self, password: str) -> None:
        self.ok = bool(password)


def test_an_object_holding_what_is_not_a_field_is_refused_before_anything_is_written(
    tmp_path: Path, both_paths: str
) -> None:
    # Its 'ok' is not kept: rebuilt from its fields, it would lack it (it came back a dict).
    says = (
        "a Login holds 'ok', which is none of its fields (set by __post_init__?): only its "
        "fields are kept"
    )
    with engine_at(tmp_path / "log.db") as engine:

        @engine.step(name="login")
        def login() -> Login:
            return Login("ann", "pw")

        @engine.task(name="job")
        def job(user: Login | None = None) -> Login:
            return login()

        head = engine.log.head()
        with pytest.raises(UsageError, match="task job: argument 0 \\(user\\)") as info:
            engine.submit(job, Login("bo", "pw"))
        assert says in str(info.value)
        assert engine.log.head() == head
        task_id = engine.submit(job)
        assert engine.run().failed == 1
        with pytest.raises(TaskFailedError) as failed:
            engine.result(task_id)
        assert failed.value.error_type == "UsageError"
        assert says in failed.value.message
        events = [r.event for r in engine.log.read_stream(task_stream(task_id))]
        assert not any(isinstance(e, StepCompleted) for e in events)


UNSTORABLE: dict[str, Callable[[], Any]] = {
    "a lock": threading.Lock,
    # Refused by the log's append, after the result encoded: the body ran again after a
    # crash, or an at-most-once step raised StepInterrupted where it had raised this.
    "over the payload limit": lambda: "y" * 200_000,
}


@pytest.mark.parametrize("what", list(UNSTORABLE))
@pytest.mark.parametrize("at_most_once", [False, True], ids=["plain", "at most once"])
def test_a_result_that_cannot_be_stored_is_the_steps_recorded_failure(
    tmp_path: Path, both_paths: str, at_most_once: bool, what: str
) -> None:
    """The refusal of a step's result is its outcome: a re-run raises it again without calling
    the body (whose side effects already happened) and without taking the step for one left in
    flight."""
    calls: list[int] = []
    seen: list[str] = []

    def build(crash: bool) -> Engine:
        engine = engine_at(tmp_path / "log.db", payload_limit=100_000)

        @engine.step(name="charge", at_most_once=at_most_once)
        def charge() -> Any:
            calls.append(1)
            return UNSTORABLE[what]()

        @engine.task(name="job")
        def job() -> str:
            try:
                charge()
            except UsageError as exc:
                seen.append(str(exc))
            if crash:
                raise Crash
            return "done"

        return engine

    first = build(crash=True)
    task_id = first.submit("job")
    with pytest.raises(Crash):
        first.run()
    first.close()
    with build(crash=False) as second:
        assert second.run().succeeded == 1
        assert second.result(task_id) == "done"
        failed = [
            e
            for e in (r.event for r in second.log.read_stream(task_stream(task_id)))
            if isinstance(e, StepFailed)
        ]
    assert calls == [1]
    assert len(seen) == 2
    assert seen[0] == seen[1]
    if what == "a lock":
        assert "the result of step 'charge'" in seen[0]
        assert [f.error_type for f in failed] == ["UsageError"]
    else:
        assert "StepCompleted encodes to" in seen[0]
        assert [f.error_type for f in failed] == ["PayloadTooLarge"]


def test_a_task_result_over_the_payload_limit_fails_the_task(
    tmp_path: Path, both_paths: str
) -> None:
    # run() raised PayloadTooLarge and left the task running: each run ended so again.
    with engine_at(tmp_path / "log.db", payload_limit=100_000) as engine:

        @engine.task(name="job")
        def job() -> str:
            return "y" * 200_000

        task_id = engine.submit("job")
        assert engine.run().failed == 1
        with pytest.raises(TaskFailedError) as failed:
            engine.result(task_id)
        assert failed.value.error_type == "PayloadTooLarge"
        assert "over the log's limit of 100000" in failed.value.message
        assert engine.run().runs == 0


def test_a_result_that_cannot_be_stored_is_no_failure_of_the_steps_dependency(
    tmp_path: Path,
) -> None:
    """The refusal is the code's mistake, not its dependency's: no error observed, no retry
    (a policy retrying ValueError, which UsageError is, called the body again), no breaker
    opened for every task of the dependency."""
    calls: list[int] = []
    clock = FakeClock()
    with Engine.open(
        f"sqlite:///{tmp_path / 'log.db'}",
        session="types",
        clock=clock,
        sleep=clock.advance,
        retries=RetryPolicies(RetryPolicy(max_attempts=3, retry_on=("ValueError",))),
        breakers=BreakerPolicy(failures=2, cooldown=30),
    ) as engine:

        @engine.step(name="fetch", breaker="api")
        def fetch(i: int) -> Any:
            calls.append(i)
            return threading.Lock()

        @engine.task(name="job")
        def job() -> int:
            refused = 0
            for i in range(4):
                with contextlib.suppress(UsageError):
                    fetch(i)
                    refused -= 1
                refused += 1
            return refused

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 4
        kinds = [type(r.event).__name__ for r in engine.log.read()]
    assert calls == [0, 1, 2, 3]
    assert kinds.count("StepFailed") == 4
    assert "ErrorObserved" not in kinds
    assert not [k for k in kinds if k.startswith("Breaker")]


@dataclasses.dataclass(frozen=True)
class Account:
    user: str
    password: dataclasses.InitVar[str] = ""
    digest: str = dataclasses.field(init=False, default="")

    def __post_init__(self, password: str) -> None:
        object.__setattr__(self, "digest", hashlib.sha256(password.encode()).hexdigest())

    @functools.cached_property
    def initial(self) -> str:
        return self.user[:1]


def test_an_object_whose_state_is_all_in_its_fields_comes_back_whole(
    tmp_path: Path, both_paths: str
) -> None:
    # An InitVar that fills a field, and a cached property's value (computed again), are fine.
    def make() -> Account:
        account = Account("ann", "pw")
        assert account.initial == "a"  # cached in its __dict__
        return account

    seen, result = runs(tmp_path / "log.db", make, Account, both_paths)
    for got in [result] + [x for pair in seen for x in pair]:
        assert type(got) is Account
        assert got.digest == hashlib.sha256(b"pw").hexdigest()
        assert got == Account("ann", "pw")
        assert got.initial == "a"


# -- annotations read one at a time --------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_an_annotation_that_does_not_resolve_leaves_the_others_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # With `from __future__ import annotations` (this module), `HTTPConnection` is imported
    # only for the type checker: it made every annotation of the function be ignored.
    seen: list[Any] = []
    with (
        caplog.at_level(logging.WARNING, logger="onward.engine"),
        engine_at(tmp_path / "log.db") as engine,
    ):

        @engine.step(name="locate")
        def locate(conn: HTTPConnection | None = None) -> Point:
            return Point(1, 2)

        assert "locate" not in caplog.text  # a step's parameters are not read back

        @engine.task(name="job")
        def job(origin: Point, conn: HTTPConnection | None = None) -> Point:
            seen.extend([origin, locate()])
            return origin

        assert (
            "job: the annotation of parameter 'conn', 'HTTPConnection | None', does not "
            "resolve (NameError: name 'HTTPConnection' is not defined): its values are taken "
            "as recorded, as for Any"
        ) in caplog.text
        task_id = engine.submit(job, Point(0, 0))
        engine.run()
        assert engine.result(task_id) == Point(0, 0)
    assert seen == [Point(0, 0), Point(1, 2)]
    assert [type(x) for x in seen] == [Point, Point]


# -- which class an object comes back as -------------------------------------------------------


@dataclasses.dataclass
class Cat:
    name: str
    indoor: bool = True


@dataclasses.dataclass
class Dog:
    name: str
    breed: str


class Kitten(msgspec.Struct):
    name: str


class Puppy(msgspec.Struct):
    name: str
    breed: str


@dataclasses.dataclass(frozen=True, slots=True)
class Perch:
    height: int
    rungs: list[int] = dataclasses.field(default_factory=list)


class Moggy(msgspec.Struct, rename="camel", omit_defaults=True):
    pet_name: str
    lives: int = 9


class Hound(msgspec.Struct, rename="camel"):
    pet_name: str
    good_boy: bool = True


@dataclasses.dataclass
class Household:
    pets: list[Cat | Dog]
    favourite: Cat | Dog | None = None


@dataclasses.dataclass
class Adopted:
    kind: Literal["adopted"]
    name: str


@dataclasses.dataclass
class Fostered:
    kind: Literal["fostered"]
    name: str


class Flat(NamedTuple):
    x: int
    y: int


class Solid(NamedTuple):
    x: int
    y: int
    z: int = 0


class Greets(Protocol):
    def greet(self) -> str: ...


@dataclasses.dataclass
class Loose:
    id: int
    payload: Any = None


UNION_MEMBERS: list[tuple[str, Any, Any]] = [
    # It raised "typing.Any cannot be used with isinstance()" out of the worker (run() failed).
    ("optional, a field typed Any", Loose(1, {"k": [1, 2.5]}), Loose | None),
    ("a field typed Any in a union", Loose(2, "x"), Cat | Loose),
    ("a list of them or None", [Loose(3, None)], list[Loose] | None),
    ("Any or None", {"k": (1, 2)}, Any | None),
    # "Instance and class checks can only be used with @runtime_checkable protocols"
    ("a protocol in a union", Loose(4, 1), Greets | Loose | None),
    # The first member with the value's name field was taken: Cat(name='Rex', indoor=True).
    ("dataclass, the second member", Dog("Rex", "collie"), Cat | Dog),
    ("dataclass, the first member", Cat("Tom", indoor=False), Cat | Dog),
    ("struct, the second member", Puppy("Rex", "collie"), Kitten | Puppy),
    ("optional union", Dog("Rex", "collie"), Cat | Dog | None),
    ("list of a union", [Cat("Tom"), Dog("Rex", "collie")], list[Cat | Dog]),
    ("dict of a union", {"rex": Dog("Rex", "collie")}, dict[str, Cat | Dog]),
    ("tuple of a union", (Dog("Rex", "collie"), 1), tuple[Cat | Dog, int]),
    (
        "union nested in a field",
        Household([Dog("Rex", "b"), Cat("Tom")], Dog("Fido", "c")),
        Household,
    ),
    ("frozen slots dataclass", Perch(3), Cat | Perch),
    ("renamed struct, defaults left out", Moggy("tom"), Hound | Moggy),
    ("renamed struct, every field kept", Hound("rex", good_boy=False), Moggy | Hound),
    ("tagged struct", Circle(2.0), Shape | Circle),
    ("told apart by a literal field", Fostered("fostered", "Rex"), Adopted | Fostered),
    ("a shorter named tuple", Flat(1, 2), Solid | Flat),
    ("a longer named tuple", Solid(1, 2, 3), Flat | Solid),
    ("list of the second member's objects", [Cat("Tom")], list[Dog] | list[Cat]),
]


@pytest.mark.parametrize(
    ("value", "annotation"),
    [(v, a) for _, v, a in UNION_MEMBERS],
    ids=[k for k, _, _ in UNION_MEMBERS],
)
def test_a_union_rebuilds_the_member_whose_kept_form_the_value_is(
    value: Any, annotation: Any
) -> None:
    got = decode_value(encode_value(value, what="v"), annotation)
    assert got == value
    assert same_value(got, value)


@pytest.mark.parametrize(
    ("make", "annotation"),
    [
        (lambda: Dog("Rex", "collie"), Cat | Dog),
        (lambda: Puppy("Rex", "collie"), Kitten | Puppy),
    ],
    ids=["dataclasses", "structs"],
)
def test_a_union_of_objects_hands_back_the_member_returned_live_and_on_replay(
    tmp_path: Path, both_paths: str, make: Any, annotation: Any
) -> None:
    # A Dog came back as Cat(name='Rex', indoor=True): its breed lost, a default invented.
    seen, result = runs(tmp_path / "log.db", make, annotation, both_paths)
    assert len(seen) == 2
    for got in [result] + [x for pair in seen for x in pair]:
        assert type(got) is type(make())
        assert got == make()


def test_a_dict_with_keys_that_are_none_of_a_class_fields_comes_back_as_the_dict(
    tmp_path: Path, both_paths: str
) -> None:
    # It came back as Cat(name='Tom', indoor=True): its owner and chip lost.
    record = {"name": "Tom", "owner": "Ann", "chip": 981}
    seen, result = runs(tmp_path / "log.db", lambda: dict(record), Cat, both_paths)
    assert len(seen) == 2
    for got in [result] + [x for pair in seen for x in pair]:
        assert same_value(got, record), got


@pytest.mark.parametrize(
    ("stored", "annotation"),
    [
        ({"name": "Rex", "breed": "collie", "chip": 981}, Dog),
        ({"name": "Rex", "breed": "collie", "chip": 981}, Cat | Dog),
        ({"name": "Rex", "chip": 981}, Kitten),
        ({"kind": "circle", "radius": 2.0, "colour": "red"}, Shape | Circle),
        ({"pets": [], "favourite": None, "owner": "Ann"}, Household),
    ],
    ids=["dataclass", "union", "struct", "tagged struct", "nested"],
)
def test_a_dict_with_other_keys_is_rebuilt_as_no_class(stored: Any, annotation: Any) -> None:
    got = decode_value(encode_value(stored, what="v"), annotation)
    assert same_value(got, stored), got


def test_a_dict_without_a_field_that_has_a_default_is_rebuilt_with_the_default() -> None:
    # What no member keeps whole is read as before: the first member that takes it.
    assert decode_value({"name": "Tom"}, Cat) == Cat("Tom")
    assert decode_value({"name": "Tom"}, Dog | Cat) == Cat("Tom")
    assert decode_value({"name": "Tom"}, dict[str, str] | Cat) == {"name": "Tom"}
    household = decode_value({"pets": [{"name": "Tom"}, {"name": "Rex", "breed": "b"}]}, Household)
    assert household == Household([Cat("Tom"), Dog("Rex", "b")])
