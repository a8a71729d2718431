"""`nmt prepare`: local text files, `datasets` files and named corpora, resume, bad input."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import corpora, prepare
from nmt.cli import app
from nmt.data import load_prepared
from nmt.errors import ConfigError, DataError

runner = CliRunner()
TOY_VOCAB = 300


# --- helpers ---------------------------------------------------------------------------------
def write_text(prefix: Path, pairs, src="en", tgt="de", gz=False) -> Path:
    """Write `pairs` as PREFIX.src / PREFIX.tgt (one sentence a line)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for lang, side in ((src, 0), (tgt, 1)):
        data = "".join(f"{p[side]}\n" for p in pairs).encode("utf-8")
        if gz:
            Path(f"{prefix}.{lang}.gz").write_bytes(gzip.compress(data))
        else:
            Path(f"{prefix}.{lang}").write_bytes(data)
    return prefix


def toy_corpus(root: Path) -> dict[str, Path]:
    pairs = toy_pairs()
    return {"train": write_text(root / "toy" / "train", pairs),
            "valid": write_text(root / "toy" / "valid", pairs[:20]),
            "test": write_text(root / "toy" / "test", pairs[20:45])}


def config(out: Path, files: dict[str, Path], **overrides) -> prepare.PrepareConfig:
    settings = {"corpus": "local", "src_lang": "en", "tgt_lang": "de", "out": out,
                "train": files["train"], "valid": files["valid"], "test": files.get("test"),
                "name": "toy", "vocab_size": TOY_VOCAB, "workers": 1, "max_ratio": 3.0}
    settings.update(overrides)
    return prepare.PrepareConfig(**settings)


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every file of `directory` with its inode and content hash."""
    return {p.name: (p.stat().st_ino, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(directory.iterdir())}


def normalized(line: str) -> str:
    return " ".join(line.split())


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def decoded(split, vocab) -> list[tuple[str, str]]:
    return [(vocab.decode(split.src[i].tolist()), vocab.decode(split.tgt[i].tolist()))
            for i in range(len(split))]


def staging(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


# --- end to end on the real Multi30k files ---------------------------------------------------
@pytest.mark.slow
def test_multi30k_end_to_end_from_the_command_line(tmp_path, shared_data):
    m30k = shared_data / "multi30k"
    out = tmp_path / "m30k"
    result = runner.invoke(app, [
        "prepare", "local", "--src", "en", "--tgt", "de", "--train", str(m30k / "train"),
        "--valid", str(m30k / "val"), "--test", str(m30k / "test_2016_flickr"), "--out", str(out),
        "--vocab-size", "1000", "--workers", "2", "--spm-sample", "20000"])
    assert result.exit_code == 0, result.output
    data = load_prepared(out)
    m = data.manifest
    assert (m["corpus"], m["src_lang"], m["tgt_lang"], m["dtype"]) == ("multi30k", "en", "de",
                                                                        "uint16")
    assert m["spm"]["vocab_size"] == len(data.vocab) == 1000
    assert m["spm"]["sample_sentences"] == 20000
    assert m["spm"]["special_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    for text in ("multi30k", f"{m['splits']['train']['pairs']:,}", "1,014", "stages"):
        assert text in result.output

    # counts: every training line is kept or counted by exactly one filter
    train_en, train_de = lines_of(m30k / "train.en"), lines_of(m30k / "train.de")
    train = m["splits"]["train"]
    assert train["lines"] == len(train_en) == 29000
    assert train["pairs"] + sum(train["filtered"].values()) == 29000
    for split, name in (("valid", "val"), ("test", "test_2016_flickr")):
        assert m["splits"][split]["pairs"] == len(lines_of(m30k / f"{name}.en"))
        for lang in ("en", "de"):  # raw references kept byte for byte
            assert (data.raw_path(split, lang).read_bytes()
                    == (m30k / f"{name}.{lang}").read_bytes())
    for split in ("train", "valid", "test"):
        arrays = data.split(split)
        assert len(arrays) == m["splits"][split]["pairs"]
        assert int(arrays.src.lengths.sum()) == m["splits"][split]["src_tokens"]
        assert int(arrays.tgt.lengths.sum()) == m["splits"][split]["tgt_tokens"]
        for side in (arrays.src, arrays.tgt):  # byte fallback: nothing became <unk>
            assert not np.any(np.asarray(side.ids) == data.vocab.unk_id)

    # round trip: decoding the ids gives back the cleaned text
    for split, name in (("valid", "val"), ("test", "test_2016_flickr")):
        expected = list(zip(map(normalized, lines_of(m30k / f"{name}.en")),
                            map(normalized, lines_of(m30k / f"{name}.de")), strict=True))
        assert decoded(data.split(split), data.vocab) == expected
    ls, lt = data.split("train").src.lengths, data.split("train").tgt.lengths
    assert ls.max() <= 250 and lt.max() <= 250 and np.all(ls <= 1.5 * lt) and np.all(lt <= 1.5 * ls)
    kept = decoded(data.split("train"), data.vocab)
    vocab, removed, k = data.vocab, 0, 0
    for en, de in zip(map(normalized, train_en), map(normalized, train_de), strict=True):
        if k < len(kept) and kept[k] == (en, de):
            k += 1
            continue
        removed += 1  # a dropped pair must break the length rules
        ls, lt = len(vocab.encode(en)), len(vocab.encode(de))
        assert max(ls, lt) > 250 or max(ls / lt, lt / ls) > 1.5, (en, de)
    assert k == len(kept) and removed == train["filtered"]["ratio"] + train["filtered"]["too_long"]


# --- the `datasets` path ---------------------------------------------------------------------
def write_parquet(path: Path, pairs, src="en", tgt="de") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"translation": [{src: s, tgt: t} for s, t in pairs]}), path)
    return path


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


# --- cleaning, chunking, resume --------------------------------------------------------------
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


def test_chunked_parallel_encoding_matches_one_chunk(tmp_path):
    files = toy_corpus(tmp_path)
    first = prepare.run(config(tmp_path / "out", files))
    before = snapshot(first.out)
    # a different --max-len that removes nothing re-encodes in 7-pair chunks on 2 processes
    again = prepare.run(config(tmp_path / "out", files, max_len=200, workers=2, chunk_pairs=7))
    assert [s.ran for s in again.stages] == [False, False, True]
    after = snapshot(again.out)
    for name in before:
        if name.endswith((".bin", ".idx.npy")):
            assert after[name][1] == before[name][1], name
    assert again.manifest["content_hash"] == first.manifest["content_hash"]


@pytest.mark.parametrize("every", [1, 3, 7, 1000])
def test_chunk_boundaries_across_read_blocks(tmp_path, monkeypatch, every):
    monkeypatch.setattr(prepare, "_SCAN_BLOCK", 16)  # many blocks, boundaries inside them
    path = tmp_path / "lines"
    lines = [f"line {i} " + "x" * (i % 11) for i in range(100)]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    ends = prepare._line_ends(path, every)
    expected = [len("".join(f"{line}\n" for line in lines[:k]))
                for k in range(every, len(lines) + every, every)]
    assert ends == [min(e, path.stat().st_size) for e in expected]


def test_resume_skips_finished_stages(tmp_path):
    files = toy_corpus(tmp_path)
    out = tmp_path / "out"
    first = prepare.run(config(out, files))
    assert [s.ran for s in first.stages] == [True, True, True]
    assert not staging(out).exists()
    before = snapshot(out)

    second = prepare.run(config(out, files))
    assert second.up_to_date and snapshot(out) == before  # nothing rewritten

    lengths = load_prepared(out).split("train").src.lengths
    max_len = int(np.median(lengths))  # only encoding depends on --max-len
    third = prepare.run(config(out, files, max_len=max_len))
    assert [s.ran for s in third.stages] == [False, False, True]
    assert third.manifest["spm"]["sha256"] == first.manifest["spm"]["sha256"]
    too_long = third.manifest["splits"]["train"]["filtered"]["too_long"]
    assert 0 < too_long < len(lengths) - third.manifest["splits"]["train"]["pairs"] + 1
    assert third.manifest["content_hash"] != first.manifest["content_hash"]

    fourth = prepare.run(config(out, files, max_len=max_len, force=True))
    assert [s.ran for s in fourth.stages] == [True, True, True]

    os.utime(Path(f"{files['train']}.de"), ns=(1, 1))  # changed input: everything redone
    fifth = prepare.run(config(out, files, max_len=max_len))
    assert [s.ran for s in fifth.stages] == [True, True, True]


def test_an_interrupted_run_resumes_and_leaves_the_output_alone(tmp_path, monkeypatch):
    files = toy_corpus(tmp_path)
    out = tmp_path / "out"
    prepare.run(config(out, files))
    before = snapshot(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_encode_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.run(config(out, files, vocab_size=TOY_VOCAB + 20))
    assert snapshot(out) == before
    assert staging(out).is_dir()  # the new SentencePiece model is kept there
    monkeypatch.undo()
    resumed = prepare.run(config(out, files, vocab_size=TOY_VOCAB + 20))
    assert [s.ran for s in resumed.stages] == [False, False, True]
    assert load_prepared(out).manifest["spm"]["vocab_size"] == TOY_VOCAB + 20
    assert not staging(out).exists()


@pytest.mark.parametrize("block", [64, 1 << 20])
def test_sample_lines_is_a_seeded_uniform_subset(tmp_path, block):
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"f{k}")
        paths[-1].write_text("".join(f"{k}-{i}\n" for i in range(500)), encoding="utf-8")
    sample = list(prepare._sample_lines(paths, 500, 300, seed=3, block=block))
    assert len(sample) == len(set(sample)) == 300
    assert sample == list(prepare._sample_lines(paths, 500, 300, seed=3, block=block))
    assert sample != list(prepare._sample_lines(paths, 500, 300, seed=4, block=block))
    assert sum(s.startswith("0-") for s in sample) in range(100, 200)
    assert sum(int(s.split("-")[1]) < 250 for s in sample) in range(100, 200)
    assert len(list(prepare._sample_lines(paths, 500, 5000, seed=3, block=block))) == 1000


# --- bad input -------------------------------------------------------------------------------
@pytest.fixture
def prepared(tmp_path):
    """A finished output directory of the toy corpus, and its input files."""
    files = toy_corpus(tmp_path)
    out = tmp_path / "out"
    prepare.run(config(out, files))
    return out, files


def fails(out: Path, cfg, error=DataError, match: str = "") -> str:
    """Run, expect a one-line error, and check that `out` was not touched."""
    before = snapshot(out)
    with pytest.raises(error, match=match) as err:
        prepare.run(cfg)
    assert "\n" not in str(err.value)
    assert snapshot(out) == before and not staging(out).exists()
    return str(err.value)


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


def test_output_directory_of_another_corpus(prepared, tmp_path):
    out, files = prepared
    fails(out, config(out, files, name="another"), match="different corpus")
    fails(out, config(out, files, src_lang="de", tgt_lang="en"), match="different corpus")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    fails(stranger, config(stranger, files), match="holds no prepared data")


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
    monkeypatch.setattr(corpora, "_hub_resolvable", lambda: False)
    with pytest.raises(DataError, match="cannot resolve huggingface.co.*nmt prepare local"):
        prepare.run(prepare.PrepareConfig(corpus="wmt14-en-de", out=tmp_path / "w", workers=1))
    assert not (tmp_path / "w").exists()
