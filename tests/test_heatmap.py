"""`nmt attention`: heatmaps of a known matrix, and the command end to end on a tiny model."""

import json
import struct

import pytest
import torch
from typer.testing import CliRunner

from nmt.checkpoint import save_checkpoint
from nmt.cli import app

pytest.importorskip("matplotlib", reason="the `viz` extra (matplotlib) is not installed")

from nmt import heatmap  # noqa: E402

runner = CliRunner()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_known_matrix_is_drawn_with_its_labels():
    weights = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]]
    image = heatmap.heatmap(weights, ["▁Ein", "</s>"], ["▁A", "▁dog", "</s>"], "cross")
    assert image.row_labels == ["▁Ein", "</s>"]
    assert image.column_labels == ["▁A", "▁dog", "</s>"]
    width, height = png_size(image.png)
    assert 150 < width < 1200 and 100 < height < 1000
    big = heatmap.heatmap(torch.full((20, 30), 1 / 30).numpy(), [f"t{i}" for i in range(20)],
                          [f"s{i}" for i in range(30)])
    assert png_size(big.png)[0] > width  # more tokens, a wider image


def test_labels_must_match_the_matrix():
    with pytest.raises(heatmap.ConfigError, match="labels"):
        heatmap.heatmap([[1.0, 0.0]], ["a"], ["b"])


def test_overview_is_a_grid():
    data = heatmap.overview(torch.rand(2, 3, 4, 5).softmax(-1).numpy(), list("abcd"),
                            list("vwxyz"), "overview")
    w, h = png_size(data)
    assert w > h  # 4 columns (3 heads and the mean) by 2 layers


def test_nmt_attention_writes_the_selected_images(tmp_path, tiny_model, tiny_vocab):
    ckpt = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, {"step": 1})
    out = tmp_path / "att"
    result = runner.invoke(app, ["attention", "A man sits in the park .", "-c", str(ckpt),
                                 "-o", str(out), "--kind", "cross", "--layer", "2",
                                 "--head", "3", "--threads", "1", "--beam", "2"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["attention.json", "cross-layer2-head3.png", "cross-layer2-mean.png",
                     "overview.png"]
    summary = json.loads((out / "attention.json").read_text())
    assert summary["source_tokens"][-1] == "</s>" and summary["translation"] in result.output
    for name in names[1:]:
        png_size((out / name).read_bytes())
    # every layer and head of one kind: 2 layers x (4 heads + mean) + overview
    result = runner.invoke(app, ["attention", "A dog .", "-c", str(ckpt), "-o", str(out),
                                 "--kind", "decoder", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("decoder-*.png"))) == 2 * 5 and (out / "overview.png").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    result = runner.invoke(app, ["attention", "A dog .", "-c", str(ckpt), "-o", str(out),
                                 "--layer", "7"])
    assert result.exit_code == 2 and "2 layers" in result.output

