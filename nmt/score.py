"""`nmt score`: corpus BLEU, chrF and TER with sacreBLEU, a CI gate, and significance tests.

Two BLEU variants are offered and always named in the output:

- sacreBLEU BLEU (the default): detokenized text, sacreBLEU's `13a` tokenizer, with its signature
  (https://github.com/mjpost/sacrebleu), comparable across papers that report sacreBLEU.
- tokenized BLEU (`paper_bleu`): what the Transformer paper reports for WMT14 en-de. Both sides
  are tokenized Moses-style (`tokenize_moses_like`), hyphenated compounds are split into
  `Auto ##AT##-##AT## Industrie` (`split_compounds`), and BLEU is computed on those tokens with
  sacreBLEU's `tokenize="none"`. With `lowercase` it is lowercased tokenized BLEU *with* compound
  splitting; the Multi30k literature's lowercased Moses-tokenized BLEU splits no compounds and
  comes out about 0.4 lower on Multi30k: that one is `moses_bleu` with `lowercase`.
- Moses-tokenized BLEU (`moses_bleu`): both sides tokenized as above, no compound splitting.

Significance against a baseline system uses paired bootstrap resampling (Koehn, 2004) on
sentence-level sufficient statistics with a fixed seed; `confidence` resamples the same way for
a 95% interval of each score alone (how far another draw of as many test sentences could move
it: on Multi30k's 1,000 sentences, about +-1.5 BLEU).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from nmt import __version__
from nmt.errors import ConfigError, DataError
from nmt.text import tokenize_moses_like

log = logging.getLogger(__name__)

METRICS = ("bleu", "chrf", "ter")
PAPER_BLEU_NAME = "tokenized BLEU (Moses-style, compound-split; comparable to the paper)"
MOSES_BLEU_NAME = "tokenized BLEU (Moses-style, no compound splitting)"
BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 12345
SIGNIFICANCE_LEVEL = 0.05


@dataclass(frozen=True, kw_only=True)
class Significance:
    baseline: str  # the baseline system's file
    baseline_score: float  # the baseline's corpus score with the same metric
    difference: float  # system score minus baseline score
    ci95: tuple[float, float]  # 95% bootstrap interval of the difference
    p_value: float  # share of resamples in which the system is not better (Koehn, 2004)
    significant: bool  # p_value < SIGNIFICANCE_LEVEL
    samples: int  # bootstrap resamples drawn


@dataclass(frozen=True, kw_only=True)
class MetricScore:
    key: str  # "bleu", "chrf" or "ter"
    name: str  # what the number is, e.g. "BLEU", "chrF2", or PAPER_BLEU_NAME
    score: float  # corpus score (0-100; lower is better for TER)
    text: str  # sacreBLEU's one-line rendering, e.g. "BLEU = 41.2 72.0/49.1/... (BP = ...)"
    signature: str  # sacreBLEU signature, or a description of the tokenized-BLEU variant
    higher_is_better: bool  # False for TER
    significance: Significance | None = None  # against --baseline, when given
    ci95: tuple[float, float] | None = None  # 95% bootstrap interval of `score` (--confidence)


@dataclass(frozen=True, kw_only=True)
class Example:
    line: int  # 1-based line number in the hypothesis file
    source: str | None  # the source sentence, when --source was given
    reference: str  # the first reference
    hypothesis: str  # the system's output


@dataclass(frozen=True, kw_only=True)
class ScoreReport:
    hypothesis: str  # the hypothesis file, or "<stdin>"
    references: list[str]  # the reference files
    lines: int  # sentences scored
    lowercase: bool  # scores are case-insensitive
    scores: list[MetricScore]  # in the order asked for
    failures: list[str] = field(default_factory=list)  # threshold violations, one line each
    examples: list[Example] = field(default_factory=list)  # a few lines to look at (--examples)

    def to_json(self) -> dict[str, Any]:
        scores = {}
        for s in self.scores:
            entry: dict[str, Any] = {"name": s.name, "score": s.score, "text": s.text,
                                     "signature": s.signature}
            if s.ci95 is not None:
                entry["ci95"] = list(s.ci95)
                entry["samples"] = BOOTSTRAP_SAMPLES
            if s.significance is not None:
                sig = s.significance
                entry["significance"] = {
                    "baseline": sig.baseline, "baseline_score": sig.baseline_score,
                    "difference": sig.difference, "ci95": list(sig.ci95),
                    "p_value": sig.p_value, "significant": sig.significant,
                    "samples": sig.samples}
            scores[s.key] = entry
        return {"hypothesis": self.hypothesis, "references": self.references,
                "lines": self.lines, "lowercase": self.lowercase, "scores": scores,
                "passed": not self.failures, "failures": self.failures,
                "examples": [dataclasses.asdict(e) for e in self.examples]}


def parse_metrics(spec: str) -> list[str]:
    """`"bleu,chrf"` -> `["bleu", "chrf"]`; unknown names are a ConfigError."""
    names = [m.strip().lower() for m in spec.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ConfigError(f"--metrics {spec!r}: choose from {', '.join(METRICS)} "
                          "(comma-separated)")
    return list(dict.fromkeys(names))


def run(
    hypothesis: Path | None,
    references: list[Path],
    *,
    metrics: list[str] | None = None,
    lowercase: bool = False,
    paper_bleu: bool = False,
    moses_bleu: bool = False,
    baseline: Path | None = None,
    confidence: bool = False,
    min_bleu: float | None = None,
    min_chrf: float | None = None,
    source: Path | None = None,
    examples: int = 0,
    stdin: BinaryIO | None = None,
) -> ScoreReport:
    """Score `hypothesis` (a file; None or "-" for stdin) against one or more references."""
    keys = list(metrics or ["bleu"])
    for flag, threshold in (("--min-bleu", min_bleu), ("--min-chrf", min_chrf)):
        if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
            raise ConfigError(f"{flag} {threshold}: a gate needs a finite score of 0 or more")
    for key, threshold in (("bleu", min_bleu), ("chrf", min_chrf)):
        if threshold is not None and key not in keys:
            keys.append(key)  # a gate on a metric needs that metric
    if not references:
        raise ConfigError("no reference file given (--ref FILE, repeatable)")
    hyp_name, hyps = read_lines(hypothesis, stdin=stdin)
    refs = []
    for path in references:
        if str(path) == "-":
            raise ConfigError("references must be files; only the hypothesis can come from stdin")
        refs.append(read_lines(path))
    _check_counts((hyp_name, hyps), refs, what="reference")
    if not hyps:
        raise DataError("no lines to score", where=hyp_name)
    base = None
    if baseline is not None:
        base = read_lines(baseline)
        _check_counts((hyp_name, hyps), [base], what="baseline")
    ref_streams = [lines for _, lines in refs]
    if paper_bleu and moses_bleu:
        raise ConfigError("--paper-bleu and --moses-bleu are two variants of tokenized BLEU: "
                          "choose one")
    lang = _language(references[0]) if paper_bleu or moses_bleu else None
    scores = [
        _score_one(key, hyps, ref_streams, base, lowercase=lowercase,
                   paper_bleu_lang=lang if key == "bleu" else None, compounds=paper_bleu,
                   confidence=confidence)
        for key in keys
    ]
    failures = _failures(scores, min_bleu=min_bleu, min_chrf=min_chrf)
    sources = None
    if source is not None:
        src = read_lines(source)
        _check_counts((hyp_name, hyps), [src], what="source")
        sources = src[1]
    return ScoreReport(hypothesis=hyp_name, references=[str(p) for p in references],
                       lines=len(hyps), lowercase=lowercase, scores=scores, failures=failures,
                       examples=pick_examples(hyps, ref_streams[0], sources, examples))


def pick_examples(hyps: list[str], refs: list[str], sources: list[str] | None,
                  n: int) -> list[Example]:
    """`n` lines spread evenly over the file, for a reader to compare by eye."""
    n = max(0, min(n, len(hyps)))
    picked = sorted({round(i * (len(hyps) - 1) / max(n - 1, 1)) for i in range(n)})
    return [Example(line=i + 1, source=sources[i] if sources else None, reference=refs[i],
                    hypothesis=hyps[i]) for i in picked]


# --- reading ---------------------------------------------------------------------------------
def read_lines(path: Path | None, *, stdin: BinaryIO | None = None) -> tuple[str, list[str]]:
    """(name, lines) of a UTF-8 text file, or of stdin for None / "-"; errors name the line."""
    if path is None or str(path) == "-":
        name = "<stdin>"
        data = (stdin or sys.stdin.buffer).read()
    else:
        name = str(path)
        if Path(path).is_dir():
            raise DataError("is a directory, expected a text file", where=name)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read ({exc.strerror})", where=name) from None
    raw = data.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the final newline ends the last line, it does not start another
    lines = []
    for number, line in enumerate(raw, start=1):
        try:
            lines.append(line.rstrip(b"\r").decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"not valid UTF-8 (byte {exc.start + 1} of the line)",
                            where=f"{name}:{number}") from None
    return name, lines


def _check_counts(hyp: tuple[str, list[str]], others: list[tuple[str, list[str]]], *,
                  what: str) -> None:
    name, lines = hyp
    for other_name, other_lines in others:
        if len(other_lines) != len(lines):
            raise DataError(f"hypothesis {name} has {len(lines)} lines but {what} "
                            f"{other_name} has {len(other_lines)}")


def _language(reference: Path) -> str:
    """The target language for tokenization, from a reference suffix like `.de` (else `xx`)."""
    suffix = Path(reference).suffix.lstrip(".").lower()
    return suffix if re.fullmatch(r"[a-z]{2}", suffix) else "xx"


# --- scoring ---------------------------------------------------------------------------------
def _score_one(key: str, hyps: list[str], refs: list[list[str]],
               base: tuple[str, list[str]] | None, *, lowercase: bool,
               paper_bleu_lang: str | None, compounds: bool = True,
               confidence: bool = False) -> MetricScore:
    metric = _metric(key, lowercase=lowercase, tokenized=paper_bleu_lang is not None)

    def prep(lines: list[str]) -> list[str]:
        if paper_bleu_lang is None:
            return list(lines)
        tokenize = paper_tokenize if compounds else tokenize_moses_like
        return [tokenize(line, lang=paper_bleu_lang) for line in lines]

    hyps, refs = prep(hyps), [prep(stream) for stream in refs]
    result = metric.corpus_score(hyps, refs)
    if paper_bleu_lang is not None:
        name = PAPER_BLEU_NAME if compounds else MOSES_BLEU_NAME
        signature = paper_bleu_signature(len(refs), lowercase=lowercase, lang=paper_bleu_lang,
                                         compounds=compounds)
    else:
        name = result.name
        signature = str(metric.get_signature())
    text = f"{name} = {str(result).split(' = ', 1)[1]}"
    significance = ci95 = None
    if base is not None or confidence:
        stats = sentence_stats(metric, hyps, refs)  # once for both resampling uses
        if base is not None:
            significance = paired_bootstrap(metric, stats,
                                            sentence_stats(metric, prep(base[1]), refs),
                                            baseline=base[0], higher_is_better=key != "ter")
        if confidence:
            ci95 = bootstrap_interval(metric, stats)
    return MetricScore(key=key, name=name, score=float(result.score), text=text,
                       signature=signature, higher_is_better=key != "ter",
                       significance=significance, ci95=ci95)


def _metric(key: str, *, lowercase: bool, tokenized: bool):
    from sacrebleu.metrics import BLEU, CHRF, TER

    if key == "bleu":
        if tokenized:
            return BLEU(lowercase=lowercase, tokenize="none", force=True)
        return BLEU(lowercase=lowercase)
    if key == "chrf":
        return CHRF(lowercase=lowercase)
    return TER()  # sacreBLEU's TER is case-insensitive already (signature: case:lc)


def paper_bleu_signature(n_refs: int, *, lowercase: bool, lang: str,
                         compounds: bool = True) -> str:
    """A sacreBLEU-style description of the tokenized-BLEU variant (not a sacreBLEU tokenizer)."""
    import sacrebleu

    case = "lc" if lowercase else "mixed"
    split = "+compound-split" if compounds else ""
    return (f"nrefs:{n_refs}|case:{case}|eff:no|tok:nmt-moses-like({lang}){split}"
            f"|smooth:exp|sacrebleu:{sacrebleu.__version__}|nmt:{__version__}")


def _failures(scores: list[MetricScore], *, min_bleu: float | None,
              min_chrf: float | None) -> list[str]:
    failures = []
    limits = {"bleu": ("--min-bleu", min_bleu), "chrf": ("--min-chrf", min_chrf)}
    for s in scores:
        flag, threshold = limits.get(s.key, ("", None))
        if threshold is not None and s.score < threshold:
            failures.append(f"{s.name} {s.score:.2f} is below {flag} {threshold:g}")
    return failures


# --- bootstrap resampling --------------------------------------------------------------------
def resample_counts(n: int, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED):
    """(samples, n) array: how often each of `n` sentences is drawn in each resample of the
    test set (n draws with replacement); the same for every system scored with this seed."""
    import numpy as np

    picks = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    return np.stack([np.bincount(row, minlength=n) for row in picks])


def sentence_stats(metric, hyps: list[str], refs: list[list[str]]):
    """(N, K) float array: the metric's sufficient statistics of each sentence (the ones
    sacreBLEU's significance module uses), so that a resample's corpus score is exact."""
    import numpy as np

    return np.asarray(metric._extract_corpus_statistics(hyps, refs), dtype=np.float64)


def bootstrap_interval(metric, stats, *, samples: int = BOOTSTRAP_SAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the corpus score over `samples` resamples of the
    test set (`stats`: `sentence_stats`): where the score of another test set of this size and
    kind would likely fall."""
    import numpy as np

    scores = _scores_of(metric, resample_counts(len(stats), samples, seed) @ stats)  # (S,)
    low, high = np.percentile(scores, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(metric, sys_stats, base_stats, *, baseline: str, higher_is_better: bool,
                     samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> Significance:
    """Koehn's (2004) paired bootstrap: resample the test set with replacement `samples` times
    and count how often the system fails to beat the baseline on the same resample.

    sacreBLEU's own `PairedTest(test_type="bs")` is not used: it reports p = 0.001 for two
    identical systems. `sys_stats` and `base_stats` are the two systems' `sentence_stats`, so
    resampled corpus scores are exact.
    """
    import numpy as np

    counts = resample_counts(len(sys_stats), samples, seed)  # (S, N)
    sys_scores = _scores_of(metric, counts @ sys_stats)  # (S,)
    base_scores = _scores_of(metric, counts @ base_stats)  # (S,)
    sys_total = metric._compute_score_from_stats(sys_stats.sum(0).tolist()).score
    base_total = metric._compute_score_from_stats(base_stats.sum(0).tolist()).score
    sign = 1.0 if higher_is_better else -1.0
    observed = sign * (sys_total - base_total)
    deltas = sign * (sys_scores - base_scores)  # > 0: the better system wins this resample
    if observed == 0:
        p_value = 1.0
    else:
        losses = int(np.sum(deltas <= 0)) if observed > 0 else int(np.sum(deltas >= 0))
        p_value = (losses + 1) / (samples + 1)
    raw = sys_scores - base_scores
    low, high = np.percentile(raw, [2.5, 97.5])
    return Significance(baseline=baseline, baseline_score=float(base_total),
                        difference=float(sys_total - base_total),
                        ci95=(float(low), float(high)), p_value=float(p_value),
                        significant=bool(p_value < SIGNIFICANCE_LEVEL), samples=samples)


def _scores_of(metric, stats) -> Any:
    import numpy as np

    return np.array([metric._compute_score_from_stats(row).score for row in stats.tolist()])


# --- tokenized BLEU: Moses-style tokens (nmt.text) and compound splitting ---------------------
_COMPOUND_HYPHEN = re.compile(r"(\S)-(\S)")


def paper_tokenize(line: str, *, lang: str = "xx") -> str:
    """Moses-style tokenization followed by hyphenated-compound splitting."""
    return split_compounds(tokenize_moses_like(line, lang=lang))


def split_compounds(text: str) -> str:
    r"""`Auto-Industrie` -> `Auto ##AT##-##AT## Industrie`, the classic rule of the tensor2tensor
    and fairseq evaluation (`s/(\S)-(\S)/$1 ##AT##-##AT## $2/g`): matches do not overlap, so
    in `X-Y-Z`, whose `Y` the first match consumed, the second hyphen stays
    (`X ##AT##-##AT## Y-Z`)."""
    return _COMPOUND_HYPHEN.sub(r"\1 ##AT##-##AT## \2", text)
