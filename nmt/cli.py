"""The `nmt` command line: a thin Typer layer over the stage modules.

Each command parses its options and calls one function of the stage module named after it.
Rich output, exit codes and the one-line rendering of errors live here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from nmt import __version__
from nmt.errors import NmtError

app = typer.Typer(
    name="nmt",
    help="Neural machine translation with the Transformer: prepare, train, average, "
         "translate, score.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()
T = TypeVar("T")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )


def guarded(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run a stage function; a user-facing error becomes one line and its exit code."""
    try:
        return fn(*args, **kwargs)
    except NmtError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        print(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    _setup_logging(verbose)
    # OpenMP threads that spin while waiting make torch 40x slower on a CPU shared with other
    # work; passive waiting costs little on an idle machine. Set before torch is first imported;
    # an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _not_yet(command: str) -> None:
    console.print(f"[yellow]nmt {command}: not implemented yet[/]")
    raise typer.Exit(1)


# --- prepare ---------------------------------------------------------------------------------
class _PrepareProgress:
    """`nmt prepare`'s stage progress as Rich progress bars on stderr."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def start(self, description: str, total: int | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.stop()
        self._progress = Progress(
            TextColumn("{task.description:<16}"), BarColumn(),
            TextColumn("{task.completed:>12,.0f}"), TimeElapsedColumn(), console=console)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _corpora_table(specs) -> None:
    table = Table(title="nmt prepare: named corpora")
    table.add_column("corpus", no_wrap=True)
    table.add_column("train pairs", justify="right", no_wrap=True)
    table.add_column("valid / test (pairs)")
    table.add_column("source (Hugging Face)")
    table.add_column("vocab", justify="right", no_wrap=True)
    for s in specs:
        table.add_row(s.name, f"{s.sizes[0]:,}",
                      f"{s.eval_sets[0]} ({s.sizes[1]:,}) / {s.eval_sets[1]} ({s.sizes[2]:,})",
                      s.source.removeprefix("hf:"), f"{s.vocab_size:,}")
    out.print(table)
    out.print("No download: nmt prepare sample-en-de (8,000/500/500 English-German pairs that "
              "nmt generates itself, for the quickstart)", highlight=False, soft_wrap=True)
    out.print("Your own data: nmt prepare local --src en --tgt de --train PREFIX --valid PREFIX "
              "[--test PREFIX] (PREFIX.en/PREFIX.de text, or parquet/json files, or --dataset DIR)",
              highlight=False, markup=False, soft_wrap=True)


def _prepare_summary(summary) -> None:
    m = summary.manifest
    table = Table(title=f"nmt prepare: {m['corpus']} {m['src_lang']}→{m['tgt_lang']}")
    for column in ("split", "pairs", f"{m['src_lang']} tokens", f"{m['tgt_lang']} tokens",
                   "removed"):
        table.add_column(column, justify="left" if column in ("split", "removed") else "right")
    for name, split in m["splits"].items():
        removed = ", ".join(f"{k.replace('_', ' ')} {v:,}"
                            for k, v in split.get("filtered", {}).items() if v) or "-"
        table.add_row(name, f"{split['pairs']:,}", f"{split['src_tokens']:,}",
                      f"{split['tgt_tokens']:,}", removed)
    out.print(table)
    stages = Table(title="stages")
    for column in ("stage", "status", "seconds", "pairs/s"):
        stages.add_column(column, justify="left" if column in ("stage", "status") else "right")
    for r in summary.stages:
        rate = r.pairs_per_second
        stages.add_row(r.name, "ran" if r.ran else "up to date, skipped",
                       f"{r.seconds:.1f}" if r.ran else "-", f"{rate:,.0f}" if rate else "-")
    out.print(stages)
    out.print(f"{summary.out}: {m['spm']['vocab_size']:,} SentencePiece pieces, {m['dtype']} "
              f"ids, content {m['content_hash'][:16]}", highlight=False, soft_wrap=True)


@app.command()
def prepare(
    corpus: Annotated[str | None, typer.Argument(
        help="A named corpus (see --list), or `local` for your own files.",
        show_default=False)] = None,
    list_corpora: Annotated[bool, typer.Option(
        "--list", help="List the named corpora with their sizes and sources, and exit.")] = False,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output directory. Default: data/<corpus>.", show_default=False)
    ] = None,
    src: Annotated[str | None, typer.Option(
        "--src", help="local: source language code, the suffix of its files (en).",
        show_default=False)] = None,
    tgt: Annotated[str | None, typer.Option(
        "--tgt", help="local: target language code (de).", show_default=False)] = None,
    train_data: Annotated[Path | None, typer.Option(
        "--train", help="local: training data: a text PREFIX (reads PREFIX.SRC and PREFIX.TGT, "
                        "one sentence a line, optionally .gz), or a parquet/json/jsonl/csv/arrow "
                        "file with a `translation` column {SRC: ..., TGT: ...}.",
        show_default=False)] = None,
    valid_data: Annotated[Path | None, typer.Option(
        "--valid", help="local: validation PREFIX or data file (never filtered).",
        show_default=False)] = None,
    test_data: Annotated[Path | None, typer.Option(
        "--test", help="local: test PREFIX or data file (optional; raw text kept for scoring).",
        show_default=False)] = None,
    dataset: Annotated[Path | None, typer.Option(
        "--dataset", help="local: instead of --train/--valid/--test, a directory that Hugging "
                          "Face `datasets` loads, with train, validation and test splits.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="local: corpus name. Default: the data's directory name.",
        show_default=False)] = None,
    vocab_size: Annotated[int | None, typer.Option(
        "--vocab-size", help="Joint SentencePiece BPE vocabulary. Default: 32000 for WMT, 8000 "
                             "for Multi30k, IWSLT and local corpora under 1M pairs.",
        show_default=False)] = None,
    max_len: Annotated[int, typer.Option(
        "--max-len", help="Drop training pairs with a side longer than this many subwords.")
    ] = 250,
    max_ratio: Annotated[float, typer.Option(
        "--max-ratio", help="Drop training pairs whose subword length ratio exceeds this "
                            "(Moses clean-corpus).")] = 1.5,
    dedup: Annotated[bool, typer.Option(
        "--dedup", help="Drop exact duplicate training pairs.")] = False,
    spm_sample: Annotated[int, typer.Option(
        "--spm-sample", help="Train SentencePiece on at most this many sentences (a random "
                             "sample of both sides).")] = 10_000_000,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", help="Encoding processes. Default (0): all cores.")] = 0,
    on_bad_utf8: Annotated[str, typer.Option(
        "--on-bad-utf8", help="An undecodable line: `error` (stop, naming file and line), "
                              "`skip` (drop the training pair) or `replace` the bad bytes.")
    ] = "error",
    force: Annotated[bool, typer.Option(
        "--force", help="Redo every stage, even those whose outputs are up to date.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the SentencePiece sample.")] = 1,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Hugging Face `datasets` cache. Default: its own "
                            "(~/.cache/huggingface).", show_default=False)] = None,
) -> None:
    """Get a parallel corpus ready for `nmt train`: clean, joint SentencePiece, binarize.

    Resumable: each stage is skipped when its outputs are up to date; a failed run never
    damages a finished output directory.
    """
    from nmt import prepare as prepare_stage

    if list_corpora:
        _corpora_table(prepare_stage.list_corpora())
        return
    if corpus is None:
        console.print("[bold red]error:[/] name a corpus (see `nmt prepare --list`) or `local`",
                      highlight=False)
        raise typer.Exit(2)
    config = prepare_stage.PrepareConfig(
        corpus=corpus, out=out_dir, src_lang=src, tgt_lang=tgt, train=train_data,
        valid=valid_data, test=test_data, dataset=dataset, name=name, vocab_size=vocab_size,
        max_len=max_len, max_ratio=max_ratio, dedup=dedup, spm_sample=spm_sample,
        workers=workers, on_bad_utf8=on_bad_utf8, force=force, seed=seed, cache_dir=cache_dir)
    progress = _PrepareProgress()
    try:
        summary = guarded(prepare_stage.run, config, progress)
    finally:
        progress.stop()
    _prepare_summary(summary)


# --- train -----------------------------------------------------------------------------------
class _TrainDisplay:
    """The live panel: rebuilt from the latest numbers whenever Rich refreshes."""

    def __init__(self) -> None:
        self.stats: dict = {}

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        s = self.stats
        if not s:
            return Text("starting...")
        eta = s.get("eta_s")
        eta_text = "-" if eta is None else (f"{eta / 3600:.1f} h" if eta >= 5400
                                            else f"{eta / 60:.1f} min")
        mem, best = s.get("gpu_mem_gb"), s.get("best_bleu")
        parts = [f"step {s['step']:,}/{s['max_steps']:,}", f"epoch {s['epoch']}",
                 f"loss {s['loss']:.3f}", f"ppl {s['ppl']:.2f}", f"lr {s['lr']:.2e}",
                 f"{s['tokens_per_s']:,.0f} tok/s",
                 f"{mem:.1f} GiB" if mem is not None else "cpu", f"ETA {eta_text}"]
        if best is not None:
            parts.append(f"best BLEU {best:.2f}")
        return Group(Text("  ".join(parts)),
                     ProgressBar(total=s["max_steps"], completed=s["step"], width=60))


class RichTrainReporter:
    """`nmt train` progress on rank 0: a Rich live display on a terminal, lines otherwise.

    It travels to spawned workers (pickled before any console exists)."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._live = None
        self._display = None

    def setup(self, rank: int) -> None:
        if rank == 0:
            if not any(isinstance(h, RichHandler) for h in logging.getLogger().handlers):
                _setup_logging(self.verbose)
        else:
            logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)

    def start(self, info: dict) -> None:
        from rich.live import Live

        resumed = f", resumed from {info['resumed_from']}" if info["resumed_from"] else ""
        console.print(f"training {info['parameters']:,} parameters on {info['pairs']:,} pairs, "
                      f"{info['world_size']} worker(s) on {info['device']}, {info['precision']}"
                      f"{resumed}\n{info['layout']}", highlight=False, markup=False)
        if console.is_terminal:
            self._display = _TrainDisplay()
            self._live = Live(self._display, console=console, refresh_per_second=4,
                              transient=True)
            self._live.start()

    def progress(self, stats: dict) -> None:
        if self._display is not None:
            self._display.stats = stats

    def record(self, record: dict) -> None:
        from nmt.train import format_record

        if record["kind"] == "valid" or self._live is None or self.verbose:
            console.print(format_record(record), highlight=False, markup=False)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _train_summary(result) -> None:
    table = Table(title="nmt train", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    hours = result.elapsed / 3600
    table.add_row("run", result.run)
    done = result.steps - result.start_step
    table.add_row("steps", f"{result.steps:,} ({done:,} in this invocation), "
                           f"epoch {result.epoch}")
    table.add_row("time", f"{result.elapsed:,.0f} s ({hours:.2f} h)")
    table.add_row("stopped by", result.signal or result.reason)
    table.add_row("batching", result.layout)
    if result.best_score is not None and result.best_score >= 0:
        table.add_row("best BLEU", f"{result.best_score:.2f} at step {result.best_step:,} "
                                   f"({Path(result.run) / 'best'})")
    elif result.best_score is not None:
        table.add_row("best valid loss", f"{-result.best_score:.3f} at step {result.best_step:,}")
    table.add_row("last checkpoint", result.last_checkpoint or "-")
    out.print(table)
    if result.signal:
        console.print(f"[yellow]stopped by {result.signal} at step {result.steps:,}; run the same "
                      f"command again to resume from {result.last_checkpoint}[/]",
                      highlight=False)


@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(
        help="Prepared data directory (from `nmt prepare`); optional with --config.",
        show_default=False)] = None,
    run: Annotated[Path | None, typer.Option(
        "--run", "-r", help="Run directory: config.json, metrics.jsonl, checkpoints/, best/. "
                            "Training resumes from its newest checkpoint.", show_default=False)
    ] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", "-p", help="Model and recipe: base, big (the paper's), small, tiny. "
                               "Default: base, or the run's own config when resuming.",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="JSON training config (e.g. a run's config.json); flags override it.",
        show_default=False)] = None,
    gpus: Annotated[int, typer.Option(
        "--gpus", "--nproc", help="Local worker processes, one per GPU (with --device cpu: CPU "
                                  "workers talking through gloo).")] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cuda or cpu.")] = "auto",
    nnodes: Annotated[int, typer.Option("--nnodes", help="Machines taking part.")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This machine's index.")] = 0,
    master_addr: Annotated[str, typer.Option(
        "--master-addr", help="Address of machine 0 (multi-node).")] = "127.0.0.1",
    master_port: Annotated[int | None, typer.Option(
        "--master-port", help="Rendezvous port (default: free port, or 29500 multi-node).",
        show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads per worker (default: the cores shared among workers).",
        show_default=False)] = None,
    batch_tokens: Annotated[int | None, typer.Option(
        "--batch-tokens", help="Tokens per update summed over all GPUs, counted as the padded "
                               "longer side of each pair (paper: 25000).", show_default=False)
    ] = None,
    max_tokens_per_gpu: Annotated[int | None, typer.Option(
        "--max-tokens-per-gpu", help="Memory bound of one GPU's micro-batch; the update is "
                                     "split into accumulated micro-batches to respect it.",
        show_default=False)] = None,
    update_freq: Annotated[int | None, typer.Option(
        "--update-freq", help="Micro-batches accumulated per update (default: derived).",
        show_default=False)] = None,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Updates to train (base 100000, big 300000).", show_default=False)
    ] = None,
    max_epochs: Annotated[int | None, typer.Option(
        "--max-epochs", help="Stop after this many epochs.", show_default=False)] = None,
    max_time: Annotated[str | None, typer.Option(
        "--max-time", help="Stop after this much training time, over resumes (3600, 90m, 2h).",
        show_default=False)] = None,
    lr_schedule: Annotated[str | None, typer.Option(
        "--lr-schedule", help="noam (the paper) or inverse_sqrt (fairseq: warmup to --lr).",
        show_default=False)] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", help="Peak learning rate (noam default: d_model^-0.5 * warmup^-0.5).",
        show_default=False)] = None,
    warmup: Annotated[int | None, typer.Option(
        "--warmup", help="Warmup updates (paper: 4000).", show_default=False)] = None,
    adam_betas: Annotated[str | None, typer.Option(
        "--adam-betas", help="Adam beta1,beta2 (paper: 0.9,0.98).", show_default=False)] = None,
    adam_eps: Annotated[float | None, typer.Option(
        "--adam-eps", help="Adam epsilon (paper: 1e-9).", show_default=False)] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Adam L2 penalty (paper: 0).", show_default=False)] = None,
    clip_norm: Annotated[float | None, typer.Option(
        "--clip-norm", help="Clip the gradient norm to this (0: off, the paper).",
        show_default=False)] = None,
    label_smoothing: Annotated[float | None, typer.Option(
        "--label-smoothing", help="Label smoothing epsilon (paper: 0.1).", show_default=False)
    ] = None,
    dropout: Annotated[float | None, typer.Option(
        "--dropout", help="Dropout on sublayer outputs and embedding sums (base 0.1, big 0.3).",
        show_default=False)] = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="auto (bf16 if the GPU has it, else fp16 with loss scaling; fp32 on "
                            "CPU), fp32, bf16 or fp16.", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seeds weights, dropout and data order.", show_default=False)] = None,
    save_every: Annotated[int | None, typer.Option(
        "--save-every", help="Checkpoint and validate every N updates.", show_default=False)
    ] = None,
    epoch_checkpoints: Annotated[bool | None, typer.Option(
        "--epoch-checkpoints/--no-epoch-checkpoints", help="Also checkpoint at epoch ends.",
        show_default=False)] = None,
    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", help="Step checkpoints to keep (default 20).", show_default=False)
    ] = None,
    valid_bleu_lines: Annotated[int | None, typer.Option(
        "--valid-bleu-lines", help="Validation lines decoded for BLEU (0: no BLEU; default: "
                                   "all, tiny: 200).", show_default=False)] = None,
    patience: Annotated[int | None, typer.Option(
        "--patience", help="Stop after N validations without a better BLEU.",
        show_default=False)] = None,
    log_every: Annotated[int | None, typer.Option(
        "--log-every", help="Updates between metrics.jsonl records.", show_default=False)
    ] = None,
    max_bad_steps: Annotated[int | None, typer.Option(
        "--max-bad-steps", help="NaN/inf losses in a row before stopping with an error.",
        show_default=False)] = None,
    tensorboard: Annotated[bool | None, typer.Option(
        "--tensorboard/--no-tensorboard", help="Write TensorBoard events to RUN/tensorboard.",
        show_default=False)] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print every log record even with the live display.")] = False,
) -> None:
    """Train a Transformer on prepared data (resumes automatically from the run directory)."""
    from nmt import train as train_stage
    from nmt.distributed import Launch

    flags = dict(batch_tokens=batch_tokens, max_tokens_per_gpu=max_tokens_per_gpu,
                 update_freq=update_freq, max_steps=max_steps, max_epochs=max_epochs,
                 max_time=max_time, lr_schedule=lr_schedule, lr=lr, warmup=warmup,
                 adam_betas=adam_betas, adam_eps=adam_eps, weight_decay=weight_decay,
                 clip_norm=clip_norm, label_smoothing=label_smoothing, dropout=dropout,
                 precision=precision, seed=seed, save_every=save_every,
                 save_epochs=epoch_checkpoints, keep_last=keep_last,
                 valid_bleu_lines=valid_bleu_lines, patience=patience, log_every=log_every,
                 max_bad_steps=max_bad_steps, tensorboard=tensorboard)
    launch = Launch(nproc=gpus, device=device, nnodes=nnodes, node_rank=node_rank,
                    master_addr=master_addr, master_port=master_port, threads=threads)
    result = guarded(train_stage.main, data=data, run=run, preset=preset, config_file=config,
                     overrides={k: v for k, v in flags.items() if v is not None}, launch=launch,
                     reporter=RichTrainReporter(verbose))
    if result is not None and result.rank == 0:
        _train_summary(result)


# --- average ---------------------------------------------------------------------------------
@app.command()
def average(
    checkpoints: Annotated[list[Path], typer.Argument(
        help="Checkpoint directories to average, or one run directory with --last N.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Where to write the averaged checkpoint (a directory).",
        show_default=False)],
    last: Annotated[int | None, typer.Option(
        "--last", min=1, help="Average the N newest checkpoints (by training step) of the run "
                              "directory; the paper uses 5 for base, 20 for big.")] = None,
) -> None:
    """Average the weights of the last N checkpoints of a run (or of listed checkpoints)."""
    from nmt import average as average_stage

    summary = guarded(average_stage.run, checkpoints, output=output, last=last)
    steps = ", ".join(f"{s:,}" for s in summary.steps)
    out.print(f"averaged {len(summary.inputs)} checkpoints (steps {steps}) into "
              f"{summary.output}: {summary.n_tensors} tensors, {summary.n_parameters:,} "
              f"parameters, {summary.seconds:.1f} s", highlight=False, markup=False,
              soft_wrap=True)


# --- translate -------------------------------------------------------------------------------
@app.command()
def translate(
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory (e.g. the output of `nmt average`).",
        show_default=False)],
    ensemble: Annotated[list[Path] | None, typer.Option(
        "--ensemble", help="Another checkpoint to ensemble with -c (repeatable); their "
                           "log-probabilities are averaged.", show_default=False)] = None,
    input_path: Annotated[Path | None, typer.Option(
        "--input", "-i", help="Input file, one sentence a line (default: stdin).",
        show_default=False)] = None,
    output_path: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Output file, written atomically (default: stdout).",
        show_default=False)] = None,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1,
                                      help="Beam size; 1 is greedy decoding.")] = 4,
    alpha: Annotated[float, typer.Option(
        "--lenpen", "--alpha", help="Length penalty exponent alpha (the paper: 0.6).")] = 0.6,
    lenpen_style: Annotated[str | None, typer.Option(
        "--lenpen-style", help="gnmt: ((5 + |Y|) / 6) ** alpha; fairseq: |Y| ** alpha. "
                               "Default: gnmt (the paper's), fairseq with --engine ctranslate2.",
        show_default=False)] = None,
    nbest: Annotated[int, typer.Option(
        "--nbest", min=1, help="Hypotheses per sentence, with scores (text: Moses-style "
                               "'id ||| translation ||| score' lines).")] = 1,
    stopping: Annotated[str, typer.Option(
        "--stopping", help="finished: a sentence ends once --beam hypotheses have (fairseq, "
                           "CTranslate2); exact: once no live beam can beat them (slower).")
    ] = "finished",
    max_len_a: Annotated[float, typer.Option(
        "--max-len-a", help="Maximum output length = a * source tokens + b.")] = 1.0,
    max_len_b: Annotated[int, typer.Option("--max-len-b", help="See --max-len-a.")] = 50,
    sampling: Annotated[bool, typer.Option(
        "--sampling", help="Sample instead of searching (--beam is ignored; --nbest samples "
                           "per sentence).")] = False,
    temperature: Annotated[float, typer.Option("--temperature",
                                               help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option(
        "--top-k", help="Sample from the k most likely tokens only (0: all).")] = 0,
    top_p: Annotated[float, typer.Option(
        "--top-p", help="Sample from the smallest set of tokens holding this much "
                        "probability.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed for --sampling.")] = 0,
    output_format: Annotated[str, typer.Option(
        "--output-format", help="text, or jsonl (scores, token counts, per-token "
                                "log-probabilities).")] = "text",
    batch_tokens: Annotated[int, typer.Option(
        "--batch-tokens", help="Padded source tokens per batch, each sentence counted once "
                               "per beam.")] = 6000,
    buffer_lines: Annotated[int, typer.Option(
        "--buffer-lines", help="Lines read, translated and flushed together.")] = 2000,
    device: Annotated[str, typer.Option(
        "--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(
        "--precision", help="auto (fp32 on CPU, bf16/fp16 on GPU), fp32, bf16 or fp16.")
    ] = "auto",
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False)] = None,
    engine: Annotated[str, typer.Option(
        "--engine", help="torch, or ctranslate2 to run a `nmt export --to ctranslate2` "
                         "directory given as -c.")] = "torch",
    alignments: Annotated[bool, typer.Option(
        "--alignments", help="Add word alignments from cross-attention (the last layer's head "
                             "average): text 'translation ||| 0-0 1-2 ...' (source-target "
                             "word indices); jsonl an `alignment` field.")] = False,
    attention_weights: Annotated[bool, typer.Option(
        "--attention-weights", help="With --alignments and jsonl: also the full subword "
                                    "attention matrix (`attention`).")] = False,
) -> None:
    """Translate text from stdin or a file with beam search; raw text in, raw text out."""
    from nmt import translate as translate_stage
    from nmt.search import SearchConfig

    def build() -> translate_stage.TranslateConfig:
        return translate_stage.TranslateConfig(
            checkpoints=(checkpoint, *(ensemble or [])),
            search=SearchConfig(beam=beam, nbest=nbest, alpha=alpha,
                                lenpen_style=lenpen_style or (
                                    "fairseq" if engine == "ctranslate2" else "gnmt"),
                                sampling=sampling, temperature=temperature, top_k=top_k,
                                top_p=top_p, stopping=stopping),
            input=input_path, output=output_path, output_format=output_format, max_len_a=max_len_a,
            max_len_b=max_len_b, batch_tokens=batch_tokens, buffer_lines=buffer_lines,
            device=device, precision=precision, threads=threads, seed=seed, engine=engine,
            alignments=alignments, attention_weights=attention_weights)

    stats = guarded(translate_stage.run, guarded(build))
    rate = stats.sentences / stats.seconds if stats.seconds else 0.0
    notes = [f"{n} {what}" for n, what in ((stats.truncated, "truncated"),
                                           (stats.replaced, "with bytes replaced"),
                                           (stats.failed, "failed")) if n]
    console.print(f"translated {stats.lines:,} lines ({stats.sentences:,} sentences, "
                  f"{stats.tokens:,} tokens) in {stats.seconds:.1f} s on {stats.device}: "
                  f"{rate:.1f} sentences/s" + (f"; {', '.join(notes)}" if notes else ""),
                  highlight=False, markup=False)


# --- score -----------------------------------------------------------------------------------
@app.command()
def score(
    ref: Annotated[list[Path], typer.Option(
        "--ref", "-r", help="Reference file, line-aligned with the hypothesis; repeat the "
                            "option for multiple references.", show_default=False)],
    hypothesis: Annotated[Path | None, typer.Argument(
        help="Hypothesis file, one detokenized sentence a line; '-' or omitted: stdin.",
        show_default=False)] = None,
    metrics: Annotated[str, typer.Option(
        "--metrics", "-m", help="Comma-separated metrics: bleu, chrf, ter.")] = "bleu",
    lowercase: Annotated[bool, typer.Option(
        "--lowercase", help="Case-insensitive scores (lowercased BLEU and chrF).")] = False,
    paper_bleu: Annotated[bool, typer.Option(
        "--paper-bleu", help="Report tokenized BLEU (Moses-style tokens, hyphenated compounds "
                             "split) as the paper does, instead of sacreBLEU BLEU.")] = False,
    baseline: Annotated[Path | None, typer.Option(
        "--baseline", help="A baseline system's output: paired bootstrap resampling says "
                           "whether the difference is significant.", show_default=False)] = None,
    min_bleu: Annotated[float | None, typer.Option(
        "--min-bleu", help="Exit with code 1 when BLEU is below this (a CI gate).",
        show_default=False)] = None,
    min_chrf: Annotated[float | None, typer.Option(
        "--min-chrf", help="Exit with code 1 when chrF is below this.",
        show_default=False)] = None,
    source: Annotated[Path | None, typer.Option(
        "--source", "-s", help="The source file, to show beside --examples.",
        show_default=False)] = None,
    examples: Annotated[int, typer.Option(
        "--examples", help="Also show this many source/reference/hypothesis lines, spread "
                           "over the file.")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Score a translation against references with sacreBLEU (BLEU, chrF, TER)."""
    import json

    from nmt import score as score_stage

    keys = guarded(score_stage.parse_metrics, metrics)
    report = guarded(score_stage.run, hypothesis, ref, metrics=keys, lowercase=lowercase,
                     paper_bleu=paper_bleu, baseline=baseline, min_bleu=min_bleu,
                     min_chrf=min_chrf, source=source, examples=examples)
    if as_json:
        print(json.dumps(report.to_json()))
    elif report.examples:
        _score_tables(report)
    else:
        for s in report.scores:
            out.print(s.text, highlight=False, markup=False, soft_wrap=True)
            kind = "sacreBLEU signature" if s.name != score_stage.PAPER_BLEU_NAME else "variant"
            out.print(f"  {kind}: {s.signature}", highlight=False, markup=False,
                      soft_wrap=True)
            if s.significance is not None:
                out.print(f"  {_significance_line(s)}", highlight=False, markup=False,
                          soft_wrap=True)
    for failure in report.failures:
        console.print(f"[bold red]failed:[/] {failure}", highlight=False, soft_wrap=True)
    if report.failures:
        raise typer.Exit(1)


def _score_tables(report) -> None:
    """Scores, then examples, as Rich tables (the quickstart's closing view)."""
    scores = Table(title=f"{report.hypothesis}: {report.lines:,} lines")
    for column in ("metric", "score", "details"):
        scores.add_column(column)
    for s in report.scores:
        scores.add_row(s.name, f"{s.score:.2f}", f"{s.text}\n{s.signature}")
    out.print(scores)
    table = Table(title="examples", show_lines=True)
    table.add_column("line", justify="right")
    if report.examples[0].source is not None:
        table.add_column("source")
    table.add_column("reference")
    table.add_column("hypothesis")
    for e in report.examples:
        cells = [str(e.line), *([e.source] if e.source is not None else []), e.reference,
                 e.hypothesis]
        table.add_row(*cells)
    out.print(table)


def _significance_line(s) -> str:
    from nmt import score as score_stage

    sig = s.significance
    low, high = sig.ci95
    level = score_stage.SIGNIFICANCE_LEVEL
    verdict = (f"significant (p < {level:g})" if sig.significant
               else f"not significant (p >= {level:g})")
    better = (sig.difference > 0) == s.higher_is_better and sig.difference != 0
    word = "better" if better else "worse" if sig.difference else "equal"
    return (f"vs baseline {sig.baseline}: {sig.baseline_score:.2f} -> {s.score:.2f} "
            f"({sig.difference:+.2f} {word}, 95% CI [{low:+.2f}, {high:+.2f}]), "
            f"p = {sig.p_value:.4f} over {sig.samples} resamples: {verdict}")


# --- export ----------------------------------------------------------------------------------
@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory.",
                                               show_default=False)],
    out_dir: Annotated[Path, typer.Argument(
        help="Directory to write (written to a temporary name, then renamed).",
        show_default=False)],
    to: Annotated[str, typer.Option(
        "--to", help="hf: a transformers MarianMTModel + MarianTokenizer directory; "
                     "ctranslate2: a CTranslate2 model directory.", show_default=False)],
    quantization: Annotated[str | None, typer.Option(
        "--quantization", help="CTranslate2 weight type: int8, int8_float32, int8_float16, "
                               "int8_bfloat16, int16, float16, bfloat16 or float32 "
                               "(default: as trained).", show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace OUT_DIR if it exists.")] = False,
) -> None:
    """Export a checkpoint for Hugging Face transformers or CTranslate2 (needs the optional
    `export` extra of nmt: transformers and ctranslate2)."""
    from nmt import export as export_stage

    path = guarded(export_stage.run, checkpoint, out_dir, to=to, quantization=quantization,
                   force=force)
    console.print(f"exported {checkpoint} to {path} ({to}"
                  + (f", {quantization}" if quantization else "") + ")",
                  highlight=False, markup=False, soft_wrap=True)


# --- info ------------------------------------------------------------------------------------
@app.command()
def info(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint directory.")],
) -> None:
    """Describe a checkpoint: architecture, parameters, vocabulary, step and training data."""
    from nmt import info as info_stage

    rows = guarded(info_stage.run, checkpoint)
    table = Table(title="nmt checkpoint", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in rows:
        table.add_row(field, value)
    out.print(table)



# === visualisation and serving (issue 15): attention, plot, serve ==============================
@app.command()
def attention(
    text: Annotated[str, typer.Argument(help="The sentence to translate.", show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", help="Directory for the PNG heatmaps (replaced whole).",
        show_default=False)],
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory.", show_default=False)] = None,
    kind: Annotated[list[str] | None, typer.Option(
        "--kind", help="cross (encoder-decoder), encoder or decoder (self-attention); "
                       "repeatable. Default: all three.", show_default=False)] = None,
    layer: Annotated[int | None, typer.Option(
        "--layer", min=1, help="Only this layer (from 1). Default: every layer.",
        show_default=False)] = None,
    head: Annotated[int | None, typer.Option(
        "--head", min=1, help="Only this head (from 1); the head mean is always drawn. "
                              "Default: every head.", show_default=False)] = None,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1, help="Beam size.")] = 4,
    alpha: Annotated[float, typer.Option("--lenpen", help="Length penalty alpha.")] = 0.6,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")
                      ] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")
                         ] = "auto",
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False)] = None,
) -> None:
    """Translate one sentence and draw its attention as PNG heatmaps (needs the `viz` extra):
    per layer, per head and the head mean, for each kind, plus an overview grid."""
    from nmt import heatmap
    from nmt.attention import KINDS
    from nmt.search import SearchConfig

    if checkpoint is None:
        console.print("[bold red]error:[/] give a checkpoint with -c", highlight=False)
        raise typer.Exit(2)
    config = guarded(lambda: heatmap.AttentionConfig(
        checkpoint=checkpoint, text=text, out=out_dir, kinds=tuple(kind or KINDS), layer=layer,
        head=head, search=SearchConfig(beam=beam, alpha=alpha), device=device,
        precision=precision, threads=threads))
    result = guarded(heatmap.run, config)
    out.print(result.maps.translation, highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {len(result.files)} images to {result.out} "
                  f"({result.out / 'overview.png'})", highlight=False, markup=False,
                  soft_wrap=True)



@app.command()
def plot(
    runs: Annotated[list[Path], typer.Argument(
        help="Run directories of `nmt train` (their metrics.jsonl); several are overlaid.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="PNG file to write.")] = Path("curves.png"),
    x: Annotated[str, typer.Option(
        "--x", help="step (update steps) or time (wall-clock seconds).")] = "step",
) -> None:
    """Plot training curves: loss, perplexity, learning rate, validation BLEU and tokens/s
    (needs the `viz` extra)."""
    from nmt import plot as plot_stage

    result = guarded(plot_stage.run, runs, output, x)
    console.print(f"wrote {result.output}: {', '.join(result.panels)} for "
                  f"{len(result.runs)} run(s)", highlight=False, markup=False, soft_wrap=True)



@app.command()
def serve(
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory.", show_default=False)] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Address to listen on. Default: 127.0.0.1 (this machine only); "
                       "any other address must be given here explicitly.",
        show_default=False)] = None,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8080,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1,
                                      help="Default beam size of requests.")] = 4,
    alpha: Annotated[float, typer.Option("--lenpen", help="Default length penalty.")] = 0.6,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", help="How long a request waits to be batched with others.")] = 5.0,
    max_queued_lines: Annotated[int, typer.Option(
        "--max-queued-lines", help="Lines waiting at most; beyond, requests get 503.")
    ] = 2048,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")
                      ] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto, fp32, bf16 or fp16.")
                         ] = "auto",
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False)] = None,
) -> None:
    """Serve translations over HTTP (POST /translate, GET /health) with a web page at /
    (needs the `serve` extra)."""
    from nmt.serve import app as serve_app
    from nmt.serve.engine import Options

    if checkpoint is None:
        console.print("[bold red]error:[/] give a checkpoint with -c", highlight=False)
        raise typer.Exit(2)
    config = guarded(lambda: serve_app.ServeConfig(
        checkpoints=(checkpoint,), host=host or serve_app.LOOPBACK, port=port, device=device,
        precision=precision, threads=threads, max_wait_ms=max_wait_ms,
        max_queued_lines=max_queued_lines, defaults=Options(beam=beam, alpha=alpha)))
    guarded(serve_app.run, config, explicit_host=host is not None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
