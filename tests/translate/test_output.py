"""The output lines: text, Moses-style n-best lists, jsonl."""

import json

import pytest
import torch

from nmt import translate
from nmt.search import length_penalty

from .helpers import config_for, run_bytes


def test_jsonl_carries_scores_tokens_and_log_probs(ckpt, tiny_vocab):
    lines = ["A man sits in the park .", "", "Two children play ."]
    out, _ = run_bytes(config_for(ckpt, beam=3, nbest=2, output_format="jsonl"),
                       "\n".join(lines).encode())
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == 3
    assert objs[1] == {"translation": "", "score": None, "tokens": 0, "hypotheses": []}
    for obj in (objs[0], objs[2]):
        hyps = obj["hypotheses"]
        assert len(hyps) == 2 and hyps[0]["score"] >= hyps[1]["score"]
        assert (obj["translation"], obj["score"], obj["tokens"]) == (
            hyps[0]["translation"], hyps[0]["score"], hyps[0]["tokens"])
        for h in hyps:
            n = len(h["log_probs"])
            assert n in (h["tokens"], h["tokens"] + 1)
            pen = float(length_penalty(torch.tensor(n), 0.6))
            assert h["score"] == pytest.approx(sum(h["log_probs"]) / pen, abs=1e-4)


def test_text_nbest_is_a_moses_style_list(ckpt):
    out, _ = run_bytes(config_for(ckpt, beam=3, nbest=3), b"A man sits .\n\nThe dog plays .\n")
    rows = [line.split(" ||| ") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["0", "0", "0", "1", "2", "2", "2"]
    assert rows[3][1:] == ["", "0.000000"]  # the empty line keeps its id
    scores = [float(r[2]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("data", [b"   \n", b"\xff\xfe\n"])
def test_nbest_writes_every_id_even_for_blank_or_undecodable_lines(ckpt, data):
    out, _ = run_bytes(config_for(ckpt, beam=2, nbest=2), b"A man sits .\n" + data + b"A dog .\n")
    ids = [line.split(" ||| ")[0] for line in out.splitlines()]
    assert sorted(set(ids)) == ["0", "1", "2"]


def test_translations_never_contain_line_breaks():
    assert translate.clean("a\nb\r\nc\u2028d\x85e") == "a b  c d e"
    assert len(("x" + translate.clean("\n".join("abc"))).splitlines()) == 1
