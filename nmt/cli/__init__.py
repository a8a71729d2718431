"""The `nmt` command line: a thin Typer layer over the stage modules.

Each command parses its options (grouped into help panels; choices are enums so `--help` lists
them) and calls one function of the stage module named after it. What is shown to the user lives
in `nmt.display`; errors become one line and exit code 2 in `common.guarded`. The commands live
by stage: `data` (prepare), `training` (train, average), `translation` (translate, score),
`models` (export, info), `viz` (attention, plot, serve); each adds its own to `app`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from nmt import __version__, display, host
from nmt.cli import data, models, training, translation, viz


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
    host.keep_freed_memory()


for _commands in (data, training, translation, models, viz):
    _commands.register(app)
