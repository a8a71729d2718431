"""Shared helpers of the model tests: a deterministic batch of token ids."""

import torch


def make_batch(config, b=3, s=7, t=6, seed=0):
    """Source (b, s) and teacher-forced target input (b, t, BOS first) of random real tokens."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, config.vocab_size, (b, s), generator=g)
    tgt = torch.randint(4, config.vocab_size, (b, t), generator=g)
    tgt[:, 0] = config.bos_id
    return src, tgt
