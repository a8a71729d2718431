"""The GPU check behind benchmarks/gpu_check.sh: every part, one Markdown table, a time budget.

Parts, in this order (a failed part is a row saying so and the rest still run; a part that
would start after the budget is spent is a SKIPPED row):
  1. matmul peak: a bf16 (fp32 on CPU) 8192^3 matmul's measured FLOP/s, the denominator of MFU;
  2. train bf16: base preset, 25k-token batches on the WMT sample (37k vocabulary), 200 steps:
     tokens/s and MFU (`train_flops`: the model's FLOPs per target token, counted exactly),
     loss first -> last (must fall);
  3. translate base: the step-2 checkpoint, 1,000 newstest2014 lines, beam 4: nmt bf16 and fp16
     beside CTranslate2 fp16 of its `nmt export --to ctranslate2` (gpu_check_translate.py);
  4. Multi30k tiny: 2 minutes of the tiny preset, the best validation BLEU against a target;
  5. CTranslate2 = nmt: the step-4 model, the 1,000 Multi30k test lines, beam 4, nmt fp16 and
     CTranslate2 fp16: identical lines and BLEU must agree (the output-equality check);
  6. train fp16: the step-2 run with fp16 and loss scaling, 50 steps;
  7. torch.compile of the training step on and off (benchmarks/compile_step.py).
Each part has a share of the budget (BUDGET, seconds of the default 540); each subprocess is
stopped at min(its part's share, the whole budget), so the check ends within the budget plus a
few seconds. Every row's `wall s` is the time since the row before it in its part, so the rows
of a part add up to its wall time, and the total row to the check's. nmt runs as
`python3 -m nmt ...` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_BLEU_TARGET = 30.0  # Multi30k valid BLEU a 2-minute tiny run should reach: a guess
TOTAL = 540.0  # seconds: the whole check on one H100/H200, under the 10 minutes asked
BUDGET = {"matmul peak": 30, "train bf16": 150, "translate base": 180, "Multi30k tiny": 200,
          "CTranslate2 = nmt": 90, "train fp16": 90, "torch.compile": 150}  # caps, of TOTAL
BAD = ("FAILED", "TIMED OUT", "DIFFER", "OVER BUDGET")  # results that make the exit status 1
DATASHEET_BF16 = 989.4e12  # dense bf16 FLOP/s of an H100 / H200 SXM, by the vendor's datasheet


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[tuple[str, str, str, str, str]] = []  # check, result, wall, budget, detail
        self.work = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(args.out / "gpu-check.log", "a", encoding="utf-8")
        self.started = time.perf_counter()
        self.deadline = self.started + args.budget
        self.scale = args.budget / TOTAL
        self.checkpoints: dict[str, Path] = {}
        self.peak = 0.0
        self.part_end = self.mark = self.started
        self.part_budget: float | None = None

    def left(self) -> float:
        """Seconds the running part may still take."""
        return min(self.part_end, self.deadline) - time.perf_counter()

    def row(self, check: str, result: str, detail: str = "") -> None:
        now = time.perf_counter()
        wall, self.mark = now - self.mark, now
        budget = "" if self.part_budget is None else f"{self.part_budget:.0f}"
        self.part_budget = None  # shown on a part's first row only
        detail = " ".join(detail.replace("|", "/").split())  # one line, no cell breaks
        self.rows.append((check, result, f"{wall:.1f}", budget, detail))
        print(f"| {check} | {result} | {wall:.1f} | {budget} | {detail} |", flush=True)

    def run(self, cmd: list[str], *, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
        """`cmd` from the repository root, stopped (its whole process group) at `left()`."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.log.write("$ " + " ".join(cmd) + "\n")
        self.log.flush()
        timeout = max(self.left(), 1.0)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            self.log.write(out + err)
            raise TimeoutError(f"{what(cmd)} stopped after {timeout:.0f} s, its share of the "
                               "time budget") from None
        self.log.write(out + err)
        if proc.returncode != 0:
            tail = (err.strip().splitlines() or out.strip().splitlines() or ["(no output)"])
            raise RuntimeError(f"{what(cmd)} exited {proc.returncode}: {tail[-1]}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def nmt(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "nmt", *argv], env=env)

    def step(self, name: str, fn) -> None:
        now = time.perf_counter()
        share = BUDGET[name] * self.scale
        self.mark, self.part_end, self.part_budget = now, now + share, share
        if self.deadline - now < 5 * self.scale:  # 5 s of the default budget
            self.row(name, "SKIPPED", f"the {self.args.budget:.0f} s budget is spent")
            return
        try:
            fn()
        except TimeoutError as exc:
            self.row(name, "TIMED OUT", str(exc))
        except Exception as exc:  # one failed part is a row; the others still run
            self.row(name, "FAILED", f"{type(exc).__name__}: {str(exc)[:200]}")
        self.log.write(f"[{name}: {time.perf_counter() - now:.1f} s]\n")

    def table(self) -> str:
        dev = self.args.device
        name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
        lines = [f"# nmt GPU check ({name}{', dry run' if self.args.dry_run else ''})", "",
                 f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", "",
                 "| check | result | wall s | budget s | detail |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


def what(cmd: list[str]) -> str:
    """`nmt train` for `python -m nmt train ...`, else the script's name."""
    return f"nmt {cmd[3]}" if cmd[1:3] == ["-m", "nmt"] else Path(cmd[1]).name


# --- FLOPs ---------------------------------------------------------------------------------
def train_flops(config, src_lengths: np.ndarray, tgt_lengths: np.ndarray) -> float:
    """Floating-point operations of one training pass (forward + backward) over these pairs.

    Lengths count what the model sees: source + EOS, target + EOS (= BOS + target). Only the
    model's matrix products are counted, on real tokens (padding is waste, not work): forward
    2 FLOPs per weight per token that weight multiplies, and backward twice the forward (the
    gradients of the input and of the weight); layer norms, softmax, the loss and the optimizer
    are left out, as are the embedding lookups (no products). Per layer, with d = d_model and
    f = d_ff: encoder 4d^2 + 2df weights per source token; decoder 6d^2 + 2df per target token
    (self-attention q, k, v, out; cross-attention q, out; feed-forward) and 2d^2 per source token
    (cross-attention k, v of the memory); the tied output projection d x V per target token.
    Attention scores and weighted sums, QK^T and AV: 4d FLOPs forward per query-key pair, over
    every pair (the decoder's causal half included, as the products are computed):
    s^2 per encoder layer, t^2 + s*t per decoder layer. tests/test_gpu_check.py checks this
    against torch's FlopCounterMode on a batch without padding.
    """
    d, f, v = config.d_model, config.d_ff, config.vocab_size
    ne, nd = config.n_encoder_layers, config.n_decoder_layers
    s, t = src_lengths.astype(np.float64), tgt_lengths.astype(np.float64)
    linear = 2 * (ne * (4 * d * d + 2 * d * f) * s.sum()
                  + nd * ((6 * d * d + 2 * d * f) * t.sum() + 2 * d * d * s.sum())
                  + d * v * t.sum())
    attention = 4 * d * (ne * (s * s).sum() + nd * ((t * t).sum() + (s * t).sum()))
    return 3 * float(linear + attention)


def corpus_lengths(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(source, target) lengths of the prepared training pairs, EOS / BOS included."""
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    sides = [np.diff(np.load(data / f"train.{manifest[k]}.idx.npy")) + 1
             for k in ("src_lang", "tgt_lang")]
    return sides[0], sides[1]


# --- parts ---------------------------------------------------------------------------------
def peak_flops(ck: Check) -> None:
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
    ck.peak = 2 * n ** 3 * reps / (time.perf_counter() - t)
    ck.row("matmul peak", f"{ck.peak / 1e12:.1f} TFLOP/s" if ck.peak > 1e12 else
           f"{ck.peak / 1e9:.1f} GFLOP/s", f"{n}x{n}x{n} {str(dtype)[6:]}, random data, "
           f"{reps} products after 3: the MFU denominator")


def read_metrics(run: Path) -> list[dict]:
    with open(run / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def train(ck: Check, label: str, tag: str, precision: str, steps: int) -> None:
    from nmt.checkpoint import read_config

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
    ck.checkpoints[tag] = ckpt = sorted((run / "checkpoints").glob("step-*"))[-1]
    late = trains[len(trains) // 2:]  # after warm-up
    rate = statistics.median(r["tokens_per_s"] for r in late)  # target tokens/s
    src, tgt = corpus_lengths(a.data / "wmt")
    per_token = train_flops(read_config(ckpt), src, tgt) / tgt.sum()
    mfu = per_token * rate / ck.peak if ck.peak else float("nan")
    naive = 6 * start["parameters"] * rate / ck.peak if ck.peak else float("nan")
    datasheet, gpu = "", torch.cuda.get_device_name() if a.device == "cuda" else ""
    if "H200" in gpu or "H100 80GB HBM3" in gpu:  # the SXM parts; PCIe and NVL are slower
        datasheet = (f", MFU {100 * per_token * rate / DATASHEET_BF16:.1f} % of the datasheet's "
                     f"{DATASHEET_BF16 / 1e12:.0f} TFLOP/s")
    first, last = trains[0]["loss"], trains[-1]["loss"]
    ck.row(label, f"{rate:,.0f} tokens/s, MFU {100 * mfu:.1f} %",
           f"{model}, {batch} tokens/batch, {steps} steps; target tokens/s, median of the last "
           f"{len(late)} records; {per_token / 1e9:.3f} GFLOP per target token "
           f"(6 x parameters: MFU {100 * naive:.1f} %){datasheet}; loss {first:.3f} -> "
           f"{last:.3f} ({'falls' if last < first else 'DOES NOT FALL'})")
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
    done = ck.run([sys.executable, str(ROOT / "benchmarks" / "compile_step.py"), *argv])
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


def tiny_multi30k(ck: Check) -> None:
    a = ck.args
    run = ck.work / "m30k-tiny"
    budget = "10s" if a.dry_run else "2m"
    ck.nmt("train", str(a.data / "m30k"), "--preset", "tiny", "--run", str(run), "--device",
           a.device, "--max-time", budget, "--valid-bleu-lines", "50" if a.dry_run else "1014",
           *(["--batch-tokens", "400", "--save-every", "3", "--max-steps", "3", "--threads", "2"]
             if a.dry_run else ["--save-every", "500"]))
    metrics = read_metrics(run)
    valid = [r for r in metrics if r["kind"] == "valid" and r.get("bleu") is not None]
    if not valid:
        raise RuntimeError("no validation BLEU in metrics.jsonl")
    best = max(valid, key=lambda r: r["bleu"])
    ck.checkpoints["m30k"] = run / "best" if (run / "best").is_dir() else sorted(
        (run / "checkpoints").glob("step-*"))[-1]
    target = 0.0 if a.dry_run else TINY_BLEU_TARGET
    ok = "PASS" if best["bleu"] >= target else "BELOW TARGET"
    ck.row(f"Multi30k tiny, {budget}", f"valid BLEU {best['bleu']:.2f} ({ok})",
           f"target >= {target:.0f} (a guess); best at step {best['step']} of "
           f"{max(r['step'] for r in metrics if 'step' in r)}")


def main(argv: list[str] | None = None) -> int:
    import gpu_check_translate as translate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes and a few steps: the same code paths in seconds")
    parser.add_argument("--data", type=Path, default=ROOT / ".device" / "gpu-check")
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("OUT") or ROOT / "gpu-check-out"))
    parser.add_argument("--work", type=Path, default=None,
                        help="checkpoints and exports (default: a new folder under $TMPDIR)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"seconds for the whole check (default {TOTAL:.0f}; dry run 3600)")
    parser.add_argument("--steps", type=int, default=200, help="bf16 training steps")
    parser.add_argument("--lines", type=int, default=1000, help="lines translated per run")
    args = parser.parse_args(argv)
    args.budget = args.budget or (3600.0 if args.dry_run else TOTAL)
    args.data, args.out = args.data.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="nmt-gpu-check-"))).resolve()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --device cpu --dry-run", file=sys.stderr)
        return 2
    for need in ("wmt/manifest.json", "m30k/manifest.json", "wmt/test.raw.en"):
        if not (args.data / need).exists():
            print(f"gpu_check: {args.data / need} is missing; run benchmarks/gpu_check_data.sh "
                  "first", file=sys.stderr)
            return 2
    ck = Check(args)
    on_gpu = args.device == "cuda"
    ck.step("matmul peak", lambda: peak_flops(ck))
    ck.step("train bf16", lambda: train(
        ck, "train bf16" if on_gpu else "train fp32 (CPU stands in for bf16)", "bf16",
        "bf16" if on_gpu else "fp32", 4 if args.dry_run else args.steps))
    ck.step("translate base", lambda: translate.base(ck))
    ck.step("Multi30k tiny", lambda: tiny_multi30k(ck))
    ck.step("CTranslate2 = nmt", lambda: translate.equality(ck))
    ck.step("train fp16", lambda: train(
        ck, "train fp16 + loss scaling" if on_gpu else "train fp32 (CPU stands in for fp16)",
        "fp16", "fp16" if on_gpu else "fp32", 3 if args.dry_run else 50))
    ck.step("torch.compile", lambda: compile_check(ck))
    total = time.perf_counter() - ck.started
    walls = sum(float(r[2]) for r in ck.rows)
    ck.mark, ck.part_budget = ck.started, args.budget  # the total row's wall: the whole check
    over = total > args.budget
    ck.row("total", f"{total:.0f} s{' (OVER BUDGET)' if over else ''}",
           f"every part, of a {args.budget:.0f} s budget; the rows above add up to {walls:.0f} s")
    path = args.out / "gpu-check.md"
    path.write_text(ck.table(), encoding="utf-8")
    print(f"wrote {path} (work: {args.work})")
    return 1 if any(bad in r[1] for r in ck.rows for bad in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
