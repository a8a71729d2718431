"""The search of one batch of lines: its hypotheses, their alignments, and a fallback."""

from __future__ import annotations

import logging

import torch

from nmt.attention import hard_alignment, outputs_of, replay, word_alignment
from nmt.search import Ensemble, output_limit, search
from nmt.translate.batching import Aligned, Line
from nmt.translate.config import TranslateConfig, TranslateStats
from nmt.vocab import Vocabulary

log = logging.getLogger(__name__)


class Translator:
    """Searches batches of encoded lines with one model or an ensemble."""

    def __init__(self, ensemble: Ensemble, config: TranslateConfig, device: torch.device,
                 name: str, vocab: Vocabulary | None = None) -> None:
        self.ensemble = ensemble
        self.vocab = vocab  # needed for alignments (token pieces)
        self.config = config
        self.device = device
        self.name = name
        self.pad_id = ensemble.config.pad_id
        self.max_positions = ensemble.max_positions
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def search_batch(self, batch: list[Line]) -> None:
        longest = max(len(line.ids) for line in batch)
        src = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)  # (B, S)
        for row, line in enumerate(batch):
            src[row, :len(line.ids)] = torch.tensor(line.ids)
        src = src.to(self.device)
        limit = output_limit(src, self.pad_id, self.config.max_len_a, self.config.max_len_b)
        limit = limit.clamp(1, self.max_positions)  # (B,)
        results = search(self.ensemble, src, limit, self.config.search, self.generator)
        for line, hyps in zip(batch, results, strict=True):
            line.hyps = hyps
        if self.config.alignments:
            self.align(batch, src)

    def align(self, batch: list[Line], src: torch.Tensor) -> None:
        """Every hypothesis's alignment from the cross-attention its models paid while
        decoding it (replayed; head average of one layer, averaged over an ensemble)."""
        eos = self.ensemble.config.eos_id
        rows = [row for row, line in enumerate(batch) for _ in line.hyps]
        outputs = [outputs_of(h, eos) for line in batch for h in line.hyps]
        if not rows:
            return
        row_src = src[torch.tensor(rows, device=src.device)]  # (N, S)
        layer = self.config.alignment_layer
        weights = None
        for model in self.ensemble.models:
            cross = replay(model, row_src, outputs, kinds=("cross",))["cross"]
            mine = [c[layer].mean(0) for c in cross]  # (T, S) each
            weights = mine if weights is None else [w + m for w, m in zip(weights, mine,
                                                                          strict=True)]
        weights = [w / len(self.ensemble.models) for w in weights]
        piece = self.vocab.sp.id_to_piece
        flat = iter(zip(outputs, weights, strict=True))
        for line in batch:
            source = [piece(i) for i in line.ids]
            line.aligned = []
            for hyp in line.hyps:
                out, w = next(flat)
                target = [piece(i) for i in out]
                pairs = hard_alignment(w, target_eos=len(out) > len(hyp.tokens))
                line.aligned.append(Aligned(word_alignment(pairs, source[:-1], target),
                                            source, target, w))

    def translate(self, batch: list[Line], stats: TranslateStats) -> None:
        """Search `batch`; if that fails, each line alone; a line that still fails stays empty."""
        try:
            self.search_batch(batch)
            return
        except RuntimeError as exc:  # e.g. out of memory: no reason to lose the other lines
            if len(batch) == 1:
                stats.failed += 1
                log.warning("%s:%d: translation failed, writing an empty line (%s)", self.name,
                            batch[0].number, str(exc).splitlines()[0] if str(exc) else exc)
                return
            log.warning("%s: a batch of %d lines failed (%s); retrying line by line", self.name,
                        len(batch), type(exc).__name__)
        for line in batch:
            self.translate([line], stats)
