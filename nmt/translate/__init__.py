"""`nmt translate`: raw text in, detokenized translations out, one line per input line.

Input is read as bytes in chunks of `buffer_lines` lines, so memory does not grow with the input
and the translations of each chunk are flushed before the next is read (the command can sit in
a pipe). Within a chunk, sentences are encoded with the checkpoint's own SentencePiece model,
sorted by length and cut into batches of at most `batch_tokens` padded source tokens (each
line counted once per beam, as it takes that many decoder rows); every batch is searched at
once (see `nmt.search`), and the results are written back in input order.

One bad line never stops the run: undecodable bytes are replaced, over-long lines are
truncated, and a line whose search fails gets an empty translation; each with a warning that
names the line.

One module per concept:

- `config`: `TranslateConfig` (the options) and `TranslateStats` (what a run did);
- `models`: the device, the precision, loading the checkpoints and int8 quantization;
- `streams`: input read in chunks of lines, output to stdout or an atomically replaced file;
- `batching`: lines as source ids, cut into batches under the token budget;
- `translator`: the search of one batch, its alignments, and the line-by-line fallback;
- `output`: a line's text, n-best or jsonl output;
- `runner`: `run`, and `run_ctranslate2` for an `nmt export --to ctranslate2` directory.

The names below are the package's public API; each is defined in the module named.
"""

from nmt.translate.batching import Aligned, Line, decoder_rows, encode_chunk, make_batches
from nmt.translate.config import (
    ENGINES,
    OUTPUT_FORMATS,
    TRANSLATE_PRECISIONS,
    TranslateConfig,
    TranslateStats,
)
from nmt.translate.models import load_models, quantize_int8, resolve_device, resolve_dtype
from nmt.translate.output import clean, format_line
from nmt.translate.runner import run, run_ctranslate2
from nmt.translate.streams import open_input, open_output, read_chunks
from nmt.translate.translator import Translator

__all__ = [
    "ENGINES", "OUTPUT_FORMATS", "TRANSLATE_PRECISIONS", "Aligned", "Line", "TranslateConfig",
    "TranslateStats", "Translator", "clean", "decoder_rows", "encode_chunk", "format_line",
    "load_models", "make_batches", "open_input", "open_output", "quantize_int8", "read_chunks",
    "resolve_device", "resolve_dtype", "run", "run_ctranslate2",
]
