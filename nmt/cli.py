"""The `nmt` command line: a thin Typer layer over the stage modules.

Each command parses its options (grouped into help panels; choices are enums so `--help` lists
them) and calls one function of the stage module named after it. What is shown to the user lives
in `nmt.display`; errors become one line and exit code 2 in `guarded`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from typer.core import TyperGroup

from nmt import __version__, display
from nmt.errors import NmtError


class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value not among the choices) as one line, exit 2,
    like every other failure, instead of a framed usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except typer.TyperException as exc:  # typer's (vendored click's) usage errors
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `nmt`: the help, as asked
                display.out.print(ctx.get_help())
                sys.exit(0)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            message = " ".join(exc.format_message().split()).replace("Value error, ", "")
            display.error(where + message)
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:
            display.console.print("[yellow]aborted[/]")
            sys.exit(1)
        except KeyboardInterrupt:  # outside a stage (while printing a summary, say)
            code = 130
        if code == 130:  # Ctrl-C (twice, for training), wherever it landed
            display.console.print("[yellow]interrupted[/]")
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="nmt",
    cls=_OneLineErrors,
    help="Neural machine translation with the Transformer of 'Attention Is All You Need': "
         "prepare, train, average, translate, score, export, info.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
T = TypeVar("T")


# --- choices ---------------------------------------------------------------------------------
class Preset(StrEnum):
    base = "base"
    big = "big"
    small = "small"
    tiny = "tiny"


class TrainDevice(StrEnum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class Precision(StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TranslatePrecision(StrEnum):  # translate only: int8 is an inference format
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    int8 = "int8"


class LrSchedule(StrEnum):
    noam = "noam"
    inverse_sqrt = "inverse_sqrt"


class Stopping(StrEnum):
    finished = "finished"
    exact = "exact"


class LenpenStyle(StrEnum):
    gnmt = "gnmt"
    fairseq = "fairseq"


class OutputFormat(StrEnum):
    text = "text"
    jsonl = "jsonl"


class Engine(StrEnum):
    torch = "torch"
    ctranslate2 = "ctranslate2"


class ExportTarget(StrEnum):
    hf = "hf"
    ctranslate2 = "ctranslate2"


class Quantization(StrEnum):
    int8 = "int8"
    int8_float32 = "int8_float32"
    int8_float16 = "int8_float16"
    int8_bfloat16 = "int8_bfloat16"
    int16 = "int16"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class BadUtf8(StrEnum):
    error = "error"
    skip = "skip"
    replace = "replace"


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


# Help panels of `nmt train` (and the commands that share their kinds of options).
DATA, MODEL, OPTIM, SCHEDULE, CHECKPOINTS, HARDWARE, LOGGING = (
    "Data", "Model", "Optimisation", "Schedule", "Checkpoints", "Hardware", "Logging")
SEARCH, IO = "Search", "Input and output"


def guarded(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run a stage function; a user-facing error becomes one line and its exit code.

    Operating-system errors that a stage did not turn into its own error (a full disk, a
    read-only file system, a bad path) become one line naming the file, exit 2.
    """
    from nmt.files import os_failure

    try:
        return fn(*args, **kwargs)
    except NmtError as exc:
        display.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:
        failure = os_failure(exc)
        display.error(str(failure))
        raise typer.Exit(failure.exit_code) from None
    except KeyboardInterrupt:  # reported once, at the top (`_OneLineErrors.main`)
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
    display.setup_logging(verbose)
    # OpenMP threads that spin while waiting make torch 40x slower on a CPU shared with other
    # work; passive waiting costs little on an idle machine. Set before torch is first imported;
    # an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _model(explicit: Path | None) -> Path:
    """The checkpoint a command uses: `explicit`, $NMT_CHECKPOINT or the newest run's model,
    announced on stderr when it was not given."""
    from nmt import workspace

    choice = guarded(workspace.default_model, explicit)
    if explicit is None:
        display.notice(f"model: {choice.path} ({choice.why})")
    return choice.path


# --- prepare ---------------------------------------------------------------------------------
@app.command(epilog="Examples: [bold]nmt prepare wmt14-en-de[/]  ·  [bold]nmt prepare local "
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


# --- train -----------------------------------------------------------------------------------
# Preset-dependent defaults as `--help` shows them; tests/test_cli.py checks them against the
# recipes in nmt.train, so they cannot drift.
PRESET_DEFAULTS = {
    "max_steps": "base 100000, big 300000, small 20000, tiny 3000",
    "batch_tokens": "base/big 25000, small 8192, tiny 2048",
    "warmup": "base/big 4000, small 2000, tiny 400",
    "dropout": "base 0.1, big 0.3, small 0.3, tiny 0.1",
    "save_every": "base/big/small 1000, tiny 200",
}


def _by_preset(field: str) -> str:
    return f"[dim]\\[preset: {PRESET_DEFAULTS[field]}][/]"


@app.command(epilog="Examples: [bold]nmt train --preset base --gpus 8[/] (the paper's base "
                    "model on the prepared corpus in ./data)  ·  [bold]nmt train data/multi30k "
                    "--preset tiny --max-time 30m[/]  ·  run the same command again to resume")
def train(
    data: Annotated[Path | None, typer.Argument(
        help="Prepared data directory (from `nmt prepare`). Default: the one prepared corpus "
             "in ./data.", show_default=False)] = None,
    run: Annotated[Path | None, typer.Option(
        "--run", "-r", help="Run directory: train_config.json, metrics.jsonl, checkpoints/, "
                            "best/. Training resumes from its newest checkpoint. Default: "
                            "runs/<corpus>-<preset>.", show_default=False, rich_help_panel=DATA)
    ] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="JSON training config (e.g. a run's train_config.json); flags "
                         "override it.", show_default=False, rich_help_panel=DATA)] = None,
    preset: Annotated[Preset | None, typer.Option(
        "--preset", "-p", help="Model and recipe: base and big are the paper's. Default: base, "
                               "or the run's own config when resuming.",
        show_default=False, rich_help_panel=MODEL)] = None,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Fine-tune: a new run starts from this checkpoint's weights (new "
                            "optimizer and schedule; same architecture and vocabulary — prepare "
                            "new data with `nmt prepare ... --vocab-from CKPT`).",
        show_default=False, rich_help_panel=MODEL)] = None,
    dropout: Annotated[float | None, typer.Option(
        "--dropout", help=f"Dropout on sublayer outputs and embedding sums. "
                          f"{_by_preset('dropout')}", show_default=False, rich_help_panel=MODEL)
    ] = None,
    batch_tokens: Annotated[int | None, typer.Option(
        "--batch-tokens", help="Tokens per update summed over all GPUs, counted as the padded "
                               f"longer side of each pair. {_by_preset('batch_tokens')}",
        show_default=False, rich_help_panel=OPTIM)] = None,
    max_tokens_per_gpu: Annotated[int | None, typer.Option(
        "--max-tokens-per-gpu", help="Memory bound of one GPU's micro-batch; the update is "
                                     "split into accumulated micro-batches to respect it.",
        show_default=False, rich_help_panel=OPTIM)] = None,
    update_freq: Annotated[int | None, typer.Option(
        "--update-freq", help="Micro-batches accumulated per update (default: derived).",
        show_default=False, rich_help_panel=OPTIM)] = None,
    adam_betas: Annotated[str | None, typer.Option(
        "--adam-betas", help="Adam beta1,beta2 (paper: 0.9,0.98).", show_default=False,
        rich_help_panel=OPTIM)] = None,
    adam_eps: Annotated[float | None, typer.Option(
        "--adam-eps", help="Adam epsilon (paper: 1e-9).", show_default=False,
        rich_help_panel=OPTIM)] = None,
    weight_decay: Annotated[float | None, typer.Option(
        "--weight-decay", help="Adam L2 penalty (paper: 0).", show_default=False,
        rich_help_panel=OPTIM)] = None,
    clip_norm: Annotated[float | None, typer.Option(
        "--clip-norm", help="Clip the gradient norm to this (0: off, the paper).",
        show_default=False, rich_help_panel=OPTIM)] = None,
    label_smoothing: Annotated[float | None, typer.Option(
        "--label-smoothing", help="Label smoothing epsilon (paper: 0.1).", show_default=False,
        rich_help_panel=OPTIM)] = None,
    lr_schedule: Annotated[LrSchedule | None, typer.Option(
        "--lr-schedule", help="noam: the paper's d^-0.5 * min(step^-0.5, step * warmup^-1.5); "
                              "inverse_sqrt: fairseq's, warming up to --lr. [dim]\\[default: "
                              "noam][/]", show_default=False, rich_help_panel=SCHEDULE)] = None,
    lr: Annotated[float | None, typer.Option(
        "--lr", help="Peak learning rate (noam default: d_model^-0.5 * warmup^-0.5).",
        show_default=False, rich_help_panel=SCHEDULE)] = None,
    warmup: Annotated[int | None, typer.Option(
        "--warmup", help=f"Warmup updates. {_by_preset('warmup')}", show_default=False,
        rich_help_panel=SCHEDULE)] = None,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help=f"Updates to train. {_by_preset('max_steps')}", show_default=False,
        rich_help_panel=SCHEDULE)] = None,
    max_epochs: Annotated[int | None, typer.Option(
        "--max-epochs", help="Stop after this many epochs.", show_default=False,
        rich_help_panel=SCHEDULE)] = None,
    max_time: Annotated[str | None, typer.Option(
        "--max-time", help="Stop after this much training time, over resumes (3600, 90m, 2h).",
        show_default=False, rich_help_panel=SCHEDULE)] = None,
    patience: Annotated[int | None, typer.Option(
        "--patience", help="Stop after N validations without a better BLEU.",
        show_default=False, rich_help_panel=SCHEDULE)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", help="Seeds weights, dropout and data order. [dim]\\[default: 1][/]",
        show_default=False, rich_help_panel=SCHEDULE)] = None,
    save_every: Annotated[int | None, typer.Option(
        "--save-every", help=f"Checkpoint and validate every N updates. "
                             f"{_by_preset('save_every')}", show_default=False,
        rich_help_panel=CHECKPOINTS)] = None,
    epoch_checkpoints: Annotated[bool | None, typer.Option(
        "--epoch-checkpoints/--no-epoch-checkpoints", help="Also checkpoint at epoch ends.",
        show_default=False, rich_help_panel=CHECKPOINTS)] = None,
    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", help="Step checkpoints to keep. [dim]\\[default: 20][/]",
        show_default=False, rich_help_panel=CHECKPOINTS)] = None,
    valid_bleu_lines: Annotated[int | None, typer.Option(
        "--valid-bleu-lines", help="Validation lines decoded for BLEU (0: no BLEU; default: "
                                   "all, tiny: 200).", show_default=False,
        rich_help_panel=CHECKPOINTS)] = None,
    gpus: Annotated[int, typer.Option(
        "--gpus", "--nproc", help="Local worker processes, one per GPU (with --device cpu: CPU "
                                  "workers talking through gloo).", rich_help_panel=HARDWARE)
    ] = 1,
    device: Annotated[TrainDevice, typer.Option(
        "--device", help="Where to train.", rich_help_panel=HARDWARE)] = TrainDevice.auto,
    precision: Annotated[Precision | None, typer.Option(
        "--precision", help="auto: bf16 if the GPU has it, else fp16 with loss scaling; fp32 "
                            "on CPU.", show_default=False, rich_help_panel=HARDWARE)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads per worker (default: the cores shared among workers).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
    nnodes: Annotated[int, typer.Option("--nnodes", help="Machines taking part.",
                                        rich_help_panel=HARDWARE)] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This machine's index.",
                                           rich_help_panel=HARDWARE)] = 0,
    master_addr: Annotated[str, typer.Option(
        "--master-addr", help="Address of machine 0 (multi-node).", rich_help_panel=HARDWARE)
    ] = "127.0.0.1",
    master_port: Annotated[int | None, typer.Option(
        "--master-port", help="Rendezvous port (default: free port, or 29500 multi-node).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
    log_every: Annotated[int | None, typer.Option(
        "--log-every", help="Updates between metrics.jsonl records.", show_default=False,
        rich_help_panel=LOGGING)] = None,
    max_bad_steps: Annotated[int | None, typer.Option(
        "--max-bad-steps", help="NaN/inf losses in a row before stopping with an error.",
        show_default=False, rich_help_panel=LOGGING)] = None,
    tensorboard: Annotated[bool | None, typer.Option(
        "--tensorboard/--no-tensorboard", help="Write TensorBoard events to RUN/tensorboard.",
        show_default=False, rich_help_panel=LOGGING)] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Print every log record even with the live display.",
        rich_help_panel=LOGGING)] = False,
) -> None:
    """Train a Transformer with the paper's recipe; run it again to resume, bit for bit."""
    from nmt import train as train_stage
    from nmt.distributed import Launch

    flags = dict(batch_tokens=batch_tokens, max_tokens_per_gpu=max_tokens_per_gpu,
                 update_freq=update_freq, max_steps=max_steps, max_epochs=max_epochs,
                 max_time=max_time, lr_schedule=_value(lr_schedule), lr=lr, warmup=warmup,
                 adam_betas=adam_betas, adam_eps=adam_eps, weight_decay=weight_decay,
                 clip_norm=clip_norm, label_smoothing=label_smoothing, dropout=dropout,
                 precision=_value(precision), seed=seed, save_every=save_every,
                 save_epochs=epoch_checkpoints, keep_last=keep_last,
                 valid_bleu_lines=valid_bleu_lines, patience=patience, log_every=log_every,
                 max_bad_steps=max_bad_steps, tensorboard=tensorboard,
                 init_from=str(init_from) if init_from else None)
    launch = guarded(Launch, nproc=gpus, device=device.value, nnodes=nnodes,
                     node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                     threads=threads)
    result = guarded(train_stage.main, data=data, run=run, preset=_value(preset),
                     config_file=config,
                     overrides={k: v for k, v in flags.items() if v is not None}, launch=launch,
                     reporter=display.RichTrainReporter(verbose))
    if result is not None and result.rank == 0:
        display.train_summary(result)


# --- average ---------------------------------------------------------------------------------
@app.command(epilog="Examples: [bold]nmt average[/] (the newest run in ./runs into RUN/avg)  "
                    "·  [bold]nmt average runs/base --last 5 -o runs/base/avg[/]  ·  "
                    "[bold]nmt average ck1 ck2 ck3 -o avg[/]")
def average(
    checkpoints: Annotated[list[Path] | None, typer.Argument(
        help="Checkpoint directories to average, or one run directory. Default: the newest run "
             "in ./runs.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the averaged checkpoint (a directory). Default "
                               "for a run: RUN/avg.", show_default=False)] = None,
    last: Annotated[int | None, typer.Option(
        "--last", min=1, help="Average the N newest evenly spaced step checkpoints of the run "
                              "directory. Default: the paper's 5 (base) or 20 (big).",
        show_default=False)] = None,
) -> None:
    """Average the weights of the last N checkpoints of a run (or of listed checkpoints)."""
    from nmt import average as average_stage

    display.average_summary(guarded(average_stage.run, checkpoints or [], output=output,
                                    last=last))


# --- translate -------------------------------------------------------------------------------
@app.command(epilog="Examples: [bold]nmt translate -c runs/base/avg < newstest2014.en > "
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

    model = _model(checkpoint)

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
@app.command(epilog="Examples: [bold]nmt score hyp.de --ref newstest2014.de --min-bleu 26[/] "
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
                     min_bleu=min_bleu, min_chrf=min_chrf, source=source, examples=examples)
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


# --- export ----------------------------------------------------------------------------------
@app.command(epilog="Examples: [bold]nmt export runs/base/avg ct2/ --to ctranslate2 "
                    "--quantization int8[/]  ·  [bold]nmt export runs/base/avg marian/ --to hf[/]")
def export(
    paths: Annotated[list[Path], typer.Argument(
        help="[CHECKPOINT] OUT_DIR: the checkpoint (default: as `nmt translate` picks one) and "
             "the directory to write (written to a temporary name, then renamed).",
        show_default=False, metavar="[CHECKPOINT] OUT_DIR")],
    to: Annotated[ExportTarget, typer.Option(
        "--to", help="hf: a transformers MarianMTModel + MarianTokenizer directory; "
                     "ctranslate2: a CTranslate2 model directory.", show_default=False)],
    quantization: Annotated[Quantization | None, typer.Option(
        "--quantization", help="CTranslate2 weight type (default: as trained).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace OUT_DIR if it exists.")] = False,
) -> None:
    """Export a checkpoint for Hugging Face transformers or CTranslate2.

    Needs the optional `export` extra of nmt (transformers and ctranslate2).
    """
    from nmt import export as export_stage

    if len(paths) > 2:
        display.error("nmt export: give [CHECKPOINT] OUT_DIR, at most two paths")
        raise typer.Exit(2)
    checkpoint, out_dir = (_model(paths[0]), paths[1]) if len(paths) == 2 else (
        _model(None), paths[0])
    path = guarded(export_stage.run, checkpoint, out_dir, to=to.value,
                   quantization=_value(quantization), force=force)
    display.plain(f"exported {checkpoint} to {path} ({to.value}"
                  + (f", {quantization.value}" if quantization else "") + ")")


# --- info ------------------------------------------------------------------------------------
@app.command(epilog="Example: [bold]nmt info runs/base/avg[/]")
def info(
    checkpoint: Annotated[Path | None, typer.Argument(
        help="A checkpoint directory. Default: as `nmt translate` picks one.",
        show_default=False)] = None,
) -> None:
    """Describe a checkpoint: architecture, parameters, vocabulary, step and training data."""
    from nmt import info as info_stage

    display.info_table(guarded(info_stage.run, _model(checkpoint)))



# --- attention, plot, serve -------------------------------------------------------------------
class AttentionKind(StrEnum):
    cross = "cross"
    encoder = "encoder"
    decoder = "decoder"


class PlotAxis(StrEnum):
    step = "step"
    time = "time"


@app.command(epilog="Example: [bold]nmt attention \"The animal didn't cross the street because "
                    "it was too tired\" -o attention/[/] (the newest run's model)")
def attention(
    text: Annotated[str, typer.Argument(help="The sentence to translate.", show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", help="Directory for the PNG heatmaps (replaced whole).",
        show_default=False, rich_help_panel=IO)],
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory. Default: as `nmt translate` picks one.",
        show_default=False, rich_help_panel=MODEL)] = None,
    kind: Annotated[list[AttentionKind] | None, typer.Option(
        "--kind", help="cross (encoder-decoder), encoder or decoder (self-attention); "
                       "repeatable. Default: all three.", show_default=False,
        rich_help_panel="Selection")] = None,
    layer: Annotated[int | None, typer.Option(
        "--layer", min=1, help="Only this layer (from 1). Default: every layer.",
        show_default=False, rich_help_panel="Selection")] = None,
    head: Annotated[int | None, typer.Option(
        "--head", min=1, help="Only this head (from 1); the head mean is always drawn. "
                              "Default: every head.", show_default=False,
        rich_help_panel="Selection")] = None,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1, help="Beam size.",
                                      rich_help_panel=SEARCH)] = 4,
    alpha: Annotated[float, typer.Option("--lenpen", help="Length penalty alpha.",
                                         rich_help_panel=SEARCH)] = 0.6,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.",
                                        rich_help_panel=HARDWARE)] = "auto",
    precision: Annotated[Precision, typer.Option(
        "--precision", help="auto: fp32 on CPU, bf16/fp16 on GPU.", rich_help_panel=HARDWARE)
    ] = Precision.auto,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
) -> None:
    """Translate one sentence and draw its attention as PNG heatmaps (the `viz` extra).

    Per layer, per head and the head mean, for each kind, plus an overview grid; the weights are
    the model's own attention probabilities while it decoded the final hypothesis.
    """
    from nmt import heatmap
    from nmt.attention import KINDS
    from nmt.search import SearchConfig

    model = _model(checkpoint)
    kinds = tuple(k.value for k in kind) if kind else KINDS
    config = guarded(lambda: heatmap.AttentionConfig(
        checkpoint=model, text=text, out=out_dir, kinds=kinds, layer=layer, head=head,
        search=SearchConfig(beam=beam, alpha=alpha), device=device,
        precision=precision.value, threads=threads))
    result = guarded(heatmap.run, config)
    display.plain(result.maps.translation, stderr=False)
    display.plain(f"wrote {len(result.files)} images to {result.out} "
                  f"({result.out / 'overview.png'})")


@app.command(epilog="Examples: [bold]nmt plot runs/base -o curves.png[/]  ·  [bold]nmt plot "
                    "runs/a runs/b --x time[/] (overlaid, against wall-clock time)")
def plot(
    runs: Annotated[list[Path], typer.Argument(
        help="Run directories of `nmt train` (their metrics.jsonl); several are overlaid.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="PNG file to write.")] = Path("curves.png"),
    x: Annotated[PlotAxis, typer.Option(
        "--x", help="step (updates) or time (wall-clock seconds).")] = PlotAxis.step,
) -> None:
    """Plot training curves: loss, perplexity, learning rate, validation BLEU and tokens/s
    (the `viz` extra)."""
    from nmt import plot as plot_stage

    result = guarded(plot_stage.run, runs, output, x.value)
    display.plain(f"wrote {result.output}: {', '.join(result.panels)} for "
                  f"{len(result.runs)} run(s)")


@app.command(epilog="Example: [bold]nmt serve -c runs/base/avg --port 8080[/], then open "
                    "http://127.0.0.1:8080/ or POST {\"text\": [\"...\"]} to /translate")
def serve(
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory. Default: as `nmt translate` picks one.",
        show_default=False, rich_help_panel=MODEL)] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Address to listen on. Default: 127.0.0.1 (this machine only); "
                       "any other address must be given here explicitly.",
        show_default=False, rich_help_panel="Server")] = None,
    port: Annotated[int, typer.Option("--port", help="TCP port.",
                                      rich_help_panel="Server")] = 8080,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", help="How long a request waits to be batched with others.",
        rich_help_panel="Server")] = 5.0,
    max_queued_lines: Annotated[int, typer.Option(
        "--max-queued-lines", help="Lines waiting at most; beyond, requests get 503.",
        rich_help_panel="Server")] = 2048,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1,
                                      help="Default beam size of requests.",
                                      rich_help_panel=SEARCH)] = 4,
    alpha: Annotated[float, typer.Option("--lenpen", help="Default length penalty.",
                                         rich_help_panel=SEARCH)] = 0.6,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.",
                                        rich_help_panel=HARDWARE)] = "auto",
    precision: Annotated[TranslatePrecision, typer.Option(
        "--precision", help="auto: fp32 on CPU, bf16/fp16 on GPU; int8 on CPU.",
        rich_help_panel=HARDWARE)
    ] = TranslatePrecision.auto,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
) -> None:
    """Serve translations over HTTP with a web page (the `serve` extra); the model is loaded
    once and concurrent requests are batched together."""
    from nmt.serve import app as serve_app
    from nmt.serve.engine import Options

    model = _model(checkpoint)
    config = guarded(lambda: serve_app.ServeConfig(
        checkpoints=(model,), host=host or serve_app.LOOPBACK, port=port, device=device,
        precision=precision.value, threads=threads, max_wait_ms=max_wait_ms,
        max_queued_lines=max_queued_lines, defaults=Options(beam=beam, alpha=alpha)))
    guarded(serve_app.run, config, explicit_host=host is not None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
