"""The ``onward`` commands: each takes the parsed arguments and returns the exit status.

The read commands fold the log with :class:`onward.projections.CatchUp` and never append: opening an
:class:`~onward.Engine` would record a ``SessionResumed``, so they do not. A log that does not
exist is reported (:class:`onward.events.LogNotFound`), never created. A damaged stream does
not stop them: its task or session is listed as "damaged", with why.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import msgspec

from onward.cli.audit import decision_lines, explain
from onward.cli.reports import (
    DiagramReport,
    ReplayReport,
    SessionsReport,
    ShowReport,
    TasksReport,
    count_states,
    emit_json,
    moment,
    queue_rows,
    session_rows,
    task_row,
)
from onward.cli.table import by_state, iso, printable, queue_table, sessions_table, tasks_table
from onward.cli.timeline import event_rows, find_task, timeline_table, view_lines
from onward.core.machines import diagram
from onward.events import (
    CorruptRecord,
    EventLog,
    HeadCheck,
    LogDamaged,
    OnwardError,
    Problem,
    ProblemKind,
    Recorded,
    UsageError,
    VerifyReport,
    open_log,
)
from onward.events.sqlite import SQLiteLog
from onward.events.sqlite_file import file_head
from onward.projections import CatchUp, inbox_stream, task_stream, verify_log

__all__ = [
    "advise_on_damage",
    "check_output",
    "cmd_diagram",
    "cmd_replay",
    "cmd_sessions",
    "cmd_show",
    "cmd_tasks",
    "cmd_verify",
    "cmd_why",
    "damage_advice",
    "damage_told",
    "fold",
    "open_existing",
    "open_output",
    "replacing_output",
    "tell_damage",
]


def open_existing(db: str) -> EventLog:
    """Open the log at ``db`` (a file path or a log URL) without creating it.

    Raises:
        LogNotFound: no log there (no file; no tables in the PostgreSQL database).
        NotALog: something else is there (a directory, an empty or text file, another
            SQLite database).
        LogDamaged: a truncated or malformed SQLite file.
        BackendError: the log cannot be read.
    """
    url = db  # a bare path is a file path, as it is (no URL decoding)
    if url.lower().startswith("memory:"):
        return open_log(url)  # new and empty on every open: there is nothing to create
    return open_log(url, create=False)


def damage_told(log: EventLog, db: str, damage: LogDamaged) -> LogDamaged:
    """What a command that met a damaged database says, in one line: what failed, what to do
    (:func:`damage_advice`), and that ``onward verify`` says more.

    Args:
        log: the open log the command read.
        db: the log as the user named it (``--db``), for the commands to type.
        damage: what the read raised.

    Returns:
        The error to raise in its place (``from damage``).
    """
    told = str(damage).replace("\n", " ")
    return LogDamaged(f"{told}; {damage_advice(log)}; {_verify_says_more(db)}")


def damage_advice(log: EventLog) -> str:
    """What to do about a damaged database, from whether its records themselves still read
    whole in log order: where they do, the damage lies in an index, which SQLite's REINDEX, or
    a dump of the records into a new file, rebuilds from them; where they do not, the log's
    backup is the way back. Reading the records again costs a pass over the log, on a path
    that has failed already.

    Args:
        log: the open log that was read.

    Returns:
        The advice, in one line.
    """
    try:
        for _record in log.read():
            pass
    except LogDamaged as exc:
        where = f" (at position {exc.position})" if isinstance(exc, CorruptRecord) else ""
        return f"its records themselves cannot all be read{where}: {_RESTORE}"
    if not isinstance(log, SQLiteLog):
        return "its records read whole in log order"
    # REINDEX rebuilds an index whose pages read but disagree with the records; one whose
    # pages are malformed fails it too (freeing them), and a dump of the records, which reads
    # the table alone, into a new file rebuilds the index there.
    path = shlex.quote(log.path)
    return (
        "its records read whole in log order, so the damage is in an index of them: "
        f"with no worker running and the file backed up, `sqlite3 {path} REINDEX` rebuilds it "
        f"from the records, or where that too says malformed, `sqlite3 {path} .dump | sqlite3 "
        "NEW.db` copies them into a new file to put in its place"
    )


#: What to do when the records themselves are lost.
_RESTORE = "restore the log from its backup"


def advise_on_damage(db: str) -> str | None:
    """What to do about the damaged database at ``db`` (:func:`damage_advice`), opened again
    to see whether its records still read whole; the backup where it no longer opens as a log
    (its header or its schema is damaged, the file is cut short).

    Args:
        db: the log as the user named it (``--db``).

    Returns:
        The advice in one line; None where the log cannot be opened for another reason (it is
        gone, an outage), which says nothing of the damage.
    """
    try:
        with open_existing(db) as log:
            return damage_advice(log)
    except LogDamaged:  # the file itself: not one record of it can be read
        return f"it does not open as a log: {_RESTORE}"
    except OnwardError:
        return None


def tell_damage(db: str, damage: LogDamaged) -> LogDamaged:
    """What any command that met a damaged database says, in one line: what failed, what to
    do (:func:`advise_on_damage`: the log at ``db`` is opened again to see whether its records
    still read whole), and that ``onward verify`` says more.

    Args:
        db: the log as the user named it (``--db``).
        damage: what the command raised.

    Returns:
        The error to say in its place.
    """
    told = str(damage).replace("\n", " ")
    advice = advise_on_damage(db)
    advised = f"; {advice}" if advice else ""
    return LogDamaged(f"{told}{advised}; {_verify_says_more(db)}")


def _verify_says_more(db: str) -> str:
    return f"`onward verify --db {shlex.quote(db)}` says more"


def open_output(path: str, *, binary: bool = False) -> IO[Any]:
    """The file a command writes to (created or emptied).

    Raises:
        UsageError: it cannot be written (no such directory, a directory, no permission),
            saying why.
    """
    try:
        if binary:
            return open(path, "wb")
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def replacing_output(path: str) -> Iterator[IO[bytes]]:
    """A new file beside ``path`` that is renamed over it when the block ends without an
    error, and removed when it raises: a failed export or report leaves what was at ``path``.

    The new file is created 0600 (an export holds what the log holds, which onward creates
    0600); one that replaces a file takes that file's mode. A path that is not a regular file
    (``/dev/stdout``, a pipe) is written in place.

    Raises:
        UsageError: ``path`` cannot be written (no such directory, a directory, no
            permission), saying why.
    """
    if not path:
        raise UsageError("the output file has no name (-o '')")
    target = os.path.realpath(path)
    try:
        # The path as given: /dev/stdout on a pipe resolves to a name no file has.
        found: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise UsageError(f"cannot write {path}: Is a directory")
    if found is not None and _is_standard_output(found):
        # The standard output (-o /dev/stdout) even where it is a file (> FILE, >> FILE):
        # written as it is open, not replaced, so that what it held is kept as it appends.
        sys.stdout.flush()
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if found is not None and not stat.S_ISREG(found.st_mode):
        with open_output(path, binary=True) as out:
            yield out
        return
    directory, name = os.path.split(target)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())  # the file's bytes on disk before its name moves onto them
        if found is not None:
            os.chmod(temporary, stat.S_IMODE(found.st_mode))
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _is_standard_output(found: os.stat_result) -> bool:
    """Whether a file, as ``os.stat`` found it, is the one the standard output writes to."""
    try:
        return os.path.samestat(found, os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):  # a standard output that is no file (captured, closed)
        return False


#: The first 16 bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_output(path: str, log: EventLog) -> None:
    """Refuse a command's output file (``-o``) that would overwrite an event log: the log the
    command reads, one of its ``-wal``, ``-shm`` or ``-journal`` files, or any file that holds
    an SQLite database (another log, most likely). Its records would be lost for good.

    Args:
        path: the output file, as given.
        log: the log the command reads.

    Raises:
        UsageError: ``path`` is one of those, saying which.
    """
    if isinstance(log, SQLiteLog):
        for suffix in ("", "-wal", "-shm", "-journal"):
            if _same_file(path, log.path + suffix):
                what = f"the {suffix[1:]} file of the log" if suffix else "the log"
                raise UsageError(
                    f"refusing to write over {path}: it is {what} at --db "
                    f"({log.path}{suffix}); choose another output file"
                )
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return  # /dev/stdout, a pipe: nothing there to lose (and nothing to read)
        head = file_head(path, len(_SQLITE_HEADER), info)  # None: a log this process has open
    except OSError:
        return  # missing or unreadable: writing it says why
    if head is None or head == _SQLITE_HEADER:
        raise UsageError(
            f"refusing to write over {path}: it holds an SQLite database (an onward log?); "
            "choose another output file, or remove that one first"
        )


def _same_file(path: str, other: str) -> bool:
    """Whether two paths name the same file (by inode when both exist, else by real path)."""
    try:
        return os.path.samefile(path, other)
    except OSError:
        return os.path.realpath(path) == os.path.realpath(other)


def fold(log: EventLog, *, upto: int | None = None, use_checkpoint: bool = True) -> CatchUp:
    """Fold the log (up to ``upto``) into the projections, saving no checkpoint.

    A damaged stream (a record that fails its checksum, or a history its lifecycle does not
    allow) is marked so in the projections (``projections.damaged``), not raised.
    """
    host = CatchUp(log, upto=upto, checkpoint_every=0)
    host.open(use_checkpoint=use_checkpoint)
    return host


def cmd_sessions(args: argparse.Namespace) -> int:
    """List the sessions: state, start, openings and their tasks by state."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        rows = session_rows(projections)
        if args.json:
            emit_json(SessionsReport(log=log.url, position=projections.position, sessions=rows))
        elif not rows:
            print(f"no sessions in {log.url}")
        else:
            print(sessions_table(rows))
            for row in rows:
                if row.damage:
                    print(f"\nsession {printable(row.name)} is damaged: {printable(row.damage)}")
                    print("it cannot be opened; `onward verify` says what is wrong")
    return 0


# The states of a task that this onward would resume but for the events of a newer onward it
# holds: one that has ended, or is damaged, is shown as it is.
_HELD_BACK = frozenset({"queued", "running", "waiting"})


def cmd_tasks(args: argparse.Namespace) -> int:
    """List the tasks in submission order (queued ones in queue order with ``--state queued``)."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        tasks = projections.tasks
        if args.state == "queued":
            # The queue in its order, then the queued tasks a newer onward wrote to, which
            # this one leaves out of the queue (it does not resume them) but lists as queued.
            views = list(tasks.queued(args.session))
            views += sorted(
                (
                    v
                    for v in tasks.tasks.values()
                    if v.unknown_events
                    and v.state == "queued"
                    and (args.session is None or v.session == args.session)
                ),
                key=lambda v: v.order,
            )
        else:
            views = sorted(
                (
                    v
                    for v in tasks.tasks.values()
                    if (args.session is None or v.session == args.session)
                    and (args.state is None or v.state == args.state)
                ),
                key=lambda v: v.order,
            )
        rows = [task_row(v) for v in views]
        if args.json:
            emit_json(TasksReport(log=log.url, position=projections.position, tasks=rows))
        elif not rows:
            filtered = args.session is not None or args.state is not None
            print(f"no tasks in {log.url}" + (" that match" if filtered else ""))
        else:
            print(tasks_table(rows))
            damaged = [r for r in rows if r.state == "damaged"]
            if damaged:
                print(f"\n{len(damaged)} damaged task(s), never run until set aside:")
                for row in damaged:
                    print(f"  {row.task_id}: {printable(row.damage)}")
                print("`onward quarantine TASK` sets one aside; `onward verify` says more")
            newer = [
                r
                for r, v in zip(rows, views, strict=True)
                if v.unknown_events and v.state in _HELD_BACK
            ]
            if newer:
                print(
                    f"\n{len(newer)} task(s) hold events of types this onward does not know (a "
                    "newer onward wrote them): it does not resume them"
                )
                for row in newer:
                    print(f"  {row.task_id}: {row.unknown_events} event(s)")
                print(
                    "`onward show TASK` reads them; run the newer onward, or `onward quarantine "
                    "TASK` sets one aside"
                )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a task's timeline (every event of its stream), the messages sent to it (its
    inbox, read or not) and its view."""
    with open_existing(args.db) as log:
        projections = fold(log).projections
        view = find_task(projections, args.task, log.url)
        damage = view.damage
        try:
            # A damaged stream is still shown: its records unchecked, the damage said first.
            history = log.read_stream(task_stream(view.task_id), verify=not damage)
        except CorruptRecord as exc:
            damage = damage or str(exc)
            try:
                history = log.read_stream(task_stream(view.task_id), verify=False)
            except CorruptRecord:
                history = []  # a record does not even decode: the view is all there is
        messages, inbox_damage = _inbox(log, view.task_id)
        if args.json:
            emit_json(
                ShowReport(
                    log=log.url,
                    task=task_row(view),
                    view=msgspec.structs.asdict(view),
                    events=event_rows(history),
                    damage=damage,
                    messages=event_rows(messages),
                    inbox_damage=inbox_damage,
                )
            )
            return 0
        print(f"task {view.task_id}  {printable(view.name)}  ({view.state})  in {log.url}")
        if damage:
            print(f"DAMAGED: its history cannot be trusted: {printable(damage)}")
            print("(its events below are as stored, unchecked)" if history else "")
        print()
        print(timeline_table(history))
        print()
        if messages or inbox_damage:
            print(f"messages sent to it ({len(messages)}; read as it calls recv()):")
            if inbox_damage:
                print(f"DAMAGED inbox, shown unchecked: {printable(inbox_damage)}")
            print(timeline_table(messages))
            print()
        for line in view_lines(view):
            print(line)
    return 0


def _inbox(log: EventLog, task_id: str) -> tuple[list[Recorded], str]:
    """The messages sent to a task, and why its inbox cannot be trusted (its records are
    then read unchecked; none where one does not even decode)."""
    stream = inbox_stream(task_id)
    try:
        return list(log.read_stream(stream)), ""
    except CorruptRecord as exc:
        try:
            return list(log.read_stream(stream, verify=False)), str(exc)
        except CorruptRecord:
            return [], str(exc)


def cmd_replay(args: argparse.Namespace) -> int:
    """Fold the log up to a position and print every task and the queue as they were then."""
    if not 0 <= args.to <= 2**63 - 1:
        raise UsageError(f"--to must be a position from 0 to 2**63 - 1, got {args.to}")
    with open_existing(args.db) as log:
        head = log.head()
        host = fold(log, upto=args.to, use_checkpoint=not args.no_checkpoint)
        projections = host.projections
        position = projections.position
        when = moment(projections.time) if position else None
        if position and not projections.time:
            # A checkpoint with no tail after it: the checkpoint does not keep the time.
            for r in log.read(after=position - 1, upto=position):
                when = moment(r.meta.time)
        views = sorted(projections.tasks.tasks.values(), key=lambda v: v.order)
        report = ReplayReport(
            log=log.url,
            requested=args.to,
            position=position,
            head=head,
            time=when,
            checkpoint=host.loaded_checkpoint,
            counts=count_states(views),
            queue=queue_rows(projections),
            tasks=[task_row(v) for v in views],
            sessions=session_rows(projections),
        )
    if args.json:
        emit_json(report)
        return 0
    at = f" ({iso(when.timestamp(), 'milliseconds')})" if when else ""
    print(f"{report.log} replayed to position {position}{at}; the log's head is {head}")
    if report.checkpoint is not None:
        print(f"(from the checkpoint at {report.checkpoint}, then the tail)")
    print()
    if report.sessions:
        print("sessions:")
        print(sessions_table(report.sessions, indent="  "))
        print()
    print(f"tasks by state: {by_state(report.counts)}")
    print()
    print(f"queue ({len(report.queue)}, first runs next):")
    if report.queue:
        print(queue_table(report.queue, indent="  "))
    print()
    print(f"tasks ({len(report.tasks)}):")
    if report.tasks:
        print(tasks_table(report.tasks, indent="  "))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every checksum, hash chain and the head record, and replay every lifecycle; exit 1
    on damage."""
    try:
        with open_existing(args.db) as log:
            report = verify_log(log)
    except LogDamaged as exc:  # the database itself: not one record of it can be read
        damaged = printable(str(exc))
        # What to do, as every other command says it of the same damage.
        advice = printable(advise_on_damage(args.db) or "")
        if args.json:  # the report's shape, as on a log that reads
            unread = VerifyReport(
                ok=False,
                events=0,
                streams=0,
                head=0,
                problems=[
                    Problem(
                        kind=ProblemKind.STORAGE, stream="", version=0, position=0, detail=damaged
                    )
                ],
                torn_tail=False,
                head_record=HeadCheck(status="not checked", detail="the database cannot be read"),
            )
            emit_json({**msgspec.to_builtins(unread), "damaged": damaged, "advice": advice})
        else:
            print(f"DAMAGED: {damaged}; {advice}" if advice else f"DAMAGED: {damaged}")
        return 1
    if args.json:
        emit_json(report)
        return 0 if report.ok else 1
    head = report.head_record
    if report.ok:
        print(f"ok: {report.events} events in {report.streams} streams, head {report.head}")
    else:
        count = len(report.problems)
        print(f"DAMAGED: {count} problem{'s' if count != 1 else ''}: {'; '.join(report.where())}")
        for problem in report.problems:
            print(f"  {printable(str(problem))}")
    detail = f" ({printable(head.detail)})" if head.detail else ""
    print(f"head record: {head.status}{detail}")
    if report.unknown_types:
        kinds = ", ".join(printable(t) for t in report.unknown_types)
        print(
            f"note: event types this onward does not know (a newer onward wrote them): {kinds};"
            " their records are kept and shown, not folded, and a task holding one is not resumed"
        )
    if report.damaged_streams:
        print(f"damaged streams ({len(report.damaged_streams)}):")
        for damage in report.damaged_streams:
            quarantined = " [quarantined]" if damage.stream in report.quarantined else ""
            print(f"  {printable(damage.stream)}{quarantined}: {printable(str(damage))}")
    return 0 if report.ok else 1


def cmd_why(args: argparse.Namespace) -> int:
    """Explain decisions: each one whole, with its chain of causes back through the log."""
    with open_existing(args.db) as log:
        report = explain(log, args.id)
    if args.json:
        emit_json(report)
        return 0
    print(
        f"{len(report.decisions)} decision(s) for {report.matched} {report.target} in {report.log}"
    )
    if report.damage:
        print(f"note: {printable(report.damage)}")
    for row in report.decisions:
        print()
        print("\n".join(decision_lines(row)))
    return 0


def cmd_diagram(args: argparse.Namespace) -> int:
    """Print a lifecycle as a Mermaid state diagram."""
    text = diagram(args.lifecycle)
    if args.json:
        emit_json(DiagramReport(lifecycle=args.lifecycle, mermaid=text))
    else:
        print(text)
    return 0
