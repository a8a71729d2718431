"""`nmt export`: the transformers (Marian) and CTranslate2 exports compute our model's function.

Tests that need `transformers` or `ctranslate2` skip, saying so, where the `export` extra is not
installed; CI installs it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import export
from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.cli import app
from nmt.config import ModelConfig, preset
from nmt.errors import CheckpointError, ConfigError
from nmt.model import Transformer
from nmt.search import beam_search, greedy, output_limit
from nmt.vocab import Vocabulary, train_sentencepiece

NEEDS_EXTRA = "needs the `export` extra (pip install -e '.[export]')"
# Architecture variants Marian and CTranslate2 must both reproduce (pre-norm: CTranslate2 only).
OPTIONS = {
    "post-norm, tied": {},
    "separate embeddings": {"share_embeddings": False},
    "untied output": {"tie_output": False},
    "nothing shared": {"share_embeddings": False, "tie_output": False},
    "short positions, dropouts": {"max_positions": 64, "attn_dropout": 0.1,
                                  "activation_dropout": 0.2, "dropout": 0.3},
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Everything must load from the exported directory alone."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def hf():
    return pytest.importorskip("transformers", reason=NEEDS_EXTRA)


@pytest.fixture
def ct2():
    return pytest.importorskip("ctranslate2", reason=NEEDS_EXTRA)


def random_checkpoint(path: Path, config: ModelConfig, vocab: Vocabulary, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = Transformer(config).eval()
    with torch.no_grad():  # random LayerNorm and bias values too, so a swapped one shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return save_checkpoint(path, model, vocab, {"step": 1})


def random_batch(config: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded source batch (pieces + EOS) and target inputs (BOS + pieces)."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, config.vocab_size, (3, 11), generator=gen)
    src[:, -1] = config.eos_id
    src[1, 6:] = config.pad_id
    src[1, 5] = config.eos_id
    src[2, 3:] = config.pad_id
    src[2, 2] = config.eos_id
    tgt = torch.randint(4, config.vocab_size, (3, 9), generator=gen)
    tgt[:, 0] = config.bos_id
    return src, tgt


def pad(rows: list[list[int]]) -> torch.Tensor:
    longest = max(map(len, rows))
    return torch.tensor([r + [0] * (longest - len(r)) for r in rows])


# --- a tiny model trained on the toy pairs, once for the module -----------------------------------
def train_toy(vocab: Vocabulary, steps: int = 100) -> Transformer:
    """A few seconds of Adam on toy_pairs(): fluent on the toy language, unsure off it."""
    pairs = toy_pairs()
    src = [vocab.encode(s) + [vocab.eos_id] for s, _ in pairs]
    tgt = [vocab.encode(t) + [vocab.eos_id] for _, t in pairs]
    config = preset("tiny", vocab_size=len(vocab), d_model=64, d_ff=128, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
    torch.manual_seed(0)
    model = Transformer(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    pick = random.Random(0)
    for _ in range(steps):
        idx = [pick.randrange(len(pairs)) for _ in range(32)]
        s, y = pad([src[i] for i in idx]), pad([tgt[i] for i in idx])
        y_in = torch.cat([torch.full((len(idx), 1), vocab.bos_id), y[:, :-1]], 1)
        logits = model(s, y_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=vocab.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def toy_sentences(n: int = 24) -> list[str]:
    """Word salad from the toy vocabulary: in-vocabulary, but unlike any training sentence."""
    words = ("a man woman dog girl plays sits street park water beach red car the old two "
             "children is walking running looks near at in on").split()
    pick = random.Random(1)
    return [" ".join(pick.choice(words) for _ in range(pick.randint(2, 9))).capitalize() + " ."
            for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tiny_vocab, tmp_path_factory):
    model = train_toy(tiny_vocab)
    path = save_checkpoint(tmp_path_factory.mktemp("toy") / "ckpt", model, tiny_vocab,
                           {"step": 100, "data": {"src_lang": "en", "tgt_lang": "de"}})
    return model, path


def nmt_beam(model: Transformer, vocab: Vocabulary, lines: list[str], beam: int,
             alpha: float, stopping: str = "finished") -> list[str]:
    src = pad([vocab.encode(line) + [vocab.eos_id] for line in lines])
    limit = output_limit(src, vocab.pad_id)
    if beam == 1:
        out = greedy(model, src, limit)
    else:
        out = [h[0].tokens for h in beam_search(model, src, limit, beam=beam, alpha=alpha,
                                                lenpen_style="fairseq", stopping=stopping)]
    assert all(len(o) < n for o, n in zip(out, limit.tolist(), strict=True))  # none cut off
    return [vocab.decode(o) for o in out]


# --- transformers ------------------------------------------------------------------------------
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_hf_export_computes_the_same_logits(hf, tiny_config, tiny_vocab, tmp_path, options):
    config = dataclasses.replace(tiny_config, **options)
    ckpt = random_checkpoint(tmp_path / "ckpt", config, tiny_vocab)
    out = export.run(ckpt, tmp_path / "hf", to="hf")
    model = hf.MarianMTModel.from_pretrained(out).eval()
    mc = model.config
    assert (mc.d_model, mc.encoder_layers, mc.decoder_layers, mc.encoder_attention_heads,
            mc.encoder_ffn_dim, mc.activation_function, mc.scale_embedding) == (
        config.d_model, config.n_encoder_layers, config.n_decoder_layers, config.n_heads,
        config.d_ff, "relu", True)
    assert (mc.pad_token_id, mc.eos_token_id, mc.decoder_start_token_id) == (0, 3, 2)
    ours = load_checkpoint(ckpt).build_model()
    src, tgt = random_batch(config)
    with torch.inference_mode():
        theirs = model(input_ids=src, attention_mask=src != 0, decoder_input_ids=tgt).logits
        torch.testing.assert_close(theirs, ours(src, tgt), rtol=0, atol=1e-4)
    tied = model.lm_head.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert tied == config.tie_output


def test_hf_export_refuses_pre_norm_by_name(hf, tiny_config, tiny_vocab, tmp_path):
    ckpt = random_checkpoint(tmp_path / "ckpt", dataclasses.replace(tiny_config, norm_first=True),
                             tiny_vocab)
    with pytest.raises(ConfigError, match="norm_first"):
        export.run(ckpt, tmp_path / "hf", to="hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # nothing written


def test_hf_export_that_would_compute_something_else_is_not_written(hf, tiny_config, tiny_vocab,
                                                                    tmp_path, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "ckpt", tiny_config, tiny_vocab)
    real = export.marian_name
    swap = {"self_attn_layer_norm": "final_layer_norm", "final_layer_norm": "self_attn_layer_norm"}

    def wrong(name: str) -> str:  # a mapping bug: two LayerNorms of every layer swapped
        theirs = real(name)
        for a, b in swap.items():
            if f".{a}." in theirs:
                return theirs.replace(f".{a}.", f".{b}.")
        return theirs

    monkeypatch.setattr(export, "marian_name", wrong)
    with pytest.raises(CheckpointError, match="disagrees with the checkpoint"):
        export.run(ckpt, tmp_path / "hf", to="hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_marian_tokenizer_encodes_and_decodes_like_our_vocabulary(hf, trained, tmp_path):
    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "hf", to="hf")
    vocab = Vocabulary.from_file(out / "spm.model")
    tok = hf.AutoTokenizer.from_pretrained(out)
    assert isinstance(tok, hf.MarianTokenizer) and len(tok) == len(vocab)
    texts = [s for pair in toy_pairs()[::7] for s in pair]
    texts += ["Über 3 Fußgänger – naïve café!", "漢字 and emoji 🙂 (byte fallback)", "  a   b  "]
    for text in texts:
        ids = vocab.encode(text) + [vocab.eos_id]
        assert tok(text)["input_ids"] == ids, text
        assert tok.decode(ids, skip_special_tokens=True) == vocab.decode(ids), text


def test_hf_generate_matches_nmt_beam_search(hf, trained, tmp_path):
    model, ckpt = trained
    out = export.run(ckpt, tmp_path / "hf", to="hf")
    hf_model = hf.MarianMTModel.from_pretrained(out).eval()
    tok = hf.MarianTokenizer.from_pretrained(out)
    lines = toy_sentences()
    batch = tok(lines, return_tensors="pt", padding=True)
    greedy_ours = nmt_beam(model, trained_vocab(ckpt), lines, 1, 0.0)
    differs = 0
    for beam, alpha in ((1, 0.0), (4, 0.6), (4, 1.0)):
        ours = nmt_beam(model, trained_vocab(ckpt), lines, beam, alpha)
        with torch.inference_mode():  # max_length: nmt's limit for the longest source
            ids = hf_model.generate(**batch, num_beams=beam, length_penalty=alpha,
                                    max_length=batch["input_ids"].size(1) + 51)
        assert tok.batch_decode(ids, skip_special_tokens=True) == ours, (beam, alpha)
        if beam > 1:  # HF's early_stopping="never" is nmt's --stopping exact
            exact = nmt_beam(model, trained_vocab(ckpt), lines, beam, alpha, "exact")
            with torch.inference_mode():
                ids = hf_model.generate(**batch, num_beams=beam, length_penalty=alpha,
                                        early_stopping="never",
                                        max_length=batch["input_ids"].size(1) + 51)
            assert tok.batch_decode(ids, skip_special_tokens=True) == exact, (beam, alpha)
        differs += sum(a != b for a, b in zip(ours, greedy_ours, strict=True))
    assert differs > 0  # the beam searches above were not just greedy decoding


def trained_vocab(ckpt: Path) -> Vocabulary:
    return Vocabulary.from_file(ckpt / "spm.model")


# --- CTranslate2 -------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [*OPTIONS.values(), {"norm_first": True}],
                         ids=[*OPTIONS.keys(), "pre-norm"])
def test_ctranslate2_export_scores_like_our_model(ct2, tiny_config, tiny_vocab, tmp_path,
                                                  options):
    config = dataclasses.replace(tiny_config, **options)
    ckpt = random_checkpoint(tmp_path / "ckpt", config, tiny_vocab)
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    model = load_checkpoint(ckpt).build_model()
    src, tgt = random_batch(config)
    piece = tiny_vocab.sp.id_to_piece
    sources = [[piece(i) for i in row if i != 0] for row in src.tolist()]
    targets = [[piece(i) for i in row[1:]] for row in tgt.tolist()]  # CT2 adds BOS and EOS
    scored = ct2.Translator(str(out)).score_batch(sources, targets)
    y_in = torch.cat([tgt, torch.full((3, 1), 0)], 1)  # room for the EOS prediction
    y_out = torch.cat([tgt[:, 1:], torch.full((3, 1), config.eos_id)], 1)
    with torch.inference_mode():
        lp = model(src, y_in[:, :-1]).log_softmax(-1).gather(2, y_out[..., None]).squeeze(2)
    theirs = torch.tensor([r.log_probs for r in scored])
    torch.testing.assert_close(theirs, lp, rtol=0, atol=1e-4)


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


def test_ctranslate2_int8_export_runs_and_mostly_agrees(ct2, trained, tmp_path):
    _, ckpt = trained
    fp32 = export.run(ckpt, tmp_path / "fp32", to="ctranslate2")
    int8 = export.run(ckpt, tmp_path / "int8", to="ctranslate2", quantization="int8")
    assert (int8 / "model.bin").stat().st_size < 0.6 * (fp32 / "model.bin").stat().st_size
    lines = [s for s, _ in toy_pairs()[::5]]
    a = export.translate_ctranslate2(fp32, lines)
    b = export.translate_ctranslate2(int8, lines)
    assert sum(x == y for x, y in zip(a, b, strict=True)) >= 0.8 * len(lines)


def test_translate_ctranslate2_rejects_a_directory_that_is_not_an_export(ct2, trained):
    _, ckpt = trained
    with pytest.raises(CheckpointError, match="not a CTranslate2 export"):
        export.translate_ctranslate2(ckpt, ["a man"])


# --- the command and its errors ----------------------------------------------------------------
def test_cli_exports_and_refuses_to_overwrite_without_force(ct2, trained, tmp_path):
    _, ckpt = trained
    runner = CliRunner()
    out = tmp_path / "ct2"
    args = ["export", str(ckpt), str(out), "--to", "ctranslate2", "--quantization", "int8"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (out / "model.bin").is_file() and (out / "spm.model").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    assert "Traceback" not in again.output
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize("args, message", [
    (["--to", "onnx"], "unknown export target 'onnx'"),
    (["--to", "hf", "--quantization", "int8"], "--quantization applies to --to ctranslate2"),
    (["--to", "ctranslate2", "--quantization", "int3"], "unknown quantization 'int3'"),
])
def test_cli_rejects_bad_options_in_one_line(trained, tmp_path, args, message):
    _, ckpt = trained
    result = CliRunner().invoke(app, ["export", str(ckpt), str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_missing_extra_names_what_to_install(trained, tmp_path, monkeypatch):
    _, ckpt = trained
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("transformers", "ctranslate2")
                        else real(name, *a))
    for target, package in (("hf", "transformers"), ("ctranslate2", "ctranslate2")):
        with pytest.raises(ConfigError, match=f"`{package}`.*`export` extra"):
            export.run(ckpt, tmp_path / "out", to=target)
    with pytest.raises(ConfigError, match="`export` extra"):
        export.translate_ctranslate2(tmp_path, ["a"])


def test_force_replaces_only_an_earlier_export(ct2, trained, tmp_path):
    _, ckpt = trained
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not an nmt export"):
        export.run(ckpt, precious, to="ctranslate2", force=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ConfigError, match="holds the checkpoint"):
        export.run(ckpt, ckpt.parent, to="ctranslate2", force=True)
    assert ckpt.is_dir()


def test_failed_export_leaves_the_existing_output_alone(ct2, trained, tmp_path, monkeypatch):
    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "write_ctranslate2", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export.run(ckpt, out, to="ctranslate2", force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["ct2"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- Multi30k ----------------------------------------------------------------------------------
def train_multi30k(data: Path, steps: int, pairs: int) -> tuple[Transformer, Vocabulary]:
    """A very small model: `steps` updates of 48 sentence pairs (shorter than 30 pieces) drawn
    from the first `pairs` pairs; a few BLEU after 200 steps."""
    en = (data / "train.en").read_text(encoding="utf-8").splitlines()[:pairs]
    de = (data / "train.de").read_text(encoding="utf-8").splitlines()[:pairs]
    vocab = train_sentencepiece(en + de, vocab_size=600)
    rows = [(s + [vocab.eos_id], t + [vocab.eos_id])
            for s, t in zip(vocab.encode_batch(en), vocab.encode_batch(de), strict=True)
            if 0 < len(s) < 30 and 0 < len(t) < 30]
    config = preset("tiny", vocab_size=len(vocab), d_model=64, d_ff=128, n_heads=4,
                    n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, max_positions=256)
    torch.manual_seed(0)
    model = Transformer(config)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    pick = random.Random(0)
    for _ in range(steps):
        batch = pick.sample(rows, 48)
        s, y = pad([b[0] for b in batch]), pad([b[1] for b in batch])
        y_in = torch.cat([torch.full((len(batch), 1), vocab.bos_id), y[:, :-1]], 1)
        logits = model(s, y_in)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=vocab.pad_id,
                               label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), vocab


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
