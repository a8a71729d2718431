"""`nmt translate --precision int8` against fp32: speed, BLEU, identical lines; and what
quantizing the (embedding-tied) output projection does.

    python benchmarks/int8_check.py --checkpoint CKPT --threads 1 --repeat 2
    python benchmarks/int8_check.py --checkpoint CKPT --newstest --limit 300
    python benchmarks/int8_check.py --checkpoint CKPT --src SRC --ref REF --tokenized-lc

BLEU is sacreBLEU's default; with --tokenized-lc it is `nmt score --lowercase --moses-bleu`
(for models trained on lowercased, Moses-tokenized text, as the Multi30k reference recipe's).

Variants, alternated and timed in CPU seconds of this process (model loading excluded; at one
thread the work done, whatever else a shared machine runs), best of --repeat:
  fp32        the checkpoint as trained
  int8        every nn.Linear dynamically quantized (`nmt.translate.quantize_int8`): the CLI's
  int8-keep-output  every nn.Linear but the output projection (tied to the embeddings) quantized
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import sacrebleu
import torch

from nmt import score, translate
from nmt.search import SearchConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared beside the repo


def keep_output(model: torch.nn.Module) -> torch.nn.Module:
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {name: per_channel_dynamic_qconfig for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name != "output"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def run(ckpt: Path, lines: list[str], variant: str, beam: int, alpha: float, threads: int):
    # swapped where `load_models` looks it up (nmt.translate.models), not on the package
    original = translate.models.quantize_int8
    if variant == "int8-keep-output":
        translate.models.quantize_int8 = keep_output
    try:
        out = io.StringIO()
        config = translate.TranslateConfig(
            checkpoints=(ckpt,), device="cpu", threads=threads,
            precision="fp32" if variant == "fp32" else "int8",
            search=SearchConfig(beam=beam, alpha=alpha, lenpen_style="fairseq"))
        data = io.BytesIO(("\n".join(lines) + "\n").encode())
        t = time.process_time()
        translate.run(config, stdin=io.BytesIO(b"\n"), stdout=io.StringIO())  # the loader
        load = time.process_time() - t
        t = time.process_time()
        stats = translate.run(config, stdin=data, stdout=out)
        return time.process_time() - t - load, stats.tokens, out.getvalue().splitlines()
    finally:
        translate.models.quantize_int8 = original


def bleu(hyps: list[str], refs: list[str], ref_path: Path, tokenized_lc: bool) -> float:
    if not tokenized_lc:
        return sacrebleu.corpus_bleu(hyps, [refs]).score
    with tempfile.TemporaryDirectory() as tmp:  # nmt score reads files; --limit cuts the refs
        hyp, ref = Path(tmp) / "hyp", Path(tmp) / f"ref{ref_path.suffix}"  # suffix: language
        hyp.write_text("".join(line + "\n" for line in hyps), encoding="utf-8")
        ref.write_text("".join(line + "\n" for line in refs), encoding="utf-8")
        report = score.run(hyp, [ref], lowercase=True, moses_bleu=True)
    return report.scores[0].score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--newstest", action="store_true")
    parser.add_argument("--src", type=Path, help="source lines (default: Multi30k test 2016)")
    parser.add_argument("--ref", type=Path, help="reference lines (default: SRC with .de)")
    parser.add_argument("--tokenized-lc", action="store_true",
                        help="score as nmt score --lowercase --moses-bleu")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--beams", type=int, nargs="+", default=[4, 1])
    parser.add_argument("--alpha", type=float, default=0.6, help="fairseq-style length penalty")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--variants", nargs="+",
                        default=["fp32", "int8", "int8-keep-output"])
    args = parser.parse_args(argv)
    src = args.src or (SHARED / "wmt" / "newstest2014.en" if args.newstest
                       else SHARED / "multi30k" / "test_2016_flickr.en")
    ref_path = args.ref or src.with_suffix(".de")
    lines = src.read_text(encoding="utf-8").splitlines()[:args.limit]
    refs = ref_path.read_text(encoding="utf-8").splitlines()[:args.limit]
    print(f"{src.name}, {len(lines)} lines, {args.checkpoint}, {args.threads} thread(s), "
          f"CPU seconds, best of {args.repeat}\n")
    print("| variant | beam | CPU s | tokens/s | vs fp32 | BLEU | BLEU - fp32 | lines = fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for beam in args.beams:
        best: dict[str, tuple] = {}
        for _ in range(args.repeat):
            for v in args.variants:
                r = run(args.checkpoint, lines, v, beam, args.alpha, args.threads)
                if v not in best or r[0] < best[v][0]:
                    best[v] = r
        base_s, base_tok, base_out = best["fp32"]
        base_bleu = bleu(base_out, refs, ref_path, args.tokenized_lc)
        for v in args.variants:
            secs, tok, out = best[v]
            v_bleu = bleu(out, refs, ref_path, args.tokenized_lc)
            same = sum(a == b for a, b in zip(out, base_out, strict=True)) / len(lines)
            print(f"| {v} | {beam} | {secs:.2f} | {tok / secs:,.0f} | "
                  f"{(tok / secs) / (base_tok / base_s):.2f}x | {v_bleu:.2f} | "
                  f"{v_bleu - base_bleu:+.2f} | {100 * same:.0f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
