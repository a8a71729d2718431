"""Fixtures of the training tests: the toy prepared data and one intra-op thread."""

from pathlib import Path

import numpy as np
import pytest
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
def _one_thread(one_thread):
    """Every training test on one intra-op thread (the root conftest's fixture)."""
    yield
