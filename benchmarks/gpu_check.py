"""The GPU check behind benchmarks/gpu_check.sh: every step, one Markdown table.

Steps (each a row or a few; a failed step is a row saying so, and the rest still run):
  1. peak: a bf16 (fp32 on CPU) matmul's measured FLOP/s, the denominator of MFU;
  2. base preset, bf16, 25k-token batches on the WMT data (37k vocabulary): tokens/s, MFU
     (6 x parameters x tokens/s over the measured peak), peak memory, loss first -> last;
  3. the same, fp16 with loss scaling, 50 steps;
  4. torch.compile on and off (benchmarks/compile_step.py: nmt has no --compile flag);
  5. greedy and beam-4 translation of newstest2014 with the step-2 checkpoint, nmt bf16 and
     fp16, and CTranslate2 fp16 of its export where ctranslate2 imports and sees a GPU;
  6. Multi30k, tiny preset, 3 minutes: the best validation BLEU against a stated target.
nmt runs as `python3 -m nmt ...` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_BLEU_TARGET = 30.0  # Multi30k test BLEU a 3-minute tiny run should reach on one H100/H200


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[tuple[str, str, str]] = []  # (check, result, detail)
        self.work = args.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(args.out / "gpu-check.log", "a", encoding="utf-8")

    def row(self, check: str, result: str, detail: str = "") -> None:
        self.rows.append((check, result, detail))
        print(f"| {check} | {result} | {detail} |", flush=True)

    def nmt(self, *argv: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "nmt", *argv]
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        self.log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"nmt {argv[0]} exited {done.returncode}: {tail}")
        return done

    def step(self, name: str, fn) -> None:
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one failed step is a row; the others still run
            self.row(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:200]}")
        self.log.write(f"[{name}: {time.perf_counter() - started:.1f} s]\n")

    def table(self) -> str:
        dev = self.args.device
        name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
        lines = [f"# nmt GPU check ({name}{', dry run' if self.args.dry_run else ''})", "",
                 f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", "",
                 "| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c} | {r} | {d} |" for c, r, d in self.rows]
        return "\n".join(lines) + "\n"


# --- steps ---------------------------------------------------------------------------------
def peak_flops(ck: Check) -> float:
    dev = torch.device(ck.args.device)
    n = 8192 if dev.type == "cuda" else 1024
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    reps = 20 if dev.type == "cuda" else 3
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if dev.type == "cuda":
        torch.cuda.synchronize()
    flops = 2 * n ** 3 * reps / (time.perf_counter() - t)
    ck.peak = flops
    ck.row("matmul peak", f"{flops / 1e12:.1f} TFLOP/s" if flops > 1e12 else
           f"{flops / 1e9:.1f} GFLOP/s", f"{n}x{n} {str(dtype)[6:]}, measured")
    return flops


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train(ck: Check, label: str, tag: str, precision: str, steps: int) -> None:
    a = ck.args
    run = ck.work / f"train-{tag}"
    model = "tiny" if a.dry_run else "base"
    batch = "400" if a.dry_run else "25000"
    ck.nmt("train", str(a.data / "wmt"), "--preset", model, "--run", str(run), "--device",
           a.device, "--precision", precision, "--batch-tokens", batch, "--max-steps", str(steps),
           "--lr-schedule", "inverse_sqrt", "--lr", "1e-3" if a.dry_run else "7e-4",
           "--warmup", str(max(steps // 4, 1)), "--log-every", str(max(steps // 10, 1)),
           "--save-every", str(steps), "--valid-bleu-lines", "0", "--keep-last", "1",
           *(["--threads", "2"] if a.device == "cpu" else []))
    metrics = read_metrics(run)
    start = next(r for r in metrics if r["kind"] == "start")
    trains = [r for r in metrics if r["kind"] == "train"]
    if not trains:
        raise RuntimeError("no training records in metrics.jsonl")
    rate = max(r["tokens_per_s"] for r in trains[len(trains) // 2:])  # after warm-up
    mfu = 6 * start["parameters"] * rate / ck.peak if getattr(ck, "peak", 0) else float("nan")
    mem = max((r.get("gpu_mem_gb") or 0) for r in trains)
    first, last = trains[0]["loss"], trains[-1]["loss"]
    falls = "falls" if last < first else "DOES NOT FALL"
    ck.row(label, f"{rate:,.0f} tokens/s, MFU {100 * mfu:.1f} %",
           f"{model}, {batch} tokens/batch, {steps} steps; peak memory {mem:.1f} GiB; "
           f"loss {first:.3f} -> {last:.3f} ({falls})")
    ck.checkpoints[tag] = sorted((run / "checkpoints").glob("step-*"))[-1]
    if last >= first:
        raise RuntimeError("loss did not fall")


def compile_check(ck: Check) -> None:
    a = ck.args
    argv = ["--device", a.device, "--steps", "3" if a.dry_run else "10"]
    argv += (["--preset", "tiny", "--vocab", "320", "--tokens", "400", "--warmup", "1",
              "--threads", "1"] if a.dry_run else
             ["--preset", "base", "--vocab", "37000", "--tokens", "25000", "--precision",
              "bf16", "--warmup", "2"])
    if a.dry_run:
        argv += ["--modes", "eager"]  # compiling takes minutes on a CPU; the GPU run does both
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compile_step.py"), *argv],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    ck.log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError((done.stderr.strip().splitlines() or ["?"])[-1])
    r = json.loads(done.stdout.strip().splitlines()[-1])
    if "compiled_ms" in r:
        be = r["break_even_steps"]
        ck.row("torch.compile (train step)", f"{r['speedup']:.2f}x",
               f"eager {r['eager_ms']:.1f} ms, compiled {r['compiled_ms']:.1f} ms/step; compile "
               f"{r['compile_s']:.0f} s, pays off after {'never' if be is None else f'{be:.0f}'}"
               f" steps ({r['preset']}, {r['tokens']} tokens, {r['precision']})")
    else:
        ck.row("torch.compile (train step)", "eager only (dry run)",
               f"eager {r['eager_ms']:.1f} ms/step ({r['preset']}, {r['tokens']} tokens)")


SUMMARY = re.compile(r"translated ([\d,]+) lines \(([\d,]+) sentences, ([\d,]+) tokens\) in "
                     r"([\d.]+) s")


def translate(ck: Check) -> None:
    a = ck.args
    ckpt = ck.checkpoints.get("bf16") or next(iter(ck.checkpoints.values()), None)
    if ckpt is None:
        raise RuntimeError("no checkpoint from the training step")
    src = a.data / "newstest2014.en"
    engines = [("nmt", p) for p in (["fp32"] if a.device == "cpu" else ["bf16", "fp16"])]
    try:
        import ctranslate2

        if a.device == "cpu" or ctranslate2.get_cuda_device_count() > 0:
            ct2_dir = ck.work / "ct2"
            if not ct2_dir.is_dir():
                ck.nmt("export", str(ckpt), "--to", "ctranslate2", str(ct2_dir))
            engines.append(("ctranslate2", "fp32" if a.device == "cpu" else "fp16"))
        else:
            ck.row("CTranslate2", "skipped", "ctranslate2 sees no GPU")
    except ImportError:
        ck.row("CTranslate2", "skipped", "ctranslate2 is not installed here")
    rates = {}
    for beam in (1, 4):
        for engine, precision in engines:
            path = ckpt if engine == "nmt" else ck.work / "ct2"
            extra = ["--engine", "ctranslate2"] if engine != "nmt" else []
            done = ck.nmt("translate", "-c", str(path), "-i", str(src), "-o",
                          str(ck.work / f"out-{engine}-{precision}-{beam}.de"), "--beam",
                          str(beam), "--device", a.device, "--precision", precision,
                          "--lenpen-style", "fairseq", *extra)
            m = SUMMARY.search(done.stderr + done.stdout)
            if not m:
                raise RuntimeError("no closing summary from nmt translate")
            lines, tokens, secs = int(m[1].replace(",", "")), int(m[3].replace(",", "")), \
                float(m[4])
            rate = tokens / max(secs, 1e-9)
            rates[(engine, precision, beam)] = rate
            ref = rates.get(("nmt", engines[0][1], beam))
            ck.row(f"translate {'greedy' if beam == 1 else f'beam {beam}'}, {engine} "
                   f"{precision}", f"{rate:,.0f} tokens/s",
                   f"{lines} newstest2014 lines, {secs:.1f} s"
                   + (f"; {rate / ref:.2f}x nmt {engines[0][1]}" if ref and engine != "nmt"
                      else ""))


def tiny_multi30k(ck: Check) -> None:
    a = ck.args
    run = ck.work / "m30k-tiny"
    budget = "10s" if a.dry_run else "3m"
    ck.nmt("train", str(a.data / "m30k"), "--preset", "tiny", "--run", str(run), "--device",
           a.device, "--max-time", budget, "--valid-bleu-lines", "50" if a.dry_run else "1014",
           *(["--batch-tokens", "400", "--save-every", "3", "--max-steps", "3", "--threads", "2"]
             if a.dry_run else ["--save-every", "500"]))
    valid = [r for r in read_metrics(run) if r["kind"] == "valid" and r.get("bleu") is not None]
    if not valid:
        raise RuntimeError("no validation BLEU in metrics.jsonl")
    best = max(valid, key=lambda r: r["bleu"])
    target = 0.0 if a.dry_run else TINY_BLEU_TARGET
    ok = "PASS" if best["bleu"] >= target else "BELOW TARGET"
    ck.row(f"Multi30k tiny, {budget}", f"valid BLEU {best['bleu']:.2f} ({ok})",
           f"target >= {target:.0f}; best at step {best['step']} of "
           f"{max(r['step'] for r in read_metrics(run) if 'step' in r)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes and a few steps: the same code paths in seconds")
    parser.add_argument("--data", type=Path, default=ROOT / ".device" / "gpu-check")
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT") or ROOT / "gpu-check-out"))
    parser.add_argument("--steps", type=int, default=100, help="bf16 training steps")
    args = parser.parse_args(argv)
    args.data, args.out = args.data.resolve(), args.out.resolve()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --device cpu --dry-run", file=sys.stderr)
        return 2
    for need in ("wmt", "m30k", "newstest2014.en"):
        if not (args.data / need).exists():
            print(f"gpu_check: {args.data / need} is missing; run benchmarks/gpu_check_data.sh "
                  "first", file=sys.stderr)
            return 2
    ck = Check(args)
    ck.checkpoints = {}
    steps = 4 if args.dry_run else args.steps
    started = time.perf_counter()
    ck.step("matmul peak", lambda: peak_flops(ck))
    ck.step("train bf16", lambda: train(ck, "train bf16" if args.device == "cuda" else
                                         "train fp32 (CPU stands in for bf16)", "bf16",
                                         "bf16" if args.device == "cuda" else "fp32", steps))
    ck.step("train fp16", lambda: train(ck, "train fp16 + loss scaling" if args.device == "cuda"
                                         else "train fp32 (CPU stands in for fp16)", "fp16",
                                         "fp16" if args.device == "cuda" else "fp32",
                                         3 if args.dry_run else 50))
    ck.step("torch.compile", lambda: compile_check(ck))
    ck.step("translate", lambda: translate(ck))
    ck.step("Multi30k tiny", lambda: tiny_multi30k(ck))
    ck.row("total", f"{time.perf_counter() - started:.0f} s", "wall time of every step")
    path = args.out / "gpu-check.md"
    path.write_text(ck.table(), encoding="utf-8")
    print(f"wrote {path}")
    return 1 if any(r == "FAILED" for _, r, _ in ck.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
