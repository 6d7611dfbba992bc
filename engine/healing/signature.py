"""Error signatures: a stable fingerprint of an exception, so that a failure seen again is known.

An agent that runs for hours meets the same failures again and again. The signature of an
exception is its type, its message with the values normalised away (numbers, hex, addresses,
uuids, times, paths, URLs, quoted values), its in-app frames as ``module:function`` (no line
numbers; the function by its qualified name, ``Class.method``) and the type and message of each
link of its cause chain. The same failure at other
values gives one signature; the same error raised at another call site gives another.

The id is versioned (``v1-3f2a...``): a change of the algorithm bumps :data:`SIGNATURE_VERSION`, so
that old and new signatures never silently mix in one history. Nothing of the process enters
it (no ``id()``, no ``hash()`` of a string), so it is the same across runs and machines.

::

    try:
        int("abc123")
    except ValueError as exc:
        sig = fingerprint(exc)
    sig.message  # "invalid literal for int() with base <n>: <str>"
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Sequence
from types import CodeType, TracebackType

import msgspec

from onward.core.run import SECRET_REACH, encodable, redaction_window
from onward.events import UsageError

__all__ = [
    "SIGNATURE_VERSION",
    "ErrorSignature",
    "fingerprint",
    "normalise_message",
    "other_signature_format",
]

#: The version of the fingerprint algorithm, part of every id. Bump it whenever a change would
#: give an existing failure another id (a pattern, a limit, the canonical encoding).
SIGNATURE_VERSION: int = 1

#: The longest normalised message kept.
MAX_MESSAGE = 300
#: The longest part of a raw message read: a huge message (a response body) costs no more.
MAX_READ = 8192
#: The innermost in-app frames kept.
MAX_FRAMES = 8
#: The links of the cause chain kept.
MAX_CAUSES = 5

# onward's own packages: their wrappers are on every stack, so they would only add noise.
_OWN_PACKAGES = frozenset({"onward"})


class ErrorSignature(msgspec.Struct, frozen=True, kw_only=True):
    """The fingerprint of an exception; two exceptions with the same ``id`` are one failure.

    Attributes:
        id: ``v<version>-`` and 16 hex digits of a BLAKE2b digest of the other fields (as
            raised: before any redaction).
        error_type: the exception's type: ``ValueError`` for builtins, else ``module.Class``.
        message: the normalised message (see :func:`normalise_message`); its secrets
            redacted first when :func:`fingerprint` was given a redactor.
        frames: the in-app frames as ``module:function``, outermost first, innermost last; at
            most the 8 innermost.
        causes: the cause chain, nearest first, as ``Type: normalised message``; at most 5
            (redacted as ``message`` is).
        version: the :data:`SIGNATURE_VERSION` it was computed with.
    """

    id: str
    error_type: str
    message: str
    frames: tuple[str, ...]
    causes: tuple[str, ...]
    version: int

    def __str__(self) -> str:
        """One line: ``Type: message at module:function (caused by Type) [id]``."""
        where = f" at {self.frames[-1]}" if self.frames else ""
        cause = f" (caused by {self.causes[0].partition(':')[0]})" if self.causes else ""
        text = f"{self.error_type}: {self.message}" if self.message else self.error_type
        return f"{text}{where}{cause} [{self.id}]"


# --- messages ---------------------------------------------------------------------------------

# Applied in the order of normalise_message. Quoted values come first (a value is replaced whole,
# whatever it holds), URLs before paths (``https://h/p`` is not a path after a scheme) and paths
# before ids (an id inside a path must not cut the path in pieces). For idempotence, a
# placeholder's ``>`` blocks a match after it and its ``<`` one before it as a word character
# would (a later pattern may have turned that character into a placeholder), and a quoted value
# never spans a ``<str>``; so a second pass finds nothing new.
#
# Speed (every failure is fingerprinted): a pattern that begins with a lookbehind is tried at
# every position of the text, one that begins with a literal or a class is searched for first.
# So where it can, a pattern matches its first character, then looks behind it at the one before
# (``x(?<!\wx)`` reads as ``(?<!\w)x``; at the start of the text the two-character lookbehind
# cannot match, as ``(?<!\w)`` there); and a cheap search for a part that every match holds
# (``-dd-`` of a date) comes before a costly pattern. Each of these reads a text exactly as the
# plain pattern did: signatures v1 must not change (a property test holds the normaliser equal
# to the first one's copy).
_QUOTED = re.compile(
    r"""(?:'(?<![\w>'"].)(?:(?!<str>)[^'])*'|"(?<![\w>'"].)(?:(?!<str>)[^"])*")(?![\w<'"])"""
)
_URL = re.compile(r"(?<![\w>])[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*[^\s'\"<>.,;:!?)\]}]")
# No alternative matches a space: a path lies inside one space-separated word, and is looked
# for only in the words that hold a slash (see _paths).
_PATH = re.compile(
    r"""
    (?<![\w>/\\.~\-])
    (?:
        [A-Za-z]:[\\/][^\s'"<>|]*[^\s'"<>|.,;:!?)\]}]     # C:\x or C:/x
      | \\\\[^\s'"<>|]*[^\s'"<>|.,;:!?)\]}]               # \\server\share
      | ~[\w.\-]*/[^\s'"<>]*[^\s'"<>.,;:!?)\]}]           # ~/x, ~user/x
      | \.{1,2}/[^\s'"<>]*[^\s'"<>.,;:!?)\]}]             # ./x, ../x
      | /[^\s'"<>]*[^\s'"<>.,;:!?)\]}]                    # /a/b
      | [\w.\-]+(?:/[\w.\-]+){2,}                         # a/b/c
      | [\w.\-]+/[\w\-]+\.[A-Za-z]\w*                     # a/b.py
    )
    (?![\w</\\])
    """,
    re.VERBOSE,
)
_TIME = re.compile(
    r"\d(?<![\w>]\d)\d{3}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
    r"(?![\w<])"
)
_TIME_PART = re.compile(r"-\d\d-")
_UUID = re.compile(
    r"(?<![\w>])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"(?![\w<])"
)
_UUID_PART = re.compile(r"-[0-9a-fA-F]{4}-")
_ADDRESS = re.compile(r"0(?<![\w>]0)[xX][0-9a-fA-F]+(?![\w<])")
# At least one letter: a run of decimal digits is a number, however long, and so is one before a
# signed exponent (the 0000000000000002e+16 of 1.0000000000000002e+16).
_HEX = re.compile(r"(?<![\w>])(?=[0-9]*[a-fA-F])(?![0-9]+[eE][-+][0-9])[0-9a-fA-F]{8,}(?![\w<])")
_HEX_PART = re.compile(r"[0-9a-fA-F]{8}")
# A sign only where it cannot be a hyphen or a minus between operands; units may follow (30s).
# As (?:(?<![\w>.])[-+])?(?<!\w)\d+: a sign not after [\w>.], else a digit not after \w.
_NUMBER = re.compile(
    r"[-+\d](?:(?<=[-+])(?<![\w>.].)\d|(?<=\d)(?<!\w.))\d*(?:\.\d+)*(?:[eE][-+]?\d+)?"
)

#: The longest message whose normalised text is kept for the next time it is met; and how many
#: are kept (the least recently used one goes first).
_CACHED_LENGTH = 1024
_CACHED_MESSAGES = 1024


def normalise_message(text: str) -> str:
    """``text`` with its values replaced by placeholders, so that one failure reads one way.

    Whitespace is collapsed first; then quoted values (``'...'``, ``"..."``) become ``<str>``
    (first, so that a value is replaced whole whatever it holds), URLs ``<url>``, file paths
    (``/a/b``, ``~/x``, ``./x``, ``a/b/c``, ``a/b.py``, ``C:\\x``) ``<path>``, ISO dates and
    timestamps ``<time>``, uuids ``<uuid>``, ``0x...`` addresses ``<addr>``, runs of 8 or more
    hex digits with at least one letter ``<hex>`` and numbers (signs, decimals, exponents; a
    unit may follow, as in ``30s``) ``<n>``. The result is cut to 300 characters, at a space or
    a punctuation mark where there is one (else it ends in ``<cut>``); only the first 8192
    characters are read. A path's
    trailing ``.,;:!?)]}`` is read as the sentence's, not the path's. Deterministic and
    idempotent. A message met again (up to 1024 characters) is read from a cache of the 1024
    most recently normalised ones.

    Args:
        text: an exception's message.

    Returns:
        The normalised message.
    """
    # Only exact strings are cached: a subclass may compare or hash as it likes.
    if type(text) is str and len(text) <= _CACHED_LENGTH:
        return _normalise_cached(text)
    return _normalise(text)


def _normalise(text: str) -> str:
    text = " ".join(text[:MAX_READ].split())
    if "'" in text or '"' in text:
        text = _QUOTED.sub("<str>", text)
    if "://" in text:
        text = _URL.sub("<url>", text)
    if "/" in text or "\\" in text:
        text = _paths(text)
    if "-" in text:
        if _TIME_PART.search(text) is not None:
            text = _TIME.sub("<time>", text)
        if _UUID_PART.search(text) is not None:
            text = _UUID.sub("<uuid>", text)
    if "0x" in text or "0X" in text:
        text = _ADDRESS.sub("<addr>", text)
    if _HEX_PART.search(text) is not None:
        text = _HEX.sub("<hex>", text)
    text = _NUMBER.sub("<n>", text)
    return _cut(text) if len(text) > MAX_MESSAGE else text


_normalise_cached = functools.lru_cache(maxsize=_CACHED_MESSAGES)(_normalise)


def _paths(text: str) -> str:
    """``text`` with its paths replaced, looked for only in the words that hold a slash.

    The text's whitespace is collapsed to single spaces; no path holds a space, and a space
    before or after a word blocks no match, as the start and the end of the text do not.
    """
    words = text.split(" ")
    for i, word in enumerate(words):
        if "/" in word or "\\" in word:
            words[i] = _PATH.sub("<path>", word)
    return " ".join(words)


# No pattern's match can end with one of these, so a text cut after one reads, to a second
# pass, exactly as it did to the first.
_SAFE_ENDS = frozenset(",;:!?)]}>")
_CUT = "<cut>"


def _cut(text: str) -> str:
    """``text`` cut to :data:`MAX_MESSAGE`, at the last space or safe mark before the limit."""
    # at a space: the end of the string then reads like the space it replaces
    end = max(text.rfind(" ", 0, MAX_MESSAGE + 1), 0)
    # after the last safe mark past that space, if any
    mark = max(text.rfind(c, end, MAX_MESSAGE) for c in _SAFE_ENDS)
    if mark >= end:
        end = mark + 1
    if end > 0:
        return text[:end]
    # One run of 300 characters: its end may have been, say, the opening quote of a value that
    # a second pass would now see closed. A ``<`` stops every pattern before it, so the mark
    # keeps a second pass from finding anything new.
    return text[: MAX_MESSAGE - len(_CUT)] + _CUT


# --- frames -----------------------------------------------------------------------------------


def _library_dirs() -> tuple[str, ...]:
    """The directories of the standard library and of installed packages, each ending in a sep."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    normalised = {os.path.join(os.path.normcase(os.path.abspath(d)), "") for d in dirs}
    return tuple(sorted(normalised))


_LIBRARY_DIRS = _library_dirs()
_INSTALLED_MARKERS = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def _is_library(module: str, filename: str) -> bool:
    """Whether ``module`` (in ``filename``) is the stdlib, an installed package or onward."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in _OWN_PACKAGES:
        return True
    if filename.startswith("<"):
        # <frozen ...>, <string>, <stdin>: no file to judge by; the module name said it all
        return False
    path = os.path.normcase(os.path.abspath(filename))
    return path.startswith(_LIBRARY_DIRS) or any(m in path for m in _INSTALLED_MARKERS)


# Per code object: its ``module:function`` label, or None when it is not in-app; one cache for
# the default rule and one per set of app_modules. Keyed by id(), since code objects compare by
# value (two identical functions in two modules are "equal"); the entry holds the code object
# so that its id cannot be reused while the entry lives. Bounded: cleared when full.
_Cache = dict[int, tuple[CodeType, str | None]]
_DEFAULT_CACHE: _Cache = {}
_PREFIX_CACHES: dict[tuple[str, ...], _Cache] = {}
_MAX_CACHED = 8192
_MAX_PREFIX_SETS = 64


def _label(tb: TracebackType, prefixes: tuple[str, ...] | None, cache: _Cache) -> str | None:
    """The ``module:function`` of a traceback entry if it is in-app, else None (cached)."""
    frame = tb.tb_frame
    code = frame.f_code
    hit = cache.get(id(code))
    if hit is not None and hit[0] is code:
        return hit[1]
    module = str(frame.f_globals.get("__name__", "?"))
    if prefixes is None:
        in_app = not _is_library(module, code.co_filename)
    else:
        in_app = any(module == p or module.startswith(p + ".") for p in prefixes)
    label = f"{module}:{code.co_qualname}" if in_app else None
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[id(code)] = (code, label)
    return label


def _frames(exc: BaseException, app_modules: Sequence[str] | None) -> tuple[str, ...]:
    """The in-app frames of ``exc``'s own traceback, outermost first, the innermost few."""
    prefixes: tuple[str, ...] | None = None
    cache = _DEFAULT_CACHE
    if app_modules is not None:
        # a lone string is one package, not a sequence of one-letter ones
        prefixes = (app_modules,) if isinstance(app_modules, str) else tuple(app_modules)
        found = _PREFIX_CACHES.get(prefixes)
        if found is None:
            if len(_PREFIX_CACHES) >= _MAX_PREFIX_SETS:
                _PREFIX_CACHES.clear()
            found = _PREFIX_CACHES[prefixes] = {}
        cache = found
    frames: list[str] = []
    tb = exc.__traceback__
    while tb is not None:
        # the cache's hit inlined: a long session meets the same code objects again and again
        code = tb.tb_frame.f_code
        hit = cache.get(id(code))
        label = hit[1] if hit is not None and hit[0] is code else _label(tb, prefixes, cache)
        if label is not None:
            frames.append(label)
        tb = tb.tb_next
    return tuple(frames[-MAX_FRAMES:])


# --- the fingerprint --------------------------------------------------------------------------


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _message(exc: BaseException) -> str:
    """The exception's message; for an OSError its strerror alone and for a SyntaxError its
    ``msg`` alone (the file name and line are values)."""
    if isinstance(exc, OSError) and exc.strerror is not None:
        return encodable(str(exc.strerror))
    if isinstance(exc, SyntaxError) and exc.msg:
        return encodable(str(exc.msg))  # without "(file.py, line 3)": the place is a value
    try:
        return encodable(str(exc))
    except Exception:
        # a broken __str__ must not break the error handling around it
        return type(exc).__name__


def _causes(
    exc: BaseException, normalise: Callable[[str], str] = normalise_message
) -> tuple[str, ...]:
    """``Type: message`` of each link, its message normalised by ``normalise``: the
    ``__cause__``, else the context unless suppressed."""
    if exc.__cause__ is None and (exc.__suppress_context__ or exc.__context__ is None):
        return ()  # most errors: no chain to walk
    causes: list[str] = []
    seen = {id(exc)}
    link: BaseException | None = exc
    while link is not None and len(causes) < MAX_CAUSES:
        if link.__cause__ is not None:
            link = link.__cause__
        elif not link.__suppress_context__:
            link = link.__context__
        else:
            link = None
        if link is None or id(link) in seen:
            break
        seen.add(id(link))
        causes.append(f"{_type_name(link)}: {normalise(_message(link))}")
    return tuple(causes)


def _digest(error_type: str, message: str, frames: tuple[str, ...], causes: tuple[str, ...]) -> str:
    # JSON of a list: unambiguous (no separator can be forged by a message) and stable.
    canonical = msgspec.json.encode([SIGNATURE_VERSION, error_type, message, frames, causes])
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()


def fingerprint(
    exc: BaseException,
    *,
    app_modules: Sequence[str] | None = None,
    redact: Callable[[str], str] | None = None,
) -> ErrorSignature:
    """The signature of an exception: its type, normalised message, in-app frames and causes.

    The frames are those of ``exc``'s own traceback; its causes contribute their type and
    message only. By default a frame is in-app unless its module belongs to the standard library
    or onward (``engine``, ``events``, ``projections``) or its file lies in the standard library
    or an installed package (``site-packages``). Whether a code object is in-app is cached.

    Args:
        exc: the exception, usually just caught (its traceback gives the frames).
        app_modules: the application's packages: when given, a frame is in-app if and only if
            its module is one of them or inside one (``"shop"`` takes ``shop`` and
            ``shop.orders``, not ``shopping``).
        redact: a redactor's ``redact`` (the log's, to store the signature's texts): the
            ``message`` and ``causes`` are then normalised from the redacted messages.
            Normalising first would hide a secret from the redactor (``sk-live-4eC3...``
            reads ``sk-live-<n>eC3...``, which no pattern knows) without removing it. The
            ``id`` stays that of the messages as raised: one failure has one id, with or
            without a redactor.

    Returns:
        The signature; equal ``id`` means the same failure.

    Raises:
        UsageError: ``exc`` is not an exception.
    """
    if not isinstance(exc, BaseException):
        raise UsageError(f"fingerprint() takes an exception, got {type(exc).__name__}")
    message = _message(exc)
    signature = _signature(
        _type_name(exc), normalise_message(message), _frames(exc, app_modules), _causes(exc)
    )
    if redact is None:
        return signature
    return _redacted(signature, exc, message, redact)


#: The part of a raw message redacted before it is normalised: twice what the normaliser reads,
#: so that a secret that starts before :data:`MAX_READ` is seen whole.
_REDACT_READ = 2 * MAX_READ
assert _REDACT_READ - SECRET_REACH >= MAX_READ


def _redacted(
    signature: ErrorSignature, exc: BaseException, message: str, redact: Callable[[str], str]
) -> ErrorSignature:
    """``signature`` (of ``exc``, whose message is ``message``) with its message and causes
    normalised from the redacted messages; the signature itself when they hold no secret."""

    def normalise(text: str) -> str:
        window = redaction_window(text, _REDACT_READ)
        redacted = redact(window)
        # Unchanged: the normalised text is the one the id was computed from (and cached); the
        # window holds more than the normaliser reads (MAX_READ) even when cut back.
        return normalise_message(text if redacted == window else redacted)

    shown, causes = normalise(message), _causes(exc, normalise)
    if shown == signature.message and causes == signature.causes:
        return signature
    return msgspec.structs.replace(signature, message=shown, causes=causes)


#: How many signatures are kept for their parts, so that a failure met again is not hashed again.
_CACHED_SIGNATURES = 1024


@functools.lru_cache(maxsize=_CACHED_SIGNATURES)
def _signature(
    error_type: str, message: str, frames: tuple[str, ...], causes: tuple[str, ...]
) -> ErrorSignature:
    """The signature of these parts (frozen: one object may serve every failure that has them)."""
    digest = _digest(error_type, message, frames, causes)
    return ErrorSignature(
        id=f"v{SIGNATURE_VERSION}-{digest}",
        error_type=error_type,
        message=message,
        frames=frames,
        causes=causes,
        version=SIGNATURE_VERSION,
    )


_FORMAT = re.compile(r"v([0-9]+)-")


def other_signature_format(signature: str) -> str | None:
    """The format version of a signature id (or prefix, ``v2-3f2a``), as written, when it is
    not this onward's :data:`SIGNATURE_VERSION`: such an id never matches an error
    fingerprinted here (an older onward's, or a newer one's sharing the log; ``v01-`` is no
    onward's). None for this onward's own, or for a text that is no signature id.
    """
    found = _FORMAT.match(signature)
    if found is None:
        return None
    version = found.group(1)
    return None if version == str(SIGNATURE_VERSION) else version
