"""A worker process for ``test_kill_blobs.py``: a task of four steps that each return a
2 MiB text (stored as a blob), killed with SIGKILL while it records the second.

``python tests/crash/_blobs_child.py DB OUT PHASE MOMENT``: phase 1 dies by SIGKILL at the
second append that stores a blob, ``inside`` its transaction (the blob and the record
inserted, not committed) or just ``after`` it committed; phase 2 resumes the session and
writes what the task returned and how many steps it replayed to ``OUT/result.json``. Every step
body appends ``index pid`` to ``OUT/effects`` (fsync'ed) before it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

STEPS = 4
SIZE = 2 * 1024 * 1024


def value(index: int) -> str:
    """What step ``index`` returns: about 2 MiB of text, different for each step."""
    line = f"step {index}: a line of a large file the agent read, with code = {index}\n"
    return (line * (SIZE // len(line) + 1))[:SIZE]


def digest(text: str) -> str:
    """A short fingerprint of a value, to compare values as they ran across processes."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _die_at_second_blob(moment: str) -> None:
    """SIGKILL this process at the second append that stores a blob."""
    from onward.events.sqlite import SQLiteLog, SQLiteWriterRecorder

    seen = [0]
    if moment == "inside":
        original_head = SQLiteWriterRecorder._write_head

        def write_head(self: Any, writer: Any, head: Any, stored: Any, positions: Any) -> None:
            if any(b',"split":' in s.state for s in stored):
                seen[0] += 1
                if seen[0] == 2:  # the blob and the record are in the open transaction
                    os.kill(os.getpid(), signal.SIGKILL)
            original_head(self, writer, head, stored, positions)

        SQLiteWriterRecorder._write_head = write_head  # type: ignore[method-assign]
        return
    original_insert = SQLiteLog._insert_with_blobs

    def insert(self: Any, records: Any, blobs: Any, wakes: bool = False) -> list[int]:
        positions = original_insert(self, records, blobs, wakes)
        seen[0] += 1
        if seen[0] == 2:  # committed: the next process must not run that step again
            os.kill(os.getpid(), signal.SIGKILL)
        return positions

    SQLiteLog._insert_with_blobs = insert  # type: ignore[method-assign]


def main(db: str, out: str, phase: int, moment: str) -> None:
    from onward import Engine

    if phase == 1:
        _die_at_second_blob(moment)
    engine = Engine.open(f"sqlite:///{db}", session="kill-blobs")
    effects = Path(out, "effects")

    @engine.step(name="read_file")
    def read_file(index: int) -> str:
        with open(effects, "a") as f:
            f.write(f"{index} {os.getpid()}\n")
            f.flush()
            os.fsync(f.fileno())
        return value(index)

    @engine.task(name="review")
    def review(steps: int) -> list[str]:
        return [digest(read_file(i)) for i in range(steps)]

    task_id = engine.submit(review, STEPS, key="one")
    summary = engine.run()
    result = {"result": engine.result(task_id), "replayed": summary.steps_replayed}
    Path(out, "result.json").write_text(json.dumps(result))
    engine.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
