"""Realistic error messages that carry secrets, for every test that must not see them again.

``SECRETS_CORPUS`` is a list of ``(message, secrets)``: after redaction, none of ``secrets`` may
appear in the message, nor anywhere in a log that stored it. ``NOT_SECRETS`` are lines that must
come out of redaction unchanged.

Every secret is fake, made up here from a seeded generator in the shape of the real thing (prefix,
alphabet, length), so that none can be found on the internet or used anywhere.
"""

from __future__ import annotations

import base64
import random
import string

__all__ = ["NOT_SECRETS", "SECRETS_CORPUS"]

_random = random.Random(20241125)
_ALNUM = string.ascii_letters + string.digits
_UPPER_DIGITS = string.ascii_uppercase + string.digits
_B64 = _ALNUM + "+/"
_URLSAFE = _ALNUM + "-_"


def _fake(length: int, alphabet: str = _ALNUM) -> str:
    return "".join(_random.choice(alphabet) for _ in range(length))


def _pem_body(lines: int) -> str:
    return "\n".join(_fake(64, _B64) for _ in range(lines)) + "\n" + _fake(20, _B64) + "=="


def _jwt() -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(
        b'{"sub":"agent-7","scope":"tasks:write","exp":1732512345}'
    ).rstrip(b"=")
    return f"{header}.{payload.decode()}.{_fake(43, _URLSAFE)}"


BEARER = _fake(40, _URLSAFE)
OPENAI = "sk-proj-" + _fake(48, _URLSAFE)
OPENAI_LEGACY = "sk-" + _fake(48)
ANTHROPIC = "sk-ant-api03-" + _fake(93, _URLSAFE) + "AA"
PG_PASSWORD = "Tr0ub4dor&3-" + _fake(6)
MYSQL_PASSWORD = _fake(14)
REDIS_PASSWORD = _fake(20)
AMQP_PASSWORD = _fake(12) + "@" + _fake(4)
DB_PASSWORD = "hunter2-" + _fake(8)
CONFIG_API_KEY = _fake(32)
AWS_KEY_ID = "AKIA" + _fake(16, _UPPER_DIGITS)
AWS_TEMP_KEY_ID = "ASIA" + _fake(16, _UPPER_DIGITS)
AWS_SECRET = _fake(40, _ALNUM + "/+")
AWS_SESSION_TOKEN = _fake(120, _ALNUM + "/+") + "=="
GOOGLE = "AIza" + _fake(35, _URLSAFE)
GITHUB_PAT = "ghp_" + _fake(36)
GITHUB_OAUTH = "gho_" + _fake(36)
GITHUB_USER = "ghu_" + _fake(36)
GITHUB_SERVER = "ghs_" + _fake(36)
GITHUB_REFRESH = "ghr_" + _fake(76)
GITHUB_FINE = "github_pat_" + _fake(22) + "_" + _fake(59)
GITLAB = "glpat-" + _fake(20, _URLSAFE)
SLACK_BOT = "xoxb-" + _fake(12, string.digits) + "-" + _fake(13, string.digits) + "-" + _fake(24)
SLACK_USER = "xoxp-" + _fake(12, string.digits) + "-" + _fake(12, string.digits) + "-" + _fake(32)
STRIPE_LIVE = "sk_live_" + _fake(99)
STRIPE_RESTRICTED = "rk_live_" + _fake(99)
STRIPE_TEST = "sk_test_" + _fake(24)
HUGGINGFACE = "hf_" + _fake(34, string.ascii_letters)
JWT = _jwt()
BASIC = base64.b64encode(f"svc-agent:{_fake(16)}".encode()).decode()
RSA_BODY = _pem_body(12)
OPENSSH_BODY = _pem_body(6)
SERVICE_ACCOUNT_BODY = _pem_body(8)
# The same bodies as they read inside a repr or a JSON string: newlines as the two characters \n.
OPENSSH_ESCAPED = OPENSSH_BODY.replace("\n", "\\n")
SERVICE_ACCOUNT_ESCAPED = SERVICE_ACCOUNT_BODY.replace("\n", "\\n")
CLIENT_SECRET = "GOCSPX-" + _fake(28, _URLSAFE)
REFRESH_TOKEN = "1//" + _fake(60, _URLSAFE)
YAML_PASSWORD = "correct horse battery " + _fake(6)
CLI_PASSWORD = _fake(18)
QUERY_TOKEN = _fake(32, _URLSAFE)
PGPASSWORD = _fake(16)
PWD = _fake(12)
PASSPHRASE = _fake(24)
HEADER_API_KEY = _fake(40, string.hexdigits.lower())
WEBHOOK_SECRET = "whsec_" + _fake(32)
DJANGO_SECRET_KEY = _fake(50, _ALNUM + "!@#%^&*(-_=+)")
NESTED_PASSWORD = _fake(15)
# Formats of a public rule set (gitleaks' defaults), labelled or not, glued or cut.
GLUED_GITHUB = "ghp_" + _fake(36)
AZURE_ACCOUNT_KEY = _fake(86, _B64) + "=="
AZURE_SAS_SIG = _fake(40, _ALNUM) + "%2B" + _fake(3, _ALNUM) + "%3D"
SERVICE_BUS_KEY = _fake(43, _B64) + "="
NPM = "npm_" + _fake(36)
NPM_LABELLED = "npm_" + _fake(36)
SENDGRID = "SG." + _fake(22, _URLSAFE) + "." + _fake(43, _URLSAFE)
SLACK_WEBHOOK_PATH = f"T{_fake(8, _UPPER_DIGITS)}/B{_fake(8, _UPPER_DIGITS)}/{_fake(24)}"
BESIDE_KEY_ID = "AKIA" + _fake(16, _UPPER_DIGITS)
BESIDE_SECRET = _fake(40, _ALNUM + "/+")
CSV_KEY_ID = "AKIA" + _fake(16, _UPPER_DIGITS)
CSV_SECRET = _fake(40, _ALNUM + "/+")
UNLABELLED = _fake(40)
ENCRYPTION_KEY = _fake(48, string.hexdigits.lower())
TWILIO = "SK" + _fake(32, "0123456789abcdef")
DIGITALOCEAN = "dop_v1_" + _fake(64, "0123456789abcdef")
VAULT = "hvs." + _fake(95, _URLSAFE)
DATABRICKS = "dapi" + _fake(32, "0123456789abcdef")
DOPPLER = "dp.pt." + _fake(43)
PYPI = "pypi-AgEIcHlwaS5vcmc" + _fake(70, _URLSAFE)
LINEAR = "lin_api_" + _fake(40)
SHOPIFY = "shpat_" + _fake(32, "0123456789abcdef")
TELEGRAM_SECRET = "AA" + _fake(33, _URLSAFE)
DISCORD_WEBHOOK_TOKEN = _fake(68, _URLSAFE)
GRAFANA = "glsa_" + _fake(32) + "_" + _fake(8, "0123456789abcdef")
HEROKU = "HRKU-AA" + _fake(58, _URLSAFE)
AGE_KEY = "AGE-SECRET-KEY-1" + _fake(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
TEAMS_PATH = (
    "-".join(_fake(n, "0123456789abcdef") for n in (8, 4, 4, 4, 12))
    + "@"
    + "-".join(_fake(n, "0123456789abcdef") for n in (8, 4, 4, 4, 12))
    + "/IncomingWebhook/"
    + _fake(32, "0123456789abcdef")
    + "/"
    + "-".join(_fake(n, "0123456789abcdef") for n in (8, 4, 4, 4, 12))
)
# Passwords named *_PASS, as environments and config files name them, and given on a command
# line (mysql -p<password>, sshpass -p <password>).
DB_PASS = _fake(10) + "&" + _fake(2)
SMTP_PASS = _fake(12)
REDIS_PASS = _fake(16, _URLSAFE)
YAML_PASS = _fake(11)
QUERY_PASS = _fake(9)
ENV_PASS = _fake(14)
MYSQL_CLI_PASSWORD = _fake(12)
SSHPASS_PASSWORD = _fake(10)
COOKIE_SESSION = _fake(32, string.ascii_lowercase + string.digits)
COOKIE_SIGNED = _fake(24, _URLSAFE)
DOCKER_PASSWORD = _fake(16)
OPTION_TOKEN = _fake(20, _URLSAFE)
CURL_GLUED_PASSWORD = _fake(12)
ROOT_PW = _fake(14)
REPLICA_PW = _fake(10)
SENTRY_KEY = _fake(32, "0123456789abcdef")
REMOTE_TOKEN = _fake(40, "0123456789abcdef")

SECRETS_CORPUS: list[tuple[str, list[str]]] = [
    (
        "Traceback (most recent call last):\n"
        '  File "agent/tools/http.py", line 88, in call\n'
        "    response.raise_for_status()\n"
        "httpx.HTTPStatusError: Client error '401 Unauthorized' for url "
        "'https://api.example.com/v1/tasks'\n"
        f"Request headers: {{'host': 'api.example.com', 'authorization': 'Bearer {BEARER}', "
        "'accept': 'application/json'}",
        [BEARER],
    ),
    (
        "send: b'POST /v1/chat/completions HTTP/1.1\\r\\nHost: api.openai.com\\r\\n"
        f"Authorization: Bearer {OPENAI}\\r\\nContent-Type: application/json\\r\\n'",
        [OPENAI],
    ),
    (
        "openai.AuthenticationError: Error code: 401 - Incorrect API key provided: "
        f"{OPENAI_LEGACY}. You can find your API key at https://platform.openai.com/account/api-keys.",
        [OPENAI_LEGACY],
    ),
    (
        "anthropic.AuthenticationError: Error code: 401 - {'type': 'error', 'error': "
        f"{{'type': 'authentication_error', 'message': 'invalid x-api-key {ANTHROPIC}'}}}}",
        [ANTHROPIC],
    ),
    (
        "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: "
        'connection to server at "db.internal" (10.0.3.7), port 5432 failed: FATAL:  '
        'password authentication failed for user "app"\n'
        f"[engine url: postgresql+psycopg://app:{PG_PASSWORD}@db.internal:5432/orders]",
        [PG_PASSWORD],
    ),
    (
        "pymysql.err.OperationalError: (2003, \"Can't connect to MySQL server on "
        f"'mysql://root:{MYSQL_PASSWORD}@10.0.0.12:3306/agents' (timed out)\")",
        [MYSQL_PASSWORD],
    ),
    (
        f"redis.exceptions.ConnectionError: Error 111 connecting to redis://:{REDIS_PASSWORD}"
        "@cache.internal:6379/0. Connection refused.",
        [REDIS_PASSWORD],
    ),
    (
        f"pika.exceptions.AMQPConnectionError: amqp://worker:{AMQP_PASSWORD}@mq.internal:5672/%2F"
        " unreachable after 3 attempts",
        [AMQP_PASSWORD],
    ),
    (
        "Loaded settings: {'debug': False, 'region': 'eu-west-1', "
        f"'db_password': '{DB_PASSWORD}', 'api_key': '{CONFIG_API_KEY}', 'workers': 4}}",
        [DB_PASSWORD, CONFIG_API_KEY],
    ),
    (
        "subprocess failed with environment:\n"
        "HOME=/home/agent\n"
        f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n"
        f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n"
        "AWS_DEFAULT_REGION=us-east-1\n",
        [AWS_KEY_ID, AWS_SECRET],
    ),
    (
        "botocore.exceptions.ClientError: An error occurred (ExpiredToken) when calling the "
        f"PutObject operation; credentials: aws_access_key_id={AWS_TEMP_KEY_ID} "
        f"aws_secret_access_key = {AWS_SECRET} aws_session_token={AWS_SESSION_TOKEN}",
        [AWS_TEMP_KEY_ID, AWS_SECRET, AWS_SESSION_TOKEN],
    ),
    (
        "ValueError: Could not deserialize key data. The data may be in an incorrect format:\n"
        f"-----BEGIN RSA PRIVATE KEY-----\n{RSA_BODY}\n-----END RSA PRIVATE KEY-----\n",
        [RSA_BODY, *RSA_BODY.split("\n")],
    ),
    (
        "paramiko.ssh_exception.SSHException: not a valid OPENSSH private key file: "
        f"'-----BEGIN OPENSSH PRIVATE KEY-----\\n{OPENSSH_ESCAPED}\\n"
        "-----END OPENSSH PRIVATE KEY-----\\n'",
        OPENSSH_BODY.split("\n"),
    ),
    (
        "google.auth.exceptions.MalformedError: service account info was not in the expected "
        'format: {"type": "service_account", "project_id": "agents-prod", "private_key": '
        f'"-----BEGIN PRIVATE KEY-----\\n{SERVICE_ACCOUNT_ESCAPED}\\n'
        '-----END PRIVATE KEY-----\\n", "client_email": "runner@agents-prod.example.com"}',
        SERVICE_ACCOUNT_BODY.split("\n"),
    ),
    (
        "remote: Invalid username or password.\n"
        "fatal: Authentication failed for "
        f"'https://x-access-token:{GITHUB_SERVER}@github.com/acme/agents.git/'",
        [GITHUB_SERVER],
    ),
    (
        f"GitHub API 401 Bad credentials (GITHUB_TOKEN={GITHUB_PAT})",
        [GITHUB_PAT],
    ),
    (
        f"gh: token {GITHUB_OAUTH} lacks scope 'workflow'; user-to-server token {GITHUB_USER} "
        f"expired; refresh with {GITHUB_REFRESH}",
        [GITHUB_OAUTH, GITHUB_USER, GITHUB_REFRESH],
    ),
    (
        f"github.GithubException.BadCredentialsException: 401 using {GITHUB_FINE}",
        [GITHUB_FINE],
    ),
    (
        f"gitlab.exceptions.GitlabAuthenticationError: 401: invalid token glpat {GITLAB} for "
        "https://gitlab.example.com/api/v4/projects/42",
        [GITLAB],
    ),
    (
        f"slack_sdk.errors.SlackApiError: The request to the Slack API failed. token={SLACK_BOT}"
        f" (url: https://slack.com/api/chat.postMessage)\nfallback user token: {SLACK_USER}",
        [SLACK_BOT, SLACK_USER],
    ),
    (
        f"stripe.error.AuthenticationError: Invalid API Key provided: {STRIPE_LIVE}",
        [STRIPE_LIVE],
    ),
    (
        f"Stripe restricted key {STRIPE_RESTRICTED} cannot create charges; test key "
        f"{STRIPE_TEST} works",
        [STRIPE_RESTRICTED, STRIPE_TEST],
    ),
    (
        "googleapiclient.errors.HttpError: <HttpError 403 when requesting "
        "https://www.googleapis.com/customsearch/v1?q=weather&cx=0123456789&key="
        f'{GOOGLE}&alt=json returned "API key not valid. Please pass a valid API key.">',
        [GOOGLE],
    ),
    (
        f"jwt.exceptions.ExpiredSignatureError: Signature has expired (token {JWT})",
        [JWT],
    ),
    (
        "urllib3.exceptions.MaxRetryError: retries exhausted; last request headers: "
        f"{{'User-Agent': 'onward/0.1', 'Authorization': 'Basic {BASIC}'}}",
        [BASIC],
    ),
    (
        'token refresh failed: 400 {"error": "invalid_grant"} for request body '
        f'{{"client_id": "agent-7.apps.example.com", "client_secret": "{CLIENT_SECRET}", '
        f'"refresh_token": "{REFRESH_TOKEN}", "grant_type": "refresh_token"}}',
        [CLIENT_SECRET, REFRESH_TOKEN],
    ),
    (
        f'curl: (22) The requested URL returned error: 403\n+ curl -H "X-Api-Key: {HEADER_API_KEY}"'
        " https://api.example.com/v2/jobs",
        [HEADER_API_KEY],
    ),
    (
        "yaml config at /etc/agent/config.yaml:\n"
        "database:\n"
        "  host: db.internal\n"
        f'  password: "{YAML_PASSWORD}"\n'
        "  pool: 8\n",
        [YAML_PASSWORD],
    ),
    (
        f"command failed (exit 2): deploy --user ops --password={CLI_PASSWORD} --region eu-west-1",
        [CLI_PASSWORD],
    ),
    (
        "redirect loop at https://app.example.com/oauth/callback?"
        f"access_token={QUERY_TOKEN}&state=af93&expires_in=3600",
        [QUERY_TOKEN],
    ),
    (
        f"psql: error: PGPASSWORD={PGPASSWORD} psql -h db.internal -U app returned 2",
        [PGPASSWORD],
    ),
    (
        f"ODBC error [08001]: DRIVER={{ODBC Driver 18}};SERVER=sql.internal;UID=sa;PWD={PWD};",
        [PWD],
    ),
    (
        f"gpg: decryption failed: bad key; passphrase => '{PASSPHRASE}'",
        [PASSPHRASE],
    ),
    (
        f"Hugging Face hub: 401 Client Error for model meta-llama/x with token {HUGGINGFACE}",
        [HUGGINGFACE],
    ),
    (
        f"webhook signature mismatch; STRIPE_WEBHOOK_SECRET: {WEBHOOK_SECRET}",
        [WEBHOOK_SECRET],
    ),
    (
        f"django.core.exceptions.ImproperlyConfigured: SECRET_KEY = '{DJANGO_SECRET_KEY}' is too"
        " short",
        [DJANGO_SECRET_KEY],
    ),
    (
        "celery.exceptions.Retry: task agents.sync failed; payload was "
        f'"{{\\"username\\": \\"svc-sync\\", \\"password\\": \\"{NESTED_PASSWORD}\\"}}"',
        [NESTED_PASSWORD],
    ),
    (
        f"KeyError: 'svc_{GLUED_GITHUB}' is not a known variable (did you mean GITHUB_TOKEN?)",
        [GLUED_GITHUB],
    ),
    (
        "azure.core.exceptions.ClientAuthenticationError: Server failed to authenticate the "
        "request; connection string DefaultEndpointsProtocol=https;AccountName=agentstore;"
        f"AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net",
        [AZURE_ACCOUNT_KEY, AZURE_ACCOUNT_KEY[:40]],
    ),
    (
        "403 AuthenticationFailed for https://agentstore.blob.core.windows.net/runs/out.json?"
        f"sv=2022-11-02&ss=b&srt=o&sp=r&se=2024-11-26T00:00:00Z&sig={AZURE_SAS_SIG}",
        [AZURE_SAS_SIG, AZURE_SAS_SIG[:40]],
    ),
    (
        "azure.servicebus.exceptions.ServiceBusAuthenticationError: Endpoint=sb://agents."
        "servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;"
        f"SharedAccessKey={SERVICE_BUS_KEY}",
        [SERVICE_BUS_KEY],
    ),
    (
        f"npm ERR! code E401 Unable to authenticate, token {NPM} was revoked\n"
        f"npm ERR! //registry.npmjs.org/:_authToken={NPM_LABELLED}",
        [NPM, NPM_LABELLED],
    ),
    (
        "python_http_client.exceptions.UnauthorizedError: HTTP Error 401: Unauthorized "
        f"(sendgrid client built with {SENDGRID})",
        [SENDGRID],
    ),
    (
        "requests.exceptions.HTTPError: 404 Client Error: Not Found for url: "
        f"https://hooks.slack.com/services/{SLACK_WEBHOOK_PATH}",
        [SLACK_WEBHOOK_PATH, SLACK_WEBHOOK_PATH.rsplit("/", 1)[1]],
    ),
    (
        f"aws configure list: access key {BESIDE_KEY_ID} / {BESIDE_SECRET} (shared-credentials)",
        [BESIDE_KEY_ID, BESIDE_SECRET],
    ),
    (
        "could not parse credentials.csv row 2: "
        f"svc-agent,{CSV_KEY_ID},{CSV_SECRET},https://console.aws.amazon.com",
        [CSV_KEY_ID, CSV_SECRET],
    ),
    (
        f"handshake rejected: server expected {UNLABELLED} in the upgrade request",
        [UNLABELLED],
    ),
    (
        f"cryptography.fernet.InvalidToken (ENCRYPTION_KEY={ENCRYPTION_KEY})",
        [ENCRYPTION_KEY],
    ),
    (
        f"twilio.base.exceptions.TwilioRestException: 20003 Authenticate with {TWILIO}",
        [TWILIO],
    ),
    (
        f"doctl: Unable to initialize DigitalOcean API client: {DIGITALOCEAN} is invalid; "
        f"vault said permission denied for {VAULT}",
        [DIGITALOCEAN, VAULT],
    ),
    (
        f"databricks-sdk: 403 Invalid access token {DATABRICKS}; doppler: {DOPPLER} expired",
        [DATABRICKS, DOPPLER],
    ),
    (
        f"twine upload failed: 403 Invalid or non-existent authentication ({PYPI})",
        [PYPI],
    ),
    (
        f"linear: 401 for {LINEAR}; shopify: 401 for {SHOPIFY}; grafana: 401 for {GRAFANA}",
        [LINEAR, SHOPIFY, GRAFANA],
    ),
    (
        f"telegram.error.InvalidToken: https://api.telegram.org/bot7381920456:{TELEGRAM_SECRET}"
        "/getMe returned 401",
        [TELEGRAM_SECRET],
    ),
    (
        "discord webhook failed: https://discord.com/api/webhooks/123456789012345678/"
        f"{DISCORD_WEBHOOK_TOKEN}",
        [DISCORD_WEBHOOK_TOKEN],
    ),
    (
        f"heroku: Invalid credentials provided ({HEROKU}); age: no identity matched {AGE_KEY}",
        [HEROKU, AGE_KEY],
    ),
    (
        f"teams notification failed: https://acme.webhook.office.com/webhookb2/{TEAMS_PATH}",
        [TEAMS_PATH.split("/IncomingWebhook/")[1]],
    ),
    (
        f"smtplib.SMTPAuthenticationError: (535, b'5.7.8 rejected') with DB_PASS={DB_PASS} "
        f"SMTP_PASS={SMTP_PASS} REDIS_PASS='{REDIS_PASS}'",
        [DB_PASS, SMTP_PASS, REDIS_PASS],
    ),
    (
        f"config.yaml:\n  db_user: app\n  db_pass: {YAML_PASS}\n"
        f"login url: https://mail.example.com/login?user=ops&pass={QUERY_PASS}&lang=en",
        [YAML_PASS, QUERY_PASS],
    ),
    (
        f"KeyError: 'DB_HOST' in environ({{'DB_USER': 'app', 'DB_PASS': '{ENV_PASS}'}})",
        [ENV_PASS],
    ),
    (
        f"command failed (exit 1): mysqldump -h db.internal -u root -p{MYSQL_CLI_PASSWORD} agents"
        f" | gzip; sshpass -p '{SSHPASS_PASSWORD}' ssh ops@backup.internal",
        [MYSQL_CLI_PASSWORD, SSHPASS_PASSWORD],
    ),
    (
        "requests.exceptions.TooManyRedirects: Exceeded 30 redirects; last request "
        "b'GET /login HTTP/1.1\\r\\nHost: app.example.com\\r\\n"
        f"Cookie: sessionid={COOKIE_SESSION}; theme=dark\\r\\n'\n"
        f"last response: Set-Cookie: _app_sess={COOKIE_SIGNED}; Path=/; Secure; HttpOnly",
        [COOKIE_SESSION, COOKIE_SIGNED],
    ),
    (
        f"deploy.sh: line 12: docker login -u ci -p {DOCKER_PASSWORD} registry.example.com failed;"
        f" subprocess.CalledProcessError: Command '['agent-cli', 'sync', '--access-token', "
        f"'{OPTION_TOKEN}']' returned non-zero exit status 1.\n"
        f"+ curl -fsSuops:{CURL_GLUED_PASSWORD} https://backup.internal/upload",
        [DOCKER_PASSWORD, OPTION_TOKEN, CURL_GLUED_PASSWORD],
    ),
    (
        "docker.errors.ContainerError: Command 'mysqld' in image 'mysql:8' returned non-zero "
        f"exit status 1: environment MYSQL_ROOT_PW={ROOT_PW} REPLICA_PW='{REPLICA_PW}'",
        [ROOT_PW, REPLICA_PW],
    ),
    (
        f"sentry_sdk.transport: Unexpected status code: 401 (DSN https://{SENTRY_KEY}@o4504"
        ".ingest.sentry.io/4504)\nfatal: unable to access "
        f"'https://{REMOTE_TOKEN}@github.com/acme/agents.git/': The requested URL returned 403",
        [SENTRY_KEY, REMOTE_TOKEN],
    ),
    (
        # A file named like a secret beside a value: grep -r over a secrets' directory, and a
        # parameter store's path and its value.
        f"/run/secrets/db_password:{MYSQL_PASSWORD}\n/prod/agents/api_token: {REDIS_PASSWORD}",
        [MYSQL_PASSWORD, REDIS_PASSWORD],
    ),
]

NOT_SECRETS: list[str] = [
    "step 3 of 7 completed in 0.412s",
    "fetched https://example.com/docs/page-3?lang=en&page=2 (12 KB)",
    "wrote /home/agent/work/output/report-2024-11-25.csv",
    "C:\\Users\\agent\\AppData\\Local\\Temp\\onward-cache",
    "task 7b8c9d0e-1f2a-3b4c-5d6e-7f8091a2b3c4 resumed at version 12",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "checksum e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 ok",
    "loaded tokenizer from cache; max_tokens=4096, input_tokens: 1834, output_tokens: 0",
    "password reset succeeded for user 42",
    "token refresh scheduled in 300s",
    "the secret to long runs is checkpointing",
    "basic auth is disabled for this endpoint",
    "a Bearer token is required",
    "author: Ada Lovelace",
    "git@github.com:acme/agents.git pushed",
    "ssh://git@github.com/acme/agents.git fetched",
    "mail sent to alice@example.com",
    "risk-assessment-for-the-second-quarter-of-2024 done",
    "KeyError: 'api_key' (config has no api_key)",
    "password: None",
    "auth: true",
    "ASIA/Tokyo time zone; AKIA is not a word",
    "retrying with exponential backoff (base 2.0, max 60s)",
    "日本語のログ: パスワードなし",
    "sort_key=created_at_timestamp_desc, partition_key: customer_region_europe_west",
    "cache key=user-profile-v2-42-settings",
    "module onward.runtime.scheduler.Scheduler._claim_next took 3ms",
    "/home/agent/Projects/MyApp2/src/main/Service.java:42: error: cannot find symbol",
    "compiled getUserAccountSettingsForTenant2 in 0.3s",
    'ETag: "33a64df551425fcc55e4d42a148795d9f25f89d4"',
    "see https://example.com/articles/2024/11/how-to-build-durable-agents-with-event-sourcing",
    "primary_key=order_items_order_id_product_id_pk",
    "worker host-7/123456/987654321/abcdef lost its lease",
    "credentials_path=/etc/agent/credentials.json",
    "task_completed InterruptionDelivered ThresholdsAdjusted",
    "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
    # Templates and config that name a credential without holding one, and words that end in
    # "pass" or name a test's status. (Code after a credential's name is redacted: it cannot
    # be told from a password, ``password = Summer(2024)`` in an INI file.)
    'pw = getpass.getpass("Password: ")',
    "password: ${DB_PASSWORD}",
    'password: "${DB_PASSWORD}"',
    "token: ${{ secrets.GITHUB_TOKEN }}",
    "cursor.execute('SELECT 1 WHERE password = %s', (digest,))",
    "auth: basic",
    '{"auth": "bearer", "type": "oauth2"}',
    "password: ********",
    "bypass=true compass=north SMTP relay on",
    "PASS: test_redaction.py::test_corpus",
    "tests: pass: 12, fail: 0",
    '{"cache_key": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}',
    '{"idempotency_key": "a8Fk29dkLqpZ0xR7vBn3Mw5Tj6Yh1Uc4"}',
    "object_key=runs/a8Fk29dkLqpZ0xR7vBn3Mw5Tj6Yh1Uc4 cache_key=Qw7eRt9yUi2oPa4sDf6gHj8kLz1xCv3b",
    "mkdir -p /tmp/out && ls -p /tmp/out && mysql -u app -p agents",
    "cat: /etc/passwd: No such file or directory",
    "open /run/secrets/db_password: permission denied",
    "[Errno 2] No such file or directory: '/app/secrets/token'",
    "tail: cannot open '/var/log/auth.log' for reading: Permission denied",
]
