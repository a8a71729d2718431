"""The layout of a run directory; every other module asks here for a path.

A run directory holds:

- `train_config.json`: the resolved `TrainConfig` (runs written before the rename have it as
  `config.json`, which is still read when resuming; a checkpoint's `config.json` is something
  else, its `ModelConfig`),
- `metrics.jsonl`: one JSON record per line, and `tensorboard/` with `--tensorboard`,
- `checkpoints/step-XXXXXXXX/`: step checkpoints (nmt/checkpoint.py's format and naming, shared
  with `nmt average`),
- `best/`: a copy of the best-scoring checkpoint, without its training state,
- `logs/worker-R.log`: what worker R of a multi-worker run knew when it failed (its traceback,
  or which worker was lost), which the terminal gets as one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nmt import files
from nmt.checkpoint import TRAIN_STATE, checkpoint_name, list_checkpoints
from nmt.errors import ConfigError

CONFIG = "train_config.json"  # the run's resolved TrainConfig
LEGACY_CONFIG = "config.json"  # what runs written before the rename call it
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
BEST = "best"
LOGS = "logs"


def config_path(run: Path) -> Path:
    """Where this version writes the run's TrainConfig."""
    return run / CONFIG


def existing_config(run: Path) -> Path | None:
    """The run's saved TrainConfig: `train_config.json`, else an older run's `config.json`."""
    for name in (CONFIG, LEGACY_CONFIG):
        if (run / name).is_file():
            return run / name
    return None


def write_config(run: Path, values: dict[str, Any]) -> None:
    files.write_text(config_path(run), json.dumps(values, indent=2, sort_keys=True) + "\n")


def metrics_path(run: Path) -> Path:
    return run / METRICS


def tensorboard_dir(run: Path) -> Path:
    return run / TENSORBOARD


def checkpoints_dir(run: Path) -> Path:
    return run / CHECKPOINTS


def checkpoint_path(run: Path, step: int) -> Path:
    """The step checkpoint `checkpoints/step-XXXXXXXX` of update `step`."""
    return checkpoints_dir(run) / checkpoint_name(step)


def best_path(run: Path) -> Path:
    return run / BEST


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """The run's complete step checkpoints as (step, path), oldest first."""
    return list_checkpoints(run)


def latest_resumable(run: Path) -> Path | None:
    """The newest step checkpoint that still holds its training state."""
    found = latest_resumable_step(run)
    return found[1] if found else None


def latest_resumable_step(run: Path) -> tuple[int, Path] | None:
    """`latest_resumable` with its step."""
    for step, path in reversed(checkpoints(run)):
        if (path / TRAIN_STATE).is_file():
            return step, path
    return None


def worker_log(run: Path, rank: int) -> Path:
    """Where worker `rank` of a multi-worker run keeps the details of its failure."""
    return run / LOGS / f"worker-{rank}.log"


def check_writable(run: Path) -> None:
    """The run directory exists (or can be made) and is writable."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to the run directory ({exc.strerror})",
                          where=str(run)) from None
