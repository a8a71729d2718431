"""The training configuration: `TrainConfig`, the paper's recipes, and the layers that resolve a
run's config (recipe or config file, then flags, then DATA_DIR and --run)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmt import config as model_presets
from nmt import workspace
from nmt.config import PRECISIONS, ModelConfig
from nmt.data import PreparedData
from nmt.errors import ConfigError
from nmt.model import INIT_STYLES
from nmt.train import rundir

log = logging.getLogger(__name__)

SCHEDULES = ("noam", "inverse_sqrt")
BEST_METRICS = ("bleu", "loss")
MODEL_FLAGS = ("dropout",)  # command-line overrides that change the ModelConfig


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    data: str = ""  # prepared data directory (written by `nmt prepare`)
    run: str = ""  # run directory: train_config.json, metrics.jsonl, checkpoints/, best/
    preset: str = "base"  # the model preset these defaults came from
    model: ModelConfig = field(default_factory=model_presets.base)  # architecture and dropout
    batch_tokens: int = 25_000  # tokens per update over all workers (padded longer side per pair)
    max_tokens_per_gpu: int | None = None  # memory bound of one micro-batch; sets update_freq
    update_freq: int | None = None  # micro-batches accumulated per update; None = derived
    max_steps: int = 100_000  # stop after this many updates
    max_epochs: int | None = None  # stop after this many passes over the data
    max_time: float | None = None  # stop after this many seconds of training (over resumes)
    patience: int | None = None  # stop after this many validations without a better score
    best_metric: str = "bleu"  # what best/ and patience follow: bleu (greedy BLEU; the loss
    #   when BLEU is off) or loss (validation loss, lower is better: fairseq's default)
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
    init: str = "xavier"  # weight init: xavier (nmt's) | fairseq | fairseq-0.9 (its transformer's)
    save_every: int = 1000  # checkpoint (and validate) every this many updates
    save_epochs: bool = True  # also checkpoint at the end of every epoch
    keep_last: int = 20  # step checkpoints kept (enough for the big model's 20-way average)
    valid_bleu_lines: int | None = None  # validation lines decoded for BLEU; None all, 0 none
    log_every: int = 100  # updates between metrics.jsonl records
    tensorboard: bool = False  # also write TensorBoard event files into RUN/tensorboard
    init_from: str | None = None  # a new run starts from this checkpoint's weights (fine-tuning)

    def __post_init__(self) -> None:
        # Read from disk (--config, a run's train_config.json): type and range of every field.
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; "
                              f"choose {', '.join(PRECISIONS)}")
        if self.best_metric not in BEST_METRICS:
            raise ConfigError(f"unknown best metric {self.best_metric!r}; "
                              f"choose {', '.join(BEST_METRICS)}")
        if self.init not in INIT_STYLES:
            raise ConfigError(f"unknown init {self.init!r}; choose {', '.join(INIT_STYLES)}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"unknown lr schedule {self.lr_schedule!r}; "
                              f"choose {', '.join(SCHEDULES)}")
        for f in dataclasses.fields(self):
            _check_type(self, f.name, f.type)
        if not isinstance(self.model, ModelConfig):
            raise ConfigError(f"model must be an object of model fields, not {self.model!r:.40}")
        positive = ("batch_tokens", "max_steps", "warmup", "save_every", "keep_last",
                    "log_every", "max_bad_steps", "max_tokens_per_gpu", "update_freq",
                    "max_epochs", "patience")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if not -2**63 <= self.seed < 2**64:  # what torch.manual_seed takes
            raise ConfigError(f"seed must be in [-2^63, 2^64), not {self.seed}")
        for name in ("weight_decay", "clip_norm", "warmup_init_lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be 0 or more, not {getattr(self, name)}")
        if self.adam_eps <= 0:
            raise ConfigError(f"adam_eps must be positive, not {self.adam_eps}")
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


_KINDS = {"str": str, "int": int, "float": float, "bool": bool}


def _check_type(cfg: TrainConfig, name: str, annotation: str) -> None:
    """One field of `cfg` against its annotation ("int", "float | None", ...): the right type,
    an int where a float goes made a float, floats finite."""
    kind = _KINDS.get(annotation.removesuffix(" | None"))
    value = getattr(cfg, name)
    if kind is None or (value is None and annotation.endswith(" | None")):
        return  # model and adam_betas: checked by their own code
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
        object.__setattr__(cfg, name, value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        words = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        raise ConfigError(f"{name} must be {words[kind]}, not {value!r:.40}")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, not {value}")


# --- recipes -------------------------------------------------------------------------------------
def base() -> TrainConfig:
    """The paper's base model: 100k updates of ~25k tokens, warmup 4000 (TrainConfig defaults)."""
    return TrainConfig(preset="base", model=model_presets.base(), max_tokens_per_gpu=12_500)


def big() -> TrainConfig:
    """The paper's big model: 300k updates, dropout 0.3 (from the model preset)."""
    return dataclasses.replace(base(), preset="big", model=model_presets.big(),
                               max_steps=300_000, max_tokens_per_gpu=6_250)


def small() -> TrainConfig:
    """Multi30k-sized data on one GPU: 8k-token batches, 20k updates, shorter warmup."""
    return dataclasses.replace(base(), preset="small", model=model_presets.small(),
                               batch_tokens=8192, max_tokens_per_gpu=None, max_steps=20_000,
                               warmup=2000, save_every=1000)


def tiny() -> TrainConfig:
    """CPU smoke runs: 2k-token batches, warmup 400, a validation every 200 updates on 200
    lines, so BLEU moves within minutes on two cores."""
    return dataclasses.replace(base(), preset="tiny", model=model_presets.tiny(),
                               batch_tokens=2048, max_tokens_per_gpu=None, max_steps=3000,
                               warmup=400, save_every=200, log_every=25, valid_bleu_lines=200)


RECIPES = {"base": base, "big": big, "small": small, "tiny": tiny}


def recipe(name: str) -> TrainConfig:
    """The training defaults of a model preset (a preset without its own recipe gets base's)."""
    if name in RECIPES:
        return RECIPES[name]()
    model = model_presets.preset(name)  # raises ConfigError for an unknown name
    return dataclasses.replace(base(), preset=name, model=model)


# --- overrides and config files ------------------------------------------------------------------
def apply_overrides(cfg: TrainConfig, values: dict[str, Any], *, where: str | None = None
                    ) -> TrainConfig:
    """`cfg` with fields replaced: top-level fields, `model` (a dict of model fields) and the
    model flags (`dropout`)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = dict(values)
    model_values = values.pop("model", {})
    if not isinstance(model_values, dict):
        raise ConfigError(f"model must be an object of model fields, not {model_values!r:.40}",
                          where=where)
    model_values = dict(model_values)
    for name in MODEL_FLAGS:
        if name in values:
            model_values[name] = values.pop(name)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown training config fields: {', '.join(unknown)}", where=where)
    try:
        if isinstance(values.get("max_time"), str):
            values["max_time"] = parse_duration(values["max_time"])
        if "adam_betas" in values:
            values["adam_betas"] = parse_betas(values["adam_betas"])
        model = ModelConfig.from_dict({**cfg.model.to_dict(), **model_values})
        return dataclasses.replace(cfg, **values, model=model)
    except TypeError as exc:
        raise ConfigError(f"invalid config ({exc})", where=where) from None
    except ConfigError as exc:
        raise ConfigError(str(exc), where=where) from None


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A JSON config file (e.g. a run's train_config.json) on top of the recipe of its
    `preset`."""
    path = Path(path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config ({exc.strerror})", where=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON ({exc.msg})", where=f"{path}:{exc.lineno}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", where=str(path)) from None
    if not isinstance(values, dict):
        raise ConfigError("expected a JSON object", where=str(path))
    base_cfg = recipe(str(values.get("preset", "base")))
    return apply_overrides(base_cfg, values, where=str(path))


def resolve_config(*, data: str | os.PathLike | None = None, run: str | os.PathLike | None = None,
                   preset: str | None = None, config_file: str | os.PathLike | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Layers: the preset's recipe, or a config file, or (resuming without --preset) the run's
    own saved config; then the flags in `overrides`; then DATA_DIR and --run."""
    if preset is not None and config_file is not None:
        raise ConfigError("give --preset or --config, not both (a config file names its preset)")
    if config_file is None and data is None and run is None:
        data = _default_data()
    if config_file is None and run is None:
        run = _default_run(data, preset or "base")
    run_config = rundir.existing_config(Path(run)) if run is not None else None
    if config_file is not None:
        cfg = load_config(config_file)
    elif preset is None and run_config is not None:
        cfg = load_config(run_config)
    else:
        cfg = recipe(preset or "base")
    paths = {k: str(v) for k, v in (("data", data), ("run", run)) if v is not None}
    cfg = apply_overrides(cfg, {**(overrides or {}), **paths})
    if not cfg.data:
        cfg = dataclasses.replace(cfg, data=str(_default_data()))
    if not cfg.run:
        cfg = dataclasses.replace(cfg, run=str(_default_run(cfg.data, cfg.preset)))
    return cfg


def _default_data() -> Path:
    """The workspace's one prepared corpus (`nmt train` without DATA), announced."""
    choice = workspace.default_data()
    log.info("data: %s (%s)", choice.path, choice.why)
    return choice.path


def _default_run(data: str | os.PathLike, preset: str) -> Path:
    """runs/<corpus>-<preset> (`nmt train` without --run), announced."""
    path = workspace.default_run(Path(data), preset)
    log.info("run directory: %s (give --run to choose another)", path)
    return path


def with_vocabulary(cfg: TrainConfig, data: PreparedData) -> TrainConfig:
    """The model sized for the data's vocabulary and using its special-token ids."""
    v = data.vocab
    model = dataclasses.replace(cfg.model, vocab_size=len(v), pad_id=v.pad_id, bos_id=v.bos_id,
                                eos_id=v.eos_id)
    return dataclasses.replace(cfg, model=model)


# --- parsing -------------------------------------------------------------------------------------
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
