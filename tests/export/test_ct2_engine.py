"""The CTranslate2 runtime: translations like `nmt translate`, the model loaded once."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from nmt import export, translate
from nmt.checkpoint import save_checkpoint
from nmt.cli import app
from nmt.errors import CheckpointError
from nmt.search import SearchConfig
from nmt.translate import TranslateConfig

from .helpers import (
    nmt_beam,
    toy_sentences,
    train_multi30k,
    trained_vocab,
)


def test_ctranslate2_translates_like_nmt_search(ct2, trained, tmp_path):
    model, ckpt = trained
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    vocab = trained_vocab(ckpt)
    lines = toy_sentences() + ["", "   "]
    for beam, alpha in ((1, 0.0), (4, 0.6), (4, 1.0)):
        ours = nmt_beam(model, vocab, lines[:-2], beam, alpha) + ["", ""]
        assert export.translate_ctranslate2(out, lines, beam=beam, alpha=alpha) == ours
        # patience lets CTranslate2 search on past beam finished hypotheses, as "exact" does
        exact = nmt_beam(model, vocab, lines[:-2], beam, alpha, "exact") + ["", ""]
        assert export.translate_ctranslate2(out, lines, beam=beam, alpha=alpha,
                                            patience=8) == exact, (beam, alpha)


def test_translate_ctranslate2_rejects_a_directory_that_is_not_an_export(ct2, trained):
    _, ckpt = trained
    with pytest.raises(CheckpointError, match="not a CTranslate2 export"):
        export.translate_ctranslate2(ckpt, ["a man"])


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(config=None), "nmt_export.json: not an nmt export"),
    (lambda m: m["config"].update(max_positions=-3), "nmt_export.json: invalid model config"),
    (lambda m: m.update(checkpoint_meta=[1]), "checkpoint_meta must be an object"),
    (lambda m: m["config"].update(eos_id=m["config"]["bos_id"] + 7),
     "special ids differ from the vocabulary's"),
])
def test_a_damaged_export_description_is_one_line(ct2, trained, tmp_path, change, message):
    import json

    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    meta = json.loads((out / export.EXPORT_META).read_text())
    change(meta)
    (out / export.EXPORT_META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as info:
        export.translate_ctranslate2(out, ["a man"])
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_ctranslate2_bleu_on_multi30k_matches_nmt_translate(ct2, shared_data, tmp_path):
    """`nmt translate` (greedy) and the CTranslate2 export on the 1,000-line test set."""
    import sacrebleu

    from nmt.search import SearchConfig
    from nmt.translate import TranslateConfig
    from nmt.translate import run as translate

    data = shared_data / "multi30k"
    model, vocab = train_multi30k(data, steps=200, pairs=10_000)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, vocab, {"step": 200})
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    source = (data / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    refs = (data / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    ours = io.StringIO()
    translate(TranslateConfig(checkpoints=(ckpt,), device="cpu", search=SearchConfig(beam=1)),
              stdin=io.BytesIO(("\n".join(source) + "\n").encode()), stdout=ours)
    ours_lines = ours.getvalue().splitlines()
    theirs = export.translate_ctranslate2(out, source, beam=1)
    assert len(theirs) == len(ours_lines) == len(source)
    bleu_ours = sacrebleu.corpus_bleu(ours_lines, [refs]).score
    bleu_theirs = sacrebleu.corpus_bleu(theirs, [refs]).score
    assert bleu_ours > 1.0  # the model translates something
    assert abs(bleu_theirs - bleu_ours) <= 0.3, (bleu_ours, bleu_theirs)


def test_translate_engine_ctranslate2_matches_the_torch_engine(ct2, trained, tmp_path):
    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    source = tmp_path / "in.en"
    source.write_text("\n".join(toy_sentences(8) + ["", toy_sentences(9)[-1]]) + "\n",
                      encoding="utf-8")
    runner = CliRunner()
    outputs = {}
    for beam in ("1", "4"):
        for engine, model in (("torch", ckpt), ("ctranslate2", out)):
            target = tmp_path / f"{engine}.de"
            result = runner.invoke(app, ["translate", "-c", str(model), "-i", str(source), "-o",
                                         str(target), "--beam", beam, "--engine", engine,
                                         "--lenpen-style", "fairseq"])
            assert result.exit_code == 0, result.output
            outputs[engine] = target.read_text(encoding="utf-8").splitlines()
        assert len(outputs["torch"]) == 10 and outputs["torch"][8] == ""
        assert outputs["ctranslate2"] == outputs["torch"], beam
    refused = runner.invoke(app, ["translate", "-c", str(out), "-i", str(source), "--engine",
                                  "ctranslate2", "--lenpen-style", "gnmt"])
    assert refused.exit_code == 2 and "--lenpen-style gnmt" in refused.output
    refused = runner.invoke(app, ["translate", "-c", str(out), "-i", str(source), "--engine",
                                  "ctranslate2", "--lenpen-style", "fairseq", "--stopping",
                                  "exact"])
    assert refused.exit_code == 2 and "--stopping exact" in refused.output


def test_ctranslate2_reads_and_writes_text_as_the_model_was_trained(ct2, trained, tmp_path):
    """A model trained on lowercased, Moses-tokenized text: both engines lowercase and tokenize
    the input and detokenize the output the same way."""
    from nmt.checkpoint import load_checkpoint

    model, ckpt = trained
    meta = load_checkpoint(ckpt).meta
    styled = save_checkpoint(tmp_path / "styled", model, trained_vocab(ckpt), {
        **meta, "data": {**meta["data"], "text": {"lowercase": True, "moses_tokenize": True}}})
    out = export.run(styled, tmp_path / "ct2", to="ctranslate2")
    source = tmp_path / "in.en"
    source.write_text("".join(f"{line.upper()}, \"{line}\".\n" for line in toy_sentences(6)),
                      encoding="utf-8")
    outputs = {}
    for engine, model_dir in (("torch", styled), ("ctranslate2", out)):
        target = tmp_path / f"{engine}.de"
        result = CliRunner().invoke(app, ["translate", "-c", str(model_dir), "-i", str(source),
                                          "-o", str(target), "--beam", "4", "--engine", engine,
                                          "--lenpen-style", "fairseq"])
        assert result.exit_code == 0, result.output
        outputs[engine] = target.read_text(encoding="utf-8").splitlines()
    assert outputs["ctranslate2"] == outputs["torch"] and len(outputs["torch"]) == 6


def test_translate_loads_the_ctranslate2_model_once_per_run(ct2, trained, tmp_path, monkeypatch):
    """`nmt translate --engine ctranslate2` over several `--buffer-lines` chunks builds one
    `ctranslate2.Translator`, not one per chunk."""
    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    built = []
    real = ct2.Translator

    def counting(*args, **kwargs):
        built.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ct2, "Translator", counting)
    source = tmp_path / "in.en"
    source.write_text("\n".join(toy_sentences(7)) + "\n", encoding="utf-8")
    config = TranslateConfig(checkpoints=(out,), input=source, output=tmp_path / "out.de",
                             buffer_lines=2, engine="ctranslate2",
                             search=SearchConfig(beam=2, lenpen_style="fairseq"))
    stats = translate.run(config)
    assert stats.lines == 7 and len((tmp_path / "out.de").read_text().splitlines()) == 7
    assert len(built) == 1
