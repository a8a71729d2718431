"""`nmt prepare`: `datasets` files, named corpora, the hub, the built-in sample."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from conftest import toy_pairs

from nmt import corpora, hf_datasets, prepare
from nmt.cli import app
from nmt.data import load_prepared
from nmt.errors import DataError

from .helpers import (
    TOY_VOCAB,
    config,
    decoded,
    lines_of,
    runner,
    staging,
    write_parquet,
)


def test_local_parquet_files_with_the_wmt_schema(tmp_path):
    pairs = toy_pairs()
    valid = [*pairs[:10], ("two\nlines", "zwei\u2028Zeilen")]  # one sentence a line, still
    files = {"train": write_parquet(tmp_path / "pq" / "train.parquet", pairs),
             "valid": write_parquet(tmp_path / "pq" / "valid.parquet", valid)}
    summary = prepare.run(config(tmp_path / "out", files, cache_dir=tmp_path / "cache",
                                 name=None))
    data = load_prepared(summary.out)
    assert data.name == "pq" and not data.has_split("test")
    assert data.manifest["splits"]["train"]["pairs"] == len(pairs)
    assert decoded(data.split("train"), data.vocab) == pairs
    expected = [*pairs[:10], ("two lines", "zwei Zeilen")]
    assert decoded(data.split("valid"), data.vocab) == expected
    assert lines_of(data.raw_path("valid", "de")) == [t for _, t in expected]


def test_a_parquet_file_without_the_languages_is_one_line(tmp_path):
    files = {"train": write_parquet(tmp_path / "train.parquet", toy_pairs(), "en", "fr"),
             "valid": write_parquet(tmp_path / "valid.parquet", toy_pairs()[:5], "en", "fr")}
    with pytest.raises(DataError, match="has no de") as err:
        prepare.run(config(tmp_path / "out", files, cache_dir=tmp_path / "cache"))
    assert "\n" not in str(err.value) and "train.parquet" in str(err.value)


@pytest.mark.parametrize("row,message", [
    ({"translation": {"en": 5, "de": "x"}}, "'translation' column's en holds int64 values"),
    ({"translation": "x"}, "'translation' column holds string values, not {language: text}"),
    ({"en": ["a"], "de": "b"}, "its 'en' column holds [A-Za-z]+, not text"),
])
def test_a_data_file_whose_text_is_not_text_is_one_line(tmp_path, capfd, row, message):
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(row) + "\n", encoding="utf-8")
    valid = write_parquet(tmp_path / "valid.parquet", toy_pairs()[:5])
    with pytest.raises(DataError, match=message) as err:
        prepare.run(config(tmp_path / "out", {"train": train, "valid": valid},
                           cache_dir=tmp_path / "cache"))
    assert "\n" not in str(err.value) and "train.jsonl" in str(err.value)
    assert "Generating" not in capfd.readouterr().err  # `datasets` kept its progress bars


def test_a_damaged_parquet_file_is_nmts_one_line_alone(tmp_path, capfd, caplog):
    train = tmp_path / "train.parquet"
    train.write_bytes(b"PAR1 not really a parquet file")
    valid = write_parquet(tmp_path / "valid.parquet", toy_pairs()[:5])
    with pytest.raises(DataError, match="`datasets` cannot load it"):
        prepare.run(config(tmp_path / "out", {"train": train, "valid": valid},
                           cache_dir=tmp_path / "cache"))
    assert not [r for r in caplog.records if r.name.startswith("datasets")]
    assert "Generating" not in capfd.readouterr().err


@pytest.mark.parametrize("name", ["wmt14-en-de", "multi30k-en-de"])
def test_named_corpus_loads_through_datasets(tmp_path, monkeypatch, name):
    """The named-corpus code path, with the hub dataset replaced by local files of its schema."""
    spec = corpora.CORPORA[name]
    pairs = toy_pairs()
    repo = tmp_path / "repo"
    if spec.schema == "translation":  # WMT: parquet with a translation column
        for split, rows in (("train", pairs), ("validation", pairs[:12]), ("test", pairs[12:20])):
            write_parquet(repo / f"{split}.parquet", rows)
    else:  # bentrevett/multi30k: jsonl files with one column per language
        repo.mkdir()
        for split, rows in (("train", pairs), ("val", pairs[:12]), ("test", pairs[12:20])):
            (repo / f"{split}.jsonl").write_text("".join(
                json.dumps({"en": s, "de": t}) + "\n" for s, t in rows), encoding="utf-8")
    monkeypatch.setitem(corpora.CORPORA, name, dataclasses.replace(
        spec, hf_path=str(repo), hf_config=None, hf_revision=None, hf_data_dir=None))
    summary = prepare.run(prepare.PrepareConfig(corpus=name, out=tmp_path / "out",
                                                vocab_size=TOY_VOCAB, workers=1, max_ratio=3.0,
                                                cache_dir=tmp_path / "cache"))
    data = load_prepared(summary.out)
    assert (data.name, data.src_lang, data.tgt_lang) == (name, "en", "de")
    splits = data.manifest["splits"]
    assert [splits[s]["pairs"] for s in ("train", "valid", "test")] == [len(pairs), 12, 8]
    assert decoded(data.split("test"), data.vocab) == pairs[12:20]


def test_hub_unreachable_is_one_line_suggesting_local_files(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "nmt", "prepare", "wmt14-en-de", "--out",
                           str(tmp_path / "wmt")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip().startswith("error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Hugging Face hub" in lines[0] and "nmt prepare local" in lines[0]
    assert not (tmp_path / "wmt").exists() and not staging(tmp_path / "wmt").exists()


def test_prepare_list_shows_every_named_corpus():
    result = runner.invoke(app, ["prepare", "--list"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for spec in corpora.CORPORA.values():
        assert spec.name in result.output and f"{spec.sizes[0]:,}" in result.output
    assert "wmt/wmt14" in result.output and "bentrevett/multi30k" in result.output


def test_sample_corpus_needs_no_download(tmp_path):
    from nmt import sample

    summary = prepare.run(prepare.PrepareConfig(corpus="sample-en-de", out=tmp_path / "s",
                                                workers=1))
    data = load_prepared(summary.out)
    assert (data.name, data.src_lang, data.tgt_lang) == ("sample-en-de", "en", "de")
    assert len(data.vocab) == 1000
    expected = sample.split_pairs(*corpora.SAMPLE_SIZES)
    assert data.manifest["splits"]["test"]["pairs"] == len(expected["test"]) == 500
    assert decoded(data.split("test"), data.vocab) == expected["test"]
    raw = (tmp_path / "s" / "test.raw.de").read_text(encoding="utf-8").splitlines()
    assert raw == [de for _, de in expected["test"]]


def test_unresolvable_hub_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_datasets, "_hub_resolvable", lambda: False)
    with pytest.raises(DataError, match="cannot resolve huggingface.co.*nmt prepare local"):
        prepare.run(prepare.PrepareConfig(corpus="wmt14-en-de", out=tmp_path / "w", workers=1))
    assert not (tmp_path / "w").exists()
