"""A rate's look at a limit's recent takes counts what a look at every take would count.

The limit projection keeps the times permits were taken in time order and counts them by
bisection (a limit may take 100,000 permits an hour). Whatever the order the takes are folded
in (workers' clocks differ), the checkpoints taken between them and how many there are, the
count after a moment and the first take after it are those a look at every take finds: at
each take, those of the hour before it stay, at most as many as it keeps.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events import Meta, PermitTaken, Recorded
from onward.projections.limits import TAKES_SPAN, LimitProjection, limit_stream

#: Fewer takes kept than the projection keeps, so that examples reach the bound.
KEPT = 40


def take(projection: LimitProjection, version: int, time: float) -> None:
    meta = Meta(event_id=f"e{version}", time=time, session="s")
    event = PermitTaken(task_id=f"t{version}", index=0, worker="w", until=time + 60)
    projection.apply(Recorded(limit_stream("api"), version, version, meta, event))


def expected_takes(times: list[float]) -> list[float]:
    """The takes a look at every take keeps: at each take, those of the hour before it stay
    (a clock far ahead must not drop the others' as they come), the newest ``KEPT``."""
    kept: list[float] = []
    for time in times:
        kept = sorted([*kept, time])
        kept = [t for t in kept if t >= time - TAKES_SPAN][-KEPT:]
    return kept


@settings(max_examples=300, deadline=None)
@given(
    times=st.lists(st.floats(0, 3 * TAKES_SPAN, allow_nan=False), min_size=1, max_size=120),
    checkpoints=st.sets(st.integers(0, 119)),
    since=st.lists(st.floats(-10, 3 * TAKES_SPAN + 10, allow_nan=False), min_size=1, max_size=5),
)
def test_recent_takes_are_counted_as_a_look_at_every_take_counts(
    times: list[float], checkpoints: set[int], since: list[float]
) -> None:
    projection = LimitProjection()
    projection.kept = KEPT
    for version, time in enumerate(times, 1):
        take(projection, version, time)
        if version in checkpoints:
            loaded = LimitProjection()
            loaded.kept = KEPT
            loaded.load(projection.dump())
            projection = loaded
    kept = expected_takes(times)
    assert projection.view("api").takes == kept
    for moment in since:
        after = [t for t in kept if t > moment]
        assert projection.recent("api", moment) == len(after)
        assert projection.first_since("api", moment) == (after[0] if after else None)


def test_an_older_checkpoints_takes_in_fold_order_are_folded_again() -> None:
    """An onward before the sorted takes saved them in the order they were folded: loaded,
    they read as a fold of the same takes would."""
    folded = LimitProjection()
    for version, time in enumerate([10000.0, 2800.0, 10001.0], 1):
        take(folded, version, time)
    older = folded.dump()
    older[0].takes = [10000.0, 2800.0, 10001.0]  # as the older onward kept them
    loaded = LimitProjection()
    loaded.load(older)
    assert loaded.view("api").takes == folded.view("api").takes == [10000.0, 10001.0]


def test_takes_stamped_ahead_of_a_bound_are_not_counted() -> None:
    projection = LimitProjection()
    for version, time in enumerate([100.0, 200.0, 3000.0], 1):  # the last: a clock ahead
        take(projection, version, time)
    assert projection.recent("api", 150.0) == 2
    assert projection.recent("api", 150.0, until=500.0) == 1
    assert projection.first_since("api", 250.0, until=500.0) is None
    assert projection.first_since("api", 150.0, until=500.0) == 200.0
