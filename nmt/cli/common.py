"""What every `nmt` command shares: the choices its options offer (enums, so `--help` lists
them), the help panels, `guarded` (a failure becomes one line and exit code 2) and the default
model of the workspace."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum, StrEnum
from pathlib import Path
from typing import TypeVar

import typer

from nmt import display
from nmt.errors import NmtError

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


class BestMetric(StrEnum):
    bleu = "bleu"
    loss = "loss"


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


class AttentionKind(StrEnum):
    cross = "cross"
    encoder = "encoder"
    decoder = "decoder"


class PlotAxis(StrEnum):
    step = "step"
    time = "time"


def value(choice: Enum | None) -> str | None:
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


def model_path(explicit: Path | None) -> Path:
    """The checkpoint a command uses: `explicit`, $NMT_CHECKPOINT or the newest run's model,
    announced on stderr when it was not given."""
    from nmt import workspace

    choice = guarded(workspace.default_model, explicit)
    if explicit is None:
        display.notice(f"model: {choice.path} ({choice.why})")
    return choice.path
