"""A checkpoint keeps its finished tasks encoded: opening decodes only the others.

The views of tasks that have ended are stored apart (:class:`onward.projections.task.
FinishedViews`, with a CRC) and decoded when one of them is first asked for. Whatever is asked,
and in whatever order, checkpoint + tail folds to the same projections as a full replay; a part
that fails its CRC makes the checkpoint unusable (the log is replayed); a checkpoint of the
previous schema is ignored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from onward.events import (
    Checkpoint,
    Context,
    EventLog,
    StepCompleted,
    TaskClaimed,
    TaskFailed,
    TaskRetried,
    TaskSubmitted,
    TaskSucceeded,
    open_log,
)
from onward.projections import CatchUp, Projections, TaskView, task_stream
from onward.projections.task import FINISHED_PARTS_KEPT, FinishedViews
from tests.conftest import FakeClock


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    clock = FakeClock()
    opened = open_log(f"sqlite:///{tmp_path / 'log.db'}?synchronous=normal", clock=clock)
    yield opened
    opened.close()


def run_task(
    log: EventLog, task_id: str, *, fails: bool = False, parent: str | None = None
) -> None:
    """A task submitted, claimed, one step, and ended (failed or succeeded)."""
    end = TaskFailed(error_type="ValueError", message="bad") if fails else TaskSucceeded(result=1)
    log.append(
        task_stream(task_id),
        [
            TaskSubmitted(name="job", args=[task_id]),
            TaskClaimed(worker="w", lease_until=2e9, attempt=1),
            StepCompleted(index=0, name="s", result=1, duration=0.1),
            end,
        ],
        expected_version=0,
        context=Context(session="s"),
    )


def submit(log: EventLog, task_id: str, parent: str | None = None) -> None:
    log.append(
        task_stream(task_id),
        [TaskSubmitted(name="job", args=[task_id], parent=parent)],
        expected_version=0,
        context=Context(session="s"),
    )


def replayed(log: EventLog) -> dict[str, object]:
    return CatchUp(log, checkpoint_every=0).open(use_checkpoint=False).snapshot()


def checkpoint(log: EventLog) -> None:
    host = CatchUp(log, checkpoint_every=0)
    host.open()
    host.checkpoint()


def test_opening_decodes_only_the_tasks_that_have_not_ended(log: EventLog) -> None:
    for n in range(5):
        run_task(log, f"done{n}", fails=n == 0)
    submit(log, "open0")
    checkpoint(log)
    host = CatchUp(log, checkpoint_every=0)
    projections = host.open()
    assert host.loaded_checkpoint == log.head()
    assert set(projections.tasks.views) == {"open0"}
    view = projections.tasks.view("done3")  # asked for: every finished task is decoded
    assert view is not None
    assert view.state == "succeeded"
    assert set(projections.tasks.views) == {"open0", *(f"done{n}" for n in range(5))}
    assert projections.snapshot() == replayed(log)


def test_the_whole_map_decodes_the_finished_tasks(log: EventLog) -> None:
    run_task(log, "done")
    checkpoint(log)
    projections = CatchUp(log, checkpoint_every=0).open()
    assert projections.tasks.tasks["done"].state == "succeeded"
    assert projections.tasks.view("nobody") is None


@pytest.mark.parametrize(
    "tail",
    ["retry a failed task", "a child of a finished parent", "a new task", "nothing"],
)
def test_checkpoint_and_a_tail_that_touches_finished_tasks_fold_as_a_replay(
    log: EventLog, tail: str
) -> None:
    for n in range(4):
        run_task(log, f"done{n}", fails=n == 1)
    checkpoint(log)
    if tail == "retry a failed task":
        log.append(
            task_stream("done1"),
            [TaskRetried(by="someone", reason="again", previous="failed")],
            expected_version=4,
            context=Context(session="s"),
        )
    elif tail == "a child of a finished parent":
        submit(log, "child", parent="done2")
    elif tail == "a new task":
        submit(log, "fresh")
    host = CatchUp(log, checkpoint_every=0)
    projections = host.open()
    assert host.loaded_checkpoint is not None
    assert projections.snapshot() == replayed(log)


def test_checkpoints_saved_without_asking_keep_the_finished_parts(log: EventLog) -> None:
    """Each save adds a part for the tasks that ended since; past the limit they merge."""
    rounds = FINISHED_PARTS_KEPT + 2
    for n in range(rounds):
        run_task(log, f"t{n}")
        host = CatchUp(log, checkpoint_every=0)
        projections = host.open()
        host.checkpoint()
        parts = msgspec.msgpack.decode(
            projections.encode(), type=list[msgspec.Raw]
        )  # the saved layout's last field: the finished parts
        finished = msgspec.msgpack.decode(parts[-1], type=list[FinishedViews])
        assert 1 <= len(finished) <= FINISHED_PARTS_KEPT
        assert sorted(i for part in finished for i in part.ids) == sorted(
            f"t{k}" for k in range(n + 1)
        )
        assert CatchUp(log, checkpoint_every=0).open().snapshot() == replayed(log)


def test_a_finished_part_that_fails_its_crc_makes_the_log_replay(log: EventLog) -> None:
    for n in range(3):
        run_task(log, f"done{n}")
    submit(log, "open0")
    checkpoint(log)
    saved = log.load_checkpoint(Projections.NAME)
    assert saved is not None
    data = bytearray(saved.data)
    where = len(data) - 20  # inside the compressed finished views, the last field
    data[where + 4] ^= 0x01
    log.save_checkpoint(
        Checkpoint(name=saved.name, schema=saved.schema, position=saved.position, data=bytes(data))
    )
    with pytest.raises(msgspec.DecodeError, match="CRC"):
        Projections.decode(bytes(data), saved.position)
    host = CatchUp(log, checkpoint_every=0)
    assert host.open().snapshot() == replayed(log)
    assert host.loaded_checkpoint is None


class _SavedSchema14(msgspec.Struct, array_like=True):
    """The checkpoint layout of schema 14: every task view decoded on load."""

    time: float
    tasks: dict[str, TaskView]
    sessions: list[object]
    errors: object
    breakers: list[object]
    decisions: object
    degradation: list[object]
    budget: list[object]
    flow: list[object]
    workers: list[object]
    schedules: list[object]
    limits: list[object]
    damaged: list[object] = []


def test_a_checkpoint_of_the_previous_schema_is_ignored_and_the_log_replayed(
    log: EventLog,
) -> None:
    for n in range(3):
        run_task(log, f"done{n}")
    submit(log, "open0")
    current = CatchUp(log, checkpoint_every=0).open(use_checkpoint=False)
    fields = msgspec.msgpack.decode(current.encode(), type=list[object])
    # Schema 14 stored every view in one map and had no finished parts.
    fields[1] = msgspec.to_builtins(current.tasks.tasks)
    old = msgspec.msgpack.encode(fields[:-1])
    assert msgspec.msgpack.decode(old, type=_SavedSchema14).tasks.keys() == {
        "done0",
        "done1",
        "done2",
        "open0",
    }
    log.save_checkpoint(Checkpoint(name=Projections.NAME, schema=14, position=log.head(), data=old))
    host = CatchUp(log, checkpoint_every=0)
    assert host.open().snapshot() == replayed(log)
    assert host.loaded_checkpoint is None
    assert Projections.SCHEMA == 24


def test_a_checkpoint_past_the_end_of_the_log_is_ignored_and_the_log_replayed(
    log: EventLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its newest records were removed after the checkpoint was saved: what it holds is not
    what the log says (it would make every later append clash, for good)."""
    import sqlite3

    for n in range(3):
        run_task(log, f"done{n}")
    checkpoint(log)
    saved = log.load_checkpoint(Projections.NAME)
    assert saved is not None
    assert saved.position == log.head()
    with sqlite3.connect(tmp_path / "log.db") as db:
        db.execute("DELETE FROM stored_events WHERE rowid > ?", (saved.position - 4,))
    host = CatchUp(log, checkpoint_every=0)
    assert host.open().snapshot() == replayed(log)
    assert host.loaded_checkpoint is None
    assert host.projections.tasks.view("done2") is None
    assert "the log ends at" in caplog.text


def test_a_checkpoint_row_that_cannot_be_read_is_ignored_and_the_log_replayed(
    log: EventLog, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A checkpoint is a cache: one whose row SQLite cannot hand back (text that is not
    UTF-8 where its bytes were) made every open of the log fail, and verify said ok."""
    import sqlite3

    for n in range(3):
        run_task(log, f"done{n}")
    checkpoint(log)
    with sqlite3.connect(tmp_path / "log.db") as db:
        db.execute("UPDATE stored_checkpoints SET state = CAST(x'ff00ff' AS TEXT)")
    assert log.load_checkpoint(Projections.NAME) is None
    assert "cannot be read" in caplog.text
    host = CatchUp(log, checkpoint_every=0)
    assert host.open().snapshot() == replayed(log)
    assert host.loaded_checkpoint is None
    assert host.projections.tasks.view("done2") is not None


def test_an_engine_resumes_from_a_checkpoint_without_decoding_the_finished_tasks(
    tmp_path: Path,
) -> None:
    from onward import Engine

    url = f"sqlite:///{tmp_path / 'engine.db'}?synchronous=normal"
    clock = FakeClock()
    engine = Engine.open(url, session="s", clock=clock, sleep=clock.advance)

    @engine.task(name="double")
    def double(n: int) -> int:
        return 2 * n

    done = [engine.submit("double", n) for n in range(3)]
    engine.run()
    waiting = engine.submit("double", 21)
    checkpoint(engine.log)
    engine.close()

    again = Engine.open(url, session="s", clock=clock, sleep=clock.advance)
    again.task(name="double")(double)
    projections = again.refresh()
    assert set(projections.tasks.views) == {waiting}  # the finished ones are still encoded
    again.run()
    assert again.refresh().tasks.view(waiting).state == "succeeded"  # type: ignore[union-attr]
    assert {again.refresh().tasks.tasks[t].state for t in done} == {"succeeded"}
    assert again.refresh().snapshot() == replayed(again.log)
    again.close()


def test_threads_asking_for_finished_tasks_at_once_each_find_theirs(log: EventLog) -> None:
    import threading

    ids = [f"done{n}" for n in range(40)]
    for task_id in ids:
        run_task(log, task_id)
    checkpoint(log)
    projections = CatchUp(log, checkpoint_every=0).open()
    start = threading.Barrier(8)
    found: list[TaskView | None] = []

    def ask(share: list[str]) -> None:
        start.wait()
        found.extend(projections.tasks.view(task_id) for task_id in share)

    threads = [threading.Thread(target=ask, args=(ids[k::8],)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == len(ids)
    assert all(view is not None and view.state == "succeeded" for view in found)


def test_a_live_fold_lets_go_of_the_tasks_that_ended_at_each_checkpoint(log: EventLog) -> None:
    """A serving worker held every task it had seen end, decoded (1.5 KB each, for good): at
    each checkpoint the views of the tasks that ended since are kept encoded instead, and
    come back when asked for, or when the log moves one of them on."""
    host = CatchUp(log, checkpoint_every=0)
    projections = host.open()
    for n in range(5):
        run_task(log, f"done{n}", fails=n == 1)
    submit(log, "open0")
    host.catch_up()
    assert len(projections.tasks.views) == 6
    host.checkpoint()
    assert set(projections.tasks.views) == {"open0"}
    assert [v.task_id for v in projections.tasks.unfinished()] == ["open0"]
    assert projections.tasks.view("done3") is not None
    assert projections.tasks.view("done3").state == "succeeded"  # type: ignore[union-attr]
    host.checkpoint()
    assert set(projections.tasks.views) == {"open0"}
    log.append(  # the log moves a task let go of: it is decoded and folded
        task_stream("done1"),
        [TaskRetried(by="someone", reason="again", previous="failed")],
        expected_version=4,
        context=Context(session="s"),
    )
    host.catch_up()
    assert projections.tasks.views["done1"].state == "queued"
    assert projections.snapshot() == replayed(log)
    assert CatchUp(log, checkpoint_every=0).open().snapshot() == replayed(log)


def test_an_engine_serving_many_tasks_holds_the_ones_that_have_not_ended(tmp_path: Path) -> None:
    from onward import Engine

    with Engine.open(
        f"sqlite:///{tmp_path / 'work.db'}?synchronous=normal", session="s", checkpoint_every=200
    ) as engine:

        @engine.step()
        def double(i: int) -> int:
            return 2 * i

        @engine.task()
        def job(i: int) -> int:
            if i == 1:
                raise ValueError("one fails")
            return double(i)

        ids = [engine.submit(job, i) for i in range(300)]
        engine.run()
        held = len(engine.refresh().tasks.views)
        assert held < 150, held
        assert [engine.result(ids[i]) for i in (0, 2)] == [0, 4]
        assert engine.task_view(ids[0]).state == "succeeded"
        # A retry and a quarantine decode the part of their task, not every finished task.
        assert engine.retry(ids[1], by="test").state == "queued"
        assert engine.quarantine(ids[1], by="test").state == "quarantined"
        assert len(engine.refresh().tasks.views) < 150


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Threads switched as often as the interpreter can, so that a race shows."""
    import sys

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("fine_switching")
def test_every_task_is_listed_while_a_checkpoint_lets_go_of_finished_views(
    log: EventLog,
) -> None:
    """``tasks`` handed out the live map, from which a checkpoint saved in another thread
    took the finished views: a listing came back short (9 folded, 0 listed)."""
    import threading

    host = CatchUp(log, checkpoint_every=1)  # each catch-up saves a checkpoint
    projections = host.open()
    folded = [0]
    done = threading.Event()
    short: list[tuple[int, int]] = []

    def fold() -> None:
        for n in range(300):
            run_task(log, f"t{n}")
            host.catch_up()
            folded[0] = n + 1
        done.set()

    def list_them() -> None:
        while not done.is_set():
            want = folded[0]
            got = len(list(projections.tasks.tasks.values()))
            if got < want:
                short.append((want, got))

    threads = [threading.Thread(target=fold), threading.Thread(target=list_them)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert short == []


@pytest.mark.usefixtures("fine_switching")
def test_the_queue_built_while_a_reader_decodes_finished_tasks_is_whole(log: EventLog) -> None:
    """The queue was built from the map a reader's decoding of a finished task grows: the
    build raised ``dictionary changed size during iteration`` (20 of 40 rounds)."""
    for n in range(1500):
        run_task(log, f"d{n}")
        submit(log, f"q{n}")
    checkpoint(log)
    failed: list[BaseException] = []
    for n in range(10):
        _build_and_decode_at_once(CatchUp(log, checkpoint_every=0).open(), f"d{n}", failed)
    assert failed == []


def _build_and_decode_at_once(
    projections: Projections, finished: str, failed: list[BaseException]
) -> None:
    """The queue's first build and a finished task's decoding, in two threads at once."""
    import threading

    together = threading.Barrier(2)

    def build() -> None:
        together.wait()
        try:
            head = projections.tasks.next_queued("s")
            assert head is not None
            assert head.task_id == "q0"
        except BaseException as exc:
            failed.append(exc)

    def decode() -> None:
        together.wait()
        projections.tasks.view(finished)

    threads = [threading.Thread(target=build), threading.Thread(target=decode)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_the_end_of_a_subtask_whose_parent_ended_decodes_no_finished_task(
    tmp_path: Path, log: EventLog
) -> None:
    """A subtask that outlives its parent (which ended before the checkpoint) ends without
    the checkpoint's finished tasks being decoded to see whether the parent waits for it: it
    does not (it ended), and the finished part stays encoded."""
    from onward import Engine

    for n in range(3):
        run_task(log, f"done{n}")
    submit(log, "child", parent="done1")
    checkpoint(log)
    url = f"sqlite:///{tmp_path / 'log.db'}?synchronous=normal"
    with Engine.open(url, session="s", checkpoint_every=0) as engine:

        @engine.task(name="job")
        def job(name: str) -> str:
            return name

        assert set(engine.projections.tasks.views) == {"child"}
        assert engine.run().succeeded == 1
        assert engine.result("child") == "child"
        assert set(engine.projections.tasks.views) == {"child"}
