"""Search over the decoder: greedy decoding (beam search and sampling build on the same step).

Every search function takes a `Transformer`, a padded source batch `src` (B, S) and the maximum
number of output tokens per row `max_len` (B,), and returns token ids without BOS/EOS.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nmt.model import Transformer


def output_limit(src: Tensor, pad_id: int, a: float = 1.0, b: int = 50) -> Tensor:
    """The paper's maximum output length per row: a * input length + b, as (B,) int64."""
    lengths = (src != pad_id).sum(1)
    return (lengths.double() * a).floor().long() + b


@torch.inference_mode()
def greedy(model: Transformer, src: Tensor, max_len: Tensor) -> list[list[int]]:
    """Pick the most likely token at every step until EOS or `max_len`; finished rows are
    dropped from the batch, so the work shrinks as sentences end."""
    cfg = model.config
    memory, src_mask = model.encode(src)
    state = model.start_state(memory, src_mask)
    batch = src.size(0)
    alive = torch.arange(batch, device=src.device)  # original row of each batch row
    tokens = torch.full((batch,), cfg.bos_id, dtype=torch.long, device=src.device)
    out: list[list[int]] = [[] for _ in range(batch)]
    limit = max_len.to(src.device)
    for t in range(int(limit.max().item()) if batch else 0):
        logits = model.decode_step(tokens, state)  # (B, V)
        logits[:, cfg.pad_id] = float("-inf")
        logits[:, cfg.bos_id] = float("-inf")
        tokens = logits.argmax(-1)  # (B,)
        done = (tokens == cfg.eos_id) | (limit[alive] <= t + 1)
        for row, tok in zip(alive.tolist(), tokens.tolist(), strict=True):
            if tok != cfg.eos_id:
                out[row].append(tok)
        if done.all():
            break
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            alive, tokens, state = alive[keep], tokens[keep], state.select(keep)
    return out
