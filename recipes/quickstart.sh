#!/usr/bin/env bash
# The main job end to end on the bundled sample corpus (filled in as the pipeline lands).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
echo "nmt quickstart: not available yet (prepare/train/translate are still being built)"
