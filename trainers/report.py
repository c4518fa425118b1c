"""What a training run shows: the per-checkpoint table, the best checkpoint, a PNG of the curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalsuite.runlog import RunResults


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line cut short by a kill is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def metric_of(row: dict[str, Any], metric: str) -> float | None:
    value = row.get(metric) if metric in ("val_loss", "train_loss") else row.get("scores", {}).get(metric)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def best(rows: list[dict[str, Any]], metric: str, minimise: bool) -> dict[str, Any] | None:
    """{"step", "metric", "value", "checkpoint"} of the best checkpoint row (earliest on ties)."""
    scored = [(v, r) for r in rows if (v := metric_of(r, metric)) is not None]
    if not scored:
        return None
    value, row = min(scored, key=lambda x: (x[0] if minimise else -x[0], x[1]["step"]))
    return {"step": row["step"], "metric": metric, "value": value, "checkpoint": row.get("checkpoint"),
            "eval_runs": row.get("eval_runs")}


def checkpoint_line(row: dict[str, Any]) -> str:
    """One compact line per checkpoint during training (all tasks); the full table comes at the end."""
    parts = [f"step {row['step']}"]
    for key, label in (("train_loss", "train loss (window mean)"), ("val_loss", "val loss")):
        if row.get(key) is not None:
            parts.append(f"{label} {row[key]:.4f}")
    parts += [f"{k} {v:.3f}" for k, v in sorted((row.get("scores") or {}).items()) if isinstance(v, (int, float))]
    if row.get("eval_error"):
        parts.append(f"[red]{row['eval_error']}[/red]")
    return " | ".join(parts)


def table(results: RunResults) -> Any:
    """Rich table: step, train loss (window mean), val loss, one column per score; the best row starred."""
    from rich.table import Table

    training = results.training
    steps = training.steps if training else []
    best_row = training.best if training else None
    metrics = sorted({m for r in steps for m in r.scores})
    tab = Table(title=f"checkpoints (best by {best_row.metric if best_row else '-'}: step {best_row.step if best_row else '-'}; "
                      "train loss: mean since the previous checkpoint)", title_justify="left")
    for col in ["step", "train loss", "val loss", *metrics]:
        # "ifeval/inst_level_loose_acc" -> "ifeval / inst level loose acc": headers wrap at spaces,
        # so an 80-column terminal shows whole names over several lines instead of "ifeva…"
        tab.add_column(col.replace("/", " / ").replace("_", " "), justify="right")
    for r in steps:
        mark = " *" if best_row and r.step == best_row.step else ""
        cells = [_fmt(r.train_loss), _fmt(r.val_loss)] + [_fmt(r.scores.get(m)) for m in metrics]
        tab.add_row(f"{r.step}{mark}", *cells)
    return tab


def _fmt(v: Any) -> str:
    return "-" if not isinstance(v, (int, float)) else f"{v:.3f}"


def plot(run_dir: Path) -> Path | None:
    """loss.png: train loss per step, validation loss and every score per checkpoint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a nicety, never a failure
        return None
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if r.get("kind") == "train"]
    ckpts = [r for r in rows if r.get("kind") == "checkpoint"]
    if not train:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss", lw=1)
    val = [(r["step"], r["val_loss"]) for r in ckpts if r.get("val_loss") is not None]
    if val:
        ax1.plot(*zip(*val), "o-", label="validation loss")
    ax1.set_xlabel("step")
    ax1.legend()
    for m in sorted({m for r in ckpts for m in r.get("scores", {})}):
        pts = [(r["step"], r["scores"][m]) for r in ckpts if m in r.get("scores", {})]
        ax2.plot(*zip(*pts), "o-", label=m)
    ax2.set_xlabel("step")
    ax2.set_title("eval scores per checkpoint")
    if ax2.lines:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    out = run_dir / "loss.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
