"""The trainer view of the HTML report: loss per logged step, scores with CIs per checkpoint, best marked.

Each scored checkpoint is read as a run of its own (`load_run("RUN@step-N")`), so its scores get CIs
from its eval run's samples and a paired test against the first checkpoint, exactly as `compare` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalsuite.reports import plots
from evalsuite.reports.numbers import fmt_number as _num
from evalsuite.reports.numbers import fmt_pvalue as _p

if TYPE_CHECKING:
    from evalsuite.reports.compare import Comparison, MetricRow
    from evalsuite.rundir import RunLog




def checkpoint_comparison(run: RunLog, n_boot: int = 2000, seed: int = 0) -> tuple[list[int], Comparison | None]:
    """The scored checkpoints' steps and their comparison (each vs the first); None when none was scored."""
    from evalsuite.reports.compare import compare
    from evalsuite.reports.html_groups import single_comparison
    from evalsuite.rundir import checkpoint_specs, load_run

    specs = checkpoint_specs(run.path)
    steps = [int(s.rsplit("@step-", 1)[1]) for s in specs]
    if not specs:
        return [], None
    runs = [load_run(s) for s in specs]
    if len(runs) == 1:
        return steps, single_comparison(runs[0], n_boot, seed)
    return steps, compare(runs, allow_mismatch=True, n_boot=n_boot, seed=seed, labels=[f"step {s}" for s in steps])


def _score_points(row: MetricRow, steps: list[int]) -> list[tuple[float, float, float | None, float | None, bool]]:
    pts = []
    for i, (step, est) in enumerate(zip(steps, row.estimates)):
        if est is None:
            continue
        test = row.tests[i] if i < len(row.tests) else None
        sig = test is not None and test.pvalue < 0.05 and test.delta != 0
        pts.append((float(step), est.value, est.lo, est.hi, sig))
    return pts


def training_section(label: str, run: RunLog, n_boot: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    training = run.results.training
    if training is None or not training.steps:
        return None
    best_step = training.best.step if training.best else None
    best_x = float(best_step) if best_step is not None else None
    ckpts = sorted(training.steps, key=lambda s: s.step)
    xs = [float(s.step) for s in ckpts]
    steps, comp = checkpoint_comparison(run, n_boot, seed)
    rows = [r for r in comp.rows if r.group is None and not r.diagnostic] if comp else []

    charts = []
    curve = [c for c in training.curve if c.get("loss") is not None and c.get("step") is not None]
    lines: dict[str, plots.Series] = {}
    if curve:
        lines["train loss (per step)"] = ([float(c["step"]) for c in curve], [float(c["loss"]) for c in curve])  # type: ignore[arg-type]
    if any(s.val_loss is not None for s in ckpts):
        lines["val loss"] = (xs, [s.val_loss for s in ckpts])
    marks = {"train loss (window mean)": (xs, [s.train_loss for s in ckpts])} if any(
        s.train_loss is not None for s in ckpts) else {}
    if lines or marks:
        charts.append(plots.lines(f"{label}: loss", "step", lines, best_x, marks))
    if rows:
        series = {f"{r.task}/{r.metric}": _score_points(r, steps) for r in rows}
        base = {f"{r.task}/{r.metric}": r.estimates[0].value for r in rows
                if steps and steps[0] == 0 and r.estimates[0] is not None}
        charts.append(plots.checkpoint_scores(f"{label}: scores per checkpoint (95% CI)", series, best_x, base))
    else:  # checkpoints without eval runs: the stored scores, no CIs
        names = list(dict.fromkeys(k for s in ckpts for k in s.scores))
        if names:
            charts.append(plots.lines(f"{label}: scores per checkpoint", "step",
                                      {k: (xs, [s.scores.get(k) for s in ckpts]) for k in names}, best_x))

    by_step = {s: i for i, s in enumerate(steps)}
    columns = ["train loss (window mean)", "val loss"] + [f"{r.task}/{r.metric}" for r in rows]
    table = []
    for s in ckpts:
        cells: list[dict[str, str]] = [{"value": _num(s.train_loss), "ci": ""}, {"value": _num(s.val_loss), "ci": ""}]
        i = by_step.get(s.step)
        for r in rows:
            est = r.estimates[i] if i is not None else None
            test = r.tests[i] if i is not None and i < len(r.tests) else None
            sig = test is not None and test.pvalue < 0.05 and test.delta != 0
            good = test is not None and (test.delta > 0) == r.higher_is_better
            cells.append({"value": _num(est.value) if est else _num(s.scores.get(f"{r.task}/{r.metric}")),
                          "ci": f"[{_num(est.lo, 3)}, {_num(est.hi, 3)}]" if est else "",
                          "p": f"p={_p(test.pvalue)}" if test else "", "cls": ("good" if good else "bad") if sig else ""})
        table.append({"step": s.step, "best": s.step == best_step, "cells": cells, "error": s.eval_error or ""})
    notes = list(comp.warnings) if comp else []  # e.g. whether any checkpoint beats the first significantly
    return {"label": label, "charts": charts, "columns": columns, "table": table, "notes": notes,
            "best": {"step": best_step, "metric": training.best.metric if training.best else None},
            "first": steps[0] if steps else None}


def training_sections(comp: Comparison, n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One section per distinct trainer run among the compared runs (checkpoints of one run count once)."""
    out, seen = [], set()
    for label, run in zip(comp.labels, comp.runs):
        if run.path in seen or run.results.training is None:
            continue
        seen.add(run.path)
        name = label.split("@step-")[0]
        section = training_section(name, run, n_boot, seed)
        if section is not None:
            out.append(section)
    return out
