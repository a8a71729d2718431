"""Entry points: resolve the config, check the inputs, then train here or in N workers; each
worker opens its session, resumes, runs the loop and reports a `TrainResult`."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmt import distributed, files
from nmt.checkpoint import unique_state_dict
from nmt.data import load_prepared
from nmt.distributed import Launch, World
from nmt.errors import ConfigError, NmtError
from nmt.train import rundir
from nmt.train.checkpointing import resume
from nmt.train.config import TrainConfig, resolve_config, with_vocabulary
from nmt.train.failure import Watch
from nmt.train.loop import StopRequest, train_loop
from nmt.train.report import Reporter
from nmt.train.session import Session, TrainState, build_state, open_session
from nmt.train.step import TrainingError

log = logging.getLogger(__name__)


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


def run(*, data: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
        preset: str | None = None, config_file: str | os.PathLike | None = None,
        overrides: dict[str, Any] | None = None, launch: Launch | None = None,
        reporter: Reporter | None = None) -> TrainResult | None:
    """`nmt train`: resolve the config, check the inputs, then train here or in N workers.

    Returns the result of rank 0 (None on the other nodes of a multi-node launch).
    """
    launch = launch or Launch()
    check_devices(launch)
    if launch.world_size == 1:
        distributed.adopt_slurm_tasks()
    cfg = resolve_config(data=data, run=run, preset=preset, config_file=config_file,
                         overrides=overrides)
    cfg = with_vocabulary(cfg, load_prepared(cfg.data))
    check_launch(cfg, launch)
    if not leads_run(launch):  # another node, or another worker: global rank 0 holds the lock
        return _start(cfg, launch, reporter)
    # One writer per run directory, for the whole run: a second `nmt train` on it is refused
    # at once, and the kernel frees the lock if this process dies. On several nodes sharing
    # the directory, only global rank 0's process (or node 0's launcher) takes it.
    rundir.check_writable(Path(cfg.run))
    with files.output_lock(Path(cfg.run), "the run directory"):
        return _start(cfg, launch, reporter)


def leads_run(launch: Launch) -> bool:
    """True in the process that owns the run directory: global rank 0 under an external
    launcher, node 0's launcher under nmt's own."""
    if distributed.externally_launched():
        return int(os.environ["RANK"]) == 0
    return launch.node_rank == 0


def _start(cfg: TrainConfig, launch: Launch, reporter: Reporter | None) -> TrainResult | None:
    if distributed.externally_launched() or launch.world_size == 1:
        return run_worker(cfg, launch, reporter)
    return distributed.launch(run_worker, (cfg, launch, reporter), launch)


def check_devices(launch: Launch) -> None:
    """`--gpus N` needs N GPUs; CPU workers must be asked for by name."""
    if launch.nproc > 1 and launch.device == "auto" and not torch.cuda.is_available():
        raise ConfigError(f"--gpus {launch.nproc}: no CUDA device; use --device cpu to start "
                          f"{launch.nproc} CPU workers")


def check_launch(cfg: TrainConfig, launch: Launch) -> None:
    kind = distributed.device_kind(launch.device)
    if launch.nproc < 1 or launch.nnodes < 1 or (launch.threads or 1) < 1:
        raise ConfigError("--gpus, --nnodes and --threads must be at least 1")
    for flag, seconds in (("--rendezvous-timeout", launch.rendezvous_timeout),
                          ("--peer-timeout", launch.peer_timeout)):
        if not (math.isfinite(seconds) and seconds > 0):
            raise ConfigError(f"{flag} must be a positive number of seconds, not {seconds:g}")
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


def run_worker(cfg: TrainConfig, launch: Launch, reporter: Reporter | None = None
               ) -> TrainResult:
    """Train as one worker (the only one, or one of a launched group)."""
    reporter = reporter or Reporter()
    world = distributed.setup(launch.device, launch.threads, launch.rendezvous_timeout)
    reporter.setup(world.rank)
    watch = Watch(cfg.run, world, launch)
    try:
        return _train(cfg, world, reporter, watch)
    except NmtError:
        raise
    except Exception as exc:
        if not world.distributed:
            raise
        raise watch.failure(exc) from None
    finally:
        watch.stop()
        if world.is_main:
            reporter.stop()
        distributed.teardown()


def _train(cfg: TrainConfig, world: World, reporter: Reporter, watch: Watch) -> TrainResult:
    sess = open_session(cfg, world, reporter)
    if world.is_main:
        rundir.check_writable(sess.run)
    state = build_state(sess)
    watch.follow(state)
    resumed = resume(sess, state)
    if len(set(distributed.gather_objects(state.position, world))) > 1:
        raise ConfigError("workers resumed from different checkpoints: a multi-node run needs "
                          "its run directory on a shared filesystem", where=cfg.run)
    start_step = state.step
    if world.is_main:
        rundir.write_config(sess.run, sess.cfg.to_dict())
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
    watch.stop()  # the last collective: from here on, a worker that exits has finished
    if world.is_main:
        sess.metrics.write({"kind": "end", "step": state.step, "reason": reason,
                            "time": state.elapsed, "replicas_in_sync": len(set(digests)) == 1},
                           show=False)
        sess.metrics.close()
    latest = rundir.checkpoints(sess.run)
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


def weights_digest(model: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(unique_state_dict(model).items()):
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()
