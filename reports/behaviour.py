"""The "Behaviour" block of compare, the HTML report and the trainer's table: each diagnostic per run,
its change against the baseline, and the hints (`evalsuite.diagnostics.changes` decides them).

Everything is recomputed from each run's samples.jsonl, so a run written before results.json had a
`diagnostics` section compares the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalsuite import diagnostics
from evalsuite.diagnostics import SPEC, Change
from evalsuite.reports.numbers import fmt_pvalue
from evalsuite.runlog import Diagnostic

if TYPE_CHECKING:
    from rich.table import Table

    from evalsuite.reports.compare import Comparison
    from evalsuite.rundir import RunLog


@dataclass
class Block:
    """One task's diagnostics: `values[name][i]` for run i, `changes[i - 1]` for run i against run 0."""

    task: str
    names: list[str]
    values: dict[str, list[Diagnostic | None]]
    changes: list[dict[str, Change]]
    hints: list[list[str]]  # per candidate run

    def change(self, name: str, i: int) -> Change | None:
        return self.changes[i - 1].get(name) if i >= 1 else None


def task_blocks(runs: Sequence[RunLog], labels: Sequence[str], tasks: Sequence[str]) -> list[Block]:
    """A block per task that generated text in any run (loglikelihood-only tasks have none)."""
    out = []
    for task in tasks:
        records = [run.records_for(task) for run in runs]
        summaries = [diagnostics.summarize(r) for r in records]
        names = [n for n in diagnostics.NAMES if any(n in s for s in summaries)]
        if not names:
            continue
        changes = [{c.name: c for c in diagnostics.changes(records[0], records[i], labels[0])} for i in range(1, len(runs))]
        out.append(Block(task, names, {n: [s.get(n) for s in summaries] for n in names}, changes,
                         [[c.hint for c in ch.values() if c.hint] for ch in changes]))
    return out


def blocks(comp: Comparison) -> list[Block]:
    """The comparison's blocks, computed once (the terminal, Markdown and HTML outputs all read them)."""
    if "_behaviour" not in comp.__dict__:
        comp.__dict__["_behaviour"] = task_blocks(comp.runs, comp.labels, comp.tasks)
    return comp.__dict__["_behaviour"]


# ---------------------------------------------------------------------------- formatting
def fmt_value(name: str, d: Diagnostic | None) -> str:
    if d is None or d.value is None or not math.isfinite(d.value):
        return "–"
    kind = SPEC[name].kind
    return f"{d.value:.1f}" if kind == "tokens" else f"{d.value:.2f}" if kind == "ratio" else f"{d.value:.1%}"


def fmt_change(name: str, c: Change | None) -> str:
    """'+12.0 (1.4x)' for lengths, '+5.0 pts' for rates, '-0.12' for distinct-2; '–' when a run lacks it."""
    if c is None or c.base is None or c.cand is None or c.base.value is None or c.cand.value is None:
        return "–"
    a, b = c.base.value, c.cand.value
    if SPEC[name].kind == "tokens":
        return f"{b - a:+.1f}" + (f" ({b / a:.1f}x)" if a > 0 else "")
    if SPEC[name].kind == "ratio":
        return f"{b - a:+.2f}"
    return f"{(b - a) * 100:+.1f} pts"


def fmt_p(c: Change | None) -> str:
    return fmt_pvalue(c.test.pvalue if c is not None and c.test is not None else None)


# ---------------------------------------------------------------------------- terminal and Markdown
def terminal_table(bs: Sequence[Block], labels: Sequence[str]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=f"Behaviour (Δ vs {labels[0]}, paired; not gated)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("task", overflow="fold")
    table.add_column("diagnostic", overflow="fold")
    for label in labels:
        table.add_column(label, justify="right", no_wrap=True)
    for label in labels[1:]:
        table.add_column(f"Δ {label}" if len(labels) > 2 else "Δ", justify="right", no_wrap=True)
        table.add_column("p", justify="right", no_wrap=True)
    for b in bs:
        for k, name in enumerate(b.names):
            cells = [b.task if k == 0 else "", SPEC[name].label] + [fmt_value(name, d) for d in b.values[name]]
            for i in range(1, len(labels)):
                c = b.change(name, i)
                cells += [fmt_change(name, c), fmt_p(c)]
            table.add_row(*cells)
    return table


def hint_lines(bs: Sequence[Block], labels: Sequence[str]) -> list[str]:
    """'gsm8k (cand): answers 2.1x longer than in base (40 -> 84 tokens)', one per hint."""
    return [f"{b.task}" + (f" ({labels[i + 1]})" if len(labels) > 2 else "") + f": {h}"
            for b in bs for i, hs in enumerate(b.hints) for h in hs]


def print_terminal(console: Any, comp: Comparison) -> None:
    """The block under compare's score table; nothing for runs without generated text."""
    from rich.markup import escape

    bs = blocks(comp)
    if not bs:
        return
    console.print(terminal_table(bs, comp.labels))
    for line in hint_lines(bs, comp.labels):
        console.print(f"[bold yellow]behaviour:[/] {escape(line)}", highlight=False, soft_wrap=True)


def markdown(comp: Comparison) -> str:
    """The block as Markdown (a table and the hints); "" for runs without generated text."""
    from evalsuite.reports.markdown import cell

    bs = blocks(comp)
    if not bs:
        return ""
    labels = comp.labels
    head = ["task", "diagnostic"] + [cell(label) for label in labels]
    for label in labels[1:]:
        head += [f"Δ {cell(label)}", "p"]
    lines = ["### Behaviour\n", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for b in bs:
        for name in b.names:
            cells = [cell(b.task), cell(SPEC[name].label)] + [fmt_value(name, d) for d in b.values[name]]
            for i in range(1, len(labels)):
                c = b.change(name, i)
                cells += [fmt_change(name, c), fmt_p(c)]
            lines.append("| " + " | ".join(cells) + " |")
    hints = hint_lines(bs, labels)
    lines.append("\nDiagnostics describe the answers; they are not metrics and are never gated. "
                 "A hint means a paired change beyond noise (p < 0.05) that is large enough to matter.\n")
    lines += [f"- ⚠️ {cell(h)}" for h in hints]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- HTML
def html_view(comp: Comparison) -> list[dict[str, Any]]:
    """Plain dicts for `templates/behaviour.html.j2`: one per task, rows of values and changes, hints."""
    out = []
    for b in blocks(comp):
        rows = []
        for name in b.names:
            changes = [b.change(name, i) for i in range(1, len(comp.labels))]
            rows.append({"name": name, "label": SPEC[name].label,
                         "cells": [fmt_value(name, d) for d in b.values[name]],
                         "changes": [{"delta": fmt_change(name, c), "p": fmt_p(c), "hint": bool(c and c.hint)}
                                     for c in changes]})
        out.append({"task": b.task, "rows": rows, "hints": hint_lines([b], comp.labels)})
    return out
