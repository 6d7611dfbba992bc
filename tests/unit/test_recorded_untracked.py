"""A record read back from the log is not tracked by the cycle collector: a replay makes one for
every event, and a record never refers back to itself through its event. Its event and
envelope stay as they are (an event holding a list is tracked as before)."""

from __future__ import annotations

import gc
from pathlib import Path

from onward.events import Recorded, TaskSubmitted, open_log
from onward.projections.reading import FoldReader


def test_a_recorded_event_is_not_tracked_by_the_cycle_collector(tmp_path: Path) -> None:
    with open_log(f"sqlite:///{tmp_path / 'log.db'}") as log:
        log.append("task-a", [TaskSubmitted(name="crawl", args=[[1, 2]])], expected_version=0)
        read = list(log.read())
        folded = [r for page in FoldReader(log).pages() if isinstance(page, list) for r in page]
    assert len(read) == len(folded) == 1
    for r in (*read, *folded):
        assert isinstance(r, Recorded)
        assert not gc.is_tracked(r)
    assert gc.is_tracked(read[0].event.args)  # type: ignore[union-attr]
    assert read[0].event == TaskSubmitted(name="crawl", args=[[1, 2]])
