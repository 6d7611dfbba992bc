"""A child process of ``scripts/bench_tasks.py`` for LangGraph (not a public entry point).

``step PATH N``: LangGraph with ``SqliteSaver(sqlite3.connect(PATH, check_same_thread=False))``
(which puts the file in WAL) and ``durability="sync"``: a graph that loops over one trivial node
N times, so that every super-step is checkpointed before the next starts. A 50-step warm-up
thread first, then wall time / N of one N-step thread. One JSON object on stdout.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from typing import Any, TypedDict


class Counter(TypedDict):
    i: int
    n: int


def main(argv: list[str]) -> int:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    path, n = argv[1], int(argv[2])

    def work(state: Counter) -> dict[str, Any]:
        return {"i": state["i"] + 1}

    def again(state: Counter) -> str:
        return "work" if state["i"] < state["n"] else END

    graph = StateGraph(Counter)
    graph.add_node("work", work)
    graph.add_edge(START, "work")
    graph.add_conditional_edges("work", again)
    db = sqlite3.connect(path, check_same_thread=False)
    app = graph.compile(checkpointer=SqliteSaver(db))

    def run(thread: str, steps: int) -> dict[str, Any]:
        config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": steps + 10}
        return app.invoke({"i": 0, "n": steps}, config, durability="sync")

    run("warm-up", 50)
    t0 = time.perf_counter()
    out = run("bench", n)
    elapsed = time.perf_counter() - t0
    assert out["i"] == n, out
    journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = db.execute("PRAGMA synchronous").fetchone()[0]
    db.close()
    print(
        json.dumps(
            {"step_us": elapsed / n * 1e6, "steps": n, "journal_mode": journal, "sync": synchronous}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
