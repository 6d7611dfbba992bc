"""Who a worker is, and whether it is certainly gone.

A worker id is ``host/pid/start/nonce``: on the same host, a dead process, a zombie, or a pid
now used by another process (its start time differs) tells that the worker is gone, and its
lease can be taken at once instead of after it runs out.
"""

from __future__ import annotations

import os
import socket
import threading

from onward.events import UsageError

__all__ = ["host_name", "live", "process_start", "worker_gone", "worker_id"]

#: The workers of this process whose engine is open: another engine of this process (an earlier
#: one, closed or lost without closing) is gone.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def live(worker: str, alive: bool) -> None:
    """Note that a worker of this process opened (``alive``) or closed its engine."""
    with _LIVE_LOCK:
        if alive:
            _LIVE.add(worker)
        else:
            _LIVE.discard(worker)


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


def host_name() -> str:
    """The name this process gives its host in worker ids: ``ONWARD_HOST`` when set (for
    containers that share a machine's name, say), else the machine's host name."""
    return os.environ.get("ONWARD_HOST") or socket.gethostname()


def worker_id(host: str | None = None) -> str:
    """``host/pid/start/nonce``: enough to tell, on this host, whether the worker is gone.

    Args:
        host: the host's name (:func:`host_name` by default); it may not contain "/".

    Raises:
        UsageError: a host name with "/" or nothing in it.
    """
    host = host_name() if host is None else host
    if not host or "/" in host:
        raise UsageError(f"a worker's host name must be non-empty, without '/': {host!r}")
    pid = os.getpid()
    return f"{host}/{pid}/{process_start(pid)}/{os.urandom(3).hex()}"


def worker_gone(worker: str, own: str) -> bool:
    """Whether a worker of this host is certainly gone (its process is dead, a zombie, or
    another process now has its pid, or it is an engine of this very process that is not open).

    A worker of another host (by the host part of the ids) is never certainly gone: its lease
    says when it is.
    """
    parts = worker.split("/")
    host = own.split("/", 1)[0]
    if len(parts) != 4 or parts[0] != host or not parts[1].isdigit():
        return False
    if worker == own:
        return False
    pid, started = int(parts[1]), parts[2]
    if pid == os.getpid():
        with _LIVE_LOCK:
            return worker not in _LIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    now_started = process_start(pid)
    return now_started == "zombie" or bool(started and now_started and now_started != started)
