"""`nmt prepare` stage 1: cleaning filters, gzip input, raw evaluation text."""

from __future__ import annotations

from conftest import toy_pairs

from nmt import prepare
from nmt.data import load_prepared

from .helpers import (
    config,
    decoded,
    lines_of,
    write_text,
)


def test_cleaning_filters_and_gzip_input(tmp_path):
    pairs = toy_pairs()
    dirty = pairs[:40] + [("  ", "leer"), ("Nur Quelle", "")] + pairs[:5] + [
        ("A  man\twalks .\r", " Ein Mann geht . ")]
    files = {"train": write_text(tmp_path / "d" / "train", dirty, gz=True),
             "valid": write_text(tmp_path / "d" / "valid", [("a\rb  ", " c ")] + pairs[:3])}
    summary = prepare.run(config(tmp_path / "out", files, dedup=True))
    data = load_prepared(summary.out)
    train = data.manifest["splits"]["train"]
    assert train["filtered"]["empty"] == 2 and train["filtered"]["duplicate"] == 5
    assert train["pairs"] == 41 and train["lines"] == len(dirty)
    assert decoded(data.split("train"), data.vocab)[-1] == ("A man walks .", "Ein Mann geht .")
    # validation is never filtered; its raw text keeps everything but line breaks
    assert lines_of(data.raw_path("valid", "en"))[0] == "a b  "
    assert decoded(data.split("valid"), data.vocab)[0] == ("a b", "c")
