"""A simulated session's profile, written as data (TOML): its work, its faults, its person.

A profile says what one task of the session does (its steps, each a kind of real work from
:mod:`onward.sim.work`, repeated, with a simulated duration), how often tasks arrive, and the
fault model: per step kind, the errors a call meets (real exceptions, recurring ones whose fix
the engine knows and new ones it must learn from a person), component outages and their
length, how many times the worker is killed with SIGKILL, and how the simulated person answers.
Two profiles ship (:data:`PROFILES`): ``coding-agent`` and ``nightly-data-job``.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path

import msgspec

from onward.events import Redactor, UsageError
from onward.judgement.budget import ErrorBudget

__all__ = [
    "ACTIONS",
    "COMPONENTS",
    "ERRORS",
    "KINDS",
    "PROFILES",
    "ErrorRate",
    "Outage",
    "Person",
    "Profile",
    "StepPlan",
    "load_profile",
]

#: The profiles that ship, by name.
PROFILES = ("coding-agent", "nightly-data-job")

#: The errors each kind of work can meet (the profile's fault model picks among them).
ERRORS: dict[str, tuple[str, ...]] = {
    "read_source": ("UnicodeDecodeError",),
    "parse_reply": ("JSONDecodeError",),
    "load_config": ("KeyError",),
    "check_code": ("SyntaxError", "TabError"),
    "call_model": ("TimeoutError", "ConnectionResetError", "SchemaChanged"),
    "import_tool": ("ModuleNotFoundError",),
    "write_output": ("FileNotFoundError",),
    "query_db": ("OperationalError",),
    "transform": ("MemoryError",),
}
#: The judged actions, by kind: their impact (high ones ask a person first).
ACTIONS: dict[str, str] = {
    "edit_file": "low",
    "push_branch": "medium",
    "load_table": "medium",
    "delete_branch": "high",
    "publish_table": "high",
}
#: Every kind of work.
KINDS: tuple[str, ...] = (*ERRORS, *ACTIONS)
#: The components an outage can take down, with the kinds of work that use them (an outage
#: of anything else would change nothing).
COMPONENTS: dict[str, tuple[str, ...]] = {"external_api": ("call_model",)}


class StepPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Steps of one kind in a task: how many times in a row, how long each takes (seconds,
    drawn uniformly), and the share of tasks that have them at all."""

    kind: str
    repeat: tuple[int, int] = (1, 1)
    seconds: tuple[float, float] = (1.0, 5.0)
    share: float = 1.0


class ErrorRate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An error a call of a step kind meets, with a probability per call.

    ``new`` errors are ones the engine cannot fix until a person teaches it (from
    ``since_hours`` on, when they first appear).
    """

    step: str
    error: str
    rate: float
    new: bool = False
    since_hours: float = 0.0


class Outage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A component that goes down ``count`` times (at seeded moments) for some minutes; the
    step kind that uses it fails meanwhile."""

    component: str
    step: str
    count: int = 1
    minutes: tuple[float, float] = (5.0, 15.0)


class Person(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The simulated person: minutes before answering an approval, before teaching the fix of
    a new error the engine gave up on, and before resuming a paused session."""

    answer_minutes: tuple[float, float] = (2.0, 15.0)
    teach_minutes: tuple[float, float] = (5.0, 30.0)
    resume_minutes: tuple[float, float] = (10.0, 30.0)


class Profile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A simulated session (see the module docstring).

    Attributes:
        name: the profile's name (the session's too).
        description: what it simulates.
        task: the name its tasks are registered under.
        tasks_per_hour: how many tasks arrive per hour (Poisson).
        backlog: tasks queued at the start.
        steps: one task's steps, in order.
        errors: the errors calls meet.
        outages: the component outages.
        crashes: how many times the worker is killed with SIGKILL.
        budget_per_hour: the session's error budget: failed tries an hour before the budget's
            rules apply (the errors an agent of this kind expects).
        person: the simulated person.
    """

    name: str
    description: str = ""
    task: str = "task"
    tasks_per_hour: float = 6.0
    backlog: int = 2
    steps: tuple[StepPlan, ...] = ()
    errors: tuple[ErrorRate, ...] = ()
    outages: tuple[Outage, ...] = ()
    crashes: int = 4
    budget_per_hour: int = 10
    person: Person = Person()


def load_profile(source: str | Path) -> Profile:
    """A shipped profile by name, or a TOML file.

    Raises:
        UsageError: no such profile or file, a file that is not TOML (nor UTF-8 text), or a
            profile that does not fit (the message names the file and the field).
    """
    name = str(source)
    if name in PROFILES:
        text = resources.files("onward.sim").joinpath("profiles", f"{name}.toml").read_text()
        where = f"the shipped profile {name!r}"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot read the profile {path} ({exc.strerror}); the shipped ones are "
                f"{', '.join(PROFILES)}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{path} is not TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        where = str(path)
    try:
        profile = msgspec.convert(tomllib.loads(text), Profile)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where} is not TOML: {exc}") from exc
    except RecursionError:  # arrays or tables nested thousands deep: no profile's shape
        raise UsageError(f"{where} is not TOML a profile can be: nested too deep") from None
    except msgspec.ValidationError as exc:
        raise UsageError(f"{where} does not fit a profile: {exc}") from exc
    _check(profile, where)
    return profile


#: The longest a simulated step may take: a year (a simulation runs for hours).
_LONGEST_STEP = 365 * 86_400.0
#: The most times a task repeats a step, and the most outages of one component: beyond them
#: a simulation would only fill memory with its plan (each is planned before the run).
_MOST_REPEATS = 10_000
_MOST_OUTAGES = 10_000


def _check(profile: Profile, where: str) -> None:
    """Refuse what the types let through but a simulation cannot run: every field, before a
    worker starts.

    Raises:
        UsageError: the first field that does not fit, named (``steps[2].repeat``).
    """

    def refuse(field: str, why: str) -> UsageError:
        return UsageError(f"{where}: {field}: {why}")

    def number(field: str, value: float, low: float, high: float = math.inf) -> None:
        if not (math.isfinite(value) and low <= value <= high):
            bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
            raise refuse(field, f"must be a number {bounds}, got {value!r}")

    def span(
        field: str, value: tuple[float, float], low: float = 0.0, high: float = math.inf
    ) -> None:
        for bound in value:
            number(field, bound, low, high)
        if value[0] > value[1]:
            raise refuse(field, f"must go from low to high, got {list(value)!r}")

    for field, name in (("name", profile.name), ("task", profile.task)):
        # The name goes on the worker's command line (which cannot hold a NUL) and into
        # the report's lines: no control character.
        if not name or name != "".join(name.split()) or not name.isprintable():
            raise refuse(
                field, f"must be a non-empty word (no spaces nor control characters), got {name!r}"
            )
        try:
            Redactor().check_name(name, field)
        except UsageError as exc:
            raise refuse(field, str(exc)) from exc
    # Bounds a simulation of hours can carry out (each kill is a real process killed).
    number("tasks_per_hour", profile.tasks_per_hour, 0.0, 100_000)
    number("backlog", profile.backlog, 0, 100_000)
    number("crashes", profile.crashes, 0, 1_000)
    try:
        ErrorBudget(limit=profile.budget_per_hour, window=3600.0)
    except UsageError as exc:
        raise refuse("budget_per_hour", str(exc)) from exc
    if not profile.steps:
        raise UsageError(f"{where}: a profile needs steps")
    for i, plan in enumerate(profile.steps):
        if plan.kind not in KINDS:
            raise refuse(
                f"steps[{i}].kind", f"unknown step kind {plan.kind!r} (known: {', '.join(KINDS)})"
            )
        span(f"steps[{i}].repeat", plan.repeat, 0, _MOST_REPEATS)
        span(f"steps[{i}].seconds", plan.seconds, 0.0, _LONGEST_STEP)
        number(f"steps[{i}].share", plan.share, 0.0, 1.0)
    # An error or an outage of a step kind the profile never runs would never come: the run
    # would measure a session without it, and say nothing.
    kinds = list(dict.fromkeys(plan.kind for plan in profile.steps))

    def runs(field: str, kind: str) -> None:
        if kind not in KINDS:
            raise refuse(field, f"unknown step kind {kind!r} (known: {', '.join(KINDS)})")
        if kind not in kinds:
            raise refuse(
                field, f"no step of the profile is a {kind!r} (its steps: {', '.join(kinds)})"
            )

    for i, rate in enumerate(profile.errors):
        runs(f"errors[{i}].step", rate.step)
        if rate.error not in ERRORS.get(rate.step, ()):
            known = ", ".join(ERRORS.get(rate.step, ())) or "none"
            raise refuse(
                f"errors[{i}]",
                f"step kind {rate.step!r} cannot meet {rate.error!r} (it meets: {known})",
            )
        number(f"errors[{i}].rate", rate.rate, 0.0, 1.0)
        number(f"errors[{i}].since_hours", rate.since_hours, 0.0)
    for i, outage in enumerate(profile.outages):
        uses = COMPONENTS.get(outage.component)
        if uses is None:
            raise refuse(
                f"outages[{i}].component",
                f"unknown component {outage.component!r} (known: {', '.join(COMPONENTS)})",
            )
        if outage.step not in uses:
            raise refuse(
                f"outages[{i}].step",
                f"{outage.step!r} does not use {outage.component!r} (it is used by: "
                f"{', '.join(uses)})",
            )
        number(f"outages[{i}].count", outage.count, 0, _MOST_OUTAGES)
        span(f"outages[{i}].minutes", outage.minutes)
        runs(f"outages[{i}].step", outage.step)
    for field in ("answer_minutes", "teach_minutes", "resume_minutes"):
        span(f"person.{field}", getattr(profile.person, field))
