"""Reporting progress: the `Reporter` the CLI replaces with a live display, metrics.jsonl (and
TensorBoard), and the running sums behind each record."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nmt import files
from nmt.train import rundir

if TYPE_CHECKING:
    from nmt.train.session import Session, TrainState
    from nmt.train.step import StepOutput

log = logging.getLogger(__name__)


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
        """Every update: step, epoch, loss, ppl, lr, tokens_per_s, gpu_mem_gb, eta_s, and
        done (0-1: progress to max steps or max time, whichever ends training first)."""

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
        self.path = rundir.metrics_path(run)
        self.reporter = reporter
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(rundir.tensorboard_dir(run)))

    def truncate_after(self, step: int) -> None:
        """Drop records a killed run wrote after the checkpoint it resumes from."""
        if not self.path.is_file():
            return
        text = self.path.read_text(encoding="utf-8", errors="replace")  # damaged: dropped
        kept = [line for line in text.splitlines()
                if _record_step(line) <= step]
        files.write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, record: dict[str, Any], *, show: bool = True) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())  # a record on screen is a record on disk
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
    except (ValueError, AttributeError, TypeError, OverflowError):
        return math.inf


@dataclass
class LogWindow:
    """The sums behind the next "train" record. Part of the training state (checkpoints carry
    it), so the first record after a resume covers the same updates as an uninterrupted run's."""

    loss: float = 0.0  # summed token losses (label-smoothed) since the last record
    nll: float = 0.0  # summed token negative log-likelihoods since the last record
    tokens: int = 0  # target tokens since the last record

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "nll": self.nll, "tokens": self.tokens}


@dataclass
class Meter:
    """Rates for the live display and the records (this process only: not resumed)."""

    tokens: int = 0  # target tokens since `since`
    since: float = field(default_factory=time.perf_counter)
    rate: float = 0.0  # updates per second, smoothed
    tok_rate: float = 0.0  # target tokens per second, smoothed

    def add(self, out: StepOutput, seconds: float) -> None:
        self.tokens += out.tokens
        alpha = 0.1 if self.rate else 1.0
        self.rate = (1 - alpha) * self.rate + alpha / max(seconds, 1e-9)
        self.tok_rate = (1 - alpha) * self.tok_rate + alpha * out.tokens / max(seconds, 1e-9)

    def record(self, state: TrainState, lr: float) -> dict[str, Any]:
        """The "train" record of `state.window`; both start a new window."""
        seconds = max(time.perf_counter() - self.since, 1e-9)
        window = state.window
        n = max(window.tokens, 1)
        rec = {"kind": "train", "step": state.step, "epoch": state.epoch,
               "loss": window.loss / n, "nll": window.nll / n,
               "ppl": math.exp(min(window.nll / n, 100.0)), "lr": lr,
               "tokens_per_s": self.tokens / seconds, "time": state.elapsed}
        state.window = LogWindow()
        self.tokens, self.since = 0, time.perf_counter()
        return rec


def report_step(sess: Session, state: TrainState, out: StepOutput, meter: Meter) -> None:
    """Rank 0: the live display every update, a metrics.jsonl record every `log_every`."""
    window = state.window
    window.loss, window.nll = window.loss + out.loss, window.nll + out.nll
    window.tokens += out.tokens
    if sess.world.is_main:
        sess.reporter.progress(progress(sess, state, out, meter))
        if out.updated and state.step % sess.cfg.log_every == 0:
            sess.metrics.write(meter.record(state, out.lr))


def progress(sess: Session, state: TrainState, out: StepOutput, meter: Meter) -> dict[str, Any]:
    cfg, dev = sess.cfg, sess.world.device
    eta = (cfg.max_steps - state.step) / meter.rate if meter.rate else None
    done = state.step / cfg.max_steps  # how far to the limit that ends training first
    if cfg.max_time is not None:
        left = max(cfg.max_time - state.elapsed, 0.0)
        eta = left if eta is None else min(eta, left)
        done = max(done, state.elapsed / cfg.max_time)
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    nll = out.nll / max(out.tokens, 1)
    return {"step": state.step, "max_steps": cfg.max_steps, "epoch": state.epoch,
            "loss": out.loss / max(out.tokens, 1), "ppl": math.exp(min(nll, 100.0)),
            "lr": out.lr, "tokens_per_s": meter.tok_rate, "gpu_mem_gb": mem, "eta_s": eta,
            "best_bleu": state.best_score if (state.best_score or 0) >= 0 else None,
            "done": min(done, 1.0)}
