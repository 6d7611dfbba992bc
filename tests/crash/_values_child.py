"""A worker process for ``test_kill_values.py``: runs a task whose argument and step result
hold every kind of value JSON alone would change, notes what it saw, and may SIGKILL itself.

``python tests/crash/_values_child.py DB OUT PHASE``: phase 1 dies by SIGKILL right after its
step's outcome is committed (having written what it saw to ``OUT/seen-1.pkl``); phase 2
resumes the task, replays the step, writes ``OUT/seen-2.pkl`` and the task's result.
"""

from __future__ import annotations

import datetime
import decimal
import math
import os
import pickle
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

#: What the task is given (an ``Any`` parameter: nothing to convert it by).
ARGUMENT: Any = {
    "when": datetime.datetime(2024, 11, 25, 10, 30, tzinfo=datetime.UTC),
    "ids": {3, 1, 2},
    "pair": (1, "a"),
    1: b"\x00\x01\xff",
    "depth": [[(1.5, math.inf)]],
}
#: What the step returns (annotated ``-> tuple``: the report's case).
RESULT: Any = (
    datetime.datetime(2024, 11, 25, 10, 30),
    {"b", "a"},
    b"raw \x00 bytes",
    math.nan,
    -math.inf,
    {7: frozenset({"x"}), "id": uuid.UUID(int=42)},
    decimal.Decimal("3.14"),
    datetime.date(2024, 1, 2),
    datetime.timedelta(seconds=90),
)


def _write(path: Path, value: Any) -> None:
    with open(path, "wb") as f:
        pickle.dump(value, f)
        f.flush()
        os.fsync(f.fileno())


def main(db: str, out: str, phase: int) -> None:
    from onward import Engine

    engine = Engine.open(f"sqlite:///{db}", session="kill-values")

    @engine.step(name="make")
    def make() -> tuple[Any, ...]:
        return tuple(RESULT)

    @engine.task(name="job")
    def job(argument: Any) -> Any:
        got = make()
        _write(Path(out, f"seen-{phase}.pkl"), (argument, got))
        if phase == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return got

    task_id = engine.submit(job, ARGUMENT, key="one")
    summary = engine.run()
    _write(Path(out, f"result-{phase}.pkl"), (engine.result(task_id), summary.steps_replayed))
    engine.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
