"""`nmt average`: the element-wise mean of several checkpoints' weights (Vaswani et al., 2017).

The paper averages the last 5 (base) or 20 (big) checkpoints of a run. Inputs are streamed one
at a time with safetensors' `safe_open` and summed into float64 accumulators, so averaging 20
big checkpoints needs about two models' memory (the float64 sums) however many are listed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nmt import files, workspace
from nmt.checkpoint import (
    CONFIG,
    META,
    TRAIN_STATE,
    VOCAB,
    WEIGHTS,
    check_checkpoint_dir,
    check_tensors,
    list_checkpoints,
    read_config,
    read_meta,
    vocabulary_mismatch,
    write_checkpoint,
)
from nmt.config import TRAINING_ONLY_FIELDS, ModelConfig
from nmt.errors import CheckpointError, DataError
from nmt.vocab import Vocabulary

log = logging.getLogger(__name__)

DEFAULT_LAST = 5  # the paper averages the last 5 checkpoints of the base model...
PAPER_LAST = {"big": 20}  # ...and the last 20 of the big one


@dataclass(frozen=True, kw_only=True)
class AverageSummary:
    output: Path  # the averaged checkpoint directory that was written
    inputs: list[Path]  # the averaged checkpoints, in the order given (or oldest first)
    steps: list[int]  # their training steps, as recorded in meta.json
    n_tensors: int  # unique weight tensors averaged
    n_parameters: int  # scalar values averaged
    seconds: float  # wall time of the whole operation


@dataclass(frozen=True, kw_only=True)
class _Input:
    path: Path  # checkpoint directory
    meta: dict[str, Any]  # its meta.json
    config: ModelConfig  # its config.json
    vocab_sha256: str  # sha256 of its spm.model bytes

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def run(paths: list[Path], *, output: Path | None = None,
        last: int | None = None) -> AverageSummary:
    """Average the checkpoints `paths` (or, with `last`, the newest `last` of one run directory)
    into a self-contained checkpoint at `output`.

    Without paths: the newest run in ./runs. For a run directory, `output` defaults to RUN/avg
    and `last` to the paper's 5 (base) or 20 (big, by the run's preset).
    """
    start = time.perf_counter()
    paths, output, last = _defaults(list(paths), output, last)
    with files.output_lock(output, "the averaged checkpoint"):
        return _average(paths, output, last, start)


def _defaults(paths: list[Path], output: Path | None, last: int | None
              ) -> tuple[list[Path], Path, int | None]:
    if not paths:
        choice = workspace.newest_run()
        log.info("averaging %s (%s)", choice.path, choice.why)
        paths = [choice.path]
    run_dir = paths[0] if len(paths) == 1 and _is_run_dir(paths[0]) else None
    if run_dir is not None and last is None:
        last = PAPER_LAST.get(_run_setting(run_dir, "preset"), DEFAULT_LAST)
        log.info("averaging the last %d checkpoints (the paper's number for this preset; "
                 "--last N for another)", last)
    if output is None:
        from nmt.train import rundir

        lone = paths[0] if len(paths) == 1 else None
        if run_dir is None and lone is not None and rundir.checkpoints_dir(lone).is_dir() \
                and not (lone / META).exists():  # a run that has written no checkpoint yet
            raise CheckpointError("no checkpoints (checkpoints/step-*) in this run directory",
                                  where=str(lone))
        if run_dir is None:
            raise CheckpointError("give -o OUTPUT: where to write the average of the listed "
                                  "checkpoints")
        output = run_dir / workspace.AVERAGE_DIR
        log.info("writing %s", output)
    return paths, output, last


def _average(paths: list[Path], output: Path, last: int | None, start: float) -> AverageSummary:
    checkpoints = resolve_inputs(paths, last=last)
    _check_output(output, checkpoints)
    inputs = [_describe(path) for path in checkpoints]
    _check_compatible(inputs)
    tensors = average_tensors([i.path / WEIGHTS for i in inputs])
    newest = max(enumerate(inputs), key=lambda pair: (pair[1].step, pair[0]))[1]
    meta = {key: newest.meta[key] for key in ("step", "epoch", "data") if key in newest.meta}
    meta["averaged_from"] = [i.path.name for i in inputs]
    vocab = _vocabulary(inputs[0])
    write_checkpoint(output, tensors=tensors, config=newest.config, vocab=vocab, meta=meta)
    log.debug("wrote %s", output)
    return AverageSummary(
        output=output, inputs=[i.path for i in inputs], steps=[i.step for i in inputs],
        n_tensors=len(tensors), n_parameters=sum(t.numel() for t in tensors.values()),
        seconds=time.perf_counter() - start)


def resolve_inputs(paths: list[Path], *, last: int | None) -> list[Path]:
    """The checkpoint directories to average, each checked to be a complete checkpoint."""
    if not paths:
        raise CheckpointError("no checkpoints given: list checkpoint directories, "
                              "or one run directory with --last N")
    if last is None:
        for path in paths:
            if path.is_dir() and not (path / META).exists() and _run_checkpoints(path):
                raise CheckpointError(
                    "is a run directory; add --last N to average its N newest checkpoints",
                    where=str(path))
        checked = [check_checkpoint_dir(p) for p in paths]
        seen: dict[Path, Path] = {}
        for path in checked:
            if path.resolve() in seen:
                raise CheckpointError("listed twice", where=str(path))
            seen[path.resolve()] = path
        return checked
    if len(paths) != 1:
        raise CheckpointError(f"--last takes one run directory, got {len(paths)} paths")
    if last < 1:
        raise CheckpointError(f"--last must be at least 1, got {last}")
    run_dir = paths[0]
    found = _run_checkpoints(run_dir)
    if not found:
        raise CheckpointError("no checkpoints (checkpoints/step-*) in this run directory",
                              where=str(run_dir))
    found = scheduled(found, _save_every(run_dir))
    if len(found) < last:
        log.warning("%s: --last %d asks for more checkpoints than the %d that exist (%s); "
                    "averaging those", run_dir, last, len(found),
                    ", ".join(p.name for _, p in found))
    return [check_checkpoint_dir(p) for _, p in found[-last:]]


def scheduled(found: list[tuple[int, Path]], every: int | None) -> list[tuple[int, Path]]:
    """The checkpoints of the run's regular cadence, so the last N are evenly spaced.

    That is the `save_every` grid (the paper's 5/20, written at fixed intervals), or the
    epoch-end checkpoints where those outnumber it (fairseq's `--num-epoch-checkpoints`; a run
    whose interval lies beyond its last step). Checkpoints off both, written when a run stopped
    (max time, a signal, a last step between saves), are left out. Neither cadence found: all.
    """
    grid = [(step, path) for step, path in found if every and step % every == 0]
    ends = [(step, path) for step, path in found if _epoch_end(path)]
    return (ends if len(ends) > len(grid) else grid) or found


def _epoch_end(path: Path) -> bool:
    """Whether `nmt train` wrote this checkpoint where an epoch ended (False if unrecorded)."""
    return read_meta(path).get("epoch_end") is True


def _save_every(run_dir: Path) -> int | None:
    """The run's checkpoint interval, from its training config (None if unknown)."""
    every = _run_setting(run_dir, "save_every")
    return every if isinstance(every, int) and not isinstance(every, bool) and every > 0 else None


def _run_setting(run_dir: Path, key: str) -> Any:
    """One field of a run directory's saved training config (None if unreadable)."""
    import json

    from nmt.train import rundir

    path = rundir.existing_config(run_dir if run_dir.name != "checkpoints" else run_dir.parent)
    try:
        values = json.loads(path.read_text(encoding="utf-8")) if path else {}
    except (OSError, ValueError):
        return None
    return values.get(key) if isinstance(values, dict) else None


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and not (path / META).exists() and bool(_run_checkpoints(path))


def _run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoints of a run directory; its `checkpoints/` folder is accepted too."""
    found = list_checkpoints(run_dir)
    if not found and run_dir.name == "checkpoints":
        found = list_checkpoints(run_dir.parent)
    return found


def _check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse an output path that would destroy an input or something that is not ours."""
    target = output.resolve()
    for path in inputs:
        source = path.resolve()
        if target == source:
            raise CheckpointError("is one of the checkpoints being averaged; choose another -o",
                                  where=str(output))
        if target in source.parents:
            raise CheckpointError(
                f"contains the input {path}; writing there would replace it, choose another -o",
                where=str(output))
    if output.exists():
        if not output.is_dir() or not (output / META).is_file():
            raise CheckpointError("exists and is not an nmt checkpoint; refusing to replace it",
                                  where=str(output))
        if (output / TRAIN_STATE).exists():
            raise CheckpointError(
                "is a training checkpoint (has train_state.pt); refusing to replace it",
                where=str(output))


def _describe(path: Path) -> _Input:
    try:
        vocab_bytes = (path / VOCAB).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {VOCAB} ({exc.strerror})", where=str(path)) from None
    return _Input(path=path, meta=read_meta(path), config=read_config(path),
                  vocab_sha256=hashlib.sha256(vocab_bytes).hexdigest())


def _check_compatible(inputs: list[_Input]) -> None:
    """Every input must have the first's architecture and vocabulary."""
    first = inputs[0]
    arch = _architecture(first.config)
    for other in inputs[1:]:
        pair = f"{first.path} and {other.path}"
        theirs = _architecture(other.config)
        for field in arch:
            if arch[field] != theirs[field]:
                raise CheckpointError(
                    f"cannot average {pair}: different architectures ({CONFIG} field "
                    f"{field}: {arch[field]!r} vs {theirs[field]!r})")
        if first.vocab_sha256 != other.vocab_sha256:
            raise CheckpointError(
                f"cannot average {pair}: different vocabularies ({VOCAB} sha256 "
                f"{first.vocab_sha256[:12]} vs {other.vocab_sha256[:12]})")
        first_data = (first.meta.get("data") or {}).get("content_hash")
        other_data = (other.meta.get("data") or {}).get("content_hash")
        if first_data and other_data and first_data != other_data:
            log.warning("%s and %s were trained on different data; averaging anyway",
                        first.path, other.path)


def _architecture(config: ModelConfig) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in TRAINING_ONLY_FIELDS}


def average_tensors(files: list[Path]) -> dict[str, Tensor]:
    """Element-wise mean of the tensors in safetensors `files`, one file open at a time.

    Sums are kept in float64 and cast back to the first file's dtypes; key sets and shapes
    must agree (the error names both files and the tensor).
    """
    sums: dict[str, Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for index, file in enumerate(files):
        with _open(file) as handle:
            keys = set(handle.keys())
            if index == 0:
                shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in keys}
            else:
                _check_same_tensors(files[0], file, shapes, handle, keys)
            for key in sorted(keys):
                tensor = handle.get_tensor(key)
                check_tensors({key: tensor}, where=str(file))
                if index == 0:
                    dtypes[key] = tensor.dtype
                    sums[key] = tensor.to(torch.float64)  # a fresh copy: safe to add into
                else:
                    sums[key] += tensor.to(torch.float64)
                del tensor
    n = len(files)
    return {key: (sums.pop(key) / n).to(dtypes[key]) for key in sorted(shapes)}


def _open(file: Path):
    from safetensors import SafetensorError, safe_open

    files.check_readable(file)
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"truncated or corrupt weights ({exc})", where=str(file)) from None


def _check_same_tensors(first: Path, file: Path, shapes: dict[str, tuple[int, ...]], handle,
                        keys: set[str]) -> None:
    pair = f"{first.parent} and {file.parent}"
    if keys != set(shapes):
        odd = sorted(keys ^ set(shapes))
        raise CheckpointError(f"cannot average {pair}: different tensors "
                              f"({len(odd)} not in both, e.g. {odd[0]})")
    for key in sorted(keys):
        shape = tuple(handle.get_slice(key).get_shape())
        if shape != shapes[key]:
            raise CheckpointError(f"cannot average {pair}: tensor {key} has shape "
                                  f"{shapes[key]} vs {shape}")


def _vocabulary(first: _Input) -> Vocabulary:
    try:
        vocab = Vocabulary.from_file(first.path / VOCAB)
    except DataError as exc:
        raise CheckpointError(str(exc).split(": ", 1)[-1], where=str(first.path / VOCAB)) from None
    problem = vocabulary_mismatch(first.config, vocab)
    if problem:
        raise CheckpointError(problem, where=str(first.path))
    return vocab

