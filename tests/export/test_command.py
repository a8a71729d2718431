"""`nmt export` from the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nmt.cli import app


def test_cli_exports_and_refuses_to_overwrite_without_force(ct2, trained, tmp_path):
    _, ckpt = trained
    runner = CliRunner()
    out = tmp_path / "ct2"
    args = ["export", str(ckpt), str(out), "--to", "ctranslate2", "--quantization", "int8"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (out / "model.bin").is_file() and (out / "spm.model").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    assert "Traceback" not in again.output
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert not [p for p in tmp_path.iterdir()  # no leftovers (the lock file stays, unlocked)
                if p.name.startswith(".") and p.name != ".ct2.lock"]


@pytest.mark.parametrize("args, message", [
    (["--to", "onnx"], "'onnx' is not one of 'hf', 'ctranslate2'"),
    (["--to", "hf", "--quantization", "int8"], "--quantization applies to --to ctranslate2"),
    (["--to", "ctranslate2", "--quantization", "int3"], "'int3' is not one of 'int8'"),
])
def test_cli_rejects_bad_options_in_one_line(trained, tmp_path, args, message):
    _, ckpt = trained
    result = CliRunner().invoke(app, ["export", str(ckpt), str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
