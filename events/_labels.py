"""What a name says of the value after it, and what a value after a credential's name says of
itself: the judgements :mod:`onward.events.redaction` makes where a regex alone cannot.

A credential's name (``password``, ``API_KEY``) is followed by a secret in a config dump or an
error message, but in a template or a query by what stands for one: ``password:
${DB_PASSWORD}``, ``SET password = $1``, ``{{ db_password }}``, and ``auth: basic`` names a
scheme. Such a value is kept; any other is taken for a secret (a leak costs more than a value
redacted for nothing): code is not told from a secret (``password = input(...)`` is
redacted, as ``password = Summer(2024)`` in an INI file must be). A name ending in ``key``
may name an id rather
than a credential (``cache_key``, ``idempotency_key``): its value, a digest or a uuid, is kept.
"""

from __future__ import annotations

import re

# The words of a name: SIGNING_KEY, jwtSigningKey, api-key, db.credentials.
WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# The words before "key" that make it an id's name, not a credential's (its value may be a
# digest or a uuid: random, and no secret).
ID_KEYS = frozenset(
    [
        "bucket",
        "cache",
        "composite",
        "dedup",
        "dedupe",
        "entity",
        "event",
        "foreign",
        "group",
        "hash",
        "idempotency",
        "index",
        "item",
        "join",
        "lookup",
        "map",
        "message",
        "natural",
        "object",
        "order",
        "partition",
        "primary",
        "public",
        "record",
        "request",
        "row",
        "routing",
        "shard",
        "sort",
        "surrogate",
        "unique",
    ]
)
# Values that are no secret under any name.
NOT_SECRET_VALUES = frozenset({"", "true", "false", "null", "none"})
# What an auth-like name (auth, authorization, proxy_auth) holds when it names a scheme or a
# mode rather than a credential.
_AUTH_WORDS = NOT_SECRET_VALUES | {
    *("anonymous", "apikey", "api_key", "api-key", "aws", "basic", "bearer", "cookie"),
    *("digest", "disabled", "enabled", "header", "hmac", "iam", "jwt", "kerberos", "key"),
    *("mtls", "negotiate", "no", "ntlm", "oauth", "oauth1", "oauth2", "off", "oidc", "on"),
    *("optional", "password", "required", "saml", "session", "sigv4", "tls", "token", "yes"),
}
_AUTH_NAME = re.compile(r"(?i:auth(?:orization)?)\Z")
# What stands for a value: an environment variable or a placeholder ($DB_PASSWORD,
# ${DB_PASSWORD}, ${{ secrets.DB }}, $1), a template's ({{ db_password }}), a format's (%s,
# %(password)s). Not a shell's default (${PW:-hunter2} holds one), nor a command's output, nor
# $ before capitals and digits ($S3CR3T may be the password).
_REFERENCE = re.compile(
    r"\$(?:[A-Z][A-Z_]*[A-Z]|[1-9][0-9]?|\{[A-Za-z_][A-Za-z0-9_]*\}|\{\{\s*[\w.]+\s*\}\})"
    r"|\{\{\s*[A-Za-z_][\w.]*\s*\}\}|%(?:\([A-Za-z_]\w*\))?s"
)
# A mask (****, ••••, ------, xxx is a word) or what a quote or a bracket left of a value.
_MASK = re.compile(r"[*•·#?.\-_\s'\"()\[\]{}:,;]+")
_VALUE_END = re.compile(r"[\w.$-]")
# The shell's working directories, PWD and OLDPWD, in every dump of an environment (env in a
# failed job's output, os.environ in an error): a directory, not a password. PWD names a
# password too, in an ODBC connection string (UID=sa;PWD=...), where its value is no
# directory: the root, a directory under the home (~/...), under a conventional top
# directory (/home/..., /Users/..., /app, /srv/..., /usr/src/app), or a drive's (C:\...).
_DIRECTORY_NAME = re.compile(r"(?i:(?:old)?pwd)")
_DIRECTORY = re.compile(
    r"/|~(?:/[\w.@+-]+)*/?"
    r"|/(?:home|Users|root|app|srv|opt|usr|var|tmp|mnt|workspaces?|builds|src|code|data"
    r"|runner|__w)(?:/[\w.@+-]+)*/?"
    r"|[A-Za-z]:\\(?:[\w. @+-]+\\?)*"
)


def names_an_id(name: str) -> bool:
    """Whether a name ending in key(s) names an id rather than a credential: its word before
    ``key`` is an id's (``cache_key``, ``idempotencyKey``, ``object-keys``)."""
    words = [w.lower() for w in WORDS.findall(name)]
    return len(words) > 1 and words[-1] in ("key", "keys") and words[-2] in ID_KEYS


def labels_a_credential(name: str) -> bool:
    """Whether a member's name labels a credential: its last word is credential(s) or cred(s),
    or key(s) after a word that is no id's (``STRIPE_KEY``, ``jwtSigningKey``; not ``key``
    alone, ``cache_key``, ``idempotency_key``, ``monkey``)."""
    words = [w.lower() for w in WORDS.findall(name)]
    if not words:
        return False
    if words[-1] in ("credential", "credentials", "cred", "creds"):
        return True
    return words[-1] in ("key", "keys") and len(words) > 1 and words[-2] not in ID_KEYS


def stands_for_a_secret(name: str, value: str) -> bool:
    """Whether a whole value (a quoted one, a dict's member) under a credential's name is no
    literal secret: null's or a boolean's spelling, a reference (``${DB_PASSWORD}``, ``$1``,
    ``{{ token }}``, ``%s``), a mask (``****``) or what a quote left of a value (the ``')`` of
    ``input('Password: ')``), a working directory under ``PWD`` or ``OLDPWD``
    (``PWD=/home/ana/etl``), or, under an auth-like name, a scheme's or a mode's name
    (``basic``, ``bearer``, ``oauth2``, ``none``). A password of symbols (``!@#$%^&*()``)
    is one."""
    lowered = value.lower()
    if lowered in NOT_SECRET_VALUES or _REFERENCE.fullmatch(value) is not None:
        return True
    if _MASK.fullmatch(value) is not None:
        return True
    if _DIRECTORY_NAME.fullmatch(name) is not None and _DIRECTORY.fullmatch(value) is not None:
        return True
    return lowered in _AUTH_WORDS and _AUTH_NAME.search(name) is not None


def reads_as_code(text: str, start: int, end: int) -> bool:
    """Whether the unquoted value ``text[start:end]`` after a credential's name is a
    reference that takes it whole (``${DB_PASSWORD}``, ``$DB_PASSWORD``, ``$1``,
    ``{{ db_password }}``) rather than a literal secret. Code is not told from a secret: a
    call, a subscript or a variable's name after ``password =`` may be one (``password =
    Summer(2024)`` in an INI file, ``PASSWORD('cleartext')`` in SQL, ``SUPER_SECRET``), so
    it is redacted (a leak costs more than a value redacted for nothing); a shell's default
    (``${PW:-hunter2}``) holds one."""
    reference = _REFERENCE.match(text, start)
    if reference is not None and reference.end() >= end:
        return _VALUE_END.match(text, reference.end()) is None
    return False


# A path that a secret's name ends (/etc/passwd, ~/.config/gh/token, '/run/secrets/db_password',
# C:\secrets\token): from the root, the home or the working directory, or a drive, after
# white space, a quote, a bracket or a separator; up to the name's own component. Not a name
# after a word and a slash (user/password: ..., a prose pair), nor a relative path.
_PATH_BEFORE = re.compile(
    r"(?<![^\s\"'`(\[{<=:,;])(?:(?:~|\.{1,2})?/(?:[\w.@+-]*/)*"
    r"|[A-Za-z]:\\(?:[\w.@+ -]+\\)*)[\w.@+-]*\Z"
)
# How far before a name its path is looked for: a longer one is not seen as a path.
_PATH_REACH = 256
# What an error message puts between a path and its message: a colon and a space or a tab
# (cat: /etc/passwd: No such file or directory), after the quote of a quoted path.
_PATH_COLON = re.compile(r"\\?[\"']?:[ \t]+")
# A message's first words: a word, then another on the same line (No such file, Permission
# denied, not valid TOML). A password is seldom a word with more words after it.
_MESSAGE_WORD = re.compile(r"[A-Za-z]+")
_NEXT_WORD = re.compile(r"[ \t]+[A-Za-z]")


def names_a_file(text: str, name: tuple[int, int], value: tuple[int, int]) -> bool:
    """Whether a secret's name at ``text[name[0]:name[1]]`` and the unquoted value at
    ``text[value[0]:value[1]]`` after it are a file and an error message about it rather than
    a pair: the name ends a path (``/etc/passwd``, ``~/.pgpass``, ``/run/secrets/db_password``,
    ``C:\\secrets\\token``), a colon and a space follow it, and the value is a word with another
    word after it on its line (``cat: /etc/passwd: No such file or directory``, ``open
    /run/secrets/token: permission denied``). A word alone after a path's colon is a value
    (``/prod/db/password: Summer``, a parameter store's path), as is what follows its ``=``
    or a colon without a space (``grep -r`` writes ``/run/secrets/token:hunter2``)."""
    start, end = value
    if _PATH_COLON.fullmatch(text, name[1], start) is None:
        return False
    if _MESSAGE_WORD.fullmatch(text, start, end) is None or not _NEXT_WORD.match(text, end):
        return False
    return _PATH_BEFORE.search(text, max(0, name[0] - _PATH_REACH), name[0]) is not None
