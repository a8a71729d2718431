import dataclasses
import io
import json
import logging
import os
import random
import subprocess
import sys
import threading

import pytest
import torch
from conftest import toy_pairs
from typer.testing import CliRunner

from nmt import translate
from nmt.checkpoint import save_checkpoint
from nmt.cli import app
from nmt.errors import CheckpointError, ConfigError, DataError
from nmt.model import Transformer
from nmt.search import Ensemble, SearchConfig, greedy, length_penalty, output_limit, search
from nmt.translate import TranslateConfig

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ckpt(tmp_path, tiny_model, tiny_vocab):
    return save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, {"step": 1})


def _config(ckpt, **kw):
    search_kw = {k: kw.pop(k) for k in list(kw) if k in {f.name for f in
                                                          dataclasses.fields(SearchConfig)}}
    search_kw.setdefault("beam", 2)
    kw.setdefault("max_len_b", 8)
    kw.setdefault("threads", 1)
    ckpts = kw.pop("checkpoints", (ckpt,))
    return TranslateConfig(checkpoints=ckpts, search=SearchConfig(**search_kw), **kw)


def _run(config, data: bytes):
    sink = io.StringIO()
    stats = translate.run(config, stdin=io.BytesIO(data), stdout=sink)
    return sink.getvalue(), stats


def _lines():
    """Source lines of very different lengths, with empty and blank lines, shuffled."""
    src = [en for en, _ in toy_pairs()[::12]]
    src += [" ".join(src[i:i + 3]) for i in range(0, 9, 3)] + ["Dog", "", "   ", ""]
    random.Random(0).shuffle(src)
    return src


def _expected_greedy(model, vocab, text, b):
    if not text.strip():
        return ""
    src = torch.tensor([vocab.encode(text) + [vocab.eos_id]])
    return translate.clean(vocab.decode(greedy(model, src, output_limit(src, 0, 1.0, b))[0]))


def test_order_and_line_count_survive_batching_and_chunking(ckpt):
    lines = _lines()
    data = "".join(f"{line}\n" for line in lines).encode()
    alone, _ = _run(_config(ckpt, buffer_lines=1), data)
    mixed, stats = _run(_config(ckpt, buffer_lines=7, batch_tokens=60), data)
    assert mixed == alone
    out = mixed.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines) == stats.lines
    for src, hyp in zip(lines, out, strict=False):
        if not src.strip():
            assert hyp == ""
    assert stats.sentences == sum(1 for line in lines if line.strip())


def test_translations_are_greedy_search_over_the_checkpoint_vocabulary(ckpt, tiny_model,
                                                                       tiny_vocab):
    lines = _lines()[:10]
    out, _ = _run(_config(ckpt, beam=1), "\n".join(lines).encode())  # no final newline
    expected = [_expected_greedy(tiny_model, tiny_vocab, t, 8) for t in lines]
    assert out.split("\n")[:-1] == expected
    assert any(expected)


def test_empty_input_lines_never_run_the_model(ckpt, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(translate, "search", boom)
    out, stats = _run(_config(ckpt), b"\n  \n\t\n\n")
    assert out == "\n\n\n\n" and stats.lines == 4 and stats.sentences == 0
    assert _run(_config(ckpt), b"")[0] == ""


def test_bad_bytes_and_overlong_lines_are_repaired_with_a_warning(tmp_path, tiny_config,
                                                                  tiny_vocab, caplog):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config, max_positions=12)).eval()
    path = save_checkpoint(tmp_path / "short", model, tiny_vocab, {"step": 1})
    long_line = " ".join(en for en, _ in toy_pairs()[:5])
    data = b"A man sits .\n" + b"bad \xff\xfe bytes\n" + long_line.encode() + b"\nok\n"
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        out, stats = _run(_config(path, max_len_b=4), data)
    assert len(out.split("\n")) == 5 and stats.truncated == 1 and stats.replaced == 1
    assert any("<stdin>:2:" in r.message and "undecodable" in r.message for r in caplog.records)
    assert any("<stdin>:3:" in r.message and "truncated to the model's 11" in r.message
               for r in caplog.records)


def test_one_failing_line_does_not_stop_the_run(ckpt, monkeypatch, caplog):
    lines = _lines()
    data = "\n".join(lines).encode()
    good, _ = _run(_config(ckpt), data)
    bad_number = next(i for i, line in enumerate(lines, 1) if line.strip())
    real = translate.Translator.search_batch

    def flaky(self, batch):
        if any(line.number == bad_number for line in batch):
            raise RuntimeError("out of memory (simulated)")
        return real(self, batch)

    monkeypatch.setattr(translate.Translator, "search_batch", flaky)
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        out, stats = _run(_config(ckpt), data)
    expected = good.split("\n")
    expected[bad_number - 1] = ""
    assert out.split("\n") == expected and stats.failed == 1
    assert any(f"<stdin>:{bad_number}: translation failed" in r.message for r in caplog.records)


def test_jsonl_carries_scores_tokens_and_log_probs(ckpt, tiny_vocab):
    lines = ["A man sits in the park .", "", "Two children play ."]
    out, _ = _run(_config(ckpt, beam=3, nbest=2, output_format="jsonl"),
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
    out, _ = _run(_config(ckpt, beam=3, nbest=3), b"A man sits .\n\nThe dog plays .\n")
    rows = [line.split(" ||| ") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["0", "0", "0", "1", "2", "2", "2"]
    assert rows[3][1:] == ["", "0.000000"]  # the empty line keeps its id
    scores = [float(r[2]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("data", [b"   \n", b"\xff\xfe\n"])
def test_nbest_writes_every_id_even_for_blank_or_undecodable_lines(ckpt, data):
    out, _ = _run(_config(ckpt, beam=2, nbest=2), b"A man sits .\n" + data + b"A dog .\n")
    ids = [line.split(" ||| ")[0] for line in out.splitlines()]
    assert sorted(set(ids)) == ["0", "1", "2"]


def test_sampling_is_reproducible_with_a_seed(ckpt):
    data = b"A man sits .\nThe dog plays in the park .\n"
    a, _ = _run(_config(ckpt, sampling=True, seed=3), data)
    b, _ = _run(_config(ckpt, sampling=True, seed=3), data)
    c, _ = _run(_config(ckpt, sampling=True, seed=4, temperature=5.0), data)
    assert a == b and a != c


def test_ensemble_of_checkpoints(tmp_path, ckpt, tiny_model, tiny_config, tiny_vocab):
    torch.manual_seed(99)
    other = Transformer(tiny_config).eval()
    path = save_checkpoint(tmp_path / "other", other, tiny_vocab, {"step": 2})
    text = "A woman looks at the beach ."
    out, _ = _run(_config(ckpt, checkpoints=(ckpt, path)), text.encode())
    src = torch.tensor([tiny_vocab.encode(text) + [3]])
    hyps = search(Ensemble([tiny_model, other]), src, output_limit(src, 0, 1.0, 8),
                  SearchConfig(beam=2))
    assert out == tiny_vocab.decode(hyps[0][0].tokens) + "\n"


def test_ensemble_rejects_a_different_vocabulary(tmp_path, ckpt, tiny_config):
    from nmt.vocab import train_sentencepiece

    vocab = train_sentencepiece([de for _, de in toy_pairs()], vocab_size=tiny_config.vocab_size)
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config, vocab_size=len(vocab))).eval()
    path = save_checkpoint(tmp_path / "foreign", model, vocab, {"step": 1})
    with pytest.raises(CheckpointError, match="vocabulary differs"):
        _run(_config(ckpt, checkpoints=(ckpt, path)), b"a\n")


def test_output_file_is_replaced_only_on_success(tmp_path, ckpt, monkeypatch):
    target = tmp_path / "hyp.de"
    target.write_text("precious\n")
    src = tmp_path / "in.en"
    src.write_text("A man sits .\nThe dog plays .\n")
    with pytest.raises(DataError, match="missing.en"):
        translate.run(_config(ckpt, input=tmp_path / "missing.en", output=target))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(translate, "format_line", interrupted)
        with pytest.raises(KeyboardInterrupt):
            translate.run(_config(ckpt, input=src, output=target))
    assert target.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["ck", "hyp.de", "in.en"]  # no temporary left
    stats = translate.run(_config(ckpt, input=src, output=target))
    assert stats.lines == 2 and len(target.read_text().splitlines()) == 2


def test_config_rejects_nonsense(ckpt):
    for bad in (dict(output_format="xml"), dict(precision="fp8"), dict(batch_tokens=0),
                dict(max_len_a=0.0, max_len_b=0)):
        with pytest.raises(ConfigError):
            _config(ckpt, **bad)


def test_cli_translates_files_and_stdin(tmp_path, ckpt, tiny_model, tiny_vocab):
    lines = _lines()[:6]
    src = tmp_path / "in.en"
    src.write_text("\n".join(lines) + "\n")
    target = tmp_path / "out.de"
    args = ["translate", "-c", str(ckpt), "--beam", "1", "--max-len-b", "8", "--threads", "1"]
    result = runner.invoke(app, [*args, "-i", str(src), "-o", str(target)])
    assert result.exit_code == 0, result.output
    expected = [_expected_greedy(tiny_model, tiny_vocab, t, 8) for t in lines]
    assert target.read_text().split("\n")[:-1] == expected
    result = runner.invoke(app, args, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.split("\n")[:-1] == expected


def test_cli_stopping_rule_reaches_the_search(ckpt, tiny_model, tiny_vocab, monkeypatch):
    import nmt.search

    seen = []
    real_beam_search = nmt.search.beam_search

    def spy(*args, **kw):
        seen.append(kw["stopping"])
        return real_beam_search(*args, **kw)

    monkeypatch.setattr(nmt.search, "beam_search", spy)
    lines = [line for line in _lines() if line.strip()][:6]
    src = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(tiny_vocab.encode(t) + [tiny_vocab.eos_id]) for t in lines],
        batch_first=True)
    limits = output_limit(src, 0, 1.0, 8)
    args = ["translate", "-c", str(ckpt), "--beam", "3", "--max-len-b", "8", "--threads", "1"]
    for stopping, extra in (("finished", []), ("finished", ["--stopping", "finished"]),
                            ("exact", ["--stopping", "exact"])):
        result = runner.invoke(app, [*args, *extra], input="\n".join(lines) + "\n")
        assert result.exit_code == 0, result.output
        assert set(seen) == {stopping}, (extra, seen)
        seen.clear()
        hyps = search(tiny_model, src, limits, SearchConfig(beam=3, stopping=stopping))
        expected = [translate.clean(tiny_vocab.decode(h[0].tokens)) for h in hyps]
        assert result.stdout.split("\n")[:-1] == expected, extra
        seen.clear()


@pytest.mark.parametrize("extra,message", [
    (["--output-format", "xml"], "'xml' is not one of 'text', 'jsonl'"),
    (["--beam", "2", "--nbest", "3"], "cannot exceed the beam size"),
    (["--lenpen-style", "odd"], "'odd' is not one of 'gnmt', 'fairseq'"),
    (["--stopping", "never"], "'never' is not one of 'finished', 'exact'"),
])
def test_cli_bad_options_are_one_line_errors(ckpt, extra, message):
    result = runner.invoke(app, ["translate", "-c", str(ckpt), *extra], input="a\n")
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_cli_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["translate", "-c", str(tmp_path / "nope")], input="a\n")
    assert result.exit_code == 2 and "no such checkpoint" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("buffer", [[], ["--buffer-lines", "1"]], ids=["default", "buffer-1"])
def test_streams_through_a_pipe(ckpt, buffer):
    """Each translation comes out before the next line goes in: with the default
    --buffer-lines 2000 too, since a pause in a pipe ends a chunk."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "translate", "-c", str(ckpt), *buffer,
         "--beam", "1", "--max-len-b", "4", "--threads", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    got = []
    for line in (b"A man sits .\n", b"\n", b"The dog plays in the park .\n"):
        proc.stdin.write(line)
        proc.stdin.flush()
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "no output while the input stays open"
    proc.stdin.close()
    assert proc.stdout.read() == b""
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    assert len(got) == 3 and got[1] == b"\n"


def test_translations_never_contain_line_breaks():
    assert translate.clean("a\nb\r\nc\u2028d\x85e") == "a b  c d e"
    assert len(("x" + translate.clean("\n".join("abc"))).splitlines()) == 1


def test_half_precision_runs(ckpt):
    out, stats = _run(_config(ckpt, precision="bf16", device="cpu"), b"A man sits .\n\nDog\n")
    assert stats.device == "cpu bfloat16" and len(out.split("\n")) == 4


def test_batches_respect_the_token_budget_counting_beams():
    lines = [translate._Line(number=i, ids=[5] * n) for i, n in
             enumerate([3, 9, 1, 4, 0, 7, 2, 30], 1)]
    lines[4].ids = []  # an empty line needs no batch
    for copies in (1, 4):
        batches = translate.make_batches(lines, 24, copies)
        flat = [line for batch in batches for line in batch]
        assert sorted(line.number for line in flat) == [1, 2, 3, 4, 6, 7, 8]
        assert [len(line.ids) for line in flat] == sorted((len(x.ids) for x in flat),
                                                          reverse=True)
        for batch in batches:
            assert len(batch) == 1 or len(batch[0].ids) * len(batch) * copies <= 24
    assert max(len(b) for b in translate.make_batches(lines, 24, 4)) < max(
        len(b) for b in translate.make_batches(lines, 24, 1))
