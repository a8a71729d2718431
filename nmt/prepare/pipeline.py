"""`nmt prepare`'s entry point: the three stages in order, or nothing when all are up to date."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmt import corpora, files, workspace
from nmt.data import check_manifest
from nmt.errors import DataError
from nmt.prepare import encode
from nmt.prepare.clean import clean_stage
from nmt.prepare.config import (
    PrepareConfig,
    source_of,
    validate,
    vocab_size_of,
)
from nmt.prepare.manifest import build_manifest
from nmt.prepare.spm import spm_stage
from nmt.prepare.staging import (
    MANIFEST_FILE,
    Keys,
    StageReport,
    Workspace,
    check_output_dir,
    read_state,
    record_ok,
    write_json,
)
from nmt.progress import NoProgress, ProgressSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareSummary:
    """The result of `run`: the output directory, its manifest and the stage reports."""

    out: Path
    manifest: dict[str, Any]
    stages: tuple[StageReport, ...]

    @property
    def up_to_date(self) -> bool:
        """True when every stage was skipped and nothing was written."""
        return not any(stage.ran for stage in self.stages)


def list_corpora() -> list[corpora.CorpusSpec]:
    """The named corpora `nmt prepare NAME` knows."""
    return list(corpora.CORPORA.values())


def run(config: PrepareConfig, progress: ProgressSink | None = None) -> PrepareSummary:
    """Prepare `config.corpus`; returns what was written (or found up to date)."""
    progress = progress or NoProgress()
    validate(config)
    source = source_of(config)
    out = Path(config.out) if config.out else Path(workspace.DATA_DIR) / source.name
    with files.output_lock(out, "the prepared data directory"):
        return _prepare(config, source, out, progress)


def _prepare(config: PrepareConfig, source: corpora.Source, out: Path,
             progress: ProgressSink) -> PrepareSummary:
    header = {"corpus": source.name, "src_lang": source.src, "tgt_lang": source.tgt}
    check_output_dir(out, header)
    if not config.force:
        done = _up_to_date(out, source, config)
        if done is not None:
            log.info("%s is up to date; nothing to do (--force redoes it)", out)
            return done
    ws = Workspace(out, header, force=config.force)
    try:
        reports, manifest = _run_stages(ws, source, config, progress)
        ws.publish()
    except OSError as exc:  # a full disk, a read-only file system: name the output
        progress.stop()
        written = files.tree_size(ws.dir) if ws.dir.exists() else 0
        ws.abandon()
        raise files.os_failure(exc, exc.filename or out, needed=written, at_least=True) from None
    except BaseException:
        progress.stop()
        ws.abandon()
        raise
    log.info("prepared %s in %s", source.name, out)
    return PrepareSummary(out=out, manifest=manifest, stages=tuple(reports))


def _run_stages(ws: Workspace, source: corpora.Source, config: PrepareConfig,
                progress: ProgressSink) -> tuple[list[StageReport], dict[str, Any]]:
    keys = Keys(source, config)
    clean, report_clean = ws.stage("clean", keys.clean(),
                                   lambda: clean_stage(ws, source, config, progress))
    vocab_size = vocab_size_of(config, source, clean["train"]["pairs"])
    spm, report_spm = ws.stage("spm", keys.spm(vocab_size),
                               lambda: spm_stage(ws, config, source, clean, vocab_size, progress))
    encoded, report_encode = ws.stage("encode", keys.encode(spm["sha256"]),
                                      lambda: encode.encode_stage(ws, config, source, clean, spm,
                                                                  progress))
    manifest = build_manifest(source, config, clean, spm, encoded)
    write_json(ws.path(MANIFEST_FILE), manifest)
    return [report_clean, report_spm, report_encode], manifest


def _up_to_date(out: Path, source: corpora.Source, c: PrepareConfig) -> PrepareSummary | None:
    """The summary of `out` when all its stages match this config, else None."""
    stages = read_state(out).get("stages", {})
    keys = Keys(source, c)
    clean = stages.get("clean")
    if not record_ok(out, "clean", clean, keys.clean()):
        return None
    spm = stages.get("spm")
    vocab_size = vocab_size_of(c, source, clean["result"]["train"]["pairs"])
    if not record_ok(out, "spm", spm, keys.spm(vocab_size)):
        return None
    if not record_ok(out, "encode", stages.get("encode"), keys.encode(spm["result"]["sha256"])):
        return None
    try:
        manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
        check_manifest(manifest, where=str(out / MANIFEST_FILE))
    except (OSError, ValueError, DataError):
        return None  # damaged: written again from the stage records
    reports = tuple(StageReport(name, False, 0.0, 0) for name in ("clean", "spm", "encode"))
    return PrepareSummary(out=out, manifest=manifest, stages=reports)
