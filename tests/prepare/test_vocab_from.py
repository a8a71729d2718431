"""`--vocab-from`: encode new data with an existing SentencePiece model, and the same bytes on
any core count."""

import json

import pytest

from nmt import prepare
from nmt.data import load_prepared
from nmt.errors import ConfigError

from .helpers import config, toy_corpus, write_text


def test_a_second_corpus_reuses_the_first_vocabulary(tmp_path):
    files = toy_corpus(tmp_path)
    first = prepare.run(config(tmp_path / "first", files))
    other = {k: write_text(tmp_path / "other" / k, [(s.upper(), t.upper()) for s, t in pairs])
             for k, pairs in (("train", [("A man sits .", "Ein Mann sitzt .")] * 40),
                              ("valid", [("A dog runs .", "Ein Hund rennt .")] * 5))}
    for source in (tmp_path / "first", tmp_path / "first" / "spm.model"):
        out = tmp_path / f"second-{source.name}"
        second = prepare.run(config(out, other, vocab_size=None, vocab_from=source))
        assert second.manifest["spm"]["sha256"] == first.manifest["spm"]["sha256"]
        assert load_prepared(out).vocab.model_bytes == load_prepared(
            tmp_path / "first").vocab.model_bytes
        again = prepare.run(config(out, other, vocab_size=None, vocab_from=source))
        assert again.up_to_date  # its stage record (with the "from" path) is sound


def test_vocab_from_is_refused_when_it_is_no_model_or_with_a_size(tmp_path):
    files = toy_corpus(tmp_path)
    with pytest.raises(ConfigError, match="no SentencePiece model"):
        prepare.run(config(tmp_path / "o", files, vocab_size=None, vocab_from=tmp_path))
    with pytest.raises(ConfigError, match="drop --vocab-size"):
        prepare.run(config(tmp_path / "o", files, vocab_from=tmp_path / "x.model"))


def test_one_or_two_workers_give_the_same_bytes(tmp_path):
    files = toy_corpus(tmp_path)
    one = prepare.run(config(tmp_path / "one", files, workers=1))
    two = prepare.run(config(tmp_path / "two", files, workers=2, chunk_pairs=50))
    assert one.manifest["content_hash"] == two.manifest["content_hash"]
    for name in ("spm.model", "train.en.bin", "train.de.idx.npy", "manifest.json"):
        a, b = (tmp_path / "one" / name).read_bytes(), (tmp_path / "two" / name).read_bytes()
        if name == "manifest.json":
            a, b = (json.loads(x) for x in (a, b))
            for m in (a, b):
                m["settings"].pop("workers", None)
        assert a == b, name


def test_lowercase_and_moses_tokenize(tmp_path):
    from nmt.data import load_prepared

    files = toy_corpus(tmp_path)
    summary = prepare.run(config(tmp_path / "styled", files, lowercase=True,
                                 moses_tokenize=True))
    out = tmp_path / "styled"
    assert summary.manifest["text"] == {"lowercase": True, "moses_tokenize": True}
    data = load_prepared(out)
    assert data.text_style.lowercase and data.text_style.moses_tokenize
    first_valid = (out / "valid.raw.en").read_text().splitlines()[0]
    assert first_valid[0].isupper() and first_valid.endswith(" .")  # raw kept for scoring
    decoded = data.vocab.decode(data.split("valid").src[0].tolist())
    assert decoded == first_valid.lower()  # the model reads it lowercased
    plain = prepare.run(config(tmp_path / "plain", files))
    assert plain.manifest["content_hash"] != summary.manifest["content_hash"]
