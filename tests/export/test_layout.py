"""Export directories: replaced only when finished, and only an earlier export."""

from __future__ import annotations

import importlib.util

import pytest

from nmt import export
from nmt.errors import ConfigError
from nmt.export import ctranslate2 as ct2_export


def test_missing_extra_names_what_to_install(trained, tmp_path, monkeypatch):
    _, ckpt = trained
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("transformers", "ctranslate2")
                        else real(name, *a))
    for target, package in (("hf", "transformers"), ("ctranslate2", "ctranslate2")):
        with pytest.raises(ConfigError, match=f"`{package}`.*`export` extra"):
            export.run(ckpt, tmp_path / "out", to=target)
    with pytest.raises(ConfigError, match="`export` extra"):
        export.translate_ctranslate2(tmp_path, ["a"])


def test_force_replaces_only_an_earlier_export(ct2, trained, tmp_path):
    _, ckpt = trained
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="not an nmt export"):
        export.run(ckpt, precious, to="ctranslate2", force=True)
    assert (precious / "thesis.tex").read_text() == "years of work"
    with pytest.raises(ConfigError, match="holds the checkpoint"):
        export.run(ckpt, ckpt.parent, to="ctranslate2", force=True)
    assert ckpt.is_dir()


def test_failed_export_leaves_the_existing_output_alone(ct2, trained, tmp_path, monkeypatch):
    _, ckpt = trained
    out = export.run(ckpt, tmp_path / "ct2", to="ctranslate2")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ct2_export, "write_ctranslate2", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export.run(ckpt, out, to="ctranslate2", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ct2.lock", "ct2"]  # lock: unheld
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
