#!/usr/bin/env bash
# Transformer big on WMT14 English→German, as in Vaswani et al. (2017), with nmt commands only.
# Usage: bash recipes/wmt14-en-de/big.sh [GPUS]   (default 8; an update holds the same
# 25,000 token slots on any GPU count: the trainer derives gradient accumulation itself)
set -euo pipefail
GPUS="${1:-8}"
DATA=data/wmt14-en-de
RUN=runs/wmt14-en-de-big

# 1. 4.5M training pairs, newstest2013 (valid), newstest2014 (test); one joint BPE vocabulary
#    of 37k pieces, the paper's
nmt prepare wmt14-en-de --out "$DATA" --vocab-size 37000

# 2. 300k updates of 25,000 padded token slots (each pair counted as its longer side, padding
#    included: about 24.2k real target + 22.5k real source tokens, the paper's "~25k + 25k");
#    Adam (0.9, 0.98, 1e-9), warmup 4000, label smoothing 0.1; a checkpoint about every 10
#    minutes of the paper's P100 time (600 steps), last 20 kept
nmt train "$DATA" --preset big --gpus "$GPUS" --run "$RUN" \
  --batch-tokens 25000 --max-steps 300000 --warmup 4000 --label-smoothing 0.1 \
  --save-every 600 --keep-last 20 --precision auto

# 3. average the last 20 checkpoints
nmt average "$RUN" --last 20 -o "$RUN/avg"

# 4. beam 4, length penalty 0.6, output at most input + 50 tokens, on the full 3,003 lines
nmt translate -c "$RUN/avg" --beam 4 --lenpen 0.6 -i "$DATA/test.raw.en" -o "$RUN/newstest2014.hyp.de"

# 5. sacreBLEU (report this one) and the paper's tokenized compound-split BLEU (compare with 28.4)
nmt score "$RUN/newstest2014.hyp.de" --ref "$DATA/test.raw.de" --metrics bleu,chrf
nmt score "$RUN/newstest2014.hyp.de" --ref "$DATA/test.raw.de" --paper-bleu
