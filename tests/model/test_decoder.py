"""nmt.model.decoder: incremental decoding through `DecoderState` equals the full forward."""

import dataclasses

import pytest
import torch

from nmt.model import Transformer

from .helpers import make_batch


@pytest.mark.parametrize("stacked", [True, False], ids=["one-qkv-gemm", "three-projections"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_equals_full_forward(tiny_config, norm_first, stacked):
    torch.manual_seed(3)
    model = Transformer(dataclasses.replace(tiny_config, norm_first=norm_first)).eval()
    src, tgt = make_batch(tiny_config, b=3, s=8, t=10)
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
    src, tgt = make_batch(tiny_config, b=3, s=6, t=4)
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
    src, _ = make_batch(tiny_config, b=3, s=6, t=4)
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
