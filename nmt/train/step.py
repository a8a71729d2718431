"""One update: the objective, the optimizer, the learning-rate schedule, and the step itself
(forward and backward over every micro-batch, then clip and step)."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from nmt import batching, distributed
from nmt.errors import NmtError
from nmt.loss import smoothed_loss
from nmt.train.config import TrainConfig

if TYPE_CHECKING:
    from nmt.train.loop import StopRequest
    from nmt.train.session import Session, TrainState

log = logging.getLogger(__name__)


class TrainingError(NmtError):
    """Training cannot go on (diverged, out of memory); the last checkpoint is intact."""


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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    """Adam with the recipe's betas, epsilon and L2 penalty, as one fused kernel per step."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate(cfg, 1), betas=cfg.adam_betas,
                            eps=cfg.adam_eps, weight_decay=cfg.weight_decay, fused=True)


def real_positions(tgt_out: Tensor, pad_id: int) -> Tensor:
    """Indices (N,) of the non-padding entries of the flattened targets (B*T), computed where
    `tgt_out` lives: call it on the host copy, so the step never waits for the device."""
    return (tgt_out.reshape(-1) != pad_id).nonzero().squeeze(1)


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
