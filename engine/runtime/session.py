"""One session of work on one log: the log, the projections folded from it, the session's stream.

A :class:`Session` is what the engine's parts share: the facade, the scheduler, the task
boundaries, degradation and interruptions all read the projections through it and append to
the session's stream through :meth:`Session.record`. It holds no state of its own that the log
does not: opening it again resumes the session.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence

from onward.core.machines import transition
from onward.events import (
    Append,
    Context,
    Event,
    EventLog,
    SessionResumed,
    SessionStarted,
    UnknownEventType,
    UsageError,
    VersionConflict,
    new_event_id,
)
from onward.projections import CatchUp, Projections, SessionView, TaskView, session_stream

__all__ = ["Session"]

#: How many times an append to the session's stream looks again after another worker's.
_SESSION_APPEND_TRIES = 20


class Session:
    """A session's log, its projections and its stream, shared by the engine's parts.

    Args:
        log: the open log.
        name: the session's name.
        clock: the source of time.
        sleep: how to wait for a timer.
        lease: seconds a worker's claim on a task lasts without news from it.
        worker: this worker's id.
        checkpoint_every: save a projection checkpoint after this many events.

    Attributes:
        log: the log.
        name: the session's name.
        clock: the source of time.
        sleep: how to wait for a timer (a test may replace it).
        lease: the lease of a claim, in seconds.
        worker: this worker's id.
        host: the projections' catch-up host.
        lock: held while the projections are folded or a decision is taken on them.
        context: the envelope fields of the session's own appends.
    """

    def __init__(
        self,
        log: EventLog,
        name: str,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        lease: float,
        worker: str,
        checkpoint_every: int,
    ) -> None:
        self.log = log
        self.name = name
        self.clock = clock
        self.sleep = sleep
        self.lease = lease
        self.worker = worker
        self.host = CatchUp(log, checkpoint_every=checkpoint_every)
        self.lock = threading.RLock()
        self.context = Context(session=name, actor=worker)
        self.closed = False

    # -- reading ---------------------------------------------------------------------------

    @property
    def projections(self) -> Projections:
        """The read models as of the last catch-up."""
        return self.host.projections

    def catch_up(self) -> Projections:
        """Fold every event appended since the last look (by this or any other process)."""
        with self.lock:
            self.host.catch_up()
        return self.host.projections

    def current(self, fresh: bool) -> Projections:
        """The projections, caught up first when ``fresh`` (what the policies are given)."""
        return self.catch_up() if fresh else self.host.projections

    def view(self) -> SessionView | None:
        """The session's own view (None before it started)."""
        return self.host.projections.sessions.sessions.get(self.name)

    def tasks(self) -> Iterable[TaskView]:
        """This session's tasks, as of the last catch-up."""
        return (t for t in self.host.projections.tasks.tasks.values() if t.session == self.name)

    def check_open(self) -> None:
        """Raise :class:`UsageError` once the engine is closed."""
        if self.closed:
            raise UsageError(f"the engine for session {self.name!r} is closed")

    # -- the session's stream --------------------------------------------------------------

    def open(self) -> None:
        """Fold the log, then start the session, or resume it with its unfinished tasks.

        Raises:
            UnknownEventType: an unfinished task holds events of types this version does not
                know.
        """
        self.host.open()
        view = self.view()
        if view is None:
            event: SessionStarted | SessionResumed = SessionStarted(
                name=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=_version(),
            )
            expected = 0
        else:
            unfinished = [t for t in self.tasks() if not t.terminal]
            for task in unfinished:
                if task.unknown_events:
                    raise UnknownEventType(
                        f"task {task.task_id} has {task.unknown_events} events of types this "
                        "version of onward does not know (written by a newer one?); refusing to "
                        "resume it. `onward show` can still read it."
                    )
            event = SessionResumed(reason="reopened", recovered_tasks=len(unfinished))
            expected = view.version
        transition(
            self.log,
            "session",
            self.name,
            session_stream(self.name),
            view.state if view else "new",
            expected,
            event,
            self.context,
        )
        self.host.catch_up()

    def resume(self, reason: str) -> bool:
        """Resume the session after a pause.

        Returns:
            Whether it was paused.
        """
        with self.lock:
            self.host.catch_up()
            view = self.view()
            if view is None or view.state != "paused":
                return False
            transition(
                self.log,
                "session",
                self.name,
                session_stream(self.name),
                view.state,
                view.version,
                SessionResumed(reason=reason),
                self.context,
            )
            self.host.catch_up()
        return True

    def record(
        self, events: Sequence[Event], *, chain: bool = True, first_cause: str = ""
    ) -> list[str]:
        """Append events to the session's stream (each caused by the one before if ``chain``,
        the first by ``first_cause``), looking again when another worker appended first.

        Returns:
            The events' ids.
        """
        stream = session_stream(self.name)
        for _ in range(_SESSION_APPEND_TRIES):
            view = self.view()
            version = view.version if view is not None else 0
            ids = [new_event_id() for _ in events]
            first = first_cause or self.context.causation_id
            causes = [first, *ids[:-1]] if chain else None
            try:
                self.log.commit(
                    [
                        Append(
                            stream=stream,
                            events=events,
                            expected_version=version,
                            event_ids=ids,
                            context=self.context,
                            causes=causes,
                        )
                    ]
                )
            except VersionConflict:
                self.host.catch_up()
                continue
            return ids
        raise UsageError(f"session {self.name}: too many concurrent appends, try again")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("onward")
    except Exception:
        return "unknown"
