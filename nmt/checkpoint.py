"""Self-describing checkpoints, written atomically and loaded without unpickling.

A checkpoint is one directory that `translate`, `average`, `info` and `export` need alone:

- `model.safetensors`: the weights (a tied matrix stored once, under its first name),
- `config.json`: the `ModelConfig`,
- `spm.model`: the SentencePiece model the weights were trained with,
- `meta.json`: format tag, training step and epoch (and whether an epoch ended there), the
  prepared data it was trained on (name, languages, content hash), the nmt version and anything
  the writer adds,
- `train_state.pt` (training checkpoints only): optimizer, schedule, loss scaler, RNG states and
  data position, saved with `torch.save` of plain tensors and containers and read back with
  `torch.load(weights_only=True)`.

A run directory keeps its checkpoints as `checkpoints/step-00001000/`; `list_checkpoints` finds
them in step order, so `nmt average --last 5` picks exactly what `nmt train` wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nmt import __version__, files
from nmt.config import ModelConfig
from nmt.errors import CheckpointError, ConfigError, DataError
from nmt.vocab import SPM_FILE, Vocabulary

CHECKPOINT_FORMAT = "nmt-checkpoint/1"
WEIGHTS, CONFIG, VOCAB, META, TRAIN_STATE = (
    "model.safetensors", "config.json", SPM_FILE, "meta.json", "train_state.pt")
STEP_DIR = re.compile(r"^step-(\d+)$")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


@dataclass
class Checkpoint:
    """A loaded checkpoint: everything needed to rebuild and run the model."""

    path: Path
    config: ModelConfig
    vocab: Vocabulary
    tensors: dict[str, Tensor]  # unique weights, as stored
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    def build_model(self, device: str | torch.device = "cpu") -> nn.Module:
        from nmt.model import Transformer

        model = Transformer(self.config)
        load_weights(model, self.tensors, where=str(self.path / WEIGHTS))
        return model.to(device).eval()


def unique_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state with each shared (tied) tensor once, under its first name."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict().items():
        key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().contiguous().cpu()
    return out


def load_weights(model: nn.Module, tensors: dict[str, Tensor], *, where: str) -> None:
    """Load unique tensors into `model`, filling tied aliases; errors name the file."""
    expected = unique_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"weights do not fit the config (missing: {missing[:3]}, unexpected: {unexpected[:3]})",
            where=where)
    for name, ref in expected.items():
        if tensors[name].shape != ref.shape:
            raise CheckpointError(
                f"{name} has shape {tuple(tensors[name].shape)}, config needs {tuple(ref.shape)}",
                where=where)
    model.load_state_dict(tensors, strict=False)


def write_checkpoint(
    path: str | os.PathLike,
    *,
    tensors: dict[str, Tensor],
    config: ModelConfig,
    vocab: Vocabulary,
    meta: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically: into a temporary sibling, then publish it.

    An existing checkpoint of the same name is replaced only once the new one is complete.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tmp = files.temp_name(path)
    full_meta = {"format": CHECKPOINT_FORMAT, "nmt_version": __version__,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta,
                 "vocab_sha256": vocab.sha256}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS),
                  metadata={"format": CHECKPOINT_FORMAT})
        (tmp / CONFIG).write_text(config.to_json() + "\n", encoding="utf-8")
        vocab.save(tmp / VOCAB)
        if train_state is not None:
            files.write_through(tmp / TRAIN_STATE, lambda f: torch.save(train_state, f))
        (tmp / META).write_text(json.dumps(full_meta, indent=2, sort_keys=True) + "\n",
                                encoding="utf-8")
        files.publish_directory(tmp, path)  # fsyncs the files, swaps, fsyncs the parent
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written copy behind
        needed = _tensor_bytes(tensors) + _tensor_bytes(train_state)
        failure = files.io_failure(exc, path, needed=needed)
        if failure is None:
            raise
        raise failure from None
    return path


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors inside `value` (dicts, lists and tuples searched)."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def save_checkpoint(path: str | os.PathLike, model: nn.Module, vocab: Vocabulary,
                    meta: dict[str, Any], train_state: dict[str, Any] | None = None) -> Path:
    """Write `model` (its config comes from `model.config`) as a checkpoint directory."""
    return write_checkpoint(path, tensors=unique_state_dict(model), config=model.config,
                            vocab=vocab, meta=meta, train_state=train_state)


def check_checkpoint_dir(path: str | os.PathLike) -> Path:
    """The checkpoint directory `path`, or a one-line error saying why it is not one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("no such checkpoint", where=str(path))
    if path.is_dir() and not (path / META).exists() and list_checkpoints(path):
        raise CheckpointError(
            "is a run directory; pass one of its checkpoints (e.g. "
            f"{list_checkpoints(path)[-1][1]}) or average them with `nmt average`",
            where=str(path))
    if not path.is_dir():
        raise CheckpointError("not a checkpoint directory", where=str(path))
    for name in (META, CONFIG, WEIGHTS, VOCAB):
        if not (path / name).is_file():
            raise CheckpointError(f"missing {name}: not an nmt checkpoint", where=str(path))
    return path


def read_meta(path: Path) -> dict[str, Any]:
    """meta.json, with the fields nmt relies on checked for type and range."""
    where = str(path / META)
    meta = _read_json(path / META)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"foreign checkpoint format {meta.get('format')!r} (expected {CHECKPOINT_FORMAT})",
            where=where)
    for key in ("step", "epoch"):
        value = meta.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
            raise CheckpointError(f"{key} must be an integer in [0, 2^62), not {value!r:.40}",
                                  where=where)
    if not isinstance(meta.get("epoch_end", False), bool):
        raise CheckpointError(f"epoch_end must be true or false, not {meta['epoch_end']!r}",
                              where=where)
    digest = meta.get("vocab_sha256")
    if digest is not None and not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        raise CheckpointError(f"vocab_sha256 is not a sha256 digest: {digest!r}", where=where)
    for key in ("data", "valid"):
        if key in meta and not isinstance(meta[key], dict | None):
            raise CheckpointError(f"{key} must be an object, not {meta[key]!r:.40}", where=where)
    named = STEP_DIR.match(Path(path).name)
    if named and int(named.group(1)) != meta.get("step", 0):
        raise CheckpointError(f"step {meta.get('step', 0)} in a directory named for step "
                              f"{int(named.group(1))}", where=where)
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(problem, where=where)
    return meta


def _meta_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with meta.json's descriptive fields (shown by `nmt info`, copied by
    `nmt average`), or None."""
    def text(value: Any) -> bool:
        return value is None or isinstance(value, str)

    def number(value: Any) -> bool:
        return value is None or (isinstance(value, int | float) and not isinstance(value, bool))

    for key in ("preset", "nmt_version"):
        if not text(meta.get(key)):
            return f"{key} must be a string, not {meta[key]!r:.40}"
    data = meta.get("data") or {}
    for key in ("name", "src_lang", "tgt_lang", "content_hash"):
        if not text(data.get(key)):
            return f"data.{key} must be a string, not {data[key]!r:.40}"
    if not isinstance(data.get("text", {}), dict):
        return f"data.text must be an object, not {data['text']!r:.40}"
    valid = meta.get("valid") or {}
    for key in ("loss", "nll", "ppl", "bleu"):
        if not number(valid.get(key)):
            return f"valid.{key} must be a number, not {valid[key]!r:.40}"
    averaged = meta.get("averaged_from")
    if averaged is not None and not (isinstance(averaged, list)
                                     and all(isinstance(a, str) for a in averaged)):
        return f"averaged_from must be a list of checkpoint names, not {averaged!r:.40}"
    return None


def read_config(path: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(_read_json(path / CONFIG))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"invalid model config ({exc})", where=str(path / CONFIG)) from None


def load_checkpoint(path: str | os.PathLike, *, device: str = "cpu") -> Checkpoint:
    """Load a checkpoint directory; never unpickles anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = check_checkpoint_dir(path)
    meta = read_meta(path)
    config = read_config(path)
    try:
        vocab = Vocabulary.from_file(path / VOCAB)
    except DataError as exc:
        raise CheckpointError(str(exc).split(": ", 1)[-1], where=str(path / VOCAB)) from None
    files.check_readable(path / WEIGHTS)
    try:
        tensors = load_file(str(path / WEIGHTS), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"truncated or corrupt weights ({exc})",
                              where=str(path / WEIGHTS)) from None
    check_tensors(tensors, where=str(path / WEIGHTS))
    problem = vocabulary_mismatch(config, vocab)
    if problem:
        raise CheckpointError(problem, where=str(path / CONFIG))
    check_vocab_hash(path, meta, vocab)
    return Checkpoint(path=path, config=config, vocab=vocab, tensors=tensors, meta=meta)


def vocabulary_mismatch(config: ModelConfig, vocab: Vocabulary) -> str | None:
    """How a model config does not fit a vocabulary (its size, its special ids), or None."""
    if len(vocab) != config.vocab_size:
        return f"the model expects {config.vocab_size} pieces but spm.model has {len(vocab)}"
    ids = {"pad_id": (config.pad_id, vocab.pad_id), "bos_id": (config.bos_id, vocab.bos_id),
           "eos_id": (config.eos_id, vocab.eos_id)}
    differ = [f"{k} {ours} (spm.model: {theirs})" for k, (ours, theirs) in ids.items()
              if ours != theirs]
    return f"special ids differ from the vocabulary's: {', '.join(differ)}" if differ else None


def check_tensors(tensors: dict[str, Tensor], *, where: str) -> None:
    """Weights must be floating point and finite (a NaN would only show as empty output)."""
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{name} is {str(tensor.dtype).removeprefix('torch.')}, not "
                                  "floating point", where=where)
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{name} holds NaN or infinite values", where=where)


def check_vocab_hash(path: Path, meta: dict[str, Any], vocab: Vocabulary) -> None:
    """Refuse a spm.model other than the one the weights were trained with (checkpoints older
    than the hash carry none and are accepted)."""
    recorded = meta.get("vocab_sha256")
    if recorded is not None and recorded != vocab.sha256:
        raise CheckpointError(
            f"is not the vocabulary these weights were trained with (sha256 {vocab.sha256[:16]}"
            f"..., meta.json records {recorded[:16]}...)", where=str(path / VOCAB))


def load_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state beside a checkpoint's weights, loaded with `weights_only=True`."""
    file = Path(path) / TRAIN_STATE
    if not file.is_file():
        raise CheckpointError("no training state (train_state.pt) to resume from",
                              where=str(path))
    try:
        with warnings.catch_warnings():  # torch warns at length before refusing some pickles
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or hostile files
        raise CheckpointError(f"unreadable training state ({type(exc).__name__})",
                              where=str(file)) from None


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run directory as (step, path), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and (child / META).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"unreadable JSON ({exc})", where=str(path)) from None
    if not isinstance(data, dict):
        raise CheckpointError("expected a JSON object", where=str(path))
    return data
