#!/usr/bin/env bash
# Set up a virtual environment and run the demo on the embedded SQLite default.
# Extra arguments go to `onward demo` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e .
exec .venv/bin/onward demo "$@"
