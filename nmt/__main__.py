"""Lets `python -m nmt ...` run the CLI where the console script is not installed."""

from nmt.cli import app

if __name__ == "__main__":
    app(prog_name="nmt")
