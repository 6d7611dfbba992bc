"""A TCP proxy in a process of its own: ``python _proxy.py PORT TARGET_PORT`` forwards
127.0.0.1:PORT to 127.0.0.1:TARGET_PORT, byte for byte, and prints ``ready`` once it listens.

A test stops it (SIGSTOP: the kernel still accepts and acknowledges what the workers send, but
nothing reaches the server and no reply comes back, and no connection is reset: a silently dead
link) or kills it (SIGKILL: every connection through it is cut) and starts it again on the same
port.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes one way until either side ends, then end both."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


def serve(port: int, target_port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    print("ready", flush=True)
    while True:
        client, _address = listener.accept()
        try:
            server = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            client.close()
            continue
        for source, target in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(source, target), daemon=True).start()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
