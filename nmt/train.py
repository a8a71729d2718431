"""`nmt train`: the paper's training recipe on prepared data, on one worker or many.

The recipe (Vaswani et al., 2017, section 5): batches of about 25,000 tokens grouped by length,
Adam (0.9, 0.98, 1e-9) with lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), label
smoothing 0.1, dropout 0.1 (base) or 0.3 (big), 100k steps (base) or 300k (big). Every value is a
field of `TrainConfig`, so a flag or a JSON config file overrides it.

A run directory holds `config.json` (the resolved `TrainConfig`), `metrics.jsonl`,
`checkpoints/step-XXXXXXXX/` and `best/`. Training resumes from its newest checkpoint exactly:
model, optimizer, loss scaler, every RNG and the position in the data order are restored, and the
data order of an epoch depends on (seed, epoch) alone, so an interrupted run ends with the same
weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nmt import batching, distributed
from nmt import config as model_presets
from nmt.checkpoint import (
    TRAIN_STATE,
    checkpoint_name,
    list_checkpoints,
    load_checkpoint,
    load_train_state,
    load_weights,
    read_config,
    read_meta,
    save_checkpoint,
    unique_state_dict,
)
from nmt.config import ModelConfig
from nmt.data import ParallelSplit, PreparedData, load_prepared
from nmt.distributed import Launch, World
from nmt.errors import CheckpointError, ConfigError, NmtError
from nmt.loss import smoothed_loss

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("noam", "inverse_sqrt")
MODEL_FLAGS = ("dropout",)  # command-line overrides that change the ModelConfig
KEEP_TRAIN_STATE = 2  # newest checkpoints that keep train_state.pt; older ones keep weights only


class TrainingError(NmtError):
    """Training cannot go on (diverged, out of memory); the last checkpoint is intact."""


# --- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: str = ""  # prepared data directory (written by `nmt prepare`)
    run: str = ""  # run directory: config.json, metrics.jsonl, checkpoints/, best/
    preset: str = "base"  # the model preset these defaults came from
    model: ModelConfig = field(default_factory=model_presets.base)  # architecture and dropout
    batch_tokens: int = 25_000  # tokens per update over all workers (padded longer side per pair)
    max_tokens_per_gpu: int | None = None  # memory bound of one micro-batch; sets update_freq
    update_freq: int | None = None  # micro-batches accumulated per update; None = derived
    max_steps: int = 100_000  # stop after this many updates
    max_epochs: int | None = None  # stop after this many passes over the data
    max_time: float | None = None  # stop after this many seconds of training (over resumes)
    patience: int | None = None  # stop after this many validations without a better score
    lr_schedule: str = "noam"  # noam: the paper's formula; inverse_sqrt: fairseq's form
    lr: float | None = None  # peak lr at the end of warmup; None: noam (d*warmup)^-0.5, else 5e-4
    warmup: int = 4000  # warmup updates
    warmup_init_lr: float = 1e-7  # inverse_sqrt only: lr at step 0, rising linearly to the peak
    adam_betas: tuple[float, float] = (0.9, 0.98)  # Adam beta1, beta2
    adam_eps: float = 1e-9  # Adam epsilon
    weight_decay: float = 0.0  # L2 penalty in Adam (the paper uses none)
    clip_norm: float = 0.0  # clip the gradient norm to this; 0 = no clipping
    label_smoothing: float = 0.1  # epsilon_ls
    precision: str = "auto"  # auto (bf16 if supported, else fp16, fp32 on CPU) | fp32 | bf16 | fp16
    max_bad_steps: int = 5  # non-finite losses in a row before training stops with an error
    seed: int = 1  # seeds weights, dropout and the data order
    save_every: int = 1000  # checkpoint (and validate) every this many updates
    save_epochs: bool = True  # also checkpoint at the end of every epoch
    keep_last: int = 20  # step checkpoints kept (enough for the big model's 20-way average)
    valid_bleu_lines: int | None = None  # validation lines decoded for BLEU; None all, 0 none
    log_every: int = 100  # updates between metrics.jsonl records
    tensorboard: bool = False  # also write TensorBoard event files into RUN/tensorboard

    def __post_init__(self) -> None:
        positive = ("batch_tokens", "max_steps", "warmup", "save_every", "keep_last",
                    "log_every", "max_bad_steps", "max_tokens_per_gpu", "update_freq",
                    "max_epochs", "patience")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; "
                              f"choose {', '.join(PRECISIONS)}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; "
                              f"choose {', '.join(SCHEDULES)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing {self.label_smoothing} is outside [0, 1)")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"lr must be positive, not {self.lr}")
        if self.max_time is not None and self.max_time <= 0:
            raise ConfigError(f"max_time must be positive, not {self.max_time}")
        if self.valid_bleu_lines is not None and self.valid_bleu_lines < 0:
            raise ConfigError("valid_bleu_lines must be 0 or more")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out


def _base_recipe() -> TrainConfig:
    """The paper's base model: 100k updates of ~25k tokens, warmup 4000 (TrainConfig defaults)."""
    return TrainConfig(preset="base", model=model_presets.base(), max_tokens_per_gpu=12_500)


def _big_recipe() -> TrainConfig:
    """The paper's big model: 300k updates, dropout 0.3 (from the model preset)."""
    return dataclasses.replace(_base_recipe(), preset="big", model=model_presets.big(),
                               max_steps=300_000, max_tokens_per_gpu=6_250)


def _small_recipe() -> TrainConfig:
    """Multi30k-sized data on one GPU: 8k-token batches, 20k updates, shorter warmup."""
    return dataclasses.replace(_base_recipe(), preset="small", model=model_presets.small(),
                               batch_tokens=8192, max_tokens_per_gpu=None, max_steps=20_000,
                               warmup=2000, save_every=1000)


def _tiny_recipe() -> TrainConfig:
    """CPU smoke runs: 2k-token batches, warmup 400, a validation every 200 updates on 200
    lines, so BLEU moves within minutes on two cores."""
    return dataclasses.replace(_base_recipe(), preset="tiny", model=model_presets.tiny(),
                               batch_tokens=2048, max_tokens_per_gpu=None, max_steps=3000,
                               warmup=400, save_every=200, log_every=25, valid_bleu_lines=200)


RECIPES = {"base": _base_recipe, "big": _big_recipe, "small": _small_recipe,
           "tiny": _tiny_recipe}


def recipe(name: str) -> TrainConfig:
    """The training defaults of a model preset (a preset without its own recipe gets base's)."""
    if name in RECIPES:
        return RECIPES[name]()
    model = model_presets.preset(name)  # raises ConfigError for an unknown name
    return dataclasses.replace(_base_recipe(), preset=name, model=model)


def apply_overrides(cfg: TrainConfig, values: dict[str, Any], *, where: str | None = None
                    ) -> TrainConfig:
    """`cfg` with fields replaced: top-level fields, `model` (a dict of model fields) and the
    model flags (`dropout`)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = dict(values)
    model_values = dict(values.pop("model", None) or {})
    for name in MODEL_FLAGS:
        if name in values:
            model_values[name] = values.pop(name)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown training config fields: {', '.join(unknown)}", where=where)
    if isinstance(values.get("max_time"), str):
        values["max_time"] = parse_duration(values["max_time"])
    if "adam_betas" in values:
        values["adam_betas"] = parse_betas(values["adam_betas"], where=where)
    try:
        model = ModelConfig.from_dict({**cfg.model.to_dict(), **model_values})
        return dataclasses.replace(cfg, **values, model=model)
    except TypeError as exc:
        raise ConfigError(f"invalid config ({exc})", where=where) from None
    except ConfigError as exc:
        raise ConfigError(str(exc), where=where) from None


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A JSON config file (e.g. a run's config.json) on top of the recipe of its `preset`."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", where=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc.msg})", where=f"{path}:{exc.lineno}") from None
    if not isinstance(values, dict):
        raise ConfigError("expected a JSON object", where=str(path))
    base = recipe(str(values.get("preset", "base")))
    return apply_overrides(base, values, where=str(path))


def resolve_config(*, data: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
                   preset: str | None = None, config_file: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Layers: the preset's recipe, or a config file, or (resuming without --preset) the run's
    own config.json; then the flags in `overrides`; then DATA_DIR and --run."""
    if preset is not None and config_file is not None:
        raise ConfigError("give --preset or --config, not both (a config file names its preset)")
    run_config = Path(run) / "config.json" if run is not None else None
    if config_file is not None:
        cfg = load_config(config_file)
    elif preset is None and run_config is not None and run_config.is_file():
        cfg = load_config(run_config)
    else:
        cfg = recipe(preset or "base")
    paths = {k: str(v) for k, v in (("data", data), ("run", run)) if v is not None}
    cfg = apply_overrides(cfg, {**(overrides or {}), **paths})
    if not cfg.data:
        raise ConfigError("no data directory: give DATA_DIR (from `nmt prepare`)")
    if not cfg.run:
        raise ConfigError("no run directory: give --run DIR")
    return cfg


def with_vocabulary(cfg: TrainConfig, data: PreparedData) -> TrainConfig:
    """The model sized for the data's vocabulary and using its special-token ids."""
    v = data.vocab
    model = dataclasses.replace(cfg.model, vocab_size=len(v), pad_id=v.pad_id, bos_id=v.bos_id,
                                eos_id=v.eos_id)
    return dataclasses.replace(cfg, model=model)


def parse_betas(value: Any, *, where: str | None = None) -> tuple[float, float]:
    """(beta1, beta2) from a pair or from text like `0.9,0.98`."""
    parts = value.split(",") if isinstance(value, str) else value
    try:
        betas = tuple(float(b) for b in parts)
    except (TypeError, ValueError):
        betas = ()
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"adam_betas must be two numbers in [0, 1), not {value!r}", where=where)
    return betas


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `45m`, `2.5h` or `3d`."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"cannot read duration {text!r}; use e.g. 3600, 90m, 2.5h or 1d")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale


# --- schedule and loss ---------------------------------------------------------------------------
def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The learning rate of update number `step` (counting from 1)."""
    step = max(step, 1)
    w = cfg.warmup
    if cfg.lr_schedule == "noam":
        lr = cfg.model.d_model ** -0.5 * min(step ** -0.5, step * w ** -1.5)
        if cfg.lr is not None:  # same shape, rescaled so that the peak (at step w) is cfg.lr
            lr *= cfg.lr / (cfg.model.d_model * w) ** -0.5
        return lr
    peak = cfg.lr if cfg.lr is not None else 5e-4
    if step < w:
        return cfg.warmup_init_lr + (peak - cfg.warmup_init_lr) * step / w
    return peak * (w / step) ** 0.5


class Objective(nn.Module):
    """What the training step calls (and DDP wraps): the model up to its summed label-smoothed
    loss, with the output projection and softmax computed only at the real target positions."""

    def __init__(self, model: nn.Module, eps: float) -> None:
        super().__init__()
        self.model = model
        self.eps = eps

    def forward(self, src: Tensor, tgt_in: Tensor, tgt_out: Tensor, real: Tensor
                ) -> tuple[Tensor, Tensor]:
        # src (B, S), tgt_in/tgt_out (B, T); real (N,) indices of non-padding targets in B*T
        model = self.model
        memory, src_mask = model.encode(src)  # (B, S, D)
        hidden = model.decoder(tgt_in, memory, src_mask)  # (B, T, D)
        hidden = hidden.reshape(-1, hidden.size(-1)).index_select(0, real)  # (N, D)
        target = tgt_out.reshape(-1).index_select(0, real)  # (N,)
        return smoothed_loss(model.output(hidden), target, eps=self.eps,
                             pad_id=model.config.pad_id)


# --- reporting -----------------------------------------------------------------------------------
class Reporter:
    """Receives progress on rank 0. This one logs; the CLI passes one with a Rich live display.

    Instances travel to spawned workers, so they must pickle (create consoles lazily).
    """

    def setup(self, rank: int) -> None:
        """Called first in every worker process (spawned workers start with no logging)."""
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                                format="%(message)s")

    def start(self, info: dict[str, Any]) -> None:
        log.info("training from step %d to %d: %s", info["step"], info["max_steps"],
                 info["layout"])

    def progress(self, stats: dict[str, Any]) -> None:
        """Every update: step, epoch, loss, ppl, lr, tokens_per_s, gpu_mem_gb, eta_s."""

    def record(self, record: dict[str, Any]) -> None:
        """Every metrics.jsonl record (kind "train" or "valid")."""
        log.info(format_record(record))

    def stop(self) -> None:
        """Training is over (or failed); release the display."""


def format_record(r: dict[str, Any]) -> str:
    if r["kind"] == "valid":
        bleu = f", BLEU {r['bleu']:.2f}" if r.get("bleu") is not None else ""
        return (f"step {r['step']:,} valid: loss {r['loss']:.3f}, ppl {r['ppl']:.2f}{bleu}"
                + (" (best)" if r.get("best") else ""))
    return (f"step {r['step']:,} epoch {r['epoch']}: loss {r['loss']:.3f}, ppl {r['ppl']:.2f}, "
            f"lr {r['lr']:.2e}, {r['tokens_per_s']:,.0f} tok/s")


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and, optionally, TensorBoard events. Rank 0."""

    def __init__(self, run: Path, tensorboard: bool, reporter: Reporter) -> None:
        self.path = run / "metrics.jsonl"
        self.reporter = reporter
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop records a killed run wrote after the checkpoint it resumes from."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if _record_step(line) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any], *, show: bool = True) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "kind") and isinstance(value, int | float):
                    self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self.writer.flush()
        if show:
            self.reporter.record(record)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _record_step(line: str) -> float:
    """The step of a metrics line; infinite for a line cut short by a kill (it is dropped)."""
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError, TypeError):
        return math.inf


# --- the session: everything fixed for a run -----------------------------------------------------
@dataclass
class Session:
    cfg: TrainConfig  # the resolved config
    world: World  # this worker's rank, world size and device
    data: PreparedData  # the prepared data directory
    train: ParallelSplit  # training pairs
    valid: ParallelSplit | None  # validation pairs, if the data has them
    sizes: np.ndarray  # (N,) padded size of each training pair
    src_lengths: np.ndarray  # (N,) source tokens per pair (without EOS)
    tgt_lengths: np.ndarray  # (N,) target tokens per pair (without BOS/EOS)
    usable: np.ndarray  # indices of pairs short enough for the model's positions
    layout: batching.Layout  # world size x update_freq and the micro-batch bound
    precision: str  # fp32 | bf16 | fp16, resolved for the device
    run: Path  # the run directory
    reporter: Reporter  # progress display (rank 0)
    metrics: MetricsLog | None  # rank 0 only

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        return batching.epoch_batches(self.sizes, self.src_lengths, self.tgt_lengths,
                                      self.usable, max_tokens=self.cfg.batch_tokens,
                                      seed=self.cfg.seed, epoch=epoch)

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.world.device.type, dtype=dtype)


def resolve_precision(requested: str, device: torch.device) -> str:
    if device.type == "cpu":
        if requested == "fp16":
            raise ConfigError("--precision fp16 needs a GPU; use bf16 or fp32 on CPU")
        return "bf16" if requested == "bf16" else "fp32"
    if requested == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def open_session(cfg: TrainConfig, world: World, reporter: Reporter) -> Session:
    data = load_prepared(cfg.data)
    train = data.split("train")
    if len(train) == 0:
        raise ConfigError("the training split is empty", where=cfg.data)
    valid = data.split("valid") if data.has_split("valid") else None
    if valid is None:
        log.warning("%s has no valid split: no validation, BLEU or early stopping", cfg.data)
    src_len, tgt_len = train.src.lengths, train.tgt.lengths
    sizes = batching.pair_sizes(src_len, tgt_len)
    limit = cfg.model.max_positions
    usable = np.nonzero(sizes <= limit)[0]
    if len(usable) < len(sizes):
        log.warning("skipping %d training pairs longer than max_positions %d",
                    len(sizes) - len(usable), limit)
    if len(usable) == 0:
        raise ConfigError(f"no training pair fits max_positions {limit}", where=cfg.data)
    longest = int(sizes[usable].max())
    if longest > cfg.batch_tokens:
        raise ConfigError(f"--batch-tokens {cfg.batch_tokens} cannot hold the longest training "
                          f"pair ({longest} tokens); raise it")
    layout = batching.plan_layout(batch_tokens=cfg.batch_tokens, world_size=world.size,
                                  longest=longest, max_tokens_per_gpu=cfg.max_tokens_per_gpu,
                                  update_freq=cfg.update_freq)
    run = Path(cfg.run)
    metrics = MetricsLog(run, cfg.tensorboard, reporter) if world.is_main else None
    return Session(cfg=cfg, world=world, data=data, train=train, valid=valid, sizes=sizes,
                   src_lengths=src_len, tgt_lengths=tgt_len, usable=usable, layout=layout,
                   precision=resolve_precision(cfg.precision, world.device), run=run,
                   reporter=reporter, metrics=metrics)


# --- training state ------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Everything that changes during training; a checkpoint saves and restores all of it."""

    model: nn.Module  # the Transformer
    net: nn.Module  # what the step calls: the model's `Objective`, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer  # Adam
    scaler: torch.amp.GradScaler  # dynamic loss scaling (enabled for fp16 only)
    step: int = 0  # updates applied
    epoch: int = 1  # the epoch in progress, from 1
    batch_index: int = 0  # the next global batch of this epoch's order
    elapsed: float = 0.0  # seconds spent training, summed over resumes
    best_score: float | None = None  # best validation BLEU (or -loss when BLEU is off)
    best_step: int | None = None  # the step that scored it
    stale: int = 0  # validations since the best
    bad_streak: int = 0  # consecutive updates skipped for a non-finite loss
    saved_at: tuple[int, int, int] | None = None  # (step, epoch, batch_index) last checkpointed

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.step, self.epoch, self.batch_index)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_state(sess: Session) -> TrainState:
    """A freshly initialised model (the same on every worker) and its optimizer."""
    from nmt.model import Transformer

    cfg, world = sess.cfg, sess.world
    seed_everything(cfg.seed)
    model = Transformer(cfg.model).to(world.device)
    seed_everything(cfg.seed + world.rank)  # each worker its own dropout stream
    net: nn.Module = Objective(model, cfg.label_smoothing)
    if world.distributed:
        ids = [world.device] if world.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(world.device.type, init_scale=2.0 ** 7,
                                  enabled=sess.precision == "fp16")
    return TrainState(model=model, net=net, optimizer=optimizer, scaler=scaler)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the recipe's betas, epsilon and L2 penalty, as one fused kernel per step."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate(cfg, 1), betas=cfg.adam_betas,
                            eps=cfg.adam_eps, weight_decay=cfg.weight_decay, fused=True)


def real_positions(tgt_out: Tensor, pad_id: int) -> Tensor:
    """Indices (N,) of the non-padding entries of the flattened targets (B*T), computed where
    `tgt_out` lives: call it on the host copy, so the step never waits for the device."""
    return (tgt_out.reshape(-1) != pad_id).nonzero().squeeze(1)


def rng_state(world: World) -> dict[str, Any]:
    """Every RNG of this worker, as plain tensors and numbers."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": (torch.cuda.get_rng_state(world.device) if world.device.type == "cuda"
                 else None),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(saved: dict[str, Any], world: World) -> None:
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] is not None and world.device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], world.device)
    n = saved["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))


def train_state_dict(sess: Session, state: TrainState, rngs: list[dict]) -> dict[str, Any]:
    return {
        "step": state.step, "epoch": state.epoch, "batch_index": state.batch_index,
        "elapsed": state.elapsed, "best_score": state.best_score, "best_step": state.best_step,
        "stale": state.stale, "bad_streak": state.bad_streak,
        "optimizer": state.optimizer.state_dict(), "scaler": state.scaler.state_dict(),
        "lr_schedule": sess.cfg.lr_schedule, "rng": rngs, "world_size": sess.world.size,
        "order": {"seed": sess.cfg.seed, "batch_tokens": sess.cfg.batch_tokens},
    }


# --- checkpoints ---------------------------------------------------------------------------------
def checkpoint_meta(sess: Session, state: TrainState, valid: dict | None) -> dict[str, Any]:
    data = sess.data
    meta: dict[str, Any] = {
        "step": state.step, "epoch": state.epoch, "preset": sess.cfg.preset,
        "data": {"name": data.name, "src_lang": data.src_lang, "tgt_lang": data.tgt_lang,
                 "content_hash": data.content_hash},
    }
    if valid is not None:
        meta["valid"] = {k: valid[k] for k in ("loss", "nll", "ppl", "bleu")}
    return meta


def save(sess: Session, state: TrainState, valid: dict | None = None) -> Path:
    """Write a step checkpoint (rank 0) with every worker's RNG state; prune old ones."""
    rngs = distributed.gather_objects(rng_state(sess.world), sess.world)
    path = sess.run / "checkpoints" / checkpoint_name(state.step)
    if sess.world.is_main:
        save_checkpoint(path, state.model, sess.data.vocab, checkpoint_meta(sess, state, valid),
                        train_state=train_state_dict(sess, state, rngs))
        prune(sess.run, sess.cfg.keep_last)
    state.saved_at = state.position
    return path


def prune(run: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` step checkpoints, and train_state.pt in the newest few."""
    found = list_checkpoints(run)
    for _, path in found[:-keep_last]:
        trash = path.with_name(f".trash-{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for _, path in found[-keep_last:][:-KEEP_TRAIN_STATE]:
        (path / TRAIN_STATE).unlink(missing_ok=True)


def clean_partial_writes(run: Path) -> None:
    """Remove what a killed writer left behind (temporary and half-deleted checkpoints)."""
    root = run / "checkpoints"
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".") and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)


def latest_resumable(run: Path) -> Path | None:
    for _, path in reversed(list_checkpoints(run)):
        if (path / TRAIN_STATE).is_file():
            return path
    return None


def check_compatible(sess: Session, path: Path) -> None:
    """Refuse to resume a run on other data or with another architecture."""
    meta = read_meta(path)
    theirs = (meta.get("data") or {}).get("content_hash")
    if theirs != sess.data.content_hash:
        raise ConfigError(
            f"the run was trained on other data ({(meta.get('data') or {}).get('name')}, "
            f"content {str(theirs)[:12]}) than {sess.cfg.data} (content "
            f"{sess.data.content_hash[:12]}); use a new --run", where=str(sess.run))
    ignore = {"dropout", "attn_dropout", "activation_dropout"}
    old, new = read_config(path).to_dict(), sess.cfg.model.to_dict()
    differ = [f"{k} {old[k]} -> {new[k]}" for k in old if k not in ignore and old[k] != new[k]]
    if differ:
        raise ConfigError(f"the run's checkpoints have another architecture ({', '.join(differ)});"
                          " use a new --run or the run's own settings", where=str(sess.run))


def resume(sess: Session, state: TrainState) -> Path | None:
    """Restore `state` from the run's newest checkpoint, if there is one."""
    if sess.world.is_main:
        clean_partial_writes(sess.run)
    path = latest_resumable(sess.run)
    if path is None:
        return None
    check_compatible(sess, path)
    ckpt = load_checkpoint(path)
    load_weights(state.model, {k: v.to(sess.world.device) for k, v in ckpt.tensors.items()},
                 where=str(path))
    saved = load_train_state(path)
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
        state.scaler.load_state_dict(saved["scaler"])
        for name in ("step", "epoch", "batch_index", "elapsed", "best_score", "best_step",
                     "stale", "bad_streak"):
            setattr(state, name, saved[name])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"training state does not fit ({exc})",
                              where=str(path / TRAIN_STATE)) from None
    restore_rngs(sess, saved)
    warn_order_change(sess, saved)
    state.saved_at = state.position
    if sess.metrics is not None:
        sess.metrics.truncate_after(state.step)
        repair_best(sess, state)
    return path


def restore_rngs(sess: Session, saved: dict[str, Any]) -> None:
    rngs = saved["rng"]
    if len(rngs) == sess.world.size:
        set_rng_state(rngs[sess.world.rank], sess.world)
    else:
        log.warning("resuming %d-worker state on %d workers: dropout streams are re-seeded",
                    len(rngs), sess.world.size)
        seed_everything(sess.cfg.seed + 1_000_003 * saved["step"] + sess.world.rank)


def warn_order_change(sess: Session, saved: dict[str, Any]) -> None:
    order = saved.get("order") or {}
    now = {"seed": sess.cfg.seed, "batch_tokens": sess.cfg.batch_tokens}
    if order and order != now and sess.world.is_main:
        log.warning("seed or batch tokens changed since the checkpoint (%s -> %s): the rest of "
                    "this epoch follows a different data order", order, now)


def repair_best(sess: Session, state: TrainState) -> None:
    """If a kill fell between writing a checkpoint and copying it to best/, finish the copy."""
    best = sess.run / "best"
    if state.best_step != state.step:
        return
    with contextlib.suppress(CheckpointError):
        if read_meta(best).get("step") == state.step:
            return
    ckpt = sess.run / "checkpoints" / checkpoint_name(state.step)
    shutil.rmtree(best.with_name(".best.tmp"), ignore_errors=True)
    shutil.copytree(ckpt, best.with_name(".best.tmp"), ignore=shutil.ignore_patterns(TRAIN_STATE))
    if best.exists():
        shutil.rmtree(best)
    os.replace(best.with_name(".best.tmp"), best)


# --- validation ----------------------------------------------------------------------------------
@torch.no_grad()
def validate(sess: Session, state: TrainState) -> dict[str, Any]:
    """Loss and perplexity on the validation split, and BLEU of greedy decoding (rank 0)."""
    model = state.model
    model.eval()
    try:
        loss, nll, tokens = valid_loss(sess, model)
        lines = sess.cfg.valid_bleu_lines
        bleu = valid_bleu(sess, model, lines) if lines != 0 else None
    finally:
        model.train()
    return {"kind": "valid", "step": state.step, "epoch": state.epoch, "loss": loss / tokens,
            "nll": nll / tokens, "ppl": math.exp(min(nll / tokens, 100.0)), "bleu": bleu}


def valid_loss(sess: Session, model: nn.Module) -> tuple[float, float, int]:
    split, c = sess.valid, sess.cfg.model
    src_len, tgt_len = split.src.lengths, split.tgt.lengths
    sizes = batching.pair_sizes(src_len, tgt_len)
    keep = np.nonzero(sizes <= c.max_positions)[0]
    budget = max(sess.layout.shard_bound, int(sizes[keep].max(initial=1)))
    order = batching.length_order(sizes[keep], src_len[keep], tgt_len[keep])
    loss = nll = 0.0
    tokens = 0
    for rows in batching.pack(keep[order], sizes, budget):
        b = batching.collate(split.src, split.tgt, rows, pad_id=c.pad_id, bos_id=c.bos_id,
                             eos_id=c.eos_id).to(sess.world.device)
        with sess.autocast():
            logits = model(b.src, b.tgt_in)  # (B, T, V)
        l_sum, n_sum = smoothed_loss(logits, b.tgt_out, eps=sess.cfg.label_smoothing,
                                     pad_id=c.pad_id)
        loss, nll = loss + l_sum.item(), nll + n_sum.item()
        tokens += int((b.tgt_out != c.pad_id).sum())
    return loss, nll, max(tokens, 1)


def valid_bleu(sess: Session, model: nn.Module, lines: int | None, rows_per_batch: int = 100
               ) -> float | None:
    """sacreBLEU of greedy translations of the first `lines` validation sentences."""
    import sacrebleu

    from nmt.search import greedy, output_limit

    split, c, vocab = sess.valid, sess.cfg.model, sess.data.vocab
    n = len(split) if lines is None else min(lines, len(split))
    if n == 0:
        return None
    src_len = split.src.lengths[:n]
    order = np.argsort(src_len, kind="stable")
    hyps: list[str] = [""] * n
    for start in range(0, n, rows_per_batch):
        rows = order[start:start + rows_per_batch]
        src = batching.collate(split.src, split.tgt, rows, pad_id=c.pad_id, bos_id=c.bos_id,
                               eos_id=c.eos_id).src[:, :c.max_positions].to(sess.world.device)
        limit = output_limit(src, c.pad_id).clamp(max=c.max_positions - 1)
        with sess.autocast():
            out = greedy(model, src, limit)
        for row, ids in zip(rows.tolist(), out, strict=True):
            hyps[row] = vocab.decode(ids)
    return sacrebleu.corpus_bleu(hyps, [validation_references(sess, n)]).score


def validation_references(sess: Session, n: int) -> list[str]:
    """The raw references when prepared data kept them, else the detokenized target ids."""
    raw = sess.data.raw_path("valid", sess.data.tgt_lang)
    if raw.is_file():
        lines = raw.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) == len(sess.valid):
            return lines[:n]
        log.warning("%s has %d lines for %d validation pairs; scoring against the token ids",
                    raw, len(lines), len(sess.valid))
    return [sess.data.vocab.decode(sess.valid.tgt[i].tolist()) for i in range(n)]


def checkpoint_and_validate(sess: Session, state: TrainState) -> bool:
    """Validate (rank 0), write the step checkpoint and best/; True when patience ran out."""
    result = None
    if sess.world.is_main and sess.valid is not None:
        result = validate(sess, state)
        score = result["bleu"] if result["bleu"] is not None else -result["loss"]
        result["best"] = state.best_score is None or score > state.best_score
        if result["best"]:
            state.best_score, state.best_step, state.stale = score, state.step, 0
        else:
            state.stale += 1
        sess.metrics.write(result)
    save(sess, state, result)
    if result is not None and result["best"]:
        meta = checkpoint_meta(sess, state, result)
        save_checkpoint(sess.run / "best", state.model, sess.data.vocab, meta)
    patience = sess.cfg.patience
    stop = torch.tensor([float(patience is not None and state.stale >= patience)],
                        device=sess.world.device)
    return bool(distributed.broadcast_from_main(stop, sess.world).item())


# --- the loop ------------------------------------------------------------------------------------
class StopRequest:
    """SIGINT/SIGTERM: finish the current update, write a checkpoint, exit 0. A second signal
    stops at once (the last checkpoint is intact)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


@dataclass
class StepOutput:
    loss: float  # summed smoothed loss over the global batch
    nll: float  # summed NLL
    tokens: int  # target tokens (with EOS) in the global batch
    updated: bool  # the optimizer stepped
    lr: float  # learning rate of this update
    signal: bool  # some worker got SIGINT/SIGTERM
    time_up: bool  # some worker's clock passed --max-time


def train_step(sess: Session, state: TrainState, rows: np.ndarray, stop: StopRequest
               ) -> StepOutput:
    """One update on one global batch: every worker's micro-batches, accumulated."""
    cfg, world, c = sess.cfg, sess.world, sess.cfg.model
    tokens = int(sess.tgt_lengths[rows].sum()) + len(rows)  # target tokens + EOS, all workers
    shards = batching.worker_shards(rows, rank=world.rank, world_size=world.size,
                                    update_freq=sess.layout.update_freq)
    lr = learning_rate(cfg, state.step + 1)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    loss_sum = torch.zeros((), device=world.device)
    nll_sum = torch.zeros((), device=world.device)
    for j, shard in enumerate(shards):
        batch = batching.collate(sess.train.src, sess.train.tgt, shard, pad_id=c.pad_id,
                                 bos_id=c.bos_id, eos_id=c.eos_id)
        real = real_positions(batch.tgt_out, c.pad_id)
        batch, real = batch.to(world.device), real.to(world.device, non_blocking=True)
        last = j == len(shards) - 1
        sync = contextlib.nullcontext() if last or not world.distributed else state.net.no_sync()
        with sync:
            with sess.autocast():
                loss, nll = state.net(batch.src, batch.tgt_in, batch.tgt_out, real)
            # DDP averages gradients over workers; scale so they sum, normalised per token.
            state.scaler.scale(loss * (world.size / tokens)).backward()
        loss_sum += loss.detach()
        nll_sum += nll.detach()
    time_up = cfg.max_time is not None and state.elapsed >= cfg.max_time
    flags = torch.stack([loss_sum, nll_sum,
                         torch.tensor(float(stop.signal is not None), device=world.device),
                         torch.tensor(float(time_up), device=world.device)])
    totals = distributed.all_reduce_sum(flags, world).tolist()
    updated = apply_update(sess, state, math.isfinite(totals[0]))
    return StepOutput(loss=totals[0], nll=totals[1], tokens=tokens, updated=updated, lr=lr,
                      signal=totals[2] > 0, time_up=totals[3] > 0)


def apply_update(sess: Session, state: TrainState, loss_finite: bool) -> bool:
    """Clip, step and count; a non-finite loss skips the update (and too many in a row stop)."""
    opt, scaler, cfg = state.optimizer, state.scaler, sess.cfg
    scaler.unscale_(opt)
    params = [p for p in state.model.parameters() if p.grad is not None]
    if cfg.clip_norm > 0:
        norm = nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    else:
        norm = nn.utils.get_total_norm([p.grad for p in params])
    grads_finite = bool(torch.isfinite(norm))
    if scaler.is_enabled():  # fp16: the scaler skips overflowing steps and lowers its scale
        scaler.step(opt)
        scaler.update()
        updated = grads_finite and loss_finite
        bad = not loss_finite or (not grads_finite and scaler.get_scale() < 1.0)
    else:
        updated = grads_finite and loss_finite
        if updated:
            opt.step()
        bad = not updated
    opt.zero_grad(set_to_none=True)
    if updated:
        state.step += 1
        state.bad_streak = 0
    elif bad:
        state.bad_streak += 1
        if sess.world.is_main:
            log.warning("non-finite loss or gradients after step %d: update skipped (%d in a row)",
                        state.step, state.bad_streak)
        if state.bad_streak >= cfg.max_bad_steps:
            raise TrainingError(
                f"the loss was NaN/inf for {state.bad_streak} updates in a row after step "
                f"{state.step}; lower --lr, set --clip-norm or use --precision fp32 (the last "
                "checkpoint is intact)", where=str(sess.run))
    return updated


@dataclass
class Meter:
    """Sums between two log records, and a smoothed rate for the live display."""

    loss: float = 0.0
    nll: float = 0.0
    tokens: int = 0
    steps: int = 0
    since: float = field(default_factory=time.perf_counter)
    rate: float = 0.0  # updates per second, smoothed
    tok_rate: float = 0.0  # target tokens per second, smoothed

    def add(self, out: StepOutput, seconds: float) -> None:
        self.loss += out.loss
        self.nll += out.nll
        self.tokens += out.tokens
        self.steps += 1
        alpha = 0.1 if self.rate else 1.0
        self.rate = (1 - alpha) * self.rate + alpha / max(seconds, 1e-9)
        self.tok_rate = (1 - alpha) * self.tok_rate + alpha * out.tokens / max(seconds, 1e-9)

    def record(self, state: TrainState, lr: float) -> dict[str, Any]:
        seconds = max(time.perf_counter() - self.since, 1e-9)
        n = max(self.tokens, 1)
        rec = {"kind": "train", "step": state.step, "epoch": state.epoch, "loss": self.loss / n,
               "nll": self.nll / n, "ppl": math.exp(min(self.nll / n, 100.0)), "lr": lr,
               "tokens_per_s": self.tokens / seconds, "time": state.elapsed}
        self.loss = self.nll = 0.0
        self.tokens = self.steps = 0
        self.since = time.perf_counter()
        return rec


def progress(sess: Session, state: TrainState, out: StepOutput, meter: Meter) -> dict[str, Any]:
    cfg, dev = sess.cfg, sess.world.device
    eta = (cfg.max_steps - state.step) / meter.rate if meter.rate else None
    if cfg.max_time is not None:
        left = max(cfg.max_time - state.elapsed, 0.0)
        eta = left if eta is None else min(eta, left)
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    nll = out.nll / max(out.tokens, 1)
    return {"step": state.step, "max_steps": cfg.max_steps, "epoch": state.epoch,
            "loss": out.loss / max(out.tokens, 1), "ppl": math.exp(min(nll, 100.0)),
            "lr": out.lr, "tokens_per_s": meter.tok_rate, "gpu_mem_gb": mem, "eta_s": eta,
            "best_bleu": state.best_score if (state.best_score or 0) >= 0 else None}


def stop_reason(sess: Session, state: TrainState, out: StepOutput, epoch_done: bool) -> str | None:
    cfg = sess.cfg
    if out.signal:
        return "signal"
    if state.step >= cfg.max_steps:
        return "max steps"
    if out.time_up:
        return "max time"
    if epoch_done and cfg.max_epochs is not None and state.epoch > cfg.max_epochs:
        return "max epochs"
    return None


def train_loop(sess: Session, state: TrainState, stop: StopRequest) -> str:
    """Train until a stop criterion; returns why it stopped."""
    cfg = sess.cfg
    meter = Meter()
    clock = time.perf_counter()
    while True:
        batches = sess.epoch_batches(state.epoch)
        if state.batch_index >= len(batches):  # resumed with other --batch-tokens: a shorter
            state.epoch, state.batch_index = state.epoch + 1, 0  # epoch already done
            continue
        while state.batch_index < len(batches):
            started = time.perf_counter()
            out = train_step(sess, state, batches[state.batch_index], stop)
            state.batch_index += 1
            epoch_done = state.batch_index == len(batches)
            if epoch_done:
                state.epoch, state.batch_index = state.epoch + 1, 0
            now = time.perf_counter()
            state.elapsed += now - clock  # wall clock, validation and checkpoints included
            clock = now
            meter.add(out, now - started)
            if sess.world.is_main:
                sess.reporter.progress(progress(sess, state, out, meter))
                if out.updated and state.step % cfg.log_every == 0:
                    sess.metrics.write(meter.record(state, out.lr))
            reason = stop_reason(sess, state, out, epoch_done)
            if reason == "signal":
                save(sess, state)
                return reason
            due = ((out.updated and state.step % cfg.save_every == 0)
                   or (epoch_done and cfg.save_epochs) or reason is not None)
            if due and state.saved_at != state.position:
                if checkpoint_and_validate(sess, state) and reason is None:
                    reason = "early stopping"
            if reason is not None:
                return reason
            if epoch_done:
                break


# --- entry points --------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports back."""

    run: str  # the run directory
    rank: int  # the worker that reports (0 prints the summary)
    start_step: int  # where this invocation started (0, or the resumed step)
    steps: int  # updates done in total
    epoch: int  # epoch in progress at the end
    elapsed: float  # seconds of training, summed over resumes
    reason: str  # why it stopped: max steps, max epochs, max time, early stopping, signal
    signal: str | None  # SIGINT/SIGTERM that stopped it
    last_checkpoint: str | None  # newest step checkpoint
    best_score: float | None  # best validation BLEU (negative: -loss when BLEU is off)
    best_step: int | None  # step of the best validation
    layout: str  # how an update was split over workers
    replica_digests: list[str] = field(default_factory=list)  # weights hash per worker


def weights_digest(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(unique_state_dict(model).items()):
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def write_config(sess: Session) -> None:
    path = sess.run / "config.json"
    tmp = path.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(sess.cfg.to_dict(), indent=2, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def check_run_dir(run: Path) -> None:
    """The run directory exists (or can be made) and is writable."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to the run directory ({exc.strerror})",
                          where=str(run)) from None


def run_worker(cfg: TrainConfig, launch: Launch, reporter: Reporter | None = None
               ) -> TrainResult:
    """Train as one worker (the only one, or one of a launched group)."""
    reporter = reporter or Reporter()
    world = distributed.setup(launch.device, launch.threads)
    reporter.setup(world.rank)
    try:
        return _train(cfg, world, reporter)
    finally:
        if world.is_main:
            reporter.stop()
        distributed.teardown()


def _train(cfg: TrainConfig, world: World, reporter: Reporter) -> TrainResult:
    sess = open_session(cfg, world, reporter)
    if world.is_main:
        check_run_dir(sess.run)
    state = build_state(sess)
    resumed = resume(sess, state)
    if len(set(distributed.gather_objects(state.position, world))) > 1:
        raise ConfigError("workers resumed from different checkpoints: a multi-node run needs "
                          "its run directory on a shared filesystem", where=cfg.run)
    start_step = state.step
    if world.is_main:
        write_config(sess)
        announce(sess, state, resumed)
    reason = "max steps" if state.step >= cfg.max_steps else None
    signal_name = None
    if reason is None:
        with StopRequest() as stop:
            try:
                reason = train_loop(sess, state, stop)
            except torch.OutOfMemoryError:
                raise out_of_memory(sess) from None
            signal_name = stop.signal
    digests = distributed.gather_objects(weights_digest(state.model), world)
    if world.is_main:
        sess.metrics.write({"kind": "end", "step": state.step, "reason": reason,
                            "time": state.elapsed, "replicas_in_sync": len(set(digests)) == 1},
                           show=False)
        sess.metrics.close()
    latest = list_checkpoints(sess.run)
    return TrainResult(
        run=str(sess.run), rank=world.rank, start_step=start_step, steps=state.step,
        epoch=state.epoch, elapsed=state.elapsed, reason=reason, signal=signal_name,
        last_checkpoint=str(latest[-1][1]) if latest else None, best_score=state.best_score,
        best_step=state.best_step, layout=sess.layout.describe(), replica_digests=digests)


def announce(sess: Session, state: TrainState, resumed: Path | None) -> None:
    from nmt.model import count_parameters

    info = {"step": state.step, "max_steps": sess.cfg.max_steps, "epoch": state.epoch,
            "layout": sess.layout.describe(), "precision": sess.precision,
            "device": str(sess.world.device), "world_size": sess.world.size,
            "parameters": count_parameters(state.model), "pairs": len(sess.usable),
            "resumed_from": str(resumed) if resumed else None, "run": str(sess.run)}
    if resumed:
        log.info("resuming from %s (step %d, epoch %d)", resumed, state.step, state.epoch)
    sess.metrics.write({"kind": "start", **info}, show=False)
    sess.reporter.start(info)


def out_of_memory(sess: Session) -> TrainingError:
    layout = sess.layout
    flag = ("--max-tokens-per-gpu" if sess.cfg.max_tokens_per_gpu is not None
            else "--max-tokens-per-gpu (or raise --update-freq)")
    return TrainingError(f"out of GPU memory with micro-batches of up to "
                         f"{layout.shard_bound:,} tokens; lower {flag}", where=sess.cfg.run)


def main(*, data: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
         preset: str | None = None, config_file: str | os.PathLike | None = None,
         overrides: dict[str, Any] | None = None, launch: Launch | None = None,
         reporter: Reporter | None = None) -> TrainResult | None:
    """`nmt train`: resolve the config, check the inputs, then train here or in N workers.

    Returns the result of rank 0 (None on the other nodes of a multi-node launch).
    """
    launch = launch or Launch()
    if launch.world_size == 1:
        distributed.adopt_slurm_tasks()
    cfg = resolve_config(data=data, run=run, preset=preset, config_file=config_file,
                         overrides=overrides)
    cfg = with_vocabulary(cfg, load_prepared(cfg.data))
    check_launch(cfg, launch)
    if int(os.environ.get("RANK", 0)) == 0:
        check_run_dir(Path(cfg.run))
    if distributed.externally_launched() or launch.world_size == 1:
        return run_worker(cfg, launch, reporter)
    return distributed.launch(run_worker, (cfg, launch, reporter), launch)


def check_launch(cfg: TrainConfig, launch: Launch) -> None:
    kind = distributed.device_kind(launch.device)
    if launch.nproc < 1 or launch.nnodes < 1 or (launch.threads or 1) < 1:
        raise ConfigError("--gpus, --nnodes and --threads must be at least 1")
    if not 0 <= launch.node_rank < launch.nnodes:
        raise ConfigError(f"--node-rank {launch.node_rank} is not below --nnodes {launch.nnodes}")
    if kind == "cuda" and launch.nproc > torch.cuda.device_count():
        raise ConfigError(f"--gpus {launch.nproc}, but only {torch.cuda.device_count()} "
                          "GPU(s) are visible")
    if kind == "cpu" and launch.nproc > 1 and not torch.distributed.is_gloo_available():
        raise ConfigError("CPU workers need PyTorch's gloo backend, which this build lacks")
    if cfg.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("--tensorboard needs the tensorboard package: "
                              "pip install tensorboard")
