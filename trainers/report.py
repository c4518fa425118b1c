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


def table(results: RunResults, run_dir: Path | None = None) -> Any:
    """Rich table: step, train loss (window mean), val loss, one column per score; the best row starred.

    With the run's directory, the behaviour of each checkpoint's answers follows (`behaviour_table`)."""
    from rich.console import Group
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
    behaviour = behaviour_table(run_dir) if run_dir is not None else None
    return tab if behaviour is None else Group(tab, behaviour)




def behaviour_table(run_dir: Path) -> Any:
    """Per scored checkpoint and task: the answers' diagnostics and one line of hints against the first
    checkpoint (step 0 when it was scored); None when no checkpoint generated text."""
    from rich.table import Table

    from evalsuite import diagnostics
    from evalsuite.errors import EvalsuiteError
    from evalsuite.reports.behaviour import fmt_value
    from evalsuite.rundir import checkpoint_specs, load_run

    short = {s.name: s.short for s in diagnostics.SPECS if s.short}  # the columns

    try:
        runs = [load_run(spec) for spec in checkpoint_specs(run_dir)]
    except EvalsuiteError:  # an eval run dir removed or broken: the scores table still prints
        return None
    if not runs:
        return None
    first = runs[0]
    base = f"step {_step(first)}"
    tab = Table(title=f"behaviour of the answers per checkpoint (hints: vs {base}, beyond noise; not gated)",
                title_justify="left")
    for col in ["step", "task", *short.values(), f"vs {base}"]:
        tab.add_column(col, justify="left" if col in ("task", f"vs {base}") else "right", overflow="fold")
    rows = 0
    for run in runs:
        for task in dict.fromkeys(r.task for r in run.records):
            records = run.records_for(task)
            summary = diagnostics.summarize(records)
            if not summary:
                continue
            hints = diagnostics.hints(first.records_for(task), records, base) if run is not first else []
            tab.add_row(str(_step(run)), task, *[fmt_value(n, summary.get(n)) for n in short], "; ".join(hints) or "")
            rows += 1
    return tab if rows else None


def _step(run: Any) -> int:
    """The step of a checkpoint read as `RUN@step-N`."""
    from evalsuite.rundir import STEP_SUFFIX

    match = STEP_SUFFIX.match(str(run.results.model.name))
    return int(match["step"]) if match else 0


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
