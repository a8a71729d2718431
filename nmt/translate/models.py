"""Where and in which precision the models run, and loading them (one, or several to ensemble)."""

from __future__ import annotations

from pathlib import Path

import torch

from nmt.checkpoint import load_checkpoint
from nmt.errors import CheckpointError, ConfigError
from nmt.search import Ensemble
from nmt.text import styled_vocabulary
from nmt.vocab import Vocabulary


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the loaded weights; int8 loads fp32 and quantizes after (`quantize_int8`)."""
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(f"--precision int8 runs on CPU only, not on {device}; "
                              "use bf16 or fp16 there")
        return torch.float32
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """`model` (CPU, fp32, eval) with every nn.Linear, the tied output projection included, as
    a dynamically quantized int8 Linear (int8 weights per output channel; activations quantized
    per call, so no calibration). Embeddings, layer norms and attention stay fp32."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notices: nothing for the user to do
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                dtype=torch.qint8)


def load_models(paths: tuple[Path, ...], device: torch.device, dtype: torch.dtype,
                int8: bool = False) -> tuple[Ensemble, Vocabulary]:
    """The checkpoints' models in eval mode on `device` (int8: quantized, see `quantize_int8`),
    and their (shared) vocabulary, which lowercases / tokenizes input and detokenizes output if
    the first model was trained so."""
    models, vocab, styled = [], None, None
    for path in paths:
        ckpt = load_checkpoint(path)
        if vocab is not None and ckpt.vocab.sha256 != vocab.sha256:
            raise CheckpointError(f"its vocabulary differs from that of {paths[0]}; only "
                                  "checkpoints with one vocabulary can be ensembled",
                                  where=str(path))
        vocab = vocab or ckpt.vocab
        model = ckpt.build_model(device).to(dtype)
        models.append(quantize_int8(model) if int8 else model)
        if len(models) == 1:  # trained on lowercased / tokenized text: read and write it so
            styled = styled_vocabulary(vocab, ckpt.meta.get("data") or {},
                                       where=str(path / "meta.json"))
    return Ensemble(models), styled
