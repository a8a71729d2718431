"""The working directory as a workspace: which model translate, export and info use."""

import os
import time

import pytest
from typer.testing import CliRunner

from nmt import workspace
from nmt.checkpoint import save_checkpoint
from nmt.cli import app

runner = CliRunner()


def _ckpt(path, model, vocab, step):
    return save_checkpoint(path, model, vocab, {"step": step})


def test_model_choice_order(tmp_path, tiny_model, tiny_vocab, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(workspace.CHECKPOINT_ENV, raising=False)
    with pytest.raises(workspace.WorkspaceError, match="no model: pass -c"):
        workspace.default_model(None)
    old, new = tmp_path / "runs" / "old", tmp_path / "runs" / "new"
    _ckpt(old / "checkpoints" / "step-00000010", tiny_model, tiny_vocab, 10)
    time.sleep(0.05)
    _ckpt(new / "checkpoints" / "step-00000010", tiny_model, tiny_vocab, 10)
    _ckpt(new / "checkpoints" / "step-00000020", tiny_model, tiny_vocab, 20)
    os.utime(old / "checkpoints" / "step-00000010", (1, 1))  # old is older
    choice = workspace.default_model(None)
    assert choice.path.as_posix() == "runs/new/checkpoints/step-00000020"
    _ckpt(new / "best", tiny_model, tiny_vocab, 10)
    assert workspace.default_model(None).path.as_posix() == "runs/new/best"
    _ckpt(new / "avg", tiny_model, tiny_vocab, 20)
    assert workspace.default_model(None).path.as_posix() == "runs/new/avg"
    monkeypatch.setenv(workspace.CHECKPOINT_ENV, str(old / "checkpoints" / "step-00000010"))
    assert workspace.default_model(None).why == "$NMT_CHECKPOINT"
    assert workspace.default_model(tmp_path / "x").path == tmp_path / "x"


def test_info_and_translate_say_which_model_they_chose(tmp_path, tiny_model, tiny_vocab,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(workspace.CHECKPOINT_ENV, raising=False)
    result = runner.invoke(app, ["translate"], input="A man .\n")
    assert result.exit_code == 2 and "no model: pass -c" in result.output
    _ckpt(tmp_path / "runs" / "r" / "avg", tiny_model, tiny_vocab, 7)
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "model: runs/r/avg (the newest run in ./runs)" in result.output
    result = runner.invoke(app, ["translate", "--beam", "1", "--max-len-b", "3", "-q"],
                           input="A man .\n")
    assert result.exit_code == 0, result.output
    assert "model: runs/r/avg" in result.stderr and len(result.stdout.splitlines()) == 1


def test_prepared_corpora_and_runs_are_found(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "manifest.json").write_text("{}")
    (tmp_path / "data" / "not-prepared").mkdir()
    assert [p.name for p in workspace.prepared_corpora(tmp_path)] == ["a"]
    assert workspace.default_data(tmp_path).path.as_posix() == "data/a"
    assert workspace.default_run("data/a", "big").as_posix() == "runs/a-big"
