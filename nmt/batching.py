"""Token batching: sentence pairs grouped by length into batches of about N tokens.

The size of a pair is the padded length of its longer side, EOS or BOS included:
`max(len(src), len(tgt)) + 1`. A batch of B pairs whose longest pair has size L costs B * L
padded token slots, and `pack` keeps every batch within its budget.

One *update* consumes one global batch (about `--batch-tokens` over all GPUs). Its order and
composition are a function of (seed, epoch) alone, never of the GPU count, so a run resumes at
`(epoch, batch index)` on any number of workers. Each worker takes its own contiguous shards of
every global batch (`worker_shards`): one per micro-batch of gradient accumulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from nmt.errors import ConfigError


def pair_sizes(src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> np.ndarray:
    """Padded slots one pair needs: its longer side plus EOS (source) or BOS/EOS (target)."""
    return np.maximum(src_lengths, tgt_lengths).astype(np.int64) + 1  # (N,)


def length_order(sizes: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Pair indices sorted by size (then target, then source length); ties broken at random."""
    index = rng.permutation(len(sizes)) if rng is not None else np.arange(len(sizes))
    keys = (src_lengths[index], tgt_lengths[index], sizes[index])  # lexsort: last key is primary
    return index[np.lexsort(keys)]


def pack(order: np.ndarray, sizes: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut `order` (sorted by ascending size) into batches with rows * longest <= max_tokens."""
    sorted_sizes = sizes[order].tolist()
    if sorted_sizes and sorted_sizes[-1] > max_tokens:
        raise ConfigError(f"a batch of {max_tokens} tokens cannot hold the longest pair "
                          f"({sorted_sizes[-1]} tokens); raise --batch-tokens")
    batches, start = [], 0
    for i, size in enumerate(sorted_sizes):
        if (i - start + 1) * size > max_tokens:
            batches.append(order[start:i])
            start = i
    if start < len(order):
        batches.append(order[start:])
    return batches


def epoch_batches(sizes: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray,
                  usable: np.ndarray, *, max_tokens: int, seed: int,
                  epoch: int) -> list[np.ndarray]:
    """The global batches of one epoch, in training order: a function of (seed, epoch) only.

    `usable` holds the indices of the pairs to train on; each appears in exactly one batch.
    """
    rng = np.random.default_rng([seed, epoch])
    local = length_order(sizes[usable], src_lengths[usable], tgt_lengths[usable], rng)
    batches = pack(usable[local], sizes, max_tokens)
    return [batches[i] for i in rng.permutation(len(batches))]


def fixed_batches(sizes: np.ndarray, src_lengths: np.ndarray, tgt_lengths: np.ndarray, *,
                  max_tokens: int) -> list[np.ndarray]:
    """Batches in length order without shuffling (validation)."""
    return pack(length_order(sizes, src_lengths, tgt_lengths), sizes, max_tokens)


def worker_shards(rows: np.ndarray, *, rank: int, world_size: int,
                  update_freq: int) -> list[np.ndarray]:
    """This worker's micro-batches of one global batch: contiguous, near-equal row shards.

    The batch is cut into world_size * update_freq shards; worker r takes shards
    r*update_freq ... (r+1)*update_freq - 1. A shard may be empty when the batch has fewer rows.
    """
    shards = np.array_split(rows, world_size * update_freq)
    return shards[rank * update_freq:(rank + 1) * update_freq]


@dataclass(frozen=True)
class Layout:
    """How one update is split: world_size workers x update_freq micro-batches each."""

    batch_tokens: int  # budget of one global batch (padded slots, summed over workers)
    world_size: int  # data-parallel workers
    update_freq: int  # micro-batches each worker accumulates per update
    shard_bound: int  # padded slots one micro-batch can hold at most

    def describe(self) -> str:
        return (f"{self.batch_tokens:,} tokens per update = {self.world_size} worker(s) x "
                f"{self.update_freq} micro-batch(es) of <= {self.shard_bound:,} tokens "
                f"(update-freq {self.update_freq})")


def plan_layout(*, batch_tokens: int, world_size: int, longest: int,
                max_tokens_per_gpu: int | None, update_freq: int | None) -> Layout:
    """Derive gradient accumulation so the effective batch stays `batch_tokens` on any world size.

    A shard of a batch with B rows of size <= L holds ceil(B / S) rows, so its cost is at most
    batch_tokens / S + L for S = world_size * update_freq shards; `update_freq` is the smallest
    that keeps this bound within `max_tokens_per_gpu`.
    """
    if update_freq is None:
        if max_tokens_per_gpu is None:
            update_freq = 1
        else:
            room = max_tokens_per_gpu - longest
            if room <= 0:
                raise ConfigError(
                    f"--max-tokens-per-gpu {max_tokens_per_gpu} cannot hold the longest pair "
                    f"({longest} tokens) plus a batch; raise it")
            update_freq = max(1, math.ceil(batch_tokens / (world_size * room)))
    if update_freq < 1:
        raise ConfigError(f"--update-freq must be at least 1, not {update_freq}")
    shards = world_size * update_freq
    bound = min(batch_tokens, math.ceil(batch_tokens / shards) + longest)
    return Layout(batch_tokens=batch_tokens, world_size=world_size, update_freq=update_freq,
                  shard_bound=bound)


@dataclass(frozen=True)
class Batch:
    """Padded tensors of one micro-batch."""

    src: Tensor  # (B, S) source ids + EOS
    tgt_in: Tensor  # (B, T) BOS + target ids
    tgt_out: Tensor  # (B, T) target ids + EOS

    def to(self, device: torch.device | str) -> Batch:
        nb = torch.device(device).type == "cuda"
        return Batch(self.src.to(device, non_blocking=nb), self.tgt_in.to(device, non_blocking=nb),
                     self.tgt_out.to(device, non_blocking=nb))

    @property
    def tokens(self) -> int:
        """Padded slots of the larger side."""
        return self.src.size(0) * max(self.src.size(1), self.tgt_in.size(1))


def collate(src, tgt, rows: np.ndarray, *, pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """Batch the pairs `rows` of token arrays `src` and `tgt` (indexable, one array per pair).

    An empty `rows` gives a one-row batch whose target is all padding: it contributes nothing to
    the loss, but lets a worker with no data take part in the gradient all-reduce.
    """
    if len(rows) == 0:
        src_ids, tgt_ids, dummy = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], True
    else:
        src_ids, tgt_ids, dummy = [src[i] for i in rows], [tgt[i] for i in rows], False
    b = len(src_ids)
    s = max(len(x) for x in src_ids) + 1
    t = max(len(y) for y in tgt_ids) + 1
    src_arr = np.full((b, s), pad_id, dtype=np.int64)  # (B, S)
    tgt_in = np.full((b, t), pad_id, dtype=np.int64)  # (B, T)
    tgt_out = np.full((b, t), pad_id, dtype=np.int64)  # (B, T)
    for k, (x, y) in enumerate(zip(src_ids, tgt_ids, strict=True)):
        src_arr[k, :len(x)] = x
        src_arr[k, len(x)] = eos_id
        tgt_in[k, 0] = bos_id
        tgt_in[k, 1:len(y) + 1] = y
        tgt_out[k, :len(y)] = y
        tgt_out[k, len(y)] = eos_id
    if dummy:
        tgt_out[:] = pad_id
    return Batch(torch.from_numpy(src_arr), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out))
