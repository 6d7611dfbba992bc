"""The part of :class:`onward.Engine` that a running task calls: durable sleep, messages,
published values, progress, patches and the idempotency key.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, NoReturn, TypeVar

from onward.events import (
    EventLog,
    Recorded,
    StateSet,
    TaskProgressed,
    UnencodableValue,
    UsageError,
    encode_value,
)
from onward.projections import inbox_stream
from onward.runtime.facade import arguments
from onward.runtime.run import (
    CURRENT_STEP,
    TaskRun,
    drive,
    drive_async,
    on_event_loop,
    running_task,
)

__all__ = ["InsideATask", "Pending", "current_run"]

T = TypeVar("T")


def current_run(what: str) -> TaskRun:
    """The task run of the calling thread or coroutine.

    Raises:
        UsageError: outside a running task.
    """
    run = running_task(what)
    if run is None:
        raise UsageError(
            f"{what} can only be called inside a running task (from its own code, not from a "
            "thread it started)"
        )
    return run


class Pending(Generic[T]):
    """What :meth:`InsideATask.patched`, :meth:`onward.Engine.wait`,
    :meth:`onward.Engine.degrade` and :meth:`onward.Engine.notify` return in an ``async def``
    task: await it.

    Its value is only known once awaited: used as a value instead (``if engine.patched(...)``,
    ``a, b = engine.wait(ids)``, ``engine.degrade(name).name``), it raises
    :class:`UsageError` rather than passing for a true or empty value; never awaited (a
    statement, ``engine.notify(...)``), it fails the task at its end, as a step does.

    Args:
        run: the task run that called it.
        call: the coroutine that records what must be and returns the value.
        what: the call, as the task wrote it, for the message.
    """

    __slots__ = ("_call", "_what")

    def __init__(self, run: TaskRun, call: Coroutine[Any, Any, T], what: str) -> None:
        self._call = run.hand(f"engine.{what}", call)
        self._what = what

    def __await__(self) -> Generator[Any, None, T]:
        return self._call.__await__()

    def _misuse(self) -> UsageError:
        self._call.close()  # never to run: no "never awaited" warning on top of this error
        return UsageError(
            f"{self._what} is used without being awaited: in an async def task it returns an "
            f"awaitable, so write `await engine.{self._what}`"
        )

    def __bool__(self) -> bool:
        raise self._misuse()

    def __len__(self) -> int:
        raise self._misuse()

    def __iter__(self) -> NoReturn:
        raise self._misuse()

    def __getitem__(self, _key: object) -> NoReturn:
        raise self._misuse()

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("_"):  # a probe (of a debugger, a pretty-printer): not a use
            raise AttributeError(name)
        raise self._misuse()  # ``used.name`` of an unawaited degrade(), say

    def __repr__(self) -> str:
        return f"<Pending {self._what}: await it>"


class InsideATask:
    """What a running task calls on the engine.

    A part of :class:`onward.Engine` (which sets the attributes below).
    """

    log: EventLog

    def patched(self, change_id: str) -> Any:
        """Whether the running task takes the new code path of a change (inside a task).

        New runs take it (and that is recorded); a history recorded before the change replays
        the old path, so its completed steps still match::

            if engine.patched("fetch-with-retry"):
                page = fetch_v2(url)
            else:
                page = fetch(url)

        In an ``async def`` task, await it: ``if await engine.patched("fetch-with-retry"):``
        (the mark is recorded without blocking the loop, while the task's other steps append).

        Returns:
            True or False, or in an ``async def`` task a :class:`Pending` of it, which raises
            UsageError if tested without being awaited.

        Raises:
            UsageError: outside a task, or an empty change id.
        """
        run = current_run("patched()")
        if not isinstance(change_id, str) or not change_id:
            raise UsageError(f"a change id must be a non-empty string, got {change_id!r}")
        if on_event_loop():  # the loop must not wait for a step of the task appending
            return Pending(run, run.patched_async(change_id), f"patched({change_id!r})")
        return run.patched(change_id)

    def recv(self, topic: str, *, timeout: float | None = None) -> Any:
        """Take the next message of ``topic`` sent to the running task (inside a task).

        Exactly once in the task's history: the message taken is recorded, and a re-run gets
        the same one. With none yet, the task waits durably (the worker is free meanwhile)
        until one comes or ``timeout`` seconds pass; then this returns None. In an ``async
        def`` task, await it.

        Raises:
            UsageError: outside a task, an empty topic, or a negative timeout.
        """
        run = current_run("recv()")
        if not isinstance(topic, str) or not topic:
            raise UsageError(f"recv() needs a non-empty topic, got {topic!r}")
        self.log.redactor.check_name(topic, "recv(): topic")  # matched as given
        if timeout is not None:
            timeout = arguments.seconds(timeout, "recv(): timeout")
        stream = inbox_stream(run.task_id)

        def inbox(after: int) -> list[Recorded]:
            return self.log.read_stream(stream, after=after)

        receiving = run.receiving(topic, timeout, inbox)
        if on_event_loop():
            return run.hand(f"engine.recv({topic!r})", drive_async(receiving, run.effect_async))
        return drive(receiving, run.effect)

    def set_state(self, key: str, value: Any) -> Any:
        """Publish a value of the running task's for others to read (inside a task):
        :meth:`get_state`, ``onward get TASK KEY``. In an ``async def`` task, await it.

        Returns:
            None, or in an ``async def`` task an awaitable of None.

        Raises:
            UsageError: outside a task, an empty key, or a value that cannot be stored.
        """
        run = current_run("set_state()")
        if not isinstance(key, str) or not key:
            raise UsageError(f"set_state() needs a non-empty key, got {key!r}")
        self.log.redactor.check_name(key, "set_state(): key")  # looked up as given
        stored = encode_value(
            value, what=f"set_state({key!r}): the value", redactor=self.log.redactor
        )
        event = StateSet(key=key, value=stored)
        if on_event_loop():
            return run.hand(f"engine.set_state({key!r}, ...)", _state_set_async(run, event))
        try:
            run.record([event])
        except UnencodableValue as exc:
            raise _unstorable(key, exc) from exc
        return None

    def progress(self, fraction: float, note: str = "") -> Any:
        """Checkpoint the current task's progress (inside a task). In an ``async def`` task,
        await it.

        Args:
            fraction: how much is done, in [0, 1].
            note: a word on where it stands.

        Returns:
            None, or in an ``async def`` task an awaitable of None.

        Raises:
            UsageError: outside a task, a fraction that is not a number in [0, 1], or a note
                that is not a str.
        """
        run = current_run("progress()")
        event = TaskProgressed(
            fraction=arguments.fraction(fraction, "progress(): fraction"),
            note=arguments.text(note, "progress(): note"),
        )
        if on_event_loop():  # the loop must not wait for the disk, nor for a step appending
            return run.hand(f"engine.progress({fraction!r})", run.record_async([event]))
        run.record([event])
        return None

    def idempotency_key(self) -> str:
        """The idempotency key of the step being executed: ``<task id>:<step index>``.

        Pass it to external systems so that a step re-run after a crash does its effect once.

        Raises:
            UsageError: not inside a step.
        """
        run = current_run("idempotency_key()")
        index = CURRENT_STEP.get()
        if index is None:
            raise UsageError("idempotency_key() is only available while a step runs")
        return run.idempotency_key(index)

    def sleep(self, seconds: float) -> Any:
        """Sleep durably inside a task: the task waits (the worker is free meanwhile) and goes
        on after ``seconds``, across crashes and restarts; a re-run returns at once once the
        sleep is recorded as over. In an ``async def`` task, await it.

        Args:
            seconds: how long, >= 0.

        Returns:
            None, or in an ``async def`` task an awaitable of None.

        Raises:
            UsageError: outside a task, or a negative or non-finite duration.
        """
        run = current_run("sleep()")
        duration = arguments.seconds(seconds, "sleep(): seconds")
        if on_event_loop():
            return run.hand(
                f"engine.sleep({seconds!r})", drive_async(run.sleeping(duration), run.effect_async)
            )
        drive(run.sleeping(duration), run.effect)
        return None


async def _state_set_async(run: TaskRun, event: StateSet) -> None:
    """Record a published value from an ``async def`` task."""
    try:
        await run.record_async([event])
    except UnencodableValue as exc:
        raise _unstorable(event.key, exc) from exc


def _unstorable(key: str, error: UnencodableValue) -> UsageError:
    return UsageError(f"set_state({key!r}): the value cannot be stored: {error}")
