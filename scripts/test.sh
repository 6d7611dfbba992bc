#!/usr/bin/env bash
# Set up a virtual environment with the dev extra and run the whole test suite.
# PostgreSQL tests need a server at 127.0.0.1:5432 (database "test", trust auth): when one is
# installed here but stopped, this starts it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The build backend's notes on editable installs are not for the user: keep the set-up quiet.
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e '.[dev]'
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
fi
bash scripts/checks.sh
exec .venv/bin/python -m pytest "$@"
