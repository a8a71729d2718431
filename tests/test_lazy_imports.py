"""The optional extras (viz: matplotlib; serve: starlette, uvicorn) load only when used."""

import subprocess
import sys


def test_importing_the_cli_loads_no_optional_extra():
    code = ("import sys, nmt.cli, nmt.translate, nmt.attention; bad = [m for m in ("
            "'matplotlib', 'fastapi', 'starlette', 'uvicorn') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_of_every_command_loads_no_optional_extra():
    code = ("import sys; from typer.testing import CliRunner; from nmt.cli import app; "
            "r = CliRunner(); codes = [r.invoke(app, [c, '--help']).exit_code for c in "
            "('attention', 'plot', 'serve', 'translate')]; bad = [m for m in ("
            "'matplotlib', 'starlette', 'uvicorn') if m in sys.modules]; "
            "print(codes, bad); sys.exit(bool(bad) or any(codes))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
