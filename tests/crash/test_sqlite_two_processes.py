"""Real processes on one SQLite file: concurrent writers, and a writer killed with SIGKILL.

The writers are the venv's Python running :data:`WRITER`. They are started together without
sleeping: each opens the log (or not, see ``open_first``), prints ``ready`` and waits for a line
on its stdin; the test sends ``go`` to both once both are ready. They meet the same way every
:data:`ROUND` appends, so that their appends keep interleaving instead of one writer finishing
before the other gets going.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from onward.events import TaskProgressed, open_log
from onward.events.sqlite_file import check_log_file

OWN_APPENDS = 300
SHARED_APPENDS = 100
OWN_STREAMS = 10
SHARED = "session-shared"
ROUND = 15  # own appends between two meeting points of the writers (as in WRITER)

WRITER = r"""
import json, sys
from onward.events import TaskProgressed, open_log

db, name, own, shared, streams, open_first = sys.argv[1:7]
own, shared, streams = int(own), int(shared), int(streams)
ROUND = 15

def start(word="ready"):
    print(word, flush=True)
    assert sys.stdin.readline().strip() == "go"

if open_first == "yes":
    log = open_log(f"sqlite:///{db}")
    start()
else:
    start()
    log = open_log(f"sqlite:///{db}")

written = []
shared_every = own // shared
for i in range(own):
    if i and i % ROUND == 0:
        start("round")  # both writers start each round together, so their appends interleave
    stream = f"{name}-{i % streams}"
    result = log.append(
        stream,
        [TaskProgressed(fraction=i / own, note=f"{name} own {i}")],
        expected_version=i // streams,
    )
    written.append([stream, result.versions[stream], result.positions[0], result.event_ids[0]])
    if i % shared_every == 0:
        n = i // shared_every
        result = log.append(
            "session-shared",
            [TaskProgressed(fraction=n / shared, note=f"{name} shared {n}")],
            expected_version=None,
        )
        written.append(
            ["session-shared", result.versions["session-shared"], result.positions[0],
             result.event_ids[0]]
        )
log.close()
print(json.dumps(written), flush=True)
"""

KILLED_WRITER = r"""
import sys
from onward.events import TaskProgressed, open_log

db = sys.argv[1]
log = open_log(f"sqlite:///{db}")
version = log.stream_version("task-victim")
while True:
    result = log.append(
        "task-victim",
        [TaskProgressed(fraction=0.5, note=f"v{version + 1}"), TaskProgressed(fraction=0.6)],
        expected_version=version,
    )
    version = result.versions["task-victim"]
    print(version, result.positions[-1], flush=True)
"""


def python(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_two_writers(db: Path, *, open_first: bool) -> list[list[list[Any]]]:
    """Start both writers together; return what each says it wrote."""
    names = ("alpha", "beta")
    procs = [
        python(
            "-c",
            WRITER,
            str(db),
            name,
            str(OWN_APPENDS),
            str(SHARED_APPENDS),
            str(OWN_STREAMS),
            "yes" if open_first else "no",
        )
        for name in names
    ]
    try:
        for word in ["ready"] + ["round"] * (OWN_APPENDS // ROUND - 1):
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line == f"{word}\n", line + (proc.stderr.read() if proc.stderr else "")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    written = []
    for proc, name, (stdout, stderr) in zip(procs, names, outputs, strict=True):
        assert "database is locked" not in stderr
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{stderr}"
        assert stderr == "", stderr
        written.append(json.loads(stdout))
    return written


def check_log(db: Path, written: list[list[list[Any]]]) -> None:
    with open_log(f"sqlite:///{db}") as log:
        everything = list(log.read())
        total = 2 * (OWN_APPENDS + SHARED_APPENDS)
        assert len(everything) == total
        assert log.head() == total

        positions = [r.position for r in everything]
        assert positions == sorted(positions)
        assert len(set(positions)) == total
        assert len({r.meta.event_id for r in everything}) == total

        by_position = {r.position: r for r in everything}
        for process in written:
            assert len(process) == OWN_APPENDS + SHARED_APPENDS
            for stream, version, position, event_id in process:
                recorded = by_position[position]
                assert (recorded.stream, recorded.version, recorded.meta.event_id) == (
                    stream,
                    version,
                    event_id,
                )

        for name in ("alpha", "beta"):
            for k in range(OWN_STREAMS):
                stream = log.read_stream(f"{name}-{k}")
                assert [r.version for r in stream] == list(range(1, OWN_APPENDS // OWN_STREAMS + 1))
                notes = [r.event.note for r in stream if isinstance(r.event, TaskProgressed)]
                assert notes == [
                    f"{name} own {i}" for i in range(OWN_APPENDS) if i % OWN_STREAMS == k
                ]

        shared = log.read_stream(SHARED)
        assert [r.version for r in shared] == list(range(1, 2 * SHARED_APPENDS + 1))
        notes = [r.event.note for r in shared if isinstance(r.event, TaskProgressed)]
        assert Counter(note.split()[0] for note in notes) == {
            "alpha": SHARED_APPENDS,
            "beta": SHARED_APPENDS,
        }
        for name in ("alpha", "beta"):
            mine = [note for note in notes if note.startswith(name)]
            assert mine == [f"{name} shared {n}" for n in range(SHARED_APPENDS)]
        for previous, current in itertools.pairwise(shared):
            assert current.meta.prev == previous.meta.checksum

        report = log.verify()
        assert report.ok, report.problems
        assert report.events == total
        assert report.streams == 2 * OWN_STREAMS + 1


def test_two_processes_append_to_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with open_log(f"sqlite:///{db}"):
        pass
    written = run_two_writers(db, open_first=True)
    check_log(db, written)


def test_two_processes_create_the_file_at_the_same_time(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    written = run_two_writers(db, open_first=False)
    check_log(db, written)
    assert (os.stat(db).st_mode & 0o777) == 0o600


@pytest.mark.parametrize("after", [1, 50, 200])
def test_a_writer_killed_mid_append_loses_no_committed_event(tmp_path: Path, after: int) -> None:
    db = tmp_path / "killed.db"
    with open_log(f"sqlite:///{db}") as log:
        log.append("task-victim", [TaskProgressed(fraction=0.0)], expected_version=0)
    proc = python("-c", KILLED_WRITER, str(db))
    committed: list[tuple[int, int]] = []
    try:
        assert proc.stdout is not None
        while len(committed) < after:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            version, position = map(int, line.split())
            committed.append((version, position))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    with open_log(f"sqlite:///{db}") as log:
        stream = log.read_stream("task-victim")
        versions = [r.version for r in stream]
        assert versions == list(range(1, len(versions) + 1))
        # Every append the writer saw committed is there; appends are all-or-nothing, so the
        # stream holds whole pairs after its first event.
        assert len(versions) >= committed[-1][0]
        assert len(versions) % 2 == 1
        positions = {r.version: r.position for r in stream}
        for version, position in committed:
            assert positions[version] == position
        report = log.verify()
        assert report.ok, report.problems
        # The log takes appends again at the version it has.
        log.append("task-victim", [TaskProgressed(fraction=1.0)], expected_version=len(versions))
        assert log.verify().ok


READER = r"""
import sys
from onward.events import TaskProgressed, open_log

with open_log(f"sqlite:///{sys.argv[1]}") as log:
    if sys.argv[2] == "append":
        log.append("task-other", [TaskProgressed(fraction=0.5)], expected_version=None)
    print(sorted(r.stream for r in log.read()))
"""


def other_process(db: Path, what: str) -> list[str]:
    """The streams another process reads from the log (after appending, with ``append``)."""
    done = subprocess.run(
        [sys.executable, "-c", READER, str(db), what],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return list(json.loads(done.stdout.replace("'", '"')))


@pytest.mark.parametrize("second", ["log", "checked"])
def test_opening_a_log_again_in_one_process_keeps_its_journal_for_the_others(
    tmp_path: Path, second: str
) -> None:
    # POSIX drops every lock a process holds on a file when it closes any descriptor of it:
    # a second open that read the file's first bytes by a descriptor of its own (to check it)
    # released the first connection's locks, so another process closing its connection took
    # itself for the last one and deleted the write-ahead journal still in use: this process's
    # later appends were unseen by the others, and theirs were lost when it closed.
    db = tmp_path / "twice.db"
    first = open_log(f"sqlite:///{db}")
    try:
        first.append("task-first", [TaskProgressed(fraction=0.1)], expected_version=0)
        if second == "log":
            open_log(f"sqlite:///{db}").close()
        else:
            assert check_log_file(str(db))
        assert other_process(db, "read") == ["task-first"]
        assert Path(f"{db}-wal").exists()  # the first connection still holds it open
        first.append("task-later", [TaskProgressed(fraction=0.2)], expected_version=0)
        assert other_process(db, "append") == ["task-first", "task-later", "task-other"]
    finally:
        first.close()
    with open_log(f"sqlite:///{db}") as log:
        assert sorted(r.stream for r in log.read()) == ["task-first", "task-later", "task-other"]
        assert log.verify().ok
