"""A step's recorded failure raised again on replay as the exception the first run raised.

A step that raised is recorded as ``StepFailed``: its exception's type name, its class
(``module:qualname``, for a class outside the builtins) and its message, never the exception
itself (the log pickles nothing). A replay raises it again so that the task's ``except`` clauses
take the same branch as on the first run:

* a builtin class by its name (``KeyError``, ``FileNotFoundError``, ``UnicodeDecodeError``);
* another class when its module is already imported in the replaying process (the
  application's own, which registered the task): nothing is imported on the log's word;
* rebuilt with the arguments its message shows where that gives the same message back
  (``KeyError('region')``, ``FileNotFoundError(2, 'No such file or directory', 'a.txt')``), else
  as an instance of a subclass that only carries the recorded message, or the literal
  arguments it spells (``Rejected(404)`` of a class whose constructor takes other
  arguments too: ``except QuotaExceeded`` still catches it, its attributes
  beyond the message are not there, and a ``__getattr__`` of its class that needs what its
  constructor would have set raises ``AttributeError``, so that ``getattr(e, name, None)``
  and ``hasattr`` answer);
* given back the plain attributes its record kept (:mod:`onward.core.failure_attributes`:
  ``HTTPError.code``, ``e.response.status_code``), over what its constructor set;
* :class:`~onward.core.errors.StepFailedError` when the class cannot be found.

Rebuilding runs the class's constructor with the arguments the message shows (not the
application's other code): an exception's constructor is expected to only keep its arguments,
as the first run's did when it raised.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import re
import sys
from collections.abc import Callable
from typing import Any

from onward.core.errors import StepFailedError
from onward.core.failure_attributes import give_attributes

__all__ = [
    "exception_class",
    "literal_argument",
    "read_as_recorded",
    "replayed_error",
    "spread_arguments",
]

#: ``str(OSError(errno, strerror[, filename]))``.
_OS_ERROR = re.compile(r"\[Errno (-?\d+)\] (.*?)(?:: (.+))?", re.DOTALL)
#: The file names of ``str(OSError(errno, strerror, filename, None, filename2))`` (a rename's,
#: a link's): ``'a' -> 'b'``.
_TWO_FILES = re.compile(r"""(b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*") -> (.+)""", re.DOTALL)
#: What a redaction leaves where a secret was (a file name holding one is not rebuilt).
_REDACTED = "[REDACTED:"
#: What ``ast.literal_eval`` raises for a text that is not a literal.
_NOT_A_LITERAL = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


def exception_class(exc: BaseException) -> str:
    """``module:qualname`` of an exception's class, "" for a builtin (its name says it)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return ""
    return f"{cls.__module__}:{cls.__qualname__}"


def replayed_error(
    error_type: str,
    error_class: str,
    message: str,
    *,
    literal: bool = False,
    spread: bool = False,
    attributes: dict[str, Any] | None = None,
) -> Exception:
    """The exception a recorded step failure is raised as on replay (see the module);
    ``literal``: its one argument is the Python literal ``message`` spells
    (:func:`literal_argument`), or with ``spread`` its arguments are the items of the tuple
    it spells; ``attributes``: the plain attributes its record kept, as stored
    (:func:`~onward.core.failure_attributes.plain_attributes`)."""
    cls = _resolve(error_type, error_class)
    if cls is None:
        return StepFailedError(error_type, message)
    rebuilt: Exception | None = None
    arguments: tuple[Any, ...] = (message,) if message else ()
    if literal:
        with contextlib.suppress(Exception):
            value = ast.literal_eval(message)
            arguments = value if spread and type(value) is tuple else (value,)
            again = cls(*arguments)
            if _reads(again) == message:
                rebuilt = again
    if rebuilt is None:
        try:
            rebuilt = _rebuilt(cls, message, arguments)
        except Exception:  # a class that cannot be rebuilt in any way: its name and message
            return StepFailedError(error_type, message)
    if attributes:
        give_attributes(rebuilt, attributes)
    return rebuilt


def literal_argument(exc: BaseException, message: str) -> bool:
    """Whether a failure's one argument is no string but the Python literal its recorded
    ``message`` spells, of the same type (``ValueError(404)``, ``StopIteration(5)``,
    ``LookupError((1, 2))``), or its several arguments are the items of the tuple it spells
    (``Throttled("slow down", 30)``, ``KeyError("a", 2)``: see :func:`spread_arguments`): a
    replay then passes them again, and the task sees an ``int`` where it saw one (not its
    text)."""
    args = exc.args
    if not args or (len(args) == 1 and (isinstance(args[0], str) or isinstance(exc, KeyError))):
        return False  # a KeyError's message is its key's repr already
    if _reads(exc) != message:
        return False  # cut, redacted, or made otherwise than from its arguments
    try:
        read = ast.literal_eval(message)
    except _NOT_A_LITERAL:
        return False
    try:
        if len(args) == 1:
            return type(read) is type(args[0]) and bool(read == args[0])
        return (
            type(read) is tuple
            and len(read) == len(args)
            and all(type(a) is type(b) and bool(a == b) for a, b in zip(read, args, strict=True))
        )
    except Exception:  # an argument whose comparison raises
        return False


def spread_arguments(exc: BaseException, message: str) -> bool:
    """Whether a failure's literal (:func:`literal_argument`) is its several arguments, each
    passed again on its own, rather than one tuple: both read alike."""
    return len(exc.args) > 1 and literal_argument(exc, message)


def read_as_recorded(exc: BaseException, message: str) -> None:
    """Make a step's failure, as its task catches it on the first run, read as its record
    reads (and so as a replay raises it): with the recorded ``message`` (secrets redacted, a
    long one cut) where the exception's message is its one argument, as most exceptions'
    is. Its class and other attributes stay; one whose text is made otherwise (an
    ``OSError``, its own ``__str__``) is left as it is. A ``KeyError`` gets the key a replay
    rebuilds from the record: the same where its ``repr`` is a literal; else (a date, an
    enum member, a key cut) the recorded text, as a replay raises it."""
    args = exc.args
    if len(args) > 1:
        # No literal: a replay raises it with its text alone, where its text is its arguments'.
        if not literal_argument(exc, message) and _reads(exc) == str(args):
            _give_text(exc, message)
        return
    if isinstance(exc, KeyError):
        _key_as_recorded(exc, message)
        return
    if len(args) != 1 or type(args[0]) is not str or args[0] == message:
        return
    if _reads(exc) != args[0]:
        return  # its text is not its argument: changing that would not change the text
    _give_text(exc, message)


def _give_text(exc: BaseException, message: str) -> None:
    """Make ``message`` an exception's one argument, where it then reads as ``message``."""
    args = exc.args
    try:
        exc.args = (message,)
        if _reads(exc) != message:
            exc.args = args
    except Exception:  # its args cannot be set (a frozen dataclass, a read-only property)
        with contextlib.suppress(Exception):
            exc.args = args


def _key_as_recorded(exc: KeyError, message: str) -> None:
    """Give a ``KeyError`` the key a replay rebuilds from ``message``."""
    if len(exc.args) != 1:
        return
    try:
        rebuilt = _rebuilt(type(exc), message)
    except Exception:
        return
    if type(rebuilt) is type(exc) and rebuilt.args != exc.args:
        with contextlib.suppress(Exception):  # args that cannot be set: left as raised
            exc.args = rebuilt.args


def _resolve(error_type: str, error_class: str) -> type[Exception] | None:
    found: Any
    if not error_class:
        found = getattr(builtins, error_type, None)
    else:
        module_name, _, qualname = error_class.partition(":")
        found = sys.modules.get(module_name)
        for part in qualname.split(".") if found is not None else ():
            found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _rebuilt(
    cls: type[Exception], message: str, literals: tuple[Any, ...] | None = None
) -> Exception:
    """``cls`` made again from its recorded ``message``; else a carrier of ``literals`` (the
    literal arguments the message spells, which the class's constructor would not take
    alone), or of the message."""
    rebuilt: Exception | None = None
    for args in _arguments(cls, message):
        try:
            exc = cls(*args)
        except Exception:
            continue
        if _reads(exc) == message:
            rebuilt = exc
            break
    if rebuilt is None and issubclass(cls, KeyError) and cls.__str__ is KeyError.__str__:
        # A key whose repr is no literal (a date, an enum member), or was cut: its text is the
        # key (the first run's exception is given the same: read_as_recorded). Not for a class
        # that reads otherwise, or makes its own arguments: it is carried as its message.
        with contextlib.suppress(Exception):
            made = cls(message)
            if made.args == (message,):
                rebuilt = made
    if (
        (rebuilt is None or (isinstance(rebuilt, OSError) and rebuilt.errno is None))
        and issubclass(cls, OSError)
        and (shown := _OS_ERROR.fullmatch(message)) is not None
    ):
        # A message cut at its limit, or whose file name a redaction changed: its errno and
        # strerror still read (not its file name), on a carrier that reads as the message
        # (an OSError with both would read as "[Errno N] strerror" alone).
        with contextlib.suppress(Exception):
            carried = _carrier(cls)(message)
            carried.errno, carried.strerror = int(shown.group(1)), shown.group(2)  # type: ignore[attr-defined]
            return carried
    if rebuilt is None and literals is not None:
        with contextlib.suppress(Exception):
            spelled = _carrier(cls)(*literals)
            if _reads(spelled) == message:
                rebuilt = spelled
    if rebuilt is None:
        rebuilt = _carrier(cls)(message)
    return rebuilt


def _arguments(cls: type[Exception], message: str) -> list[tuple[Any, ...]]:
    """The arguments that may give ``message`` back, the likeliest first."""
    candidates: list[tuple[Any, ...]] = []
    if issubclass(cls, KeyError):  # str() of a KeyError is the repr of its key
        with contextlib.suppress(*_NOT_A_LITERAL):
            candidates.append((ast.literal_eval(message),))
    if issubclass(cls, OSError) and (shown := _OS_ERROR.fullmatch(message)) is not None:
        errno, strerror, filename = shown.groups()
        if filename is not None and _REDACTED in filename:
            pass  # a redacted name is no name the error had: its errno and strerror alone
        elif filename is None:
            candidates.append((int(errno), strerror))
        else:
            with contextlib.suppress(*_NOT_A_LITERAL):
                candidates.append((int(errno), strerror, ast.literal_eval(filename)))
            if (two := _TWO_FILES.fullmatch(filename)) is not None:
                with contextlib.suppress(*_NOT_A_LITERAL):
                    first, second = (ast.literal_eval(name) for name in two.groups())
                    candidates.append((int(errno), strerror, first, None, second))
    candidates.append((message,) if message else ())
    return candidates


def _reads(exc: BaseException) -> str | None:
    try:
        return str(exc)
    except Exception:
        return None


#: The carriers made so far, by the class they stand for (one per class).
_CARRIERS: dict[type[Exception], type[Exception]] = {}


def _carrier(cls: type[Exception]) -> type[Exception]:
    """A subclass of ``cls`` made from its arguments alone (its message, or the literals it
    spells), which reads as ``BaseException`` reads them."""
    made = _CARRIERS.get(cls)
    if made is not None:
        return made

    def __init__(self: BaseException, *args: Any) -> None:
        BaseException.__init__(self, *args)

    def __str__(self: BaseException) -> str:
        return BaseException.__str__(self)

    inherited_repr = cls.__repr__

    def __repr__(self: BaseException) -> str:
        try:  # the class's own (urllib's HTTPError shows its code: kept, if it was plain)
            return inherited_repr(self)
        except Exception:  # one that reads what its constructor would have set
            return f"{cls.__name__}({str(self)!r})"

    namespace: dict[str, Any] = {
        "__init__": __init__,
        "__str__": __str__,
        "__repr__": __repr__,
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
        "__doc__": f"{cls.__qualname__} as a replay raises it again: its message alone.",
    }
    # Its constructor did not run: a property or a __getattr__ that reads what it sets would
    # raise another error than AttributeError (urllib's HTTPError, a file wrapper, reads
    # self.__dict__["file"]: KeyError; httpx's .request, RuntimeError), and so would
    # getattr(e, name, None) and hasattr(e, name). Whatever cannot be read is an attribute
    # this exception does not have.
    namespace["__getattribute__"] = _answering(cls, cls.__getattribute__)
    inherited_getattr = getattr(cls, "__getattr__", None)
    if inherited_getattr is not None:
        namespace["__getattr__"] = _answering(cls, inherited_getattr)
    carrier: type[Exception] = type(cls.__name__, (cls,), namespace)
    return _CARRIERS.setdefault(cls, carrier)


def _answering(cls: type[Exception], read: Callable[[Any, str], Any]) -> Callable[..., Any]:
    """``read`` (an attribute lookup of ``cls``) raising only AttributeError for what fails."""

    def lookup(self: BaseException, name: str) -> Any:
        try:
            return read(self, name)
        except AttributeError:
            raise
        except Exception:
            raise _not_kept(cls, self, name) from None

    return lookup


def _not_kept(cls: type[Exception], exc: BaseException, name: str) -> AttributeError:
    return AttributeError(
        f"{cls.__qualname__} as a replay raises it again has no attribute {name!r} (its "
        "record keeps its message and its plain attributes)",
        name=name,
        obj=exc,
    )
