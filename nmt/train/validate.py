"""Validation: loss and perplexity on the valid split, and BLEU of greedy decoding (rank 0)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from nmt import batching, files
from nmt.loss import smoothed_loss
from nmt.train.session import Session, TrainState

log = logging.getLogger(__name__)


@torch.no_grad()
def validate(sess: Session, state: TrainState) -> dict[str, Any]:
    """Loss and perplexity on the validation split, and BLEU of greedy decoding (rank 0)."""
    model = state.model
    model.eval()
    try:
        loss, nll, tokens = valid_loss(sess, model)
        lines = sess.cfg.valid_bleu_lines
        bleu = valid_bleu(sess, model, lines) if lines != 0 else None
    finally:
        model.train()
    return {"kind": "valid", "step": state.step, "epoch": state.epoch, "loss": loss / tokens,
            "nll": nll / tokens, "ppl": math.exp(min(nll / tokens, 100.0)), "bleu": bleu}


def valid_loss(sess: Session, model: nn.Module) -> tuple[float, float, int]:
    split, c = sess.valid, sess.cfg.model
    src_len, tgt_len = split.src.lengths, split.tgt.lengths
    sizes = batching.pair_sizes(src_len, tgt_len)
    keep = np.nonzero(sizes <= c.max_positions)[0]
    budget = max(sess.layout.shard_bound, int(sizes[keep].max(initial=1)))
    order = batching.length_order(sizes[keep], src_len[keep], tgt_len[keep])
    loss = nll = 0.0
    tokens = 0
    for rows in batching.pack(keep[order], sizes, budget):
        b = batching.collate(split.src, split.tgt, rows, pad_id=c.pad_id, bos_id=c.bos_id,
                             eos_id=c.eos_id).to(sess.world.device)
        with sess.autocast():
            logits = model(b.src, b.tgt_in)  # (B, T, V)
        l_sum, n_sum = smoothed_loss(logits, b.tgt_out, eps=sess.cfg.label_smoothing,
                                     pad_id=c.pad_id)
        loss, nll = loss + l_sum.item(), nll + n_sum.item()
        tokens += int((b.tgt_out != c.pad_id).sum())
    return loss, nll, max(tokens, 1)


def valid_bleu(sess: Session, model: nn.Module, lines: int | None, rows_per_batch: int = 100
               ) -> float | None:
    """sacreBLEU of greedy translations of the first `lines` validation sentences (as `nmt
    translate` writes them: detokenized; against lowercased references if the data is)."""
    import sacrebleu

    from nmt.search import greedy, output_limit

    split, c, vocab = sess.valid, sess.cfg.model, sess.data.vocab
    n = len(split) if lines is None else min(lines, len(split))
    if n == 0:
        return None
    src_len = split.src.lengths[:n]
    order = np.argsort(src_len, kind="stable")
    hyps: list[str] = [""] * n
    for start in range(0, n, rows_per_batch):
        rows = order[start:start + rows_per_batch]
        src = batching.collate(split.src, split.tgt, rows, pad_id=c.pad_id, bos_id=c.bos_id,
                               eos_id=c.eos_id).src[:, :c.max_positions].to(sess.world.device)
        limit = output_limit(src, c.pad_id).clamp(max=c.max_positions - 1)
        with sess.autocast():
            out = greedy(model, src, limit)
        for row, ids in zip(rows.tolist(), out, strict=True):
            hyps[row] = vocab.decode(ids)
    style, lang = sess.data.text_style, sess.data.tgt_lang
    hyps = [style.restore(h, lang) for h in hyps]
    refs = validation_references(sess, n)
    if style.lowercase:
        refs = [r.lower() for r in refs]
    # force: pre-tokenized data (e.g. Moses-tokenized text prepared as is) would make sacreBLEU
    # warn at every validation; the score is a training signal, compared only with itself
    return sacrebleu.corpus_bleu(hyps, [refs], force=True).score


def validation_references(sess: Session, n: int) -> list[str]:
    """The raw references when prepared data kept them, else the detokenized target ids."""
    raw = sess.data.raw_path("valid", sess.data.tgt_lang)
    if raw.is_file():
        lines = files.read_text(raw).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) == len(sess.valid):
            return lines[:n]
        log.warning("%s has %d lines for %d validation pairs; scoring against the token ids",
                    raw, len(lines), len(sess.valid))
    return [sess.data.vocab.decode(sess.valid.tgt[i].tolist()) for i in range(n)]


def score_validation(state: TrainState, result: dict[str, Any], metric: str = "bleu") -> None:
    """Mark `result` best or not and update the best score and the count of validations since
    it. `metric` bleu: higher BLEU (-loss when BLEU is off); loss: lower validation loss."""
    use_bleu = metric == "bleu" and result["bleu"] is not None
    score = result["bleu"] if use_bleu else -result["loss"]
    result["best"] = state.best_score is None or score > state.best_score
    if result["best"]:
        state.best_score, state.best_step, state.stale = score, state.step, 0
    else:
        state.stale += 1
