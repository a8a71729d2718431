import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nmt import score
from nmt.cli import app
from nmt.errors import ConfigError, DataError

runner = CliRunner()
REFS = ["The cat sat on the mat.", "A man is walking in the park.",
        "Two dogs play with a red ball.", "The old woman reads a book."]


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def ref(tmp_path):
    return _write(tmp_path / "ref.en", REFS)


def _lines(output):
    return [line for line in output.splitlines() if line.strip()]


def test_identical_hypothesis_scores_100(ref):
    report = score.run(ref, [ref], metrics=["bleu", "chrf", "ter"])
    got = {s.key: s.score for s in report.scores}
    assert got["bleu"] == pytest.approx(100.0)
    assert got["chrf"] == pytest.approx(100.0)
    assert got["ter"] == pytest.approx(0.0)
    assert report.lines == 4 and "tok:13a" in report.scores[0].signature


def test_min_bleu_gates_the_exit_code(tmp_path, ref):
    hyp = _write(tmp_path / "hyp", [r.replace("cat", "dog").replace("old", "young")
                                    for r in REFS])
    bleu = score.run(hyp, [ref]).scores[0].score
    assert 0 < bleu < 100
    passing = runner.invoke(app, ["score", str(hyp), "-r", str(ref), "--min-bleu",
                                  f"{bleu - 1:.2f}"])
    assert passing.exit_code == 0, passing.output
    assert "BLEU = " in passing.output and "nrefs:1|case:mixed" in passing.output
    failing = runner.invoke(app, ["score", str(hyp), "-r", str(ref), "--min-bleu",
                                  f"{bleu + 1:.2f}"])
    assert failing.exit_code == 1
    assert "is below --min-bleu" in failing.output


def test_min_chrf_adds_the_metric_and_gates(ref):
    result = runner.invoke(app, ["score", str(ref), "-r", str(ref), "--min-chrf", "101"])
    assert result.exit_code == 1
    assert "chrF2 = 100.00" in result.output and "below --min-chrf 101" in result.output


def test_line_count_mismatch_is_one_line_exit_2(tmp_path, ref):
    hyp = _write(tmp_path / "hyp", REFS[:3])
    proc = subprocess.run([sys.executable, "-m", "nmt", "score", str(hyp), "-r", str(ref)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = _lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert str(hyp) in lines[0] and "3 lines" in lines[0]
    assert str(ref) in lines[0] and "has 4" in lines[0]


def test_bad_input_exits_2_naming_the_place(tmp_path, ref):
    bad = tmp_path / "bad"
    bad.write_bytes(b"fine\nalso fine\nbroken \xff byte\nok\n")
    result = runner.invoke(app, ["score", str(bad), "-r", str(ref)])
    assert result.exit_code == 2
    assert f"{bad}:3" in result.output and "UTF-8" in result.output
    missing = runner.invoke(app, ["score", str(tmp_path / "nope"), "-r", str(ref)])
    assert missing.exit_code == 2 and "nope" in missing.output
    unknown = runner.invoke(app, ["score", str(ref), "-r", str(ref), "--metrics", "bleu,meteor"])
    assert unknown.exit_code == 2 and "meteor" in unknown.output


def test_hypothesis_from_stdin(ref):
    text = "".join(f"{line}\n" for line in REFS)
    for args in (["score", "-r", str(ref)], ["score", "-", "-r", str(ref)]):
        result = runner.invoke(app, [*args, "--json"], input=text)
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["hypothesis"] == "<stdin>"
        assert data["scores"]["bleu"]["score"] == pytest.approx(100)


def test_json_is_one_object(tmp_path, ref):
    hyp = _write(tmp_path / "hyp", [r.lower() for r in REFS])
    result = runner.invoke(app, ["score", str(hyp), "-r", str(ref), "--metrics", "bleu,chrf,ter",
                                 "--json", "--min-bleu", "0"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["scores"]) == {"bleu", "chrf", "ter"}
    assert data["lines"] == 4 and data["passed"] is True and data["failures"] == []
    assert data["scores"]["bleu"]["signature"].startswith("nrefs:1|")


def test_multiple_references(tmp_path, ref):
    other = [r.replace("sat on", "lies on").replace("walking", "strolling") for r in REFS]
    ref2 = _write(tmp_path / "ref2.en", other)
    hyp = _write(tmp_path / "hyp", other)
    one = score.run(hyp, [ref]).scores[0]
    both = score.run(hyp, [ref, ref2]).scores[0]
    assert one.score < 100 and both.score == pytest.approx(100.0)
    assert "nrefs:2" in both.signature


def test_lowercase_ignores_case(tmp_path, ref):
    hyp = _write(tmp_path / "hyp", [r.upper() for r in REFS])
    cased = score.run(hyp, [ref]).scores[0]
    lowered = score.run(hyp, [ref], lowercase=True).scores[0]
    assert cased.score < 10 and lowered.score == pytest.approx(100.0)
    assert "case:lc" in lowered.signature
    paper = score.run(hyp, [ref], paper_bleu=True, lowercase=True).scores[0]
    paper_cased = score.run(hyp, [ref], paper_bleu=True).scores[0]
    assert paper.score == pytest.approx(100.0) and paper_cased.score < 10
    assert paper.name == score.PAPER_BLEU_NAME and "case:lc" in paper.signature


def test_paper_tokenization_splits_compounds_and_punctuation():
    tokens = score.paper_tokenize("Die Auto-Industrie wächst, sagt er.", lang="de").split()
    assert tokens == ["Die", "Auto", "##AT##-##AT##", "Industrie", "wächst", ",", "sagt", "er",
                      "."]
    assert score.split_compounds("Mund-zu-Mund") == "Mund ##AT##-##AT## zu ##AT##-##AT## Mund"
    assert score.split_compounds("a - b") == "a - b"
    moses = score.tokenize_moses_like
    assert moses("„Hallo“, sagte Dr. Müller am 22. Mai (in den U.S.A.).", lang="de").split() == [
        "„", "Hallo", "“", ",", "sagte", "Dr.", "Müller", "am", "22.", "Mai", "(", "in", "den",
        "U.S.A.", ")", "."]
    assert moses("I don't pay 1,000.50 $ ... ok?", lang="en").split() == [
        "I", "don", "'t", "pay", "1,000.50", "$", "...", "ok", "?"]
    assert moses("Er geht's an.", lang="de").split() == ["Er", "geht", "'", "s", "an", "."]


def test_paper_bleu_differs_from_sacrebleu_only_in_tokenization(tmp_path):
    ref = _write(tmp_path / "ref.de", ["Die Auto-Industrie wächst stark."])
    hyp = _write(tmp_path / "hyp.de", ["Die Auto-Industrie wächst schnell."])
    sacre = score.run(hyp, [ref]).scores[0]
    paper = score.run(hyp, [ref], paper_bleu=True).scores[0]
    # 13a keeps "Auto-Industrie": 4 of 5 unigrams match; split into 7 tokens, 6 match.
    assert " 80.0/" in sacre.text and " 85.7/" in paper.text
    assert paper.text.startswith(score.PAPER_BLEU_NAME + " = ")
    assert "tok:nmt-moses-like(de)+compound-split" in paper.signature


def test_empty_input_is_an_error(tmp_path):
    empty = _write(tmp_path / "empty", [])
    with pytest.raises(DataError, match="no lines"):
        score.run(empty, [empty])


def _drop_words(lines, n):
    return [" ".join(line.split()[:-n]) if len(line.split()) > n else line for line in lines]


def test_bootstrap_significance_on_real_references(tmp_path, shared_data):
    refs = (shared_data / "multi30k" / "test_2016_flickr.de").read_text(
        encoding="utf-8").splitlines()
    ref = _write(tmp_path / "ref.de", refs)
    better = _write(tmp_path / "better.de", _drop_words(refs, 1))
    worse = _write(tmp_path / "worse.de", _drop_words(refs, 3))
    report = score.run(better, [ref], metrics=["bleu", "ter"], baseline=worse)
    bleu, ter = report.scores
    assert bleu.significance.significant and bleu.significance.difference > 0
    assert bleu.significance.ci95[0] > 0
    assert ter.significance.significant and ter.significance.difference < 0
    same = score.run(better, [ref], baseline=better).scores[0].significance
    assert same.difference == 0 and same.p_value == 1.0 and not same.significant
    result = runner.invoke(app, ["score", str(worse), "-r", str(ref), "--baseline",
                                 str(better)])
    assert result.exit_code == 0, result.output
    assert "worse" in result.output and "significant (p < 0.05)" in result.output


def test_examples_show_source_reference_and_hypothesis(tmp_path):
    from typer.testing import CliRunner

    from nmt.cli import app

    src = [f"source {i}" for i in range(10)]
    ref = [f"the reference number {i}" for i in range(10)]
    hyp = [f"a hypothesis number {i}" for i in range(10)]
    files = {}
    for name, lines in (("s.en", src), ("r.de", ref), ("h.de", hyp)):
        files[name] = tmp_path / name
        files[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["score", str(files["h.de"]), "--ref", str(files["r.de"]),
                                      "--source", str(files["s.en"]), "--examples", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    import json
    shown = json.loads(result.output)["examples"]
    assert [e["line"] for e in shown] == [1, 5, 10]  # spread over the file, first and last
    assert shown[1] == {"line": 5, "source": "source 4", "reference": ref[4], "hypothesis": hyp[4]}
    table = CliRunner().invoke(app, ["score", str(files["h.de"]), "--ref", str(files["r.de"]),
                                     "--source", str(files["s.en"]), "--examples", "2"],
                               env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "source 9" in table.output and "BLEU" in table.output
    short = tmp_path / "short.en"
    short.write_text("one\n", encoding="utf-8")
    bad = CliRunner().invoke(app, ["score", str(files["h.de"]), "--ref", str(files["r.de"]),
                                   "--source", str(short)])
    assert bad.exit_code == 2


def test_compound_split_is_the_classic_non_overlapping_rule():
    # s/(\S)-(\S)/$1 ##AT##-##AT## $2/g: the middle "S" of "U-S-Bahn" is consumed by the first
    # match, so the second hyphen stays, as the Moses-2017 + multi-bleu pipeline does.
    assert score.split_compounds("U-S-Bahn") == "U ##AT##-##AT## S-Bahn"
    assert score.split_compounds("1-0-Sieg") == "1 ##AT##-##AT## 0-Sieg"
    assert score.split_compounds("(a)-b") == "(a) ##AT##-##AT## b"


@pytest.mark.parametrize("threshold", ["nan", "inf", "-1"])
def test_gate_refuses_thresholds_that_cannot_gate(tmp_path, threshold):
    (tmp_path / "h.de").write_text("a b c\n")
    (tmp_path / "r.de").write_text("a b c\n")
    result = runner.invoke(app, ["score", str(tmp_path / "h.de"), "--ref", str(tmp_path / "r.de"),
                                 f"--min-bleu={threshold}"])
    assert result.exit_code == 2, result.output
    assert "finite score" in result.output


def test_quiet_prints_the_number_alone_and_reads_stdin(tmp_path):
    (tmp_path / "r.de").write_text("ein Mann fährt Rad\nzwei Hunde spielen\n")
    result = runner.invoke(app, ["score", "--ref", str(tmp_path / "r.de"), "-b"],
                           input="ein Mann fährt Rad\nzwei Hunde spielen\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "100.00"


def test_moses_bleu_tokenizes_without_splitting_compounds(tmp_path):
    (tmp_path / "h.de").write_text("Die Auto-Industrie wächst, sagt er.\n")
    (tmp_path / "r.de").write_text("Die Auto-Industrie wächst , sagt er .\n")
    plain = score.run(tmp_path / "h.de", [tmp_path / "r.de"], moses_bleu=True).scores[0]
    assert plain.score == pytest.approx(100.0) and plain.name == score.MOSES_BLEU_NAME
    assert "compound" not in plain.signature
    with pytest.raises(ConfigError, match="choose one"):
        score.run(tmp_path / "h.de", [tmp_path / "r.de"], moses_bleu=True, paper_bleu=True)


def _toy_hyps_and_refs():
    """German toy references, and hypotheses that drop the last word of every third line."""
    from conftest import toy_pairs

    refs = [de for _, de in toy_pairs()]
    hyps = [" ".join(r.split()[:-1]) if i % 3 == 0 else r for i, r in enumerate(refs)]
    return hyps, refs


def test_resampled_scores_equal_sacrebleu_on_the_resampled_corpus():
    """The bootstrap's scores from summed sentence statistics are sacreBLEU's corpus scores of
    the resampled test sets themselves."""
    import numpy as np

    hyps, refs = _toy_hyps_and_refs()
    for key in ("bleu", "chrf", "ter"):
        metric = score._metric(key, lowercase=False, tokenized=False)
        stats = metric._extract_corpus_statistics(hyps, [refs])
        counts = score.resample_counts(len(hyps), samples=3, seed=7)
        fast = score._scores_of(metric, counts @ np.asarray(stats, float))
        for row, got in zip(counts, fast, strict=True):
            drawn = [i for i, c in enumerate(row) for _ in range(c)]
            direct = metric.corpus_score([hyps[i] for i in drawn], [[refs[i] for i in drawn]])
            assert got == pytest.approx(direct.score, abs=1e-9), key


def test_confidence_interval_brackets_the_score_and_narrows_with_the_test_size(tmp_path):
    hyps, refs = _toy_hyps_and_refs()
    ref = _write(tmp_path / "ref.de", refs)
    hyp = _write(tmp_path / "hyp.de", hyps)
    bleu, chrf = score.run(hyp, [ref], metrics=["bleu", "chrf"], confidence=True).scores
    for s in (bleu, chrf):
        low, high = s.ci95
        assert low < s.score < high and high - low > 0.5
    assert score.run(ref, [ref], confidence=True).scores[0].ci95 == pytest.approx((100, 100))
    # four copies of the test set: the same score, an interval about half as wide (1/sqrt(4))
    big = score.run(_write(tmp_path / "hyp4.de", hyps * 4), [_write(tmp_path / "ref4.de",
                                                                     refs * 4)],
                    confidence=True).scores[0]
    assert big.score == pytest.approx(bleu.score)
    ratio = (big.ci95[1] - big.ci95[0]) / (bleu.ci95[1] - bleu.ci95[0])
    assert 0.35 < ratio < 0.65
    assert score.run(hyp, [ref]).scores[0].ci95 is None  # only when asked for


def test_cli_confidence_in_text_and_json(tmp_path):
    hyps, refs = _toy_hyps_and_refs()
    args = ["score", str(_write(tmp_path / "hyp.de", hyps)), "-r",
            str(_write(tmp_path / "ref.de", refs)), "--confidence"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "95% CI [" in result.output and f"of the {len(hyps):,} sentences" in result.output
    result = runner.invoke(app, [*args, "--json", "-m", "bleu,ter"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)["scores"]
    for key in ("bleu", "ter"):
        low, high = scores[key]["ci95"]
        assert low < scores[key]["score"] < high and scores[key]["samples"] == 1000
    result = runner.invoke(app, [*args, "--examples", "2"])  # the table view shows it too
    assert result.exit_code == 0, result.output
    bleu = score.run(tmp_path / "hyp.de", [tmp_path / "ref.de"], confidence=True).scores[0]
    for number in (bleu.score, *bleu.ci95):  # (the table may wrap the cell)
        assert f"{number:.2f}" in result.output
    assert f"[{bleu.ci95[0]:.2f}," in result.output


def test_interval_is_the_central_95_percent_of_resampled_tokenized_scores(tmp_path):
    """With --lowercase --moses-bleu (the Multi30k reference's scoring) the interval is the
    2.5th and 97.5th percentile of lowercased tokenized BLEU over the seeded resamples, and the
    same on every run."""
    import numpy as np

    from nmt.text import tokenize_moses_like

    hyps, refs = _toy_hyps_and_refs()
    hyps = [h.upper() for h in hyps[:100]] + hyps[100:]  # only a lowercased score ignores this
    hyp, ref = _write(tmp_path / "hyp.de", hyps), _write(tmp_path / "ref.de", refs)
    got = score.run(hyp, [ref], lowercase=True, moses_bleu=True, confidence=True).scores[0]
    metric = score._metric("bleu", lowercase=True, tokenized=True)
    tok = [tokenize_moses_like(h, lang="de") for h in hyps]
    tok_refs = [[tokenize_moses_like(r, lang="de") for r in refs]]
    stats = np.asarray(metric._extract_corpus_statistics(tok, tok_refs), float)
    resampled = score._scores_of(metric, score.resample_counts(len(hyps)) @ stats)
    assert got.ci95 == tuple(np.percentile(resampled, [2.5, 97.5]))
    assert got.ci95 == score.run(hyp, [ref], lowercase=True, moses_bleu=True,
                                 confidence=True).scores[0].ci95
    assert got.score == pytest.approx(metric.corpus_score(tok, tok_refs).score)
