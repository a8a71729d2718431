"""`nmt attention`, `nmt plot` and `nmt serve` (the `viz` and `serve` extras)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nmt import display
from nmt.cli.common import (
    HARDWARE,
    IO,
    MODEL,
    SEARCH,
    AttentionKind,
    PlotAxis,
    Precision,
    TranslatePrecision,
    guarded,
    model_path,
)

ATTENTION_EXAMPLES = ("Example: [bold]nmt attention \"The animal didn't cross the street because "
    "it was too tired\" -o attention/[/] (the newest run's model)")


def attention(
    text: Annotated[str, typer.Argument(help="The sentence to translate.", show_default=False)],
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", help="Directory for the PNG heatmaps (replaced whole).",
        show_default=False, rich_help_panel=IO)],
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory. Default: as `nmt translate` picks one.",
        show_default=False, rich_help_panel=MODEL)] = None,
    kind: Annotated[list[AttentionKind] | None, typer.Option(
        "--kind", help="cross (encoder-decoder), encoder or decoder (self-attention); "
                       "repeatable. Default: all three.", show_default=False,
        rich_help_panel="Selection")] = None,
    layer: Annotated[int | None, typer.Option(
        "--layer", min=1, help="Only this layer (from 1). Default: every layer.",
        show_default=False, rich_help_panel="Selection")] = None,
    head: Annotated[int | None, typer.Option(
        "--head", min=1, help="Only this head (from 1); the head mean is always drawn. "
                              "Default: every head.", show_default=False,
        rich_help_panel="Selection")] = None,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1, help="Beam size.",
                                      rich_help_panel=SEARCH)] = 4,
    alpha: Annotated[float, typer.Option("--lenpen", help="Length penalty alpha.",
                                         rich_help_panel=SEARCH)] = 0.6,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.",
                                        rich_help_panel=HARDWARE)] = "auto",
    precision: Annotated[Precision, typer.Option(
        "--precision", help="auto: fp32 on CPU, bf16/fp16 on GPU.", rich_help_panel=HARDWARE)
    ] = Precision.auto,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
) -> None:
    """Translate one sentence and draw its attention as PNG heatmaps (the `viz` extra).

    Per layer, per head and the head mean, for each kind, plus an overview grid; the weights are
    the model's own attention probabilities while it decoded the final hypothesis.
    """
    from nmt import heatmap
    from nmt.attention import KINDS
    from nmt.search import SearchConfig

    model = model_path(checkpoint)
    kinds = tuple(k.value for k in kind) if kind else KINDS
    config = guarded(lambda: heatmap.AttentionConfig(
        checkpoint=model, text=text, out=out_dir, kinds=kinds, layer=layer, head=head,
        search=SearchConfig(beam=beam, alpha=alpha), device=device,
        precision=precision.value, threads=threads))
    result = guarded(heatmap.run, config)
    display.plain(result.maps.translation, stderr=False)
    display.plain(f"wrote {len(result.files)} images to {result.out} "
                  f"({result.out / 'overview.png'})")


PLOT_EXAMPLES = ("Examples: [bold]nmt plot runs/base -o curves.png[/]  ·  [bold]nmt plot "
    "runs/a runs/b --x time[/] (overlaid, against wall-clock time)")


def plot(
    runs: Annotated[list[Path], typer.Argument(
        help="Run directories of `nmt train` (their metrics.jsonl); several are overlaid.",
        show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="PNG file to write.")] = Path("curves.png"),
    x: Annotated[PlotAxis, typer.Option(
        "--x", help="step (updates) or time (wall-clock seconds).")] = PlotAxis.step,
) -> None:
    """Plot training curves: loss, perplexity, learning rate, validation BLEU and tokens/s
    (the `viz` extra)."""
    from nmt import plot as plot_stage

    result = guarded(plot_stage.run, runs, output, x.value)
    display.plain(f"wrote {result.output}: {', '.join(result.panels)} for "
                  f"{len(result.runs)} run(s)")


SERVE_EXAMPLES = ("Example: [bold]nmt serve -c runs/base/avg --port 8080[/], then open "
    "http://127.0.0.1:8080/, or POST {\"text\": [\"...\"]} (nmt) or {\"q\": \"...\", "
    "\"source\": \"en\", \"target\": \"de\"} (LibreTranslate) to /translate")
LIMITS, ACCESS = "Limits", "Access"


def serve(
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", "-c", help="Checkpoint directory. Default: as `nmt translate` picks one.",
        show_default=False, rich_help_panel=MODEL)] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Address to listen on. Default: 127.0.0.1 (this machine only); "
                       "any other address must be given here explicitly.",
        show_default=False, rich_help_panel="Server")] = None,
    port: Annotated[int, typer.Option("--port", help="TCP port.",
                                      rich_help_panel="Server")] = 8080,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", help="How long a request waits to be batched with others.",
        rich_help_panel="Server")] = 5.0,
    max_batch_lines: Annotated[int, typer.Option(
        "--max-batch-lines", min=1, help="Lines batched into one model call at most "
                                         "(1: no batching).",
        rich_help_panel="Server")] = 64,
    max_queued_lines: Annotated[int, typer.Option(
        "--max-queued-lines", help="Lines waiting at most; beyond, requests get 503.",
        rich_help_panel="Server")] = 2048,
    languages: Annotated[str | None, typer.Option(
        "--languages", help="SRC-TGT the model translates (e.g. en-de), for the LibreTranslate "
                            "API. Default: what the checkpoint's data records.",
        show_default=False, rich_help_panel="Server")] = None,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", help="On SIGTERM, seconds the requests in flight may still take.",
        rich_help_panel="Server")] = 30.0,
    max_lines: Annotated[int, typer.Option(
        "--max-lines", min=1, help="Sentences per request at most; beyond: 413.",
        rich_help_panel=LIMITS)] = 64,
    max_chars: Annotated[int, typer.Option(
        "--max-chars", min=1, help="Characters per sentence at most; beyond: 413.",
        rich_help_panel=LIMITS)] = 2000,
    max_body_kb: Annotated[int, typer.Option(
        "--max-body-kb", min=1, help="Request body size at most (KiB); beyond: 413.",
        rich_help_panel=LIMITS)] = 1024,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", help="Seconds a request body may take to arrive; beyond: 408.",
        rich_help_panel=LIMITS)] = 10.0,
    rate_limit: Annotated[int | None, typer.Option(
        "--rate-limit", min=1, help="Translate requests per minute per client address; "
                                    "beyond: 429. Default: no limit.",
        show_default=False, rich_help_panel=ACCESS)] = None,
    api_keys: Annotated[Path | None, typer.Option(
        "--api-keys", help="File of API keys, one a line: every translate request must then "
                           "send one as api_key (else 403). Default: no keys.",
        show_default=False, rich_help_panel=ACCESS)] = None,
    beam: Annotated[int, typer.Option("--beam", "-b", min=1,
                                      help="Default beam size of requests.",
                                      rich_help_panel=SEARCH)] = 4,
    alpha: Annotated[float, typer.Option("--lenpen", help="Default length penalty.",
                                         rich_help_panel=SEARCH)] = 0.6,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.",
                                        rich_help_panel=HARDWARE)] = "auto",
    precision: Annotated[TranslatePrecision, typer.Option(
        "--precision", help="auto: fp32 on CPU, bf16/fp16 on GPU; int8 on CPU.",
        rich_help_panel=HARDWARE)
    ] = TranslatePrecision.auto,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: all available cores).",
        show_default=False, rich_help_panel=HARDWARE)] = None,
) -> None:
    """Serve translations over HTTP with a web page (the `serve` extra): nmt's API and the
    LibreTranslate API; the model is loaded once and concurrent requests are batched
    together. SIGTERM finishes the requests in flight, then exits 0."""
    from nmt.serve import app as serve_app
    from nmt.serve.engine import Options
    from nmt.serve.guards import load_api_keys
    from nmt.serve.libre import parse_pair

    model = model_path(checkpoint)
    config = guarded(lambda: serve_app.ServeConfig(
        checkpoints=(model,), host=host or serve_app.LOOPBACK, port=port, device=device,
        precision=precision.value, threads=threads, max_wait_ms=max_wait_ms,
        max_batch_lines=max_batch_lines, max_queued_lines=max_queued_lines,
        max_lines=max_lines, max_chars=max_chars,
        max_body_bytes=max_body_kb * 1024, body_timeout_s=body_timeout, rate_limit=rate_limit,
        api_keys=load_api_keys(api_keys) if api_keys else (),
        languages=parse_pair(languages) if languages else None,
        shutdown_timeout_s=shutdown_timeout, defaults=Options(beam=beam, alpha=alpha)))
    display.serve_stopped(guarded(serve_app.run, config, explicit_host=host is not None))


def register(app: typer.Typer) -> None:
    """Add this module's commands to `app`."""
    app.command(epilog=ATTENTION_EXAMPLES)(attention)
    app.command(epilog=PLOT_EXAMPLES)(plot)
    app.command(epilog=SERVE_EXAMPLES)(serve)
