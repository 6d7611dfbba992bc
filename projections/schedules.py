"""The schedule projection: each session's schedules and their last tick, from the streams
``schedule-<session>:<name>`` (see :func:`schedule_stream`)."""

from __future__ import annotations

from typing import Any

import msgspec

from onward.events import Recorded, ScheduleRemoved, ScheduleSet, ScheduleTicked

__all__ = ["SCHEDULE_PREFIX", "ScheduleProjection", "ScheduleView", "schedule_stream"]

#: Every schedule's stream is ``schedule-<session>:<name>``.
SCHEDULE_PREFIX = "schedule-"


def schedule_stream(session: str, name: str) -> str:
    """The stream of one session's schedule: ``schedule-<session>:<name>``, each part with its
    ``%`` and ``:`` percent-encoded (``%25``, ``%3A``), as a URI encodes the delimiters in its
    components.

    Both a session's name and a schedule's may hold ``:``: joined as given, session ``a`` with
    schedule ``b:c`` and session ``a:b`` with schedule ``c`` would share ``schedule-a:b:c``.
    Encoded, the first ``:`` after the prefix is the separator, so two schedules never share a
    stream; a name without ``%`` or ``:`` is unchanged, so is its stream. A schedule an earlier
    onward recorded on its stream as then joined keeps that stream (see
    :attr:`ScheduleView.stream`).
    """
    return f"{SCHEDULE_PREFIX}{_encoded(session)}:{_encoded(name)}"


def _encoded(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


class ScheduleView(msgspec.Struct, kw_only=True):
    """What the log says about one schedule.

    Attributes:
        session: its session.
        name: its name.
        stream: its stream: :func:`schedule_stream`'s, or the one an earlier onward recorded
            it on (the session's and the schedule's names joined by ``:`` as given; such a
            stream may hold another session's schedule too).
        task: the task it submits.
        cron: its cron expression (UTC).
        args: the task's positional arguments.
        kwargs: the task's keyword arguments.
        priority: the tasks' priority.
        missed: "once" or "skip" (see :class:`onward.events.ScheduleSet`).
        set_at: when it was set, or last set with another cron (or after its removal);
            ticks count from then.
        last_tick: the last tick handled (None: none yet).
        last_task: the task submitted for it ("" when skipped).
        runs: the tasks it submitted.
        skipped: the ticks it skipped (or covered by one run).
        removed: it was removed (no more ticks until it is set again).
        version: its stream's version (of the stream's last event, whichever session's).
    """

    session: str
    name: str
    stream: str
    task: str
    cron: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: str
    missed: str
    set_at: float
    last_tick: float | None = None
    last_task: str = ""
    runs: int = 0
    skipped: int = 0
    removed: bool = False
    version: int = 0


class ScheduleProjection:
    """Folds schedule streams into :class:`ScheduleView` objects.

    An event belongs to the schedule its session set on its stream: a stream an earlier onward
    wrote may hold two sessions' schedules, each folded apart.
    """

    def __init__(self) -> None:
        self.schedules: dict[tuple[str, str], ScheduleView] = {}  # by (session, name)
        # The schedule's name, by (session, stream), and the schedules of each stream.
        self._named: dict[tuple[str, str], str] = {}
        self._on: dict[str, list[ScheduleView]] = {}

    def apply(self, r: Recorded) -> None:
        """Fold one event of a schedule stream (others are ignored)."""
        event = r.event
        session = r.meta.session
        if isinstance(event, ScheduleSet):
            before = self.schedules.get((session, event.name))
            view = ScheduleView(
                session=session,
                name=event.name,
                stream=r.stream,
                task=event.task,
                cron=event.cron,
                args=list(event.args),
                kwargs=dict(event.kwargs),
                priority=event.priority.value,
                missed=event.missed,
                # Its ticks count from its first declaration: one that changes its task's
                # arguments or priority only (a deploy after an outage) keeps the ticks missed
                # meanwhile; a new cron, or a schedule set again after its removal, starts anew.
                set_at=(
                    before.set_at
                    if before is not None and not before.removed and before.cron == event.cron
                    else r.meta.time
                ),
                last_tick=before.last_tick if before is not None else None,
                last_task=before.last_task if before is not None else "",
                runs=before.runs if before is not None else 0,
                skipped=before.skipped if before is not None else 0,
            )
            if before is not None:
                self._on[before.stream] = [v for v in self._on[before.stream] if v is not before]
            self._add(view)
        elif isinstance(event, ScheduleTicked | ScheduleRemoved):
            owner = self._of_stream(session, r.stream)
            if owner is not None and isinstance(event, ScheduleTicked):
                owner.last_tick = event.tick
                owner.last_task = event.task_id
                owner.runs += bool(event.task_id)
                owner.skipped += event.missed + (not event.task_id)
            elif owner is not None:
                owner.removed = True
        for sharing in self._on.get(r.stream, ()):
            sharing.version = r.version

    def of(self, session: str) -> list[ScheduleView]:
        """A session's schedules (the removed ones included), by name."""
        return sorted(
            (v for v in self.schedules.values() if v.session == session), key=lambda v: v.name
        )

    def get(self, session: str, name: str) -> ScheduleView | None:
        """One schedule of a session (None: never set)."""
        return self.schedules.get((session, name))

    def stream_of(self, session: str, name: str) -> tuple[str, ScheduleView | None]:
        """The stream a session's schedule is recorded on (:func:`schedule_stream`'s for one
        never set), with the schedule of the session already there (None: none): the
        schedule itself, or one an earlier onward recorded on that stream under another name
        (``b%3Ac`` as given, where ``b:c`` is now encoded so)."""
        view = self.get(session, name)
        if view is not None:
            return view.stream, view
        stream = schedule_stream(session, name)
        return stream, self._of_stream(session, stream)

    def version_of(self, stream: str) -> int:
        """A schedule stream's version, whichever session's schedules it holds (0: none)."""
        views = self._on.get(stream)
        return views[0].version if views else 0

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every schedule, by :func:`schedule_stream`."""
        return {
            schedule_stream(*key): msgspec.structs.asdict(v)
            for key, v in sorted(self.schedules.items())
        }

    def dump(self) -> list[ScheduleView]:
        """Every schedule view, for a checkpoint."""
        return list(self.schedules.values())

    def load(self, views: list[ScheduleView]) -> None:
        """Restore from a checkpoint's schedule views."""
        self.schedules, self._named, self._on = {}, {}, {}
        for view in views:
            self._add(view)

    def _add(self, view: ScheduleView) -> None:
        self.schedules[view.session, view.name] = view
        self._named[view.session, view.stream] = view.name
        self._on.setdefault(view.stream, []).append(view)

    def _of_stream(self, session: str, stream: str) -> ScheduleView | None:
        name = self._named.get((session, stream))
        view = None if name is None else self.schedules.get((session, name))
        return view if view is not None and view.stream == stream else None
