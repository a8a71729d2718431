"""`nmt train`: the paper's training recipe on prepared data, on one worker or many.

The recipe (Vaswani et al., 2017, section 5): batches of about 25,000 tokens grouped by length,
Adam (0.9, 0.98, 1e-9) with lr = d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), label
smoothing 0.1, dropout 0.1 (base) or 0.3 (big), 100k steps (base) or 300k (big). Every value is a
field of `TrainConfig`, so a flag or a JSON config file overrides it.

A run directory (layout: `rundir`) holds `train_config.json` (the resolved `TrainConfig`),
`metrics.jsonl`, `checkpoints/step-XXXXXXXX/` and `best/`. Training resumes from its newest
checkpoint exactly: model, optimizer, loss scaler, every RNG and the position in the data order
are restored, and the data order of an epoch depends on (seed, epoch) alone, so an interrupted
run ends with the same weights as an uninterrupted one.

Modules: `config` (TrainConfig, recipes, overrides), `rundir` (the run directory's layout),
`session` (Session and TrainState), `step` (objective, optimizer, schedule, one update),
`report` (metrics.jsonl and progress), `validate` (loss and BLEU), `checkpointing` (save and
resume), `loop` (the loop and its one validate/save/stop decision) and `launch` (entry points,
one worker or many).
"""

from nmt.train.config import (
    RECIPES,
    TrainConfig,
    apply_overrides,
    load_config,
    parse_betas,
    parse_duration,
    recipe,
    resolve_config,
    with_vocabulary,
)
from nmt.train.launch import TrainResult, run, run_worker
from nmt.train.loop import Action, StopRequest, decide, train_loop
from nmt.train.report import MetricsLog, Reporter, format_record
from nmt.train.session import Session, TrainState
from nmt.train.step import Objective, TrainingError, build_optimizer, learning_rate, real_positions

main = run  # the name `nmt.cli` calls

__all__ = [
    "RECIPES", "Action", "MetricsLog", "Objective", "Reporter", "Session", "StopRequest",
    "TrainConfig", "TrainResult", "TrainState", "TrainingError", "apply_overrides",
    "build_optimizer", "decide", "format_record", "learning_rate", "load_config", "main",
    "parse_betas", "parse_duration", "real_positions", "recipe", "resolve_config", "run",
    "run_worker", "train_loop", "with_vocabulary",
]
