"""What a name says of the value after it, and what a value after a credential's name says of
itself: the judgements :mod:`onward.events.redaction` makes where a regex alone cannot.

A credential's name (``password``, ``API_KEY``) is followed by a secret in a config dump or an
error message, but in code or a template by what stands for one: ``password = input(...)``,
``API_KEY = os.environ['API_KEY']``, ``password: ${DB_PASSWORD}``, ``SET password = $1``, and
``auth: basic`` names a scheme. Such a value is kept; any other is taken for a secret (a leak
costs more than a value redacted for nothing). A name ending in ``key`` may name an id rather
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
# The last words of a name that holds a credential: a variable so named is a reference to one.
_CREDENTIAL_WORDS = frozenset(
    {
        *("apikey", "auth", "authorization", "cred", "creds", "credential", "credentials"),
        *("key", "keys", "pass", "passphrase", "passwd", "password", "pwd", "secret", "token"),
    }
)
# What stands for a value: an environment variable or a placeholder ($DB_PASSWORD,
# ${DB_PASSWORD}, ${{ secrets.DB }}, $1, $(cat file)), a template's ({{ db_password }}), a
# format's (%s, %(password)s).
_REFERENCE = re.compile(
    r"\$(?:[A-Z_][A-Z0-9_]*|[1-9][0-9]?|\{[^}\n]*\}+|\([^)\n]*\))"
    r"|\{\{[^}\n]*\}\}|%(?:\([A-Za-z_]\w*\))?s"
)
# Code: a call or a subscript (input(...), os.environ[...], crypt($1, ...)), whose bracket
# closes on the same line.
_EXPRESSION = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*[(\[][^\n]*[)\]]")
# A variable's name of two words or more (DB_PASSWORD, self.token, settings.API_KEY).
_VARIABLE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_VALUE_END = re.compile(r"[\w.$-]")


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
    ``{{ token }}``, ``%s``), no letter or digit at all (a mask, ``****``; the end of a prompt,
    the ``')`` of ``input('Password: ')``), or, under an auth-like name, a scheme's or a
    mode's name (``basic``, ``bearer``, ``oauth2``, ``none``)."""
    lowered = value.lower()
    if lowered in NOT_SECRET_VALUES or _REFERENCE.fullmatch(value) is not None:
        return True
    if not any(c.isalnum() for c in value):  # a mask (****), a prompt's end ("Password: ")
        return True
    return lowered in _AUTH_WORDS and _AUTH_NAME.search(name) is not None


def reads_as_code(text: str, start: int, end: int) -> bool:
    """Whether the unquoted value ``text[start:end]`` after a credential's name is code or a
    reference rather than a literal secret: it begins a reference that takes it whole
    (``${DB_PASSWORD}``, ``$1``), a call or a subscript (``input('Password: ')``,
    ``os.environ['API_KEY']``), or it is a variable's name of two words or more that ends in a
    credential's (``DB_PASSWORD``, ``self.token``; not ``hunter2``, nor ``password`` alone,
    which may be the literal). A call, a subscript or a variable not in capitals counts only
    in code: after an ``=`` with blanks on both sides (code's and SQL's assignment) or a
    keyword argument's (``Client(password=self.db_password)``); after ``KEY=`` (an
    environment, a query string, a flag) or a colon (a config), ``P4ss(w0rd)`` and
    ``my_secret_password`` are passwords."""
    reference = _REFERENCE.match(text, start)
    if reference is not None and reference.end() >= end:
        return _VALUE_END.match(text, reference.end()) is None
    code = _assigned_in_code(text, start)
    if code and _EXPRESSION.match(text, start) is not None:
        return True
    variable = _VARIABLE.match(text, start)
    if variable is None or variable.end() != end:
        return False
    name = variable.group()
    words = WORDS.findall(name)
    if not (len(words) > 1 and ("_" in name or "." in name)):
        return False
    # An environment variable's name (DB_PASSWORD) stands for one anywhere; another name only
    # in code (after KEY= or a colon, my_secret_password is a password).
    return words[-1].lower() in _CREDENTIAL_WORDS and (code or name.isupper())


def _assigned_in_code(text: str, start: int) -> bool:
    """Whether the value at ``start`` follows an ``=`` with blanks on both sides, or an ``=``
    inside a call's parentheses opened on its line (a keyword argument)."""
    i = start
    while i > 0 and text[i - 1] in " \t":
        i -= 1
    if i < 2 or text[i - 1] != "=":
        return False
    if i < start and text[i - 2] in " \t":
        return True
    line = text[text.rfind("\n", 0, i) + 1 : i]
    return line.count("(") > line.count(")")
