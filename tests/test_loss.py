import pytest
import torch
import torch.nn.functional as F

from nmt.loss import smoothed_loss


def _batch(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(3, 5, 11, generator=g)).to(dtype).requires_grad_()
    target = torch.randint(1, 11, (3, 5), generator=g)
    target[0, 3:] = 0
    target[2, 1:] = 0
    return logits, target


def _reference(logits, target, eps, pad_id):
    """The loss composed from autograd ops, as written in the paper's terms."""
    lprobs = F.log_softmax(logits.float(), dim=-1)
    real = target != pad_id
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    loss = (1.0 - eps) * nll - eps * lprobs.mean(-1)
    return loss.masked_fill(~real, 0.0).sum(), nll.masked_fill(~real, 0.0).sum()


def test_smoothed_loss_matches_cross_entropy_and_ignores_padding():
    logits, target = _batch()
    loss, nll = smoothed_loss(logits, target, eps=0.1, pad_id=0)
    flat_logits, flat_target = logits.view(-1, 11), target.view(-1)
    ref = F.cross_entropy(flat_logits, flat_target, ignore_index=0, label_smoothing=0.1,
                          reduction="sum")
    ref_nll = F.cross_entropy(flat_logits, flat_target, ignore_index=0, reduction="sum")
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(nll, ref_nll)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_gradient_equals_autograd_of_the_composed_loss(eps):
    logits, target = _batch(1)
    scale = torch.tensor(0.37)  # the step divides the loss by its token count
    (smoothed_loss(logits, target, eps=eps, pad_id=0)[0] * scale).backward()
    ours = logits.grad.clone()
    logits.grad = None
    (_reference(logits, target, eps, 0)[0] * scale).backward()
    torch.testing.assert_close(ours, logits.grad, rtol=1e-5, atol=1e-7)
    assert ours[2, 1:].abs().max() == 0  # padding positions get no gradient
    assert ours[0, :3].abs().max() > 0


def test_real_positions_only_give_the_same_loss_and_gradient():
    """What training does: pass only the non-padding rows."""
    logits, target = _batch(2)
    loss, nll = smoothed_loss(logits, target, eps=0.1, pad_id=0)
    loss.backward()
    full_grad = logits.grad.clone()
    logits.grad = None
    real = target != 0
    loss_r, nll_r = smoothed_loss(logits[real], target[real], eps=0.1, pad_id=0)
    loss_r.backward()
    torch.testing.assert_close((loss_r, nll_r), (loss, nll))
    torch.testing.assert_close(logits.grad, full_grad)


def test_bf16_logits_get_bf16_gradients_computed_in_float32():
    logits, target = _batch(3, torch.bfloat16)
    loss, _ = smoothed_loss(logits, target, eps=0.1, pad_id=0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16
    ref_logits = logits.detach().float().requires_grad_()
    _reference(ref_logits, target, 0.1, 0)[0].backward()
    torch.testing.assert_close(logits.grad.float(), ref_logits.grad, rtol=1e-2, atol=1e-3)


def test_non_finite_logits_at_padding_do_not_reach_the_loss():
    """Validation passes padded (B, T, V) logits; an fp16 overflow there must not count."""
    logits, target = _batch(4)
    with torch.no_grad():
        logits[2, 3] = float("inf")  # a padding position (target[2, 1:] is padding)
    loss, nll = smoothed_loss(logits, target, eps=0.1, pad_id=0)
    assert torch.isfinite(loss) and torch.isfinite(nll)
    real = target != 0
    ref_loss, ref_nll = smoothed_loss(logits[real], target[real], eps=0.1, pad_id=0)
    torch.testing.assert_close((loss, nll), (ref_loss, ref_nll))
