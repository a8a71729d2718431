"""Loading the checkpoints to translate with."""

import dataclasses

import pytest
import torch
from conftest import toy_pairs

from nmt.checkpoint import save_checkpoint
from nmt.errors import CheckpointError
from nmt.model import Transformer

from .helpers import config_for, run_bytes


def test_ensemble_rejects_a_different_vocabulary(tmp_path, ckpt, tiny_config):
    from nmt.vocab import train_sentencepiece

    vocab = train_sentencepiece([de for _, de in toy_pairs()], vocab_size=tiny_config.vocab_size)
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config, vocab_size=len(vocab))).eval()
    path = save_checkpoint(tmp_path / "foreign", model, vocab, {"step": 1})
    with pytest.raises(CheckpointError, match="vocabulary differs"):
        run_bytes(config_for(ckpt, checkpoints=(ckpt, path)), b"a\n")
