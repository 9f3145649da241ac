#!/usr/bin/env bash
# Set up ./.venv (if needed), lint and type-check (scripts/lint.sh: ruff over the tree, mypy over
# protocols, index and wire), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=.venv/bin/python bash scripts/lint.sh
# With arguments, they replace the default test path (e.g. a single file). Tests run on one worker per
# core (pytest-xdist; every test starts its own servers on free ports in its own tmp dir); the long
# end-to-end tests are stolen by an idle worker instead of queueing behind a busy one.
exec .venv/bin/python -m pytest -n auto --dist worksteal "${@:-tests}"
