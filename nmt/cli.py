"""The `nmt` command line: a thin Typer layer over the stage modules.

Each command parses its options and calls one function of the stage module named after it.
Rich output, exit codes and the one-line rendering of errors live here and nowhere else.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
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
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
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


def _not_yet(command: str) -> None:
    console.print(f"[yellow]nmt {command}: not implemented yet[/]")
    raise typer.Exit(1)


# --- prepare ---------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def prepare(ctx: typer.Context) -> None:
    """Download or read a parallel corpus, clean it, train joint SentencePiece, binarize."""
    _not_yet("prepare")


# --- train -----------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context) -> None:
    """Train a Transformer on prepared data (resumes automatically from the run directory)."""
    _not_yet("train")


# --- average ---------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def average(ctx: typer.Context) -> None:
    """Average the weights of the last N checkpoints of a run (or of listed checkpoints)."""
    _not_yet("average")


# --- translate -------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def translate(ctx: typer.Context) -> None:
    """Translate text from stdin or a file with beam search; raw text in, raw text out."""
    _not_yet("translate")


# --- score -----------------------------------------------------------------------------------
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def score(ctx: typer.Context) -> None:
    """Score a translation against references with sacreBLEU (BLEU, chrF, TER)."""
    _not_yet("score")


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
