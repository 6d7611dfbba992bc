"""The fix protocol, the registry, and how candidates are chosen: learned first, by success rate,
demoted fixes dropped."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Mapping

import msgspec
import pytest

from onward.events import UsageError
from onward.healing import fixes as fixes_module
from onward.healing.fixes import (
    DEMOTE_AFTER,
    DEMOTE_BELOW,
    Fix,
    FixRegistry,
    FixStats,
    Remedy,
    StepCall,
    UnknownFix,
)
from onward.healing.remedies import builtin_fixes, default_registry


class Probe:
    """A fix for tests: matches errors of one type, answers a remedy that names it."""

    def __init__(self, name: str, kind: type[BaseException] = ValueError) -> None:
        self.name = name
        self.kind = kind

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return isinstance(error, self.kind)

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        return Remedy(call=call, change={"by": self.name})


class Broken(Probe):
    def matches(self, error: BaseException, call: StepCall) -> bool:
        raise RuntimeError("bug in a plug-in")


CALL = StepCall(step="fetch", arguments={"url": "https://example.org", "timeout": 5.0})


def choose(
    registry: FixRegistry,
    error: BaseException | None = None,
    *,
    stats: Mapping[str, FixStats] | None = None,
    learned: tuple[str, ...] = (),
) -> list[str]:
    chosen = registry.candidates(
        ValueError("bad") if error is None else error,
        CALL,
        signature="sig-1",
        stats=stats or {},
        learned=learned,
    )
    return [fix.name for fix in chosen]


# -- StepCall, Remedy, FixStats --------------------------------------------------------------


def test_with_arguments_replaces_some_and_keeps_order() -> None:
    changed = CALL.with_arguments(timeout=10.0)

    assert changed.arguments == {"url": "https://example.org", "timeout": 10.0}
    assert list(changed.arguments) == ["url", "timeout"]
    assert CALL.arguments["timeout"] == 5.0  # unchanged
    assert (changed.step, changed.hints, changed.attempt) == (CALL.step, CALL.hints, CALL.attempt)


def test_with_arguments_refuses_a_parameter_the_step_does_not_have() -> None:
    with pytest.raises(UsageError, match=r"step 'fetch' has no parameter 'retries'.*url, timeout"):
        CALL.with_arguments(retries=3)


def test_calls_and_remedies_round_trip_as_json() -> None:
    remedy = Remedy(
        call=CALL.with_arguments(timeout=10.0), change={"timeout": [5.0, 10.0]}, delay=1.5
    )

    assert msgspec.json.decode(msgspec.json.encode(remedy), type=Remedy) == remedy
    assert Remedy(call=CALL).delay == 0.0
    assert Remedy(call=CALL).change == {}


def test_rate_is_laplace_smoothed() -> None:
    assert FixStats(0, 0).rate == 0.5
    assert FixStats(1, 1).rate == pytest.approx(2 / 3)
    assert FixStats(4, 1).rate == pytest.approx(2 / 6)
    assert FixStats(5, 2).failures == 3


def test_demotion_needs_enough_attempts_and_a_low_rate() -> None:
    assert (DEMOTE_AFTER, DEMOTE_BELOW) == (3, 0.25)
    assert not FixStats(2, 0).demoted  # rate 0.25, and too few attempts to judge
    assert FixStats(3, 0).demoted  # rate 0.2
    assert not FixStats(6, 1).demoted  # rate 0.25 exactly
    assert FixStats(7, 1).demoted  # rate 0.22
    assert not FixStats(20, 5).demoted  # rate 0.27


@pytest.mark.parametrize(("attempts", "successes"), [(-1, 0), (1, 2), (2, -1)])
def test_impossible_stats_are_refused(attempts: int, successes: int) -> None:
    with pytest.raises(UsageError, match="successes"):
        FixStats(attempts, successes)


# -- the registry ----------------------------------------------------------------------------


def test_register_get_and_names_in_order() -> None:
    first, second = Probe("first"), Probe("second")
    registry = FixRegistry([first])
    registry.register(second)

    assert registry.names == ("first", "second")
    assert registry.get("second") is second
    assert list(registry) == [first, second]
    assert len(registry) == 2
    assert "first" in registry
    assert "third" not in registry


def test_a_duplicate_name_is_refused() -> None:
    registry = FixRegistry([Probe("retry-later")])

    with pytest.raises(UsageError, match="already registered as 'retry-later'"):
        registry.register(Probe("retry-later"))
    assert len(registry) == 1


@pytest.mark.parametrize("name", ["", "two words", "tab\there"])
def test_a_name_must_have_no_spaces(name: str) -> None:
    with pytest.raises(UsageError, match="name without spaces"):
        FixRegistry().register(Probe(name))


def test_an_object_that_is_not_a_fix_is_refused() -> None:
    class NoApply:
        name = "half"

        def matches(self, error: BaseException, call: StepCall) -> bool:
            return True

    with pytest.raises(UsageError, match="is not a fix"):
        FixRegistry().register(NoApply())  # type: ignore[arg-type]


def test_an_unknown_name_lists_the_known_ones() -> None:
    registry = FixRegistry([Probe("b-fix"), Probe("a-fix")])

    with pytest.raises(UnknownFix, match=r"'c-fix' \(registered: a-fix, b-fix\)") as raised:
        registry.get("c-fix")
    assert isinstance(raised.value, LookupError)
    assert isinstance(raised.value, UsageError)
    assert raised.value.name == "c-fix"
    assert set(raised.value.known) == {"a-fix", "b-fix"}


# -- candidates ------------------------------------------------------------------------------


def test_only_matching_fixes_in_registration_order_when_untried() -> None:
    registry = FixRegistry([Probe("one"), Probe("other", KeyError), Probe("two")])

    assert choose(registry) == ["one", "two"]
    assert choose(registry, KeyError("k")) == ["other"]
    assert choose(registry, OSError()) == []


def test_higher_success_rate_first_and_unknown_counts_as_even() -> None:
    registry = FixRegistry([Probe("a"), Probe("b"), Probe("c"), Probe("d")])
    stats = {
        "a": FixStats(1, 0),  # 0.33
        "b": FixStats(4, 3),  # 0.67
        "c": FixStats(2, 2),  # 0.75
        # d untried: 0.5
    }

    assert choose(registry, stats=stats) == ["c", "b", "d", "a"]


def test_equal_rates_keep_registration_order() -> None:
    registry = FixRegistry([Probe("a"), Probe("b"), Probe("c")])
    stats = {"c": FixStats(2, 1), "a": FixStats(4, 2)}  # all 0.5, like untried b

    assert choose(registry, stats=stats) == ["a", "b", "c"]


def test_learned_fixes_come_first_even_when_they_do_not_match() -> None:
    registry = FixRegistry([Probe("generic"), Probe("manual", KeyError), Probe("other", KeyError)])
    stats = {"generic": FixStats(10, 10), "manual": FixStats(0, 0)}

    assert choose(registry, stats=stats, learned=("manual",)) == ["manual", "generic"]


def test_learned_fixes_are_ordered_by_rate_among_themselves() -> None:
    registry = FixRegistry([Probe("x"), Probe("y"), Probe("z")])
    stats = {"x": FixStats(2, 1), "y": FixStats(3, 3)}

    assert choose(registry, stats=stats, learned=("x", "y")) == ["y", "x", "z"]


def test_demoted_fixes_are_dropped_even_when_learned() -> None:
    registry = FixRegistry([Probe("failing"), Probe("learned-but-failing"), Probe("fine")])
    stats = {"failing": FixStats(3, 0), "learned-but-failing": FixStats(5, 0)}

    assert choose(registry, stats=stats, learned=("learned-but-failing",)) == ["fine"]


def test_a_fix_recovers_when_it_starts_working() -> None:
    registry = FixRegistry([Probe("flaky")])

    assert choose(registry, stats={"flaky": FixStats(3, 0)}) == []
    assert choose(registry, stats={"flaky": FixStats(6, 2)}) == ["flaky"]  # rate 0.375


def test_learned_names_no_longer_registered_are_skipped() -> None:
    registry = FixRegistry([Probe("here")])

    assert choose(registry, learned=("gone", "here")) == ["here"]


def test_a_matches_that_raises_counts_as_no(caplog: pytest.LogCaptureFixture) -> None:
    registry = FixRegistry([Broken("broken"), Probe("sound")])

    with caplog.at_level(logging.WARNING, logger="onward.engine.fixes"):
        assert choose(registry) == ["sound"]
    assert "fix broken: matches() raised" in caplog.text


def test_a_fix_that_cannot_fix_after_all_answers_none() -> None:
    class Declines(Probe):
        def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
            return None

    registry = FixRegistry([Declines("declines"), Probe("works")])
    chosen = registry.candidates(ValueError(), CALL, signature="s", stats={}, learned=())

    assert [fix.apply(ValueError(), CALL) for fix in chosen] == [
        None,
        Remedy(call=CALL, change={"by": "works"}),
    ]


# -- the built-ins ---------------------------------------------------------------------------

BUILTIN_NAMES = [
    "decode-with-detected-encoding",
    "encode-output-with-replacement",
    "create-missing-parent-directory",
    "wait-for-database-lock",
    "lengthen-timeout",
    "reconnect-after-dropped-connection",
    "halve-batch-size",
    "write-to-fallback-location",
    "extract-json-from-noise",
    "strip-markdown-fences",
    "normalise-indentation",
    "use-alternative-module",
    "use-declared-default",
]


def test_the_default_registry_holds_every_builtin() -> None:
    registry = default_registry()

    assert list(registry.names) == BUILTIN_NAMES
    for fix in registry:
        assert isinstance(fix, Fix)
        assert re.fullmatch(r"[a-z]+(-[a-z]+)+", fix.name)
        assert inspect.getdoc(type(fix)), fix.name


def test_each_default_registry_is_its_own() -> None:
    mine = default_registry()
    mine.register(Probe("mine"))

    assert "mine" not in default_registry()
    assert builtin_fixes()[0] is not builtin_fixes()[0]


def test_public_names_are_sorted_and_documented() -> None:
    exported = fixes_module.__all__

    def style(attr: str) -> tuple[int, str]:
        return (0 if attr.isupper() else 1 if attr[0].isupper() else 2, attr)

    assert exported == sorted(exported, key=style)
    for attr in exported:
        obj = getattr(fixes_module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), attr
