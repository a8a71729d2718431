"""Throughput and memory of `nmt prepare`, stage by stage, as the corpus grows.

    python benchmarks/prepare.py                      # Multi30k train x1, x4, x16, all cores
    python benchmarks/prepare.py --repeat 1 8 --workers 4 --vocab-size 32000

Builds synthetic corpora by repeating the Multi30k training set of `../shared/data` (29,000
pairs) REPEAT times, and runs `nmt.prepare.run` (what `nmt prepare local` runs) on each in a
fresh process, so that every size gets its own peak-memory reading. Prints, per size and stage:
wall seconds, pairs per second, pairs per CPU-second (= per core: the work of the encoding
processes divided by the CPU time they used, which does not depend on how busy the machine is),
and the peak resident memory of the main process and of the largest worker. SentencePiece sees
a fixed sample (--spm-sample) so that its stage is bounded; memory flat in the corpus size is
the claim being checked.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def build_corpus(directory: Path, repeat: int) -> Path:
    """`train` = Multi30k train repeated `repeat` times; `valid` = Multi30k val."""
    directory.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        text = (DATA / f"train.{lang}").read_bytes()
        with open(directory / f"train.{lang}", "wb") as f:
            for _ in range(repeat):
                f.write(text)
        (directory / f"valid.{lang}").write_bytes((DATA / f"val.{lang}").read_bytes())
    return directory


def child(args: argparse.Namespace) -> None:
    """Run one preparation and print its figures as JSON (in a fresh process)."""
    from nmt import prepare

    corpus = Path(args.child)
    summary = prepare.run(prepare.PrepareConfig(
        corpus="local", src_lang="en", tgt_lang="de", train=corpus / "train",
        valid=corpus / "valid", out=corpus / "prepared", name="bench",
        vocab_size=args.vocab_size, workers=args.workers, spm_sample=args.spm_sample))
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({
        "pairs": summary.manifest["splits"]["train"]["lines"],
        "stages": [{"name": s.name, "seconds": s.seconds, "cpu": s.cpu_seconds, "pairs": s.pairs}
                   for s in summary.stages],
        "rss_main_mb": self_kb / 1024, "rss_worker_mb": children_kb / 1024}))


def run_size(repeat: int, root: Path, args: argparse.Namespace) -> dict:
    corpus = build_corpus(root / f"x{repeat}", repeat)
    cmd = [sys.executable, __file__, "--child", str(corpus), "--workers", str(args.workers),
           "--vocab-size", str(args.vocab_size), "--spm-sample", str(args.spm_sample)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"benchmark run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: dict[int, dict], workers: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"nmt prepare on Multi30k train x REPEAT, {workers} worker(s), "
                        f"{os.cpu_count()} cores")
    for column in ("repeat", "train pairs", "stage", "wall s", "pairs/s", "pairs/CPU-s",
                   "peak RSS main", "peak RSS worker"):
        table.add_column(column, justify="right")
    for repeat, r in results.items():
        for i, s in enumerate(r["stages"]):
            first = i == 0
            table.add_row(str(repeat) if first else "", f"{r['pairs']:,}" if first else "",
                          s["name"], f"{s['seconds']:.2f}",
                          f"{s['pairs'] / s['seconds']:,.0f}",
                          f"{s['pairs'] / s['cpu']:,.0f}" if s["cpu"] > 0 else "-",
                          f"{r['rss_main_mb']:,.0f} MB" if first else "",
                          f"{r['rss_worker_mb']:,.0f} MB" if first else "",
                          end_section=i == len(r["stages"]) - 1)
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, nargs="+", default=[1, 4, 16],
                        help="corpus sizes, as multiples of the 29,000 Multi30k pairs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="encoding processes (default: all cores)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--spm-sample", type=int, default=50_000,
                        help="SentencePiece sample, fixed so that its stage stays bounded")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not DATA.is_dir():
        sys.exit(f"Multi30k not found at {DATA}")
    with tempfile.TemporaryDirectory(prefix="nmt-bench-prepare-") as root:
        results = {repeat: run_size(repeat, Path(root), args) for repeat in args.repeat}
    report(results, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
