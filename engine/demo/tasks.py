"""The survey's tasks as the engine runs them (part of ``onward demo``): their registration,
where each files its totals, their submission, and what a person teaches the engine after.

:func:`register` registers the ``survey`` task and its steps, the index service it files its
totals with (:mod:`onward.demo.index`) as a component with a health check and a workaround,
and the fix a person may teach for its quota errors (:func:`teach`).

Each survey task files its totals where :func:`route` says, a durable step: with the primary
index; or, once the breaker of the index service has opened, it reports the service down
(``engine.degrade``) and files with the workaround the engine gives it, the backup index
(:data:`BACKUP_STEP`), until the service's health check passes and the engine restores it at a
task boundary.

Every step also writes its idempotency key to a journal before it works, standing for an
external effect: that is how the parent counts the steps that really ran twice. With
``hold_after``, once that many tasks have finished, the worker holds its next step (as a slow
model call would) until the parent's SIGKILL, so the kill cannot miss a fast run.
"""

from __future__ import annotations

import os
import threading

import msgspec

from onward.demo.index import (
    BACKUP,
    DEFAULT_SEED,
    DEPENDENCY,
    WORKAROUNDS,
    IndexService,
    QuotaExceeded,
    UseBackupIndex,
)
from onward.demo.plan import Plan
from onward.demo.publish import TASK, register_publish
from onward.demo.survey import (
    FileFacts,
    FileOutcome,
    Shape,
    Totals,
    file_error,
    parse_source,
    read_file,
    read_source,
    summarise,
)
from onward.events import OnwardError
from onward.projections import task_stream
from onward.projections.degradation import ComponentState
from onward.runtime.engine import Engine

__all__ = [
    "BACKUP_STEP",
    "DOWN",
    "PRIMARY",
    "register",
    "route",
    "submit",
    "teach",
]

#: :func:`route`'s answers besides a workaround's name.
PRIMARY = "primary"
DOWN = "down"
#: The step that files a task's totals with the backup index while the service is down.
BACKUP_STEP = "file-backup"


class _Gate:
    """The crash point's backstop: once ``after`` tasks have finished, hold every step that
    follows a recorded one in its task (so the kill lands mid-task, with steps to replay)."""

    def __init__(self, after: int | None) -> None:
        self.after = after
        self.finished = 0
        self._lock = threading.Lock()

    def task_finished(self) -> None:
        with self._lock:
            self.finished += 1

    def pass_through(self, index: int) -> None:
        if self.after is not None and self.finished >= self.after and index > 0:
            threading.Event().wait()  # a step that never answers; the parent's SIGKILL ends it


def register(
    engine: Engine,
    *,
    seed: int = DEFAULT_SEED,
    journal: str | None = None,
    hold_after: int | None = None,
    publish_to: str | None = None,
) -> IndexService:
    """Register the demo's task (``survey``), steps (``read``, ``parse``, ``route``,
    ``summarise`` and :data:`BACKUP_STEP`), the index service as a component (its health check
    and its workaround), the fix ``use-backup-index`` (offered only where learned) and, with
    ``publish_to``, the ``publish`` task (:mod:`onward.demo.publish`).

    Args:
        engine: the engine.
        seed: the seed of the index service's faults.
        journal: a file each step appends its idempotency key to before it works.
        hold_after: hold every step once this many tasks have finished in this process.
        publish_to: the file the ``publish`` task writes the totals to (None: no such task).

    Returns:
        The index service ``summarise`` files with; set its ``outage`` once the session's tasks
        are submitted (:func:`~onward.demo.index.plan_outage`; no outage until then).
    """
    if engine.healer is not None and UseBackupIndex.name not in engine.healer.fixes:
        engine.healer.fixes.register(UseBackupIndex())
    service = IndexService(engine.log, session=engine.session, seed=seed, outage=None)
    engine.component(
        DEPENDENCY,
        check=service.up,
        workarounds=WORKAROUNDS,
        description="the index service the survey files its totals with",
    )
    gate = _Gate(hold_after)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if journal else None
    # One task at a time decides where to file, so that one reports the service down.
    routing = threading.Lock()

    def effect() -> None:
        key = engine.idempotency_key()
        if fd is not None:
            os.write(fd, f"{key}\n".encode())
        gate.pass_through(int(key.rpartition(":")[2]))

    if publish_to is not None:
        register_publish(engine, publish_to, effect)

    # The parameter is ``filename``, not ``path``: fixes take ``path`` for a file a step writes.
    @engine.step(name="read", hints={"encoding": "encoding"})
    def read_step(filename: str, encoding: str = "utf-8") -> FileFacts:
        effect()
        return read_file(filename, encoding)

    @engine.step(name="parse", hints={"code": "source"})
    def parse_step(source: str, name: str) -> Shape:
        effect()
        return parse_source(source, name)

    @engine.step(name="route")
    def route_step(label: str) -> str:
        effect()
        return route(engine)

    @engine.step(name="summarise", breaker=DEPENDENCY, hints={"timeout": "timeout"})
    def summarise_step(
        label: str, outcomes: list[FileOutcome], timeout: float = 1.0, index: str = "primary"
    ) -> Totals:
        effect()
        task_id = engine.idempotency_key().rpartition(":")[0]
        service.publish(label, stream=task_stream(task_id), timeout=timeout, index=index)
        return summarise(label, outcomes, index=index)

    @engine.step(name=BACKUP_STEP)
    def backup_step(label: str, outcomes: list[FileOutcome]) -> Totals:
        effect()
        task_id = engine.idempotency_key().rpartition(":")[0]
        service.publish(label, stream=task_stream(task_id), timeout=1.0, index="backup")
        return summarise(label, outcomes, index="backup")

    @engine.task(name="survey")
    def survey(label: str, root: str, files: list[str]) -> Totals:
        origin = label.partition("/")[0]
        outcomes: list[FileOutcome] = []
        for i, rel in enumerate(files, 1):
            path = os.path.join(root, rel)
            try:
                facts = read_step(path)
            except OnwardError:
                raise  # the engine's own errors (a changed history, a conflict) are not files'
            except Exception as exc:
                outcomes.append(FileOutcome(rel, error=file_error(rel, "read", exc)))
                continue
            try:
                # The text goes to ``parse`` as an argument (so fixes can repair it), read again
                # in the encoding ``read`` settled on; only the counts are recorded.
                shape = parse_step(read_source(path, facts.encoding), f"{origin}/{rel}")
            except OnwardError:
                raise
            except Exception as exc:
                outcomes.append(FileOutcome(rel, facts, error=file_error(rel, "parse", exc)))
            else:
                outcomes.append(FileOutcome(rel, facts, shape))
            if len(files) >= 30 and i % 10 == 0:
                engine.progress(i / len(files), rel)
        with routing:
            # Recorded, so that a re-run files where the first run decided to.
            via = route_step(label)
            if via == DOWN:
                breaker = engine.projections.breakers.get(DEPENDENCY)
                workaround = engine.degrade(
                    DEPENDENCY,
                    message=f"its breaker is open after {breaker.consecutive_failures} failed "
                    "calls in a row",
                )
                via = workaround.name if workaround is not None else ""
        if via == BACKUP.name:
            totals = backup_step(label, outcomes)
        elif via != PRIMARY:  # no workaround left, and a person said to go on without one
            totals = summarise(label, outcomes)
        else:
            try:
                totals = summarise_step(label, outcomes)
            except OnwardError:
                raise
            except Exception as exc:  # given up: the totals stand, unindexed
                totals = msgspec.structs.replace(
                    summarise(label, outcomes), index_error=file_error(label, "summarise", exc)
                )
        gate.task_finished()
        return totals

    return service


def route(engine: Engine) -> str:
    """Where a survey task files its totals, as the worker sees the index service.

    Returns:
        The workaround's name while the service is degraded; :data:`DOWN` when its breaker has
        opened since the service was last healthy (report it, then file with the workaround
        the engine gives); else :data:`PRIMARY` (the breaker, if still open, makes the task wait
        for its half-open moment).
    """
    projections = engine.refresh()
    components = projections.degradation.view(engine.session).components
    component = next((c for c in components if c.name == DEPENDENCY), None)
    if component is not None and component.state != ComponentState.HEALTHY:
        return component.workaround
    breaker = projections.breakers.get(DEPENDENCY)
    if breaker.state == "open" and (component is None or component.since < breaker.opened_at):
        return DOWN
    return PRIMARY


def submit(engine: Engine, plan: Plan) -> list[str]:
    """Submit a plan's survey tasks, then the ``publish`` task that waits for them.

    Returns:
        The survey tasks' ids.
    """
    ids = [
        engine.submit("survey", unit.label, unit.root, unit.files, key=unit.label)
        for unit in plan.units
    ]
    engine.submit(TASK, ids, key=TASK)
    return ids


def teach(engine: Engine) -> list[str]:
    """Do what a person reading ``onward errors`` after the run would: the quota errors of the
    primary index were given up, and the backup index has no quota, so teach the engine
    ``use-backup-index`` for their signatures (``onward learn SIGNATURE use-backup-index``).

    Returns:
        The signatures taught.
    """
    quota = f"{QuotaExceeded.__module__}.{QuotaExceeded.__qualname__}"
    taught: list[str] = []
    for signature, view in sorted(engine.refresh().errors.signatures.items()):
        if (
            view.error_type == quota
            and engine.session in view.sessions
            and view.best_fix is None
            and UseBackupIndex.name not in view.learned
        ):
            engine.learn(
                signature,
                UseBackupIndex.name,
                note="the primary index ran out of quota; the backup index has none",
            )
            taught.append(signature)
    return taught
