"""The survey's work on one file, and its results (part of ``onward demo``).

Per file, two durable steps: ``read`` (size, lines, sha256 of the bytes, decoded in an encoding,
UTF-8 first) and ``parse`` (functions, classes and imports counted with :mod:`ast` in the source
text it is given); then a ``summarise`` step per task, which files the totals with the index
service (:mod:`onward.demo.index`). The results are small: no file content enters the log.

Their parameters are the ones the built-in fixes know (:mod:`onward.healing.remedies`): ``read``'s
``encoding`` lets ``decode-with-detected-encoding`` re-read a cp1252 or latin-1 file, and
``parse``'s ``source`` lets ``normalise-indentation`` and ``strip-markdown-fences`` repair the
text. The errors no fix cures (``SyntaxError``, null bytes, ``RecursionError`` or
``MemoryError`` for deep nesting) become a :class:`FileError` and the survey goes on.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from onward.core.errors import StepFailedError

__all__ = [
    "FileError",
    "FileFacts",
    "FileOutcome",
    "Shape",
    "Totals",
    "error_kind",
    "file_error",
    "parse_file",
    "parse_source",
    "read_file",
    "read_source",
    "summarise",
]

#: The fields of statements (and of except handlers and match cases) that hold statements.
_STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers", "cases")


class FileFacts(msgspec.Struct, frozen=True):
    """What ``read`` records about a file: its size, lines, sha256 and the encoding its text
    decoded in."""

    size: int
    lines: int
    sha256: str
    encoding: str = "utf-8"


class Shape(msgspec.Struct, frozen=True):
    """What ``parse`` records about a file."""

    functions: int
    classes: int
    imports: int


class FileError(msgspec.Struct, frozen=True):
    """A file whose step raised: which step, the exception's type, and its message (clipped)."""

    path: str
    step: str
    kind: str
    message: str


class FileOutcome(msgspec.Struct, frozen=True):
    """One file's outcome inside a task (the input of ``summarise``)."""

    path: str
    facts: FileFacts | None = None
    shape: Shape | None = None
    error: FileError | None = None


class Totals(msgspec.Struct, frozen=True):
    """What ``summarise`` records for a task, and the task's result.

    Attributes:
        index: the index that holds the task's summary ("primary" or "backup"; "" when the
            index service refused it, then ``index_error`` says why).
    """

    label: str
    files: int
    parsed: int
    bytes: int
    lines: int
    functions: int
    classes: int
    imports: int
    errors: list[FileError]
    index: str = ""
    index_error: FileError | None = None


# -- the steps' work: plain functions over real files ------------------------------------------


def read_file(path: str, encoding: str = "utf-8") -> FileFacts:
    """Size, line count and sha256 of a file's bytes, which must decode in ``encoding``.

    Raises:
        UnicodeDecodeError: the bytes are not text in that encoding.
        LookupError: no such encoding.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        data = f.read()
    data.decode(encoding)
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return FileFacts(
        size=len(data), lines=lines, sha256=hashlib.sha256(data).hexdigest(), encoding=encoding
    )


def read_source(path: str, encoding: str = "utf-8") -> str:
    """A file's text, decoded in ``encoding`` (the one its ``read`` step settled on).

    Raises:
        UnicodeDecodeError: the bytes are not text in that encoding.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        return f.read().decode(encoding)


def parse_file(path: str) -> Shape:
    """Counts of functions, classes and import statements in a UTF-8 Python file.

    Raises:
        UnicodeDecodeError: the bytes are not UTF-8.
        SyntaxError, ValueError, RecursionError: as :func:`parse_source`.
    """
    return parse_source(read_source(path), path)


def parse_source(source: str, name: str) -> Shape:
    """Counts of functions, classes and import statements in Python source text.

    Args:
        source: the text.
        name: where it comes from (in the messages of its errors).

    Raises:
        SyntaxError: not valid Python for this interpreter (or, from Python 3.11.4, it holds
            null bytes); ``IndentationError`` and ``TabError`` are kinds of it.
        ValueError: the source holds null bytes (before Python 3.11.4).
        RecursionError: nesting too deep for the parser.
    """
    functions = classes = imports = 0
    # Definitions and imports are statements: walking the statement lists alone finds them all,
    # at a fifth of the cost of visiting every expression node.
    pending: list[list[Any]] = [ast.parse(source, filename=name).body]
    while pending:
        for node in pending.pop():
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions += 1
            elif isinstance(node, ast.ClassDef):
                classes += 1
            elif isinstance(node, ast.Import | ast.ImportFrom):
                imports += 1
            for field in _STATEMENT_LISTS:
                nested = getattr(node, field, None)
                if isinstance(nested, list):
                    pending.append(nested)
    return Shape(functions=functions, classes=classes, imports=imports)


def summarise(label: str, outcomes: Sequence[FileOutcome], index: str = "") -> Totals:
    """The totals of a task's files (``index``: the index that holds them)."""
    facts = [o.facts for o in outcomes if o.facts is not None]
    shapes = [o.shape for o in outcomes if o.shape is not None]
    return Totals(
        label=label,
        files=len(outcomes),
        parsed=len(shapes),
        bytes=sum(f.size for f in facts),
        lines=sum(f.lines for f in facts),
        functions=sum(s.functions for s in shapes),
        classes=sum(s.classes for s in shapes),
        imports=sum(s.imports for s in shapes),
        errors=[o.error for o in outcomes if o.error is not None],
        index=index,
    )


def error_kind(exc: BaseException) -> str:
    """The type name of a step's error, also when it is replayed from the log."""
    if isinstance(exc, StepFailedError):
        return exc.error_type
    return type(exc).__name__


def file_error(path: str, step: str, exc: Exception) -> FileError:
    """A step's error on a file, its message on one line and clipped to 160 characters."""
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return FileError(path=path, step=step, kind=error_kind(exc), message=message)
