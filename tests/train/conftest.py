"""Fixtures of the training tests: the toy prepared data and one intra-op thread."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_pairs

from .support import write_prepared


@pytest.fixture(scope="package")
def toy_data(tmp_path_factory, tiny_vocab) -> Path:
    pairs = toy_pairs()
    rng = np.random.default_rng(0)
    rng.shuffle(pairs)
    train_pairs, valid_pairs = pairs[:130], pairs[130:142]
    encode = tiny_vocab.encode_batch
    splits = {"train": ([encode([s])[0] for s, _ in train_pairs],
                        [encode([t])[0] for _, t in train_pairs]),
              "valid": ([encode([s])[0] for s, _ in valid_pairs],
                        [encode([t])[0] for _, t in valid_pairs])}
    return write_prepared(tmp_path_factory.mktemp("toy"), tiny_vocab, splits,
                          raw={"valid": [t for _, t in valid_pairs]})


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared with other tests: one intra-op thread is fastest for these models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
