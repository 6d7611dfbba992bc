"""Reading the log for a fold: decode what the projections read, skip the rest.

Step outcomes are most of any log, and the projections only count them: their results (which
can be large) are skipped instead of decoded. Every other event decodes as usual; a page with
an old, unknown or damaged record falls back to the log's own codec, record by record.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Union

import msgspec

from onward.events import EventLog, Meta, Recorded, StepCompleted, StepFailed

__all__ = ["FOLDED_STEP_OUTCOMES", "FoldReader"]


class _StepOutcome(msgspec.Struct, frozen=True, tag_field="type"):
    """A step outcome as a fold reads it: which step and try, not its result."""

    index: int = 0
    attempt: int = 1
    dependency: str = ""


class _Completed(_StepOutcome, frozen=True, tag="StepCompleted"):
    """A ``StepCompleted`` read for a fold (no result)."""


class _Failed(_StepOutcome, frozen=True, tag="StepFailed"):
    """A ``StepFailed`` read for a fold (no message)."""

    error_type: str = ""
    signature: str = ""
    final: bool = True


#: The types a fold may see for step outcomes: the lean ones of :class:`FoldReader`, or the
#: full events (from :meth:`onward.events.EventLog.read` or the fallback).
FOLDED_STEP_OUTCOMES: frozenset[type[Any]] = frozenset(
    {StepCompleted, StepFailed, _Completed, _Failed}
)


class FoldReader:
    """Pages of events for a fold, step results skipped.

    Args:
        log: the log to read.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        lean: list[type[Any]] = [
            cls for cls in log.codec.types.values() if cls not in (StepCompleted, StepFailed)
        ]
        lean += [_Completed, _Failed]
        envelope = msgspec.defstruct(
            "_FoldEnvelope",
            [("meta", Meta), ("event", Union[tuple(lean)])],  # noqa: UP007
        )
        self._decode: Any = msgspec.json.Decoder(envelope).decode

    def pages(
        self, *, after: int = 0, upto: int | None = None, page_size: int = 2000
    ) -> Iterator[list[Recorded]]:
        """Pages of events after ``after`` (to ``upto``), in position order."""
        decode = self._decode
        fallback = self.log.codec.decode_state
        for rows in self.log.read_states(after=after, upto=upto, page_size=page_size):
            try:
                yield [
                    Recorded(s, v, p, (both := decode(st)).meta, both.event) for p, s, v, st in rows
                ]
            except (msgspec.DecodeError, UnicodeDecodeError, TypeError):
                yield [fallback(p, s, v, st) for p, s, v, st in rows]
