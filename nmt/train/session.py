"""The two objects a run passes around: `Session`, everything fixed for the run (config, data,
layout, precision, reporting), and `TrainState`, everything that changes and that a checkpoint
saves and restores (model, optimizer, scaler, counters, position, best score, RNG states)."""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmt import batching
from nmt.data import ParallelSplit, PreparedData, load_prepared
from nmt.distributed import World
from nmt.errors import ConfigError
from nmt.train.config import TrainConfig
from nmt.train.report import LogWindow, MetricsLog, Reporter
from nmt.train.step import Objective, build_optimizer

log = logging.getLogger(__name__)


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
    best_score: float | None = None  # best validation BLEU, or -loss (best_metric loss or no BLEU)
    best_step: int | None = None  # the step that scored it
    stale: int = 0  # validations since the best
    bad_streak: int = 0  # consecutive updates skipped for a non-finite loss
    saved_at: tuple[int, int, int] | None = None  # (step, epoch, batch_index) last checkpointed
    window: LogWindow = field(default_factory=LogWindow)  # sums for the next metrics record

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.step, self.epoch, self.batch_index)

    def advance_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch, self.batch_index = self.epoch + 1, 0


def build_state(sess: Session) -> TrainState:
    """A freshly initialised model (the same on every worker) and its optimizer."""
    from nmt.model import Transformer

    cfg, world = sess.cfg, sess.world
    seed_everything(cfg.seed)
    model = Transformer(cfg.model)
    if cfg.init != "xavier":  # the constructor's; asked for again it would draw other weights
        model.reset_parameters(cfg.init)
    model = model.to(world.device)
    seed_everything(cfg.seed + world.rank)  # each worker its own dropout stream
    net: nn.Module = Objective(model, cfg.label_smoothing)
    if world.distributed:
        ids = [world.device] if world.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(world.device.type, init_scale=2.0 ** 7,
                                  enabled=sess.precision == "fp16")
    return TrainState(model=model, net=net, optimizer=optimizer, scaler=scaler)


# --- random number generators --------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def check_rng_state(saved: Any) -> str | None:
    """What is wrong with a saved `rng_state` (read from disk), or None."""
    if not isinstance(saved, dict):
        return "not a dict"
    for key in ("torch", "cuda"):
        t = saved.get(key)
        if (key == "torch" or t is not None) and not (
                isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1):
            return f"{key} must be a 1-D uint8 tensor"
    if saved["torch"].numel() != torch.get_rng_state().numel():
        return f"torch holds {saved['torch'].numel()} bytes, not a CPU generator's state"
    n = saved.get("numpy")
    if not (isinstance(n, dict) and isinstance(n.get("keys"), torch.Tensor)
            and n["keys"].shape == (624,) and not n["keys"].is_floating_point()
            and bool(((n["keys"] >= 0) & (n["keys"] < 2**32)).all())
            and _int_in(n.get("pos"), 0, 624) and _int_in(n.get("has_gauss"), 0, 1)
            and isinstance(n.get("gauss"), float)):
        return "numpy must hold 624 32-bit keys, a position 0-624 and a Gaussian cache"
    py = saved.get("python")
    if not (isinstance(py, tuple | list) and len(py) == 3 and isinstance(py[0], int)
            and isinstance(py[1], tuple | list) and len(py[1]) == 625
            and all(_int_in(v, 0, 2**32 - 1) for v in py[1])
            and (py[2] is None or isinstance(py[2], float))):
        return "python must be random.getstate()'s (version, 625 words, Gaussian cache)"
    return None


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def set_rng_state(saved: dict[str, Any], world: World) -> None:
    torch.set_rng_state(saved["torch"])
    if saved["cuda"] is not None and world.device.type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], world.device)
    n = saved["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
