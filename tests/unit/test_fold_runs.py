"""A running task's step outcomes folded as a run: its view's counters are those of the
outcomes folded one by one, at the end of a page, between two tasks' outcomes, and when a
record is missing in the middle of a run."""

from __future__ import annotations

from onward.events import Meta, Recorded, StepCompleted, StepFailed, TaskClaimed, TaskSubmitted
from onward.projections import Projections, task_stream


def _task(task_id: str, first: int, outcomes: int, *, missing: int = 0) -> list[Recorded]:
    """The records of a task submitted, claimed and with ``outcomes`` step outcomes (every
    third one failed, not for good), at positions from ``first``; version ``missing`` left
    out when given."""
    events: list[object] = [
        TaskSubmitted(name="crawl", args=[task_id]),
        TaskClaimed(worker="w", lease_until=1e9, attempt=1),
    ]
    for i in range(outcomes):
        if i % 3 == 2:
            events.append(StepFailed(index=i, name="fetch", error_type="E", final=False))
        else:
            events.append(StepCompleted(index=i, name="fetch", result=i))
    records = []
    for version, event in enumerate(events, start=1):
        if version == missing:
            continue
        meta = Meta(event_id=f"{task_id}-{version}", time=100.0 + version, session="s")
        records.append(
            Recorded(task_stream(task_id), version, first + version, meta, event)  # type: ignore[arg-type]
        )
    return records


def _folded(pages: list[list[Recorded]]) -> Projections:
    projections = Projections()
    for page in pages:
        projections.apply_page(page)
    return projections


def test_a_run_of_outcomes_leaves_the_counters_of_each_folded_in_turn() -> None:
    a, b = _task("a", 0, 7), _task("b", 100, 5)
    view = _folded([[r] for r in a + b]).tasks.views["a"]
    assert (view.version, view.updated_at, view.steps) == (9, 109.0, 5)
    # Whole pages, pages cut inside a run, and two tasks' runs interleaved.
    interleaved = [r for pair in zip(a, b, strict=False) for r in pair] + a[len(b) :]
    for records, pages in (
        (a + b, [a + b]),
        (a + b, [a[:4], a[4:] + b[:3], b[3:]]),
        (interleaved, [interleaved]),
    ):
        folded, one_by_one = _folded(pages), _folded([[r] for r in records])
        assert folded.snapshot() == one_by_one.snapshot()
        for task_id in ("a", "b"):
            got, want = folded.tasks.views[task_id], one_by_one.tasks.views[task_id]
            assert (got.version, got.updated_at, got.steps) == (
                want.version,
                want.updated_at,
                want.steps,
            )


def test_a_record_missing_in_a_run_damages_its_task_after_the_outcomes_before_it() -> None:
    """Version 6 of task a's stream is missing, in the middle of its outcomes: the task is
    damaged there, its view keeps the outcomes before the gap, and task b folds on."""
    projections = _folded([_task("a", 0, 6, missing=6) + _task("b", 100, 2)])
    view = projections.tasks.views["a"]
    assert view.state == "damaged"
    assert "version 6 of its stream is missing" in view.damage
    assert (view.version, view.updated_at) == (5, 105.0)
    assert projections.tasks.views["b"].state == "running"
    assert projections.tasks.views["b"].version == 4
