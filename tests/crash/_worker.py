"""The crash harness: a child program that kills itself at a storage boundary, and the checks.

The child (``python tests/crash/_worker.py PLAN.json``) runs one *case*: a list of phases on
one SQLite log and session. Each phase is a fresh process forked from the child (so Python
starts once per case) that opens the engine, submits the task (with an idempotency key, so a
resumed phase finds the same task), and runs it. A phase may name a storage boundary: the k-th
call of :meth:`onward.events.log.EventLog._insert` in that process, the one method every append goes
through. Just before or just after that call the phase SIGKILLs itself. The child waits for
each phase, notes how it ended, and starts the next, which resumes the session.

Every phase writes, each fsync'ed before it goes on:

- to the *commits* file, one JSON line per insert after it returned (the records it
  committed: stream, version, position, event id), and one line naming the records of the
  insert the phase dies at, before it is attempted;
- to the *side-effect* file (opened in append mode), one line ``task index pid key`` from
  inside each step, so the parent sees which step bodies ran, and in which process;
- to ``result-<phase>.json`` (the phases that ended on their own), what :meth:`Engine.result`
  and :meth:`Engine.run` said.

The parent (the tests) reads all of that, the log itself, and checks the promises with
:func:`check_aftermath`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SESSION = "crash"
TASK_KEY = "crash-task"
TASK_NAME = "crash.job"
STEP_NAME = "crash.work"
ONCE_NAME = "crash.work_once"
WORKER = Path(__file__)

#: Commits of an uninterrupted first run of a task of n plain steps: SessionStarted,
#: TaskSubmitted, TaskClaimed, n StepCompleted, DecisionMade + TaskSucceeded (one commit).
FIXED_COMMITS = 4


def step_value(index: int) -> str:
    """What step ``index`` returns (so the task's result depends on every step's result)."""
    return f"{index}:{(index * index + 7) % 101}"


def expected_result(steps: int) -> list[str]:
    """The result of an uninterrupted run of a task of ``steps`` steps."""
    return [step_value(i) for i in range(steps)]


# -- the child ---------------------------------------------------------------------------------


def _append_line(path: str, line: str) -> None:
    """Append one line with one write and fsync it (the parent reads it after a SIGKILL)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _instrument(plan: dict[str, Any], phase: int, kill_at: int | None, when: str) -> None:
    """Wrap ``EventLog._insert`` with a counter that records commits and may SIGKILL us."""
    import msgspec

    from onward.events.log import EventLog

    original = EventLog._insert
    commits = plan["commits"]
    pid = os.getpid()
    calls = 0

    def note(state: str, k: int, records: list[Any], positions: list[int] | None) -> None:
        rows = []
        for i, r in enumerate(records):
            row: dict[str, Any] = {
                "stream": r.originator_id,
                "version": r.originator_version,
                "topic": r.topic,
            }
            if positions is not None:
                row["position"] = positions[i] if positions else None
                row["event_id"] = msgspec.json.decode(r.state)["meta"]["event_id"]
            rows.append(row)
        entry = {"phase": phase, "pid": pid, "k": k, "state": state, "records": rows}
        _append_line(commits, json.dumps(entry) + "\n")

    def insert(self: EventLog, records: list[Any], wakes: bool = False) -> list[int]:
        nonlocal calls
        calls += 1
        k = calls
        if k == kill_at:
            # Which commit the kill is next to (only here: one fsync per commit is enough).
            note("attempt", k, records, None)
            if when == "before":
                _kill_self()
        try:
            positions = original(self, records, wakes)
        except BaseException:
            note("raised", k, records, None)
            if k == kill_at and when == "after":
                _kill_self()
            raise
        note("committed", k, records, positions)
        if k == kill_at and when == "after":
            _kill_self()
        return positions

    EventLog._insert = insert  # type: ignore[method-assign]


def _run_phase(plan: dict[str, Any], phase: int, kill_at: int | None, when: str) -> None:
    """One process's turn: open the session, submit the task (idempotently) and run."""
    import msgspec

    from onward import Engine, TaskFailedError

    _instrument(plan, phase, kill_at, when)
    workload = plan["workload"]
    side = plan["side"]
    engine = Engine.open(
        f"sqlite:///{plan['db']}",
        session=SESSION,
        checkpoint_every=workload.get("checkpoint_every", 50_000),
    )

    def effect(index: int) -> str:
        key = engine.idempotency_key()
        task_id = key.rpartition(":")[0]
        _append_line(side, f"{task_id} {index} {os.getpid()} {key}\n")
        return step_value(index)

    @engine.step(name=STEP_NAME)
    def work(index: int) -> str:
        return effect(index)

    @engine.step(name=ONCE_NAME, at_most_once=True)
    def work_once(index: int) -> str:
        return effect(index)

    @engine.task(name=TASK_NAME)
    def job(steps: int, once: int) -> list[str]:
        return [(work_once if i == once else work)(i) for i in range(steps)]

    amo = workload.get("at_most_once")
    task_id = engine.submit(job, workload["steps"], -1 if amo is None else amo, key=TASK_KEY)
    summary = engine.run()
    outcome: dict[str, Any] = {
        "pid": os.getpid(),
        "task_id": task_id,
        "summary": msgspec.to_builtins(summary),
    }
    try:
        outcome["result"] = engine.result(task_id)
        outcome["outcome"] = "succeeded"
    except TaskFailedError as exc:
        outcome.update(outcome="failed", error_type=exc.error_type, message=exc.message)
    engine.close()
    Path(plan["dir"], f"result-{phase}.json").write_text(json.dumps(outcome))


def _fork_phase(
    plan: dict[str, Any], phase: int, kill_at: int | None, when: str
) -> tuple[int, int]:
    """Run a phase in a forked process; return its pid and wait status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _run_phase(plan, phase, kill_at, when)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    # Reaped: the pid is gone, so the next phase sees a dead worker and expires its lease.
    return pid, status


def main(argv: list[str]) -> int:
    """Run every phase of the plan in turn; write ``report.json``."""
    plan = json.loads(Path(argv[1]).read_text())
    rng = random.Random(plan.get("seed"))
    # Import before forking, so that each phase starts without paying for it.
    import onward  # noqa: F401

    report = []
    for index, spec in enumerate(plan["phases"]):
        kill_at = spec.get("kill_at")
        when = spec.get("when", "before")
        if "random_upto" in spec:
            kill_at = rng.randint(1, spec["random_upto"])
            when = rng.choice(["before", "after"])
        pid, status = _fork_phase(plan, index, kill_at, when)
        report.append(
            {
                "pid": pid,
                "kill_at": kill_at,
                "when": when,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            }
        )
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
            break
    Path(plan["dir"], "report.json").write_text(json.dumps(report))
    return 0


# -- the parent --------------------------------------------------------------------------------


@dataclass
class Phase:
    """How one phase ended."""

    pid: int
    kill_at: int | None
    when: str
    killed: bool
    exit: int | None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    committed: list[dict[str, Any]] = field(default_factory=list)
    outcome: dict[str, Any] | None = None

    @property
    def killed_at(self) -> dict[str, Any] | None:
        """The attempt record of the insert at which the phase killed itself."""
        for attempt in self.attempts:
            if attempt["k"] == self.kill_at:
                return attempt
        return None

    def killed_topics(self) -> list[str]:
        """The event types of the commit the kill was next to."""
        at = self.killed_at
        return [r["topic"] for r in at["records"]] if at else []


@dataclass
class Aftermath:
    """What a case left behind, read back by the parent."""

    case: str
    db: Path
    phases: list[Phase]
    side_lines: list[tuple[str, int, int, str]]
    events: list[Any]
    task_id: str
    outcome: dict[str, Any]

    def runs_of(self, index: int) -> list[int]:
        """The pids that ran step ``index``'s body, in order."""
        return [pid for _, i, pid, _ in self.side_lines if i == index]

    def task_events(self) -> list[Any]:
        return [r for r in self.events if r.stream == f"task-{self.task_id}"]


def run_case(
    tmp_path: Path,
    *,
    steps: int,
    phases: list[dict[str, Any]],
    seed: int | None = None,
    at_most_once: int | None = None,
    checkpoint_every: int = 50_000,
    case: str = "",
) -> Aftermath:
    """Run one case in a child process and read back what it left (nothing is checked yet)."""
    plan = {
        "dir": str(tmp_path),
        "db": str(tmp_path / "work.db"),
        "side": str(tmp_path / "side-effects.txt"),
        "commits": str(tmp_path / "commits.jsonl"),
        "seed": seed,
        "phases": phases,
        "workload": {
            "steps": steps,
            "at_most_once": at_most_once,
            "checkpoint_every": checkpoint_every,
        },
    }
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    child = subprocess.run(
        [sys.executable, str(WORKER), str(plan_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    where = f"[{case}] (files in {tmp_path})"
    assert child.returncode == 0, f"{where} child failed:\n{child.stdout}\n{child.stderr}"
    report = json.loads((tmp_path / "report.json").read_text())
    found: list[Phase] = []
    for spec in report:
        found.append(
            Phase(
                pid=spec["pid"],
                kill_at=spec["kill_at"],
                when=spec["when"],
                killed=spec["signal"] == signal.SIGKILL,
                exit=spec["exit"],
            )
        )
    by_pid = {p.pid: p for p in found}
    commits_path = tmp_path / "commits.jsonl"
    lines = commits_path.read_text().splitlines() if commits_path.exists() else []
    for line in lines:
        entry = json.loads(line)
        phase = by_pid[entry["pid"]]
        if entry["state"] == "attempt":
            phase.attempts.append(entry)
        elif entry["state"] == "committed":
            phase.committed.append(entry)
    for index, phase in enumerate(found):
        result = tmp_path / f"result-{index}.json"
        if result.exists():
            phase.outcome = json.loads(result.read_text())
    for index, phase in enumerate(found):
        assert phase.killed or phase.exit == 0, (
            f"{where} phase {index} (pid {phase.pid}) neither died of SIGKILL nor ended "
            f"cleanly (exit {phase.exit}):\n{child.stdout}\n{child.stderr}"
        )
    final = found[-1]
    assert not final.killed, f"{where} the last phase was killed"
    assert final.outcome is not None, f"{where} the last phase did not finish"
    side_path = tmp_path / "side-effects.txt"
    side_lines = []
    for line in side_path.read_text().splitlines() if side_path.exists() else []:
        task, index, pid, key = line.split(" ")
        side_lines.append((task, int(index), int(pid), key))

    from onward.events import open_log

    with open_log(f"sqlite:///{plan['db']}") as log:
        events = list(log.read())
    return Aftermath(
        case=case,
        db=Path(plan["db"]),
        phases=found,
        side_lines=side_lines,
        events=events,
        task_id=final.outcome["task_id"],
        outcome=final.outcome,
    )


def _actor_pid(recorded: Any) -> int:
    """The pid in an event's actor (``host/pid/start/nonce``)."""
    return int(recorded.meta.actor.split("/")[1])


def check_aftermath(after: Aftermath, *, steps: int, succeeded: bool = True) -> None:
    """Check the promises on what a case left behind.

    (a) every event a phase saw committed is in the log, where it was committed, and a phase
    committed nothing it did not see committed (so a kill just before an insert left nothing);
    (b) no recorded step ran again: a step body ran more than once only when every run but the
    last was the last thing a killed process did, and the last run is the one recorded;
    (c) the task succeeded with an uninterrupted run's result (when ``succeeded``), each step
    recorded exactly once; (d) the log verifies clean.
    """
    from onward.events import StepCompleted, TaskFailed, TaskSucceeded, open_log

    where = f"[{after.case}] (files in {after.db.parent})"
    by_id = {r.meta.event_id: r for r in after.events}

    # (a) committed events survive; nothing beyond them was committed by a phase.
    for n, phase in enumerate(after.phases):
        seen: set[str] = set()
        for entry in phase.committed:
            for row in entry["records"]:
                recorded = by_id.get(row["event_id"])
                assert recorded is not None, (
                    f"{where} phase {n} (pid {phase.pid}) committed {row} at insert {entry['k']}, "
                    "but it is not in the log"
                )
                assert (recorded.stream, recorded.version) == (row["stream"], row["version"]), (
                    f"{where} event {row['event_id']} moved: {row} vs "
                    f"{recorded.stream} v{recorded.version}"
                )
                if row["position"] is not None:
                    assert recorded.position == row["position"], (
                        f"{where} event {row['event_id']} moved from position "
                        f"{row['position']} to {recorded.position}"
                    )
                seen.add(row["event_id"])
        in_log = {r.meta.event_id for r in after.events if _actor_pid(r) == phase.pid}
        assert in_log == seen, (
            f"{where} phase {n} (pid {phase.pid}, killed {phase.when} insert {phase.kill_at}: "
            f"{phase.killed_topics()}): the log holds events of it that it never saw committed: "
            f"{sorted(in_log - seen)}, or misses {sorted(seen - in_log)}"
        )

    # (d) the log is intact.
    with open_log(f"sqlite:///{after.db}") as log:
        report = log.verify()
    assert report.ok, f"{where} verify: {[str(p) for p in report.problems]}"
    assert report.events == len(after.events)

    # (b) step bodies ran once, but for the one in flight at each kill.
    killed_last_line: dict[int, int] = {}
    for _, index, pid, _ in after.side_lines:
        killed_last_line[pid] = index
    killed_pids = {p.pid for p in after.phases if p.killed}
    for task, index, _, key in after.side_lines:
        assert task == after.task_id, f"{where} a side effect of another task: {task}"
        assert key == f"{task}:{index}", f"{where} step {index} got idempotency key {key!r}"
    task_events = after.task_events()
    completed = [r for r in task_events if isinstance(r.event, StepCompleted)]
    indices = Counter(r.event.index for r in completed)
    assert all(c == 1 for c in indices.values()), (
        f"{where} steps recorded more than once: {[i for i, c in indices.items() if c > 1]}"
    )
    recorded_by = {r.event.index: _actor_pid(r) for r in completed}
    runs: dict[int, list[int]] = defaultdict(list)
    for _, index, pid, _ in after.side_lines:
        runs[index].append(pid)
    for index, pids in sorted(runs.items()):
        for pid in pids[:-1]:
            repeated = (
                f"{where} step {index} ran again (in pids {pids}; killed pids "
                f"{sorted(killed_pids)}): a run that was not in flight at a kill was repeated"
            )
            assert pid in killed_pids, repeated
            assert killed_last_line[pid] == index, repeated
        if index in recorded_by:
            assert recorded_by[index] == pids[-1], (
                f"{where} step {index} was recorded by pid {recorded_by[index]} but last ran "
                f"in pid {pids[-1]} (runs {pids})"
            )
    repeats = sum(len(p) - 1 for p in runs.values())
    assert repeats <= len(killed_pids), f"{where} {repeats} repeated step runs for fewer kills"
    for index in recorded_by:
        assert runs.get(index), f"{where} step {index} is recorded but its body never ran"

    # (c) the outcome.
    ends = [r for r in task_events if isinstance(r.event, TaskSucceeded | TaskFailed)]
    ended = f"{where} the task should end once, last: {[type(r.event).__name__ for r in ends]}"
    assert len(ends) == 1, ended
    assert ends[0] is task_events[-1], ended
    if succeeded:
        assert isinstance(ends[0].event, TaskSucceeded), f"{where} the task failed: {ends[0]}"
        assert sorted(indices) == list(range(steps)), f"{where} steps recorded: {sorted(indices)}"
        assert after.outcome["outcome"] == "succeeded", f"{where} {after.outcome}"
        assert after.outcome["result"] == expected_result(steps), f"{where} wrong result"
        assert ends[0].event.result == expected_result(steps), f"{where} wrong recorded result"
        assert sorted(runs) == list(range(steps)), f"{where} step bodies that ran: {sorted(runs)}"

    # The last phase ran only what was left, and replayed the rest.
    final = after.phases[-1]
    summary = after.outcome["summary"]
    ran_last = sum(1 for _, _, pid, _ in after.side_lines if pid == final.pid)
    assert summary["steps_run"] == ran_last, f"{where} summary {summary}, {ran_last} bodies ran"
    if summary["runs"] and succeeded:
        assert summary["steps_run"] + summary["steps_replayed"] == steps, f"{where} {summary}"


def onward_verify(db: Path) -> subprocess.CompletedProcess[str]:
    """``onward verify --db DB`` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "onward", "verify", "--db", str(db)],
        capture_output=True,
        text=True,
        check=False,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
