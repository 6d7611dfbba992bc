"""The plain attributes of a step's failure: recorded beside its message, given back to the
exception a replay raises again.

A task that catches a step's failure often branches on more than its class and message: an
HTTP client's error carries its status (``urllib.error.HTTPError.code``; ``.response
.status_code`` in httpx and requests). The record keeps what of that is plain data, so that the
branch is the same live and after a crash:

* each attribute in the exception's own ``__dict__`` whose value is ``None``, a ``bool``, an
  ``int``, a ``float`` or a ``str`` (a subclass of one, an ``IntEnum`` member such as
  ``http.HTTPStatus.NOT_FOUND``, as its base value);
* the same values of the fields Python's own exception classes keep outside it (a decode
  error's ``encoding``, ``start``, ``end`` and ``reason``, a missing module's ``name``, a
  syntax error's ``lineno``; not an ``OSError``'s, which its message gives back), read from
  the builtin class's own slots;
* for an attribute that holds an object (an HTTP response), the same values of that object's
  own ``__dict__``, one level down: a replay gives back a :class:`RecordedObject` holding them
  (``e.response.status_code`` reads; ``e.response.json()`` does not), not the object;
* never a name that may hold a credential (one of :data:`SENSITIVE_STEMS` in it, or a word
  of it one of :data:`SENSITIVE_WORDS` or ending in one: ``password``, ``dbpassword``,
  ``db_pw``, ``dbpw``, ``signingkey``, ``credentials``, ``session_cookie``,
  ``private_key``...: their text would be judged without its name, which is what tells it
  is a secret), nor one starting with ``_``, a container, an exception, a callable, anything nested
  deeper, nor what a property computes: reading one runs the application's code (requests'
  ``Response.content`` reads the body), and nothing here runs any (an instance's
  ``__dict__`` is read as :func:`object.__getattribute__` finds it; values are given back by
  writing into the rebuilt exception's ``__dict__``).

At most :data:`MAX_ATTRIBUTES` values are kept (in the order they were set, the exception's
own first); a text is redacted as the message is and cut at :data:`TEXT_LIMIT` characters.
They are stored in the log's value encoding (:func:`onward.events.encode_value`: NaN and a
huge int come back as themselves). Records written before they were kept hold none: their
replays raise the exception as before.
"""

from __future__ import annotations

import contextlib
import re
import types
from collections.abc import Callable
from typing import Any

from onward.core.run import bounded
from onward.events import UsageError, decode_value, encode_value

__all__ = [
    "MAX_ATTRIBUTES",
    "SENSITIVE_STEMS",
    "SENSITIVE_WORDS",
    "TEXT_LIMIT",
    "RecordedObject",
    "give_attributes",
    "plain_attributes",
]

#: The most plain values one failure's record keeps (its own and its objects' together).
MAX_ATTRIBUTES = 24
#: The longest text an attribute keeps (a longer one is cut, as a message is).
TEXT_LIMIT = 1000
#: The longest attribute name kept.
_NAME_LIMIT = 100
# The words of a name: db_password, sessionCookie, API-KEY.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
#: The words of an attribute's name that keep it out of the record, alone or as the end of a
#: word (``dbpw``, ``signingkey``): it may hold a credential.
SENSITIVE_WORDS = frozenset({"dsn", "jwt", "key", "keys", "otp", "pin", "pw", "sig", "salt"})
#: What keeps a name out of the record wherever it stands in it, words run together too
#: (``dbpassword``, ``secretkey``, ``userpass``, ``authkey``).
SENSITIVE_STEMS = (
    *("apikey", "accesskey", "auth", "bearer", "cookie", "cred", "pass", "private", "pwd"),
    *("secret", "session", "signature", "token"),
)


class RecordedObject:
    """An object attribute of a step's failure as a replay gives it back: the plain values of
    the object's own ``__dict__`` the record kept (``status_code``, ``reason``, ``url``), and
    nothing else (no method, no property)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        kept = ", ".join(self.__dict__) or "none"
        raise AttributeError(
            f"{name!r} is not among the attributes the failure's record kept of this object "
            f"(only plain values are: {kept})"
        )

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"RecordedObject({shown})"


def plain_attributes(
    exc: BaseException, redact: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """The plain attributes of a failure to record (see the module), in the log's value
    encoding; {} when it has none.

    Args:
        exc: the step's failure.
        redact: the log's redactor's ``redact``, which a text passes first (the default
            patterns when None).
    """
    kept: dict[str, Any] = {}
    left = MAX_ATTRIBUTES
    for name, value in _builtin_fields(exc).items():
        if left > 0 and _kept_name(name) and (plain := _plain(value, redact)) is not _NOT_PLAIN:
            kept[name] = plain
            left -= 1
    own = _own_dict(exc) or {}
    objects: list[tuple[str, dict[str, Any]]] = []
    for name, value in own.items():
        if left == 0:
            break
        if not _kept_name(name) or name in kept:
            continue
        plain = _plain(value, redact)
        if plain is not _NOT_PLAIN:
            kept[name] = plain
            left -= 1
        elif _described(value):
            inner = _own_dict(value)
            if inner:
                objects.append((name, inner))
    for name, inner in objects:
        values: dict[str, Any] = {}
        for key, value in inner.items():
            if left == 0:
                break
            if _kept_name(key) and (plain := _plain(value, redact)) is not _NOT_PLAIN:
                values[key] = plain
                left -= 1
        if values:
            kept[name] = values
    if not kept:
        return {}
    try:
        stored = encode_value(kept, what="a step failure's attributes")
    except UsageError:  # plain values always encode; kept as a safety net
        return {}
    return stored if isinstance(stored, dict) else {}


def give_attributes(exc: BaseException, stored: dict[str, Any]) -> None:
    """Give a rebuilt exception the attributes its record kept (:func:`plain_attributes`'s
    stored form): written into its ``__dict__``, over what its constructor may have set, an
    object attribute as a :class:`RecordedObject`; a field of Python's own exception class
    into its slot, unless that would change what the exception reads as."""
    if not stored:
        return
    try:
        values = decode_value(stored)
    except Exception:  # a damaged record's attributes: the exception as the message makes it
        return
    own = _own_dict(exc)
    if type(values) is not dict or own is None:
        return
    slots = _builtin_slots(exc)
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if not _kept_name(name):
            continue
        if name in slots:
            fields[name] = value
        elif type(value) is dict:
            own[name] = RecordedObject({k: v for k, v in value.items() if _kept_name(k)})
        else:
            own[name] = value
    if fields:
        _give_fields(exc, slots, fields)


#: Builtin exception classes whose fields are not kept apart: an ``OSError``'s come back from
#: its message; a group's are its sub-exceptions.
_FIELDS_FROM_MESSAGE: tuple[type[BaseException], ...] = (OSError, BaseExceptionGroup)
_SLOT_TYPES = (types.MemberDescriptorType, types.GetSetDescriptorType)


def _builtin_slots(exc: BaseException) -> dict[str, Any]:
    """The descriptors of the fields that Python's own classes in an exception's ancestry
    keep in slots (not ``BaseException``'s: its arguments, traceback and chain), by name."""
    slots: dict[str, Any] = {}
    if isinstance(exc, _FIELDS_FROM_MESSAGE):
        return slots
    for cls in type(exc).__mro__:
        if cls.__module__ != "builtins" or cls in (BaseException, object):
            continue
        for name, slot in vars(cls).items():
            if not name.startswith("_") and isinstance(slot, _SLOT_TYPES):
                slots.setdefault(name, slot)
    return slots


def _builtin_fields(exc: BaseException) -> dict[str, Any]:
    """The values of :func:`_builtin_slots`, read by the builtin class's own descriptors (an
    application's subclass's properties are not run); one that cannot be read is left out."""
    fields: dict[str, Any] = {}
    for name, slot in _builtin_slots(exc).items():
        with contextlib.suppress(Exception):  # unset (OSError.characters_written raises)
            fields[name] = slot.__get__(exc, type(exc))
    return fields


def _give_fields(exc: BaseException, slots: dict[str, Any], fields: dict[str, Any]) -> None:
    """Set builtin fields into their slots, and all of them back where the exception would
    then read otherwise (a syntax error's text is made of its message, file name and line:
    they are given together)."""
    try:
        text = str(exc)
    except Exception:
        return
    before: dict[str, Any] = {}
    for name, value in fields.items():
        slot = slots[name]
        with contextlib.suppress(Exception):  # a value of a type the slot refuses
            was = slot.__get__(exc, type(exc))
            slot.__set__(exc, value)
            before[name] = was
    try:
        same = str(exc) == text
    except Exception:
        same = False
    if not same:
        for name, was in before.items():
            with contextlib.suppress(Exception):
                slots[name].__set__(exc, was)


class _NotPlain:
    """What :func:`_plain` returns for a value it does not keep."""


_NOT_PLAIN = _NotPlain()


def _plain(value: Any, redact: Callable[[str], str] | None) -> Any:
    """A plain value as it is recorded (a subclass as its base value), or ``_NOT_PLAIN``."""
    if value is None or type(value) is bool:
        return value
    # The base types' own conversions: a subclass's __int__, __float__ or __str__ is not run.
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return bounded(str.__str__(value), redact, TEXT_LIMIT)
    return _NOT_PLAIN


def _described(value: Any) -> bool:
    """Whether an attribute's value is an object whose own plain values are worth keeping: an
    instance of an application's or a library's class, not a builtin, a class, a module, a
    callable or an exception."""
    cls = type(value)
    return (
        cls.__module__ != "builtins"
        and not isinstance(value, (type, types.ModuleType, BaseException))
        and not callable(value)
    )


def _kept_name(name: Any) -> bool:
    if type(name) is not str or not 0 < len(name) <= _NAME_LIMIT or name.startswith("_"):
        return False
    lowered = name.lower()
    if any(stem in lowered for stem in SENSITIVE_STEMS):
        return False
    # A word that ends in one of them is one run together with another (dbpw, signingkey).
    return not any(
        word.lower().endswith(sensitive)
        for word in _WORDS.findall(name)
        for sensitive in SENSITIVE_WORDS
    )


def _own_dict(value: Any) -> dict[str, Any] | None:
    """An instance's own ``__dict__``, found without running its class's code (None when it
    has none)."""
    try:
        own = object.__getattribute__(value, "__dict__")
    except Exception:
        return None
    return own if type(own) is dict else None
