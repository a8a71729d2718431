"""Input lines as source ids, and their batches under a token budget."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from nmt.search import Hypothesis, SearchConfig
from nmt.translate.config import TranslateStats
from nmt.vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class Line:
    """One input line on its way through the model."""

    number: int  # 1-based input line number
    ids: list[int]  # source ids with EOS, or [] for a line that needs no model
    hyps: list[Hypothesis] = field(default_factory=list)  # best first
    aligned: list[Aligned] = field(default_factory=list)  # per hypothesis, with --alignments


@dataclass
class Aligned:
    """One hypothesis's alignment: word pairs, and the subword attention it came from."""

    pairs: list[tuple[int, int]]  # (source word, target word), 0-based
    source_tokens: list[str]  # S source pieces, EOS last
    target_tokens: list[str]  # T output pieces
    weights: torch.Tensor  # (T, S) head-averaged cross-attention of the alignment layer


def encode_chunk(chunk: list[tuple[int, str]], vocab: Vocabulary, max_source: int, name: str,
                 stats: TranslateStats) -> list[Line]:
    """Source ids with EOS per line; empty lines get none; over-long lines are truncated."""
    lines = [Line(number=n, ids=[]) for n, _ in chunk]
    todo = [(line, text) for line, (_, text) in zip(lines, chunk, strict=True) if text.strip()]
    encoded = vocab.encode_batch([text for _, text in todo]) if todo else []
    for (line, _), ids in zip(todo, encoded, strict=True):
        if not ids:
            continue
        if len(ids) > max_source - 1:
            stats.truncated += 1
            log.warning("%s:%d: %d source tokens, truncated to the model's %d", name,
                        line.number, len(ids), max_source - 1)
            ids = ids[:max_source - 1]
        line.ids = ids + [vocab.eos_id]
    return lines


def make_batches(lines: list[Line], batch_tokens: int, copies: int = 1) -> list[list[Line]]:
    """Lines with a source, longest first, in batches of at most `batch_tokens` padded source
    tokens counting each line `copies` times (its beams: that many decoder rows); a line over
    the budget gets a batch of its own."""
    todo = sorted((line for line in lines if line.ids), key=lambda line: -len(line.ids))
    batches: list[list[Line]] = []
    for line in todo:
        if batches and len(batches[-1][0].ids) * (len(batches[-1]) + 1) * copies <= batch_tokens:
            batches[-1].append(line)
        else:
            batches.append([line])
    return batches


def decoder_rows(config: SearchConfig) -> int:
    """Decoder rows per sentence: one per beam, or per sample."""
    return config.nbest if config.sampling else config.beam
