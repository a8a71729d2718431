"""Validation loss and BLEU."""

import math

from nmt import train

from .support import (
    read_metrics,
    small_run,
)


def test_validation_bleu_uses_raw_references(tmp_path, toy_data):
    result = train.main(data=toy_data, run=tmp_path / "run", preset="tiny",
                        overrides=small_run(max_steps=2, save_every=2, valid_bleu_lines=None))
    valid = [r for r in read_metrics(tmp_path / "run") if r["kind"] == "valid"]
    assert valid and all(0.0 <= r["bleu"] <= 100.0 for r in valid)
    assert math.isfinite(valid[-1]["ppl"]) and result.best_step == 2
