"""Fixtures of the `nmt translate` tests: a checkpoint of the toy model."""

import pytest
import torch

from nmt.checkpoint import save_checkpoint


@pytest.fixture(autouse=True, scope="package")
def _threads_restored():
    """`nmt.translate.run` sets torch's thread count: put it back after these tests."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ckpt(tmp_path, tiny_model, tiny_vocab):
    return save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, {"step": 1})
