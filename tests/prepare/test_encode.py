"""`nmt prepare` stage 3: chunked parallel encoding."""

from __future__ import annotations

import pytest

from nmt import prepare
from nmt.prepare import encode

from .helpers import (
    config,
    snapshot,
    toy_corpus,
)


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
    monkeypatch.setattr(encode, "_SCAN_BLOCK", 16)  # many blocks, boundaries inside them
    path = tmp_path / "lines"
    lines = [f"line {i} " + "x" * (i % 11) for i in range(100)]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    ends = encode.line_ends(path, every)
    expected = [len("".join(f"{line}\n" for line in lines[:k]))
                for k in range(every, len(lines) + every, every)]
    assert ends == [min(e, path.stat().st_size) for e in expected]
