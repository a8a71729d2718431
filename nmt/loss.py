"""The training objective: label-smoothed cross-entropy (the paper's section 5.4, eps 0.1).

The smoothed target puts 1 - eps on the reference token and spreads eps uniformly over the
vocabulary (as `F.cross_entropy(label_smoothing=eps)`), so per token

    loss = (1 - eps) * -log p(y) + eps * mean_v(-log p(v))
    d loss / d logits = softmax(logits) - eps / V - (1 - eps) * onehot(y)

`smoothed_loss` computes the loss and the plain NLL (for perplexity) in one autograd node whose
backward is that closed form, written into the saved log-probabilities in place: one (N, V)
buffer reused for the gradient, where composing log_softmax, gather and mean under autograd
allocates several (N, V) gradients and sums them. The node can be differentiated once (no
`create_graph`, no second backward through the same graph).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class _SmoothedNLL(torch.autograd.Function):
    """(logits (N, V), target (N,), weight (N,) 1.0 real / 0.0 padding, eps) -> summed loss
    and NLL over the real rows."""

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, weight: Tensor, eps: float
                ) -> tuple[Tensor, Tensor]:
        lprobs = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        nll = -lprobs.gather(1, target.unsqueeze(1)).squeeze(1)  # (N,)
        uniform = -lprobs.mean(-1)  # (N,)
        pad = weight == 0  # masked, not multiplied: padding rows count 0 even if not finite
        loss = ((1.0 - eps) * nll + eps * uniform).masked_fill(pad, 0.0).sum()
        ctx.save_for_backward(lprobs, target, weight)
        ctx.eps, ctx.dtype = eps, logits.dtype
        nll_sum = nll.masked_fill(pad, 0.0).sum()
        ctx.mark_non_differentiable(nll_sum)
        return loss, nll_sum

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor
                 ) -> tuple[Tensor, None, None, None]:
        lprobs, target, weight = ctx.saved_tensors
        eps, vocab = ctx.eps, lprobs.size(1)
        grad = lprobs.exp_()  # softmax, in the saved buffer (the graph is not run twice)
        grad.sub_(eps / vocab)
        grad.scatter_add_(1, target.unsqueeze(1),
                          torch.full_like(weight, eps - 1.0).unsqueeze(1))
        grad.mul_((grad_loss * weight).unsqueeze(1))
        return grad.to(ctx.dtype), None, None, None


def smoothed_loss(logits: Tensor, target: Tensor, *, eps: float,
                  pad_id: int) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed cross-entropy and summed NLL over the non-padding targets.

    logits (..., V) and target (...) of any matching leading shape, e.g. (B, T, V) and (B, T),
    or only the real positions (N, V) and (N,). Padding targets count zero, without a host sync.
    """
    flat_logits = logits.reshape(-1, logits.size(-1))  # (N, V)
    flat_target = target.reshape(-1)  # (N,)
    weight = (flat_target != pad_id).float()  # (N,)
    return _SmoothedNLL.apply(flat_logits, flat_target, weight, eps)
