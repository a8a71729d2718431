#!/usr/bin/env bash
# Multi30k English→German with the published reference's configuration (fairseq
# transformer_tiny as in Wu et al., 2021, and its repository's training command: 4+4 layers,
# d_model 128, d_ff 256, 4 heads, dropout 0.3, lr 0.005 inverse-sqrt with 2,000 warm-up
# updates, --max-tokens 4096 on two GPUs = 8,192 tokens per update, at most 8,000 updates,
# patience 10 validations (one per epoch) on the validation loss, that fairseq's defaults
# (clip-norm 25, Adam eps 1e-8) and initialisation ("init": "fairseq"), average of the last
# 10 epoch checkpoints, beam 5) on lowercased, Moses-tokenized text with a 10k joint BPE,
# scored with lowercased tokenized BLEU (41.0).
# Usage: bash recipes/multi30k-en-de/reference/run.sh [MAX_TIME]   SHARED: the corpora folder;
# LR: another peak learning rate, in its own run directory.
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

# 2. train to convergence: validation loss at the end of every epoch (and a checkpoint), stop
#    after 10 validations without a lower validation loss (fairseq's --patience, which follows
#    the loss by default; "best_metric": "loss" in config.json) or at 8,000 updates; resumes if
#    the run directory exists
nmt train "$DATA" --config recipes/multi30k-en-de/reference/config.json --run "$RUN" \
  ${MAX_TIME:+--max-time "$MAX_TIME"} ${LR:+--lr "$LR"}

# 3. average the last 10 (epoch) checkpoints
nmt average "$RUN" --last 10 -o "$RUN/avg"

# 4. beam 5 with fairseq's length penalty 1.0 (the reference's decoding); the model reads
#    lowercased, tokenized input and writes detokenized, lowercased output
nmt translate -c "$RUN/avg" --beam 5 --lenpen-style fairseq --lenpen 1.0 \
  -i "$DATA/test.raw.en" -o "$RUN/test_2016_flickr.hyp.de"

# 5. lowercased Moses-tokenized BLEU (the reference's 41.0) with its 95% bootstrap interval
#    (about +-1.5 on these 1,000 sentences), lowercased sacreBLEU and chrF
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --lowercase --moses-bleu \
  --confidence
nmt score "$RUN/test_2016_flickr.hyp.de" --ref "$DATA/test.raw.de" --lowercase --metrics bleu,chrf
