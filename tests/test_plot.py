"""`nmt plot`: curves from metrics.jsonl files with known values."""

import json
import struct

import pytest
from typer.testing import CliRunner

from nmt.cli import app

pytest.importorskip("matplotlib", reason="the `viz` extra (matplotlib) is not installed")

from nmt import plot  # noqa: E402
from nmt.train import rundir  # noqa: E402

runner = CliRunner()


def _write_run(path, *, valid: bool, torn: bool = False):
    path.mkdir(parents=True)
    records = [{"kind": "start", "step": 0}]
    for step in range(10, 210, 10):
        lr = 1e-3 * min(step / 100, (100 / step) ** 0.5)  # warm-up to step 100, then decay
        records.append({"kind": "train", "step": step, "epoch": 1, "loss": 8 - step / 40,
                        "nll": 7.5 - step / 40, "ppl": 2.0 ** (10 - step / 30), "lr": lr,
                        "tokens_per_s": 1000.0 + step, "time": step * 0.5})
        if valid and step % 50 == 0:
            records.append({"kind": "valid", "step": step, "loss": 8.2 - step / 40,
                            "ppl": 2.0 ** (10.2 - step / 30), "bleu": step / 10, "best": True})
    text = "".join(json.dumps(r) + "\n" for r in records)
    if torn:
        text += '{"kind": "train", "st'  # a killed run's last line
    (path / rundir.METRICS).write_text(text)
    return path


def test_known_metrics_give_an_image_with_every_panel(tmp_path):
    run = _write_run(tmp_path / "base", valid=True, torn=True)
    curves = plot.read_run(run)
    assert len(curves.train) == 20 and len(curves.valid) == 4
    assert curves.time_at(50) == 25.0
    result = runner.invoke(app, ["plot", str(run), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    data = (tmp_path / "c.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 680)
    assert "validation BLEU" in result.output and "learning rate" in result.output


def test_runs_without_validation_still_plot_and_overlay(tmp_path):
    a = _write_run(tmp_path / "a", valid=False)
    b = _write_run(tmp_path / "b", valid=True)
    png, panels = plot.draw([plot.read_run(a)], "time")
    assert png[:4] == b"\x89PNG"
    assert panels == ["loss", "perplexity", "learning rate", "tokens/s (training)"]
    result = plot.run([a, b], tmp_path / "both.png", x="time")
    assert [r.name for r in result.runs] == ["a", "b"] and "validation BLEU" in result.panels
    assert (tmp_path / "both.png").stat().st_size > 10_000


def test_bad_runs_are_one_line_errors(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and "metrics.jsonl" in result.output
    run = _write_run(tmp_path / "r", valid=False)
    result = runner.invoke(app, ["plot", str(run), "--x", "epoch"])
    assert result.exit_code == 2 and "'epoch' is not one of 'step', 'time'" in result.output


def test_damaged_records_are_skipped_with_a_warning(tmp_path, caplog):
    run = _write_run(tmp_path / "r", valid=True)
    good = plot.read_run(run)
    damaged = [b"\xff\xfe not UTF-8\n",
               json.dumps({"kind": "train", "step": -5, "loss": 1.0}).encode() + b"\n",
               json.dumps({"kind": "train", "step": 7, "tokens_per_s": "fast"}).encode() + b"\n",
               json.dumps({"kind": "valid", "step": 8, "bleu": "x"}).encode() + b"\n",
               json.dumps({"kind": "train", "step": True}).encode() + b"\n"]
    with open(run / rundir.METRICS, "ab") as f:
        f.write(b"".join(damaged))
    again = plot.read_run(run)
    assert again.train == good.train and again.valid == good.valid
    assert sum("not a metrics record, skipped" in r.message for r in caplog.records) == 5
