"""Prepared data read from disk is validated: damaged files are one-line DataErrors."""

import io
import json
import pickle
import tracemalloc

import numpy as np
import pytest

from nmt.data import MANIFEST_FORMAT, TokenArray, TokenArrayWriter, load_prepared
from nmt.errors import DataError


@pytest.fixture
def prepared(tmp_path, tiny_vocab):
    """A minimal prepared directory: train and valid splits of three sentences each."""
    path = tmp_path / "data"
    path.mkdir()
    tiny_vocab.save(path / "spm.model")
    for split in ("train", "valid"):
        for lang in ("en", "de"):
            with TokenArrayWriter(path / f"{split}.{lang}", np.uint16) as w:
                for ids in ([5, 6, 7], [8], [9, 10]):
                    w.append(ids)
    manifest = {"format": MANIFEST_FORMAT, "corpus": "toy", "src_lang": "en", "tgt_lang": "de",
                "dtype": "uint16", "content_hash": "c" * 64,
                "spm": {"file": "spm.model", "sha256": tiny_vocab.sha256,
                        "vocab_size": len(tiny_vocab)},
                "splits": {"train": {"pairs": 3}, "valid": {"pairs": 3}}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_a_sound_directory_loads(prepared):
    data = load_prepared(prepared)
    assert [list(s) for s in data.split("train").src] == [[5, 6, 7], [8], [9, 10]]


@pytest.mark.parametrize("change,message", [
    (lambda m: [m], "must be a JSON object"),
    (lambda m: {k: v for k, v in m.items() if k != "spm"}, "spm must be an object"),
    (lambda m: {**m, "dtype": "float64"}, "dtype must be uint16 or int32"),
    (lambda m: {**m, "spm": {**m["spm"], "file": "../../etc/x"}}, "spm.file must be a file"),
    (lambda m: {**m, "splits": {"train": {"pairs": "3"}}}, "splits.train.pairs"),
    (lambda m: {**m, "splits": {"train": {"pairs": 3, "src_tokens": -3}}},
     "splits.train.src_tokens must be a count"),
    (lambda m: {**m, "spm": {**m["spm"], "vocab_size": -1}}, "spm.vocab_size must be a"),
    (lambda m: {**m, "spm": {**m["spm"], "vocab_size": "big"}}, "spm.vocab_size must be a"),
    (lambda m: {**m, "spm": {**m["spm"], "vocab_size": m["spm"]["vocab_size"] + 1}},
     "spm.vocab_size or spm.special_ids differ from the SentencePiece model's"),
    (lambda m: {**m, "spm": {**m["spm"], "special_ids": None}}, "spm.special_ids must map"),
    (lambda m: {**m, "spm": {**m["spm"], "special_ids": {"pad": 99}}},
     "spm.vocab_size or spm.special_ids differ"),
])
def test_a_damaged_manifest_is_refused(prepared, change, message):
    path = prepared / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(DataError, match=message) as info:
        load_prepared(prepared)
    assert "manifest.json" in str(info.value)


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(b""), "not a valid offsets array"),
    (lambda p: p.write_bytes(p.read_bytes()[:-5]), "not a valid offsets array"),
    (lambda p: np.save(p, np.array([0.0, 3.0, 4.0, 6.0])), "1-D int64"),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "not a valid offsets array"),
    (lambda p: p.write_bytes(pickle.dumps([0, 3, 4, 6])), "not a valid offsets array"),
    (lambda p: np.save(p, np.array([0, 4, 3, 6], dtype=np.int64)), "offsets decrease"),
    (lambda p: np.save(p, np.array([1, 3, 4, 6], dtype=np.int64)), "start at 0"),
])
def test_a_damaged_index_is_refused(prepared, damage, message):
    damage(prepared / "train.en.idx.npy")
    with pytest.raises(DataError, match=message) as info:
        load_prepared(prepared).split("train")
    assert "train.en" in str(info.value)


def test_a_truncated_token_file_is_refused(prepared):
    path = prepared / "train.de.bin"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        load_prepared(prepared).split("train")


def test_token_ids_outside_the_vocabulary_are_refused_before_training(prepared, tiny_vocab):
    path = prepared / "valid.de.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[2] = len(tiny_vocab) + 7
    ids.tofile(path)
    with pytest.raises(DataError, match=f"token id {len(tiny_vocab) + 7} is outside"):
        load_prepared(prepared).split("valid")


def test_a_split_of_another_size_than_the_manifest_says_is_refused(prepared):
    path = prepared / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["pairs"] = 10
    path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="train: 3 sentence pairs, the manifest says 10"):
        load_prepared(prepared).split("train")


@pytest.mark.parametrize("special", ["pad_id", "bos_id", "eos_id"])
def test_special_ids_inside_stored_sentences_are_refused(prepared, tiny_vocab, special):
    path = prepared / "train.en.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[4] = getattr(tiny_vocab, special)  # sentences [5, 6, 7], [8], [9, 10]: the third
    ids.tofile(path)
    with pytest.raises(DataError, match="sentence 3 holds the special id"):
        load_prepared(prepared).split("train")


def _npy_bytes(array_) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array_)
    return buffer.getvalue()


def test_the_writer_streams_files_equal_to_saving_all_offsets_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(TokenArrayWriter, "OFFSETS_BUFFER", 5)  # offsets go to disk often
    rng = np.random.default_rng(0)
    sentences = [rng.integers(4, 300, size=rng.integers(0, 9)).tolist() for _ in range(103)]
    with TokenArrayWriter(tmp_path / "x", np.uint16) as w:
        for i in range(0, 40, 2):  # one at a time
            w.append(sentences[i])
            w.append(sentences[i + 1])
        for i in range(40, 103, 9):  # and many at once, an empty batch among them
            batch = sentences[i:i + 9]
            w.append_flat(np.array([t for s in batch for t in s], dtype=np.int64),
                          np.array([len(s) for s in batch], dtype=np.int64))
            w.append_flat(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        assert len(w) == 103 and w.n_tokens == sum(map(len, sentences))
    offsets = np.cumsum([0, *map(len, sentences)], dtype=np.int64)
    assert (tmp_path / "x.idx.npy").read_bytes() == _npy_bytes(offsets)
    flat = np.array([t for s in sentences for t in s], dtype=np.uint16)
    assert (tmp_path / "x.bin").read_bytes() == flat.tobytes()
    read = TokenArray(tmp_path / "x", np.uint16)
    assert [read[i].tolist() for i in range(len(read))] == sentences


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_writer_holds_a_bounded_number_of_offsets(tmp_path):
    chunk = np.ones(10_000, dtype=np.int64)  # 10,000 one-token sentences a call

    def write(calls: int) -> None:
        with TokenArrayWriter(tmp_path / f"w{calls}", np.uint16) as w:
            for _ in range(calls):
                w.append_flat(chunk, chunk)

    small, large = _peak_bytes(lambda: write(10)), _peak_bytes(lambda: write(200))
    # 2M sentences: holding every offset would take 16 MB; the buffer is 64k offsets (512 kB)
    assert large < small + 1_000_000, (small, large)
    assert np.load(tmp_path / "w200.idx.npy").shape == (2_000_001,)


@pytest.mark.parametrize("block", [1, 2, 3, 1 << 22])
def test_ids_are_checked_in_blocks_with_the_same_errors(prepared, tiny_vocab, monkeypatch,
                                                        block):
    monkeypatch.setattr(TokenArray, "CHECK_BLOCK", block)
    data = load_prepared(prepared)
    data.split("train")  # sound
    path = prepared / "train.en.bin"
    ids = np.fromfile(path, dtype=np.uint16)
    ids[4] = tiny_vocab.eos_id  # sentences [5, 6, 7], [8], [9, 10]: the third
    ids.tofile(path)
    with pytest.raises(DataError, match="sentence 3 holds the special id"):
        load_prepared(prepared).split("train")
    ids[1] = len(tiny_vocab)  # an id outside the vocabulary is named first, as before
    ids.tofile(path)
    with pytest.raises(DataError, match=f"token id {len(tiny_vocab)} is outside"):
        load_prepared(prepared).split("train")


def test_checking_ids_takes_bounded_memory(tmp_path, monkeypatch):
    n = 8_000_000  # one sentence of 8M ids: a whole-file check would build an 8 MB mask
    rng = np.random.default_rng(1)
    rng.integers(4, 1000, size=n, dtype=np.uint16).tofile(tmp_path / "big.bin")
    np.save(tmp_path / "big.idx.npy", np.array([0, n], dtype=np.int64))
    tokens = TokenArray(tmp_path / "big", np.uint16)
    monkeypatch.setattr(TokenArray, "CHECK_BLOCK", 1 << 16)
    assert _peak_bytes(lambda: tokens.check_ids(1000, (0, 2, 3))) < 1_000_000
