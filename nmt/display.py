"""Everything `nmt` shows a person: Rich tables, progress bars, the live training panel, and the
one-line rendering of errors. The CLI calls these; stage modules never print.

Two consoles: `console` (stderr: progress, notices, errors) and `out` (stdout: results), so a
command's output can be piped while its progress stays on the terminal.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

console = Console(stderr=True)
out = Console()


def setup_logging(verbose: bool) -> None:
    """Library log records as plain Rich lines on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )


def error(message: str) -> None:
    """A failure: one red line on stderr."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def notice(message: str) -> None:
    """Something the user should know that is not a failure (a default chosen, a fallback)."""
    console.print(f"[cyan]note:[/] {escape(message)}", highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def plain(message: str, *, stderr: bool = True) -> None:
    """A line printed as it is (no markup, no highlighting)."""
    (console if stderr else out).print(message, highlight=False, markup=False, soft_wrap=True)


# --- prepare ---------------------------------------------------------------------------------
class Progress:
    """A stage's progress as a Rich bar on stderr (with an ETA when the total is known); one
    stage at a time. `nmt prepare` and `nmt translate` report through it."""

    def __init__(self) -> None:
        self._progress = None
        self._task = None

    def start(self, description: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.stop()
        columns = [TextColumn("{task.description:<16}"), BarColumn(),
                   TextColumn("{task.completed:>12,.0f}"), TimeElapsedColumn()]
        if total is not None:
            columns.append(TimeRemainingColumn())
        self._progress = Progress(*columns, console=console)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def corpora_table(specs) -> None:
    table = Table(title="nmt prepare: named corpora")
    table.add_column("corpus", no_wrap=True)
    table.add_column("train pairs", justify="right", no_wrap=True)
    table.add_column("valid / test (pairs)")
    table.add_column("source (Hugging Face)")
    table.add_column("vocab", justify="right", no_wrap=True)
    for s in specs:
        table.add_row(s.name, f"{s.sizes[0]:,}",
                      f"{s.eval_sets[0]} ({s.sizes[1]:,}) / {s.eval_sets[1]} ({s.sizes[2]:,})",
                      s.source.removeprefix("hf:"), f"{s.vocab_size:,}")
    out.print(table)
    plain("No download: nmt prepare sample-en-de (8,000/500/500 English-German pairs that "
          "nmt generates itself, for the quickstart)", stderr=False)
    plain("Your own data: nmt prepare local --src en --tgt de --train PREFIX --valid PREFIX "
          "[--test PREFIX] (PREFIX.en/PREFIX.de text, or parquet/json files, or --dataset DIR)",
          stderr=False)


def prepare_summary(summary) -> None:
    m = summary.manifest
    table = Table(title=f"nmt prepare: {m['corpus']} {m['src_lang']}→{m['tgt_lang']}")
    for column in ("split", "pairs", f"{m['src_lang']} tokens", f"{m['tgt_lang']} tokens",
                   "removed"):
        table.add_column(column, justify="left" if column in ("split", "removed") else "right")
    for name, split in m["splits"].items():
        removed = ", ".join(f"{k.replace('_', ' ')} {v:,}"
                            for k, v in split.get("filtered", {}).items() if v) or "-"
        table.add_row(name, f"{split['pairs']:,}", f"{split['src_tokens']:,}",
                      f"{split['tgt_tokens']:,}", removed)
    out.print(table)
    stages = Table(title="stages")
    for column in ("stage", "status", "seconds", "pairs/s"):
        stages.add_column(column, justify="left" if column in ("stage", "status") else "right")
    for r in summary.stages:
        rate = r.pairs_per_second
        stages.add_row(r.name, "ran" if r.ran else "up to date, skipped",
                       f"{r.seconds:.1f}" if r.ran else "-", f"{rate:,.0f}" if rate else "-")
    out.print(stages)
    plain(f"{summary.out}: {m['spm']['vocab_size']:,} SentencePiece pieces, {m['dtype']} "
          f"ids, content {m['content_hash'][:16]}", stderr=False)


# --- train -----------------------------------------------------------------------------------
class _TrainPanel:
    """The live panel: rebuilt from the latest numbers whenever Rich refreshes."""

    def __init__(self) -> None:
        self.stats: dict = {}

    def __rich__(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        s = self.stats
        if not s:
            return Text("starting...")
        eta = s.get("eta_s")
        eta_text = "-" if eta is None else (f"{eta / 3600:.1f} h" if eta >= 5400
                                            else f"{eta / 60:.1f} min")
        mem, best = s.get("gpu_mem_gb"), s.get("best_bleu")
        parts = [f"step {s['step']:,}/{s['max_steps']:,}", f"epoch {s['epoch']}",
                 f"loss {s['loss']:.3f}", f"ppl {s['ppl']:.2f}", f"lr {s['lr']:.2e}",
                 f"{s['tokens_per_s']:,.0f} tok/s",
                 f"{mem:.1f} GiB" if mem is not None else "cpu", f"ETA {eta_text}"]
        if best is not None:
            parts.append(f"best BLEU {best:.2f}")
        return Group(Text("  ".join(parts)),
                     ProgressBar(total=1000, completed=round(1000 * s["done"]), width=60))


class RichTrainReporter:
    """`nmt train` progress on rank 0: a Rich live display on a terminal, lines otherwise.

    It travels to spawned workers (pickled before any console exists)."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._live = None
        self._panel = None

    def setup(self, rank: int) -> None:
        if rank == 0:
            if not any(isinstance(h, RichHandler) for h in logging.getLogger().handlers):
                setup_logging(self.verbose)
        else:
            logging.basicConfig(level=logging.WARNING, format="%(message)s", force=True)

    def start(self, info: dict) -> None:
        from rich.live import Live

        resumed = f", resumed from {info['resumed_from']}" if info["resumed_from"] else ""
        plain(f"training {info['parameters']:,} parameters on {info['pairs']:,} pairs, "
              f"{info['world_size']} worker(s) on {info['device']}, {info['precision']}"
              f"{resumed}\n{info['layout']}")
        if console.is_terminal:
            self._panel = _TrainPanel()
            self._live = Live(self._panel, console=console, refresh_per_second=4)
            self._live.start()

    def progress(self, stats: dict) -> None:
        if self._panel is not None:
            self._panel.stats = stats

    def record(self, record: dict) -> None:
        from nmt.train import format_record

        if record["kind"] == "valid" or self._live is None or self.verbose:
            plain(format_record(record))

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def train_summary(result) -> None:
    table = Table(title="nmt train", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    hours = result.elapsed / 3600
    table.add_row("run", result.run)
    done = result.steps - result.start_step
    table.add_row("steps", f"{result.steps:,} ({done:,} in this invocation), "
                           f"epoch {result.epoch}")
    table.add_row("time", f"{result.elapsed:,.0f} s ({hours:.2f} h)")
    table.add_row("stopped by", result.signal or result.reason)
    table.add_row("batching", result.layout)
    if result.best_score is not None and result.best_score >= 0:
        table.add_row("best BLEU", f"{result.best_score:.2f} at step {result.best_step:,} "
                                   f"({Path(result.run) / 'best'})")
    elif result.best_score is not None:
        table.add_row("best valid loss", f"{-result.best_score:.3f} at step {result.best_step:,}")
    table.add_row("last checkpoint", result.last_checkpoint or "-")
    out.print(table)
    if result.signal:
        console.print(f"[yellow]stopped by {result.signal} at step {result.steps:,}; run the same "
                      f"command again to resume from {escape(str(result.last_checkpoint))}[/]",
                      highlight=False)


# --- average, translate, info ----------------------------------------------------------------
def average_summary(summary) -> None:
    steps = ", ".join(f"{s:,}" for s in summary.steps)
    plain(f"averaged {len(summary.inputs)} checkpoints (steps {steps}) into "
          f"{summary.output}: {summary.n_tensors} tensors, {summary.n_parameters:,} "
          f"parameters, {summary.seconds:.1f} s", stderr=False)


def translate_summary(stats) -> None:
    rate = stats.sentences / stats.seconds if stats.seconds else 0.0
    notes = [f"{n} {what}" for n, what in ((stats.truncated, "truncated"),
                                           (stats.replaced, "with bytes replaced"),
                                           (stats.failed, "failed")) if n]
    plain(f"translated {stats.lines:,} lines ({stats.sentences:,} sentences, "
          f"{stats.tokens:,} tokens) in {stats.seconds:.1f} s on {stats.device}: "
          f"{rate:.1f} sentences/s" + (f"; {', '.join(notes)}" if notes else ""))


def serve_stopped(stopped) -> None:
    """The one line `nmt serve` ends with (`nmt.serve.app.Stopped`)."""
    if stopped.signal is None:
        plain(f"nmt serve: stopped; {stopped.answered} translate request(s) answered")
        return
    plain(f"nmt serve: {stopped.signal}: finished the {stopped.in_flight} request(s) in flight "
          f"and stopped; {stopped.answered} translate request(s) answered")


def info_table(rows: list[tuple[str, str]]) -> None:
    table = Table(title="nmt checkpoint", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for field, value in rows:
        table.add_row(field, value)
    out.print(table)


# --- score -----------------------------------------------------------------------------------
def score_lines(report, level: float) -> None:
    """Each score with its signature (its 95% interval with --confidence, significance against
    a baseline with --baseline), as plain lines."""
    for s in report.scores:
        plain(s.text, stderr=False)
        kind = "variant" if "tok:nmt-" in s.signature else "sacreBLEU signature"
        plain(f"  {kind}: {s.signature}", stderr=False)
        if s.ci95 is not None:
            plain(f"  95% CI [{s.ci95[0]:.2f}, {s.ci95[1]:.2f}] by bootstrap resampling of the "
                  f"{report.lines:,} sentences", stderr=False)
        if s.significance is not None:
            plain(f"  {_significance_line(s, level)}", stderr=False)


def score_tables(report) -> None:
    """Scores, then examples, as Rich tables (the quickstart's closing view)."""
    scores = Table(title=f"{report.hypothesis}: {report.lines:,} lines")
    for column in ("metric", "score", "details"):
        scores.add_column(column)
    for s in report.scores:
        interval = "" if s.ci95 is None else f" [{s.ci95[0]:.2f}, {s.ci95[1]:.2f}]"
        scores.add_row(s.name, f"{s.score:.2f}{interval}", f"{s.text}\n{s.signature}")
    out.print(scores)
    table = Table(title="examples", show_lines=True)
    table.add_column("line", justify="right")
    if report.examples[0].source is not None:
        table.add_column("source")
    table.add_column("reference")
    table.add_column("hypothesis")
    for e in report.examples:
        cells = [str(e.line), *([e.source] if e.source is not None else []), e.reference,
                 e.hypothesis]
        table.add_row(*cells)
    out.print(table)


def score_failures(failures: list[str]) -> None:
    for failure in failures:
        console.print(f"[bold red]failed:[/] {escape(failure)}", highlight=False, soft_wrap=True)


def _significance_line(s, level: float) -> str:
    sig = s.significance
    low, high = sig.ci95
    verdict = (f"significant (p < {level:g})" if sig.significant
               else f"not significant (p >= {level:g})")
    better = (sig.difference > 0) == s.higher_is_better and sig.difference != 0
    word = "better" if better else "worse" if sig.difference else "equal"
    return (f"vs baseline {sig.baseline}: {sig.baseline_score:.2f} -> {s.score:.2f} "
            f"({sig.difference:+.2f} {word}, 95% CI [{low:+.2f}, {high:+.2f}]), "
            f"p = {sig.p_value:.4f} over {sig.samples} resamples: {verdict}")
