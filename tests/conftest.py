"""Shared fixtures: one tiny deterministic vocabulary and model, and the real corpora."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch

from nmt.config import ModelConfig, preset
from nmt.model import Transformer
from nmt.vocab import Vocabulary, train_sentencepiece

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_SUBJECTS = ["a man", "a woman", "the dog", "two children", "a girl", "the old man"]
_VERBS = ["is walking", "sits", "plays", "is running", "looks"]
_PLACES = ["on the street", "in the park", "near the water", "at the beach", "in a red car"]
_SUBJECTS_DE = ["ein Mann", "eine Frau", "der Hund", "zwei Kinder", "ein Mädchen", "der alte Mann"]
_VERBS_DE = ["geht", "sitzt", "spielt", "rennt", "schaut"]
_PLACES_DE = ["auf der Straße", "im Park", "am Wasser", "am Strand", "in einem roten Auto"]


def toy_pairs() -> list[tuple[str, str]]:
    """A few hundred deterministic English-German pairs for vocabularies and smoke tests."""
    pairs = []
    for (s, sd), (v, vd), (p, pd) in itertools.product(
        zip(_SUBJECTS, _SUBJECTS_DE, strict=True), zip(_VERBS, _VERBS_DE, strict=True),
        zip(_PLACES, _PLACES_DE, strict=True),
    ):
        pairs.append((f"{s} {v} {p} .".capitalize(), f"{sd} {vd} {pd} .".capitalize()))
    return pairs


def en_de_checkpoint(path: Path, vocab: Vocabulary) -> Path:
    """A tiny untrained model saved as a checkpoint whose data is recorded as English-German."""
    from nmt.checkpoint import save_checkpoint

    cfg = preset("tiny", vocab_size=len(vocab), d_model=32, d_ff=64, n_heads=4,
                 n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    torch.manual_seed(1234)
    return save_checkpoint(path, Transformer(cfg).eval(), vocab,
                           {"step": 1, "data": {"name": "toy", "src_lang": "en",
                                                "tgt_lang": "de"}})


@pytest.fixture(scope="session")
def tiny_vocab() -> Vocabulary:
    text = [side for pair in toy_pairs() for side in pair]
    return train_sentencepiece(text, vocab_size=320)


@pytest.fixture
def tiny_config(tiny_vocab) -> ModelConfig:
    return preset("tiny", vocab_size=len(tiny_vocab), d_model=32, d_ff=64, n_heads=4,
                  n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)


@pytest.fixture
def tiny_model(tiny_config) -> Transformer:
    torch.manual_seed(1234)
    return Transformer(tiny_config).eval()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`; skipped where absent, unless NMT_REQUIRE_SHARED_DATA=1 (CI) demands it."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("NMT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"NMT_REQUIRE_SHARED_DATA=1 but {SHARED_DATA} is missing")
        pytest.skip(f"real corpora not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One intra-op thread: the fastest for these small models, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
