"""The rulebook steers healing: its rule is recorded, its preferred fixes come first, and a rule
can rule out a retry or any remedy."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from onward import Engine, Rulebook, TaskFailedError
from onward.events import ErrorObserved, FixFailed, Jitter, StepFailed
from onward.healing.breaker import BreakerPolicy
from onward.healing.fixes import FixRegistry, Remedy, StepCall
from onward.healing.retry import RetryPolicies, RetryPolicy
from onward.judgement.rulebook import Verdict, verdict
from tests.conftest import FakeClock

#: Every test here runs on both paths: Engine.run, and Engine.run_async on an event loop.
pytestmark = pytest.mark.usefixtures("both_paths")

RETRY_ALL = RetryPolicies(
    RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE, retry_on=("Exception",), never=())
)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'work.db'}"


def open_engine(db: str, clock: FakeClock, **options: Any) -> Engine:
    return Engine.open(db, session="rules", clock=clock, sleep=clock.advance, seed=1, **options)


def healing_decisions(engine: Engine, task_id: str) -> list[Any]:
    return [
        r.event
        for r in engine.log.read_stream(f"task-{task_id}")
        if type(r.event).__name__ == "DecisionMade" and r.event.kind != "task_completed"  # type: ignore[union-attr]
    ]


def test_a_file_rule_gives_up_at_once_and_is_named_in_the_decision(
    db: str, clock: FakeClock, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        """
[[rules]]
id = "vendor.quota"
scenario = "error"
when = { error_type = 'QuotaExceeded', message = '(?i)daily limit' }
choice = "give_up"
description = "The daily quota is spent: retrying today is pointless."
"""
    )

    class QuotaExceeded(Exception):
        pass

    calls: list[int] = []
    book = Rulebook.from_toml(rules)
    with open_engine(db, clock, rulebook=book, retries=RETRY_ALL) as engine:

        @engine.step()
        def call_vendor() -> None:
            calls.append(1)
            raise QuotaExceeded("Daily limit of 1000 calls reached")

        @engine.task()
        def job() -> None:
            call_vendor()

        task_id = engine.submit(job)
        engine.run()
        with pytest.raises(TaskFailedError):
            engine.result(task_id)
        assert calls == [1]  # no retry: the rule ruled it out
        (decision,) = healing_decisions(engine, task_id)
        assert decision.kind == "give_up"
        assert decision.rule == "vendor.quota"
        assert decision.inputs["rule_choice"] == "give_up"


@pytest.mark.parametrize("forcing", ['choice = "retry"', 'choice = "fix"\nretry = true'])
def test_a_file_rule_retries_an_error_the_policy_does_not(
    db: str, clock: FakeClock, tmp_path: Path, forcing: str
) -> None:
    """A rule that chooses a retry (``choice = "retry"``, or ``retry = true``) of an error the
    policy never retries: retried, within the policy's attempts (it failed at once, and the
    decision named the rule all the same)."""
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f"""
[[rules]]
id = "parser.flaky"
scenario = "error"
when = {{ error_type = '^ValueError$' }}
{forcing}
"""
    )
    calls: list[int] = []
    never = RetryPolicies(RetryPolicy(max_attempts=3, base=1.0, jitter=Jitter.NONE, retry_on=()))
    with open_engine(db, clock, rulebook=Rulebook.from_toml(rules), retries=never) as engine:

        @engine.step()
        def parse() -> int:
            calls.append(1)
            if len(calls) < 3:
                raise ValueError("flaky parse")
            return len(calls)

        @engine.task()
        def job() -> int:
            return parse()

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 3
        decisions = healing_decisions(engine, task_id)
        assert [d.kind for d in decisions] == ["retry", "retry"]
        assert {d.rule for d in decisions} == {"parser.flaky"}
        assert decisions[0].inputs["retry"]["forced_by_rule"] == "parser.flaky"


def test_the_builtin_rule_for_a_missing_import_rules_out_retrying(
    db: str, clock: FakeClock
) -> None:
    calls: list[int] = []
    with open_engine(db, clock, retries=RETRY_ALL) as engine:

        @engine.step()
        def load_plugin() -> None:
            calls.append(1)
            raise ModuleNotFoundError("No module named 'vendor_plugin'")

        @engine.task()
        def job() -> None:
            load_plugin()

        task_id = engine.submit(job)
        engine.run()
        assert calls == [1]
        (decision,) = healing_decisions(engine, task_id)
        assert decision.rule == "error.missing-import"
        assert decision.kind == "give_up"


def test_without_a_matching_rule_the_retry_policy_decides(db: str, clock: FakeClock) -> None:
    calls: list[int] = []
    with open_engine(db, clock, retries=RETRY_ALL, rulebook=Rulebook(builtins=False)) as engine:

        @engine.step()
        def flaky() -> int:
            calls.append(1)
            if len(calls) < 2:
                raise ModuleNotFoundError("No module named 'vendor_plugin'")
            return 7

        @engine.task()
        def job() -> int:
            return flaky()

        task_id = engine.submit(job)
        engine.run()
        assert engine.result(task_id) == 7
        (decision,) = healing_decisions(engine, task_id)
        assert decision.kind == "retry"
        assert decision.rule == ""


class HalveBatch:
    """A fix that halves a batch while it is above one (it always has more to offer)."""

    name = "halve-the-batch"
    error_types = (ValueError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return int(call.arguments["size"]) > 1

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        size = int(call.arguments["size"])
        return Remedy(call=call.with_arguments(size=size // 2), change={"size": [size, size // 2]})


def test_a_rule_that_gives_up_settles_the_fix_in_flight(db: str, clock: FakeClock) -> None:
    fixes = FixRegistry()
    fixes.register(HalveBatch())
    book = Rulebook(builtins=False)

    @book.function("stop-after-two", "error")
    def stop(scenario: str, facts: Mapping[str, Any]) -> Verdict | None:
        return verdict("give_up") if int(facts["attempt"]) >= 2 else None

    sizes: list[int] = []
    with open_engine(db, clock, fixes=fixes, rulebook=book) as engine:

        @engine.step()
        def process(size: int) -> int:
            sizes.append(size)
            raise ValueError("the batch is too big")

        @engine.task()
        def job(size: int) -> int:
            return process(size)

        task_id = engine.submit(job, 40)
        engine.run()
        with pytest.raises(TaskFailedError, match="too big"):
            engine.result(task_id)
        assert sizes == [40, 20]  # the fix once, then the rule gave up
        history = engine.log.read_stream(f"task-{task_id}")
        (failed,) = [r.event for r in history if isinstance(r.event, FixFailed)]
        assert (failed.fix, failed.step_index) == ("halve-the-batch", 0)
        stats = engine.refresh().errors.fix_stats(failed.signature)["halve-the-batch"]
        assert (stats.attempts, stats.successes, stats.failures) == (1, 0, 1)
        assert [d.kind for d in healing_decisions(engine, task_id)] == ["fix", "give_up"]


def test_a_rule_that_raises_records_the_step_s_error_first(db: str, clock: FakeClock) -> None:
    book = Rulebook()

    @book.function("broken", "error")
    def broken(scenario: str, facts: Mapping[str, Any]) -> Verdict | None:
        raise ZeroDivisionError("rule bug")

    calls: list[int] = []
    breakers = BreakerPolicy(failures=1, cooldown=60.0)
    with open_engine(db, clock, rulebook=book, retries=RETRY_ALL, breakers=breakers) as engine:

        @engine.step(breaker="api")
        def fetch() -> str:
            calls.append(1)
            raise ConnectionError("the api is down")

        @engine.task()
        def job() -> str:
            return fetch()

        task_id = engine.submit(job)
        engine.run()
        # What the rule raised propagates to the task ...
        with pytest.raises(TaskFailedError, match="rule bug"):
            engine.result(task_id)
        assert calls == [1]
        # ... once the step's own failure is recorded as its outcome, and the breaker told.
        history = engine.log.read_stream(f"task-{task_id}")
        (failed,) = [r.event for r in history if isinstance(r.event, StepFailed)]
        assert (failed.error_type, failed.message, failed.final) == (
            "ConnectionError",
            "the api is down",
            True,
        )
        (observed,) = [r.event for r in history if isinstance(r.event, ErrorObserved)]
        projections = engine.refresh()
        assert projections.errors.get(observed.signature).occurrences == 1
        assert projections.breakers.get("api").state == "open"
        (decision,) = [d for d in healing_decisions(engine, task_id) if d.kind == "give_up"]
        assert decision.inputs["reason"] == "the rulebook raised ZeroDivisionError: rule bug"
