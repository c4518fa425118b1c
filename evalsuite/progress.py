"""Rich progress bars with requests/s, tokens/s and ETA, and the final score table."""

from __future__ import annotations

import math
import os
import sys
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
        if task.truncated:
            table.add_row(task_name, "[yellow]cut off at max_tokens[/yellow]", f"{task.truncated}/{task.generations}", "", "")
        if task.missing:
            table.add_row(task_name, "[red]missing outputs[/red]", str(len(task.missing)), "", "")
    return table
