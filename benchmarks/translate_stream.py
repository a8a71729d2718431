"""Streaming latency and file throughput of `nmt translate` (issue 12), against a peer.

    python benchmarks/translate_stream.py --checkpoint CKPT [--peer /path/to/older/nmt/checkout]

Latency: a line written into `nmt translate`'s stdin pipe (default settings, the pipe left open)
until its translation comes out, for several lines one after another; the model is loaded before
the first line is timed. Throughput: `nmt translate -i FILE` on the same lines with this checkout
and with the peer checkout (an older release, e.g. a `git worktree` of the commit before
streaming), alternating, best of --repeat, as CPU seconds of the child process (fair on a shared
machine) and wall seconds.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEWSTEST = Path(os.environ.get("NMT_SHARED", ROOT.parent / "shared" / "data")) / "wmt"


def _env(checkout: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout), "OMP_WAIT_POLICY": "PASSIVE"}


def latency(checkpoint: Path, lines: list[str], threads: int) -> list[float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt", "translate", "-c", str(checkpoint), "--threads",
         str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=_env(ROOT), bufsize=0)
    proc.stdin.write(b"warm up .\n")  # the first line also waits for the model to load
    proc.stdout.readline()
    times = []
    for line in lines:
        start = time.perf_counter()
        proc.stdin.write(line.encode() + b"\n")
        proc.stdout.readline()
        times.append(time.perf_counter() - start)
    proc.stdin.close()
    proc.wait()
    return times


def throughput(checkout: Path, checkpoint: Path, path: Path, threads: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `nmt translate -i path` in `checkout`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nmt", "translate", "-c", str(checkpoint), "-i",
                    str(path), "--threads", str(threads)], check=True, env=_env(checkout),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--peer", type=Path, help="another nmt checkout to compare with")
    parser.add_argument("--lines", type=int, default=500, help="newstest2014 lines for files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    source = (NEWSTEST / "newstest2014.en").read_text(encoding="utf-8").splitlines()
    times = latency(args.checkpoint, source[:20], args.threads)
    times.sort()
    print(f"streaming latency, {len(times)} lines one at a time through an open pipe: median "
          f"{1000 * times[len(times) // 2]:.0f} ms, max {1000 * times[-1]:.0f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.en"
        path.write_text("".join(f"{line}\n" for line in source[:args.lines]), encoding="utf-8")
        checkouts = {"this": ROOT, **({"peer": args.peer} if args.peer else {})}
        best = {name: (float("inf"), float("inf")) for name in checkouts}
        for _ in range(args.repeat):
            for name, checkout in checkouts.items():
                cpu, wall = throughput(checkout, args.checkpoint, path, args.threads)
                best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
    print(f"file throughput, {args.lines} newstest2014 lines, best of {args.repeat}:")
    for name, (cpu, wall) in best.items():
        print(f"  {name:5s} {cpu:7.2f} CPU s  {wall:7.2f} wall s  "
              f"{args.lines / cpu:7.1f} lines per CPU s")
    if args.peer:
        print(f"  this / peer, CPU seconds: {best['this'][0] / best['peer'][0]:.3f}")


if __name__ == "__main__":
    main()
