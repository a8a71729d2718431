import numpy as np
import pytest
import torch

from nmt import batching
from nmt.errors import ConfigError


def lengths(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 60, n)
    tgt = np.clip(src + rng.integers(-5, 6, n), 0, None)
    return src, tgt


def plan(src, tgt, *, max_tokens=1000, seed=1, epoch=1):
    sizes = batching.pair_sizes(src, tgt)
    return batching.epoch_batches(sizes, src, tgt, np.arange(len(src)), max_tokens=max_tokens,
                                  seed=seed, epoch=epoch)


def test_no_batch_over_budget_and_every_pair_once():
    src, tgt = lengths()
    sizes = batching.pair_sizes(src, tgt)
    batches = plan(src, tgt, max_tokens=1000)
    for rows in batches:
        assert len(rows) * sizes[rows].max() <= 1000
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(len(src)))


def test_batches_are_length_bucketed_and_nearly_full():
    src, tgt = lengths()
    sizes = batching.pair_sizes(src, tgt)
    batches = plan(src, tgt, max_tokens=1000)
    padded = sum(len(r) * sizes[r].max() for r in batches)
    real = sizes.sum()
    assert real / padded > 0.9  # sorting by length keeps padding small
    assert padded / len(batches) > 0.9 * 1000 * 0.9  # batches are close to the budget


def test_order_is_a_function_of_seed_and_epoch():
    src, tgt = lengths()
    same = [np.concatenate(plan(src, tgt, seed=1, epoch=2)) for _ in range(2)]
    assert np.array_equal(*same)
    other_epoch = np.concatenate(plan(src, tgt, seed=1, epoch=3))
    other_seed = np.concatenate(plan(src, tgt, seed=2, epoch=2))
    assert not np.array_equal(same[0], other_epoch)
    assert not np.array_equal(same[0], other_seed)


def test_only_usable_pairs_are_batched():
    src, tgt = lengths(300)
    sizes = batching.pair_sizes(src, tgt)
    usable = np.nonzero(sizes <= 40)[0]
    batches = batching.epoch_batches(sizes, src, tgt, usable, max_tokens=400, seed=1, epoch=1)
    assert sorted(np.concatenate(batches).tolist()) == usable.tolist()


def test_a_pair_larger_than_the_budget_is_an_error():
    with pytest.raises(ConfigError, match="--batch-tokens"):
        plan(np.array([5, 500]), np.array([5, 3]), max_tokens=100)


@pytest.mark.parametrize("world,freq", [(1, 1), (2, 1), (2, 3), (8, 1)])
def test_worker_shards_partition_the_batch_within_the_bound(world, freq):
    src, tgt = lengths()
    sizes = batching.pair_sizes(src, tgt)
    layout = batching.plan_layout(batch_tokens=1000, world_size=world, longest=int(sizes.max()),
                                  max_tokens_per_gpu=None, update_freq=freq)
    for rows in plan(src, tgt, max_tokens=1000):
        parts = [batching.worker_shards(rows, rank=r, world_size=world, update_freq=freq)
                 for r in range(world)]
        assert all(len(p) == freq for p in parts)
        flat = [s for p in parts for s in p]
        assert np.array_equal(np.concatenate(flat), rows)
        for shard in flat:
            if len(shard):
                assert len(shard) * sizes[shard].max() <= layout.shard_bound


@pytest.mark.parametrize("world", [1, 2, 8])
def test_layout_keeps_the_effective_batch_and_respects_memory(world):
    layout = batching.plan_layout(batch_tokens=25_000, world_size=world, longest=251,
                                  max_tokens_per_gpu=4096, update_freq=None)
    assert layout.shard_bound <= 4096
    assert layout.world_size * layout.update_freq * 4096 >= 25_000
    # the smallest accumulation that fits: one fewer micro-batch would break the bound
    if layout.update_freq > 1:
        smaller = -(-25_000 // (world * (layout.update_freq - 1))) + 251
        assert smaller > 4096
    assert "25,000 tokens per update" in layout.describe()


def test_layout_rejects_a_memory_bound_below_the_longest_pair():
    with pytest.raises(ConfigError, match="--max-tokens-per-gpu"):
        batching.plan_layout(batch_tokens=25_000, world_size=1, longest=300,
                             max_tokens_per_gpu=200, update_freq=None)


def test_collate_adds_eos_bos_and_padding():
    src = [np.array([5, 6, 7]), np.array([8])]
    tgt = [np.array([9]), np.array([10, 11])]
    b = batching.collate(src, tgt, np.array([0, 1]), pad_id=0, bos_id=2, eos_id=3)
    assert b.src.tolist() == [[5, 6, 7, 3], [8, 3, 0, 0]]
    assert b.tgt_in.tolist() == [[2, 9, 0], [2, 10, 11]]
    assert b.tgt_out.tolist() == [[9, 3, 0], [10, 11, 3]]
    assert b.src.dtype == torch.int64


def test_an_empty_shard_collates_to_a_batch_without_targets():
    b = batching.collate([np.array([5])], [np.array([6])], np.array([], dtype=np.int64),
                         pad_id=0, bos_id=2, eos_id=3)
    assert b.src.shape == (1, 1) and bool((b.tgt_out == 0).all())
