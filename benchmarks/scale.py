"""Scale rehearsal (issue 26): `nmt prepare` up to the WMT14 size against plain SentencePiece,
and the base preset's start-up time, checkpoint size and save/resume time at each size.

    python benchmarks/scale.py                                   # 0.5M, 1M, 2M, 4.5M pairs
    python benchmarks/scale.py --sizes 20k,40k --vocab-size 2000 --spm-sample 20000   # a minute

Corpora: English–German pairs resampled from the real text of `../shared/data` (the WMT
training sample, every newstest but 2013/2014, Multi30k train): each pair is one pool pair or,
one time in four, two pool pairs joined on both sides, drawn with a fixed seed, so the same size
is the same corpus on every run and a larger corpus extends a smaller one. Validation:
the first --valid-lines of newstest2013. All of it goes under --work (a temporary directory by
default), never into the repository.

Each measured run is a fresh process: `nmt prepare local` (`nmt.prepare.run`, the library call
the command makes) at every -j, and the baseline: `SentencePieceTrainer.train` on the same files
with nmt's settings (the same --spm-sample cap on sentences, BPE, byte fallback, the same special
ids; -j threads), then every line encoded with SentencePiece's batch encoder (-j threads) into
flat id arrays plus lengths. The baseline cleans, filters and checks nothing, and has no
validation split: it is the floor of what preparing the data costs. Peak RSS: the largest single
process (getrusage of the run); PSS: the run's processes summed, sampled every 0.1 s
(every 0.5 s after the first 5 s).

Training: `nmt train --preset base` on CPU, one step with a small --batch-tokens, on each
size's prepared data (from the last -j); then a second invocation resumes and takes step 2.
Start-up: from launching the process to the end of the first update; checkpoint: the directory
written after step 1, its size and the save time; resume: reading it back.

Prints two Markdown tables. Timings are wall clock on a possibly shared machine: compare rows
of one run (the ratio to the baseline), not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from itertools import chain, islice
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmt.prepare.config import PrepareConfig  # noqa: E402

DATA = Path(os.environ.get("NMT_SHARED", ROOT.parent / "shared" / "data"))
BLOCK = 100_000  # pairs drawn at a time: the corpus of n pairs is a prefix of every larger one
JOIN = 0.25  # share of pairs made of two pool pairs


# --- corpora ---------------------------------------------------------------------------------
def pool(data: Path = DATA) -> tuple[list[str], list[str]]:
    """Aligned English and German lines of every training-like text under `data`."""
    wmt = data / "wmt"
    prefixes = [wmt / "train_sample" / "onmt_sample10k.tok", data / "multi30k" / "train"]
    for en in sorted((wmt / "extra_newstests").glob("*.en")):
        prefixes.append(en.with_suffix(""))
    src: list[str] = []
    tgt: list[str] = []
    for prefix in prefixes:
        s = Path(f"{prefix}.en").read_text(encoding="utf-8").split("\n")[:-1]
        t = Path(f"{prefix}.de").read_text(encoding="utf-8").split("\n")[:-1]
        if len(s) != len(t):
            sys.exit(f"{prefix}: {len(s)} English but {len(t)} German lines")
        src += s
        tgt += t
    return src, tgt


def build_corpus(directory: Path, pairs: int, seed: int, valid_lines: int,
                 data: Path = DATA) -> Path:
    """`train.{en,de}` with `pairs` resampled pairs and `valid.{en,de}`; returns `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    src, tgt = pool(data)
    rng = np.random.default_rng(seed)
    with (open(directory / "train.en", "w", encoding="utf-8", newline="\n") as f_src,
          open(directory / "train.de", "w", encoding="utf-8", newline="\n") as f_tgt):
        for start in range(0, pairs, BLOCK):
            first = rng.integers(len(src), size=BLOCK)
            second = rng.integers(len(src), size=BLOCK)
            join = rng.random(BLOCK) < JOIN
            n = min(BLOCK, pairs - start)
            lines_src, lines_tgt = [], []
            for a, b, j in zip(first[:n].tolist(), second[:n].tolist(), join[:n].tolist(),
                               strict=True):
                lines_src.append(f"{src[a]} {src[b]}" if j else src[a])
                lines_tgt.append(f"{tgt[a]} {tgt[b]}" if j else tgt[a])
            f_src.write("\n".join(lines_src) + "\n")
            f_tgt.write("\n".join(lines_tgt) + "\n")
    for lang in ("en", "de"):
        lines = (data / "wmt" / f"newstest2013.{lang}").read_text(encoding="utf-8")
        (directory / f"valid.{lang}").write_text(
            "".join(f"{line}\n" for line in lines.split("\n")[:valid_lines]), encoding="utf-8")
    return directory


# --- measuring one process -------------------------------------------------------------------
def _tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc (those numbered after it: started later)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) >= root:
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return total


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `cmd`; its last stdout line (JSON) plus wall seconds, peak RSS and summed PSS."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        pss = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            pss = max(pss, _pss_kb(_tree(proc.pid)))
            time.sleep(0.1 if time.perf_counter() - start < 5 else 0.5)  # short runs too
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    return {**result, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "pss_mb": pss / 1024}


# --- the children ----------------------------------------------------------------------------
def nmt_child(args: argparse.Namespace) -> None:
    from nmt import prepare

    corpus, out = Path(args.corpus), Path(args.out)
    summary = prepare.run(prepare.PrepareConfig(
        corpus="local", src_lang="en", tgt_lang="de", train=corpus / "train",
        valid=corpus / "valid", out=out, name="scale", vocab_size=args.vocab_size,
        workers=args.jobs, spm_sample=args.spm_sample, force=True))
    print(json.dumps({"stages": {s.name: s.seconds for s in summary.stages},
                      "kept": summary.manifest["splits"]["train"]["pairs"]}))


def baseline_child(args: argparse.Namespace) -> None:
    """Plain SentencePiece: train with nmt's settings, encode every line into id arrays."""
    import sentencepiece as spm

    from nmt.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

    corpus, out = Path(args.corpus), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    texts = [str(corpus / f"train.{lang}") for lang in ("en", "de")]
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=",".join(texts), model_prefix=str(out / "spm"), vocab_size=args.vocab_size,
        model_type="bpe", character_coverage=1.0, byte_fallback=True,
        input_sentence_size=args.spm_sample, shuffle_input_sentence=True,
        seed_sentencepiece_size=1_000_000, pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID,
        eos_id=EOS_ID, hard_vocab_limit=False, num_threads=args.jobs, minloglevel=2)
    trained = time.perf_counter()
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    dtype = np.uint16 if sp.get_piece_size() <= 65536 else np.int32
    for text in texts:
        lengths = array("q")
        name = Path(text).name
        with open(text, encoding="utf-8") as f, open(out / f"{name}.bin", "wb") as b:
            while batch := [line.rstrip("\n") for line in islice(f, 10_000)]:
                ids = sp.encode(batch, out_type=int, num_threads=args.jobs)
                lengths.extend(map(len, ids))
                b.write(np.fromiter(chain.from_iterable(ids), dtype=dtype).tobytes())
        np.save(out / f"{name}.len.npy", np.frombuffer(lengths, dtype=np.int64))
    print(json.dumps({"stages": {"spm": trained - start,
                                 "encode": time.perf_counter() - trained}}))


def train_child(args: argparse.Namespace) -> None:
    """One `nmt train --preset base` invocation, timed from its launch (--launched)."""
    from nmt import train
    from nmt.distributed import Launch
    from nmt.train import checkpointing, launch, session

    marks: dict[str, float] = {"imported": time.time()}

    def timed(name: str, fn):
        def wrapper(*a, **k):
            begin = time.time()
            try:
                return fn(*a, **k)
            finally:
                marks[f"{name}_s"] = marks.get(f"{name}_s", 0.0) + time.time() - begin
                marks.setdefault(f"{name}_done", time.time())
        return wrapper

    class Clock(train.Reporter):
        def progress(self, stats) -> None:
            marks.setdefault("first_step", time.time())

    launch.open_session = timed("open_data", launch.open_session)
    launch.build_state = timed("build_model", launch.build_state)
    launch.resume = timed("resume", launch.resume)
    session.Session.epoch_batches = timed("batches", session.Session.epoch_batches)
    checkpointing.save = timed("save", checkpointing.save)
    result = train.run(data=args.data, run=args.run, preset="base", launch=Launch(
        device="cpu", threads=args.jobs), reporter=Clock(), overrides={
        "max_steps": args.steps, "batch_tokens": args.batch_tokens, "valid_bleu_lines": 0,
        "best_metric": "loss", "save_every": 1})
    launched = args.launched
    print(json.dumps({"steps": result.steps, "checkpoint": result.last_checkpoint,
                      **{k: (v - launched if not k.endswith("_s") else v)
                         for k, v in marks.items()}}))


# --- the parent ------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return round(float(text.rstrip("km")) * scale)


def label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k" if n >= 1000 else str(n)


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{path}" if path else str(ROOT),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def prepare_rows(args: argparse.Namespace, work: Path) -> tuple[list[dict], dict[int, Path]]:
    rows, prepared = [], {}
    me = [sys.executable, __file__]
    common = ["--vocab-size", str(args.vocab_size), "--spm-sample", str(args.spm_sample)]
    for n in args.sizes:
        corpus = build_corpus(work / f"corpus-{label(n)}", n, args.seed, args.valid_lines)
        for jobs in args.jobs:
            for tool in ("baseline", "nmt"):
                out = work / f"{tool}-{label(n)}-j{jobs}"
                r = measure([*me, f"--{tool}-child", "--corpus", str(corpus), "--out", str(out),
                             "--jobs", str(jobs), *common], _env())
                rows.append({"pairs": n, "tool": tool, "jobs": jobs, **r})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                if tool == "nmt":
                    shutil.rmtree(prepared.pop(n, work / "none"), ignore_errors=True)
                    prepared[n] = out
                else:
                    shutil.rmtree(out)
        shutil.rmtree(corpus)
    return rows, prepared


def add_ratios(rows: list[dict]) -> None:
    """Against the baseline of the same size and -j; growth against the smallest size."""
    key = {(r["pairs"], r["tool"], r["jobs"]): r for r in rows}
    smallest = min(r["pairs"] for r in rows)
    for r in rows:
        base = key[(r["pairs"], "baseline", r["jobs"])]
        first = key[(smallest, r["tool"], r["jobs"])]
        r["vs_baseline"] = r["wall"] / base["wall"]
        r["cpu_vs_baseline"] = r["cpu"] / base["cpu"]
        r["time_growth"] = (r["cpu"] / first["cpu"]) / (r["pairs"] / smallest)
        r["rss_growth"] = r["rss_mb"] / first["rss_mb"]


def print_prepare(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n`nmt prepare` against plain SentencePiece ({args.vocab_size:,} BPE pieces, "
          f"SentencePiece sample <= {args.spm_sample:,} sentences, {os.cpu_count()} cores)\n")
    print("| pairs | tool | -j | wall s | CPU s | clean / spm / encode wall s "
          "| wall ÷ baseline | CPU ÷ baseline | peak RSS MB | PSS all processes MB "
          "| CPU s per pair vs smallest | peak RSS vs smallest |")
    print("|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        stages = " / ".join(f"{r['stages'][s]:.1f}" if s in r["stages"] else "-"
                            for s in ("clean", "spm", "encode"))
        print(f"| {label(r['pairs'])} | {r['tool']} | {r['jobs']} | {r['wall']:.1f} "
              f"| {r['cpu']:.1f} | {stages} | {r['vs_baseline']:.2f}x "
              f"| {r['cpu_vs_baseline']:.2f}x | {r['rss_mb']:,.0f} | {r['pss_mb']:,.0f} "
              f"| {r['time_growth']:.2f} | {r['rss_growth']:.2f} |")


def train_rows(args: argparse.Namespace, prepared: dict[int, Path], work: Path) -> list[dict]:
    rows = []
    for n, data in prepared.items():
        if args.train_sizes and n not in args.train_sizes:
            continue
        run = work / f"run-{label(n)}"
        row: dict = {"pairs": n}
        for steps in (1, 2):  # 1: a fresh run; 2: resumes from step 1's checkpoint
            r = measure([sys.executable, __file__, "--train-child", "--data", str(data),
                         "--run", str(run), "--steps", str(steps), "--jobs", str(args.jobs[-1]),
                         "--batch-tokens", str(args.batch_tokens),
                         "--launched", repr(time.time())], _env())
            row["fresh" if steps == 1 else "resumed"] = r
            if steps == 1:
                ckpt = Path(r["checkpoint"])
                row["ckpt_mb"] = sum(p.stat().st_size for p in ckpt.rglob("*")
                                     if p.is_file()) / 2**20
                row["state_mb"] = (ckpt / "train_state.pt").stat().st_size / 2**20
            print(json.dumps({"pairs": n, "steps": steps, **r}), file=sys.stderr, flush=True)
        rows.append(row)
        shutil.rmtree(run)
    return rows


def print_train(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\n`nmt train --preset base` on CPU ({args.jobs[-1]} threads, --batch-tokens "
          f"{args.batch_tokens:,}, no BLEU at validation), from the prepared data above\n")
    print("| pairs | start-up to the first update s | of which: open data / build model "
          "/ epoch batches s | first update s | checkpoint MB (train_state.pt) | save s "
          "| resume s | resumed: start-up s | peak RSS MB |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f, s = r["fresh"], r["resumed"]
        parts = f"{f['open_data_s']:.1f} / {f['build_model_s']:.1f} / {f['batches_s']:.1f}"
        print(f"| {label(r['pairs'])} | {f['batches_done']:.1f} | {parts} "
              f"| {f['first_step'] - f['batches_done']:.1f} "
              f"| {r['ckpt_mb']:,.0f} ({r['state_mb']:,.0f}) | {f['save_s']:.1f} "
              f"| {s['resume_s']:.1f} | {s['batches_done']:.1f} "
              f"| {max(f['rss_mb'], s['rss_mb']):,.0f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                        default=[500_000, 1_000_000, 2_000_000, 4_500_000],
                        help="training pairs, comma-separated (k, M suffixes)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="-j values")
    parser.add_argument("--vocab-size", type=int, default=37_000, help="the WMT14 default")
    parser.add_argument("--spm-sample", type=int, default=PrepareConfig.spm_sample,
                        help="sentences SentencePiece trains on, at most (nmt and baseline; "
                             "default: nmt's)")
    parser.add_argument("--valid-lines", type=int, default=500)
    parser.add_argument("--batch-tokens", type=int, default=4000)
    parser.add_argument("--no-train", action="store_true", help="skip the training rows")
    parser.add_argument("--train-sizes", type=lambda s: [parse_size(x) for x in s.split(",")],
                        help="sizes to train on (default: every size)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    for child in ("nmt", "baseline", "train"):
        parser.add_argument(f"--{child}-child", action="store_true", help=argparse.SUPPRESS)
    for option in ("--corpus", "--out", "--data", "--run"):
        parser.add_argument(option, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.nmt_child or args.baseline_child or args.train_child:
        args.jobs = args.jobs[0]
        (nmt_child if args.nmt_child else baseline_child if args.baseline_child
         else train_child)(args)
        return 0
    if not (DATA / "wmt" / "newstest2013.en").is_file():
        sys.exit(f"the shared data is not at {DATA} (set NMT_SHARED)")
    with tempfile.TemporaryDirectory(prefix="nmt-scale-", dir=args.work) as tmp:
        rows, prepared = prepare_rows(args, Path(tmp))
        add_ratios(rows)
        print_prepare(rows, args)
        if not args.no_train:
            print_train(train_rows(args, prepared, Path(tmp)), args)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
