"""Saving and resuming: what goes into a step checkpoint, keep-last pruning (train_state.pt only
in the newest few), best/, and restoring a `TrainState` from the newest checkpoint."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from nmt import distributed, files
from nmt.checkpoint import (
    TRAIN_STATE,
    load_checkpoint,
    load_train_state,
    load_weights,
    read_config,
    read_meta,
    save_checkpoint,
)
from nmt.config import TRAINING_ONLY_FIELDS
from nmt.errors import CheckpointError, ConfigError
from nmt.train import rundir
from nmt.train.report import LogWindow
from nmt.train.session import (
    Session,
    TrainState,
    check_rng_state,
    rng_state,
    seed_everything,
    set_rng_state,
)
from nmt.train.validate import score_validation, validate

log = logging.getLogger(__name__)

KEEP_TRAIN_STATE = 2  # newest checkpoints that keep train_state.pt; older ones keep weights only


# --- saving --------------------------------------------------------------------------------------
def checkpoint_meta(sess: Session, state: TrainState, valid: dict | None) -> dict[str, Any]:
    data = sess.data
    meta: dict[str, Any] = {
        "step": state.step, "epoch": state.epoch, "preset": sess.cfg.preset,
        # written where an epoch just ended (`nmt average --last` picks these or the save grid)
        "epoch_end": state.batch_index == 0,
        "data": {"name": data.name, "src_lang": data.src_lang, "tgt_lang": data.tgt_lang,
                 "content_hash": data.content_hash},
    }
    if not data.text_style.plain:  # `nmt translate` treats its input and output the same way
        meta["data"]["text"] = data.text_style.to_dict()
    if valid is not None:
        meta["valid"] = {k: valid[k] for k in ("loss", "nll", "ppl", "bleu")}
    return meta


def train_state_dict(sess: Session, state: TrainState, rngs: list[dict]) -> dict[str, Any]:
    return {
        "step": state.step, "epoch": state.epoch, "batch_index": state.batch_index,
        "elapsed": state.elapsed, "best_score": state.best_score, "best_step": state.best_step,
        "stale": state.stale, "bad_streak": state.bad_streak, "window": state.window.to_dict(),
        "optimizer": state.optimizer.state_dict(), "scaler": state.scaler.state_dict(),
        "lr_schedule": sess.cfg.lr_schedule, "best_metric": sess.cfg.best_metric, "rng": rngs,
        "world_size": sess.world.size,
        "order": {"seed": sess.cfg.seed, "batch_tokens": sess.cfg.batch_tokens},
    }


def save(sess: Session, state: TrainState, valid: dict | None = None) -> Path:
    """Write a step checkpoint (rank 0) with every worker's RNG state; prune old ones."""
    rngs = distributed.gather_objects(rng_state(sess.world), sess.world)
    path = rundir.checkpoint_path(sess.run, state.step)
    if sess.world.is_main:
        save_checkpoint(path, state.model, sess.data.vocab, checkpoint_meta(sess, state, valid),
                        train_state=train_state_dict(sess, state, rngs))
        prune(sess.run, sess.cfg.keep_last)
    state.saved_at = state.position
    return path


def validate_and_save(sess: Session, state: TrainState) -> bool:
    """Validate (rank 0), write the step checkpoint and best/; True when patience ran out."""
    result = None
    if sess.world.is_main and sess.valid is not None:
        result = validate(sess, state)
        score_validation(state, result, sess.cfg.best_metric)
        sess.metrics.write(result)
    save(sess, state, result)
    if result is not None and result["best"]:
        meta = checkpoint_meta(sess, state, result)
        save_checkpoint(rundir.best_path(sess.run), state.model, sess.data.vocab, meta)
    patience = sess.cfg.patience
    stop = torch.tensor([float(patience is not None and state.stale >= patience)],
                        device=sess.world.device)
    return bool(distributed.broadcast_from_main(stop, sess.world).item())


def prune(run: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` step checkpoints, and train_state.pt in the newest few."""
    found = rundir.checkpoints(run)
    for _, path in found[:-keep_last]:
        trash = path.with_name(f".trash-{path.name}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    for _, path in found[-keep_last:][:-KEEP_TRAIN_STATE]:
        (path / TRAIN_STATE).unlink(missing_ok=True)


# --- resuming ------------------------------------------------------------------------------------
def clean_partial_writes(run: Path) -> None:
    """Remove what a killed writer left behind (temporary and half-deleted checkpoints), and
    finish or undo an interrupted swap of best/."""
    root = rundir.checkpoints_dir(run)
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(".") and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
    files.recover(rundir.best_path(run))


def check_compatible(sess: Session, path: Path) -> None:
    """Refuse to resume a run on other data or with another architecture."""
    meta = read_meta(path)
    theirs = (meta.get("data") or {}).get("content_hash")
    if theirs != sess.data.content_hash:
        raise ConfigError(
            f"the run was trained on other data ({(meta.get('data') or {}).get('name')}, "
            f"content {str(theirs)[:12]}) than {sess.cfg.data} (content "
            f"{sess.data.content_hash[:12]}); use a new --run", where=str(sess.run))
    old, new = read_config(path).to_dict(), sess.cfg.model.to_dict()
    differ = [f"{k} {old[k]} -> {new[k]}" for k in old
              if k not in TRAINING_ONLY_FIELDS and old[k] != new[k]]
    if differ:
        raise ConfigError(f"the run's checkpoints have another architecture ({', '.join(differ)});"
                          " use a new --run or the run's own settings", where=str(sess.run))


def resume(sess: Session, state: TrainState) -> Path | None:
    """Restore `state` from the run's newest checkpoint, if there is one."""
    if sess.world.is_main:
        clean_partial_writes(sess.run)
    path = rundir.latest_resumable(sess.run)
    if path is None:
        if sess.metrics is not None:  # a run killed before its first checkpoint starts over:
            sess.metrics.truncate_after(-1)  # its records would be written twice
        if sess.cfg.init_from:
            init_weights(sess, state, Path(sess.cfg.init_from))
        return None
    check_compatible(sess, path)
    ckpt = load_checkpoint(path)
    load_weights(state.model, {k: v.to(sess.world.device) for k, v in ckpt.tensors.items()},
                 where=str(path))
    saved = check_train_state(load_train_state(path), step=ckpt.step,
                              where=str(path / TRAIN_STATE))
    try:
        state.optimizer.load_state_dict(saved["optimizer"])
        check_optimizer(state.optimizer)
        state.scaler.load_state_dict(saved["scaler"])
        for name in ("step", "epoch", "batch_index", "elapsed", "best_score", "best_step",
                     "stale", "bad_streak"):
            setattr(state, name, saved[name])
        state.window = LogWindow(**saved.get("window", {}))  # older checkpoints: a new window
        restore_rngs(sess, saved)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"training state does not fit ({exc})",
                              where=str(path / TRAIN_STATE)) from None
    warn_order_change(sess, saved)
    restart_best(sess, state, saved)
    state.saved_at = state.position
    if sess.metrics is not None:
        sess.metrics.truncate_after(state.step)
        repair_best(sess, state)
    return path


def check_train_state(saved: Any, *, step: int, where: str) -> dict[str, Any]:
    """train_state.pt's contents, checked for type and range before any of it is used: the
    counters, the best score, the log window, the loss scaler and every worker's RNG state
    (the optimizer's state: `check_optimizer`, once loaded)."""
    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"training state: {what}", where=where)

    def count(key: str, low: int = 0, value: Any = None) -> int:
        value = saved.get(key) if value is None else value
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise fail(f"{key} must be an integer of at least {low}, not {value!r:.40}")
        return value

    def real(key: str, value: Any, *, finite: bool = True) -> None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (finite and not math.isfinite(value)):
            raise fail(f"{key} must be a {'finite ' if finite else ''}number, not {value!r:.40}")

    if not isinstance(saved, dict):
        raise fail(f"expected a dict, not {type(saved).__name__}")
    if count("step") != step:
        raise fail(f"step {saved['step']} but the checkpoint is of step {step}")
    count("epoch", 1), count("batch_index"), count("stale"), count("bad_streak")
    count("world_size", 1)
    real("elapsed", saved.get("elapsed"))
    if saved.get("elapsed") < 0:
        raise fail(f"elapsed must not be negative, not {saved['elapsed']!r}")
    if saved.get("best_score") is not None:  # -loss of a first validation may be non-finite
        real("best_score", saved["best_score"], finite=False)
    if saved.get("best_step") is not None and count("best_step") > step:
        raise fail(f"best_step {saved['best_step']} is after the checkpoint's step {step}")
    window = saved.get("window", {})  # absent before the window was saved
    if not isinstance(window, dict) or set(window) - {"loss", "nll", "tokens"}:
        raise fail(f"window must hold loss, nll and tokens, not {window!r:.60}")
    for key in ("loss", "nll"):
        real(f"window {key}", window.get(key, 0.0), finite=False)  # a skipped update: inf
    count("window tokens", value=window.get("tokens", 0))
    for key in ("optimizer", "scaler"):
        if not isinstance(saved.get(key), dict):
            raise fail(f"{key} must be a dict")
    problem = scaler_problem(saved["scaler"])
    if problem:
        raise fail(f"scaler: {problem}")
    rngs = saved.get("rng")
    if not isinstance(rngs, list) or not rngs:
        raise fail("rng must be a list with one state per worker")
    for rank, rng in enumerate(rngs):
        problem = check_rng_state(rng)
        if problem:
            raise fail(f"rng of worker {rank}: {problem}")
    return saved


def scaler_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a saved fp16 loss scaler (empty when it was disabled), or None:
    `GradScaler.load_state_dict` takes any values, and a NaN scale would skip every update."""
    if not state:
        return None

    def number(key: str) -> float | None:
        value = state.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok and math.isfinite(value) else None

    scale, growth, backoff = number("scale"), number("growth_factor"), number("backoff_factor")
    interval, tracker = state.get("growth_interval"), state.get("_growth_tracker")
    if scale is None or scale <= 0:
        return f"scale must be a positive number, not {state.get('scale')!r:.20}"
    if growth is None or growth <= 1 or backoff is None or not 0 < backoff < 1:
        return "growth_factor must be above 1 and backoff_factor in (0, 1)"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (interval, tracker)) \
            or interval < 1 or tracker < 0:
        return "growth_interval must be at least 1 and _growth_tracker 0 or more"
    return None


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Adam's loaded state, which `load_state_dict` takes as it comes: every group's settings
    in range, every moment finite and of its parameter's shape (a bad one would only show as
    non-finite losses, or an error inside the first update)."""
    for group in optimizer.param_groups:
        betas, numbers = group.get("betas"), [group.get(k) for k in ("lr", "eps", "weight_decay")]
        if not (all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in numbers)
                and group["eps"] > 0 and isinstance(betas, tuple | list) and len(betas) == 2
                and all(isinstance(b, float) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"optimizer settings out of range (lr {group.get('lr')!r:.20}, "
                             f"betas {betas!r:.30}, eps {group.get('eps')!r:.20}, "
                             f"weight_decay {group.get('weight_decay')!r:.20})")
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if key == "step":
                    bad = not isinstance(value, torch.Tensor) or value.numel() != 1 or value < 0
                else:
                    bad = (not isinstance(value, torch.Tensor) or value.shape != param.shape
                           or not value.is_floating_point() or not bool(value.isfinite().all())
                           or (key == "exp_avg_sq" and bool((value < 0).any())))
                if bad:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else value
                    raise ValueError(f"optimizer {key} {shape!r:.40} for a parameter of shape "
                                     f"{tuple(param.shape)} (or not finite, or negative)")


def init_weights(sess: Session, state: TrainState, path: Path) -> None:
    """Fine-tuning: start from another checkpoint's weights (a new optimizer and schedule).

    The checkpoint must have this run's architecture and the prepared data's vocabulary.
    """
    where = f"--init-from {path}"
    ckpt = load_checkpoint(path)
    if ckpt.vocab.sha256 != sess.data.vocab.sha256:
        raise ConfigError(
            f"its vocabulary differs from the one {sess.cfg.data} was prepared with; prepare "
            f"the new data with `nmt prepare ... --vocab-from {path}`", where=where)
    old, new = ckpt.config.to_dict(), sess.cfg.model.to_dict()
    differ = [f"{k} {old[k]} -> {new[k]}" for k in old
              if k not in TRAINING_ONLY_FIELDS and old[k] != new[k]]
    if differ:
        raise ConfigError(f"another architecture than this run's ({', '.join(differ)}); use "
                          f"--preset {ckpt.meta.get('preset', '...')} or its settings",
                          where=where)
    load_weights(state.model, {k: v.to(sess.world.device) for k, v in ckpt.tensors.items()},
                 where=str(path))
    log.info("starting from the weights of %s (step %d)", path, ckpt.step)


def restore_rngs(sess: Session, saved: dict[str, Any]) -> None:
    rngs = saved["rng"]
    if len(rngs) == sess.world.size:
        set_rng_state(rngs[sess.world.rank], sess.world)
    else:
        log.warning("resuming %d-worker state on %d workers: dropout streams are re-seeded",
                    len(rngs), sess.world.size)
        seed_everything(sess.cfg.seed + 1_000_003 * saved["step"] + sess.world.rank)


def restart_best(sess: Session, state: TrainState, saved: dict[str, Any]) -> None:
    """A resume with another best metric: the best score and patience count start afresh."""
    before = saved.get("best_metric", "bleu")
    if before != sess.cfg.best_metric:
        log.info("best metric changed since the checkpoint (%s -> %s): the best score and the "
                 "patience count start again at the next validation", before,
                 sess.cfg.best_metric)
        state.best_score, state.best_step, state.stale = None, None, 0


def warn_order_change(sess: Session, saved: dict[str, Any]) -> None:
    order = saved.get("order") or {}
    now = {"seed": sess.cfg.seed, "batch_tokens": sess.cfg.batch_tokens}
    if order and order != now and sess.world.is_main:
        log.warning("seed or batch tokens changed since the checkpoint (%s -> %s): the rest of "
                    "this epoch follows a different data order", order, now)


def repair_best(sess: Session, state: TrainState) -> None:
    """If a kill fell between writing a checkpoint and copying it to best/, finish the copy."""
    best = rundir.best_path(sess.run)
    if state.best_step != state.step:
        return
    with contextlib.suppress(CheckpointError):
        if read_meta(best).get("step") == state.step:
            return
    tmp = files.temp_name(best)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(rundir.checkpoint_path(sess.run, state.step), tmp,
                    ignore=shutil.ignore_patterns(TRAIN_STATE))
    files.publish_directory(tmp, best)
