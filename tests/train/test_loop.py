"""The loop: it learns, stops on every criterion, accumulates micro-batches."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nmt import train
from nmt.checkpoint import list_checkpoints, load_checkpoint

from .support import (
    SMALL_MODEL,
    assert_same_training,
    read_metrics,
    small_run,
    write_prepared,
)


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


def test_update_freq_accumulates_the_same_update(tmp_path, toy_data):
    model = {**SMALL_MODEL, "dropout": 0.0}
    runs = [tmp_path / f"run{k}" for k in (1, 3)]
    results = [train.main(data=toy_data, run=run, preset="tiny",
                          overrides=small_run(model=model, update_freq=k, max_steps=4,
                                              save_every=2, valid_bleu_lines=0))
               for k, run in zip((1, 3), runs, strict=True)]
    assert "3 micro-batch(es)" in results[1].layout
    assert_same_training(*runs)


# --- the one validate/save/stop decision ---------------------------------------------------------
def decide(step: int, *, epoch: int = 1, epoch_done: bool = False, updated: bool = True,
           signal: bool = False, time_up: bool = False, saved_at=None, **cfg_changes):
    cfg = dataclasses.replace(train.recipe("tiny"), max_steps=100, save_every=10,
                              **cfg_changes)
    state = SimpleNamespace(step=step, epoch=epoch, batch_index=0, saved_at=saved_at,
                            position=(step, epoch, 0))
    out = SimpleNamespace(updated=updated, signal=signal, time_up=time_up)
    return train.decide(cfg, state, out, epoch_done)


def test_decide_saves_on_save_steps_and_epoch_ends():
    assert decide(7) == train.Action()
    assert decide(10) == train.Action(validate=True)
    assert decide(10, updated=False) == train.Action()  # a skipped update saves nothing new
    assert decide(10, saved_at=(10, 1, 0)) == train.Action()  # already saved here
    assert decide(7, epoch=2, epoch_done=True) == train.Action(validate=True)
    assert decide(7, epoch=2, epoch_done=True, save_epochs=False) == train.Action()


def test_decide_stops_on_limits_and_signals():
    assert decide(100) == train.Action(validate=True, stop="max steps")
    assert decide(100, saved_at=(100, 1, 0)) == train.Action(stop="max steps")
    assert decide(7, time_up=True) == train.Action(validate=True, stop="max time")
    assert decide(7, epoch=3, epoch_done=True, max_epochs=2) == train.Action(
        validate=True, stop="max epochs")
    assert decide(7, epoch=2, epoch_done=True, max_epochs=2) == train.Action(validate=True)
    # a signal checkpoints at once; on a save step it validates that step as an uninterrupted
    # run would (best/ and patience stay the same), elsewhere it saves without validating
    assert decide(10, signal=True) == train.Action(validate=True, stop="signal")
    assert decide(7, signal=True) == train.Action(save=True, stop="signal")
    assert decide(7, signal=True, saved_at=(7, 1, 0)) == train.Action(save=True, stop="signal")
    # the first reached limit names the reason
    assert decide(100, time_up=True).stop == "max steps"
