#!/usr/bin/env bash
# Multi30k English→German with the published reference's configuration (fairseq
# transformer_tiny as in Wu et al., 2021: 4+4 layers, d_model 128, d_ff 256, 4 heads, dropout
# 0.3, lr 0.005 inverse-sqrt with 2,000 warm-up updates, 4,096-token batches, trained to
# convergence with patience 10, average of the last 10 checkpoints, beam 5) on lowercased,
# Moses-tokenized text with a 10k joint BPE, scored with lowercased tokenized BLEU (41.0).
# Usage: bash recipes/multi30k-en-de/reference/run.sh [MAX_TIME]   SHARED: the corpora folder;
# LR: another peak learning rate (this recipe's README: 0.005 overfits here, 0.002 learns).
set -euo pipefail
MAX_TIME="${1:-}"
LR="${LR:-}"
SHARED="${SHARED:-../shared/data}"
M="$SHARED/multi30k"
DATA=data/multi30k-reference
RUN="runs/multi30k-reference${LR:+-lr$LR}"   # another LR, another run

# 1. lowercased, Moses-tokenized text (train, val, test_2016_flickr), joint 10k BPE; pairs are
#    dropped only beyond a 9:1 length ratio (Moses clean-corpus's default), as fairseq keeps them
nmt prepare local --src en --tgt de --train "$M/train" --valid "$M/val" \
  --test "$M/test_2016_flickr" --name multi30k-reference --out "$DATA" \
  --lowercase --moses-tokenize --vocab-size 10000 --max-ratio 9

# 2. train to convergence: validation (loss, and greedy BLEU on all 1,014 lines) about once an
#    epoch, stop after 10 validations without a lower validation loss (fairseq's --patience,
#    which follows the loss by default; "best_metric": "loss" in config.json); resumes if the
#    run directory exists
nmt train "$DATA" --config recipes/multi30k-en-de/reference/config.json --run "$RUN" \
  ${MAX_TIME:+--max-time "$MAX_TIME"} ${LR:+--lr "$LR"}

# 3. average the last 10 checkpoints
nmt average "$RUN" --last 10 -o "$RUN/avg"

# 4. beam 5 with fairseq's length penalty 1.0 (the reference's decoding); the model reads
#    lowercased, tokenized input and writes detokenized, lowercased output
nmt translate -c "$RUN/avg" --beam 5 --lenpen-style fairseq --lenpen 1.0 \
  -i "$DATA/test.raw.en" -o "$RUN/test_2016_flickr.hyp.de"

# 5. lowercased Moses-tokenized BLEU (the reference's 41.0), lowercased sacreBLEU and chrF
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --lowercase --moses-bleu
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --lowercase --metrics bleu,chrf
