"""scripts/plot_bench.py reads the benchmarks' targets as the share of their allowance used."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "plot_bench.py"


@pytest.fixture(scope="module")
def plot_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plot_bench", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("rule", "value", "share"),
    [
        ("step_us <= 1.3 x raw_commit_us", 1.04, 0.8),  # a ratio target that holds
        ("open_checkpoint_s <= 0.1", 0.2, 2.0),  # an absolute one that does not
        ("replay_eps >= 0.5 x raw_read_decode_eps", 0.25, 2.0),  # half the rate asked for
        ("vs_save >= raw_eps", 2.0, 0.5),  # a bare figure: factor one
    ],
)
def test_a_targets_share_of_its_allowance(
    plot_bench: ModuleType, rule: str, value: float, share: float
) -> None:
    assert plot_bench.used({"rule": rule, "value": value}) == pytest.approx(share)


def test_targets_without_a_value_are_left_out_and_runs_are_counted(
    plot_bench: ModuleType, tmp_path: Path
) -> None:
    targets = {
        "step": {"rule": "step_us <= 1.3 x raw_commit_us", "value": 1.0, "meets": True},
        "peer": {"rule": "dbos_step_us >= 5 x step_us", "value": None, "meets": None},
    }
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder in (first, second):
        (folder / "tasks.json").write_text(json.dumps({"targets": targets}))
    rows = plot_bench.load([first / "tasks.json", second / "tasks.json"])
    assert [(bench, run, key) for bench, run, key, _share, _ok in rows] == [
        ("tasks", 0, "step"),
        ("tasks", 1, "step"),
    ]
    assert rows[0][3] == pytest.approx(1 / 1.3)


def test_a_file_that_is_not_json_is_named_in_the_error(
    plot_bench: ModuleType, tmp_path: Path
) -> None:
    broken = tmp_path / "tasks.json"
    broken.write_text("{ not json")
    with pytest.raises(SystemExit, match=r"cannot read .*tasks\.json"):
        plot_bench.load([broken])
