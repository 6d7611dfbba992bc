"""Every benchmark's table has a line for each of its targets: a target without one made the
benchmark fail at its end, after minutes of measuring, when run without ``--json``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("bench_*.py")))
def test_each_target_of_a_benchmark_stands_on_a_line_of_its_table(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(SCRIPTS))
    name = f"_table_of_{script[:-3]}"
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # its classes name their module
    spec.loader.exec_module(module)
    bench = sys.modules["_bench"]
    placed: dict[int, object] = {}
    for target in module.TARGETS:
        placed[bench._line_of(target, module.FIGURES, placed)] = target
    assert len(placed) == len(module.TARGETS)
