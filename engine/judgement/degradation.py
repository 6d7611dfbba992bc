"""Graceful degradation: the components the work depends on, their workaround ladders, the plans.

When a component fails, the work goes on with the next workaround of its ladder, each at a
declared cost in quality; when the ladder is used up, the task pauses and a person is asked;
when the component is back, its workaround is dropped::

    components = Components()  # the nine defaults, each with its ladder
    components.register("database", check=lambda: ping(db))  # keeps the default ladder
    view = projections.degradation.view(session)
    events = plan_failure(components, view, "database", message="connection refused")
    ...  # append them, in order (each caused by the one before)
    events = plan_restorations(components, view)  # every degraded component whose check passes

This module only decides: each ``plan_*`` function reads the session's
:class:`onward.projections.degradation.DegradationView` and returns the events to append, computed
by the projection's own rules (:func:`onward.projections.degradation.combine_losses`,
:func:`onward.projections.degradation.level_for`), so the levels they carry are the ones the fold
will reach. It reads no clock and appends nothing.

Rules:

- A ladder goes down in quality: each workaround loses at least as much as the one before, so
  the level never improves while failures accumulate.
- The default components have no health check (one depends on the user's environment):
  ``register(name, check=...)`` adds one and keeps the registered ladder and description when
  none is given. Without a check, a component is restored only by :func:`plan_restore`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Protocol

import msgspec

from onward.core.definitions import is_async
from onward.core.fields import shown
from onward.events import (
    ComponentFailed,
    ComponentRestored,
    DecisionMade,
    Event,
    Strategy,
    UsageError,
    WorkaroundApplied,
)
from onward.projections.degradation import (
    DECISION_KIND,
    EXHAUSTED_CHOICE,
    ComponentState,
    ComponentView,
    DegradationView,
    combine_losses,
    exhausted_loss,
    level_for,
)

__all__ = [
    "DEFAULT_COMPONENTS",
    "EXHAUSTED_ALTERNATIVES",
    "Component",
    "Components",
    "HealthCheck",
    "Workaround",
    "passing_checks",
    "plan_failure",
    "plan_restorations",
    "plan_restore",
]

#: The choices passed over when a component's ladder is exhausted.
EXHAUSTED_ALTERNATIVES: tuple[str, ...] = (
    "continue without the component",
    "retry the component",
)


class HealthCheck(Protocol):
    """Tells whether a component works again: True when it does.

    It should be quick and have no effect. Anything but True (False, None, or an exception)
    counts as failing.
    """

    def __call__(self) -> bool:
        """Check the component; True when it works."""
        ...


class Workaround(msgspec.Struct, frozen=True, kw_only=True):
    """A degraded alternative for a failed component.

    Attributes:
        name: its name, unique in its ladder (recorded by :class:`onward.events.WorkaroundApplied`).
        quality_loss: the share of quality lost while it stands in, in (0, 1].
        description: what it does instead, for people.

    Raises:
        UsageError: a name that is not a non-empty str, a ``quality_loss`` that is not a
            number in (0, 1] (a bool is none), or a description that is not a str.
    """

    name: str
    quality_loss: float
    description: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name):
            raise UsageError(f"a workaround needs a name (a non-empty str), not {shown(self.name)}")
        loss = self.quality_loss
        if isinstance(loss, bool) or not (
            isinstance(loss, int | float) and math.isfinite(loss) and 0 < loss <= 1
        ):
            raise UsageError(
                f"workaround {self.name!r}: quality_loss must be in (0, 1] (a number), not "
                f"{shown(loss)}"
            )
        if not isinstance(self.description, str):
            raise UsageError(
                f"workaround {self.name!r}: description must be a str, not "
                f"{shown(self.description)}"
            )


class Component(msgspec.Struct, frozen=True, kw_only=True):
    """Something the work depends on, and its ladder of workarounds.

    Attributes:
        name: its name (what :class:`onward.events.ComponentFailed` records).
        check: tells whether it works again (None: only an explicit restoration restores it).
        workarounds: its ladder, the first rung tried first; each loses at least as much
            quality as the one before.
        description: what it is, for people.

    Raises:
        UsageError: a name that is not a non-empty str, a check that is not callable (nor
            None) or is ``async def``, workarounds that are not a tuple (or list) of
            :class:`Workaround`, two workarounds of the same name, a rung that loses less than
            the one before, or a description that is not a str; the message names the
            component. (A workaround with an empty name or a loss outside (0, 1] is refused
            as it is built: see :class:`Workaround`.)
    """

    name: str
    check: HealthCheck | None = None
    workarounds: tuple[Workaround, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name):
            raise UsageError(f"a component needs a name (a non-empty str), not {shown(self.name)}")
        where = f"component {self.name!r}"
        if not (self.check is None or callable(self.check)):
            raise UsageError(f"{where}: check must be a function or None, not {shown(self.check)}")
        if self.check is not None and is_async(self.check):
            # Called, never awaited: its coroutine is not True, so it would never restore.
            raise UsageError(f"{where}: check must be a plain def function, not an async def one")
        if not isinstance(self.description, str):
            raise UsageError(f"{where}: description must be a str, not {shown(self.description)}")
        ladder = self.workarounds
        if isinstance(ladder, list):
            ladder = tuple(ladder)
            msgspec.structs.force_setattr(self, "workarounds", ladder)
        if not (isinstance(ladder, tuple) and all(isinstance(w, Workaround) for w in ladder)):
            raise UsageError(
                f"{where}: workarounds must be a tuple of Workaround, not {shown(ladder)}"
            )
        seen: set[str] = set()
        previous = 0.0
        for workaround in ladder:
            if workaround.name in seen:
                raise UsageError(f"{where}: two workarounds named {workaround.name!r}")
            seen.add(workaround.name)
            if workaround.quality_loss < previous:
                raise UsageError(
                    f"{where}: workaround {workaround.name!r} loses {workaround.quality_loss},"
                    f" less than the rung before it ({previous}); order the ladder by loss"
                )
            previous = workaround.quality_loss


def _ladder(*rungs: tuple[str, float, str]) -> tuple[Workaround, ...]:
    return tuple(Workaround(name=n, quality_loss=q, description=d) for n, q, d in rungs)


#: The components every :class:`Components` starts with (unless ``defaults=False``), with no
#: health check.
DEFAULT_COMPONENTS: tuple[Component, ...] = (
    Component(
        name="tests",
        description="the test suite",
        workarounds=_ladder(
            ("affected_tests_only", 0.15, "run only the tests affected by the change"),
            ("syntax_check_only", 0.4, "check that the code parses; run no test"),
        ),
    ),
    Component(
        name="database",
        description="the database the work reads and writes",
        workarounds=_ladder(
            ("cached_reads", 0.2, "read from a cached copy of the data"),
            ("local_write_journal", 0.3, "queue writes to a local journal, replayed later"),
        ),
    ),
    Component(
        name="external_api",
        description="a third-party API the work calls",
        workarounds=_ladder(
            ("cached_responses", 0.25, "serve cached responses"),
            ("skip_enrichment", 0.5, "skip the enrichment the API provides"),
        ),
    ),
    Component(
        name="linting",
        description="the linters",
        workarounds=_ladder(
            ("changed_files_only", 0.02, "lint only the changed files"),
            ("skip_linting", 0.05, "skip linting"),
        ),
    ),
    Component(
        name="build",
        description="the build",
        workarounds=_ladder(
            ("incremental_build", 0.1, "rebuild only what changed"),
            ("skip_packaging", 0.3, "build without packaging the result"),
        ),
    ),
    Component(
        name="imports",
        description="an optional dependency the code imports",
        workarounds=_ladder(
            ("pure_python_fallback", 0.1, "use the pure-Python fallback"),
            ("disable_optional_feature", 0.3, "disable the feature that needs it"),
        ),
    ),
    Component(
        name="file_io",
        description="the files the work reads and writes",
        workarounds=_ladder(
            ("temporary_directory", 0.1, "write to a temporary directory"),
            ("in_memory_results", 0.3, "keep results in memory, not on disk"),
        ),
    ),
    Component(
        name="network",
        description="the network",
        workarounds=_ladder(
            ("offline_mirror", 0.2, "use the offline mirror"),
            ("work_offline", 0.5, "work offline, skipping what needs the network"),
        ),
    ),
    Component(
        name="compilation",
        description="the compiler and compiled extensions",
        workarounds=_ladder(
            ("interpreter_path", 0.2, "use the interpreted code path"),
            ("skip_compiled_extensions", 0.4, "skip the compiled extensions"),
        ),
    ),
)


class Components:
    """The registry of components, each with its health check and its ladder.

    Args:
        defaults: start with :data:`DEFAULT_COMPONENTS` (False: start empty).
    """

    def __init__(self, *, defaults: bool = True) -> None:
        self._components: dict[str, Component] = {}
        if defaults:
            self._components.update((c.name, c) for c in DEFAULT_COMPONENTS)

    def register(
        self,
        name: str,
        *,
        check: HealthCheck | None = None,
        workarounds: Sequence[Workaround] = (),
        description: str = "",
        replace: bool = True,
    ) -> Component:
        """Register a component, or update a registered one.

        Updating keeps what is not given: the check when ``check`` is None, the ladder when
        ``workarounds`` is empty, the description when ``description`` is "". So
        ``register("tests", check=...)`` gives the default tests a check and keeps their
        ladder. (To give a component an empty ladder, start from ``Components(defaults=False)``.)

        Args:
            name: the component's name.
            check: tells whether it works again.
            workarounds: its ladder, first rung first.
            description: what it is, for people.
            replace: update a registered component of that name (False: refuse to).

        Returns:
            The component as registered.

        Raises:
            UsageError: the component is not valid (see :class:`Component`), or ``name`` is
                registered already and ``replace`` is False.
        """
        if not (isinstance(name, str) and name):
            raise UsageError(f"a component needs a name (a non-empty str), not {shown(name)}")
        if isinstance(workarounds, str) or not isinstance(workarounds, Iterable):
            raise UsageError(
                f"component {name!r}: workarounds must be a tuple of Workaround, not "
                f"{shown(workarounds)}"
            )
        old = self._components.get(name)
        if old is None:
            component = Component(
                name=name, check=check, workarounds=tuple(workarounds), description=description
            )
        elif not replace:
            raise UsageError(f"component {name!r} is registered already (replace=False)")
        else:
            component = Component(
                name=name,
                check=old.check if check is None else check,
                workarounds=tuple(workarounds) or old.workarounds,
                description=description or old.description,
            )
        self._components[name] = component
        return component

    def get(self, name: str) -> Component:
        """The component of that name.

        Raises:
            UsageError: no component has that name (the message lists the known ones).
        """
        component = self._components.get(name)
        if component is None:
            known = ", ".join(sorted(self._components)) or "none"
            raise UsageError(f"unknown component {name!r} (known: {known})")
        return component

    def names(self) -> tuple[str, ...]:
        """The components' names, in registration order."""
        return tuple(self._components)

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        return iter(tuple(self._components.values()))

    def __len__(self) -> int:
        return len(self._components)


def _losses(view: DegradationView) -> dict[str, float]:
    """The loss each degraded or exhausted component costs, by name."""
    return {c.name: c.quality_loss for c in view.components if c.state != ComponentState.HEALTHY}


def _find(view: DegradationView, name: str) -> ComponentView:
    for c in view.components:
        if c.name == name:
            return c
    return ComponentView(name=name)


def plan_failure(
    components: Components,
    view: DegradationView,
    component: str,
    *,
    message: str = "",
    check: str = "",
) -> list[Event]:
    """The events that record a component's failure and what the work does about it.

    The next rung of its ladder is the one after the rungs already applied since it was last
    healthy (the first when it is healthy). While one is left: the failure and
    :class:`onward.events.WorkaroundApplied` of it, with the session's level once it applies. When
    none is left: the failure and a :class:`onward.events.DecisionMade` (kind :data:`DECISION_KIND
    <projections.degradation.DECISION_KIND>`) to pause the task and ask a person, whose inputs
    are the component, its rung, the workarounds tried, and the session's quality lost and
    level with the component counted as exhausted.

    Args:
        components: the registry.
        view: the session's degradation, as folded before this failure.
        component: the failed component's name.
        message: how it failed.
        check: the health check that failed ("" when it failed in use).

    Returns:
        The events to append, in order; each is caused by the one before.

    Raises:
        UsageError: the component is not registered.
    """
    registered = components.get(component)
    current = _find(view, component)
    failed = ComponentFailed(component=component, check=check, message=message)
    losses = _losses(view)
    rung = current.rung
    ladder = registered.workarounds
    if current.state != ComponentState.EXHAUSTED and rung < len(ladder):
        workaround = ladder[rung]
        losses[component] = workaround.quality_loss
        applied = WorkaroundApplied(
            component=component,
            workaround=workaround.name,
            quality_loss=workaround.quality_loss,
            level=level_for(combine_losses(losses.values())),
            rung=rung + 1,
        )
        return [failed, applied]
    losses[component] = exhausted_loss(current.quality_loss)
    lost = combine_losses(losses.values())
    decision = DecisionMade(
        kind=DECISION_KIND,
        subject=component,
        choice=EXHAUSTED_CHOICE,
        strategy=Strategy.ASK,
        inputs={
            "component": component,
            "rung": rung,
            "workarounds_tried": [w.name for w in ladder[:rung]],
            "quality_lost": lost,
            "level": level_for(lost).value,
        },
        alternatives=list(EXHAUSTED_ALTERNATIVES),
    )
    return [failed, decision]


def _passes(check: HealthCheck) -> bool:
    try:
        return check() is True
    except Exception:
        # A check that breaks says nothing good about the component: it stays degraded.
        return False


def _restore(losses: dict[str, float], component: ComponentView) -> ComponentRestored:
    regained = losses.pop(component.name, 0.0)
    return ComponentRestored(
        component=component.name,
        quality_regained=regained,
        level=level_for(combine_losses(losses.values())),
    )


def plan_restorations(
    components: Components,
    view: DegradationView,
    *,
    passed: Collection[ComponentView] | None = None,
) -> list[Event]:
    """The restorations of every degraded or exhausted component whose health check passes.

    Each component's check is called once, in name order; a check that returns anything but
    True, or raises an :class:`Exception`, fails (the exception is not propagated). Components
    with no check, or not registered, are left as they are. Each
    :class:`onward.events.ComponentRestored` regains the loss its component cost and carries the
    session's level once it (and the restorations before it) apply.

    Args:
        components: the registry.
        view: the session's degradation.
        passed: the components whose checks passed already, as they were when checked
            (:func:`passing_checks`, called before the decision, so that no check runs while
            it is taken): no check is called. A component that changed since its check (a
            failure recorded meanwhile, a restoration) is left as it is: the check is older
            than what the log says of it now.

    Returns:
        The events to append, in order (none when nothing is restored).
    """
    losses = _losses(view)
    planned: list[Event] = []
    if passed is None:
        passed = passing_checks(components, view)
    for current in view.components:
        if current.state != ComponentState.HEALTHY and current in passed:
            planned.append(_restore(losses, current))
    return planned


def passing_checks(components: Components, view: DegradationView) -> frozenset[ComponentView]:
    """Call the health check of every degraded or exhausted component (once each, in name
    order; as :func:`plan_restorations` does) and say which passed.

    Args:
        components: the registry.
        view: the session's degradation.

    Returns:
        The components whose check passed, as ``view`` has them (a restoration decided later
        on a newer view restores only those unchanged since).
    """
    passed: set[ComponentView] = set()
    for current in view.components:
        if current.state == ComponentState.HEALTHY or current.name not in components:
            continue
        check = components.get(current.name).check
        if check is not None and _passes(check):
            passed.add(current)
    return frozenset(passed)


def plan_restore(components: Components, view: DegradationView, component: str) -> list[Event]:
    """The restoration of one component that a person (or the code) says works again.

    No health check is called.

    Args:
        components: the registry.
        view: the session's degradation.
        component: the component's name.

    Returns:
        Its :class:`onward.events.ComponentRestored`, or nothing when it is not degraded nor
        exhausted.

    Raises:
        UsageError: the component is not registered.
    """
    components.get(component)
    current = _find(view, component)
    if current.state == ComponentState.HEALTHY:
        return []
    return [_restore(_losses(view), current)]
