"""`nmt translate` from the command line."""


import pytest
import torch
from typer.testing import CliRunner

from nmt import translate
from nmt.cli import app
from nmt.search import SearchConfig, output_limit, search

from .helpers import expected_greedy, sample_lines

runner_cli = CliRunner()


def test_cli_translates_files_and_stdin(tmp_path, ckpt, tiny_model, tiny_vocab):
    lines = sample_lines()[:6]
    src = tmp_path / "in.en"
    src.write_text("\n".join(lines) + "\n")
    target = tmp_path / "out.de"
    args = ["translate", "-c", str(ckpt), "--beam", "1", "--max-len-b", "8", "--threads", "1"]
    result = runner_cli.invoke(app, [*args, "-i", str(src), "-o", str(target)])
    assert result.exit_code == 0, result.output
    expected = [expected_greedy(tiny_model, tiny_vocab, t, 8) for t in lines]
    assert target.read_text().split("\n")[:-1] == expected
    result = runner_cli.invoke(app, args, input="\n".join(lines) + "\n")
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
    lines = [line for line in sample_lines() if line.strip()][:6]
    src = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(tiny_vocab.encode(t) + [tiny_vocab.eos_id]) for t in lines],
        batch_first=True)
    limits = output_limit(src, 0, 1.0, 8)
    args = ["translate", "-c", str(ckpt), "--beam", "3", "--max-len-b", "8", "--threads", "1"]
    for stopping, extra in (("finished", []), ("finished", ["--stopping", "finished"]),
                            ("exact", ["--stopping", "exact"])):
        result = runner_cli.invoke(app, [*args, *extra], input="\n".join(lines) + "\n")
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
    result = runner_cli.invoke(app, ["translate", "-c", str(ckpt), *extra], input="a\n")
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_cli_missing_checkpoint(tmp_path):
    result = runner_cli.invoke(app, ["translate", "-c", str(tmp_path / "nope")], input="a\n")
    assert result.exit_code == 2 and "no such checkpoint" in result.output
