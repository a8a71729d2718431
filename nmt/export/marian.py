"""`nmt export --to hf`: a Hugging Face transformers `MarianMTModel` directory.

Config, safetensors weights and generation config, with a `MarianTokenizer` (our SentencePiece
model as source.spm and target.spm, and a vocab.json in our id order). Marian has exactly our
layout: post-norm, sinusoidal positions with the sines first and starting at 0 on both sides,
embeddings scaled by sqrt(d_model), biased q/k/v/out projections, LayerNorm eps 1e-5, ReLU, no
output bias. The decoder starts from BOS (`decoder_start_token_id = bos_id`). Pre-norm has no
Marian equivalent and is refused. The written model is loaded back and its logits compared with
ours before it is published.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nmt.checkpoint import Checkpoint
from nmt.config import ModelConfig
from nmt.errors import CheckpointError, ConfigError
from nmt.vocab import Vocabulary

# Logit agreement demanded of the written hf model before it replaces OUT_DIR (fp32).
VERIFY_TOLERANCE = 1e-3
# Inside one layer: our sub-module prefix -> Marian's.
_MARIAN_LAYER_NAMES = (
    ("self_attn_res.norm.", "self_attn_layer_norm."),
    ("cross_attn_res.norm.", "encoder_attn_layer_norm."),
    ("ffn_res.norm.", "final_layer_norm."),
    ("self_attn.", "self_attn."),
    ("cross_attn.", "encoder_attn."),
    ("ffn.fc1.", "fc1."),
    ("ffn.fc2.", "fc2."),
)
_MARIAN_TOP_NAMES = {
    "encoder.embed.tokens.weight": "model.encoder.embed_tokens.weight",
    "decoder.embed.tokens.weight": "model.decoder.embed_tokens.weight",
    "output.weight": "lm_head.weight",
}


def check_marian(config: ModelConfig) -> None:
    """Refuse, by name, what MarianMTModel cannot compute."""
    if config.norm_first:
        raise ConfigError("norm_first=True (pre-norm) cannot be exported to hf: MarianMTModel is "
                          "post-norm only; use --to ctranslate2")


def marian_name(name: str) -> str:
    """Our parameter name -> MarianMTModel's (e.g. decoder.layers.1.cross_attn_res.norm.weight
    -> model.decoder.layers.1.encoder_attn_layer_norm.weight)."""
    if name in _MARIAN_TOP_NAMES:
        return _MARIAN_TOP_NAMES[name]
    stack, layers, index, rest = name.split(".", 3)
    if stack not in ("encoder", "decoder") or layers != "layers":
        raise ValueError(f"no Marian counterpart for parameter {name}")
    for ours, theirs in _MARIAN_LAYER_NAMES:
        if rest.startswith(ours):
            return f"model.{stack}.layers.{index}.{theirs}{rest[len(ours):]}"
    raise ValueError(f"no Marian counterpart for parameter {name}")


def marian_config(config: ModelConfig) -> Any:
    """The `MarianConfig` of our architecture."""
    from transformers import MarianConfig

    return MarianConfig(
        vocab_size=config.vocab_size,
        decoder_vocab_size=config.vocab_size,
        max_position_embeddings=config.max_positions,
        d_model=config.d_model,
        encoder_layers=config.n_encoder_layers,
        decoder_layers=config.n_decoder_layers,
        encoder_attention_heads=config.n_heads,
        decoder_attention_heads=config.n_heads,
        encoder_ffn_dim=config.d_ff,
        decoder_ffn_dim=config.d_ff,
        activation_function="relu",
        dropout=config.dropout,
        attention_dropout=config.attn_dropout,
        activation_dropout=config.activation_dropout,
        scale_embedding=True,
        init_std=config.d_model ** -0.5,
        pad_token_id=config.pad_id,
        bos_token_id=config.bos_id,
        eos_token_id=config.eos_id,
        decoder_start_token_id=config.bos_id,
        forced_eos_token_id=None,
        # transformers ties all three matrices or none: with an untied output the source and
        # target embeddings are written as two (equal, when shared) matrices.
        share_encoder_decoder_embeddings=config.share_embeddings and config.tie_output,
        tie_word_embeddings=config.tie_output,
        architectures=["MarianMTModel"],
    )


def marian_generation_config(config: ModelConfig) -> Any:
    """Beam search as `nmt translate --beam 4 --lenpen 0.6 --lenpen-style fairseq`: finished
    hypotheses scored log P / |Y|^alpha with EOS counted in |Y| (transformers >= 5), a sentence
    done once 4 hypotheses finished (early_stopping=True, nmt's default `--stopping finished`;
    "never" is `--stopping exact`), PAD and BOS never generated.

    `max_length` is the model's position limit, so nothing nmt would produce is cut; pass
    `max_new_tokens` (nmt uses source tokens + 50) to bound the output as nmt does."""
    from transformers import GenerationConfig

    return GenerationConfig(
        decoder_start_token_id=config.bos_id,
        bos_token_id=config.bos_id,
        eos_token_id=config.eos_id,
        pad_token_id=config.pad_id,
        forced_eos_token_id=None,
        suppress_tokens=[config.pad_id, config.bos_id],
        num_beams=4,
        length_penalty=0.6,
        early_stopping=True,
        max_length=config.max_positions,
    )


def marian_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """Our weights under MarianMTModel's names (tied matrices under each of their names)."""
    config: ModelConfig = model.config
    out = {marian_name(name): t.detach().float().contiguous()
           for name, t in model.state_dict().items() if not name.endswith("positions")}
    if config.share_embeddings and config.tie_output:
        out["model.shared.weight"] = out["model.encoder.embed_tokens.weight"]
    return out


def build_marian(ckpt: Checkpoint) -> tuple[Any, torch.nn.Module]:
    """(MarianMTModel with our weights, our model), both in eval mode on the CPU."""
    from transformers import MarianMTModel

    ours = ckpt.build_model("cpu").float()
    hf = MarianMTModel(marian_config(ckpt.config))
    missing, unexpected = hf.load_state_dict(marian_state_dict(ours), strict=False)
    # Positions are recomputed by Marian; final_logits_bias stays zero (we have no output bias).
    left = {k for k in missing if not k.endswith("embed_positions.weight")} - {"final_logits_bias"}
    if left or unexpected:
        raise RuntimeError(f"Marian mapping incomplete: missing {sorted(left)[:3]}, "
                           f"unexpected {sorted(unexpected)[:3]}")
    hf.generation_config = marian_generation_config(ckpt.config)
    return hf.eval(), ours


def write_marian_tokenizer(vocab: Vocabulary, directory: Path, meta: dict[str, Any],
                           max_length: int) -> None:
    """source.spm/target.spm (our model) and vocab.json (every piece -> our id)."""
    import warnings

    from transformers import MarianTokenizer

    for name in ("source.spm", "target.spm"):
        vocab.save(directory / name)
    pieces = {vocab.sp.id_to_piece(i): i for i in range(len(vocab))}
    (directory / "vocab.json").write_text(json.dumps(pieces, ensure_ascii=False, indent=0),
                                          encoding="utf-8")
    data = meta.get("data") if isinstance(meta.get("data"), dict) else {}
    with warnings.catch_warnings():  # "Recommended: pip install sacremoses" (never used here)
        warnings.simplefilter("ignore")
        tokenizer = MarianTokenizer(
            source_spm=str(directory / "source.spm"), target_spm=str(directory / "target.spm"),
            vocab=str(directory / "vocab.json"), source_lang=data.get("src_lang"),
            target_lang=data.get("tgt_lang"), model_max_length=max_length,
        )
        tokenizer.save_pretrained(str(directory))


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or info chatter from transformers while we save and reload."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def write_hf(ckpt: Checkpoint, directory: Path) -> None:
    """Write the Marian model and tokenizer into `directory`; refuse one that disagrees."""
    with quiet_transformers():
        hf, ours = build_marian(ckpt)
        hf.save_pretrained(str(directory))
        write_marian_tokenizer(ckpt.vocab, directory, ckpt.meta, ckpt.config.max_positions)
        diff = hf_logit_difference(directory, ours)
    umask = os.umask(0)
    os.umask(umask)
    for f in directory.iterdir():  # safetensors writes 0600; the rest of the export is 0644
        f.chmod(0o666 & ~umask)
    if diff > VERIFY_TOLERANCE:
        raise CheckpointError(f"the Marian export disagrees with the checkpoint (max logit "
                              f"difference {diff:.2e}); nothing was written", where=str(ckpt.path))


@torch.inference_mode()
def hf_logit_difference(directory: Path, ours: torch.nn.Module) -> float:
    """Load the written directory back; the largest logit difference to ours on a random batch."""
    from transformers import MarianMTModel

    cfg: ModelConfig = ours.config
    hf = MarianMTModel.from_pretrained(str(directory)).eval()
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(4, cfg.vocab_size, (2, 9), generator=gen)  # (B, S)
    src[:, -1] = cfg.eos_id
    src[1, 5:] = cfg.pad_id
    tgt = torch.randint(4, cfg.vocab_size, (2, 7), generator=gen)  # (B, T)
    tgt[:, 0] = cfg.bos_id
    theirs = hf(input_ids=src, attention_mask=src != cfg.pad_id, decoder_input_ids=tgt).logits
    return (theirs - ours(src, tgt)).abs().max().item()
