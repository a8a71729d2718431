"""`nmt prepare` on bad input and settings: one-line errors, output untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import toy_pairs

from nmt import prepare
from nmt.cli import app
from nmt.errors import ConfigError, DataError

from .helpers import (
    config,
    fails,
    runner,
    snapshot,
    write_text,
)


def test_different_line_counts(prepared, tmp_path):
    out, files = prepared
    pairs = toy_pairs()
    bad = write_text(tmp_path / "bad" / "train", pairs)
    Path(f"{bad}.de").write_text("".join(f"{t}\n" for _, t in pairs[:-3]), encoding="utf-8")
    message = fails(out, config(out, {**files, "train": bad}), match="line counts differ")
    assert f"{len(pairs):,} lines" in message and f"{len(pairs) - 3:,}" in message


def test_missing_files(prepared, tmp_path):
    out, files = prepared
    message = fails(out, config(out, {**files, "test": tmp_path / "nowhere" / "test"}),
                    match="missing file")
    assert "nowhere/test.en" in message
    fails(out, config(out, {**files, "valid": tmp_path / "nowhere.parquet"}), match="missing")


def test_undecodable_bytes(prepared, tmp_path):
    out, files = prepared
    pairs = toy_pairs()
    bad = write_text(tmp_path / "bad" / "train", pairs)
    raw = Path(f"{bad}.en").read_bytes().split(b"\n")
    raw[6] = raw[6][:4] + b"\xff\xfe" + raw[6][4:]
    Path(f"{bad}.en").write_bytes(b"\n".join(raw))
    message = fails(out, config(out, {**files, "train": bad}), match="invalid UTF-8")
    assert f"{bad}.en:7" in message

    skipped = prepare.run(config(tmp_path / "skip", {**files, "train": bad}, on_bad_utf8="skip"))
    assert skipped.manifest["splits"]["train"]["filtered"]["bad_utf8"] == 1
    assert skipped.manifest["splits"]["train"]["pairs"] == len(pairs) - 1
    replaced = prepare.run(config(tmp_path / "rep", {**files, "train": bad},
                                  on_bad_utf8="replace"))
    assert replaced.manifest["splits"]["train"]["pairs"] == len(pairs)


def test_empty_training_set_after_filtering(prepared, tmp_path):
    out, files = prepared
    empty_side = write_text(tmp_path / "e" / "train", [(s, "  ") for s, _ in toy_pairs()])
    fails(out, config(out, {**files, "train": empty_side}), match="no training pairs left")
    # the length filter runs after encoding, on reused clean and SentencePiece stages
    before = snapshot(out)
    with pytest.raises(DataError, match="length filters"):
        prepare.run(config(out, files, max_len=1))
    assert snapshot(out) == before


def test_bad_input_from_the_command_line_is_one_line_exit_2(prepared, tmp_path):
    out, files = prepared
    result = runner.invoke(app, ["prepare", "local", "--src", "en", "--tgt", "de", "--train",
                                 str(tmp_path / "absent"), "--valid", str(files["valid"]),
                                 "--out", str(out)])
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.strip()] == [
        f"error: {tmp_path / 'absent'}.en: missing file (nor absent.en.gz)"]


def test_config_errors():
    with pytest.raises(ConfigError, match="vocab-size"):
        prepare.run(prepare.PrepareConfig(corpus="multi30k-en-de", vocab_size=100))
    with pytest.raises(ConfigError, match="only for `nmt prepare local`"):
        prepare.run(prepare.PrepareConfig(corpus="wmt14-en-de", train=Path("x")))
    with pytest.raises(ConfigError, match="unknown corpus"):
        prepare.run(prepare.PrepareConfig(corpus="wmt99"))
    with pytest.raises(ConfigError, match="--src and --tgt"):
        prepare.run(prepare.PrepareConfig(corpus="local", train=Path("x"), valid=Path("y")))
    with pytest.raises(ConfigError, match="--max-ratio must be at least 1.0, got nan"):
        prepare.run(prepare.PrepareConfig(corpus="multi30k-en-de", max_ratio=float("nan")))
