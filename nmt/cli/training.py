"""`nmt train` and `nmt average`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt import display
from nmt.cli.common import (
    CHECKPOINTS,
    DATA,
    HARDWARE,
    LOGGING,
    MODEL,
    OPTIM,
    SCHEDULE,
    BestMetric,
    LrSchedule,
    Precision,
    Preset,
    TrainDevice,
    guarded,
    value,
)
from nmt.launcher import Launch

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


TRAIN_EXAMPLES = ("Examples: [bold]nmt train --preset base --gpus 8[/] (the paper's base "
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
        "--patience", help="Stop after N validations without a better --best-metric.",
        show_default=False, rich_help_panel=SCHEDULE)] = None,
    best_metric: Annotated[BestMetric | None, typer.Option(
        "--best-metric", help="What best/ and --patience follow: greedy validation BLEU, or "
        "the validation loss (fairseq's default). [dim]\\[default: bleu][/]",
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
    rendezvous_timeout: Annotated[float, typer.Option(
        "--rendezvous-timeout", help="Seconds for the workers of every node to join; then the "
                                     "ones missing are named and all stop.",
        rich_help_panel=HARDWARE)] = Launch.rendezvous_timeout,
    peer_timeout: Annotated[float, typer.Option(
        "--peer-timeout", help="Seconds without a worker's heartbeat before it counts as lost "
                               "and every other one stops, naming it and the checkpoint to "
                               "resume from.", rich_help_panel=HARDWARE)] = Launch.peer_timeout,
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

    flags = dict(batch_tokens=batch_tokens, max_tokens_per_gpu=max_tokens_per_gpu,
                 update_freq=update_freq, max_steps=max_steps, max_epochs=max_epochs,
                 max_time=max_time, lr_schedule=value(lr_schedule), lr=lr, warmup=warmup,
                 adam_betas=adam_betas, adam_eps=adam_eps, weight_decay=weight_decay,
                 clip_norm=clip_norm, label_smoothing=label_smoothing, dropout=dropout,
                 precision=value(precision), seed=seed, save_every=save_every,
                 save_epochs=epoch_checkpoints, keep_last=keep_last,
                 valid_bleu_lines=valid_bleu_lines, patience=patience,
                 best_metric=value(best_metric), log_every=log_every,
                 max_bad_steps=max_bad_steps, tensorboard=tensorboard,
                 init_from=str(init_from) if init_from else None)
    launch = guarded(Launch, nproc=gpus, device=device.value, nnodes=nnodes,
                     node_rank=node_rank, master_addr=master_addr, master_port=master_port,
                     threads=threads, rendezvous_timeout=rendezvous_timeout,
                     peer_timeout=peer_timeout)
    result = guarded(train_stage.main, data=data, run=run, preset=value(preset),
                     config_file=config,
                     overrides={k: v for k, v in flags.items() if v is not None}, launch=launch,
                     reporter=display.RichTrainReporter(verbose))
    if result is not None and result.rank == 0:
        display.train_summary(result)


# --- average ---------------------------------------------------------------------------------
AVERAGE_EXAMPLES = ("Examples: [bold]nmt average[/] (the newest run in ./runs into RUN/avg)  "
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
        "--last", min=1, help="Average the N newest checkpoints of the run directory's regular "
                              "cadence: the --save-every grid, or the epoch ends where those "
                              "are more; stop checkpoints are left out. Default: the paper's 5 "
                              "(base) or 20 (big).",
        show_default=False)] = None,
) -> None:
    """Average the weights of the last N checkpoints of a run (or of listed checkpoints)."""
    from nmt import average as average_stage

    display.average_summary(guarded(average_stage.run, checkpoints or [], output=output,
                                    last=last))



def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(epilog=TRAIN_EXAMPLES)(train)
    app.command(epilog=AVERAGE_EXAMPLES)(average)
