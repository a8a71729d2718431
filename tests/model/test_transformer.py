"""nmt.model.transformer: sizes, tying, initialisation, masking and gradients."""

import dataclasses
import math

import pytest
import torch

from nmt.config import base, big, preset
from nmt.model import Transformer, closed_form_parameters, count_parameters

from .helpers import make_batch


@pytest.mark.parametrize("make, expected", [(base, 63_082_496), (big, 214_245_376)])
def test_paper_parameter_counts(make, expected):
    config = make()  # vocab_size defaults to the paper's 37,000 shared pieces
    assert config.vocab_size == 37000
    assert closed_form_parameters(config) == expected
    assert count_parameters(Transformer(config)) == expected


@pytest.mark.parametrize("overrides", [
    {"norm_first": True}, {"share_embeddings": False}, {"tie_output": False},
    {"share_embeddings": False, "tie_output": False},
])
def test_parameter_count_of_options(overrides):
    config = preset("tiny", vocab_size=100, **overrides)
    assert count_parameters(Transformer(config)) == closed_form_parameters(config)


def test_three_way_tying(tiny_model):
    m = tiny_model
    assert m.output.weight is m.encoder.embed.tokens.weight is m.decoder.embed.tokens.weight
    untied = Transformer(preset("tiny", vocab_size=100, share_embeddings=False, tie_output=False))
    assert untied.output.weight is not untied.decoder.embed.tokens.weight
    assert untied.encoder.embed.tokens.weight is not untied.decoder.embed.tokens.weight


def test_initialisation(tiny_config):
    torch.manual_seed(0)
    config = preset("base", vocab_size=2000)
    m = Transformer(config)
    emb = m.encoder.embed.tokens.weight
    assert torch.all(emb[config.pad_id] == 0)
    assert emb[1:].std().item() == pytest.approx(512 ** -0.5, rel=0.05)
    w = m.encoder.layers[0].ffn.fc1.weight  # xavier uniform bound sqrt(6 / (fan_in + fan_out))
    assert w.abs().max().item() <= math.sqrt(6 / (512 + 2048)) + 1e-6
    assert w.abs().max().item() > 0.9 * math.sqrt(6 / (512 + 2048))


def _bounded(t, bound):
    """Drawn uniformly within +-bound, so its extremes come near it."""
    return 0.9 * bound < t.abs().max().item() <= bound + 1e-6


def _assert_fairseq_attention(m):
    """fairseq's attention init (d 512), in both of its versions: q/k/v Xavier with gain
    1/sqrt(2) and PyTorch's default biases, outputs Xavier with zero bias."""
    layer = m.decoder.layers[-1]
    for attn in (m.encoder.layers[0].self_attn, layer.self_attn, layer.cross_attn):
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            assert _bounded(proj.weight, math.sqrt(6 / (512 + 512)) / math.sqrt(2))
            assert _bounded(proj.bias, 1 / math.sqrt(512))
        assert _bounded(attn.out_proj.weight, math.sqrt(6 / (512 + 512)))
        assert torch.all(attn.out_proj.bias == 0)


def test_fairseq_initialisation():
    """fairseq's transformer: q/k/v Xavier with gain 1/sqrt(2) and PyTorch's default biases,
    attention outputs Xavier with zero bias, feed-forward layers PyTorch's default init."""
    torch.manual_seed(0)
    config = preset("base", vocab_size=2000)
    m = Transformer(config)
    m.reset_parameters("fairseq")
    layer = m.decoder.layers[-1]
    _assert_fairseq_attention(m)
    for ffn in (m.encoder.layers[0].ffn, layer.ffn):
        for fc, fan_in in ((ffn.fc1, 512), (ffn.fc2, 2048)):
            assert _bounded(fc.weight, fan_in ** -0.5) and _bounded(fc.bias, fan_in ** -0.5)
    emb = m.encoder.embed.tokens.weight
    assert torch.all(emb[config.pad_id] == 0) and m.output.weight is emb
    assert emb[1:].std().item() == pytest.approx(512 ** -0.5, rel=0.05)
    norm = layer.ffn_res.norm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    with pytest.raises(ValueError, match="unknown init style"):
        m.reset_parameters("glorot")


def test_fairseq_0_9_initialisation_differs_only_in_the_feed_forward_layers():
    """Before v0.10 fairseq drew its feed-forward layers Xavier-uniform with zero biases (its own
    `Linear`); q/k/v as since (gain 1/sqrt(2), PyTorch's default biases)."""
    torch.manual_seed(0)
    m = Transformer(preset("base", vocab_size=2000))
    m.reset_parameters("fairseq-0.9")
    layer = m.decoder.layers[-1]
    _assert_fairseq_attention(m)
    for ffn in (m.encoder.layers[0].ffn, layer.ffn):
        for fc in (ffn.fc1, ffn.fc2):  # Xavier's bound, not 1/sqrt(fan_in); zero biases
            assert _bounded(fc.weight, math.sqrt(6 / (512 + 2048)))
            assert torch.all(fc.bias == 0)


def test_shapes(tiny_model, tiny_config):
    src, tgt = make_batch(tiny_config)
    memory, mask = tiny_model.encode(src)
    assert memory.shape == (3, 7, tiny_config.d_model) and mask.shape == (3, 1, 1, 7)
    assert tiny_model(src, tgt).shape == (3, 6, tiny_config.vocab_size)


@pytest.mark.parametrize("norm_first", [False, True])
def test_future_target_tokens_do_not_change_earlier_outputs(tiny_config, norm_first):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config, norm_first=norm_first)).eval()
    src, tgt = make_batch(tiny_config)
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 5) % tiny_config.vocab_size
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_source_positions_changes_nothing(tiny_model, tiny_config):
    src, tgt = make_batch(tiny_config, b=1, s=5)
    pad = tiny_config.pad_id
    padded = torch.cat([src, torch.full((1, 4), pad)], dim=1)
    other_pad = padded.clone()
    with torch.no_grad():
        ref = tiny_model(src, tgt)
        torch.testing.assert_close(tiny_model(padded, tgt), ref, atol=1e-5, rtol=0)
        # whatever sits in a masked position is ignored too
        other_pad[:, 5:] = pad
        torch.testing.assert_close(tiny_model(other_pad, tgt), ref, atol=1e-5, rtol=0)


def test_batch_composition_does_not_change_a_row(tiny_model, tiny_config):
    src, tgt = make_batch(tiny_config, b=4, s=9, t=5)
    src[0, 6:] = tiny_config.pad_id  # row 0 is shorter than the others
    with torch.no_grad():
        alone = tiny_model(src[:1, :6], tgt[:1])
        together = tiny_model(src, tgt)[:1]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_dropout_only_in_training(tiny_config):
    model = Transformer(dataclasses.replace(tiny_config, dropout=0.5))
    src, tgt = make_batch(tiny_config)
    model.train()
    assert not torch.equal(model(src, tgt), model(src, tgt))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(src, tgt), model(src, tgt))


def test_gradients_reach_every_parameter(tiny_model, tiny_config):
    src, tgt = make_batch(tiny_config)
    tiny_model.train()
    tiny_model(src, tgt).sum().backward()
    for name, p in tiny_model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
