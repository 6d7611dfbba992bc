"""The page-dispatched fold == folding event by event, on generated logs.

:meth:`Projections.apply_page` sends each event only to the folds that read its type, keeps
the view of the task whose step outcomes follow each other, and folds a page's step outcomes
into the flow at once. Here logs of random work (two sessions, tasks that succeed, fail, call
failing steps, wait, submit subtasks, are cancelled and reprioritised; sometimes an event its
lifecycle refuses, which damages its stream) are folded three ways that must agree:

- the fold reader's pages (lean step outcomes), of a random size, through ``apply_page``;
- the log's full events, one at a time, through :meth:`Projections.apply`;
- a plain reference fold written here: every event, one at a time, to every projection that
  could read it, through each projection's own ``apply``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onward.events import (
    LogDamaged,
    Meta,
    PermitReturned,
    ProblemKind,
    Recorded,
    StepCompleted,
    TaskQuarantined,
    TaskSubmitted,
    TaskWaiting,
)
from onward.events.integrity import StreamDamage
from onward.projections import Projections
from onward.projections.breakers import BREAKER_PREFIX
from onward.projections.decisions import DECISION_TYPES
from onward.projections.limits import LIMIT_PREFIX
from onward.projections.reading import FOLDED_STEP_OUTCOMES, FoldReader
from onward.projections.schedules import SCHEDULE_PREFIX
from onward.projections.session import SESSION_PREFIX
from onward.projections.task import INBOX_PREFIX, TASK_PREFIX
from onward.projections.workers import WORKER_PREFIX
from tests.conftest import FakeClock
from tests.property.test_projection_replay import OPS, Op, opened


def fold_each(records: list[Recorded]) -> Projections:
    """The reference: each event, one at a time, to every projection that may read it."""
    p = Projections()
    for r in records:
        stream, event = r.stream, r.event
        if stream in p.damaged:
            if isinstance(event, TaskQuarantined) and stream.startswith(TASK_PREFIX):
                p.tasks.apply(r)
        else:
            try:
                _fold_one(p, r)
            except LogDamaged as exc:
                p.mark_damaged(
                    StreamDamage(
                        stream=stream,
                        version=r.version,
                        position=r.position,
                        kind=ProblemKind.ILLEGAL,
                        reason=str(exc),
                    ),
                    r.meta.session,
                )
        p.position = r.position
        p.time = r.meta.time
    return p


def _fold_one(p: Projections, r: Recorded) -> None:
    stream, event = r.stream, r.event
    if type(event) in FOLDED_STEP_OUTCOMES:
        p.tasks.apply(r)
        p.breakers.apply(r)
        p.errors.apply(r)
        p.budget.apply(r)
        p.flow.apply(r)
        return
    if stream.startswith(TASK_PREFIX):
        p.tasks.apply(r)
        if isinstance(event, TaskWaiting) and event.limit:
            p._permit_freed_meanwhile(stream[len(TASK_PREFIX) :], event, r.meta.time)
    elif stream.startswith(SESSION_PREFIX):
        p.sessions.apply(r)
    elif stream.startswith(BREAKER_PREFIX):
        p.breakers.apply(r)
    elif stream.startswith(WORKER_PREFIX):
        p.workers.apply(r)
    elif stream.startswith(INBOX_PREFIX):
        p.tasks.apply_inbox(r)
    elif stream.startswith(SCHEDULE_PREFIX):
        p.schedules.apply(r)
    elif stream.startswith(LIMIT_PREFIX):
        p.limits.apply(r)
        if isinstance(event, PermitReturned):
            p.tasks.wake(stream[len(LIMIT_PREFIX) :], r.meta.time)
    p.errors.apply(r)  # each of these skips the types it does not read
    if type(event) in DECISION_TYPES:
        p.decisions.apply(r)
    p.degradation.apply(r)
    p.budget.apply(r)
    p.flow.apply(r)


def folded_in_pages(reader: FoldReader, page_size: int) -> Projections:
    p = Projections()
    for page in reader.pages(page_size=page_size):
        if isinstance(page, StreamDamage):
            p.mark_damaged(page)
            p.position = max(p.position, page.position)
        else:
            p.apply_page(page)
    return p


def snapshot(p: Projections) -> dict[str, Any]:
    return p.snapshot() | {"time": p.time}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OPS, min_size=5, max_size=30),
    page_size=st.integers(1, 9),
    refused=st.none() | st.integers(0, 1_000),
)
def test_the_page_dispatched_fold_equals_folding_event_by_event(
    ops: list[Op], page_size: int, refused: int | None
) -> None:
    with opened("memory", FakeClock()) as work:
        for op in ops:
            work.apply(op)
        log = work.log
        tasks = sorted(v.task_id for v in work.engines[0].refresh().tasks.tasks.values())
        if refused is not None and tasks:
            # A second submission of a task: its lifecycle refuses it, and the stream's later
            # events (a step outcome here) are not folded.
            stream = TASK_PREFIX + tasks[refused % len(tasks)]
            log.append(stream, [TaskSubmitted(name="ok", args=[1])], expected_version=None)
            log.append(
                stream,
                [StepCompleted(index=0, name="add", result=2, duration=0.0)],
                expected_version=None,
            )
        records = list(log.read())
        one_by_one = Projections()
        for r in records:
            one_by_one.apply(r)
        reference = snapshot(fold_each(records))
        assert snapshot(folded_in_pages(FoldReader(log), page_size)) == reference
        assert snapshot(one_by_one) == reference
        if refused is not None and tasks:
            assert reference["damaged"], "the refused submission must damage its stream"


_times = st.floats(0.0, 500.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    pages=st.lists(
        st.lists(st.tuples(st.sampled_from(["a", "a", "a", "b"]), _times, st.booleans())),
        max_size=6,
    ),
    kept=st.integers(1, 12),
    in_order=st.booleans(),
)
def test_a_page_of_outcomes_folds_into_the_flow_as_each_one_would(
    pages: list[list[tuple[str, float, bool]]], kept: int, in_order: bool
) -> None:
    """The flow's window (at most ``kept`` actions here) after pages folded at once equals
    the window after each action folded in turn."""
    import onward.projections.flow as flow_module

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flow_module, "ACTIONS_KEPT", kept)
        paged, each = fold_both_ways(flow_module.FlowProjection, pages, in_order)
    assert paged.snapshot() == each.snapshot()
    for session, flow in paged._flows.items():
        assert flow.failures == sum(flow.failed) == each._flows[session].failures


def fold_both_ways(
    projection: Any, pages: list[list[tuple[str, float, bool]]], in_order: bool
) -> tuple[Any, Any]:
    paged, each = projection(), projection()
    clock = 0.0
    for drawn in pages:
        page = drawn
        if in_order:  # the common case: one worker's clock, in time order
            page = [(s, clock + t / 100, f) for s, t, f in sorted(drawn, key=lambda a: a[1])]
            clock = page[-1][1] if page else clock
        if not page:
            continue
        metas = [Meta(event_id="e", time=t, session=s) for s, t, _ in page]
        paged.fold_outcomes(metas, [i for i, (_, _, f) in enumerate(page) if f])
        for action in page:
            each.fold_actions([action])
    return paged, each
