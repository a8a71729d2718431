"""Fixtures of the `nmt prepare` tests."""

from __future__ import annotations

import pytest

from nmt import prepare

from .helpers import config, toy_corpus


@pytest.fixture
def prepared(tmp_path):
    """A finished output directory of the toy corpus, and its input files."""
    files = toy_corpus(tmp_path)
    out = tmp_path / "out"
    prepare.run(config(out, files))
    return out, files
