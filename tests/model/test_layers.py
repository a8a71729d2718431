"""nmt.model.layers: positions and dropout."""

import math

import pytest
import torch

from nmt.model import Dropout, sinusoidal_table


def test_positional_encoding_matches_formula():
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 8 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_zeroes_a_fraction_p_and_scales_the_rest(p):
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
