"""The task and session projections: queue order, steering, deadlines, views, unknown events.

Events go through a real (memory) log and :class:`onward.projections.CatchUp`, as they do in the
engine; every scenario also checks that a checkpoint round trip keeps the same state.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onward.events import (
    ApprovalRequested,
    Codec,
    Context,
    Event,
    Priority,
    SessionResumed,
    SessionStarted,
    StepCompleted,
    StepFailed,
    TaskCancelled,
    TaskClaimed,
    TaskDeadlineMissed,
    TaskFailed,
    TaskLeaseExpired,
    TaskProgressed,
    TaskQuarantined,
    TaskReprioritised,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    TaskWaiting,
    all_event_types,
)
from onward.events.memory import MemoryLog
from onward.projections import (
    CatchUp,
    Projections,
    TaskProjection,
    TaskView,
    session_stream,
    task_stream,
)
from tests.conftest import FakeClock

T0 = FakeClock().now


class Board:
    """A memory log and the projections folded from it, a step behind every append."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.log = MemoryLog(clock=self.clock)
        self.host = CatchUp(self.log, checkpoint_every=0)
        self.host.open()

    @property
    def tasks(self) -> TaskProjection:
        return self.host.projections.tasks

    def append(self, task_id: str, *events: Event, session: str = "s") -> TaskView:
        self.clock.advance(1.0)
        self.log.append(
            task_stream(task_id),
            list(events),
            expected_version=None,
            context=Context(session=session),
        )
        self.host.catch_up()
        return self.tasks.tasks[task_id]

    def submit(
        self,
        task_id: str,
        priority: str = "normal",
        deadline: float | None = None,
        *,
        session: str = "s",
        parent: str | None = None,
    ) -> TaskView:
        event = TaskSubmitted(
            name="work", priority=Priority(priority), deadline=deadline, parent=parent
        )
        return self.append(task_id, event, session=session)

    def claim(self, task_id: str, worker: str = "w1", lease_until: float = T0 + 3600) -> TaskView:
        return self.append(task_id, TaskClaimed(worker=worker, lease_until=lease_until))

    def reprioritise(self, task_id: str, priority: str) -> TaskView:
        previous = Priority(self.tasks.tasks[task_id].priority)
        return self.append(
            task_id, TaskReprioritised(priority=Priority(priority), previous=previous)
        )

    def queue(self, session: str | None = None) -> list[str]:
        return [v.task_id for v in self.tasks.queued(session)]

    def reloaded(self) -> Projections:
        """The projections after a checkpoint round trip."""
        live = self.host.projections
        return Projections.decode(live.encode(), live.position)

    def check_replay(self) -> None:
        """Live == full replay == checkpoint round trip."""
        live = self.host.projections.snapshot()
        assert CatchUp(self.log, checkpoint_every=0).open(use_checkpoint=False).snapshot() == live
        assert self.reloaded().snapshot() == live


@pytest.fixture
def board() -> Board:
    return Board()


# -- queue order -----------------------------------------------------------------------------


def test_priority_orders_the_queue(board: Board) -> None:
    for task_id, priority in [("l", "low"), ("n", "normal"), ("c", "critical"), ("h", "high")]:
        board.submit(task_id, priority)
    assert board.queue() == ["c", "h", "n", "l"]
    assert board.tasks.next_queued("s") == board.tasks.tasks["c"]
    board.check_replay()


def test_then_the_earliest_deadline_with_none_last(board: Board) -> None:
    board.submit("none")
    board.submit("late", deadline=T0 + 300)
    board.submit("soon", deadline=T0 + 100)
    board.submit("middle", deadline=T0 + 200)
    assert board.queue() == ["soon", "middle", "late", "none"]
    board.check_replay()


def test_then_submission_order(board: Board) -> None:
    for task_id in ["b", "a", "d", "c"]:
        board.submit(task_id, "high", deadline=T0 + 50)
    for task_id in ["z", "y"]:
        board.submit(task_id, "high")
    assert board.queue() == ["b", "a", "d", "c", "z", "y"]
    orders = [board.tasks.tasks[t].order for t in board.queue()]
    assert orders == sorted(orders)
    board.check_replay()


def test_priority_beats_deadline(board: Board) -> None:
    board.submit("urgent-low", "low", deadline=T0 + 1)
    board.submit("relaxed-normal", "normal")
    assert board.queue() == ["relaxed-normal", "urgent-low"]


RANK = {"critical": 0, "high": 1, "normal": 2, "low": 3}


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(RANK)), st.none() | st.sampled_from([T0 + 10, T0 + 20, T0 + 30])
        ),
        max_size=12,
    )
)
def test_queue_order_is_priority_then_deadline_then_submission(
    submissions: list[tuple[str, float | None]],
) -> None:
    board = Board()
    for i, (priority, deadline) in enumerate(submissions):
        board.submit(f"t{i}", priority, deadline)
    expected = sorted(
        range(len(submissions)),
        key=lambda i: (
            RANK[submissions[i][0]],
            float("inf") if submissions[i][1] is None else submissions[i][1],
            i,
        ),
    )
    assert board.queue() == [f"t{i}" for i in expected]
    assert board.queue("s") == board.queue()
    assert [v.task_id for v in board.reloaded().tasks.queued()] == board.queue()


def test_has_queued_looks_past_stale_entries_without_dropping_them(board: Board) -> None:
    assert not board.tasks.has_queued("s")  # the queues not built yet: from the views
    board.submit("a", "high")
    board.submit("b")
    assert board.tasks.has_queued("s")
    assert board.tasks.next_queued("s") is board.tasks.tasks["a"]  # the queues are built
    board.claim("a")  # its entry stays at the head, stale
    heap = list(board.tasks._heaps["s"])
    assert board.tasks.has_queued("s")
    assert board.tasks._heaps["s"] == heap  # nothing dropped: it may run beside a claim
    assert not board.tasks.has_queued("other")
    board.claim("b")
    assert not board.tasks.has_queued("s")
    assert board.tasks._heaps["s"] == heap  # the stale entries stay for the claims to drop


# -- steering ---------------------------------------------------------------------------------


def test_reprioritise_moves_a_queued_task(board: Board) -> None:
    for task_id in ["a", "b", "c"]:
        board.submit(task_id)
    assert board.reprioritise("c", "critical").priority == "critical"
    assert board.queue() == ["c", "a", "b"]
    assert board.tasks.next_queued("s") is board.tasks.tasks["c"]
    board.reprioritise("c", "low")
    assert board.queue() == ["a", "b", "c"]
    board.reprioritise("c", "normal")  # back to its old place: submission order decides
    assert board.queue() == ["a", "b", "c"]
    board.reprioritise("a", "low")
    board.reprioritise("a", "high")
    board.reprioritise("a", "high")
    assert board.queue() == ["a", "b", "c"]  # no duplicates from stale queue entries
    assert board.tasks.next_queued("s") is board.tasks.tasks["a"]
    board.check_replay()


def test_reprioritising_a_waiting_task_does_not_queue_it(board: Board) -> None:
    board.submit("a")
    board.submit("w")
    board.claim("w")
    board.append("w", TaskWaiting(reason="approval"))
    view = board.reprioritise("w", "critical")
    assert (view.state, view.priority) == ("waiting", "critical")
    assert board.queue() == ["a"]
    assert board.tasks.waiting == {"w"}
    board.check_replay()


def test_claimed_tasks_leave_the_queue_and_an_expired_lease_brings_them_back(
    board: Board,
) -> None:
    for task_id in ["a", "b", "c"]:
        board.submit(task_id)
    board.claim("a")
    board.claim("b")
    assert board.queue() == ["c"]
    assert board.tasks.next_queued("s") is board.tasks.tasks["c"]
    view = board.append("a", TaskLeaseExpired(worker="w1", lease_until=T0))
    assert (view.state, view.worker) == ("queued", "")
    assert board.queue() == ["a", "c"]  # its place is still its submission order
    board.append("b", TaskCancelled(reason="no"))
    assert board.queue() == ["a", "c"]
    board.check_replay()


def test_each_session_has_its_own_queue(board: Board) -> None:
    board.submit("a", "low", session="one")
    board.submit("b", "high", session="one")
    board.submit("c", "normal", session="two")
    board.submit("d", "critical", session="two")
    assert board.queue("one") == ["b", "a"]
    assert board.queue("two") == ["d", "c"]
    assert board.queue() == ["d", "b", "c", "a"]
    assert board.queue("three") == []
    assert board.tasks.next_queued("one") is board.tasks.tasks["b"]
    assert board.tasks.next_queued("two") is board.tasks.tasks["d"]
    assert board.tasks.next_queued("three") is None
    board.claim("b")
    assert board.tasks.next_queued("one") is board.tasks.tasks["a"]
    assert board.tasks.next_queued("two") is board.tasks.tasks["d"]
    assert board.tasks.tasks["c"].session == "two"
    reloaded = board.reloaded().tasks
    assert [v.task_id for v in reloaded.queued("one")] == ["a"]
    assert [v.task_id for v in reloaded.queued("two")] == ["d", "c"]
    board.check_replay()


def test_queued_is_lazy(board: Board) -> None:
    for i in range(5):
        board.submit(f"t{i}")
    first = next(board.tasks.queued("s"))
    assert first.task_id == "t0"


# -- deadlines --------------------------------------------------------------------------------


def _deadlines(board: Board) -> None:
    """Tasks with deadlines at T0 + 100 in every state, and some that are not due."""
    board.submit("queued", deadline=T0 + 100)
    board.submit("waiting", deadline=T0 + 100)
    board.claim("waiting")
    board.append("waiting", TaskWaiting(reason="subtasks", on=["queued"]))
    board.submit("running", deadline=T0 + 100)
    board.claim("running")
    board.submit("done", deadline=T0 + 100)
    board.claim("done")
    board.append("done", TaskSucceeded(result=None))
    board.submit("later", deadline=T0 + 1_000)
    board.submit("never")


def test_overdue_lists_queued_and_waiting_tasks_past_their_deadline(board: Board) -> None:
    _deadlines(board)
    assert board.tasks.overdue(T0 + 50) == []
    assert board.tasks.overdue(T0 + 100) == []  # due now is not yet overdue
    overdue = {v.task_id for v in board.tasks.overdue(T0 + 101)}
    assert overdue == {"queued", "waiting"}


def test_a_running_task_becomes_overdue_when_it_is_queued_again(board: Board) -> None:
    _deadlines(board)
    assert "running" not in {v.task_id for v in board.tasks.overdue(T0 + 101)}
    board.append("running", TaskLeaseExpired(worker="w1", lease_until=T0))
    assert "running" in {v.task_id for v in board.tasks.overdue(T0 + 101)}


def test_overdue_after_a_checkpoint(board: Board) -> None:
    _deadlines(board)
    reloaded = board.reloaded().tasks
    assert {v.task_id for v in reloaded.overdue(T0 + 101)} == {"queued", "waiting"}


def test_a_missed_deadline_ends_the_task(board: Board) -> None:
    _deadlines(board)
    for task_id in ("queued", "waiting"):
        view = board.append(task_id, TaskDeadlineMissed(deadline=T0 + 100))
        assert (view.state, view.error, view.terminal) == ("missed", "deadline missed", True)
    assert board.tasks.overdue(T0 + 10_000) == [board.tasks.tasks["later"]]
    assert board.tasks.waiting == set()
    assert board.queue() == ["later", "never"]
    board.check_replay()


def test_overdue_is_a_query(board: Board) -> None:
    """Asking twice gives the same answer: a caller whose append fails must not lose a task.

    The engine's ``_mark_missed`` appends ``TaskDeadlineMissed`` for each overdue task and
    skips it on a ``VersionConflict`` (or loses it on a ``BackendError``); if ``overdue()``
    consumed its entries, that task would never be reported again by this process.
    """
    _deadlines(board)
    first = {v.task_id for v in board.tasks.overdue(T0 + 101)}
    second = {v.task_id for v in board.tasks.overdue(T0 + 101)}
    assert first == second == {"queued", "waiting"}


def test_a_retry_s_new_deadline_replaces_the_old_one(board: Board) -> None:
    board.submit("t", deadline=T0 + 100)
    board.claim("t")
    board.append("t", TaskFailed(error_type="ValueError", message="bad"))
    board.append("t", TaskRetried(previous="failed", deadline=T0 + 3_600))
    assert board.tasks.overdue(T0 + 200) == []  # the old deadline's entry is stale
    assert board.tasks.overdue(T0 + 200) == []
    assert [v.task_id for v in board.tasks.overdue(T0 + 3_601)] == ["t"]
    assert [v.task_id for v in board.tasks.overdue(T0 + 3_601)] == ["t"]  # still a query
    assert [v.task_id for v in board.reloaded().tasks.overdue(T0 + 3_601)] == ["t"]
    board.check_replay()


def test_a_task_retried_with_the_same_deadline_is_overdue_once(board: Board) -> None:
    board.submit("t", deadline=T0 + 100)
    for _ in range(2):
        board.claim("t")
        board.append("t", TaskFailed(error_type="ValueError", message="bad"))
        board.append("t", TaskRetried(previous="failed", deadline=T0 + 100))
    assert [v.task_id for v in board.tasks.overdue(T0 + 101)] == ["t"]


def test_a_task_retried_without_a_deadline_is_never_overdue(board: Board) -> None:
    board.submit("t", deadline=T0 + 100)
    board.claim("t")
    board.append("t", TaskFailed(error_type="ValueError", message="bad"))
    board.append("t", TaskRetried(previous="failed"))
    assert board.tasks.overdue(T0 + 10_000) == []


# -- what a task view says ---------------------------------------------------------------------


def test_view_after_submit(board: Board) -> None:
    view = board.submit("p", "high", deadline=T0 + 500)
    assert (view.task_id, view.session, view.name) == ("p", "s", "work")
    assert (view.state, view.priority, view.deadline) == ("queued", "high", T0 + 500)
    assert (view.key, view.parent, list(view.children)) == (None, None, [])
    assert view.submitted_at == view.updated_at == T0 + 1
    assert (view.version, view.order, view.attempt) == (1, 1, 0)
    assert not view.terminal


def test_view_follows_a_task_through_its_life(board: Board) -> None:
    board.submit("p")
    view = board.claim("p", "host/1/ab", lease_until=T0 + 60)
    assert (view.state, view.attempt, view.worker) == ("running", 1, "host/1/ab")
    assert view.lease_until == T0 + 60
    assert view.updated_at == board.clock()

    view = board.append("p", TaskProgressed(fraction=0.25, note="a quarter"))
    assert (view.progress, view.note, view.state) == (0.25, "a quarter", "running")

    board.append("p", StepCompleted(index=0, name="fetch", result=1, duration=0.1))
    view = board.append(
        "p", StepFailed(index=1, name="parse", error_type="ValueError", message="bad")
    )
    assert view.steps == 2

    board.submit("c1", parent="p")
    board.submit("c2", parent="p")
    assert list(board.tasks.tasks["p"].children) == ["c1", "c2"]
    assert board.tasks.tasks["c1"].parent == "p"

    view = board.append("p", TaskWaiting(reason="subtasks", until=T0 + 900, on=["c1", "c2"]))
    assert (view.state, view.worker) == ("waiting", "")
    assert (view.waiting_reason, view.waiting_until, list(view.waiting_on)) == (
        "subtasks",
        T0 + 900,
        ["c1", "c2"],
    )
    assert board.tasks.waiting == {"p"}

    view = board.claim("p", "host/2/cd", lease_until=T0 + 120)
    assert (view.state, view.attempt, view.worker) == ("running", 2, "host/2/cd")
    assert view.lease_until == T0 + 120
    assert (view.waiting_reason, view.waiting_until, list(view.waiting_on)) == ("", None, [])
    assert board.tasks.waiting == set()

    view = board.append("p", TaskSucceeded(result={"ok": True}))
    assert (view.state, view.progress, view.worker, view.terminal) == ("succeeded", 1.0, "", True)
    assert view.version == 8
    board.check_replay()


def test_view_of_a_failed_task(board: Board) -> None:
    board.submit("f")
    board.claim("f")
    view = board.append("f", TaskFailed(error_type="RuntimeError", message="boom"))
    assert (view.state, view.error, view.worker, view.terminal) == (
        "failed",
        "RuntimeError: boom",
        "",
        True,
    )
    board.submit("g")
    board.claim("g")
    assert board.append("g", TaskFailed(error_type="KeyError")).error == "KeyError"
    board.check_replay()


def test_view_of_a_cancelled_task(board: Board) -> None:
    board.submit("x")
    board.claim("x")
    view = board.append("x", TaskCancelled(reason="enough"))
    assert (view.state, view.worker, view.terminal) == ("cancelled", "", True)
    assert board.queue() == []


def test_session_views(board: Board) -> None:
    log = board.log
    stream = session_stream("night")
    log.append(stream, [SessionStarted(name="night", host="h1", pid=7)], expected_version=0)
    board.clock.advance(5)
    log.append(stream, [SessionResumed(reason="reopened")], expected_version=1)
    board.host.catch_up()
    view = board.host.projections.sessions.sessions["night"]
    assert (view.name, view.state, view.openings, view.host, view.pid) == (
        "night",
        "active",
        2,
        "h1",
        7,
    )
    assert (view.started_at, view.updated_at, view.version) == (T0, T0 + 5, 2)
    board.check_replay()


# -- approval requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "ended"),
    [
        ([TaskCancelled(reason="enough")], "cancelled"),
        ([TaskFailed(error_type="Abandoned")], "failed"),
        ([TaskDeadlineMissed(deadline=T0)], "missed"),
        ([TaskQuarantined(reason="stuck")], "quarantined"),
        ([TaskClaimed(worker="w1", lease_until=T0 + 3600), TaskSucceeded()], "succeeded"),
        # Its lifecycle refuses this success: the stream is damaged, then quarantined.
        ([TaskSucceeded(), TaskQuarantined(reason="damaged")], "quarantined"),
    ],
    ids=["cancelled", "failed", "missed", "quarantined", "succeeded", "damaged"],
)
def test_an_approval_request_lapses_when_its_task_ends_and_a_retry_asks_it_again(
    board: Board, ending: list[Event], ended: str
) -> None:
    board.submit("x")
    board.claim("x")
    board.submit("other")
    board.claim("other")
    for task_id in ("x", "other"):
        board.append(
            task_id,
            ApprovalRequested(decision_id=f"ask-{task_id}", subject=task_id, question="go?"),
            TaskWaiting(reason="approval"),
        )
    board.host.checkpoint()  # the requests waiting: a checkpoint, then the tail
    for event in ending:
        board.append("x", event)
    decisions = board.host.projections.decisions
    assert [p.decision_id for p in decisions.waiting()] == ["ask-other"]
    assert (decisions.lapsed["ask-x"].ended, decisions.lapsed["ask-x"].request.task_id) == (
        ended,
        "x",
    )
    board.check_replay()
    from_checkpoint = CatchUp(board.log, checkpoint_every=0)
    assert from_checkpoint.open().snapshot() == board.host.projections.snapshot()
    assert from_checkpoint.loaded_checkpoint is not None
    if ended not in ("failed", "cancelled", "missed"):
        return
    board.host.checkpoint()  # the request lapsed: a checkpoint, then the retry
    board.append("x", TaskRetried(previous=ended))
    assert [p.decision_id for p in decisions.waiting()] == ["ask-x", "ask-other"]
    assert decisions.lapsed == {}
    board.check_replay()
    assert CatchUp(board.log, checkpoint_every=0).open().snapshot() == (
        board.host.projections.snapshot()
    )


# -- unknown events ----------------------------------------------------------------------------


def forget(board: Board, *types: type[Event]) -> None:
    """Make the log's reader not know these event types (as if a newer onward wrote them)."""
    board.log.codec = Codec([t for t in all_event_types() if t not in types])


def replay(board: Board) -> Projections:
    return CatchUp(board.log, checkpoint_every=0).open(use_checkpoint=False)


def test_unknown_events_are_counted_not_fatal(board: Board) -> None:
    board.submit("t")
    board.claim("t")
    board.append("t", TaskProgressed(fraction=0.5))
    board.append("t", TaskProgressed(fraction=0.75))
    board.append("t", TaskSucceeded(result=3))
    board.submit("u")
    board.log.append(
        session_stream("s"), [SessionStarted(name="s", host="h", pid=1)], expected_version=0
    )
    board.log.append(session_stream("s"), [SessionResumed(reason="")], expected_version=1)
    forget(board, TaskProgressed, SessionResumed)

    projections = replay(board)
    view = projections.tasks.tasks["t"]
    assert (view.unknown_events, view.version, view.state) == (2, 5, "succeeded")
    assert view.progress == 1.0  # the known events still fold
    assert projections.tasks.tasks["u"].unknown_events == 0
    assert projections.sessions.sessions["s"].state == "active"
    assert projections.position == board.log.head()


@pytest.mark.parametrize(
    ("stream", "history", "unknown"),
    [
        pytest.param(
            task_stream("t"),
            [
                TaskSubmitted(name="work"),
                TaskClaimed(worker="w", lease_until=T0),
                TaskProgressed(fraction=0.5),
            ],
            TaskSubmitted,
            id="task-whose-submission-is-unknown",
        ),
        pytest.param(
            task_stream("t"),
            [
                TaskSubmitted(name="work"),
                TaskClaimed(worker="w", lease_until=T0),
                TaskWaiting(reason="subtasks", on=["x"]),
                TaskClaimed(worker="w", lease_until=T0, attempt=2),
            ],
            TaskWaiting,
            id="task-after-an-unknown-change-of-state",
        ),
        pytest.param(
            session_stream("s"),
            [SessionStarted(name="s", host="h", pid=1), SessionResumed(reason="")],
            SessionStarted,
            id="session-whose-start-is-unknown",
        ),
    ],
)
def test_events_of_a_newer_onward_never_stop_replay(
    board: Board, stream: str, history: list[Event], unknown: type[Event]
) -> None:
    """A newer onward may give any event a new tag; the audit must still read the log.

    DESIGN.md: "An unknown tag from a newer version decodes as an unknown event: the audit
    can still read the log, resuming refuses with a clear error." After an unknown event the
    reader cannot know the stream's state, so the events after it must not be judged against
    a state it no longer knows.
    """
    board.log.append(stream, history, expected_version=0)
    forget(board, unknown)
    projections = replay(board)  # must not raise IllegalTransition
    assert projections.position == board.log.head()
    if stream.startswith("task-"):
        view = projections.tasks.tasks.get("t")
        assert view is not None, "the task must stay visible, so resuming it can refuse"
        assert view.unknown_events == 1
        assert view.version == len(history)


def _checkpoint_by(board: Board, codec: Codec) -> None:
    """Fold the whole log with ``codec`` (as an onward that knows those types would) and save
    the checkpoint it would save."""
    known = board.log.codec
    board.log.codec = codec
    host = CatchUp(board.log, checkpoint_every=0)
    host.open(use_checkpoint=False)
    host.checkpoint()
    board.log.codec = known


def _session_with_progress(board: Board) -> None:
    board.submit("t")
    board.claim("t")
    board.append("t", TaskProgressed(fraction=0.5))
    board.submit("u")


def test_a_checkpoint_of_an_onward_that_read_a_type_as_unknown_is_not_used_by_one_that_knows_it(
    board: Board,
) -> None:
    """Two versions share a log: the older one folded a newer one's event as unknown (its task
    not to be resumed) and saved a checkpoint at the same schema. The newer one, which knows
    that event, must not take the older one's reading of it: it folds the log again."""
    _session_with_progress(board)
    older = Codec([t for t in all_event_types() if t is not TaskProgressed])
    _checkpoint_by(board, older)
    board.append("u", TaskClaimed(worker="w1", lease_until=T0 + 3600))  # a tail to fold

    host = CatchUp(board.log, checkpoint_every=0)
    projections = host.open()
    assert host.loaded_checkpoint is None
    assert projections.tasks.tasks["t"].unknown_events == 0
    assert projections.tasks.tasks["t"].progress == 0.5
    assert projections.snapshot() == replay(board).snapshot()

    # The older onward still takes its own checkpoint: it folds what it reads the same way.
    board.log.codec = older
    host = CatchUp(board.log, checkpoint_every=0)
    assert host.open().snapshot() == replay(board).snapshot()
    assert host.loaded_checkpoint is not None


def test_a_checkpoint_of_an_onward_that_knows_more_types_is_not_used_by_one_that_does_not(
    board: Board,
) -> None:
    """The mirror case: a newer onward folded an event the older one cannot read, and saved a
    checkpoint at the same schema. The older one must refuse that task as a replay would (it
    holds an event of a newer onward), not take it as the newer one read it."""
    _session_with_progress(board)
    _checkpoint_by(board, Codec())
    older = Codec([t for t in all_event_types() if t is not TaskProgressed])
    board.log.codec = older

    host = CatchUp(board.log, checkpoint_every=0)
    projections = host.open()
    assert host.loaded_checkpoint is None
    assert projections.tasks.tasks["t"].unknown_events == 1
    assert projections.snapshot() == replay(board).snapshot()


@pytest.mark.parametrize("saver_knows_it", [True, False], ids=["newer-saves", "older-saves"])
def test_a_checkpoint_over_a_quarantined_damaged_task_is_taken_only_if_read_the_same(
    board: Board, saver_knows_it: bool
) -> None:
    """A damaged task's stream folds one event still, its quarantine: an onward that does not
    know that event's type reads the task otherwise (damaged, not quarantined). The types of
    the events of damaged streams count too, so neither version takes the other's checkpoint
    as its own reading of that task."""
    board.submit("t")
    board.append("t", TaskSucceeded(result=1))  # its lifecycle does not allow it: damaged
    board.append("t", TaskQuarantined(reason="damaged", by="ops"))
    board.submit("u")
    older = Codec([t for t in all_event_types() if t is not TaskQuarantined])
    saver, loader = (Codec(), older) if saver_knows_it else (older, Codec())
    _checkpoint_by(board, saver)
    board.log.codec = loader

    host = CatchUp(board.log, checkpoint_every=0)
    assert host.open().snapshot() == replay(board).snapshot()
    assert host.loaded_checkpoint is None


def test_a_page_that_fails_part_way_is_folded_again_not_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = MemoryLog()
    for n in range(6):
        log.append(
            f"task-t{n}", [TaskSubmitted(name="job", args=[n], kwargs={})], expected_version=0
        )
    host = CatchUp(log, checkpoint_every=0)
    host.open()
    for n in range(6):
        log.append(
            f"task-t{n}",
            [TaskClaimed(worker="w", lease_until=1.0, attempt=1), TaskSucceeded(result=n)],
            expected_version=1,
        )
    apply_page = Projections.apply_page
    calls: list[int] = []

    def fails_half_way(self: Projections, records: list[object]) -> None:
        calls.append(len(records))
        if len(calls) == 1:  # the first page: fold half of it, then fail (a crash mid-fold)
            apply_page(self, records[: len(records) // 2])  # type: ignore[arg-type]
            raise RuntimeError("the fold failed part-way")
        apply_page(self, records)  # type: ignore[arg-type]

    monkeypatch.setattr(Projections, "apply_page", fails_half_way)
    with pytest.raises(RuntimeError, match="part-way"):
        host.catch_up()
    host.catch_up()  # folds again from the start, rather than apply the first half twice
    fresh = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
    assert host.projections.snapshot() == fresh.snapshot()
    assert {t.attempt for t in host.projections.tasks.tasks.values()} == {1}


def test_the_unfinished_tasks_are_those_that_have_not_ended_through_retries_and_reloads(
    board: Board,
) -> None:
    """A serving worker's passes look at the unfinished tasks alone (every pass scanned every
    task it had seen end: its CPU per task grew with them). They stay the views that have not
    ended: a retried task is one again, and a checkpoint's reload keeps them."""

    def unfinished(tasks: TaskProjection) -> set[str]:
        return {v.task_id for v in tasks.unfinished()}

    def not_ended(tasks: TaskProjection) -> set[str]:
        return {k for k, v in tasks.tasks.items() if not v.terminal}

    for name in ("done", "failed", "running", "queued"):
        board.submit(name)
    for name in ("done", "failed", "running"):
        board.claim(name)
    board.append("done", TaskSucceeded(result=1))
    board.append("failed", TaskFailed(error_type="ValueError", message="bad"))
    assert unfinished(board.tasks) == not_ended(board.tasks) == {"running", "queued"}
    board.append("failed", TaskRetried(previous="failed"))
    assert unfinished(board.tasks) == {"failed", "running", "queued"}
    reloaded = board.reloaded().tasks
    assert unfinished(reloaded) == not_ended(reloaded) == {"failed", "running", "queued"}
    board.append("queued", TaskCancelled(reason="enough"))
    assert unfinished(board.tasks) == not_ended(board.tasks) == {"failed", "running"}
    board.check_replay()


def test_only_the_error_db_and_the_decisions_read_a_tasks_end_beside_its_task() -> None:
    """The fold hands a task's end to these two alone, and only when it changes them: no
    other projection that reads events by type may read it."""
    from onward.projections.decisions import TASK_ENDINGS

    projections = Projections()
    assert TASK_ENDINGS
    for kind in TASK_ENDINGS:
        assert projections._typed_folds(kind) == (
            projections.errors.apply,
            projections.decisions.apply,
        )
