"""`nmt prepare` stage 2: the seeded SentencePiece sample."""

from __future__ import annotations

import pytest

from nmt.prepare import spm


@pytest.mark.parametrize("block", [64, 1 << 20])
def test_sample_lines_is_a_seeded_uniform_subset(tmp_path, block):
    paths = []
    for k in range(2):
        paths.append(tmp_path / f"f{k}")
        paths[-1].write_text("".join(f"{k}-{i}\n" for i in range(500)), encoding="utf-8")
    sample = list(spm.sample_lines(paths, 500, 300, seed=3, block=block))
    assert len(sample) == len(set(sample)) == 300
    assert sample == list(spm.sample_lines(paths, 500, 300, seed=3, block=block))
    assert sample != list(spm.sample_lines(paths, 500, 300, seed=4, block=block))
    assert sum(s.startswith("0-") for s in sample) in range(100, 200)
    assert sum(int(s.split("-")[1]) < 250 for s in sample) in range(100, 200)
    assert len(list(spm.sample_lines(paths, 500, 5000, seed=3, block=block))) == 1000
