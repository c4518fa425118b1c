"""Inline SVG plots for the HTML report (matplotlib; no JavaScript, no network, prints and emails fine).

Text is kept as SVG text (`svg.fonttype: none`), so the plots are small and searchable, and the
SVG id salt is fixed, so the same comparison renders the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "evalsuite", "font.size": 9,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def to_svg(fig: Any) -> str:
    """The figure as an inline <svg> element (XML prolog and DOCTYPE stripped)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _plt().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _legend_outside(ax: Any) -> None:
    """The legend right of the plot area, so it never covers a line or a point."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8, borderaxespad=0)


def forest(labels: Sequence[str], series: Sequence[tuple[str, Sequence[tuple[float, float, float] | None]]],
           x_label: str = "Δ vs baseline (95% CI)", marks: Sequence[Sequence[bool]] | None = None) -> str:
    """Deltas with 95% CIs, one line per row, one colour per candidate run; a zero line.

    `marks[s][r]`: the point is significant (drawn filled; others hollow)."""
    plt = _plt()
    n_rows, n_series = len(labels), max(1, len(series))
    fig, ax = plt.subplots(figsize=(7.0, 0.9 + 0.26 * n_rows * n_series ** 0.5))
    height = 0.6 / n_series
    for s, (name, points) in enumerate(series):
        color = COLORS[s % len(COLORS)]
        for filled in (True, False):
            ys, xs, los, his = [], [], [], []
            for r, point in enumerate(points):
                if point is None or not all(math.isfinite(v) for v in point):
                    continue
                if marks is not None and bool(marks[s][r]) != filled:
                    continue
                ys.append(n_rows - 1 - r + (s - (n_series - 1) / 2) * height)
                xs.append(point[0])
                los.append(max(0.0, point[0] - point[1]))
                his.append(max(0.0, point[2] - point[0]))
            if xs:
                ax.errorbar(xs, ys, xerr=[los, his], fmt="o", color=color, capsize=3, ms=4,
                            mfc=color if filled else "white", label=name if filled or marks is None else None)
            if marks is None:
                break
    ax.axvline(0, color="#555", lw=1, ls="--")
    ax.set_yticks(range(n_rows), list(reversed(labels)))
    ax.set_ylim(-0.7, n_rows - 0.3)
    ax.set_xlabel(x_label)
    if n_series > 1:
        _legend_outside(ax)
    ax.grid(axis="x", alpha=0.3)
    return to_svg(fig)


Series = tuple[Sequence[float], Sequence[float | None]]


def lines(title: str, x_label: str, series: dict[str, Series], best_x: float | None = None,
          points: dict[str, Series] | None = None) -> str:
    """Line chart of several series over x (steps), the best step marked; `points`: markers only (no line)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    k = 0
    for k, (name, (xs, ys)) in enumerate(series.items()):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 60 else None, ms=2.5, lw=1.2,
                    label=name, color=COLORS[k % len(COLORS)])
    for j, (name, (xs, ys)) in enumerate((points or {}).items(), start=k + 1):
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None and math.isfinite(y)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="none", marker="D", ms=5, label=name,
                    color=COLORS[j % len(COLORS)])
    if best_x is not None:
        ax.axvline(best_x, color="#2ca02c", lw=1.2, ls=":", label=f"best (step {best_x:g})")
    ax.set_title(title, loc="left")
    ax.set_xlabel(x_label)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return to_svg(fig)


def checkpoint_scores(title: str, series: dict[str, Sequence[tuple[float, float, float | None, float | None, bool]]],
                      best_x: float | None = None, base: dict[str, float] | None = None) -> str:
    """Scores per checkpoint with 95% CI bars: (step, value, lo, hi, significant vs the first checkpoint).

    Significant checkpoints are filled, the others hollow; `base` draws each metric's step-0 score as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        pts = [p for p in pts if p[1] is not None and math.isfinite(p[1])]
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=1.2, label=name)
        for x, v, lo, hi, sig in pts:
            if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
                ax.errorbar([x], [v], yerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]], color=color, capsize=3, lw=1)
            ax.plot([x], [v], marker="o", ms=5, color=color, mfc=color if sig else "white", ls="none")
        if base and name in base:
            ax.axhline(base[name], color=color, lw=1, ls="--", alpha=0.7, label=f"{name}: base (step 0)")
    if best_x is not None:
        ax.axvline(best_x, color="#2ca02c", lw=1.2, ls=":", label=f"best (step {best_x:g})")
    ax.plot([], [], marker="o", ms=5, color="#555", ls="none", label="p < 0.05 vs first")
    ax.plot([], [], marker="o", ms=5, color="#555", mfc="white", ls="none", label="not significant")
    ax.set_title(title, loc="left")
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return to_svg(fig)


def ratings(names: Sequence[str], values: Sequence[tuple[float, float | None, float | None]]) -> str:
    """Arena ratings with their CIs, best on top."""
    plt = _plt()
    order = sorted(range(len(names)), key=lambda i: values[i][0])
    fig, ax = plt.subplots(figsize=(6.2, 0.8 + 0.35 * len(names)))
    for y, i in enumerate(order):
        v, lo, hi = values[i]
        err = [[v - lo if lo is not None else 0], [hi - v if hi is not None else 0]]
        ax.errorbar([v], [y], xerr=err, fmt="o", color=COLORS[0], capsize=3, ms=4)
    ax.set_yticks(range(len(order)), [names[i] for i in order])
    ax.set_xlabel("rating (95% CI)")
    ax.grid(axis="x", alpha=0.3)
    return to_svg(fig)
