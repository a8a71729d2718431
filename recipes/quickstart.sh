#!/usr/bin/env bash
# The main job end to end on two CPU cores in a few minutes:
#   prepare → train → average → translate → score.
# Corpus: real Multi30k text when it is at hand (the folder in $MULTI30K_DIR, or
# ../shared/data/multi30k beside this checkout, or the Hugging Face hub); otherwise the
# English→German sample corpus that nmt generates itself (nmt/sample.py), announced as such:
# its scores are on generated sentences, not on a real test set. Every number printed at the
# end is computed from translations the model trained here has just produced.
# Environment knobs: QUICKSTART_TIME (training wall clock, default 4m), QUICKSTART_DIR (default
# runs/quickstart), MULTI30K_DIR (raw Multi30k: train.en/.de, val.en/.de, test_2016_flickr.en/.de).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

OUT="${QUICKSTART_DIR:-runs/quickstart}"
TIME="${QUICKSTART_TIME:-4m}"
mkdir -p "$OUT"

# 1. prepare: real Multi30k if it is here or reachable, else the built-in sample corpus
M="${MULTI30K_DIR:-../shared/data/multi30k}"
SAMPLE=0
if [ -f "$M/train.en" ] && [ -f "$M/val.de" ] && [ -f "$M/test_2016_flickr.de" ]; then
  echo "quickstart: training on Multi30k from $M"
  nmt prepare local --src en --tgt de --train "$M/train" --valid "$M/val" \
    --test "$M/test_2016_flickr" --name multi30k-en-de --out "$OUT/data" --vocab-size 8000
elif nmt prepare multi30k-en-de --out "$OUT/data" --vocab-size 8000 2>"$OUT/hub.log"; then
  echo "quickstart: training on Multi30k from the Hugging Face hub"
else
  echo "quickstart: note: no Multi30k here (set MULTI30K_DIR, or see $OUT/hub.log for the hub);" \
       "using nmt's built-in English-German sample corpus instead"
  SAMPLE=1
  nmt prepare sample-en-de --out "$OUT/data" --vocab-size 1000
fi

# 2. train the tiny preset for a few minutes (resumes if run again)
nmt train "$OUT/data" --preset tiny --run "$OUT/run" --max-time "$TIME" \
  --save-every 200 --valid-bleu-lines 200 --keep-last 5

# 3. average the last 3 checkpoints
nmt average "$OUT/run" --last 3 -o "$OUT/avg"

# 4. translate the test set (raw text in, detokenized text out) with the paper's beam 4, α 0.6
nmt translate -c "$OUT/avg" --beam 4 --lenpen 0.6 -i "$OUT/data/test.raw.en" -o "$OUT/test.hyp.de"

# 5. score: BLEU and chrF with sacreBLEU, and a few examples
if [ "$SAMPLE" = 1 ]; then
  echo "quickstart: note: the scores below are on sentences nmt generated itself" \
       "(sample-en-de), easy by design; they show the pipeline works, not translation quality"
fi
nmt score "$OUT/test.hyp.de" --ref "$OUT/data/test.raw.de" --metrics bleu,chrf \
  --source "$OUT/data/test.raw.en" --examples 5
