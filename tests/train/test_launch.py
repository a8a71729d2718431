"""Entry points: several workers, bad input, missing data."""

import subprocess

import pytest
from typer.testing import CliRunner

from nmt import train
from nmt.checkpoint import list_checkpoints
from nmt.cli import app
from nmt.distributed import Launch
from nmt.errors import DataError

from .support import (
    SMALL_MODEL,
    assert_same_training,
    cli,
    cli_env,
    one_line_error,
    small_run,
)


@pytest.mark.slow
def test_two_cpu_workers_match_one_process(tmp_path, toy_data):
    model = {**SMALL_MODEL, "dropout": 0.0}
    overrides = small_run(model=model, max_steps=4, save_every=2, valid_bleu_lines=0,
                          batch_tokens=300)
    ddp = train.main(data=toy_data, run=tmp_path / "ddp", preset="tiny", overrides=overrides,
                     launch=Launch(nproc=2, device="cpu"))
    single = train.main(data=toy_data, run=tmp_path / "one", preset="tiny", overrides=overrides)
    assert ddp.steps == single.steps == 4 and "2 worker(s)" in ddp.layout
    assert len(ddp.replica_digests) == 2 and len(set(ddp.replica_digests)) == 1
    assert_same_training(tmp_path / "ddp", tmp_path / "one")


def test_bad_input_is_one_line_and_exit_2(tmp_path, toy_data):
    proc = subprocess.run(cli(tmp_path / "missing", "--run", tmp_path / "r"),
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    assert "no such data directory" in one_line_error(proc.stderr)
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [([str(tmp_path), "--run", str(tmp_path / "r")], "not a prepared data directory"),
             ([str(toy_data), "--preset", "huge", "--run", str(tmp_path / "r")],
              "'huge' is not one of 'base', 'big', 'small', 'tiny'"),
             ([str(toy_data), "--preset", "tiny", "--run", str(blocker / "run")],
              "cannot write to the run directory"),
             ([str(toy_data), "--preset", "tiny", "--run", str(tmp_path / "r"), "--device", "cpu",
               "--precision", "fp16"], "fp16 needs a GPU"),
             ([str(toy_data), "--preset", "tiny", "--run", str(tmp_path / "r"),
               "--max-time", "soon"], "cannot read duration"),
             ([str(toy_data), "--preset", "tiny", "--config", str(blocker), "--run",
               str(tmp_path / "r")], "not both")]
    for args, message in cases:
        result = CliRunner().invoke(app, ["train", *args])
        assert result.exit_code == 2, result.output
        assert message in one_line_error(result.output)
    assert not list_checkpoints(tmp_path / "r")


def test_missing_data_raises_data_error(tmp_path):
    with pytest.raises(DataError):
        train.main(data=tmp_path / "nothing", run=tmp_path / "run", preset="tiny")
