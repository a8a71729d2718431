"""Export a checkpoint for other runtimes: Hugging Face transformers and CTranslate2.

- `--to hf` writes a `MarianMTModel` directory (config, safetensors weights, generation config)
  with a `MarianTokenizer` (our SentencePiece model as source.spm and target.spm, and a
  vocab.json in our id order). Marian has exactly our layout: post-norm, sinusoidal positions
  with the sines first and starting at 0 on both sides, embeddings scaled by sqrt(d_model),
  biased q/k/v/out projections, LayerNorm eps 1e-5, ReLU, no output bias. The decoder starts
  from BOS (`decoder_start_token_id = bos_id`). Pre-norm has no Marian equivalent and is refused.
  The written model is loaded back and its logits compared with ours before it is published.
- `--to ctranslate2` builds a CTranslate2 `TransformerSpec` from the checkpoint through a
  `ctranslate2.converters.Converter` subclass, so CTranslate2 does the validation, the optional
  quantization and the file format. It represents every option of ours (pre-norm included).
  The transformers route (`TransformersConverter` on the hf export) is not used: its Marian
  loader assumes Marian's own conventions, starts the decoder from a zero embedding instead of
  BOS and drops the last vocabulary row, which would be a different model.

Both directories carry `spm.model` and `nmt_export.json` (the source checkpoint's config and
meta), so `translate_ctranslate2` and users need nothing else. Outputs are written to a
temporary sibling and renamed into place, so a failed export never damages an existing one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nmt import __version__
from nmt.checkpoint import Checkpoint, load_checkpoint, replace_directory
from nmt.config import ModelConfig
from nmt.errors import CheckpointError, ConfigError
from nmt.vocab import Vocabulary

log = logging.getLogger(__name__)

TARGETS = ("hf", "ctranslate2")
QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")
EXPORT_META, SPM = "nmt_export.json", "spm.model"
EXTRA_HINT = "install nmt's `export` extra (pip install transformers ctranslate2)"
# Logit agreement demanded of the written hf model before it replaces OUT_DIR (fp32).
VERIFY_TOLERANCE = 1e-3


def run(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, to: str,
        quantization: str | None = None, force: bool = False) -> Path:
    """Export `checkpoint` to `out_dir` for the runtime `to` ("hf" or "ctranslate2")."""
    if to not in TARGETS:
        raise ConfigError(f"unknown export target {to!r}; choose one of {', '.join(TARGETS)}")
    if quantization is not None and to != "ctranslate2":
        raise ConfigError("--quantization applies to --to ctranslate2 only")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantization!r}; choose one of "
                          f"{', '.join(QUANTIZATIONS)}")
    require_package("transformers" if to == "hf" else "ctranslate2", to)
    ckpt = load_checkpoint(checkpoint)
    if to == "hf":
        check_marian(ckpt.config)
    out = Path(out_dir)
    if out.resolve() == ckpt.path.resolve() or out.resolve() in ckpt.path.resolve().parents:
        raise ConfigError("the output directory holds the checkpoint", where=str(out))
    with staging(out, force=force) as tmp:
        if to == "hf":
            write_hf(ckpt, tmp)
        else:
            write_ctranslate2(ckpt, tmp, quantization=quantization)
        write_export_meta(ckpt, tmp, target=to, quantization=quantization)
    log.debug("exported %s to %s (%s)", ckpt.path, out, to)
    return out


def require_package(module: str, target: str) -> None:
    """A one-line ConfigError naming the extra to install when `module` is missing."""
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"exporting to {target} needs the `{module}` package; {EXTRA_HINT}")


@contextmanager
def staging(out: Path, *, force: bool) -> Iterator[Path]:
    """A temporary sibling of `out` to write into; renamed to `out` only on success."""
    if out.exists() and not force:
        raise ConfigError("already exists; pass --force to replace it", where=str(out))
    if out.exists() and not (out.is_dir() and (not any(out.iterdir())
                                               or (out / EXPORT_META).is_file())):
        raise ConfigError(f"exists and is not an nmt export (no {EXPORT_META}); --force only "
                          "replaces an earlier export or an empty directory", where=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, out)


def write_export_meta(ckpt: Checkpoint, directory: Path, *, target: str,
                      quantization: str | None) -> None:
    ckpt.vocab.save(directory / SPM)
    meta = {
        "format": "nmt-export/1",
        "target": target,
        "quantization": quantization,
        "source_checkpoint": str(ckpt.path.resolve()),
        "checkpoint_meta": ckpt.meta,
        "config": ckpt.config.to_dict(),
        "nmt_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (directory / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n",
                                         encoding="utf-8")


# --- Hugging Face transformers (Marian) --------------------------------------------------------
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


# --- CTranslate2 -------------------------------------------------------------------------------
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


def read_export_meta(model_dir: Path) -> dict[str, Any]:
    try:
        meta = json.loads((model_dir / EXPORT_META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"not an nmt export ({EXPORT_META}: {exc})",
                              where=str(model_dir)) from None
    if not isinstance(meta, dict) or "config" not in meta:
        raise CheckpointError(f"not an nmt export (bad {EXPORT_META})", where=str(model_dir))
    return meta


def translate_ctranslate2(
    model_dir: str | os.PathLike,
    lines: Sequence[str],
    *,
    beam: int = 4,
    alpha: float = 0.6,
    max_len_a: float = 1.0,
    max_len_b: int = 50,
    batch_size: int = 64,
    patience: float = 1.0,
    device: str = "cpu",
    compute_type: str = "default",
    threads: int = 0,
) -> list[str]:
    """Translate raw `lines` with a `--to ctranslate2` export; one translation per line, in order.

    As `nmt translate --lenpen-style fairseq`: the source is its pieces + EOS (truncated to the
    model's positions), at most floor(max_len_a * source tokens) + max_len_b output tokens,
    finished hypotheses scored log P / |Y|^alpha with EOS counted in |Y| (CTranslate2 counts
    the tokens it returns, so the end token is requested and stripped here), PAD and BOS never
    generated, blank lines give empty translations. CTranslate2 stops a sentence once
    `beam * patience` hypotheses are finished: at patience 1 that is fairseq's rule and
    `nmt translate --stopping finished` (the default); a larger `patience` approaches
    `--stopping exact`.
    `threads` 0 lets CTranslate2 choose; `compute_type` "default" keeps the export's weights.
    """
    require_package("ctranslate2", "ctranslate2")
    import ctranslate2

    root = Path(model_dir)
    if not (root / "model.bin").is_file() or not (root / SPM).is_file():
        raise CheckpointError("not a CTranslate2 export (needs model.bin and spm.model); create "
                              "one with `nmt export CHECKPOINT --to ctranslate2 OUT_DIR`",
                              where=str(root))
    cfg = ModelConfig.from_dict(read_export_meta(root)["config"])
    vocab = Vocabulary.from_file(root / SPM)
    try:
        translator = ctranslate2.Translator(str(root), device=device, compute_type=compute_type,
                                            intra_threads=threads)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"CTranslate2 cannot load the model ({exc})",
                              where=str(root)) from None
    sources = ctranslate2_sources(vocab, lines, cfg.max_positions)
    # One length limit per translate_batch call: group the lines by theirs.
    groups: dict[int, list[int]] = {}
    for i, src in enumerate(sources):
        if src:
            limit = min(max(int(len(src) * max_len_a) + max_len_b, 1), cfg.max_positions)
            groups.setdefault(limit, []).append(i)
    piece = vocab.sp.id_to_piece
    results = [""] * len(sources)
    for limit, rows in sorted(groups.items()):
        out = translator.translate_batch(
            [sources[i] for i in rows], max_batch_size=batch_size, beam_size=beam,
            patience=patience, length_penalty=alpha, max_decoding_length=limit,
            min_decoding_length=0, max_input_length=0, return_end_token=True,
            suppress_sequences=[[piece(cfg.pad_id)], [piece(cfg.bos_id)]])
        for i, res in zip(rows, out, strict=True):
            results[i] = vocab.decode(vocab.sp.piece_to_id(p) for p in res.hypotheses[0])
    return results


def ctranslate2_sources(vocab: Vocabulary, lines: Sequence[str],
                        max_positions: int) -> list[list[str]]:
    """Source pieces + EOS per line ([] for a blank line), cut to the model's positions."""
    out: list[list[str]] = []
    eos = vocab.sp.id_to_piece(vocab.eos_id)
    for number, line in enumerate(lines, 1):
        ids = vocab.encode(line) if line.strip() else []
        if len(ids) > max_positions - 1:
            log.warning("line %d: %d source tokens, truncated to the model's %d", number,
                        len(ids), max_positions - 1)
            ids = ids[:max_positions - 1]
        out.append([vocab.sp.id_to_piece(i) for i in ids] + [eos] if ids else [])
    return out
