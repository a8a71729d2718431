import dataclasses
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_pairs
from safetensors.torch import load_file
from typer.testing import CliRunner

from nmt import train
from nmt.checkpoint import list_checkpoints, load_checkpoint, load_train_state
from nmt.cli import app
from nmt.data import MANIFEST_FORMAT, TokenArrayWriter, load_prepared, token_dtype
from nmt.distributed import Launch
from nmt.errors import ConfigError, DataError

# A model small enough for two CPU cores; dropout on, so resuming must restore the RNGs.
SMALL_MODEL = {"d_model": 32, "d_ff": 64, "n_heads": 4, "n_encoder_layers": 1,
               "n_decoder_layers": 1, "dropout": 0.1}


def write_prepared(path: Path, vocab, splits: dict, *, raw: dict | None = None,
                   name: str = "toy") -> Path:
    """A prepared directory in nmt/data.py's format: splits maps name -> (src ids, tgt ids)."""
    path.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(vocab))
    digest = hashlib.sha256(vocab.sha256.encode())
    info = {}
    for split, (src_ids, tgt_ids) in splits.items():
        for lang, ids in (("en", src_ids), ("de", tgt_ids)):
            with TokenArrayWriter(path / f"{split}.{lang}", dtype) as writer:
                for sentence in ids:
                    writer.append(sentence)
            digest.update((path / f"{split}.{lang}.bin").read_bytes())
        info[split] = {"pairs": len(src_ids), "src_tokens": sum(map(len, src_ids)),
                       "tgt_tokens": sum(map(len, tgt_ids))}
    for split, lines in (raw or {}).items():
        (path / f"{split}.raw.de").write_text("".join(f"{line}\n" for line in lines),
                                              encoding="utf-8")
    vocab.save(path / "spm.model")
    manifest = {"format": MANIFEST_FORMAT, "corpus": name, "src_lang": "en", "tgt_lang": "de",
                "dtype": dtype.name, "spm": {"file": "spm.model", "sha256": vocab.sha256,
                                             "vocab_size": len(vocab)},
                "splits": info, "settings": {}, "content_hash": digest.hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory, tiny_vocab) -> Path:
    pairs = toy_pairs()
    rng = np.random.default_rng(0)
    rng.shuffle(pairs)
    train_pairs, valid_pairs = pairs[:130], pairs[130:142]
    encode = tiny_vocab.encode_batch
    splits = {"train": ([encode([s])[0] for s, _ in train_pairs],
                        [encode([t])[0] for _, t in train_pairs]),
              "valid": ([encode([s])[0] for s, _ in valid_pairs],
                        [encode([t])[0] for _, t in valid_pairs])}
    return write_prepared(tmp_path_factory.mktemp("toy"), tiny_vocab, splits,
                          raw={"valid": [t for _, t in valid_pairs]})


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared with other tests: one intra-op thread is fastest for these models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_run(**changes) -> dict:
    values = {"model": SMALL_MODEL, "batch_tokens": 200, "max_steps": 6, "warmup": 10,
              "save_every": 3, "log_every": 1, "valid_bleu_lines": 4, "seed": 3}
    return {**values, **changes}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Equal to float tolerance. Key biases are skipped: softmax ignores them, so their true
    gradient is 0 and Adam turns the rounding noise left in it into full-size steps."""
    assert a.keys() == b.keys()
    for name in a:
        if not name.endswith("k_proj.bias"):
            assert torch.allclose(a[name], b[name], atol=1e-5), name


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- recipe and configuration --------------------------------------------------------------------
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


# --- schedule and loss ---------------------------------------------------------------------------
def test_noam_schedule_is_the_papers_formula():
    cfg = train.recipe("base")
    for step in (1, 10, 1000, 3999, 4000, 4001, 50_000, 100_000):
        expected = 512 ** -0.5 * min(step ** -0.5, step * 4000 ** -1.5)
        assert train.learning_rate(cfg, step) == pytest.approx(expected, rel=1e-12)
    rates = [train.learning_rate(cfg, s) for s in range(1, 20_000, 7)]
    assert max(rates) == pytest.approx((512 * 4000) ** -0.5, rel=1e-3)  # the peak, at warmup
    scaled = dataclasses.replace(cfg, lr=1e-3)
    assert train.learning_rate(scaled, 4000) == pytest.approx(1e-3)
    assert train.learning_rate(scaled, 16_000) == pytest.approx(5e-4)


def test_inverse_sqrt_schedule():
    cfg = dataclasses.replace(train.recipe("base"), lr_schedule="inverse_sqrt", lr=7e-4,
                              warmup=4000, warmup_init_lr=1e-7)
    assert train.learning_rate(cfg, 2000) == pytest.approx(1e-7 + (7e-4 - 1e-7) / 2)
    assert train.learning_rate(cfg, 4000) == pytest.approx(7e-4)
    assert train.learning_rate(cfg, 16_000) == pytest.approx(3.5e-4)


# --- learning ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_tiny_model_learns_to_copy(tmp_path, tiny_vocab):
    rng = np.random.default_rng(0)

    def sequences(n):
        src = [rng.integers(4, 14, rng.integers(3, 9)).tolist() for _ in range(n)]
        return src, [list(s) for s in src]

    held_out = sequences(40)
    data = write_prepared(tmp_path / "copy", tiny_vocab,
                          {"train": sequences(1000), "valid": held_out})
    model = {"d_model": 64, "d_ff": 128, "n_heads": 4, "n_encoder_layers": 2,
             "n_decoder_layers": 2, "dropout": 0.0}
    result = train.main(data=data, run=tmp_path / "run", preset="tiny", overrides=dict(
        model=model, batch_tokens=500, max_steps=300, warmup=50, lr=3e-3, label_smoothing=0.0,
        save_every=300, save_epochs=False, log_every=50, valid_bleu_lines=40))
    records = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "train"]
    assert records[0]["nll"] > 2.0 and records[-1]["nll"] < 0.15, records
    valid = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "valid"][-1]
    assert valid["nll"] < 0.2 and result.steps == 300
    # greedy decoding copies held-out sequences (nearly) token for token
    from nmt.search import greedy

    model = load_checkpoint(result.last_checkpoint).build_model()
    src_ids, _ = held_out
    src = torch.tensor([s + [3] + [0] * (8 - len(s)) for s in src_ids])  # + EOS, padded
    out = greedy(model, src, torch.full((len(src_ids),), 12))
    pairs = list(zip(out, src_ids, strict=True))
    right = sum(a == b for o, s in pairs for a, b in zip(o, s, strict=False))
    accuracy = right / sum(max(len(o), len(s)) for o, s in pairs)
    assert accuracy >= 0.85, (accuracy, pairs)  # chance: 0.1


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
    saved = train.load_config(run / "config.json")
    assert saved.max_steps == 8 and saved.model.d_model == 32 and saved.data == str(toy_data)
    metrics = read_metrics(run)
    kinds = {r["kind"] for r in metrics}
    assert {"start", "train", "valid", "end"} <= kinds
    lrs = {r["step"]: r["lr"] for r in metrics if r["kind"] == "train"}
    assert lrs[5] == pytest.approx(train.learning_rate(saved, 5))
    # a finished run resumes to nothing more to do
    again = train.main(data=toy_data, run=run)
    assert again.steps == 8 and again.start_step == 8


def test_stop_criteria(tmp_path, toy_data):
    epochs = train.main(data=toy_data, run=tmp_path / "epochs", preset="tiny",
                        overrides=small_run(max_steps=1000, max_epochs=1, save_every=1000,
                                            valid_bleu_lines=0))
    assert epochs.reason == "max epochs" and epochs.epoch == 2 and epochs.steps > 1
    assert [s for s, _ in list_checkpoints(tmp_path / "epochs")] == [epochs.steps]
    timed = train.main(data=toy_data, run=tmp_path / "time", preset="tiny",
                       overrides=small_run(max_steps=1000, max_time=1e-6, valid_bleu_lines=0))
    assert timed.reason == "max time" and timed.steps <= 2
    # BLEU cannot improve when the learning rate is ~0: patience 2 stops at the third validation
    patient = train.main(data=toy_data, run=tmp_path / "patience", preset="tiny",
                         overrides=small_run(max_steps=1000, lr=1e-12, save_every=1,
                                             patience=2, valid_bleu_lines=2))
    assert patient.reason == "early stopping" and patient.steps == 3


def test_tensorboard_events_or_a_clear_error(tmp_path, toy_data):
    import importlib.util

    overrides = small_run(max_steps=2, save_every=2, tensorboard=True)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match="pip install tensorboard"):
            train.main(data=toy_data, run=tmp_path / "run", preset="tiny", overrides=overrides)
    else:
        train.main(data=toy_data, run=tmp_path / "run", preset="tiny", overrides=overrides)
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_update_freq_accumulates_the_same_update(tmp_path, toy_data):
    model = {**SMALL_MODEL, "dropout": 0.0}
    runs = [tmp_path / f"run{k}" for k in (1, 3)]
    results = [train.main(data=toy_data, run=run, preset="tiny",
                          overrides=small_run(model=model, update_freq=k, max_steps=4,
                                              save_every=2, valid_bleu_lines=0))
               for k, run in zip((1, 3), runs, strict=True)]
    assert "3 micro-batch(es)" in results[1].layout
    assert_same_training(*runs)


def assert_same_training(run_a: Path, run_b: Path) -> None:
    """Both runs wrote the same checkpoints, equal to float tolerance, and they trained."""
    a, b = list_checkpoints(run_a), list_checkpoints(run_b)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 2
    for (_, path_a), (_, path_b) in zip(a, b, strict=True):
        assert_close(weights(path_a), weights(path_b))
    first, last = weights(a[0][1]), weights(a[-1][1])
    assert not torch.allclose(first["encoder.embed.tokens.weight"],
                              last["encoder.embed.tokens.weight"])


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


# --- resume ---------------------------------------------------------------------------------------
def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt", "train", *map(str, args)]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_checkpoints(run)
        if found:
            return found[-1][0]
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


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


# --- bad input ------------------------------------------------------------------------------------
def test_non_finite_losses_are_skipped_then_stop_training(tmp_path, toy_data, monkeypatch, caplog):
    real = train.smoothed_loss
    calls = {"n": 0}

    def sometimes_nan(logits, target, **kw):
        loss, nll = real(logits, target, **kw)
        if not torch.is_grad_enabled():  # validation
            return loss, nll
        calls["n"] += 1
        if calls["n"] == 3 or calls["n"] >= 6:
            loss = loss * float("nan")
        return loss, nll

    monkeypatch.setattr(train, "smoothed_loss", sometimes_nan)
    run = tmp_path / "run"
    with pytest.raises(train.TrainingError, match="NaN/inf for 3 updates in a row"):
        train.main(data=toy_data, run=run, preset="tiny",
                   overrides=small_run(max_steps=50, save_every=2, max_bad_steps=3,
                                       valid_bleu_lines=0))
    assert "update skipped (1 in a row)" in caplog.text
    # batches 1, 2, 4, 5 updated (3 was skipped); the checkpoints hold finite weights
    steps = [s for s, _ in list_checkpoints(run)]
    assert steps == [2, 4]
    for tensor in weights(list_checkpoints(run)[-1][1]).values():
        assert torch.isfinite(tensor).all()


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, toy_data):
    proc = subprocess.run(cli(tmp_path / "missing", "--run", tmp_path / "r"),
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert proc.returncode == 2
    assert "no such data directory" in one_line_error(proc.stderr)
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [([str(tmp_path), "--run", str(tmp_path / "r")], "not a prepared data directory"),
             ([str(toy_data), "--preset", "huge", "--run", str(tmp_path / "r")],
              "unknown preset 'huge'"),
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


def test_validation_bleu_uses_raw_references(tmp_path, toy_data):
    result = train.main(data=toy_data, run=tmp_path / "run", preset="tiny",
                        overrides=small_run(max_steps=2, save_every=2, valid_bleu_lines=None))
    valid = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "valid"]
    assert valid and all(0.0 <= r["bleu"] <= 100.0 for r in valid)
    assert math.isfinite(valid[-1]["ppl"]) and result.best_step == 2
