"""The limit projection: each queue limit's permits in use and recent takes, from the streams
``limit-<name>``."""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any

import msgspec

from onward.events import LimitSet, PermitReturned, PermitTaken, Recorded

__all__ = ["LIMIT_PREFIX", "LimitProjection", "LimitView", "limit_stream"]

#: Every limit's stream is ``limit-<name>``.
LIMIT_PREFIX = "limit-"
#: The takes kept per limit, for its rate (the longest window a rate may use is an hour).
TAKES_KEPT = 100_000
TAKES_SPAN = 3600.0


def limit_stream(name: str) -> str:
    """The stream of a queue limit."""
    return LIMIT_PREFIX + name


class LimitView(msgspec.Struct, kw_only=True):
    """What the log says about one queue limit.

    Attributes:
        name: its name.
        concurrency: how many may run at once, as last set (None: no bound, or never set).
        rate: how many may start per window, as last set ("" for none).
        set: whether it was ever declared.
        held: the permits taken and not returned: (task id, step index) -> (worker, until).
        runs: the run (its claim's event id) that took each permit in ``held``, by the same
            key: a run gives back only the permit it took, not a later run's of the same
            worker (a cancelled run whose task a retry runs again).
        takes: when permits were taken, oldest first (the last hour's).
        taken: how many permits were ever taken.
        returned_at: the version of the last permit given back.
        version: its stream's version.
    """

    name: str
    concurrency: int | None = None
    rate: str = ""
    set: bool = False
    held: dict[str, tuple[str, float]] = msgspec.field(default_factory=dict)
    runs: dict[str, str] = msgspec.field(default_factory=dict)
    takes: list[float] = msgspec.field(default_factory=list)
    taken: int = 0
    returned_at: int = 0
    version: int = 0


def permit_key(task_id: str, index: int) -> str:
    """The key of a step's permit in :attr:`LimitView.held`."""
    return f"{task_id}:{index}"


class LimitProjection:
    """Folds limit streams into :class:`LimitView` objects."""

    def __init__(self) -> None:
        self.limits: dict[str, LimitView] = {}
        # Per limit, the times permits were taken, in time order (workers' clocks differ: a
        # take may come before one folded earlier), from its offset in ``_first`` on (those
        # before it are past the longest window, dropped in batches): a rate's look counts
        # them by bisection, not one by one (up to 100,000 an hour).
        self._takes: dict[str, list[float]] = {}
        self._first: dict[str, int] = {}
        #: The most takes kept per limit.
        self.kept = TAKES_KEPT

    def view(self, name: str) -> LimitView:
        """A limit's view (an empty one for a limit nothing took yet), its takes included."""
        found = self.limits.get(name)
        if found is None:
            return LimitView(name=name)
        found.takes = self._takes.get(name, [])[self._first.get(name, 0) :]
        return found

    def held(self, name: str) -> LimitView:
        """A limit's view as :meth:`view` gives it, but for its ``takes`` (not brought up to
        date: a copy of up to 100,000 times at each permit taken)."""
        found = self.limits.get(name)
        return LimitView(name=name) if found is None else found

    def apply(self, r: Recorded) -> None:
        """Fold one event of a limit stream. One of another type (an unknown event, from a
        newer onward) only moves the stream's version: a take appends after it."""
        event = r.event
        name = r.stream[len(LIMIT_PREFIX) :]
        view = self.limits.get(name)
        if view is None:
            view = self.limits[name] = LimitView(name=name)
        view.version = r.version
        if not isinstance(event, LimitSet | PermitTaken | PermitReturned):
            return
        if isinstance(event, LimitSet):
            view.concurrency, view.rate, view.set = event.concurrency, event.rate, True
            return
        key = permit_key(event.task_id, event.index)
        if isinstance(event, PermitTaken):
            view.held[key] = (event.worker, event.until)
            view.runs[key] = event.run
            view.taken += 1
            self._took(name, r.meta.time)
        else:
            held = view.held.get(key)
            # A worker that lost the step (taken over while it was paused) gives back only its
            # own permit, never the one the step's new worker took since; a run, only the one
            # it took (a run of the same worker may have taken it again since).
            run = view.runs.get(key, "")
            if (
                held is not None
                and event.worker in ("", held[0])
                and (not run or not event.run or run == event.run)
            ):
                del view.held[key]
                view.runs.pop(key, None)
                view.returned_at = r.version

    def _took(self, name: str, time: float) -> None:
        """Keep when a permit was taken; drop the takes past the longest window (an hour
        before this one: a take stamped by a clock far ahead must not drop the others' as
        they come), and the oldest past :attr:`kept`."""
        takes = self._takes.setdefault(name, [])
        first = self._first.get(name, 0)
        if not takes or time >= takes[-1]:
            takes.append(time)
        else:
            bisect.insort(takes, time, lo=first)
        first = max(
            bisect.bisect_left(takes, time - TAKES_SPAN, lo=first),
            len(takes) - self.kept,
        )
        if first >= 32 and first * 2 > len(takes):  # the dropped ones: let go in one go
            del takes[:first]
            first = 0
        self._first[name] = first

    def recent(self, name: str, since: float, until: float = math.inf) -> int:
        """How many permits of a limit were taken after ``since`` and at or before ``until``
        (a take stamped later, by a clock ahead, is not counted)."""
        takes = self._takes.get(name)
        if not takes:
            return 0
        first = self._first.get(name, 0)
        return bisect.bisect_right(takes, until, lo=first) - bisect.bisect_right(
            takes, since, lo=first
        )

    def first_since(self, name: str, since: float, until: float = math.inf) -> float | None:
        """When the first permit taken after ``since`` (and at or before ``until``) was taken
        (None: none)."""
        takes = self._takes.get(name)
        if not takes:
            return None
        found = bisect.bisect_right(takes, since, lo=self._first.get(name, 0))
        return takes[found] if found < len(takes) and takes[found] <= until else None

    def snapshot(self) -> dict[str, Any]:
        """A plain, comparable picture of every limit."""
        return {k: msgspec.structs.asdict(self.view(k)) for k in sorted(self.limits)}

    def dump(self) -> list[LimitView]:
        """Every limit view, for a checkpoint."""
        return [self.view(name) for name in self.limits]

    def load(self, views: list[LimitView]) -> None:
        """Restore from a checkpoint's limit views."""
        self.limits = {v.name: v for v in views}
        self._takes, self._first = {}, {}
        for view in views:
            takes = view.takes
            if all(a <= b for a, b in itertools.pairwise(takes)):
                self._takes[view.name] = list(takes)
                self._first[view.name] = max(0, len(takes) - self.kept)
            else:  # an older onward's, in the order they were folded: folded again so
                for time in takes:
                    self._took(view.name, time)
