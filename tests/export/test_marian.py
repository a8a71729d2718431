"""`nmt export --to hf`: the MarianMTModel export computes our model's function."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import toy_pairs

from nmt import export
from nmt.checkpoint import load_checkpoint
from nmt.errors import CheckpointError, ConfigError
from nmt.export import marian
from nmt.vocab import Vocabulary

from .helpers import (
    OPTIONS,
    nmt_beam,
    random_batch,
    random_checkpoint,
    toy_sentences,
    trained_vocab,
)


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_hf_export_computes_the_same_logits(hf, tiny_config, tiny_vocab, tmp_path, options):
    config = dataclasses.replace(tiny_config, **options)
    ckpt = random_checkpoint(tmp_path / "ckpt", config, tiny_vocab)
    out = export.run(ckpt, tmp_path / "hf", to="hf")
    model = hf.MarianMTModel.from_pretrained(out).eval()
    mc = model.config
    assert (mc.d_model, mc.encoder_layers, mc.decoder_layers, mc.encoder_attention_heads,
            mc.encoder_ffn_dim, mc.activation_function, mc.scale_embedding) == (
        config.d_model, config.n_encoder_layers, config.n_decoder_layers, config.n_heads,
        config.d_ff, "relu", True)
    assert (mc.pad_token_id, mc.eos_token_id, mc.decoder_start_token_id) == (0, 3, 2)
    ours = load_checkpoint(ckpt).build_model()
    src, tgt = random_batch(config)
    with torch.inference_mode():
        theirs = model(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt).logits
        torch.testing.assert_close(theirs, ours(src, tgt), rtol=0, atol=1e-4)
    tied = model.lm_head.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert tied == config.tie_output


def test_hf_export_refuses_pre_norm_by_name(hf, tiny_config, tiny_vocab, tmp_path):
    ckpt = random_checkpoint(tmp_path / "ckpt", dataclasses.replace(tiny_config, norm_first=True),
                             tiny_vocab)
    with pytest.raises(ConfigError, match="norm_first"):
        export.run(ckpt, tmp_path / "hf", to="hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing written


def test_hf_export_that_would_compute_something_else_is_not_written(hf, tiny_config, tiny_vocab,
                                                                    tmp_path, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "ckpt", tiny_config, tiny_vocab)
    real = marian.marian_name
    swap = {"self_attn_layer_norm": "final_layer_norm", "final_layer_norm": "self_attn_layer_norm"}

    def wrong(name: str) -> str:  # a mapping bug: two LayerNorms of every layer swapped
        theirs = real(name)
        for a, b in swap.items():
            if f".{a}." in theirs:
                return theirs.replace(f".{a}.", f".{b}.")
        return theirs

    monkeypatch.setattr(marian, "marian_name", wrong)
    with pytest.raises(CheckpointError, match="disagrees with the checkpoint"):
        export.run(ckpt, tmp_path / "hf", to="hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_marian_tokenizer_encodes_and_decodes_like_our_vocabulary(hf, trained, tmp_path):
    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "hf", to="hf")
    vocab = Vocabulary.from_file(out / "spm.model")
    tok = hf.AutoTokenizer.from_pretrained(out)
    assert isinstance(tok, hf.MarianTokenizer) and len(tok) == len(vocab)
    texts = [s for pair in toy_pairs()[::7] for s in pair]
    texts += ["Über 3 Fußgänger – naïve café!", "漢字 and emoji 🙂 (byte fallback)", "  a   b  "]
    for text in texts:
        ids = vocab.encode(text) + [vocab.eos_id]
        assert tok(text)["input_ids"] == ids, text
        assert tok.decode(ids, skip_special_tokens=True) == vocab.decode(ids), text


def test_hf_generate_matches_nmt_beam_search(hf, trained, tmp_path):
    model, ckpt = trained
    out = export.run(ckpt, tmp_path / "hf", to="hf")
    hf_model = hf.MarianMTModel.from_pretrained(out).eval()
    tok = hf.MarianTokenizer.from_pretrained(out)
    lines = toy_sentences()
    batch = tok(lines, return_tensors="pt", padding=True)
    greedy_ours = nmt_beam(model, trained_vocab(ckpt), lines, 1, 0.0)
    differs = 0
    for beam, alpha in ((1, 0.0), (4, 0.6), (4, 1.0)):
        ours = nmt_beam(model, trained_vocab(ckpt), lines, beam, alpha)
        with torch.inference_mode():  # max_length: nmt's limit for the longest source
            ids = hf_model.generate(**batch, num_beams=beam, length_penalty=alpha,
                                    max_length=batch["input_ids"].size(1) + 51)
        assert tok.batch_decode(ids, skip_special_tokens=True) == ours, (beam, alpha)
        if beam > 1:  # HF's early_stopping="never" is nmt's --stopping exact
            exact = nmt_beam(model, trained_vocab(ckpt), lines, beam, alpha, "exact")
            with torch.inference_mode():
                ids = hf_model.generate(**batch, num_beams=beam, length_penalty=alpha,
                                        early_stopping="never",
                                        max_length=batch["input_ids"].size(1) + 51)
            assert tok.batch_decode(ids, skip_special_tokens=True) == exact, (beam, alpha)
        differs += sum(a != b for a, b in zip(ours, greedy_ours, strict=True))
    assert differs > 0  # the beam searches above were not just greedy decoding
