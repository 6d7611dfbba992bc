"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_opens_with_two_commands() -> None:
    first = re.search(r"```\n(.*?)```", README.read_text(), flags=re.S)
    assert first is not None
    lines = first.group(1).strip().splitlines()
    assert lines == ["bash scripts/demo.sh", "bash scripts/test.sh"]


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    source = python_blocks()[index]
    exec(compile(source, f"README.md example {index}", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    # A print's trailing comment is what it prints.
    for expected in re.findall(r"print\(.*\)\s+# (\S.*)$", source, flags=re.M):
        assert expected.strip() in printed
