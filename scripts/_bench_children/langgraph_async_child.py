"""Child process of ``scripts/bench_async.py`` for LangGraph's async path (not a public entry).

``python langgraph_async_child.py PATH THREADS STEPS``: a graph that loops over one trivial async
node STEPS times, checkpointed by ``AsyncSqliteSaver`` with ``durability="sync"``; THREADS graph
threads run at once (``ainvoke``) on one event loop; prints ``{"steps_per_s": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TypedDict


class State(TypedDict):
    count: int
    limit: int


def main(argv: list[str]) -> int:
    path, threads, steps = argv[0], int(argv[1]), int(argv[2])

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, StateGraph

    async def node(state: State) -> dict[str, int]:
        return {"count": state["count"] + 1}

    def more(state: State) -> str:
        return "node" if state["count"] < state["limit"] else END

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.set_entry_point("node")
    builder.add_conditional_edges("node", more)

    async def run() -> float:
        async with AsyncSqliteSaver.from_conn_string(path) as saver:
            graph = builder.compile(checkpointer=saver)
            config = {"recursion_limit": steps + 10}

            async def one(n: int) -> None:
                await graph.ainvoke(
                    {"count": 0, "limit": steps},
                    {**config, "configurable": {"thread_id": f"t{n}"}},
                    durability="sync",
                )

            await one(-1)  # warm up
            started = time.perf_counter()
            await asyncio.gather(*(one(n) for n in range(threads)))
            return time.perf_counter() - started

    elapsed = asyncio.run(run())
    print(json.dumps({"steps_per_s": threads * steps / elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
