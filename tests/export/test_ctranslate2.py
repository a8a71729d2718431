"""`nmt export --to ctranslate2`: the CTranslate2 model computes our model's function."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import toy_pairs

from nmt import export
from nmt.checkpoint import load_checkpoint

from .helpers import (
    OPTIONS,
    random_batch,
    random_checkpoint,
)


@pytest.mark.parametrize("options", [*OPTIONS.values(), {"norm_first": True}],
                         ids=[*OPTIONS.keys(), "pre-norm"])
def test_ctranslate2_export_scores_like_our_model(ct2, tiny_config, tiny_vocab, tmp_path,
                                                  options):
    config = dataclasses.replace(tiny_config, **options)
    ckpt = random_checkpoint(tmp_path / "ckpt", config, tiny_vocab)
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    model = load_checkpoint(ckpt).build_model()
    src, tgt = random_batch(config)
    piece = tiny_vocab.sp.id_to_piece
    sources = [[piece(i) for i in row if i != 0] for row in src.tolist()]
    targets = [[piece(i) for i in row[1:]] for row in tgt.tolist()]  # CT2 adds BOS and EOS
    scored = ct2.Translator(str(out)).score_batch(sources, targets)
    y_in = torch.cat([tgt, torch.full((3, 1), 0)], 1)  # room for the EOS prediction
    y_out = torch.cat([tgt[:, 1:], torch.full((3, 1), config.eos_id)], 1)
    with torch.inference_mode():
        lp = model(src, y_in[:, :-1]).log_softmax(-1).gather(2, y_out[..., None]).squeeze(2)
    theirs = torch.tensor([r.log_probs for r in scored])
    torch.testing.assert_close(theirs, lp, rtol=0, atol=1e-4)


def test_ctranslate2_int8_export_runs_and_mostly_agrees(ct2, trained, tmp_path):
    _, ckpt = trained
    fp32 = export.run(ckpt, tmp_path / "fp32", to="ctranslate2")
    int8 = export.run(ckpt, tmp_path / "int8", to="ctranslate2", quantization="int8")
    assert (int8 / "model.bin").stat().st_size < 0.6 * (fp32 / "model.bin").stat().st_size
    lines = [s for s, _ in toy_pairs()[::5]]
    a = export.translate_ctranslate2(fp32, lines)
    b = export.translate_ctranslate2(int8, lines)
    # The toy model is barely trained (its fp32 output already has misspellings), so int8
    # rounding flips some near-tied choices: most lines agree and the rest stay close.
    import sacrebleu

    assert sum(x == y for x, y in zip(a, b, strict=True)) >= 0.6 * len(lines)
    assert sacrebleu.corpus_chrf(b, [a]).score >= 90
