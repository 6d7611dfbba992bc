"""Secrets redacted from events before they are appended.

The log is immutable: a token that reaches it stays there, in every backup and every replica,
until the whole log is rewritten. Agents fail loudly, and their error messages carry what they
were holding: an ``Authorization`` header in an HTTP client's traceback, a
``postgres://user:password@host`` URL in a driver's error, a config dump, a private key. So the
log passes every encoded event through :meth:`Redactor.redact_json` first, and each secret is
replaced by ``[REDACTED:<pattern name>]``.

:data:`DEFAULT_PATTERNS` finds bearer and basic credentials, AWS access key ids and secret keys,
Google API keys, GitHub, GitLab, Slack, Stripe, Hugging Face, OpenAI and Anthropic tokens, JWTs,
passwords in URLs, PEM private keys, and the values of ``password=``, ``token:``,
``"api_key": "..."`` and their kin. Where a secret follows a name (``password=hunter2``), the
name stays and only the value goes. It is a safety net, not a proof: a bare random string that
has no known shape and follows no telling name passes, and so does a number.

Speed: the log redacts every append, and most events hold no secret. Each default pattern has a
cheap hint, and the hints share one compiled regex that rejects such an event in a single scan of
its bytes (1 to 2 µs for an event of 150 to 350 bytes). Only the JSON strings in which a hint
fires are decoded, redacted and encoded again, so the output is always valid JSON, decodes to the
same structure, and the bytes around a secret are kept as they were. Patterns added by the user
have no hint: they are searched in every string of every event, which costs more.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import msgspec

from onward.events.exceptions import UsageError

__all__ = ["DEFAULT_PATTERNS", "Redactor", "SecretPattern"]


class SecretPattern(msgspec.Struct, frozen=True):
    """One kind of secret: a regex, and the name its redactions carry.

    Attributes:
        name: shown in the replacement, ``[REDACTED:<name>]``.
        regex: a Python regular expression, searched in every string of an event.
        group: the group of ``regex`` that holds the secret (a number or a name); only that part
            is replaced, so ``password=hunter2`` becomes ``password=[REDACTED:...]``. ``0`` (the
            default) replaces the whole match.
    """

    name: str
    regex: str
    group: int | str = 0


# The separator between a secret's name and its value: `password=x`, `"token": "x"`, `pwd => x`,
# and `\"token\": \"x\"` in JSON that was encoded twice.
_ASSIGN = r"\\?[\"']?\s*(?>=>|:=|[:=])\s*+"
# Names whose value is a secret, alone or as the end of a longer name (DB_PASSWORD, x-api-key,
# client_secret, access_token, oauth), case-insensitive: password, passwd, passphrase, pwd,
# secret, token, auth, authorization, api_key, private_key, secret_key, access_key. Written from
# a charset of their first letters, which re scans for quickly.
_SECRET_NAME = (
    r"[PpSsTtAa](?i:(?<=p)(?:ass(?:word|wd|phrase)|wd|rivate[_-]?key)|(?<=s)ecret(?:[_-]?key)?"
    r"|(?<=t)oken|(?<=a)(?:uth(?:orization)?|(?:pi|ccess)[_-]?key))"
)
_UNREDACTED = r"(?!\[REDACTED:)"
# A single prose word ("Bearer token", "basic auth") is not a credential.
_NOT_A_WORD = r"(?![A-Z]?[a-z]+[.,;:!?)]*(?:[\s\"'\]}]|\Z))"


def _token(start: str, rest: str) -> str:
    """A regex for ``start`` then ``rest``, where ``start`` does not continue a longer word.

    ``start`` (of fixed width) comes first and the check on what precedes it after, so that re
    finds candidates by searching for a literal rather than trying every position.
    """
    return rf"{start}(?<![A-Za-z0-9_-]{start}){rest}"


_PRIVATE_KEY = SecretPattern(
    "private-key",
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
    r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
)
_SECRET_VALUE = SecretPattern(
    "secret-value",
    # Whatever comes before the name is part of it (DB_PASSWORD), hence no lookbehind.
    rf"{_SECRET_NAME}{_ASSIGN}(?:\\?(?P<quote>[\"']))?+"
    r"(?:(?i:bearer|basic|token|digest)\s+)?+"  # an auth scheme stays, like the name
    rf"{_UNREDACTED}(?!(?i:true|false|null|none)\b)"
    r"(?P<value>(?(quote)(?:(?!\\?(?P=quote))[^\n])+"
    r"|[^\s\"'&<>]+?(?=[,;)}\]]*(?:[\s\"'&<>]|\Z))))",
    group="value",
)

#: The patterns a :class:`Redactor` uses unless told otherwise, most specific first.
DEFAULT_PATTERNS: tuple[SecretPattern, ...] = (
    _PRIVATE_KEY,
    SecretPattern("jwt", _token("eyJ", r"[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")),
    SecretPattern("anthropic-key", _token("sk-ant-", r"[A-Za-z0-9_-]{20,}")),
    SecretPattern("openai-key", _token("sk-", r"(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}")),
    SecretPattern(
        "github-token",
        _token("g", r"(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{22,})"),
    ),
    SecretPattern("gitlab-token", _token("gl", r"(?:pat|dt|rt|ptt|soat)-[A-Za-z0-9_-]{20,}")),
    SecretPattern("slack-token", _token("x", r"(?:ox[abpors]|app)-[A-Za-z0-9-]{10,}")),
    SecretPattern("stripe-key", _token("[rs]k_", r"(?:live|test)_[A-Za-z0-9]{16,}")),
    SecretPattern("google-api-key", _token("AIza", r"[A-Za-z0-9_-]{35}")),
    SecretPattern("aws-access-key-id", _token("A(?:KIA|SIA|BIA|CCA)", r"[A-Z0-9]{16}")),
    SecretPattern(
        "aws-secret-access-key",
        rf"[Aa](?i:ws_?secret_?(?:access_?)?key){_ASSIGN}\\?[\"']?"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        group="secret",
    ),
    SecretPattern("huggingface-token", _token("hf_", r"[A-Za-z0-9]{30,}")),
    SecretPattern(
        "bearer-token",
        _token("[Bb]", rf"(?i:earer)\s+{_UNREDACTED}{_NOT_A_WORD}")
        + r"(?P<token>[A-Za-z0-9._~+/-]+=*)",
        group="token",
    ),
    SecretPattern(
        "basic-auth",
        _token("[Bb]", rf"(?i:asic)\s+{_UNREDACTED}{_NOT_A_WORD}")
        + r"(?P<credentials>[A-Za-z0-9+/]{6,}=*)",
        group="credentials",
    ),
    SecretPattern(
        "url-password",
        # scheme://user:PASSWORD@host; the scheme is not needed, only that there is one.
        r"://(?<=[A-Za-z0-9+.-]://)[^\s:/?#@\"'<>]*:"
        rf"{_UNREDACTED}(?P<password>[^\s/?#\"'<>]+)@",
        group="password",
    ),
    _SECRET_VALUE,
)


# Each name of _SECRET_NAME, spelt out (a lookbehind has a fixed width), by its last letter.
_NAMES_BY_LAST_LETTER = {
    "d": ("password", "passwd", "pwd"),
    "e": ("passphrase",),
    "t": ("secret",),
    "n": ("token", "authorization"),
    "h": ("auth",),
    "y": tuple(f"{s}{j}key" for s in ("api", "private", "secret", "access") for j in ("", "[_-]")),
}


def _hint() -> str:
    """One regex that matches wherever a default pattern could match, in text or in JSON.

    Each branch starts with a literal "pivot" character, chosen to be rare in ordinary events
    (``:`` and ``=`` for a secret's name, ``_`` and ``-`` for a token's prefix), then looks
    around it: re scans for the set of pivots (a charset prefix) and tries the branches only
    there. A hint must also fire on the JSON form of a secret, where quotes, backslashes and
    control characters are escaped.
    """
    after: dict[str, list[str]] = {}

    def pivot(chars: str, *tails: str) -> None:
        for char in chars:
            after.setdefault(char, []).extend(tails)

    # A separator after white space (escaped or not ASCII too: checking those by hand costs
    # less than a lookbehind of variable width), right after a name, or after a quote (plain
    # or escaped) closing a name.
    def names(close: str) -> str:
        lasts = "".join(_NAMES_BY_LAST_LETTER)
        groups = "|".join(
            f"(?<=(?i:{last}){close}[:=])(?:"
            + "|".join(f"(?<=(?i:{name}){close}[:=])" for name in names)
            + ")"
            for last, names in _NAMES_BY_LAST_LETTER.items()
        )
        return f"(?<=(?i:[{lasts}]){close}[:=])(?:{groups})"

    pivot(
        ":=",
        # After a quote: '"password":' in JSON (first, as every name in a JSON document is
        # followed by '":'), 'password\":' in JSON or in text encoded twice, and the JSON of
        # the latter, 'password\\\":'.
        r"(?<=[\"'][:=])(?:"
        + names("[\"']")
        + r"|(?<=\\[\"'][:=])(?:"
        + "|".join((names(r"\\[\"']"), names(r"\\\\\\\""), names(r"\\\\'")))
        + "))",
        # After a letter: 'password=', or an escaped white space: 'password\t='.
        r"(?<=[A-Za-z0-9][:=])(?:" + names("") + r"|(?<=\\[tnrf][:=])|(?<=\\u[0-9a-fA-F]{4}[:=]))",
        r"(?<=[^\x00-\x08\x0e-\x1b\x21-\x7f][:=])",  # after white space, or not ASCII
    )
    # A token's prefix ends with "_" or "-"; the letter before it is checked first.
    pivot(
        "_",
        r"(?<=[bfkoprsu]_)(?:(?<=gh[pousr]_)|(?<=github_)(?=pat_)|(?<=hf_)"
        r"|(?<=[rs]k_)(?=live_|test_))",
    )
    pivot(
        "-",
        r"(?<=[abkoprst]-)(?:(?<=sk-)(?=[A-Za-z0-9_-]{20})|(?<=xox[abpors]-)|(?<=xapp-)"
        r"|(?<=glpat-)|(?<=gldt-)|(?<=glrt-)|(?<=glptt-)|(?<=glsoat-))",
    )
    pivot("bB", r"(?=(?i:earer|asic))")
    pivot("K", r"(?<=PRIVATE K)(?=EY)")
    pivot("J", r"(?<=eyJ)")
    pivot("A", r"(?=KIA|SIA|BIA|CCA|Iza)")
    pivot("@", "")
    return "|".join(
        re.escape(char) + ("(?:" + "|".join(tails) + ")" if any(tails) else "")
        for char, tails in after.items()
    )


_HINT = _hint()

#: Words one of which (in lower case) every default pattern needs in order to match: a text
#: with none of them holds no secret a default pattern finds, and skips the hint's scan. They
#: are a superset of the hint's pivots (names of secrets, tokens' prefixes, auth schemes, the
#: "@" of a password in a URL), so the check never misses what the hint would catch.
_KEYWORDS: tuple[bytes, ...] = (
    b"pass",
    b"pwd",
    b"secret",
    b"token",
    b"auth",
    b"key",
    b"bearer",
    b"basic",
    b"eyj",
    b"akia",
    b"asia",
    b"abia",
    b"acca",
    b"aiza",
    b"gh",
    b"hf_",
    b"sk_",
    b"rk_",
    b"sk-",
    b"xox",
    b"xapp-",
    b"gl",
    b"@",
)


def might_hold_a_secret(data: bytes) -> bool:
    """Whether ``data`` contains one of :data:`_KEYWORDS` (case-insensitively): a cheap test
    that lets most events skip the hint's regular expression."""
    lowered = data.lower()
    return any(word in lowered for word in _KEYWORDS)


_HINTED = frozenset(DEFAULT_PATTERNS)

# The rest of a JSON string after its opening quote.
_JSON_BODY = rb'(?P<body>[^"\\]*(?:\\.[^"\\]*)*)"'
_JSON_STRINGS = re.compile(b'"' + _JSON_BODY)
# A string, or a string member whose name says its value is secret: {"password": "..."}.
_JSON_MEMBERS = re.compile(
    rb'"(?:(?P<name>[\w.-]*?' + _SECRET_NAME.encode() + rb')"\s*:\s*")?' + _JSON_BODY
)
_NOT_SECRET_VALUES = frozenset({"", "true", "false", "null", "none"})
# Default patterns never match inside a redaction, so passes stop; patterns of one's own might.
_MAX_PASSES = 8


def _replacer(regex: re.Pattern[str], group: int | str, marker: str) -> Callable[[str], str]:
    """A function that replaces the secrets ``regex`` finds in a text by ``marker``."""

    def replace(match: re.Match[str]) -> str:
        start, end = match.span(group)
        if start == end:  # an empty or absent group: nothing to hide
            return match.group()
        offset = match.start()
        whole = match.group()
        return whole[: start - offset] + marker + whole[end - offset :]

    def redact(text: str) -> str:
        return regex.sub(replace, text)

    return redact


def _compile(pattern: SecretPattern) -> Callable[[str], str]:
    """Compile one pattern into its replacing function, refusing a bad regex or group."""
    try:
        regex = re.compile(pattern.regex)
    except re.error as exc:
        raise UsageError(
            f"secret pattern {pattern.name!r}: bad regex {pattern.regex!r}: {exc}"
        ) from exc
    group = pattern.group
    known = group in regex.groupindex if isinstance(group, str) else 0 <= group <= regex.groups
    if not known:
        raise UsageError(f"secret pattern {pattern.name!r}: its regex has no group {group!r}")
    return _replacer(regex, group, f"[REDACTED:{pattern.name}]")


class Redactor:
    """Replaces secrets in texts and in encoded events by ``[REDACTED:<pattern name>]``.

    A redactor is immutable and safe to share between threads.

    Args:
        patterns: the kinds of secret to find, applied in order; :data:`DEFAULT_PATTERNS` by
            default.
        extra: more patterns, applied after ``patterns``; a string is a regex whose whole match
            is redacted as ``[REDACTED:custom]``.

    Raises:
        UsageError: a pattern's regex does not compile, or has no group named by ``group``.
    """

    __slots__ = ("_all", "_hint_bytes", "_hint_text", "_member_marker", "_patterns", "_unhinted")

    def __init__(
        self,
        patterns: Iterable[SecretPattern] = DEFAULT_PATTERNS,
        *,
        extra: Iterable[SecretPattern | str] = (),
    ) -> None:
        chosen = [*patterns]
        chosen += [SecretPattern("custom", p) if isinstance(p, str) else p for p in extra]
        self._patterns = tuple(chosen)
        self._all = tuple(_compile(p) for p in chosen)
        self._unhinted = tuple(
            redact for p, redact in zip(chosen, self._all, strict=True) if p not in _HINTED
        )
        hinted = len(self._unhinted) < len(self._all)
        self._hint_text = re.compile(_HINT) if hinted else None
        self._hint_bytes = re.compile(_HINT.encode()) if hinted else None
        self._member_marker = (
            msgspec.json.encode(f"[REDACTED:{_SECRET_VALUE.name}]")
            if _SECRET_VALUE in self._patterns
            else None
        )

    @property
    def patterns(self) -> tuple[SecretPattern, ...]:
        """The patterns this redactor applies, in order."""
        return self._patterns

    def with_patterns(self, *extra: SecretPattern | str) -> Redactor:
        """A new redactor with this one's patterns and ``extra`` after them.

        Args:
            *extra: patterns, or regexes redacted whole as ``[REDACTED:custom]``.

        Returns:
            The new redactor; this one is unchanged.
        """
        return Redactor(self._patterns, extra=extra)

    def redact(self, text: str) -> str:
        """Replace every secret in a text.

        Args:
            text: any text, an error message for instance.

        Returns:
            The text with each secret replaced by ``[REDACTED:<pattern name>]``; the text
            itself when it holds none.
        """
        hint = self._hint_text
        # A secret glued to the end of another ("AKIA...ghp_...") is no token of its own until
        # the first one is replaced: so redact again until nothing changes.
        for _ in range(_MAX_PASSES):
            redactions = self._all if hint is not None and hint.search(text) else self._unhinted
            before = text
            for redact in redactions:
                text = redact(text)
            if text == before:
                break
        return text

    def redact_json(self, data: bytes) -> bytes:
        """Replace every secret in the strings of a JSON document, an encoded event.

        Each string is redacted as :meth:`redact` would, and the string value of a member whose
        name says it is secret (``"password"``, ``"api_key"``, ...) is replaced whole.

        Args:
            data: valid JSON, as msgspec encodes it.

        Returns:
            Valid JSON of the same structure with the secrets replaced; ``data`` itself when it
            holds none.

        Raises:
            UsageError: a string to redact is not valid JSON.
        """
        hint = self._hint_bytes
        if not self._unhinted and (
            hint is None or not might_hold_a_secret(data) or hint.search(data) is None
        ):
            return data
        if self._member_marker is None:
            return _JSON_STRINGS.sub(self._redact_string, data)
        return _JSON_MEMBERS.sub(self._redact_member, data)

    def redact_json_many(self, documents: list[bytes]) -> list[bytes]:
        """:meth:`redact_json` over several documents (the events of one append) at once.

        One scan of them all tells, in the common case, that none holds a secret.
        """
        hint = self._hint_bytes
        if not self._unhinted:
            joined = b"\n".join(documents)
            if hint is None or not might_hold_a_secret(joined) or hint.search(joined) is None:
                return documents
        return [self.redact_json(document) for document in documents]

    def _redact_member(self, match: re.Match[bytes]) -> bytes:
        if match.start("name") == -1:
            return self._redact_string(match)
        value = self._decode(match)
        if value.lower() in _NOT_SECRET_VALUES or value.startswith("[REDACTED:"):
            return self._redact_string(match)
        assert self._member_marker is not None
        return match.group()[: match.start("body") - match.start() - 1] + self._member_marker

    def _redact_string(self, match: re.Match[bytes]) -> bytes:
        whole = match.group()
        hint = self._hint_bytes
        if not self._unhinted and (hint is None or hint.search(match.group("body")) is None):
            return whole
        text = self._decode(match)
        redacted = self.redact(text)
        if redacted == text:
            return whole
        return whole[: match.start("body") - match.start() - 1] + msgspec.json.encode(redacted)

    @staticmethod
    def _decode(match: re.Match[bytes]) -> str:
        """The text of the string whose body ``match`` found."""
        start = match.start("body") - 1
        try:
            return msgspec.json.decode(match.string[start : match.end()], type=str)
        except msgspec.DecodeError as exc:
            raise UsageError(f"cannot redact the JSON string at byte {start}: {exc}") from exc

    def __repr__(self) -> str:
        return f"Redactor({', '.join(p.name for p in self._patterns)})"
