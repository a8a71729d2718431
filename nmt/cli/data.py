"""`nmt prepare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt import display
from nmt.cli.common import (
    DATA,
    HARDWARE,
    IO,
    MODEL,
    BadUtf8,
    guarded,
)

# --- prepare ---------------------------------------------------------------------------------
PREPARE_EXAMPLES = ("Examples: [bold]nmt prepare wmt14-en-de[/]  ·  [bold]nmt prepare local "
    "--src en --tgt de --train corpus/train --valid corpus/dev[/]  ·  "
    "[bold]nmt prepare --list[/]")


def prepare(
    corpus: Annotated[str | None, typer.Argument(
        help="A named corpus (see --list), or `local` for your own files.",
        show_default=False)] = None,
    list_corpora: Annotated[bool, typer.Option(
        "--list", help="List the named corpora with their sizes and sources, and exit.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output directory. Default: data/<corpus>.", show_default=False,
        rich_help_panel=IO)] = None,
    src: Annotated[str | None, typer.Option(
        "--src", help="local: source language code, the suffix of its files (en).",
        show_default=False, rich_help_panel=DATA)] = None,
    tgt: Annotated[str | None, typer.Option(
        "--tgt", help="local: target language code (de).", show_default=False,
        rich_help_panel=DATA)] = None,
    train_data: Annotated[Path | None, typer.Option(
        "--train", help="local: training data: a text PREFIX (reads PREFIX.SRC and PREFIX.TGT, "
                        "one sentence a line, optionally .gz), or a parquet/json/jsonl/csv/arrow "
                        "file with a `translation` column {SRC: ..., TGT: ...}.",
        show_default=False, rich_help_panel=DATA)] = None,
    valid_data: Annotated[Path | None, typer.Option(
        "--valid", help="local: validation PREFIX or data file (never filtered).",
        show_default=False, rich_help_panel=DATA)] = None,
    test_data: Annotated[Path | None, typer.Option(
        "--test", help="local: test PREFIX or data file (optional; raw text kept for scoring).",
        show_default=False, rich_help_panel=DATA)] = None,
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="local: instead of --train/--valid/--test, a directory that Hugging "
                          "Face `datasets` loads, with train, validation and test splits.",
        show_default=False, rich_help_panel=DATA)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="local: corpus name. Default: the data's directory name.",
        show_default=False, rich_help_panel=DATA)] = None,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Joint SentencePiece BPE vocabulary. Default: 37000 for WMT14 "
                             "en-de (the paper's), 32000 for other WMT, 8000 for Multi30k, "
                             "IWSLT and local corpora under 1M pairs.",
        show_default=False, rich_help_panel=MODEL)] = None,
    vocab_from: Annotated[Path | None, typer.Option(
        "--vocab-from", "--spm", help="Encode with this SentencePiece model instead of training "
                                      "one: a .model file, a checkpoint or a prepared directory "
                                      "(to fine-tune that checkpoint on this data).",
        show_default=False, rich_help_panel=MODEL)] = None,
    spm_sample: Annotated[int, typer.Option(
        "--spm-sample", help="Train SentencePiece on at most this many sentences (a random "
                             "sample of both sides).", rich_help_panel=MODEL)] = 10_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the SentencePiece sample.",
                                      rich_help_panel=MODEL)] = 1,
    max_len: Annotated[int, typer.Option(
        "--max-len", help="Drop training pairs with a side longer than this many subwords.",
        rich_help_panel="Cleaning")] = 250,
    max_ratio: Annotated[float, typer.Option(
        "--max-ratio", help="Drop training pairs whose subword length ratio exceeds this "
                            "(Moses clean-corpus).", rich_help_panel="Cleaning")] = 1.5,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Drop exact duplicate training pairs.",
        rich_help_panel="Cleaning")] = False,
    lowercase: Annotated[bool, typer.Option(
        "--lowercase", help="Lowercase all text (as many Multi30k papers do); `nmt translate` "
                            "lowercases its input the same way.", rich_help_panel="Cleaning")
    ] = False,
    moses_tokenize: Annotated[bool, typer.Option(
        "--moses-tokenize", help="Moses-style tokens before SentencePiece (\"a man , who\"); "
                                 "`nmt translate` tokenizes its input and detokenizes its output.",
        rich_help_panel="Cleaning")] = False,
    on_bad_utf8: Annotated[BadUtf8, typer.Option(
        "--on-bad-utf8", help="An undecodable line: `error` (stop, naming file and line), "
                              "`skip` (drop the training pair) or `replace` the bad bytes.",
        rich_help_panel="Cleaning")] = BadUtf8.error,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", help="Encoding processes. Default (0): all cores.",
        rich_help_panel=HARDWARE)] = 0,
    force: Annotated[bool, typer.Option(
        "--force", help="Redo every stage, even those whose outputs are up to date.",
        rich_help_panel=IO)] = False,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Hugging Face `datasets` cache. Default: its own "
                            "(~/.cache/huggingface).", show_default=False, rich_help_panel=IO)
    ] = None,
) -> None:
    """Get a parallel corpus ready for `nmt train`: clean, joint SentencePiece, binarize.

    Resumable: each stage is skipped when its outputs are up to date; a failed run never
    damages a finished output directory.
    """
    from nmt import prepare as prepare_stage

    if list_corpora:
        display.corpora_table(prepare_stage.list_corpora())
        return
    if corpus is None:
        display.error("name a corpus (see `nmt prepare --list`) or `local`")
        raise typer.Exit(2)
    config = guarded(
        prepare_stage.PrepareConfig, corpus=corpus, out=out_dir, src_lang=src, tgt_lang=tgt,
        train=train_data, valid=valid_data, test=test_data, dataset=dataset, name=name,
        vocab_size=vocab_size, vocab_from=vocab_from, max_len=max_len, max_ratio=max_ratio,
        dedup=dedup, lowercase=lowercase, moses_tokenize=moses_tokenize, spm_sample=spm_sample,
        workers=workers, on_bad_utf8=on_bad_utf8.value,
        force=force, seed=seed, cache_dir=cache_dir)
    progress = display.Progress()
    try:
        summary = guarded(prepare_stage.run, config, progress)
    finally:
        progress.stop()
    display.prepare_summary(summary)



def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(epilog=PREPARE_EXAMPLES)(prepare)
