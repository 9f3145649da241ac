#!/usr/bin/env bash
# Lint and type-check the tree: ruff over the whole repo, mypy over the packages listed in
# pyproject.toml ([tool.mypy] files: protocols, index, wire, servers, client). Exits non-zero on any finding.
# Usage: scripts/lint.sh [--fix]   (--fix applies ruff's safe fixes first)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
status=0
if [[ "${1:-}" == "--fix" ]]; then
    "$PY" -m ruff check --fix . || true
fi
echo "== ruff check ." >&2
"$PY" -m ruff check . || status=1
echo "== mypy (protocols, index, wire, servers, client)" >&2
"$PY" -m mypy || status=1
exit $status
