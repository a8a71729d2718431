"""benchmarks/gpu_check.sh --device cpu --dry-run: every step runs and the table has every row."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import toy_pairs

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("matmul peak", "train fp32 (CPU stands in for bf16)",
        "train fp32 (CPU stands in for fp16)", "torch.compile (train step)",
        "translate greedy, nmt fp32", "translate beam 4, nmt fp32", "Multi30k tiny, 10s", "total")


def _prepare(tmp_path: Path) -> Path:
    """Toy stand-ins for .device/gpu-check: two prepared corpora and newstest lines."""
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
    (data / "newstest2014.en").write_text("".join(en + "\n" for en, _ in pairs[:12]))
    return data


@pytest.mark.slow
def test_gpu_check_dry_run_writes_every_row(tmp_path):
    data = _prepare(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out))
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu",
                           "--dry-run", "--data", str(data)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    table = (out / "gpu-check.md").read_text()
    assert done.returncode == 0, done.stdout + done.stderr + table
    assert "FAILED" not in table, table
    for row in ROWS:
        assert f"| {row} |" in table, (row, table)
    assert "falls" in table and "DOES NOT FALL" not in table
