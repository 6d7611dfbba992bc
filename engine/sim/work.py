"""The kinds of work a simulated task does: real operations that raise real exceptions.

Each kind is a durable step (or a judged action) of the engine. Its fault is decided when the
task is planned and passed as an argument, so a re-run after a crash meets the same fault; what
a fix changes (an encoding, a timeout, a batch size, a path's folder) is what makes the real
operation pass again. Nothing here is mocked: a cp1252 file is decoded as UTF-8, prose around
JSON is parsed, fenced code is compiled, a missing module is imported, a file is written into a
folder that does not exist.

The one error no built-in fix answers, ``SchemaChanged`` (a model API's reply in a new shape),
is fixed by :class:`UseSchemaV2` only once a person taught it (``engine.learn``): it never
matches on its own.
"""

from __future__ import annotations

import importlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onward.core.errors import StepMismatch
from onward.events import LogDamaged, UsageError
from onward.healing.fixes import Remedy, StepCall
from onward.judgement.degradation import Workaround
from onward.runtime.engine import Engine
from onward.sim.profile import ACTIONS, ERRORS, KINDS
from onward.sim.world import World

__all__ = [
    "ACTIONS",
    "ERRORS",
    "KINDS",
    "ROUTE_STEP",
    "SchemaChanged",
    "UseSchemaV2",
    "register_work",
]

#: What a person teaches for each new error.
TEACH = {"SchemaChanged": "use-schema-v2"}
#: The step that records which way a model call goes (the workaround standing in for the model
#: API, or none): a read of the session's state, no work and no action.
ROUTE_STEP = "model_route"


class SchemaChanged(ValueError):
    """A reply that no longer has the shape the code reads (a new API version)."""


class UseSchemaV2:
    """Read the model API's replies in their new shape: ``schema`` set to ``"v2"``.

    It never matches by itself (a new error is unknown until someone looks at it): the engine
    applies it once a person taught it for the error's signature.
    """

    name = "use-schema-v2"

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return False

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        if call.arguments.get("schema") != "v1":
            return None
        return Remedy(call=call.with_arguments(schema="v2"), change={"schema": ["v1", "v2"]})


_PROSE = "Sure! Here is the plan you asked for:\n{payload}\nLet me know if it helps."
_FENCED = "Here is the function:\n```python\n{code}```\nIt returns one."
_CODE = "def answer():\n    return 1\n"
_TABS = "def answer():\n\tif True:\n        return 1\n"


def register_work(engine: Engine, world: World) -> dict[str, Callable[..., Any]]:
    """Register every kind of work on an engine; returns each kind's call by name.

    Each call takes ``(name, seconds, fault)``: what it works on, how long it takes in
    simulated seconds, and the fault it meets ("" for none).
    """
    if engine.healer is not None:
        engine.healer.fixes.register(UseSchemaV2())
    for outage in world.profile.outages:
        component = outage.component
        engine.component(
            component,
            check=lambda component=component: not world.down(component),
            workarounds=[
                Workaround(name=f"{component}-fallback", quality_loss=0.25),
                Workaround(name=f"{component}-cache", quality_loss=0.5),
            ],
        )

    @engine.step()
    def read_source(name: str, seconds: float, fault: str, encoding: str = "utf-8") -> int:
        world.work(seconds)
        data = f"# {name}\nprint('café crème')\n".encode(
            "cp1252" if fault == "UnicodeDecodeError" else "utf-8"
        )
        return len(data.decode(encoding))

    @engine.step(hints={"text": "text"})
    def parse_reply(text: str, seconds: float) -> int:
        world.work(seconds)
        return len(json.loads(text)["plan"])

    @engine.step(hints={"config": "config", "defaults": {"model": "default-model"}})
    def load_config(config: dict[str, Any], seconds: float) -> str:
        world.work(seconds)
        return str(config["model"])

    @engine.step(hints={"code": "code"})
    def check_code(code: str, seconds: float) -> int:
        world.work(seconds)
        compile(code, "<generated>", "exec")
        return code.count("\n")

    @engine.step(breaker="model-api", hints={"timeout_cap": 120.0})
    def call_model(
        prompt: str, seconds: float, fault: str, timeout: float = 30.0, schema: str = "v1"
    ) -> int:
        world.work(seconds)
        if world.down("external_api") and world.uses("external_api", "call_model"):
            raise ConnectionRefusedError(f"the model API refused the connection ({prompt})")
        if fault == "TimeoutError" and timeout < 60.0:
            raise TimeoutError(f"the model did not answer within {timeout:g} s")
        if fault == "ConnectionResetError" and world.first(engine.idempotency_key()):
            raise ConnectionResetError(104, "Connection reset by peer")
        if fault == "SchemaChanged" and schema == "v1":
            raise SchemaChanged("the reply has no field 'usage.total_tokens' (a new API version?)")
        return len(prompt)

    @engine.step()
    def call_fallback(prompt: str, seconds: float) -> int:
        world.work(seconds)
        return len(prompt) // 2

    @engine.step(name=ROUTE_STEP)
    def model_route(prompt: str) -> str:
        return engine.workaround("external_api") or ""

    @engine.step(hints={"alternatives": {"onward_sim_fastjson": "json"}})
    def import_tool(module: str, seconds: float) -> str:
        world.work(seconds)
        return importlib.import_module(module).__name__

    @engine.step()
    def write_output(path: str, text: str, seconds: float) -> int:
        world.work(seconds)
        return Path(path).write_text(text, encoding="utf-8")

    @engine.step()
    def query_db(sql: str, seconds: float, fault: str) -> int:
        world.work(seconds)
        if fault == "OperationalError" and world.first(engine.idempotency_key()):
            raise sqlite3.OperationalError("database is locked")
        return len(sql)

    @engine.step()
    def transform(rows: int, seconds: float, fault: str, batch_size: int = 10_000) -> int:
        world.work(seconds)
        if fault == "MemoryError" and batch_size > 2_500:
            raise MemoryError(f"cannot allocate {batch_size * 1_024:,} bytes for one batch")
        return rows

    def action(kind: str) -> Callable[..., Any]:
        impact = ACTIONS[kind]
        undo = (lambda result, *args, **kwargs: None) if impact != "high" else None

        def act(name: str, seconds: float) -> str:
            world.work(seconds)
            return f"{kind} {name}"

        act.__name__ = act.__qualname__ = kind
        return engine.action(impact=impact, undo=undo, check=bool)(act)

    actions = {kind: action(kind) for kind in ACTIONS}

    def model(name: str, seconds: float, fault: str) -> Any:
        # Which way the call goes is a step's outcome: a re-run of the task (after a wait for a
        # person or a crash) goes the way its first run went, whatever the component's state
        # is by then, as the log's steps hold it.
        if model_route(name):
            return call_fallback(name, seconds)
        try:
            return call_model(name, seconds, fault)
        except ConnectionRefusedError as refused:
            engine.degrade("external_api", message=str(refused))
            return call_fallback(name, seconds)

    def text_of(fault: str) -> str:
        payload = '{"plan": ["read", "edit", "test"]}'
        return _PROSE.format(payload=payload) if fault == "JSONDecodeError" else payload

    def code_of(fault: str) -> str:
        if fault == "SyntaxError":
            return _FENCED.format(code=_CODE)
        return _TABS if fault == "TabError" else _CODE

    def output_of(name: str, fault: str) -> str:
        folder = world.scratch / ("missing" if fault else "out") / name.replace("/", "-")
        if not fault:
            folder.mkdir(parents=True, exist_ok=True)
        return str(folder / "result.txt")

    calls: dict[str, Callable[..., Any]] = {
        "read_source": read_source,
        "parse_reply": lambda n, s, f: parse_reply(text_of(f), s),
        "load_config": lambda n, s, f: load_config(
            {"temperature": 0} if f else {"model": "big", "temperature": 0}, s
        ),
        "check_code": lambda n, s, f: check_code(code_of(f), s),
        "call_model": model,
        "import_tool": lambda n, s, f: import_tool("onward_sim_fastjson" if f else "json", s),
        "write_output": lambda n, s, f: write_output(output_of(n, f), n, s),
        "query_db": lambda n, s, f: query_db(f"select * from {n}", s, f),
        "transform": lambda n, s, f: transform(1_000, s, f),
    }
    for kind, act in actions.items():
        calls[kind] = lambda n, s, f, act=act: act(n, s)
    return calls


def run_plan(calls: dict[str, Callable[..., Any]], task: str, plan: list[list[Any]]) -> int:
    """Do a task's plan, step by step; a step that fails for good (its error recorded in the
    log) or an action a person denied is skipped: an agent goes on with the rest of its work.
    Returns the steps done.

    What is no step's failure goes up and ends the task: the engine refusing a use of it
    (:class:`UsageError`), a re-run that calls other steps than the log records
    (:class:`StepMismatch`), a history that cannot be trusted (:class:`LogDamaged`). A
    simulation is there to show such faults, not to step over them.
    """
    done = 0
    for index, (kind, seconds, fault) in enumerate(plan):
        try:
            calls[kind](f"{task}/{index}", float(seconds), str(fault))
            done += 1
        except (UsageError, StepMismatch, LogDamaged):
            raise
        except Exception:  # ActionDenied among them: the task goes on without that step
            continue
    return done
