"""The translation parts of benchmarks/gpu_check.py: nmt beside CTranslate2, and their equality.

Both engines run through nmt's own commands: `nmt export CHECKPOINT --to ctranslate2 DIR` once
per model, then `nmt translate` with `--engine torch` (nmt) or `--engine ctranslate2` (nmt's
CTranslate2 engine, nmt/export/ct2_engine.py) on the same checkpoint's weights, the same input
file and the same search (SEARCH: beam 4, length penalty |Y|^0.6 with EOS counted, at most
source tokens + 50 output tokens, a sentence done once 4 hypotheses are). The speed is
sentences/s of the closing summary of `nmt translate`: the translation of the whole file,
model loading left out, first batches (warm-up) left in, alike for both engines.

`nmt translate --engine ctranslate2` hands CTranslate2 one `translate_batch` call per distinct
output-length limit (that is per source length, with max_len_a 1): exact, but smaller batches
than nmt's 6,000-token ones, which a GPU feels more than a CPU.

Where ctranslate2 does not import, or sees no GPU, its rows say so in one line and the nmt rows
still run. CTranslate2 4.x's Linux wheels are built with CUDA 12 and load `libcublas.so.12` at
their first product; an image whose torch is built on CUDA 13 has only `libcublas.so.13`:
`cublas_env` then links torch's cuBLAS under the CUDA 12 name for the CTranslate2 process (the
calls CTranslate2 makes keep their C signatures across the two majors) and says so in the row.
Whether that computes the right thing is what the equality part checks.
"""

from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

SEARCH = ("--beam", "4", "--lenpen", "0.6", "--lenpen-style", "fairseq", "--stopping",
          "finished", "--max-len-a", "1", "--max-len-b", "50")
SUMMARY = re.compile(r"translated ([\d,]+) lines \(([\d,]+) sentences, ([\d,]+) tokens\) in "
                     r"([\d.]+) s on (.+?): ([\d.]+) sentences/s")
MIN_IDENTICAL = 0.90  # the equality check: at least this share of lines word for word ...
MAX_BLEU_GAP = 0.5  # ... and BLEU against the reference within this of each other
CUBLAS = re.compile(r"libcublas(Lt)?\.so\.(\d+)(\.[\d.]+)?")


@dataclass
class Run:
    output: Path
    lines: int
    sentences: int
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sentences / max(self.seconds, 1e-9)


def ct2_status(device: str) -> str | None:
    """None when CTranslate2 can run on `device`, else why not (one line)."""
    try:
        import ctranslate2
    except ImportError:
        return ("ctranslate2 is not installed here (carry its wheel in .whl/: "
                "benchmarks/NOTES.md, GPU check)")
    except Exception as exc:  # a broken install: its own words, one line
        return f"ctranslate2 does not load ({type(exc).__name__}: {str(exc)[:150]})"
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        return f"ctranslate2 {ctranslate2.__version__} sees no GPU (a CPU-only build?)"
    return None


def cublas_links(folder: Path, loaded: list[str]) -> str | None:
    """Link the cuBLAS (and cuBLASLt) among `loaded` paths into `folder` under the CUDA 12
    names; the major version linked, or None when `loaded` has no cuBLAS."""
    found = {}
    for path in loaded:
        m = CUBLAS.fullmatch(os.path.basename(path))
        if m:
            found.setdefault(m[1] or "", (path, m[2]))
    if "" not in found:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for lt, (path, _) in found.items():
        link = folder / f"libcublas{lt}.so.12"
        link.unlink(missing_ok=True)
        link.symlink_to(path)
    return found[""][1]


def cublas_env(work: Path) -> tuple[dict[str, str], str]:
    """The environment for a CTranslate2 process on the GPU, and a note for its row."""
    try:
        ctypes.CDLL("libcublas.so.12")
        return {}, ""
    except OSError:
        pass
    x = torch.ones(8, 8, device="cuda")
    (x @ x).sum().item()  # torch has loaded its cuBLAS now
    with open("/proc/self/maps", encoding="utf-8") as f:
        loaded = sorted({line.split()[-1] for line in f if "/libcublas" in line})
    major = cublas_links(work / "cublas12", loaded)
    if major is None:
        return {}, "; no libcublas.so.12 here, nor a cuBLAS of torch's to link"
    env = {"LD_LIBRARY_PATH": os.pathsep.join(
        p for p in (str(work / "cublas12"), os.environ.get("LD_LIBRARY_PATH")) if p)}
    return env, f"; torch's cuBLAS {major} linked as libcublas.so.12"


def head(path: Path, n: int, dest: Path) -> list[str]:
    """The first `n` lines of `path`, also written to `dest`."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(n), f, strict=False)]
    dest.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return lines


def translate(ck, model: Path, src: Path, engine: str, precision: str, tag: str,
              env: dict[str, str] | None = None) -> Run:
    a = ck.args
    out = ck.work / f"{tag}-{engine}-{precision}.txt"
    done = ck.nmt("translate", "-c", str(model), "-i", str(src), "-o", str(out), "--engine",
                  engine, "--device", a.device, "--precision", precision, *SEARCH,
                  *(["--threads", "2"] if a.device == "cpu" else []), env=env)
    m = SUMMARY.search(done.stderr + done.stdout)
    if not m:
        raise RuntimeError("no closing summary from nmt translate")
    lines, sentences, tokens = (int(m[i].replace(",", "")) for i in (1, 2, 3))
    return Run(out, lines, sentences, tokens, float(m[4]))


def export(ck, model: Path, tag: str) -> Path:
    dest = ck.work / f"{tag}-ct2"
    if not dest.is_dir():
        ck.nmt("export", str(model), "--to", "ctranslate2", str(dest))
    return dest


def bleu(hyp: Path, refs: list[str]) -> float:
    import sacrebleu

    hyps = hyp.read_text(encoding="utf-8").splitlines()
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def identical(a: Path, b: Path) -> tuple[int, int]:
    """(lines equal word for word, lines) of two outputs of one input."""
    x = a.read_text(encoding="utf-8").splitlines()
    y = b.read_text(encoding="utf-8").splitlines()
    if len(x) != len(y):
        raise RuntimeError(f"{a.name} has {len(x)} lines, {b.name} {len(y)}")
    return sum(p == q for p, q in zip(x, y, strict=True)), len(x)


def nmt_row(ck, label: str, run: Run, what: str, refs: list[str]) -> None:
    ck.row(label, f"{run.rate:,.1f} sent/s",
           f"{run.lines:,} {what} lines in {run.seconds:.1f} s ({run.tokens / run.seconds:,.0f} "
           f"tokens/s); BLEU {bleu(run.output, refs):.2f}")


def ct2_run(ck, model: Path, src: Path, tag: str, label: str) -> tuple[Run | None, str]:
    """Export `model` and translate `src` with CTranslate2; (None, why) where it cannot."""
    why = ct2_status(ck.args.device)
    if why:
        ck.row(label, "not run", why)
        return None, ""
    ct2_dir = export(ck, model, tag)
    env, note = cublas_env(ck.work) if ck.args.device == "cuda" else ({}, "")
    precision = "fp16" if ck.args.device == "cuda" else "fp32"
    try:
        return translate(ck, ct2_dir, src, "ctranslate2", precision, tag, env=env), note
    except (RuntimeError, TimeoutError) as exc:
        ck.row(label, "FAILED", f"{exc}{note}")
        return None, ""


def base(ck) -> None:
    """Part 3: speed at base size, the bf16 training step's checkpoint, newstest2014."""
    a = ck.args
    model = ck.checkpoints.get("bf16")
    if model is None:
        raise RuntimeError("no checkpoint from the bf16 training part")
    src = ck.work / "newstest2014.en"
    head(a.data / "wmt" / "test.raw.en", a.lines, src)
    refs = head(a.data / "wmt" / "test.raw.de", a.lines, ck.work / "newstest2014.de")
    gpu = a.device == "cuda"
    runs = {}
    for precision in (["bf16", "fp16"] if gpu else ["fp32"]):
        runs[precision] = run = translate(ck, model, src, "torch", precision, "base")
        nmt_row(ck, f"translate base beam 4, nmt {precision}", run, "newstest2014", refs)
    label = f"translate base beam 4, CTranslate2 {'fp16' if gpu else 'fp32'}"
    ct2, note = ct2_run(ck, model, src, "base", label)
    if ct2 is None:
        return
    same = "fp16" if gpu else "fp32"
    equal, n = identical(runs[same].output, ct2.output)
    ratios = ", ".join(f"{ct2.rate / r.rate:.2f}x nmt {p}" for p, r in runs.items())
    ck.row(label, f"{ct2.rate:,.1f} sent/s",
           f"{ratios}; {ct2.lines:,} lines in {ct2.seconds:.1f} s; BLEU "
           f"{bleu(ct2.output, refs):.2f}; {equal}/{n} lines as nmt {same} (shown, not "
           f"checked: a {int(model.name.rsplit('-', 1)[-1])}-step model){note}")


def equality(ck) -> None:
    """Part 5: CTranslate2 and nmt at one precision on a trained model: the same translations."""
    a = ck.args
    model = ck.checkpoints.get("m30k")
    if model is None:
        raise RuntimeError("no checkpoint from the Multi30k part")
    data = a.data / "m30k"
    src = ck.work / "m30k-test.en"
    head(data / "test.raw.en", a.lines, src)
    refs = head(data / "test.raw.de", a.lines, ck.work / "m30k-test.de")
    precision = "fp16" if a.device == "cuda" else "fp32"
    run = translate(ck, model, src, "torch", precision, "m30k")
    nmt_row(ck, f"translate Multi30k tiny beam 4, nmt {precision}", run, "test_2016_flickr",
            refs)
    label = f"translate Multi30k tiny beam 4, CTranslate2 {precision}"
    ct2, note = ct2_run(ck, model, src, "m30k", label)
    check = f"CTranslate2 = nmt (Multi30k tiny, beam 4, {precision})"
    if ct2 is None:
        ck.row(check, "not run", "no CTranslate2 translation to compare")
        return
    ck.row(label, f"{ct2.rate:,.1f} sent/s",
           f"{ct2.rate / run.rate:.2f}x nmt {precision}; {ct2.lines:,} lines in "
           f"{ct2.seconds:.1f} s{note}")
    equal, n = identical(run.output, ct2.output)
    b_nmt, b_ct2 = bleu(run.output, refs), bleu(ct2.output, refs)
    ok = equal >= MIN_IDENTICAL * n and abs(b_nmt - b_ct2) <= MAX_BLEU_GAP
    ck.row(check, "PASS" if ok else "DIFFER",
           f"{equal}/{n} lines identical ({100 * equal / max(n, 1):.1f} %), BLEU nmt "
           f"{b_nmt:.2f}, CTranslate2 {b_ct2:.2f}; needs >= {100 * MIN_IDENTICAL:.0f} % and "
           f"a BLEU gap <= {MAX_BLEU_GAP}")
