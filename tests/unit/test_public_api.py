"""The public surface of each package: exported deliberately, documented, no third-party types."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

from onward import events

PACKAGES = ["onward.events", "onward.projections", "onward"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__

    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    def style(attr: str) -> tuple[int, str]:
        return (0 if attr.isupper() else 1 if attr[0].isupper() else 2, attr)

    assert exported == sorted(exported, key=style), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is exported but missing"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_is_documented(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_third_party_type_is_exported(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        obj = getattr(module, attr)
        origin = getattr(obj, "__module__", "") or ""
        assert not origin.startswith(("transitions", "eventsourcing")), f"{name}.{attr}"


def test_events_exports_every_vocabulary_module() -> None:
    vocabulary: list[ModuleType] = [
        importlib.import_module(f"onward.events.{m}")
        for m in (
            "breaker",
            "decision",
            "degradation",
            "error",
            "fix",
            "flow",
            "kinds",
            "retry",
            "session",
            "step",
            "task",
        )
    ]
    for module in vocabulary:
        for attr in module.__all__:
            assert attr in events.__all__, f"events.{attr} is not exported"


def test_layers_point_down() -> None:
    """events imports neither projections nor the engine; projections does not import the
    engine (import-linter checks every layer in scripts/checks.sh; this is the floor of it)."""
    import pathlib

    root = pathlib.Path(__file__).parents[2]
    above = {"events": ("onward.projections", "onward."), "projections": ("onward.",)}
    allowed = {"events": ("onward.events",), "projections": ("onward.events", "onward.projections")}
    for package, forbidden in above.items():
        for path in (root / package).glob("*.py"):
            for line in path.read_text().splitlines():
                words = line.split()
                if len(words) < 2 or words[0] not in ("from", "import"):
                    continue
                module = words[1]
                if module.startswith(allowed[package]):
                    continue
                for name in forbidden:
                    assert not module.startswith(name), (path, line)
