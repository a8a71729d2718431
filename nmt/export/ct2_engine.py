"""The CTranslate2 runtime: translate with a `nmt export --to ctranslate2` directory.

`CTranslate2Engine` loads the model once (a `ctranslate2.Translator`) and translates any number
of batches of lines with it: `nmt translate --engine ctranslate2` builds one per run and feeds it
every `--buffer-lines` chunk. `translate_ctranslate2` is the one-call form.

Decoding follows `nmt translate --lenpen-style fairseq`: the source is its pieces + EOS
(truncated to the model's positions), at most floor(max_len_a * source tokens) + max_len_b
output tokens, finished hypotheses scored log P / |Y|^alpha with EOS counted in |Y| (CTranslate2
counts the tokens it returns, so the end token is requested and stripped here), PAD and BOS never
generated, blank lines give empty translations. CTranslate2 stops a sentence once
`beam * patience` hypotheses are finished: at patience 1 that is fairseq's rule and
`nmt translate --stopping finished` (the default); a larger `patience` approaches
`--stopping exact`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from nmt.checkpoint import vocabulary_mismatch
from nmt.config import ModelConfig
from nmt.errors import CheckpointError
from nmt.export.layout import EXPORT_META, SPM, read_export_meta, require_package
from nmt.text import styled_vocabulary
from nmt.vocab import Vocabulary

log = logging.getLogger(__name__)


class CTranslate2Engine:
    """A loaded CTranslate2 export: its model, vocabulary and config, ready to translate."""

    def __init__(self, model_dir: str | os.PathLike, *, device: str = "cpu",
                 compute_type: str = "default", threads: int = 0) -> None:
        """Load `model_dir` once. `threads` 0 lets CTranslate2 choose; `compute_type`
        "default" keeps the export's weights."""
        require_package("ctranslate2", "ctranslate2")
        import ctranslate2

        root = Path(model_dir)
        if not (root / "model.bin").is_file() or not (root / SPM).is_file():
            raise CheckpointError(f"not a CTranslate2 export (needs model.bin and {SPM}); "
                                  "create one with `nmt export CHECKPOINT --to ctranslate2 "
                                  "OUT_DIR`", where=str(root))
        meta = read_export_meta(root)
        self.config = ModelConfig.from_dict(meta["config"])
        vocab = Vocabulary.from_file(root / SPM)
        # a model trained on lowercased / tokenized text reads and writes it so, as in torch
        self.vocab = styled_vocabulary(vocab, (meta.get("checkpoint_meta") or {}).get("data")
                                       or {}, where=str(root / EXPORT_META))
        problem = vocabulary_mismatch(self.config, vocab)
        if problem:
            raise CheckpointError(problem, where=str(root / EXPORT_META))
        try:
            self.translator = ctranslate2.Translator(str(root), device=device,
                                                     compute_type=compute_type,
                                                     intra_threads=threads)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"CTranslate2 cannot load the model ({exc})",
                                  where=str(root)) from None

    def translate(self, lines: Sequence[str], *, beam: int = 4, alpha: float = 0.6,
                  max_len_a: float = 1.0, max_len_b: int = 50, batch_size: int = 64,
                  patience: float = 1.0) -> list[str]:
        """Translate raw `lines`; one translation per line, in order."""
        cfg, vocab = self.config, self.vocab
        sources = ctranslate2_sources(vocab, lines, cfg.max_positions)
        # One length limit per translate_batch call: group the lines by theirs.
        groups: dict[int, list[int]] = {}
        for i, src in enumerate(sources):
            if src:
                limit = min(max(int(len(src) * max_len_a) + max_len_b, 1), cfg.max_positions)
                groups.setdefault(limit, []).append(i)
        piece = vocab.sp.id_to_piece
        results = [""] * len(sources)
        for limit, rows in sorted(groups.items()):
            out = self.translator.translate_batch(
                [sources[i] for i in rows], max_batch_size=batch_size, beam_size=beam,
                patience=patience, length_penalty=alpha, max_decoding_length=limit,
                min_decoding_length=0, max_input_length=0, return_end_token=True,
                suppress_sequences=[[piece(cfg.pad_id)], [piece(cfg.bos_id)]])
            for i, res in zip(rows, out, strict=True):
                results[i] = vocab.decode(vocab.sp.piece_to_id(p) for p in res.hypotheses[0])
        return results


def translate_ctranslate2(
    model_dir: str | os.PathLike,
    lines: Sequence[str],
    *,
    beam: int = 4,
    alpha: float = 0.6,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    batch_size: int = 64,
    patience: float = 1.0,
    device: str = "cpu",
    compute_type: str = "default",
    threads: int = 0,
) -> list[str]:
    """Load the export `model_dir` and translate raw `lines` with it (see the module doc)."""
    engine = CTranslate2Engine(model_dir, device=device, compute_type=compute_type,
                               threads=threads)
    return engine.translate(lines, beam=beam, alpha=alpha, max_len_a=max_len_a,
                            max_len_b=max_len_b, batch_size=batch_size, patience=patience)


def ctranslate2_sources(vocab: Vocabulary, lines: Sequence[str],
                        max_positions: int) -> list[list[str]]:
    """Source pieces + EOS per line ([] for a blank line), cut to the model's positions."""
    out: list[list[str]] = []
    eos = vocab.sp.id_to_piece(vocab.eos_id)
    for number, line in enumerate(lines, 1):
        ids = vocab.encode(line) if line.strip() else []
        if len(ids) > max_positions - 1:
            log.warning("line %d: %d source tokens, truncated to the model's %d", number,
                        len(ids), max_positions - 1)
            ids = ids[:max_positions - 1]
        out.append([vocab.sp.id_to_piece(i) for i in ids] + [eos] if ids else [])
    return out
