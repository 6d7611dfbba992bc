#!/usr/bin/env bash
# The static checks: ruff (lint and format), mypy --strict and import-linter's layer contracts.
# mypy and import-linter read the package under its import names: the repository's engine/,
# events/ and projections/ folders are linked into build/tree/onward first, as they install.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
tree=build/tree/onward
rm -rf build/tree
mkdir -p "$tree"
for entry in engine/*; do
    ln -s "$PWD/$entry" "$tree/"
done
ln -s "$PWD/events" "$tree/events"
ln -s "$PWD/projections" "$tree/projections"
"$py" -m ruff check .
"$py" -m ruff format --check .
"$py" -m mypy
PYTHONPATH=build/tree "$(dirname "$py")/lint-imports" --no-cache
