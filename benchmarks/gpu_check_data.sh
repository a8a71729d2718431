#!/usr/bin/env bash
# Data for benchmarks/gpu_check.sh, prepared on this machine (no GPU needed) into a git-ignored
# folder that travels with the working tree:
#   .device/gpu-check/m30k/             Multi30k en-de prepared by `nmt prepare local` (8k vocab)
#   .device/gpu-check/wmt/              the WMT train sample (Moses-tokenized, 10k pairs) prepared
#                                       with the paper's 37k joint vocabulary; newstest2013 valid,
#                                       newstest2014 test (test.raw.en/.de: what gpu_check translates)
# Usage: bash benchmarks/gpu_check_data.sh [SHARED_DATA_DIR] (default /work/shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-/work/shared/data}"
DEST="${DEST:-.device/gpu-check}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$DEST"
"$PY" -m nmt prepare local --src en --tgt de --train "$SHARED/multi30k/train" \
  --valid "$SHARED/multi30k/val" --test "$SHARED/multi30k/test_2016_flickr" --out "$DEST/m30k"
"$PY" -m nmt prepare local --src en --tgt de --train "$SHARED/wmt/train_sample/onmt_sample10k.tok" \
  --valid "$SHARED/wmt/newstest2013" --test "$SHARED/wmt/newstest2014" --vocab-size 37000 \
  --out "$DEST/wmt"
du -sh "$DEST"
