import dataclasses

import pytest

from nmt.config import ModelConfig, base, big, preset, preset_name
from nmt.errors import ConfigError


def test_paper_presets():
    b, g = base(), big()
    assert (b.d_model, b.d_ff, b.n_heads, b.n_encoder_layers, b.n_decoder_layers, b.dropout) == (
        512, 2048, 8, 6, 6, 0.1)
    assert (g.d_model, g.d_ff, g.n_heads, g.n_encoder_layers, g.dropout) == (1024, 4096, 16, 6, 0.3)
    assert not b.norm_first and b.share_embeddings and b.tie_output


def test_config_is_frozen_and_keyword_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        base().d_model = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        ModelConfig(37000)  # type: ignore[misc]


def test_round_trip_and_unknown_fields():
    c = preset("big", vocab_size=123)
    assert ModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown model config fields: colour"):
        ModelConfig.from_dict({**c.to_dict(), "colour": "blue"})


def test_bad_presets_and_shapes():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        preset("huge")
    with pytest.raises(ConfigError, match="divisible"):
        preset("base", n_heads=7)


def test_preset_name_ignores_vocabulary():
    assert preset_name(preset("big", vocab_size=99)) == "big"
    assert preset_name(preset("base", d_ff=1000)) is None
