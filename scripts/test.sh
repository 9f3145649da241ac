#!/usr/bin/env bash
# Set up ./.venv (if needed), lint and type-check (scripts/lint.sh: ruff over the tree, mypy over
# protocols, index and wire), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON=.venv/bin/python bash scripts/lint.sh
# With arguments, they replace the default test path (e.g. a single file). Tests run on one worker per
# core (pytest-xdist; every test starts its own servers on free ports in its own tmp dir), a module's
# tests on one worker (loadscope): a module-scoped cluster is built once, and tests that read what the
# module's earlier tests did (an audit of earlier retrievals) see it. Worksteal split modules across
# workers, which failed those tests on a clean clone; loadscope took 289 s against 322 s on 2 cores.
exec .venv/bin/python -m pytest -n auto --dist loadscope "${@:-tests}"
