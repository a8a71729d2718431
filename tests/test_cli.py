import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nmt import __version__
from nmt.checkpoint import save_checkpoint
from nmt.cli import app

runner = CliRunner()
COMMANDS = ["prepare", "train", "average", "translate", "score", "info"]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_help_lists_the_subcommands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_info_on_a_written_checkpoint(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab,
                           {"step": 1234, "data": {"name": "toy", "src_lang": "en",
                                                   "tgt_lang": "de", "content_hash": "f" * 64}})
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    n_params = sum(p.numel() for p in tiny_model.parameters())
    for text in (f"{n_params:,}", "1,234", "toy en-de", "post-norm", str(len(tiny_vocab))):
        assert text in result.output
    for name, meta, says in (
            ("end", {"step": 58, "epoch": 2, "epoch_end": True}, "58 (end of epoch 1)"),
            ("mid", {"step": 61, "epoch": 2, "epoch_end": False}, "61 (in epoch 2)"),
            ("old", {"step": 58, "epoch": 2}, "58 (epoch 2)")):
        save_checkpoint(tmp_path / name, tiny_model, tiny_vocab, meta)
        assert says in runner.invoke(app, ["info", str(tmp_path / name)]).output


def test_info_on_a_broken_checkpoint_is_one_line_exit_2(tmp_path, tiny_model, tiny_vocab):
    path = save_checkpoint(tmp_path / "ck", tiny_model, tiny_vocab, {"step": 1})
    (path / "model.safetensors").write_bytes(b"\x00" * 10)
    proc = subprocess.run([sys.executable, "-m", "nmt", "info", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model.safetensors" in lines[0], proc.stderr


def test_info_on_a_missing_checkpoint(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such checkpoint" in result.output


def test_train_help_shows_panels_and_preset_defaults_that_match_the_recipes():
    from nmt.cli.training import PRESET_DEFAULTS
    from nmt.train import recipe

    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    for panel in ("Data", "Model", "Optimisation", "Schedule", "Checkpoints", "Hardware",
                  "Logging"):
        assert f"─ {panel} " in result.output, panel
    assert "base|big|small|tiny" in result.output
    for field, text in PRESET_DEFAULTS.items():
        for part in text.split(", "):
            names, value = part.rsplit(" ", 1)
            for name in names.split("/"):
                cfg = recipe(name)
                got = cfg.model.dropout if field == "dropout" else getattr(cfg, field)
                assert float(value) == got, (field, name)
        flat = " ".join(result.output.replace("│", " ").split())
        assert PRESET_DEFAULTS[field] in flat, field


@pytest.mark.parametrize("command", [*COMMANDS, "export"])
def test_every_command_shows_an_example(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert f"nmt {command}" in result.output.split("Example", 1)[-1]
