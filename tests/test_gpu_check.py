"""benchmarks/gpu_check.sh: its FLOP count, its time budget, its CTranslate2 plumbing, and the
`--device cpu --dry-run` table (every part, its columns and the equality check): invariants, not
timings."""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_pairs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402
import gpu_check_translate  # noqa: E402

ROWS = ("matmul peak", "train fp32 (CPU stands in for bf16)", "translate base beam 4, nmt fp32",
        "translate base beam 4, CTranslate2 fp32", "Multi30k tiny, 10s",
        "translate Multi30k tiny beam 4, nmt fp32",
        "translate Multi30k tiny beam 4, CTranslate2 fp32",
        "CTranslate2 = nmt (Multi30k tiny, beam 4, fp32)",
        "train fp32 (CPU stands in for fp16)", "torch.compile (train step)", "total")


def test_train_flops_is_what_torch_counts():
    """The formula against FlopCounterMode on a forward + backward without padding (the math
    attention path, whose products the counter sees)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from nmt.config import preset
    from nmt.model import Transformer

    for cfg, (b, s, t) in ((preset("tiny", vocab_size=320), (3, 7, 5)),
                           (preset("tiny", vocab_size=500, d_ff=384, n_decoder_layers=2),
                            (2, 4, 9))):
        model = Transformer(cfg)
        src = torch.randint(4, cfg.vocab_size, (b, s))
        tgt = torch.randint(4, cfg.vocab_size, (b, t))
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(src, tgt).float().sum().backward()
        want = gpu_check.train_flops(cfg, np.full(b, s), np.full(b, t))
        assert counter.get_total_flops() == pytest.approx(want, rel=1e-9)


def _check(tmp_path: Path, budget: float) -> gpu_check.Check:
    args = argparse.Namespace(out=tmp_path, work=tmp_path / "work", budget=budget,
                              device="cpu", dry_run=True)
    return gpu_check.Check(args)


def test_a_part_is_stopped_at_its_share_of_the_budget(tmp_path):
    ck = _check(tmp_path, budget=gpu_check.TOTAL / 150)  # train bf16's share: 1 s
    started = time.perf_counter()
    ck.step("train bf16", lambda: ck.run([sys.executable, "-c", "import time; time.sleep(60)"]))
    assert time.perf_counter() - started < 20
    check, result, wall, budget, detail = ck.rows[-1]
    assert (check, result, budget) == ("train bf16", "TIMED OUT", "1"), ck.rows
    assert "stopped after 1 s" in detail and float(wall) >= 1.0
    ck.deadline = time.perf_counter()  # the whole budget spent: later parts are skipped
    ck.step("torch.compile", lambda: pytest.fail("ran after the budget"))
    assert ck.rows[-1][:2] == ("torch.compile", "SKIPPED")


def test_a_failed_command_is_one_line(tmp_path):
    ck = _check(tmp_path, budget=600)
    ck.step("train fp16", lambda: ck.nmt("train", str(tmp_path / "nowhere")))
    check, result, _, _, detail = ck.rows[-1]
    assert result == "FAILED" and detail.startswith("RuntimeError: nmt train exited 2: ")
    assert "\n" not in detail


def test_ct2_status_without_ctranslate2(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import raises ImportError
    why = gpu_check_translate.ct2_status("cuda")
    assert why and "not installed" in why and "\n" not in why


def test_cublas_links_name_the_cuda13_library_as_12(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("libcublas.so.13", "libcublasLt.so.13.1.0.3", "libcudart.so.13"):
        (lib / name).write_bytes(b"")
    loaded = [str(p) for p in sorted(lib.iterdir())]
    links = tmp_path / "links"
    assert gpu_check_translate.cublas_links(links, loaded) == "13"
    assert (links / "libcublas.so.12").resolve() == lib / "libcublas.so.13"
    assert (links / "libcublasLt.so.12").resolve() == lib / "libcublasLt.so.13.1.0.3"
    assert gpu_check_translate.cublas_links(tmp_path / "none", loaded[2:]) is None


def _prepare(tmp_path: Path) -> Path:
    """Toy stand-ins for .device/gpu-check: two prepared corpora."""
    data, raw = tmp_path / "data", tmp_path / "raw"
    raw.mkdir()
    pairs = toy_pairs()
    for split, rows in (("train", pairs), ("valid", pairs[::10]), ("test", pairs[::15])):
        (raw / f"{split}.en").write_text("".join(en + "\n" for en, _ in rows))
        (raw / f"{split}.de").write_text("".join(de + "\n" for _, de in rows))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ("wmt", "m30k"):
        subprocess.run([sys.executable, "-m", "nmt", "prepare", "local", "--src", "en", "--tgt",
                        "de", "--train", str(raw / "train"), "--valid", str(raw / "valid"),
                        "--test", str(raw / "test"), "--vocab-size", "320", "--out",
                        str(data / name), "-j", "1"], check=True, env=env, cwd=ROOT,
                       capture_output=True)
    return data


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_row(tmp_path):
    pytest.importorskip("ctranslate2")
    data = _prepare(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out))
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
                           "--dry-run", "--data", str(data), "--work", str(tmp_path / "work"),
                           "--lines", "12"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    table = (out / "gpu-check.md").read_text()
    assert done.returncode == 0, done.stdout + done.stderr + table
    lines = table.splitlines()
    assert "| check | result | wall s | budget s | detail |" in lines
    rows = {}
    for line in lines[lines.index("|---|---|---|---|---|") + 1:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 5, line
        rows[cells[0]] = cells
    assert tuple(rows) == ROWS, table
    assert not any(bad in r[1] for r in rows.values() for bad in gpu_check.BAD), table
    # every part's first row states its share of the budget; the walls add up to the total
    for first in ("matmul peak", "train fp32 (CPU stands in for bf16)",
                  "translate base beam 4, nmt fp32", "Multi30k tiny, 10s",
                  "translate Multi30k tiny beam 4, nmt fp32", "torch.compile (train step)"):
        assert float(rows[first][3]) > 0, rows[first]
    walls = sum(float(r[2]) for name, r in rows.items() if name != "total")
    assert walls == pytest.approx(float(rows["total"][2]), abs=2.0)
    assert "MFU" in rows["train fp32 (CPU stands in for bf16)"][1]
    assert "GFLOP per target token" in rows["train fp32 (CPU stands in for bf16)"][4]
    for name in ROWS[2:4] + ROWS[5:7]:
        assert rows[name][1].endswith(" sent/s"), rows[name]
    assert "x nmt fp32" in rows["translate base beam 4, CTranslate2 fp32"][4]
    # the equality check: the same model, input and search in both engines, fp32 on a CPU
    check = rows["CTranslate2 = nmt (Multi30k tiny, beam 4, fp32)"]
    equal, n = re.match(r"(\d+)/(\d+) lines identical", check[4]).groups()
    assert check[1] == "PASS" and equal == n and int(n) > 0, check
    assert "falls" in table and "DOES NOT FALL" not in table
