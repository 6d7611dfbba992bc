"""Who a worker is, and whether it is certainly gone.

A worker id is ``host/pid/start/nonce``: on the same host, a dead process, a zombie, or a pid
now used by another process (its start time differs) tells that the worker is gone, and its
lease can be taken at once instead of after it runs out.
"""

from __future__ import annotations

import os
import socket

__all__ = ["process_start", "worker_gone", "worker_id"]


def process_start(pid: int) -> str:
    """The start time of a process (in clock ticks since boot, from /proc), or "" if unknown.

    With the pid it identifies a process even after the pid is reused.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    fields = stat[stat.rfind(b")") + 2 :].split()
    if fields and fields[0] == b"Z":
        return "zombie"
    return fields[19].decode() if len(fields) > 19 else ""


def worker_id() -> str:
    """``host/pid/start/nonce``: enough to tell, on this host, whether the worker is gone."""
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{process_start(pid)}/{os.urandom(3).hex()}"


def worker_gone(worker: str, own: str) -> bool:
    """Whether a worker of this host is certainly gone (its process is dead, a zombie, or
    another process now has its pid, or it is an earlier engine of this very process)."""
    parts = worker.split("/")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    if worker == own:
        return False
    pid, started = int(parts[1]), parts[2]
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    now_started = process_start(pid)
    return now_started == "zombie" or bool(started and now_started and now_started != started)
