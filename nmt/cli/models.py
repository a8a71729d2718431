"""`nmt export` and `nmt info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt import display
from nmt.cli.common import (
    ExportTarget,
    Quantization,
    guarded,
    model_path,
    value,
)

# --- export ----------------------------------------------------------------------------------
EXPORT_EXAMPLES = ("Examples: [bold]nmt export runs/base/avg ct2/ --to ctranslate2 "
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
    checkpoint, out_dir = (model_path(paths[0]), paths[1]) if len(paths) == 2 else (
        model_path(None), paths[0])
    path = guarded(export_stage.run, checkpoint, out_dir, to=to.value,
                   quantization=value(quantization), force=force)
    display.plain(f"exported {checkpoint} to {path} ({to.value}"
                  + (f", {quantization.value}" if quantization else "") + ")")


# --- info ------------------------------------------------------------------------------------
INFO_EXAMPLES = ("Example: [bold]nmt info runs/base/avg[/]")


def info(
    checkpoint: Annotated[Path | None, typer.Argument(
        help="A checkpoint directory. Default: as `nmt translate` picks one.",
        show_default=False)] = None,
) -> None:
    """Describe a checkpoint: architecture, parameters, vocabulary, step and training data."""
    from nmt import info as info_stage

    display.info_table(guarded(info_stage.run, model_path(checkpoint)))



def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(epilog=EXPORT_EXAMPLES)(export)
    app.command(epilog=INFO_EXAMPLES)(info)
