"""A raw PostgreSQL writer of ``scripts/bench_workers.py`` (not a public entry point).

``pg_raw_child.py URL TABLE COUNT GO``: one psycopg connection (autocommit), prints ``ready``,
waits for the file ``GO``, then ``COUNT`` times inserts one row shaped like an onward record
(stream, version, topic, a 300-byte state, a position) in a transaction of its own; prints
``{"started": ..., "ended": ..., "commits": COUNT}`` (``time.time()``).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    url, table, count, go = argv[0], argv[1], int(argv[2]), argv[3]
    import psycopg

    state = os.urandom(150).hex().encode()
    stream = f"raw-{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as connection:
        insert = (
            f"INSERT INTO {table} (position, stream, version, topic, state)"
            " VALUES (%s, %s, %s, 'StepCompleted', %s)"
        )
        connection.execute(insert, (-os.getpid(), stream, 0, state), prepare=True)
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.001)
        started = time.time()
        base = os.getpid() * 10_000_000
        for i in range(1, count + 1):
            connection.execute(insert, (base + i, stream, i, state), prepare=True)
        ended = time.time()
    print(json.dumps({"started": started, "ended": ended, "commits": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
