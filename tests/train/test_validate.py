"""Validation loss and BLEU."""

import math
import shutil
from types import SimpleNamespace

import pytest

from nmt import train
from nmt.errors import DataError
from nmt.train.validate import score_validation

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


def test_references_that_are_not_utf8_are_one_line(tmp_path, toy_data):
    data = tmp_path / "data"
    shutil.copytree(toy_data, data)
    (data / "valid.raw.de").write_bytes(b"ok\n\xff\n")
    with pytest.raises(DataError, match=r"valid\.raw\.de: not UTF-8 text \(byte 3\)"):
        train.main(data=data, run=tmp_path / "run", preset="tiny",
                   overrides=small_run(max_steps=2, save_every=2))


def validations(metric: str, records: list[tuple[float, float]]) -> list[bool]:
    """`best` of each validation (bleu, loss) in turn, scored by `metric`."""
    state = SimpleNamespace(best_score=None, best_step=None, stale=0, step=0)
    marks = []
    for step, (bleu, loss) in enumerate(records, start=1):
        state.step = step
        result = {"bleu": bleu, "loss": loss}
        score_validation(state, result, metric)
        marks.append(result["best"])
    return marks


def test_best_metric_bleu_or_loss():
    # BLEU rises while the loss rises too: the two metrics disagree from the second validation
    records = [(10.0, 3.0), (12.0, 3.1), (11.0, 2.9), (13.0, 2.95)]
    assert validations("bleu", records) == [True, True, False, True]
    assert validations("loss", records) == [True, False, True, False]
    # without BLEU, both follow the loss
    no_bleu = [(None, loss) for _, loss in records]
    assert validations("bleu", no_bleu) == validations("loss", no_bleu)


def test_resume_with_another_best_metric_restarts_the_best(tmp_path, toy_data):
    """At lr ~0 nothing improves, so step 3 is best only when the best score starts afresh."""
    frozen = dict(lr=1e-12, save_every=1, valid_bleu_lines=2)
    for metric, expect in (("bleu", False), ("loss", True)):
        run = tmp_path / metric
        train.main(data=toy_data, run=run, preset="tiny", overrides=small_run(
            max_steps=2, best_metric="bleu", **frozen))
        result = train.main(data=toy_data, run=run, preset="tiny", overrides=small_run(
            max_steps=3, best_metric=metric, **frozen))
        last = [r for r in read_metrics(run) if r["kind"] == "valid"][-1]
        assert last["step"] == 3 and last["best"] is expect
        assert (result.best_step == 3) is expect
