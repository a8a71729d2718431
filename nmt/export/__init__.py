"""`nmt export`: a checkpoint for other runtimes, Hugging Face transformers and CTranslate2.

- `--to hf` (`marian.py`): a `MarianMTModel` directory with its `MarianTokenizer`, verified
  against our logits before it is published.
- `--to ctranslate2` (`ctranslate2.py`): a CTranslate2 model built from a `TransformerSpec`,
  optionally quantized; `ct2_engine.py` is the runtime `nmt translate --engine ctranslate2`
  uses to run it.

Both directories carry `spm.model` and `nmt_export.json` (`layout.py`). Outputs are written to a
temporary sibling and published in one step, so a failed export never damages an existing one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nmt import files
from nmt.checkpoint import load_checkpoint
from nmt.errors import ConfigError
from nmt.export import ctranslate2, marian
from nmt.export.ct2_engine import CTranslate2Engine, ctranslate2_sources, translate_ctranslate2
from nmt.export.ctranslate2 import QUANTIZATIONS
from nmt.export.layout import (
    EXPORT_META,
    EXTRA_HINT,
    SPM,
    read_export_meta,
    require_package,
    staging,
    write_export_meta,
)

log = logging.getLogger(__name__)

TARGETS = ("hf", "ctranslate2")

__all__ = [
    "EXPORT_META", "EXTRA_HINT", "QUANTIZATIONS", "SPM", "TARGETS", "CTranslate2Engine",
    "ctranslate2_sources", "read_export_meta", "require_package", "run", "staging",
    "translate_ctranslate2", "write_export_meta",
]


def run(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, *, to: str,
        quantization: str | None = None, force: bool = False) -> Path:
    """Export `checkpoint` to `out_dir` for the runtime `to` ("hf" or "ctranslate2")."""
    if to not in TARGETS:
        raise ConfigError(f"unknown export target {to!r}; choose one of {', '.join(TARGETS)}")
    if quantization is not None and to != "ctranslate2":
        raise ConfigError("--quantization applies to --to ctranslate2 only")
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantization!r}; choose one of "
                          f"{', '.join(QUANTIZATIONS)}")
    require_package("transformers" if to == "hf" else "ctranslate2", to)
    ckpt = load_checkpoint(checkpoint)
    if to == "hf":
        marian.check_marian(ckpt.config)
    out = Path(out_dir)
    if out.resolve() == ckpt.path.resolve() or out.resolve() in ckpt.path.resolve().parents:
        raise ConfigError("the output directory holds the checkpoint", where=str(out))
    with files.output_lock(out, "the export"), staging(out, force=force) as tmp:
        if to == "hf":
            marian.write_hf(ckpt, tmp)
        else:
            ctranslate2.write_ctranslate2(ckpt, tmp, quantization=quantization)
        write_export_meta(ckpt, tmp, target=to, quantization=quantization)
    log.debug("exported %s to %s (%s)", ckpt.path, out, to)
    return out
