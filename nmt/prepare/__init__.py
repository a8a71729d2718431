"""`nmt prepare`: raw parallel text in, everything `nmt train` needs out (format: nmt/data.py).

Stages, each skipped when its outputs exist and were made from the same input and settings
(recorded in `stages.json`); `force` redoes them all:

1. clean (`clean.py`): stream the training pairs, collapse whitespace, drop pairs with an empty
   side (and undecodable or duplicate ones when asked); copy validation and test text unfiltered
   to `{split}.raw.{lang}`. Writes `train.clean.{lang}`.
2. spm (`spm.py`): train one joint SentencePiece BPE model on a bounded random sample of both
   sides.
3. encode (`encode.py`): worker processes encode chunks of lines with SentencePiece; the main
   process appends the id arrays to the memory-mapped `{split}.{lang}.bin` files and their
   offsets. Training pairs too long or with too high a length ratio are dropped here.

Then `manifest.json` (`manifest.py`). All writes go to a staging directory next to the output
directory (`.NAME.partial`, `staging.py`), into which finished stages found in the output
directory are hard-linked; on success the staging directory replaces the output directory. A
failed or interrupted run therefore never damages a finished one, and the next run resumes from
the staging directory. The settings are `config.PrepareConfig`; `pipeline.run` runs it all.
"""

from nmt.prepare.config import (
    LARGE_VOCAB_SIZE,
    MIN_VOCAB_SIZE,
    SMALL_CORPUS_PAIRS,
    SMALL_VOCAB_SIZE,
    PrepareConfig,
)
from nmt.prepare.pipeline import PrepareSummary, list_corpora, run
from nmt.prepare.staging import STATE_FILE, StageReport
from nmt.progress import ProgressSink
from nmt.vocab import SPM_FILE

__all__ = [
    "LARGE_VOCAB_SIZE", "MIN_VOCAB_SIZE", "SMALL_CORPUS_PAIRS", "SMALL_VOCAB_SIZE", "SPM_FILE",
    "STATE_FILE", "PrepareConfig", "PrepareSummary", "ProgressSink", "StageReport",
    "list_corpora", "run",
]
