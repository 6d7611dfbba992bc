"""Reading the log for a fold: check every record, decode what the projections read, skip the
rest.

Every record read from the storage is checked as ``onward verify`` and every other reader check
it (unless the log was opened with ``verify_reads=False``): each page is read with its tag
column and goes through :func:`~onward.events.integrity.check_rows`, so that a record whose tag
column was rewritten fails here as it fails ``verify`` and a resume; each blob a record
references is checked against its digest. While nobody else commits to the storage, the records
the log committed itself since the last read are taken from it as it stored them
(:meth:`EventLog.own_rows`), not read back. Step outcomes are most of any log, and the
projections only count them: their results (which can be large) are skipped instead of decoded,
and a result stored as a blob is hashed but not joined; of every envelope, only the fields the
projections read (:class:`FoldMeta`). Every other event decodes as usual; a page with an old,
unknown, split or damaged record falls back to the log's own codec, record by record. A record
that fails its checksum, references a damaged blob or does not decode is never folded: the
reader hands the fold a :class:`~onward.events.integrity.StreamDamage` in its place, so that
the fold marks its stream damaged and goes on with the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Union

import msgspec

from onward.events import (
    CorruptRecord,
    EventLog,
    ProblemKind,
    Recorded,
    StepCompleted,
    StepFailed,
)
from onward.events.blobs import join_state, split_of
from onward.events.integrity import StreamDamage, check_rows
from onward.events.log import StoredRow

__all__ = ["FOLDED_STEP_OUTCOMES", "FoldMeta", "FoldReader", "Folded"]


class FoldMeta(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The envelope as a fold reads it: of :class:`~onward.events.Meta`, the fields the
    projections read (the event's id, time and session); the others (checksum, links,
    causes, actor) are skipped, not decoded. The records :meth:`FoldReader.pages` decodes
    itself carry it as their ``meta``; those it hands on from the log's own codec carry a
    ``Meta``. A fold reads only these three fields of any record's ``meta``."""

    event_id: str
    time: float
    session: str = ""


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


#: The fields the lean step outcomes read (a blob holding one of them must be joined).
_LEAN_FIELDS = frozenset({"type", *_Completed.__struct_fields__, *_Failed.__struct_fields__})

#: The types a fold may see for step outcomes: the lean ones of :class:`FoldReader`, or the
#: full events (from :meth:`onward.events.EventLog.read` or the fallback).
FOLDED_STEP_OUTCOMES: frozenset[type[Any]] = frozenset(
    {StepCompleted, StepFailed, _Completed, _Failed}
)


#: What :meth:`FoldReader.pages` yields: a page of records to fold, in position order, or
#: the damage of the one record that stands between two pages.
Folded = list[Recorded] | StreamDamage

_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, TypeError)

#: What a split record's state holds, and an unsplit one's (almost) never: a cheap test.
_SPLIT_MARK = b',"split":{"blobs":'


class FoldReader:
    """Pages of events for a fold, step results skipped, every record checked.

    Args:
        log: the log to read; its ``verify_reads`` says whether checksums are checked.
    """

    def __init__(self, log: EventLog) -> None:
        self.log = log
        lean: list[type[Any]] = [
            cls for cls in log.codec.types.values() if cls not in (StepCompleted, StepFailed)
        ]
        lean += [_Completed, _Failed]
        envelope = msgspec.defstruct(
            "_FoldEnvelope",
            [("meta", FoldMeta), ("event", Union[tuple(lean)])],  # noqa: UP007
            gc=False,
        )
        self._decode: Any = msgspec.json.Decoder(envelope).decode
        #: The blobs found intact during the current :meth:`pages` (each hashed once).
        self._intact_blobs: set[str] = set()
        #: :meth:`EventLog.changes_of_others` as the last :meth:`pages` began.
        self._changes: int | None = None

    def pages(
        self, *, after: int = 0, upto: int | None = None, page_size: int = 500
    ) -> Iterator[Folded]:
        """Pages of events after ``after`` (to ``upto``), in position order; in place of a
        record that fails its checksum or does not decode, or references a blob that is
        missing or fails its digest, its :class:`StreamDamage`.

        A page's rows, records and their events stay in the processor's caches while they
        are checked, decoded and folded when a page is a few hundred records: a replay with
        pages of 2,000 took about a third more CPU for the same instructions."""
        self._intact_blobs = set()
        # Nobody but this log has committed to the storage since the last read began (looked
        # at before this read: a commit during it shows next time): the records the log
        # committed itself after ``after`` (a task's steps since the last catch-up) are what
        # the storage holds there, and come from memory as it stored them, not read back nor
        # checked against the checksums made from these very bytes.
        changes, self._changes = self._changes, self.log.changes_of_others()
        if changes is not None and changes == self._changes:
            own = self.log.own_rows(after, upto)
            for at in range(0, len(own), page_size):
                yield from self._decoded(own[at : at + page_size])
            if own:
                after = own[-1][0]
        if not self.log.verify_reads:
            yield from self._unchecked(after, upto, page_size)
            return
        # Every page is read with its tag column and checked as ``verify`` and every other
        # reader check it: a record whose tag column was rewritten fails here too.
        for rows in self.log.read_rows(after=after, upto=upto, page_size=page_size):
            yield from self._checked(rows)

    def _checked(self, rows: Sequence[StoredRow]) -> Iterator[Folded]:
        """A page of rows with their tags, checked by the log's rules, then decoded."""
        bad = check_rows(rows)
        if bad:
            yield from self._one_by_one(rows, dict(bad))
        else:
            yield from self._decoded(rows)

    def _decoded(self, rows: Sequence[StoredRow]) -> Iterator[Folded]:
        """A page of rows found intact, decoded."""
        decode = self._decode
        try:
            yield [
                Recorded(s, v, p, (both := decode(st)).meta, both.event) for p, s, v, _t, st in rows
            ]
            return
        except _DECODE_ERRORS:
            pass  # an old, unknown or damaged record: one at a time
        yield from self._one_by_one(rows, {})

    def _unchecked(self, after: int, upto: int | None, page_size: int) -> Iterator[Folded]:
        """The pages of a log whose storage is trusted: without the tag column, which only the
        checksum needs."""
        decode = self._decode
        fallback = self._decode_state
        for rows in self.log.read_states(after=after, upto=upto, page_size=page_size):
            try:
                yield [
                    Recorded(s, v, p, (both := decode(st)).meta, both.event) for p, s, v, st in rows
                ]
                continue
            except _DECODE_ERRORS:
                pass  # an old, unknown or damaged record: one at a time
            good: list[Recorded] = []
            for p, s, v, st in rows:
                try:
                    good.append(fallback(p, s, v, st))
                except CorruptRecord as exc:
                    if good:
                        yield good
                        good = []
                    yield StreamDamage(
                        stream=str(s),
                        version=v,
                        position=p,
                        kind=_problem_kind(exc),
                        reason=exc.reason,
                    )
            if good:
                yield good

    def _decode_record(
        self, stream: str, version: int, position: int, topic: str, state: bytes
    ) -> Recorded:
        lean = self._lean_split(stream, version, position, state)
        if lean is not None:
            return lean
        return self.log.decode_record(stream, version, position, topic, state)

    def _decode_state(self, position: int, stream: str, version: int, state: bytes) -> Recorded:
        lean = self._lean_split(stream, version, position, state)
        if lean is not None:
            return lean
        return self.log.decode_state(position, stream, version, state)

    def _check_blobs(self, rows: Sequence[StoredRow]) -> None:
        """Read and check the blobs the page's split records reference, a few at a time, and
        remember the intact ones: reads for the page, not one a record. A missing or damaged
        blob is left for the record's own decoding, which reports it in its place."""
        if not self.log.verify_reads:
            return
        intact = self._intact_blobs
        wanted: list[str] = []
        for _p, _s, _v, _t, state in rows:
            if isinstance(state, bytes) and _SPLIT_MARK in state:
                split = split_of(state)
                if split is not None:
                    wanted += (digest for _name, digest in split[1] if digest not in intact)
        if wanted:
            intact.update(self.log.intact_blobs(wanted))

    def _lean_split(
        self, stream: str, version: int, position: int, state: bytes
    ) -> Recorded | None:
        """A split step outcome read without joining its blobs, when the fold reads none of
        the fields split off (its result): None for any other record.

        Its blobs are still checked against their digests (each once per :meth:`pages`), as
        every reader of the record checks them: a damaged one damages the record.

        Raises:
            CorruptRecord: a blob is missing or does not match its digest (``kind="blob"``).
        """
        split = split_of(state) if isinstance(state, bytes) else None
        if split is None:
            return None
        meta_json, refs, rest = split
        if any(name in _LEAN_FIELDS for name, _digest in refs):
            return None
        try:
            both = self._decode(join_state(meta_json, rest))
        except _DECODE_ERRORS:
            return None
        if type(both.event) not in (_Completed, _Failed):
            return None  # an event the fold reads whole: joined with its blobs
        intact = self._intact_blobs
        unchecked = [(name, digest) for name, digest in refs if digest not in intact]
        if unchecked and self.log.verify_reads:
            self.log.split_blobs(stream, version, position, unchecked)
            intact.update(digest for _name, digest in unchecked)
        return Recorded(stream, version, position, both.meta, both.event)

    def _one_by_one(self, rows: Sequence[StoredRow], bad: dict[int, str]) -> Iterator[Folded]:
        """The records of a page decoded by the log's codec, each damaged one in its place."""
        self._check_blobs(rows)
        decode = self._decode_record
        good: list[Recorded] = []
        for i, (p, s, v, t, st) in enumerate(rows):
            why = bad.get(i)
            kind = ProblemKind.CORRUPT
            if why is None:
                try:
                    good.append(decode(s, v, p, t, st))
                    continue
                except CorruptRecord as exc:
                    why, kind = exc.reason, _problem_kind(exc)
            if good:
                yield good
                good = []
            yield StreamDamage(stream=str(s), version=v, position=p, kind=kind, reason=why)
        if good:
            yield good


def _problem_kind(exc: CorruptRecord) -> ProblemKind:
    """What is wrong with a record, as :class:`ProblemKind` (a blob, or its own bytes)."""
    try:
        return ProblemKind(exc.kind)
    except ValueError:
        return ProblemKind.CORRUPT
