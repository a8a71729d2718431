"""Stage 2 of `nmt prepare`: one joint SentencePiece BPE model (`SPM_FILE`), trained on a
bounded, seeded random sample of both sides of the cleaned training text."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmt import corpora
from nmt.prepare.clean import WRITE_BATCH
from nmt.prepare.config import given_vocabulary, workers_of
from nmt.vocab import SPM_FILE, train_sentencepiece

if TYPE_CHECKING:
    from nmt.prepare.config import PrepareConfig
    from nmt.prepare.staging import Workspace
    from nmt.progress import ProgressSink

log = logging.getLogger(__name__)


def spm_stage(ws: Workspace, c: PrepareConfig, source: corpora.Source, clean: dict[str, Any],
              vocab_size: int, progress: ProgressSink,
              ) -> tuple[dict[str, Path], dict[str, Any], int]:
    """The stage: (files written, result recorded, pairs sampled)."""
    if c.vocab_from is not None:
        return _given_stage(ws, c)
    n = clean["train"]["pairs"]
    paths = [ws.path(f"train.clean.{lang}") for lang in (source.src, source.tgt)]
    sampled = [0]

    def sentences() -> Iterator[str]:
        for line in sample_lines(paths, n, c.spm_sample, c.seed):
            sampled[0] += 1
            if sampled[0] % WRITE_BATCH == 0:
                progress.advance(WRITE_BATCH)
            yield line

    progress.start(f"SentencePiece {vocab_size:,} (sentences)", None)
    vocab = train_sentencepiece(sentences(), vocab_size=vocab_size, model_type="bpe",
                                byte_fallback=True, input_sentence_size=c.spm_sample,
                                num_threads=workers_of(c))
    progress.advance(sampled[0] % WRITE_BATCH)
    progress.stop()
    temp = ws.temp(SPM_FILE)
    vocab.save(temp)
    log.info("spm: %s pieces from %s sampled sentences", f"{len(vocab):,}", f"{sampled[0]:,}")
    result = {"sha256": vocab.sha256, "vocab_size": len(vocab), "requested_vocab_size": vocab_size,
              "sample_sentences": sampled[0]}
    return {SPM_FILE: temp}, result, sampled[0] // 2


def _given_stage(ws: Workspace, c: PrepareConfig
                 ) -> tuple[dict[str, Path], dict[str, Any], int]:
    """`--vocab-from`: the given model, unchanged, so that a model trained on it can be
    fine-tuned on this data."""
    vocab = given_vocabulary(c.vocab_from)
    temp = ws.temp(SPM_FILE)
    vocab.save(temp)
    log.info("spm: %s pieces from %s", f"{len(vocab):,}", c.vocab_from)
    result = {"sha256": vocab.sha256, "vocab_size": len(vocab), "requested_vocab_size": len(vocab),
              "sample_sentences": 0, "from": str(c.vocab_from)}
    return {SPM_FILE: temp}, result, 0


def sample_lines(paths: list[Path], n: int, budget: int, seed: int,
                 block: int = 1 << 16) -> Iterator[str]:
    """All lines of the `len(paths)` files of `n` lines each, or a uniform random sample of
    `budget` of them (without replacement; memory: one block's mask, whatever the corpus)."""
    total = n * len(paths)
    masks = _sample_masks(total, budget, np.random.default_rng(seed), block) \
        if total > budget else None
    mask = None
    g = 0  # line index over all files
    for path in paths:
        with open(path, encoding="utf-8", newline="\n") as f:
            for line in f:
                if masks is not None and g % block == 0:
                    mask = next(masks)
                if mask is None or mask[g % block]:
                    yield line.rstrip("\n")
                g += 1


def _sample_masks(total: int, budget: int, rng: np.random.Generator,
                  block: int) -> Iterator[np.ndarray]:
    """Boolean masks of consecutive blocks of `total` items, `budget` True in all: how many
    fall in each block is hypergeometric, which ones uniform within it."""
    population, needed = total, budget
    for start in range(0, total, block):
        size = min(block, total - start)
        if size == population:
            k = needed
        else:
            k = int(rng.hypergeometric(size, population - size, needed)) if needed else 0
        mask = np.zeros(size, dtype=bool)
        mask[rng.choice(size, size=k, replace=False)] = True
        population, needed = population - size, needed - k
        yield mask
