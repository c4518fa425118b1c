"""Rich progress bars with requests/s, tokens/s and ETA, a generated-token bar, and the final score table."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from evalsuite.runlog import RunResults


def _log_width() -> int | None:
    """160 columns when stderr (where this console writes) is a CI log: not a terminal, no COLUMNS.

    rich falls back to 80 columns there, and the score table's task and metric names then fold over
    several lines, which a grep of the log misses. A terminal, or COLUMNS, keeps rich's own width."""
    return 160 if not sys.stderr.isatty() and "COLUMNS" not in os.environ else None


console = Console(stderr=True, width=_log_width())


class RateColumn(ProgressColumn):
    """requests/s and tokens/s since the bar started."""

    def render(self, task: Any) -> Text:
        elapsed = task.elapsed or 0.0
        if task.fields.get("unit") == "tok":  # TokenMeter's bar: its steps are tokens
            rate = f"{task.completed / elapsed:8.1f} tok/s" if elapsed > 0 and task.completed else "-- tok/s"
            return Text(rate, style="cyan" if task.completed else "dim")
        if elapsed <= 0 or not task.completed:
            return Text("-- req/s", style="dim")
        tokens = task.fields.get("tokens", 0)
        return Text(f"{task.completed / elapsed:6.1f} req/s {tokens / elapsed:8.0f} tok/s", style="cyan")


def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class TokenMeter:
    """A bar of generated tokens that moves while a batch runs, and an early estimate of the whole.

    `wrap(done)` returns the `done` callback to hand the backend, with an `on_tokens(n)` attribute:
    a backend that can (the HF backend, once per decoding step) reports the tokens it has just
    generated, so a 1,280-token answer advances the bar before its request completes; backends that
    do not just call `done`. The bar's total is the token budget (max_tokens per sample) and drops by
    what each finished request left unused. When the first batch has finished, one line estimates
    the run from it. rich draws no bars into a CI log (no TTY) until the end, so there a plain
    status line is printed every `every` seconds instead.
    """

    def __init__(self, progress: Any, label: str, requests: Sequence[Any], every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.progress, self.label, self.every, self.clock = progress, label, every, clock
        self.budgets = [r.max_tokens * (r.n if r.temperature > 0 else 1) for r in requests]
        self.max_tokens = max((r.max_tokens for r in requests), default=0)
        self.total = sum(self.budgets)
        self.bar = progress.add_task(f"{label} tokens", total=self.total or None, unit="tok")
        self.tokens = self.finished = self.first_batch = self.first_tokens = self.reported = 0
        self.start = self.last_line = clock()
        self.first_batch_s: float | None = None  # set once the first batch is known to be over

    def wrap(self, done: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
        def counted(i: int, out: Any) -> None:
            done(i, out)
            self.request_done(i, out)

        counted.on_tokens = self.on_tokens  # type: ignore[attr-defined]
        return counted

    def on_tokens(self, n: int) -> None:
        """`n` tokens were generated (one decoding step of a batch)."""
        if not self.tokens:  # status lines count from the first token, not from the prompt's prefill
            self.last_line = self.clock()
        self.tokens += n
        self.progress.update(self.bar, completed=self.tokens)
        if self.finished and self.first_batch_s is None:  # a new batch started: the first one is over
            self.first_batch_s = self.clock() - self.start
            self._estimate()
        if not self.progress.console.is_terminal and self.clock() - self.last_line >= self.every:
            self.last_line = self.clock()
            self._status()

    def request_done(self, i: int, out: Any) -> None:
        self.finished += 1
        self.reported += out.tokens_out or 0
        self.tokens = max(self.tokens, self.reported)  # a backend without on_tokens still fills the bar
        if self.first_batch_s is None:
            self.first_batch, self.first_tokens = self.finished, self.tokens
        self.total = max(self.tokens, self.total - max(0, self.budgets[i] - (out.tokens_out or 0)))
        self.progress.update(self.bar, completed=self.tokens, total=self.total)

    def _estimate(self) -> None:
        elapsed = max(self.first_batch_s or 0.0, 1e-9)
        n = len(self.budgets)
        self.progress.console.print(
            f"{self.label}: ~{self.first_tokens / elapsed:.1f} tok/s on the first batch ({self.first_batch} of {n} "
            f"prompts in {_duration(elapsed)}); about {_duration(elapsed * n / self.first_batch)} for {n} prompts "
            f"at max_tokens {self.max_tokens}"
        )

    def _status(self) -> None:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.tokens / elapsed
        left = self.total - self.tokens
        eta = f", at most {_duration(left / rate)} left" if rate > 0 and left > 0 else ""
        self.progress.console.print(
            f"{self.label}: {self.finished}/{len(self.budgets)} prompts, {self.tokens} tokens generated, "
            f"{rate:.1f} tok/s{eta}"
        )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def titled_table(title: str) -> Table:
    """A table at least as wide as its title: rich wraps a title to the table's width, which would
    split a title such as the run directory's path over two lines."""
    return Table(title=title, title_justify="left", min_width=len(title))


def score_table(results: RunResults, title: str) -> Table:
    """Task / metric / value ± stderr / n, from the run log's tasks; errors and missing outputs flagged."""
    table = titled_table(title)
    for col, justify in (("task", "left"), ("metric", "left"), ("value", "right"), ("± stderr", "right"), ("n", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for task_name, task in results.tasks.items():
        for metric, m in task.metrics.items():
            arrow = "" if m.higher_is_better else " ↓"
            table.add_row(task_name, metric + arrow, _fmt(m.value), _fmt(m.stderr), str(m.n))
        if task.errors:
            table.add_row(task_name, "[red]errors[/red]", str(task.errors), "", "")
        if task.config.get("max_tokens_task_default") is not None:  # evalsuite.cpu_defaults shortened it
            table.add_row(task_name, "[yellow]max_tokens (CPU cap)[/yellow]", str(task.config.get("max_tokens")),
                          f"task's own {task.config['max_tokens_task_default']}", "")
        if task.truncated:
            table.add_row(task_name, "[yellow]cut off at max_tokens[/yellow]", f"{task.truncated}/{task.generations}", "", "")
        if task.missing:
            table.add_row(task_name, "[red]missing outputs[/red]", str(len(task.missing)), "", "")
    return table
