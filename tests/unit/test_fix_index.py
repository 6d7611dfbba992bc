"""The registry asks a fix that declares ``error_types`` only about errors that hold one of them
(in the error or along its chain), and every other fix about every error."""

from __future__ import annotations

from typing import Any

import pytest

from onward.events import UsageError
from onward.healing.fixes import FixRegistry, Remedy, StepCall

CALL = StepCall(step="load", arguments={"path": "/tmp/x"})


class Counting:
    """A fix that matches errors of one type and counts how often it was asked."""

    def __init__(self, name: str, kind: type[BaseException], declared: Any = None) -> None:
        self.name = name
        self.kind = kind
        self.asked = 0
        if declared is not None:
            self.error_types = declared

    def matches(self, error: BaseException, call: StepCall) -> bool:
        self.asked += 1
        link: BaseException | None = error
        while link is not None:
            if isinstance(link, self.kind):
                return True
            link = link.__cause__ or link.__context__
        return False

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        return Remedy(call=call)


def names(registry: FixRegistry, error: BaseException, learned: tuple[str, ...] = ()) -> list[str]:
    chosen = registry.candidates(error, CALL, signature="s", stats={}, learned=learned)
    return [fix.name for fix in chosen]


def raised_from(error: BaseException, cause: BaseException, *, implicit: bool) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            if implicit:
                raise error  # noqa: B904 - the context is the point
            raise error from inner
    except BaseException as outer:
        return outer
    raise AssertionError("nothing raised")


def test_a_declared_fix_is_not_asked_about_other_errors() -> None:
    keys = Counting("keys", KeyError, (KeyError,))
    registry = FixRegistry([keys])

    assert names(registry, ValueError("bad")) == []
    assert keys.asked == 0


@pytest.mark.parametrize("implicit", [False, True])
def test_a_declared_fix_is_asked_when_its_type_is_along_the_chain(implicit: bool) -> None:
    keys = Counting("keys", KeyError, (KeyError,))
    registry = FixRegistry([keys])

    assert names(registry, KeyError("k")) == ["keys"]
    assert names(registry, raised_from(ValueError("v"), KeyError("k"), implicit=implicit)) == [
        "keys"
    ]
    assert keys.asked == 2


def test_a_subclass_of_a_declared_type_counts() -> None:
    lookups = Counting("lookups", LookupError, (LookupError,))
    registry = FixRegistry([lookups])

    assert names(registry, KeyError("k")) == ["lookups"]
    assert names(registry, IndexError(3)) == ["lookups"]


def test_an_undeclared_fix_is_asked_about_every_error() -> None:
    anything = Counting("anything", Exception)
    registry = FixRegistry([Counting("keys", KeyError, (KeyError,)), anything])

    assert names(registry, ValueError("v")) == ["anything"]
    assert names(registry, OSError("o")) == ["anything"]
    assert anything.asked == 2


def test_a_fix_registered_later_is_asked_about_errors_met_before() -> None:
    registry = FixRegistry([Counting("keys", KeyError, (KeyError,))])
    assert names(registry, ValueError("v")) == []

    registry.register(Counting("values", ValueError, (ValueError,)))

    assert names(registry, ValueError("v")) == ["values"]


def test_a_learned_fix_comes_first_whatever_it_declares() -> None:
    registry = FixRegistry(
        [Counting("values", ValueError, (ValueError,)), Counting("keys", KeyError, (KeyError,))]
    )

    assert names(registry, ValueError("v"), learned=("keys",)) == ["keys", "values"]


def test_an_error_that_claims_another_class_is_shown_to_that_class_s_fixes() -> None:
    class Disguised(Exception):
        @property  # type: ignore[misc]
        def __class__(self) -> type:  # isinstance() believes it
            return KeyError

    error = Disguised("k")
    assert isinstance(error, KeyError)
    registry = FixRegistry([Counting("keys", KeyError, (KeyError,))])

    assert names(registry, error) == ["keys"]


@pytest.mark.parametrize("declared", [[KeyError], (KeyError, int), ("KeyError",), KeyError])
def test_error_types_must_be_a_tuple_of_exception_classes(declared: Any) -> None:
    registry = FixRegistry()

    with pytest.raises(UsageError, match=r"fix 'odd' declares error_types=.*tuple of exception"):
        registry.register(Counting("odd", KeyError, declared))
    assert "odd" not in registry
    assert names(registry, KeyError("k")) == []
