"""Fixes: small objects that change a failed step's call so that running it again can succeed.

A :class:`Fix` says which errors it matches and, for one of them, what to change before the step
runs again: its arguments, its environment (a directory it creates), or the code it was given. It
answers with a :class:`Remedy`: the :class:`StepCall` to run next, a JSON-able description of the
change (recorded in ``FixAttempted``) and how long to wait first. The engine runs the step again;
that run is the fix's validation, recorded as a success or a failure of that fix for that error
signature. Those records fold into :class:`FixStats`, which :meth:`FixRegistry.candidates` reads
to order, and to drop, the fixes it offers.

Selection, for one error with signature ``S``:

1. Fixes learned for ``S`` (``engine.learn(S, fix)``: a person said it works) come first, even
   when their ``matches()`` says no.
2. Then every other registered fix whose ``matches()`` says yes.
3. Within each group, by success rate for ``S`` (:attr:`FixStats.rate`, an unknown fix counts
   0.5), highest first; ties keep registration order.
4. A fix demoted for ``S`` (:attr:`FixStats.demoted`: at least :data:`DEMOTE_AFTER` attempts and a
   rate below :data:`DEMOTE_BELOW`) is dropped, learned or not: the record outweighs the lesson.

A fix may declare ``error_types``, the exception classes one of which must be in the error's chain
(the error, then its ``__cause__`` or else its ``__context__``, each link once) for its
``matches()`` to say yes. The registry then asks it only about such errors: it keeps, for each
chain of types it meets, the fixes worth asking, so that an error is not shown to every fix. A
fix without ``error_types`` is asked about every error.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from onward.core.fields import shown, whole
from onward.events import UsageError, redacted_logger

__all__ = [
    "DEMOTE_AFTER",
    "DEMOTE_BELOW",
    "Fix",
    "FixRegistry",
    "FixStats",
    "Remedy",
    "StepCall",
    "UnknownFix",
]

logger = redacted_logger("onward.engine.fixes")

DEMOTE_AFTER = 3
"""A fix is judged on its record for a signature only after this many attempts."""

DEMOTE_BELOW = 0.25
"""A judged fix whose success rate for a signature falls below this is no longer offered for it."""


class StepCall(msgspec.Struct, frozen=True, kw_only=True):
    """A step's call, as a fix sees it and changes it.

    Attributes:
        step: the step's registered name.
        arguments: the step's bound arguments by parameter name, defaults applied, in parameter
            order; the engine calls the function again with them.
        hints: what the step declared for fixes with ``@engine.step(hints={...})``: the parameter
            that plays a role (``{"batch_size": "size"}``, ``{"timeout": "seconds"}``, ``"text"``,
            ``"code"``, ``"config"``, ``"output"``, ``"encoding"``, ``"errors"``,
            ``"module_param"``) or a value a fix may use (``"fallback_dir"``, ``"timeout_cap"``,
            ``"alternatives"``, ``"defaults"``).
        attempt: which run of the step failed, 1 for the first.
    """

    step: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    hints: dict[str, Any] = msgspec.field(default_factory=dict)
    attempt: int = 1

    def with_arguments(self, **changes: Any) -> StepCall:
        """The same call with some arguments replaced (the others, and their order, kept).

        Returns:
            A new call; this one is unchanged.

        Raises:
            UsageError: a name that is not one of the step's parameters.
        """
        if not changes.keys() <= self.arguments.keys():  # a set comparison of the views
            unknown = sorted(set(changes) - set(self.arguments))
            known = ", ".join(self.arguments) or "none"
            raise UsageError(
                f"step {self.step!r} has no parameter {', '.join(map(repr, unknown))} "
                f"(its parameters: {known})"
            )
        return msgspec.structs.replace(self, arguments={**self.arguments, **changes})


class Remedy(msgspec.Struct, frozen=True, kw_only=True):
    """What a fix changed, and the call to run next.

    Attributes:
        call: the call the engine runs next.
        change: a JSON-able description of the change, recorded in ``FixAttempted``, e.g.
            ``{"encoding": ["utf-8", "cp1252"]}`` (before, after).
        delay: seconds to wait before running again (a locked database, a dropped connection);
            the engine waits durably: a wait a crash cut short is finished after the restart,
            and then the remedied call is made (the fix is asked again for it, see
            :meth:`Fix.apply`).
    """

    call: StepCall
    change: dict[str, Any] = msgspec.field(default_factory=dict)
    delay: float = 0.0


@runtime_checkable
class Fix(Protocol):
    """A remedy for a kind of error: plug your own in with :meth:`FixRegistry.register`.

    ``name`` is stable: events record it and ``onward learn SIGNATURE FIX`` names it. Changes to
    the environment (creating a directory) happen inside :meth:`apply` and are described in the
    remedy's ``change``.

    Optionally, a fix declares ``error_types``: a tuple of the exception classes one of which
    must be along the error's chain for :meth:`matches` to say yes (``error_types =
    (KeyError,)``). The registry then asks it only about such errors; without it, about all.
    """

    @property
    def name(self) -> str:
        """The fix's stable name, in kebab-case (``create-missing-parent-directory``)."""
        ...

    def matches(self, error: BaseException, call: StepCall) -> bool:
        """Whether this fix is meant for this error in this call (cheap, no side effects)."""
        ...

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        """Change what is needed and return the call to run next.

        A remedy that changes the call and waits first is asked for again when the process died
        during its wait (the changed call is not in the log): with the error rebuilt from its
        type and message, and the step's own call. Its answer counts when its ``change`` is the
        one recorded; otherwise the step's own call is made again.

        Returns:
            The remedy, or None when this error cannot be fixed this way after all.
        """
        ...


# what a fix may declare as its ``error_types`` (see the module docstring)
_ErrorTypes = tuple[type[BaseException], ...]

#: How many chains of exception types a registry remembers the fixes to ask of.
_MAX_KINDS = 256


def _kinds(error: BaseException) -> _ErrorTypes:
    """The types along an error's chain, as a fix searching it meets them (``isinstance`` also
    believes a link's ``__class__``: both count)."""
    if error.__cause__ is None and error.__context__ is None:
        # most errors: a chain of one, of a class that claims no other (_link_kinds inlined)
        kind = type(error)
        try:
            claimed = error.__class__
        except Exception:
            return (kind,)
        return (kind,) if claimed is kind or not isinstance(claimed, type) else (kind, claimed)
    kinds = _link_kinds(error)
    seen = {id(error)}
    current = error.__cause__ or error.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kinds += _link_kinds(current)
        current = current.__cause__ or current.__context__
    return kinds


def _link_kinds(link: BaseException) -> _ErrorTypes:
    """The link's type, and the class it claims to be (``__class__``) when another one."""
    kind = type(link)
    try:
        claimed = link.__class__
    except Exception:  # a broken property: isinstance() in matches() would raise, a "no"
        return (kind,)
    if claimed is kind or not isinstance(claimed, type):
        return (kind,)
    return (kind, claimed)


def _error_types(fix: Fix) -> _ErrorTypes | None:
    """A fix's declared ``error_types``, None when it declares none.

    Raises:
        UsageError: it declares something else than a tuple of exception classes.
    """
    declared = getattr(fix, "error_types", None)
    if declared is None:
        return None
    if not isinstance(declared, tuple) or not all(
        isinstance(kind, type) and issubclass(kind, BaseException) for kind in declared
    ):
        raise UsageError(
            f"fix {fix.name!r} declares error_types={declared!r}: it must be a tuple of "
            "exception classes"
        )
    return declared


class FixStats(msgspec.Struct, frozen=True):
    """How a fix has fared for one error signature.

    Attributes:
        attempts: how many times it was applied and the step run again.
        successes: how many of those runs succeeded (failures = attempts - successes).
    """

    attempts: int = 0
    successes: int = 0

    def __post_init__(self) -> None:
        if not (whole(self.attempts) and whole(self.successes)):
            raise UsageError(
                f"fix stats count attempts and successes in ints, got {shown(self.attempts)} "
                f"and {shown(self.successes)}"
            )
        if not 0 <= self.successes <= self.attempts:
            raise UsageError(
                f"fix stats need 0 <= successes <= attempts, got {self.successes} successes "
                f"in {self.attempts} attempts"
            )

    @property
    def failures(self) -> int:
        """Attempts that did not succeed."""
        return self.attempts - self.successes

    @property
    def rate(self) -> float:
        """The success rate, Laplace-smoothed: ``(successes + 1) / (attempts + 2)``.

        An untried fix rates 0.5; one success in one attempt rates 0.67, not 1.
        """
        return (self.successes + 1) / (self.attempts + 2)

    @property
    def demoted(self) -> bool:
        """Whether the record is long and bad enough to stop offering the fix: at least
        :data:`DEMOTE_AFTER` attempts and a rate below :data:`DEMOTE_BELOW` (three failures in a
        row are enough; one success in six attempts is not)."""
        return self.attempts >= DEMOTE_AFTER and self.rate < DEMOTE_BELOW


_UNTRIED = FixStats()
_FIX = operator.itemgetter(2)  # of a (-rate, order, fix) entry
_UNTRIED_RATE = _UNTRIED.rate


class UnknownFix(UsageError, LookupError):
    """No fix is registered under this name.

    Attributes:
        name: the name asked for.
        known: the registered names.
    """

    def __init__(self, name: str, known: Collection[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"no fix is registered as {name!r} (registered: {listed})")
        self.name = name
        self.known = tuple(known)


class FixRegistry:
    """The fixes an engine knows, by name, in registration order, and the choice among them.

    Args:
        fixes: fixes to register at once, in order.

    Raises:
        UsageError: as :meth:`register`.
    """

    def __init__(self, fixes: Iterable[Fix] = ()) -> None:
        if isinstance(fixes, str | bytes) or not isinstance(fixes, Iterable):
            raise UsageError(f"FixRegistry takes an iterable of fixes, got {type(fixes).__name__}")
        self._fixes: dict[str, Fix] = {}
        # (registration order, name, fix, its declared error types) of each fix
        self._entries: list[tuple[int, str, Fix, _ErrorTypes | None]] = []
        # for a chain of types: the (order, name, fix) of the fixes worth asking, in order
        self._asked: dict[_ErrorTypes, tuple[tuple[int, str, Fix], ...]] = {}
        for fix in fixes:
            self.register(fix)

    def register(self, fix: Fix) -> None:
        """Add a fix; it ranks after those registered before it when their rates tie.

        Raises:
            UsageError: it is not a fix (no ``name``, ``matches`` or ``apply``), its name is
                empty or has spaces, a fix is already registered under that name, or its
                ``error_types`` is not a tuple of exception classes.
        """
        if not isinstance(fix, Fix):
            raise UsageError(f"{fix!r} is not a fix: it needs name, matches() and apply()")
        name = fix.name
        if not isinstance(name, str) or not name or name != "".join(name.split()):
            raise UsageError(f"fix {fix!r} needs a name without spaces, got {name!r}")
        if name in self._fixes:
            raise UsageError(f"a fix is already registered as {name!r}")
        declared = _error_types(fix)
        self._fixes[name] = fix
        self._entries.append((len(self._entries), name, fix, declared))
        self._asked.clear()

    def get(self, name: str) -> Fix:
        """The fix registered under ``name``.

        Raises:
            UnknownFix: no fix has that name (the message lists those that do).
        """
        try:
            return self._fixes[name]
        except KeyError:
            raise UnknownFix(name, self._fixes) from None

    @property
    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._fixes)

    def __contains__(self, name: object) -> bool:
        return name in self._fixes

    def __iter__(self) -> Iterator[Fix]:
        return iter(self._fixes.values())

    def __len__(self) -> int:
        return len(self._fixes)

    def candidates(
        self,
        error: BaseException,
        call: StepCall,
        *,
        signature: str,
        stats: Mapping[str, FixStats],
        learned: Collection[str],
    ) -> list[Fix]:
        """The fixes to try for this error, best first (the rule is in the module docstring).

        Args:
            error: the exception the step raised.
            call: the failed call.
            signature: the error's signature id; ``stats`` and ``learned`` are for it.
            stats: each fix's record for this signature, by fix name (absent: untried).
            learned: the names of fixes learned for this signature; names no longer registered
                are skipped.

        Returns:
            Learned fixes, then matching ones, each group by rate; demoted fixes left out.
        """
        first: list[tuple[float, int, Fix]] = []
        if learned:
            for order, name, fix, _ in self._entries:
                if name in learned:
                    record = stats.get(name, _UNTRIED)
                    if record.demoted:
                        self._log_demoted(name, signature, record)
                    else:
                        first.append((-record.rate, order, fix))
        then: list[tuple[float, int, Fix]] = []
        kinds = _kinds(error)
        asked = self._asked.get(kinds)  # the usual case inlined: a chain of types met before
        if asked is None:
            asked = self._worth_asking(kinds)
        for order, name, fix in asked:
            if learned and name in learned:
                continue
            record = stats.get(name, _UNTRIED)
            if record is _UNTRIED:
                rate = _UNTRIED_RATE  # most fixes, for most errors: no record to judge
            else:
                rate = record.rate
                # demoted needs a rate below DEMOTE_BELOW: a record that works is not asked
                if rate < DEMOTE_BELOW and record.demoted:
                    self._log_demoted(name, signature, record)
                    continue
            try:  # inline: every decision asks each fix worth asking
                if fix.matches(error, call):
                    then.append((-rate, order, fix))
            except Exception:
                self._log_broken(fix)
        # (-rate, order, fix): the orders differ, so a sort never compares two fixes
        if first:
            first.sort()
            if then:
                then.sort()
                first += then
            return list(map(_FIX, first))
        if len(then) > 1:
            then.sort()
        return list(map(_FIX, then))  # no comprehension: it would be one more call

    def _worth_asking(self, kinds: _ErrorTypes) -> tuple[tuple[int, str, Fix], ...]:
        """The fixes whose ``matches()`` may say yes to an error with this chain of types."""
        asked = self._asked.get(kinds)
        if asked is None:
            asked = tuple(
                (order, name, fix)
                for order, name, fix, declared in self._entries
                if declared is None or any(issubclass(kind, declared) for kind in kinds)
            )
            if len(self._asked) >= _MAX_KINDS:
                self._asked.clear()
            self._asked[kinds] = asked
        return asked

    @staticmethod
    def _log_demoted(name: str, signature: str, record: FixStats) -> None:
        logger.debug(
            "fix %s is demoted for %s (%d/%d succeeded)",
            name,
            signature,
            record.successes,
            record.attempts,
        )

    @staticmethod
    def _log_broken(fix: Fix) -> None:
        # A broken matches() in a plug-in must not turn one failure into a crash of the engine's
        # error handling: it counts as "no", and says so in the log.
        logger.warning("fix %s: matches() raised; skipped", fix.name, exc_info=True)
