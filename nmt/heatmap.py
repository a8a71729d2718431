"""`nmt attention`: attention heatmaps of one translation, as PNG files.

matplotlib (the optional `viz` extra) is imported inside the functions that draw, never when
`nmt` is imported. Figures are built with `matplotlib.figure.Figure` (no pyplot state, safe in
threads), rendered to PNG bytes and written with `nmt.files`; the output directory is filled
under a temporary name and published whole.

Files written for the kinds, layers and heads selected (layers and heads numbered from 1):
`{kind}-layer{L}-head{H}.png`, `{kind}-layer{L}-mean.png` (the head average), `overview.png`
(a grid of layers x heads, plus the mean, of the first kind selected) and `attention.json`
(the sentence, its translation, the tokens and the list of images).
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nmt.attention import KINDS, AttentionMaps
from nmt.errors import ConfigError
from nmt.search import SearchConfig

log = logging.getLogger(__name__)

TITLES = {"cross": "encoder-decoder attention", "encoder": "encoder self-attention",
          "decoder": "decoder self-attention"}
CELL = 0.32  # inches per token on each axis
MAX_SIDE = 24.0  # inches: longer sentences get smaller cells


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("drawing needs matplotlib: install nmt's `viz` extra "
                          "(pip install 'nmt[viz]')") from None
    return Figure


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


@dataclass
class Heatmap:
    """One rendered image and the tick labels drawn on it."""

    png: bytes
    row_labels: list[str]  # y axis, top to bottom
    column_labels: list[str]  # x axis, left to right


def heatmap(weights, row_labels: Sequence[str], column_labels: Sequence[str],
            title: str = "") -> Heatmap:
    """A (rows, columns) matrix of probabilities as one labelled heatmap with a colour bar."""
    import numpy as np

    w = np.asarray(weights, dtype=np.float32)
    rows, cols = w.shape
    if (rows, cols) != (len(row_labels), len(column_labels)):
        raise ConfigError(f"a {rows}x{cols} matrix needs {rows} row and {cols} column labels, "
                          f"got {len(row_labels)} and {len(column_labels)}")
    scale = min(1.0, MAX_SIDE / max(rows * CELL, cols * CELL, 1e-9))
    fig = _figure_class()(figsize=(2.5 + cols * CELL * scale, 1.5 + rows * CELL * scale))
    ax = fig.add_subplot()
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=max(float(w.max()), 1e-6),
                      aspect="auto", interpolation="nearest")
    fontsize = max(5.0, 9.0 * scale)
    ax.set_xticks(range(cols), list(column_labels), rotation=90, fontsize=fontsize)
    ax.set_yticks(range(rows), list(row_labels), fontsize=fontsize)
    ax.xaxis.tick_top()
    if title:
        ax.set_title(title, fontsize=10, pad=12)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    drawn_rows = [t.get_text() for t in ax.get_yticklabels()]
    drawn_cols = [t.get_text() for t in ax.get_xticklabels()]
    return Heatmap(_png(fig), drawn_rows, drawn_cols)


def overview(maps, row_labels: Sequence[str], column_labels: Sequence[str],
             title: str = "") -> bytes:
    """A grid of small heatmaps: one row per layer, one column per head and one for the mean;
    maps (L, H, rows, columns). Tokens label the first column and the last row."""
    import numpy as np

    m = np.asarray(maps, dtype=np.float32)
    n_layers, n_heads, rows, cols = m.shape
    side = min(2.6, max(1.4, 0.12 * max(rows, cols)))
    fig = _figure_class()(figsize=(1.2 + side * (n_heads + 1), 0.8 + side * n_layers))
    axes = fig.subplots(n_layers, n_heads + 1, squeeze=False)
    small = max(3.0, min(6.0, 120 / max(rows, cols)))
    for layer in range(n_layers):
        for head in range(n_heads + 1):
            ax = axes[layer][head]
            w = m[layer, head] if head < n_heads else m[layer].mean(0)
            ax.imshow(w, cmap="viridis", vmin=0.0, aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head + 1}" if head < n_heads else "mean", fontsize=8)
            if head == 0:
                ax.set_ylabel(f"layer {layer + 1}", fontsize=8)
                ax.set_yticks(range(rows), list(row_labels), fontsize=small)
            if layer == n_layers - 1:
                ax.set_xticks(range(cols), list(column_labels), rotation=90, fontsize=small)
    if title:
        fig.suptitle(title, fontsize=10)
    return _png(fig)


# --- nmt attention -------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class AttentionConfig:
    checkpoint: Path  # checkpoint directory
    text: str  # the sentence to translate
    out: Path  # output directory (replaced whole)
    kinds: tuple[str, ...] = KINDS  # which attentions to draw
    layer: int | None = None  # 1-based; None: every layer
    head: int | None = None  # 1-based; None: every head (the mean is always drawn)
    search: SearchConfig = field(default_factory=SearchConfig)
    max_len_a: float = 1.0
    max_len_b: int = 50
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"unknown attention kind {', '.join(bad) or '(none)'}; choose "
                              f"from {', '.join(KINDS)}")
        if not self.text.strip():
            raise ConfigError("give a sentence to translate")
        for name, value in (("layer", self.layer), ("head", self.head)):
            if value is not None and value < 1:
                raise ConfigError(f"--{name} counts from 1, got {value}")


@dataclass
class AttentionResult:
    maps: AttentionMaps
    out: Path
    files: list[str]  # names of the images written, overview first


def _select(total: int, chosen: int | None, what: str) -> list[int]:
    if chosen is None:
        return list(range(total))
    if chosen > total:
        raise ConfigError(f"--{what} {chosen}: the model has {total} {what}s")
    return [chosen - 1]


def render(maps: AttentionMaps, config: AttentionConfig) -> dict[str, bytes]:
    """File name -> PNG bytes for the selection in `config` (no file is written)."""
    images: dict[str, bytes] = {}
    first = config.kinds[0]
    weights, rows, cols = maps.of(first)
    images["overview.png"] = overview(weights.numpy(), rows, cols,
                                      f"{TITLES[first]}: {maps.translation}")
    for kind in config.kinds:
        weights, rows, cols = maps.of(kind)  # (L, H, rows, columns)
        n_layers, n_heads = weights.shape[:2]
        for layer in _select(n_layers, config.layer, "layer"):
            for head in _select(n_heads, config.head, "head"):
                images[f"{kind}-layer{layer + 1}-head{head + 1}.png"] = heatmap(
                    weights[layer, head].numpy(), rows, cols,
                    f"{TITLES[kind]}, layer {layer + 1}, head {head + 1}").png
            images[f"{kind}-layer{layer + 1}-mean.png"] = heatmap(
                weights[layer].mean(0).numpy(), rows, cols,
                f"{TITLES[kind]}, layer {layer + 1}, mean of {n_heads} heads").png
    return images


def run(config: AttentionConfig) -> AttentionResult:
    """Translate `config.text`, capture its attention and write the images to `config.out`."""
    import torch

    from nmt import files
    from nmt.attention import capture
    from nmt.translate import load_models, resolve_device, resolve_dtype

    _figure_class()  # fail before loading the model when matplotlib is missing
    torch.set_num_threads(config.threads or files.available_cores())
    device = resolve_device(config.device)
    ensemble, vocab = load_models((config.checkpoint,), device,
                                  resolve_dtype(config.precision, device))
    maps = capture(ensemble.models[0], vocab, config.text, config.search,
                   max_len_a=config.max_len_a, max_len_b=config.max_len_b)
    log.info("translation: %s", maps.translation)
    images = render(maps, config)
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError("exists and is not a directory", where=str(out))
    files.recover(out)
    tmp = files.temp_name(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, png in images.items():
            (tmp / name).write_bytes(png)
        summary = {"text": maps.text, "translation": maps.translation,
                   "source_tokens": maps.source_tokens, "target_tokens": maps.target_tokens,
                   "decoder_inputs": maps.decoder_inputs, "images": list(images)}
        (tmp / "attention.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1),
                                            encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise files.os_failure(exc, tmp) from None
    files.publish_directory(tmp, out)
    return AttentionResult(maps=maps, out=out, files=list(images))
