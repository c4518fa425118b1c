"""Markdown (GitHub-flavoured) comparison table and gate summary, for PR comments and CI job summaries."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from evalsuite.reports.numbers import fmt_pvalue

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison, MetricRow
    from evalsuite.reports.gate import GateResult

ICONS = {"pass": "✅", "fail": "❌", "skipped": "⏭️"}


def cell(text: object) -> str:
    """Escape what would break a table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def code(text: object) -> str:
    """An inline code span outside a table (no pipe escaping there: it would show)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


def fmt_score(est: object) -> str:
    if est is None or not math.isfinite(getattr(est, "value", math.nan)):
        return "–"
    lo, hi = est.lo, est.hi  # type: ignore[attr-defined]
    ci = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f"{est.value:.4f}{ci}"  # type: ignore[attr-defined]


def fmt_delta(row: MetricRow, i: int) -> str:
    d = row.delta(i)
    if d is None or not math.isfinite(d):
        return "–"
    test = row.tests[i]
    if test is None:
        return f"{d:+.4f} (no paired test)"
    good = (d > 0) == row.higher_is_better
    mark = "" if test.pvalue >= 0.05 or d == 0 or row.diagnostic else (" ▲" if good else " ▼")
    return f"{d:+.4f}{mark}"


def fmt_p(row: MetricRow, i: int) -> str:
    test = row.tests[i]
    return fmt_pvalue(test.pvalue if test is not None else None)


def comparison_table(comp: Comparison, include_groups: bool = True) -> str:
    head = ["task", "metric"] + [f"{cell(label)} (95% CI)" for label in comp.labels]
    for label in comp.labels[1:]:
        head += [f"Δ {cell(label)}", "p"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for row in comp.rows:
        if row.group is not None and not include_groups:
            continue
        cells = [cell(row.label if row.group is None else f"↳ {row.label}"), cell(row.metric)]
        cells += [fmt_score(e) for e in row.estimates]
        for i in range(1, len(comp.runs)):
            cells += [fmt_delta(row, i), fmt_p(row, i)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _warnings(comp: Comparison) -> str:
    return "".join(f"> ⚠️ **Warning:** {w}\n>\n" for w in comp.warnings)


def render_markdown(comparison: Comparison, gate_result: GateResult | None = None,
                    include_groups: bool | None = None) -> str:
    """The comparison as Markdown; with a gate result, the verdict and its checks first.

    Subtask rows are shown by default without a gate (`include_groups=None`), left out with one.
    """
    comp = comparison
    parts = []
    if gate_result is not None:
        parts.append(gate_markdown(gate_result))
    parts.append(f"### evalsuite compare: {' vs '.join(code(label) for label in comp.labels)}\n")
    if comp.warnings:
        parts.append(_warnings(comp))
    parts.append(comparison_table(comp, include_groups=gate_result is None if include_groups is None
                                  else include_groups))
    parts.append(f"\nΔ: run minus baseline ({code(comp.labels[0])}), paired by sample; p: McNemar exact (0/1 scores) "
                 "or paired bootstrap; ▲/▼ significant at 0.05.\n")
    if comp.changed:
        lost = sum(1 for c in comp.changed if c.direction == "lost")
        parts.append(f"Changed verdicts: {lost} lost, {len(comp.changed) - lost} gained.\n")
    from evalsuite.reports.behaviour import markdown as behaviour_markdown

    if block := behaviour_markdown(comp):
        parts.append(block)
    for label, lines in comp.decontamination.items():
        parts.append(f"Decontamination of {code(label)}'s training data:\n\n"
                     + "".join(f"- {line.strip()}\n" for line in lines))
    if comp.human:
        from evalsuite.reports.human import markdown as human_markdown

        parts.append(human_markdown(comp.human))
    return "\n".join(parts)


def gate_markdown(result: GateResult) -> str:
    comp = result.comparison
    base, cand = comp.labels[0], comp.labels[result.candidate]
    verdict = "❌ **FAIL**" if result.failed else "✅ **PASS**"
    lines = [f"## evalsuite gate: {verdict}\n",
             f"Baseline {code(base)} → candidate {code(cand)}: {len(result.checks)} checks, "
             f"{len(result.failed)} failed.\n"]
    if comp.warnings or result.warnings:
        lines.append(_warnings(comp) + "".join(f"> ⚠️ **Warning:** {w}\n>\n" for w in result.warnings))
    lines += ["| | task | metric | baseline | candidate | Δ | p | detail |", "|---|---|---|---:|---:|---:|---:|---|"]
    order = {"fail": 0, "pass": 1, "skipped": 2}
    for c in sorted(result.checks, key=lambda c: order[c.status]):
        nums = [f"{v:.4f}" if v is not None and math.isfinite(v) else "–" for v in (c.baseline, c.candidate)]
        delta = f"{c.delta:+.4f}" if c.delta is not None and math.isfinite(c.delta) else "–"
        p = f"{c.pvalue:.3g}" if c.pvalue is not None and math.isfinite(c.pvalue) else "–"
        lines.append(f"| {ICONS[c.status]} | {cell(c.name)} | {cell(c.metric)} | {nums[0]} | {nums[1]} | {delta} "
                     f"| {p} | {cell(c.message)} |")
    return "\n".join(lines) + "\n"
