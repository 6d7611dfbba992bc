#!/usr/bin/env bash
# Set up a virtual environment with the dev extra and run the whole test suite.
# The report's browser test needs Debian's chromium: installed when missing (as root).
# PostgreSQL tests need a server at 127.0.0.1:5432 (database "test", trust auth): when one is
# installed here but stopped, this starts it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# The venv's own pip installs the project (editable installs need pip 21.3 or later): no upgrade
# to fetch and install first on every run.
# The build backend's notes on editable installs are not for the user: keep the set-up quiet.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e '.[dev]'
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
fi
# `onward report`'s page is tested in a real headless browser: Debian's chromium, installed
# here when missing (as root, which CI is).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
        >/dev/null
fi
bash scripts/checks.sh
exec .venv/bin/python -m pytest "$@"
