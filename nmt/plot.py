"""`nmt plot`: training curves of one or more run directories, as one PNG.

Reads the `metrics.jsonl` of each run (records of kind "train" and "valid", see `nmt train`)
and draws, against update steps or wall-clock time: training and validation loss, perplexity,
the learning rate (warm-up visible), validation BLEU and training tokens/s. Runs are overlaid,
one colour each, with a legend. matplotlib (the `viz` extra) is imported only when drawing.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nmt.errors import ConfigError, DataError
from nmt.train import rundir

log = logging.getLogger(__name__)

# The metrics file of a run directory. Its owner is the training stage; this is the one place
# `nmt plot` names it.
X_AXES = ("step", "time")


@dataclass
class RunCurves:
    """The records of one run, split by kind and sorted by step."""

    name: str  # legend label
    train: list[dict] = field(default_factory=list)
    valid: list[dict] = field(default_factory=list)

    def time_at(self, step: int) -> float | None:
        """Wall-clock seconds at `step`, interpolated between training records."""
        timed = [(r["step"], r["time"]) for r in self.train if "time" in r]
        if not timed:
            return None
        for (s0, t0), (s1, t1) in zip(timed, timed[1:], strict=False):
            if s0 <= step <= s1:
                return t0 + (t1 - t0) * (step - s0) / max(s1 - s0, 1)
        first, last = timed[0], timed[-1]
        if step <= first[0]:
            return first[1] * step / max(first[0], 1)
        return last[1] * step / max(last[0], 1)


def read_run(run: Path, name: str | None = None) -> RunCurves:
    """The train and valid records of `run`/metrics.jsonl; a torn last line is skipped."""
    path = rundir.metrics_path(Path(run))
    try:
        # a line with bytes that are not UTF-8 is damaged: it fails to parse and is skipped
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        raise DataError(f"no {rundir.METRICS}: not a run directory of `nmt train`",
                        where=str(run)) from None
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", where=str(path)) from None
    curves = RunCurves(name=name or Path(run).resolve().name)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind, step = record["kind"], record["step"]
            if not _is_record(record):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("%s:%d: not a metrics record, skipped", path, number)
            continue
        if kind in ("train", "valid"):
            record["step"] = step
            getattr(curves, kind).append(record)
    if not curves.train and not curves.valid:
        raise DataError("no training or validation records yet", where=str(path))
    curves.train.sort(key=lambda r: r["step"])
    curves.valid.sort(key=lambda r: r["step"])
    return curves


def _is_record(record: dict) -> bool:
    """A step of 0 or more, and every field a panel or an axis reads a number (or null)."""
    step = record["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return False
    read = {name for _, fields, _ in PANELS for _, name in fields} | {"time", "epoch"}
    return all(record.get(name) is None
               or (isinstance(record[name], int | float) and not isinstance(record[name], bool))
               for name in read)


def _labels(runs: Sequence[Path]) -> list[str]:
    """Directory names, or fuller paths where two runs share a name."""
    names = [Path(r).resolve().name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r) for r in runs]


# (panel title, record kind, field, log scale)
PANELS = (
    ("loss", (("train", "loss"), ("valid", "loss")), False),
    ("perplexity", (("train", "ppl"), ("valid", "ppl")), True),
    ("learning rate", (("train", "lr"),), False),
    ("validation BLEU", (("valid", "bleu"),), False),
    ("tokens/s (training)", (("train", "tokens_per_s"),), False),
)


def draw(curves: Sequence[RunCurves], x: str = "step") -> tuple[bytes, list[str]]:
    """PNG bytes of the curves, and the titles of the panels that have data."""
    if x not in X_AXES:
        raise ConfigError(f"unknown x axis {x!r}; choose one of {', '.join(X_AXES)}")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("drawing needs matplotlib: install nmt's `viz` extra "
                          "(pip install 'nmt[viz]')") from None
    fig = Figure(figsize=(15, 8.5))
    axes = fig.subplots(2, 3).flatten()
    colours = [f"C{i % 10}" for i in range(len(curves))]
    drawn = []
    for ax, (title, series, log_scale) in zip(axes, PANELS, strict=False):
        has_data = False
        for run, colour in zip(curves, colours, strict=True):
            for kind, key in series:
                records = [r for r in getattr(run, kind) if r.get(key) is not None]
                if not records:
                    continue
                xs = [r["step"] if x == "step" else (r.get("time") if kind == "train"
                                                      else run.time_at(r["step"]))
                      for r in records]
                points = [(a, r[key]) for a, r in zip(xs, records, strict=True) if a is not None]
                if not points:
                    continue
                label = f"{run.name} ({kind})" if len(series) > 1 else run.name
                style = dict(linestyle="-", linewidth=1.2) if kind == "train" else dict(
                    linestyle="--", marker="o", markersize=3, linewidth=1.2)
                ax.plot(*zip(*points, strict=True), color=colour, label=label, **style)
                has_data = True
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("update step" if x == "step" else "wall-clock seconds", fontsize=9)
        ax.grid(True, alpha=0.3)
        if has_data:
            drawn.append(title)
            if log_scale:
                ax.set_yscale("log")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
    axes[-1].set_axis_off()
    fig.suptitle(", ".join(run.name for run in curves), fontsize=12)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue(), drawn


@dataclass
class PlotResult:
    output: Path
    runs: list[RunCurves]
    panels: list[str]  # the panels that have data


def run(runs: Sequence[Path], output: Path, x: str = "step") -> PlotResult:
    """Draw the curves of `runs` into `output` (a PNG, written atomically)."""
    from nmt import files

    if not runs:
        raise ConfigError("name at least one run directory")
    curves = [read_run(r, name) for r, name in zip(runs, _labels(runs), strict=True)]
    png, panels = draw(curves, x)
    files.write_bytes(output, png)
    return PlotResult(output=Path(output), runs=curves, panels=panels)
