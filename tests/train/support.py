"""Helpers shared by the training tests: prepared data, small runs, weight comparisons."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from nmt.checkpoint import list_checkpoints
from nmt.data import MANIFEST_FORMAT, TokenArrayWriter, token_dtype

# A model small enough for two CPU cores; dropout on, so resuming must restore the RNGs.
SMALL_MODEL = {"d_model": 32, "d_ff": 64, "n_heads": 4, "n_encoder_layers": 1,
               "n_decoder_layers": 1, "dropout": 0.1}


def write_prepared(path: Path, vocab, splits: dict, *, raw: dict | None = None,
                   name: str = "toy") -> Path:
    """A prepared directory in nmt/data.py's format: splits maps name -> (src ids, tgt ids)."""
    path.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(vocab))
    digest = hashlib.sha256(vocab.sha256.encode())
    info = {}
    for split, (src_ids, tgt_ids) in splits.items():
        for lang, ids in (("en", src_ids), ("de", tgt_ids)):
            with TokenArrayWriter(path / f"{split}.{lang}", dtype) as writer:
                for sentence in ids:
                    writer.append(sentence)
            digest.update((path / f"{split}.{lang}.bin").read_bytes())
        info[split] = {"pairs": len(src_ids), "src_tokens": sum(map(len, src_ids)),
                       "tgt_tokens": sum(map(len, tgt_ids))}
    for split, lines in (raw or {}).items():
        (path / f"{split}.raw.de").write_text("".join(f"{line}\n" for line in lines),
                                              encoding="utf-8")
    vocab.save(path / "spm.model")
    manifest = {"format": MANIFEST_FORMAT, "corpus": name, "src_lang": "en", "tgt_lang": "de",
                "dtype": dtype.name, "spm": {"file": "spm.model", "sha256": vocab.sha256,
                                             "vocab_size": len(vocab)},
                "splits": info, "settings": {}, "content_hash": digest.hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return path


def small_run(**changes) -> dict:
    values = {"model": SMALL_MODEL, "batch_tokens": 200, "max_steps": 6, "warmup": 10,
              "save_every": 3, "log_every": 1, "valid_bleu_lines": 4, "seed": 3}
    return {**values, **changes}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Equal to float tolerance. Key biases are skipped: softmax ignores them, so their true
    gradient is 0 and Adam turns the rounding noise left in it into full-size steps."""
    assert a.keys() == b.keys()
    for name in a:
        if not name.endswith("k_proj.bias"):
            assert torch.allclose(a[name], b[name], atol=1e-5), name


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_training(run_a: Path, run_b: Path) -> None:
    """Both runs wrote the same checkpoints, equal to float tolerance, and they trained."""
    a, b = list_checkpoints(run_a), list_checkpoints(run_b)
    assert [s for s, _ in a] == [s for s, _ in b] and len(a) >= 2
    for (_, path_a), (_, path_b) in zip(a, b, strict=True):
        assert_close(weights(path_a), weights(path_b))
    first, last = weights(a[0][1]), weights(a[-1][1])
    assert not torch.allclose(first["encoder.embed.tokens.weight"],
                              last["encoder.embed.tokens.weight"])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nmt", "train", *map(str, args)]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list_checkpoints(run)
        if found:
            return found[-1][0]
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.01)
    raise AssertionError("no checkpoint appeared")


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]
