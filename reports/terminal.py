"""The terminal (rich) versions of the comparison table and the gate summary."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich import box
from rich.table import Table
from rich.text import Text

from evalsuite.reports.markdown import fmt_p

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison, MetricRow
    from evalsuite.reports.gate import GateResult

STYLE = {"pass": "green", "fail": "bold red", "skipped": "dim"}


def _short(x: float) -> str:
    return f"{x:.3f}"[1:] if 0 <= x < 1 else f"{x:.3f}"


def _score(est: object) -> Text:
    """'0.640 (.571–.703)': compact, so two runs fit an 80-column terminal."""
    if est is None or not math.isfinite(getattr(est, "value", math.nan)):
        return Text("-", style="dim")
    text = Text(f"{est.value:.3f}")  # type: ignore[attr-defined]
    lo, hi = est.lo, est.hi  # type: ignore[attr-defined]
    if math.isfinite(lo) and math.isfinite(hi):
        text.append(f" ({_short(lo)}–{_short(hi)})", style="dim")
    return text


def _delta(row: MetricRow, i: int, alpha: float = 0.05) -> Text:
    d = row.delta(i)
    if d is None or not math.isfinite(d):
        return Text("-", style="dim")
    test = row.tests[i]
    significant = test is not None and test.pvalue < alpha and d != 0 and not row.diagnostic
    style = ("green" if (d > 0) == row.higher_is_better else "red") if significant else ""
    return Text(f"{d:+.4f}" + ("" if test else " †"), style=style)


def comparison_table(comp: Comparison, include_groups: bool = True) -> Table:
    table = Table(title=f"{' vs '.join(comp.labels)}  (95% CI; Δ vs {comp.labels[0]}, paired)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    table.add_column("task", overflow="fold")
    table.add_column("metric", overflow="fold")
    for label in comp.labels:  # numbers never wrap: the name columns fold instead
        table.add_column(label, justify="right", no_wrap=True)
    for label in comp.labels[1:]:
        table.add_column(f"Δ {label}" if len(comp.labels) > 2 else "Δ", justify="right", no_wrap=True)
        table.add_column("p", justify="right", no_wrap=True)
    for row in comp.rows:
        if row.group is not None and not include_groups:
            continue
        cells: list[Text | str] = [row.task if row.group is None else f"  ↳ {row.group}", row.metric]
        cells += [_score(e) for e in row.estimates]
        for i in range(1, len(comp.runs)):
            cells += [_delta(row, i), fmt_p(row, i)]
        table.add_row(*cells, style="dim" if row.group else None)
    lost = sum(1 for c in comp.changed if c.direction == "lost")
    table.caption = (f"p: McNemar exact (0/1) or paired bootstrap; coloured when p < 0.05; † no per-sample scores. "
                     f"Changed verdicts: {lost} lost, {len(comp.changed) - lost} gained.")
    return table


def gate_table(result: GateResult) -> Table:
    """Numbers only, so it fits a CI log; the reasons follow as lines (`gate_notes`)."""
    comp = result.comparison
    verdict = "[bold red]FAIL[/]" if result.failed else "[bold green]PASS[/]"
    table = Table(title=f"gate {verdict}: {comp.labels[result.candidate]} vs baseline {comp.labels[0]}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("", "task", "metric"):
        table.add_column(col, overflow="fold")
    for col in ("baseline", "candidate", "Δ", "p"):
        table.add_column(col, justify="right", no_wrap=True)
    for c in result.checks:
        nums = [f"{v:.4f}" if v is not None and math.isfinite(v) else "-" for v in (c.baseline, c.candidate)]
        delta = f"{c.delta:+.4f}" if c.delta is not None and math.isfinite(c.delta) else "-"
        p = f"{c.pvalue:.3g}" if c.pvalue is not None and math.isfinite(c.pvalue) else "-"
        table.add_row(Text(c.status.upper(), style=STYLE[c.status]), c.name, c.metric, *nums, delta, p)
    return table


def gate_notes(result: GateResult) -> list[tuple[str, str]]:
    """(line, style) for every check that failed, was skipped, or passed only as noise."""
    return [(f"{c.status.upper()} {c.name} {c.metric}: {c.message}", STYLE[c.status]) for c in result.checks
            if c.status != "pass" or "not significant" in c.message]
