"""`nmt prepare local` on the real Multi30k files, from the command line."""

from __future__ import annotations

import numpy as np
import pytest

from nmt.cli import app
from nmt.data import load_prepared

from .helpers import (
    decoded,
    lines_of,
    normalized,
    runner,
)


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
