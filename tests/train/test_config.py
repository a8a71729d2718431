"""TrainConfig, the recipes, overrides and config files."""

import dataclasses
import json

import pytest

from nmt import train
from nmt.errors import ConfigError


def test_paper_recipes():
    base, big = train.recipe("base"), train.recipe("big")
    assert (base.batch_tokens, base.max_steps, base.warmup) == (25_000, 100_000, 4000)
    assert (base.adam_betas, base.adam_eps, base.label_smoothing) == ((0.9, 0.98), 1e-9, 0.1)
    assert base.model.dropout == 0.1 and base.lr_schedule == "noam" and base.keep_last == 20
    assert big.max_steps == 300_000 and big.model.dropout == 0.3 and big.model.d_model == 1024
    with pytest.raises(ConfigError, match="unknown preset"):
        train.recipe("huge")


def test_config_file_round_trip_and_flags_override_it(tmp_path):
    cfg = train.resolve_config(data="d", run="r", preset="tiny",
                               overrides={"max_steps": 7, "dropout": 0.2, "max_time": "2h",
                                          "adam_betas": "0.9,0.99"})
    assert cfg.max_steps == 7 and cfg.model.dropout == 0.2 and cfg.max_time == 7200.0
    assert cfg.adam_betas == (0.9, 0.99) and cfg.warmup == train.recipe("tiny").warmup
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert train.load_config(path) == cfg
    again = train.resolve_config(config_file=path, overrides={"seed": 9})
    assert again == dataclasses.replace(cfg, seed=9)


def test_config_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "max_steps": 5,\n  oops\n}')
    with pytest.raises(ConfigError, match=r"bad\.json:3"):
        train.load_config(bad)
    bad.write_text('{"max_stepz": 5}')
    with pytest.raises(ConfigError, match="unknown training config fields: max_stepz"):
        train.load_config(bad)
    with pytest.raises(ConfigError, match="not both"):
        train.resolve_config(data="d", run="r", preset="tiny", config_file=bad)
    with pytest.raises(ConfigError, match="precision"):
        train.resolve_config(data="d", run="r", overrides={"precision": "fp8"})
    with pytest.raises(ConfigError, match="duration"):
        train.parse_duration("soon")
    for init in ("glorot", 1, None):
        bad.write_text(json.dumps({"preset": "tiny", "init": init}))
        with pytest.raises(ConfigError,
                           match=r"bad\.json: unknown init .* xavier, fairseq, fairseq-0\.9"):
            train.load_config(bad)


@pytest.mark.parametrize("field,value,message", [
    ("seed", "x", "seed must be an integer, not 'x'"),
    ("seed", 2**64, r"seed must be in \[-2\^63, 2\^64\)"),
    ("max_steps", 1.5, "max_steps must be an integer"),
    ("keep_last", True, "keep_last must be an integer"),
    ("lr", float("nan"), "lr must be a finite number"),
    ("adam_eps", float("inf"), "adam_eps must be a finite number"),
    ("adam_eps", -1.0, "adam_eps must be positive"),
    ("weight_decay", -1.0, "weight_decay must be 0 or more"),
    ("clip_norm", -1.0, "clip_norm must be 0 or more"),
    ("warmup_init_lr", -1.0, "warmup_init_lr must be 0 or more"),
    ("save_epochs", 3, "save_epochs must be true or false"),
    ("tensorboard", "yes", "tensorboard must be true or false"),
    ("init_from", 5, "init_from must be a string"),
    ("data", 5, "data must be a string"),
    ("model", 5, "model must be an object of model fields"),
    ("model", None, "model must be an object of model fields"),
    ("max_time", "abc", "cannot read duration 'abc'"),
])
def test_every_field_of_a_config_file_is_checked_and_named_with_the_file(tmp_path, field, value,
                                                                          message):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"preset": "tiny", field: value}))
    with pytest.raises(ConfigError, match=message) as info:
        train.load_config(bad)
    assert str(bad) in str(info.value)


def test_an_integer_where_a_number_goes_is_a_float(tmp_path):
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"preset": "tiny", "clip_norm": 0, "lr": 1}))
    cfg = train.load_config(ok)
    assert (cfg.clip_norm, cfg.lr) == (0.0, 1.0) and isinstance(cfg.clip_norm, float)


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff{}")
    with pytest.raises(ConfigError, match=r"bad\.json: not UTF-8 text \(byte 0\)"):
        train.load_config(bad)
