#!/usr/bin/env bash
# Runs the test suite in ./.venv (set up on first use). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
exec python -m pytest -q "$@"
