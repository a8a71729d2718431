"""Model configuration and the named presets.

A preset is a plain function returning a frozen `ModelConfig`; variants derive from `base()` with
`dataclasses.replace`, so every preset states only what differs from the paper's base model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from nmt.errors import ConfigError

# Numeric precisions `nmt train` and `nmt translate` accept ("auto": by device).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# ModelConfig fields that only matter in training: checkpoints that differ only here hold
# weights of the same model (averaging, resuming).
TRAINING_ONLY_FIELDS = frozenset({"dropout", "attn_dropout", "activation_dropout"})


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    vocab_size: int = 37000  # shared source/target subword vocabulary size
    d_model: int = 512  # width of embeddings and of every residual stream
    d_ff: int = 2048  # inner width of the position-wise feed-forward network
    n_heads: int = 8  # attention heads; d_model must be divisible by it
    n_encoder_layers: int = 6  # encoder stack depth (N in the paper)
    n_decoder_layers: int = 6  # decoder stack depth
    dropout: float = 0.1  # on sublayer outputs and on embedding + position sums (P_drop)
    attn_dropout: float = 0.0  # on attention probabilities (the paper uses none)
    activation_dropout: float = 0.0  # after the ReLU inside the feed-forward network
    norm_first: bool = False  # False: post-norm LayerNorm(x + Sublayer(x)) as in the paper
    share_embeddings: bool = True  # encoder and decoder use one embedding matrix
    tie_output: bool = True  # output projection reuses the decoder embedding matrix
    max_positions: int = 1024  # longest sequence the sinusoidal table is built for
    pad_id: int = 0  # padding token id (embedding row kept at zero)
    bos_id: int = 2  # beginning-of-sentence id, the decoder's start token
    eos_id: int = 3  # end-of-sentence id, appended to every source and target

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.d_model % 2:
            raise ConfigError(f"d_model {self.d_model} must be even for sinusoidal positions")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} is outside [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def base() -> ModelConfig:
    """Transformer base (Vaswani et al., 2017, Table 3): 6+6 layers, 512/2048, 8 heads."""
    return ModelConfig()


def big() -> ModelConfig:
    """Transformer big: 1024/4096, 16 heads, dropout 0.3 (the paper's en-de setting)."""
    return dataclasses.replace(base(), d_model=1024, d_ff=4096, n_heads=16, dropout=0.3)


def small() -> ModelConfig:
    """A small model for Multi30k-sized data on one GPU or a laptop (fairseq transformer_tiny)."""
    return dataclasses.replace(
        base(), d_model=256, d_ff=1024, n_heads=4, n_encoder_layers=4, n_decoder_layers=4,
        dropout=0.3,
    )


def tiny() -> ModelConfig:
    """A tiny model for CPU smoke runs and tests: trains in minutes on two cores."""
    return dataclasses.replace(
        base(), d_model=128, d_ff=256, n_heads=4, n_encoder_layers=3, n_decoder_layers=3,
        dropout=0.1,
    )


PRESETS = {"base": base, "big": big, "small": small, "tiny": tiny}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset with `overrides` (field=value) applied."""
    try:
        make = PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        ) from None
    return dataclasses.replace(make(), **overrides)


def preset_name(config: ModelConfig) -> str | None:
    """The preset whose architecture `config` has (ignoring vocabulary and token ids), if any."""
    ignore = {"vocab_size", "pad_id", "bos_id", "eos_id", "max_positions"}
    mine = {k: v for k, v in config.to_dict().items() if k not in ignore}
    for name, make in PRESETS.items():
        theirs = {k: v for k, v in make().to_dict().items() if k not in ignore}
        if mine == theirs:
            return name
    return None
