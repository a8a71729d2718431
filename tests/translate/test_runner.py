"""`nmt.translate.run`: every input line answered, in order, whatever happens to the others."""

import dataclasses
import logging

import torch
from conftest import toy_pairs

from nmt import translate
from nmt.checkpoint import save_checkpoint
from nmt.model import Transformer
from nmt.search import Ensemble, SearchConfig, output_limit, search
from nmt.translate import translator

from .helpers import config_for, expected_greedy, run_bytes, sample_lines


def test_order_and_line_count_survive_batching_and_chunking(ckpt):
    lines = sample_lines()
    data = "".join(f"{line}\n" for line in lines).encode()
    alone, _ = run_bytes(config_for(ckpt, buffer_lines=1), data)
    mixed, stats = run_bytes(config_for(ckpt, buffer_lines=7, batch_tokens=60), data)
    assert mixed == alone
    out = mixed.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines) == stats.lines
    for src, hyp in zip(lines, out, strict=False):
        if not src.strip():
            assert hyp == ""
    assert stats.sentences == sum(1 for line in lines if line.strip())


def test_translations_are_greedy_search_over_the_checkpoint_vocabulary(ckpt, tiny_model,
                                                                       tiny_vocab):
    lines = sample_lines()[:10]
    out, _ = run_bytes(config_for(ckpt, beam=1), "\n".join(lines).encode())  # no final newline
    expected = [expected_greedy(tiny_model, tiny_vocab, t, 8) for t in lines]
    assert out.split("\n")[:-1] == expected
    assert any(expected)


def test_empty_input_lines_never_run_the_model(ckpt, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(translator, "search", boom)
    out, stats = run_bytes(config_for(ckpt), b"\n  \n\t\n\n")
    assert out == "\n\n\n\n" and stats.lines == 4 and stats.sentences == 0
    assert run_bytes(config_for(ckpt), b"")[0] == ""


def test_bad_bytes_and_overlong_lines_are_repaired_with_a_warning(tmp_path, tiny_config,
                                                                  tiny_vocab, caplog):
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(tiny_config, max_positions=12)).eval()
    path = save_checkpoint(tmp_path / "short", model, tiny_vocab, {"step": 1})
    long_line = " ".join(en for en, _ in toy_pairs()[:5])
    data = b"A man sits .\n" + b"bad \xff\xfe bytes\n" + long_line.encode() + b"\nok\n"
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        out, stats = run_bytes(config_for(path, max_len_b=4), data)
    assert len(out.split("\n")) == 5 and stats.truncated == 1 and stats.replaced == 1
    assert any("<stdin>:2:" in r.message and "undecodable" in r.message for r in caplog.records)
    assert any("<stdin>:3:" in r.message and "truncated to the model's 11" in r.message
               for r in caplog.records)


def test_one_failing_line_does_not_stop_the_run(ckpt, monkeypatch, caplog):
    lines = sample_lines()
    data = "\n".join(lines).encode()
    good, _ = run_bytes(config_for(ckpt), data)
    bad_number = next(i for i, line in enumerate(lines, 1) if line.strip())
    real = translate.Translator.search_batch

    def flaky(self, batch):
        if any(line.number == bad_number for line in batch):
            raise RuntimeError("out of memory (simulated)")
        return real(self, batch)

    monkeypatch.setattr(translate.Translator, "search_batch", flaky)
    with caplog.at_level(logging.WARNING, logger="nmt.translate"):
        out, stats = run_bytes(config_for(ckpt), data)
    expected = good.split("\n")
    expected[bad_number - 1] = ""
    assert out.split("\n") == expected and stats.failed == 1
    assert any(f"<stdin>:{bad_number}: translation failed" in r.message for r in caplog.records)


def test_sampling_is_reproducible_with_a_seed(ckpt):
    data = b"A man sits .\nThe dog plays in the park .\n"
    a, _ = run_bytes(config_for(ckpt, sampling=True, seed=3), data)
    b, _ = run_bytes(config_for(ckpt, sampling=True, seed=3), data)
    c, _ = run_bytes(config_for(ckpt, sampling=True, seed=4, temperature=5.0), data)
    assert a == b and a != c


def test_ensemble_of_checkpoints(tmp_path, ckpt, tiny_model, tiny_config, tiny_vocab):
    torch.manual_seed(99)
    other = Transformer(tiny_config).eval()
    path = save_checkpoint(tmp_path / "other", other, tiny_vocab, {"step": 2})
    text = "A woman looks at the beach ."
    out, _ = run_bytes(config_for(ckpt, checkpoints=(ckpt, path)), text.encode())
    src = torch.tensor([tiny_vocab.encode(text) + [3]])
    hyps = search(Ensemble([tiny_model, other]), src, output_limit(src, 0, 1.0, 8),
                  SearchConfig(beam=2))
    assert out == tiny_vocab.decode(hyps[0][0].tokens) + "\n"


def test_half_precision_runs(ckpt):
    config = config_for(ckpt, precision="bf16", device="cpu")
    out, stats = run_bytes(config, b"A man sits .\n\nDog\n")
    assert stats.device == "cpu bfloat16" and len(out.split("\n")) == 4
