"""`nmt export --to ctranslate2`: a CTranslate2 model directory.

A CTranslate2 `TransformerSpec` is built from the checkpoint and written through a
`ctranslate2.converters.Converter` subclass, so CTranslate2 does the validation, the optional
quantization and the file format. It represents every option of ours (pre-norm included). The
transformers route (`TransformersConverter` on the hf export) is not used: its Marian loader
assumes Marian's own conventions, starts the decoder from a zero embedding instead of BOS and
drops the last vocabulary row, which would be a different model. `ct2_engine` runs the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nmt.checkpoint import Checkpoint
from nmt.errors import CheckpointError

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")


def _np(t: Tensor) -> Any:
    return t.detach().float().cpu().numpy()


def _set_linear(spec: Any, weights: Sequence[Tensor], biases: Sequence[Tensor]) -> None:
    """Fill a CTranslate2 LinearSpec with one or several of our projections fused row-wise."""
    spec.weight = _np(torch.cat(list(weights), 0))
    spec.bias = _np(torch.cat(list(biases), 0))


def _set_norm(spec: Any, sd: dict[str, Tensor], prefix: str) -> None:
    spec.gamma = _np(sd[prefix + "weight"])
    spec.beta = _np(sd[prefix + "bias"])


def _set_attention(spec: Any, sd: dict[str, Tensor], prefix: str, *, self_attention: bool) -> None:
    w = {p: sd[f"{prefix}{p}_proj.weight"] for p in "qkv"}
    b = {p: sd[f"{prefix}{p}_proj.bias"] for p in "qkv"}
    if self_attention:  # linear[0] = fused q|k|v
        _set_linear(spec.linear[0], [w["q"], w["k"], w["v"]], [b["q"], b["k"], b["v"]])
    else:  # linear[0] = q (from the decoder), linear[1] = fused k|v (from the memory)
        _set_linear(spec.linear[0], [w["q"]], [b["q"]])
        _set_linear(spec.linear[1], [w["k"], w["v"]], [b["k"], b["v"]])
    _set_linear(spec.linear[-1], [sd[prefix + "out_proj.weight"]], [sd[prefix + "out_proj.bias"]])


def ctranslate2_spec(ckpt: Checkpoint) -> Any:
    """A CTranslate2 TransformerSpec computing exactly our model."""
    from ctranslate2.specs import common_spec, transformer_spec

    from nmt.model import sinusoidal_table

    cfg = ckpt.config
    sd = ckpt.build_model("cpu").state_dict()
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads, pre_norm=cfg.norm_first,
        activation=common_spec.Activation.RELU)
    positions = _np(sinusoidal_table(cfg.max_positions, cfg.d_model))
    for side, stack in (("encoder", spec.encoder), ("decoder", spec.decoder)):
        embeddings = stack.embeddings[0] if side == "encoder" else stack.embeddings
        embeddings.weight = _np(sd[f"{side}.embed.tokens.weight"])
        stack.scale_embeddings = True  # multiply by sqrt(d_model)
        stack.position_encodings.encodings = positions
        if cfg.norm_first:
            _set_norm(stack.layer_norm, sd, f"{side}.final_norm.")
        for i, layer in enumerate(stack.layer):
            p = f"{side}.layers.{i}."
            _set_attention(layer.self_attention, sd, p + "self_attn.", self_attention=True)
            _set_norm(layer.self_attention.layer_norm, sd, p + "self_attn_res.norm.")
            if side == "decoder":
                _set_attention(layer.attention, sd, p + "cross_attn.", self_attention=False)
                _set_norm(layer.attention.layer_norm, sd, p + "cross_attn_res.norm.")
            _set_linear(layer.ffn.linear_0, [sd[p + "ffn.fc1.weight"]], [sd[p + "ffn.fc1.bias"]])
            _set_linear(layer.ffn.linear_1, [sd[p + "ffn.fc2.weight"]], [sd[p + "ffn.fc2.bias"]])
            _set_norm(layer.ffn.layer_norm, sd, p + "ffn_res.norm.")
    spec.decoder.projection.weight = _np(sd["output.weight"])  # no bias
    spec.decoder.start_from_zero_embedding = False
    pieces = [ckpt.vocab.sp.id_to_piece(i) for i in range(len(ckpt.vocab))]
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    sp = ckpt.vocab.sp
    spec.config.unk_token = sp.id_to_piece(sp.unk_id())
    spec.config.bos_token = sp.id_to_piece(cfg.bos_id)
    spec.config.eos_token = sp.id_to_piece(cfg.eos_id)
    spec.config.decoder_start_token = sp.id_to_piece(cfg.bos_id)
    spec.config.layer_norm_epsilon = 1e-5
    return spec


def write_ctranslate2(ckpt: Checkpoint, directory: Path, *, quantization: str | None) -> None:
    """Convert through CTranslate2's converter API (validation, quantization, model.bin)."""
    from ctranslate2.converters import Converter

    class NmtConverter(Converter):
        def _load(self) -> Any:
            return ctranslate2_spec(ckpt)

    try:
        NmtConverter().convert(str(directory), quantization=quantization, force=True)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"CTranslate2 conversion failed ({exc})",
                              where=str(ckpt.path)) from None
