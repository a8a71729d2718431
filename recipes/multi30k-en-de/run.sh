#!/usr/bin/env bash
# Multi30k English→German (Elliott et al., 2016) with the tiny Transformer (3+3 layers, d_model
# 128, d_ff 256, 4 heads, dropout 0.1, 8k joint BPE): minutes on one GPU, about an hour on a
# laptop CPU. config.json is the resolved training config (the run directory's
# train_config.json) of the run measured in README.md.
# Usage: bash recipes/multi30k-en-de/run.sh [MAX_TIME]   e.g. 60m on a 2-core CPU; default: the
# config's 20k updates. SHARED points at the corpora (default ../shared/data).
set -euo pipefail
MAX_TIME="${1:-}"
SHARED="${SHARED:-../shared/data}"
M="$SHARED/multi30k"
DATA=data/multi30k-en-de
RUN=runs/multi30k-en-de

# 1. the raw Multi30k text files; joint 8k BPE; test_2016_flickr as the test set
nmt prepare local --src en --tgt de --train "$M/train" --valid "$M/val" \
  --test "$M/test_2016_flickr" --name multi30k-en-de --out "$DATA" --vocab-size 8000

# 2. train (resumes if the run directory holds a checkpoint)
nmt train "$DATA" --config recipes/multi30k-en-de/config.json --run "$RUN" \
  ${MAX_TIME:+--max-time "$MAX_TIME"}

# 3. average the last 10 checkpoints
nmt average "$RUN" --last 10 -o "$RUN/avg"

# 4. translate test_2016_flickr with beam 5 (the reference's setting), α 0.6
nmt translate -c "$RUN/avg" --beam 5 --lenpen 0.6 -i "$DATA/test.raw.en" -o "$RUN/test_2016_flickr.hyp.de"

# 5. cased sacreBLEU + chrF, and the lowercased BLEU the published 41.0 uses
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --metrics bleu,chrf
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --lowercase
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --lowercase --paper-bleu

# 6. the WMT path end to end on the real 3,003-line newstest2014 (a caption model scores low on
#    news: this checks reading, detokenization and both BLEU variants, not quality)
nmt translate -c "$RUN/avg" --beam 4 --lenpen 0.6 -i "$SHARED/wmt/newstest2014.en" -o "$RUN/newstest2014.hyp.de"
nmt score "$RUN/newstest2014.hyp.de" --ref "$SHARED/wmt/newstest2014.de" --metrics bleu,chrf
nmt score "$RUN/newstest2014.hyp.de" --ref "$SHARED/wmt/newstest2014.de" --paper-bleu
