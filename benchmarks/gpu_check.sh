#!/usr/bin/env bash
# One GPU check of nmt, under 8 minutes on one H100/H200; writes one Markdown table to
# $OUT/gpu-check.md ($OUT defaults to ./gpu-check-out). Needs torch, typer, rich,
# sentencepiece, sacrebleu, safetensors, transformers (ctranslate2 optional); its data comes
# from benchmarks/gpu_check_data.sh, run beforehand on any machine (writes .device/gpu-check/).
#
#   bash benchmarks/gpu_check.sh                        # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu --dry-run # tiny sizes, a few steps, seconds
#
# Steps and rows: see benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py --out "$OUT" "$@"
