"""Recipes never rot: every `nmt` invocation in recipes/ names a real subcommand and real flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from nmt.cli import app

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def recipe_scripts() -> list[Path]:
    return sorted(RECIPES.rglob("*.sh"))


def nmt_invocations(script: Path) -> list[list[str]]:
    """Every `nmt ...` command line of a shell script, as argument lists (continuations joined)."""
    text = re.sub(r"\\\n", " ", script.read_text())
    calls = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        for segment in re.split(r"\s*(?:\|\||&&|\||;)\s*", line):
            try:
                words = shlex.split(segment, comments=True)
            except ValueError:
                continue
            if words[:1] == ["nmt"] or words[:3] == ["python", "-m", "nmt"]:
                calls.append(words[3:] if words[0] == "python" else words[1:])
    return calls


def test_there_are_recipes():
    names = {p.relative_to(RECIPES).as_posix() for p in recipe_scripts()}
    assert {"quickstart.sh", "wmt14-en-de/base.sh", "wmt14-en-de/big.sh"} <= names
    assert any(n.startswith("multi30k-en-de/") for n in names)


@pytest.mark.parametrize("script", recipe_scripts(),
                         ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_every_flag_a_recipe_uses_exists(script):
    group = typer.main.get_command(app)
    calls = nmt_invocations(script)
    assert calls, f"{script} runs no nmt command"
    for args in calls:
        command = group.commands.get(args[0])  # type: ignore[attr-defined]
        assert command is not None, f"{script}: unknown subcommand {args[0]!r}"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for word in args[1:]:
            if word.startswith("-") and word != "-" and not re.fullmatch(r"-\d.*", word):
                flag = word.split("=", 1)[0]
                assert flag in known, f"{script}: `nmt {args[0]}` has no option {flag}"


def test_wmt14_en_de_uses_the_papers_37k_vocabulary():
    from nmt.corpora import CORPORA

    assert CORPORA["wmt14-en-de"].vocab_size == 37000
    for script in ("base.sh", "big.sh"):
        calls = nmt_invocations(RECIPES / "wmt14-en-de" / script)
        prepare = next(c for c in calls if c[0] == "prepare")
        assert prepare[prepare.index("--vocab-size") + 1] == "37000"


def test_the_multi30k_reference_recipe_is_the_published_configuration():
    from nmt.train import load_config

    cfg = load_config(RECIPES / "multi30k-en-de" / "reference" / "config.json")
    m = cfg.model
    assert (m.n_encoder_layers, m.n_decoder_layers, m.d_model, m.d_ff, m.n_heads) == \
        (4, 4, 128, 256, 4)
    assert m.dropout == 0.3 and cfg.lr == 0.005 and cfg.lr_schedule == "inverse_sqrt"
    # two GPUs at --max-tokens 4096 each: 8,192 tokens per update
    assert cfg.warmup == 2000 and cfg.batch_tokens == 8192 and cfg.patience == 10
    assert cfg.max_steps == 8000  # --max-update 8000
    assert cfg.clip_norm == 25.0 and cfg.adam_eps == 1e-8  # that fairseq's defaults
    assert cfg.init == "fairseq"  # and its transformer's initialisation
    assert cfg.best_metric == "loss"  # fairseq's --patience follows the validation loss
    assert cfg.save_epochs and cfg.save_every >= cfg.max_steps  # validate once per epoch
    script = (RECIPES / "multi30k-en-de" / "reference" / "run.sh").read_text()
    for flag in ("--lowercase", "--moses-tokenize", "--vocab-size 10000", "--last 10",
                 "--beam 5", "--moses-bleu"):
        assert flag in script, flag
