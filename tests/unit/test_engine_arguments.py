"""What callers pass to the engine's methods is checked before anything is appended: a value of
the wrong type is a UsageError naming the call, never an event that does not decode (a stream
damaged for good) nor a bare TypeError; a task parameter named like one of submit()'s own
options is refused where it would be lost; a caller's keyword names in a message are redacted."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from onward import Engine, UsageError
from tests.conftest import FakeClock

SECRET = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"


class Ids(NamedTuple):
    """The tasks a call from outside steers."""

    queued: str
    failed: str


#: A call from outside a task.
Call = Callable[[Engine, Ids], object]


def task_of(*, name: str | None = None, **options: Any) -> Call:
    return lambda engine, _task: engine.task(name=name, **options)(lambda: 1)


def step_of(**options: Any) -> Call:
    return lambda engine, _task: engine.step(**options)(lambda: 1)


def action_of(**options: Any) -> Call:
    return lambda engine, _task: engine.action(**options)(lambda: 1)


OUTSIDE: list[tuple[str, Call, str]] = [
    ("submit key int", lambda e, t: e.submit("job", key=3), r"submit\(\): key"),
    ("submit key empty", lambda e, t: e.submit("job", key=""), r"submit\(\): key"),
    ("submit deadline nan", lambda e, t: e.submit("job", deadline=float("nan")), "deadline"),
    ("submit deadline bool", lambda e, t: e.submit("job", deadline=True), "deadline"),
    ("submit a list", lambda e, t: e.submit([1]), "registered task function"),
    ("cancel reason", lambda e, t: e.cancel(t.queued, reason=3), r"cancel\(\): reason"),
    ("cancel id", lambda e, t: e.cancel(3), r"cancel\(\): task_id"),
    ("quarantine reason", lambda e, t: e.quarantine(t.queued, reason=3), "reason"),
    ("quarantine by", lambda e, t: e.quarantine(t.queued, by=3), r"quarantine\(\): by"),
    ("reprioritise id", lambda e, t: e.reprioritise(3, "high"), "task_id"),
    ("retry by", lambda e, t: e.retry(t.failed, by=3), r"retry\(\): by"),
    ("retry reason", lambda e, t: e.retry(t.failed, reason=3), r"retry\(\): reason"),
    ("retry deadline inf", lambda e, t: e.retry(t.failed, deadline=float("inf")), "deadline"),
    ("fork from bool", lambda e, t: e.fork(t.failed, from_step=True), "from_step"),
    ("fork args str", lambda e, t: e.fork(t.failed, from_step=0, args="ab"), r"fork\(\): args"),
    ("fork kwargs keys", lambda e, t: e.fork(t.failed, from_step=0, kwargs={3: 1}), "str keys"),
    ("abandon by", lambda e, t: e.abandon(t.queued, by=3), r"abandon\(\): by"),
    ("send sender", lambda e, t: e.send(t.queued, "topic", 1, sender=3), "sender"),
    ("send id", lambda e, t: e.send(3, "topic"), r"send\(\): task_id"),
    ("get_state id", lambda e, t: e.get_state(3, "k"), "task_id"),
    ("task_view id", lambda e, t: e.task_view(3), "task_id"),
    ("result id", lambda e, t: e.result(3), r"result\(\): task_id"),
    ("tasks state", lambda e, t: e.tasks(3), "state"),
    (
        "schedule args str",
        lambda e, t: e.schedule("job", cron="* * * * *", args="ab"),
        r"schedule\(\): args",
    ),
    (
        "schedule kwargs pairs",
        lambda e, t: e.schedule("job", cron="* * * * *", kwargs=[("n", 1)]),
        r"schedule\(\): kwargs",
    ),
    ("unschedule name", lambda e, t: e.unschedule(3), "name"),
    ("unschedule reason", lambda e, t: e.unschedule("job", reason=3), "reason"),
    ("learn signature", lambda e, t: e.learn(3, "fix"), "signature"),
    ("learn note", lambda e, t: e.learn("v1-00", "fix", note=3), "note"),
    # Names applied, matched or looked up as given: one that holds a secret is refused, not
    # stored redacted (where it would never match again).
    ("learn secret fix", lambda e, t: e.learn("v1-00", f"fix-{SECRET}"), "looks like a secret"),
    ("send secret topic", lambda e, t: e.send(t.queued, f"t-{SECRET}", 1), "looks like a secret"),
    ("run workers str", lambda e, t: e.run(workers="2"), r"run\(\): workers"),
    ("run max_runs -1", lambda e, t: e.run(max_runs=-1), r"run\(\): max_runs"),
    ("run await_approvals", lambda e, t: e.run(await_approvals=-1), "await_approvals"),
    ("serve workers float", lambda e, t: e.serve(workers=1.5), r"serve\(\): workers"),
    ("approvals session", lambda e, t: e.approvals(session=3), "session"),
    ("approve id", lambda e, t: e.approve(3), "decision_id"),
    ("approve note", lambda e, t: e.approve("abc", note=3), "note"),
    ("deny by", lambda e, t: e.deny("abc", by=3), r"deny\(\): by"),
    ("notify summary", lambda e, t: e.notify(3), r"notify\(\): summary"),
    ("notify kind", lambda e, t: e.notify("x", kind=3), "kind"),
    ("notify urgent", lambda e, t: e.notify("x", urgent="yes"), "urgent"),
    ("resume reason", lambda e, t: e.resume(3), "reason"),
    ("component name", lambda e, t: e.component(3), "name"),
    ("component check", lambda e, t: e.component("c", check=3), "check"),
    ("component ladder str", lambda e, t: e.component("c", workarounds="ab"), "workarounds"),
    ("component about", lambda e, t: e.component("c", description=3), "description"),
    ("degrade message", lambda e, t: e.degrade("tests", message=3), "message"),
    ("task name", task_of(name=3), r"task\(\): name"),
    ("task aliases str", task_of(aliases="old"), "aliases"),
    ("task of int", lambda e, t: e.task()(int), "int cannot be a task"),
    ("task of no function", lambda e, t: e.task()(3), "registers a function"),
    ("step name", step_of(name=3), r"step\(\): name"),
    ("step at_most_once", step_of(at_most_once="yes"), "at_most_once"),
    ("step breaker", step_of(breaker=3), "breaker"),
    ("step hints", step_of(hints=[1]), "hints"),
    ("step timeout bool", step_of(timeout=True), "timeout"),
    ("step aliases str", step_of(aliases="ab"), "aliases"),
    ("step limit", step_of(limit=3), "limit"),
    ("action check", action_of(check=3), "check"),
    ("action undo", action_of(undo="undo"), "undo"),
    ("action reversible", action_of(reversible="no"), "reversible"),
    ("action urgent", action_of(urgent=1), "urgent"),
    ("action question", action_of(question=3), "question"),
]

#: A call inside a running task.
INSIDE: list[tuple[str, Callable[[Engine], object], str]] = [
    ("progress note", lambda e: e.progress(0.5, note=3), r"progress\(\): note"),
    ("progress str", lambda e: e.progress("0.5"), r"progress\(\): fraction"),
    ("progress bool", lambda e: e.progress(True), "fraction"),
    ("wait int", lambda e: e.wait(3), r"wait\(\): task_ids"),
    ("wait one id", lambda e: e.wait("abc"), "task_ids"),
    ("wait ints", lambda e: e.wait([3]), r"task_ids\[0\]"),
    ("sleep bool", lambda e: e.sleep(True), "seconds"),
    ("recv timeout bool", lambda e: e.recv("topic", timeout=True), "timeout"),
    ("notify summary", lambda e: e.notify(3), "summary"),
    ("recv secret topic", lambda e: e.recv(f"t-{SECRET}"), "looks like a secret"),
    ("set_state secret key", lambda e: e.set_state(f"k-{SECRET}", 1), "looks like a secret"),
]


@pytest.fixture
def engine(tmp_path: Path, clock: FakeClock) -> Engine:
    return Engine.open(
        f"sqlite:///{tmp_path / 'log.db'}",
        session="arguments",
        clock=clock,
        sleep=clock.advance,
        healing=False,
    )


@pytest.mark.parametrize(("call", "match"), [pytest.param(c, m, id=i) for i, c, m in OUTSIDE])
def test_a_wrong_argument_is_refused_before_anything_is_appended(
    engine: Engine, call: Call, match: str
) -> None:
    with engine:

        @engine.task(name="job")
        def job(n: int = 0) -> int:
            return n

        @engine.task(name="broken")
        def broken() -> int:
            raise RuntimeError("broken")

        failed = engine.submit(broken)
        engine.run()
        ids = Ids(queued=engine.submit(job), failed=failed)
        assert engine.task_view(failed).state == "failed"
        head = engine.log.head()
        with pytest.raises(UsageError, match=match):
            call(engine, ids)
        assert engine.log.head() == head


@pytest.mark.parametrize(("call", "match"), [pytest.param(c, m, id=i) for i, c, m in INSIDE])
def test_a_wrong_argument_inside_a_task_leaves_its_history_whole(
    tmp_path: Path, clock: FakeClock, call: Callable[[Engine], object], match: str
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    refused: list[str] = []
    with Engine.open(
        url, session="inside", clock=clock, sleep=clock.advance, healing=False
    ) as engine:

        @engine.task(name="job")
        def job() -> int:
            try:
                call(engine)
            except UsageError as exc:
                refused.append(str(exc))
            engine.progress(1.0, "done")
            return 1

        task_id = engine.submit(job)
        engine.run()
    assert len(refused) == 1
    assert re.search(match, refused[0]), refused[0]
    with Engine.open(url, session="inside", clock=clock, healing=False) as again:
        view = again.task_view(task_id)
        assert (view.state, view.damage) == ("succeeded", "")
        assert again.result(task_id) == 1


def fetch_with_key(bucket: str, key: str = "index.html") -> str:
    return f"{bucket}/{key}"


def fetch_with_priority(bucket: str, *, priority: str) -> str:
    return f"{bucket}/{priority}"


def fetch_with_deadline(bucket: str, deadline: float = 0.0) -> str:
    return f"{bucket}/{deadline}"


@pytest.mark.parametrize(
    ("fn", "parameter"),
    [
        (fetch_with_key, "key"),
        (fetch_with_priority, "priority"),
        (fetch_with_deadline, "deadline"),
    ],
)
def test_a_task_parameter_named_like_an_option_of_submit_is_refused_where_it_would_be_lost(
    engine: Engine, fn: Callable[..., str], parameter: str
) -> None:
    with engine, pytest.raises(UsageError, match=f"parameter '{parameter}'.*positional-only"):
        engine.task()(fn)
    assert fn.__name__ not in engine.registry.tasks


def test_a_parameter_named_key_is_given_positionally_and_submit_keeps_its_key(
    engine: Engine,
) -> None:
    with engine:

        @engine.task()
        def fetch(bucket: str, key: str = "index.html", /) -> str:
            return f"s3://{bucket}/{key}"

        @engine.task()
        def record(db: str, key: str) -> str:
            return f"{db}:{key}"

        first = engine.submit(fetch, "logs", "2024/01/01.gz", key="logs-0101")
        again = engine.submit(fetch, "logs", "other.gz", key="logs-0101")
        stored = engine.submit(record, "app.db", "k1", key="record-k1")
        with pytest.raises(UsageError, match=r"missing.*'key'.*key= went to submit\(\)"):
            engine.submit(record, "app.db", key="k1")
        engine.run()
        assert first == again
        assert engine.result(first) == "s3://logs/2024/01/01.gz"
        assert engine.result(stored) == "app.db:k1"


def test_a_keyword_name_in_a_refusal_is_redacted(engine: Engine) -> None:
    with engine:

        @engine.task()
        def job(n: int) -> int:
            return n

        @engine.task()
        def spread(**clients: object) -> int:
            return len(clients)

        with pytest.raises(UsageError, match="unexpected keyword") as unexpected:
            engine.submit(job, 1, **{f"token_{SECRET}": 1})
        with pytest.raises(UsageError, match="cannot be stored") as unstorable:
            engine.submit(spread, **{f"token_{SECRET}": object()})
    assert SECRET not in str(unexpected.value)
    assert SECRET not in str(unstorable.value)


@pytest.mark.parametrize("decorator", ["task", "step", "action"])
def test_a_decorator_used_without_parentheses_says_how_to_write_it(
    engine: Engine, decorator: str
) -> None:
    def fetch() -> int:
        return 1

    before = (len(engine.registry.tasks), len(engine.registry.steps))
    with pytest.raises(UsageError, match=rf"write @engine\.{decorator}\(\) with parentheses"):
        getattr(engine, decorator)(fetch)
    assert (len(engine.registry.tasks), len(engine.registry.steps)) == before
