#!/usr/bin/env bash
# Set up ./.venv (if needed), lint and type-check (scripts/lint.sh: ruff over the tree, mypy over
# protocols, index and wire), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=.venv/bin/python bash scripts/lint.sh
# With arguments, they replace the default test path (e.g. a single file).
exec .venv/bin/python -m pytest "${@:-tests}"
