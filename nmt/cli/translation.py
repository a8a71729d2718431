"""`nmt translate` and `nmt score`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from nmt import display
from nmt.cli.common import (
    HARDWARE,
    IO,
    MODEL,
    SEARCH,
    Engine,
    LenpenStyle,
    OutputFormat,
    Stopping,
    TranslatePrecision,
    guarded,
    model_path,
)

# --- translate -------------------------------------------------------------------------------
TRANSLATE_EXAMPLES = ("Examples: [bold]nmt translate -c runs/base/avg < newstest2014.en > "
    "hyp.de[/]  ·  [bold]nmt translate -c avg --beam 1 -i in.txt -o out.txt[/]")


def translate(
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory (e.g. the output of `nmt average`). "
                                   "Default: $NMT_CHECKPOINT, else the newest run in ./runs "
                                   "(its avg/, best/ or newest checkpoint).",
        show_default=False, rich_help_panel=MODEL)] = None,
    ensemble: Annotated[list[Path] | None, typer.Option(
        "--ensemble", help="Another checkpoint to ensemble with -c (repeatable); their "
                           "log-probabilities are averaged.", show_default=False,
        rich_help_panel=MODEL)] = None,
    engine: Annotated[Engine, typer.Option(
        "--engine", help="torch, or ctranslate2 to run a `nmt export --to ctranslate2` "
                         "directory given as -c.", rich_help_panel=MODEL)] = Engine.torch,
    input_path: Annotated[Path | None, typer.Option(
        "--input", "-i", help="Input file, one sentence a line (default: stdin).",
        show_default=False, rich_help_panel=IO)] = None,
    output_path: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output file, written atomically (default: stdout).",
        show_default=False, rich_help_panel=IO)] = None,
    output_format: Annotated[OutputFormat, typer.Option(
        "--output-format", help="text, or jsonl (scores, token counts, per-token "
                                "log-probabilities).", rich_help_panel=IO)] = OutputFormat.text,
    nbest: Annotated[int, typer.Option(
        "--nbest", min=1, help="Hypotheses per sentence, with scores (text: Moses-style "
                               "'id ||| translation ||| score' lines).", rich_help_panel=IO)
    ] = 1,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1,
                                      help="Beam size; 1 is greedy decoding.",
                                      rich_help_panel=SEARCH)] = 4,
    alpha: Annotated[float, typer.Option(
        "--lenpen", "--alpha", help="Length penalty exponent alpha (the paper: 0.6).",
        rich_help_panel=SEARCH)] = 0.6,
    lenpen_style: Annotated[LenpenStyle | None, typer.Option(
        "--lenpen-style", help="gnmt: ((5 + |Y|) / 6) ** alpha; fairseq: |Y| ** alpha. "
                               "Default: gnmt (the paper's), fairseq with --engine ctranslate2.",
        show_default=False, rich_help_panel=SEARCH)] = None,
    stopping: Annotated[Stopping, typer.Option(
        "--stopping", help="finished: a sentence ends once --beam hypotheses have (fairseq, "
                           "CTranslate2); exact: once no live beam can beat them (slower).",
        rich_help_panel=SEARCH)] = Stopping.finished,
    max_len_a: Annotated[float, typer.Option(
        "--max-len-a", help="Maximum output length = a * source tokens + b.",
        rich_help_panel=SEARCH)] = 1.0,
    max_len_b: Annotated[int, typer.Option("--max-len-b", help="See --max-len-a.",
                                           rich_help_panel=SEARCH)] = 50,
    sampling: Annotated[bool, typer.Option(
        "--sampling", help="Sample instead of searching (--beam is ignored; --nbest samples "
                           "per sentence).", rich_help_panel="Sampling")] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.",
                                               rich_help_panel="Sampling")] = 1.0,
    top_k: Annotated[int, typer.Option(
        "--top-k", help="Sample from the k most likely tokens only (0: all).",
        rich_help_panel="Sampling")] = 0,
    top_p: Annotated[float, typer.Option(
        "--top-p", help="Sample from the smallest set of tokens holding this much "
                        "probability.", rich_help_panel="Sampling")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for --sampling.",
                                      rich_help_panel="Sampling")] = 0,
    batch_tokens: Annotated[int, typer.Option(
        "--batch-tokens", help="Padded source tokens per batch, each sentence counted once "
                               "per beam.", rich_help_panel=HARDWARE)] = 6000,
    buffer_lines: Annotated[int, typer.Option(
        "--buffer-lines", help="Lines read, translated and flushed together.",
        rich_help_panel=HARDWARE)] = 2000,
    device: Annotated[str, typer.Option(
        "--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=HARDWARE)] = "auto",
    precision: Annotated[TranslatePrecision, typer.Option(
        "--precision", help="auto: fp32 on CPU, bf16/fp16 on GPU; int8 (CPU): quantized "
                            "Linear layers, faster at a small cost in BLEU.",
        rich_help_panel=HARDWARE)] = TranslatePrecision.auto,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar and no closing summary on stderr.",
        rich_help_panel=IO)] = False,
    alignments: Annotated[bool, typer.Option(
        "--alignments", help="Add word alignments from cross-attention (the last layer's head "
                             "average): text 'translation ||| 0-0 1-2 ...' (source-target "
                             "word indices); jsonl an `alignment` field.", rich_help_panel=IO)
    ] = False,
    attention_weights: Annotated[bool, typer.Option(
        "--attention-weights", help="With --alignments and jsonl: also the full subword "
                                    "attention matrix (`attention`).", rich_help_panel=IO)
    ] = False,
) -> None:
    """Translate text from stdin or a file with beam search; raw text in, raw text out.

    Typed at a terminal or fed through a pipe, each line is translated as soon as it has
    arrived; files are read in chunks of --buffer-lines for speed.
    """
    from nmt import translate as translate_stage
    from nmt.search import SearchConfig

    model = model_path(checkpoint)

    def build() -> translate_stage.TranslateConfig:
        style = lenpen_style.value if lenpen_style else (
            "fairseq" if engine is Engine.ctranslate2 else "gnmt")
        return translate_stage.TranslateConfig(
            checkpoints=(model, *(ensemble or [])),
            search=SearchConfig(beam=beam, nbest=nbest, alpha=alpha, lenpen_style=style,
                                sampling=sampling, temperature=temperature, top_k=top_k,
                                top_p=top_p, stopping=stopping.value),
            input=input_path, output=output_path, output_format=output_format.value,
            max_len_a=max_len_a, max_len_b=max_len_b, batch_tokens=batch_tokens,
            buffer_lines=buffer_lines, device=device, precision=precision.value,
            threads=threads, seed=seed, engine=engine.value, alignments=alignments,
            attention_weights=attention_weights)

    interactive = input_path is None and sys.stdin.isatty() and sys.stdout.isatty()
    progress = None if quiet or interactive else display.Progress()
    try:
        stats = guarded(translate_stage.run, guarded(build), progress=progress)
    finally:
        if progress is not None:
            progress.stop()
    if not quiet:
        display.translate_summary(stats)


# --- score -----------------------------------------------------------------------------------
SCORE_EXAMPLES = ("Examples: [bold]nmt score hyp.de --ref newstest2014.de --min-bleu 26[/] "
    "(exit 1 below 26: a CI gate)  ·  [bold]nmt score hyp.de --ref ref.de "
    "--paper-bleu[/] (the paper's tokenized BLEU)")


def score(
    ref: Annotated[list[Path], typer.Option(
        "--ref", "-r", help="Reference file, line-aligned with the hypothesis; repeat the "
                            "option for multiple references.", show_default=False)],
    hypothesis: Annotated[Path | None, typer.Argument(
        help="Hypothesis file, one detokenized sentence a line; '-' or omitted: stdin.",
        show_default=False)] = None,
    metrics: Annotated[str, typer.Option(
        "--metrics", "-m", help="Comma-separated metrics: bleu, chrf, ter.",
        rich_help_panel="Metrics")] = "bleu",
    lowercase: Annotated[bool, typer.Option(
        "--lowercase", help="Case-insensitive scores (lowercased BLEU and chrF).",
        rich_help_panel="Metrics")] = False,
    paper_bleu: Annotated[bool, typer.Option(
        "--paper-bleu", help="Report tokenized BLEU (Moses-style tokens, hyphenated compounds "
                             "split) as the paper does, instead of sacreBLEU BLEU.",
        rich_help_panel="Metrics")] = False,
    moses_bleu: Annotated[bool, typer.Option(
        "--moses-bleu", help="Report BLEU on Moses-style tokens without compound splitting "
                             "(with --lowercase: the Multi30k literature's BLEU).",
        rich_help_panel="Metrics")] = False,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", help="A baseline system's output: paired bootstrap resampling says "
                           "whether the difference is significant.", show_default=False,
        rich_help_panel="Metrics")] = None,
    confidence: Annotated[bool, typer.Option(
        "--confidence", help="Add each score's 95% interval by bootstrap resampling of the "
                             "test sentences (how much the test set alone can move it).",
        rich_help_panel="Metrics")] = False,
    min_bleu: Annotated[float | None, typer.Option(
        "--min-bleu", help="Exit with code 1 when BLEU is below this (a CI gate).",
        show_default=False, rich_help_panel="Gate")] = None,
    min_chrf: Annotated[float | None, typer.Option(
        "--min-chrf", help="Exit with code 1 when chrF is below this.",
        show_default=False, rich_help_panel="Gate")] = None,
    source: Annotated[Path | None, typer.Option(
        "--source", "-s", help="The source file, to show beside --examples.",
        show_default=False, rich_help_panel=IO)] = None,
    examples: Annotated[int, typer.Option(
        "--examples", help="Also show this many source/reference/hypothesis lines, spread "
                           "over the file.", rich_help_panel=IO)] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object instead of text.", rich_help_panel=IO)] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-b", "--score-only", help="Print the score alone, one number per metric "
                                               "(as sacreBLEU -b).", rich_help_panel=IO)] = False,
) -> None:
    """Score a translation against references with sacreBLEU (BLEU, chrF, TER)."""
    import json

    from nmt import score as score_stage

    keys = guarded(score_stage.parse_metrics, metrics)
    report = guarded(score_stage.run, hypothesis, ref, metrics=keys, lowercase=lowercase,
                     paper_bleu=paper_bleu, moses_bleu=moses_bleu, baseline=baseline,
                     confidence=confidence, min_bleu=min_bleu, min_chrf=min_chrf,
                     source=source, examples=examples)
    if as_json:
        print(json.dumps(report.to_json()))
    elif quiet:
        for s in report.scores:
            print(f"{s.score:.2f}")
    elif report.examples:
        display.score_tables(report)
    else:
        display.score_lines(report, score_stage.SIGNIFICANCE_LEVEL)
    display.score_failures(report.failures)
    if report.failures:
        raise typer.Exit(1)



def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(epilog=TRANSLATE_EXAMPLES)(translate)
    app.command(epilog=SCORE_EXAMPLES)(score)
