"""The run directory's layout, and runs written before the config was renamed."""

import json

from nmt import train
from nmt.train import rundir

from .support import small_run


def test_paths(tmp_path):
    assert rundir.config_path(tmp_path) == tmp_path / "train_config.json"
    assert rundir.checkpoint_path(tmp_path, 1000) == tmp_path / "checkpoints" / "step-00001000"
    assert rundir.best_path(tmp_path) == tmp_path / "best"
    assert rundir.metrics_path(tmp_path) == tmp_path / "metrics.jsonl"
    assert rundir.existing_config(tmp_path) is None and rundir.checkpoints(tmp_path) == []


def test_an_old_runs_config_json_is_still_read(tmp_path):
    old = train.resolve_config(data="d", run=tmp_path, preset="tiny", overrides={"seed": 7})
    (tmp_path / "config.json").write_text(json.dumps(old.to_dict()))
    assert rundir.existing_config(tmp_path) == tmp_path / "config.json"
    assert train.resolve_config(data="d", run=tmp_path) == old
    new = train.resolve_config(data="d", run=tmp_path, preset="tiny", overrides={"seed": 8})
    rundir.write_config(tmp_path, new.to_dict())
    assert rundir.existing_config(tmp_path) == tmp_path / "train_config.json"
    assert train.resolve_config(data="d", run=tmp_path) == new


def test_an_old_run_directory_resumes(tmp_path, toy_data):
    run = tmp_path / "run"
    train.main(data=toy_data, run=run, preset="tiny",
               overrides=small_run(max_steps=3, save_every=3))
    (run / "train_config.json").rename(run / "config.json")  # as an older nmt left it
    resumed = train.main(data=toy_data, run=run, overrides={"max_steps": 5})
    assert resumed.start_step == 3 and resumed.steps == 5
    assert train.load_config(run / "train_config.json").model.d_model == 32
