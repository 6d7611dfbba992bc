"""Secrets redacted from events before they are appended, and from onward's own log records.

The log is immutable: a token that reaches it stays there, in every backup and every replica,
until the whole log is rewritten. Agents fail loudly, and their error messages carry what they
were holding: an ``Authorization`` header in an HTTP client's traceback, a
``postgres://user:password@host`` URL in a driver's error, a config dump, a private key. So the
log passes every encoded event through :meth:`Redactor.redact_json` first, and each secret is
replaced by ``[REDACTED:<pattern name>]``. The same redactor serves the other routes: the
engine redacts ``bytes`` before they are encoded (:mod:`onward.events.values`), messages before
they are cut, and every onward logger carries a :class:`RecordRedactor`; names stored as given
(sessions, streams) are refused by :meth:`Redactor.check_name` when they hold a secret. What
onward emits outside its log and cannot tie to one log (a record's traceback, an
OpenTelemetry span) passes :func:`redact_for_any_log`: the default patterns and the user's
patterns of every redactor in use.

:data:`DEFAULT_PATTERNS` finds bearer and basic credentials, AWS access key ids and secret keys
(labelled, or beside their key id), Google API keys, GitHub, GitLab, Slack, Stripe, Hugging Face,
OpenAI and Anthropic tokens, JWTs, the token formats of gitleaks' default rules
(:mod:`onward.events.tokens`), Azure connection strings and SAS signatures, passwords in URLs
and keys given as a URL's user (a Sentry DSN's), PEM private keys, a password given on a
command line (``mysql -p<password>``, ``sshpass -p``, ``docker login -p``, ``curl -u
user:<password>``, ``--password <password>``, ``--token <token>``, ``--api-key``,
``--client-secret``..., or the repr of its list of arguments) unless it stands for one
(``--token $GH_TOKEN``), the value of a ``Cookie:`` or ``Set-Cookie:``
header, the values of ``password=``, ``DB_PASS=``, ``ROOT_PW=``, ``token:``,
``"api_key": "..."``, ``"Cookie": "..."`` and their kin (in a JSON object, or as the pair
``["api_key", "..."]`` of a dict stored in pairs by :mod:`onward.events.values`), unless
the value stands for a secret rather than holds one (code, a reference, an auth scheme's name:
:mod:`onward.events._labels`), the random-looking value of any other ``*_KEY=`` or
``credentials:`` but an id's (``cache_key=``), and a random-looking token of 32 to 128
characters inside a text. A token may be glued to an identifier by ``_`` or
``-``. A text is read as it is written, and again with its escapes decoded (``\\uXXXX``,
``\\/``, a percent-encoded ASCII character: ``"\\u0041KIA..."``, ``pass%77ord=...``,
``?options=-c%20app.password%3D...``): a secret found there is replaced where it is written,
escapes and all. Where a secret follows a name (``password=hunter2``), the name stays and only
the value goes. It is a safety net, not a proof:
a short or unremarkable string that has no known shape and follows no telling name passes, and
so does a number, and so does a string that is nothing but a random token (an id, a cursor:
data, not a leak in a message).

Speed: the log redacts every append, and most events hold no secret. Each default pattern has a
cheap hint: a "pivot" in one compiled regex (the ``=`` after a secret's name, a token's
prefix), or, for those that are long runs of token characters (a vendor's token, a random
string), a run of 24 such characters, found by mapping the bytes through a table and searching
for a string. Together they reject such an event in one pass over its bytes (a few µs; see
``redact_us`` in ``scripts/bench_log.py``); an event of the shape of one found clean before
(the same bytes but for its digits: an index, a time, a version) is passed on a look-up, without
a scan, as no hint tells one digit from another. Only the JSON strings in which a hint fires are
decoded, redacted and encoded again, so the output is always valid JSON, decodes to the same
structure, and the bytes around a secret are kept as they were. Patterns added by the user have
no hint: they are searched in every string of every event, which costs more.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import re
import string
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from onward.events._labels import (
    labels_a_credential,
    names_a_file,
    names_an_id,
    reads_as_code,
    stands_for_a_secret,
)
from onward.events.exceptions import UsageError
from onward.events.tokens import VENDOR_TOKENS

__all__ = [
    "DEFAULT_PATTERNS",
    "RecordRedactor",
    "Redactor",
    "SecretPattern",
    "redact_for_any_log",
    "redacted_logger",
]


class SecretPattern(msgspec.Struct, frozen=True):
    """One kind of secret: a regex, and the name its redactions carry.

    Attributes:
        name: shown in the replacement, ``[REDACTED:<name>]``.
        regex: a Python regular expression, searched in every string of an event.
        group: the group of ``regex`` that holds the secret (a number or a name); only that part
            is replaced, so ``password=hunter2`` becomes ``password=[REDACTED:...]``. ``0`` (the
            default) replaces the whole match.
        entropy: the least Shannon entropy, in bits per character, the secret must have to be
            replaced (like gitleaks' ``entropy``); 0 (the default) replaces every match.
        random: the secret must also read as random: its characters switch between lower
            case, upper case and digits as often as in a generated token, not as in words,
            identifiers or paths.
    """

    name: str
    regex: str
    group: int | str = 0
    entropy: float = 0.0
    random: bool = False


# The separator between a secret's name and its value: `password=x`, `"token": "x"`, `pwd => x`,
# and `\"token\": \"x\"` in JSON that was encoded twice. A line break after it may be an escape
# (`'password:\\n  hunter2'`, the repr of a YAML text): the value is on the next line. After a
# quoted name, the comma of a pair as Python or JSON writes it, when a quoted value follows:
# `('api_key', 'x')`, `["token", "x"]` (a tuple's repr in a message: a KeyError's key, the
# header_items() or os.environ.items() a message shows), as a pair stored as a value is redacted.
_ASSIGN = (
    r"(?:\\?[\"']?\s*(?>=>|:=|[:=])(?:\s|\\[nrt])*+"
    r"|\\?[\"'],[ \t]*(?=\\?[\"']))"
)
# Names whose value is a secret, alone or as the end of a longer name (DB_PASSWORD, x-api-key,
# client_secret, access_token, oauth), case-insensitive: password, passwd, passphrase, pwd,
# secret, token, auth, authorization, api_key, private_key, secret_key, access_key, cookie (a
# Cookie or Set-Cookie header's, SESSION_COOKIE); pass alone or as the last word of a name
# (DB_PASS, smtp-pass, dbPass; not bypass, COMPASS); and pw as the last word of a longer name
# only (ROOT_PW, admin-pw, dbPw; not pw = getpass(), HTTPW, example.pw:8443).
# Written from a charset of their first letters, which re scans for quickly.
_SECRET_NAME = (
    r"[PpSsTtAaCc](?i:(?<=p)(?:ass(?:word|wd|phrase|(?<!(?-i:[A-Za-z0-9]p)ass)"
    r"(?<!(?-i:[A-Z]P)ass))|wd|w(?<=[_-]pw|(?-i:[a-z0-9]P)w)|rivate[_-]?key)"
    r"|(?<=s)ecret(?:[_-]?key)?"
    r"|(?<=t)oken|(?<=a)(?:uth(?:orization)?|(?:pi|ccess)[_-]?key)|(?<=c)ookie)"
)
_UNREDACTED = r"(?!\[REDACTED:)"
# A single prose word ("Bearer token", "basic auth") is not a credential.
_NOT_A_WORD = r"(?![A-Z]?[a-z]+[.,;:!?)]*(?:[\s\"'\]}]|\Z))"


def _token(start: str, rest: str, *, glued: bool = True) -> str:
    """A regex for ``start`` then ``rest``, where ``start`` does not continue a longer word.

    ``start`` (of fixed width) comes first and the check on what precedes it after, so that re
    finds candidates by searching for a literal rather than trying every position. A token may
    be glued to an identifier by ``_`` or ``-`` (``key_ghp_...``, ``id-AKIA...``) unless
    ``glued`` is False (a word such as "bearer" must stand alone).
    """
    before = "[A-Za-z0-9]" if glued else "[A-Za-z0-9_-]"
    return rf"{start}(?:(?<!{before}{start})|{_after_escape(start)}){rest}"


def _after_escape(start: str) -> str:
    """A regex that ``start`` (of fixed width) follows an escape sequence: ``\\n``, ``\\r``,
    ``\\t``, ``\\x1b``, ``\\u2028``, ``\\033`` or ``\\0``, as ``repr()``, JSON and C write
    a line break, a tab or a control character, or ``%0A``, as a URL does. The escape's last
    letter or digit is not part of the token after it. (Not ``\\a`` or ``\\v``: neither
    ``repr()`` nor JSON writes them, and a Windows path holds them: ``C:\\projects\\ask-...``;
    JSON writes ``\\b`` and ``\\f``.)"""
    return (
        rf"(?<=\\[nrtbf0]{start})|(?<=\\[0-7]{{3}}{start})|(?<=\\x[0-9A-Fa-f]{{2}}{start})"
        rf"|(?<=\\u[0-9A-Fa-f]{{4}}{start})|(?<=\\U[0-9A-Fa-f]{{8}}{start})"
        rf"|(?<=%[0-9A-Fa-f]{{2}}{start})"
    )


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
    # A Python literal: bytes (b'...', bytearray(b'...')), or a list, tuple, set or dict of
    # them, whole (the first character alone was taken for the value).
    r"|(?:(?:[bB][rR]?|[rR][bB]|bytearray\(b?)(?P<inner>\\?[\"'])(?:(?!(?P=inner))[^\n])*"
    r"(?P=inner)\)?"
    r"|\[[^\]\n]*\]|\([^)\n]*\)|\{[^}\n]*\}"
    # Otherwise up to white space, a quote, or an "&" that starts a query's next parameter
    # (?password=x&page=2; an "&" inside a password, Tr0ub4dor&3, is part of it), but for the
    # brackets and punctuation that close it (f(password=x), password=x; next). The run is
    # read once, to its last character that closes nothing: a look from each character for
    # the end of the brackets after it read them again and again, the square of their number.
    r"|(?:[^\s\"'&<>]|&(?![\w.~%;-]*=))"
    r"(?:(?:[^\s\"'&<>]|&(?![\w.~%;-]*=))*(?:[^\s\"'&<>,;)}\]]|&(?![\w.~%;-]*=)))?)))",
    group="value",
)

# A run of the characters tokens are made of. Every default pattern that has no hint of its
# own (a vendor's token, a labelled credential, a random string) holds one at least
# _RUN_LENGTH long, which the quick scan looks for.
_RUN_CHARS = "A-Za-z0-9+/_=%-"
_RUN_LENGTH = 24
# A random-looking token: 32 to 128 characters of base64 (plain or URL-safe), with lower case,
# upper case and digits; the entropy and randomness checks follow. Not when it is the whole
# text: a string that is nothing but an id, a cursor or a digest is data, not a leak.
_RANDOM = (
    r"(?<![A-Za-z0-9+/=_-])(?=[A-Za-z0-9+/_-]{0,127}[0-9])(?=[A-Za-z0-9+/_-]{0,127}[A-Z])"
    r"(?=[A-Za-z0-9+/_-]{0,127}[a-z])[A-Za-z0-9+/_-]{32,128}={0,2}(?![A-Za-z0-9+/=_-])"
)

_LABELLED_CREDENTIAL = SecretPattern(
    # The value of any other name that ends like a credential's (ENCRYPTION_KEY=...,
    # signing-keys: ..., credentials=...), when it reads as one: long and random; not an id's
    # (cache_key=..., see _labels.names_an_id).
    "labelled-credential",
    # Only the end of the name is matched: what comes before it does not matter, and
    # scanning for it from every position would cost the square of a long text.
    r"(?i:key|credential|cred)(?i:s?)"
    rf"{_ASSIGN}\\?[\"']?(?P<value>[{_RUN_CHARS}]{{{_RUN_LENGTH},}})",
    group="value",
    entropy=3.5,
    random=True,
)
_RANDOM_TOKEN = SecretPattern(
    "random-token",
    rf"(?:(?<=[\s\S]){_RANDOM}|{_RANDOM}(?=[\s\S]))",
    entropy=4.0,
    random=True,
)
# Between two arguments of a command: white space, or "', '" in the repr of its list
# (subprocess.CalledProcessError's message: Command '['sshpass', '-p', '...', ...]').
_ARGUMENT_GAP = r"(?:[ \t]+|[\"'],[ \t]*[\"'])"
_OPTIONS = r"[^\n|;&]{0,200}?"
# The password a command line gives glued to -p (mysql -pSECRET, mysqldump, mariadb), after
# sshpass -p, after docker login's -p (glued or after a gap), after curl -u USER: (or --user, or
# -u last of a cluster of short options: -sSuUSER:; the pair quoted or not), or after an option
# named like a credential and a gap: its name ends in password, passwd, passphrase, token, secret,
# api-key or secret-key (--password SECRET, --db-password, --with-token, --access-token,
# --api-key, --client_secret; "--token=SECRET" is a secret-value's). (-p alone, as in mkdir -p or
# ls -p, names no password; nor is an option after --password, as psql's --password that only asks
# for one, nor an argument after a negated option, --no-password; nor does --token-file or
# --secret-name end like a credential's name.) The options before -p or -u are looked through up
# to 200 characters: further, each mention of the command in a long line would cost the rest of
# the line, the square of its length in all.
_CLI_PASSWORD = SecretPattern(
    "cli-password",
    # From a charset of the commands' first letters, which re scans for quickly.
    r"(?:[mcsd](?<![\w.-][mcsd])(?:(?<=m)(?:ysql(?:dump|admin|import|show|check|slap)?"
    rf"|ariadb(?:-dump|-admin)?)(?:\.exe)?{_ARGUMENT_GAP}(?:{_OPTIONS}{_ARGUMENT_GAP})?-p"
    rf"|(?<=c)url(?:\.exe)?{_ARGUMENT_GAP}(?:{_OPTIONS}{_ARGUMENT_GAP})?"
    rf"(?:-[A-Za-z]{{0,8}}u|--user)(?:{_ARGUMENT_GAP}|=)?[\"']?[^\s:\"']*:"
    rf"|(?<=s)shpass{_ARGUMENT_GAP}-p(?:{_ARGUMENT_GAP})?"
    rf"|(?<=d)ocker(?:\.exe)?{_ARGUMENT_GAP}login{_ARGUMENT_GAP}(?:{_OPTIONS}{_ARGUMENT_GAP})?"
    rf"-p(?:{_ARGUMENT_GAP})?(?!-))"
    # (Not a negated option, which takes no value: pg_dump --no-password DBNAME.)
    r"|-(?<![\w-]-)-(?!(?i:no|without)[_-])(?:[\w-]*[_-])?"
    r"(?i:pass(?:word|wd|phrase)|token|secret(?:[_-]?key)?|api[_-]?key)"
    rf"{_ARGUMENT_GAP}(?!-))"
    # (Unquoted, not a redirection: gh auth login --with-token < FILE reads it from a file.)
    r"(?P<quote>[\"'](?!,))?(?P<password>(?(quote)[^\"'\n]+|(?![<>])[^\s\"'|;&]+))",
    group="password",
)

# A cookie header's value, a credential as a whole whatever its cookies are named (Cookie:
# sessionid=...; _gh_sess=..., Set-Cookie: session=...; Path=/): up to the end of its line, a
# quote, or a backslash (the "\r\n" of a request's repr). It starts with a cookie's name and
# "=" (after "Cookie: " a word alone is a secret-value's, as a quoted value and a member's
# are: {'Cookie': '...'}).
_COOKIE_HEADER = SecretPattern(
    "cookie",
    _token("[CcSs]", r"(?i:(?<=c)ookie|(?<=s)et-cookie):[ \t]*", glued=False)
    + r"(?P<value>[^\s\"'\\=;,]++=[^\r\n\"'\\]*)(?<![ \t])",
    group="value",
)

# scheme://KEY@host: a URL's user, with no password, that is a key (a Sentry DSN's, a token
# given as a git remote's user), when it reads as one (see _a_users_name): a user's name
# (ssh://deploy@host, https://build-agent-01@ci, https://john.doe@...) stays.
_URL_KEY = SecretPattern(
    "url-key",
    r"://(?<=[A-Za-z0-9+.-]://)(?P<key>[A-Za-z0-9_-]{12,}+)@",
    group="key",
)

# GitLab's token kinds: personal, deploy, runner, pipeline trigger, SCIM, CI job, feature
# flag, feed, incoming mail, Kubernetes agent, OAuth application.
_GITLAB_KINDS = ("pat", "dt", "rt", "ptt", "soat", "cbt", "ffct", "ft", "imt", "agent", "oas")


def _vendor_patterns() -> list[SecretPattern]:
    """A pattern per vendor of :data:`VENDOR_TOKENS` (its shapes as alternatives)."""
    shapes: dict[str, list[str]] = {}
    for name, prefix, rest in VENDOR_TOKENS:
        # A prefix that checks what comes before it (a match that starts inside a token) needs
        # no check that it starts a word.
        shape = prefix + rest if "(?<=" in prefix else _token(prefix, rest)
        shapes.setdefault(name, []).append(shape)
    return [
        SecretPattern(name, f"(?:{'|'.join(regexes)})(?![A-Za-z0-9])")
        for name, regexes in shapes.items()
    ]


# A JSON web token: three parts of base64url, split by dots. Each run of token characters after
# an "eyJ" is taken whole, its parts or none (the parts are judged by _not_a_jwt): a regex that
# failed on a run without its dots tried again from every "eyJ" in it, to its end each time.
_JWT = SecretPattern(
    "jwt",
    _token(
        "eyJ",
        r"[A-Za-z0-9_-]{4,}+(?P<parts>\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+)?",
    ),
)
# OpenAI's keys: "sk-" and 20 characters or more, a digit among them. The run is taken whole
# and its digit looked for after (_no_digit): a look ahead for it from every "sk-" of a run
# that has none read the run to its end each time.
_OPENAI_KEY = SecretPattern("openai-key", _token("sk-", r"[A-Za-z0-9_-]{20,}+"))


#: The patterns a :class:`Redactor` uses unless told otherwise, most specific first.
DEFAULT_PATTERNS: tuple[SecretPattern, ...] = (
    SecretPattern(
        # An AWS secret key beside its key id, with no `key=` to name it (a CSV of
        # credentials, `aws configure` output); before the key id itself is replaced.
        "aws-secret-key",
        r"A(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Z0-9])[^\n]{0,40}?(?<![A-Za-z0-9/+])"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        group="secret",
        entropy=3.5,
    ),
    _PRIVATE_KEY,
    _JWT,
    SecretPattern("anthropic-key", _token("sk-ant-", r"[A-Za-z0-9_-]{20,}")),
    _OPENAI_KEY,
    # GitHub's and GitLab's prefixes are found glued to anything (`v2ghp_...`), as gitleaks'
    # rules find them: no identifier ends in them by chance.
    SecretPattern("github-token", r"g(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{22,})"),
    SecretPattern("gitlab-token", rf"gl(?:{'|'.join(_GITLAB_KINDS)})-[A-Za-z0-9_-]{{20,}}"),
    SecretPattern("slack-token", _token("x", r"(?:ox[abeoprs]|app)-[A-Za-z0-9-]{10,}")),
    SecretPattern("stripe-key", _token("[rs]k_", r"(?:live|test|prod)_[A-Za-z0-9]{16,}")),
    SecretPattern("google-api-key", _token("AIza", r"[A-Za-z0-9_-]{35}")),
    SecretPattern("aws-access-key-id", _token("A(?:KIA|SIA|BIA|CCA)", r"[A-Z0-9]{16}")),
    SecretPattern("huggingface-token", _token("hf_", r"[A-Za-z0-9]{30,}")),
    *_vendor_patterns(),
    SecretPattern(
        "aws-secret-access-key",
        rf"[Aa](?i:ws_?secret_?(?:access_?)?key){_ASSIGN}\\?[\"']?"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        group="secret",
    ),
    SecretPattern(
        "bearer-token",
        _token("[Bb]", rf"(?i:earer)\s+{_UNREDACTED}{_NOT_A_WORD}", glued=False)
        + r"(?P<token>[A-Za-z0-9._~+/-]+=*)",
        group="token",
    ),
    SecretPattern(
        "basic-auth",
        _token("[Bb]", rf"(?i:asic)\s+{_UNREDACTED}{_NOT_A_WORD}", glued=False)
        + r"(?P<credentials>[A-Za-z0-9+/]{6,}=*)",
        group="credentials",
    ),
    SecretPattern(
        "url-password",
        # scheme://user:PASSWORD@host; the scheme is not needed, only that there is one. (Not
        # the colon of a user replaced by a marker, scheme://[REDACTED:url-key]@host.)
        rf"://(?<=[A-Za-z0-9+.-]://){_UNREDACTED}[^\s:/?#@\"'<>]*:"
        rf"{_UNREDACTED}(?P<password>[^\s/?#\"'<>]+)@",
        group="password",
    ),
    _URL_KEY,
    SecretPattern(
        # Azure connection strings (storage accounts, service bus) and SAS signatures.
        "azure-key",
        r"(?:(?i:(?:(?<![A-Za-z])|(?<=\\[nrt]))(?:Shared)?AccessKey|AccountKey)\s*=\s*"
        r"|[?&](?i:sig)=)(?P<key>[A-Za-z0-9+/%]{40,}(?:={1,2}|(?:%3[Dd]){1,2})?)",
        group="key",
    ),
    _CLI_PASSWORD,
    _COOKIE_HEADER,
    _SECRET_VALUE,
    _LABELLED_CREDENTIAL,
    _RANDOM_TOKEN,
)


# Each name of _SECRET_NAME, spelt out (a lookbehind has a fixed width), by its last letter.
_NAMES_BY_LAST_LETTER = {
    "d": ("password", "passwd", "pwd"),
    "w": ("pw",),
    "e": ("passphrase", "cookie"),
    "s": ("pass",),
    "t": ("secret",),
    "n": ("token", "authorization"),
    "h": ("auth",),
    "y": tuple(f"{s}{j}key" for s in ("api", "private", "secret", "access") for j in ("", "[_-]")),
}


def _hint(*, text: bool) -> str:
    """One regex that matches wherever a default pattern could match, in a text or, unless
    ``text``, in a JSON document.

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
    def name_ends(close: str, separator: str) -> str:
        """The look at a name's last two letters that each name passes: most names end
        otherwise ("type", "index", "result"), and a name that fails it skips the looks of
        names() one by one."""
        lasts = "".join(_NAMES_BY_LAST_LETTER)
        ends = {n[-2:] for ns in _NAMES_BY_LAST_LETTER.values() for n in ns}
        assert all(end.isalpha() for end in ends), ends  # letters, not a part of a regex
        seconds = "".join(sorted({end[0] for end in ends}))
        return f"(?<=(?i:[{seconds}][{lasts}]){close}{separator})"

    def names(close: str, separator: str = "[:=]") -> str:
        groups = "|".join(
            f"(?<=(?i:{last}){close}{separator})(?:"
            + "|".join(f"(?<=(?i:{name}){close}{separator})" for name in names)
            + ")"
            for last, names in _NAMES_BY_LAST_LETTER.items()
        )
        return f"{name_ends(close, separator)}(?:{groups})"

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
    # The comma of a pair after a quoted name: ('password', '...') in text, and in JSON
    # (["password", "..."], escaped inside a string; in a document, a list of strings is no
    # text, and is not redacted as one). In JSON, also a pair in a text escaped once before
    # it was put in a string ([\"password\", \"...\"], a JSON text a message quotes), whose
    # quote comes out escaped twice: for that one, whose looks would cost as much to compile as
    # all the others, the last two letters of a name are enough of a hint.
    if text:
        pair = (
            r"(?<=[\"'],)(?:"
            + names("[\"']", ",")
            + r"|(?<=\\[\"'],)(?:"
            + names(r"\\[\"']", ",")
            + "))"
        )
    else:  # where JSON escapes a quote: '"' always, "'" never
        pair = (
            r"(?<=',)(?:"
            + names("'", ",")
            + r"|(?<=\\',)(?:"
            + names(r"\\'", ",")
            + "|"
            + name_ends(r"\\\\'", ",")
            + r"))|(?<=\\\",)(?:"
            + names(r'\\"', ",")
            + "|"
            + name_ends(r'\\\\\\"', ",")
            + ")"
        )
    pivot(",", pair)
    # A token's prefix ends with "_" or "-"; the letter before it is checked first.
    # (And the vendor tokens whose characters include "." or "~", which may break them into
    # runs shorter than _RUN_LENGTH: PlanetScale's, Typeform's, an Azure AD client secret.)
    pivot(
        "_",
        r"(?<=[befkoprsu]_)(?:(?<=gh[pousr]_)|(?<=github_)(?=pat_)|(?<=hf_)"
        r"|(?<=[rs]k_)(?=live_|test_|prod_)|(?<=pscale_)|(?<=tfp_))",
    )
    pivot("~", r"(?<=Q~)")
    pivot(
        "-",
        r"(?<=[abekopqrst]-)(?:(?<=sk-)(?=[A-Za-z0-9_-]{20})|(?<=xox[abeoprs]-)|(?<=xapp-)"
        + "".join(f"|(?<=gl{kind}-)" for kind in _GITLAB_KINDS)
        + ")",
    )
    pivot("bB", r"(?=(?i:earer|asic))")
    pivot("-", r"(?<=[ \t\"'-]-)(?=p|[A-Za-z]{0,8}u)|(?<=\\t-)(?=p|[A-Za-z]{0,8}u)")
    # An option named like a credential: --password, --db_password, --with-token, --api-key.
    pivot("-_", r"(?=(?i:pass|(?:token|secret(?:[_-]?key)?|api[_-]?key)[ \t\"'\\]))")
    pivot("K", r"(?<=PRIVATE K)(?=EY)")
    pivot("J", r"(?<=eyJ)")
    pivot("A", r"(?=KIA|SIA|BIA|CCA|Iza)")
    pivot("@", "")
    return "|".join(
        re.escape(char) + ("(?:" + "|".join(tails) + ")" if any(tails) else "")
        for char, tails in after.items()
    )


# A run of token characters long enough to hold a vendor's token, a labelled credential's
# value or a random string: the hint of every default pattern that has no pivot of its own.
# In bytes it is looked for by mapping each token character to "a" and the others to " ",
# then searching for as many "a"s (a tenth of the cost of a regex).
_RUN = rf"(?<![{_RUN_CHARS}])[{_RUN_CHARS}]{{{_RUN_LENGTH}}}"
_RUN_TEXT = re.compile(_RUN)
_TOKEN_BYTES = frozenset(re.findall(rb"[" + _RUN_CHARS.encode() + rb"]", bytes(range(128))))
_RUN_TABLE = bytes(0x61 if bytes([i]) in _TOKEN_BYTES else 0x20 for i in range(256))
_RUN_NEEDLE = b"a" * _RUN_LENGTH
_HINT_TEXT = re.compile(_hint(text=True))
# In JSON, also the tag of a dict stored in pairs, {"$dict": [[key, value], ...]}, and of a
# tuple, {"$tuple": [key, value]}, a pair of its own (an HTTP header as urllib's
# header_items() and http.client's getheaders() give it, an item of os.environ.items())
# (:mod:`onward.events.values`): a secret-named key there is no member name that the hint sees
# (for a tuple, one whose first item is a name like a member's: most tuples are no pair).
_PAIRS_TAGS = (b'"$dict"', b'"$tuple"')


def _hinted_text(text: str) -> bool:
    return _HINT_TEXT.search(text) is not None or _RUN_TEXT.search(text) is not None


# A run alone is no hint: ids are runs too (a UUID, a digest, a worker's id host/pid/...).
# The patterns the run stands for are of three kinds, and each leaves a trace of its own beside
# its run, in the JSON of a text as in the text (none of the characters below is escaped in
# JSON, so the distances are the same):
#
# * a random token (random-token) is a whole run of 32 to 128 characters, one of which at least
#   is an upper-case letter (its regex asks for one): a long run that holds one;
# * a labelled credential (labelled-credential, and the member rule's labelled value) follows
#   its label, a name ending in key, credential or cred, and an Azure key follows AccountKey=,
#   AccessKey= or sig=: "key", "cred" or "sig=", in any case, anywhere in the document (the
#   separator between a label and its value may be any white space, however long);
# * a vendor's token (onward.events.tokens) starts with its prefix, which is either glued to
#   its run and holds an upper-case letter (_UPPER_GLUED: the first kind's look sees them), or
#   ends at most _PREFIX_REACH characters before the run starts (SendGrid's "SG." and 22
#   characters and "." before its run; a Dynatrace token's "dt0c01." right before one; most
#   are inside the run, "npm_...").
#
# So a long run whose document holds none of those traces is no part of a match of those
# patterns; the other patterns have hints of their own (_HINT_BYTES), which are looked at
# still. test_redaction_run_hint holds this against the exact rules.
_CASE_RUN_TABLE = bytes(0x41 if 0x41 <= i <= 0x5A else _RUN_TABLE[i] for i in range(256))
_PREFIX_REACH = 32
# The vendors' prefixes (without their look behind) that hold an upper-case letter and are
# glued to a run of 24 token characters or more: SK and 32 hex digits, EAAM and 100 letters...
_UPPER_GLUED = frozenset(
    {
        "SK",
        "pypi-AgEIcHlwaS5vcmc",
        "eyJrIjoi",
        "AGE-SECRET-KEY-1",
        "ops_eyJ",
        "HRKU-AA",
        "EZ[AT]K",
        "GR1348941",
        "EAA[MC]",
        "LTAI",
        "AKCp",
        "cmVmd",
        "ATATT3",
        "AA",
        "[MNO]",
    }
)


def _vendor_prefixes() -> bytes:
    """A regex of the vendors' prefixes, from each one's last character (a rare one, mostly
    "_", "-" or ".", that re scans for quickly), that every digit matches (see _SHAPE_TABLE)."""
    by_last: dict[str, list[str]] = {}
    for _name, prefix, _rest in VENDOR_TOKENS:
        bare = re.sub(r"\(\?<=[^)]*\)", "", prefix)  # a look behind only narrows a match
        if bare in _UPPER_GLUED:
            continue
        by_last.setdefault(bare[-1], []).append(re.sub("[0-9]", r"\\d", bare))
    return "|".join(
        re.escape(last) + "(?:" + "|".join(f"(?<={bare})" for bare in bares) + ")"
        for last, bares in by_last.items()
    ).encode()


_VENDOR_PREFIXES = re.compile(_vendor_prefixes())
_LABELS = (b"key", b"cred", b"sig=")


def _runs_might_hold_a_secret(data: bytes, runs: bytes, first: int) -> bool:
    """Whether the long runs of token characters of ``data`` may be part of a pattern's match
    that no other hint sees (see above): ``runs`` is ``data`` through _RUN_TABLE, ``first``
    where its first long run starts."""
    lowered = data.lower()
    if any(lowered.find(label) >= 0 for label in _LABELS):
        return True
    cased = data.translate(_CASE_RUN_TABLE)
    start = first
    while start >= 0:
        end = runs.find(b" ", start)
        end = len(runs) if end < 0 else end
        if cased.find(b"A", start, end) >= 0:
            return True
        if _VENDOR_PREFIXES.search(data, max(0, start - _PREFIX_REACH), end) is not None:
            return True
        start = runs.find(_RUN_NEEDLE, end)
    return False


# The letters outside ASCII that the rules, ignoring case as Python does, take for an ASCII
# one, in UTF-8 (as JSON encodes them): U+0130 and U+0131 for "i", U+017F (a long s) for "s",
# U+212A (the Kelvin sign) for "k". A name spelt with one ("api\u212aey: ...") is a secret's
# name to the rules, and to no hint, which looks at bytes: a document holding one is scanned.
_FOLDS_TO_ASCII = (b"\xc4\xb0", b"\xc4\xb1", b"\xc5\xbf", b"\xe2\x84\xaa")


def might_hold_a_secret(data: bytes) -> bool:
    """Whether a default pattern could match somewhere in ``data`` (text or JSON), or the
    member rule in a dict stored in pairs: the quick scan that lets most events through
    untouched. False means that nothing would be redacted; True only that something might."""
    if not data.isascii() and any(data.find(letter) >= 0 for letter in _FOLDS_TO_ASCII):
        return True
    # find, not "in": CPython's "in" on bytes first tries the needle as an int, and
    # builds and drops a TypeError: about 2,000 instructions of each scan.
    if (data.find(b"%") >= 0 or data.find(b"\\") >= 0) and _ESCAPE_BYTES.search(data):
        return True  # an escape that may hide a secret (see _ESCAPE)
    runs = data.translate(_RUN_TABLE)
    first = runs.find(_RUN_NEEDLE)
    if first >= 0 and _runs_might_hold_a_secret(data, runs, first):
        return True
    return _HINT_BYTES.search(data) is not None


# Documents (encoded events) that no hint fires in, by their shape: the document with every
# digit made "0". Each character class of the hints and of the run holds all ten digits or none
# of them (test_redaction checks it), so a document of the shape of one found clean is clean:
# the events of a run differ mostly in numbers (an index, a time, an attempt, a version), and a
# look-up costs a tenth of a scan. Below _SHAPES_FROM bytes a scan costs about what a look-up
# does; past _SHAPES_UPTO a document seldom comes again. When full, the set starts afresh.
_SHAPE_TABLE = bytes(0x30 if 0x30 <= i <= 0x39 else i for i in range(256))
_SHAPES_FROM = 48
_SHAPES_UPTO = 1024
_CLEAN_SHAPES_MAX = 4096
_clean_shapes: set[bytes] = set()


def _document_might_hold_a_secret(data: bytes, own_id: str = "") -> bool:
    """:func:`might_hold_a_secret` of a JSON document, remembering the shapes found clean;
    a member whose value is ``own_id``, of the engine's own form, is left out of the scan
    (see :data:`_OWN_ID`)."""
    if not _SHAPES_FROM <= len(data) <= _SHAPES_UPTO:
        return might_hold_a_secret(_without_own_id(data, own_id))
    shape = data.translate(_SHAPE_TABLE)
    if shape in _clean_shapes:
        return False
    without = _without_own_id(data, own_id)
    if without is not data:
        return _document_might_hold_a_secret(without)
    if might_hold_a_secret(data):
        return True
    if len(_clean_shapes) >= _CLEAN_SHAPES_MAX:
        _clean_shapes.clear()
    _clean_shapes.add(shape)
    return False


# An id of the engine's own form (a task's: 16 hex digits, random or a hash), as a member's
# whole value, is left out of the quick scan of the document (see Redactor.redact_json_many):
# events that differ only by their task's id then fall in one shape. No default pattern
# redacts such an id: it is shorter than a run of token characters, and every other hint
# starts at a character that is no hex digit, or at "b" followed by "earer" or "asic" (checked
# in test_redaction). Nor can leaving it out hide a secret elsewhere: a value is redacted
# alone (by the patterns, or by its member's name, which stays in the scanned document),
# never with the letters of another string.
_OWN_ID = re.compile(f"[0-9a-f]{{1,{_RUN_LENGTH - 1}}}")


def _without_own_id(data: bytes, own_id: str) -> bytes:
    """``data`` with each member's value that is ``own_id`` made empty (``data`` itself
    when there is none, or ``own_id`` is not of the engine's own form)."""
    if not own_id:
        return data
    member = b':"' + own_id.encode() + b'"'
    if data.find(member) < 0 or _OWN_ID.fullmatch(own_id) is None:
        return data
    return data.replace(member, b':""')


_HINTED = frozenset(DEFAULT_PATTERNS)

# The rest of a JSON string after its opening quote.
_JSON_BODY = rb'(?P<body>[^"\\]*(?:\\.[^"\\]*)*)"'
_JSON_STRINGS = re.compile(b'"' + _JSON_BODY)
# A name whose value is secret: a secret's name, and whatever comes before it (DB_PASSWORD,
# x-api-key, $token).
_SECRET_MEMBER = r"[\w.$-]*?" + _SECRET_NAME
# A name that may label a credential: it ends in key(s), credential(s) or cred(s); whether it
# does is for labels_a_credential to say (SIGNING_KEY, stripeKey, dbCredentials do; cache_key,
# key, monkey, sacred do not). Its value is then redacted as the labelled-credential pattern
# redacts it in a text, when it reads as random.
_LABEL_MEMBER = r"[\w.$-]*?(?i:keys?|credentials?|creds?)"
_HINT_BYTES = re.compile(
    _hint(text=False).encode()
    + rb'|\$(?<="\$)(?=dict"|tuple":\["(?:'
    + _SECRET_MEMBER.encode()
    + rb"|"
    + _LABEL_MEMBER.encode()
    + rb')")'
)
# A string, or a string member whose name says its value is secret ({"password": "..."}) or
# labels a credential ({"SIGNING_KEY": "..."}).
_JSON_MEMBERS = re.compile(
    rb'"(?:(?P<name>'
    + _SECRET_MEMBER.encode()
    + rb')"\s*:\s*"|(?P<label>'
    + _LABEL_MEMBER.encode()
    + rb')"\s*:\s*")?'
    + _JSON_BODY
)
# The keys of a dict stored in pairs whose value is secret, as _JSON_MEMBERS reads the names.
_SECRET_KEY = re.compile(_SECRET_MEMBER, re.ASCII)
_MEMBER_MARKER = f"[REDACTED:{_SECRET_VALUE.name}]"
# A pair of such a key and a string not yet redacted, or a list or dict (bytes, a tuple...): a
# document without one is left alone.
_SECRET_PAIR = re.compile(rb'"' + _SECRET_MEMBER.encode() + rb'"\s*,\s*(?:"(?!\[REDACTED:)|[\[{])')
# A pair of a key that labels a credential and a string not yet redacted.
_LABEL_PAIR = re.compile(rb'"' + _LABEL_MEMBER.encode() + rb'"\s*,\s*"(?!\[REDACTED:)')
_LABEL_KEY = re.compile(_LABEL_MEMBER)
# A member whose name says its value is secret, and whose value is a list or a dict (bytes
# stored as {"$bytes": ...}, a tuple, a set, a list of keys): replaced whole, as a string is.
_SECRET_CONTAINER = re.compile(rb'"' + _SECRET_MEMBER.encode() + rb'"\s*:\s*[\[{]')
# How many names check_name remembers as free of secrets.
_CLEAN_NAMES = 100_000
# Default patterns never match inside a redaction, so passes stop; patterns of one's own might.
_MAX_PASSES = 8
# Texts this long that a redactor returned (each its own fixed point) are remembered, by length
# and hash, so that the same text met again (a value redacted as it is encoded, then in the
# event that holds it) is not scanned again; how many are remembered.
_REMEMBER_FROM = 4096
_REMEMBERED = 64


# An escape that may hide a secret's characters from the patterns, which read a text as it is
# written: a JSON or Python \uXXXX (an error message quoting a JSON body: "\u0041KIA...",
# "pass\u0077ord"), JSON's escaped slash (base64 as PHP writes it: "wJal\/K7..."), and a
# percent-encoded ASCII character (a URL's query: "options=-c%20app.password%3D...",
# "pass%77ord=..."). The quick scan of bytes looks for any percent-encoded byte (each of its
# character classes holds all ten digits or none, as the shapes found clean need), and for
# the JSON of a backslash before the "u" or "/" (JSON's own escape of a control character,
# "\u001b" in the bytes, is decoded before the patterns read the string).
_ESCAPE = re.compile(r"\\u[0-9A-Fa-f]{4}|\\/|%[0-7][0-9A-Fa-f]")
_ESCAPE_BYTES = re.compile(rb"\\\\(?:u[0-9A-Fa-f]{4}|/)|%[0-9A-Fa-f]{2}")


def _unescaped(text: str) -> tuple[str, list[int]]:
    """``text`` with its escapes (see _ESCAPE) decoded, and where each of its characters
    starts in ``text``, then where ``text`` ends."""
    pieces: list[str] = []
    starts: list[int] = []
    kept = 0
    for match in _ESCAPE.finditer(text):
        start = match.start()
        pieces.append(text[kept:start])
        starts.extend(range(kept, start))
        escape = match.group()
        pieces.append("/" if escape == "\\/" else chr(int(escape.lstrip("\\u%"), 16)))
        starts.append(start)
        kept = match.end()
    pieces.append(text[kept:])
    starts.extend(range(kept, len(text) + 1))
    return "".join(pieces), starts


def shannon_entropy(text: str) -> float:
    """The Shannon entropy of a text's characters, in bits per character."""
    if not text:
        return 0.0
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in Counter(text).values())


# Lower case, upper case and digits: a generated token switches between them at about 6 of
# 10 neighbouring characters, a word, an identifier or a path at 2 to 4.
_CLASS_OF = dict.fromkeys(string.ascii_lowercase, 0)
_CLASS_OF.update(dict.fromkeys(string.ascii_uppercase, 1))
_CLASS_OF.update(dict.fromkeys(string.digits, 2))
_RANDOM_SWITCHES = 0.45


def reads_random(text: str) -> bool:
    """Whether a text's letters and digits switch class (lower, upper, digit) as often as a
    random token's do."""
    classes = [_CLASS_OF[c] for c in text if c in _CLASS_OF]
    if len(classes) < 2:
        return False
    switches = sum(a != b for a, b in itertools.pairwise(classes))
    return switches >= _RANDOM_SWITCHES * (len(classes) - 1)


# A credential's name where a secret-value match starts (PASSWORD of DB_PASSWORD, x-api-key's
# api-key), and what makes "PASS:" a test's status rather than a password's name: "pass" alone
# before a bare colon (PASS: test_x, "pass: 12, fail: 0"); pass= and DB_PASS: stay names.
_NAME_AT = re.compile(r"[\w-]+")
_PASS_STATUS = re.compile(r"(?<![\w.$-])(?i:pass)[ \t]*:(?!=)")
# The name before a value that starts at the end of a text: cache_key=, "idempotency_key": ".
_NAME_BEFORE = re.compile(rf"([\w.$-]+){_ASSIGN}\\?[\"']?\Z", re.ASCII)


# The start of a name written before a pair's comma: the rest of the name and its opening quote.
_PAIR_NAME_START = re.compile(r"[\"']([\w.$-]*)\Z")
_A_WORD = re.compile(r"[A-Z]?[a-z]+")


def _no_pair(text: str, match: re.Match[str]) -> bool:
    """Whether a secret-value match that took a comma for its separator found no pair of a name
    and its value: the "name" is no quoted string of its own, or an option of a command's
    argument list (``['pg_dump', '--no-password', 'mydb']``), which names no value."""
    if "," not in text[match.start() : match.start("value")]:
        return False
    start = _PAIR_NAME_START.search(text, max(0, match.start() - 64), match.start())
    if start is None or start.group(1).startswith("-"):
        return True
    # A list of names ("missing fields: ('password', 'email')", a CSV header) is no pair: a
    # word alone after the name is taken for the next name, not for a secret.
    return _A_WORD.fullmatch(text, *match.span("value")) is not None


def _no_literal_secret(text: str, match: re.Match[str]) -> bool:
    """Whether the value a secret-value match found is no literal secret (code, a reference, a
    scheme's name; see :mod:`onward.events._labels`), its name a test's status or a file's
    that an error message names (``cat: /etc/passwd: No such file or directory``), or no name
    of a pair (see :func:`_no_pair`)."""
    if _no_pair(text, match):
        return True
    name_at = _NAME_AT.match(text, match.start())
    name = name_at.group() if name_at is not None else ""
    # Not a Python literal the pattern took whole (bytearray(b'...') is no call to keep).
    unquoted = match.start("quote") == -1 and match.start("inner") == -1
    # A status is a bare word or a count; a quoted value is a password ({ pass: 'x' }).
    if unquoted and _PASS_STATUS.match(text, match.start()) is not None:
        return True
    start, end = match.span("value")
    if stands_for_a_secret(name, text[start:end]):
        return True
    if unquoted and names_a_file(text, (match.start(), match.start() + len(name)), (start, end)):
        return True
    return unquoted and reads_as_code(text, start, end)


def _names_an_id_before(text: str, start: int) -> bool:
    """Whether what starts at ``start`` is the value of an id's name (``cache_key=...``)."""
    before = _NAME_BEFORE.search(text, max(0, start - 64), start)
    return before is not None and names_an_id(before.group(1))


def _an_ids_value(text: str, match: re.Match[str]) -> bool:
    """Whether a labelled credential or a random token is an id's value (``cache_key=...``,
    ``"idempotency_key": "..."``): kept, as such a dict member is."""
    start = match.start("value") if "value" in match.re.groupindex else match.start()
    return _names_an_id_before(text, start)


def _a_users_name(text: str, match: re.Match[str]) -> bool:
    """Whether a URL's user (``scheme://USER@host``) is a user's name rather than a key. A key
    has letters and digits, which alternate three times or more (``abc123def456``, a hex
    digest), or which read as random (a token of mixed case); a name has words and a number
    at most (``build-agent-01``, ``user2024admin``, ``FabrikamFiber``)."""
    digits = [c.isdigit() for c in match.group("key") if c.isalnum()]
    switches = sum(a != b for a, b in itertools.pairwise(digits))
    return switches < 3 and (switches == 0 or not reads_random(match.group("key")))


def _stands_for_a_password(text: str, match: re.Match[str]) -> bool:
    """Whether a password given on a command line stands for one rather than holds it: a
    reference (``--token $GH_TOKEN``, ``-p"${DB_PASSWORD}"``) or a mask (see
    :func:`onward.events._labels.stands_for_a_secret`)."""
    return stands_for_a_secret("", match.group("password"))


# What each default pattern that judges its matches further keeps.
def _not_a_jwt(text: str, match: re.Match[str]) -> bool:
    """Whether a run after "eyJ" lacks the two dots of a JSON web token's three parts."""
    return match.start("parts") == -1


def _no_digit(text: str, match: re.Match[str]) -> bool:
    """Whether a run after "sk-" holds no digit, as an OpenAI key does."""
    return _A_DIGIT.search(text, match.start() + 3, match.end()) is None


_A_DIGIT = re.compile("[0-9]")

_KEPT: dict[SecretPattern, Callable[[str, re.Match[str]], bool]] = {
    _JWT: _not_a_jwt,
    _OPENAI_KEY: _no_digit,
    _CLI_PASSWORD: _stands_for_a_password,
    _URL_KEY: _a_users_name,
    _SECRET_VALUE: _no_literal_secret,
    _LABELLED_CREDENTIAL: _an_ids_value,
    _RANDOM_TOKEN: _an_ids_value,
}


#: Where a pattern found a secret: its start and end in the text, and what replaces it.
_Found = tuple[int, int, str]


# How far past a token the text is looked at for another glued to it (see _finder).
_GLUED_REACH = 1024


def _finder(
    regex: re.Pattern[str],
    group: int | str,
    marker: str,
    entropy: float,
    random: bool,
    kept: Callable[[str, re.Match[str]], bool] | None = None,
    *,
    glued: bool = False,
) -> Callable[[str, list[_Found]], None]:
    """A function that adds to ``found`` where ``regex`` finds secrets in a text; a match
    that ``kept`` says is no secret is left.

    With ``glued`` (a default pattern that replaces its whole match, a token), the token glued
    right after each one found is looked for as it will be once the one before is replaced by
    its marker: at the start of the text after it, behind a "]". Else each token of a run of
    them ("AKIA..." * 1,000) was found by one more scan of the whole text, by every pattern.
    """
    search = regex.search

    def judged(text: str, match: re.Match[str]) -> tuple[int, int] | None:
        start, end = match.span(group)
        if start == end:  # an empty or absent group: nothing to hide
            return None
        if entropy or random:
            secret = text[start:end]
            if shannon_entropy(secret) < entropy or (random and not reads_random(secret)):
                return None
        if kept is not None and kept(text, match):
            return None
        return start, end

    def glued_after(text: str, end: int, found: list[_Found]) -> int:
        """Add the tokens glued one after the other from ``end`` on; where the last ends."""
        while end < len(text):
            after = "]" + text[end : end + _GLUED_REACH]
            match = regex.match(after, 1)
            # A match that reaches the end of what was looked at might go on past it: left to
            # the next scan, as before.
            if match is None or (match.end() == len(after) and end + _GLUED_REACH < len(text)):
                break
            place = judged(after, match)
            if place is None or place[0] != 1:
                break
            found.append((end, end + place[1] - 1, marker))
            end += place[1] - 1
        return end

    def find(text: str, found: list[_Found]) -> None:
        first = search(text)
        if first is None:  # the usual case
            return
        taken = 0
        for match in regex.finditer(text, first.start()):
            if match.start() < taken:  # within a run of glued tokens already found
                continue
            place = judged(text, match)
            if place is None:
                continue
            found.append((*place, marker))
            if glued:
                taken = glued_after(text, place[1], found)

    return find


class _InTurn:
    """A text redacted pattern after pattern, each seeing what the ones before it left, which
    knows where each of its places lies in the text it started from (a marker stands for the
    whole place it replaced)."""

    def __init__(self, text: str) -> None:
        self.text = text
        # Its pieces, in order: where each starts in ``text``, and the span of the original it
        # stands for (a piece of the original, or the whole place a marker replaced).
        self.starts = [0]
        self.origins = [(0, len(text))]
        self.markers = [False]

    def origin(self, start: int, end: int) -> tuple[int, int]:
        """Where the place ``[start, end)`` of the text lies in the original."""
        i = bisect.bisect_right(self.starts, start) - 1
        j = bisect.bisect_right(self.starts, end - 1) - 1
        first = self.origins[i][0] + (0 if self.markers[i] else start - self.starts[i])
        last = self.origins[j][1] if self.markers[j] else self.origins[j][0] + end - self.starts[j]
        return first, last

    def replace(self, places: list[_Found]) -> list[_Found]:
        """Replace places of the text (one pattern's: they do not overlap) by their markers;
        returns them as places of the original."""
        places.sort()
        texts: list[str] = []
        starts: list[int] = []
        origins: list[tuple[int, int]] = []
        markers: list[bool] = []
        found: list[_Found] = []
        length = 0

        def keep(start: int, end: int) -> None:
            nonlocal length
            i = bisect.bisect_right(self.starts, start) - 1
            while start < end:
                piece_end = self.starts[i + 1] if i + 1 < len(self.starts) else len(self.text)
                stop = min(end, piece_end)
                starts.append(length)
                if self.markers[i]:
                    origins.append(self.origins[i])
                else:
                    offset = self.origins[i][0] - self.starts[i]
                    origins.append((start + offset, stop + offset))
                markers.append(self.markers[i])
                length += stop - start
                start, i = stop, i + 1

        kept = 0
        for start, end, marker in places:
            if start < kept:
                continue  # within the place before (a pattern's places do not overlap)
            texts.append(self.text[kept:start])
            keep(kept, start)
            first, last = self.origin(start, end)
            found.append((first, last, marker))
            texts.append(marker)
            starts.append(length)
            origins.append((first, last))
            markers.append(True)
            length += len(marker)
            kept = end
        texts.append(self.text[kept:])
        keep(kept, len(self.text))
        self.text = "".join(texts)
        self.starts, self.origins, self.markers = starts, origins, markers
        return found


def _found_in_turn(
    text: str, finders: Sequence[Callable[[str, list[_Found]], None]]
) -> list[_Found]:
    """The places each pattern finds once the patterns before it replaced theirs, pass after
    pass until a pass finds nothing more, as places of ``text``."""
    turn = _InTurn(text)
    found: list[_Found] = []
    for _ in range(_MAX_PASSES):
        before = turn.text
        for find in finders:
            places: list[_Found] = []
            find(turn.text, places)
            if places:
                found += turn.replace(places)
        if turn.text == before:
            break
    return found


def _replaced(text: str, found: list[_Found]) -> str:
    """The text with each place found replaced by its marker; places that overlap (two
    patterns on one secret, or on two secrets glued together) replaced as one, by the marker
    of the one that starts first."""
    found.sort(key=lambda place: (place[0], -place[1]))
    parts: list[str] = []
    kept = 0
    start, end, marker = found[0]
    for s, e, m in found[1:]:
        if s < end:
            end = max(end, e)
            continue
        parts += (text[kept:start], marker)
        kept, start, end, marker = end, s, e, m
    parts += (text[kept:start], marker, text[end:])
    return "".join(parts)


def _compile(pattern: SecretPattern) -> Callable[[str, list[_Found]], None]:
    """Compile one pattern into its finding function, refusing a bad regex or group."""
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
    if pattern.entropy < 0:
        raise UsageError(f"secret pattern {pattern.name!r}: entropy must be >= 0")
    return _finder(
        regex,
        group,
        f"[REDACTED:{pattern.name}]",
        pattern.entropy,
        pattern.random,
        _KEPT.get(pattern),
        glued=pattern.group == 0 and pattern in _HINTED,
    )


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

    __slots__ = (
        "__weakref__",
        "_all",
        "_clean_names",
        "_clean_texts",
        "_clean_texts_lock",
        "_hinted",
        "_member_marker",
        "_patterns",
        "_unhinted",
    )

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
        self._hinted = len(self._unhinted) < len(self._all)
        # Names already found free of secrets (ids repeat on every append), and the empty
        # name, which holds none.
        self._clean_names: set[str] = {""}
        # Long texts this redactor returned, by (length, hash): redacting one again changes
        # nothing. A different text would have to match both to be taken for one of them.
        self._clean_texts: dict[tuple[int, int], None] = {}
        self._clean_texts_lock = threading.Lock()
        self._member_marker = (
            msgspec.json.encode(_MEMBER_MARKER) if _SECRET_VALUE in self._patterns else None
        )
        if self._unhinted:
            _in_use(self)

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
        key = (len(text), hash(text)) if len(text) >= _REMEMBER_FROM else None
        if key is not None and key in self._clean_texts:
            return text
        # What every pattern finds in the text as it came (a greedy match, a token's tail,
        # cannot hide a secret glued to it from another pattern), and what each finds once the
        # patterns before it replaced theirs, again until nothing changes (a marker ends a token
        # another was glued to, "AKIA...ghp_...", and a value cut short leaves the next name
        # to be read): all of it is replaced at once, in the text as it came. Then what they
        # find in the text with its escapes decoded, replaced where it is written.
        for _ in range(_MAX_PASSES):
            found = self._found(text) or self._found_unescaped(text)
            if found:
                redacted = _replaced(text, found)
                if redacted != text:
                    text = redacted
                    continue
            if key is not None:
                self._remember_clean(text)
            break
        return text

    def _found(self, text: str) -> list[_Found]:
        """The places of ``text`` where the patterns find a secret (see :meth:`redact`)."""
        finders = self._all if self._hinted and _hinted_text(text) else self._unhinted
        found: list[_Found] = []
        for find in finders:
            find(text, found)
        if found:
            found += _found_in_turn(text, finders)
        return found

    def _found_unescaped(self, text: str) -> list[_Found]:
        """The places of ``text`` where the patterns find a secret once its escapes are
        decoded (see :func:`_unescaped`): each spans the escapes its characters are written
        with."""
        if _ESCAPE.search(text) is None:  # the usual case
            return []
        decoded, starts = _unescaped(text)
        return [(starts[start], starts[end], marker) for start, end, marker in self._found(decoded)]

    def _remember_clean(self, text: str) -> None:
        """Remember a long text that redacting leaves as it is."""
        with self._clean_texts_lock:
            remembered = self._clean_texts
            remembered[len(text), hash(text)] = None
            while len(remembered) > _REMEMBERED:
                del remembered[next(iter(remembered))]

    def check_name(self, name: str, what: str) -> None:
        """Refuse a name that holds a secret: a session's name, a stream id, a task's or a
        step's name, which are stored and looked up as given, so that redacting one would
        change what it names.

        Args:
            name: the name.
            what: what it names, for the message (``"session name"``).

        Raises:
            UsageError: the name holds a secret (the message shows it redacted), or a lone
                surrogate (undecodable bytes of a command line: no database stores one).
        """
        if not isinstance(name, str):
            raise UsageError(f"{what} must be a str, got {type(name).__name__}")
        if not name or name in self._clean_names:
            return
        try:
            name.encode()
        except UnicodeEncodeError as exc:
            raise UsageError(
                f"{what} {self.redact(name)!r} holds a lone "
                f"surrogate at {exc.start} (bytes that are not UTF-8?): names are stored as "
                "given, so choose one in UTF-8"
            ) from None
        redacted = self.redact(name)
        if redacted != name:
            raise UsageError(
                f"{what} {redacted!r} holds what looks like a secret (redacted here): names "
                "are stored as given, so choose one without it"
            )
        if len(self._clean_names) >= _CLEAN_NAMES:
            self._clean_names.clear()
            self._clean_names.add("")
        self._clean_names.add(name)

    def check_names(self, names: tuple[str, ...], whats: tuple[str, ...]) -> None:
        """:meth:`check_name` of each name, what it names at the same place in ``whats``;
        one look when every name was found clean before (an append's stream, session and
        actor, the same on most appends).

        Raises:
            UsageError: as :meth:`check_name`, for the first name it refuses.
        """
        try:
            if self._clean_names.issuperset(names):
                return
        except TypeError:  # an unhashable name: check_name says what a name must be
            pass
        for name, what in zip(names, whats, strict=True):
            self.check_name(name, what)

    def redact_json(self, data: bytes) -> bytes:
        """Replace every secret in the strings of a JSON document, an encoded event.

        Each string is redacted as :meth:`redact` would, and the string value of a member whose
        name says it is secret (``"password"``, ``"api_key"``, ...) is replaced whole; so is
        that of such a key in a dict stored in pairs (``{"$dict": [["password", "..."], [5432,
        "port"]]}``, see :mod:`onward.events.values`), or in a tuple of two (``{"$tuple":
        ["Authorization", "..."]}``: a header as urllib's ``header_items()`` gives it), at any
        depth.

        Args:
            data: valid JSON, as msgspec encodes it.

        Returns:
            Valid JSON of the same structure with the secrets replaced; ``data`` itself when it
            holds none.

        Raises:
            UsageError: a string to redact is not valid JSON.
        """
        if data.find(b'"') < 0:  # find: see might_hold_a_secret
            return data  # no string (a number, a list of them): nothing a pattern could match
        if not self._unhinted and not (self._hinted and _document_might_hold_a_secret(data)):
            return data
        return self._rewrite_json(data)

    def _rewrite_json(self, data: bytes) -> bytes:
        """:meth:`redact_json` past its quick scan."""
        if self._member_marker is None:
            return _JSON_STRINGS.sub(self._redact_string, data)
        if (
            any(data.find(tag) >= 0 for tag in _PAIRS_TAGS)
            and (_SECRET_PAIR.search(data) is not None or _LABEL_PAIR.search(data) is not None)
        ) or (_SECRET_CONTAINER.search(data) is not None):
            data = _redact_structure(data, self._labelled)
        return _JSON_MEMBERS.sub(self._redact_member, data)

    def redact_json_many(self, documents: list[bytes], own_id: str = "") -> list[bytes]:
        """:meth:`redact_json` over several documents (the events of one append) at once.

        Each is scanned once, and most of them not at all: an event of the shape of one found
        clean (the same but for its digits) is clean.

        Args:
            documents: the encoded events.
            own_id: the append's correlation id (a task's id): a member whose value is exactly
                this id, when it is of the engine's own form (up to 23 lowercase hex digits,
                which no default pattern redacts), is left out of the quick scan, so that the
                events that name their task (its end decision) fall in one shape.

        Returns:
            ``documents`` itself when the quick scan finds nothing in any of them, else a new
            list.
        """
        if self._unhinted:
            return [self.redact_json(document) for document in documents]
        if not self._hinted:
            return documents
        redacted = documents
        for i, document in enumerate(documents):
            if document.find(b'"') >= 0 and _document_might_hold_a_secret(document, own_id):
                if redacted is documents:
                    redacted = list(documents)
                redacted[i] = self._rewrite_json(document)
        return redacted

    def _redact_member(self, match: re.Match[bytes]) -> bytes:
        if match.start("label") != -1:
            return self._redact_labelled(match)
        if match.start("name") == -1:
            return self._redact_string(match)
        value = self._decode(match)
        name = match.group("name").decode()
        if stands_for_a_secret(name, value) or value.startswith("[REDACTED:"):
            return self._redact_string(match)
        assert self._member_marker is not None
        return match.group()[: match.start("body") - match.start() - 1] + self._member_marker

    def _redact_labelled(self, match: re.Match[bytes]) -> bytes:
        """A member whose name labels a credential: its value is redacted as it would be
        after that name in a text (``SIGNING_KEY=...``), where it reads as random."""
        label = match.group("label").decode()
        name = self.redact(label)  # a name is a string like any other (a token ending in key)
        if name != label or not labels_a_credential(label):
            # Two strings: the name, then its value, each redacted as any string is.
            start = match.start("body") - match.start() - 1  # the value's opening quote
            whole = match.group()
            named = whole[: len(label) + 2] if name == label else msgspec.json.encode(name)
            return named + whole[len(label) + 2 : start] + self._redact_string(match)[start:]
        text = self._decode(match)
        redacted = self._labelled(label, text)
        if redacted == text:
            return match.group()
        whole = match.group()
        return whole[: match.start("body") - match.start() - 1] + msgspec.json.encode(redacted)

    def _labelled(self, label: str, text: str) -> str:
        """``text`` redacted as the value of ``label`` (``SIGNING_KEY=...``)."""
        named = label + "="
        redacted = self.redact(named + text)
        if not redacted.startswith(named):  # the name itself changed: the value alone
            return self.redact(text)
        return redacted[len(named) :]

    def _redact_string(self, match: re.Match[bytes]) -> bytes:
        whole = match.group()
        if not self._unhinted and not (self._hinted and might_hold_a_secret(match.group("body"))):
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


# How onward's values store bytes, and the collections whose items are taken whole.
_BYTES_TAGS = frozenset({"$bytes", "$bytearray"})
_COLLECTION_TAGS = frozenset({"$tuple", "$set", "$frozenset"})


def _secret_value(name: str, value: Any) -> bool:
    """Whether a value under a secret's name is replaced: a string that is not empty, a
    boolean's or null's spelling, a reference, an auth scheme's name under an auth-like name
    (see :func:`onward.events._labels.stands_for_a_secret`) or a redaction already; bytes; a
    list (a tuple, a set) of such strings or bytes. Not a dict (a nested config: its own
    members are looked at), an empty list, a number, a date or other typed scalar."""
    if type(value) is str:
        return not stands_for_a_secret(name, value) and not value.startswith("[REDACTED:")
    if type(value) is dict and len(value) == 1:
        tag, inner = next(iter(value.items()))
        if tag in _BYTES_TAGS:
            return True
        if tag in _COLLECTION_TAGS:
            value = inner
    if type(value) is list and value:
        return all(_secret_value(name, item) for item in value)
    return False


def _redact_structure(data: bytes, labelled: Callable[[str, str], str] | None = None) -> bytes:
    """The member rule of :meth:`Redactor.redact_json` where a regex cannot apply it: in the
    dicts of a document that are stored in pairs (a key there is the first item of a pair,
    not a member name) and in its tuples of two (a pair of their own: a header, an item of a
    dict's ``items()``), and for values that are lists or dicts (bytes, a tuple, a set, a
    nested config), at any depth; with ``labelled``, a string paired with a key that labels a
    credential is redacted by it, as the member rule does. The document is decoded, the
    values replaced, and encoded again (a document msgspec encoded is encoded again to the
    same bytes, but for the values replaced).

    Raises:
        UsageError: ``data`` is not valid JSON.
    """
    try:
        document = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise UsageError(f"cannot redact the JSON document: {exc}") from exc
    except RecursionError:  # far deeper than a stored value may be
        raise UsageError("cannot redact the JSON document: it is nested too deep") from None
    changed = False
    pending: list[Any] = [document]
    while pending:  # not recursive: a document may be deeper than Python's stack
        node = pending.pop()
        if type(node) is list:
            pending.extend(v for v in node if type(v) is list or type(v) is dict)
            continue
        if type(node) is not dict:
            continue
        for key, value in node.items():
            if type(value) is list or type(value) is dict:
                if _SECRET_KEY.fullmatch(key) is not None and _secret_value(key, value):
                    node[key] = _MEMBER_MARKER
                    changed = True
                else:
                    pending.append(value)
        if len(node) != 1:
            continue
        pair = node.get("$tuple")
        pairs = [pair] if type(pair) is list and len(pair) == 2 else node.get("$dict")
        if type(pairs) is not list:
            continue
        for pair in pairs:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                continue
            if _SECRET_KEY.fullmatch(pair[0]) is not None and _secret_value(pair[0], pair[1]):
                pair[1] = _MEMBER_MARKER
                changed = True
            elif (
                labelled is not None
                and type(pair[1]) is str
                and _LABEL_KEY.fullmatch(pair[0]) is not None
                and labels_a_credential(pair[0])
                and (redacted := labelled(pair[0], pair[1])) != pair[1]
            ):
                pair[1] = redacted
                changed = True
    return msgspec.json.encode(document) if changed else data


# The redactors with patterns of their own (given to Engine.open, to a log), while they live:
# what onward emits outside its log (its log records, its spans) does not say which log it
# concerns, so it gets the patterns of every one of them.
_IN_USE: weakref.WeakSet[Redactor] = weakref.WeakSet()
_IN_USE_LOCK = threading.Lock()
_DEFAULT_REDACTOR = Redactor()


def _in_use(redactor: Redactor) -> None:
    """Count a redactor with patterns of its own among those in use (until it is collected)."""
    with _IN_USE_LOCK:
        _IN_USE.add(redactor)


def redact_for_any_log(text: str, redactor: Redactor | None = None) -> str:
    """Replace the secrets of a text as every log of this process would.

    For what onward emits outside a log and cannot tie to one (its log records, OpenTelemetry
    spans): the text passes ``redactor`` (one with the default patterns when None), then every
    redactor in use that has patterns of its own (the ``extra=`` patterns given to
    ``Engine.open`` or to a log; a redactor counts from its creation until it is garbage
    collected). A pattern of one log thus applies to what concerns another too: more is
    redacted, never less.

    Args:
        text: any text, a log record's message or traceback, an error's message.
        redactor: the redactor to apply first; the default patterns when None.

    Returns:
        The text with each secret replaced by ``[REDACTED:<pattern name>]``.
    """
    redactor = redactor or _DEFAULT_REDACTOR
    text = redactor.redact(text)
    with _IN_USE_LOCK:
        others = {r.patterns: r for r in _IN_USE}
    others.pop(redactor.patterns, None)
    for other in others.values():
        text = other.redact(text)
    return text


class RecordRedactor(logging.Filter):
    """A logging filter that redacts a record's message, traceback and stack before any
    handler sees them.

    The message is formatted (``msg % args``) and redacted; a traceback (with the causes and
    contexts chained to it) is formatted, redacted and kept as the record's ``exc_text`` (its
    ``exc_info`` is dropped, so that no handler formats the raw exception again); a stack
    (``stack_info``) is redacted. Each goes through :func:`redact_for_any_log`: the patterns of
    ``redactor``, then the user's patterns of every log in use, as a record does not say which
    log it concerns (an observer, or an ``on_interruption`` callback, that raised a secret
    given to its engine's ``Redactor(extra=...)``).

    Args:
        redactor: the redactor; one with the default patterns by default.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; always keep it.

        Returns:
            True.
        """
        mine = self.redactor

        def redact(text: str) -> str:
            return redact_for_any_log(text, mine)

        try:
            message = record.getMessage()
        except Exception:  # a broken format: the handler will say so, with nothing redacted
            return True
        redacted = redact(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()
_RECORD_REDACTOR = RecordRedactor()


def redacted_logger(name: str) -> logging.Logger:
    """The logger ``name``, with a :class:`RecordRedactor` of the default patterns on it (and
    the user's patterns of every log in use): every onward module logs through one, so that no
    record of onward's carries a secret.

    Args:
        name: the logger's name (``"onward.engine"``).

    Returns:
        The logger.
    """
    logger = logging.getLogger(name)
    if _RECORD_REDACTOR not in logger.filters:
        logger.addFilter(_RECORD_REDACTOR)
    return logger
