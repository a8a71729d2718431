import math

import pytest
import torch

from nmt.config import base, big, preset
from nmt.model import Transformer, closed_form_parameters, count_parameters, sinusoidal_table


def test_positional_encoding_matches_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 8 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)


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


def test_fairseq_initialisation():
    """fairseq's transformer: q/k/v Xavier with gain 1/sqrt(2) and PyTorch's default biases,
    attention outputs Xavier with zero bias, feed-forward layers PyTorch's default init."""
    torch.manual_seed(0)
    config = preset("base", vocab_size=2000)
    m = Transformer(config)
    m.reset_parameters("fairseq")

    def bounded(t, bound):  # drawn uniformly within +-bound, so its extremes come near it
        return 0.9 * bound < t.abs().max().item() <= bound + 1e-6

    layer = m.decoder.layers[-1]
    for attn in (m.encoder.layers[0].self_attn, layer.self_attn, layer.cross_attn):
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
            assert bounded(proj.weight, math.sqrt(6 / (512 + 512)) / math.sqrt(2))
            assert bounded(proj.bias, 1 / math.sqrt(512))
        assert bounded(attn.out_proj.weight, math.sqrt(6 / (512 + 512)))
        assert torch.all(attn.out_proj.bias == 0)
    for ffn in (m.encoder.layers[0].ffn, layer.ffn):
        for fc, fan_in in ((ffn.fc1, 512), (ffn.fc2, 2048)):
            assert bounded(fc.weight, fan_in ** -0.5) and bounded(fc.bias, fan_in ** -0.5)
    emb = m.encoder.embed.tokens.weight
    assert torch.all(emb[config.pad_id] == 0) and m.output.weight is emb
    assert emb[1:].std().item() == pytest.approx(512 ** -0.5, rel=0.05)
    norm = layer.ffn_res.norm
    assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    with pytest.raises(ValueError, match="unknown init style"):
        m.reset_parameters("glorot")


def _batch(config, b=3, s=7, t=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, config.vocab_size, (b, s), generator=g)
    tgt = torch.randint(4, config.vocab_size, (b, t), generator=g)
    tgt[:, 0] = config.bos_id
    return src, tgt


def test_shapes(tiny_model, tiny_config):
    src, tgt = _batch(tiny_config)
    memory, mask = tiny_model.encode(src)
    assert memory.shape == (3, 7, tiny_config.d_model) and mask.shape == (3, 1, 1, 7)
    assert tiny_model(src, tgt).shape == (3, 6, tiny_config.vocab_size)


@pytest.mark.parametrize("norm_first", [False, True])
def test_future_target_tokens_do_not_change_earlier_outputs(tiny_config, norm_first):
    import dataclasses
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config, norm_first=norm_first)).eval()
    src, tgt = _batch(tiny_config)
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 5) % tiny_config.vocab_size
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_padding_source_positions_changes_nothing(tiny_model, tiny_config):
    src, tgt = _batch(tiny_config, b=1, s=5)
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
    src, tgt = _batch(tiny_config, b=4, s=9, t=5)
    src[0, 6:] = tiny_config.pad_id  # row 0 is shorter than the others
    with torch.no_grad():
        alone = tiny_model(src[:1, :6], tgt[:1])
        together = tiny_model(src, tgt)[:1]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stacked", [True, False], ids=["one-qkv-gemm", "three-projections"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_equals_full_forward(tiny_config, norm_first, stacked):
    import dataclasses
    torch.manual_seed(3)
    model = Transformer(dataclasses.replace(tiny_config, norm_first=norm_first)).eval()
    src, tgt = _batch(tiny_config, b=3, s=8, t=10)
    src[1, 5:] = tiny_config.pad_id
    with torch.no_grad():
        full = model(src, tgt).log_softmax(-1)
        memory, mask = model.encode(src)
        state = model.start_state(memory, mask)
        assert all(w is not None for w in state.self_qkv)  # plain Linear layers: stacked
        if not stacked:  # what int8 models (quantized Linear layers) decode with
            state.self_qkv = [None] * len(state.self_qkv)
        steps = [model.decode_step(tgt[:, t], state) for t in range(tgt.size(1))]
    torch.testing.assert_close(torch.stack(steps, 1).log_softmax(-1), full, atol=1e-5, rtol=0)
    assert state.length == 10 and state.self_kv[0].k.shape[2] == 10


def test_state_select_reorders_rows(tiny_model, tiny_config):
    src, tgt = _batch(tiny_config, b=3, s=6, t=4)
    with torch.no_grad():
        memory, mask = tiny_model.encode(src)
        state = tiny_model.start_state(memory, mask)
        for t in range(3):
            tiny_model.decode_step(tgt[:, t], state)
        order = torch.tensor([2, 0, 0])
        picked = state.select(order)
        got = tiny_model.decode_step(tgt[order, 3], picked)
        want = tiny_model(src[order], tgt[order])[:, 3]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_grouped_rows_share_encoder_states_exactly(tiny_model, tiny_config):
    """Beam search's layout: G decoder rows per source row, the encoder keys/values stored
    once per source row, equals repeating the source G times."""
    src, _ = _batch(tiny_config, b=3, s=6, t=4)
    group = 4
    g = torch.Generator().manual_seed(3)
    tgt = torch.randint(4, tiny_config.vocab_size, (3 * group, 5), generator=g)  # (B*G, T)
    rows = torch.arange(3).repeat_interleave(group)
    with torch.no_grad():
        grouped = tiny_model.start_state(*tiny_model.encode(src), group=group)
        repeated = tiny_model.start_state(*tiny_model.encode(src[rows]))
        for t in range(3):
            a = tiny_model.decode_step(tgt[:, t], grouped)
            b = tiny_model.decode_step(tgt[:, t], repeated)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        # drop source row 1 and reorder the beams of the others, as beam search does
        keep = torch.tensor([0, 2])
        order = torch.tensor([1, 1, 0, 3, 8, 9, 11, 11])
        picked = grouped.select(order, keep)
        a = tiny_model.decode_step(tgt[order, 3], picked)
        b = tiny_model.decode_step(tgt[order, 3], repeated.select(order))
        want = tiny_model(src[rows][order], tgt[order, :4])[:, 3]  # full recomputation
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, want, atol=1e-5, rtol=0)
    assert picked.memory_kv[0].k.size(0) == 2 and picked.self_kv[0].k.size(0) == 8


def test_dropout_only_in_training(tiny_config):
    import dataclasses
    model = Transformer(dataclasses.replace(tiny_config, dropout=0.5))
    src, tgt = _batch(tiny_config)
    model.train()
    assert not torch.equal(model(src, tgt), model(src, tgt))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(src, tgt), model(src, tgt))


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p):
    from nmt.model import Dropout

    torch.manual_seed(0)
    drop = Dropout(p).train()
    x = torch.full((400, 500), 2.0, requires_grad=True)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005  # 200,000 draws: the standard error is ~0.001
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 2.0 / (1 - p)))
    y.sum().backward()  # the gradient passes exactly where the value did, scaled alike
    torch.testing.assert_close(x.grad, (y != 0).float() / (1 - p))
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)


def test_gradients_reach_every_parameter(tiny_model, tiny_config):
    src, tgt = _batch(tiny_config)
    tiny_model.train()
    tiny_model(src, tgt).sum().backward()
    for name, p in tiny_model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
