import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import average
from nmt.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    unique_state_dict,
    write_checkpoint,
)
from nmt.cli import app
from nmt.errors import CheckpointError
from nmt.model import Transformer
from nmt.vocab import train_sentencepiece

runner = CliRunner()
STEPS = (20, 300, 1000)  # unpadded names below sort as 1000 < 20 < 300 as strings


def _model(config, seed):
    torch.manual_seed(seed)
    return Transformer(config).eval()


@pytest.fixture
def run_dir(tmp_path, tiny_model, tiny_vocab):
    """A run directory with checkpoints `step-20`, `step-300`, `step-1000` of different weights."""
    data = {"name": "toy", "src_lang": "en", "tgt_lang": "de", "content_hash": "a" * 64}
    for seed, step in enumerate(STEPS):
        model = _model(tiny_model.config, seed)
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"step-{step}", model, tiny_vocab,
                        {"step": step, "epoch": seed, "data": data}, train_state={"x": step})
    return tmp_path / "run"


def _weights(path):
    return load_checkpoint(path).tensors


def _mean(paths):
    tensors = [_weights(p) for p in paths]
    return {k: torch.stack([t[k] for t in tensors]).double().mean(0).float() for k in tensors[0]}


def test_average_of_listed_checkpoints_is_the_exact_mean(run_dir, tmp_path):
    inputs = [run_dir / "checkpoints" / f"step-{s}" for s in STEPS]
    out = tmp_path / "avg"
    result = runner.invoke(app, ["average", *map(str, inputs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "averaged 3 checkpoints" in result.output
    got, want = _weights(out), _mean(inputs)
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == torch.float32
        assert torch.equal(got[key], want[key]), key
    first = _weights(inputs[0])
    assert not torch.equal(got["encoder.embed.tokens.weight"], first["encoder.embed.tokens.weight"])


def test_last_n_picks_the_highest_steps_and_keeps_the_newest_meta(run_dir, tmp_path):
    out = tmp_path / "avg"
    summary = average.run([run_dir], output=out, last=2)
    assert summary.steps == [300, 1000]
    ckpt = load_checkpoint(out)
    assert ckpt.meta["averaged_from"] == ["step-300", "step-1000"]
    assert ckpt.step == 1000 and ckpt.meta["epoch"] == 2
    assert ckpt.meta["data"]["name"] == "toy"
    assert not (out / "train_state.pt").exists()
    want = _mean([run_dir / "checkpoints" / "step-300", run_dir / "checkpoints" / "step-1000"])
    for key, tensor in ckpt.tensors.items():
        assert torch.equal(tensor, want[key])


def test_averaged_checkpoint_builds_a_model_with_tied_weights(run_dir, tmp_path, tiny_model):
    out = tmp_path / "avg"
    average.run([run_dir], output=out, last=3)
    model = load_checkpoint(out).build_model()
    assert model.output.weight is model.decoder.embed.tokens.weight
    assert model.decoder.embed.tokens.weight is model.encoder.embed.tokens.weight
    src = torch.tensor([[5, 6, 7, 3]])
    tgt = torch.tensor([[2, 8, 9]])
    assert torch.isfinite(model(src, tgt)).all()
    assert set(unique_state_dict(model)) == set(unique_state_dict(tiny_model))


def test_last_n_more_than_exist_averages_what_exists_with_a_warning(run_dir, tmp_path):
    result = runner.invoke(app, ["average", str(run_dir), "--last", "5", "-o",
                                 str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    assert "--last 5" in result.output and "the 3 that exist" in result.output
    assert load_checkpoint(tmp_path / "avg").meta["averaged_from"] == [
        "step-20", "step-300", "step-1000"]


def _run_with(tmp_path, model_config, vocab, steps, *, ends=(), save_every=100) -> Path:
    run = tmp_path / "run"
    for seed, step in enumerate(steps):
        save_checkpoint(run / "checkpoints" / f"step-{step:08d}", _model(model_config, seed),
                        vocab, {"step": step, "epoch_end": step in ends})
    (run / "train_config.json").write_text(json.dumps({"save_every": save_every}))
    return run


def test_last_n_takes_evenly_spaced_step_checkpoints(tmp_path, tiny_model, tiny_vocab):
    """Epoch-end (130, 270) and final (350) checkpoints fall between the save_every=100 grid;
    --last 3 takes 100, 200, 300."""
    run = _run_with(tmp_path, tiny_model.config, tiny_vocab, (100, 130, 200, 270, 300, 350),
                    ends=(130, 270))
    summary = average.run([run], output=tmp_path / "avg", last=3)
    assert summary.steps == [100, 200, 300]
    off_both = [c for c in list_checkpoints(run) if c[0] in (100, 350)]
    assert average.scheduled(off_both, 1000) == off_both  # neither cadence: all of them


def test_last_n_takes_epoch_ends_where_they_outnumber_the_grid(tmp_path, tiny_model, tiny_vocab):
    """The Multi30k reference's shape: save_every at max steps (8,000), a checkpoint per epoch,
    and the last one written where max steps stopped the run mid-epoch (also on the grid)."""
    run = _run_with(tmp_path, tiny_model.config, tiny_vocab, (58, 116, 131, 174, 232, 250),
                    ends=(58, 116, 174, 232), save_every=250)
    assert average.run([run], output=tmp_path / "avg", last=3).steps == [116, 174, 232]


def test_a_run_dir_alone_takes_the_papers_number_into_run_avg(run_dir, tmp_path):
    summary = average.run([run_dir])  # base: the last 5 (only 3 here: all, with a warning)
    assert summary.output == run_dir / "avg" and summary.steps == [20, 300, 1000]
    (run_dir / "train_config.json").write_text(json.dumps({"preset": "big"}))
    for step in range(2000, 2000 + 19 * 10, 10):  # 19 more: 22 in all
        save_checkpoint(run_dir / "checkpoints" / f"step-{step}", _model(
            load_checkpoint(run_dir / "checkpoints" / "step-20").config, step), load_checkpoint(
            run_dir / "checkpoints" / "step-20").vocab, {"step": step})
    assert len(average.run([run_dir]).steps) == 20  # big: the last 20


def test_without_arguments_the_newest_run_in_the_workspace(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    run_dir.rename(tmp_path / "runs" / "r1")
    result = runner.invoke(app, ["average"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "runs" / "r1" / "avg").step == 1000
    monkeypatch.chdir(tmp_path / "runs")  # no ./runs here
    result = runner.invoke(app, ["average"])
    assert result.exit_code == 2 and "no training run in ./runs" in result.output


def test_listed_checkpoints_need_an_output(run_dir):
    with pytest.raises(CheckpointError, match="give -o OUTPUT"):
        average.run([run_dir / "checkpoints" / "step-20"])


def test_a_run_without_checkpoints_says_so(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)  # a run stopped before its first checkpoint
    result = CliRunner().invoke(app, ["average", str(run)])
    assert result.exit_code == 2
    assert "no checkpoints (checkpoints/step-*) in this run directory" in result.output


def test_different_architectures_are_refused(run_dir, tmp_path, tiny_config, tiny_vocab):
    other = dataclasses.replace(tiny_config, d_ff=48)
    odd = save_checkpoint(tmp_path / "odd", _model(other, 7), tiny_vocab, {"step": 5})
    good = run_dir / "checkpoints" / "step-20"
    result = runner.invoke(app, ["average", str(good), str(odd), "-o", str(tmp_path / "avg")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "d_ff" in lines[0] and "step-20" in lines[0] and "odd" in lines[0]


def test_different_vocabularies_are_refused(run_dir, tmp_path, tiny_config, tiny_vocab):
    text = [side for pair in toy_pairs() for side in pair]
    vocab = train_sentencepiece(text, vocab_size=len(tiny_vocab), model_type="unigram")
    assert len(vocab) == len(tiny_vocab) and vocab.sha256 != tiny_vocab.sha256
    odd = save_checkpoint(tmp_path / "odd", _model(tiny_config, 7), vocab, {"step": 5})
    with pytest.raises(CheckpointError, match="different vocabularies"):
        average.run([run_dir / "checkpoints" / "step-20", odd], output=tmp_path / "avg")


def test_different_tensor_sets_are_refused(run_dir, tmp_path, tiny_config, tiny_vocab):
    tensors = unique_state_dict(_model(tiny_config, 7))
    tensors.pop("encoder.layers.0.self_attn.q_proj.bias")
    odd = write_checkpoint(tmp_path / "odd", tensors=tensors, config=tiny_config,
                           vocab=tiny_vocab, meta={"step": 5})
    with pytest.raises(CheckpointError, match="different tensors.*q_proj.bias"):
        average.run([run_dir / "checkpoints" / "step-20", odd], output=tmp_path / "avg")


def test_output_that_would_destroy_an_input_is_refused(run_dir, tmp_path):
    inputs = [run_dir / "checkpoints" / f"step-{s}" for s in STEPS]
    with pytest.raises(CheckpointError, match="one of the checkpoints being averaged"):
        average.run(inputs, output=inputs[1])
    with pytest.raises(CheckpointError, match="contains the input"):
        average.run([run_dir], output=run_dir, last=2)
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "todo.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not an nmt checkpoint"):
        average.run(inputs, output=keep)
    assert (keep / "todo.txt").read_text() == "mine"
    assert all((p / "train_state.pt").exists() for p in inputs)


def test_existing_average_is_replaced(run_dir, tmp_path):
    out = tmp_path / "avg"
    average.run([run_dir], output=out, last=3)
    average.run([run_dir], output=out, last=1)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["averaged_from"] == ["step-1000"]
    assert torch.equal(_weights(out)["encoder.embed.tokens.weight"],
                       _weights(run_dir / "checkpoints" / "step-1000")[
                           "encoder.embed.tokens.weight"])
