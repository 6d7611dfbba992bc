"""A command plugin that fails to load is named on the standard error, its error's secrets
redacted as every other message of the command is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_plugins_load_error_is_redacted(tmp_path: Path) -> None:
    (tmp_path / "leaky_plugin.py").write_text(
        'raise RuntimeError("cannot read settings: password=hunter2secret")\n'
    )
    info = tmp_path / "leaky_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[onward.commands]\nleaky = leaky_plugin:register\n")
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "onward", "fixes"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "command plugin 'leaky' failed to load" in done.stderr
    assert "password=[REDACTED:secret-value]" in done.stderr
    assert "hunter2" not in done.stderr
