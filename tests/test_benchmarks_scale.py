"""benchmarks/scale.py at tiny sizes: its corpora, and both tables' rows and ratios (timings are
never asserted, only that they are there and agree with each other)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("benchmark_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of `text`: its rows (header and rule left out) as cells."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append([cell.strip() for cell in line.strip("|").split("|")])
        else:
            current = None
    return [table[2:] for table in tables]


def _run(shared_data: Path, *args: str) -> list[list[list[str]]]:
    env = {**os.environ, "NMT_SHARED": str(shared_data), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--vocab-size", "400", "--spm-sample",
                           "2000", "--valid-lines", "40", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return _tables(done.stdout)


def test_sizes_and_labels(scale):
    assert [scale.parse_size(s) for s in ("4.5M", "500k", "20K", "1_000", "2m")] == [
        4_500_000, 500_000, 20_000, 1000, 2_000_000]
    assert [scale.label(n) for n in (4_500_000, 500_000, 20_000, 999)] == [
        "4.5M", "500k", "20k", "999"]


def test_a_corpus_is_the_same_on_every_run_and_a_prefix_of_a_larger_one(scale, shared_data,
                                                                        tmp_path):
    small = scale.build_corpus(tmp_path / "small", 30_000, 1, 40, shared_data)
    again = scale.build_corpus(tmp_path / "again", 30_000, 1, 40, shared_data)
    large = scale.build_corpus(tmp_path / "large", 130_000, 1, 40, shared_data)  # two blocks
    for lang in ("en", "de"):
        lines = (small / f"train.{lang}").read_text(encoding="utf-8").split("\n")
        assert len(lines) == 30_001 and lines[-1] == ""
        assert (again / f"train.{lang}").read_bytes() == (small / f"train.{lang}").read_bytes()
        big = (large / f"train.{lang}").read_text(encoding="utf-8").split("\n")
        assert len(big) == 130_001 and big[:30_000] == lines[:30_000]
        assert len((small / f"valid.{lang}").read_text(encoding="utf-8").split("\n")) == 41
    pool = set(scale.pool(shared_data)[0])
    joined = [line for line in lines[:-1] if line not in pool]
    assert 0 < len(joined) < len(lines)  # some pairs are two pool pairs joined, most are one


def _close(ratio: str, top: str, bottom: str, error: float = 0.05) -> bool:
    """`ratio` ("1.23x", "1.23") agrees with top / bottom, both printed rounded to `error`."""
    t, b, r = (float(x.rstrip("x").replace(",", "")) for x in (top, bottom, ratio))
    if b <= error:
        return True
    return (t - error) / (b + error) - 0.01 <= r <= (t + error) / (b - error) + 0.01


@pytest.mark.slow
def test_the_prepare_table_has_every_run_and_consistent_ratios(shared_data):
    [table] = _run(shared_data, "--sizes", "3k,6k", "--jobs", "1", "2", "--no-train")
    keys = [(row[0], row[1], row[2]) for row in table]
    assert sorted(keys) == sorted((size, tool, jobs) for size in ("3k", "6k")
                                  for tool in ("baseline", "nmt") for jobs in ("1", "2"))
    by_key = dict(zip(keys, table, strict=True))
    for (size, tool, jobs), row in by_key.items():
        wall, cpu, stages, vs_wall, vs_cpu, rss, pss, growth, rss_growth = row[3:]
        assert float(wall) > 0 and float(cpu) > 0 and float(rss) > 0 and float(pss) > 0
        clean, spm, encode = stages.split(" / ")
        assert (clean == "-") == (tool == "baseline") and float(spm) >= 0 and float(encode) > 0
        base = by_key[(size, "baseline", jobs)]
        assert _close(vs_wall, wall, base[3]) and _close(vs_cpu, cpu, base[4])
        if tool == "baseline":
            assert vs_wall == vs_cpu == "1.00x"
        first = by_key[("3k", tool, jobs)]
        if size == "3k":
            assert growth == rss_growth == "1.00"
        else:  # CPU seconds per pair and peak RSS against the smallest size
            assert _close(growth, str(float(cpu) / 2), first[4])
            assert _close(rss_growth, rss, first[8], error=0.5)


@pytest.mark.slow
def test_the_training_table_times_start_up_save_and_resume(shared_data):
    prepare, train = _run(shared_data, "--sizes", "2k,4k", "--jobs", "1", "--train-sizes",
                          "4k", "--batch-tokens", "600")
    assert len(prepare) == 4
    [row] = train
    size, start_up, parts, first, checkpoint, save, resume, resumed, rss = row
    assert size == "4k"
    assert sum(float(p) for p in parts.split(" / ")) <= float(start_up) + 0.1
    assert float(first) > 0 and float(save) > 0 and float(resume) > 0
    assert float(resumed) >= float(resume) - 0.1
    total, state = checkpoint.rstrip(")").split(" (")
    assert 0 < float(state.replace(",", "")) < float(total.replace(",", ""))
    assert float(rss.replace(",", "")) > 0
