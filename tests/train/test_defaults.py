"""`nmt train` in a workspace: data and run defaults, refusals, the run lock, fine-tuning."""

import fcntl
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import batching, train
from nmt.checkpoint import list_checkpoints, load_checkpoint
from nmt.cli import app
from nmt.data import load_prepared

from .support import (
    cli,
    cli_env,
    one_line_error,
    read_metrics,
    small_run,
    weights,
    write_prepared,
)

runner = CliRunner()


def _config(tmp_path, **changes):
    path = tmp_path / "small.json"
    path.write_text(json.dumps({"preset": "tiny", **small_run(**changes)}))
    return path


def test_without_data_or_run_it_uses_the_workspace(tmp_path, toy_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(toy_data, tmp_path / "data" / "toy")
    # a lone corpus is the default; the run goes to runs/<corpus>-<preset>
    result = runner.invoke(app, ["train", "--preset", "tiny", "--max-steps", "3",
                                 "--save-every", "3", "--batch-tokens", "200",
                                 "--valid-bleu-lines", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "data/toy" in result.output and "runs/toy-tiny" in result.output
    assert [s for s, _ in list_checkpoints(tmp_path / "runs" / "toy-tiny")] == [3]
    # two corpora: one line naming both
    shutil.copytree(toy_data, tmp_path / "data" / "other")
    result = runner.invoke(app, ["train", "--preset", "tiny"])
    assert result.exit_code == 2
    line = one_line_error(result.output)
    assert "several prepared corpora" in line and "data/other" in line and "data/toy" in line


def test_without_any_prepared_corpus_it_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--preset", "base", "--gpus", "8", "--device", "cpu"])
    assert result.exit_code == 2
    assert "nmt prepare" in one_line_error(result.output)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_gpus_without_a_gpu_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--preset", "base", "--gpus", "8"])
    assert result.exit_code == 2
    line = one_line_error(result.output)
    assert "no CUDA device; use --device cpu to start 8 CPU workers" in line


def test_a_second_trainer_on_the_same_run_is_refused(tmp_path, toy_data):
    run = tmp_path / "run"
    lock = tmp_path / ".run.lock"
    with open(lock, "w") as holder:  # as a live `nmt train` holds it
        fcntl.flock(holder, fcntl.LOCK_EX)
        holder.write("4242\n")
        holder.flush()
        proc = subprocess.run(cli(toy_data, "--run", run, "--config", _config(tmp_path)),
                              capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "being written by process 4242" in line and str(run) in line
    assert not list_checkpoints(run)


def test_a_run_killed_before_its_first_checkpoint_does_not_repeat_records(tmp_path, toy_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        '{"kind": "start", "step": 0}\n{"kind": "train", "step": 1, "loss": 9.0}\n{"kind": "tr')
    train.main(data=toy_data, run=run, preset="tiny", overrides=small_run(max_steps=3))
    records = read_metrics(run)
    assert [r["kind"] for r in records].count("start") == 1
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]


def _valid_nll(checkpoint, data) -> float:
    """Mean NLL per target token of a checkpoint on `data`'s valid split (teacher forcing)."""
    ckpt = load_checkpoint(checkpoint)
    model, c = ckpt.build_model(), ckpt.config
    split = load_prepared(data).split("valid")
    rows = np.arange(len(split))
    b = batching.collate(split.src, split.tgt, rows, pad_id=c.pad_id, bos_id=c.bos_id,
                         eos_id=c.eos_id)
    with torch.no_grad():
        logits = model(b.src, b.tgt_in)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), b.tgt_out,
                                             ignore_index=c.pad_id).item()


def test_init_fairseq_in_a_config_file_starts_from_fairseqs_initialisation(tmp_path, toy_data):
    """fairseq draws the q/k/v biases within 1/sqrt(d) (0.18 here) where nmt starts them at 0;
    after one update (lr 0.006) the two runs still show it."""
    largest = {}
    for init in ("xavier", "fairseq", "fairseq-0.9"):
        config = _config(tmp_path, max_steps=1, save_every=1, init=init)
        result = runner.invoke(app, ["train", str(toy_data), "--config", str(config),
                                     "--run", str(tmp_path / init)])
        assert result.exit_code == 0, result.output
        saved = json.loads((tmp_path / init / "train_config.json").read_text())
        assert saved["init"] == init
        bias = weights(list_checkpoints(tmp_path / init)[-1][1])[
            "encoder.layers.0.self_attn.q_proj.bias"]
        largest[init] = bias.abs().max().item()
    assert largest["xavier"] < 0.02 and largest["fairseq"] > 0.08 and largest["fairseq-0.9"] > 0.08


def test_init_from_fine_tunes_on_a_second_corpus(tmp_path, toy_data, tiny_vocab):
    base = tmp_path / "base"
    train.main(data=toy_data, run=base, preset="tiny", overrides=small_run(max_steps=6))
    start = list_checkpoints(base)[-1][1]
    # a second corpus in the same vocabulary: lowercased targets ending in "!"
    pairs = toy_pairs()
    tgt = [t.lower().replace(" .", " !") for _, t in pairs]
    encode = tiny_vocab.encode_batch
    second = write_prepared(tmp_path / "second", tiny_vocab, {
        "train": (encode([s for s, _ in pairs[:130]]), encode(tgt[:130])),
        "valid": (encode([s for s, _ in pairs[130:150]]), encode(tgt[130:150]))}, name="second")
    result = runner.invoke(app, ["train", str(second), "--run", str(tmp_path / "tuned"),
                                 "--config", str(_config(tmp_path, max_steps=12, save_every=12)),
                                 "--init-from", str(start), "--threads", "1"])
    assert result.exit_code == 0, result.output
    tuned = list_checkpoints(tmp_path / "tuned")[-1][1]
    assert load_checkpoint(tuned).step == 12  # a new schedule, counted from 0
    assert _valid_nll(tuned, second) < _valid_nll(start, second) - 0.1


def test_init_from_refuses_another_vocabulary_or_architecture(tmp_path, toy_data, tiny_vocab):
    base = tmp_path / "base"
    train.main(data=toy_data, run=base, preset="tiny", overrides=small_run(max_steps=3))
    start = list_checkpoints(base)[-1][1]
    wider = _config(tmp_path, model={**small_run()["model"], "d_model": 64})
    result = runner.invoke(app, ["train", str(toy_data), "--run", str(tmp_path / "a"),
                                 "--config", str(wider), "--init-from", str(start)])
    assert result.exit_code == 2 and "another architecture" in one_line_error(result.output)
    other = tmp_path / "otherdata"
    shutil.copytree(toy_data, other)
    from nmt.vocab import train_sentencepiece
    vocab = train_sentencepiece([t.upper() for p in toy_pairs() for t in p],
                                vocab_size=len(tiny_vocab))
    vocab.save(other / "spm.model")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["spm"]["sha256"] = vocab.sha256
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["train", str(other), "--run", str(tmp_path / "b"),
                                 "--config", str(_config(tmp_path)), "--init-from", str(start)])
    assert result.exit_code == 2 and "--vocab-from" in one_line_error(result.output)
