"""Credentials that announce themselves: the fixed prefixes and shapes of vendors' tokens.

Ported from the default rules of gitleaks (``config/gitleaks.toml``): the rules whose regex
alone identifies a credential, with no keyword nearby: a fixed prefix, an alphabet and a
length. Each is ``(name, prefix, rest)``: ``prefix`` is a regex of fixed width that starts
with a literal where it can (re then finds candidates by searching for it), ``rest`` what
follows. :mod:`onward.events.redaction` adds that the prefix does not continue a longer word
of letters and digits (an ``_`` or ``-`` before it does not stop it: ``key_npm_...`` is found),
and that the token is not followed by another letter or digit.

Every token here holds a run of at least 24 characters from ``A-Za-z0-9+/_=%-``: the
redactor's quick scan looks for such a run before it tries these patterns. Where the
distinctive part sits inside a token (Azure's ``Q~``, Terraform's ``.atlasv1.``, the ``:AA`` of
a Telegram bot token), the match starts there and the few characters before it stay.
"""

from __future__ import annotations

__all__ = ["VENDOR_TOKENS"]

_HEX = "[a-fA-F0-9]"

#: ``(name, prefix, rest)`` of each credential recognised by its shape.
VENDOR_TOKENS: tuple[tuple[str, str, str], ...] = (
    ("npm-token", "npm_", "[A-Za-z0-9]{36}"),
    ("sendgrid-key", r"SG\.", r"[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"),
    (
        "slack-webhook",
        r"hooks\.slack\.com/",
        r"(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
    ),
    (
        "teams-webhook",
        r"webhook\.office\.com/webhookb2/",
        r"[a-z0-9-]{36}@[a-z0-9-]{36}/IncomingWebhook/[a-z0-9]{32}/[a-z0-9-]{36}",
    ),
    (
        "discord-webhook",
        "discord",
        r"(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,70}",
    ),
    ("azure-ad-client-secret", "Q~(?<=[A-Za-z0-9_~.]{3}[0-9]Q~)", "[A-Za-z0-9_~.-]{31,34}"),
    ("twilio-key", "SK", f"{_HEX}{{32}}"),
    ("pypi-token", "pypi-AgEIcHlwaS5vcmc", "[A-Za-z0-9_-]{50,}"),
    ("shopify-token", "shp(?:at|ca|pa|ss)_", f"{_HEX}{{32}}"),
    ("digitalocean-token", "do[opr]_v1_", "[a-f0-9]{64}"),
    ("databricks-token", "dapi", "[a-f0-9]{32}(?:-[0-9])?"),
    ("doppler-token", r"dp\.pt\.", "[A-Za-z0-9]{43}"),
    ("linear-key", "lin_api_", "[A-Za-z0-9]{40}"),
    ("pulumi-token", "pul-", "[a-f0-9]{40}"),
    ("postman-key", "PMAK-", f"{_HEX}{{24}}-{_HEX}{{34}}"),
    ("grafana-token", "glc_", "[A-Za-z0-9+/]{32,400}={0,3}"),
    ("grafana-token", "glsa_", "[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"),
    ("grafana-token", "eyJrIjoi", "[A-Za-z0-9]{70,400}={0,3}"),
    ("vault-token", r"hvs\.", "[A-Za-z0-9_-]{90,120}"),
    ("vault-token", r"hvb\.", "[A-Za-z0-9_-]{138,300}"),
    ("age-secret-key", "AGE-SECRET-KEY-1", "[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}"),
    ("onepassword-token", "ops_eyJ", "[A-Za-z0-9+/]{250,}={0,3}"),
    ("rubygems-token", "rubygems_", "[a-f0-9]{48}"),
    ("sentry-token", "sntryu_", "[a-f0-9]{64}"),
    ("sentry-token", "sntrys_", "eyJ[A-Za-z0-9+/=_]{50,}"),
    ("notion-token", "ntn_", "[0-9]{11}[A-Za-z0-9]{35}"),
    ("perplexity-key", "pplx-", "[A-Za-z0-9]{48}"),
    ("prefect-key", "pnu_", "[A-Za-z0-9]{36}"),
    ("readme-key", "rdme_", "[a-z0-9]{70}"),
    ("planetscale-token", "pscale_", "(?:tkn|pw|oauth)_[A-Za-z0-9=._-]{32,64}"),
    ("flyio-token", "fo1_", "[A-Za-z0-9_-]{43}"),
    ("flyio-token", "fm[12][ar]_", "[A-Za-z0-9+/]{100,}={0,3}"),
    ("heroku-key", "HRKU-AA", "[A-Za-z0-9_-]{58}"),
    ("dynatrace-token", r"dt0c01\.", r"[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}"),
    ("easypost-key", "EZ[AT]K", "[A-Za-z0-9]{54}"),
    ("flutterwave-key", "FLW(?:SECK|PUBK)_TEST-", "[a-hA-H0-9]{12,32}(?:-X)?"),
    ("duffel-token", "duffel_(?:test|live)_", "[A-Za-z0-9_=-]{43}"),
    ("frameio-token", "fio-u-", "[A-Za-z0-9_=-]{64}"),
    ("gitlab-runner-token", "GR1348941", "[A-Za-z0-9_-]{20}"),
    ("huggingface-org-token", "api_org_", "[A-Za-z]{34}"),
    ("infracost-token", "ico-", "[A-Za-z0-9]{32}"),
    ("scalingo-token", "tk-us-", "[A-Za-z0-9_-]{48}"),
    ("sendinblue-key", "xkeysib-", "[a-f0-9]{64}-[A-Za-z0-9]{16}"),
    ("shippo-token", "shippo_(?:live|test)_", f"{_HEX}{{40}}"),
    ("square-token", "sq0(?:atp|csp)-", "[A-Za-z0-9_-]{22,60}"),
    ("facebook-token", "EAA[MC]", "[A-Za-z0-9]{100,}"),
    ("alibaba-key-id", "LTAI", "[A-Za-z0-9]{20}"),
    ("artifactory-token", "AKCp", "[A-Za-z0-9]{69}"),
    ("artifactory-token", "cmVmd", "[A-Za-z0-9]{59}"),
    ("atlassian-token", "ATATT3", "[A-Za-z0-9_=-]{186}"),
    ("clojars-token", "CLOJARS_", "[A-Za-z0-9]{60}"),
    ("adobe-secret", "p8e-", "[A-Za-z0-9]{32}"),
    ("openshift-token", "sha256~", "[A-Za-z0-9_-]{43}"),
    ("telegram-bot-token", "AA(?<=[0-9]{8}:AA)", "[A-Za-z0-9_-]{33}"),
    ("discord-bot-token", "[MNO]", r"[A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}"),
    ("mailgun-key", "key-", "[a-f0-9]{32}"),
    ("typeform-token", "tfp_", "[A-Za-z0-9_.=-]{59}"),
    ("newrelic-key", "NRAK-", "[A-Z0-9]{27}"),
    ("newrelic-key", "NRII-", "[A-Za-z0-9-]{32}"),
    ("newrelic-key", "NRJS-", "[a-f0-9]{19}"),
    ("terraform-token", r"\.atlasv1\.(?<=[A-Za-z0-9]{14}\.atlasv1\.)", "[A-Za-z0-9_=-]{60,70}"),
)
