"""Checkpoints, pruning, best/, and resuming bit for bit."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nmt import train
from nmt.checkpoint import list_checkpoints, load_checkpoint, load_train_state
from nmt.cli import app
from nmt.data import load_prepared
from nmt.errors import ConfigError

from .support import (
    SMALL_MODEL,
    cli,
    cli_env,
    one_line_error,
    read_metrics,
    small_run,
    wait_for_checkpoint,
    weights,
    write_prepared,
)


def test_the_run_directory(tmp_path, toy_data):
    run = tmp_path / "run"
    result = train.main(data=toy_data, run=run, preset="tiny",
                        overrides=small_run(max_steps=8, save_every=2, keep_last=3))
    assert result.steps == 8 and result.reason == "max steps"
    found = list_checkpoints(run)
    assert [s for s, _ in found] == [4, 6, 8]
    # older checkpoints keep their weights (for averaging) but drop the optimizer state
    assert [(p / "train_state.pt").exists() for _, p in found] == [False, True, True]
    ckpt = load_checkpoint(found[-1][1])
    assert ckpt.meta["step"] == 8 and ckpt.meta["data"]["name"] == "toy"
    assert ckpt.meta["data"]["content_hash"] == load_prepared(toy_data).content_hash
    assert set(ckpt.meta["valid"]) >= {"loss", "bleu"}
    state = load_train_state(found[-1][1])  # weights_only=True
    assert state["step"] == 8 and "optimizer" in state and len(state["rng"]) == 1
    best = load_checkpoint(run / "best")
    assert not (run / "best" / "train_state.pt").exists() and best.step == result.best_step
    saved = train.load_config(run / "train_config.json")
    assert saved.max_steps == 8 and saved.model.d_model == 32 and saved.data == str(toy_data)
    metrics = read_metrics(run)
    kinds = {r["kind"] for r in metrics}
    assert {"start", "train", "valid", "end"} <= kinds
    lrs = {r["step"]: r["lr"] for r in metrics if r["kind"] == "train"}
    assert lrs[5] == pytest.approx(train.learning_rate(saved, 5))
    # a finished run resumes to nothing more to do
    again = train.main(data=toy_data, run=run)
    assert again.steps == 8 and again.start_step == 8


def test_epoch_end_checkpoints_are_marked_and_averaged(tmp_path, toy_data):
    """With the interval beyond the last step, the run checkpoints at every epoch end and once
    where max steps stop it mid-epoch; `average --last` takes the epoch ends, as fairseq's
    --num-epoch-checkpoints, not the stop checkpoint."""
    run = tmp_path / "run"
    train.main(data=toy_data, run=run, preset="tiny", overrides=small_run(
        max_steps=11, batch_tokens=1200, save_every=1000, keep_last=50, valid_bleu_lines=0))
    metas = [load_checkpoint(path).meta for _, path in list_checkpoints(run)]
    assert len(metas) >= 4 and metas[-1]["step"] == 11
    # "epoch" is the epoch in progress: it moves on exactly where an epoch ended
    assert all(m["epoch_end"] for m in metas[:-1])
    assert metas[-1]["epoch_end"] == (metas[-1]["epoch"] != metas[-2]["epoch"])
    assert not metas[-1]["epoch_end"], "pick max_steps mid-epoch for this test"
    result = CliRunner().invoke(app, ["average", str(run), "--last", "3", "-o",
                                      str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "avg").meta["averaged_from"] == [
        f"step-{m['step']:08d}" for m in metas[-4:-1]]


RESUME_RUN = small_run(max_steps=30, save_every=5, batch_tokens=150, keep_last=30, log_every=5,
                       valid_bleu_lines=2)


@pytest.fixture(scope="module")
def resume_setup(tmp_path_factory, toy_data):
    """A config file and the final weights of one uninterrupted run of it."""
    root = tmp_path_factory.mktemp("resume")
    config = root / "config.json"
    config.write_text(json.dumps({"preset": "tiny", **RESUME_RUN}))
    torch.set_num_threads(1)
    result = train.main(data=toy_data, run=root / "straight", config_file=config)
    assert result.steps == 30
    return config, weights(Path(result.last_checkpoint))


def assert_bitwise_equal(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]):
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, toy_data, resume_setup):
    config, expected = resume_setup
    run = tmp_path / "killed"
    command = cli(toy_data, "--config", config, "--run", run)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env())
    killed_after = wait_for_checkpoint(proc, run)
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and killed_after < 30
    # the same command again, run in this process to spare a second interpreter start
    resumed = CliRunner().invoke(app, [str(a) for a in command[3:]])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming from" in resumed.output
    final = list_checkpoints(run)[-1]
    assert final[0] == 30
    assert_bitwise_equal(weights(final[1]), expected)
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "train"]
    assert steps == sorted(set(steps))  # the killed run's extra records were dropped


@pytest.mark.slow
def test_sigterm_checkpoints_exits_0_and_resumes_exactly(tmp_path, toy_data, resume_setup):
    config, expected = resume_setup
    run = tmp_path / "stopped"

    def stop_after_first_checkpoint():
        while not list_checkpoints(run):
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    # should the signal land after training, it must not kill the test process
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        watcher = threading.Thread(target=stop_after_first_checkpoint, daemon=True)
        watcher.start()
        result = CliRunner().invoke(app, ["train", str(toy_data), "--config", str(config),
                                          "--run", str(run)])
        watcher.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 0, result.output
    assert "stopped by SIGTERM" in result.output and "resume" in result.output
    stopped_at = list_checkpoints(run)[-1][0]
    assert stopped_at < 30
    resumed = train.main(data=toy_data, run=run, config_file=config)
    assert resumed.start_step == stopped_at and resumed.steps == 30
    assert_bitwise_equal(weights(Path(resumed.last_checkpoint)), expected)


def test_resume_refuses_other_data_or_architecture(tmp_path, toy_data, tiny_vocab):
    run = tmp_path / "run"
    train.main(data=toy_data, run=run, preset="tiny", overrides=small_run(max_steps=3))
    other = write_prepared(tmp_path / "other", tiny_vocab, {"train": ([[5, 6]], [[7, 8]])})
    with pytest.raises(ConfigError, match="other data"):
        train.main(data=other, run=run)
    with pytest.raises(ConfigError, match="architecture.*d_model 32 -> 64"):
        train.main(data=toy_data, run=run, preset="tiny",
                   overrides=small_run(model={**SMALL_MODEL, "d_model": 64}))


def test_the_first_record_after_a_resume_covers_the_updates_of_an_uninterrupted_run(
        tmp_path, toy_data):
    # records every 5 updates; the first run stops at 7, inside the window of record 10
    straight = tmp_path / "straight"
    train.main(data=toy_data, run=straight, preset="tiny",
               overrides=small_run(max_steps=10, log_every=5, save_every=100))
    resumed = tmp_path / "resumed"
    for max_steps in (7, 10):
        train.main(data=toy_data, run=resumed, preset="tiny",
                   overrides=small_run(max_steps=max_steps, log_every=5, save_every=100))

    def records(run):
        return [{k: r[k] for k in ("step", "epoch", "loss", "nll", "lr")}
                for r in read_metrics(run) if r["kind"] == "train"]

    assert [r["step"] for r in records(straight)] == [5, 10]
    assert records(resumed) == records(straight)


def test_a_damaged_training_state_is_one_line_and_exit_2(tmp_path, toy_data):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "tiny", **small_run(max_steps=6, save_every=3)}))
    run = tmp_path / "run"
    first = CliRunner().invoke(app, ["train", str(toy_data), "--config", str(config),
                                     "--run", str(run), "--max-steps", "3"])
    assert first.exit_code == 0, first.output
    state_file = list_checkpoints(run)[-1][1] / "train_state.pt"
    good = load_train_state(state_file.parent)
    assert good["window"]["tokens"] == 0  # a record at every update (log_every 1)

    def rng(**changes):
        return [{**good["rng"][0], **changes}]

    moments = {k: dict(v) for k, v in good["optimizer"]["state"].items()}
    moments[0]["exp_avg"] = torch.zeros(3)
    negative = {k: dict(v) for k, v in good["optimizer"]["state"].items()}
    negative[0]["exp_avg_sq"] = -negative[0]["exp_avg_sq"] - 1

    def group(**changes):
        return {**good["optimizer"], "param_groups": [{**good["optimizer"]["param_groups"][0],
                                                       **changes}]}

    cases = [
        ({"step": "3"}, "step must be an integer"),
        ({"step": 2}, "step 2 but the checkpoint is of step 3"),
        ({"epoch": 0}, "epoch must be an integer of at least 1"),
        ({"elapsed": float("nan")}, "elapsed must be a finite number"),
        ({"best_step": 9}, "best_step 9 is after"),
        ({"window": {"loss": 1.0, "nll": 1.0, "tokens": -4}}, "window tokens"),
        ({"rng": []}, "rng must be a list"),
        ({"rng": rng(torch=torch.zeros(7, dtype=torch.uint8))}, "not a CPU generator's state"),
        ({"rng": rng(python=(3, (1, 2), None))}, "rng of worker 0: python"),
        ({"optimizer": {**good["optimizer"], "state": moments}},
         "optimizer exp_avg (3,) for a parameter of shape"),
        ({"optimizer": {**good["optimizer"], "state": negative}}, "optimizer exp_avg_sq"),
        ({"optimizer": group(eps=-1.0)}, "optimizer settings out of range"),
        ({"optimizer": group(lr=float("nan"))}, "optimizer settings out of range"),
        ({"optimizer": group(betas=(5.0, 5.0))}, "optimizer settings out of range"),
        ({"scaler": {"scale": float("nan"), "growth_factor": 2.0, "backoff_factor": 0.5,
                     "growth_interval": 2000, "_growth_tracker": 0}},
         "scaler: scale must be a positive number"),
    ]
    resume = ["train", str(toy_data), "--config", str(config), "--run", str(run)]
    for change, message in cases:
        torch.save({**good, **change}, state_file)
        result = CliRunner().invoke(app, resume)
        assert result.exit_code == 2, (change, result.output)
        line = one_line_error(result.output)
        assert message in line and "train_state.pt" in line, (change, line)
    torch.save(good, state_file)  # the intact state resumes
    result = CliRunner().invoke(app, resume)
    assert result.exit_code == 0, result.output
    assert list_checkpoints(run)[-1][0] == 6
