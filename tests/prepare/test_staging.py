"""`nmt prepare` staging: resume, interruption, the output directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nmt import prepare
from nmt.data import load_prepared
from nmt.prepare import encode

from .helpers import (
    TOY_VOCAB,
    config,
    fails,
    snapshot,
    staging,
    toy_corpus,
)


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

    monkeypatch.setattr(encode, "encode_stage", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare.run(config(out, files, vocab_size=TOY_VOCAB + 20))
    assert snapshot(out) == before
    assert staging(out).is_dir()  # the new SentencePiece model is kept there
    monkeypatch.undo()
    resumed = prepare.run(config(out, files, vocab_size=TOY_VOCAB + 20))
    assert [s.ran for s in resumed.stages] == [False, False, True]
    assert load_prepared(out).manifest["spm"]["vocab_size"] == TOY_VOCAB + 20
    assert not staging(out).exists()


def test_output_directory_of_another_corpus(prepared, tmp_path):
    out, files = prepared
    fails(out, config(out, files, name="another"), match="different corpus")
    fails(out, config(out, files, src_lang="de", tgt_lang="en"), match="different corpus")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    fails(stranger, config(stranger, files), match="holds no prepared data")


@pytest.mark.parametrize("damage,redone", [
    (lambda m, s: s.update(stages=[]), [True, True, True]),  # no usable records: all again
    # a redone stage makes the same outputs, so the next stages' records still hold
    (lambda m, s: s["stages"]["clean"].update(result=None), [True, False, False]),
    (lambda m, s: s["stages"]["spm"]["result"].update(vocab_size="x"), [False, True, False]),
    (lambda m, s: s["stages"]["spm"]["result"].update(sha256=5), [False, True, False]),
    (lambda m, s: s["stages"]["encode"]["result"]["train"].update(pairs=-7), [False, False, True]),
    (lambda m, s: m["splits"]["train"].update(pairs="x"), [False, False, False]),
    (lambda m, s: m.pop("splits"), [False, False, False]),
])
def test_damaged_records_are_redone_and_a_damaged_manifest_rewritten(tmp_path, damage, redone):
    import json

    files = toy_corpus(tmp_path)
    out = tmp_path / "out"
    first = prepare.run(config(out, files))
    manifest, state = (json.loads((out / name).read_text())
                       for name in ("manifest.json", "stages.json"))
    damage(manifest, state)
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "stages.json").write_text(json.dumps(state))
    again = prepare.run(config(out, files))
    assert [s.ran for s in again.stages] == redone
    assert again.manifest == first.manifest  # the same data, the manifest sound again
    assert json.loads((out / "manifest.json").read_text()) == first.manifest
    assert len(load_prepared(out).split("train")) == first.manifest["splits"]["train"]["pairs"]
