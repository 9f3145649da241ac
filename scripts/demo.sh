#!/usr/bin/env bash
# Set up ./.venv (if needed) and run the TriVault demo: three local servers on 127.0.0.1,
# a bundled image collection, secure queries, one retrieval, clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/trivault demo "$@"
