"""The built-in fixes, each against the real error it is for: real files, a real SQLite lock, real
sockets, a real allocation failure, real compile and import errors.

Each test runs a step function the way the engine does (``step(**call.arguments)``), takes the
error it really raises, asks the default registry for candidates, applies the first, and runs the
step again with the remedied call.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import socket
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from onward.healing.fixes import Remedy, StepCall
from onward.healing.remedies import (
    LengthenTimeout,
    ReconnectAfterDroppedConnection,
    WaitForDatabaseLock,
    default_registry,
)

REGISTRY = default_registry()


def failure(step: Callable[..., Any], call: StepCall) -> BaseException:
    """The error the step really raises for this call."""
    try:
        step(**call.arguments)
    except Exception as error:
        return error
    pytest.fail(f"{call.step} did not fail")


def names(error: BaseException, call: StepCall) -> list[str]:
    fixes = REGISTRY.candidates(error, call, signature="sig", stats={}, learned=())
    return [fix.name for fix in fixes]


def heal(
    step: Callable[..., Any],
    call: StepCall,
    expected: str,
    *,
    raises: type[BaseException] = Exception,
    rounds: int = 1,
) -> tuple[Any, list[Remedy]]:
    """Run the step; while it fails (with ``raises``, at most ``rounds`` times), the one
    candidate must be ``expected``: apply it and run again. Returns the result and the remedies
    applied."""
    remedies: list[Remedy] = []
    for _ in range(rounds):
        error = failure(step, call)
        assert isinstance(error, raises), repr(error)
        fixes = REGISTRY.candidates(error, call, signature="sig", stats={}, learned=())
        assert [fix.name for fix in fixes] == [expected], error
        remedy = fixes[0].apply(error, call)
        assert remedy is not None, error
        msgspec.json.encode(remedy.change)  # recorded in FixAttempted: must be JSON
        remedies.append(remedy)
        call = msgspec.structs.replace(remedy.call, attempt=call.attempt + 1)
        try:
            return step(**call.arguments), remedies
        except Exception:
            continue
    pytest.fail(f"{call.step} still fails after {rounds} remedies")


# -- 1. decode-with-detected-encoding --------------------------------------------------------


def read_notes(path: str, encoding: str = "utf-8") -> str:
    return Path(path).read_text(encoding=encoding)


def test_cp1252_text_read_as_utf8_is_read_as_cp1252(tmp_path: Path) -> None:
    text = "Café — “naïve” costs 5 €\n"
    notes = tmp_path / "notes.txt"
    notes.write_bytes(text.encode("cp1252"))
    call = StepCall(step="read_notes", arguments={"path": str(notes), "encoding": "utf-8"})

    result, [remedy] = heal(read_notes, call, "decode-with-detected-encoding")

    assert result == text
    assert remedy.call.arguments["encoding"] == "cp1252"
    assert remedy.change == {"encoding": ["utf-8", "cp1252"]}


def test_bytes_that_cp1252_cannot_decode_fall_back_to_latin1(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"caf\xe9 \x81\x8d")  # 0x81 and 0x8d are undefined in cp1252
    call = StepCall(step="read_notes", arguments={"path": str(notes), "encoding": "utf-8"})

    result, [remedy] = heal(read_notes, call, "decode-with-detected-encoding")

    assert result == "café \x81\x8d"
    assert remedy.call.arguments["encoding"] == "latin-1"


def test_utf8_with_a_bom_read_as_ascii_is_read_as_utf8_sig(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes("\ufeffZürich".encode())
    call = StepCall(step="read_notes", arguments={"path": str(notes), "encoding": "ascii"})

    result, _ = heal(read_notes, call, "decode-with-detected-encoding")

    assert result == "Zürich"


def test_hinted_encoding_parameter(tmp_path: Path) -> None:
    def load(path: str, charset: str = "utf-8") -> str:
        return Path(path).read_text(encoding=charset)

    source = tmp_path / "in.txt"
    source.write_bytes("Ärger".encode("cp1252"))
    call = StepCall(
        step="load",
        arguments={"path": str(source), "charset": "utf-8"},
        hints={"encoding": "charset"},
    )

    result, _ = heal(load, call, "decode-with-detected-encoding")

    assert result == "Ärger"


def test_a_step_without_an_encoding_parameter_gets_no_decoding_fix(tmp_path: Path) -> None:
    def read_fixed(path: str) -> str:
        return Path(path).read_text(encoding="utf-8")

    source = tmp_path / "in.txt"
    source.write_bytes(b"caf\xe9")
    call = StepCall(step="read_fixed", arguments={"path": str(source)})
    error = failure(read_fixed, call)

    assert names(error, call) == []
    assert REGISTRY.get("decode-with-detected-encoding").apply(error, call) is None


# -- 2. encode-output-with-replacement -------------------------------------------------------


def write_report(path: str, text: str, encoding: str = "ascii") -> int:
    return Path(path).write_text(text, encoding=encoding)


def test_text_ascii_cannot_hold_is_written_as_utf8(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    text = "Zürich → 5 €"
    call = StepCall(
        step="write_report", arguments={"path": str(report), "text": text, "encoding": "ascii"}
    )

    _, [remedy] = heal(write_report, call, "encode-output-with-replacement")

    assert report.read_text(encoding="utf-8") == text
    assert remedy.change == {"encoding": ["ascii", "utf-8"]}


def test_without_an_encoding_parameter_errors_are_replaced() -> None:
    def to_ascii(text: str, errors: str = "strict") -> bytes:
        return text.encode("ascii", errors)

    call = StepCall(step="to_ascii", arguments={"text": "Zürich", "errors": "strict"})

    result, [remedy] = heal(to_ascii, call, "encode-output-with-replacement")

    assert result == b"Z?rich"
    assert remedy.change == {"errors": ["strict", "replace"]}


def test_utf8_that_still_cannot_encode_gets_replacement_when_it_can() -> None:
    def emit(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return text.encode(encoding, errors)

    lone_surrogate = "half \udc80 a pair"
    call = StepCall(
        step="emit", arguments={"text": lone_surrogate, "encoding": "utf-8", "errors": "strict"}
    )

    result, _ = heal(emit, call, "encode-output-with-replacement")

    assert result == b"half ? a pair"

    fixed = call.with_arguments(errors="replace")
    assert not REGISTRY.get("encode-output-with-replacement").matches(failure(emit, call), fixed)


# -- 3. create-missing-parent-directory ------------------------------------------------------


def save(path: str, text: str) -> int:
    return Path(path).write_text(text, encoding="utf-8")


def test_writing_into_a_missing_directory_creates_it(tmp_path: Path) -> None:
    target = tmp_path / "out" / "2024" / "report.txt"
    call = StepCall(step="save", arguments={"path": str(target), "text": "done"})

    _, [remedy] = heal(save, call, "create-missing-parent-directory")

    assert target.read_text(encoding="utf-8") == "done"
    assert remedy.call == call
    assert remedy.change == {"created_directory": str(target.parent)}


def test_hinted_output_parameter_as_a_path(tmp_path: Path) -> None:
    def export(rows: list[str], report_file: Path) -> int:
        return report_file.write_text("\n".join(rows), encoding="utf-8")

    target = tmp_path / "exports" / "rows.txt"
    call = StepCall(
        step="export",
        arguments={"rows": ["a", "b"], "report_file": target},
        hints={"output": "report_file"},
    )

    heal(export, call, "create-missing-parent-directory")

    assert target.read_text(encoding="utf-8") == "a\nb"


def test_reading_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    def load(source: str) -> str:
        return Path(source).read_text(encoding="utf-8")

    missing = tmp_path / "nowhere" / "in.txt"
    call = StepCall(step="load", arguments={"source": str(missing)})
    error = failure(load, call)

    assert names(error, call) == []
    assert REGISTRY.get("create-missing-parent-directory").apply(error, call) is None
    assert not missing.parent.exists()


def test_a_missing_file_in_an_existing_directory_is_not_this_fix(tmp_path: Path) -> None:
    def append(path: str) -> str:
        with Path(path).open("r+", encoding="utf-8") as f:  # needs the file to exist
            return f.read()

    call = StepCall(step="append", arguments={"path": str(tmp_path / "absent.txt")})

    assert names(failure(append, call), call) == []


# -- 4. wait-for-database-lock ---------------------------------------------------------------


def insert(db: str, value: int) -> int:
    # timeout=0: no busy wait inside SQLite, the lock is reported at once.
    with closing(sqlite3.connect(db, timeout=0)) as conn, conn:
        conn.execute("INSERT INTO items VALUES (?)", (value,))
        return int(conn.execute("SELECT count(*) FROM items").fetchone()[0])


def test_a_locked_database_is_waited_for(tmp_path: Path) -> None:
    db = str(tmp_path / "items.db")
    with closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("CREATE TABLE items (value INTEGER)")
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO items VALUES (0)")
        call = StepCall(step="insert", arguments={"db": db, "value": 1})

        error = failure(insert, call)
        assert isinstance(error, sqlite3.OperationalError)
        assert "database is locked" in str(error)
        [fix] = REGISTRY.candidates(error, call, signature="sig", stats={}, learned=())
        remedy = fix.apply(error, call)
        assert remedy is not None
        assert fix.name == "wait-for-database-lock"
        assert remedy.call == call
        assert remedy.delay == 0.5
        assert remedy.change == {"delay": 0.5}

        holder.execute("COMMIT")  # the other writer finishes while the engine waits

    assert insert(**remedy.call.arguments) == 2


def test_the_lock_wait_doubles_up_to_30_seconds() -> None:
    fix = WaitForDatabaseLock()
    error = sqlite3.OperationalError("database table is locked")
    waits = []
    for attempt in (1, 2, 3, 7, 8, 5000):
        remedy = fix.apply(error, StepCall(step="s", attempt=attempt))
        assert remedy is not None
        waits.append(remedy.delay)
    assert waits == [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]
    assert fix.apply(sqlite3.OperationalError("no such table: items"), StepCall(step="s")) is None


# -- sockets ---------------------------------------------------------------------------------


class Server:
    """A TCP server on 127.0.0.1 that treats its n-th connection as the n-th behaviour says."""

    def __init__(self, *behaviours: Callable[[Server, socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)  # never block a test run for ever
        self.port: int = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, args=(behaviours,), daemon=True)
        self.thread.start()

    def _serve(self, behaviours: tuple[Callable[[Server, socket.socket], None], ...]) -> None:
        try:
            for behave in behaviours:
                conn, _ = self.listener.accept()
                behave(self, conn)
        except OSError:
            return

    def hold(self, conn: socket.socket) -> None:
        """Read the request, never answer."""
        conn.recv(1024)
        self.held.append(conn)

    @staticmethod
    def answer(data: bytes) -> Callable[[Server, socket.socket], None]:
        """Read the request, answer ``data``."""

        def behave(server: Server, conn: socket.socket) -> None:
            with conn:
                conn.recv(1024)
                conn.sendall(data)

        return behave

    def hang_up(self, conn: socket.socket) -> None:
        """Read the request, close without an answer."""
        with conn:
            conn.recv(1024)

    def reset(self, conn: socket.socket) -> None:
        """Read the request, then abort the connection (an RST, not a FIN)."""
        conn.recv(1024)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.listener.close()
        self.thread.join(10)


def ask(port: int, timeout: float = 0.02) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(b"ping")
        return conn.recv(16)


# -- 5. lengthen-timeout ---------------------------------------------------------------------


def test_a_socket_timeout_is_retried_with_twice_the_timeout() -> None:
    server = Server(Server.hold, Server.answer(b"pong"))
    try:
        call = StepCall(step="ask", arguments={"port": server.port, "timeout": 0.02})
        result, [remedy] = heal(ask, call, "lengthen-timeout", raises=TimeoutError)
    finally:
        server.close()

    assert result == b"pong"
    assert remedy.call.arguments["timeout"] == 0.04
    assert remedy.change == {"timeout": [0.02, 0.04]}


def test_the_timeout_is_capped() -> None:
    fix = LengthenTimeout()
    error = TimeoutError("timed out")
    call = StepCall(step="s", arguments={"timeout": 200})
    remedy = fix.apply(error, call)
    assert remedy is not None
    assert remedy.call.arguments["timeout"] == 300  # the default cap

    capped = StepCall(
        step="s", arguments={"seconds": 50}, hints={"timeout": "seconds", "timeout_cap": 60}
    )
    remedy = fix.apply(error, capped)
    assert remedy is not None
    assert remedy.call.arguments["seconds"] == 60
    assert not fix.matches(error, remedy.call)
    assert fix.apply(error, remedy.call) is None


def test_timeouts_by_name_and_what_cannot_be_lengthened() -> None:
    import subprocess

    fix = LengthenTimeout()
    call = StepCall(step="s", arguments={"timeout": 1.5})
    assert fix.matches(subprocess.TimeoutExpired(["job"], 1.5), call)
    assert not fix.matches(ValueError("slow"), call)
    assert not fix.matches(TimeoutError(), StepCall(step="s", arguments={"timeout": None}))
    assert not fix.matches(TimeoutError(), StepCall(step="s", arguments={"url": "x"}))


# -- 6. reconnect-after-dropped-connection ---------------------------------------------------


def fetch_status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_server_that_hangs_up_is_called_again_after_a_wait() -> None:
    server = Server(
        Server.hang_up, Server.answer(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    )
    try:
        call = StepCall(step="fetch_status", arguments={"port": server.port})
        result, [remedy] = heal(
            fetch_status,
            call,
            "reconnect-after-dropped-connection",
            raises=http.client.RemoteDisconnected,
        )
    finally:
        server.close()

    assert result == 200
    assert remedy.call == call
    assert remedy.delay == 1.0


def test_a_reset_connection_is_called_again() -> None:
    server = Server(Server.reset, Server.answer(b"pong"))
    try:
        call = StepCall(step="ask", arguments={"port": server.port, "timeout": 10.0})
        result, _ = heal(
            ask, call, "reconnect-after-dropped-connection", raises=ConnectionResetError
        )
    finally:
        server.close()

    assert result == b"pong"


def test_a_refused_connection_is_called_again_once_the_service_listens() -> None:
    def connect(port: int) -> str:
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            return "connected"

    with socket.socket() as service:
        service.bind(("127.0.0.1", 0))  # bound, not listening yet: connections are refused
        call = StepCall(step="connect", arguments={"port": service.getsockname()[1]})
        error = failure(connect, call)
        assert isinstance(error, ConnectionRefusedError)
        [fix] = REGISTRY.candidates(error, call, signature="sig", stats={}, learned=())
        remedy = fix.apply(error, call)
        assert remedy is not None

        service.listen()  # the service came up during the wait
        assert connect(**remedy.call.arguments) == "connected"


def test_the_reconnect_wait_doubles_up_to_a_minute_and_sees_through_wrapping() -> None:
    fix = ReconnectAfterDroppedConnection()
    waits = []
    for attempt in (1, 2, 6, 7, 5000):
        remedy = fix.apply(BrokenPipeError(), StepCall(step="s", attempt=attempt))
        assert remedy is not None
        waits.append(remedy.delay)
    assert waits == [1.0, 2.0, 32.0, 60.0, 60.0]

    wrapped = RuntimeError("upload failed")
    wrapped.__cause__ = ConnectionAbortedError("aborted")
    assert fix.matches(wrapped, StepCall(step="s"))
    assert not fix.matches(OSError("disk full"), StepCall(step="s"))


# -- 7. halve-batch-size ---------------------------------------------------------------------

ROW = 2**20


def load_rows(batch_size: int) -> int:
    buffer = bytearray(batch_size * ROW)  # the whole batch in memory at once
    return len(buffer)


@contextmanager
def memory_limit(headroom: int) -> Iterator[None]:
    """Caps this process's address space a little above what it maps now, as a container's
    memory limit would; allocations beyond it really fail."""
    resource = pytest.importorskip("resource")
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc/self/status to size the limit")
    mapped = next(
        int(line.split()[1]) * 1024
        for line in status.read_text().splitlines()
        if line.startswith("VmSize:")
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + headroom, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_batch_too_big_for_memory_is_halved_until_it_fits() -> None:
    call = StepCall(step="load_rows", arguments={"batch_size": 1024})  # 1 GiB at once

    with memory_limit(64 * ROW):
        result, remedies = heal(load_rows, call, "halve-batch-size", raises=MemoryError, rounds=10)

    sizes = [remedy.call.arguments["batch_size"] for remedy in remedies]
    assert sizes[:4] == [512, 256, 128, 64]
    assert result == sizes[-1] * ROW
    assert remedies[0].change == {"batch_size": [1024, 512]}


def test_a_hinted_batch_parameter_and_the_floor_of_one() -> None:
    fix = REGISTRY.get("halve-batch-size")
    call = StepCall(step="embed", arguments={"size": 3}, hints={"batch_size": "size"})
    remedy = fix.apply(MemoryError(), call)
    assert remedy is not None
    assert remedy.call.arguments == {"size": 1}
    assert not fix.matches(MemoryError(), remedy.call)
    assert fix.apply(MemoryError(), remedy.call) is None
    assert not fix.matches(MemoryError(), StepCall(step="s", arguments={"rows": 8}))


# -- 8. write-to-fallback-location -----------------------------------------------------------


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A file path this process may not create: a read-only directory, or (as root, whom file
    modes do not stop) a path in sysfs."""
    if os.geteuid() == 0:
        path = Path("/sys/onward-report.txt")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        path = locked / "report.txt"
    try:
        path.write_text("probe", encoding="utf-8")
    except PermissionError:
        pass
    else:
        path.unlink()
        pytest.skip(f"{path} is writable here")
    yield path
    if path.parent.is_relative_to(tmp_path):
        path.parent.chmod(0o700)


def test_an_unwritable_output_goes_to_the_declared_fallback(
    unwritable: Path, tmp_path: Path
) -> None:
    fallback = tmp_path / "fallback"
    call = StepCall(
        step="save",
        arguments={"path": str(unwritable), "text": "done"},
        hints={"fallback_dir": str(fallback)},
    )

    _, [remedy] = heal(save, call, "write-to-fallback-location")

    moved = fallback / unwritable.name
    assert moved.read_text(encoding="utf-8") == "done"
    assert remedy.call.arguments["path"] == str(moved)
    assert remedy.change == {"path": [str(unwritable), str(moved)]}


def test_no_fallback_without_the_hint(unwritable: Path) -> None:
    call = StepCall(step="save", arguments={"path": str(unwritable), "text": "done"})
    error = failure(save, call)

    assert isinstance(error, PermissionError)
    assert names(error, call) == []
    assert REGISTRY.get("write-to-fallback-location").apply(error, call) is None


# -- 9. extract-json-from-noise --------------------------------------------------------------


def parse(output: str) -> Any:
    return json.loads(output)


def test_json_with_log_lines_around_it_is_extracted() -> None:
    output = (
        "[200] OK\n"
        "2024-05-01 12:00:01 INFO starting {job}\n"
        '{"ok": true, "items": [1, 2, {"name": "a}b"}]}\n'
        "2024-05-01 12:00:02 INFO done\n"
    )
    call = StepCall(step="parse", arguments={"output": output})

    result, [remedy] = heal(parse, call, "extract-json-from-noise")

    assert result == {"ok": True, "items": [1, 2, {"name": "a}b"}]}
    assert remedy.call.arguments["output"] == '{"ok": true, "items": [1, 2, {"name": "a}b"}]}'


def test_an_array_after_a_chatty_preamble() -> None:
    call = StepCall(
        step="parse", arguments={"output": "Sure! Here are the ids:\n[3, 5, 8]\nAnything else?"}
    )

    result, _ = heal(parse, call, "extract-json-from-noise")

    assert result == [3, 5, 8]


def test_text_without_json_inside_is_not_fixed() -> None:
    call = StepCall(step="parse", arguments={"output": "ERROR backend unavailable {retry later"})
    error = failure(parse, call)

    assert names(error, call) == []
    assert REGISTRY.get("extract-json-from-noise").apply(error, call) is None


# -- 10. strip-markdown-fences ---------------------------------------------------------------


def load_code(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(code, "<generated>", "exec"), namespace)
    return namespace


def test_code_in_markdown_fences_is_unwrapped() -> None:
    answer = (
        "Here is the function you asked for:\n\n"
        "```python\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "```\n\n"
        "And a helper:\n"
        "```\n"
        "def double(x):\n"
        "    return add(x, x)\n"
        "```\n"
        "Hope it helps!"
    )
    call = StepCall(step="load_code", arguments={"code": answer})
    namespace, _ = heal(load_code, call, "strip-markdown-fences", raises=SyntaxError)

    assert namespace["add"](2, 3) == 5
    assert namespace["double"](4) == 8


def test_fenced_code_that_still_does_not_compile_is_not_fixed() -> None:
    call = StepCall(step="load_code", arguments={"code": "```python\ndef broken(:\n    pass\n```"})
    error = failure(load_code, call)
    fix = REGISTRY.get("strip-markdown-fences")

    assert fix.matches(error, call)
    assert fix.apply(error, call) is None


# -- 11. normalise-indentation ---------------------------------------------------------------


def test_tabs_mixed_with_spaces_are_expanded() -> None:
    code = "def total(xs):\n    s = 0\n\tfor x in xs:\n        s += x\n    return s\n"
    call = StepCall(step="load_code", arguments={"code": code})
    namespace, [remedy] = heal(load_code, call, "normalise-indentation", raises=TabError)

    assert namespace["total"]([1, 2, 3]) == 6
    assert remedy.change == {"code": {"tabsize": 4, "dedented": True}}


def test_code_indented_as_a_whole_is_dedented() -> None:
    code = "    def area(w, h):\n        return w * h\n"
    call = StepCall(step="load_code", arguments={"code": code})
    namespace, _ = heal(load_code, call, "normalise-indentation", raises=IndentationError)

    assert namespace["area"](2, 3) == 6


def test_indentation_that_no_tab_size_explains_is_not_fixed() -> None:
    code = "def f(x):\n    if x:\n        return 1\n      return 0\n"
    call = StepCall(step="load_code", arguments={"code": code})
    error = failure(load_code, call)

    assert isinstance(error, IndentationError)
    assert REGISTRY.get("normalise-indentation").apply(error, call) is None


# -- 12. use-alternative-module --------------------------------------------------------------


def dumps(data: Any, module: str = "onward_missing_fast_json") -> str:
    return str(importlib.import_module(module).dumps(data))


def test_a_missing_optional_module_is_replaced_by_its_alternative() -> None:
    call = StepCall(
        step="dumps",
        arguments={"data": {"a": 1}, "module": "onward_missing_fast_json"},
        hints={"alternatives": {"onward_missing_fast_json": "json"}},
    )
    result, [remedy] = heal(dumps, call, "use-alternative-module", raises=ModuleNotFoundError)

    assert result == '{"a": 1}'
    assert remedy.change == {"module": ["onward_missing_fast_json", "json"]}


def test_no_alternative_without_the_hint_or_for_another_module() -> None:
    call = StepCall(step="dumps", arguments={"data": 1, "module": "onward_missing_fast_json"})
    error = failure(dumps, call)
    assert names(error, call) == []

    # The step's module is there; something it imports is not: swapping the step's module
    # would be a guess.
    other = ModuleNotFoundError("No module named 'onward_dependency'", name="onward_dependency")
    hinted = StepCall(
        step="dumps",
        arguments={"data": 1, "module": "json"},
        hints={"alternatives": {"onward_dependency": "json"}},
    )
    assert names(other, hinted) == []


# -- 13. use-declared-default ----------------------------------------------------------------


def greeting(config: dict[str, str]) -> str:
    return f"{config['name']} in {config['region']}"


def test_a_missing_configuration_key_gets_its_declared_default() -> None:
    config = {"name": "crawler"}
    call = StepCall(
        step="greeting", arguments={"config": config}, hints={"defaults": {"region": "eu"}}
    )
    result, [remedy] = heal(greeting, call, "use-declared-default", raises=KeyError)

    assert result == "crawler in eu"
    assert config == {"name": "crawler"}  # the caller's mapping is not changed
    assert remedy.change == {"config": {"added": {"region": "eu"}}}


def test_a_key_without_a_default_is_not_invented() -> None:
    call = StepCall(
        step="greeting",
        arguments={"config": {"region": "eu"}},
        hints={"defaults": {"region": "us"}},
    )
    error = failure(greeting, call)

    assert names(error, call) == []
    assert REGISTRY.get("use-declared-default").apply(error, call) is None
