"""The learning-rate schedules and the update (non-finite losses are skipped)."""

import dataclasses

import pytest
import torch

from nmt import train
from nmt.checkpoint import list_checkpoints
from nmt.train import step as step_module

from .support import (
    small_run,
    weights,
)


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


def test_non_finite_losses_are_skipped_then_stop_training(tmp_path, toy_data, monkeypatch, caplog):
    real = step_module.smoothed_loss
    calls = {"n": 0}

    def sometimes_nan(logits, target, **kw):
        loss, nll = real(logits, target, **kw)
        if not torch.is_grad_enabled():  # validation
            return loss, nll
        calls["n"] += 1
        if calls["n"] == 3 or calls["n"] >= 6:
            loss = loss * float("nan")
        return loss, nll

    monkeypatch.setattr(step_module, "smoothed_loss", sometimes_nan)
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
