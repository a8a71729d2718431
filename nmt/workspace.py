"""The working directory as a workspace: `data/` holds prepared corpora, `runs/` training runs.

So the user's own words work as written: `nmt prepare wmt14-en-de` writes `data/wmt14-en-de`,
`nmt train --preset base` finds it and trains into `runs/wmt14-en-de-base`, `nmt average`
averages the newest run into `RUN/avg`, and `nmt translate < input.txt` uses that model. Every
default is announced by the caller, and every missing piece is one line saying how to get it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nmt.errors import NmtError

DATA_DIR = "data"  # prepared corpora: data/<corpus>/ (written by `nmt prepare`)
RUNS_DIR = "runs"  # training runs: runs/<corpus>-<preset>/ (written by `nmt train`)
AVERAGE_DIR = "avg"  # where `nmt average` writes a run's averaged model: RUN/avg
CHECKPOINT_ENV = "NMT_CHECKPOINT"  # the model `translate`, `export`, `info` use without -c
MANIFEST = "manifest.json"  # marks a prepared corpus (owned by nmt.data; checked here only)


class WorkspaceError(NmtError):
    """A default cannot be chosen: nothing (or too much) to choose from."""


@dataclass(frozen=True)
class Choice:
    path: Path  # what was chosen
    why: str  # how, for the one line the CLI prints ("newest run in ./runs", ...)


def prepared_corpora(root: Path | None = None) -> list[Path]:
    """Prepared corpus directories under `root/data`, by name."""
    base = (root or Path.cwd()) / DATA_DIR
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())


def default_data(root: Path | None = None) -> Choice:
    """The one prepared corpus in ./data, or a one-line error saying what to do."""
    found = prepared_corpora(root)
    if len(found) == 1:
        return Choice(Path(DATA_DIR) / found[0].name, f"the prepared corpus in ./{DATA_DIR}")
    if not found:
        raise WorkspaceError(f"no prepared corpus in ./{DATA_DIR}: run `nmt prepare NAME` first "
                             "(see `nmt prepare --list`), or name a data directory")
    names = ", ".join(f"{DATA_DIR}/{p.name}" for p in found)
    raise WorkspaceError(f"several prepared corpora in ./{DATA_DIR} ({names}): name one, "
                         f"e.g. `nmt train {DATA_DIR}/{found[0].name}`")


def default_run(data: Path, preset: str) -> Path:
    """Where a run on `data` with `preset` goes when --run is not given."""
    return Path(RUNS_DIR) / f"{Path(data).resolve().name}-{preset}"


def _run_time(run: Path) -> float:
    """When a run last wrote something: its metrics file or newest checkpoint."""
    from nmt.train import rundir

    found = [rundir.metrics_path(run), *(p for _, p in rundir.checkpoints(run)[-1:])]
    stamps = [p.stat().st_mtime for p in found if p.exists()]
    return max(stamps, default=run.stat().st_mtime)


def _is_run(path: Path) -> bool:
    from nmt.train import rundir

    return (rundir.existing_config(path) is not None or rundir.metrics_path(path).is_file()
            or bool(rundir.checkpoints(path)) or model_of_run(path) is not None)


def runs(root: Path | None = None) -> list[Path]:
    """Run directories under `root/runs` (those holding checkpoints or metrics), newest last."""
    base = (root or Path.cwd()) / RUNS_DIR
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
             and _is_run(p)]
    return sorted(found, key=lambda p: (_run_time(p), p.name))


def newest_run(root: Path | None = None) -> Choice:
    found = runs(root)
    if not found:
        raise WorkspaceError(f"no training run in ./{RUNS_DIR}: train one with `nmt train`, or "
                             "name a run directory")
    newest = found[-1]
    return Choice(Path(RUNS_DIR) / newest.name, f"the newest run in ./{RUNS_DIR}")


def model_of_run(run: Path) -> Path | None:
    """A run's best model for translation: its average, else best/, else newest checkpoint."""
    from nmt.checkpoint import META
    from nmt.train import rundir

    for candidate in (run / AVERAGE_DIR, rundir.best_path(run)):
        if (candidate / META).is_file():
            return candidate
    newest = rundir.checkpoints(run)
    return newest[-1][1] if newest else None


def default_model(explicit: Path | None, root: Path | None = None) -> Choice:
    """The model to use: -c, then $NMT_CHECKPOINT, then the newest run in ./runs."""
    if explicit is not None:
        return Choice(Path(explicit), "-c")
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return Choice(Path(env), f"${CHECKPOINT_ENV}")
    found = runs(root)
    for run in reversed(found):
        model = model_of_run(run)
        if model is not None:
            rel = Path(RUNS_DIR) / run.name / model.relative_to(run)
            return Choice(rel, f"the newest run in ./{RUNS_DIR}")
    raise WorkspaceError(f"no model: pass -c CHECKPOINT, set {CHECKPOINT_ENV}, or train one "
                         f"into ./{RUNS_DIR} with `nmt train` (after `nmt prepare NAME`)")
