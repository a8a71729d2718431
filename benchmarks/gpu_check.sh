#!/usr/bin/env bash
# The GPU check of nmt: one command, under 10 minutes on one H100/H200 (a 540 s budget that
# every part's subprocesses are stopped at), one Markdown table in $OUT/gpu-check.md ($OUT
# defaults to ./gpu-check-out; logs beside it): bf16 base training tokens/s and MFU, nmt
# translation sentences/s beside CTranslate2 fp16 with an output-equality check, fp16 training,
# torch.compile, a 2-minute Multi30k run. Parts, sizes and budget: benchmarks/gpu_check.py.
#
#   bash benchmarks/gpu_check.sh                        # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu --dry-run # tiny sizes, a few steps, minutes
#
# Needs torch, typer, rich, sentencepiece, sacrebleu, safetensors (ctranslate2 optional: without
# it the CTranslate2 rows say so). Data: .device/gpu-check/ (git-ignored, 14 MB), written by
# benchmarks/gpu_check_data.sh from the raw corpora; run here first when that folder is missing
# and $NMT_SHARED_DATA (default /work/shared/data) holds them. ctranslate2: where it does not
# import and .whl/ holds its wheel, it is installed from there (no network) into a temporary
# folder first. On a device machine with torch but neither data nor ctranslate2 (Python 3.12),
# prepare both here and carry .device and .whl (58 MB with the tree):
#
#   bash benchmarks/gpu_check_data.sh
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl ctranslate2==4.8.5
#   # there, from the repository root, carrying .device and .whl:
#   PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ ! -f .device/gpu-check/m30k/manifest.json && " $* " != *" --data "* ]]; then
  SHARED="${NMT_SHARED_DATA:-/work/shared/data}"
  if [[ ! -d "$SHARED/wmt" ]]; then
    echo "gpu_check: .device/gpu-check/ is missing and $SHARED has no raw corpora; run benchmarks/gpu_check_data.sh where they are and carry .device" >&2
    exit 2
  fi
  PYTHON="$PY" bash benchmarks/gpu_check_data.sh "$SHARED" > "$OUT/gpu-check-data.log" 2>&1
fi
if ! "$PY" -c "import ctranslate2" 2>/dev/null; then
  shopt -s nullglob
  wheels=(.whl/ctranslate2-*.whl)
  if (( ${#wheels[@]} == 1 )); then
    site="${TMPDIR:-/tmp}/nmt-gpu-check-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "${wheels[0]}" > "$OUT/gpu-check-pip.log" 2>&1 \
      && export PYTHONPATH="$PYTHONPATH:$site" \
      || echo "gpu_check: installing ${wheels[0]} failed (see $OUT/gpu-check-pip.log)" >&2
  fi
fi
exec "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
