"""Fixtures of the `nmt export` tests.

Tests that need `transformers` or `ctranslate2` skip, saying so, where the `export` extra is not
installed; CI installs it.
"""

from __future__ import annotations

import pytest

from nmt.checkpoint import save_checkpoint

from .helpers import NEEDS_EXTRA, train_toy


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Everything must load from the exported directory alone."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def hf():
    return pytest.importorskip("transformers", reason=NEEDS_EXTRA)


@pytest.fixture
def ct2():
    return pytest.importorskip("ctranslate2", reason=NEEDS_EXTRA)


@pytest.fixture(scope="package")
def trained(tiny_vocab, tmp_path_factory):
    model = train_toy(tiny_vocab)
    path = save_checkpoint(tmp_path_factory.mktemp("toy") / "ckpt", model, tiny_vocab,
                           {"step": 100, "data": {"src_lang": "en", "tgt_lang": "de"}})
    return model, path
