"""The built-in fixes: failures that agents and automations really meet, and what to change.

Each fix finds the argument it changes by the role the step declared in its hints
(``@engine.step(hints={"batch_size": "size"})``), else by a conventional parameter name; values it
needs and cannot guess (a fallback directory, a module's alternative, a key's default) come only
from the hints. A fix whose argument or hint is missing does not match, and one that cannot make
progress (a batch of 1, a timeout at its cap) returns None: nothing is retried for nothing.

An error is looked for in the exception and in its causes (``__cause__``, then ``__context__``),
so a step that wraps a ``ConnectionResetError`` in its own error still gets a reconnect.
Each fix but ``lengthen-timeout`` declares the classes it looks for there as its ``error_types``,
so that the registry asks it only about errors that hold one.

::

    decode-with-detected-encoding       UnicodeDecodeError -> encoding: utf-8-sig, cp1252, latin-1
    encode-output-with-replacement      UnicodeEncodeError -> encoding utf-8, else errors="replace"
    create-missing-parent-directory     FileNotFoundError writing a file -> its directory created
    wait-for-database-lock              sqlite3 "database is locked" -> same call, after a wait
    lengthen-timeout                    a timeout -> timeout doubled, up to the timeout_cap hint
    reconnect-after-dropped-connection  reset, refused, broken pipe -> same call, after a wait
    halve-batch-size                    MemoryError -> batch size halved
    write-to-fallback-location          PermissionError writing a file -> same name in fallback_dir
    extract-json-from-noise             JSONDecodeError -> the JSON found inside the text
    strip-markdown-fences               SyntaxError in fenced code -> the code inside the fences
    normalise-indentation               TabError, IndentationError -> tabs expanded, dedented
    use-alternative-module              ModuleNotFoundError -> the module's declared alternative
    use-declared-default                KeyError -> the mapping with the key's declared default
"""

from __future__ import annotations

import codecs
import functools
import http.client
import json
import os
import re
import sqlite3
import textwrap
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, TypeGuard, TypeVar

import msgspec

from onward.healing.fixes import Fix, FixRegistry, Remedy, StepCall

__all__ = [
    "CreateMissingParentDirectory",
    "DecodeWithDetectedEncoding",
    "EncodeOutputWithReplacement",
    "ExtractJsonFromNoise",
    "HalveBatchSize",
    "LengthenTimeout",
    "NormaliseIndentation",
    "ReconnectAfterDroppedConnection",
    "StripMarkdownFences",
    "UseAlternativeModule",
    "UseDeclaredDefault",
    "WaitForDatabaseLock",
    "WriteToFallbackLocation",
    "builtin_fixes",
    "default_registry",
]

_E = TypeVar("_E", bound=BaseException)

_OUTPUT_PARAMETERS = ("path", "output", "output_path", "dest")
"""Parameter names taken for a step's output file when it declares no ``output`` hint."""


# -- helpers ---------------------------------------------------------------------------------


def _chain(error: BaseException) -> tuple[BaseException, ...]:
    """The error, then its causes (explicit before implicit), each once."""
    if error.__cause__ is None and error.__context__ is None:
        return (error,)  # most errors: nothing to walk
    links: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        links.append(current)
        current = current.__cause__ or current.__context__
    return tuple(links)


def _find(error: BaseException, kind: type[_E] | tuple[type[_E], ...]) -> _E | None:
    """The first link of the error's chain (as :func:`_chain` walks it) that is a ``kind``
    (one of them, for a tuple)."""
    # Every fix asked about an error looks for its kind: the error itself first, and the chain
    # walked in place only when there is one.
    if isinstance(error, kind):
        return error
    if error.__cause__ is None and error.__context__ is None:
        return None
    seen = {id(error)}
    current = error.__cause__ or error.__context__
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _parameter(call: StepCall, role: str, default: str | None = None) -> str | None:
    """The parameter that plays ``role``: the one the hints name, else ``default``; None if the
    step has no such parameter."""
    name = call.hints.get(role, default)
    return name if isinstance(name, str) and name in call.arguments else None


def _with(call: StepCall, parameter: str, value: Any) -> StepCall:
    """``call.with_arguments(**{parameter: value})`` for one of the call's parameters: each fix
    found ``parameter`` among them, so it is not looked for again."""
    return msgspec.structs.replace(call, arguments={**call.arguments, parameter: value})


def _json(value: Any) -> Any:
    """``value`` if it encodes as JSON (a change is recorded in an event), else its repr."""
    if isinstance(value, PurePath):
        return str(value)
    try:
        msgspec.json.encode(value)
    except (TypeError, msgspec.EncodeError):
        return repr(value)
    return value


def _same_file(value: Any, filename: Any) -> bool:
    # a tuple: ``str | os.PathLike`` would build a union at every call
    if not isinstance(value, _PATH_TYPES) or not isinstance(filename, _PATH_TYPES):
        return False
    one: str | bytes = os.fspath(value)
    other: str | bytes = os.fspath(filename)
    if one == other and os.path.isabs(one):
        return True  # one absolute name: abspath() would give both the same, and not raise
    return os.path.abspath(one) == os.path.abspath(other)


_PATH_TYPES = (str, os.PathLike)


def _absolute_parent(filename: Any) -> str:
    """``str(Path(filename).absolute().parent)``, read off the name where pathlib would keep it
    as it is: an absolute POSIX name (after the working directory, for a relative one) without
    empty or ``.`` parts, a trailing slash or a leading ``//``."""
    name = os.fspath(filename)
    if type(name) is str and _POSIX_NAMES:
        if name[:1] != "/":
            name = f"{os.getcwd()}/{name}"  # Path.absolute() prepends it so
        if (
            name[1:2] != "/"
            and "//" not in name
            and "/./" not in name
            and not name.endswith(("/", "/."))
        ):
            return name[: name.rfind("/")] or "/"
    return str(Path(name).absolute().parent)


# whether names are POSIX ones, that pathlib parses at "/" alone
_POSIX_NAMES = os.sep == "/" and os.altsep is None


def _output_parameter(call: StepCall, filename: Any) -> str | None:
    """The output-path parameter whose value is the file the error names."""
    hinted = call.hints.get("output")
    names = (hinted, *_OUTPUT_PARAMETERS) if isinstance(hinted, str) else _OUTPUT_PARAMETERS
    for name in names:
        if name in call.arguments and _same_file(call.arguments[name], filename):
            return name
    return None


def _backoff(attempt: int, base: float, cap: float) -> float:
    # The exponent is bounded so that attempt 5000 is the cap, not an OverflowError.
    return float(min(cap, base * 2.0 ** min(64, max(0, attempt - 1))))


def _compiles(code: str, name: str) -> bool:
    try:
        compile(code, f"<{name}>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


# -- text encodings --------------------------------------------------------------------------


class DecodeWithDetectedEncoding:
    """Text that is not in the encoding it was read with (a cp1252 export read as UTF-8).

    Changes the step's ``encoding`` argument (hint ``"encoding"`` names another parameter) to the
    first of utf-8-sig, cp1252 and latin-1 that decodes the bytes the error carries; latin-1
    decodes anything, so some encoding is always found. No parameter: no match.
    """

    name = "decode-with-detected-encoding"
    error_types: tuple[type[BaseException], ...] = (UnicodeDecodeError,)
    encodings = ("utf-8-sig", "cp1252", "latin-1")

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return (
            _find(error, UnicodeDecodeError) is not None
            and _parameter(call, "encoding", "encoding") is not None
        )

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        found = _find(error, UnicodeDecodeError)
        parameter = _parameter(call, "encoding", "encoding")
        if found is None or parameter is None:
            return None
        data = bytes(found.object)
        failed = {_codec(found.encoding), _codec(call.arguments[parameter])}
        for encoding in self.encodings:
            if _codec(encoding) in failed:
                continue
            try:
                # Incremental, not final: the bytes may be one chunk cut inside a character.
                codecs.getincrementaldecoder(encoding)().decode(data, final=False)
            except UnicodeDecodeError:
                continue
            return Remedy(
                call=_with(call, parameter, encoding),
                change={parameter: [_json(call.arguments[parameter]), encoding]},
            )
        return None


def _codec(encoding: Any) -> str | None:
    if not isinstance(encoding, str):
        return None
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding


class EncodeOutputWithReplacement:
    """Text with characters its output encoding cannot hold (a "€" written as ASCII).

    Changes the step's ``encoding`` argument to utf-8, which holds every character; when there is
    no such parameter, or it is utf-8 already, sets its ``errors`` argument to ``"replace"``
    (hints ``"encoding"`` and ``"errors"`` name other parameters).
    """

    name = "encode-output-with-replacement"
    error_types: tuple[type[BaseException], ...] = (UnicodeEncodeError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return _find(error, UnicodeEncodeError) is not None and self._change(call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        change = self._change(call)
        if _find(error, UnicodeEncodeError) is None or change is None:
            return None
        parameter, value = change
        return Remedy(
            call=_with(call, parameter, value),
            change={parameter: [_json(call.arguments[parameter]), value]},
        )

    @staticmethod
    def _change(call: StepCall) -> tuple[str, str] | None:
        encoding = _parameter(call, "encoding", "encoding")
        if encoding is not None and _codec(call.arguments[encoding]) != "utf-8":
            return encoding, "utf-8"
        errors = _parameter(call, "errors", "errors")
        if errors is not None and call.arguments[errors] != "replace":
            return errors, "replace"
        return None


# -- files -----------------------------------------------------------------------------------


class CreateMissingParentDirectory:
    """A file written into a directory that does not exist yet.

    Matches a FileNotFoundError whose file is the step's output path (hint ``"output"``, else a
    parameter named path, output, output_path or dest) and whose directory is missing. Creates
    that directory, with its parents, then runs the same call again.
    """

    name = "create-missing-parent-directory"
    error_types: tuple[type[BaseException], ...] = (FileNotFoundError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return self._directory(error, call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        directory = self._directory(error, call)
        if directory is None:
            return None
        try:
            os.mkdir(directory)  # the usual case: only the file's own directory is missing
        except OSError:
            # its parents too, or a directory made meanwhile: as pathlib sees to it
            Path(directory).mkdir(parents=True, exist_ok=True)
        return Remedy(call=call, change={"created_directory": directory})

    @staticmethod
    def _directory(error: BaseException, call: StepCall) -> str | None:
        found = _find(error, FileNotFoundError)
        if found is None or _output_parameter(call, found.filename) is None:
            return None
        directory = _absolute_parent(found.filename)
        try:
            os.stat(directory)
        except FileNotFoundError:
            return directory
        except (OSError, ValueError):
            # not ENOENT: pathlib says whether that means "missing" (ENOTDIR) or is raised
            return None if Path(directory).exists() else directory
        return None


class WriteToFallbackLocation:
    """A file written where the step may not write (a read-only mount, another user's folder).

    Matches a PermissionError whose file is the step's output path (as
    :class:`CreateMissingParentDirectory` finds it) when the step declared a ``fallback_dir``
    hint. Creates that directory and points the output argument at the same file name in it.
    """

    name = "write-to-fallback-location"
    error_types: tuple[type[BaseException], ...] = (PermissionError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return self._target(error, call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        target = self._target(error, call)
        if target is None:
            return None
        parameter, path = target
        path.parent.mkdir(parents=True, exist_ok=True)
        old = call.arguments[parameter]
        new: str | Path = path if isinstance(old, os.PathLike) else str(path)
        return Remedy(
            call=_with(call, parameter, new),
            change={parameter: [os.fspath(old), str(path)]},
        )

    @staticmethod
    def _target(error: BaseException, call: StepCall) -> tuple[str, Path] | None:
        found = _find(error, PermissionError)
        fallback = call.hints.get("fallback_dir")
        if found is None or not isinstance(fallback, _PATH_TYPES):
            return None
        parameter = _output_parameter(call, found.filename)
        if parameter is None:
            return None
        path = Path(fallback, Path(os.fspath(call.arguments[parameter])).name)
        return None if _same_file(path, call.arguments[parameter]) else (parameter, path)


# -- waiting ---------------------------------------------------------------------------------


class WaitForDatabaseLock:
    """An SQLite database (or table) locked by another connection's write transaction.

    Runs the same call again after a wait that doubles with each attempt: 0.5 s, 1 s, 2 s, ...
    up to 30 s.
    """

    name = "wait-for-database-lock"
    error_types: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
    messages = ("database is locked", "database table is locked")

    def matches(self, error: BaseException, call: StepCall) -> bool:
        found = _find(error, sqlite3.OperationalError)
        if found is None:
            return False
        text = str(found).lower()
        for message in self.messages:  # noqa: SIM110 - any() of a generator costs more
            if message in text:
                return True
        return False

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        if not self.matches(error, call):
            return None
        delay = _backoff(call.attempt, 0.5, 30.0)
        return Remedy(call=call, change={"delay": delay}, delay=delay)


class ReconnectAfterDroppedConnection:
    """A connection the other side reset, refused, aborted or closed without an answer.

    Runs the same call again after a wait that doubles with each attempt: 1 s, 2 s, 4 s, ... up
    to 60 s.
    """

    name = "reconnect-after-dropped-connection"
    errors: tuple[type[BaseException], ...] = (
        ConnectionResetError,  # http.client.RemoteDisconnected is one
        ConnectionAbortedError,
        ConnectionRefusedError,
        BrokenPipeError,
        http.client.RemoteDisconnected,
    )
    error_types = errors

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return _find(error, self.errors) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        if not self.matches(error, call):
            return None
        delay = _backoff(call.attempt, 1.0, 60.0)
        return Remedy(call=call, change={"delay": delay}, delay=delay)


class LengthenTimeout:
    """An operation that ran out of time (a slow server, a long model call).

    Matches TimeoutError (socket.timeout and asyncio.TimeoutError are the same class) and any
    error whose class name contains "Timeout" (``subprocess.TimeoutExpired``, httpx's
    ``ReadTimeout``). Doubles the step's ``timeout`` argument (hint ``"timeout"`` names another
    parameter), up to the ``timeout_cap`` hint (default 300 s); None at the cap, or when the
    timeout is not a number (None: no timeout at all).
    """

    name = "lengthen-timeout"
    cap = 300.0

    def matches(self, error: BaseException, call: StepCall) -> bool:
        # The call first: it is asked about every error (a timeout is known by its class name,
        # so it declares no error_types), and most steps have no timeout to lengthen: whether
        # it has one is read inline.
        parameter = call.hints.get("timeout", "timeout")
        if not isinstance(parameter, str) or parameter not in call.arguments:
            return False
        return self._longer(call, parameter) is not None and (
            isinstance(error, TimeoutError) or self._timed_out(error)
        )

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        parameter = _parameter(call, "timeout", "timeout")
        if parameter is None or not (isinstance(error, TimeoutError) or self._timed_out(error)):
            return None
        longer = self._longer(call, parameter)
        if longer is None:
            return None
        old, new = longer
        return Remedy(call=_with(call, parameter, new), change={parameter: [old, new]})

    @staticmethod
    def _timed_out(error: BaseException) -> bool:
        for link in _chain(error):
            if isinstance(link, TimeoutError):
                return True
            for kind in type(link).__mro__:
                if "Timeout" in kind.__name__:
                    return True
        return False

    def _longer(self, call: StepCall, parameter: str) -> tuple[float, float] | None:
        """The step's timeout (``parameter``) and the one to try, None if it cannot grow."""
        old = call.arguments[parameter]
        cap = call.hints.get("timeout_cap", self.cap)
        # numbers, not bools (inline: every error asks this fix)
        if (
            not isinstance(old, _NUMBERS)
            or isinstance(old, bool)
            or not isinstance(cap, _NUMBERS)
            or isinstance(cap, bool)
            or old <= 0
            or old >= cap
        ):
            return None
        return old, min(cap, old * 2)


# a tuple: ``int | float`` would build a union at every call
_NUMBERS = (int, float)


# -- resources -------------------------------------------------------------------------------


class HalveBatchSize:
    """A batch too large for the memory there is.

    Halves the step's batch size (the parameter the ``"batch_size"`` hint names, else
    ``batch_size``), rounding down, never below 1; None when it is 1 already. Applied again on
    each MemoryError, it finds a size that fits.
    """

    name = "halve-batch-size"
    error_types: tuple[type[BaseException], ...] = (MemoryError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return _find(error, MemoryError) is not None and self._parameter(call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        parameter = self._parameter(call)
        if _find(error, MemoryError) is None or parameter is None:
            return None
        old = call.arguments[parameter]
        new = max(1, old // 2)
        return Remedy(call=_with(call, parameter, new), change={parameter: [old, new]})

    @staticmethod
    def _parameter(call: StepCall) -> str | None:
        parameter = _parameter(call, "batch_size", "batch_size")
        if parameter is None:
            return None
        size = call.arguments[parameter]
        return (
            parameter if isinstance(size, int) and not isinstance(size, bool) and size > 1 else None
        )


# -- generated text and code -----------------------------------------------------------------


class ExtractJsonFromNoise:
    """JSON with log lines or prose around it (a tool's stdout, a model's chatty answer).

    Matches a JSONDecodeError on a text argument (hint ``"text"``, else the first string argument
    that is the document that failed) that has a JSON object or array inside. Replaces the
    argument with the longest one found: ``[200] OK`` before the payload does not win.
    """

    name = "extract-json-from-noise"
    error_types: tuple[type[BaseException], ...] = (json.JSONDecodeError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return self._extracted(error, call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        extracted = self._extracted(error, call)
        if extracted is None:
            return None
        parameter, text, start, end = extracted
        return Remedy(
            call=_with(call, parameter, text[start:end]),
            change={parameter: {"kept": [start, end], "length": len(text)}},
        )

    @staticmethod
    def _extracted(error: BaseException, call: StepCall) -> tuple[str, str, int, int] | None:
        found = _find(error, json.JSONDecodeError)
        if found is None:
            return None
        parameter = _parameter(call, "text")
        if not parameter:  # the document that failed (a loop: a generator costs more)
            parameter = None
            for name, value in call.arguments.items():
                if isinstance(value, str) and value == found.doc:
                    parameter = name
                    break
        if parameter is None or not isinstance(call.arguments[parameter], str):
            return None
        text: str = call.arguments[parameter]
        span = _longest_json_cached(text) if len(text) <= _CACHED_TEXT else _longest_json(text)
        if span is None:
            return None
        start, end = span
        return None if start == 0 and end == len(text) else (parameter, text, start, end)


_OPENING = re.compile(r"[\[{]")
_DECODER = json.JSONDecoder()  # holds no state between calls, as json.loads's own


def _longest_json(text: str) -> tuple[int, int] | None:
    """The span of the longest JSON object or array in ``text``."""
    decoder = _DECODER
    best: tuple[int, int] | None = None
    position = 0
    while (match := _OPENING.search(text, position)) is not None:
        start = match.start()
        try:
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if best is None or end - start > best[1] - best[0]:
            best = (start, end)
        position = end  # what lies inside is shorter
    return best


# matches() then apply() look for the JSON of one text: the second time is read from here
_CACHED_TEXT = 65536
_longest_json_cached = functools.lru_cache(maxsize=4)(_longest_json)


_FENCE = re.compile(
    r"^[ \t]*```[ \t]*(?P<language>[\w+.-]*)[^\n]*\n(?P<code>.*?)(?:^[ \t]*```[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
_PYTHON = {"", "python", "python3", "py", "py3"}


class StripMarkdownFences:
    """Generated code still wrapped in Markdown (prose, then ```python ... ```).

    Matches a SyntaxError while the step's code argument (hint ``"code"``, else the first string
    argument holding a ````` fence) has fenced blocks. Replaces the argument with the code of the
    Python blocks (all of them joined, else the first that compiles on its own), checked with
    ``compile(..., "exec")``; None if it still does not compile.
    """

    name = "strip-markdown-fences"
    error_types: tuple[type[BaseException], ...] = (SyntaxError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return _find(error, SyntaxError) is not None and self._parameter(call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        parameter = self._parameter(call)
        if _find(error, SyntaxError) is None or parameter is None:
            return None
        code: str = call.arguments[parameter]
        blocks = [
            textwrap.dedent(m["code"])
            for m in _FENCE.finditer(code)
            if m["language"].lower() in _PYTHON
        ]
        for candidate in ("\n".join(blocks), *blocks):
            if candidate.strip() and _compiles(candidate, call.step):
                return Remedy(
                    call=_with(call, parameter, candidate),
                    change={parameter: {"unfenced": len(blocks), "lines": candidate.count("\n")}},
                )
        return None

    @staticmethod
    def _parameter(call: StepCall) -> str | None:
        parameter = _parameter(call, "code")
        if not parameter:  # the first fenced text (a loop: a generator costs more)
            for name, value in call.arguments.items():
                if isinstance(value, str) and "```" in value:
                    return name
            return None
        value = call.arguments[parameter]
        return parameter if isinstance(value, str) and "```" in value else None


class NormaliseIndentation:
    """Generated code with tabs and spaces mixed, or indented as a whole (cut from a class).

    Matches TabError and IndentationError on the step's code argument (hint ``"code"``, else the
    first string argument that does not compile for its indentation). Expands the tabs in each
    line's indentation (4 columns, else 8), then dedents the whole; the result must compile.
    """

    name = "normalise-indentation"
    error_types: tuple[type[BaseException], ...] = (IndentationError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return _find(error, IndentationError) is not None and self._parameter(call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        parameter = self._parameter(call)
        if _find(error, IndentationError) is None or parameter is None:
            return None
        code: str = call.arguments[parameter]
        for tabsize in (4, 8):
            candidate = textwrap.dedent(_expand_indentation(code, tabsize))
            if candidate != code and _compiles(candidate, call.step):
                return Remedy(
                    call=_with(call, parameter, candidate),
                    change={parameter: {"tabsize": tabsize, "dedented": True}},
                )
        return None

    @staticmethod
    def _parameter(call: StepCall) -> str | None:
        hinted = _parameter(call, "code")
        if hinted is not None:
            return hinted if isinstance(call.arguments[hinted], str) else None
        for name, value in call.arguments.items():
            if isinstance(value, str) and "\n" in value:
                try:
                    compile(value, f"<{call.step}>", "exec")
                except IndentationError:
                    return name
                except (SyntaxError, ValueError):
                    continue
        return None


def _expand_indentation(code: str, tabsize: int) -> str:
    # Only the indentation: a tab inside a string literal is data.
    lines = []
    for line in code.splitlines(keepends=True):
        body = line.lstrip(" \t")
        lines.append(line[: len(line) - len(body)].expandtabs(tabsize) + body)
    return "".join(lines)


# -- configuration ---------------------------------------------------------------------------


class UseAlternativeModule:
    """An optional module that is not installed (``ujson`` where ``json`` will do).

    Matches a ModuleNotFoundError for the module the step's module argument names (hint
    ``"module_param"``, default ``module``) when the ``alternatives`` hint maps it to another.
    Sets the argument to the alternative.
    """

    name = "use-alternative-module"
    error_types: tuple[type[BaseException], ...] = (ModuleNotFoundError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return self._alternative(error, call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        alternative = self._alternative(error, call)
        if alternative is None:
            return None
        parameter, module = alternative
        return Remedy(
            call=_with(call, parameter, module),
            change={parameter: [call.arguments[parameter], module]},
        )

    @staticmethod
    def _alternative(error: BaseException, call: StepCall) -> tuple[str, str] | None:
        found = _find(error, ModuleNotFoundError)
        alternatives = call.hints.get("alternatives")
        parameter = _parameter(call, "module_param", "module")
        if found is None or not _is_mapping(alternatives) or parameter is None:
            return None
        wanted, missing = call.arguments[parameter], found.name
        # The step's own module is missing, not one that it imports in turn.
        if (
            not isinstance(wanted, str)
            or not missing
            or wanted.split(".")[0] != missing.split(".")[0]
        ):
            return None
        module = alternatives.get(wanted, alternatives.get(missing))
        if not isinstance(module, str) or module == wanted:
            return None
        return parameter, module


class UseDeclaredDefault:
    """A configuration without a key the step needs (an old config file, a partial override).

    Matches a KeyError for a key the ``defaults`` hint gives a value, when the step's mapping
    argument (hint ``"config"``, else the first mapping argument without that key) lacks it.
    Passes a copy of the mapping with the default added; the caller's mapping is untouched.
    """

    name = "use-declared-default"
    error_types: tuple[type[BaseException], ...] = (KeyError,)

    def matches(self, error: BaseException, call: StepCall) -> bool:
        return self._missing(error, call) is not None

    def apply(self, error: BaseException, call: StepCall) -> Remedy | None:
        missing = self._missing(error, call)
        if missing is None:
            return None
        parameter, key, value = missing
        completed = {**call.arguments[parameter], key: value}
        label = key if isinstance(key, str) else repr(key)
        return Remedy(
            call=_with(call, parameter, completed),
            change={parameter: {"added": {label: _json(value)}}},
        )

    @staticmethod
    def _missing(error: BaseException, call: StepCall) -> tuple[str, Any, Any] | None:
        found = _find(error, KeyError)
        defaults = call.hints.get("defaults")
        if found is None or not found.args or not _is_mapping(defaults):
            return None
        key = found.args[0]
        try:
            if key not in defaults:
                return None
        except TypeError:  # an unhashable key
            return None
        hinted = _parameter(call, "config")
        if hinted is not None:
            value = call.arguments[hinted]
            return (hinted, key, defaults[key]) if _is_mapping(value) and key not in value else None
        for name, value in call.arguments.items():
            if _is_mapping(value) and key not in value:
                return name, key, defaults[key]
        return None


def _is_mapping(value: Any) -> TypeGuard[Mapping[Any, Any]]:
    # a dict first: isinstance() of an ABC costs more
    return type(value) is dict or isinstance(value, Mapping)


def builtin_fixes() -> tuple[Fix, ...]:
    """A new instance of each built-in fix, in the order they are registered.

    Returns:
        The fixes of the table in this module's docstring.
    """
    return (
        DecodeWithDetectedEncoding(),
        EncodeOutputWithReplacement(),
        CreateMissingParentDirectory(),
        WaitForDatabaseLock(),
        LengthenTimeout(),
        ReconnectAfterDroppedConnection(),
        HalveBatchSize(),
        WriteToFallbackLocation(),
        ExtractJsonFromNoise(),
        StripMarkdownFences(),
        NormaliseIndentation(),
        UseAlternativeModule(),
        UseDeclaredDefault(),
    )


def default_registry() -> FixRegistry:
    """A new registry holding every built-in fix, in their order.

    Returns:
        A registry of its own: registering more fixes in it changes no other.
    """
    return FixRegistry(builtin_fixes())
